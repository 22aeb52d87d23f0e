"""Training and evaluation batches from shards, with the human-masked copy made on the fly.

    loader = build_loader("data/synth-shards", "train", backend="dali", batch_size=32,
                          device="cuda", rank=rank, world_size=world)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:    # clip, masked: float (B, 3, T, H, W) on `device`
            ...

Two backends cut the same clips (shards/loader/sampling.py) and mask them with the same function
(shards/loader/masking.py): "dali" decodes in DALI (NVDEC on the GPU, the CPU decoder otherwise)
straight into the crop and flips and normalises it there, "torch" is the reference, PyAV in
DataLoader workers and torch for the rest, written for clarity. The masked copy is made in
torch on `device`, where the clip is.
"""
from __future__ import annotations

import numpy as np
import torch

from ..format import ShardFormatError
from .masking import box_rects, human_pixels, masked_copy, pad_rects
from .sampling import CROPS, LoaderConfig, MaskFilter, SplitIndex, epoch_batches, params_of
from .torch_decoder import TorchDecoder


class ClipLoader:
    """Iterable of batches for one rank; `set_epoch(e, start_batch)` picks the epoch and where
    in it to start (a resumed run passes the batches it had done)."""

    def __init__(self, index: SplitIndex, cfg: LoaderConfig, decoder, device: torch.device):
        self.index, self.cfg, self.decoder, self.device = index, cfg, decoder, device
        self.epoch, self.start_batch = 0, 0
        self.max_batches: int | None = None  # an epoch's cap: two loaders zipped end together (pretrain)
        self.skipped_clips: list[tuple[str, str]] = []  # (shard: key, why), with skip_bad: damage found reading a clip

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> list[list[tuple[int, int]]]:
        """This rank's (sample, clip) pairs per batch, for the current epoch."""
        c = self.cfg
        n = len(self.index)
        if c.train:
            pool = np.flatnonzero(self.index.mask_ok) if c.filtered_only else np.arange(n)
            plan = epoch_batches(len(pool), c.batch_size, seed=c.seed, epoch=self.epoch, rank=c.rank,
                                 world_size=c.world_size, stream=int(c.filtered_only))
            return [[(int(pool[s]), 0) for s in b] for b in plan][:self.max_batches]
        mine = [(int(s), k) for s in np.arange(c.rank, n, c.world_size) for k in range(c.clips)]
        return [mine[i:i + c.batch_size] for i in range(0, len(mine), c.batch_size)]

    def __len__(self) -> int:
        return len(self.batches())

    @property
    def mask_filter_kept(self) -> tuple[int, int]:
        """(videos passing the people filter of the masked pass, videos in the split)."""
        return int(self.index.mask_ok.sum()), len(self.index)

    def __iter__(self):
        return self.run(self.batches()[self.start_batch:])

    def run(self, plan: list[list[tuple[int, int]]]):
        """The batches of `plan`, lists of (sample, clip) pairs of the current epoch: what iterating
        yields for the epoch's own plan (benchmarks pass others, e.g. one window position only)."""
        if self.index.skip_bad:
            plan = [kept for kept in map(self._intact, plan) if kept]
        for items, (clip, means) in zip(plan, self.decoder.run(self.index, self.cfg, self.epoch, plan)):
            described = [describe(self.index, self.cfg, self.epoch, s, k) for s, k in items]
            means = means.to(self.device, non_blocking=True)
            rects = torch.from_numpy(pad_rects([d["rects"] for d in described])).to(self.device)
            flips = torch.tensor([d["params"].flip for d in described], device=self.device)
            human = human_pixels(rects, flips, clip.shape[-2], clip.shape[-1])
            samples = [s for s, _ in items]
            yield {
                "clip": clip,
                "masked": masked_copy(clip, means, human),
                "human": human,  # (B, T, H, W) inside a box: where the masked copy was filled
                "means": means,  # (B, T, 3) full-frame means in [0, 255]: the masked copy's fill
                "label": torch.from_numpy(self.index.labels[samples]).to(self.device),
                "scene": torch.from_numpy(np.stack([self.index.scene(s) for s in samples])).to(self.device),
                "scene_vote": torch.from_numpy(self.index.scene_vote[samples]).to(self.device),
                "mask_ok": torch.from_numpy(self.index.mask_ok[samples]).to(self.device),
                "has_human": (rects[..., 1] > rects[..., 0]).flatten(1).any(1),
                "key": [self.index.keys[s] for s in samples],
                "sample": torch.tensor(samples),
                "clip_index": torch.tensor([k for _, k in items]),
            }


    def _intact(self, items: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The items of a batch whose video records are whole (skip_bad): the others are left out
        of this batch (it gets smaller, the plan stays the same) and counted in skipped_clips. An
        evaluation batch may go altogether; a training batch may not (a resumed run counts them)."""
        kept = []
        for s, k in items:
            try:
                self.index.clip_stream(s, params_of(self.index, self.cfg, self.epoch, s, k).frames)
                kept.append((s, k))
            except ShardFormatError as err:
                self.skipped_clips.append((self.index.where(s), str(err).partition(": ")[2].partition(": ")[2]))
        if not kept and self.cfg.train:
            raise ShardFormatError(f"every clip of a batch is damaged ({', '.join(self.index.where(s) for s, _ in items)})")
        return kept


def describe(index: SplitIndex, cfg: LoaderConfig, epoch: int, sample: int, clip: int) -> dict:
    """Everything about one clip that needs no decoding: frames, crop, flip, mask rectangles."""
    meta = index.meta[sample]
    params = params_of(index, cfg, epoch, sample, clip)
    rects = box_rects(index.boxes[sample], params.frames, meta["height"], meta["width"], params.y0, params.x0,
                      cfg.size, threshold=cfg.mask_threshold, dilate=cfg.mask_dilate, shape=cfg.mask_shape,
                      side=params.side)
    return {"params": params, "rects": rects}


def build_loader(shards_dir, split: str, *, backend: str = "dali", batch_size: int, frames: int = 16,
                 size: int = 112, stride: int = 1, train: bool = True, device: str = "cuda", seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_threads: int = 4, clips: int = 1,
                 mask_threshold: float = 0.3, mask_dilate: float = 0.0, mask_shape: str = "box",
                 mask_filter: MaskFilter = MaskFilter(), skip_bad: bool = False,
                 filtered_only: bool = False, loop: bool = False, crop: str = "random") -> ClipLoader:
    """Batches of one split for one rank; see the module docstring. `num_threads` is DALI's
    thread count or the torch backend's DataLoader worker count. A damaged sample stops the
    loader with a message naming its shard and key; skip_bad=True leaves it out instead and
    counts it (`index.skipped` at start, `skipped_clips` for damage found reading a clip).
    filtered_only: training batches of the videos that pass `mask_filter` alone, shuffled
    independently (the official code's second loader for the masked pass). loop: videos shorter
    than a clip loop instead of repeating their last frame. crop "corner": the official multiscale
    corner crop resized to size (evaluation: the centred short side), sampling.py clip_params."""
    cfg = LoaderConfig(batch_size, frames, size, stride, train, clips, seed, rank, world_size,
                       mask_threshold, mask_dilate, mask_shape, filtered_only, loop, crop)
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, not {crop!r}")
    if mask_shape not in ("box", "tube"):
        raise ValueError(f"mask_shape must be 'box' or 'tube', not {mask_shape!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    index = SplitIndex(shards_dir, split, mask_filter, skip_bad)
    small = [(m["height"], m["width"]) for m in index.meta if min(m["height"], m["width"]) < size]
    if small:
        raise ValueError(f"{split} holds frames of {small[0][0]}x{small[0][1]}, smaller than size={size}: "
                         f"use a smaller size or re-run prep-shards with a larger --short-side")
    dev = torch.device(device)
    if backend == "torch":
        decoder = TorchDecoder(num_threads, dev)
    elif backend == "dali":
        from .dali_decoder import DaliDecoder
        decoder = DaliDecoder(batch_size, num_threads, dev, size)
    else:
        raise ValueError(f"backend must be 'dali' or 'torch', not {backend!r}")
    return ClipLoader(index, cfg, decoder, dev)
