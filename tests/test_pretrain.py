"""The trainer end to end on small synthetic shards, on the CPU."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from train import checkpoint
from train.evaluation.export import main as export_main
from shards.cli import parse_fields
from train.pretrain import TERMINATED, Config, main as pretrain, run as run_config

ROOT = Path(__file__).resolve().parents[1]


def args(shards: Path, out: Path, *extra: str) -> list[str]:
    return ["--shards", str(shards), "--out", str(out), "--device", "cpu", "--loader", "torch", "--workers", "1",
            "--arch", "r3d18-w16", "--frames", "8", "--size", "40", "--batch-size", "4", "--optimizer", "adamw",
            "--log-every", "1", *extra]


def train_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


@pytest.mark.parametrize("method", ["sdn", "stillmix"])  # stillmix: a method's own draws repeat too
def test_resume_gives_identical_numbers(synth_shards, tmp_path, method):
    # 12 training videos / batch 4 = 3 iterations per epoch: 5 iterations cross an epoch end
    run = lambda name, steps: pretrain(args(synth_shards, tmp_path / name, "--max-steps", steps, "--method", method))
    assert run("straight", "5") == 0
    assert run("resumed", "2") == 0
    assert run("resumed", "5") == 0
    a, b = (checkpoint.load(tmp_path / run / "checkpoint.pt") for run in ("straight", "resumed"))
    assert a["step"] == b["step"] == 5 and a["epoch"] == b["epoch"] == 1 and a["batch_in_epoch"] == 2
    for name in ("backbone", "scene_head"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), key
    straight, resumed = train_records(tmp_path / "straight"), train_records(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5]
    for x, y in zip(straight, resumed):
        assert (x["ce"], x["scene"], x["entropy"]) == (y["ce"], y["scene"], y["entropy"])


def test_rng_states_round_trip_through_a_safe_checkpoint(tmp_path):
    """The RNG states are stored as tensors and ints (what torch.load(weights_only=True) builds)
    and restore every generator exactly, Python's pending gauss included."""
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # leaves a second normal cached in both
    checkpoint.save({"rng": checkpoint.rng_state()}, tmp_path / "c.pt")
    draws = lambda: (random.gauss(0, 1), random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    expected = draws()
    state = torch.load(tmp_path / "c.pt", weights_only=True)  # the restricted loader takes it as it is
    checkpoint.set_rng_state(state["rng"])
    got = draws()
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


def test_outputs_and_validation_figures(synth_shards, tmp_path):
    assert pretrain(args(synth_shards, tmp_path, "--epochs", "1", "--schedule", "joint")) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "metrics.jsonl", "tb", "checkpoint.pt", "best.pt"}
    assert list((tmp_path / "tb").iterdir())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["schedule"] == "joint" and config["effective_lr"] == pytest.approx(1e-3 * 4 / 32)
    val = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "val"]
    assert len(val) == 1 and set(val[0]) >= {"loss", "top1", "top5", "scene_acc", "masked_top1"}
    assert 0 <= val[0]["top1"] <= val[0]["top5"] <= 1


