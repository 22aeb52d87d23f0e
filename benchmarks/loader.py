"""Loader throughput against the peers, on the same videos and the same clips, in one run.

    python benchmarks/loader.py --work /tmp/loader-bench       # CPU, ~2 minutes on 2 cores (~1 reusing --work)
    python benchmarks/loader.py --video-frames 300 --work /tmp/loader-300   # Kinetics-length videos
    python benchmarks/loader.py --quick --json out.json        # the smoke test's size
    python benchmarks/loader.py --device cuda --json gpu.json  # GPU: also dali-gpu (VP9, MJPEG, H.264), parity

Makes a synthetic raw set (prep-synth: H.264 .mp4 at 128 x 128, 32 frames, like a Kinetics
download at short side 128) unless --raw is given, then from the same videos:
  - our shards, VP9, MJPEG and H.264 (timed on the GPU only: DALI's CPU decoders lack it), with prep-shards;
  - JPEG frame folders at short side 128 (image_00001.jpg ...), the official SDN code's storage.
Every loader then reads --batches batches of --batch clips (16 frames, 112 crop, masking on),
cut by shards/loader/sampling.py's clip_params from the same (seed, epoch), with --workers processes
or DALI threads:
  ours      dali (CPU decoders, or NVDEC with CUDA) and the torch reference (PyAV in workers);
            for the profile also the DALI stage alone (no post-processing)
  official  the vt-vl-lab/SDN data path rebuilt: JPEG folders, PIL per frame, mean masking with
            numpy + PIL per frame, crop/flip/ToTensor/Normalize per frame, and a second
            DataLoader for the masked clips (each of the two gets half the workers)
  pyav      the source .mp4 decoded per sample with PyAV (as PySlowFast and MMAction2 read raw
            videos), masked in numpy, one decode for clip and masked copy
and the decode-only bound: each decoder alone on the same clips, same threads, from memory.
Reports clips/s (one clip = the clip and its masked copy, normalised), CPU-seconds per clip
(this process and its workers), bytes on disk per video, and the ratios. Then the cost by window
position: the same loaders (and decoders alone) reading only the first, only the middle or only
the last 16-frame window of every video (eval windows: centre crop, no flip), ms per clip. With
--video-frames other than --short-frames (32), also our DALI loader (VP9, batch 4, train mode) on
videos of --short-frames frames of the same content (the generator's first frames), alternated
with the long ones: what a clip costs as videos get longer. With CUDA it first checks that DALI's
mixed (NVDEC) decoding and the GPU masking agree with the CPU path, on first, middle and last
windows.
"""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Literal

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)  # benchmarks/prep.py would shadow the prep package

import av
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import report  # noqa: E402
from train.distributed import visible_device  # noqa: E402
from shards.cli import NonNegativeInt, PositiveInt, entry_point, integer, parse_config
from shards.loader import LoaderConfig, build_loader, describe
from shards.loader.masking import CLIP_MEAN, CLIP_STD, box_rects
from shards.loader.sampling import SplitIndex, epoch_batches
from shards.video import decode_frames

ONE_LEVEL = 1 / 255 / min(CLIP_STD)
SEED = 0


# ---------------------------------------------------------------------------------------------
# data: raw videos, shards per codec, JPEG frame folders

def python_m(module: str, *args) -> None:
    subprocess.run([sys.executable, "-m", module, *map(str, args)], check=True, capture_output=True, cwd=ROOT)


def make_raw(raw: Path, videos: int, frames: int, workers: int) -> None:
    python_m("prep.synth", "--out", raw, "--train", videos, "--val", 0, "--test", 0, "--novel-train", 0,
             "--novel-test", 0, "--size", 128, "--frames", frames, "--difficulty", "medium", "--workers", workers)


def make_shards(raw: Path, out: Path, codec: str, workers: int) -> Path:
    if not (out / "manifest.json").is_file():
        python_m("prep.prep_shards", "--dataset", "synth", "--root", raw, "--out", out, "--split", "train",
                 "--codec", codec, "--workers", str(workers))
    return out


