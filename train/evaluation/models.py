"""A trained model loaded for evaluation, and a split's labels in its classes."""
from __future__ import annotations

import torch

from shards.loader import SplitIndex
from train import checkpoint
from train.model import SceneHead, build_backbone


def load_model(path: str, device: torch.device):
    """(backbone, scene head, its pretrain config with the checkpoint's "classes" added), in eval mode."""
    state = checkpoint.load(path, device)
    cfg = {**state["config"], "classes": state["classes"]}
    backbone = build_backbone(cfg["arch"], len(state["classes"]), cfg["input"]).to(device)
    checkpoint.load_weights(backbone, state["backbone"], path)
    scene_head = SceneHead(backbone.feature_dim, layout=cfg.get("scene_head", "paper")).to(device)  # older runs: paper
    checkpoint.load_weights(scene_head, state["scene_head"], path)
    return backbone.eval(), scene_head.eval(), cfg


def clip_settings(cfg: dict) -> dict:
    """build_loader's clip settings as the run trained with them, from its config (runs older than a
    flag get the flag's default)."""
    return dict(frames=cfg["frames"], size=cfg["size"], stride=cfg["stride"], mask_shape=cfg["mask_shape"],
                mask_threshold=cfg["mask_threshold"], loop=cfg.get("short_videos") == "loop",
                crop=cfg.get("crop", "random"))


def model_labels(index: SplitIndex, classes: list[str]) -> torch.Tensor:
    """The split's labels as indices into the model's `classes`: the same list, or matched by name
    when the shards hold other classes (a test set of some of them: Mimetics' 50 of Kinetics-400)."""
    own = index.manifest["classes"]
    if own == classes:
        return torch.from_numpy(index.labels)
    where = {c: i for i, c in enumerate(classes)}
    foreign = [c for c in own if c not in where]
    if foreign:
        raise ValueError(f"{len(foreign)} of the {len(own)} classes of the shards are not among the model's "
                         f"{len(classes)} (e.g. {', '.join(map(repr, foreign[:3]))}): evaluate a model of these classes")
    return torch.tensor([where[own[label]] for label in index.labels])
