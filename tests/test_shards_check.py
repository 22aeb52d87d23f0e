"""shards-check accepts a valid set and names each kind of damage in one line."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import edit_manifest, rebuild_shard
from shards.check import main


def run_check(shards: Path, capsys, *args) -> tuple[int, list[str]]:
    code = main([str(shards), *args])
    return code, capsys.readouterr().out.splitlines()


def test_accepts_valid_set(tiny_shards, capsys):
    code, out = run_check(tiny_shards, capsys, "--decode")
    assert code == 0, out
    assert out[0] == "train: 2 shards, 5 samples, " + out[0].split(", ")[2]
    assert out[1].startswith("val: 1 shards, 2 samples")
    assert out[-1].endswith(": OK")


def test_console_script_exit_code(tiny_shards):
    script = Path(sys.executable).parent / "shards-check"
    assert subprocess.run([str(script), str(tiny_shards)], capture_output=True).returncode == 0
    (tiny_shards / "manifest.json").write_text("{")
    result = subprocess.run([str(script), str(tiny_shards)], capture_output=True, text=True)
    assert result.returncode == 1 and "not valid JSON" in result.stdout


def test_rejects_truncated_tar(tiny_shards, capsys):
    path = tiny_shards / "train-000001.tar"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, out = run_check(tiny_shards, capsys)
    errors = [line for line in out if line.startswith("error:")]
    assert code == 1
    assert any("train-000001.tar:" in e and "truncated" in e for e in errors), errors
    assert not any("train-000000" in e for e in errors)


def test_rejects_sample_missing_member(tiny_shards, capsys):
    rebuild_shard(tiny_shards, "train-000000.tar",
                  lambda name, data: None if name == "train_0_1.scene.f32" else data)
    code, out = run_check(tiny_shards, capsys)
    errors = [line for line in out if line.startswith("error:")]
    assert code == 1
    assert errors == ["error: train-000000.tar: train_0_1: sample train_0_1 lacks member(s) scene.f32"]


def test_rejects_nan_scene(tiny_shards, capsys):
    def poison(name, data):
        if name == "train_1_0.scene.f32":
            scene = np.frombuffer(data, "<f4").copy()
            scene[7] = np.nan
            return scene.tobytes()
        return data
    rebuild_shard(tiny_shards, "train-000001.tar", poison)
    code, out = run_check(tiny_shards, capsys)
    assert code == 1
    assert [l for l in out if l.startswith("error:")] == [
        "error: train-000001.tar: train_1_0: scene label holds NaN or inf"]


def test_rejects_box_outside_frame(tiny_shards, capsys):
    import msgpack
    from shards.format import boxes_to_raw

    boxes = {}
    def stretch(name, data):
        if name == "train_0_0.boxes.msgpack":
            b = msgpack.unpackb(data)
            b[3][0][2] = 1.5
            boxes["b"] = b
            return msgpack.packb(b, use_single_float=True)
        if name == "train_0_0.boxes.f32":
            return boxes_to_raw(boxes["b"])
        return data
    rebuild_shard(tiny_shards, "train-000000.tar", stretch)
    code, out = run_check(tiny_shards, capsys)
    assert code == 1
    assert any("train_0_0: frame 3: box" in l and "outside [0, 1]" in l for l in out), out


def test_rejects_count_mismatch(tiny_shards, capsys):
    def lie(m):
        m["splits"]["train"]["shards"][1]["samples"] = 3
        m["splits"]["train"]["samples"] = 6
    edit_manifest(tiny_shards, lie)
    code, out = run_check(tiny_shards, capsys)
    assert code == 1
    assert [l for l in out if l.startswith("error:")] == [
        "error: train-000001.tar: holds 2 samples, the manifest says 3"]


def test_rejects_split_total_mismatch(tiny_shards, capsys):
    edit_manifest(tiny_shards, lambda m: m["splits"]["val"].update(samples=9))
    code, out = run_check(tiny_shards, capsys)
    assert "error: split val: the manifest says 9 samples, its shards list 2" in out


def test_rejects_other_version(tiny_shards, capsys):
    edit_manifest(tiny_shards, lambda m: m.update(version=1))
    code, out = run_check(tiny_shards, capsys)
    assert code == 1
    assert out[0].startswith("error: ") and "format version 1" in out[0] and "re-run prep-shards" in out[0]


def test_rejects_missing_or_stale_index(tiny_shards, capsys):
    (tiny_shards / "val-000000.idx").unlink()
    lines = (tiny_shards / "train-000000.idx").read_text().splitlines()
    (tiny_shards / "train-000000.idx").write_text("\n".join([lines[0].replace("3", "2"), *lines[1:3]]) + "\n")
    code, out = run_check(tiny_shards, capsys)
    errors = [l for l in out if l.startswith("error:")]
    assert code == 1
    assert "error: val-000000.idx: index file missing (DALI needs it; re-run prep-shards)" in errors
    assert "error: train-000000.idx: index does not match its tar (re-run prep-shards)" in errors


def test_not_a_directory_is_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2


def edit_meta(key: str, edit):
    """A rewrite_shard edit that changes the json metadata of one sample."""
    def apply(name, data):
        if name == f"{key}.json":
            meta = json.loads(data)
            edit(meta)
            return json.dumps(meta).encode()
        return data
    return apply


@pytest.fixture
def long_shards(tmp_path):
    from conftest import write_tiny_set
    write_tiny_set(tmp_path / "long", {"train": [2]}, frames=24, gop=8)
    return tmp_path / "long"


def test_rejects_segment_table_off_its_records(long_shards, capsys):
    assert run_check(long_shards, capsys, "--decode")[0] == 0
    rebuild_shard(long_shards, "train-000000.tar", edit_meta("train_0_1", lambda m: m["segments"][1].__setitem__(1, 100)))
    code, out = run_check(long_shards, capsys)
    assert code == 1
    assert [l for l in out if l.startswith("error:")] == [
        "error: train-000000.tar: train_0_1: segment [8, 100] does not start at the record of frame 8, in order"]


def test_decode_catches_a_segment_that_is_not_a_keyframe(long_shards, capsys):
    from shards.video import ivf_frames

    with tarfile.open(long_shards / "train-000000.tar") as tar:
        video = tar.extractfile("train_0_0.vp9.ivf").read()
    offset = ivf_frames(video)[4][0]  # frame 4: an inter frame, it needs frame 0 to decode
    rebuild_shard(long_shards, "train-000000.tar", edit_meta("train_0_0", lambda m: m["segments"].insert(1, [4, offset])))
    assert run_check(long_shards, capsys)[0] == 0  # the table is consistent with the stream...
    code, out = run_check(long_shards, capsys, "--decode")  # ...but frame 4 is no keyframe
    errors = [l for l in out if l.startswith("error:")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith("error: train-000000.tar: train_0_0: segment from frame 4 ")
