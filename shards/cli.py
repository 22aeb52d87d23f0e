"""Command lines: numbers checked where they are parsed, every error on one line.

Every entry point (train/, shards/, benchmarks/) builds its parser with `Parser`, gives its
numeric flags the types `integer(...)` and `number(...)`, and wraps `main` in `entry_point`.
Then a nonsense value (`--batch-size 0`, `--lr nan`) is refused before any work starts, and
bad input found later (a damaged shard, a foreign checkpoint, a read-only --out) ends in one
line on stderr and a non-zero exit, never in a traceback.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable

USAGE = 2   # the command line is wrong (argparse's code)
FAILED = 1  # the command line is fine, the input it names is not
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: the usage block of a 50-flag program buries them."""

    def error(self, message: str):
        self.exit(USAGE, f"{self.prog}: error: {message} (see --help)\n")


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum]."""
    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, not {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, not {value}")
        return value
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *,
           above: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite float (nan and inf are never a setting), at least `minimum`,
    at most `maximum`, greater than `above`."""
    limits = ((">=", minimum), (">", above), ("<=", maximum))
    bounds = " and ".join(f"{op} {value:g}" for op, value in limits if value is not None)
    wanted = "a finite number" + (f" {bounds}" if bounds else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}") from None
        if (not math.isfinite(value) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum) or (above is not None and value <= above)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text}")
        return value
    return parse


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def entry_point(prog: str) -> Callable:
    """Decorate `main(argv) -> int`: the errors our code raises for bad input (ValueError and its
    subclasses ShardFormatError, CheckpointError, ...; OSError for a missing or read-only path)
    become one line `prog: error: ...` on stderr and exit code 1; Ctrl-C ends in one line and 130."""
    def wrap(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except (ValueError, OSError) as err:
                print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
                return FAILED
            except KeyboardInterrupt:  # Ctrl-C where nothing handles it (the trainer's loop does)
                print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
                return INTERRUPTED
        return run
    return wrap
