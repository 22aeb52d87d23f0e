"""Checkpoints: one flat dict of tensors and plain data, written atomically, read safely.

Reading uses `torch.load(weights_only=True)`, which builds tensors, numbers, strings, lists and
dicts and nothing else, so a checkpoint someone hands you cannot run code (a pickle can call any
function while it loads). Everything we store is such data: the RNG states as tensors and ints,
the config as JSON-able values, the data position as ints. A file that holds anything else is
not one of ours, or was written by a version before this rule: it is refused in one line.
"""
from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from shards.files import atomic_open

FORMAT = "scene-debias-checkpoint"
VERSION = 1
REQUIRED = ("backbone", "scene_head", "config", "classes", "step")  # what every reader of a checkpoint uses
CONFIG = ("arch", "input", "frames", "size", "stride", "mask_shape", "mask_threshold")  # and of its config
RERUN = "re-run the training that made it (or re-export it) with this version of scene-debias"


class CheckpointError(ValueError):
    """A file that is not a checkpoint this version can read safely; the message names it."""


def rng_state() -> dict:
    """Every RNG's state as tensors and ints (pickling numpy's state would pickle an ndarray)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(obj: dict, path: str | Path) -> None:
    with atomic_open(path) as f:  # a file object: a full or read-only disk is an OSError, not torch's RuntimeError
        torch.save({"format": FORMAT, "version": VERSION, **obj}, f)


def load(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A checkpoint written by `save`, or CheckpointError naming the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = _read_safely(path, device)
    if isinstance(state, dict) and "format" not in state and isinstance(state.get("state_dict"), dict):
        state = from_official(state, path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a scene-debias checkpoint (no '{FORMAT}' marker: an exported state dict, "
                              f"another program's file, or one written by an older version): {RERUN}")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {state.get('version')}, this scene-debias reads "
                              f"version {VERSION}: {RERUN}")
    missing = [k for k in REQUIRED if k not in state]
    if not missing:
        missing = [f"config {k}" for k in CONFIG if not isinstance(state["config"], dict) or k not in state["config"]]
    if missing or not isinstance(state["backbone"], dict) or not isinstance(state["classes"], list):
        raise CheckpointError(f"{path} is a damaged scene-debias checkpoint (it lacks or mangles "
                              f"{', '.join(missing) or 'backbone or classes'}): {RERUN}")
    return state


def from_official(state: dict, path: Path) -> dict:
    """A checkpoint of Hara et al.'s 3D-ResNets or of vt-vl-lab/SDN (`torch.save({"epoch", "arch",
    "state_dict", "optimizer"})`, names prefixed "module." by DataParallel), read as safely as ours,
    as one of ours: the backbone as --arch hara-r18 (its width from conv1) taking --input rgb255
    --short-videos loop --crop corner (how they were trained), SDN's scene adversary `place_mlp` as
    --scene-head official when it has three hidden blocks, classes named "class i" (the files name
    none). Their optimizer state is left: a run starts from these weights (--init)."""
    weights = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    if not str(state.get("arch", "")).startswith("resnet-18") or "conv1.weight" not in weights:
        raise CheckpointError(f"{path} is a {state.get('arch', 'model')!r} checkpoint of the 3D-ResNets code; "
                              "only its resnet-18 is a backbone here")
    if any(".downsample." in k for k in weights):
        raise CheckpointError(f"{path} is a resnet-18 with shortcut B; SDN's and Hara's Kinetics models use shortcut A, "
                              "the one --arch hara-r18 builds")
    widths = {64: "hara-r18", 16: "hara-r18-w16"}
    width = weights["conv1.weight"].shape[0]
    if width not in widths:
        raise CheckpointError(f"{path}: conv1 has {width} channels; hara-r18 has 64")
    stem = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    backbone = {next((new + k[len(old):] for old, new in stem.items() if k.startswith(old)), k): v
                for k, v in weights.items() if k.startswith(("conv1.", "bn1.", "layer", "fc."))}
    head = {}
    if all(f"place_mlp.{i}.fc.weight" in weights for i in range(3)) and "place_mlp.3.fc.weight" not in weights:
        for i in range(3):  # MLP_Block i (fc, bn, relu) -> our mlp.3i (Linear), mlp.3i+1 (BatchNorm1d)
            for part, at in (("fc", 3 * i), ("bn", 3 * i + 1)):
                head |= {f"mlp.{at}.{k.split('.', 3)[3]}": v for k, v in weights.items()
                         if k.startswith(f"place_mlp.{i}.{part}.")}
        head |= {f"mlp.9.{k.rsplit('.', 1)[1]}": v for k, v in weights.items() if k.startswith("place_mlp.p_last_fc.")}
    config = {"arch": widths[width], "input": "rgb255", "short_videos": "loop", "crop": "corner", "frames": 16, "size": 112,
              "stride": 1, "mask_shape": "box", "mask_threshold": 0.3, "scene_head": "official" if head else "paper",
              "source": "official"}
    return {"format": FORMAT, "version": VERSION, "backbone": backbone, "scene_head": head, "config": config,
            "classes": [f"class {i}" for i in range(len(weights["fc.bias"]))], "step": int(state.get("epoch", 0))}


def _read_safely(path: Path, device):
    try:
        with warnings.catch_warnings():  # torch's warnings about the pickle protocol of a file we may refuse
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        # the safe unpickler's refusal (code to run, or an old numpy RNG state); its own text advises
        # weights_only=False, which is exactly what must not happen here, so only its reason is kept
        refused = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and refused:
            reason = refused.group(1).strip()
            found = re.match(r"Unsupported global: GLOBAL (\S+)", reason)
            holds = (f"it pickles {found.group(1)}" if found
                     else f"its pickle holds more than tensors and plain data ({reason})")
            raise CheckpointError(f"{path} is not a scene-debias checkpoint, or one written by an older version "
                                  f"({holds}; refused unread): {RERUN}") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path} is not a scene-debias checkpoint (unreadable: {type(err).__name__}"
                              f"{': ' + first if first else ''})") from None


def load_weights(module: torch.nn.Module, weights: dict, path: str | Path, strict: bool = True):
    """module.load_state_dict(weights), or one CheckpointError line when they do not fit: a
    checkpoint that passed `load` but holds other shapes than its config says is damaged."""
    try:
        return module.load_state_dict(weights, strict=strict)
    except (RuntimeError, TypeError, KeyError) as err:
        detail = " ".join(str(err).split())
        raise CheckpointError(f"{path}: its weights do not fit the network its config describes ({detail[:200]}...): "
                              f"{RERUN}") from None


def init_weights(state: dict, path: str | Path, backbone: torch.nn.Module, scene_head: torch.nn.Module,
                 with_heads: bool) -> None:
    """Start from another run's weights (pretrain --init): all of them, or without the heads
    everything but the action classifier, whose classes differ (a new label set)."""
    if with_heads:
        if not state["scene_head"]:
            raise CheckpointError(f"{path} holds no scene head this trainer builds: start without it (--no-init-head)")
        load_weights(backbone, state["backbone"], path)
        load_weights(scene_head, state["scene_head"], path)
        return
    weights = {k: v for k, v in state["backbone"].items() if not k.startswith("fc.")}
    missing = load_weights(backbone, weights, path, strict=False).missing_keys
    if set(missing) != {"fc.weight", "fc.bias"}:
        raise CheckpointError(f"{path} lacks backbone weights {missing[:4]}: {RERUN}")


def resume(state: dict, path: str | Path, backbone: torch.nn.Module, scene_head: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
           mask_head: torch.nn.Module | None = None, warmup: tuple | None = None) -> tuple:
    """Put a run back where its checkpoint left it: weights (the mask head's too, --entropy
    official), optimizer, scheduler (and the warm-up's pair, --warmup-epochs), scaler and RNG
    states. Returns its position (step, epoch, batch_in_epoch, best_top1, metrics_bytes)."""
    load_weights(backbone, state["backbone"], path)
    load_weights(scene_head, state["scene_head"], path)
    if mask_head is not None:
        load_weights(mask_head, state.get("mask_head", {}), path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if warmup is not None:
        warmup[0].load_state_dict(state["warmup_optimizer"])
        warmup[1].load_state_dict(state["warmup_scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return tuple(state[k] for k in ("step", "epoch", "batch_in_epoch", "best_top1", "metrics_bytes"))
