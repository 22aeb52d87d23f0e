"""The one dataclass-to-argparse mapper every entry point uses (shards/cli.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from shards.cli import (Fraction, PositiveInt, config_parser, config_problems, integer, parse_config, parse_fields,
                        refuse)


@dataclass
class Settings:
    shards: str                              # where the shards are
    device: Literal["cuda", "cpu"] = "cuda"  # where it runs
    batch_size: PositiveInt = 4              # clips per step
    threshold: Fraction = 0.5                # a score
    zoom: Annotated[int, integer(1, 16)] = 2  # pixel zoom
    offset: int = 0                          # any whole number
    lr: float = 1e-3                         # any finite number
    strict: bool = False                     # fail on the first problem
    splits: list[str] = field(default_factory=list, metadata={"flag": "split"})  # comma-separated or repeated
    note: str = ""                           # free text
    sizes: list[PositiveInt] = field(default_factory=lambda: [1, 2])  # each checked


def parse(*argv: str) -> Settings:
    return parse_config(Settings, list(argv), "prog")


def test_fields_become_typed_flags():
    s = parse("--shards", "d", "--device", "cpu", "--batch-size", "8", "--threshold", "0.25", "--zoom", "16",
              "--offset", "-3", "--lr", "0.1", "--strict", "--split", "train,val", "--split", "test", "--sizes", "4,8")
    assert s == Settings(shards="d", device="cpu", batch_size=8, threshold=0.25, zoom=16, offset=-3, lr=0.1,
                         strict=True, splits=["train", "val", "test"], sizes=[4, 8])
    assert parse("--shards", "d") == Settings(shards="d")
    assert parse("--shards", "d", "--strict", "--no-strict").strict is False


@pytest.mark.parametrize("argv, says", [
    ([], "the following arguments are required: --shards"),
    (["--device", "tpu"], "argument --device: choose from cuda, cpu, not 'tpu'"),
    (["--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, not 0"),
    (["--threshold", "nan"], "argument --threshold: must be a finite number >= 0 and <= 1, not nan"),
    (["--zoom", "17"], "argument --zoom: must be a whole number from 1 to 16, not 17"),
    (["--offset", "1.5"], "argument --offset: must be a whole number, not '1.5'"),
    (["--lr", "inf"], "argument --lr: must be a finite number, not inf"),
    (["--splits", "a"], "unrecognized arguments: --splits a"),  # the flag is --split
    (["--sizes", "4,0"], "argument --sizes: must be a whole number >= 1, not 0"),
    (["--sizes", "4", "--sizes", "x"], "argument --sizes: must be a whole number >= 1, not 'x'"),
])
def test_nonsense_is_one_usage_line(argv, says, capsys):
    with pytest.raises(SystemExit) as usage:
        parse(*(["--shards", "d"] if argv else []), *argv)
    err = capsys.readouterr().err
    assert usage.value.code == 2 and err.count("\n") == 1 and says in err, err


def test_a_config_built_in_code_gets_the_same_checks(capsys):
    bad = Settings(shards="d", device="tpu", batch_size=0, threshold=2.0, lr=float("nan"), sizes=[3, -1])
    assert config_problems(bad) == ["--device: choose from cuda, cpu, not 'tpu'",
                                    "--batch-size: must be a whole number >= 1, not 0",
                                    "--threshold: must be a finite number >= 0 and <= 1, not 2.0",
                                    "--lr: must be a finite number, not nan",
                                    "--sizes: must be a whole number >= 1, not -1"]
    assert config_problems(Settings(shards="d", splits=["a", "b"])) == []
    with pytest.raises(SystemExit) as usage:
        refuse("prog", config_problems(bad)[:1])
    assert usage.value.code == 2 and capsys.readouterr().err == \
        "prog: error: --device: choose from cuda, cpu, not 'tpu' (see --help)\n"
    refuse("prog", [])  # nothing to refuse: returns


def test_help_is_the_field_comments_with_defaults_and_choices():
    text = config_parser(Settings, "prog", "What it does.").format_help()
    flat = " ".join(text.split())
    assert "What it does." in flat
    assert "--device {cuda,cpu} where it runs (default: cuda)" in flat
    assert "--batch-size BATCH_SIZE clips per step (default: 4)" in flat
    assert "--split SPLIT comma-separated or repeated" in flat and "(default: [])" not in flat
    assert "--shards SHARDS where the shards are --device" in flat  # required: no default shown


def test_positional_and_given_only():
    @dataclass
    class Check:
        folder: str                          # the folder
        decode: bool = False                 # decode too

    assert parse_config(Check, ["x", "--decode"], "check", positional=("folder",)) == Check("x", True)
    assert parse_fields(Settings, ["--batch-size", "2", "--no-strict"], "prog") == {"batch_size": 2, "strict": False}
    assert parse_fields(Settings, [], "prog") == {}
