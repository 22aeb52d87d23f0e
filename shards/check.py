"""shards-check DIR: validate a shard directory against its manifest.

Prints a summary per split; every problem is one line "error: ..." (among them every tar member
that is not a regular file named <key>.<ext>: `../x`, `/abs/x`, links and folders escape on
extraction); exits 1 when there is any, 2 on bad usage. Structural checks by default; --decode
also decodes every video and checks its frame count and size against the boxes and metadata
(slow at Kinetics scale).
"""
from __future__ import annotations

import math
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cli import entry_point, parse_config, refuse
from .files import file_sha256
from .format import (BOX_ROW, BOXES_RAW, META_FIELDS, SCENE_VOTES, ShardFormatError, boxes_to_raw, check_member,
                     decode_members, scene_problem)
from .index import index_from_tar, parse_index
from .manifest import read_manifest
from .reader import iter_tar
from .video import IVF_HEADER, clip_stream, decode_frames, decode_video, ivf_frames, segment_range


def check_sample(key: str, members: dict[str, bytes], num_classes: int, decode: bool) -> list[str]:
    """Problems of one sample, each a short phrase (empty when the sample is valid)."""
    try:
        s = decode_members(key, members)
    except ShardFormatError as err:
        return [str(err)]
    meta, scene, boxes = s["meta"], s["scene"], s["boxes"]
    problems = _check_meta(meta)
    if meta.get("id") != key:
        problems.append(f"metadata id {_short(meta.get('id'))} differs from the key")
    if not 0 <= s["label"] < num_classes:
        problems.append(f"label {s['label']} outside [0, {num_classes})")
    problems += [p for p in [scene_problem(scene, meta.get(SCENE_VOTES))] if p]
    if not isinstance(boxes, list):
        problems.append(f"boxes.msgpack holds {_short(boxes)} ({type(boxes).__name__}), not a list per frame")
    else:
        problems += _check_boxes(boxes)
        if _count(meta.get("frames")) and meta["frames"] != len(boxes):
            problems.append(f"boxes cover {len(boxes)} frames, metadata says {meta['frames']}")
        if not problems and boxes_to_raw(boxes) != members[BOXES_RAW]:
            problems.append("boxes.f32 disagrees with boxes.msgpack")
    if not problems:
        problems += _check_segments(s["video_bytes"], meta)
    if decode and not problems:
        try:
            video = decode_video(s["video_bytes"])
        except ShardFormatError as err:
            return [str(err)]
        shape = (meta["frames"], meta["height"], meta["width"], 3)
        if video.shape != shape:
            problems.append(f"video decodes to {video.shape}, metadata says {shape}")
        else:
            problems += _decode_segments(s["video_bytes"], meta, video)
    return problems


def _check_meta(meta: dict) -> list[str]:
    """The metadata fields and their types (a string "32" is not a frame count)."""
    missing = [f for f in META_FIELDS if f not in meta]
    problems = [f"metadata lacks {missing}"] if missing else []
    for field in ("frames", "width", "height"):
        if field in meta and not _count(meta[field]):
            problems.append(f"metadata {field} is {_short(meta[field])} ({type(meta[field]).__name__}), "
                            "not a whole number >= 1")
    fps = meta.get("fps", 1)
    if not (_number(fps) and fps > 0):
        problems.append(f"metadata fps is {_short(fps)} ({type(fps).__name__}), not a positive number")
    for field in ("id", "label_name", "split", "codec"):
        if field in meta and not isinstance(meta[field], str):
            problems.append(f"metadata {field} is {_short(meta[field])} ({type(meta[field]).__name__}), not a string")
    return problems


def _check_segments(data: bytes, meta: dict) -> list[str]:
    """The segment table against the IVF stream: one frame record per frame, numbered in order,
    and every segment starting at the record of its first frame (no decoding)."""
    try:
        records = ivf_frames(data)
    except ShardFormatError as err:
        return [str(err)]
    if [pts for _, _, pts in records] != list(range(len(records))) or len(records) != meta["frames"]:
        return [f"video holds {len(records)} frame records (numbered {records[0][2] if records else '-'}..), "
                f"metadata says {meta['frames']} frames"]
    segments = meta["segments"]
    starts = {off: pts for off, _, pts in records}
    if (not isinstance(segments, list) or not segments
            or not all(isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) for v in x) for x in segments)):
        return ["metadata segments is not a list of [first frame, byte offset] pairs"]
    if segments[0] != [0, IVF_HEADER]:
        return [f"the first segment is {segments[0]}, not [0, {IVF_HEADER}]"]
    for (frame, offset), (after, _) in zip(segments, segments[1:] + [[meta["frames"], 0]]):
        if starts.get(offset) != frame or after <= frame:
            return [f"segment [{frame}, {offset}] does not start at the record of frame {frame}, in order"]
    return []


