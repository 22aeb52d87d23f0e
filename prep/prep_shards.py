"""prep-shards: a raw video dataset -> shards that carry everything the trainer needs.

    prep-shards --dataset synth --root data/synth-raw --out data/synth-shards
    prep-shards --dataset kinetics-mini --root /data/kinetics --out /data/mk200 \\
        --detector yolo11m.pt --scene-model resnet50_places365.pth.tar \\
        --scene-categories categories_places365.txt --workers 16
    torchrun --nnodes 4 --nproc-per-node 1 --rdzv-endpoint HOST:29500 --no-python prep-shards ...

Stages (one file each): decode.py (decode, resample to --fps and --short-side), detector.py
(human boxes; masks.py draws them from a dataset's segmentation masks), scene_model.py (Places365 soft labels), shards.video (encode), shards.writer
(atomic shards). Decoding and encoding run in --workers processes; detection and scene
inference run batched in the main process, on the GPU when there is one, while the workers
decode ahead.

Work is cut into shards of --shard-size videos over the sorted videos present on disk
(resume.py), so shard boundaries are fixed by the input: the same inputs and flags give
byte-identical shards. Each finished shard leaves a record in OUT/.prep/ of what it was made
from; a run killed at any moment and started again with the same command skips the finished
shards whose inputs are unchanged and redoes the rest, including shards whose videos appeared,
changed or vanished since. Under torchrun (RANK / WORLD_SIZE set) rank r takes every shard whose
number (over all splits) is r modulo the world size, and rank 0 writes the merged manifest.json
once all ranks are done.

Listed videos absent on disk are *missing* (counted, listed in OUT/missing.txt, fatal only with
--strict-missing); present videos that cannot be used are *broken* (manifest.json "failed") and
videos that decode only in part are stored with a warning (manifest.json "warnings"); --strict
fails on either.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from tqdm import tqdm

from shards import ShardWriter, add_split, new_manifest, write_manifest
from shards.cli import (Fraction, NonNegativeInt, PositiveInt, config_problems, entry_point, integer, number,
                        parse_config, refuse)
from shards.format import MANIFEST, NUM_SCENES, Sample, ShardFormatError
from shards.video import GOP, encode_video, encoder_options

from .datasets import ADAPTERS, DatasetError, VideoItem, load_dataset, read_synth_truth, read_synth_world
from .decode import InputError, decode_source, frame_files
from .masks import HUMAN_ABOVE, MIN_REGION, boxes_from_masks
from .resume import MISSING, ShardJob, plan, read_record, survey, write_json, write_missing

SYNTH = ("synth", "synth-novel")
MASKED = ("hat",)  # datasets with human segmentation masks: --detector truth draws boxes from them
WORK = ".prep"  # per-shard records and the run's settings, for resume and the final merge
SHOWN = 50  # broken or partial inputs printed in the summary (all of them are in the manifest)


class PrepError(Exception):
    """A run that cannot start or finish as asked; the message is one line saying what to change."""


MIN_SHORT_SIDE = 16  # pixels: a smaller video holds no crop a model can use


@dataclass
class PrepConfig:
    dataset: Literal[tuple(ADAPTERS)]        # the dataset adapter (prep/datasets.py)
    root: str                                # the raw dataset folder
    out: str                                 # the shard folder to write
    splits: list[str] = field(default_factory=list, metadata={"flag": "split"})  # comma-separated; default: all
    detector: str = ""                       # 'truth' (synth; hat: from its masks), 'none', a YOLO file, or an ultralytics name (yolo11m.pt)
    scene_model: str = ""                    # 'truth' (synth), 'none', or a Places365 checkpoint (.pth.tar)
    scene_arch: str = "resnet50"             # timm architecture of the scene checkpoint
    scene_categories: str = ""               # categories_places365.txt, for the manifest's scene names
    scene_frames: Annotated[int, integer(1, 1000)] = 8  # frames per video averaged for the scene label
    det_conf: Fraction = 0.25                # detector score threshold for storing a box
    det_imgsz: Annotated[int, integer(32, 4096)] = 320  # detector input size
    det_stride: PositiveInt = 1              # detect every k-th frame, carrying boxes to the frames between
    det_classes: str = ""                    # people classes, ids or names (0,1 or Normal,Fall); default: 'person'
    trust_detector: bool = False             # unpickle --detector unchecked (a .pt can run code): files you trust
    codec: Literal["vp9", "h264", "mjpeg"] = "vp9"  # vp9: DALI decodes it on CPU and GPU; h264: GPU only
    gop: Annotated[int, integer(1, 1000)] = GOP  # frames per independently decodable segment
    short_side: Annotated[int, integer(0, 4096)] = 128  # scale down so the short side is this (never up; even; 0: keep)
    # at most 240: above that a 10-s clip becomes thousands of frames
    fps: Annotated[float, number(0, 240)] = 0.0  # resample (by timestamps) to this rate; 0: the source's
    shard_size: PositiveInt = 128            # videos per shard
    limit: NonNegativeInt = 0                # first N videos of each split (by key); 0 = all
    annotations: str = ""                    # annotation folder, when not the dataset's default place
    fold: Annotated[int, integer(1, 3)] = 1  # ucf101 / hmdb51 split
    workers: PositiveInt = max(1, (os.cpu_count() or 2) - 1)  # decode/encode processes
    device: str = ""                         # detector and scene model; "": cuda:LOCAL_RANK if there is a GPU
    strict: bool = False                     # exit 1 if an input is broken or decodes only in part
    strict_missing: bool = False             # exit 1 if a listed video is absent on disk

    def output_settings(self) -> dict:
        """The settings that change the shards' content (a resume must use the same)."""
        skip = {"out", "workers", "device", "strict", "strict_missing", "trust_detector"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


def prepare_video(path: str, cfg: dict, keep_frames: bool, masks: str | None = None) -> dict:
    """Worker: decode + resample + encode one video (and draw its boxes from `masks`, a folder of
    segmentation masks, with --detector truth); failures come back as a reason."""
    try:
        dec = decode_source(path, cfg["short_side"] or None, cfg["fps"] or None)
        data = encode_video(dec.frames, dec.fps, cfg["codec"], cfg["gop"])
        boxes, lost = None, ""
        if masks is not None and cfg["detector"] == "truth":
            numbers = [int(p.stem) for p in frame_files(Path(path))]
            boxes, lost = boxes_from_masks(Path(masks), [numbers[i] for i in dec.source_index])
    except (InputError, ShardFormatError) as err:
        return {"ok": False, "reason": str(err)}
    except Exception as err:  # one bad video must not stop a run over 80K videos
        return {"ok": False, "reason": f"{type(err).__name__}: {err}".replace("\n", " ")}
    t, h, w = dec.frames.shape[:3]
    return {"ok": True, "video": data, "fps": dec.fps, "frames": t, "height": h, "width": w,
            "source_fps": dec.source_fps, "source_frames": dec.source_frames, "source_index": dec.source_index,
            "rotation": dec.rotation, "warning": "; ".join(w for w in (dec.warning, lost) if w), "boxes": boxes,
            "pixels": dec.frames if keep_frames else None}


class Annotator:
    """Boxes and scene labels for decoded videos: ground truth, nothing, or models."""

    def __init__(self, cfg: PrepConfig):
        self.cfg, self.truth = cfg, {}
        device = cfg.device or None
        if device is None and {cfg.detector, cfg.scene_model} - {"truth", "none"}:
            import torch  # each local rank of torchrun takes its own GPU
            device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
        self.detector = self.labeler = None
        if cfg.detector not in ("truth", "none"):
            from .detector import DetectorError, PersonDetector
            try:
                self.detector = PersonDetector(cfg.detector, device=device, conf=cfg.det_conf, imgsz=cfg.det_imgsz,
                                               stride=cfg.det_stride, classes=cfg.det_classes,
                                               trust=cfg.trust_detector)
            except DetectorError as err:
                raise PrepError(f"--detector {cfg.detector}: {err}") from None
        if cfg.scene_model not in ("truth", "none"):
            from .scene_model import ModelFileError, SceneLabeler, load_places365
            try:
                model = load_places365(cfg.scene_model, arch=cfg.scene_arch, device=device or "cpu")
            except ModelFileError as err:
                raise PrepError(f"--scene-model {cfg.scene_model} --scene-arch {cfg.scene_arch}: {err}") from None
            self.labeler = SceneLabeler(model, device=device, frames=cfg.scene_frames)
        if cfg.dataset in SYNTH and "truth" in (cfg.detector, cfg.scene_model):
            self.truth = {s: read_synth_truth(cfg.root, s) for s in ("train", "val", "test", "novel_train", "novel_test")}
            self.scene_labels = read_synth_world(cfg.root)["scene_labels"]

    @property
    def det_classes(self) -> list[int]:
        """The detector class ids kept as people (empty without a detector): a setting of the shards."""
        return list(self.detector.classes) if self.detector is not None else []

    @property
    def needs_pixels(self) -> bool:
        return self.detector is not None or self.labeler is not None

    def boxes(self, item: VideoItem, done: dict) -> list:
        if self.detector is not None:
            return self.detector.detect(done["pixels"])
        if self.cfg.detector == "none":
            return [[] for _ in range(done["frames"])]
        if done["boxes"] is not None:  # drawn from the dataset's segmentation masks by the worker
            return done["boxes"]
        truth = self.truth[item.split][item.key]["boxes"]  # per source frame, follow the resampling
        return [[[*box, 1.0] for box in truth[i]] for i in done["source_index"]]

    def scene(self, item: VideoItem, done: dict) -> tuple[np.ndarray, list[int]]:
        """(the soft label, the frames' votes): a model's; none's uniform label without votes; the
        synthetic truth's label with one vote, its scene."""
        if self.labeler is not None:
            return self.labeler.labels(done["pixels"])
        if self.cfg.scene_model == "none":
            return np.full(NUM_SCENES, 1 / NUM_SCENES, np.float32), []
        label = np.asarray(self.scene_labels[self.truth[item.split][item.key]["scene"]], np.float32)
        return label, [int(label.argmax())]

    def provenance(self) -> dict:
        cfg = self.cfg
        boxes = self.detector.describe() if self.detector else {"source": cfg.detector}
        if cfg.dataset in MASKED and cfg.detector == "truth":
            boxes = {"source": "segmentation masks", "human_above": HUMAN_ABOVE, "min_region": MIN_REGION}
        scene = ({**self.labeler.describe(cfg.scene_model), "arch": cfg.scene_arch}
                 if self.labeler else {"source": cfg.scene_model})
        if cfg.scene_model == "none":
            scene["note"] = "uniform labels: the scene adversary and scene probes are meaningless"
        if cfg.scene_model == "truth":
            scene["note"] = "synthetic ground truth made soft by prep/synth/scenes.py scene_soft_label"
        return {"boxes": boxes, "scene": scene,
                "decode": {"short_side": cfg.short_side, "fps": cfg.fps or "source"},
                "encode": {"codec": cfg.codec, "options": encoder_options(cfg.codec, segmented=True), "gop": cfg.gop},
                "versions": {p: version(p) for p in ("scene-debias", "av", "numpy", "torch")}}


def scene_names(cfg: PrepConfig) -> list[str]:
    """The 365 names from --scene-categories (categories_places365.txt: "/a/airfield 0"), else
    those prep-synth wrote for its set, else "places365:<index>"."""
    path = cfg.scene_categories
    if path:
        names = [line.split()[0][3:] for line in Path(path).read_text().splitlines() if line.strip()]
        if len(names) != NUM_SCENES:
            raise DatasetError(f"{path} lists {len(names)} categories, not {NUM_SCENES}")
        return names
    if cfg.dataset in SYNTH:
        return read_synth_world(cfg.root)["scene_names"]
    return [f"places365:{i}" for i in range(NUM_SCENES)]


def ordered_map(pool, fn, calls, window: int):
    """Results of fn(*args) in input order, with at most `window` calls in flight (bounded memory)."""
    if pool is None:
        yield from (fn(*args) for args in calls)
        return
    pending = collections.deque()
    for args in calls:
        pending.append(pool.apply_async(fn, args))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def run_jobs(cfg: PrepConfig, jobs: list[ShardJob], annotator: Annotator, progress: bool, settings: dict) -> dict:
    """Make the given shards; returns counters for the summary. The settings are recorded with
    the first finished shard: a run that fails before it leaves nothing that refuses a corrected one."""
    out, work = Path(cfg.out), Path(cfg.out) / WORK
    stats = collections.Counter()
    calls = [(str(item.path), asdict(cfg), annotator.needs_pixels, item.masks and str(item.masks))
             for job in jobs for item in job.items]
    pool = get_context("spawn").Pool(cfg.workers) if cfg.workers > 1 else None
    bar = tqdm(total=len(calls), unit="video", desc="prep-shards", disable=not progress, smoothing=0.05)
    try:
        results = ordered_map(pool, prepare_video, calls, window=2 * cfg.workers)
        for job in jobs:
            failed, warnings = [], []
            with ShardWriter(out, job.name) as writer:
                for item in job.items:
                    done = next(results)
                    bar.update()
                    if not done["ok"]:
                        failed.append({"split": job.split, "key": item.key, "input": str(item.path),
                                       "reason": done["reason"]})
                        continue
                    meta = {"label_name": item.label_name, "split": job.split, "fps": done["fps"],
                            "frames": done["frames"], "width": done["width"], "height": done["height"],
                            "source": str(item.path.relative_to(cfg.root)) if item.path.is_relative_to(cfg.root) else str(item.path),
                            "source_id": item.source_id, "source_fps": done["source_fps"],
                            "source_frames": done["source_frames"]}
                    if done["rotation"]:
                        meta["source_rotation"] = done["rotation"]
                    if done["warning"]:
                        meta["warning"] = done["warning"]
                        warnings.append({"split": job.split, "key": item.key, "input": str(item.path),
                                         "warning": done["warning"]})
                    scene, votes = annotator.scene(item, done)
                    writer.write(Sample(item.key, done["video"], cfg.codec, annotator.boxes(item, done), scene,
                                        item.label, meta, scene_votes=votes))
                    stats["videos"] += 1
                    stats["seconds"] += done["frames"] / done["fps"]
            shard = writer.info() if len(writer) else None
            stats["bytes"] += shard["bytes"] if shard else 0
            stats["failed"] += len(failed)
            stats["warnings"] += len(warnings)
            bar.set_postfix(failed=stats["failed"])
            if not (work / "settings.json").is_file():
                work.mkdir(parents=True, exist_ok=True)
                write_json(work / "settings.json", settings)
            write_json(work / f"{job.name}.json", {"shard": shard, "failed": failed, "warnings": warnings,
                                                   "inputs": job.inputs})
    finally:
        bar.close()  # also on an error: its message then starts a line of its own
        if pool is not None:
            pool.terminate()
    return stats


def merge_manifest(cfg: PrepConfig, classes: list[str], splits: list[str], jobs: list[ShardJob],
                   missing: list[VideoItem], provenance: dict) -> dict:
    out, work = Path(cfg.out), Path(cfg.out) / WORK
    records = {j.name: read_record(work, j.name) for j in jobs}
    unfinished = [j.name for j in jobs if records[j.name] is None or records[j.name].get("inputs") != j.inputs]
    if unfinished:
        raise PrepError(f"{len(unfinished)} shard(s) not finished ({', '.join(unfinished[:3])} ...): "
                           "run the same command again")
    manifest = new_manifest(cfg.dataset, classes, scene_names(cfg), cfg.codec, provenance)
    manifest["warnings"] = []
    for split in splits:
        mine = [records[j.name] for j in jobs if j.split == split]
        add_split(manifest, split, [r["shard"] for r in mine if r["shard"]])
        manifest["failed"] += [f for r in mine for f in r["failed"]]
        manifest["warnings"] += [w for r in mine for w in r["warnings"]]
    out.mkdir(parents=True, exist_ok=True)
    write_missing(out, missing)
    manifest["missing"] = {"count": len(missing), "file": MISSING}
    write_manifest(out, manifest)
    return manifest


def remove_shards(out: Path, names: list[str]) -> None:
    """Delete shards and their records (the record last: a crash midway leaves it to try again)."""
    for name in names:
        for path in (out / f"{name}.tar", out / f"{name}.idx", out / WORK / f"{name}.json"):
            path.unlink(missing_ok=True)


def speed(videos: int, seconds: float) -> str:
    """'12.3 videos/s', or for slow runs (detector and scene model on a CPU) '4.2 s/video'."""
    if not videos:
        return "no video"
    rate = videos / max(seconds, 1e-9)
    return f"{rate:.1f} videos/s" if rate >= 1 else f"{seconds / videos:.1f} s/video"


def settled(cfg: PrepConfig) -> PrepConfig:
    """`cfg` with the dataset's default models filled in and its paths absolute; settings no run
    can start with are refused in one line (exit 2), before anything is read or written."""
    found = config_problems(cfg)
    synth = cfg.dataset in SYNTH
    models = {}
    for flag in ("detector", "scene_model"):
        value, name = getattr(cfg, flag), "--" + flag.replace("_", "-")
        truth = synth or (flag == "detector" and cfg.dataset in MASKED)
        if not value and not truth:
            found.append(f"{name} is required for {cfg.dataset} (a weights file, or 'none')")
        elif value == "truth" and not truth:
            found.append(f"{name} truth exists only for the synthetic set"
                         + (" and the boxes of segmentation masks (hat)" if flag == "detector" else ""))
        elif value not in ("", "truth", "none") and not Path(value).is_file() and not (
                flag == "detector" and official(value)):
            hint = " (nor an official ultralytics model name such as yolo11m.pt)" if flag == "detector" else ""
            found.append(f"{name} {value}: no such file{hint}")
        models[flag] = value or "truth"
    if cfg.det_classes and models["detector"] in ("truth", "none"):
        found.append(f"--det-classes needs a YOLO --detector, not {models['detector']!r}")
    if cfg.scene_categories and not Path(cfg.scene_categories).is_file():
        found.append(f"--scene-categories {cfg.scene_categories}: no such file")
    if 0 < cfg.short_side < MIN_SHORT_SIDE or cfg.short_side % 2:
        found.append(f"argument --short-side: must be even and at least {MIN_SHORT_SIDE} (or 0: keep the source "
                     f"size), not {cfg.short_side}")
    refuse("prep-shards", found)
    return replace(cfg, root=str(Path(cfg.root).resolve()), out=str(Path(cfg.out).resolve()), **models)


def official(name: str) -> bool:
    """An official ultralytics model name (e.g. yolo11m.pt): ultralytics downloads it by name."""
    if os.sep in name or "/" in name:
        return False
    from .detector import official_name  # imports ultralytics: only for a name that is no file
    return official_name(name)


def dataset_options(cfg: PrepConfig) -> dict:
    if cfg.dataset in ("ucf101", "hmdb51"):
        return {"fold": cfg.fold, **({"annotations": cfg.annotations} if cfg.annotations else {})}
    return {"annotations": cfg.annotations} if cfg.annotations and cfg.dataset not in SYNTH else {}


@entry_point("prep-shards")
def main(argv: list[str] | None = None) -> int:
    return run(parse_config(PrepConfig, argv, "prep-shards", __doc__.split("\n\n")[0]))


def run(cfg: PrepConfig) -> int:
    """prep-shards as `cfg` says; the exit code of the command line (0: done)."""
    try:
        return prep(cfg)
    except (DatasetError, PrepError) as err:
        print(f"prep-shards: error: {err}", file=sys.stderr)
        return 2


def prep(cfg: PrepConfig) -> int:
    cfg = settled(cfg)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    classes, items = load_dataset(cfg.dataset, cfg.root, **dataset_options(cfg))
    splits = cfg.splits or list(items)
    unknown = [s for s in splits if s not in items]
    if unknown:
        raise PrepError(f"split(s) {', '.join(unknown)} not in {cfg.dataset}; it has {', '.join(items)}")
    scene_names(cfg)  # a wrong categories file fails now, not after the run
    out, work = Path(cfg.out), Path(cfg.out) / WORK
    annotator = Annotator(cfg)  # loads the models: a bad one fails here, before anything is written
    with exclusive(out, rank):
        jobs, missing = plan(items, splits, cfg.shard_size, cfg.limit, cfg.root)
        settings = {**cfg.output_settings(), "splits": splits, "det_classes": annotator.det_classes}
        check_settings(work / "settings.json", settings, out)
        state = survey(out, work, jobs, splits)  # every rank, before any rank starts work
        if rank == 0 and (state.redo or state.stale):
            (out / MANIFEST).unlink(missing_ok=True)  # it lists shards about to change
            remove_shards(out, state.stale)
            print(f"prep-shards: {state.describe()}")
        if world > 1:
            import torch.distributed as dist
            dist.init_process_group("gloo")
        mine = [j for j in jobs if j.position % world == rank and j.name not in state.done]
        start = time.time()
        stats = run_jobs(cfg, mine, annotator, progress=rank == 0, settings=settings)
        per_rank = [stats]
        if world > 1:  # every rank's counters reach rank 0 for the summary; also the barrier
            per_rank = [None] * world
            dist.all_gather_object(per_rank, dict(stats))
            stats = sum((collections.Counter(s) for s in per_rank), collections.Counter())
        if rank != 0:
            return 0
        manifest = merge_manifest(cfg, classes, splits, jobs, missing, annotator.provenance())
        wall = time.time() - start
        print_summary(cfg, manifest, stats, len(state.done), len(state.redo), wall,
                      [s.get("videos", 0) for s in per_rank] if world > 1 else None)
        broken, partial, absent = manifest["failed"], manifest["warnings"], manifest["missing"]["count"]
        reasons = ([f"{len(broken)} broken input(s)"] if broken else []) + \
                  ([f"{len(partial)} partial decode(s)"] if partial else [])
        if cfg.strict and reasons:
            print(f"prep-shards: --strict: {', '.join(reasons)}: exit 1")
            return 1
        if cfg.strict_missing and absent:
            print(f"prep-shards: --strict-missing: {absent} listed video(s) absent on disk: exit 1")
            return 1
        return 0


@contextlib.contextmanager
def exclusive(out: Path, rank: int):
    """Hold OUT/.prep/lock-rank<r> while this rank works: a second prep-shards on the same --out (or
    the same rank of another torchrun) is refused instead of racing this one for the same files.
    An flock, which the kernel drops when the process ends however it ends: no stale lock stays."""
    (out / WORK).mkdir(parents=True, exist_ok=True)
    fd = os.open(out / WORK / f"lock-rank{rank}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise PrepError(f"{out} is being written by another prep-shards run (pid {holder}"
                            f"{f', rank {rank}' if rank else ''}): let it finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)



def check_settings(path: Path, settings: dict, out: Path) -> None:
    """Refuse to mix shards made with other settings, naming each setting that differs."""
    if not path.is_file():
        return
    before, now = json.loads(path.read_text()), json.loads(json.dumps(settings))
    flags = {f.name: f.metadata.get("flag", f.name) for f in fields(PrepConfig)}
    differ = [f"--{flags.get(k, k).replace('_', '-')} was {before.get(k, '(unset)')!r}, now {now.get(k, '(unset)')!r}"
              for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)]
    if differ:
        raise PrepError(f"{out} holds shards made with other settings ({'; '.join(differ)}): use the same "
                           f"settings, another --out, or delete {out} to start over")


def print_summary(cfg: PrepConfig, manifest: dict, stats: dict, skipped: int, redone: int, wall: float,
                  per_rank: list[int] | None) -> None:
    total = sum(s["samples"] for s in manifest["splits"].values())
    per_split = ", ".join(f"{s} {e['samples']}" for s, e in manifest["splits"].items())
    broken, partial, absent = manifest["failed"], manifest["warnings"], manifest["missing"]["count"]
    print(f"prep-shards: {total} videos in {cfg.out} ({per_split}); {len(broken)} broken, {len(partial)} partial, "
          f"{absent} missing; this run: {stats['videos']} done, {stats['failed']} failed, {skipped} shards skipped "
          f"(already done){f', {redone} redone (inputs changed)' if redone else ''}, "
          f"{stats['seconds'] / 3600:.2f} h of video, {stats['bytes'] / 2**20:.1f} MiB, "
          f"{wall:.0f} s ({speed(stats['videos'], wall)})"
          + (f"; videos per rank: {per_rank}" if per_rank else ""))
    for entries, what, member in ((broken, "broken input(s), not stored (manifest.json 'failed')", "reason"),
                                  (partial, "video(s) decoded only in part, stored with a warning "
                                            "(manifest.json 'warnings')", "warning")):
        if entries:
            print(f"prep-shards: {len(entries)} {what}:")
            for e in entries[:SHOWN]:
                print(f"  {e['split']}/{e['key']}: {e['input']}: {e[member]}")
            if len(entries) > SHOWN:
                print(f"  ... and {len(entries) - SHOWN} more")
    if absent:
        print(f"prep-shards: {absent} listed video(s) absent on disk, not an error without --strict-missing "
              f"(listed in {Path(cfg.out) / MISSING})")


if __name__ == "__main__":
    sys.exit(main())