def write_jpeg_folder(source: Path, folder: Path, frames: int, quality: int) -> None:
    from prep.decode import decode_source

    pixels = decode_source(source, 128).frames
    assert len(pixels) == frames, (source, len(pixels), frames)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(pixels):
        Image.fromarray(frame).save(folder / f"image_{t + 1:05d}.jpg", quality=quality)


def make_jpeg_folders(index: SplitIndex, raw: Path, out: Path, quality: int, workers: int) -> Path:
    """One folder per video, image_00001.jpg ..., short side 128, as the official code's
    ffmpeg extraction (utils/video_jpg_kinetics.py) leaves them."""
    if not (out / "done").is_file():
        jobs = [(raw / m["source"], out / key, int(n), quality) for key, m, n in zip(index.keys, index.meta, index.frames)]
        with get_context("spawn").Pool(workers) as pool:
            pool.starmap(write_jpeg_folder, jobs, chunksize=4)
        (out / "done").write_text("")
    return out


def disk_bytes(paths: list[Path]) -> dict:
    """Bytes of files (apparent size) and as allocated on this filesystem (blocks)."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file() and f.name != "done"]
    stats = [f.stat() for f in files]
    return {"bytes": sum(s.st_size for s in stats), "allocated": sum(s.st_blocks * 512 for s in stats),
            "files": len(files)}


# ---------------------------------------------------------------------------------------------
# measuring

def cpu_seconds() -> float:
    """CPU time of this process, its finished children and its live ones (DataLoader workers:
    getrusage counts children only once they have exited)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    try:
        import psutil
    except ImportError:  # some GPU images lack it: live workers are then not counted
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(name: str, batches, n: int, device: str, **info) -> dict:
    """Time n batches of a generator of clip counts, after one warm-up batch."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    it = iter(batches)
    next(it)  # workers started, pipeline built, queues filled
    sync()
    clips, cpu0, start = 0, cpu_seconds(), time.perf_counter()
    for _ in range(n):
        clips += next(it)
    sync()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    it.close()  # stops DataLoader workers / DALI pipelines before the next run
    return {"name": name, **info, "clips": clips, "seconds": round(wall, 3), "clips_per_s": round(clips / wall, 1),
            "cpu_s_per_clip": round(cpu / clips, 4)}


def clip_plan(n_videos: int, batch: int, count: int) -> list[list[tuple[int, int, int]]]:
    """The first `count` training batches as (epoch, sample, clip) triples, as ClipLoader deals them."""
    out, epoch = [], 0
    while len(out) < count:
        out += [[(epoch, int(s), 0) for s in b] for b in epoch_batches(n_videos, batch, seed=SEED, epoch=epoch, rank=0,
                                                                           world_size=1)]
        epoch += 1
    return out[:count]


POSITIONS = ("first", "middle", "last")  # eval windows 0, 1, 2 of clips=3: start 0, the centre, the end


def position_plan(n_videos: int, batch: int, count: int, position: str) -> list[list[tuple[int, int, int]]]:
    """`count` batches of one window position, videos in a fixed shuffled order (epoch 0, clip k of 3)."""
    k = POSITIONS.index(position)
    order = np.resize(np.random.default_rng(SEED).permutation(n_videos), batch * count)
    return [[(0, int(s), k) for s in order[i:i + batch]] for i in range(0, len(order), batch)]


# ---------------------------------------------------------------------------------------------
# our loaders

def ours(shards: Path, backend: str, device: str, args, post: bool = True, batch: int = 0):
    """Our loader; post=False stops after the decoder stage (the DALI graph, which also flips and
    normalises, or PyAV workers and torch's normalise), before the box rectangles and the masked
    copy in torch: the split used by the profile."""
    loader = build_loader(shards, "train", backend=backend, batch_size=batch or args.batch, frames=args.frames,
                          size=args.size, device=device, num_threads=args.workers, seed=SEED)
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        if post:
            for batch in loader:
                yield batch["clip"].shape[0]
        else:
            for clip, _ in loader.decoder.run(loader.index, loader.cfg, epoch, loader.batches()):
                yield clip.shape[0]
        epoch += 1


def ours_at(shards: Path, backend: str, device: str, args, plan):
    """Our loader on one window position (eval clips: 3 per video, only those of `plan`)."""
    loader = build_loader(shards, "train", backend=backend, batch_size=args.batch, frames=args.frames, size=args.size,
                          device=device, num_threads=args.workers, seed=SEED, train=False, clips=len(POSITIONS))
    for batch in loader.run([[(s, k) for _, s, k in b] for b in plan]):
        yield batch["clip"].shape[0]


# ---------------------------------------------------------------------------------------------
# peers

def normalise(clip: torch.Tensor, flip: bool) -> torch.Tensor:
    """uint8/float (T, H, W, 3) in [0, 255] -> float (3, T, H, W), flipped, Kinetics mean/std."""
    x = clip.float().div_(255)
    if flip:
        x = x.flip(2)
    x = (x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    return x.permute(3, 0, 1, 2).contiguous()


class PeerClips(Dataset):
    """Items are (epoch, sample, clip); every peer cuts the clip our loaders cut (shards.loader.describe)."""

    def __init__(self, index: SplitIndex, cfg: LoaderConfig):
        self.index, self.cfg = index, cfg

    def clip(self, item):
        epoch, sample, clip = item
        d = describe(self.index, self.cfg, epoch, sample, clip)
        return sample, d["params"], d["rects"]


class OfficialClips(PeerClips):
    """vt-vl-lab/SDN datasets/kinetics.py: PIL frames from a JPEG folder; for the masked copy
    (Kinetics_human_msk) every box filled with the frame's mean (np.mean over the PIL image,
    drawn with ImageDraw); then the spatial transform per frame (crop, flip, ToTensor,
    Normalize) and torch.stack. `returns` is "clip", "masked" or "both" (one decode for both)."""

    def __init__(self, index, cfg, folders: Path, returns: str):
        super().__init__(index, cfg)
        self.folders, self.returns = folders, returns
        from torchvision.transforms import functional
        self.tf = functional

    def __getitem__(self, item):
        sample, p, _ = self.clip(item)
        folder = self.folders / self.index.keys[sample]
        frames = []
        for t in p.frames:
            with open(folder / f"image_{t + 1:05d}.jpg", "rb") as f, Image.open(f) as img:
                frames.append(img.convert("RGB"))
        label = int(self.index.labels[sample])
        if self.returns == "clip":
            return self.transform(frames, p), label
        masked = self.transform(self.maskout(frames, sample, p), p)
        return (self.transform(frames, p), masked, label) if self.returns == "both" else (masked, label)

    def maskout(self, frames, sample, p):
        meta = self.index.meta[sample]
        full = box_rects(self.index.boxes[sample], p.frames, meta["height"], meta["width"], 0, 0,
                         max(meta["height"], meta["width"]), threshold=self.cfg.mask_threshold)
        out = []
        for img, rects in zip(frames, full):
            pixel_mean = tuple(np.round(np.mean(img, axis=(0, 1))).astype(np.int32).tolist())
            img = img.copy()
            for r0, r1, c0, c1 in rects:
                if r1 > r0:
                    ImageDraw.Draw(img).rectangle([c0, r0, c1 - 1, r1 - 1], fill=pixel_mean)
            out.append(img)
        return out

    def transform(self, frames, p):
        size, out = self.cfg.size, []
        for img in frames:
            img = img.crop((p.x0, p.y0, p.x0 + size, p.y0 + size))
            if p.flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out.append(self.tf.normalize(self.tf.to_tensor(img), CLIP_MEAN, CLIP_STD))
        return torch.stack(out, 0).permute(1, 0, 2, 3)


class PyAVClips(PeerClips):
    """The source video decoded per sample with PyAV, the frames needed converted by FFmpeg
    (frame.to_ndarray(format='rgb24')), as PySlowFast / MMAction2 read raw videos; the crop
    masked in numpy with each frame's mean; clip and masked copy from one decode."""

    def __init__(self, index, cfg, raw: Path):
        super().__init__(index, cfg)
        self.raw = raw

    def __getitem__(self, item):
        sample, p, rects = self.clip(item)
        frames = pyav_frames(self.raw / self.index.meta[sample]["source"], p.frames)
        means = frames.reshape(len(frames), -1, 3).mean(axis=1)
        size = self.cfg.size
        crop = frames[:, p.y0:p.y0 + size, p.x0:p.x0 + size]
        masked = crop.astype(np.float32)
        for t, frame_rects in enumerate(rects):
            for r0, r1, c0, c1 in frame_rects:
                masked[t, r0:r1, c0:c1] = means[t]
        return (normalise(torch.from_numpy(np.ascontiguousarray(crop)), p.flip),
                normalise(torch.from_numpy(masked), p.flip), int(self.index.labels[sample]))


