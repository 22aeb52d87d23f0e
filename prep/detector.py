"""Human boxes per frame with an ultralytics YOLO detector (the classes that are people).

The human mask confusion loss of Choi et al. needs the people of every frame; the official code
used Mask R-CNN boxes in pickled dicts. Here a YOLO model runs batched over a video's frames on
the GPU when there is one, and returns boxes in the shard format's convention
(`shards/FORMAT.md`, "Box semantics"): per frame a list of `[x1, y1, x2, y2, score]`
normalised to the frame's width and height, within [0, 1], highest score first.

Which classes are people depends on the model: COCO models have `person` (class 0), a custom
model may have several (e.g. {0: 'Normal', 1: 'Fall'}, both people). `resolve_classes` picks
them from ids or names, by default the class named `person`, and refuses a model that has none
with the list of its names, so boxes are never taken silently from the wrong class.

Weights are a user-supplied path, or an official ultralytics name (e.g. "yolo11m.pt") that
ultralytics downloads; tests build a tiny random model offline. `describe()` records what made
the boxes, for the manifest.

A `.pt` file is a pickle, and ultralytics unpickles it in full: a crafted file runs code when
loaded. Before ultralytics sees it, `pickle_globals_refused` lists every global the pickle names
(torch reads the opcodes without running them) and the file is refused unless each one is a
network layer class (an nn.Module of torch.nn or ultralytics.nn: unpickled with __new__ and a
dict update, no code of the file's choosing) or one of a few plain value types. `trust=True`
(`prep-shards --trust-detector`) skips the check, for a file from a source the user trusts.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from shards.files import file_sha256
from shards.video import check_rgb_frames

DEFAULT_CLASS = "person"  # the COCO class every ultralytics COCO model has (index 0)
LISTED = 20  # class names an error message shows


class DetectorError(ValueError):
    """A detector that cannot be used as asked; the message is one line saying why and what to do."""


LAYER_MODULES = ("torch.nn.modules.", "ultralytics.nn.")  # where the layer classes a checkpoint names live
VALUE_GLOBALS = {  # plain values in ultralytics checkpoints (training arguments, metrics)
    "collections.OrderedDict", "builtins.set", "ultralytics.utils.IterableSimpleNamespace",
    "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.dtypes.Float64DType", "numpy.dtypes.Float32DType", "numpy.dtypes.Int64DType"}


def _layer_class(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if not module.startswith(LAYER_MODULES):
        return False
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return False
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module)


def pickle_globals_refused(path: str | Path) -> list[str]:
    """The globals a torch checkpoint's pickle names that are neither layer classes nor plain
    values, read from its opcodes with nothing run."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # not the zip format torch.save writes (legacy pickle, garbage, ...)
        raise DetectorError(f"cannot load the detector {path}: not a checkpoint as torch.save writes them "
                            f"({' '.join(str(err).split())[:120]})") from None
    return sorted(n for n in names if n not in VALUE_GLOBALS and not _layer_class(n))


def check_weights_file(weights: str | Path, trust: bool) -> None:
    """Refuse a weights file whose pickle would run code on loading, unless trusted (then warn)."""
    if trust:
        print(f"prep-shards: warning: --trust-detector: {weights} is unpickled unchecked (it can run code)",
              file=sys.stderr)
        return
    refused = pickle_globals_refused(weights)
    if refused:
        shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise DetectorError(f"refusing the detector {weights}: loading it would call {shown}, which is no network "
                            "layer (a .pt file is a pickle and can run code); pass --trust-detector only if you "
                            "trust where the file comes from")


