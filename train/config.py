"""Typed configs from the command line: one dataclass per program, one flag per field.

Each field's comment (`# ...` after it in the source) becomes its --help; unknown flags are
errors (argparse); the resolved config is a plain dict saved next to the outputs. A field typed
with one of the aliases below is range-checked when parsed (`--frames 0` is refused at once, in
one line); a plain float must be finite.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from typing import Annotated

from shards.cli import Parser, integer, number

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


def _parser_type(hint):
    """The argparse type of a field: the check of an Annotated alias, a finite float, or the type itself."""
    if typing.get_origin(hint) is Annotated:
        return hint.__metadata__[0]
    return number() if hint is float else hint


def _parser(cls, description: str, prog: str | None, given_only: bool = False) -> Parser:
    helps = _field_help(cls)
    hints = typing.get_type_hints(cls, include_extras=True)  # annotations are strings (PEP 563)
    parser = Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if given_only:  # a flag not on the command line leaves no attribute
            required, default = False, argparse.SUPPRESS
        if hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helps.get(f.name))
        else:
            parser.add_argument(flag, type=_parser_type(hints[f.name]), default=default, required=required,
                                help=helps.get(f.name))
    return parser


def parse_config(cls, argv: list[str] | None, description: str, prog: str | None = None):
    return cls(**vars(_parser(cls, description, prog).parse_args(argv)))


def parse_fields(cls, argv: list[str] | None, description: str, prog: str | None = None) -> dict:
    """Only the fields that argv sets, typed and checked as parse_config does: settings for a
    config another program builds (finetune passes its other flags on to pretrain this way)."""
    return vars(_parser(cls, description, prog, given_only=True).parse_args(argv))
