"""The whole method on the synthetic scene-biased set, end to end (what `make demo` runs).

    python -m train.demo                       # one seed, 8 minutes on 2 AVX-512 CPU cores
    python -m train.demo --seeds 3 --ablation  # mean and spread over seeds, the paper's Table 5 (~36 minutes)

1. prep-synth: a biased world (train/val at --bias, unbiased test, novel-action splits) and,
   for the control, a train split of the same world unbiased (--bias 0); prep-shards for each.
2. pretrain, with the same seed and budget: the baseline (--debias none), the debiased model
   (adv,ent), the control (a baseline on the unbiased train split: it shows the action is
   learnable at this budget, without which the comparison means nothing), and with --ablation
   the adversary alone (adv) and the entropy loss alone (ent).
3. evaluate each on the biased val and the unbiased test split (video level), on test clips
   outside their action's home scene (nonhome_top1, and home_fallback: the fraction of those
   predicted as the scene's home action), on the biased val split's human-masked clips
   (masked_top1: a scene-reliant model keeps its accuracy there, on the unbiased test split
   everyone is at chance; masked_confidence: the mean top probability there), with a linear
   scene probe; then a linear probe on the novel actions (novel_top1). Dataset scene bias of
   every split (Eq. 1).
4. runs/demo/results.json, report.md, report.png and CAM pictures; the table is printed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from prep.prep_shards import main as prep_shards
from prep.synth.generate import DIFFICULTIES, generate
from prep.synth.scenes import SCENES
from shards.cli import Parser, entry_point, integer, number
from train.evaluate import dataset_bias, evaluate_model
from train.finetune import run as finetune
from train.model import ARCHS
from train.pretrain import Config as PretrainConfig, run as pretrain

METRICS = ("val_top1", "test_top1", "nonhome_top1", "home_fallback", "novel_top1", "masked_top1", "masked_confidence",
           "scene_probe_acc")
VARIANTS = {"baseline": "none", "adv": "adv", "ent": "ent", "debiased": "adv,ent"}  # the paper's Table 5 order


def make_data(a, data: Path) -> dict[str, Path]:
    raw, control_raw = data / "raw", data / "raw-control"
    counts = {"train": a.train, "val": a.val, "test": a.test, "novel_train": a.novel, "novel_test": a.novel}
    common = dict(frames=a.frames_video, size=a.video_size, seed=a.world_seed, difficulty=a.difficulty, workers=a.workers)
    if not (raw / "annotations" / "world.json").exists():
        generate(raw, counts, bias=a.bias, **common)
    if not (control_raw / "annotations" / "world.json").exists():
        generate(control_raw, {"train": a.train}, bias=0.0, **common)  # evaluated on the main world's splits
    out = {"main": data / "shards", "novel": data / "shards-novel", "control": data / "shards-control"}
    for name, dataset, root in (("main", "synth", raw), ("novel", "synth-novel", raw), ("control", "synth", control_raw)):
        code = prep_shards(["--dataset", dataset, "--root", str(root), "--out", str(out[name]), "--codec", a.codec,
                            "--workers", str(a.workers)])
        if code:
            raise SystemExit(f"demo: prep-shards failed for {name}")
    out["world"] = raw / "annotations" / "world.json"
    return out


def run_settings(a) -> dict:
    """Pretraining settings shared by the models and their novel-action probes."""
    return dict(device="cpu", loader=a.loader, workers=a.workers, batch_size=a.batch_size, optimizer="adamw",
                weight_decay=1e-4, log_every=20, ckpt_every=100000,
                val_every=0)  # the demo evaluates afterwards, at video level


def pretrain_config(a, shards: Path, out: Path, debias: str, seed: int) -> PretrainConfig:
    return PretrainConfig(shards=str(shards), out=str(out), debias=debias, seed=seed, arch=a.arch, input=a.input,
                          frames=a.frames, stride=a.stride, size=a.size, lr=a.lr, epochs=1000, max_steps=a.steps,
                          adv_lambda=a.adv_lambda, mask_shape=a.mask_shape, **run_settings(a))


def home_metrics(predictions: Path, classes: list[str], world: dict) -> dict:
    """nonhome_top1 and home_fallback on the test videos outside their action's home scene."""
    home_index = {i: SCENES[world["home_scene"][c]].index for i, c in enumerate(classes)}
    action_of_scene = {v: k for k, v in home_index.items()}
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    away = [r for r in rows if r["scene"] != home_index[r["label"]]]
    return {"nonhome_top1": float(np.mean([r["pred"] == r["label"] for r in away])),
            "home_fallback": float(np.mean([r["pred"] == action_of_scene.get(r["scene"], -1) for r in away]))}


