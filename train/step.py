"""One iteration of debiased pretraining (Choi et al., NeurIPS 2019, Sec. 3.3): the step that
train/pretrain.py runs and benchmarks/train_step.py times.

    alternate (the paper): (a) one optimizer step on CE + scene adversary over the original clip,
                           (b) one on the human mask confusion loss over its masked copy;
    joint:                 one forward over both clips stacked, one step on the sum.

The scene adversary is the scene head behind the gradient reversal layer (train/
gradient_reversal.py), or with `adversary="confusion"` the head learning on detached features
while the backbone is trained to make it uniform (`confusion_loss`); without it (`adv=False`) the head still learns the scene, on detached
features, so its accuracy keeps measuring how much scene the features hold. The masked pass
counts only clips whose video passed the people filter and that show a person (`mask_ok &
has_human`), averaged over all such clips of the global batch (every rank's clips count alike,
not every rank's mean); every rank runs it while any rank has one (DDP needs every rank in the
backward), and no rank does when none has: an empty masked pass takes no optimizer step, whose
momentum and weight decay would move the weights on a zero loss.

`--entropy official` moves the entropy loss onto a head of its own behind a second gradient
reversal, as the official code does (models/resnet.py hm_mlp): see `_masked_entropy`.

With a `method` of train/methods/ (BE, ActorCutMix, FAME, StillMix, ALBAR) the step is that
method's loss instead, one optimizer step per iteration (the schedules are SDN's), and the scene
head again learns on detached features. Its random draws come from a generator seeded with
(seed, rank, step), so a resumed run repeats them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from train.entropy_loss import entropy_loss
from train.gradient_reversal import reverse_gradient
from train.scene_loss import scene_loss, scene_targets

SCHEDULES = ("alternate", "joint")
ADVERSARIES = ("reversal", "confusion")


@dataclass(frozen=True)
class Losses:
    adv: bool = True                 # scene adversary through gradient reversal
    ent: bool = True                 # entropy maximisation on the masked clips
    adv_lambda: float = 0.5          # gradient reversal strength
    ent_weight: float = 1.0          # weight of the entropy loss
    scene_labels: str = "soft"       # one of train/scene_loss.py SCENE_LABELS
    schedule: str = "alternate"      # one of SCHEDULES
    mask_lambda: float = 1.0         # --entropy official: the gradient reversal before the mask head
    adversary: str = "reversal"      # one of ADVERSARIES


class DebiasStep:
    """`step(batch)` trains on one batch of the loader and returns its losses as floats
    {"ce", "scene", "entropy"} (one host sync per step). `net` and `head` may be DDP-wrapped."""

    def __init__(self, net: torch.nn.Module, head: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, losses: Losses, amp: Callable = contextlib.nullcontext,
                 channels_last: bool = False, method: Callable | None = None, seed: int = 0, rank: int = 0,
                 mask_head: torch.nn.Module | None = None):
        if losses.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {losses.schedule!r}")
        self.net, self.head, self.optimizer, self.scaler = net, head, optimizer, scaler
        self.mask_head = mask_head
        self.losses, self.amp, self.channels_last = losses, amp, channels_last
        self.method, self.seed, self.rank = method, seed, rank

    def optimize(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _adversary(self, logits: torch.Tensor, features: torch.Tensor, batch: dict):
        """(CE, the loss of the scene adversary, the scene head's loss as logged)."""
        losses = self.losses
        ce = F.cross_entropy(logits.float(), batch["label"])
        if losses.adv and losses.adversary == "reversal":
            scene = scene_loss(self.head(reverse_gradient(features, losses.adv_lambda)),
                               scene_targets(batch, losses.scene_labels))
            return ce, scene, scene
        scene = scene_loss(self.head(features.detach()), scene_targets(batch, losses.scene_labels))
        if not losses.adv:
            return ce, scene, scene
        return ce, scene + losses.adv_lambda * confusion_loss(frozen(self.head)(features)), scene

    def __call__(self, batch: dict, step: int = 0) -> dict:
        losses, clip = self.losses, batch["clip"]
        if self.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        if self.method is not None:
            return self._method_step({**batch, "clip": clip}, step)
        weight = batch["mask_ok"] & batch["has_human"]
        ent_loss = torch.zeros((), device=clip.device)
        count = usable_clips(weight) if losses.ent else 0.0  # per rank, of the global batch's
        if losses.schedule == "alternate":
            with self.amp():
                ce, adv_loss, scene = self._adversary(*self.net(clip, with_features=True), batch)
            self.optimize(ce + adv_loss)
            if count > 0:
                with self.amp():
                    ent_loss = self._masked_entropy(*self.net(batch["masked"], with_features=True), weight, count)
                self.optimize(losses.ent_weight * ent_loss)
        else:
            x = torch.cat([clip, batch["masked"]]) if losses.ent else clip
            with self.amp():
                logits, features = self.net(x, with_features=True)
                n = len(clip)
                ce, adv_loss, scene = self._adversary(logits[:n], features[:n], batch)
                if count > 0:
                    ent_loss = self._masked_entropy(logits[n:], features[n:], weight, count)
            self.optimize(ce + adv_loss + losses.ent_weight * ent_loss)
        return {"ce": ce.item(), "scene": scene.item(), "entropy": ent_loss.item()}

    def _masked_entropy(self, logits: torch.Tensor, features: torch.Tensor, weight: torch.Tensor, count: float):
        """The paper: -H of the action head on the masked clips. With a mask head (the official
        code): -H of that head, behind a gradient reversal, so the head is driven to uncertainty
        and the backbone the other way; the action head enters with weight 0 (DDP wants every
        parameter in the backward)."""
        if self.mask_head is None:
            return entropy_loss(logits, weight, count)
        reversed_features = reverse_gradient(features, self.losses.mask_lambda)
        return entropy_loss(self.mask_head(reversed_features), weight, count) + 0.0 * logits.float().sum()

    def _method_step(self, batch: dict, step: int) -> dict:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_000_003 + step)
        with self.amp():
            out = self.method(self.net, batch, generator)
            scene = scene_loss(self.head(out.features.detach()), scene_targets(batch, self.losses.scene_labels))
        self.optimize(out.loss + scene)
        names = ["ce", "scene", *out.parts]
        values = torch.stack([out.ce.detach().float(), scene.detach().float(),
                              *(v.detach().float() for v in out.parts.values())]).tolist()  # one host sync
        return {"entropy": 0.0, **dict(zip(names, values))}


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the scene head's prediction against the uniform distribution (the
    confusion loss of Tzeng et al., ICCV 2015 and Alvi et al., ECCV-W 2018): zero gradient once
    the head sees every scene as equally likely, where reversing the head's own loss rewards a
    confidently wrong head, whose features still hold the scene."""
    return -torch.log_softmax(logits.float(), dim=1).mean(dim=1).mean()


def frozen(head: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`head` as a function of its input only: the confusion loss moves the features, not the head,
    and the head's BatchNorm statistics are not updated a second time (copies are)."""
    module = getattr(head, "module", head)  # under DDP, the wrapped head
    tensors = {**{k: v.detach() for k, v in module.named_parameters()},
               **{k: v.clone() for k, v in module.named_buffers()}}
    return lambda x: torch.func.functional_call(module, tensors, (x,))


def usable_clips(weight: torch.Tensor) -> float:
    """The masked pass's usable clips in the global batch over the world size: the divisor of each
    rank's entropy sum (one all-reduce and one host sync under DDP; the count alone without)."""
    count = weight.float().sum()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(count)
        return count.item() / torch_dist.get_world_size()
    return count.item()
