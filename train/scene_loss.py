"""Scene loss of the adversary (Choi et al., NeurIPS 2019, Eq. 2): cross-entropy of the scene
head against the Places365 pseudo labels: soft (the averaged softmax, the paper's choice), hard
(its argmax, the paper's ablation) or vote (the scene most frames' argmax name, the official
code's hard label: vt-vl-lab/SDN datasets/kinetics.py:412)."""
from __future__ import annotations

import torch

SCENE_LABELS = ("soft", "hard", "vote")


def scene_targets(batch: dict, labels: str) -> torch.Tensor:
    """The scene targets of a loader batch: its soft labels (B, 365), or scene indices (B,)."""
    if labels == "soft":
        return batch["scene"]
    if labels == "hard":
        return batch["scene"].argmax(dim=1)
    if labels == "vote":
        return batch["scene_vote"]
    raise ValueError(f"scene labels must be one of {SCENE_LABELS}, not {labels!r}")


def scene_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (B, 365), targets (B, 365) probability vectors or (B,) scene indices -> mean cross-entropy."""
    logp = torch.log_softmax(logits.float(), dim=1)
    if targets.dim() == 1:
        return torch.nn.functional.nll_loss(logp, targets)
    return -(targets.float() * logp).sum(dim=1).mean()