def pyav_frames(path: Path, indices) -> np.ndarray:
    """Decode from the start up to the last frame needed, FFmpeg's RGB conversion of the kept ones."""
    wanted, kept = set(int(i) for i in indices), {}
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in wanted:
                kept[n] = frame.to_ndarray(format="rgb24")
            if n >= max(wanted):
                break
    return np.stack([kept[int(i)] for i in indices])


def official(index, cfg, folders, plan, args, device, one_pass=False):
    """Two DataLoaders, clips and masked clips, zipped (one_pass: one loader, one decode for both)."""
    if one_pass:
        loaders = [DataLoader(OfficialClips(index, cfg, folders, "both"), batch_sampler=plan,
                              num_workers=args.workers)]
    else:
        each = max(1, args.workers // 2)
        loaders = [DataLoader(OfficialClips(index, cfg, folders, r), batch_sampler=plan, num_workers=each)
                   for r in ("clip", "masked")]
    for parts in zip(*loaders):
        tensors = [t for part in parts for t in part[:-1]]
        if device == "cuda":
            tensors = [t.to(device, non_blocking=True) for t in tensors]
        yield tensors[0].shape[0]


def pyav_peer(index, cfg, raw, plan, args, device):
    for clip, masked, _ in DataLoader(PyAVClips(index, cfg, raw), batch_sampler=plan, num_workers=args.workers):
        if device == "cuda":
            clip, masked = clip.to(device, non_blocking=True), masked.to(device, non_blocking=True)
        yield clip.shape[0]


# ---------------------------------------------------------------------------------------------
# decode-only bounds: the decoder alone on the same clips, same parallelism, bytes from memory

class DecodeOnly(PeerClips):
    def __init__(self, index, cfg, kind: str, where: Path | None):
        super().__init__(index, cfg)
        self.kind, self.where = kind, where

    def __getitem__(self, item):
        sample, p, _ = self.clip(item)
        if self.kind == "pil-jpeg":
            folder = self.where / self.index.keys[sample]
            for t in p.frames:
                with Image.open(folder / f"image_{t + 1:05d}.jpg") as img:
                    img.convert("RGB")
        elif self.kind == "pyav-source":
            pyav_frames(self.where / self.index.meta[sample]["source"], p.frames)
        else:  # the torch backend's decoder: PyAV over the clip's segments, our YUV -> RGB
            decode_frames(*self.index.clip_stream(sample, p.frames))
        return 0


def decode_only_workers(index, cfg, kind, where, plan, args):
    for out in DataLoader(DecodeOnly(index, cfg, kind, where), batch_sampler=plan, num_workers=args.workers,
                          collate_fn=len):
        yield out


def decode_only_dali(index, cfg, plan, args, device):
    """fn.decoders.video alone (the op our DALI pipeline decodes with), fed from memory."""
    from nvidia.dali import fn, pipeline_def, types

    videos, frames = [], []
    for batch in plan:
        clips = [PeerClips(index, cfg).clip(item) for item in batch]
        streams = [index.clip_stream(s, p.frames) for s, p, _ in clips]
        videos.append([np.frombuffer(stream, np.uint8) for stream, _ in streams])
        frames.append([within.astype(np.int32) for _, within in streams])

    def source(info):
        if info.iteration >= len(plan):
            raise StopIteration
        return videos[info.iteration], frames[info.iteration]

    gpu = device == "cuda"

    @pipeline_def(batch_size=args.batch, num_threads=args.workers, prefetch_queue_depth=2,
                  device_id=0 if gpu else None, exec_dynamic=True)
    def pipe():
        video, want = fn.external_source(source=source, num_outputs=2, batch=True, batch_info=True,
                                         dtype=[types.UINT8, types.INT32])
        return fn.decoders.video(video, device="mixed" if gpu else "cpu", frames=want)

    p = pipe()
    p.build()
    for _ in plan:
        (out,) = p.run()
        yield len(out)


# ---------------------------------------------------------------------------------------------
# GPU correctness

def check_gpu(shards: Path, args) -> dict:
    """DALI mixed decoding + GPU masking vs the CPU path, on the same eval clips: the first, middle
    and last window of every video, so that streams cut from segments mid-video are decoded too."""
    kw = dict(batch_size=args.batch, frames=args.frames, size=args.size, train=False, clips=len(POSITIONS),
              num_threads=args.workers)
    worst = {"clip": 0.0, "masked": 0.0}
    for a, b in zip(build_loader(shards, "train", backend="dali", device="cuda", **kw),
                    build_loader(shards, "train", backend="dali", device="cpu", **kw)):
        assert a["clip"].is_cuda and a["masked"].is_cuda
        for name in worst:
            worst[name] = max(worst[name], (a[name].cpu() - b[name]).abs().max().item() / ONE_LEVEL)
    return {"max_diff_levels": {k: round(v, 2) for k, v in worst.items()}, "ok": max(worst.values()) <= 2.0}


# ---------------------------------------------------------------------------------------------

def machine() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{os.cpu_count()}-core {platform.machine()} ({platform.processor() or 'cpu'}){gpu}"


def run(args) -> dict:
    work = Path(args.work)
    raw = Path(args.raw) if args.raw else work / "raw"
    if not args.raw and not (raw / "annotations").is_dir():
        make_raw(raw, args.videos, args.video_frames, args.workers)
    codecs = ["vp9", "mjpeg", "h264"]  # H.264 is timed on the GPU only (DALI's CPU decoders lack it); sized always
    shards = {c: make_shards(raw, work / f"shards-{c}", c, args.workers) for c in codecs}
    index = SplitIndex(shards["vp9"], "train")
    jpeg = make_jpeg_folders(index, raw, work / "jpeg", args.jpeg_quality, args.workers)
    cfg = LoaderConfig(args.batch, args.frames, args.size, seed=SEED)
    plan = clip_plan(len(index), args.batch, args.batches + 1)
    videos = len(index)
    sources = [raw / m["source"] for m in index.meta]
    size = {f"shards-{c}": disk_bytes(sorted(d.glob("train-*"))) for c, d in shards.items()}
    size |= {"jpeg-folders": disk_bytes([jpeg]), "source-mp4": disk_bytes(sources)}
    size = {k: {**v, "per_video": round(v["bytes"] / videos)} for k, v in size.items()}
    result = {"machine": machine(), "load_average": os.getloadavg(), "config": vars(args), "videos": videos,
              "bytes": size, "gpu_check": None, "loaders": [], "decode_only": [], "positions": [], "length": None}
    dev, n, w = args.device, args.batches, args.workers
    loaders, bounds = result["loaders"], result["decode_only"]
    eval_cfg = LoaderConfig(args.batch, args.frames, args.size, train=False, clips=len(POSITIONS), seed=SEED)
    at = {pos: position_plan(videos, args.batch, n + 1, pos) for pos in POSITIONS}

    def by_position(name, run_at, device=dev):
        """One loader on each window position in turn: ms and CPU ms per clip."""
        row = {"name": name}
        for pos in POSITIONS:
            m = measure(name, run_at(at[pos]), n, device)
            row[pos] = {"ms_per_clip": round(1000 / m["clips_per_s"], 2), "cpu_ms_per_clip": round(1000 * m["cpu_s_per_clip"], 2)}
        row["last_over_first"] = round(row["last"]["ms_per_clip"] / row["first"]["ms_per_clip"], 2)
        result["positions"].append(row)

    # DataLoader-based runs first, DALI ones after (no fork after DALI threads exist)
    loaders.append(measure("official: JPEG+PIL, 2 DataLoaders", official(index, cfg, jpeg, plan, args, dev), n, dev,
                           storage="jpeg-folders", bound="pil-jpeg", workers=f"{max(1, w // 2)}+{max(1, w // 2)}"))
    loaders.append(measure("official, one decode", official(index, cfg, jpeg, plan, args, dev, one_pass=True), n, dev,
                           storage="jpeg-folders", bound="pil-jpeg", workers=w))
    loaders.append(measure("pyav: source mp4 per sample", pyav_peer(index, cfg, raw, plan, args, dev), n, dev,
                           storage="source-mp4", bound="pyav-source", workers=w))
    for codec in ("vp9", "mjpeg"):
        loaders.append(measure(f"ours: torch {codec}", ours(shards[codec], "torch", dev, args), n, dev,
                               storage=f"shards-{codec}", bound=f"pyav-{codec}", workers=w))
    bounds.append(measure("pil-jpeg", decode_only_workers(index, cfg, "pil-jpeg", jpeg, plan, args), n, dev))
    bounds.append(measure("pyav-source", decode_only_workers(index, cfg, "pyav-source", raw, plan, args), n, dev))
    for codec in ("vp9", "mjpeg"):
        idx = SplitIndex(shards[codec], "train")
        bounds.append(measure(f"pyav-{codec}", decode_only_workers(idx, cfg, "shard", None, plan, args), n, dev))
    by_position("official: JPEG+PIL, 2 DataLoaders", lambda pl: official(index, eval_cfg, jpeg, pl, args, dev))
    by_position("ours: torch vp9", lambda pl: ours_at(shards["vp9"], "torch", dev, args, pl))
    by_position("decode only: pil-jpeg", lambda pl: decode_only_workers(index, eval_cfg, "pil-jpeg", jpeg, pl, args))
    by_position("decode only: pyav-vp9", lambda pl: decode_only_workers(index, eval_cfg, "shard", None, pl, args))
    if dev == "cuda":
        result["gpu_check"] = check_gpu(shards["vp9"], args)
    for codec in codecs:
        for d in ["cpu", "cuda"] if dev == "cuda" else ["cpu"]:
            if codec == "h264" and d == "cpu":
                continue  # DALI decodes H.264 on the GPU only
            tag = f"dali-{'gpu' if d == 'cuda' else 'cpu'}-{codec}"
            name, kw = f"ours: {tag.removesuffix('-' + codec)} {codec}", dict(storage=f"shards-{codec}", bound=tag, workers=w)
            try:
                idx = SplitIndex(shards[codec], "train")
                bounds.append(measure(tag, decode_only_dali(idx, cfg, plan, args, d), n, d))
                loaders.append(measure(name, ours(shards[codec], "dali", d, args), n, d, **kw))
                if codec == "vp9":
                    loaders.append(measure(f"{name}, decoder stage only", ours(shards[codec], "dali", d, args, post=False),
                                           n, d, **kw))
            except Exception as err:
                if d == "cpu":
                    raise
                # a GPU decoder may lack a codec (NVDEC and MJPEG): report it, go on with the others
                loaders.append({"name": name, "error": f"{type(err).__name__}: {err}"[:300], **kw})
    for codec in ("vp9", "mjpeg"):
        idx = SplitIndex(shards[codec], "train")
        by_position(f"ours: dali-cpu {codec}", lambda pl: ours_at(shards[codec], "dali", "cpu", args, pl), "cpu")
        by_position(f"decode only: dali-cpu-{codec}", lambda pl: decode_only_dali(idx, eval_cfg, pl, args, "cpu"), "cpu")
    if dev == "cuda":
        for codec in ("vp9", "h264"):
            idx = SplitIndex(shards[codec], "train")
            by_position(f"ours: dali-gpu {codec}", lambda pl: ours_at(shards[codec], "dali", "cuda", args, pl), "cuda")
            by_position(f"decode only: dali-gpu-{codec}", lambda pl: decode_only_dali(idx, eval_cfg, pl, args, "cuda"),
                        "cuda")
    if args.video_frames != args.short_frames:
        result["length"] = compare_lengths(work, shards["vp9"], args)
    by_bound = {b["name"]: b for b in bounds}
    base = next(r for r in loaders if r["name"].startswith("official: "))["clips_per_s"]
    for r in (r for r in loaders if "error" not in r):
        r["bytes_per_video"] = size[r["storage"]]["per_video"]
        r["vs_official"] = round(r["clips_per_s"] / base, 2)
        r["decode_bound_clips_per_s"] = by_bound[r["bound"]]["clips_per_s"]
        r["bound_over_loader"] = round(r["decode_bound_clips_per_s"] / r["clips_per_s"], 2)
    full = [r for r in loaders if r["name"].startswith("ours: dali") and "error" not in r
            and "stage only" not in r["name"]]
    best = max(full, key=lambda r: r["clips_per_s"])
    result["summary"] = {"best": best["name"], "vs_official": best["vs_official"],
                         "bound_over_loader": best["bound_over_loader"],
                         "bytes_vs_official": round(best["bytes_per_video"] / size["jpeg-folders"]["per_video"], 3),
                         "targets_met": best["vs_official"] >= 2 and best["bound_over_loader"] <= 1.5}
    return result


def compare_lengths(work: Path, long_shards: Path, args) -> dict:
    """Our DALI loader (CPU, VP9, batch 4, train mode) on the long videos and on their first
    --short-frames frames (the generator draws the same frames), alternated twice: per-clip cost."""
    raw = work / f"raw-{args.short_frames}"
    if not (raw / "annotations").is_dir():
        make_raw(raw, args.videos, args.short_frames, args.workers)
    short_shards = make_shards(raw, work / f"shards-vp9-{args.short_frames}", "vp9", args.workers)
    n = max(2, args.batches * args.batch // 4)
    runs = {"long": [], "short": []}
    for _ in range(2):
        for name, shards in (("long", long_shards), ("short", short_shards)):
            runs[name].append(measure(name, ours(shards, "dali", "cpu", args, batch=4), n, "cpu"))
    out = {"frames": {"long": args.video_frames, "short": args.short_frames}, "batch": 4}
    for name, ms in runs.items():
        clips, seconds = sum(m["clips"] for m in ms), sum(m["seconds"] for m in ms)
        out[name] = {"ms_per_clip": round(1000 * seconds / clips, 2),
                     "cpu_ms_per_clip": round(1000 * sum(m["cpu_s_per_clip"] for m in ms) / len(ms), 2)}
    out["long_over_short"] = round(out["long"]["ms_per_clip"] / out["short"]["ms_per_clip"], 2)
    return out


def print_tables(result: dict) -> None:
    c = result["config"]
    print(f"machine: {result['machine']}, load average {result['load_average'][0]:.1f} before; {result['videos']} "
          f"videos, batches of {c['batch']}, {c['frames']} x {c['size']} x {c['size']} clips + masked copies, "
          f"{c['workers']} workers / DALI threads, {c['torch_threads']} torch threads")
    print(f"{'loader':44s} {'clips/s':>8s} {'CPU s/clip':>10s} {'KiB/video':>9s} {'vs official':>11s} "
          f"{'bound clips/s':>13s} {'bound/loader':>12s}")
    for r in result["loaders"]:
        if "error" in r:
            print(f"{r['name']:44s} failed: {r['error']}")
            continue
        print(f"{r['name']:44s} {r['clips_per_s']:8.1f} {r['cpu_s_per_clip']:10.4f} {r['bytes_per_video'] / 1024:9.1f} "
              f"{r['vs_official']:10.2f}x {r['decode_bound_clips_per_s']:13.1f} {r['bound_over_loader']:11.2f}x")
    print(f"\n{'decode only':44s} {'clips/s':>8s} {'CPU s/clip':>10s}")
    for r in result["decode_only"]:
        print(f"{r['name']:44s} {r['clips_per_s']:8.1f} {r['cpu_s_per_clip']:10.4f}")
    print(f"\n{'storage':44s} {'KiB/video':>9s} {'allocated':>9s} {'files':>6s}")
    for name, s in result["bytes"].items():
        print(f"{name:44s} {s['per_video'] / 1024:9.1f} {s['allocated'] / 1024 / result['videos']:9.1f} {s['files']:6d}")
    print(f"\n{'by window position (ms per clip, CPU ms per clip)':44s} {'first':>12s} {'middle':>12s} {'last':>12s} "
          f"{'last/first':>10s}")
    for r in result["positions"]:
        cells = " ".join(f"{r[p]['ms_per_clip']:5.2f} ({r[p]['cpu_ms_per_clip']:5.2f})" for p in POSITIONS)
        print(f"{r['name']:44s} {cells} {r['last_over_first']:9.2f}x")
    if result["length"]:
        g = result["length"]
        print(f"\nours: dali-cpu vp9, batch 4, train mode: {g['frames']['long']}-frame videos {g['long']['ms_per_clip']:.2f} ms "
              f"per clip, {g['frames']['short']}-frame videos {g['short']['ms_per_clip']:.2f} ms: "
              f"{g['long_over_short']:.2f}x (target <= 1.3x)")
    s = result["summary"]
    print(f"\nbest: {s['best']}: {s['vs_official']:.2f}x the official data path at "
          f"{s['bytes_vs_official']:.0%} of its bytes; decode-only bound / loader {s['bound_over_loader']:.2f}x "
          f"(targets >= 2x, <= 1.5x: {'met' if s['targets_met'] else 'MISSED'})")
    if result["gpu_check"]:
        print(f"GPU check: {result['gpu_check']}")


@dataclass
class LoaderBenchConfig:
    raw: str = ""                            # a prep-synth raw folder to use ('': make one in --work)
    work: str = ""                           # folder for the raw set, shards, JPEG folders; reused ('': a temporary one)
    device: Literal["cpu", "cuda"] = field(default_factory=visible_device)  # cuda when one is visible
    videos: PositiveInt = 160                # synthetic videos to make
    video_frames: NonNegativeInt = 0         # frames per synthetic video (0: 32, --quick 20)
    short_frames: PositiveInt = 32           # with --video-frames N above this: also time clips from videos of this length
    batch: PositiveInt = 8                   # clips per batch
    batches: PositiveInt = 16                # timed batches per loader (after one warm-up)
    frames: PositiveInt = 16                 # frames per clip
    size: Annotated[int, integer(1, 128)] = 112  # crop side (the synthetic videos are 128 x 128)
    workers: PositiveInt = 2                 # DataLoader workers / DALI threads, every loader
    torch_threads: NonNegativeInt = 0        # torch threads here, where our post-processing runs (0: torch's default)
    jpeg_quality: Annotated[int, integer(1, 95)] = 90  # of the JPEG frame folders (PIL)
    quick: bool = False                      # tiny sizes, for the smoke test
    json: str = ""                           # write everything measured here


@entry_point("benchmarks/loader.py")
def main(argv=None):
    args = parse_config(LoaderBenchConfig, argv, "benchmarks/loader.py", __doc__.splitlines()[0])
    if args.quick:
        args.videos, args.batch, args.batches = 6, 2, 2
        args.video_frames = args.video_frames or 20
        if args.short_frames >= args.video_frames:  # still compare two lengths, at the tiny size
            args.short_frames = args.video_frames // 2
    args.video_frames = args.video_frames or 32
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    args.torch_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or tmp
        result = run(args)
    report(result, print_tables, args.json)
    return 0 if not result["gpu_check"] or result["gpu_check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
