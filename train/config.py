"""Typed configs from the command line: one dataclass per program, one flag per field.

Each field's comment (`# ...` after it in the source) becomes its --help; unknown flags are
errors (argparse); the resolved config is a plain dict saved next to the outputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re


def _field_help(cls) -> dict[str, str]:
    helps = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):.*?#\s*(.+)$", line)
        if m:
            helps[m.group(1)] = m.group(2)
    return helps


def parse_config(cls, argv: list[str] | None, description: str):
    helps = _field_help(cls)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kind = f.type if isinstance(f.type, type) else eval(f.type)  # annotations are strings (PEP 563)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helps.get(f.name))
        else:
            parser.add_argument(flag, type=kind, default=default, required=required, help=helps.get(f.name))
    return cls(**vars(parser.parse_args(argv)))
