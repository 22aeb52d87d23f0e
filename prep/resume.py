"""Which shards a run must make: the plan over the videos present, and the records of shards made.

The plan cuts each split's videos *present on disk*, in key order, into shards of --shard-size
videos, so the boundaries are fixed by the inputs (same inputs, same shards) and a partial
download packs into full shards (11 present videos of 85,000 listed make one shard, not 11).
Listed videos absent on disk are returned apart: prep reports them, it does not shard them, and
lists them in OUT/missing.txt (a header line, then `split<TAB>key<TAB>source id` per video).

Each finished shard leaves OUT/.prep/<shard>.json: its manifest entry, the inputs that were
broken or decoded only in part, and what each planned input was: key, path (relative to the
root), size and mtime_ns. A shard is done only while its record lists exactly the inputs the
plan gives it now; a video that appeared (which also moves the boundaries after it), changed or
vanished makes the shards it touches be redone, and shards numbered past the new plan are stale.

A frame folder (HAT, MMAction2 rawframes) is stamped by the folder's own size and mtime, which
change when frames are added, removed or renamed (a new extraction); its masks folder likewise.

Why size and mtime rather than a hash: a stat per video costs little (Kinetics-400's 300K files:
seconds on a local disk), while hashing reads the whole dataset (~450 GB) on every re-run though
nothing changed. Downloads,
re-downloads and repairs all change size or mtime; the only content change they miss is a
rewrite of the same size that puts the old mtime back (e.g. `cp -p` / `rsync -a` of another
file over it), which tools that fetch videos do not do. The other way round, copying the raw
folder without keeping times (`cp -r`) makes every shard be redone: safe, only slow.
"""
from __future__ import annotations

import collections
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shards.files import write_atomic

from .datasets import VideoItem

MISSING = "missing.txt"  # beside manifest.json: the listed videos absent on disk


@dataclass
class ShardJob:
    split: str
    number: int                # within the split: the shard file number
    position: int              # over all splits: decides the rank
    items: list[VideoItem]
    inputs: list[list]         # per item [key, path, size, mtime_ns]: what the shard is made from

    @property
    def name(self) -> str:
        return f"{self.split}-{self.number:06d}"


def stamp(item: VideoItem, root: str) -> list | None:
    """[key, path relative to root, size, mtime_ns] of a present video, None when it is absent;
    with segmentation masks (HAT), the mtime_ns of their folder follows."""
    if item.path is None:
        return None
    try:
        st = os.stat(item.path)
        masks = [os.stat(item.masks).st_mtime_ns] if item.masks is not None else []
    except OSError:  # vanished since the folder was indexed, or a dangling link
        return None
    path = item.path.relative_to(root) if item.path.is_relative_to(root) else item.path
    return [item.key, str(path), st.st_size, st.st_mtime_ns, *masks]


def plan(items: dict[str, list[VideoItem]], splits: list[str], shard_size: int, limit: int,
         root: str) -> tuple[list[ShardJob], list[VideoItem]]:
    """The shards of the present videos of the first `limit` listed ones (0: all) per split,
    and the listed videos absent on disk."""
    jobs, missing = [], []
    for split in splits:
        present = []
        for item in items.get(split, [])[:limit or None]:
            found = stamp(item, root)
            if found is None:
                missing.append(item)
            else:
                present.append((item, found))
        for number, start in enumerate(range(0, len(present), shard_size)):
            chunk = present[start:start + shard_size]
            jobs.append(ShardJob(split, number, len(jobs), [i for i, _ in chunk], [s for _, s in chunk]))
    return jobs, missing


def write_missing(out: Path, missing: list[VideoItem]) -> None:
    write_atomic(out / MISSING, "split\tkey\tsource_id\n" + "".join(f"{i.split}\t{i.key}\t{i.source_id}\n"
                                                                  for i in missing))


def read_missing(out: Path) -> set[tuple[str, str]]:
    """(split, key) of the videos the last finished run found missing."""
    path = out / MISSING
    rows = path.read_text().splitlines()[1:] if path.is_file() else []
    return {tuple(row.split("\t")[:2]) for row in rows}


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_record(work: Path, name: str) -> dict | None:
    path = work / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Survey:
    """How the records in OUT/.prep compare with the plan."""

    done: set[str]                               # shards whose record matches the plan
    redo: list[str]                              # shards with a record made from other inputs
    stale: list[str]                             # records of planned splits past the plan's shards
    changes: dict[str, collections.Counter]      # per split with records: new / changed / gone inputs

    def describe(self) -> str:
        counts = "; ".join(f"{split}: {c['new']} new, {c['changed']} changed, {c['gone']} gone"
                           for split, c in self.changes.items() if sum(c.values()))
        names = self.redo[:3] + (["..."] if len(self.redo) > 3 else [])
        return (f"inputs changed since the shards were made ({counts or 'records from an older prep-shards'}): "
                f"{len(self.redo)} shard(s) redone ({', '.join(names) or 'none'}), {len(self.stale)} stale shard(s) removed")


def survey(out: Path, work: Path, jobs: list[ShardJob], splits: list[str]) -> Survey:
    """Compare the records with the plan. Counted per split: new = present now, missing at the
    last finished run; changed = present with another size or mtime than its record says;
    gone = in a record, not in the plan now (removed, or now missing)."""
    planned = {j.name: j for j in jobs}
    was_missing = read_missing(out)
    done, redo, stale = set(), [], []
    changes = {}
    for split in splits:
        pattern = re.compile(rf"{re.escape(split)}-\d{{6}}\.json")
        names = sorted(p.name[:-5] for p in work.glob(f"{split}-*.json") if pattern.fullmatch(p.name))
        before: dict[str, list] = {}
        for name in names:
            record = read_record(work, name)
            inputs = record.get("inputs")
            before.update({row[0]: row for row in inputs or ()})
            job = planned.get(name)
            if job is None:
                stale.append(name)
            elif inputs == job.inputs:
                done.add(name)
            else:
                redo.append(name)
        now = {row[0]: row for j in jobs if j.split == split for row in j.inputs}
        if names:
            changes[split] = collections.Counter(
                new=sum(1 for k in now if (split, k) in was_missing), gone=len(before.keys() - now.keys()),
                changed=sum(1 for k in now.keys() & before.keys() if now[k] != before[k]))
    return Survey(done, redo, stale, changes)
