"""Transfer a pretrained backbone to a target dataset and report video-level top-1.

    # UCF-101, all three splits (one shard folder per split, made with prep-shards --fold N)
    torchrun --standalone --nproc-per-node=2 train/evaluation/finetune.py --init runs/debiased/best.pt \\
        --shards data/ucf-1,data/ucf-2,data/ucf-3 --out runs/ucf-debiased
    # linear probe on frozen features, on the synthetic novel-action target
    python train/evaluation/finetune.py --init runs/debiased/best.pt --shards data/synth-novel --out runs/novel --linear-probe

Every target folder is fine-tuned from --init (all layers, or only a new action head with
--linear-probe; the target's own classes) by train/pretrain.py with --debias none and the
checkpoint's --arch, --input, --frames, --size, --stride, --crop and --short-videos, validated
on the test split each epoch, then evaluated with the video-level protocol of train/evaluation/evaluate.py
(softmax averaged over --clips clips). Writes OUT/<folder name>/ per split and OUT/results.json
with each split's top-1 and the mean, as the paper's tables report them. Other flags go to
train/pretrain.py (e.g. --epochs, --lr, --batch-size, --device, --loader, --frames, --size).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from shards.cli import PositiveFloat, PositiveInt, config_parser, config_problems, entry_point, parse_fields, refuse
from shards.manifest import read_manifest
from train import checkpoint
from train.distributed import cleanup, print0
from train.evaluation.evaluate import evaluate_model
from train.pretrain import Config as PretrainConfig, run as pretrain


def splits_of(shards: str) -> tuple[str, str]:
    """(train split, test split) of a target shard folder: train/test, or novel_train/novel_test."""
    names = set(read_manifest(shards)["splits"])
    for train, test in (("train", "test"), ("novel_train", "novel_test"), ("train", "val")):
        if {train, test} <= names:
            return train, test
    raise SystemExit(f"finetune: {shards} has splits {sorted(names)}; expected train and test")


@dataclass
class FinetuneConfig:
    init: str                                # pretraining checkpoint (best.pt)
    shards: list[str]                        # target shard folder(s), comma-separated (one per split/fold)
    out: str                                 # run folder: OUT/<folder name>/ per target, OUT/results.json
    linear_probe: bool = False               # train only a new action head on frozen features
    clips: PositiveInt = 10                  # clips per video in the final evaluation
    lr: PositiveFloat = 1e-3                 # learning rate for a global batch of 32 (scaled linearly)
    epochs: PositiveInt = 30                 # passes over each target's train split


@entry_point("finetune")
def main(argv: list[str] | None = None) -> int:
    parser = config_parser(FinetuneConfig, "finetune", __doc__.splitlines()[0])
    own, rest = parser.parse_known_args(argv)
    settings = parse_fields(PretrainConfig, rest, "pretrain", "train/pretrain.py")  # its flags, its messages
    return run(FinetuneConfig(**vars(own)), **settings)


def run(cfg: FinetuneConfig, **settings) -> int:
    """Fine-tune `cfg.init` on each target shard folder and evaluate it; `settings` are fields of
    train/pretrain.py's Config (device, loader, batch_size, ...) that override the rest."""
    refuse("finetune", config_problems(cfg))
    source = checkpoint.load(cfg.init)["config"]
    # the network and the clips it was pretrained on (the official code fine-tunes with its training
    # crops too); runs older than --crop and --short-videos get their defaults
    inherited = {k: source[k] for k in ("arch", "input", "frames", "size", "stride", "crop", "short_videos")
                 if k in source}
    results = {"init": cfg.init, "linear_probe": cfg.linear_probe, "splits": {}}
    for shards in cfg.shards:
        train_split, test_split = splits_of(shards)
        target = Path(cfg.out) / Path(shards).name
        run_cfg = PretrainConfig(**{**inherited, "shards": shards, "out": str(target), "train_split": train_split,
                                    "val_split": test_split, "init": cfg.init, "init_head": False, "debias": "none",
                                    "lr": cfg.lr, "epochs": cfg.epochs, "freeze_backbone": cfg.linear_probe, **settings})
        code = pretrain(run_cfg)
        if code:
            return code
        if int(os.environ.get("RANK", 0)) == 0:
            results["splits"][Path(shards).name] = evaluate_model(
                target / "checkpoint.pt", shards, test_split, clips=cfg.clips,
                device=run_cfg.device if torch.cuda.is_available() else "cpu", loader=run_cfg.loader,
                batch_size=run_cfg.batch_size, workers=run_cfg.workers)
            print0(f"{shards}: video-level top-1 {results['splits'][Path(shards).name]['top1']:.4f}")
    if results["splits"]:
        tops = [r["top1"] for r in results["splits"].values()]
        results["mean_top1"] = sum(tops) / len(tops)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        print0(f"mean video-level top-1 over {len(tops)} split(s): {results['mean_top1']:.4f}")
    return 0


if __name__ == "__main__":
    code = main()
    cleanup()
    sys.exit(code)
