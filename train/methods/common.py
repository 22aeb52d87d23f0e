"""What every method shares: its result, the per-clip coin of the official codes, and training
on transformed clips with the label unchanged."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class MethodLoss:
    loss: torch.Tensor                   # what the optimizer minimises
    ce: torch.Tensor                     # the action cross-entropy of the clips trained on
    features: torch.Tensor               # their pooled features (the scene head learns on them, detached)
    parts: dict[str, torch.Tensor]       # the method's own terms, for the metrics


def per_clip(n: int, prob: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """bool (n,) on `device`: which clips a method transforms, each with probability `prob` (the
    official codes' `prob_aug`, drawn per clip). Random draws are few and small: they come from
    the step's CPU generator and move to the clips' device."""
    return (torch.rand(n, generator=generator) < prob).to(device)


def beta(a: float, b: float, generator: torch.Generator) -> float:
    """One Beta(a, b) draw from the step's generator (torch draws Beta only from its global one)."""
    return float(np.random.default_rng(int(torch.randint(2**62, (), generator=generator))).beta(a, b))


def label_kept(net, transformed: torch.Tensor, clip: torch.Tensor, label: torch.Tensor,
               consistency: float) -> MethodLoss:
    """Cross-entropy on transformed clips with their own labels; with `consistency` > 0 also the
    MSE of their pooled features to the original clips' (both in one forward pass, as DDP needs)."""
    if not consistency:
        logits, features = net(transformed, with_features=True)
        ce = F.cross_entropy(logits.float(), label)
        return MethodLoss(ce, ce, features, {})
    n = len(clip)
    logits, features = net(torch.cat([transformed, clip]), with_features=True)
    ce = F.cross_entropy(logits[:n].float(), label)
    term = F.mse_loss(features[:n].float(), features[n:].float())
    return MethodLoss(ce + consistency * term, ce, features[n:], {"consistency": term})
