"""Training step throughput: the dual pass fed by the real loader vs the same shapes from memory.

    python benchmarks/train_step.py                          # CPU: r3d18-w16 on 8 x 56 x 56 clips, ~1 minute
    python benchmarks/train_step.py --quick --json out.json  # the smoke test's size
    python benchmarks/train_step.py --device cuda --arch r3d18 --frames 16 --size 112 --precision bf16 \\
        --batch 0 --shards DIR --json gpu.json                # GPU: the paper's shapes, largest batch that fits

For each --schedule (alternate: the paper's two optimizer steps per iteration, CE + scene
adversary on the clip then entropy on the masked clip; joint: one forward of clip and masked
clip together, one step), the step of train/pretrain.py (same model, heads, losses, gradient
reversal, SGD, autocast) is timed twice: on batches made once in device memory (the compute
bound) and on batches from the real loader (build_loader over shards; a synthetic set is made
when --shards is not given). The data-stall fraction is 1 - (loader clips/s) / (memory
clips/s); data wait is the time spent waiting for the next batch. FLOPs come from
torch.utils.flop_counter on the meta device: the backbone's forward per clip, and the forward
and backward of one dual-pass sample, from which the achieved FLOP/s follow.
--batch 0 searches the largest power-of-two batch that fits on the GPU (up to --max-batch).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)  # benchmarks/prep.py would shadow the prep package

import torch  # noqa: E402 (after the sys.path fix above)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.common import report  # noqa: E402
from train.distributed import visible_device  # noqa: E402
from shards.cli import NonNegativeInt, PositiveInt, entry_point, integer, parse_config, refuse
from shards.format import NUM_SCENES
from shards.loader import build_loader
from train.gradient_reversal import reverse_gradient
from train.model import ARCHS, SceneHead, build_backbone
from train.methods import METHODS, build_method
from train.step import SCHEDULES, DebiasStep, Losses

CLASSES = 10  # the synthetic set's; the backbone's cost barely depends on it


def make_shards(work: Path, videos: int, size: int, frames: int, workers: int) -> Path:
    raw, out = work / "raw", work / "shards"
    common = dict(check=True, capture_output=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "prep.synth", "--out", raw, "--train", str(videos), "--val", "0",
                    "--test", "0", "--novel-train", "0", "--novel-test", "0", "--size", str(size),
                    "--frames", str(frames), "--difficulty", "medium", "--workers", str(workers)], **common)
    subprocess.run([sys.executable, "-m", "prep.prep_shards", "--dataset", "synth", "--root", raw, "--out", out,
                    "--split", "train", "--workers", str(workers)], **common)
    return out


def flops(arch: str, frames: int, size: int) -> dict:
    """FLOPs (multiply-add = 2) of one clip's forward, and of one dual-pass training sample
    (forward and backward of the clip and of the masked clip), counted on the meta device."""
    with torch.device("meta"):
        model, head = build_backbone(arch, CLASSES), None
        head = SceneHead(model.feature_dim)
        x = torch.randn(1, 3, frames, size, size)
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as train:
        for _ in range(2):  # the clip and the masked clip
            logits, features = model(x, with_features=True)
            (logits.sum() + head(reverse_gradient(features, 0.5)).sum()).backward()
    return {"forward_gflop": round(fwd.get_total_flops() / 1e9, 2),
            "forward_gmac": round(fwd.get_total_flops() / 2e9, 2),
            "dual_pass_gflop_per_sample": round(train.get_total_flops() / 1e9, 2),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


class Trainer:
    """The model, optimizer and train step of train/pretrain.py (debias adv,ent, soft scene labels)."""

    def __init__(self, args, device: torch.device):
        torch.manual_seed(0)
        self.backbone = build_backbone(args.arch, CLASSES).to(device)
        if args.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last_3d)
        self.head = SceneHead(self.backbone.feature_dim).to(device)
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-5)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
        self.amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
        self.args = args

    def step(self, batch, schedule: str, losses: Losses | None = None, method=None) -> dict:
        """pretrain.py's step with its defaults (debias adv,ent, lambda 0.5, soft scene labels), or
        with other `losses` or a `method` of train/methods/."""
        return DebiasStep(self.backbone, self.head, self.optimizer, self.scaler, losses or Losses(schedule=schedule),
                          self.amp, self.args.channels_last, method)(batch)


def memory_batch(batch: int, args, device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (batch, 3, args.frames, args.size, args.size)
    return {"clip": torch.randn(shape, generator=g).to(device), "masked": torch.randn(shape, generator=g).to(device),
            "label": torch.randint(CLASSES, (batch,), generator=g).to(device),
            "scene": torch.randn(batch, NUM_SCENES, generator=g).softmax(1).to(device),
            "mask_ok": torch.ones(batch, dtype=torch.bool, device=device),
            "has_human": torch.ones(batch, dtype=torch.bool, device=device), "human": centre_person(shape, device)}


def centre_person(shape: tuple, device) -> torch.Tensor:
    """bool (B, T, H, W): a person box over the middle third of every frame (what ActorCutMix pastes)."""
    b, _, t, h, w = shape
    human = torch.zeros(b, t, h, w, dtype=torch.bool, device=device)
    human[:, :, h // 3: 2 * h // 3, w // 3: 2 * w // 3] = True
    return human


def largest_batch(args, device, schedule: str) -> int:
    """The largest power-of-two batch whose step runs without running out of GPU memory."""
    best, batch = 0, 8
    while batch <= args.max_batch:
        trainer = None
        try:
            trainer = Trainer(args, device)
            trainer.step(memory_batch(batch, args, device), schedule)
            torch.cuda.synchronize()
            best, batch = batch, batch * 2
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError, or cuDNN failing to get its workspace
            print(f"train_step: batch {batch} does not fit ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            break
        finally:
            del trainer
            torch.cuda.empty_cache()
    if not best:
        raise SystemExit(f"train_step: a batch of 8 does not fit ({args.arch}, {args.frames}x{args.size}x{args.size})")
    return best


def time_steps(trainer: Trainer, batches, schedule: str, args, device, **step) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    it = iter(batches)
    for _ in range(args.warmup):
        trainer.step(next(it), schedule, **step)
    sync()
    steps, waits, clips = [], [], 0
    start = tick = time.perf_counter()
    for _ in range(args.steps):
        batch = next(it)
        fetched = time.perf_counter()
        trainer.step(batch, schedule, **step)
        sync()
        now = time.perf_counter()
        waits.append(fetched - tick)
        steps.append(now - tick)
        clips += len(batch["label"])
        tick = now
    wall = time.perf_counter() - start
    if hasattr(it, "close"):
        it.close()
    return {"steps": args.steps, "clips": clips, "step_s_median": round(statistics.median(steps), 4),
            "clips_per_s": round(clips / wall, 2), "data_wait_fraction": round(sum(waits) / wall, 3)}


def repeat(batch: dict):
    while True:
        yield batch


def from_loader(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def run(args, work: Path) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    shards = args.shards or make_shards(work, args.videos, args.video_size, args.video_frames, args.workers)
    count = flops(args.arch, args.frames, args.size)
    result = {"machine": f"{os.cpu_count()}-core CPU" + (f", {torch.cuda.get_device_name()}" if device.type == "cuda"
                                                           else ", no GPU"),
              "config": {**vars(args), "shards": str(shards)}, "flops": count,
              "r3d18_16x112x112": flops("r3d18", 16, 112), "load_average": os.getloadavg(), "runs": []}
    for schedule in args.schedule:
        batch = args.batch or largest_batch(args, device, schedule)
        loader = build_loader(shards, "train", backend=args.loader, batch_size=batch, frames=args.frames,
                              size=args.size, device=device.type, num_threads=args.workers)
        row = {"schedule": schedule, "batch": batch, "batches_per_epoch": len(loader)}
        for source, batches in (("memory", repeat(memory_batch(batch, args, device))), ("loader", from_loader(loader))):
            row[source] = time_steps(Trainer(args, device), batches, schedule, args, device)
        row["data_stall_fraction"] = round(max(0.0, 1 - row["loader"]["clips_per_s"] / row["memory"]["clips_per_s"]), 3)
        per_sample = count["dual_pass_gflop_per_sample"] * 1e9
        row["achieved_tflops"] = {s: round(row[s]["clips_per_s"] * per_sample / 1e12, 3) for s in ("memory", "loader")}
        result["runs"].append(row)
    result["methods"] = method_rows(args, device, args.batch or result["runs"][0]["batch"])
    return result


def method_rows(args, device, batch: int) -> list[dict]:
    """Each method's step (train/methods/, official defaults, every clip transformed where the
    method draws per clip) against the baseline's (CE alone: --debias none), batches from memory."""
    memory = memory_batch(batch, args, device)
    rows = []
    for name in ("baseline", "sdn", *args.methods):
        method = build_method("sdn" if name == "baseline" else name, device, size=args.size)
        losses = Losses(adv=False, ent=False) if name == "baseline" else Losses()
        timing = time_steps(Trainer(args, device), repeat(memory), "alternate", args, device, losses=losses, method=method)
        rows.append({"method": name, **timing})
    for row in rows:
        row["step_vs_baseline"] = round(row["step_s_median"] / rows[0]["step_s_median"], 2)
    return rows


