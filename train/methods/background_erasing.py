"""Background Erasing (BE): Wang et al., "Removing the Background by Adding the Background:
Towards Background Robust Self-supervised Video Representation Learning", CVPR 2021.

Every frame of a clip gets one of its own frames, picked at random, blended in:
`(1 - lam) x + lam x[t0]`, lam ~ U[0, 0.3) drawn once per batch, t0 per clip
(FingerRec/BE src/Contrastive/augment/basic_augmentation/mixup_methods.py:121-137, alpha 0.3 in
augment/gen_positive.py:9), on normalised clips, label unchanged. The official code is
self-supervised; in the supervised setting (the re-implementation StillMix and ALBAR compare
against, lihaoxin05/StillMix blending_utils.py:333-400) the erased clips are trained with the
cross-entropy alone. The BE README suggests a consistency loss for it, MSE(F(mixed), F(x)):
`consistency` > 0 adds it on the pooled features (both clips in one forward pass).
"""
from __future__ import annotations

import torch

from .common import MethodLoss, label_kept, per_clip


class BackgroundErasing:
    def __init__(self, max_weight: float = 0.3, prob: float = 1.0, consistency: float = 0.0):
        self.max_weight, self.prob, self.consistency = max_weight, prob, consistency

    def erase(self, clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """clip (B, C, T, H, W) -> the same with one random frame of each clip blended into all its frames."""
        b, _, t = clip.shape[:3]
        dev = clip.device
        lam = float(torch.rand((), generator=generator)) * self.max_weight  # one per batch
        t0 = torch.randint(t, (b,), generator=generator).to(dev)
        still = clip[torch.arange(b, device=dev), :, t0]  # (B, C, H, W)
        mixed = (1 - lam) * clip + lam * still[:, :, None]
        return torch.where(per_clip(b, self.prob, generator, dev).view(-1, 1, 1, 1, 1), mixed, clip)

    def __call__(self, net, batch: dict, generator: torch.Generator) -> MethodLoss:
        return label_kept(net, self.erase(batch["clip"], generator), batch["clip"], batch["label"], self.consistency)
