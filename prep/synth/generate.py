"""prep-synth: generate the synthetic scene-biased video set in a Kinetics-like layout.

    prep-synth --out data/synth-raw                       # the demo's default size
    prep-synth --out RAW --train 2000 --bias 0.8 --difficulty hard --workers 8

Writes RAW/<split>/<action>/<id>_000000_<end>.mp4, Kinetics-format annotation CSVs
RAW/annotations/<split>.csv (label,youtube_id,time_start,time_end,split), the ground truth
RAW/annotations/<split>_truth.jsonl (one object per video: id, key, file, label, scene,
home_scene, frames, fps, width, height, boxes = per frame a list of normalised
[x1, y1, x2, y2], the actor's first) and RAW/annotations/world.json (the generator settings,
the action and scene lists and each action's home scene).

The bias dial: in train and val an action appears in its home scene with probability --bias and
otherwise in a uniformly random scene (which may also be the home one), so the expected
home-scene fraction is bias + (1 - bias) / scenes; test draws scenes uniformly (unbiased). The
novel splits use actions and scenes disjoint from the main ones. The same seed and flags give
the same files byte for byte, whatever --workers is.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from tqdm import tqdm

from shards.cli import Fraction, NonNegativeInt, PositiveInt, entry_point, integer, parse_config, refuse
from shards.files import write_atomic
from shards.video import encode_file

from .actor import ACTIONS, NOVEL_ACTIONS, Motion, draw_capsules, dof_tracks, mask_box, random_look, skeleton
from .scenes import MAIN_SCENES, NOVEL_SCENES, SCENES, render_background, scene_names, scene_soft_label

SPLITS = ("train", "val", "test", "novel_train", "novel_test")
FPS = 15.0
HOME_SCENE = dict(zip(ACTIONS, MAIN_SCENES))  # the i-th action lives in the i-th scene


@dataclass(frozen=True)
class Difficulty:
    size_range: tuple      # figure height as a fraction of the frame height
    motion: Motion
    camera_px: float       # camera pan amplitude, pixels at 128 px frames
    noise: float           # per-pixel noise std (0-1 scale)
    distractor_p: float    # probability of a moving non-human object
    bystander_p: float     # probability of a second, still person
    flicker: float         # global brightness oscillation amplitude


DIFFICULTIES = {
    "easy": Difficulty((0.75, 0.9), Motion(1.0, (10, 18), 0.0), 1.0, 0.01, 0.0, 0.0, 0.02),
    "medium": Difficulty((0.65, 0.85), Motion(0.9, (10, 20), 0.1), 2.0, 0.02, 0.3, 0.2, 0.04),
    "hard": Difficulty((0.5, 0.75), Motion(0.7, (10, 24), 0.2), 4.0, 0.03, 0.5, 0.4, 0.06),
}


@dataclass(frozen=True)
class VideoSpec:
    split: str
    index: int
    action: str
    scene: str
    frames: int
    size: int
    seed: int
    difficulty: str

    @property
    def id(self) -> str:
        return f"{self.split.replace('_', '')}{self.index:06d}"

    @property
    def key(self) -> str:
        return f"{self.id}_000000_{math.ceil(self.frames / FPS):06d}"


def render_video(spec: VideoSpec, draw_people: bool = True) -> tuple[np.ndarray, list[list[list[float]]]]:
    """One video: uint8 frames (T, S, S, 3) and per frame the boxes of every person.

    draw_people=False renders the same video without its people (same random draws), which
    lets the tests find exactly the pixels the people changed.
    """
    diff = DIFFICULTIES[spec.difficulty]
    rng = np.random.default_rng([spec.seed, SPLITS.index(spec.split), spec.index])
    s, t_count = spec.size, spec.frames
    pan = diff.camera_px * s / 128
    margin = int(math.ceil(pan)) + 1
    canvas = render_background(spec.scene, rng, s + 2 * margin, s + 2 * margin)
    t = np.arange(t_count)
    cam_x = pan * np.sin(2 * np.pi * t / rng.uniform(30, 60) + rng.uniform(0, 6.3))
    cam_y = 0.5 * pan * np.sin(2 * np.pi * t / rng.uniform(30, 60) + rng.uniform(0, 6.3))
    light = 1 + diff.flicker * np.sin(2 * np.pi * t / rng.uniform(20, 50) + rng.uniform(0, 6.3))

    actor = (random_look(rng, s, s, diff.size_range), dof_tracks(spec.action, t_count, rng, diff.motion))
    people = [actor]
    if rng.random() < diff.bystander_p:  # a smaller, still person: masked like any human
        look = random_look(rng, s, s, (0.35, 0.5))
        people.insert(0, (look, dof_tracks("bounce", t_count, rng, Motion(0.0, (10, 20), 0.05))))
    ball = None
    if rng.random() < diff.distractor_p:
        ball = (rng.uniform(0, s, 2), rng.uniform(-1.5, 1.5, 2) * s / 64, rng.uniform(0.03, 0.06) * s, tuple(rng.uniform(0, 1, 3)))

    frames, boxes = np.empty((t_count, s, s, 3), np.uint8), []
    for i in range(t_count):
        ox, oy = int(round(margin + cam_x[i])), int(round(margin + cam_y[i]))
        frame = canvas[oy:oy + s, ox:ox + s].copy()
        shift = (margin - ox, margin - oy)  # world objects move against the camera
        if ball is not None:
            (bx, by), (vx, vy), r, colour = ball
            x, y = (bx + vx * i) % s + shift[0], (by + vy * i) % s + shift[1]
            draw_capsules(frame, [((x, y), (x, y), r, colour)])
        frame_boxes = []
        for look, tracks in people:
            pose = {dof: float(v[i]) for dof, v in tracks.items()}
            capsules = [((a[0] + shift[0], a[1] + shift[1]), (b[0] + shift[0], b[1] + shift[1]), r, c)
                        for a, b, r, c in skeleton(pose, look, s, s)]
            box = mask_box(draw_capsules(frame if draw_people else frame.copy(), capsules))
            if box is not None:
                frame_boxes.append(box)
        boxes.append(frame_boxes[::-1])  # the actor (drawn last, in front) first
        frame *= light[i]
        frame += rng.normal(0, diff.noise, frame.shape).astype(np.float32)
        frames[i] = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames, boxes


def plan_split(split: str, count: int, bias: float, frames: int, size: int, seed: int, difficulty: str) -> list[VideoSpec]:
    """Balanced actions in a seeded order; scenes by the bias dial (see module docstring)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 1_000_003])
    novel = split.startswith("novel")
    actions = list(NOVEL_ACTIONS if novel else ACTIONS)
    scenes = NOVEL_SCENES if novel else MAIN_SCENES
    order = rng.permutation(np.resize(np.arange(len(actions)), count)) if count else []
    specs = []
    for i, a in enumerate(order):
        action = actions[a]
        if split in ("train", "val") and rng.random() < bias:
            scene = HOME_SCENE[action]
        else:
            scene = scenes[int(rng.integers(len(scenes)))]
        specs.append(VideoSpec(split, i, action, scene, frames, size, seed, difficulty))
    return specs


