"""Transfer a pretrained backbone to a target dataset and report video-level top-1.

    # UCF-101, all three splits (one shard folder per split, made with prep-shards --fold N)
    torchrun --standalone --nproc-per-node=2 train/finetune.py --init runs/debiased/best.pt \\
        --shards data/ucf-1,data/ucf-2,data/ucf-3 --out runs/ucf-debiased
    # linear probe on frozen features, on the synthetic novel-action target
    python train/finetune.py --init runs/debiased/best.pt --shards data/synth-novel --out runs/novel --linear-probe

Every target folder is fine-tuned from --init (all layers, or only a new action head with
--linear-probe; the target's own classes) by train/pretrain.py with --debias none, validated
on the test split each epoch, then evaluated with the video-level protocol of train/evaluate.py
(softmax averaged over --clips clips). Writes OUT/<folder name>/ per split and OUT/results.json
with each split's top-1 and the mean, as the paper's tables report them. Other flags go to
train/pretrain.py (e.g. --epochs, --lr, --batch-size, --device, --loader, --frames, --size).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from shards.cli import Parser, entry_point, integer, number
from shards.manifest import read_manifest
from train import checkpoint
from train.distributed import cleanup, print0
from train.evaluate import evaluate_model
from train.config import parse_fields
from train.pretrain import Config as PretrainConfig, run as pretrain


def splits_of(shards: str) -> tuple[str, str]:
    """(train split, test split) of a target shard folder: train/test, or novel_train/novel_test."""
    names = set(read_manifest(shards)["splits"])
    for train, test in (("train", "test"), ("novel_train", "novel_test"), ("train", "val")):
        if {train, test} <= names:
            return train, test
    raise SystemExit(f"finetune: {shards} has splits {sorted(names)}; expected train and test")


@entry_point("finetune")
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="finetune", description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, help="pretraining checkpoint (best.pt)")
    p.add_argument("--shards", required=True, help="target shard folder(s), comma-separated (one per split/fold)")
    p.add_argument("--out", required=True)
    p.add_argument("--linear-probe", action="store_true", help="train only a new action head on frozen features")
    p.add_argument("--clips", type=integer(1), default=10, help="clips per video in the final evaluation")
    p.add_argument("--lr", type=number(above=0), default=1e-3)
    p.add_argument("--epochs", type=integer(1), default=30)
    a, rest = p.parse_known_args(argv)
    settings = parse_fields(PretrainConfig, rest, "train/pretrain.py", prog="pretrain")  # its flags, its messages
    return run(a.init, a.shards.split(","), a.out, linear_probe=a.linear_probe, clips=a.clips, lr=a.lr,
               epochs=a.epochs, **settings)


def run(init: str | Path, targets: list[str], out: str | Path, *, linear_probe: bool = False, clips: int = 10,
        lr: float = 1e-3, epochs: int = 30, **settings) -> int:
    """Fine-tune `init` on each target shard folder and evaluate it; `settings` are fields of
    train/pretrain.py's Config (device, loader, batch_size, ...) that override the rest."""
    source = checkpoint.load(init)["config"]
    inherited = {k: source[k] for k in ("arch", "input", "frames", "size", "stride")}
    results = {"init": str(init), "linear_probe": linear_probe, "splits": {}}
    for shards in targets:
        train_split, test_split = splits_of(shards)
        target = Path(out) / Path(shards).name
        cfg = PretrainConfig(**{**inherited, "shards": shards, "out": str(target), "train_split": train_split,
                                "val_split": test_split, "init": str(init), "init_head": False, "debias": "none",
                                "lr": lr, "epochs": epochs, "freeze_backbone": linear_probe, **settings})
        code = pretrain(cfg)
        if code:
            return code
        if int(os.environ.get("RANK", 0)) == 0:
            results["splits"][Path(shards).name] = evaluate_model(
                target / "checkpoint.pt", shards, test_split, clips=clips,
                device=cfg.device if torch.cuda.is_available() else "cpu", loader=cfg.loader,
                batch_size=cfg.batch_size, workers=cfg.workers)
            print0(f"{shards}: video-level top-1 {results['splits'][Path(shards).name]['top1']:.4f}")
    if results["splits"]:
        tops = [r["top1"] for r in results["splits"].values()]
        results["mean_top1"] = sum(tops) / len(tops)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        print0(f"mean video-level top-1 over {len(tops)} split(s): {results['mean_top1']:.4f}")
    return 0


if __name__ == "__main__":
    code = main()
    cleanup()
    sys.exit(code)
