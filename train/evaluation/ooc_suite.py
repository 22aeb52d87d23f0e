"""The out-of-context suite: does a model's prediction follow the actor, or the scene?

    python train/evaluation/evaluate.py --suite ooc --checkpoint runs/debiased/checkpoint.pt \\
        --shards data/synth-shards --split test --json ooc.json
    ... --backdrops ~/places365/val_256      # SCUBA on scene images instead of stripes

From any shards with boxes, on the fly (shards/loader/out_of_context.py says how each clip is
made, and that these are the box-based variants of HAT and SCUBA / SCUFO). Per video, the softmax
averaged over --clips clips, as evaluate does; each figure a fraction of the split's videos:

    top1             the clips as they are
    human_only_top1  only the boxes kept: higher = the model reads the actor
    background_top1  the boxes filled: lower = less reliance on the scene (chance = 1 / classes)
    swap_top1        the actor pasted on the background of a video of another class: its own label
    swap_background  ... the background video's label instead: the prediction followed the scene
    swap_same_top1   pasted on a video of the same class: what the pasting alone costs
    scuba_top1       the actor on a neutral backdrop (stripes, or --backdrops images)
    scufo_top1       one frame of that clip repeated: lower = less reliance on still appearance
    contrasted_acc   right on SCUBA and not on SCUFO (Li et al. 2023): right for the motion

Swap partners, backdrops and frozen frames are drawn from --seed, per video: every model
evaluated with one seed sees the same clips.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from shards.loader import build_loader
from shards.loader.masking import frame_fill
from shards.loader.out_of_context import (actor_swap, backdrop_of, frozen_frame, human_only, load_backdrops,
                                          normalise_image, scuba, scufo, swap_partners)
from shards.loader.preview import to_uint8
from train.evaluation.models import clip_settings, load_model, model_labels

VARIANTS = ("original", "human_only", "background", "swap", "swap_same", "scuba", "scufo")
OOC_METRICS = ("top1", "human_only_top1", "background_top1", "swap_top1", "swap_background", "swap_same_top1",
               "scuba_top1", "scufo_top1", "contrasted_acc")


def triples(n: int, clips: int, per_batch: int, diff: np.ndarray, same: np.ndarray) -> list[list[tuple[int, int]]]:
    """The decode plan: each clip of each video followed by the same clip of its two partners
    (itself where it has none), `per_batch` such triples a batch."""
    rows = [[(s, k), (int(diff[s]) if diff[s] >= 0 else s, k), (int(same[s]) if same[s] >= 0 else s, k)]
            for s in range(n) for k in range(clips)]
    return [[item for row in rows[i:i + per_batch] for item in row] for i in range(0, len(rows), per_batch)]


def variants(batch: dict, seed: int, images: Sequence[np.ndarray] | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A batch decoded from `triples` -> its videos and each variant's clips (B / 3, 3, T, H, W)."""
    clip, inside, masked = batch["clip"], batch["human"], batch["masked"]
    actor, diff, same = slice(0, None, 3), slice(1, None, 3), slice(2, None, 3)
    videos = batch["sample"][actor]
    _, _, t, h, _ = clip.shape
    backdrops = torch.stack([normalise_image(backdrop_of(int(v), seed, h, images), clip.device) for v in videos])
    on_backdrop = scuba(clip[actor], inside[actor], backdrops)
    frozen = torch.tensor([frozen_frame(int(v), seed, t) for v in videos])
    return videos, {
        "original": clip[actor],
        "human_only": human_only(clip[actor], frame_fill(batch["means"][actor]), inside[actor]),
        "background": masked[actor],
        "swap": actor_swap(clip[actor], inside[actor], masked[diff]),
        "swap_same": actor_swap(clip[actor], inside[actor], masked[same]),
        "scuba": on_backdrop,
        "scufo": scufo(on_backdrop, frozen),
    }