def print_tables(result: dict) -> None:
    c, f, ref = result["config"], result["flops"], result["r3d18_16x112x112"]
    print(f"machine: {result['machine']}; {c['arch']} at {c['frames']}x{c['size']}x{c['size']}, {c['precision']}, "
          f"loader {c['loader']} ({c['workers']} workers), {c['threads']} torch threads; load average before "
          f"{result['load_average'][0]:.1f}")
    print(f"FLOPs: forward {f['forward_gflop']} GFLOP/clip ({f['forward_gmac']} GMAC), dual pass "
          f"{f['dual_pass_gflop_per_sample']} GFLOP/sample; r3d18 at 16x112x112: {ref['forward_gmac']} GMAC forward, "
          f"{ref['dual_pass_gflop_per_sample']} GFLOP per dual-pass sample, {ref['params_m']} M parameters")
    print(f"{'schedule':10s} {'batch':>5s} {'memory step s':>13s} {'clips/s':>8s} {'loader step s':>13s} {'clips/s':>8s} "
          f"{'data wait':>9s} {'stall':>6s} {'TFLOP/s mem':>11s}")
    for r in result["runs"]:
        m, l = r["memory"], r["loader"]
        print(f"{r['schedule']:10s} {r['batch']:5d} {m['step_s_median']:13.3f} {m['clips_per_s']:8.1f} "
              f"{l['step_s_median']:13.3f} {l['clips_per_s']:8.1f} {l['data_wait_fraction']:9.1%} "
              f"{r['data_stall_fraction']:6.1%} {r['achieved_tflops']['memory']:11.3f}")
    print(f"\n{'method':12s} {'step s':>7s} {'clips/s':>8s} {'vs baseline':>11s}   (batches from memory; sdn: adv,ent alternate)")
    for r in result["methods"]:
        print(f"{r['method']:12s} {r['step_s_median']:7.3f} {r['clips_per_s']:8.1f} {r['step_vs_baseline']:10.2f}x")


