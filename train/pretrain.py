"""Scene-debiased pretraining of a 3D-ResNet-18 (Choi et al., "Why Can't I Dance in the Mall?",
NeurIPS 2019).

    # one process, CPU or one GPU
    python train/pretrain.py --shards data/mk200 --out runs/debiased
    # two GPUs, the paper's global batch of 32
    torchrun --standalone --nproc-per-node=2 train/pretrain.py --shards data/mk200 --out runs/debiased --batch-size 16
    # several machines
    torchrun --nnodes=4 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 train/pretrain.py ...
    # the official two-stage recipe: the scene adversary alone, then everything from there
    python train/pretrain.py --shards data/mk200 --out runs/stage1 --debias adv
    python train/pretrain.py --shards data/mk200 --out runs/stage2 --debias adv,ent --init runs/stage1/best.pt --lr 1e-4
    # the official code's two stages (its backbone, heads, optimizer, head warm-up and entropy loss; README)
    python train/pretrain.py --shards data/mk200 --out runs/sdn1 --recipe official-stage1 --init resnet-18-kinetics.pth --no-init-head
    python train/pretrain.py --shards data/mk200 --out runs/sdn2 --recipe official --init runs/sdn1/best.pt
    # CPU scale (tests, the demo): a narrow network on small clips
    python train/pretrain.py --shards data/synth-shards --out runs/cpu --device cpu --loader torch \\
        --arch r3d18-w16 --input rgbdiff --size 56 --batch-size 16 --optimizer adamw --max-steps 400

Every iteration with --schedule alternate (the paper): (a) an optimizer step on the action
cross-entropy plus the scene adversary (scene head behind a gradient reversal layer of strength
--adv-lambda, trained on the 365-dim pseudo labels) over the original clip; (b) a step that
maximises the entropy of the action prediction over the same clip with its humans masked out.
--schedule joint: one forward of both clips, one backward of the sum, one step. With the
adversary off (--debias none or ent) the scene head is still trained, on detached features:
its accuracy then measures how much scene the features hold.

--batch-size is per process; --lr is for a global batch of 32 and scales linearly with the
global batch. Outputs in --out: config.json, metrics.jsonl, tb/ (TensorBoard), checkpoint.pt
(latest, atomic) and best.pt (best validation top-1). Running the same command again resumes
from checkpoint.pt at the exact batch; SIGTERM or Ctrl-C writes a checkpoint and exits with code
143 or 130. A non-finite loss stops the run (exit 1) with the step and the batch's keys, without
saving: the last checkpoint stays the last good one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from shards.cli import (Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, config_problems,
                        entry_point, parse_config, refuse)
from shards.loader import build_loader, cores_per_process
from shards.loader.sampling import CROPS
from train import checkpoint
from train.distributed import all_sum, cleanup, print0, setup_distributed
from train.metrics import MetricLog
from train.model import ARCHS, INPUTS, SCENE_HEADS, MaskHead, SceneHead, build_backbone
from train.methods import METHODS, build_method
from train.scene_loss import SCENE_LABELS, scene_loss, scene_targets
from train.step import ADVERSARIES, SCHEDULES, DebiasStep, Losses

TERMINATED = 128 + signal.SIGTERM  # 143: the exit code after SIGTERM (a checkpoint was written)
INTERRUPTED = 128 + signal.SIGINT  # 130: the same after Ctrl-C


# what vt-vl-lab/SDN's README commands run with (README "Differences from the official code"): the
# full model, and its stage 1 (the scene adversary alone at alpha 1.0 after a 5-epoch warm-up of the
# new layers at 1e-2), from which the full model starts
OFFICIAL_RECIPE = {"arch": "hara-r18", "input": "rgb255", "short_videos": "loop", "crop": "corner",
                   "scene_head": "official", "entropy": "official", "masked_batches": "separate", "dampening": 0.9,
                   "lr": 1e-4, "lr_patience": 10, "plateau": "ce+scene"}
OFFICIAL_STAGE1 = {**{k: v for k, v in OFFICIAL_RECIPE.items() if k not in ("entropy", "masked_batches")},
                   "debias": "adv", "adv_lambda": 1.0, "warmup_epochs": 5, "warmup_lr": 1e-2}
RECIPES = {"paper": {}, "official": OFFICIAL_RECIPE, "official-stage1": OFFICIAL_STAGE1}


@dataclass
class Config:
    shards: str                              # shard folder written by prep-shards
    out: str                                 # run folder
    train_split: str = "train"               # split to train on
    val_split: str = "val"                   # split validated on every epoch
    arch: Literal[tuple(ARCHS)] = "r3d18"    # the paper's r3d18, the narrow r3d18-w32 / -w16 for CPUs, or the official code's hara-r18
    input: Literal[INPUTS] = "rgb"           # rgbdiff: clip + frame differences; rgb255: 0-255 minus the ActivityNet mean (official)
    frames: PositiveInt = 16                 # frames per clip
    size: PositiveInt = 112                  # crop side in pixels
    stride: PositiveInt = 1                  # frame step inside a clip
    short_videos: Literal["last", "loop"] = "last"  # a video shorter than a clip: its last frame repeated, or looped (official)
    crop: Literal[CROPS] = "random"          # random: a size crop of the stored frames; corner: the official multiscale corner crop, resized
    batch_size: PositiveInt = 32             # clips per process and iteration
    epochs: PositiveInt = 100                # passes over the training split
    max_steps: NonNegativeInt = 0            # stop after this many iterations in all (0: run the epochs)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: the paper's (momentum 0.9)
    dampening: Fraction = 0.0                # SGD momentum dampening (the official code's 0.9: steps 10x smaller)
    lr: PositiveFloat = 1e-3                 # learning rate for a global batch of 32 (scaled linearly)
    weight_decay: NonNegativeFloat = 1e-5    # the paper's
    lr_patience: NonNegativeInt = 5          # epochs without a better validation loss before lr /= 10
    warmup_epochs: NonNegativeInt = 0        # the first N epochs train only the new layers: action fc, scene (and mask) head
    warmup_lr: PositiveFloat = 1e-2          # their learning rate meanwhile (global batch 32, scaled; own plateau schedule)
    plateau: Literal["ce", "ce+scene"] = "ce"  # the validation loss watched: CE, or CE + scene loss (the official code)
    recipe: Literal[tuple(RECIPES)] = "paper"  # official(-stage1): every flag of RECIPES[recipe] still at its default
    method: Literal[("sdn", *METHODS)] = "sdn"  # sdn (the paper), or a later method (train/methods/)
    debias: Literal["none", "adv", "ent", "adv,ent"] = "adv,ent"  # SDN's losses: none, or the paper's ablation
    schedule: Literal[SCHEDULES] = "alternate"  # alternate: two steps per iteration (the paper); joint: one
    adv_lambda: NonNegativeFloat = 0.5       # gradient reversal strength (confusion: the weight of its loss)
    adversary: Literal[ADVERSARIES] = "reversal"  # reversal: the paper's; confusion: features trained to make the scene head uniform
    ent_weight: NonNegativeFloat = 1.0       # weight of the entropy loss
    entropy: Literal["paper", "official"] = "paper"  # official: on a head of its own behind a gradient reversal
    masked_batches: Literal["same", "separate"] = "same"  # the entropy loss on the batch's masked copy, or on batches of its own (official)
    scene_labels: Literal[SCENE_LABELS] = "soft"  # soft: the averaged Places365 softmax; hard: its argmax; vote: the most frequent of the frames' argmax (official)
    scene_head: Literal[SCENE_HEADS] = "paper"  # paper: 4 Linear layers; official: BatchNorm1d after each hidden one
    mask_shape: Literal["box", "tube"] = "box"  # box: each frame's boxes (the paper); tube: the clip's union
    mask_threshold: Fraction = 0.3           # detector score from which a box is masked
    consistency: NonNegativeFloat = 0.0      # be, fame, stillmix: MSE of transformed to original features (0: CE only)
    stillmix_bank: str = ""                  # stillmix: a frame bank of train/methods/stillmix_bank.py ('': random variant)
    device: Literal["cuda", "cpu"] = "cuda"  # where the model trains
    loader: Literal["dali", "torch"] = "dali"  # torch: the reference loader
    workers: NonNegativeInt = 4              # DALI threads or DataLoader workers per process
    threads: NonNegativeInt = 0              # torch CPU threads per process (0: the cores shared out)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    channels_last: bool = False              # channels-last-3d memory format (faster convolutions on recent GPUs)
    compile: bool = False                    # torch.compile the backbone
    seed: NonNegativeInt = 0                 # seeds the initial weights and the data order
    resume: bool = True                      # continue from OUT/checkpoint.pt when there is one
    init: str = ""                           # start from the weights of this checkpoint (e.g. stage 1's best.pt)
    init_head: bool = True                   # also take the action and scene heads from --init (off: a new label set)
    freeze_backbone: bool = False            # train the action head only, on frozen features (a linear probe)
    log_every: PositiveInt = 10              # iterations between metric lines
    val_every: NonNegativeInt = 1            # validate every N epochs (always after the last; 0: never, no best.pt)
    ckpt_every: PositiveInt = 200            # iterations between checkpoints (also at every epoch end)
    log_samples: bool = False                # write the keys each process trained on to OUT/samples-rank<r>.txt
    skip_bad_samples: bool = False           # leave damaged samples out (counted) instead of stopping at the first


def with_recipe(cfg: Config) -> Config:
    """--recipe official(-stage1): the recipe's values for the flags still at their defaults (a flag
    given with another value wins; one given with the default value cannot be told apart)."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    recipe = RECIPES[cfg.recipe]
    return dataclasses.replace(cfg, **{k: v for k, v in recipe.items() if getattr(cfg, k) == defaults[k]}) \
        if recipe else cfg


