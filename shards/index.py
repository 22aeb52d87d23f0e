"""DALI index files (the `wds2idx` format, version v1.2), written from known offsets.

One line "v1.2 <samples>", then one line per sample: for each member
"<ext> <data offset> <size> <member name>"; member names follow shards/format.py's member_key
(the loaders refuse an index naming `../x` or `/abs/x`). Writing it ourselves while the tar is written
avoids a second pass over every shard; a test checks equality with DALI's `wds2idx`.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from .format import ShardFormatError, check_member, member_key

INDEX_VERSION = "v1.2"


def format_index(samples: list[list[tuple[str, int, int, str]]]) -> str:
    """samples: per sample, its members as (ext, data_offset, size, name)."""
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{ext} {off} {size} {name}" for ext, off, size, name in members)
              for members in samples]
    return "\n".join(lines) + "\n"


def parse_index(path: str | Path) -> list[list[tuple[str, int, int, str]]]:
    """Index file -> per sample, its members as (ext, data_offset, size, name)."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError("empty index file")
    version, _, count = lines[0].partition(" ")
    if version != INDEX_VERSION or not count.isdigit():
        raise ValueError(f"header {lines[0]!r} is not '{INDEX_VERSION} <count>'")
    samples = []
    for line in lines[1:]:
        fields = line.split(" ")
        if len(fields) % 4:
            raise ValueError(f"index line {line[:60]!r} does not hold groups of 4 fields")
        samples.append([(fields[i], int(fields[i + 1]), int(fields[i + 2]), fields[i + 3])
                        for i in range(0, len(fields), 4)])
        _check_names(samples[-1])
    if len(samples) != int(count):
        raise ValueError(f"header says {count} samples, the file lists {len(samples)}")
    return samples


def _check_names(members: list[tuple[str, int, int, str]]) -> None:
    """One sample's entries: safe member names (shards/format.py member_key), of one key, whose
    extension is the one the entry gives."""
    keys = set()
    for ext, _, _, name in members:
        key, name_ext = member_key(name)
        if name_ext != ext:
            raise ShardFormatError(f"index entry {ext!r} names the member {name!r}")
        keys.add(key)
    if len(keys) > 1:
        raise ShardFormatError(f"index line mixes the keys {sorted(keys)}")


def index_from_tar(path: str | Path) -> list[list[tuple[str, int, int, str]]]:
    """The index a tar should have, read from the tar itself (like wds2idx, member by member).
    A member that is not a regular file named <key>.<ext> raises ShardFormatError."""
    samples, last = [], None
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            base, ext = check_member(info)
            if base != last:
                samples.append([])
                last = base
            samples[-1].append((ext, info.offset_data, info.size, info.name))
    return samples