def run_seed(a, seed: int, data: dict, runs: Path) -> dict:
    world = json.loads(data["world"].read_text())
    results = {}
    models = [(n, d, data["main"]) for n, d in VARIANTS.items() if a.ablation or n in ("baseline", "debiased")]
    models.append(("control", "none", data["control"]))
    for name, debias, shards in models:
        out = runs / f"seed{seed}" / name
        start = time.perf_counter()
        if pretrain(pretrain_config(a, shards, out, debias, seed)) != 0:
            raise SystemExit(f"demo: pretraining {name} failed")
        ckpt = out / "checkpoint.pt"
        trained = time.perf_counter()
        ev = dict(clips=a.clips, device="cpu", loader=a.loader, batch_size=a.batch_size, workers=a.workers)
        val = evaluate_model(ckpt, data["main"], "val", **ev)
        test = evaluate_model(ckpt, data["main"], "test", probe_split="train", masked=False,  # masked figures: on val
                              predictions=out / "test_predictions.jsonl", **ev)
        if finetune(ckpt, [str(data["novel"])], out / "novel", linear_probe=True, clips=a.clips, lr=a.probe_lr,
                    epochs=a.probe_epochs, **run_settings(a)) != 0:
            raise SystemExit(f"demo: novel transfer of {name} failed")
        novel = json.loads((out / "novel" / "results.json").read_text())
        results[name] = {"val_top1": val["top1"], "test_top1": test["top1"],
                         **home_metrics(out / "test_predictions.jsonl", world["actions"], world),
                         "novel_top1": novel["mean_top1"], "masked_top1": val["masked_top1"],
                         "masked_confidence": val["masked_confidence"],
                         "scene_probe_acc": test["scene_probe_acc"],
                         "pretrain_s": trained - start, "evaluate_s": time.perf_counter() - trained}
        print(f"[seed {seed}] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
    return results


def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for name in per_seed[0]:
        out[name] = {}
        for m in METRICS:
            values = [r[name][m] for r in per_seed]
            out[name][m] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                            "values": values}
    return out


def report(results: dict, runs: Path) -> str:
    models = results["models"]
    seeds = len(results["seeds"])
    fmt = (lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}") if seeds > 1 else (lambda s: f"{s['mean']:.3f}")
    c = results["config"]
    losses = {**VARIANTS, "control": "none, unbiased train split"}
    lines = [f"# scene-debias demo: synthetic scene-biased set ({seeds} seed{'s' * (seeds > 1)})", "",
             f"World: bias {c['bias']}, {c['difficulty']}, {c['train']} train videos. Pretraining: {c['arch']} "
             f"({c['input']}), {c['frames']} frames (stride {c['stride']}) x {c['size']} px, batch {c['batch_size']}, "
             f"{c['steps']} iterations, AdamW lr {c['lr']}, adversary lambda {c['adv_lambda']}, {c['mask_shape']} masks.", "",
             "| model (losses) | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    lines += [f"| {name} ({losses[name]}) | " + " | ".join(fmt(models[name][m]) for m in METRICS) + " |"
              for name in models]
    lines += ["", "Dataset scene bias (Eq. 1, log(M / M_rand); 0 = the scene says nothing of the action):", "",
              "| split | scene->action accuracy | bias |", "|---|---|---|"]
    lines += [f"| {s} | {b['scene_action_acc']:.3f} | {b['dataset_bias']:.3f} |" for s, b in results["dataset_bias"].items()]
    lines += ["", "Higher is better for val/test/nonhome/novel top-1; lower is less scene reliance for home_fallback, "
              "scene_probe_acc, masked_top1 and masked_confidence (chance is 0.1; the masked figures are measured on the "
              "biased val split, where the scene alone still gives the action). The control is a baseline trained on an unbiased "
              "train split of the same size and budget.", "", "![results](report.png)", "", "![cams](cams/cams.png)", ""]
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


