"""Human mask confusion loss (Choi et al., "Why Can't I Dance in the Mall?", NeurIPS 2019, Eq. 4).

With every human masked out, nothing in the clip should tell the action: the model is trained
to be maximally uncertain there, i.e. to maximise the entropy of its action distribution.
Minimising this loss (the negative mean entropy) does that; its minimum is -log(num_classes).
"""
from __future__ import annotations

import torch


def entropy_loss(logits: torch.Tensor, weight: torch.Tensor | None = None, count: float | None = None) -> torch.Tensor:
    """-H(softmax(logits)), averaged over the clips with weight 1 (all clips when weight is None;
    0 when no clip has weight). `count` divides instead of this batch's number of weighted clips:
    under DDP, the global number over the world size, so that the gradient DDP averages over the
    ranks is the mean over every usable clip of the global batch, as in one process."""
    logp = torch.log_softmax(logits.float(), dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    if weight is None:
        return -entropy.mean()
    weight = weight.float()
    return -(entropy * weight).sum() / (count if count is not None else weight.sum().clamp(min=1.0))