def check(cfg: Config) -> None:
    """Every value as its flag's type checks it (a Config built in code skipped argparse), and
    the combinations no single flag's type can check."""
    problems = config_problems(cfg)  # a config built in code: the checks its command line makes
    if cfg.loader == "dali" and cfg.workers < 1:
        problems.append(f"--workers {cfg.workers}: the DALI loader needs at least 1 thread")
    if cfg.init and not Path(cfg.init).is_file():
        problems.append(f"--init {cfg.init}: no such file")
    if cfg.entropy == "official" and ("ent" not in cfg.debias or cfg.method != "sdn"):
        problems.append(f"--entropy official moves SDN's entropy loss, which this run does not have "
                        f"(--method {cfg.method} --debias {cfg.debias})")
    if cfg.masked_batches != "same" and ("ent" not in cfg.debias or cfg.method != "sdn"):
        problems.append(f"--masked-batches {cfg.masked_batches} feeds SDN's entropy loss, which this run does not have "
                        f"(--method {cfg.method} --debias {cfg.debias})")
    if cfg.adversary != "reversal" and ("adv" not in cfg.debias or cfg.method != "sdn"):
        problems.append(f"--adversary {cfg.adversary} changes SDN's scene adversary, which this run does not have "
                        f"(--method {cfg.method} --debias {cfg.debias})")
    if cfg.dampening and cfg.optimizer != "sgd":
        problems.append(f"--dampening is for --optimizer sgd, not {cfg.optimizer}")
    if cfg.consistency and cfg.method not in ("be", "fame", "stillmix"):
        problems.append(f"--consistency applies to --method be, fame or stillmix, not {cfg.method}")
    if cfg.stillmix_bank and (cfg.method != "stillmix" or not Path(cfg.stillmix_bank).is_file()):
        problems.append(f"--stillmix-bank {cfg.stillmix_bank}: " + (
            "no such file" if cfg.method == "stillmix" else f"a bank is for --method stillmix, not {cfg.method}"))
    refuse("pretrain", problems)


