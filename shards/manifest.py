"""manifest.json: what a shard directory holds, and the format version it was written in.

{
  "format": "scene-debias-shards", "version": 2,
  "dataset": "synth", "codec": "vp9",
  "classes": [action names, index order], "scene_classes": [365 Places365 names],
  "splits": {"train": {"samples": N, "shards": [{"tar", "index", "samples", "bytes", "sha256"}]}},
             (tar and index: file names beside manifest.json, never paths)
  "provenance": {how boxes and scene labels were made: detector, scene model, thresholds, versions},
  "failed": [{"split", "key", "input", "reason"}]
}
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .files import write_atomic
from .format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, NUM_SCENES, ShardFormatError

REBUILD_HINT = "re-run prep-shards with this version of scene-debias to rebuild the shards"


def new_manifest(dataset: str, classes: list[str], scene_classes: list[str], codec: str,
                 provenance: dict | None = None) -> dict:
    if len(scene_classes) != NUM_SCENES:
        raise ShardFormatError(f"scene_classes has {len(scene_classes)} names, not {NUM_SCENES}")
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "dataset": dataset, "codec": codec,
            "classes": list(classes), "scene_classes": list(scene_classes), "splits": {},
            "provenance": provenance or {}, "failed": []}


def add_split(manifest: dict, split: str, shard_infos: list[dict]) -> None:
    """Record a split's finished shards (ShardWriter.info() entries), in shard order."""
    manifest["splits"][split] = {"samples": sum(s["samples"] for s in shard_infos),
                                 "shards": list(shard_infos)}


def write_manifest(out_dir: str | Path, manifest: dict) -> Path:
    """Atomic write: readers never see a half-written manifest."""
    path = Path(out_dir) / MANIFEST
    write_atomic(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(shards_dir: str | Path) -> dict:
    """Load and check manifest.json; every problem is one ShardFormatError line."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise ShardFormatError(f"no {MANIFEST} in {shards_dir}: not a shard directory (run prep-shards first)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardFormatError(f"{path} is not valid JSON ({err}): {REBUILD_HINT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ShardFormatError(f"{path} is not a {FORMAT_NAME} manifest: {REBUILD_HINT}")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardFormatError(
            f"{path} is format version {manifest.get('version')}, this scene-debias reads "
            f"version {FORMAT_VERSION}: {REBUILD_HINT}")
    for field in ("dataset", "codec", "classes", "scene_classes", "splits"):
        if field not in manifest:
            raise ShardFormatError(f"{path} lacks the field {field!r}: {REBUILD_HINT}")
    problem = _layout_problem(manifest)
    if problem:
        raise ShardFormatError(f"{path}: {problem}: {REBUILD_HINT}")
    return manifest


# shard files lie beside the manifest: a plain file name, never a path (`../x`, `/abs/x`)
SHARD_FILE_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
SHARD_FIELDS = {"tar": str, "index": str, "samples": int, "bytes": int, "sha256": str}


def _layout_problem(manifest: dict) -> str | None:
    """What is wrong with the types readers rely on (every reader indexes into these), or None."""
    def names(value, count=None):
        return isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) == (count or len(value))
    if not names(manifest["classes"]) or not manifest["classes"]:
        return "'classes' is not a list of action names"
    if not names(manifest["scene_classes"], NUM_SCENES):
        return f"'scene_classes' is not a list of {NUM_SCENES} names"
    if not isinstance(manifest["splits"], dict):
        return "'splits' is not an object of split names"
    for split, entry in manifest["splits"].items():
        if not isinstance(entry, dict) or not _whole(entry.get("samples")) or not isinstance(entry.get("shards"), list):
            return f"split {split!r} is not {{samples: a count, shards: a list}}"
        for i, shard in enumerate(entry["shards"]):
            if not isinstance(shard, dict):
                return f"split {split!r}: shard {i} is not an object"
            for field, kind in SHARD_FIELDS.items():
                value = shard.get(field)
                if not isinstance(value, kind) or (kind is int and not _whole(value)):
                    return f"split {split!r}: shard {i} lacks {field!r} or it is not a {kind.__name__}"
            for field in ("tar", "index"):
                if not SHARD_FILE_RE.match(shard[field]):
                    return (f"split {split!r}: shard {i}: {field} {shard[field]!r} is not a file name beside the "
                            "manifest (a path would read outside the shard folder)")
    if not isinstance(manifest.get("failed", []), list):
        return "'failed' is not a list"
    return None


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def split_entry(manifest: dict, split: str) -> dict:
    if split not in manifest["splits"]:
        raise ShardFormatError(
            f"split {split!r} is not in the shards; they hold {sorted(manifest['splits'])}")
    return manifest["splits"][split]


def shard_files(shards_dir: str | Path, manifest: dict, split: str) -> list[tuple[Path, Path]]:
    """(tar path, index path) of each shard of a split, in order."""
    return [(Path(shards_dir) / s["tar"], Path(shards_dir) / s["index"])
            for s in split_entry(manifest, split)["shards"]]