def official_name(weights: str) -> bool:
    """Whether `weights` is the name of an official ultralytics model, which ultralytics downloads."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return weights in GITHUB_ASSETS_NAMES


def resolve_classes(names: dict[int, str], spec: str | Sequence = "") -> list[int]:
    """The class ids meant by `spec`: comma-separated ids or names ("0,1", "Normal,Fall"), a
    sequence of them, or "" for the class named `person`. Names match case-insensitively."""
    parts = [str(p).strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if str(p).strip()]
    shown = sorted(names.items())[:LISTED]
    listed = ", ".join(f"{i}: {n!r}" for i, n in shown) + (f", ... ({len(names)} classes)" if len(names) > LISTED else "")
    by_name = {str(n).lower(): int(i) for i, n in names.items()}
    if not parts:
        if DEFAULT_CLASS not in by_name:
            raise DetectorError(f"the detector has no class named {DEFAULT_CLASS!r}; its classes are {{{listed}}}: "
                                "choose the ones that are people with --det-classes (ids or names, e.g. 0,1)")
        return [by_name[DEFAULT_CLASS]]
    chosen = []
    for part in parts:
        cls = int(part) if part.lstrip("-").isdigit() else by_name.get(part.lower())
        if cls not in names:
            raise DetectorError(f"--det-classes {part}: the detector has no such class; its classes are {{{listed}}}")
        if cls not in chosen:
            chosen.append(cls)
    return sorted(chosen)


def to_boxes(xyxy: torch.Tensor | np.ndarray, conf: torch.Tensor | np.ndarray,
             cls: torch.Tensor | np.ndarray, width: int, height: int,
             keep_classes: Sequence[int] = (0,)) -> list[list[float]]:
    """One frame's raw detections (pixels) -> our boxes: people classes only, normalised, clipped, sorted.

    `xyxy` (N, 4) in pixels of a `width` x `height` frame, `conf` (N,), `cls` (N,). Boxes are
    divided by width/height, clipped to [0, 1] (YOLO boxes may reach past the frame), and
    sorted by descending score; ties keep the detector's order (stable sort), so equal input
    gives equal output. Values are rounded to float32, the precision of `boxes.f32`, so the
    msgpack and raw copies in a shard hold the same numbers.
    """
    xyxy, conf, cls = (np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64)
                       for t in (xyxy, conf, cls))
    keep = np.isin(cls.reshape(-1), np.asarray(keep_classes, np.float64))
    boxes = xyxy.reshape(-1, 4)[keep] / np.array([width, height, width, height], np.float64)
    scores = conf.reshape(-1)[keep]
    rows = np.concatenate([np.clip(boxes, 0.0, 1.0), np.clip(scores, 0.0, 1.0)[:, None]], axis=1)
    order = np.argsort(-rows[:, 4], kind="stable")
    return rows[order].astype(np.float32).tolist()


class PersonDetector:
    """Person boxes for the frames of a video, batched through an ultralytics YOLO model.

    `classes`: which of the model's classes are people (see `resolve_classes`); every box of
    any of them is a person box.

    stride=k runs the detector on frames 0, k, 2k, ... only; every frame in between takes a copy
    of the boxes of the nearest *earlier* detected frame (frame t gets those of k * (t // k)).
    People move little in k/fps seconds, and masking a slightly stale box costs less than k
    times the detector time; stride=1 detects every frame.
    """

    def __init__(self, weights: str | Path, device: str | torch.device | None = None,
                 conf: float = 0.25, imgsz: int = 320, batch: int = 32, stride: int = 1,
                 half: bool = False, classes: str | Sequence = "", trust: bool = False):
        from ultralytics import YOLO  # import here: it reads settings and is slow to import

        if stride < 1 or batch < 1:
            raise ValueError(f"stride and batch must be >= 1, got stride={stride}, batch={batch}")
        if official_name(str(weights)) and not Path(weights).is_file():
            from ultralytics.utils.downloads import attempt_download_asset  # checked like any file, once here
            weights = attempt_download_asset(str(weights))
        check_weights_file(weights, trust)
        try:
            self.model = YOLO(str(weights))
        except Exception as err:  # ultralytics raises TypeError, RuntimeError, ConnectionError, ...
            first = " ".join(str(err).split("\n")[0].split())
            raise DetectorError(f"cannot load the detector {weights}: {first[:300]}") from None
        if self.model.task != "detect":
            raise DetectorError(f"{weights} is a {self.model.task!r} model; a detection model is needed")
        self.classes = resolve_classes(self.model.names, classes)
        self.weights = Path(self.model.ckpt_path or weights)  # the file ultralytics actually loaded
        self.sha256 = file_sha256(self.weights)
        self.device = str(device) if device is not None else ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.half = half and self.device != "cpu"  # fp16 only helps (and only works well) on GPU
        self.conf, self.imgsz, self.batch, self.stride = conf, imgsz, batch, stride

    def detect(self, frames: np.ndarray) -> list[list[list[float]]]:
        """uint8 (T, H, W, 3) RGB frames -> per frame a list of [x1, y1, x2, y2, score]."""
        check_rgb_frames(frames)
        height, width = frames.shape[1:3]
        picked = list(range(0, len(frames), self.stride))
        detected: list[list[list[float]]] = []
        for start in range(0, len(picked), self.batch):
            # ultralytics takes numpy images as OpenCV does: BGR, (H, W, 3); quantize replaced half in 8.4
            images = [np.ascontiguousarray(frames[t, :, :, ::-1]) for t in picked[start:start + self.batch]]
            results = self.model.predict(images, conf=self.conf, imgsz=self.imgsz, classes=self.classes,
                                         device=self.device, quantize=16 if self.half else 32, batch=len(images),
                                         verbose=False)
            detected += [to_boxes(r.boxes.xyxy, r.boxes.conf, r.boxes.cls, width, height, self.classes)
                         for r in results]
        return [[list(box) for box in detected[t // self.stride]] for t in range(len(frames))]

    def describe(self) -> dict:
        """Provenance for the manifest: which weights (name and sha256) and settings made the boxes."""
        import ultralytics

        return {"detector": "ultralytics-yolo", "weights": self.weights.name, "sha256": self.sha256,
                "classes": self.classes, "class_names": [str(self.model.names[c]) for c in self.classes],
                "conf": self.conf, "imgsz": self.imgsz, "stride": self.stride, "half": self.half,
                "ultralytics": ultralytics.__version__}
