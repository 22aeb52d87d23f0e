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

from ..format import (BOX_ROW, LABEL, META, NUM_SCENES, SCENE, SCENE_VOTES, BOXES_RAW, VIDEO_EXTS, ShardFormatError,
                      majority_vote, raw_to_rows, scene_problem)
from ..index import parse_index
from ..manifest import read_manifest, shard_files
from ..video import IVF_HEADER, clip_stream, ivf_frames, segment_range


@dataclass(frozen=True)
class MaskFilter:
    """The official code feeds the masked pass only videos where at least `min_fraction` of
    the frames hold a person with a score above `min_score` (defaults: 0.7 and 0.3)."""

    min_score: float = 0.3
    min_fraction: float = 0.7


def sample_problem(meta, label: int, scene: np.ndarray, rows: np.ndarray, video_size: int, num_classes: int) -> str:
    """What makes a sample unusable for training, found without decoding ("" when nothing does):
    the checks shards-check makes that a loader can afford for every sample at start."""
    if not isinstance(meta, dict):
        return f"metadata is a {type(meta).__name__}, not an object"
    frames, segments = meta.get("frames"), meta.get("segments")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        return f"metadata frames is {frames!r}, not a whole number >= 1"
    for field in ("height", "width"):
        if not isinstance(meta.get(field), int) or meta[field] < 2:
            return f"metadata {field} is {meta.get(field)!r}, not a frame size"
    if not 0 <= label < num_classes:
        return f"label {label} outside [0, {num_classes}) (the manifest's classes)"
    if why := scene_problem(scene, meta.get(SCENE_VOTES)):
        return why
    if not np.isfinite(rows).all() or (np.diff(rows[:, 0]) < 0).any() or ((rows[:, 0] < 0) | (rows[:, 0] >= frames)).any():
        return "boxes.f32 holds non-finite values or frames out of order or range"
    try:
        table = np.asarray(segments, np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        return "metadata segments is not a list of [first frame, byte offset] pairs"
    if (len(table) == 0 or tuple(table[0]) != (0, IVF_HEADER) or (np.diff(table, axis=0) <= 0).any()
            or table[-1, 0] >= frames or table[-1, 1] >= video_size):
        return f"metadata segments {segments!r:.80} do not fit a video of {frames} frames and {video_size} bytes"
    return ""


class SplitIndex:
    """Every sample of a split: where its members are, its metadata and boxes (read once), each
    sample checked (`sample_problem`). A damaged sample stops the loader with a message naming
    its shard and key, or with skip_bad=True is left out of the split and listed in `skipped`."""

    def __init__(self, shards_dir: str | Path, split: str, mask_filter: MaskFilter = MaskFilter(),
                 skip_bad: bool = False):
        self.manifest = read_manifest(shards_dir)
        self.shards = shard_files(shards_dir, self.manifest, split)
        self.split, self.skip_bad = split, skip_bad
        num_classes = len(self.manifest["classes"])
        candidates = []  # (shard number, key from the index, ext -> (offset, size))
        for number, (tar, idx) in enumerate(self.shards):
            if not idx.is_file():
                raise ShardFormatError(f"{idx} missing: re-run prep-shards (or shards-check {Path(shards_dir)})")
            for members in parse_index(idx):
                candidates.append((number, members[0][3].partition(".")[0],
                                   {ext: (off, size) for ext, off, size, _ in members}))
        self._fds: dict[int, int] = {}
        self.locations: list[tuple[int, dict[str, tuple[int, int]]]] = []  # (shard number, ext -> (offset, size))
        self.keys, self.meta, self.labels, self.boxes, self.segments, self.scene_vote = [], [], [], [], [], []
        self.skipped: list[tuple[str, str]] = []  # (shard: key, why), with skip_bad
        hint = (f"shards-check {Path(shards_dir)} lists every damaged sample; re-run prep-shards for them, or "
                "pass --skip-bad-samples to leave them out")
        for number, key, members in candidates:
            where = f"{self.shards[number][0].name}: {key}"
            try:
                meta, label, scene, rows, size = self._read_sample(number, members)
                why = sample_problem(meta, label, scene, rows, size, num_classes)
                if not why and meta.get("id") != key:
                    why = f"metadata id {meta.get('id')!r} differs from the member names' key"
            except (ShardFormatError, ValueError, UnicodeDecodeError, StopIteration) as err:
                why = f"unreadable ({' '.join(str(err).split())[:160]})"
            if why and not skip_bad:
                raise ShardFormatError(f"{where}: {why} ({hint})")
            if why:
                self.skipped.append((where, why))
                continue
            self.locations.append((number, members))
            self.keys.append(key)
            # (S, 2) int64 [first frame, byte offset]: a compact copy, 80K videos x 19 segments as
            # Python lists would hold ~100 MB in every loader process
            self.segments.append(np.asarray(meta.pop("segments"), np.int64).reshape(-1, 2))
            votes = meta.pop(SCENE_VOTES, None)
            self.scene_vote.append(majority_vote(votes) if votes else -1)
            self.meta.append(meta)
            self.labels.append(label)
            self.boxes.append(rows)
        self.labels = np.asarray(self.labels, np.int64)
        # the official hard scene label, -1 where the shards hold no per-frame votes (`scene_votes`)
        self.scene_vote = np.asarray(self.scene_vote, np.int64)
        self.frames = np.asarray([m["frames"] for m in self.meta], np.int64)
        self.mask_ok = np.asarray([self._has_people(i, mask_filter) for i in range(len(self))], bool)

    def _read_sample(self, number: int, members: dict[str, tuple[int, int]]):
        def read(ext: str) -> bytes:
            if ext not in members:
                raise ShardFormatError(f"no {ext} member")
            offset, size = members[ext]
            return self._pread(number, offset, size)
        meta = json.loads(read(META))
        scene = np.frombuffer(read(SCENE), dtype="<f4")
        if scene.shape != (NUM_SCENES,):
            raise ShardFormatError(f"scene.f32 holds {scene.size} floats, not {NUM_SCENES}")
        video_size = next(size for ext, (_, size) in members.items() if ext in VIDEO_EXTS)
        return meta, int(read(LABEL)), scene, raw_to_rows(read(BOXES_RAW)), video_size

    def _pread(self, number: int, offset: int, size: int) -> bytes:
        fd = self._fds.get(number)
        if fd is None:
            fd = self._fds[number] = os.open(self.shards[number][0], os.O_RDONLY)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise ShardFormatError(f"{self.shards[number][0].name} ends at byte {offset + len(data)}, inside a member "
                                   "(a truncated shard: re-run prep-shards)")
        return data

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
        return self._pread(number, offset + start, end - start)

    def clip_stream(self, i: int, frames: np.ndarray) -> tuple[bytes, np.ndarray]:
        """The video of sample i cut to the segments holding `frames` (decoded-frame numbers), as
        a stream any of our decoders reads, and the frames' numbers within that stream. The cut's
        frame records are checked first (one per frame, numbered in order): damage there is named
        with the shard and key instead of decoding to black or garbage frames."""
        number, members = self.locations[i]
        size = next(s for e, (_, s) in members.items() if e in VIDEO_EXTS)
        start, end, first, count = segment_range(self.segments[i], int(self.frames[i]), size,
                                                 int(frames.min()), int(frames.max()))
        body = self.read(i, "video", start, end)
        try:
            intact = [pts for _, _, pts in ivf_frames(body, 0)] == list(range(first, first + count))
        except ShardFormatError:
            intact = False
        if not intact:
            raise ShardFormatError(f"{self.where(i)}: the video's frames {first}..{first + count - 1} are damaged "
                                   "(their records do not follow the segment table; shards-check names every such "
                                   "sample; re-run prep-shards)")
        return clip_stream(self.read(i, "video", 0, IVF_HEADER), body, count), frames - first

    def where(self, i: int) -> str:
        """'<shard>: <key>' of sample i, for messages."""
        return f"{self.shards[self.locations[i][0]][0].name}: {self.keys[i]}"

    def scene(self, i: int) -> np.ndarray:
        return np.frombuffer(self.read(i, SCENE), dtype="<f4").astype(np.float32)

    def _has_people(self, i: int, f: MaskFilter) -> bool:
        rows = self.boxes[i]
        # as the official filter writes it (datasets/kinetics.py is_video_valid_det): a score above
        # min_score, and the fraction as a quotient (7 of 10 frames pass 0.7; 0.7 * 10 is 7.000000000000001)
        frames_with = np.unique(rows[rows[:, BOX_ROW.index("score")] > f.min_score, 0]).size
        return frames_with / self.frames[i] >= f.min_fraction

    def __getstate__(self):  # file descriptors do not cross into DataLoader workers
        return {**self.__dict__, "_fds": {}}


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int, world_size: int,
                  stream: int = 0) -> list[np.ndarray]:
    """The sample ids this rank trains on in this epoch, as batches: one permutation of all
    samples from (seed, epoch), dealt round-robin to the ranks, each rank keeping the same whole
    number of batches (the rest is dropped this epoch and comes up in others), so DDP ranks step
    together. Another `stream` shuffles independently of stream 0 (the separate masked batches).
    (Evaluation reads every sample once, in file order: ClipLoader.batches.)
    """
    per_rank = (n // world_size) // batch_size * batch_size
    if per_rank == 0:
        raise ValueError(f"{n} samples cannot give each of {world_size} rank(s) a batch of {batch_size}")
    mine = np.random.default_rng([seed, epoch, *([stream] if stream else [])]).permutation(n)[rank::world_size][:per_rank]
    return list(mine.reshape(-1, batch_size))


@dataclass(frozen=True)
class ClipParams:
    frames: np.ndarray   # int (T,): decoded-frame numbers
    y0: int              # crop offset in the stored frame
    x0: int
    flip: bool
    side: int | None = None  # a side x side crop resized to the clip's size (crop "corner"); None: size, no resize


# the official multiscale corner crop (libs/opts.py --initial_scale 1 --n_scales 5 --scale_step 0.84089641525;
# libs/spatial_transforms.py MultiScaleCornerCrop): a scale of the short side, a corner or the centre
CORNER_SCALES = tuple(0.84089641525 ** i for i in range(5))
CORNER_POSITIONS = ("c", "tl", "tr", "bl", "br")
CROPS = ("random", "corner")


def corner_crop(height: int, width: int, scale: float, position: str) -> tuple[int, int, int]:
    """(y0, x0, side) of MultiScaleCornerCrop as the official code computes it (its centre box
    spans 2 * (side // 2), one pixel less than the side when that is odd)."""
    side = int(min(height, width) * scale)
    if position == "c":
        half = side // 2
        return height // 2 - half, width // 2 - half, 2 * half
    y0 = 0 if position in ("tl", "tr") else height - side
    x0 = 0 if position in ("tl", "bl") else width - side
    return y0, x0, side


def clip_params(sample: int, total_frames: int, height: int, width: int, *, frames: int, stride: int,
                size: int, seed: int, epoch: int, train: bool, clip: int = 0, clips: int = 1,
                loop: bool = False, crop: str = "random") -> ClipParams:
    """Frames, crop and flip of one clip of one sample.

    train: a random window, a random size x size crop, a flip half of the time, drawn from
    (seed, epoch, sample). eval: window `clip` of `clips` evenly spaced ones (the centred
    window when clips == 1), centre crop, no flip. A video shorter than the window repeats its
    last frame, or with `loop` its frames from the window's first again (the official code's
    LoopPadding, libs/temporal_transforms.py). crop "corner" (the official code): in training the
    multiscale corner crop (`corner_crop`), in evaluation the centred square of the short side
    (its Scale + CenterCrop), each resized to size x size by the loader.
    """
    span = (frames - 1) * stride + 1
    room = max(total_frames - span, 0)
    side = None
    if train:
        rng = np.random.default_rng([seed, epoch, sample])
        start = int(rng.integers(0, room + 1))
        if crop == "corner":
            y0, x0, side = corner_crop(height, width, CORNER_SCALES[int(rng.integers(len(CORNER_SCALES)))],
                                       CORNER_POSITIONS[int(rng.integers(len(CORNER_POSITIONS)))])
        else:
            y0, x0 = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        flip = bool(rng.random() < 0.5)
    else:
        start = room // 2 if clips == 1 else int(round(clip * room / (clips - 1)))
        side = min(height, width) if crop == "corner" else None
        y0, x0, flip = (height - (side or size)) // 2, (width - (side or size)) // 2, False
    steps = np.arange(frames)
    if loop:
        steps %= (total_frames - 1 - start) // stride + 1  # the frames the window holds
    return ClipParams(np.minimum(start + steps * stride, total_frames - 1), y0, x0, flip, side)


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int
    frames: int = 16          # frames per clip
    size: int = 112           # crop side, pixels of the stored frames
    stride: int = 1           # frame step inside a clip
    train: bool = True        # random window/crop/flip and per-epoch shuffle; else centred, in order
    clips: int = 1            # eval only: evenly spaced clips per video (video-level protocol)
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    mask_threshold: float = 0.3   # boxes with score >= this are masked
    mask_dilate: float = 0.0      # grow boxes by this fraction of their size per side
    mask_shape: str = "box"       # "box" (per frame) or "tube" (clip union)
    filtered_only: bool = False   # train only: the videos passing the people filter, shuffled on their own
    loop: bool = False            # a video shorter than the clip loops (else its last frame repeats)
    crop: str = "random"          # one of CROPS: a size crop of the stored frames, or the official corner crop resized


def params_of(index: SplitIndex, cfg: LoaderConfig, epoch: int, sample: int, clip: int):
    """The frames, crop and flip of one clip (clip_params for this loader's settings)."""
    meta = index.meta[sample]
    return clip_params(sample, int(index.frames[sample]), meta["height"], meta["width"], frames=cfg.frames,
                       stride=cfg.stride, size=cfg.size, seed=cfg.seed, epoch=epoch, train=cfg.train,
                       clip=clip, clips=cfg.clips, loop=cfg.loop, crop=cfg.crop)
