"""Evaluate a pretrained model, and measure the scene bias of a dataset.

    python train/evaluation/evaluate.py --checkpoint runs/debiased/best.pt --shards data/synth-shards --split test --json out.json
    python train/evaluation/evaluate.py --shards data/synth-shards --split val --dataset-bias
    python train/evaluation/evaluate.py --suite ooc --checkpoint runs/debiased/best.pt --shards data/synth-shards --split test

Model evaluation (the paper's video-level protocol): the softmax averaged over --clips evenly
spaced clips of each video gives its prediction (top-1, top-5); the same on the human-masked
clips gives masked top-1 (lower, towards chance, means less reliance on the scene) and masked
confidence (the mean top probability there; 1 / classes when the model has no idea); the scene
probe is a linear classifier fitted on frozen features of --probe-split videos to predict the
scene pseudo label's argmax, its accuracy on --split (lower means less scene information in
the features); the scene head accuracy is the trained scene head's own on --split: below the
probe's, the adversary beat its head while the features kept the scene. --predictions writes
one JSON line per video.

--suite ooc runs the out-of-context suite instead (human-only, background-only, actor swap,
SCUBA / SCUFO on boxes, contrasted accuracy): train/evaluation/ooc_suite.py says what each means.

Dataset scene bias (Choi et al., Eq. 1): log(M / M_rand), M the accuracy with which a linear
classifier fitted on the 365-dim scene labels of --probe-split videos predicts the action of
--split videos, M_rand = 1 / number of classes. 0 means the scene says nothing of the action.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from shards.cli import NonNegativeInt, PositiveInt, config_problems, entry_point, parse_config, refuse
from shards.format import NUM_SCENES
from shards.loader import build_loader
from shards.loader import SplitIndex
from train.distributed import visible_device
from train.evaluation.linear_probe import accuracy, fit_linear
from train.evaluation.models import clip_settings, load_model, model_labels
from train.evaluation.ooc_suite import ooc_suite


@torch.no_grad()
def video_outputs(backbone, shards, split, cfg, *, clips, device, loader, batch_size, workers, masked_pass=True):
    """Per video (in split order): mean softmax over its clips, the same on masked clips
    (uniform with masked_pass=False, which halves the work of fitting a probe), mean features,
    label, scene label argmax, key."""
    ld = build_loader(shards, split, backend=loader, batch_size=batch_size, train=False, device=device.type,
                      clips=clips, num_threads=workers, **clip_settings(cfg))
    n = len(ld.index)
    probs = masked = feats = None
    counts = torch.zeros(n)
    for batch in ld:
        logits, features = backbone(batch["clip"], with_features=True)
        m_logits = backbone(batch["masked"]) if masked_pass else torch.zeros_like(logits)
        if probs is None:
            probs, masked = torch.zeros(n, logits.shape[1]), torch.zeros(n, logits.shape[1])
            feats = torch.zeros(n, features.shape[1])
        idx = batch["sample"]
        probs.index_add_(0, idx, logits.float().softmax(1).cpu())
        masked.index_add_(0, idx, m_logits.float().softmax(1).cpu())
        feats.index_add_(0, idx, features.float().cpu())
        counts.index_add_(0, idx, torch.ones(len(idx)))
    c = counts[:, None]
    scenes = np.stack([ld.index.scene(i) for i in range(n)]).argmax(1)
    return {"probs": probs / c, "masked": masked / c, "features": feats / c, "labels": model_labels(ld.index, cfg["classes"]),
            "scene": torch.from_numpy(scenes), "keys": ld.index.keys}


def evaluate_model(checkpoint: str | Path, shards: str | Path, split: str, *, clips: int = 10, probe_split: str = "",
                   device: str = "cpu", loader: str = "dali", batch_size: int = 16, workers: int = 4,
                   predictions: str | Path | None = None, masked: bool = True) -> dict:
    """The figures of the module docstring for `checkpoint` on `split` of `shards`: the scene probe
    when `probe_split` names the split to fit it on, per-video lines in `predictions` when given;
    masked=False skips the masked clips (half the work) and their two figures."""
    device = torch.device(device)
    backbone, scene_head, cfg = load_model(str(checkpoint), device)
    common = dict(device=device, loader=loader, batch_size=batch_size, workers=workers)
    out = video_outputs(backbone, str(shards), split, cfg, clips=clips, masked_pass=masked, **common)
    labels, probs = out["labels"], out["probs"]
    top5 = probs.topk(min(5, probs.shape[1]), 1).indices
    result = {"checkpoint": str(checkpoint), "split": split, "videos": len(labels), "clips": clips,
              "top1": (top5[:, 0] == labels).double().mean().item(),
              "top5": (top5 == labels[:, None]).any(1).double().mean().item()}
    with torch.no_grad():  # the trained scene head on the videos' mean features: what the adversary fought
        result["scene_head_acc"] = accuracy(scene_head, out["features"].to(device), out["scene"].to(device))
    if masked:
        result["masked_top1"] = (out["masked"].argmax(1) == labels).double().mean().item()
        # how sure the model stays once the humans are gone (1 / classes = no idea): top-1 alone
        # counts a near-uniform prediction whose slight tilt follows the scene as a hit
        result["masked_confidence"] = out["masked"].max(1).values.double().mean().item()
    if probe_split:
        fit = video_outputs(backbone, str(shards), probe_split, cfg, clips=1, masked_pass=False, **common)
        probe = fit_linear(fit["features"], fit["scene"], NUM_SCENES)
        result["scene_probe_acc"] = accuracy(probe, out["features"], out["scene"])
        result["probe_split"] = probe_split
    if predictions:
        with open(predictions, "w") as f:
            for i, key in enumerate(out["keys"]):
                masked_pred = {"masked_pred": int(out["masked"][i].argmax())} if masked else {}
                f.write(json.dumps({"key": key, "label": int(labels[i]), "pred": int(probs[i].argmax()), **masked_pred,
                                    "scene": int(out["scene"][i])}) + "\n")
    return result


def dataset_bias(shards: str, split: str, fit_split: str) -> dict:
    """Eq. 1 of Choi et al. on the scene labels stored in the shards. When the split is the one
    the classifier is fitted on, 2-fold cross-validation keeps the accuracy a held-out one (365
    inputs on a few hundred videos would otherwise be fitted, not measured)."""
    def load(s):
        index = SplitIndex(shards, s)
        return torch.from_numpy(np.stack([index.scene(i) for i in range(len(index))])), torch.from_numpy(index.labels), index
    x_fit, y_fit, index = load(fit_split)
    classes = len(index.manifest["classes"])
    if split == fit_split:
        order = torch.randperm(len(y_fit), generator=torch.Generator().manual_seed(0))  # shards are sorted by key
        first = torch.zeros(len(y_fit), dtype=torch.bool)
        first[order[: len(y_fit) // 2]] = True
        halves = (first, ~first)
        correct = sum(accuracy(fit_linear(x_fit[a], y_fit[a], classes), x_fit[b], y_fit[b]) * int(b.sum())
                      for a, b in (halves, halves[::-1]))
        acc = correct / len(y_fit)
    else:
        x, y, _ = load(split)
        acc = accuracy(fit_linear(x_fit, y_fit, classes), x, y)
    return {"split": split, "fit_split": fit_split, "scene_action_acc": acc, "chance": 1 / classes,
            "dataset_bias": math.log(max(acc, 1e-12) * classes)}


@dataclass
class EvaluateConfig:
    shards: str                              # shard folder written by prep-shards
    checkpoint: str = ""                     # checkpoint.pt / best.pt of pretrain.py or finetune.py
    split: str = "val"                       # the split evaluated
    clips: PositiveInt = 10                  # evenly spaced clips per video
    probe_split: str = "train"               # split the scene probe is fitted on ('' to skip)
    dataset_bias: bool = False               # measure the dataset's scene bias instead (Eq. 1)
    suite: Literal["standard", "ooc"] = "standard"  # ooc: the out-of-context suite instead (train/evaluation/ooc_suite.py)
    seed: NonNegativeInt = 0                 # ooc: draws the swap partners, backdrops and frozen frames
    backdrops: str = ""                      # ooc: a folder of scene images for SCUBA (default: stripes)
    device: Literal["cuda", "cpu"] = field(default_factory=visible_device)  # cuda when one is visible
    loader: Literal["dali", "torch"] = "dali"  # torch: the reference loader
    batch_size: PositiveInt = 16             # clips per forward pass
    workers: NonNegativeInt = 4              # DALI threads (>= 1) or DataLoader workers
    predictions: str = ""                    # write per-video predictions (JSON lines) here
    json: str = ""                           # write the result here


def check(cfg: EvaluateConfig) -> None:
    """Every value as its flag's type checks it, and the combinations no flag's type can check."""
    problems = config_problems(cfg)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        problems.append("--device cuda but no CUDA device is visible (use --device cpu)")
    if cfg.loader == "dali" and cfg.workers < 1:
        problems.append(f"--workers {cfg.workers}: the DALI loader needs at least 1 thread")
    if not cfg.checkpoint and not cfg.dataset_bias:
        problems.append("--checkpoint is needed (or --dataset-bias)")
    if cfg.dataset_bias and cfg.suite != "standard":
        problems.append(f"--dataset-bias measures the dataset, not a model: drop --suite {cfg.suite}")
    if cfg.backdrops and cfg.suite != "ooc":
        problems.append("--backdrops is for --suite ooc")
    elif cfg.backdrops and not Path(cfg.backdrops).is_dir():
        problems.append(f"--backdrops {cfg.backdrops}: no such folder")
    refuse("evaluate", problems)


@entry_point("evaluate")
def main(argv: list[str] | None = None) -> int:
    return run(parse_config(EvaluateConfig, argv, "evaluate", __doc__.splitlines()[0]))


def run(cfg: EvaluateConfig) -> int:
    check(cfg)
    if cfg.dataset_bias:
        result = dataset_bias(cfg.shards, cfg.split, cfg.probe_split or "train")
    elif cfg.suite == "ooc":
        result = ooc_suite(cfg.checkpoint, cfg.shards, cfg.split, clips=cfg.clips, seed=cfg.seed, backdrops=cfg.backdrops,
                           device=cfg.device, loader=cfg.loader, batch_size=cfg.batch_size, workers=cfg.workers)
    else:
        result = evaluate_model(cfg.checkpoint, cfg.shards, cfg.split, clips=cfg.clips, probe_split=cfg.probe_split,
                                device=cfg.device, loader=cfg.loader, batch_size=cfg.batch_size, workers=cfg.workers,
                                predictions=cfg.predictions or None)
    print(json.dumps(result, indent=1))
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
