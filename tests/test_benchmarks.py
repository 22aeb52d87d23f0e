"""Smoke tests of the CPU benchmarks: each runs at its tiniest size (--quick) as a user runs it,
exits 0 and writes a JSON report of the documented shape. Speed is not checked here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--device", "cpu",
                             "--json", str(out), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(out.read_text())


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_loader_benchmark(tmp_path):
    r = run_benchmark("loader", tmp_path)
    names = [row["name"] for row in r["loaders"]]
    assert names[0].startswith("official: ") and any(n.startswith("pyav: ") for n in names)
    assert {"ours: torch vp9", "ours: dali-cpu vp9", "ours: dali-cpu mjpeg"} <= set(names)
    for row in r["loaders"]:
        for key in ("clips_per_s", "cpu_s_per_clip", "bytes_per_video", "vs_official", "decode_bound_clips_per_s",
                    "bound_over_loader"):
            assert positive(row[key]), (row["name"], key, row[key])
        assert row["clips"] == r["config"]["batch"] * r["config"]["batches"]
    assert {b["name"] for b in r["decode_only"]} == {"pil-jpeg", "pyav-source", "pyav-vp9", "pyav-mjpeg",
                                                      "dali-cpu-vp9", "dali-cpu-mjpeg"}
    assert all(positive(b["clips_per_s"]) for b in r["decode_only"])
    assert set(r["bytes"]) == {"shards-vp9", "shards-mjpeg", "shards-h264", "jpeg-folders", "source-mp4"}
    assert r["bytes"]["jpeg-folders"]["files"] == r["videos"] * r["config"]["video_frames"]
    assert isinstance(r["summary"]["targets_met"], bool) and r["gpu_check"] is None
    assert [p["name"] for p in r["positions"]] == [
        "official: JPEG+PIL, 2 DataLoaders", "ours: torch vp9", "decode only: pil-jpeg", "decode only: pyav-vp9",
        "ours: dali-cpu vp9", "decode only: dali-cpu-vp9", "ours: dali-cpu mjpeg", "decode only: dali-cpu-mjpeg"]
    for row in r["positions"]:
        assert all(positive(row[p]["ms_per_clip"]) for p in ("first", "middle", "last")), row
        assert row["last_over_first"] == round(row["last"]["ms_per_clip"] / row["first"]["ms_per_clip"], 2)
    length = r["length"]  # --quick compares its 20-frame videos with 10-frame ones
    assert length["frames"] == {"long": 20, "short": 10} and positive(length["long_over_short"])


def test_prep_benchmark(tmp_path):
    r = run_benchmark("prep", tmp_path)
    for name, stages in r["stages"].items():
        assert set(stages["seconds"]) == {"decode", "detect", "scene", "encode", "write"}
        assert all(positive(v) for v in stages["seconds"].values()), (name, stages["seconds"])
        assert abs(sum(stages["fraction"].values()) - 1) < 0.01 and positive(stages["videos_per_s"])
    assert r["stages"]["transcoded"]["source_size"] == [320, 240]
    assert r["stages"]["synthetic"]["stored_size"] == [128, 128]
    assert r["stages"]["transcoded"]["stored_size"] == [128, 170]
    assert all(positive(e["videos_per_s"]) for e in r["end_to_end"].values())


def test_train_step_benchmark(tmp_path):
    r = run_benchmark("train_step", tmp_path)
    assert r["r3d18_16x112x112"]["forward_gmac"] == 40.7  # the design's number
    assert r["r3d18_16x112x112"]["params_m"] > 33
    assert [row["schedule"] for row in r["runs"]] == ["alternate", "joint"]
    for row in r["runs"]:
        for source in ("memory", "loader"):
            assert positive(row[source]["clips_per_s"]) and positive(row[source]["step_s_median"])
            assert 0 <= row[source]["data_wait_fraction"] <= 1
        assert 0 <= row["data_stall_fraction"] <= 1 and positive(row["achieved_tflops"]["memory"])
    methods = r["methods"]
    assert [m["method"] for m in methods] == ["baseline", "sdn", "be", "actorcutmix", "fame", "stillmix", "albar"]
    assert methods[0]["step_vs_baseline"] == 1.0 and all(positive(m["step_s_median"]) for m in methods)


def test_segments_benchmark(tmp_path):
    r = run_benchmark("segments", tmp_path)
    assert [row["gop"] for row in r["rows"]] == [8, 16]
    for row in r["rows"]:
        assert all(positive(row["decode_cpu_ms_per_clip"][k]) for k in ("first", "middle", "last", "random")), row
        assert positive(row["kib_per_video"]) and positive(row["loader_clips_per_s"])
    small, large = r["rows"]
    assert small["kib_per_video"] > large["kib_per_video"]  # more keyframes, more bytes