def make_optimizer(cfg: Config, params: list, lr: float) -> tuple:
    """(optimizer, its plateau scheduler): SGD momentum 0.9 (the paper's) or AdamW."""
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, dampening=cfg.dampening, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.lr_patience)


def check_fits(cfg: Config, state: dict, path: Path, resuming: bool) -> None:
    """Refuse a checkpoint whose weights do not fit this run, before any data is read. --init
    needs the same network; a resumed run also the same optimizer and trainable parameters."""
    heads = ("scene_head",) if resuming or cfg.init_head else ()
    keys = ("arch", "input", *heads, *(("optimizer", "freeze_backbone", "entropy", "warmup_epochs", "masked_batches")
                                       if resuming else ()))
    older = {"scene_head": "paper", "entropy": "paper", "warmup_epochs": 0, "masked_batches": "same"}  # before these flags
    theirs = lambda k: state["config"].get(k, older.get(k))
    differ = [k for k in keys if theirs(k) != getattr(cfg, k)]
    if differ:
        flags = lambda values: " ".join(f"--{k.replace('_', '-')} {values(k)}" for k in differ)
        todo = "run the same command again, or use another --out" if resuming else "give this run the same flags"
        raise SystemExit(f"pretrain: {path} was trained with {flags(theirs)}, this run has "
                         f"{flags(lambda k: getattr(cfg, k))}: {todo}")


