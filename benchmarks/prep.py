"""Prep throughput: videos/s and where the time goes, stage by stage.

    python benchmarks/prep.py                          # CPU, ~1 minute on 2 cores
    python benchmarks/prep.py --quick --json out.json  # the smoke test's size
    python benchmarks/prep.py --device cuda --videos 64 --transcoded 16 --json gpu.json

Two input sets: the synthetic set (prep-synth, 128 x 128, 15 fps) and transcoded sample videos
(synthetic videos rendered at 240 px, transcoded with PyAV to 320 x 240 H.264 at 30 fps, the
size of a Kinetics download, so decoding and resizing cost what they cost on real data).
For every video the stages of prep-shards run one after the other in this process and are
timed apart: decode (prep/decode.py: decode + scale to short side 128), detect (prep/detector.py:
a yolov8n with random weights, built offline from its yaml: the real network's cost),
scene (prep/scene_model.py: a random timm --scene-arch over --scene-frames frames), encode
(shards/video.py, --codec) and write (shards/writer.py: tar, index, fsync, sha256). Then
prep-shards itself runs end to end with --workers processes: on the synthetic set with its
ground truth (boxes and scenes need no model), on the transcoded set with the two models.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

STAGES = ("decode", "detect", "scene", "encode", "write")
ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)  # this script is named like the prep package: import the package, not itself

from benchmarks.common import report  # noqa: E402
from train.distributed import visible_device  # noqa: E402
from shards.cli import PositiveInt, entry_point, parse_config  # noqa: E402 (after the sys.path fix above)
from shards.format import NUM_SCENES  # noqa: E402


def python_m(module: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], check=True, capture_output=True,
                          text=True, cwd=ROOT, env=env)


def make_synth(raw: Path, videos: int, frames: int, size: int, workers: int) -> list[Path]:
    python_m("prep.synth", "--out", raw, "--train", videos, "--val", 0, "--test", 0, "--novel-train", 0,
             "--novel-test", 0, "--size", size, "--frames", frames, "--difficulty", "medium", "--workers", workers)
    return sorted(raw.glob("train/*/*.mp4"))


def transcode(path: Path, width: int, height: int, fps: int) -> None:
    """Re-encode in place as H.264 width x height at fps (every frame kept, so the clip gets faster)."""
    with av.open(str(path)) as src:
        frames = [f.reformat(width=width, height=height, format="yuv420p") for f in src.decode(video=0)]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "medium"}
        for i, frame in enumerate(frames):
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)


def build_models(work: Path, args) -> tuple[Path, Path]:
    """A random yolov8n saved as an ultralytics checkpoint and a random timm scene model state dict."""
    import timm
    from ultralytics import YOLO

    yolo, scene = work / "yolov8n-random.pt", work / f"{args.scene_arch}-random.pth"
    model = YOLO("yolov8n.yaml")
    model.model.names = {i: "person" if i == 0 else f"class{i}" for i in range(80)}  # class 0 is person, as in COCO
    model.save(yolo)
    torch.manual_seed(0)
    torch.save(timm.create_model(args.scene_arch, pretrained=False, num_classes=NUM_SCENES).state_dict(), scene)
    return yolo, scene


def time_stages(paths: list[Path], yolo: Path, scene: Path, out: Path, args) -> dict:
    """Every stage of prep on every video, in this process, timed apart (seconds, summed)."""
    from prep.decode import decode_source
    from prep.detector import PersonDetector
    from prep.scene_model import SceneLabeler, load_places365
    from shards import Sample, ShardWriter
    from shards.video import encode_video

    detector = PersonDetector(yolo, device=args.device, conf=0.25, imgsz=320, stride=args.det_stride)
    labeler = SceneLabeler(load_places365(scene, arch=args.scene_arch, device=args.device), device=args.device,
                           frames=args.scene_frames)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    detector.detect(np.zeros((2, 128, 170, 3), np.uint8))  # warm-up: model fused, kernels chosen
    labeler.labels(np.zeros((2, 128, 170, 3), np.uint8))
    totals, frames = dict.fromkeys(STAGES, 0.0), 0
    with ShardWriter(out, "train-000000") as writer:
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            dec = decode_source(path, 128)
            t1 = time.perf_counter()
            boxes = detector.detect(dec.frames)
            sync()
            t2 = time.perf_counter()
            label, votes = labeler.labels(dec.frames)
            sync()
            t3 = time.perf_counter()
            data = encode_video(dec.frames, dec.fps, args.codec)
            t4 = time.perf_counter()
            t, h, w = dec.frames.shape[:3]
            writer.write(Sample(f"v{i:06d}", data, args.codec, boxes, label, 0, {
                "label_name": "x", "split": "train", "fps": dec.fps, "frames": t, "height": h, "width": w},
                scene_votes=votes))
            t5 = time.perf_counter()
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                totals[stage] += seconds
            frames += t
        closing = time.perf_counter()  # the writer's exit: index, fsync, renames
    writer.info()  # and the sha256 the manifest records
    totals["write"] += time.perf_counter() - closing
    with av.open(str(paths[0])) as c:
        source = [c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height]
    total = sum(totals.values())
    return {"videos": len(paths), "frames": frames, "source_size": source,
            "stored_size": [h, w], "seconds": {k: round(v, 3) for k, v in totals.items()},
            "fraction": {k: round(v / total, 3) for k, v in totals.items()},
            "videos_per_s": round(len(paths) / total, 2), "frames_per_s": round(frames / total, 1)}


def end_to_end(raw: Path, out: Path, videos: int, extra: list, args, env) -> dict:
    start = time.perf_counter()
    python_m("prep.prep_shards", "--dataset", "synth", "--root", raw, "--out", out, "--split", "train",
             "--codec", args.codec, "--workers", args.workers, *extra, env=env)
    wall = time.perf_counter() - start
    return {"videos": videos, "seconds": round(wall, 2), "videos_per_s": round(videos / wall, 2),
            "workers": args.workers, "models": bool(extra)}


def run(work: Path, args) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "yolo-config")}
    os.environ.update(env)  # before ultralytics is imported: no settings writes outside work, no network
    yolo, scene = build_models(work, args)
    synth = make_synth(work / "synth", args.videos, args.frames, 128, args.workers)
    trans = make_synth(work / "transcoded", args.transcoded, args.transcoded_frames, 240, args.workers)
    for path in trans:
        transcode(path, 320, 240, 30)
    models = ["--detector", yolo, "--scene-model", scene, "--scene-arch", args.scene_arch,
              "--scene-frames", args.scene_frames, "--det-stride", args.det_stride,
              "--device", args.device]
    return {
        "config": vars(args),
        "machine": f"{os.cpu_count()}-core CPU" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ", no GPU"),
        "stages": {"synthetic": time_stages(synth, yolo, scene, work / "stages-synth", args),
                   "transcoded": time_stages(trans, yolo, scene, work / "stages-trans", args)},
        "end_to_end": {"synthetic (truth)": end_to_end(work / "synth", work / "e2e-synth", len(synth), [], args, env),
                       "transcoded (models)": end_to_end(work / "transcoded", work / "e2e-trans", len(trans), models,
                                                         args, env)},
    }


def print_tables(result: dict) -> None:
    c = result["config"]
    print(f"machine: {result['machine']}; detector yolov8n (random) at 320, stride {c['det_stride']}; scene "
          f"{c['scene_arch']} (random) over {c['scene_frames']} frames; codec {c['codec']}; device {c['device']}")
    print(f"{'set (one process, stage by stage)':34s} {'videos':>6s} {'frames':>6s} {'videos/s':>8s} "
          + " ".join(f"{s:>13s}" for s in STAGES))
    for name, r in result["stages"].items():
        size = f"{name} {r['source_size'][0]}x{r['source_size'][1]}"
        print(f"{size:34s} {r['videos']:6d} {r['frames']:6d} {r['videos_per_s']:8.2f} "
              + " ".join(f"{r['seconds'][s]:6.2f}s {r['fraction'][s]:5.0%}" for s in STAGES))
    print(f"\n{'prep-shards end to end':34s} {'videos':>6s} {'workers':>7s} {'seconds':>8s} {'videos/s':>8s}")
    for name, r in result["end_to_end"].items():
        print(f"{name:34s} {r['videos']:6d} {r['workers']:7d} {r['seconds']:8.2f} {r['videos_per_s']:8.2f}")


@dataclass
class PrepBenchConfig:
    videos: PositiveInt = 12                 # synthetic videos (128 x 128)
    frames: PositiveInt = 32                 # frames per synthetic video
    transcoded: PositiveInt = 3              # transcoded videos (320 x 240, 30 fps)
    transcoded_frames: PositiveInt = 90      # frames per transcoded video
    scene_arch: str = "resnet50"             # timm architecture of the scene model (random weights)
    scene_frames: PositiveInt = 8            # frames per video averaged for the scene label
    det_stride: PositiveInt = 1              # detect every k-th frame, carrying boxes to the frames between
    codec: Literal["vp9", "h264", "mjpeg"] = "vp9"  # the shards' video codec
    workers: PositiveInt = 2                 # prep-shards decode/encode processes (end to end)
    device: Literal["cpu", "cuda"] = field(default_factory=visible_device)  # cuda when one is visible
    quick: bool = False                      # tiny sizes, for the smoke test
    json: str = ""                           # write everything measured here


@entry_point("benchmarks/prep.py")
def main(argv=None):
    args = parse_config(PrepBenchConfig, argv, "benchmarks/prep.py", __doc__.splitlines()[0])
    if args.quick:
        args.videos, args.frames, args.transcoded, args.transcoded_frames = 2, 8, 1, 8
        args.scene_arch, args.scene_frames = "resnet18", 2
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp), args)
    report(result, print_tables, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
