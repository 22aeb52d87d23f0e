"""The reference decoder of the loader: PyAV in DataLoader workers, written for clarity.

For each clip it reads the segments the clip spans (shards/loader/sampling.py `clip_stream`),
decodes the frames it needs, crops them and takes the full-frame means; the main process
flips and normalises (shards/loader/masking.py `normalise`, the torch reference of what the DALI
decoder does in its graph).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..format import ShardFormatError
from ..video import decode_frames
from .masking import normalise
from .sampling import LoaderConfig, SplitIndex, params_of
from .workers import tied_to_this_process


class _DecodeDataset(Dataset):
    """Reference decoding: PyAV on the segments the clip spans, the needed frames only, cropped;
    plus full-frame means. Items carry their epoch, so one dataset (and one set of persistent
    workers) serves every epoch."""

    def __init__(self, index: SplitIndex, cfg: LoaderConfig):
        self.index, self.cfg = index, cfg

    def __getitem__(self, item: tuple[int, int, int]):
        sample, clip, epoch = item
        p = params_of(self.index, self.cfg, epoch, sample, clip)
        try:
            stream, within = self.index.clip_stream(sample, p.frames)
            frames = decode_frames(stream, within)
        except ShardFormatError as err:  # handed to the main process as a message: no worker traceback
            message = str(err) if str(err).startswith(self.index.where(sample)) else f"{self.index.where(sample)}: {err}"
            return DecodeFailure(message), None
        means = frames.reshape(len(frames), -1, 3).mean(axis=1, dtype=np.float64).astype(np.float32)
        side = p.side or self.cfg.size
        crop = torch.from_numpy(np.ascontiguousarray(frames[:, p.y0:p.y0 + side, p.x0:p.x0 + side]))
        return (resized(crop, self.cfg.size) if side != self.cfg.size else crop), torch.from_numpy(means)


def resized(crop: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, s, s, 3) -> (T, size, size, 3): bilinear with antialiasing, as PIL's resize in the
    official code (and DALI's linear resize with antialias here) does it."""
    x = crop.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class DecodeFailure(str):
    """A worker's ShardFormatError message, in place of a clip."""


def _stack(batch):
    failed = [clip for clip, _ in batch if isinstance(clip, DecodeFailure)]
    return failed[0] if failed else tuple(torch.stack(x) for x in zip(*batch))


class _EpochPlan:
    """The batch sampler of the persistent DataLoader: the current epoch's batches, set per run."""

    def __init__(self):
        self.batches: list[list[tuple[int, int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def cores_per_process() -> int:
    """The cores this process may use, shared with the other local ranks of torchrun."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


class TorchDecoder:
    """PyAV decoding in DataLoader workers: at most one per core (more only compete for the
    cores), started once and kept across epochs (starting them costs seconds every epoch)."""

    def __init__(self, num_workers: int, device: torch.device):
        self.num_workers, self.device = min(num_workers, cores_per_process()), device
        self._plan, self._loader, self._source = _EpochPlan(), None, None

    def run(self, index, cfg, epoch, plan):
        """Per batch of `plan`: the normalised clips on the device and the full-frame means.
        One iteration at a time: a new one takes the workers over from an unfinished one."""
        if self._source != (id(index), cfg):
            # forkserver: workers forked from a clean server, never from a process running DALI/torch threads
            self._loader = DataLoader(_DecodeDataset(index, cfg), batch_sampler=self._plan, num_workers=self.num_workers,
                                      collate_fn=_stack, pin_memory=self.device.type == "cuda",
                                      multiprocessing_context="forkserver" if self.num_workers else None,
                                      persistent_workers=self.num_workers > 0, worker_init_fn=tied_to_this_process())
            self._source = (id(index), cfg)
        self._plan.batches = [[(s, k, epoch) for s, k in batch] for batch in plan]
        for items, stacked in zip(plan, self._loader):
            if isinstance(stacked, DecodeFailure):
                raise ShardFormatError(stacked)
            frames, means = stacked
            flips = torch.tensor([params_of(index, cfg, epoch, s, k).flip for s, k in items], device=self.device)
            yield normalise(frames.to(self.device, non_blocking=True), flips), means
