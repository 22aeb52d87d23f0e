"""Scene loss of the adversary (Choi et al., NeurIPS 2019, Eq. 2): cross-entropy of the scene
head against the Places365 pseudo labels, soft (the averaged softmax, the paper's choice) or
hard (its argmax, the paper's ablation)."""
from __future__ import annotations

import torch


def scene_loss(logits: torch.Tensor, targets: torch.Tensor, hard: bool = False) -> torch.Tensor:
    """logits (B, 365), targets (B, 365) probability vectors -> mean cross-entropy."""
    logp = torch.log_softmax(logits.float(), dim=1)
    if hard:
        return torch.nn.functional.nll_loss(logp, targets.argmax(dim=1))
    return -(targets.float() * logp).sum(dim=1).mean()
