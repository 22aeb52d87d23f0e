"""Human masking, the one definition both loaders use (shards/FORMAT.md, "Box semantics").

Every box of a frame with score >= threshold has its pixels filled with that frame's mean
colour, the mean over the whole decoded frame, before crop, flip and normalisation. The
loaders crop first (DALI decodes straight into the crop) and pass the full-frame means along;
`box_rects` puts the boxes into crop coordinates with the format's pixel rule, so masking the
crop equals cropping the masked frame.

Mask shapes: "box" masks each frame's own boxes (the official code); "tube" masks, in every
frame of the clip, the union of all boxes over the clip's frames, so the mask itself does not
move (a moving, reshaping flat box still shows the motion the entropy loss is meant to hide).
"""
from __future__ import annotations


import numpy as np
import torch

EPS = 1e-3  # pixels; absorbs float32 rounding of boxes stored from whole pixel edges
# Kinetics RGB statistics, as torchvision's video models use them
CLIP_MEAN = (0.43216, 0.394666, 0.37645)
CLIP_STD = (0.22803, 0.22145, 0.216989)


def box_rects(rows: np.ndarray, frames: np.ndarray, height: int, width: int, y0: int, x0: int, size: int,
              *, threshold: float = 0.3, dilate: float = 0.0, shape: str = "box", side: int | None = None) -> np.ndarray:
    """Boxes (rows [frame, x1, y1, x2, y2, score], normalised, ordered by frame) -> int (T, K, 4)
    [r0, r1, c0, c1] pixel rectangles in the size x size crop at (y0, x0), for the clip's frames;
    empty rectangles pad K. `dilate` grows each box by that fraction of its width/height per side.
    With `side` (a side x side crop resized to size, crop "corner"), a rectangle holds every output
    pixel that the box overlaps: masking then fills the resized crop, not the frame before it.

    The rows of the clip's frames are found by binary search and converted in one pass (float32,
    as the format's rule is written), so the cost does not grow with the length of the video."""
    if shape not in ("box", "tube"):
        raise ValueError(f"mask shape must be 'box' or 'tube', not {shape!r}")
    frames = np.asarray(frames)
    lo = np.searchsorted(rows[:, 0], frames, side="left")
    hi = np.searchsorted(rows[:, 0], frames, side="right")
    t = np.repeat(np.arange(len(frames)), hi - lo)  # clip frame of each selected row
    sel = rows[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]).astype(np.int64)] if len(t) else rows[:0]
    keep = sel[:, 5] >= np.float32(threshold)
    t, sel = t[keep], sel[keep]
    x1, y1, x2, y2 = (sel[:, i] for i in range(1, 5))
    dx, dy = np.float32(dilate) * (x2 - x1), np.float32(dilate) * (y2 - y1)
    zero, one, eps = np.float32(0), np.float32(1), np.float32(EPS)
    x1, x2 = np.maximum(zero, x1 - dx), np.minimum(one, x2 + dx)
    y1, y2 = np.maximum(zero, y1 - dy), np.minimum(one, y2 + dy)
    if side is None or side == size:
        r = np.stack([np.floor(y1 * np.float32(height) + eps) - y0, np.ceil(y2 * np.float32(height) - eps) - y0,
                      np.floor(x1 * np.float32(width) + eps) - x0, np.ceil(x2 * np.float32(width) - eps) - x0], 1)
    else:
        k = np.float32(size / side)
        r = np.stack([np.floor((y1 * np.float32(height) - y0) * k + eps), np.ceil((y2 * np.float32(height) - y0) * k - eps),
                      np.floor((x1 * np.float32(width) - x0) * k + eps), np.ceil((x2 * np.float32(width) - x0) * k - eps)], 1)
    r = np.clip(r, 0, size).astype(np.int32)
    nonempty = (r[:, 0] < r[:, 1]) & (r[:, 2] < r[:, 3])
    t, r = t[nonempty], r[nonempty]
    if shape == "tube":
        if len(r) == 0:
            return np.zeros((len(frames), 1, 4), np.int32)
        union = np.array([r[:, 0].min(), r[:, 1].max(), r[:, 2].min(), r[:, 3].max()], np.int32)
        return np.broadcast_to(union, (len(frames), 1, 4)).copy()
    counts = np.bincount(t, minlength=len(frames))
    out = np.zeros((len(frames), max(1, int(counts.max(initial=0))), 4), np.int32)
    slot = np.arange(len(t)) - np.repeat(np.cumsum(counts) - counts, counts)  # position within its frame
    out[t, slot] = r
    return out


