"""prep-shards end to end on the synthetic set: ground truth carried, resume, bad input, ranks."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prep.prep_shards import main
from prep.synth.generate import generate
from prep.synth.scenes import scene_soft_label
from shards import iter_samples, read_manifest
from shards.check import check_dir

COUNTS = {"train": 9, "val": 3, "test": 4, "novel_train": 3, "novel_test": 2}
PREP = [sys.executable, "-m", "prep.prep_shards"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    generate(out, COUNTS, frames=10, size=32, seed=1, difficulty="medium", workers=2, progress=False)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def prep(raw: Path, out: Path, *flags: str) -> int:
    return main(["--dataset", "synth", "--root", str(raw), "--out", str(out), "--shard-size", "2", "--workers", "2", *flags])


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    assert prep(raw, out) == 0
    return out


def test_synth_shards_carry_ground_truth(raw, reference):
    summary, problems = check_dir(reference, decode=True)
    assert problems == [] and len(summary) == 3
    manifest = read_manifest(reference)
    assert {s: e["samples"] for s, e in manifest["splits"].items()} == {"train": 9, "val": 3, "test": 4}
    assert len(manifest["splits"]["train"]["shards"]) == 5 and manifest["failed"] == []
    truth = {json.loads(l)["key"]: json.loads(l) for l in (raw / "annotations" / "train_truth.jsonl").read_text().splitlines()}
    for sample in iter_samples(reference, "train"):
        rec = truth[sample["key"]]
        assert manifest["classes"][sample["label"]] == rec["label"] == sample["meta"]["label_name"]
        np.testing.assert_array_equal(sample["scene"], scene_soft_label(rec["scene"]))
        expected = [[[*b, 1.0] for b in frame] for frame in rec["boxes"]]
        np.testing.assert_allclose([b for f in sample["boxes"] for b in f], [b for f in expected for b in f], atol=1e-6)
        assert [len(f) for f in sample["boxes"]] == [len(f) for f in expected]
        assert sample["video"].shape == (10, 32, 32, 3) and sample["codec"] == "vp9"


def test_byte_identical_reruns(raw, reference, tmp_path):
    assert prep(raw, tmp_path, "--workers", "1") == 0
    assert files(tmp_path) == files(reference)


def test_rerun_skips_finished_shards(raw, reference, capsys):
    before = {p: p.stat().st_mtime_ns for p in reference.glob("*.tar")}
    assert prep(raw, reference) == 0
    assert "0 done, 0 failed, 9 shards skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in reference.glob("*.tar")} == before


def test_kill_9_then_resume_equals_uninterrupted(raw, reference, tmp_path):
    cmd = PREP + ["--dataset", "synth", "--root", str(raw), "--out", str(tmp_path), "--shard-size", "2", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / ".prep").glob("train-*.json")) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((tmp_path / ".prep").glob("*-*.json")))
    assert 1 <= done_before < 9, "the kill should land mid-run"
    assert not (tmp_path / "manifest.json").exists()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert files(tmp_path) == files(reference)


def test_resume_after_a_finished_shards_video_changed_redoes_it(raw, tmp_path):
    """Killed, then a video of a finished shard is replaced: the resume must not keep the shard
    made from the old file, and ends equal to an uninterrupted run over the new files."""
    changed, out = tmp_path / "raw", tmp_path / "shards"
    subprocess.run(["cp", "-r", str(raw), str(changed)], check=True)
    cmd = PREP + ["--dataset", "synth", "--root", str(changed), "--out", str(out), "--shard-size", "2", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / ".prep" / "train-000000.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the kill should land mid-run"
    key, rel = json.loads((out / ".prep" / "train-000000.json").read_text())["inputs"][0][:2]
    replacement = sorted((changed / "val").rglob("*.mp4"))[0]  # another video of the same length
    (changed / rel).write_bytes(replacement.read_bytes())
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and "(train: 0 new, 1 changed, 0 gone)" in result.stdout
    assert prep(changed, tmp_path / "fresh") == 0
    assert files(out) == files(tmp_path / "fresh")
    sample = next(s for s in iter_samples(out, "train") if s["key"] == key)
    np.testing.assert_array_equal(sample["video"], next(s for s in iter_samples(out, "val")
                                                        if replacement.stem == s["key"])["video"])


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(raw, reference, tmp_path):
    """A write that fails mid-shard (a file-size limit fails it as a full disk does: an OSError from
    write) ends in one line, leaves no *.tmp, and the same command afterwards completes the shards."""
    def limit_file_size():  # Python ignores SIGXFSZ, so the write fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    cmd = PREP + ["--dataset", "synth", "--root", str(raw), "--out", str(tmp_path), "--shard-size", "2", "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit_file_size)
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and errors[0].startswith("prep-shards: error: [Errno 27] File too large"), result.stderr
    assert list(tmp_path.rglob("*.tmp")) == [] and list(tmp_path.glob("*.tar")) == []
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert files(tmp_path) == files(reference)


def test_corrupt_and_missing_videos_are_reported(raw, tmp_path):
    broken = tmp_path / "raw"
    subprocess.run(["cp", "-r", str(raw), str(broken)], check=True)
    videos = sorted((broken / "train").rglob("*.mp4"))
    videos[0].write_bytes(videos[0].read_bytes()[:300])  # truncated
    videos[1].write_bytes(b"")                              # zero length
    videos[2].write_bytes(b"not a video at all" * 50)       # garbage
    videos[3].unlink()                                      # listed but absent
    out = tmp_path / "shards"
    assert prep(broken, out) == 0
    manifest = read_manifest(out)
    assert manifest["splits"]["train"]["samples"] == 5
    assert manifest["splits"]["val"]["samples"] == 3 and manifest["splits"]["test"]["samples"] == 4
    # broken inputs are listed with their cause; the absent one is missing, reported apart (issue 14)
    reasons = {f["key"]: f["reason"] for f in manifest["failed"]}
    assert len(reasons) == 3 and all(f["split"] == "train" for f in manifest["failed"])
    assert reasons[videos[1].stem].startswith("zero-length file")
    assert reasons[videos[0].stem].startswith("truncated or damaged mp4/mov file")
    assert reasons[videos[2].stem].startswith("not a video: the file is text")
    assert manifest["missing"] == {"count": 1, "file": "missing.txt"}
    assert (out / "missing.txt").read_text().splitlines()[1:] == [f"train\t{videos[3].stem}\t{videos[3].stem.split('_')[0]}"]
    assert check_dir(out)[1] == []
    assert main(["--dataset", "synth", "--root", str(broken), "--out", str(tmp_path / "strict"), "--strict"]) == 1


def test_fps_resampling_follows_truth(raw, tmp_path):
    assert prep(raw, tmp_path, "--split", "val", "--fps", "7.5") == 0
    truth = {json.loads(l)["key"]: json.loads(l) for l in (raw / "annotations" / "val_truth.jsonl").read_text().splitlines()}
    for sample in iter_samples(tmp_path, "val"):
        assert sample["meta"]["frames"] == 5 and sample["meta"]["fps"] == 7.5
        expected = truth[sample["key"]]["boxes"][::2]
        assert [len(f) for f in sample["boxes"]] == [len(f) for f in expected]
        np.testing.assert_allclose([b[:4] for f in sample["boxes"] for b in f], [b for f in expected for b in f], atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "argument --dataset: choose from synth, synth-novel, kinetics-400"),
    (["--dataset", "ucf101"], "--detector is required for ucf101"),
    (["--dataset", "synth", "--detector", "missing.pt"], "--detector missing.pt: no such file"),
    (["--dataset", "synth", "--split", "train,bogus"], "split(s) bogus not in synth"),
])
def test_bad_flags_exit_2_with_one_line(raw, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        code = main(["--root", str(raw), "--out", str(tmp_path), *argv])
        raise SystemExit(code)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and message in err[-1]


def test_other_settings_in_same_out_refused(raw, reference, capsys):
    assert prep(raw, reference, "--codec", "mjpeg") == 2
    err = capsys.readouterr().err
    assert "holds shards made with other settings (--codec was 'vp9', now 'mjpeg'):" in err


def test_a_second_run_on_the_same_out_is_refused_while_the_first_works(raw, reference, tmp_path, capsys):
    """Two runs writing one --out would race for the same shard files: the second is refused in one
    line naming the first's pid, and the lock goes with the process that held it (no stale lock)."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from prep.prep_shards import exclusive\n"
                               f"with exclusive(Path({str(tmp_path)!r}), 0):\n print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    assert prep(raw, tmp_path) == 2
    assert capsys.readouterr().err == (f"prep-shards: error: {tmp_path} is being written by another prep-shards run "
                                       f"(pid {holder.pid}): let it finish, or use another --out\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".prep", "lock-rank0"]  # nothing written
    holder.kill()
    holder.wait()
    assert prep(raw, tmp_path) == 0
    assert files(tmp_path) == files(reference)


def test_torchrun_two_ranks_write_the_same_shards(raw, reference, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "prep.prep_shards", "--dataset", "synth",
           "--root", str(raw), "--out", str(tmp_path), "--shard-size", "2", "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert files(tmp_path) == files(reference)
    # rank 0 made shards 0, 2, 4, ... of the global order: train 0, 2, 4, val 1, test 1 (8 videos);
    # only rank 0 prints the summary
    assert result.stdout.count("prep-shards: 16 videos") == 1
    assert "this run: 16 done, 0 failed, 0 shards skipped" in result.stdout and "videos per rank: [8, 8]" in result.stdout


@pytest.mark.slow
def test_model_paths_yolo_and_places365(raw, tmp_path):
    """The detector and scene-model code paths, on tiny random models in the real file formats."""
    import timm
    import torch
    from ultralytics import YOLO

    weights = tmp_path / "tiny-yolo.pt"
    yolo = YOLO("yolov8n.yaml")
    yolo.model.names = {i: "person" if i == 0 else f"class{i}" for i in range(80)}  # as a COCO model has them
    yolo.save(weights)
    scene = tmp_path / "scene_resnet18.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=365).state_dict(), scene)
    out = tmp_path / "shards"
    code = main(["--dataset", "synth", "--root", str(raw), "--out", str(out), "--split", "val", "--workers", "1",
                 "--detector", str(weights), "--det-conf", "0.0", "--det-stride", "2",
                 "--scene-model", str(scene), "--scene-arch", "resnet18", "--scene-frames", "2", "--device", "cpu"])
    assert code == 0
    manifest = read_manifest(out)
    prov = manifest["provenance"]
    assert prov["boxes"]["weights"] == "tiny-yolo.pt" and prov["boxes"]["stride"] == 2 and len(prov["boxes"]["sha256"]) == 64
    assert prov["boxes"]["classes"] == [0] and prov["boxes"]["class_names"] == ["person"]
    assert prov["scene"]["weights"] == "scene_resnet18.pth" and prov["scene"]["arch"] == "resnet18"
    assert check_dir(out)[1] == []
    for sample in iter_samples(out, "val"):
        assert abs(sample["scene"].sum() - 1) < 1e-4 and sample["scene"].std() > 0  # a model's output, not uniform
        votes = sample["meta"]["scene_votes"]  # each sampled frame's argmax
        assert len(votes) == 2 and all(isinstance(v, int) and 0 <= v < 365 for v in votes)
        assert sample["boxes"][1] == sample["boxes"][0]  # stride 2 carries frame 0's boxes to frame 1
