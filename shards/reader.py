"""The reference reader: shards -> plain dicts, written for clarity, not speed."""
from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from .format import ShardFormatError, decode_members
from .manifest import read_manifest, shard_files
from .video import decode_video


def iter_tar(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of one tar; members of a sample are consecutive."""
    key, members = None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base, _, ext = info.name.rpartition("/")[2].partition(".")
                if base != key:
                    if key is not None:
                        yield key, members
                    key, members = base, {}
                if ext in members:
                    raise ShardFormatError(f"{path}: member {info.name} appears twice")
                members[ext] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardFormatError(f"{path}: unreadable tar ({err}); re-run prep-shards for it") from None
    if key is not None:
        yield key, members


def iter_samples(shards_dir: str | Path, split: str, decode: bool = True) -> Iterator[dict]:
    """Every sample of a split, in shard order, as a plain dict:

    key (str), video (uint8 T x H x W x 3, RGB; only with decode=True), video_bytes, codec,
    boxes (per frame a list of [x1, y1, x2, y2, score]), boxes_raw (float32 N x 6),
    scene (float32[365]), label (int), meta (dict).
    """
    manifest = read_manifest(shards_dir)
    for tar_path, _ in shard_files(shards_dir, manifest, split):
        for key, members in iter_tar(tar_path):
            sample = decode_members(key, members)
            if decode:
                sample["video"] = decode_video(sample["video_bytes"])
            yield sample