@dataclass
class TrainStepConfig:
    device: Literal["cpu", "cuda"] = field(default_factory=visible_device)  # cuda when one is visible
    arch: Literal[tuple(ARCHS)] = "r3d18-w16"  # r3d18 (the paper), r3d18-w32, r3d18-w16, hara-r18 (the official code's)
    frames: PositiveInt = 8                  # frames per clip
    size: PositiveInt = 56                   # crop side
    batch: NonNegativeInt = 8                # clips per step; 0: the largest power of two that fits (GPU)
    max_batch: PositiveInt = 256             # upper end of the --batch 0 search
    schedule: list[Literal[SCHEDULES]] = field(default_factory=lambda: list(SCHEDULES))  # comma-separated
    methods: list[Literal[tuple(METHODS)]] = field(default_factory=lambda: list(METHODS))  # timed against the baseline
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16, fp16: autocast (fp16 with a grad scaler)
    channels_last: bool = False              # channels-last-3d memory format
    steps: PositiveInt = 4                   # timed steps per measurement
    warmup: NonNegativeInt = 1               # untimed steps first
    # 0 leaves the workers their cores: more busy threads than cores make OpenMP's spin-waits slow every CPU op down,
    # up to 100x (benchmarks/README.md)
    threads: NonNegativeInt = 0              # torch threads; 0: cores minus --workers (>= 1) on CPU, torch's default on GPU
    loader: Literal["dali", "torch"] = "dali"  # torch: the reference loader
    workers: PositiveInt = 2                 # DALI threads / DataLoader workers
    shards: str = ""                         # shard folder with a train split ('': make a synthetic one)
    videos: PositiveInt = 48                 # synthetic videos to make
    video_size: Annotated[int, integer(16)] = 64  # synthetic frame side (>= --size)
    video_frames: PositiveInt = 16           # frames per synthetic video
    quick: bool = False                      # tiny sizes, for the smoke test
    json: str = ""                           # write everything measured here


def check(args: TrainStepConfig) -> None:
    """The combinations no flag's type can check."""
    problems = []
    if not args.schedule:
        problems.append("--schedule: name at least one")
    if args.batch == 0 and args.device != "cuda":
        problems.append("--batch 0 (search) needs --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        problems.append("--device cuda but no CUDA device is visible (use --device cpu)")
    if not args.shards and (args.video_size % 2 or args.size > args.video_size):
        problems.append(f"--video-size {args.video_size} must be even and at least --size {args.size}")
    refuse("benchmarks/train_step.py", problems)


@entry_point("benchmarks/train_step.py")
def main(argv=None):
    args = parse_config(TrainStepConfig, argv, "benchmarks/train_step.py", __doc__.splitlines()[0])
    if args.quick:
        args.frames, args.size, args.batch, args.steps, args.warmup = 4, 32, 2, 1, 1
        args.videos, args.video_size, args.video_frames = 6, 32, 6
    check(args)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.workers))
    args.threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    report(result, print_tables, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