def _make_one(job: tuple[VideoSpec, str, str]) -> dict:
    spec, out, codec = job
    frames, boxes = render_video(spec)
    ext = {"h264": "mp4", "vp9": "webm"}[codec]
    rel = Path(spec.split) / spec.action / f"{spec.key}.{ext}"
    path = Path(out) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encode_file(frames, FPS, codec))
    home = HOME_SCENE.get(spec.action)
    return {"id": spec.id, "key": spec.key, "file": rel.as_posix(), "label": spec.action, "scene": spec.scene,
            "home_scene": home, "frames": spec.frames, "fps": FPS, "width": spec.size, "height": spec.size,
            "boxes": [[[round(v, 6) for v in b] for b in f] for f in boxes]}


def generate(out: Path, counts: dict[str, int], bias: float = 0.9, frames: int = 32, size: int = 64,
             seed: int = 0, difficulty: str = "easy", workers: int = 2, codec: str = "h264",
             progress: bool = True) -> dict[str, list[dict]]:
    """Write the whole set; returns the truth records per split."""
    out.mkdir(parents=True, exist_ok=True)
    ann = out / "annotations"
    ann.mkdir(exist_ok=True)
    plans = {split: plan_split(split, counts.get(split, 0), bias, frames, size, seed, difficulty) for split in SPLITS}
    jobs = [(spec, str(out), codec) for split in SPLITS for spec in plans[split]]
    # spawn, not fork: a caller that already runs threads (torch, DALI) can deadlock a forked child
    with get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
        results = list(tqdm(pool.imap(_make_one, jobs, chunksize=4), total=len(jobs), unit="video",
                            desc="prep-synth", disable=not progress))
    truth = {split: [r for r, (spec, _, _) in zip(results, jobs) if spec.split == split] for split in SPLITS}
    end = math.ceil(frames / FPS)
    for split, records in truth.items():
        if not counts.get(split, 0):
            continue
        with open(ann / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows([r["label"], r["id"], 0, end, split] for r in records)
        with open(ann / f"{split}_truth.jsonl", "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
    world = {"generator": "prep-synth", "version": 1, "seed": seed, "bias": bias, "frames": frames, "size": size,
             "fps": FPS, "difficulty": difficulty, "difficulty_settings": asdict(DIFFICULTIES[difficulty]),
             "codec": codec, "counts": {s: counts.get(s, 0) for s in SPLITS},
             "actions": list(ACTIONS), "novel_actions": list(NOVEL_ACTIONS),
             "scenes": MAIN_SCENES, "novel_scenes": NOVEL_SCENES, "home_scene": HOME_SCENE,
             # what prep-shards needs to label this world without importing it: the manifest's scene
             # names and each scene's soft label (float32 values, exact through JSON)
             "scene_names": scene_names(), "scene_labels": {s: scene_soft_label(s).tolist() for s in SCENES}}
    (ann / "world.json").write_text(json.dumps(world, indent=1) + "\n")
    return truth


class _Serial:
    """Pool stand-in for --workers 1 (no processes: easier to debug and profile)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, items, chunksize=1):
        return map(fn, items)


@dataclass
class SynthConfig:
    out: str                                 # output folder (the raw dataset root)
    train: NonNegativeInt = 1000             # videos in train (biased)
    val: NonNegativeInt = 200                # videos in val (biased like train)
    test: NonNegativeInt = 500               # videos in test (unbiased)
    novel_train: NonNegativeInt = 250        # videos in novel_train
    novel_test: NonNegativeInt = 250         # videos in novel_test
    bias: Fraction = 0.9                     # probability that an action is in its home scene
    frames: Annotated[int, integer(1, 10_000)] = 32  # frames per video
    size: Annotated[int, integer(16, 1024)] = 64  # frame height and width, pixels (even)
    difficulty: Literal[tuple(DIFFICULTIES)] = "easy"  # how hard the actions are to tell apart
    codec: Literal["h264", "vp9"] = "h264"   # h264 -> .mp4 (as Kinetics), vp9 -> .webm
    seed: NonNegativeInt = 0                 # the world's random seed
    workers: PositiveInt = os.cpu_count() or 1  # encoding processes


@entry_point("prep-synth")
def main(argv: list[str] | None = None) -> int:
    args = parse_config(SynthConfig, argv, "prep-synth", __doc__.split("\n\n")[0])
    refuse("prep-synth", [f"--size {args.size} must be even"] if args.size % 2 else [])
    counts = {"train": args.train, "val": args.val, "test": args.test,
              "novel_train": args.novel_train, "novel_test": args.novel_test}
    truth = generate(Path(args.out), counts, args.bias, args.frames, args.size, args.seed, args.difficulty,
                     args.workers, args.codec)
    total = sum(len(v) for v in truth.values())
    print(f"prep-synth: {total} videos in {args.out} ({', '.join(f'{s} {len(v)}' for s, v in truth.items() if v)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
