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
from checkpoint.pt at the exact batch; SIGTERM writes a checkpoint and exits with code 143.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from shards.loader import build_loader
from train import checkpoint
from train.config import parse_config
from train.distributed import all_sum, cleanup, print0, setup_distributed
from train.entropy_loss import entropy_loss
from train.gradient_reversal import reverse_gradient
from train.metrics import MetricLog
from train.model import ARCHS, SceneHead, build_backbone
from train.scene_loss import scene_loss

TERMINATED = 143  # 128 + SIGTERM


@dataclass
class Config:
    shards: str                    # shard folder written by prep-shards
    out: str                       # run folder
    train_split: str = "train"     # split to train on
    val_split: str = "val"         # split validated on every epoch
    arch: str = "r3d18"            # r3d18 (the paper), or the narrow r3d18-w32 / r3d18-w16 for CPUs
    input: str = "rgb"             # rgb, or rgbdiff (clip plus frame differences; not exportable to torchvision)
    frames: int = 16               # frames per clip
    size: int = 112                # crop side in pixels
    stride: int = 1                # frame step inside a clip
    batch_size: int = 32           # clips per process and iteration
    epochs: int = 100              # passes over the training split
    max_steps: int = 0             # stop after this many iterations in all (0: run the epochs)
    optimizer: str = "sgd"         # sgd (the paper: momentum 0.9) or adamw
    lr: float = 1e-3               # learning rate for a global batch of 32 (scaled linearly)
    weight_decay: float = 1e-5     # the paper's
    lr_patience: int = 5           # epochs without a better validation loss before lr /= 10
    debias: str = "adv,ent"        # none, adv, ent or adv,ent (the paper's ablation)
    schedule: str = "alternate"    # alternate (two steps per iteration, the paper) or joint (one)
    adv_lambda: float = 0.5        # gradient reversal strength
    ent_weight: float = 1.0        # weight of the entropy loss
    scene_labels: str = "soft"     # soft (averaged Places365 softmax) or hard (its argmax)
    mask_shape: str = "box"        # box (each frame's boxes, the paper) or tube (the clip's union)
    mask_threshold: float = 0.3    # detector score from which a box is masked
    device: str = "cuda"           # cuda or cpu
    loader: str = "dali"           # dali or torch (the reference loader)
    workers: int = 4               # DALI threads or DataLoader workers per process
    threads: int = 0               # torch CPU threads per process (0: the cores divided among the local processes)
    precision: str = "auto"        # auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16
    channels_last: bool = False    # channels-last-3d memory format (faster convolutions on recent GPUs)
    compile: bool = False          # torch.compile the backbone
    seed: int = 0                  # seeds the initial weights and the data order
    resume: bool = True            # continue from OUT/checkpoint.pt when there is one
    init: str = ""                 # start from the weights of this checkpoint (e.g. stage 1's best.pt)
    init_head: bool = True         # also take the action and scene heads from --init (off: a new label set)
    freeze_backbone: bool = False  # train the action head only, on frozen features (a linear probe)
    log_every: int = 10            # iterations between metric lines
    val_every: int = 1             # validate every N epochs (always after the last; 0: never, no best.pt)
    ckpt_every: int = 200          # iterations between checkpoints (also at every epoch end)
    log_samples: bool = False      # write the keys each process trained on to OUT/samples-rank<r>.txt


