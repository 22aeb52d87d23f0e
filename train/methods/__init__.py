"""The later scene-debiasing methods, in the same trainer as SDN (`pretrain.py --method NAME`).

Each is one file with its paper and the defaults of its official code, and each is a callable
`method(net, batch, generator) -> MethodLoss`: the loss of one optimizer step on a batch of the
loader. SDN itself (`--method sdn`, the default, with `--debias` for its ablation) is the step of
train/step.py.

Order: the loader decodes, crops, flips and normalises the clip, and makes the human-masked copy
and the human pixel mask from that same clip ("masked", "human"); a method then transforms the
normalised clips on the device that holds them (as every official implementation does, after
normalisation, where zero is the dataset's mean colour). So the masking semantics are settled
before any method mixes pixels: ActorCutMix pastes exactly the pixels the masked copy fills.

Randomness comes from the `generator` the step seeds from (seed, rank, step): a resumed run
draws the same mixing weights, frames and pairs as an uninterrupted one.
"""
from __future__ import annotations

import torch

from .actor_cutmix import ActorCutMix
from .albar import Albar
from .background_erasing import BackgroundErasing
from .fame import Fame
from .stillmix import StillMix, load_bank


METHODS = {"be": BackgroundErasing, "actorcutmix": ActorCutMix, "fame": Fame, "stillmix": StillMix, "albar": Albar}



def build_method(name: str, device: torch.device, *, size: int, consistency: float = 0.0, bank: str = ""):
    """The method `name` with its official defaults (None for sdn: train/step.py); `size` is the
    clips' crop side (a StillMix bank is resized to it), `bank` a StillMix frame bank file."""
    if name == "sdn":
        return None
    if name == "stillmix":
        return StillMix(load_bank(bank, size, device) if bank else None, consistency=consistency)
    if name in ("be", "fame"):
        return METHODS[name](consistency=consistency)
    return METHODS[name]()