def pad_rects(rects: list[np.ndarray]) -> np.ndarray:
    """Stack per-sample (T, K_i, 4) rectangles into (B, T, max K, 4), padding with empty ones."""
    k = max(r.shape[1] for r in rects)
    out = np.zeros((len(rects), rects[0].shape[0], k, 4), np.int32)
    for b, r in enumerate(rects):
        out[b, :, :r.shape[1]] = r
    return out


def normalise(frames: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) crops, flips bool (B,) -> float (B, 3, T, H, W), flipped where asked,
    Kinetics mean/std: the reference for what DALI's crop_mirror_normalize does in its graph.
    One channels-first float copy and one multiply-add (each pass over the batch counts on a CPU)."""
    b, t, h, w, _ = frames.shape
    dev = frames.device
    std, mean = torch.tensor(CLIP_STD, device=dev), torch.tensor(CLIP_MEAN, device=dev)
    frames = torch.where(flips.view(-1, 1, 1, 1, 1), frames.flip(3), frames)
    clip = torch.empty((b, 3, t, h, w), device=dev)
    clip.copy_(frames.permute(0, 4, 1, 2, 3))
    return torch.addcmul((-mean / std).view(1, 3, 1, 1, 1), clip, (1 / (255 * std)).view(1, 3, 1, 1, 1), out=clip)


def human_pixels(rects: torch.Tensor, flips: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Which pixels of a batch's crops lie inside a box: rects int (B, T, K, 4) from box_rects
    (crop coordinates, before the flip), flips bool (B,) -> bool (B, T, H, W), mirrored for the
    flipped clips as the clips are. The mask the masked copy fills, and what methods that move
    the actor between clips (ActorCutMix) paste."""
    dev = rects.device
    r0, r1, c0, c1 = rects.unbind(-1)
    flip = flips.view(-1, 1, 1)
    c0, c1 = torch.where(flip, width - c1, c0), torch.where(flip, width - c0, c1)
    rows, cols = torch.arange(height, device=dev), torch.arange(width, device=dev)
    rows_in = ((rows >= r0[..., None]) & (rows < r1[..., None])).float()  # (B, T, K, H)
    cols_in = ((cols >= c0[..., None]) & (cols < c1[..., None])).float()  # (B, T, K, W)
    # the union of the K rectangles as (H, K) @ (K, W) counts: one small batched matmul, 2.4x
    # faster on a CPU than an (B, T, K, H, W) "and" reduced over K (benchmarks/README.md)
    return torch.matmul(rows_in.transpose(-1, -2), cols_in) > 0


def masked_copy(clip: torch.Tensor, means: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The human-masked copy of a normalised batch, on its device, in one select.

    clip float (B, 3, T, H, W) from normalise (flipped where asked), means (B, T, 3) full-frame
    means in [0, 255], inside bool (B, T, H, W) from human_pixels -> float (B, 3, T, H, W).
    Masking commutes with the flip and the normalisation, so the fill is the normalised mean.
    """
    return torch.where(inside[:, None], frame_fill(means), clip)


def frame_fill(means: torch.Tensor) -> torch.Tensor:
    """Full-frame means (B, T, 3) in [0, 255] -> their normalised colour (B, 3, T, 1, 1)."""
    dev = means.device
    std, mean = torch.tensor(CLIP_STD, device=dev), torch.tensor(CLIP_MEAN, device=dev)
    return ((means.float() / 255 - mean) / std).permute(0, 2, 1)[..., None, None]
