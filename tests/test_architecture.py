"""The rooms of README's Architecture section and what each may import: the data flows
synth -> prep -> shards -> loader -> train -> evaluation -> demo, and no room imports one after it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# room -> the rooms of ours it may import (itself included); the most specific prefix names a module's room
MAY_IMPORT = {
    "shards": {"shards"},
    "shards.loader": {"shards", "shards.loader"},
    "prep.synth": {"shards", "prep.synth"},
    "prep": {"shards", "prep"},  # real-data prep reads the synthetic world's files, never its code
    "train": {"shards", "shards.loader", "train"},
    "train.evaluation": {"shards", "shards.loader", "train", "train.evaluation"},
    "train.demo": {"shards", "shards.loader", "prep", "prep.synth", "train", "train.evaluation", "train.demo"},
}


def room(module: str) -> str | None:
    rooms = [r for r in MAY_IMPORT if module == r or module.startswith(r + ".")]
    return max(rooms, key=len) if rooms else None


def imports(path: Path, module: str) -> set[str]:
    """The modules of ours that `path` (the module `module`) imports, relative imports resolved."""
    found = set()
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if room(m)}


def modules():
    for top in ("shards", "prep", "train"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_room_lookup():
    assert room("shards.loader.sampling") == "shards.loader" and room("shards.format") == "shards"
    assert room("prep.synth.generate") == "prep.synth" and room("prep.prep_shards") == "prep"
    assert room("train.evaluation.evaluate") == "train.evaluation" and room("train.demo") == "train.demo"
    assert room("torch") is None and room("training") is None


def test_relative_imports_are_resolved(tmp_path):
    f = tmp_path / "clip_loader.py"
    f.write_text("from ..cli import Parser\nfrom .sampling import SplitIndex\nfrom . import masking\nimport numpy\n")
    assert imports(f, "shards.loader.clip_loader") == {
        "shards.cli", "shards.cli.Parser", "shards.loader.sampling", "shards.loader.sampling.SplitIndex",
        "shards.loader", "shards.loader.masking"}


def test_no_room_imports_a_later_one():
    wrong = []
    for path, module in modules():
        allowed = MAY_IMPORT[room(module)]
        for imported in sorted(imports(path, module)):
            if room(imported) not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported} ({room(module)} may import {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)
    assert sum(1 for _ in modules()) > 40  # the walk found the tree
