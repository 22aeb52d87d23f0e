"""FAME, Foreground-background Merging: Ding et al., "Motion-aware Contrastive Video
Representation Learning via Foreground-background Merging", CVPR 2022 (Mark12Ding/FAME).

The foreground of a clip is where it moves, refined by colour: frame differences (summed over
channels, averaged over time, blurred, min-max scaled) seed a colour model, the top half of the
pixels as foreground and the lowest tenth as background; each pixel's foreground probability
under 10x10x10 colour histograms (hue and saturation on a disc, value), blurred and scaled again,
keeps the top beta = 0.5 of the pixels as the clip's one 2D mask (moco/loader.py:12-98, beta in
train.py:125). That foreground is pasted onto another clip of the batch, a random permutation
that may pick the clip itself: `x[perm] (1 - mask) + x mask`. The mask is computed on the clip in
[0, 1] and the normalised clips are merged (the supervised re-implementation, lihaoxin05/StillMix
blending_utils.py:403-535: label unchanged, cross-entropy alone). `consistency` > 0 adds the
MSE of the merged clip's features to the original's, as for BE.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shards.loader.masking import CLIP_MEAN, CLIP_STD

from .common import MethodLoss, label_kept, per_clip

EPS = 1e-8
BINS = 10  # per colour axis


def gaussian_blur(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W) blurred by a size x size Gaussian, sigma size / 3, reflected at the border (as
    kornia.filters.GaussianBlur2d, which the official code uses)."""
    r = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    k = torch.exp(-r ** 2 / (2 * (size / 3) ** 2))
    k = k / k.sum()
    y = F.pad(x[:, None], (size // 2,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[:, 0]


def min_max(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + EPS)).view_as(x)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> hue in radians [0, 2 pi), saturation, value (kornia's convention)."""
    top, which = rgb.max(1)
    delta = top - rgb.min(1).values
    s = delta / (top + EPS)
    delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (top[:, None] - rgb).unbind(1)
    h = torch.stack([bc - gc, (rc - bc) + 2 * delta, (gc - rc) + 4 * delta], 1) / delta[:, None]
    h = (h.gather(1, which[:, None])[:, 0] / 6.0) % 1.0
    return torch.stack([2 * math.pi * h, s, top], 1)


def top_mask(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, H, W) -> 1 at the int(fraction * H * W) highest scores of each clip, else 0."""
    flat = score.flatten(1)
    mask = torch.zeros_like(flat)
    mask.scatter_(1, flat.topk(int(fraction * flat.shape[1]), dim=1).indices, 1.0)
    return mask.view_as(score)


def foreground_mask(clip01: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """clip (B, 3, T, H, W) in [0, 1] -> the binary foreground mask (B, H, W), beta of the pixels."""
    b, _, _, h, w = clip01.shape
    size = int(0.1 * h) // 2 * 2 + 1
    motion = min_max(gaussian_blur((clip01[:, :, :-1] - clip01[:, :, 1:]).abs().sum(1).mean(1), size))
    hue, sat, val = rgb_to_hsv(clip01.mean(2)).unbind(1)
    # hue is in radians and multiplied by 2 pi again, as in the official code (loader.py:52-53)
    hx, hy = (sat * torch.cos(hue * 2 * math.pi) + 1) / 2, (sat * torch.sin(hue * 2 * math.pi) + 1) / 2
    bins = [torch.round(c * (BINS - 1) + 1) for c in (hx, hy, val)]  # 1..BINS each
    colour = (bins[0] + (bins[1] - 1) * BINS + (bins[2] - 1) * BINS * BINS).long().flatten(1).clamp(max=BINS ** 3 - 1)
    order = motion.flatten(1).argsort(dim=1, descending=True, stable=True)
    fg_seed, bg_seed = order[:, : int(0.5 * h * w)], order[:, order.shape[1] - int(0.1 * h * w):]
    count = lambda seed: torch.zeros(b, BINS ** 3, device=clip01.device).scatter_add_(
        1, colour.gather(1, seed), torch.ones(seed.shape, device=clip01.device))
    p_fg, p_bg = count(fg_seed), count(bg_seed) + 1
    p_fg, p_bg = p_fg / (p_fg.sum(1, keepdim=True) + EPS), p_bg / (p_bg.sum(1, keepdim=True) + EPS)
    fg, bg = p_fg.gather(1, colour), p_bg.gather(1, colour)
    soft = min_max(gaussian_blur((fg / (fg + bg)).view(b, h, w), size))
    return top_mask(soft, beta)


class Fame:
    def __init__(self, beta: float = 0.5, prob: float = 1.0, consistency: float = 0.0):
        self.beta, self.prob, self.consistency = beta, prob, consistency

    def merge(self, clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Normalised clips (B, C, T, H, W) -> each one's foreground on a random clip's background."""
        dev = clip.device
        std, mean = torch.tensor(CLIP_STD, device=dev).view(1, 3, 1, 1, 1), torch.tensor(CLIP_MEAN, device=dev).view(1, 3, 1, 1, 1)
        mask = foreground_mask((clip.float() * std + mean).clamp(0, 1), self.beta)[:, None, None].to(clip.dtype)
        perm = torch.randperm(len(clip), generator=generator).to(dev)
        merged = clip[perm] * (1 - mask) + clip * mask
        return torch.where(per_clip(len(clip), self.prob, generator, dev).view(-1, 1, 1, 1, 1), merged, clip)

    def __call__(self, net, batch: dict, generator: torch.Generator) -> MethodLoss:
        return label_kept(net, self.merge(batch["clip"], generator), batch["clip"], batch["label"], self.consistency)
