"""A linear classifier on fixed inputs (features or scene labels), fitted full-batch.

Used by the scene probe (how much scene the frozen features hold) and by the dataset scene
bias of Choi et al. (Eq. 1). Inputs are standardised with the training statistics; the fit is
deterministic (L-BFGS from zero weights).
"""
from __future__ import annotations

import torch


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
               iters: int = 200) -> torch.nn.Module:
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    model = torch.nn.Linear(x.shape[1], num_classes).double()
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=iters, line_search_fn="strong_wolfe")
    z = (x - mean) / std

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(z), y) + weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.nn.Sequential(_Standardise(mean, std), model)


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.mean) / self.std


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).double().mean().item()
