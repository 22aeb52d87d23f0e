"""Evaluation protocol, scene probe, dataset scene bias (Eq. 1), and the fine-tune path."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import make_sample
from shards import NUM_SCENES, ShardWriter, add_split, new_manifest, write_manifest
from shards.loader import build_loader
from train import checkpoint
from train.evaluation.evaluate import dataset_bias, video_outputs
from train.evaluation.models import load_model
from train.evaluation.finetune import main as finetune
from train.evaluation.linear_probe import accuracy, fit_linear
from train.pretrain import main as pretrain

TRAIN = ["--device", "cpu", "--loader", "torch", "--workers", "1", "--arch", "r3d18-w16", "--frames", "8",
         "--size", "40", "--batch-size", "4", "--optimizer", "adamw"]


@pytest.fixture(scope="module")
def pretrained(synth_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    assert pretrain(["--shards", str(synth_shards), "--out", str(out), *TRAIN, "--epochs", "1"]) == 0
    return out / "best.pt"


def test_video_level_protocol_averages_each_videos_clips(synth_shards, pretrained):
    backbone, _, cfg = load_model(str(pretrained), torch.device("cpu"))
    out = video_outputs(backbone, str(synth_shards), "val", cfg, clips=3, device=torch.device("cpu"),
                        loader="torch", batch_size=4, workers=1)
    # reference: every clip alone, softmax averaged per video by hand
    ld = build_loader(synth_shards, "val", backend="torch", batch_size=1, frames=8, size=40, train=False,
                      device="cpu", clips=3, num_threads=1)
    per_video = {}
    with torch.no_grad():
        for batch in ld:
            per_video.setdefault(int(batch["sample"]), []).append(backbone(batch["clip"]).softmax(1)[0])
    assert sorted(per_video) == list(range(5)) and all(len(v) == 3 for v in per_video.values())
    expected = torch.stack([torch.stack(per_video[i]).mean(0) for i in range(5)])
    torch.testing.assert_close(out["probs"], expected, atol=1e-5, rtol=1e-4)


def test_linear_probe_separable_and_random():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = torch.randn(200, 16, generator=g) + 4 * torch.nn.functional.one_hot(y, 16).double()
    model = fit_linear(x, y, 4)
    assert accuracy(model, x, y) == 1.0
    noise = torch.randn(400, 16, generator=g)
    labels = torch.randint(0, 4, (400,), generator=g)
    held_out = fit_linear(noise[:200], labels[:200], 4)
    assert accuracy(held_out, noise[200:], labels[200:]) < 0.4


def write_scene_set(out, scene_of_label, n=40, classes=4):
    """Shards whose scene label is a function of the action (or not)."""
    rng = np.random.default_rng(0)
    manifest = new_manifest("bias", [f"a{i}" for i in range(classes)], [f"s{i}" for i in range(NUM_SCENES)], "vp9")
    for split in ("train", "val"):
        with ShardWriter(out, f"{split}-000000") as w:
            for i in range(n):
                s = make_sample(f"{split}{i}", rng, split)
                s.label = i % classes
                s.scene = scene_of_label(s.label, rng)
                w.write(s)
        add_split(manifest, split, [w.info()])
    write_manifest(out, manifest)


def test_dataset_bias_eq1_known_answers(tmp_path):
    def one_hot(label, rng):
        v = np.full(NUM_SCENES, 1e-4, np.float32)
        v[label * 7] = 1
        return v / v.sum()
    write_scene_set(tmp_path / "biased", one_hot)
    r = dataset_bias(str(tmp_path / "biased"), "val", "train")
    assert r["scene_action_acc"] == 1.0 and r["dataset_bias"] == pytest.approx(math.log(4))
    same = dataset_bias(str(tmp_path / "biased"), "train", "train")  # held out by 2-fold cross-validation
    assert same["scene_action_acc"] == 1.0 and same["dataset_bias"] == pytest.approx(math.log(4))
    write_scene_set(tmp_path / "flat", lambda label, rng: np.full(NUM_SCENES, 1 / NUM_SCENES, np.float32))
    r = dataset_bias(str(tmp_path / "flat"), "val", "train")
    assert r["scene_action_acc"] == pytest.approx(0.25) and r["dataset_bias"] == pytest.approx(0.0, abs=1e-9)


def test_finetune_full_and_linear_probe(synth_shards, pretrained, tmp_path):
    common = ["--init", str(pretrained), "--shards", str(synth_shards), "--epochs", "1", "--clips", "2", *TRAIN]
    assert finetune([*common, "--out", str(tmp_path / "full")]) == 0
    assert finetune([*common, "--out", str(tmp_path / "probe"), "--linear-probe"]) == 0
    for run in ("full", "probe"):
        results = json.loads((tmp_path / run / "results.json").read_text())
        split = results["splits"][synth_shards.name]
        assert split["split"] == "test" and split["videos"] == 4 and split["clips"] == 2
        assert results["mean_top1"] == split["top1"]
    before = checkpoint.load(pretrained)["backbone"]
    probe = checkpoint.load(tmp_path / "probe" / synth_shards.name / "checkpoint.pt")["backbone"]
    full = checkpoint.load(tmp_path / "full" / synth_shards.name / "checkpoint.pt")["backbone"]
    frozen = [k for k in before if not k.startswith("fc.") and before[k].is_floating_point()]
    assert all(torch.equal(before[k], probe[k]) for k in frozen)  # the probe leaves the backbone alone
    assert not all(torch.equal(before[k], full[k]) for k in frozen)


def test_finetune_keeps_the_clips_the_backbone_was_pretrained_on(synth_shards, pretrained, tmp_path):
    state = checkpoint.load(pretrained)
    state["config"].update(crop="corner", short_videos="loop")  # as --recipe official trains
    official = tmp_path / "official.pt"
    checkpoint.save(state, official)
    common = ["--init", str(official), "--shards", str(synth_shards), "--epochs", "1", "--clips", "1", *TRAIN]
    assert finetune([*common, "--out", str(tmp_path / "kept")]) == 0
    assert finetune([*common, "--out", str(tmp_path / "told"), "--crop", "random"]) == 0  # a flag still decides
    runs = {run: json.loads((tmp_path / run / synth_shards.name / "config.json").read_text()) for run in ("kept", "told")}
    assert (runs["kept"]["crop"], runs["kept"]["short_videos"], runs["kept"]["arch"]) == ("corner", "loop", state["config"]["arch"])
    assert (runs["told"]["crop"], runs["told"]["short_videos"]) == ("random", "loop")


def test_evaluate_model_figures_equal_the_video_outputs(synth_shards, pretrained):
    from train.evaluation.evaluate import evaluate_model
    r = evaluate_model(pretrained, synth_shards, "val", clips=2, device="cpu", loader="torch", batch_size=4, workers=1)
    backbone, _, cfg = load_model(str(pretrained), torch.device("cpu"))
    out = video_outputs(backbone, str(synth_shards), "val", cfg, clips=2, device=torch.device("cpu"),
                        loader="torch", batch_size=4, workers=1)
    labels = out["labels"]
    assert r["top1"] == pytest.approx((out["probs"].argmax(1) == labels).double().mean().item())
    assert r["masked_top1"] == pytest.approx((out["masked"].argmax(1) == labels).double().mean().item())
    assert r["masked_confidence"] == pytest.approx(out["masked"].max(1).values.double().mean().item(), rel=1e-5)
    assert 1 / out["masked"].shape[1] <= r["masked_confidence"] <= 1
    assert not torch.equal(out["probs"], out["masked"])  # the masked pass sees other pixels
    unmasked = evaluate_model(pretrained, synth_shards, "val", clips=2, device="cpu", loader="torch", batch_size=4,
                              workers=1, masked=False)
    assert unmasked == {k: v for k, v in r.items() if not k.startswith("masked")}
