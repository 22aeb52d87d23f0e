"""`make demo` end to end at toy size: every output there, every figure in range."""
from __future__ import annotations

import json

from train.demo import METRICS, OOC, main


def toy_demo(runs, data, *extra: str) -> int:
    return main(["--out", str(runs), "--data", str(data), "--train", "20", "--val", "10", "--test", "10",
                 "--novel", "10", "--video-size", "48", "--frames-video", "12", "--frames", "8", "--size", "40",
                 "--batch-size", "4", "--steps", "2", "--probe-epochs", "1", *extra])


def test_demo_toy_size(tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    assert toy_demo(runs, data, "--clips", "2", "--seeds", "2") == 0
    results = json.loads((runs / "results.json").read_text())
    assert set(results["models"]) == {"baseline", "debiased", "control"} and results["seeds"] == [0, 1]
    for stats in results["models"].values():
        assert set(stats) == set(METRICS + OOC)
        for m, s in stats.items():
            # a same-class swap needs two test videos of a class: a toy split may have none (n/a)
            assert len(s["values"]) == 2 or (m == "ooc_swap_same_top1" and s["values"] == [] and s["mean"] is None)
            assert all(0 <= v <= 1 for v in s["values"]) and s["std"] >= 0
    assert set(results["dataset_bias"]) == {"train", "val", "test", "control_train"}
    assert results["dataset_bias"]["train"]["scene_action_acc"] > results["dataset_bias"]["control_train"]["scene_action_acc"]
    report = (runs / "report.md").read_text()
    assert "| baseline (none) |" in report and "| debiased (adv,ent) |" in report and "| control (none, unbiased" in report
    assert "±" in report and "adversary lambda 0.1" in report
    assert (runs / "report.png").stat().st_size > 10_000 and (runs / "cams" / "cams.png").is_file()
    assert "| model | human_only_top1 | background_top1 | swap_top1 | swap_background |" in report
    assert (runs / "ooc.png").stat().st_size > 5_000 and "![out of context](ooc.png)" in report


def test_demo_with_every_method_makes_one_table(tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    assert toy_demo(runs, data, "--clips", "1", "--methods", "all") == 0
    results = json.loads((runs / "results.json").read_text())
    assert list(results["models"]) == ["baseline", "debiased", "be", "actorcutmix", "fame", "stillmix", "albar",
                                       "control"]
    for name in ("be", "albar"):
        assert json.loads((runs / "seed0" / name / "config.json").read_text())["method"] == name
    assert (data / "stillmix_bank.npz").is_file()
    report = (runs / "report.md").read_text()
    assert "| albar (ALBAR, Fioresi et al. 2025) |" in report and "| stillmix (StillMix, Li et al. 2023) |" in report


def test_demo_parity_rows_change_one_thing_each(tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    assert toy_demo(runs, data, "--clips", "1", "--parity", "--sgd-lr", "0.05") == 0
    parity = json.loads((runs / "results.json").read_text())["parity"]
    assert list(parity["models"]) == ["sgd_baseline", "sgd_ours", "bn_head", "dampening", "official", "confusion",
                                      "core", "core_separate", "core_corner", "core_rgb255", "core_rgb"]
    assert all(0 <= s["mean"] <= 1 for row in parity["models"].values() for s in row.values())
    config = {name: json.loads((runs / "seed0" / f"parity-{name}" / "config.json").read_text())
              for name in parity["models"]}
    assert all(c["optimizer"] == "sgd" and c["lr"] == 0.05 for c in config.values())
    assert config["sgd_baseline"]["debias"] == "none" and config["sgd_ours"]["debias"] == "adv,ent"
    changed = lambda name, base="sgd_ours": {k for k in config[name] if config[name][k] != config[base][k]} - {"out"}
    assert changed("bn_head") == {"scene_head"} and changed("dampening") == {"dampening"}
    assert changed("confusion") == {"adversary"}
    assert changed("official") == {"recipe", "arch", "short_videos", "crop", "scene_head", "entropy",
                                   "masked_batches", "dampening", "lr_patience", "plateau"}
    assert changed("core", "official") == {"recipe", "short_videos", "crop", "masked_batches"}  # its input pipeline
    assert [changed(f"core_{flag}", "core") for flag in ("separate", "corner", "rgb255", "rgb")] == \
        [{"masked_batches"}, {"crop"}, {"input"}, {"input"}]
    report = (runs / "report.md").read_text()
    assert "| official (recipe official, arch hara-r18-w16) |" in report and "| sgd_ours (ours) |" in report
