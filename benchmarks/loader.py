"""Loader throughput (and, on a GPU, the GPU paths' correctness), side by side in one run.

    python benchmarks/loader.py                              # CPU: dali-cpu and torch backends
    python benchmarks/loader.py --device cuda --json out.json  # GPU: also dali-gpu, parity checks

Makes a synthetic set (prep-synth + prep-shards, VP9 at 128 px) unless --shards is given, then
for each backend reads --batches training batches (16 frames, 112 crop, masking on) and
reports clips/s and CPU-seconds per clip. With CUDA it first checks that DALI's mixed (NVDEC)
decoding and the GPU masking agree with the CPU path on the same clips.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from shards.loader import build_loader
from shards.masking import STD

ONE_LEVEL = 1 / 255 / min(STD)


def make_shards(work: Path, videos: int, size: int, frames: int, workers: int) -> Path:
    raw, shards = work / "raw", work / "shards"
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "prep-synth", "--out", raw, "--train", str(videos), "--val", "0", "--test", "0",
                    "--novel-train", "0", "--novel-test", "0", "--size", str(size), "--frames", str(frames),
                    "--workers", str(workers)], check=True, capture_output=True)
    subprocess.run([bin_dir / "prep-shards", "--dataset", "synth", "--root", raw, "--out", shards,
                    "--workers", str(workers)], check=True, capture_output=True)
    return shards


def cpu_seconds() -> float:
    self, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self.ru_utime + self.ru_stime + children.ru_utime + children.ru_stime


def time_backend(shards, backend, device, args) -> dict:
    loader = build_loader(shards, "train", backend=backend, batch_size=args.batch, frames=args.frames, size=args.size,
                          device=device, num_threads=args.workers)
    it = iter(loader)
    next(it)  # warm-up: workers, pipeline build
    if device == "cuda":
        torch.cuda.synchronize()
    clips, start, cpu0 = 0, time.perf_counter(), cpu_seconds()
    for _, batch in zip(range(args.batches), it):
        clips += batch["clip"].shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    return {"backend": f"{backend}-{'gpu' if device == 'cuda' else 'cpu'}", "clips": clips,
            "clips_per_s": round(clips / wall, 1), "cpu_s_per_clip": round(cpu / clips, 4)}


def check_gpu(shards, args) -> dict:
    """DALI mixed decoding + GPU masking vs the CPU path, on the same eval clips."""
    kw = dict(batch_size=args.batch, frames=args.frames, size=args.size, train=False, num_threads=args.workers)
    worst = {"clip": 0.0, "masked": 0.0}
    for a, b in zip(build_loader(shards, "train", backend="dali", device="cuda", **kw),
                    build_loader(shards, "train", backend="dali", device="cpu", **kw)):
        assert a["clip"].is_cuda and a["masked"].is_cuda
        for name in worst:
            worst[name] = max(worst[name], (a[name].cpu() - b[name]).abs().max().item() / ONE_LEVEL)
    return {"max_diff_levels": {k: round(v, 2) for k, v in worst.items()}, "ok": max(worst.values()) <= 2.0}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", help="existing shard folder (default: make a synthetic one)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--videos", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(args.shards) if args.shards else make_shards(Path(tmp), args.videos, 128, 32, args.workers)
        result = {"config": vars(args), "gpu_check": None, "runs": []}
        if args.device == "cuda":
            result["gpu_check"] = check_gpu(shards, args)
            result["runs"].append(time_backend(shards, "dali", "cuda", args))
        result["runs"] += [time_backend(shards, "dali", "cpu", args), time_backend(shards, "torch", "cpu", args)]
    base = result["runs"][-1]["clips_per_s"]
    print(f"{'backend':10s} {'clips/s':>8s} {'CPU s/clip':>10s} {'vs torch':>8s}")
    for r in result["runs"]:
        print(f"{r['backend']:10s} {r['clips_per_s']:8.1f} {r['cpu_s_per_clip']:10.4f} {r['clips_per_s'] / base:7.2f}x")
    if result["gpu_check"]:
        print(f"GPU check: {result['gpu_check']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if not result["gpu_check"] or result["gpu_check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