def suite_loader(shards, split: str, cfg: dict, *, clips: int, batch_size: int, device: str, loader: str, workers: int):
    # a batch holds whole triples, so the decoder's batch is a multiple of 3
    return build_loader(shards, split, backend=loader, batch_size=3 * max(1, batch_size // 3), train=False,
                        device=device, clips=clips, num_threads=workers, **clip_settings(cfg))


def fraction(hits: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """Mean of 0/1 `hits` over the videos `keep` (all when None); None when it keeps none."""
    hits = hits if keep is None else hits[keep]
    return hits.mean().item() if len(hits) else None


@torch.no_grad()
def ooc_suite(checkpoint: str | Path, shards: str | Path, split: str, *, clips: int = 10, seed: int = 0,
              backdrops: str | Path = "", device: str = "cpu", loader: str = "dali", batch_size: int = 16,
              workers: int = 4) -> dict:
    """The figures of the module docstring for `checkpoint` on `split` of `shards`."""
    dev = torch.device(device)
    backbone, _, cfg = load_model(str(checkpoint), dev)
    ld = suite_loader(str(shards), split, cfg, clips=clips, batch_size=batch_size, device=dev.type, loader=loader,
                      workers=workers)
    n, labels = len(ld.index), model_labels(ld.index, cfg["classes"])
    diff, same = swap_partners(ld.index.labels, seed, False), swap_partners(ld.index.labels, seed, True)
    images = load_backdrops(backdrops, cfg["size"]) if backdrops else None
    probs = {v: torch.zeros(n, len(cfg["classes"])) for v in VARIANTS}
    counts = torch.zeros(n)
    for batch in ld.run(triples(n, clips, ld.cfg.batch_size // 3, diff, same)):
        videos, clips_of = variants(batch, seed, images)
        for name, x in clips_of.items():
            probs[name].index_add_(0, videos, backbone(x).float().softmax(1).cpu())
        counts.index_add_(0, videos, torch.ones(len(videos)))
    pred = {v: (p / counts[:, None]).argmax(1) for v, p in probs.items()}  # every video has `clips` clips
    hit = {v: (p == labels).double() for v, p in pred.items()}
    has_diff, has_same = torch.from_numpy(diff >= 0), torch.from_numpy(same >= 0)
    partner_labels = labels[torch.from_numpy(np.where(diff >= 0, diff, 0))]
    return {"checkpoint": str(checkpoint), "split": split, "videos": n, "clips": clips, "seed": seed,
            "backdrop": str(backdrops) or "stripes", "chance": 1 / len(cfg["classes"]),
            "swap_pairs": int(has_diff.sum()), "swap_same_pairs": int(has_same.sum()),
            "top1": fraction(hit["original"]), "human_only_top1": fraction(hit["human_only"]),
            "background_top1": fraction(hit["background"]), "swap_top1": fraction(hit["swap"], has_diff),
            "swap_background": fraction((pred["swap"] == partner_labels).double(), has_diff),
            "swap_same_top1": fraction(hit["swap_same"], has_same), "scuba_top1": fraction(hit["scuba"]),
            "scufo_top1": fraction(hit["scufo"]), "contrasted_acc": fraction(hit["scuba"] * (1 - hit["scufo"]))}


def ooc_picture(shards: str | Path, split: str, out: str | Path, cfg: dict, *, video: int = 0, seed: int = 0,
                backdrops: str | Path = "", scale: int = 2) -> Path:
    """One clip of `video` under every variant, frames spread over the clip: a row per variant.
    `cfg` holds frames, size, stride, mask_shape, mask_threshold (a checkpoint's config)."""
    ld = suite_loader(str(shards), split, cfg, clips=1, batch_size=3, device="cpu", loader="torch", workers=1)
    labels = ld.index.labels
    diff, same = swap_partners(labels, seed, False), swap_partners(labels, seed, True)
    images = load_backdrops(backdrops, cfg["size"]) if backdrops else None
    batch = next(iter(ld.run(triples(len(labels), 1, 1, diff, same)[video:video + 1])))
    _, clips_of = variants(batch, seed, images)
    t, size = cfg["frames"], cfg["size"] * scale
    picks = np.linspace(0, t - 1, min(t, 6)).round().astype(int)
    label_w, gap = 90, 2
    sheet = Image.new("RGB", (label_w + len(picks) * (size + gap), len(VARIANTS) * (size + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(VARIANTS):
        frames = to_uint8(clips_of[name][0])
        draw.text((2, row * (size + gap) + size // 2 - 6), name, fill="black")
        for col, f in enumerate(picks):
            tile = Image.fromarray(frames[f]).resize((size, size), Image.NEAREST)
            sheet.paste(tile, (label_w + col * (size + gap), row * (size + gap)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return Path(out)
