"""Command lines: one typed config per program, values checked where they are parsed, every
error on one line.

Every entry point (prep/, shards/, train/, benchmarks/) describes its settings as a dataclass and
parses them with `parse_config`: one flag per field, the field's `# comment` its --help, its type
its check (the aliases below for ranges, `Literal[...]` for choices, `list[...]` for a flag given
as a comma-separated list or repeated). The same checks run on a config built in code
(`config_problems`), so a typed call and a command line refuse the same values with the same words.
`main` is wrapped in `entry_point`: a nonsense value (`--batch-size 0`, `--lr nan`) is refused
before any work starts, and bad input found later (a damaged shard, a foreign checkpoint, a
read-only --out) ends in one line on stderr and a non-zero exit, never in a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import re
import sys
import typing
from collections.abc import Callable
from typing import Annotated, Literal

USAGE = 2   # the command line is wrong (argparse's code)
FAILED = 1  # the command line is fine, the input it names is not
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: the usage block of a 50-flag program buries them."""

    def error(self, message: str):
        self.exit(USAGE, f"{self.prog}: error: {message} (see --help)\n")


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum] (either bound may be absent)."""
    bounds = (f" from {minimum} to {maximum}" if minimum is not None and maximum is not None else
              f" >= {minimum}" if minimum is not None else f" <= {maximum}" if maximum is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number{bounds}, not {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number{bounds}, not {value}")
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


def choice(*allowed: str) -> Callable[[str], str]:
    """An argparse type: one of `allowed` (a `Literal[...]` field gets this check)."""
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}, not {text!r}")
        return text
    return parse


PositiveInt = Annotated[int, integer(1)]        # counts there must be at least one of: frames, a batch
NonNegativeInt = Annotated[int, integer(0)]     # where 0 means something: none, never, the default
PositiveFloat = Annotated[float, number(above=0)]    # a learning rate
NonNegativeFloat = Annotated[float, number(minimum=0)]  # weights of losses, weight decay
Fraction = Annotated[float, number(0, 1)]       # thresholds on scores in [0, 1]


def _field_help(cls) -> dict[str, str]:
    helps = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):.*?#\s*(.+)$", line)
        if m:
            helps[m.group(1)] = m.group(2)
    return helps


def _check(hint) -> Callable[[str], object] | None:
    """The parse-and-check function of a field's type; None for text and flags (anything goes)."""
    if typing.get_origin(hint) is Annotated:
        return hint.__metadata__[0]
    if typing.get_origin(hint) is Literal:
        return choice(*typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return _check(typing.get_args(hint)[0])
    return {float: number(), int: integer()}.get(hint)


def _items(check: Callable[[str], object] | None) -> type[argparse.Action]:
    """The action of a list flag: comma-separated (`--split train,val`) or repeated (`--checkpoint
    a --checkpoint b`), each item checked by `check` (argparse's `type` would see the whole text)."""
    class Items(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            given = getattr(namespace, self.dest, None)
            items = [] if given is None or given is self.default else list(given)
            try:
                items += [check(v) if check else v for v in values.split(",") if v]
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentError(self, str(err)) from None
            setattr(namespace, self.dest, items)
    return Items


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except the empty ones ("(default: )" says nothing)."""

    def _get_help_string(self, action):
        empty = action.default in ("", None) or action.default == []
        return action.help if empty else super()._get_help_string(action)


def config_parser(cls, prog: str, description: str | None = None, positional: tuple[str, ...] = (),
                  given_only: bool = False) -> Parser:
    """The parser of `cls`: one flag per field (`--batch-size` for `batch_size`, or the field's
    metadata "flag"), the fields in `positional` as positional arguments; the description
    defaults to the first paragraph of the class's docstring. With `given_only`, a flag not on
    the command line leaves no attribute (instead of its default)."""
    helps = _field_help(cls)
    hints = typing.get_type_hints(cls, include_extras=True)  # annotations are strings (PEP 563)
    parser = Parser(prog=prog, description=description or (cls.__doc__ or "").split("\n\n")[0],
                    formatter_class=_Help)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kwargs = dict(help=helps.get(f.name), type=_check(hint))
        if typing.get_origin(hint) is Literal:
            kwargs["metavar"] = "{" + ",".join(typing.get_args(hint)) + "}"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name in positional:
            parser.add_argument(f.name, **kwargs)
            continue
        flag = "--" + f.metadata.get("flag", f.name).replace("_", "-")
        kwargs.update(dest=f.name, metavar=kwargs.get("metavar", flag[2:].upper().replace("-", "_")))
        if given_only or required:  # no attribute unless given (and --help shows no default)
            kwargs["default"] = argparse.SUPPRESS
        else:
            kwargs["default"] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs["required"] = required and not given_only
        if hint is bool:
            kwargs.pop("type")
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(hint) is list:
            parser.add_argument(flag, action=_items(kwargs.pop("type")), **kwargs)
        else:
            parser.add_argument(flag, **kwargs)
    return parser


def parse_config(cls, argv: list[str] | None, prog: str, description: str | None = None,
                 positional: tuple[str, ...] = ()):
    """`cls` from a command line (config_parser)."""
    return cls(**vars(config_parser(cls, prog, description, positional).parse_args(argv)))


def parse_fields(cls, argv: list[str] | None, prog: str, description: str | None = None) -> dict:
    """Only the fields that argv sets, typed and checked as parse_config does: settings for a
    config another program builds (finetune passes its other flags on to pretrain this way)."""
    return vars(config_parser(cls, prog, description, given_only=True).parse_args(argv))


def config_problems(cfg) -> list[str]:
    """The values of a config built in code that its command line would refuse, each as
    '--flag: why' (the checks of the field types above)."""
    problems = []
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        check, value = _check(hints[f.name]), getattr(cfg, f.name)
        for item in (value if isinstance(value, list) else [value]):
            try:
                if check is not None:
                    check(str(item))
            except argparse.ArgumentTypeError as err:
                problems.append(f"--{f.metadata.get('flag', f.name).replace('_', '-')}: {err}")
    return problems


def refuse(prog: str, problems: list[str]) -> None:
    """Settings no run can start with (from its command line or built in code): one line as
    argparse writes its own errors, exit 2."""
    if problems:
        print(f"{prog}: error: {'; '.join(problems)} (see --help)", file=sys.stderr, flush=True)
        raise SystemExit(USAGE)


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
