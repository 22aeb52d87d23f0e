"""shards-preview: a picture of a few clips as the loader delivers them, original and masked.

    shards-preview --shards data/synth-shards --split train --backend torch --n 8 --out preview.png

Each row is one clip: `--show` frames spread over the clip, the original with the mask boxes
drawn in red, then the same frames as the masked pass sees them. People check data by looking.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..cli import USAGE, NonNegativeInt, PositiveInt, entry_point, integer, one_line, parse_config, refuse
from .clip_loader import build_loader, describe
from .masking import CLIP_MEAN, CLIP_STD
from .sampling import SplitIndex


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Normalised (3, T, H, W) -> uint8 (T, H, W, 3)."""
    x = x.permute(1, 2, 3, 0).cpu() * torch.tensor(CLIP_STD) + torch.tensor(CLIP_MEAN)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def render(batch: dict, rects: list[np.ndarray], classes: list[str], show: int, scale: int) -> Image.Image:
    clips, masked = batch["clip"], batch["masked"]
    b, _, t, h, w = clips.shape
    picks = np.linspace(0, t - 1, show).round().astype(int)
    gap, label = 4, 14
    sheet = Image.new("RGB", (2 * show * w * scale + 3 * gap, b * (h * scale + label + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(b):
        top = i * (h * scale + label + gap)
        draw.text((gap, top), f"{batch['key'][i]}  {classes[int(batch['label'][i])]}", fill="black")
        for half, frames in enumerate((to_uint8(clips[i]), to_uint8(masked[i]))):
            for j, tt in enumerate(picks):
                left = gap + half * (show * w * scale + gap) + j * w * scale
                sheet.paste(Image.fromarray(frames[tt]).resize((w * scale, h * scale), Image.NEAREST), (left, top + label))
                if half == 0:
                    for r0, r1, c0, c1 in rects[i][tt]:
                        if r1 > r0 and c1 > c0:
                            draw.rectangle([left + c0 * scale, top + label + r0 * scale,
                                            left + c1 * scale - 1, top + label + r1 * scale - 1], outline="red")
    return sheet


@dataclass
class PreviewConfig:
    shards: str                              # shard folder written by prep-shards
    split: str = "train"                     # the split the clips come from
    backend: Literal["dali", "torch"] = "torch"  # the loader that delivers them
    n: PositiveInt = 8                       # clips
    frames: PositiveInt = 16                 # frames per clip
    size: NonNegativeInt = 0                 # crop side; 0 = the stored frames' short side
    show: PositiveInt = 4                    # frames shown per clip
    scale: Annotated[int, integer(1, 16)] = 2  # pixel zoom
    mask_shape: Literal["box", "tube"] = "box"  # box: each frame's boxes; tube: the clip's union
    device: Literal["cpu", "cuda"] = "cpu"   # where the loader masks
    out: str = "preview.png"                 # the picture to write


@entry_point("shards-preview")
def main(argv: list[str] | None = None) -> int:
    a = parse_config(PreviewConfig, argv, "shards-preview", __doc__.splitlines()[0])
    if a.device == "cuda" and not torch.cuda.is_available():
        refuse("shards-preview", ["--device cuda but no CUDA device is visible (use --device cpu)"])
    try:  # shards or a split that cannot be shown are a usage error here (exit 2); later errors exit 1
        size = a.size or min(min(m["height"], m["width"]) for m in SplitIndex(a.shards, a.split).meta)
        loader = build_loader(a.shards, a.split, backend=a.backend, batch_size=a.n, frames=a.frames, size=size,
                              train=False, device=a.device, mask_shape=a.mask_shape, num_threads=2)
    except ValueError as err:  # ShardFormatError included
        print(f"shards-preview: error: {one_line(err)}", file=sys.stderr)
        return USAGE
    batch = next(iter(loader))
    rects = [describe(loader.index, loader.cfg, 0, s, k)["rects"]
             for s, k in zip(batch["sample"].tolist(), batch["clip_index"].tolist())]
    render(batch, rects, loader.index.manifest["classes"], a.show, a.scale).save(a.out)
    print(f"shards-preview: {len(batch['key'])} clips of {a.split} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