def _decode_segments(data: bytes, meta: dict, video: np.ndarray) -> list[str]:
    """Every segment decoded on its own (as the loaders read clips) equals the full decode."""
    for frame, _ in meta["segments"]:
        start, end, first, count = segment_range(meta["segments"], meta["frames"], len(data), frame, frame)
        try:
            alone = decode_frames(clip_stream(data[:IVF_HEADER], data[start:end], count), range(count))
        except ShardFormatError as err:
            return [f"segment from frame {frame} does not decode on its own ({err})"]
        if not np.array_equal(alone, video[first:first + count]):
            return [f"segment from frame {frame} decodes on its own to other pixels than in the whole video"]
    return []


def _check_boxes(boxes: list) -> list[str]:
    for t, frame in enumerate(boxes):
        if not isinstance(frame, list):
            return [f"frame {t}: {_short(frame)} ({type(frame).__name__}) is not a list of boxes"]
        for box in frame:
            if not isinstance(box, list) or len(box) != len(BOX_ROW) - 1 or not all(map(_number, box)):
                return [f"frame {t}: box {_short(box)} is not 5 finite numbers"]
            x1, y1, x2, y2, score = box
            if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 and 0 <= score <= 1):
                return [f"frame {t}: box {[round(v, 4) for v in box]} outside [0, 1] or inverted"]
    return []


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _member_problems(tar: Path) -> list[str]:
    """One line per member the reader would refuse: not a regular file named <key>.<ext> at the
    top level (paths like ../x escape on extraction, and so do links)."""
    problems = []
    try:
        with tarfile.open(tar, "r:") as t:
            for info in t:
                try:
                    check_member(info)
                except ShardFormatError as err:
                    problems.append(str(err))
    except (tarfile.TarError, EOFError, OSError):
        pass  # an unreadable tar is reported when its samples are read
    return problems


def check_dir(shards_dir: str | Path, decode: bool = False) -> tuple[list[str], list[str]]:
    """(summary lines, problem lines) for a whole shard directory."""
    shards_dir = Path(shards_dir)
    try:
        manifest = read_manifest(shards_dir)
    except ShardFormatError as err:
        return [], [str(err)]
    summary, problems = [], []
    num_classes = len(manifest["classes"])
    for split, entry in sorted(manifest["splits"].items()):
        keys: set[str] = set()
        total_bytes = 0
        bar = tqdm(total=entry["samples"], desc=f"check {split}", unit="video", disable=None)
        for shard in entry["shards"]:
            tar, idx = shards_dir / shard["tar"], shards_dir / shard["index"]
            where = shard["tar"]
            if not tar.is_file():
                problems.append(f"{where}: missing")
                continue
            total_bytes += tar.stat().st_size
            if tar.stat().st_size != shard["bytes"]:
                problems.append(f"{where}: {tar.stat().st_size} bytes, the manifest says "
                                f"{shard['bytes']} (truncated or rewritten)")
            elif file_sha256(tar) != shard["sha256"]:
                problems.append(f"{where}: sha256 differs from the manifest (corrupt or rewritten)")
            unsafe = _member_problems(tar)
            if unsafe:  # the reader and the loaders refuse this shard: its samples are not read
                problems += [f"{where}: {p}" for p in unsafe]
                continue
            count = 0
            try:
                for key, members in iter_tar(tar):
                    count += 1
                    bar.update()
                    if key in keys:
                        problems.append(f"{where}: key {key} appears twice in split {split}")
                    keys.add(key)
                    problems += [f"{where}: {key}: {p}" for p in check_sample(key, members, num_classes, decode)]
            except ShardFormatError as err:
                problems.append(str(err))
                continue
            if count != shard["samples"]:
                problems.append(f"{where}: holds {count} samples, the manifest says {shard['samples']}")
            problems += _check_index(tar, idx, shard["index"])
        bar.close()
        counted = sum(s["samples"] for s in entry["shards"])
        if counted != entry["samples"]:
            problems.append(f"split {split}: the manifest says {entry['samples']} samples, "
                            f"its shards list {counted}")
        summary.append(f"{split}: {len(entry['shards'])} shards, {len(keys)} samples, "
                       f"{total_bytes / 2**20:.1f} MiB")
    failed = manifest.get("failed", [])
    if failed:
        summary.append(f"failed inputs recorded by prep: {len(failed)} (see manifest.json 'failed')")
    return summary, problems


def _check_index(tar: Path, idx: Path, name: str) -> list[str]:
    if not idx.is_file():
        return [f"{name}: index file missing (DALI needs it; re-run prep-shards)"]
    try:
        if parse_index(idx) != index_from_tar(tar):
            return [f"{name}: index does not match its tar (re-run prep-shards)"]
    except ValueError as err:
        return [f"{name}: bad index file ({err})"]
    return []


@dataclass
class CheckConfig:
    shards_dir: str                          # directory holding manifest.json and the shards
    decode: bool = False                     # also decode every video and check frames and size


@entry_point("shards-check")
def main(argv: list[str] | None = None) -> int:
    args = parse_config(CheckConfig, argv, "shards-check", __doc__.splitlines()[0], positional=("shards_dir",))
    refuse("shards-check", [] if Path(args.shards_dir).is_dir() else [f"{args.shards_dir} is not a directory"])
    summary, problems = check_dir(args.shards_dir, decode=args.decode)
    for line in summary:
        print(line)
    for line in problems:
        print(f"error: {line}")
    print(f"{args.shards_dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
