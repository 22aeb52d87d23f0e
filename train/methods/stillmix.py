"""StillMix: Li et al., "Mitigating and Evaluating Static Bias of Action Representations in the
Background and the Foreground", ICCV 2023 (lihaoxin05/StillMix).

A still frame is mixed into every frame of a clip, `lam x + (1 - lam) frame`, lam ~ Beta(200,
200) drawn once per batch (about 0.5), for each clip with probability 0.75, label unchanged
(mmaction/datasets/blending_utils.py:614-755; the UCF-101 config stillmix_bank_ucf101_1.py:21-32).
The frames come from a bank: the training frames a 2D reference network classifies most
confidently from a single frame, i.e. those that give the action away without motion (the top
half by max softmax, 1024 of them at random; built once, stored beside the shards by
train/methods/stillmix_bank.py). Without a bank (the random variant, blending_utils.py:538-611)
each clip gets a random frame of another clip of the batch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shards.loader.masking import CLIP_MEAN, CLIP_STD

from .common import MethodLoss, beta, label_kept, per_clip


class StillMix:
    def __init__(self, bank: torch.Tensor | None = None, alpha: tuple[float, float] = (200.0, 200.0),
                 prob: float = 0.75, consistency: float = 0.0):
        """bank: normalised frames (N, C, H, W) at the clips' crop size, on their device; None: the random variant."""
        self.bank, self.alpha, self.prob, self.consistency = bank, alpha, prob, consistency

    def stills(self, clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One still frame (B, C, H, W) per clip: from the bank, or a random frame of another clip."""
        b, _, t = clip.shape[:3]
        if self.bank is not None:
            return self.bank[torch.randint(len(self.bank), (b,), generator=generator).to(self.bank.device)]
        other = (torch.arange(b) + torch.randint(1, max(b, 2), (b,), generator=generator)) % b  # never itself (b > 1)
        return clip[other.to(clip.device), :, torch.randint(t, (b,), generator=generator).to(clip.device)]

    def mix(self, clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        lam = beta(*self.alpha, generator)
        mixed = lam * clip + (1 - lam) * self.stills(clip, generator)[:, :, None]
        return torch.where(per_clip(len(clip), self.prob, generator, clip.device).view(-1, 1, 1, 1, 1), mixed, clip)

    def __call__(self, net, batch: dict, generator: torch.Generator) -> MethodLoss:
        return label_kept(net, self.mix(batch["clip"], generator), batch["clip"], batch["label"], self.consistency)


def load_bank(path: str, size: int, device: torch.device) -> torch.Tensor:
    """A bank file (npz: uint8 `frames` (N, H, W, 3), no pickle) -> normalised (N, 3, size, size)
    on `device`: whole frames resized to the crop size, as the official bank resizes to 224."""
    with np.load(path, allow_pickle=False) as f:
        if "frames" not in f.files or f["frames"].dtype != np.uint8 or f["frames"].ndim != 4 or f["frames"].shape[-1] != 3:
            raise ValueError(f"{path}: not a StillMix frame bank (uint8 'frames' of shape (N, H, W, 3)); "
                             "make one with python -m train.methods.stillmix_bank")
        frames = torch.from_numpy(f["frames"]).to(device)
    frames = F.interpolate(frames.permute(0, 3, 1, 2).float() / 255, size=(size, size), mode="bilinear",
                           antialias=True, align_corners=False)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    return (frames - mean) / std
