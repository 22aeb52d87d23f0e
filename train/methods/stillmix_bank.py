"""StillMix's frame bank (Li et al., ICCV 2023): the training frames that give the action away
without any motion, for `pretrain.py --method stillmix --stillmix-bank BANK`.

    python -m train.methods.stillmix_bank --shards data/mk200 --out data/mk200/stillmix_bank.npz

A reference network sees single frames: our backbone on one-frame clips (a 2D network in
effect), trained on one random frame per video with the video's label (the official one is an
ImageNet ResNet-50 trained the same way, reference_network/resnet50/main_frame.py). It then
scores --frames-per-video evenly spaced frames of every video by its top softmax probability;
the most confident --keep of them (the official 'sorted_prop_pred' keeps the top half), a random
--bank-size of those (1024), are the bank. Written once, beside the shards: an npz with the
uint8 frames (N, size, size, 3), their keys, clip indices and scores; no pickle anywhere.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from shards.cli import (Fraction, NonNegativeInt, PositiveFloat, PositiveInt, config_problems, entry_point,
                        parse_config, refuse)
from shards.files import atomic_open
from shards.loader import build_loader
from shards.loader.preview import to_uint8
from train.distributed import visible_device
from train.model import ARCHS, build_backbone


@dataclass
class BankConfig:
    shards: str                              # shard folder written by prep-shards
    out: str                                 # the bank file to write (.npz)
    split: str = "train"                     # the frames of this split
    arch: Literal[tuple(ARCHS)] = "r3d18-w16"  # the reference network, on one-frame clips
    size: PositiveInt = 112                  # frame side (the clips' crop size: the bank is resized to it)
    steps: PositiveInt = 500                 # reference network iterations
    batch_size: PositiveInt = 32             # frames per iteration
    lr: PositiveFloat = 1e-3                 # AdamW
    frames_per_video: PositiveInt = 8        # evenly spaced frames scored per video
    keep: Fraction = 0.5                     # the most confidently classified fraction of the frames
    bank_size: PositiveInt = 1024            # frames in the bank, at random among those kept
    device: Literal["cuda", "cpu"] = field(default_factory=visible_device)  # where the reference network runs
    loader: Literal["dali", "torch"] = "torch"  # the clip loader
    workers: PositiveInt = 2                 # DALI threads or DataLoader workers
    seed: NonNegativeInt = 0                 # the reference network's weights, its frames, the bank's draw


def train_reference(cfg: BankConfig, classes: int) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    net = build_backbone(cfg.arch, classes).to(cfg.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    loader = build_loader(cfg.shards, cfg.split, backend=cfg.loader, batch_size=cfg.batch_size, frames=1,
                          size=cfg.size, train=True, device=cfg.device, seed=cfg.seed, num_threads=cfg.workers)
    step, epoch = 0, 0
    with tqdm(total=cfg.steps, desc="reference network", unit="it") as bar:
        while step < cfg.steps:
            loader.set_epoch(epoch)
            for batch in loader:
                loss = F.cross_entropy(net(batch["clip"]), batch["label"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update()
                bar.set_postfix(ce=f"{loss.item():.3f}")
                if step == cfg.steps:
                    break
            epoch += 1
    return net.eval()


def build_bank(cfg: BankConfig) -> dict:
    refuse("stillmix-bank", config_problems(cfg))
    scoring = build_loader(cfg.shards, cfg.split, backend=cfg.loader, batch_size=cfg.batch_size, frames=1,
                           size=cfg.size, train=False, clips=cfg.frames_per_video, device=cfg.device,
                           num_threads=cfg.workers)
    net = train_reference(cfg, len(scoring.index.manifest["classes"]))
    plan = [pair for batch in scoring.batches() for pair in batch]
    with torch.no_grad():
        scores = torch.cat([F.softmax(net(b["clip"]), 1).amax(1).cpu()
                            for b in tqdm(scoring.run(scoring.batches()), total=len(scoring), desc="scoring frames")])
    confident = scores.argsort(descending=True, stable=True)[: max(1, int(cfg.keep * len(scores)))]
    chosen = confident[torch.randperm(len(confident), generator=torch.Generator().manual_seed(cfg.seed))]
    chosen = sorted(chosen[: cfg.bank_size].tolist())
    pairs = [plan[i] for i in chosen]
    frames = np.concatenate([np.stack([to_uint8(c)[0] for c in b["clip"]])
                             for b in scoring.run([pairs[i:i + cfg.batch_size] for i in range(0, len(pairs), cfg.batch_size)])])
    bank = {"frames": frames, "keys": np.array([scoring.index.keys[s] for s, _ in pairs]),
            "clip_index": np.array([k for _, k in pairs]), "score": scores[chosen].numpy()}
    with atomic_open(cfg.out) as f:
        np.savez(f, **bank)
    return bank


@entry_point("stillmix-bank")
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(BankConfig, argv, "stillmix-bank", __doc__.splitlines()[0])
    bank = build_bank(cfg)
    print(f"stillmix-bank: {len(bank['frames'])} frames (scores {bank['score'].min():.3f} to "
          f"{bank['score'].max():.3f}) -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
