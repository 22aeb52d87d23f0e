"""The whole method on the synthetic scene-biased set, end to end (what `make demo` runs).

    python -m train.demo                       # one seed, 8 minutes on 2 AVX-512 CPU cores
    python -m train.demo --seeds 3 --ablation  # mean and spread over seeds, the paper's Table 5 (~36 minutes)
    python -m train.demo --methods all         # also BE, ActorCutMix, FAME, StillMix and ALBAR (train/methods/)
    python -m train.demo --seeds 3 --parity    # also the official-parity rows (PARITY), SGD

1. prep-synth: a biased world (train/val at --bias, unbiased test, novel-action splits) and,
   for the control, a train split of the same world unbiased (--bias 0); prep-shards for each.
2. pretrain, with the same seed and budget: the baseline (--debias none), the debiased model
   (adv,ent), the control (a baseline on the unbiased train split: it shows the action is
   learnable at this budget, without which the comparison means nothing), with --ablation
   the adversary alone (adv) and the entropy loss alone (ent), and with --methods the later
   methods, each with its official defaults (StillMix with a frame bank made once).
3. evaluate each on the biased val and the unbiased test split (video level), on test clips
   outside their action's home scene (nonhome_top1, and home_fallback: the fraction of those
   predicted as the scene's home action), on the biased val split's human-masked clips
   (masked_top1: a scene-reliant model keeps its accuracy there, on the unbiased test split
   everyone is at chance; masked_confidence: the mean top probability there), with a linear
   scene probe; the out-of-context suite on the biased val split, where a swapped-in background
   still tells its own action (human-only, background-only, actor swap, SCUBA / SCUFO on boxes:
   train/evaluation/ooc_suite.py); then a linear probe on the
   novel actions (novel_top1). Dataset scene bias of every split (Eq. 1).
4. runs/demo/results.json, report.md, report.png, CAM pictures and ooc.png (one val clip under
   each out-of-context transform); the tables are printed.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch

from prep.prep_shards import PrepConfig, run as prep_shards
from prep.synth.generate import DIFFICULTIES, generate
from prep.synth.scenes import SCENES
from shards.cli import (Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, config_problems,
                        entry_point, integer, parse_config, refuse)
from train.evaluation.cam import CamConfig, run as cam
from train.evaluation.evaluate import dataset_bias, evaluate_model
from train.evaluation.finetune import FinetuneConfig, run as finetune
from train.evaluation.models import load_model
from train.evaluation.ooc_suite import OOC_METRICS, ooc_picture, ooc_suite
from train.methods import METHODS
from train.methods.stillmix_bank import BankConfig, build_bank
from train.model import ARCHS
from train.pretrain import OFFICIAL_RECIPE, Config as PretrainConfig, run as pretrain

METRICS = ("val_top1", "test_top1", "nonhome_top1", "home_fallback", "novel_top1", "masked_top1", "masked_confidence",
           "scene_probe_acc")
OOC = tuple(f"ooc_{m}" for m in OOC_METRICS if m != "top1")  # the suite on the val split (its top1 is val_top1)
VARIANTS = {"baseline": "none", "adv": "adv", "ent": "ent", "debiased": "adv,ent"}  # the paper's Table 5 order
# --parity (issue: official parity): SGD rows at one lr, each one change from ours towards the
# official code's recipe, and the confusion adversary; all adv,ent but the baseline
# (the official recipe's input pipeline left out: `core` trains as the official code does on our
# clips; each core_* row puts one of the pipeline's flags back)
CORE = {**{k: v for k, v in OFFICIAL_RECIPE.items() if k not in ("lr", "masked_batches", "crop", "input", "short_videos")},
        "arch": "hara-r18-w16"}
PARITY = {"sgd_baseline": {"debias": "none"}, "sgd_ours": {}, "bn_head": {"scene_head": "official"},
          "dampening": {"dampening": 0.9}, "official": {"recipe": "official", "arch": "hara-r18-w16"},
          "confusion": {"adversary": "confusion"}, "core": CORE, "core_separate": {**CORE, "masked_batches": "separate"},
          "core_corner": {**CORE, "crop": "corner"}, "core_rgb255": {**CORE, "input": "rgb255"},
          "core_rgb": {**CORE, "input": "rgb"}}
PARITY_METRICS = ("val_top1", "test_top1", "home_fallback", "masked_top1", "masked_confidence", "scene_probe_acc",
                  "scene_head_acc")
PAPERS = {"be": "Background Erasing, Wang et al. 2021", "actorcutmix": "ActorCutMix, Zou et al. 2021",
          "fame": "FAME, Ding et al. 2022", "stillmix": "StillMix, Li et al. 2023", "albar": "ALBAR, Fioresi et al. 2025"}


def make_data(a: DemoConfig, data: Path) -> dict[str, Path]:
    raw, control_raw = data / "raw", data / "raw-control"
    counts = {"train": a.train, "val": a.val, "test": a.test, "novel_train": a.novel, "novel_test": a.novel}
    common = dict(frames=a.frames_video, size=a.video_size, seed=a.world_seed, difficulty=a.difficulty, workers=a.workers)
    if not (raw / "annotations" / "world.json").exists():
        generate(raw, counts, bias=a.bias, **common)
    if not (control_raw / "annotations" / "world.json").exists():
        generate(control_raw, {"train": a.train}, bias=0.0, **common)  # evaluated on the main world's splits
    out = {"main": data / "shards", "novel": data / "shards-novel", "control": data / "shards-control"}
    for name, dataset, root in (("main", "synth", raw), ("novel", "synth-novel", raw), ("control", "synth", control_raw)):
        if prep_shards(PrepConfig(dataset=dataset, root=str(root), out=str(out[name]), codec=a.codec, workers=a.workers)):
            raise SystemExit(f"demo: prep-shards failed for {name}")
    out["world"] = raw / "annotations" / "world.json"
    return out


def run_settings(a: DemoConfig) -> dict:
    """Pretraining settings shared by the models and their novel-action probes."""
    return dict(device="cpu", loader=a.loader, workers=a.workers, batch_size=a.batch_size, optimizer="adamw",
                weight_decay=1e-4, log_every=20, ckpt_every=100000,
                val_every=0)  # the demo evaluates afterwards, at video level


def pretrain_config(a: DemoConfig, shards: Path, out: Path, debias: str, seed: int, method: str = "sdn",
                    bank: str = "") -> PretrainConfig:
    return PretrainConfig(shards=str(shards), out=str(out), debias=debias, seed=seed, arch=a.arch, input=a.input,
                          frames=a.frames, stride=a.stride, size=a.size, lr=a.lr, epochs=1000, max_steps=a.steps,
                          adv_lambda=a.adv_lambda, mask_shape=a.mask_shape, method=method, stillmix_bank=bank,
                          **run_settings(a))


def methods_of(a: DemoConfig) -> list[str]:
    return list(METHODS) if "all" in a.methods else list(dict.fromkeys(a.methods))


def stillmix_bank(a: DemoConfig, shards: Path) -> str:
    """StillMix's frame bank for the demo's world, made once beside its shards (the reference
    network: the demo's backbone on single frames, 200 iterations)."""
    path = shards.parent / "stillmix_bank.npz"
    if not path.exists():
        build_bank(BankConfig(shards=str(shards), out=str(path), arch=a.arch, size=a.size, steps=200,
                              batch_size=a.batch_size, device="cpu", loader=a.loader, workers=a.workers))
    return str(path)


def home_metrics(predictions: Path, classes: list[str], world: dict) -> dict:
    """nonhome_top1 and home_fallback on the test videos outside their action's home scene."""
    home_index = {i: SCENES[world["home_scene"][c]].index for i, c in enumerate(classes)}
    action_of_scene = {v: k for k, v in home_index.items()}
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    away = [r for r in rows if r["scene"] != home_index[r["label"]]]
    return {"nonhome_top1": float(np.mean([r["pred"] == r["label"] for r in away])),
            "home_fallback": float(np.mean([r["pred"] == action_of_scene.get(r["scene"], -1) for r in away]))}


def run_seed(a: DemoConfig, seed: int, data: dict, runs: Path) -> dict:
    world = json.loads(data["world"].read_text())
    results = {}
    models = [(n, d, "sdn", data["main"]) for n, d in VARIANTS.items() if a.ablation or n in ("baseline", "debiased")]
    models += [(m, "none", m, data["main"]) for m in methods_of(a)]
    models.append(("control", "none", "sdn", data["control"]))
    for name, debias, method, shards in models:
        out = runs / f"seed{seed}" / name
        start = time.perf_counter()
        bank = stillmix_bank(a, shards) if method == "stillmix" else ""
        if pretrain(pretrain_config(a, shards, out, debias, seed, method, bank)) != 0:
            raise SystemExit(f"demo: pretraining {name} failed")
        ckpt = out / "checkpoint.pt"
        trained = time.perf_counter()
        measured = measure(a, ckpt, data, out, world)
        probe = FinetuneConfig(init=str(ckpt), shards=[str(data["novel"])], out=str(out / "novel"), linear_probe=True,
                               clips=a.clips, lr=a.probe_lr, epochs=a.probe_epochs)
        if finetune(probe, **run_settings(a)) != 0:
            raise SystemExit(f"demo: novel transfer of {name} failed")
        novel = json.loads((out / "novel" / "results.json").read_text())
        ooc = ooc_suite(ckpt, data["main"], "val", **evaluation(a))  # val: its backgrounds still tell the action
        results[name] = {**measured, "novel_top1": novel["mean_top1"],
                         **{f"ooc_{m}": ooc[m] for m in OOC_METRICS if m != "top1"},
                         "pretrain_s": trained - start, "evaluate_s": time.perf_counter() - trained}
        print(f"[seed {seed}] {name}: " + ", ".join(f"{k} {number(v)}" for k, v in results[name].items()), flush=True)
    return results


def evaluation(a: DemoConfig) -> dict:
    return dict(clips=a.clips, device="cpu", loader=a.loader, batch_size=a.batch_size, workers=a.workers)


def measure(a: DemoConfig, ckpt: Path, data: dict, out: Path, world: dict) -> dict:
    """The figures of a model on the biased val split and the unbiased test split."""
    val = evaluate_model(ckpt, data["main"], "val", **evaluation(a))
    test = evaluate_model(ckpt, data["main"], "test", probe_split="train", masked=False,  # masked figures: on val
                          predictions=out / "test_predictions.jsonl", **evaluation(a))
    return {"val_top1": val["top1"], "test_top1": test["top1"],
            **home_metrics(out / "test_predictions.jsonl", world["actions"], world),
            "masked_top1": val["masked_top1"], "masked_confidence": val["masked_confidence"],
            "scene_probe_acc": test["scene_probe_acc"], "scene_head_acc": test["scene_head_acc"]}


def run_parity(a: DemoConfig, seed: int, data: dict, runs: Path) -> dict:
    """--parity: the rows of PARITY, SGD at --sgd-lr, measured as the main models are (no novel
    probe, no suite: the question is what the scene adversary does to the features)."""
    world = json.loads(data["world"].read_text())
    results = {}
    for name, change in PARITY.items():
        out = runs / f"seed{seed}" / f"parity-{name}"
        start = time.perf_counter()
        cfg = replace(pretrain_config(a, data["main"], out, change.get("debias", "adv,ent"), seed),
                      optimizer="sgd", lr=a.sgd_lr, **{k: v for k, v in change.items() if k != "debias"})
        if pretrain(cfg) != 0:
            raise SystemExit(f"demo: pretraining parity row {name} failed")
        results[name] = {**measure(a, out / "checkpoint.pt", data, out, world), "seconds": time.perf_counter() - start}
        print(f"[seed {seed}] parity {name}: " + ", ".join(f"{k} {number(v)}" for k, v in results[name].items()),
              flush=True)
    return results


def summarise(per_seed: list[dict], metrics: tuple[str, ...] = METRICS + OOC) -> dict:
    out = {}
    for name in per_seed[0]:
        out[name] = {}
        for m in metrics:
            values = [r[name][m] for r in per_seed if r[name][m] is not None]  # None: a split too small for the figure
            out[name][m] = {"mean": statistics.fmean(values) if values else None,
                            "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "values": values}
    return out


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report(results: dict, runs: Path) -> str:
    models = results["models"]
    seeds = len(results["seeds"])
    fmt = (lambda s: f"{number(s['mean'])} ± {s['std']:.3f}") if seeds > 1 else (lambda s: number(s["mean"]))
    c = results["config"]
    losses = {**VARIANTS, **PAPERS, "control": "none, unbiased train split"}
    lines = [f"# scene-debias demo: synthetic scene-biased set ({seeds} seed{'s' * (seeds > 1)})", "",
             f"World: bias {c['bias']}, {c['difficulty']}, {c['train']} train videos. Pretraining: {c['arch']} "
             f"({c['input']}), {c['frames']} frames (stride {c['stride']}) x {c['size']} px, batch {c['batch_size']}, "
             f"{c['steps']} iterations, AdamW lr {c['lr']}, adversary lambda {c['adv_lambda']}, {c['mask_shape']} masks.", "",
             "| model (losses) | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    lines += [f"| {name} ({losses[name]}) | " + " | ".join(fmt(models[name][m]) for m in METRICS) + " |"
              for name in models]
    lines += ["", "Out-of-context suite on the biased val split, where a background still tells the action (box-based HAT "
              "and SCUBA / SCUFO, train/evaluation/ooc_suite.py):",
              "", "| model | " + " | ".join(m.removeprefix("ooc_") for m in OOC) + " |", "|---" * (len(OOC) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(models[name][m]) for m in OOC) + " |" for name in models]
    if "parity" in results:
        rows = results["parity"]["models"]
        lines += ["", f"Official parity (SGD momentum 0.9, lr {c['sgd_lr']}, otherwise as above; scene_head_acc: the trained "
                  "scene head's own accuracy on test, scene_probe_acc a fresh linear probe's):", "",
                  "| row (change) | " + " | ".join(PARITY_METRICS) + " |", "|---" * (len(PARITY_METRICS) + 1) + "|"]
        lines += [f"| {name} ({', '.join(f'{k} {v}' for k, v in PARITY[name].items()) or 'ours'}) | "
                  + " | ".join(fmt(rows[name][m]) for m in PARITY_METRICS) + " |" for name in rows]
    lines += ["", "Dataset scene bias (Eq. 1, log(M / M_rand); 0 = the scene says nothing of the action):", "",
              "| split | scene->action accuracy | bias |", "|---|---|---|"]
    lines += [f"| {s} | {b['scene_action_acc']:.3f} | {b['dataset_bias']:.3f} |" for s, b in results["dataset_bias"].items()]
    lines += ["", "Higher is better for val/test/nonhome/novel top-1; lower is less scene reliance for home_fallback, "
              "scene_probe_acc, masked_top1 and masked_confidence (chance is 0.1; the masked figures are measured on the "
              "biased val split, where the scene alone still gives the action). The control is a baseline trained on an unbiased "
              "train split of the same size and budget. In the suite, a model that reads the actor keeps human_only, swap, scuba "
              "and contrasted_acc high and background and swap_background near chance; one that reads the scene does the "
              "opposite.", "", "![results](report.png)", "", "![cams](cams/cams.png)", "", "![out of context](ooc.png)", ""]
    text = "\n".join(lines)
    (runs / "report.md").write_text(text)
    return text


def plot(results: dict, runs: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(models)
    for i, (name, stats) in enumerate(models.items()):
        xs = np.arange(len(METRICS)) + i * width
        ax.bar(xs, [stats[m]["mean"] for m in METRICS], width, yerr=[stats[m]["std"] for m in METRICS], label=name)
    ax.set_xticks(np.arange(len(METRICS)) + 0.4 - width / 2, METRICS, rotation=15)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.legend(ncol=len(models))
    ax.set_title("scene-debias on the synthetic scene-biased set")
    fig.tight_layout()
    fig.savefig(runs / "report.png", dpi=110)


@dataclass
class DemoConfig:
    out: str = "runs/demo"                   # results.json, report.md, report.png, cams/ and every run
    data: str = "data/demo"                  # the generated videos and their shards (reused when present)
    seeds: PositiveInt = 1                   # train every model with seeds 0..N-1 (mean and spread)
    ablation: bool = False                   # also train the adversary alone and the entropy loss alone
    methods: list[Literal[("all", *METHODS)]] = field(default_factory=list)  # also train these later methods (all: every one)
    parity: bool = False                     # also the official-parity rows (PARITY: SGD; BN head, dampening, official recipe, confusion, and the recipe without its input pipeline, then with each part of it)
    sgd_lr: PositiveFloat = 0.1              # --parity: the SGD learning rate of every row (momentum 0.9, batch 32 scaled)
    bias: Fraction = 0.9                     # how often an action happens in its home scene (train, val)
    difficulty: Literal[tuple(DIFFICULTIES)] = "easy"  # how hard the actions are to tell apart
    world_seed: NonNegativeInt = 0           # the world's random seed
    train: PositiveInt = 800                 # train videos
    val: PositiveInt = 200                   # val videos
    test: PositiveInt = 400                  # test videos (unbiased)
    novel: PositiveInt = 200                 # videos in novel_train and in novel_test
    video_size: Annotated[int, integer(16)] = 64  # pixels, even
    frames_video: PositiveInt = 32           # frames per video
    codec: Literal["vp9", "h264", "mjpeg"] = "mjpeg"  # mjpeg: the fastest to write and to decode on CPU
    arch: Literal[tuple(ARCHS)] = "r3d18-w16"  # the network
    input: Literal["rgb", "rgbdiff"] = "rgbdiff"  # rgbdiff: clip + frame differences
    frames: PositiveInt = 8                  # frames per clip
    stride: PositiveInt = 2                  # frame step inside a clip
    size: PositiveInt = 48                   # crop side in pixels
    batch_size: PositiveInt = 16             # clips per iteration
    lr: PositiveFloat = 2e-3                 # AdamW, for a global batch of 32 (scaled)
    steps: PositiveInt = 400                 # iterations per model
    adv_lambda: NonNegativeFloat = 0.1       # gradient reversal (the trainer's 0.5 stopped the action being learned here)
    mask_shape: Literal["box", "tube"] = "tube"  # tube: a moving flat box still shows motion (box: 2.5x the scene fallback)
    clips: PositiveInt = 3                   # clips per video in evaluation
    probe_lr: PositiveFloat = 2e-2           # learning rate of the novel-action linear probe
    probe_epochs: PositiveInt = 3            # epochs of the novel-action linear probe
    loader: Literal["dali", "torch"] = "dali"  # torch: the reference loader
    workers: PositiveInt = 2                 # processes for generating and prepping, loader threads


@entry_point("demo")
def main(argv: list[str] | None = None) -> int:
    return run(parse_config(DemoConfig, argv, "demo", __doc__.splitlines()[0]))


def run(a: DemoConfig) -> int:
    problems = config_problems(a)
    if a.video_size % 2:
        problems.append(f"--video-size {a.video_size} must be even (video encoders need even frame sizes)")
    if a.size > a.video_size:
        problems.append(f"--size {a.size} is larger than --video-size {a.video_size}")
    refuse("demo", problems)
    runs, data = Path(a.out), Path(a.data)
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    shards = make_data(a, data)
    data_s = time.perf_counter() - start
    per_seed = [run_seed(a, seed, shards, runs) for seed in range(a.seeds)]
    results = {"config": asdict(a), "seeds": list(range(a.seeds)), "models": summarise(per_seed), "per_seed": per_seed,
               "data_s": data_s, "dataset_bias": {s: dataset_bias(str(shards["main"]), s, "train") for s in ("train", "val", "test")}}
    results["dataset_bias"]["control_train"] = dataset_bias(str(shards["control"]), "train", "train")
    if a.parity:
        parity = [run_parity(a, seed, shards, runs) for seed in range(a.seeds)]
        results["parity"] = {"models": summarise(parity, PARITY_METRICS), "per_seed": parity}
    (runs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    cam(CamConfig(checkpoint=[str(runs / "seed0" / m / "checkpoint.pt") for m in ("baseline", "debiased")],
                  name=["baseline", "debiased"], shards=str(shards["main"]), split="test", n=8, out=str(runs / "cams")))
    ooc_picture(shards["main"], "val", runs / "ooc.png", load_model(str(runs / "seed0" / "baseline" / "checkpoint.pt"),
                                                                     torch.device("cpu"))[2])
    plot(results, runs)
    print(report(results, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
