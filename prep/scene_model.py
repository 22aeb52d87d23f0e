"""Scene soft labels: a Places365 classifier's softmax averaged over frames of a video.

The scene adversary of Choi et al. trains against 365-dim *soft* pseudo labels from a Places365
ResNet-50. The classifier is built with timm, so any timm image model fine-tuned on Places365
plugs in with its weights file; the default is the CSAIL ResNet-50
(`resnet50_places365.pth.tar`, github.com/CSAILVision/places365), whose output order is that of
`categories_places365.txt`, the order `scene.f32` uses in the shards.

Preprocessing runs with torch on the device that runs the model (resize short side 256, centre
crop 224, ImageNet mean/std, as torchvision's Resize/CenterCrop/Normalize do), so only the
sampled uint8 frames cross the bus.
"""
from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

from shards.files import file_sha256
from shards.format import NUM_SCENES
from shards.video import check_rgb_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: what the CSAIL models were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


class ModelFileError(ValueError):
    """A weights file that cannot be loaded as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# loading

def torch_load_py2(path: str | Path, weights_only: bool = True):
    """torch.load that also reads checkpoints pickled under Python 2.

    A Python 2 `str` is a byte string in the pickle; Python 3 decodes it with the given encoding
    (utf-8 by default in torch.load) and fails with UnicodeDecodeError on non-ASCII bytes. Then
    we retry with latin-1, which maps every byte to a character and so never fails (the CSAIL
    README does the same). weights_only stays as asked on the retry: the encoding only changes
    how string opcodes are decoded, not which objects may be built.
    """
    try:
        with warnings.catch_warnings():  # a bare pickle of protocol 4 is refused anyway, without a warning first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except UnicodeDecodeError:
        with warnings.catch_warnings():
            # torch warns that pickle args are ignored with weights_only; encoding is in fact used
            warnings.filterwarnings("ignore", message="pickle_load_args only works")
            return torch.load(path, map_location="cpu", weights_only=weights_only, encoding="latin1")


def places365_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """A loaded checkpoint -> a state dict with timm's parameter names.

    Accepts a plain state dict or a training checkpoint holding one under `state_dict` (the
    CSAIL files: `{"epoch", "arch", "state_dict", "best_prec1"}`). The CSAIL keys carry the
    `module.` prefix of DataParallel, which is removed. Beyond that, no renaming is needed for
    ResNets: timm 1.0.31's resnet50 uses torchvision's names (conv1, bn1, layer1..4, fc) with
    identical shapes (checked by the tests). Old checkpoints lack BatchNorm's
    `num_batches_tracked`; `load_state_dict` fills it in for such unversioned state dicts.
    """
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelFileError("expected a state dict, or a checkpoint with a 'state_dict' entry, of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_places365(path: str | Path, arch: str = "resnet50", device: str | torch.device = "cpu",
                   allow_pickle: bool = False) -> torch.nn.Module:
    """A timm `arch` with 365 outputs, weights from `path`, in eval mode on `device`.

    Pickle safety: the file is read with `torch.load(weights_only=True)`, which builds only
    tensors and plain containers, so a downloaded checkpoint cannot run code. This reads the
    CSAIL file (legacy torch format, Python 2 pickle). `allow_pickle=True` lifts the restriction
    for a *trusted* file the safe loader refuses (e.g. one that pickles an argparse Namespace).
    Loading is strict: every parameter must be present with the right shape.
    """
    if not timm.is_model(arch):
        raise ModelFileError(f"{arch!r} is not a timm architecture (e.g. resnet50, resnet18; "
                             "timm.list_models() names them all)")
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Places365 weights {path} not found; get resnet50_places365.pth.tar from "
                             "places2.csail.mit.edu/models_places365/ (or give a timm state dict)")
    try:
        checkpoint = torch_load_py2(path, weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:  # a global the safe loader refuses: the file is not plain weights
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = found.group(1) if found else "objects other than tensors"
        raise ModelFileError(f"cannot read {path}: it pickles {what}, so it is refused unread (unpickling can run "
                             "code); give a file of tensors only, e.g. torch.save(model.state_dict(), PATH)") from None
    except Exception as e:  # a damaged or foreign file
        raise ModelFileError(f"cannot read {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    model = timm.create_model(arch, pretrained=False, num_classes=NUM_SCENES)
    try:
        model.load_state_dict(places365_state_dict(checkpoint), strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{path} does not fit timm {arch!r} with {NUM_SCENES} classes: "
                             f"{' '.join(str(e).split())[:400]}") from e
    return model.eval().to(device)


# ---------------------------------------------------------------------------------------------
# frames -> soft labels

def sample_indices(num_frames: int, n: int) -> np.ndarray:
    """min(n, num_frames) frame indices spread evenly: the centres of n equal segments.

    Centres rather than endpoints, so the first and last frames (often fades or black) are not
    always chosen; e.g. 100 frames, n=4 -> 12, 37, 62, 87. Short videos use every frame once.
    """
    if num_frames < 1 or n < 1:
        raise ValueError(f"need at least one frame and n >= 1, got {num_frames} frames, n={n}")
    n = min(n, num_frames)
    return (np.arange(n) * 2 + 1) * num_frames // (2 * n)


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, 224, 224), normalised, on frames' device.

    Resize so the short side is 256 (bilinear, antialiased; long side int(256 * long / short)),
    centre crop 224 (top/left rounded as torchvision does), ImageNet mean/std.
    """
    x = frames.permute(0, 3, 1, 2).float().div_(255)
    h, w = x.shape[-2:]
    size = (RESIZE, int(RESIZE * w / h)) if h <= w else (int(RESIZE * h / w), RESIZE)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
    x = x[..., top:top + CROP, left:left + CROP]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class SceneLabeler:
    """Scene labels for videos: softmax of the classifier averaged over `frames` frames (the soft
    label), and each of those frames' argmax (its votes: the official hard label is their majority).

    `model` maps normalised (N, 3, 224, 224) images to 365 logits (e.g. `load_places365`).
    Frames of several videos are batched together through the model, `batch_size` at a time.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None,
                 batch_size: int = 64, frames: int = 8):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size
        self.frames = frames

    def labels(self, frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """uint8 (T, H, W, 3) RGB video -> (float32 (365,) summing to 1, the sampled frames' argmax)."""
        soft, votes = self.labels_batch([frames])
        return soft[0], votes[0]

    @torch.inference_mode()
    def labels_batch(self, videos: Sequence[np.ndarray]) -> tuple[np.ndarray, list[list[int]]]:
        """Several videos (sizes may differ) -> (float32 (len(videos), 365), per video its votes)."""
        crops, counts = [], []
        for video in videos:
            check_rgb_frames(video, "a video")
            picked = np.ascontiguousarray(video[sample_indices(len(video), self.frames)])
            crops.append(preprocess(torch.from_numpy(picked).to(self.device, non_blocking=True)))
            counts.append(len(picked))
        if not crops:
            return np.zeros((0, NUM_SCENES), np.float32), []
        images = torch.cat(crops)
        probs = torch.cat([self.model(images[i:i + self.batch_size]).float().softmax(dim=1)
                           for i in range(0, len(images), self.batch_size)])
        if probs.shape[1] != NUM_SCENES:
            raise ValueError(f"the scene model gives {probs.shape[1]} outputs, not {NUM_SCENES}")
        labels = torch.stack([p.mean(dim=0) for p in probs.split(counts)])
        votes = [v.tolist() for v in probs.argmax(dim=1).cpu().split(counts)]
        return labels.cpu().numpy().astype(np.float32), votes

    def describe(self, weights: str | Path | None = None) -> dict:
        """Provenance for the manifest: frames sampled, preprocessing, and the weights' hash."""
        info = {"frames": self.frames, "sampling": "segment centres",
                "preprocess": f"resize short side {RESIZE}, centre crop {CROP}, ImageNet mean/std",
                "model": getattr(self.model, "pretrained_cfg", {}).get("architecture", type(self.model).__name__)}
        if weights is not None:
            info.update(weights=Path(weights).name, sha256=file_sha256(weights))
        return info
