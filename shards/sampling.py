"""What a loader reads, in which order, and how each clip is cut: shared by both backends.

`SplitIndex` lists every sample of a split with the byte ranges of its members (from the DALI
index files), its metadata, boxes and video segment table, read once; `clip_stream` reads the
segments one clip needs and nothing else. `epoch_batches` decides which samples a
rank reads in an epoch; `clip_params` decides, per sample, the frames, crop and flip. Both are
pure functions of (seed, epoch, sample), so the two backends cut the same clips, any number of
workers gives the same batches, and a resumed run continues with exactly the batches it missed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .format import BOX_ROW, LABEL, META, SCENE, BOXES_RAW, VIDEO_EXTS, ShardFormatError, raw_to_rows
from .index import parse_index
from .manifest import read_manifest, shard_files
from .video import IVF_HEADER, clip_stream, segment_range


@dataclass(frozen=True)
class MaskFilter:
    """The official code feeds the masked pass only videos where at least `min_fraction` of
    the frames hold a person with score >= `min_score` (defaults: 0.7 and 0.3)."""

    min_score: float = 0.3
    min_fraction: float = 0.7


class SplitIndex:
    """Every sample of a split: where its members are, its metadata and boxes (read once)."""

    def __init__(self, shards_dir: str | Path, split: str, mask_filter: MaskFilter = MaskFilter()):
        self.manifest = read_manifest(shards_dir)
        self.shards = shard_files(shards_dir, self.manifest, split)
        self.split = split
        self.locations: list[tuple[int, dict[str, tuple[int, int]]]] = []  # (shard number, ext -> (offset, size))
        for number, (tar, idx) in enumerate(self.shards):
            if not idx.is_file():
                raise ShardFormatError(f"{idx} missing: re-run prep-shards (or shards-check {Path(shards_dir)})")
            for members in parse_index(idx):
                self.locations.append((number, {ext: (off, size) for ext, off, size, _ in members}))
        self._fds: dict[int, int] = {}
        self.keys, self.meta, self.labels, self.boxes, self.segments = [], [], [], [], []
        for i, (_, members) in enumerate(self.locations):
            meta = json.loads(self.read(i, META))
            self.keys.append(meta["id"])
            # (S, 2) int64 [first frame, byte offset]: a compact copy, 80K videos x 19 segments as
            # Python lists would hold ~100 MB in every loader process
            self.segments.append(np.asarray(meta.pop("segments"), np.int64).reshape(-1, 2))
            self.meta.append(meta)
            self.labels.append(int(self.read(i, LABEL)))
            rows = raw_to_rows(self.read(i, BOXES_RAW))
            if (np.diff(rows[:, 0]) < 0).any():  # masking finds a frame's boxes by binary search
                raise ShardFormatError(f"{self.shards[self.locations[i][0]][0].name}: {meta['id']}: boxes.f32 rows "
                                       "are not ordered by frame (shards-check names the damage; re-run prep-shards)")
            self.boxes.append(rows)
        self.labels = np.asarray(self.labels, np.int64)
        self.frames = np.asarray([m["frames"] for m in self.meta], np.int64)
        self.mask_ok = np.asarray([self._has_people(i, mask_filter) for i in range(len(self))], bool)

    def __len__(self) -> int:
        return len(self.locations)

    def read(self, i: int, ext: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes start..end (default: all) of one member of sample i: one pread on the shard,
        which is opened once per process."""
        number, members = self.locations[i]
        if ext == "video":
            ext = next(e for e in members if e in VIDEO_EXTS)
        offset, size = members[ext]
        end = size if end is None else end
        fd = self._fds.get(number)
        if fd is None:
            fd = self._fds[number] = os.open(self.shards[number][0], os.O_RDONLY)
        return os.pread(fd, end - start, offset + start)

    def clip_stream(self, i: int, frames: np.ndarray) -> tuple[bytes, np.ndarray]:
        """The video of sample i cut to the segments holding `frames` (decoded-frame numbers), as
        a stream any of our decoders reads, and the frames' numbers within that stream."""
        _, members = self.locations[i]
        size = next(s for e, (_, s) in members.items() if e in VIDEO_EXTS)
        start, end, first, count = segment_range(self.segments[i], int(self.frames[i]), size,
                                                 int(frames.min()), int(frames.max()))
        stream = clip_stream(self.read(i, "video", 0, IVF_HEADER), self.read(i, "video", start, end), count)
        return stream, frames - first

    def scene(self, i: int) -> np.ndarray:
        return np.frombuffer(self.read(i, SCENE), dtype="<f4").astype(np.float32)

    def _has_people(self, i: int, f: MaskFilter) -> bool:
        rows = self.boxes[i]
        frames_with = np.unique(rows[rows[:, BOX_ROW.index("score")] >= f.min_score, 0]).size
        return frames_with >= f.min_fraction * self.frames[i]

    def __getstate__(self):  # file descriptors do not cross into DataLoader workers
        return {**self.__dict__, "_fds": {}}


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int, world_size: int,
                  train: bool) -> list[np.ndarray]:
    """The sample ids this rank reads in this epoch, as batches.

    train: one permutation of all samples from (seed, epoch), dealt round-robin to the ranks,
    each rank keeping the same whole number of batches (the rest is dropped this epoch and
    comes up in others), so DDP ranks step together. eval: samples rank, rank + world_size, ...
    in file order, every sample exactly once over the ranks, the last batch partial.
    """
    if train:
        per_rank = (n // world_size) // batch_size * batch_size
        if per_rank == 0:
            raise ValueError(f"{n} samples cannot give each of {world_size} rank(s) a batch of {batch_size}")
        mine = np.random.default_rng([seed, epoch]).permutation(n)[rank::world_size][:per_rank]
        return list(mine.reshape(-1, batch_size))
    mine = np.arange(rank, n, world_size)
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


@dataclass(frozen=True)
class ClipParams:
    frames: np.ndarray   # int (T,): decoded-frame numbers
    y0: int              # crop offset in the stored frame
    x0: int
    flip: bool


def clip_params(sample: int, total_frames: int, height: int, width: int, *, frames: int, stride: int,
                size: int, seed: int, epoch: int, train: bool, clip: int = 0, clips: int = 1) -> ClipParams:
    """Frames, crop and flip of one clip of one sample.

    train: a random window, a random size x size crop, a flip half of the time, drawn from
    (seed, epoch, sample). eval: window `clip` of `clips` evenly spaced ones (the centred
    window when clips == 1), centre crop, no flip. A video shorter than the window repeats its
    last frame.
    """
    span = (frames - 1) * stride + 1
    room = max(total_frames - span, 0)
    if train:
        rng = np.random.default_rng([seed, epoch, sample])
        start = int(rng.integers(0, room + 1))
        y0, x0 = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        flip = bool(rng.random() < 0.5)
    else:
        start = room // 2 if clips == 1 else int(round(clip * room / (clips - 1)))
        y0, x0, flip = (height - size) // 2, (width - size) // 2, False
    return ClipParams(np.minimum(start + np.arange(frames) * stride, total_frames - 1), y0, x0, flip)