def check(cfg: Config) -> None:
    problems = []
    if cfg.arch not in ARCHS:
        problems.append(f"--arch {cfg.arch}: choose from {', '.join(ARCHS)}")
    if not set(cfg.debias.split(",")) <= {"none", "adv", "ent"} or ("none" in cfg.debias and cfg.debias != "none"):
        problems.append(f"--debias {cfg.debias}: use none, adv, ent or adv,ent")
    for name, allowed in (("schedule", ("alternate", "joint")), ("optimizer", ("sgd", "adamw")),
                          ("scene_labels", ("soft", "hard")), ("device", ("cuda", "cpu")), ("loader", ("dali", "torch")),
                          ("precision", ("auto", "fp32", "bf16", "fp16")), ("input", ("rgb", "rgbdiff")),
                          ("mask_shape", ("box", "tube"))):
        if getattr(cfg, name) not in allowed:
            problems.append(f"--{name.replace('_', '-')} {getattr(cfg, name)}: choose from {', '.join(allowed)}")
    if cfg.val_every < 0:
        problems.append(f"--val-every {cfg.val_every}: use a number of epochs, or 0 for never")
    if cfg.init and not Path(cfg.init).is_file():
        problems.append(f"--init {cfg.init}: no such file")
    if problems:
        raise SystemExit("pretrain: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(Config, argv, __doc__.splitlines()[0])
    check(cfg)
    dist = setup_distributed(cfg.device)
    if dist.device.type == "cpu":  # local processes must not oversubscribe the cores: spinning threads are many times slower
        # measured (2 cores, DALI loader with 2 threads, w16 model): 2 torch threads 17.2 clips/s, 1 thread 9.3
        cores = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(cfg.threads or max(1, cores))
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not cfg.resume:
        raise SystemExit(f"pretrain: {ckpt_path} exists and --no-resume was given: use another --out or delete it")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    adv, ent = "adv" in cfg.debias, "ent" in cfg.debias
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if dist.device.type == "cuda" else "fp32")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    # ---- data
    common = dict(backend=cfg.loader, frames=cfg.frames, size=cfg.size, stride=cfg.stride, device=dist.device.type,
                  seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, num_threads=cfg.workers,
                  mask_shape=cfg.mask_shape, mask_threshold=cfg.mask_threshold)
    train_loader = build_loader(cfg.shards, cfg.train_split, batch_size=cfg.batch_size, train=True, **common)
    # the val split need not exist when nothing validates (a caller that evaluates afterwards)
    val_loader = build_loader(cfg.shards, cfg.val_split, batch_size=cfg.batch_size, train=False, **common) \
        if cfg.val_every else None
    classes = train_loader.index.manifest["classes"]
    kept, total = train_loader.mask_filter_kept
    global_batch = cfg.batch_size * dist.world_size
    lr = cfg.lr * global_batch / 32
    resolved = {**dataclasses.asdict(cfg), "world_size": dist.world_size, "global_batch": global_batch,
                "effective_lr": lr, "precision": precision, "classes": classes,
                "train_videos": total, "masked_pass_videos": kept}
    print0(json.dumps(resolved, indent=1))
    print0(f"masked pass: {kept} of {total} training videos pass the people filter")
    out.mkdir(parents=True, exist_ok=True)
    if dist.main:
        (out / "config.json").write_text(json.dumps(resolved, indent=1) + "\n")

    # ---- model
    backbone = build_backbone(cfg.arch, len(classes), cfg.input).to(dist.device)
    scene_head = SceneHead(backbone.feature_dim).to(dist.device)
    if cfg.init:
        init = checkpoint.load(cfg.init)
        if cfg.init_head:
            backbone.load_state_dict(init["backbone"])
            scene_head.load_state_dict(init["scene_head"])
        else:  # everything but the action classifier, whose classes differ
            weights = {k: v for k, v in init["backbone"].items() if not k.startswith("fc.")}
            missing = backbone.load_state_dict(weights, strict=False).missing_keys
            assert set(missing) == {"fc.weight", "fc.bias"}, missing
        print0(f"initialised from {cfg.init} (step {init['step']})")
    if cfg.freeze_backbone:
        for name, param in backbone.named_parameters():
            param.requires_grad = name.startswith("fc.")
    if cfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last_3d)
    params = [p for p in list(backbone.parameters()) + list(scene_head.parameters()) if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.lr_patience)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16")
    step, epoch, start_batch, best_top1 = 0, 0, 0, -1.0
    if ckpt_path.exists():
        state = checkpoint.load(ckpt_path)
        backbone.load_state_dict(state["backbone"])
        scene_head.load_state_dict(state["scene_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        step, epoch, start_batch, best_top1 = state["step"], state["epoch"], state["batch_in_epoch"], state["best_top1"]
        print0(f"resumed from {ckpt_path}: epoch {epoch}, batch {start_batch}, step {step}")
    net, head = backbone, scene_head  # what the training passes call: DDP-wrapped when distributed
    if cfg.compile:
        net = torch.compile(net)
    if dist.world_size > 1:
        ids = [dist.local_rank] if dist.device.type == "cuda" else None
        net, head = DDP(net, device_ids=ids), DDP(head, device_ids=ids)
    amp = (lambda: torch.autocast(dist.device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    def save(path: Path, at_epoch: int, at_batch: int) -> None:
        if dist.main:
            checkpoint.save({"backbone": backbone.state_dict(), "scene_head": scene_head.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(), "step": step,
                             "epoch": at_epoch, "batch_in_epoch": at_batch, "best_top1": best_top1,
                             "config": resolved, "classes": classes}, path)

    def optimize(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def adversary_pass(logits, features, batch):
        scene_in = reverse_gradient(features, cfg.adv_lambda) if adv else features.detach()
        return F.cross_entropy(logits.float(), batch["label"]), scene_loss(head(scene_in), batch["scene"], cfg.scene_labels == "hard")

    def train_step(batch) -> dict:
        clip = batch["clip"]
        if cfg.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        weight = batch["mask_ok"] & batch["has_human"]
        ent_loss = torch.zeros((), device=dist.device)
        if cfg.schedule == "alternate":
            with amp():
                ce, adv_loss = adversary_pass(*net(clip, with_features=True), batch)
            optimize(ce + adv_loss)
            if ent:  # every rank runs this pass (DDP), a batch without people has weight 0
                with amp():
                    ent_loss = entropy_loss(net(batch["masked"]), weight)
                optimize(cfg.ent_weight * ent_loss)
        else:
            x = torch.cat([clip, batch["masked"]]) if ent else clip
            with amp():
                logits, features = net(x, with_features=True)
                n = len(clip)
                ce, adv_loss = adversary_pass(logits[:n], features[:n], batch)
                if ent:
                    ent_loss = entropy_loss(logits[n:], weight)
            optimize(ce + adv_loss + cfg.ent_weight * ent_loss)
        return {"ce": ce.item(), "scene": adv_loss.item(), "entropy": ent_loss.item()}

    # ---- loop
    stop = {"sigterm": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
    log = MetricLog(out, dist.main)
    samples_log = open(out / f"samples-rank{dist.rank}.txt", "a") if cfg.log_samples else None
    total_steps = cfg.max_steps or cfg.epochs * len(train_loader)
    bar = tqdm(total=total_steps, initial=step, unit="it", disable=not dist.main, dynamic_ncols=True)
    finished = step >= total_steps
    while epoch < cfg.epochs and not finished:
        train_loader.set_epoch(epoch, start_batch)
        backbone.train(not cfg.freeze_backbone), scene_head.train()  # a probe keeps BatchNorm statistics fixed
        batch_in_epoch, wait, tick = start_batch, 0.0, time.perf_counter()
        for batch in train_loader:
            fetched = time.perf_counter()
            losses = train_step(batch)
            if samples_log:
                samples_log.write(f"{step} {' '.join(batch['key'])}\n")
                samples_log.flush()
            step += 1
            batch_in_epoch += 1
            now = time.perf_counter()
            wait += fetched - tick
            if step % cfg.log_every == 0 or step == total_steps:
                elapsed = now - tick
                record = {**losses, "lr": optimizer.param_groups[0]["lr"], "epoch": epoch,
                          "clips_per_s": global_batch / elapsed, "data_wait": (fetched - tick) / elapsed}
                log.log("train", step, **record)
                bar.set_postfix(ep=epoch, ce=f"{losses['ce']:.3f}", scene=f"{losses['scene']:.3f}",
                                ent=f"{losses['entropy']:.3f}", clips_s=f"{record['clips_per_s']:.1f}")
            bar.update()
            tick = time.perf_counter()
            if all_sum([float(stop["sigterm"])], dist.device)[0] > 0:
                save(ckpt_path, epoch, batch_in_epoch)
                print0(f"\nSIGTERM: checkpoint written at step {step}; run the same command to resume")
                return TERMINATED
            if step % cfg.ckpt_every == 0:
                save(ckpt_path, epoch, batch_in_epoch)
            if step >= total_steps:
                finished = True
                break
        if finished and batch_in_epoch < len(train_loader):
            save(ckpt_path, epoch, batch_in_epoch)  # stopped mid-epoch by --max-steps
            break
        last = finished or epoch + 1 == cfg.epochs
        if not cfg.val_every or ((epoch + 1) % cfg.val_every and not last):
            epoch, start_batch = epoch + 1, 0
            save(ckpt_path, epoch, 0)
            continue
        val = evaluate(val_loader, backbone, scene_head, amp, dist.device)
        scheduler.step(val["loss"])
        epoch, start_batch = epoch + 1, 0
        log.log("val", step, epoch=epoch, **val)
        print0(f"\nepoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        if val["top1"] > best_top1:
            best_top1 = val["top1"]
            save(out / "best.pt", epoch, 0)
        save(ckpt_path, epoch, 0)
    bar.close()
    log.close()
    return 0


@torch.no_grad()
def evaluate(loader, backbone, scene_head, amp, device) -> dict:
    """Validation on every rank's share, summed over ranks: loss, top-1/top-5, the scene head's
    accuracy against the pseudo labels' argmax, and top-1 on human-masked clips."""
    backbone.eval(), scene_head.eval()
    sums = [0.0] * 6  # clips, loss, top1, top5, scene, masked top1
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
        sums[4] += (scene_logits.argmax(1) == batch["scene"].argmax(1)).sum().item()
        sums[5] += (masked_logits.argmax(1) == label).sum().item()
    n, loss, top1, top5, scene, masked = all_sum(sums, device)
    backbone.train(), scene_head.train()
    n = max(n, 1)
    return {"loss": loss / n, "top1": top1 / n, "top5": top5 / n, "scene_acc": scene / n, "masked_top1": masked / n}


if __name__ == "__main__":
    code = main()
    cleanup()
    sys.exit(code)