def with_masked_batches(loader, masked_loader):
    """The loader's batches; with a masked loader (--masked-batches separate), each with the masked
    pass's inputs taken from that loader's batch instead (other videos, all passing the filter)."""
    if masked_loader is None:
        return iter(loader)
    return ({**batch, **{k: other[k] for k in ("masked", "mask_ok", "has_human")}}
            for batch, other in zip(loader, masked_loader))


def refuse_missing_votes(loaders: list) -> None:
    """--scene-labels vote needs every frame's scene argmax, which shards hold since they were
    stored (FORMAT.md `scene_votes`), and only with a scene model (not --scene-model none)."""
    for loader in loaders:
        index = loader.index
        lacking = np.flatnonzero(index.scene_vote < 0)
        if len(lacking):
            raise SystemExit(f"pretrain: --scene-labels vote: {len(lacking)} of {len(index)} {index.split} videos have "
                             f"no per-frame scene votes (first: {index.where(int(lacking[0]))}); shards written before "
                             "they were stored, or with --scene-model none, lack them: run prep-shards again into a new "
                             "--out, or use --scene-labels soft or hard")


def make_writable(out: Path) -> None:
    """Create --out and prove that it takes files, before any work that would be lost."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise SystemExit(f"pretrain: --out {out} is not writable ({err.strerror or err})") from None


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM (a scheduler) and SIGINT (Ctrl-C) ask the loop to write a checkpoint and exit;
    a second Ctrl-C stops at once. The previous handlers come back afterwards."""
    stop = {"signal": 0}

    def handler(signum, _frame):
        stop["signal"] = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@entry_point("pretrain")
def main(argv: list[str] | None = None) -> int:
    return run(parse_config(Config, argv, "pretrain", __doc__.splitlines()[0]))


