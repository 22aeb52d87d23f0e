"""Export a pretraining checkpoint as a plain torchvision r3d_18 state dict.

    python train/evaluation/export.py --checkpoint runs/debiased/best.pt --out r3d18_debiased.pth

The file loads with strict=True into `torchvision.models.video.r3d_18(num_classes=N)`, N the
number of pretraining classes (the action head is its `fc`), for use in other frameworks. Only
the full-width RGB network (--arch r3d18 --input rgb) has torchvision's shapes.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from shards.cli import entry_point, parse_config
from train import checkpoint


@dataclass
class ExportConfig:
    checkpoint: str                          # checkpoint.pt or best.pt of a pretraining run
    out: str                                 # the state dict file to write


def export(ckpt_path: str, out: str) -> int:
    state = checkpoint.load(ckpt_path)
    cfg = state["config"]
    if cfg["arch"] != "r3d18" or cfg["input"] != "rgb":
        raise SystemExit(f"export: {ckpt_path} is --arch {cfg['arch']} --input {cfg['input']}; only r3d18 with rgb "
                         "input has torchvision's r3d_18 layout")
    with open(out, "wb") as f:  # open() first: a bad --out is an OSError (one line), not torch's RuntimeError
        torch.save(state["backbone"], f)
    return len(state["classes"])


@entry_point("export")
def main(argv: list[str] | None = None) -> int:
    a = parse_config(ExportConfig, argv, "export", __doc__.splitlines()[0])
    classes = export(a.checkpoint, a.out)
    print(f"export: {a.out}: torchvision.models.video.r3d_18(num_classes={classes}).load_state_dict(torch.load(...))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
