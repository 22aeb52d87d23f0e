"""Control experiments on the synthetic world: is the action learnable, and only from motion?

    python benchmarks/synth_controls.py                       # demo world, ~10 minutes on 2 cores
    python benchmarks/synth_controls.py --input rgb --skip-2d  # the same 3D model without frame differences
    python benchmarks/synth_controls.py --difficulty hard --steps 800 --json controls.json

On an unbiased world (bias 0, scene independent of action) it trains, each for a fixed budget:
  - clip3d:   the narrow R3D-18 on 16-frame clips          -> action top-1 on test (want >= 0.8)
  - frame2d:  a small 2D CNN on single frames              -> action top-1 (want ~chance)
  - scene2d:  the same 2D CNN on single frames             -> scene top-1 (want high)
  - masked2d: the 2D CNN on single frames, actor boxes filled with the frame mean -> action
    top-1 (want ~chance: nothing but the actor tells the action)
Videos are rendered in memory (no encoding), so this measures the world, not the codec.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Annotated, Literal

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)  # benchmarks/prep.py would shadow the prep package

import numpy as np
import torch
from torch import nn

from prep.synth.generate import DIFFICULTIES, plan_split, render_video
from shards.cli import NonNegativeInt, PositiveFloat, PositiveInt, entry_point, integer, parse_config, refuse
from prep.synth.actor import ACTIONS
from prep.synth.scenes import MAIN_SCENES
from train.model import R3D18


def render_split(split, count, args):
    specs = plan_split(split, count, 0.0, args.frames, args.size, args.seed, args.difficulty)
    with Pool(args.workers) as pool:
        out = pool.map(render_video, specs, chunksize=8)
    videos = np.stack([v for v, _ in out])
    boxes = [b for _, b in out]
    actions = np.array([list(ACTIONS).index(s.action) for s in specs])
    scenes = np.array([MAIN_SCENES.index(s.scene) for s in specs])
    return videos, boxes, actions, scenes


def mask_actor(frame, boxes):
    """Fill every box with the frame's mean colour (the format's masking rule)."""
    out = frame.astype(np.float32)
    h, w = frame.shape[:2]
    mean = out.reshape(-1, 3).mean(0)
    for x1, y1, x2, y2 in boxes:
        out[int(np.floor(y1 * h + 1e-3)):int(np.ceil(y2 * h - 1e-3)), int(np.floor(x1 * w + 1e-3)):int(np.ceil(x2 * w - 1e-3))] = mean
    return out


def to_tensor(x):  # uint8/float (..., H, W, 3) -> float normalised, channels first
    t = torch.as_tensor(np.asarray(x, np.float32)) / 255.0
    return (t - 0.45) / 0.25


class Small2D(nn.Module):
    def __init__(self, classes):
        super().__init__()
        layers, c = [], 3
        for w in (16, 32, 64, 64):
            layers += [nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))

    def forward(self, x):
        return self.net(x)


def clip_batch(videos, idx, rng, frames, crop, train):
    t_max, s = videos.shape[1] - frames, videos.shape[2]
    out = []
    for i in idx:
        t0 = rng.integers(0, t_max + 1) if train else t_max // 2
        y0, x0 = (rng.integers(0, s - crop + 1, 2) if train else ((s - crop) // 2,) * 2)
        clip = videos[i, t0:t0 + frames, y0:y0 + crop, x0:x0 + crop]
        if train and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        out.append(np.ascontiguousarray(clip))
    return to_tensor(np.stack(out)).permute(0, 4, 1, 2, 3)  # B, 3, T, H, W


def train_clip3d(train, test, args, log):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = R3D18(len(ACTIONS), args.width, args.input)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        model.train()
        idx = rng.integers(0, len(train[0]), args.batch)
        x = clip_batch(train[0], idx, rng, args.clip_frames, args.crop, True)
        loss = nn.functional.cross_entropy(model(x), torch.as_tensor(train[2][idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = evaluate(model, lambda ids: clip_batch(test[0], ids, rng, args.clip_frames, args.crop, False), test[2])
            curve.append({"step": step, "loss": round(loss.item(), 4), "test_top1": acc, "seconds": round(time.time() - start, 1)})
            log(f"clip3d step {step}: loss {loss.item():.3f} test top-1 {acc:.3f} ({time.time() - start:.0f} s)")
    return curve


@torch.no_grad()
def evaluate(model, make_batch, labels, batch=32):
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        ids = np.arange(i, min(i + batch, len(labels)))
        correct += (model(make_batch(ids)).argmax(1).numpy() == labels[ids]).sum()
    return round(float(correct / len(labels)), 4)


def train_frame2d(train, test, target, masked, args):
    """A single-frame 2D CNN for `seconds`; target: 'action' or 'scene'."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    labels_tr, labels_te = (train[2], test[2]) if target == "action" else (train[3], test[3])
    classes = len(ACTIONS) if target == "action" else len(MAIN_SCENES)

    def frames(data, ids, pick):
        out = []
        for i, t in zip(ids, pick):
            f = data[0][i, t]
            out.append(mask_actor(f, data[1][i][t]) if masked else f)
        return to_tensor(np.stack(out)).permute(0, 3, 1, 2)

    model = Small2D(classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    start, steps = time.time(), 0
    while time.time() - start < args.seconds_2d:
        model.train()
        ids = rng.integers(0, len(labels_tr), 64)
        x = frames(train, ids, rng.integers(0, train[0].shape[1], 64))
        loss = nn.functional.cross_entropy(model(x), torch.as_tensor(labels_tr[ids]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    mid = test[0].shape[1] // 2
    acc = evaluate(model, lambda ids: frames(test, ids, [mid] * len(ids)), labels_te)
    return {"steps": steps, "test_top1": acc, "chance": round(1 / classes, 4)}


@dataclass
class ControlsConfig:
    difficulty: Literal[tuple(DIFFICULTIES)] = "easy"  # of the synthetic world (prep-synth --difficulty)
    train: PositiveInt = 800                 # training videos
    test: PositiveInt = 300                  # test videos
    frames: PositiveInt = 32                 # frames per video
    size: Annotated[int, integer(16)] = 64   # frame side in pixels (even)
    clip_frames: PositiveInt = 16            # frames per clip of clip3d (at most --frames)
    crop: PositiveInt = 56                   # crop side of clip3d's clips (at most --size)
    width: PositiveInt = 16                  # R3D-18 width (64: the paper's network)
    input: Literal["rgb", "rgbdiff"] = "rgbdiff"  # rgbdiff: clip + frame differences
    batch: PositiveInt = 16                  # clips per clip3d step
    lr: PositiveFloat = 1e-3                 # clip3d's AdamW learning rate
    steps: PositiveInt = 400                 # clip3d training steps
    eval_every: PositiveInt = 100            # clip3d steps between test evaluations
    seconds_2d: PositiveFloat = 60.0         # seconds of training for each 2D control
    seed: NonNegativeInt = 0                 # seeds the videos, the weights and the batches
    workers: PositiveInt = 2                 # rendering processes and torch threads
    skip_3d: bool = False                    # leave out clip3d
    skip_2d: bool = False                    # leave out frame2d, scene2d and masked2d
    json: str = ""                           # write everything measured here


@entry_point("benchmarks/synth_controls.py")
def main(argv=None):
    args = parse_config(ControlsConfig, argv, "benchmarks/synth_controls.py", __doc__.splitlines()[0])
    if args.size % 2 or args.crop > args.size or args.clip_frames > args.frames:
        refuse("benchmarks/synth_controls.py",
               ["--size must be even, --crop at most --size, --clip-frames at most --frames"])
    torch.set_num_threads(args.workers)
    t0 = time.time()
    train = render_split("train", args.train, args)
    test = render_split("test", args.test, args)
    print(f"rendered {args.train}+{args.test} videos in {time.time() - t0:.0f} s", flush=True)
    result = {"config": vars(args)}
    for name, target, masked in (("frame2d", "action", False), ("scene2d", "scene", False), ("masked2d", "action", True)):
        if not args.skip_2d:
            result[name] = train_frame2d(train, test, target, masked, args)
            print(name, result[name], flush=True)
    if not args.skip_3d:
        result["clip3d"] = train_clip3d(train, test, args, lambda m: print(m, flush=True))
    rows = [("clip3d action (want >= 0.8)", result.get("clip3d", [{}])[-1].get("test_top1")),
            ("frame2d action (want ~0.1)", result.get("frame2d", {}).get("test_top1")),
            ("scene2d scene (want high)", result.get("scene2d", {}).get("test_top1")),
            ("masked2d action (want ~0.1)", result.get("masked2d", {}).get("test_top1"))]
    print(f"\n{'control':32s} test top-1")
    for name, value in rows:
        print(f"{name:32s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