def run(cfg: Config) -> int:
    """Pretrain (or resume) as `cfg` says; the exit code of the command line (0: done)."""
    cfg = with_recipe(cfg)
    check(cfg)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not cfg.resume:
        raise SystemExit(f"pretrain: {ckpt_path} exists and --no-resume was given: use another --out or delete it")
    # checkpoints first: a foreign, damaged or unfitting file is refused before any data is read
    init = checkpoint.load(cfg.init) if cfg.init else None
    state = checkpoint.load(ckpt_path) if ckpt_path.exists() else None
    for path, loaded, resuming in ((cfg.init, init, False), (ckpt_path, state, True)):
        if loaded is not None:
            check_fits(cfg, loaded, Path(path), resuming)
    make_writable(out)
    dist = setup_distributed(cfg.device)
    if dist.device.type == "cpu":  # local processes must not oversubscribe the cores (benchmarks/README.md, Train step)
        torch.set_num_threads(cfg.threads or cores_per_process())
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    adv, ent = (cfg.method == "sdn" and loss in cfg.debias for loss in ("adv", "ent"))
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if dist.device.type == "cuda" else "fp32")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    # a method's own files (a StillMix bank) are read before the data, so a bad one is refused first
    method = build_method(cfg.method, dist.device, size=cfg.size, consistency=cfg.consistency, bank=cfg.stillmix_bank)

    # ---- data
    common = dict(backend=cfg.loader, frames=cfg.frames, size=cfg.size, stride=cfg.stride, device=dist.device.type,
                  seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, num_threads=cfg.workers,
                  mask_shape=cfg.mask_shape, mask_threshold=cfg.mask_threshold, skip_bad=cfg.skip_bad_samples,
                  loop=cfg.short_videos == "loop", crop=cfg.crop)
    train_loader = build_loader(cfg.shards, cfg.train_split, batch_size=cfg.batch_size, train=True, **common)
    # the val split need not exist when nothing validates (a caller that evaluates afterwards)
    val_loader = build_loader(cfg.shards, cfg.val_split, batch_size=cfg.batch_size, train=False, **common) \
        if cfg.val_every else None
    steps_per_epoch = len(train_loader)  # a split too small for one batch per rank is refused here, before any output
    kept, total = train_loader.mask_filter_kept
    masked_loader = None
    if cfg.masked_batches == "separate":  # the official code's second loader, zipped: an epoch ends with the shorter
        masked_loader = build_loader(cfg.shards, cfg.train_split, batch_size=cfg.batch_size, train=True,
                                     filtered_only=True, **common)
        try:
            steps_per_epoch = min(steps_per_epoch, len(masked_loader))
        except ValueError:
            raise SystemExit(f"pretrain: --masked-batches separate: {kept} of {total} {cfg.train_split} videos pass the "
                             f"people filter, too few for a batch of {cfg.batch_size} per rank ({dist.world_size} "
                             "rank(s)): use --masked-batches same or a smaller --batch-size") from None
        train_loader.max_batches = masked_loader.max_batches = steps_per_epoch
    if cfg.scene_labels == "vote":
        refuse_missing_votes([train_loader, *([val_loader] if val_loader else [])])
    classes = train_loader.index.manifest["classes"]
    if state is not None and state["classes"] != classes:
        raise SystemExit(f"pretrain: {ckpt_path} was trained on other classes than {cfg.shards} {cfg.train_split} "
                         "holds: use another --out")
    if init is not None and cfg.init_head and len(init["classes"]) != len(classes):
        raise SystemExit(f"pretrain: --init {cfg.init} has {len(init['classes'])} action classes, {cfg.train_split} "
                         f"{len(classes)}: add --no-init-head to start a new action head")
    global_batch = cfg.batch_size * dist.world_size
    lr = cfg.lr * global_batch / 32
    resolved = {**dataclasses.asdict(cfg), "world_size": dist.world_size, "global_batch": global_batch,
                "effective_lr": lr, "precision": precision, "classes": classes,
                "train_videos": total, "masked_pass_videos": kept}
    print0(json.dumps(resolved, indent=1))
    print0(f"masked pass: {kept} of {total} training videos pass the people filter")
    for loader in (train_loader, val_loader):
        if loader is not None and loader.index.skipped:
            where, why = loader.index.skipped[0]
            print0(f"--skip-bad-samples: {len(loader.index.skipped)} damaged sample(s) of {loader.index.split} left out; "
                   f"first: {where}: {why}")
    if dist.main:
        (out / "config.json").write_text(json.dumps(resolved, indent=1) + "\n")

    # ---- model
    backbone = build_backbone(cfg.arch, len(classes), cfg.input).to(dist.device)
    scene_head = SceneHead(backbone.feature_dim, layout=cfg.scene_head).to(dist.device)
    mask_head = MaskHead(backbone.feature_dim, len(classes)).to(dist.device) if cfg.entropy == "official" else None
    if init is not None:
        checkpoint.init_weights(init, cfg.init, backbone, scene_head, cfg.init_head)
        print0(f"initialised from {cfg.init} (step {init['step']})")
    if cfg.freeze_backbone:
        for name, param in backbone.named_parameters():
            param.requires_grad = name.startswith("fc.")
    if cfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last_3d)
    heads = [scene_head, *([mask_head] if mask_head is not None else [])]
    params = [p for m in (backbone, *heads) for p in m.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(cfg, params, lr)
    # --warmup-epochs: the new layers alone, with an optimizer and plateau schedule of their own (the
    # official code's first_optimizer); the backbone's BatchNorm statistics still follow the data
    new_layers = [p for n, p in backbone.named_parameters() if n.startswith("fc.")] + \
        [p for m in heads for p in m.parameters()]
    warmup = make_optimizer(cfg, new_layers, cfg.warmup_lr * global_batch / 32) if cfg.warmup_epochs else None
    phase = lambda at_epoch: warmup if warmup and at_epoch < cfg.warmup_epochs else (optimizer, scheduler)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16")
    step, epoch, start_batch, best_top1, metrics_bytes = 0, 0, 0, -1.0, 0
    if state is not None:
        step, epoch, start_batch, best_top1, metrics_bytes = checkpoint.resume(
            state, ckpt_path, backbone, scene_head, optimizer, scheduler, scaler, mask_head, warmup)
        print0(f"resumed from {ckpt_path}: epoch {epoch}, batch {start_batch}, step {step}")
    net, head, masked_head = backbone, scene_head, mask_head  # what the training passes call: DDP-wrapped when distributed
    if cfg.compile:
        net = torch.compile(net)
    if dist.world_size > 1:
        ids = [dist.local_rank] if dist.device.type == "cuda" else None
        net, head = DDP(net, device_ids=ids), DDP(head, device_ids=ids)
        masked_head = DDP(mask_head, device_ids=ids) if mask_head is not None else None
    amp = (lambda: torch.autocast(dist.device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    saved_step = state["step"] if state is not None else None  # of the checkpoint on disk

    def save(path: Path, at_epoch: int, at_batch: int) -> None:
        nonlocal saved_step
        if dist.main:
            checkpoint.save({"backbone": backbone.state_dict(), "scene_head": scene_head.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             **({"warmup_optimizer": warmup[0].state_dict(),
                                 "warmup_scheduler": warmup[1].state_dict()} if warmup else {}),
                             "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(), "step": step,
                             "epoch": at_epoch, "batch_in_epoch": at_batch, "best_top1": best_top1,
                             "metrics_bytes": log.position(),  # what a resumed run keeps of metrics.jsonl
                             "config": resolved, "classes": classes,
                             **({"mask_head": mask_head.state_dict()} if mask_head is not None else {})}, path)
        if path == ckpt_path:
            saved_step = step

    train_step = DebiasStep(net, head, optimizer, scaler, Losses(adv, ent, cfg.adv_lambda, cfg.ent_weight,
                                                              cfg.scene_labels, cfg.schedule,
                                                              adversary=cfg.adversary),
                            amp, cfg.channels_last, method, cfg.seed, dist.rank, masked_head)

    def diverged_message(losses: dict, keys: list[str]) -> str:
        where = f" on rank {dist.rank}" if dist.world_size > 1 else ""
        kept = f"{ckpt_path} (step {saved_step}) is the last good checkpoint" if saved_step is not None \
            else "no checkpoint was written yet"
        return (f"pretrain: error: non-finite loss at step {step}{where} ("
                + ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
                + f") on the batch of {', '.join(keys)}; stopped without saving: {kept}")

    # ---- loop
    log = MetricLog(out, dist.main, keep_bytes=metrics_bytes)
    samples_log = open(out / f"samples-rank{dist.rank}.txt", "a") if cfg.log_samples else None
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    bar = tqdm(total=total_steps, initial=step, unit="it", disable=not dist.main, dynamic_ncols=True)
    finished = step >= total_steps
    with stop_on_signals() as stop, contextlib.closing(log), contextlib.closing(bar):
        while epoch < cfg.epochs and not finished:
            train_loader.set_epoch(epoch, start_batch)
            if masked_loader is not None:
                masked_loader.set_epoch(epoch, start_batch)
            train_step.optimizer, active_scheduler = phase(epoch)
            backbone.train(not cfg.freeze_backbone), scene_head.train()  # a probe keeps BatchNorm statistics fixed
            batch_in_epoch, wait, tick = start_batch, 0.0, time.perf_counter()
            for batch in with_masked_batches(train_loader, masked_loader):
                fetched = time.perf_counter()
                losses = train_step(batch, step)
                finite = all(math.isfinite(v) for v in losses.values())
                # one collective per step: has any rank diverged, or been asked to stop
                diverged, signalled = all_sum([float(not finite), float(stop["signal"] != 0)], dist.device)
                if samples_log:
                    samples_log.write(f"{step} {' '.join(batch['key'])}\n")
                    samples_log.flush()
                step += 1
                batch_in_epoch += 1
                if diverged:  # the weights are spoiled: keep the last checkpoint as it is
                    if not finite:
                        tqdm.write(diverged_message(losses, batch["key"]), file=sys.stderr)  # a line of its own
                    return 1
                now = time.perf_counter()
                wait += fetched - tick
                if step % cfg.log_every == 0 or step == total_steps:
                    elapsed = now - tick
                    record = {**losses, "lr": train_step.optimizer.param_groups[0]["lr"], "epoch": epoch,
                              "clips_per_s": global_batch / elapsed, "data_wait": (fetched - tick) / elapsed}
                    log.log("train", step, **record)
                    bar.set_postfix(ep=epoch, ce=f"{losses['ce']:.3f}", scene=f"{losses['scene']:.3f}",
                                    ent=f"{losses['entropy']:.3f}", clips_s=f"{record['clips_per_s']:.1f}")
                bar.update()
                tick = time.perf_counter()
                if signalled:
                    save(ckpt_path, epoch, batch_in_epoch)
                    signum = stop["signal"] or signal.SIGTERM  # another rank's signal: exit as if terminated
                    print0(f"\n{signal.Signals(signum).name}: checkpoint written at step {step}; "
                           "run the same command to resume")
                    return 128 + signum
                if step % cfg.ckpt_every == 0:
                    save(ckpt_path, epoch, batch_in_epoch)
                if step >= total_steps:
                    finished = True
                    break
            if finished and batch_in_epoch < steps_per_epoch:
                save(ckpt_path, epoch, batch_in_epoch)  # stopped mid-epoch by --max-steps
                break
            last = finished or epoch + 1 == cfg.epochs
            if not cfg.val_every or ((epoch + 1) % cfg.val_every and not last):
                epoch, start_batch = epoch + 1, 0
                save(ckpt_path, epoch, 0)
                continue
            val = validate(val_loader, backbone, scene_head, amp, dist.device, cfg.scene_labels)
            active_scheduler.step(val["loss"] + (val["scene_loss"] if cfg.plateau == "ce+scene" else 0.0))
            epoch, start_batch = epoch + 1, 0
            log.log("val", step, epoch=epoch, **val)
            print0(f"\nepoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
            if val["top1"] > best_top1:
                best_top1 = val["top1"]
                save(out / "best.pt", epoch, 0)
            save(ckpt_path, epoch, 0)
    if train_loader.skipped_clips:
        where, why = train_loader.skipped_clips[0]
        print0(f"--skip-bad-samples: {len(train_loader.skipped_clips)} clip(s) with damaged video left out of their "
               f"batches on this rank; first: {where}: {why}")
    return 0


@torch.no_grad()
def validate(loader, backbone, scene_head, amp, device, scene_labels: str = "soft") -> dict:
    """Validation on every rank's share, summed over ranks: loss, top-1/top-5, the scene head's
    loss and accuracy against the pseudo labels (their argmax), and top-1 on human-masked clips."""
    backbone.eval(), scene_head.eval()
    sums = [0.0] * 7  # clips, loss, top1, top5, scene, masked top1, scene loss
    for batch in loader:
        with amp():
            logits, features = backbone(batch["clip"], with_features=True)
            scene_logits = scene_head(features)
            masked_logits = backbone(batch["masked"])
        label = batch["label"]
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        sums[0] += len(label)
        sums[1] += F.cross_entropy(logits.float(), label, reduction="sum").item()
        sums[2] += (top5[:, 0] == label).sum().item()
        sums[3] += (top5 == label[:, None]).any(1).sum().item()
        target = scene_targets(batch, scene_labels)
        sums[4] += (scene_logits.argmax(1) == (target if target.dim() == 1 else target.argmax(1))).sum().item()
        sums[5] += (masked_logits.argmax(1) == label).sum().item()
        sums[6] += scene_loss(scene_logits, target).item() * len(label)
    n, loss, top1, top5, scene, masked, scene_sum = all_sum(sums, device)
    backbone.train(), scene_head.train()
    n = max(n, 1)
    return {"loss": loss / n, "top1": top1 / n, "top5": top5 / n, "scene_acc": scene / n, "masked_top1": masked / n,
            "scene_loss": scene_sum / n}


if __name__ == "__main__":
    code = main()
    cleanup()
    sys.exit(code)