def test_val_every_zero_skips_validation_and_trains_the_same(synth_shards, tmp_path):
    assert pretrain(args(synth_shards, tmp_path / "validated", "--epochs", "2")) == 0
    # the val split is not even opened: a caller that evaluates afterwards need not write one
    assert pretrain(args(synth_shards, tmp_path / "silent", "--epochs", "2", "--val-every", "0",
                         "--val-split", "no_such_split")) == 0
    kinds = lambda run: [json.loads(r)["kind"] for r in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert kinds("validated").count("val") == 2 and "val" not in kinds("silent")
    assert (tmp_path / "validated" / "best.pt").exists() and not (tmp_path / "silent" / "best.pt").exists()
    a, b = (checkpoint.load(tmp_path / run / "checkpoint.pt") for run in ("validated", "silent"))
    assert a["step"] == b["step"] == 6 and a["epoch"] == b["epoch"] == 2
    for key, value in a["backbone"].items():
        assert torch.equal(value, b["backbone"][key]), key


@pytest.mark.parametrize("debias", ["none", "adv", "ent"])
def test_ablation_settings_run(synth_shards, tmp_path, debias):
    assert pretrain(args(synth_shards, tmp_path, "--debias", debias, "--max-steps", "1", "--scene-labels", "hard")) == 0
    record = train_records(tmp_path)[0]
    assert (record["entropy"] == 0.0) == (debias in ("none", "adv"))


def test_bad_flags_and_refusals(synth_shards, tmp_path, capsys):
    # choices and combinations are usage errors too, from the command line and from a Config built in code
    for usage_error in (lambda: pretrain(args(synth_shards, tmp_path, "--init", "nope.pt")),
                        lambda: run_config(Config(shards=str(synth_shards), out=str(tmp_path), init="nope.pt"))):
        with pytest.raises(SystemExit) as usage:
            usage_error()
        assert usage.value.code == 2
        assert capsys.readouterr().err == "pretrain: error: --init nope.pt: no such file (see --help)\n"
    with pytest.raises(SystemExit) as usage:
        run_config(Config(shards=str(synth_shards), out=str(tmp_path), debias="adv,foo", lr=float("nan"), device="cpu"))
    assert usage.value.code == 2
    assert capsys.readouterr().err == ("pretrain: error: --lr: must be a finite number > 0, not nan; --debias: choose "
                                       "from none, adv, ent, adv,ent, not 'adv,foo' (see --help)\n")
    # numbers are checked by their flag's type, as argparse usage errors (exit 2, one line)
    with pytest.raises(SystemExit) as usage:
        pretrain(args(synth_shards, tmp_path, "--val-every", "-1"))
    assert usage.value.code == 2
    assert capsys.readouterr().err == "pretrain: error: argument --val-every: must be a whole number >= 0, not -1 (see --help)\n"
    assert pretrain(args(synth_shards, tmp_path, "--max-steps", "1")) == 0
    with pytest.raises(SystemExit, match="exists and --no-resume was given"):
        pretrain(args(synth_shards, tmp_path, "--no-resume"))


def test_parse_fields_gives_only_the_flags_set(capsys):
    """What finetune passes on to pretrain: the fields its flags set, typed and checked, and no
    defaults that would override what the checkpoint says."""
    assert parse_fields(Config, ["--batch-size", "4", "--no-resume", "--frames", "16"], "pretrain") == \
        {"batch_size": 4, "resume": False, "frames": 16}
    assert parse_fields(Config, [], "pretrain") == {}
    with pytest.raises(SystemExit) as usage:
        parse_fields(Config, ["--batch-size", "0"], "pretrain")
    assert usage.value.code == 2
    assert capsys.readouterr().err == "pretrain: error: argument --batch-size: must be a whole number >= 1, not 0 (see --help)\n"


def test_two_stage_recipe_inits_from_stage_one(synth_shards, tmp_path, capsys):
    assert pretrain(args(synth_shards, tmp_path / "stage1", "--debias", "adv", "--epochs", "1")) == 0
    assert pretrain(args(synth_shards, tmp_path / "stage2", "--init", str(tmp_path / "stage1" / "best.pt"),
                         "--lr", "1e-4", "--max-steps", "1")) == 0
    assert f"initialised from {tmp_path / 'stage1' / 'best.pt'}" in capsys.readouterr().out


def test_export_loads_into_torchvision(synth_shards, tmp_path):
    out = tmp_path / "run"
    assert pretrain(args(synth_shards, out, "--arch", "r3d18", "--batch-size", "2", "--max-steps", "1")) == 0
    assert export_main(["--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "r3d18.pth")]) == 0
    model = torchvision.models.video.r3d_18(num_classes=10)
    model.load_state_dict(torch.load(tmp_path / "r3d18.pth"), strict=True)
    from train.model import build_backbone
    ours = build_backbone("r3d18", 10)
    ours.load_state_dict(checkpoint.load(out / "checkpoint.pt")["backbone"])
    x = torch.randn(1, 3, 8, 40, 40)
    model.eval(), ours.eval()
    torch.testing.assert_close(model(x), ours(x))
    narrow = tmp_path / "narrow"
    assert pretrain(args(synth_shards, narrow, "--max-steps", "1")) == 0
    with pytest.raises(SystemExit, match="only r3d18 with rgb input"):
        export_main(["--checkpoint", str(narrow / "checkpoint.pt"), "--out", str(tmp_path / "x.pth")])


def test_torchrun_two_ranks_on_disjoint_data(synth_shards, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(ROOT / "train" / "pretrain.py"),
           *args(synth_shards, tmp_path, "--batch-size", "2", "--max-steps", "3", "--log-samples")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "tb"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "config.json").read_text())["world_size"] == 2
    seen = [[line.split()[1:] for line in (tmp_path / f"samples-rank{r}.txt").read_text().splitlines()] for r in (0, 1)]
    assert [len(s) for s in seen] == [3, 3]  # 12 videos / (2 ranks x 2) = 3 iterations each
    keys = [{k for step in s for k in step} for s in seen]
    assert len(keys[0]) == len(keys[1]) == 6 and not keys[0] & keys[1]


def test_sigterm_writes_a_checkpoint_and_resume_finishes(synth_shards, tmp_path):
    cmd = [sys.executable, str(ROOT / "train" / "pretrain.py"), *args(synth_shards, tmp_path, "--max-steps", "200")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((tmp_path / "metrics.jsonl").exists() and (tmp_path / "metrics.jsonl").read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == TERMINATED
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert 1 <= state["step"] < 200
    assert pretrain(args(synth_shards, tmp_path, "--max-steps", str(state["step"] + 2))) == 0
    assert checkpoint.load(tmp_path / "checkpoint.pt")["step"] == state["step"] + 2


@pytest.mark.parametrize("flags", [
    ["--precision", "bf16"], ["--precision", "fp16"], ["--channels-last"],
    pytest.param(["--compile"], marks=pytest.mark.slow),  # ~75 s of compilation on 2 cores
])
def test_speed_options_run(synth_shards, tmp_path, flags):
    assert pretrain(args(synth_shards, tmp_path, "--max-steps", "2", *flags)) == 0
    records = train_records(tmp_path)
    assert len(records) == 2 and all(torch.isfinite(torch.tensor(r["ce"])) for r in records)
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == (flags[1] if len(flags) == 2 else "fp32")
