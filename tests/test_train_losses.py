"""The pieces of the method, each on its own: gradient reversal, entropy loss, scene head."""
from __future__ import annotations

import math

import pytest
import torch

from train.entropy_loss import entropy_loss
from train.gradient_reversal import reverse_gradient
from train.model import R3D18, SceneHead
from train.scene_loss import scene_loss, scene_targets


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_gradient_reversal_negates_and_scales(strength):
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 3, dtype=torch.float64)
    f = lambda v: (v @ w).sin().sum()
    (plain,) = torch.autograd.grad(f(x), x)
    (reversed_,) = torch.autograd.grad(f(reverse_gradient(x, strength)), x)
    torch.testing.assert_close(reversed_, -strength * plain)
    # numerical check of the plain gradient the reversal is applied to
    eps, i, j = 1e-6, 1, 5
    bumped = x.detach().clone()
    bumped[i, j] += eps
    assert abs((f(bumped) - f(x.detach())).item() / eps - plain[i, j].item()) < 1e-4
    assert torch.equal(reverse_gradient(x, strength), x)  # identity forward


def test_entropy_loss_value_and_gradient_raise_entropy():
    logits = torch.tensor([[4.0, 0.0, -1.0], [0.5, 0.2, 3.0]], requires_grad=True)
    p = logits.softmax(1)
    expected = (p * p.log()).sum(1).mean()  # -entropy
    torch.testing.assert_close(entropy_loss(logits), expected)
    assert entropy_loss(torch.zeros(2, 5)).item() == pytest.approx(-math.log(5))
    before = -entropy_loss(logits).item()
    entropy_loss(logits).backward()
    after = -entropy_loss(logits.detach() - 2.0 * logits.grad).item()  # one gradient descent step
    assert after > before + 0.05


def test_entropy_loss_weights():
    logits = torch.tensor([[5.0, 0.0], [0.0, 0.0]])
    assert entropy_loss(logits, torch.tensor([False, True])).item() == pytest.approx(-math.log(2))
    assert entropy_loss(logits, torch.tensor([False, False])).item() == 0.0


def test_scene_loss_soft_hard_and_vote():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    batch = {"scene": torch.tensor([[0.5, 0.4, 0.1]]), "scene_vote": torch.tensor([2])}
    logp = logits.log_softmax(1)[0]
    soft = -(0.5 * logp[0] + 0.4 * logp[1] + 0.1 * logp[2])
    assert scene_loss(logits, scene_targets(batch, "soft")).item() == pytest.approx(soft.item())
    assert scene_loss(logits, scene_targets(batch, "hard")).item() == pytest.approx(-logp[0].item())
    assert scene_loss(logits, scene_targets(batch, "vote")).item() == pytest.approx(-logp[2].item())
    with pytest.raises(ValueError, match="scene labels must be one of"):
        scene_targets(batch, "argmax")


def test_scene_head_is_4_layer_mlp_with_512_hidden():
    head = SceneHead(128)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(128, 512), (512, 512), (512, 512), (512, 365)]


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = R3D18(num_classes=4, width=8)
    x, y = torch.randn(4, 3, 4, 16, 16), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
