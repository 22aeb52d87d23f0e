"""ActorCutMix: Zou et al., "Learning Representational Invariances for Data-Efficient Action
Recognition", 2021 (vt-vl-lab/video-data-aug, supervised setting).

The actors of each clip (its human boxes, the pixels our masked copy fills) are pasted onto the
background of another clip of the batch, the batch in reverse order; where that clip had its
own actors the pixels are zero, the mean colour of normalised clips. The label is mixed by the
human area: r the fraction of the clip's pixels inside its boxes, w = 1 - (1 - r)^alpha for its
own action and 1 - w for the background clip's (mmaction/models/recognizers/
base_supervised_aug.py:81-108, recognizer3d_supervised_aug.py:28-41: alpha 4, one coin with
probability 0.5 per batch). A clip with no box or only box, and the middle clip of an odd
batch (paired with itself), keeps its own pixels and label. Trained with the soft-label
cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import MethodLoss


class ActorCutMix:
    def __init__(self, prob: float = 0.5, alpha: float = 4.0):
        self.prob, self.alpha = prob, alpha

    def mix(self, clip: torch.Tensor, human: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """clip (B, C, T, H, W), human bool (B, T, H, W) -> (mixed clips, w (B,): the weight of each
        clip's own label; 1 - w goes to the label of clip B-1-i, whose background it got)."""
        b = len(clip)
        if float(torch.rand((), generator=generator)) >= self.prob:  # one coin per batch
            return clip, torch.ones(b, dtype=clip.dtype, device=clip.device)
        m = human[:, None].to(clip.dtype)
        area = m.mean(dim=(1, 2, 3, 4))
        invalid = (area == 0) | (area == 1)
        if b % 2:
            invalid[b // 2] = True
        m = torch.where(invalid.view(-1, 1, 1, 1, 1), torch.ones_like(m), m)
        mixed = clip * m + (clip * (1 - m)).flip(0) * (1 - m)
        return mixed, 1 - (1 - m.mean(dim=(1, 2, 3, 4))) ** self.alpha

    def __call__(self, net, batch: dict, generator: torch.Generator) -> MethodLoss:
        mixed, w = self.mix(batch["clip"], batch["human"], generator)
        logits, features = net(mixed, with_features=True)
        own = F.one_hot(batch["label"], logits.shape[1]).float()
        target = w.float()[:, None] * own + (1 - w.float()[:, None]) * own.flip(0)
        ce = F.cross_entropy(logits.float(), target)
        return MethodLoss(ce, ce, features, {})
