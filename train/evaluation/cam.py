"""Class activation maps (Zhou et al., CVPR 2016) over the centre frame of clips: where each model
looks for the action, baseline and debiased side by side (the paper's Figure 5).

    python train/evaluation/cam.py --checkpoint runs/baseline/best.pt --checkpoint runs/debiased/best.pt \\
        --shards data/synth-shards --split test --n 8 --out runs/cams

For r3d_18 the map is the predicted class's fc weights applied to the conv5 activations,
averaged over time, upsampled to the crop and laid over the centre frame.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from shards.cli import PositiveInt, config_problems, entry_point, integer, parse_config, refuse
from shards.loader import build_loader
from shards.loader.preview import to_uint8
from train.evaluation.models import clip_settings, load_model


@torch.no_grad()
def class_activation_maps(backbone, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """clips (B, 3, T, H, W) -> maps (B, H, W) in [0, 1] for the predicted classes, predictions (B,)."""
    conv5 = backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(backbone.stem(backbone.stem_input(clips))))))
    pred = backbone.fc(conv5.mean(dim=(2, 3, 4))).argmax(1)
    maps = torch.einsum("bc,bcthw->bhw", backbone.fc.weight[pred], conv5) / conv5.shape[2]
    maps = F.interpolate(maps[:, None], size=clips.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = maps.flatten(1).min(1).values, maps.flatten(1).max(1).values
    return (maps - lo[:, None, None]) / (hi - lo).clamp(min=1e-6)[:, None, None], pred


def overlay(frame: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Red-yellow heat over a grey copy of the frame."""
    grey = frame.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.6
    heat = np.stack([np.ones_like(cam), cam, np.zeros_like(cam)], axis=2) * 255
    return (grey * (1 - 0.6 * cam[..., None]) + heat * 0.6 * cam[..., None]).clip(0, 255).astype(np.uint8)


@dataclass
class CamConfig:
    checkpoint: list[str]                    # the models (A, B, ...): repeat the flag, or comma-separate
    shards: str                              # shard folder written by prep-shards
    out: str                                 # folder for cams.png
    name: list[str] = field(default_factory=list)  # a label per checkpoint (default: its run folder)
    split: str = "test"                      # the split the clips come from
    n: PositiveInt = 8                       # clips
    scale: Annotated[int, integer(1, 16)] = 3  # pixel zoom


@entry_point("cam")
def main(argv: list[str] | None = None) -> int:
    return run(parse_config(CamConfig, argv, "cam", __doc__.splitlines()[0]))


def run(a: CamConfig) -> int:
    problems = config_problems(a)
    if a.name and len(a.name) != len(a.checkpoint):
        problems.append(f"{len(a.name)} --name for {len(a.checkpoint)} --checkpoint: give one per checkpoint, or none")
    refuse("cam", problems)
    names = a.name or [Path(c).parent.name for c in a.checkpoint]
    models = [load_model(c, torch.device("cpu")) for c in a.checkpoint]
    cfg = models[0][2]
    loader = build_loader(a.shards, a.split, backend="torch", batch_size=a.n, train=False, device="cpu", num_threads=1,
                          **clip_settings(cfg))
    batch = next(iter(loader))
    classes = loader.index.manifest["classes"]
    centre = [to_uint8(c)[c.shape[1] // 2] for c in batch["clip"]]
    cams = [class_activation_maps(backbone, batch["clip"]) for backbone, _, _ in models]
    size, label = cfg["size"] * a.scale, 12
    sheet = Image.new("RGB", ((len(models) + 1) * (size + 4), len(centre) * (size + 2 * label + 4) + label), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(["clip", *names]):
        draw.text((j * (size + 4), 0), title, fill="black")
    for i, frame in enumerate(centre):
        top = label + i * (size + 2 * label + 4)
        draw.text((0, top), f"{classes[int(batch['label'][i])]}", fill="black")
        sheet.paste(Image.fromarray(frame).resize((size, size), Image.NEAREST), (0, top + label))
        for j, (maps, pred) in enumerate(cams, start=1):
            tile = overlay(frame.astype(np.float32), maps[i].numpy())
            sheet.paste(Image.fromarray(tile).resize((size, size), Image.BILINEAR), (j * (size + 4), top + label))
            ok = int(pred[i]) == int(batch["label"][i])
            draw.text((j * (size + 4), top), classes[int(pred[i])], fill="green" if ok else "red")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    sheet.save(Path(a.out) / "cams.png")
    print(f"cam: {len(centre)} clips x {len(models)} models -> {Path(a.out) / 'cams.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
