"""Human boxes per frame with an ultralytics YOLO detector (person class only).

The human mask confusion loss of Choi et al. needs the people of every frame; the official code
used Mask R-CNN boxes in pickled dicts. Here a YOLO model runs batched over a video's frames on
the GPU when there is one, and returns boxes in the shard format's convention
(`shards/FORMAT.md`, "Box semantics"): per frame a list of `[x1, y1, x2, y2, score]`
normalised to the frame's width and height, within [0, 1], highest score first.

Weights are a user-supplied path (or a name ultralytics downloads, e.g. "yolo11n.pt"); tests
build a tiny random model offline. `describe()` records what made the boxes, for the manifest.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

PERSON = 0  # the COCO person class, index 0 in every ultralytics COCO model


def to_boxes(xyxy: torch.Tensor | np.ndarray, conf: torch.Tensor | np.ndarray,
             cls: torch.Tensor | np.ndarray, width: int, height: int,
             keep_class: int = PERSON) -> list[list[float]]:
    """One frame's raw detections (pixels) -> our boxes: person only, normalised, clipped, sorted.

    `xyxy` (N, 4) in pixels of a `width` x `height` frame, `conf` (N,), `cls` (N,). Boxes are
    divided by width/height, clipped to [0, 1] (YOLO boxes may reach past the frame), and
    sorted by descending score; ties keep the detector's order (stable sort), so equal input
    gives equal output. Values are rounded to float32, the precision of `boxes.f32`, so the
    msgpack and raw copies in a shard hold the same numbers.
    """
    xyxy, conf, cls = (np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64)
                       for t in (xyxy, conf, cls))
    keep = cls.reshape(-1) == keep_class
    boxes = xyxy.reshape(-1, 4)[keep] / np.array([width, height, width, height], np.float64)
    scores = conf.reshape(-1)[keep]
    rows = np.concatenate([np.clip(boxes, 0.0, 1.0), np.clip(scores, 0.0, 1.0)[:, None]], axis=1)
    order = np.argsort(-rows[:, 4], kind="stable")
    return rows[order].astype(np.float32).tolist()


class PersonDetector:
    """Person boxes for the frames of a video, batched through an ultralytics YOLO model.

    stride=k runs the detector on frames 0, k, 2k, ... only; every frame in between takes a copy
    of the boxes of the nearest *earlier* detected frame (frame t gets those of k * (t // k)).
    People move little in k/fps seconds, and masking a slightly stale box costs less than k
    times the detector time; stride=1 detects every frame.
    """

    def __init__(self, weights: str | Path, device: str | torch.device | None = None,
                 conf: float = 0.25, imgsz: int = 320, batch: int = 32, stride: int = 1,
                 half: bool = False):
        from ultralytics import YOLO  # import here: it reads settings and is slow to import

        if stride < 1 or batch < 1:
            raise ValueError(f"stride and batch must be >= 1, got stride={stride}, batch={batch}")
        self.model = YOLO(str(weights))
        if self.model.task != "detect":
            raise ValueError(f"{weights} is a {self.model.task!r} model; a detection model is needed")
        self.weights = Path(self.model.ckpt_path or weights)  # the file ultralytics actually loaded
        with open(self.weights, "rb") as f:
            self.sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        self.device = str(device) if device is not None else ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.half = half and self.device != "cpu"  # fp16 only helps (and only works well) on GPU
        self.conf, self.imgsz, self.batch, self.stride = conf, imgsz, batch, stride

    def detect(self, frames: np.ndarray) -> list[list[list[float]]]:
        """uint8 (T, H, W, 3) RGB frames -> per frame a list of [x1, y1, x2, y2, score]."""
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                and frames.shape[-1] == 3):
            raise ValueError("frames must be a uint8 array (T, H, W, 3) of RGB frames, got "
                             f"{getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}")
        height, width = frames.shape[1:3]
        picked = list(range(0, len(frames), self.stride))
        detected: list[list[list[float]]] = []
        for start in range(0, len(picked), self.batch):
            # ultralytics takes numpy images as OpenCV does: BGR, (H, W, 3); quantize replaced half in 8.4
            images = [np.ascontiguousarray(frames[t, :, :, ::-1]) for t in picked[start:start + self.batch]]
            results = self.model.predict(images, conf=self.conf, imgsz=self.imgsz, classes=[PERSON],
                                         device=self.device, quantize=16 if self.half else 32, batch=len(images),
                                         verbose=False)
            detected += [to_boxes(r.boxes.xyxy, r.boxes.conf, r.boxes.cls, width, height) for r in results]
        return [[list(box) for box in detected[t // self.stride]] for t in range(len(frames))]

    def describe(self) -> dict:
        """Provenance for the manifest: which weights (name and sha256) and settings made the boxes."""
        import ultralytics

        return {"detector": "ultralytics-yolo", "weights": self.weights.name, "sha256": self.sha256,
                "class": PERSON, "class_name": str(self.model.names.get(PERSON, PERSON)),
                "conf": self.conf, "imgsz": self.imgsz, "stride": self.stride, "half": self.half,
                "ultralytics": ultralytics.__version__}
