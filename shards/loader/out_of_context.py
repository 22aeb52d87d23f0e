"""Out-of-context clips: the actor without its scene, the scene without its actor, the actor in
another scene, on a backdrop, frozen. Made on the fly from batches the loader delivers (normalised
clips and their `human` pixels), for train/evaluation/ooc_suite.py.

These are the box-based variants of the published sets. HAT (Chung et al., NeurIPS 2022) and
SCUBA / SCUFO (Li et al., ICCV 2023) cut the actor out with segmentation masks; a box also keeps
the background around the actor, so a model can still read some scene inside it (ALBAR, Fioresi
et al. ICLR 2025, showed box-based sets leak background). Read them as lower bounds on reliance.

    human_only      outside the boxes, each frame's mean colour (HAT's human-only)
    background      inside the boxes, each frame's mean colour: the masked copy (HAT's background-only)
    actor_swap      the boxes of one clip on another clip's background-only frames (HAT's action swap)
    scuba           the boxes of a clip on a still backdrop: stripes, or an image (SCUBA)
    scufo           one frame of the scuba clip, repeated over the clip (SCUFO)

Which clip gives the other its background (`swap_partners`), which backdrop and which frozen frame
each video gets (`backdrop_of`, `frozen_frame`) are pure functions of (seed, video), so every run,
every batch size and every model sees the same clips.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .masking import CLIP_MEAN, CLIP_STD

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def human_only(clip: torch.Tensor, fill: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Normalised clips (B, 3, T, H, W) with everything outside the boxes (`inside`, (B, T, H, W))
    filled with `fill` (B, 3, T, 1, 1), masking.frame_fill of the frame means: the masked copy's
    complement."""
    return torch.where(inside[:, None], clip, fill)


def actor_swap(actor: torch.Tensor, inside: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The box pixels of `actor` (B, 3, T, H, W; boxes `inside` (B, T, H, W)) over `background`,
    the partner clips' background-only copies (B, 3, T, H, W)."""
    return torch.where(inside[:, None], actor, background)


def scuba(clip: torch.Tensor, inside: torch.Tensor, backdrop: torch.Tensor) -> torch.Tensor:
    """The box pixels of `clip` over a still `backdrop`, normalised (B, 3, 1, H, W)."""
    return torch.where(inside[:, None], clip, backdrop)


def scufo(clip: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Frame `frames[b]` of each clip (B, 3, T, H, W), repeated T times: appearance without motion."""
    still = clip[torch.arange(len(clip), device=clip.device), :, frames.to(clip.device)]  # (B, 3, H, W)
    return still[:, :, None].expand_as(clip).contiguous()


def normalise_image(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised (3, 1, H, W), the clips' normalisation."""
    dev = torch.device(device)
    x = torch.from_numpy(image).to(dev).float().permute(2, 0, 1)[:, None] / 255
    return (x - torch.tensor(CLIP_MEAN, device=dev).view(3, 1, 1, 1)) / torch.tensor(CLIP_STD, device=dev).view(3, 1, 1, 1)


def _rng(seed: int, video: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, video, salt])


def stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size uint8 backdrop of sinusoidal stripes, SCUBA's neutral background: a random
    colour, stripes of its complement along a sine wave repeated at a fixed spacing, the whole
    rotated by a random angle. The draws follow SCUBA's generator (stripe half-width 5-20 px,
    spacing 3-5 widths, wavelength 4-1004 px, amplitude 10-110 px at 256 px), scaled to `size`."""
    scale = size / 256
    colour = rng.random(3)
    width = (5 + 15 * rng.random()) * scale
    spacing = (3 + 2 * rng.random()) * width
    omega = 2 * math.pi / ((rng.random() * 1000 + 4) * scale)
    phase = (rng.random() * 200 - 100) * omega
    amplitude = (10 + rng.random() * 100) * scale
    angle = rng.random() * 2 * math.pi
    y, x = np.mgrid[:size, :size].astype(np.float64) - (size - 1) / 2
    u, v = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    on = np.mod(v - amplitude * np.sin(omega * u + phase), spacing) < 2 * width
    image = np.where(on[..., None], 1 - colour, colour)
    return np.round(image * 255).astype(np.uint8)


class Backdrops(Sequence):
    """The images of a folder (sorted by name), each read when first drawn and kept: RGB,
    stretched to size x size as SCUBA stretches its Places365 images to the frame, uint8
    (size, size, 3). A folder like Places365 val_256 holds 36,500 images; a split draws a few."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size, self._read = paths, size, {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._read:
            with Image.open(self.paths[i]) as im:
                self._read[i] = np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BILINEAR))
        return self._read[i]


def load_backdrops(folder: str | Path, size: int) -> Backdrops:
    """The scene images of `folder` for SCUBA backdrops (read as they are drawn)."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if Path(folder).is_dir() else []
    if not paths:
        raise ValueError(f"--backdrops {folder}: no {'/'.join(IMAGE_SUFFIXES)} images there (a folder of scene "
                         "images, e.g. Places365 val_256)")
    return Backdrops(paths, size)


def backdrop_of(video: int, seed: int, size: int, images: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The backdrop of one video: one of `images` when given, else stripes; uint8 (size, size, 3)."""
    rng = _rng(seed, video, 1)
    return images[int(rng.integers(len(images)))] if images else stripes(size, rng)


def frozen_frame(video: int, seed: int, frames: int) -> int:
    """The frame of a video's clips that its SCUFO clip repeats (SCUFO samples it at random)."""
    return int(_rng(seed, video, 2).integers(frames))


def swap_partners(labels: np.ndarray, seed: int, same_class: bool) -> np.ndarray:
    """For each video, the video whose background it is pasted on: one of another class (HAT's
    action swap), or of the same class (the control pair); -1 where there is none."""
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, np.int64)
    for i, label in enumerate(labels):
        pool = np.flatnonzero((labels == label) == same_class)
        pool = pool[pool != i]
        if len(pool):
            out[i] = pool[int(_rng(seed, i, 3 + same_class).integers(len(pool)))]
    return out
