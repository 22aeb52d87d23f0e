"""ALBAR: Fioresi et al., "ALBAR: Adversarial Learning approach to mitigate Biases in Action
Recognition", ICLR 2025 (UCF-CRCV/ALBAR).

A static clip, the clip's middle frame repeated, goes through the same network as the clip; the
loss rewards getting the action from the clip and penalises getting it from the static clip:

    CE(f(x), y) - 1.0 CE(f(xs), y) - 4.25 H(softmax f(xs)) + 10.0 GP

GP: the gradient of the static clip's logits (summed) with respect to the static input, its
square summed over dims 1-3 of the (B, C, T, H, W) gradient, square-rooted (+1e-12) and
averaged: per sample and image column, as the official code writes it (entropy_loss.py
compute_gradient_penalty; weights in params_debias.py, loss in train.py:116-141). No gradient
reversal, no detach: one network, one step. Both clips go through one forward pass, as DDP needs
(the official code makes two; BatchNorm statistics then mix the two kinds of clip).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.entropy_loss import entropy_loss

from .common import MethodLoss


class Albar:
    def __init__(self, static_weight: float = 1.0, entropy_weight: float = 4.25, penalty_weight: float = 10.0):
        self.static_weight, self.entropy_weight, self.penalty_weight = static_weight, entropy_weight, penalty_weight

    @staticmethod
    def static_clip(clip: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the middle frame repeated T times (frame 16 of the official 32)."""
        t = clip.shape[2]
        return clip[:, :, t // 2: t // 2 + 1].expand_as(clip).contiguous()

    def __call__(self, net, batch: dict, generator: torch.Generator) -> MethodLoss:
        clip, n = batch["clip"], len(batch["clip"])
        static = self.static_clip(clip).requires_grad_(self.penalty_weight > 0)
        logits, features = net(torch.cat([clip, static]), with_features=True)
        ce = F.cross_entropy(logits[:n].float(), batch["label"])
        static_ce = F.cross_entropy(logits[n:].float(), batch["label"])
        neg_entropy = entropy_loss(logits[n:])  # mean sum p log p: minimising it maximises the entropy
        penalty = torch.zeros((), device=clip.device)
        if self.penalty_weight > 0:
            grad, = torch.autograd.grad(logits[n:].float().sum(), static, create_graph=True)
            penalty = torch.sqrt(grad.pow(2).sum(dim=(1, 2, 3)) + 1e-12).mean()
        loss = ce - self.static_weight * static_ce + self.entropy_weight * neg_entropy + self.penalty_weight * penalty
        return MethodLoss(loss, ce, features[:n], {"static_ce": static_ce, "static_entropy": -neg_entropy,
                                                   "gradient_penalty": penalty})
