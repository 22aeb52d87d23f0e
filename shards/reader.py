"""The reference reader: shards -> plain dicts, written for clarity, not speed.

Every error is a ShardFormatError naming the shard and, where there is one, the sample: a
member that is not a regular file named <key>.<ext> (a path such as `../x` or a symlink, which
would escape on extraction), a truncated tar, a member that does not decode.
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from .format import ShardFormatError, check_member, decode_members
from .manifest import read_manifest, shard_files, split_entry
from .video import decode_video


def iter_tar(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of one tar; members of a sample are consecutive."""
    key, members = None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                base, ext = check_member(info)
                if base != key:
                    if key is not None:
                        yield key, members
                    key, members = base, {}
                if ext in members:
                    raise ShardFormatError(f"member {info.name} appears twice")
                members[ext] = tar.extractfile(info).read()
    except ShardFormatError as err:
        raise ShardFormatError(f"{path}: {err}") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        where = f" in or after sample {key}" if key is not None else ""
        raise ShardFormatError(f"{path}: truncated or unreadable tar{where} ({err}); re-run prep-shards for it") from None
    if key is not None:
        yield key, members


def iter_samples(shards_dir: str | Path, split: str, decode: bool = True) -> Iterator[dict]:
    """Every sample of a split, in shard order, as a plain dict:

    key (str), video (uint8 T x H x W x 3, RGB; only with decode=True), video_bytes, codec,
    boxes (per frame a list of [x1, y1, x2, y2, score]), boxes_raw (float32 N x 6),
    scene (float32[365]), label (int), meta (dict).
    """
    manifest = read_manifest(shards_dir)
    for entry, (tar_path, _) in zip(split_entry(manifest, split)["shards"], shard_files(shards_dir, manifest, split)):
        size = tar_path.stat().st_size if tar_path.is_file() else None
        if size != entry["bytes"]:  # a tar cut at a block boundary reads as a shorter, valid one
            raise ShardFormatError(f"{tar_path}: {'missing' if size is None else f'{size} bytes'}, the manifest says "
                                   f"{entry['bytes']} bytes (truncated or rewritten); re-run prep-shards for it")
        count = 0
        for key, members in iter_tar(tar_path):
            try:
                sample = decode_members(key, members)  # its errors name the sample
            except ShardFormatError as err:
                raise ShardFormatError(f"{tar_path}: {err}") from None
            if decode:
                try:
                    sample["video"] = decode_video(sample["video_bytes"])
                except ShardFormatError as err:
                    raise ShardFormatError(f"{tar_path}: sample {key}: {err}") from None
            count += 1
            yield sample
        if count != entry["samples"]:
            raise ShardFormatError(f"{tar_path}: holds {count} samples, the manifest says {entry['samples']}")
