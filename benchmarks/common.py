"""The end every benchmark script shares: its tables on stdout and, with --json, everything it
measured in one file."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def report(result: dict, print_tables: Callable[[dict], None], json_path: str | None) -> None:
    print_tables(result)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
