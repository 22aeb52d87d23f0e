"""What a loader reads, in which order, and how each clip is cut: shared by both backends.

`SplitIndex` lists every sample of a split with the byte ranges of its members (from the DALI
index files), its metadata and its boxes, read once. `epoch_batches` decides which samples a
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
        self.keys, self.meta, self.labels, self.boxes = [], [], [], []
        for i, (_, members) in enumerate(self.locations):
            meta = json.loads(self.read(i, META))
            self.keys.append(meta["id"])
            self.meta.append(meta)
            self.labels.append(int(self.read(i, LABEL)))
            self.boxes.append(raw_to_rows(self.read(i, BOXES_RAW)))
        self.labels = np.asarray(self.labels, np.int64)
        self.frames = np.asarray([m["frames"] for m in self.meta], np.int64)
        self.mask_ok = np.asarray([self._has_people(i, mask_filter) for i in range(len(self))], bool)

    def __len__(self) -> int:
        return len(self.locations)

    def read(self, i: int, ext: str) -> bytes:
        """The bytes of one member of sample i (one pread on the shard, opened once per process)."""
        number, members = self.locations[i]
        if ext == "video":
            ext = next(e for e in members if e in VIDEO_EXTS)
        offset, size = members[ext]
        fd = self._fds.get(number)
        if fd is None:
            fd = self._fds[number] = os.open(self.shards[number][0], os.O_RDONLY)
        return os.pread(fd, size, offset)

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
