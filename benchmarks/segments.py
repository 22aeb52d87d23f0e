"""Segment length (prep-shards --gop) against bytes and decode cost, on the same videos, in one run.

    python benchmarks/segments.py --work /tmp/segments                  # 300-frame videos, gops 4 8 16 32
    python benchmarks/segments.py --raw /tmp/loader-300/raw --work /tmp/segments   # reuse loader.py's videos
    python benchmarks/segments.py --quick --json out.json               # the smoke test's size

A shard stores each video as segments of --gop frames that decode on their own; a clip is decoded
from the first frame of the segment it starts in, so it decodes up to gop - 1 frames it does not
use, and every segment starts with a keyframe, which costs bytes. For each gop this writes VP9
shards of the same videos (prep-shards --gop) and reports, next to the JPEG frame folders of the
official code: bytes per video; DALI's CPU decoder alone (fn.decoders.video, the op our loader
decodes with, bytes from memory) on the first, middle and last 16-frame window of every video and
on random training windows, CPU ms per clip; and our whole DALI loader (train mode) in clips/s.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)  # benchmarks/prep.py would shadow the prep package

from benchmarks.common import report  # noqa: E402
from shards.cli import PositiveInt, entry_point, integer, parse_config  # noqa: E402 (after the sys.path fix above)
from benchmarks.loader import (POSITIONS, SEED, clip_plan, decode_only_dali, disk_bytes, machine, make_jpeg_folders,
                               make_raw, measure, ours, position_plan, python_m)
from shards.loader import LoaderConfig, SplitIndex  # noqa: E402


def make_shards(raw: Path, out: Path, gop: int, workers: int) -> Path:
    if not (out / "manifest.json").is_file():
        python_m("prep.prep_shards", "--dataset", "synth", "--root", raw, "--out", out, "--split", "train",
                 "--codec", "vp9", "--gop", gop, "--workers", workers)
    return out


def run(args) -> dict:
    work = Path(args.work)
    raw = Path(args.raw) if args.raw else work / "raw"
    if not args.raw and not (raw / "annotations").is_dir():
        make_raw(raw, args.videos, args.video_frames, args.workers)
    rows = []
    jpeg_per_video = None
    for gop in args.gops:
        shards = make_shards(raw, work / f"shards-gop{gop}", gop, args.workers)
        index = SplitIndex(shards, "train")
        if jpeg_per_video is None:
            jpeg = make_jpeg_folders(index, raw, work / "jpeg", 90, args.workers)
            jpeg_per_video = disk_bytes([jpeg])["bytes"] / len(index)
        per_video = disk_bytes(sorted(shards.glob("train-*")))["bytes"] / len(index)
        eval_cfg = LoaderConfig(args.batch, args.frames, args.size, train=False, clips=len(POSITIONS), seed=SEED)
        row = {"gop": gop, "kib_per_video": round(per_video / 1024, 1),
               "jpeg_over_shards": round(jpeg_per_video / per_video, 2), "decode_cpu_ms_per_clip": {}}
        n = args.batches
        for pos in POSITIONS:
            m = measure(pos, decode_only_dali(index, eval_cfg, position_plan(len(index), args.batch, n + 1, pos), args,
                                              "cpu"), n, "cpu")
            row["decode_cpu_ms_per_clip"][pos] = round(1000 * m["cpu_s_per_clip"], 2)
        train_cfg = LoaderConfig(args.batch, args.frames, args.size, seed=SEED)
        m = measure("train", decode_only_dali(index, train_cfg, clip_plan(len(index), args.batch, n + 1), args, "cpu"),
                    n, "cpu")
        row["decode_cpu_ms_per_clip"]["random"] = round(1000 * m["cpu_s_per_clip"], 2)
        d = row["decode_cpu_ms_per_clip"]
        row["decode_last_over_first"] = round(d["last"] / d["first"], 2)
        row["decode_worst_over_first"] = round(max(d[p] for p in POSITIONS) / d["first"], 2)
        row["loader_clips_per_s"] = measure("loader", ours(shards, "dali", "cpu", args), n, "cpu")["clips_per_s"]
        rows.append(row)
    return {"machine": machine(), "config": vars(args), "jpeg_kib_per_video": round(jpeg_per_video / 1024, 1),
            "rows": rows}


def print_table(result: dict) -> None:
    c = result["config"]
    print(f"machine: {result['machine']}; {c['video_frames']}-frame videos, {c['frames']}-frame windows, batches of "
          f"{c['batch']}, {c['workers']} DALI threads; JPEG folders {result['jpeg_kib_per_video']} KiB/video")
    print(f"{'gop':>4s} {'KiB/video':>9s} {'JPEG/ours':>9s} {'decode CPU ms/clip: first':>26s} {'middle':>7s} {'last':>6s} "
          f"{'random':>7s} {'last/first':>10s} {'worst/first':>11s} {'loader clips/s':>14s}")
    for r in result["rows"]:
        d = r["decode_cpu_ms_per_clip"]
        print(f"{r['gop']:4d} {r['kib_per_video']:9.1f} {r['jpeg_over_shards']:8.2f}x {d['first']:26.2f} {d['middle']:7.2f} "
              f"{d['last']:6.2f} {d['random']:7.2f} {r['decode_last_over_first']:9.2f}x {r['decode_worst_over_first']:10.2f}x "
              f"{r['loader_clips_per_s']:14.1f}")


@dataclass
class SegmentsConfig:
    raw: str = ""                            # a prep-synth raw folder to use ('': make one in --work)
    work: str = ""                           # folder for the raw set, shards, JPEG folders; reused ('': a temporary one)
    gops: list[PositiveInt] = field(default_factory=lambda: [4, 8, 16, 32])  # segment lengths, comma-separated
    videos: PositiveInt = 160                # synthetic videos to make
    video_frames: PositiveInt = 300          # frames per synthetic video
    batch: PositiveInt = 8                   # clips per batch
    batches: PositiveInt = 16                # timed batches per measurement (after one warm-up)
    frames: PositiveInt = 16                 # frames per clip
    size: Annotated[int, integer(1, 128)] = 112  # crop side (the synthetic videos are 128 x 128)
    workers: PositiveInt = 2                 # prep processes and DALI threads
    device: Literal["cpu"] = "cpu"           # DALI's CPU decoder only (on a GPU: loader.py --device cuda, by position)
    quick: bool = False                      # tiny sizes, for the smoke test
    json: str = ""                           # write everything measured here


@entry_point("benchmarks/segments.py")
def main(argv=None):
    args = parse_config(SegmentsConfig, argv, "benchmarks/segments.py", __doc__.splitlines()[0])
    if args.quick:
        args.videos, args.video_frames, args.batch, args.batches, args.gops = 4, 40, 2, 2, [8, 16]
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or tmp
        result = run(args)
    report(result, print_table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