@entry_point("demo")
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="demo", description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    count, whole = integer(1), integer(0)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data", default="data/demo")
    p.add_argument("--seeds", type=count, default=1)
    p.add_argument("--ablation", action="store_true", help="also train the adversary alone and the entropy loss alone")
    p.add_argument("--bias", type=number(0, 1), default=0.9)
    p.add_argument("--difficulty", default="easy", choices=list(DIFFICULTIES))
    p.add_argument("--world-seed", type=whole, default=0)
    p.add_argument("--train", type=count, default=800)
    p.add_argument("--val", type=count, default=200)
    p.add_argument("--test", type=count, default=400)
    p.add_argument("--novel", type=count, default=200, help="videos in novel_train and in novel_test")
    p.add_argument("--video-size", type=integer(16), default=64)
    p.add_argument("--frames-video", type=count, default=32)
    p.add_argument("--codec", default="mjpeg", choices=["vp9", "h264", "mjpeg"],
                   help="mjpeg: the fastest to write and to decode on CPU")
    p.add_argument("--arch", default="r3d18-w16", choices=list(ARCHS))
    p.add_argument("--input", default="rgbdiff", choices=["rgb", "rgbdiff"])
    p.add_argument("--frames", type=count, default=8)
    p.add_argument("--stride", type=count, default=2)
    p.add_argument("--size", type=count, default=48)
    p.add_argument("--batch-size", type=count, default=16)
    p.add_argument("--lr", type=number(above=0), default=2e-3, help="AdamW, for a global batch of 32 (scaled)")
    p.add_argument("--steps", type=count, default=400)
    p.add_argument("--adv-lambda", type=number(minimum=0), default=0.1,
                   help="gradient reversal strength (0.5, the trainer's default, stopped the action from being learned here)")
    p.add_argument("--mask-shape", default="tube", choices=["box", "tube"],
                   help="tube: a moving flat box still shows the motion (box masks left 2.5x the scene fallback here)")
    p.add_argument("--clips", type=count, default=3)
    p.add_argument("--probe-lr", type=number(above=0), default=2e-2)
    p.add_argument("--probe-epochs", type=count, default=3)
    p.add_argument("--loader", default="dali", choices=["dali", "torch"])
    p.add_argument("--workers", type=count, default=2)
    a = p.parse_args(argv)
    if a.video_size % 2:
        p.error(f"--video-size {a.video_size} must be even (video encoders need even frame sizes)")
    if a.size > a.video_size:
        p.error(f"--size {a.size} is larger than --video-size {a.video_size}")
    runs, data = Path(a.out), Path(a.data)
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    shards = make_data(a, data)
    data_s = time.perf_counter() - start
    per_seed = [run_seed(a, seed, shards, runs) for seed in range(a.seeds)]
    results = {"config": vars(a), "seeds": list(range(a.seeds)), "models": summarise(per_seed), "per_seed": per_seed,
               "data_s": data_s, "dataset_bias": {s: dataset_bias(str(shards["main"]), s, "train") for s in ("train", "val", "test")}}
    results["dataset_bias"]["control_train"] = dataset_bias(str(shards["control"]), "train", "train")
    (runs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    from train.cam import main as cam
    cam(["--checkpoint", str(runs / "seed0" / "baseline" / "checkpoint.pt"), "--name", "baseline",
         "--checkpoint", str(runs / "seed0" / "debiased" / "checkpoint.pt"), "--name", "debiased",
         "--shards", str(shards["main"]), "--split", "test", "--n", "8", "--out", str(runs / "cams")])
    plot(results, runs)
    print(report(results, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
