"""Gradient reversal layer (Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015), as used by Choi et al. (NeurIPS 2019) for the scene adversary.

Identity on the forward pass; on the backward pass the gradient is multiplied by -lambda. Put
between the backbone features and the scene head, it lets the head learn to predict the scene
while the backbone is pushed to make the scene unpredictable.
"""
from __future__ import annotations

import torch


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    return _Reverse.apply(x, strength)

