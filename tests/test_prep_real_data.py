"""prep-shards on what a real download holds: videos absent, arriving later or replaced; rotated,
variable frame rate, truncated, audio-carrying, zero-byte and not-a-video files; a detector whose
people are not called `person`; bad models at start-up. Every video is a real file made here."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from prep.prep_shards import main, speed
from shards import iter_samples, read_manifest
from shards.check import check_dir

CLASSES = ["Jump", "Wave"]
PREP = [sys.executable, "-m", "prep.prep_shards"]


def write_video(path: Path, frames: np.ndarray, fps: float = 10, *, fmt: str = "mp4", codec: str = "libx264",
                times: list[float] | None = None, rotation: int = 0, audio: bool = False,
                options: dict | None = None) -> Path:
    """Frames (T, H, W, 3) -> a video file. `times`: per-frame timestamps in seconds (variable
    rate); `rotation`: display matrix rotation (degrees counterclockwise), as phones write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = int(round(times[i] * 1000)) if times is not None else i
            if times is not None:
                frame.time_base = Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            for k in range(int(len(frames) / fps * 16000) // 1024):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, k * 1024
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def noise(seed: int, frames: int = 8, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def ucf_layout(root: Path, train: dict[str, str], test: dict[str, str]) -> None:
    """The UCF-101 lists for videos named v_<Class>_g<group>_c<clip>, given as {stem: class}."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    (lists / "trainlist01.txt").write_text("".join(f"{c}/{s}.avi {CLASSES.index(c) + 1}\n" for s, c in train.items()))
    (lists / "testlist01.txt").write_text("".join(f"{c}/{s}.avi\n" for s, c in test.items()))


def ucf_video(root: Path, stem: str, cls: str, seed: int) -> Path:
    return write_video(root / "UCF-101" / cls / f"{stem}.avi", noise(seed), fmt="avi", codec="mpeg4")


def prep(root: Path, out: Path, *flags: str) -> int:
    return main(["--dataset", "ucf101", "--root", str(root), "--out", str(out), "--detector", "none",
                 "--scene-model", "none", "--shard-size", "2", "--workers", "1", *flags])


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# missing, arriving, broken

TRAIN = {f"v_{c}_g{g:02d}_c01": c for c in CLASSES for g in range(1, 5)}  # 8 listed
TEST = {f"v_{c}_g{g:02d}_c01": c for c in CLASSES for g in range(5, 7)}   # 4 listed
ABSENT = ["v_Jump_g02_c01", "v_Wave_g01_c01", "v_Wave_g05_c01"]          # 2 train, 1 test


def test_partial_download_then_the_rest_arrives(tmp_path, capsys):
    root, out = tmp_path / "ucf", tmp_path / "shards"
    ucf_layout(root, TRAIN, TEST)
    listed = {**TRAIN, **TEST}
    for seed, (stem, cls) in enumerate(listed.items()):
        if stem not in ABSENT:
            ucf_video(root, stem, cls, seed)

    # a partial download: the present videos are stored, packed into full shards; --strict passes
    assert prep(root, out, "--strict") == 0
    manifest = read_manifest(out)
    assert {s: e["samples"] for s, e in manifest["splits"].items()} == {"train": 6, "test": 3}
    assert [s["samples"] for s in manifest["splits"]["train"]["shards"]] == [2, 2, 2]
    assert [s["samples"] for s in manifest["splits"]["test"]["shards"]] == [2, 1]
    assert manifest["failed"] == [] and manifest["missing"] == {"count": 3, "file": "missing.txt"}
    assert (out / "missing.txt").read_text().splitlines() == [
        "split\tkey\tsource_id", "train\tv_Jump_g02_c01\tJump/v_Jump_g02_c01.avi",
        "train\tv_Wave_g01_c01\tWave/v_Wave_g01_c01.avi", "test\tv_Wave_g05_c01\tWave/v_Wave_g05_c01.avi"]
    printed = capsys.readouterr().out
    assert "9 videos in" in printed and "0 broken, 0 partial, 3 missing" in printed
    assert "3 listed video(s) absent on disk, not an error without --strict-missing" in printed
    assert prep(root, out, "--strict-missing") == 1  # the same shards, now refused for the missing ones
    assert "--strict-missing: 3 listed video(s) absent on disk: exit 1" in capsys.readouterr().out

    # the 3 arrive: a plain re-run takes them in, says so, and equals a first run over all 12
    for seed, (stem, cls) in enumerate(listed.items()):
        if stem in ABSENT:
            ucf_video(root, stem, cls, seed)
    assert prep(root, out) == 0
    printed = capsys.readouterr().out
    assert "inputs changed since the shards were made (train: 2 new, 0 changed, 0 gone; test: 1 new, 0 changed, 0 gone)" in printed
    assert "12 videos in" in printed and "0 missing" in printed and "redone (inputs changed)" in printed
    manifest = read_manifest(out)
    assert {s: e["samples"] for s, e in manifest["splits"].items()} == {"train": 8, "test": 4}
    assert manifest["missing"]["count"] == 0 and check_dir(out, decode=True)[1] == []
    fresh = tmp_path / "fresh"
    assert prep(root, fresh) == 0
    assert tree(out) == tree(fresh)

    # a video replaced by a zero-length file: that shard is redone, the file is broken, --strict fails
    (root / "UCF-101" / "Wave" / "v_Wave_g03_c01.avi").write_bytes(b"")
    assert prep(root, out, "--strict") == 1
    printed = capsys.readouterr().out
    assert "(train: 0 new, 1 changed, 0 gone)" in printed and "--strict: 1 broken input(s): exit 1" in printed
    manifest = read_manifest(out)
    assert [(f["key"], f["reason"].split(" (")[0]) for f in manifest["failed"]] == [("v_Wave_g03_c01", "zero-length file")]
    assert manifest["splits"]["train"]["samples"] == 7 and check_dir(out)[1] == []


def test_videos_gone_leave_no_stale_shards(tmp_path, capsys):
    root, out = tmp_path / "ucf", tmp_path / "shards"
    ucf_layout(root, TRAIN, {})
    for seed, (stem, cls) in enumerate(TRAIN.items()):
        ucf_video(root, stem, cls, seed)
    assert prep(root, out) == 0
    assert (out / "train-000003.tar").is_file()
    for stem in list(TRAIN)[-3:]:
        (root / "UCF-101" / TRAIN[stem] / f"{stem}.avi").unlink()
    capsys.readouterr()
    assert prep(root, out) == 0
    printed = capsys.readouterr().out
    assert "(train: 0 new, 0 changed, 3 gone): 1 shard(s) redone (train-000002), 1 stale shard(s) removed" in printed
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert not (out / ".prep" / "train-000003.json").exists()
    assert read_manifest(out)["missing"]["count"] == 3 and check_dir(out)[1] == []


# ---------------------------------------------------------------------------------------------
# stream facts

def portrait(frames: int = 10) -> np.ndarray:
    """Upright portrait frames, 64 high and 48 wide: red top half, blue bottom half, a green left edge."""
    up = np.zeros((frames, 64, 48, 3), np.uint8)
    up[:, :32], up[:, 32:], up[:, :, :8] = (200, 40, 40), (40, 40, 200), (40, 200, 40)
    return up


def levels(count: int) -> np.ndarray:
    """Flat grey frames, frame i at level 6 * i: a stored frame says which source frame it is."""
    return np.repeat(np.arange(count, dtype=np.uint8)[:, None, None, None] * 6, 32 * 32 * 3).reshape(count, 32, 32, 3)


def test_stream_facts(tmp_path, capsys):
    root, out = tmp_path / "ucf", tmp_path / "shards"
    videos = {  # stem -> (class, how it is made)
        "v_Jump_g01_c01": "rotated", "v_Jump_g02_c01": "vfr", "v_Jump_g03_c01": "partial", "v_Jump_g04_c01": "audio",
        "v_Wave_g01_c01": "odd", "v_Wave_g02_c01": "html", "v_Wave_g03_c01": "empty", "v_Wave_g04_c01": "no-index",
        "v_Wave_g05_c01": "ntsc"}
    ucf_layout(root, {s: s.split("_")[1] for s in videos}, {})
    folder = lambda stem: root / "UCF-101" / stem.split("_")[1]
    vfr_times = [i / 10 for i in range(10)] + [1 + i / 30 for i in range(30)]  # 10 fps for 1 s, then 30 fps
    for stem, kind in videos.items():
        mp4, mkv = folder(stem) / f"{stem}.mp4", folder(stem) / f"{stem}.mkv"
        if kind == "rotated":  # a phone's portrait video: landscape frames and a display matrix turning them upright
            write_video(mp4, np.ascontiguousarray(np.rot90(portrait(), 1, axes=(1, 2))), rotation=-90)
        elif kind == "vfr":
            write_video(mkv, levels(40), 30, fmt="matroska", times=vfr_times)
        elif kind in ("partial", "no-index"):  # cut in half; with its index in front (faststart), and without
            full = write_video(mp4, noise(1, frames=40), options={"movflags": "+faststart"} if kind == "partial" else {})
            full.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
        elif kind == "audio":
            write_video(mp4, noise(2, frames=20), audio=True, options={"movflags": "+faststart"})
        elif kind == "odd":
            write_video(mkv, noise(3, height=49, width=67), fmt="matroska", codec="libvpx-vp9")
        elif kind == "html":
            (folder(stem) / f"{stem}.mp4").write_text("<!DOCTYPE html><html><body>429 Too Many Requests</body></html>")
        elif kind == "empty":
            (folder(stem) / f"{stem}.mp4").write_bytes(b"")
        elif kind == "ntsc":  # 29.97 fps, timestamps rounded to milliseconds: every frame kept once
            write_video(folder(stem) / f"{stem}.webm", noise(4, frames=30), 30000 / 1001, fmt="webm", codec="libvpx-vp9")
    assert prep(root, out) == 0
    printed = capsys.readouterr().out
    assert "6 videos in" in printed and "3 broken, 1 partial, 0 missing" in printed
    samples = {s["key"]: s for s in iter_samples(out, "train")}
    kinds = {videos[k]: s for k, s in samples.items()}

    rotated = kinds["rotated"]
    assert rotated["video"].shape == (10, 64, 48, 3) and rotated["meta"]["source_rotation"] == 270
    assert np.abs(rotated["video"].astype(int) - portrait()).mean() < 8  # upright (sideways would be ~100 off)

    vfr = kinds["vfr"]
    assert (vfr["meta"]["fps"], vfr["meta"]["frames"], vfr["meta"]["source_frames"]) == (30.0, 60, 40)
    shown = np.rint(vfr["video"].reshape(60, -1).mean(1) / 6).astype(int).tolist()
    assert shown == [i // 3 for i in range(30)] + list(range(10, 40))  # each 10-fps frame held for 3 output frames

    partial = kinds["partial"]
    assert 0 < partial["meta"]["frames"] < 40 and partial["meta"]["warning"].startswith(
        f"partial decode: {partial['meta']['frames']} frames (")
    assert "of the 4.0 s the container announces" in partial["meta"]["warning"]
    assert [w["key"] for w in read_manifest(out)["warnings"]] == [partial["key"]]
    assert "1 video(s) decoded only in part, stored with a warning" in printed

    assert (kinds["audio"]["meta"]["frames"], "warning" in kinds["audio"]["meta"]) == (20, False)
    assert (kinds["odd"]["meta"]["height"], kinds["odd"]["meta"]["width"]) == (48, 68)  # even sides
    assert kinds["ntsc"]["meta"]["frames"] == kinds["ntsc"]["meta"]["source_frames"] == 30
    assert not any("warning" in s["meta"] for k, s in kinds.items() if k != "partial")

    reasons = {videos[f["key"]]: f["reason"] for f in read_manifest(out)["failed"]}
    assert reasons["empty"] == "zero-length file (a download or copy that never finished): fetch it again"
    assert reasons["html"] == ("not a video: the file is an HTML page (a failed download saves the error page): "
                               "fetch it again")
    assert reasons["no-index"].startswith("truncated or damaged mp4/mov file (") and reasons["no-index"].endswith(
        "): fetch it again")
    assert prep(root, out, "--strict") == 1
    assert "--strict: 3 broken input(s), 1 partial decode(s): exit 1" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# detector classes and start-up errors

def tiny_yolo(path: Path, names: dict[int, str], favour: int) -> Path:
    """A random yolov8n with these classes, built offline and saved as a real ultralytics file,
    whose every detection is of class `favour` (its class scores biased so)."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    model = YOLO("yolov8n.yaml")
    model.model = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:  # the Detect head's class branches, one per scale
            branch[-1].bias[:] = torch.tensor([8.0 if c == favour else -8.0 for c in range(len(names))])
    model.model.names = dict(names)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def small_ucf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf")
    train = {"v_Jump_g01_c01": "Jump", "v_Wave_g01_c01": "Wave"}
    ucf_layout(root, train, {})
    for seed, (stem, cls) in enumerate(train.items()):
        ucf_video(root, stem, cls, seed)
    return root


def test_detector_classes_chosen_by_name_and_recorded(small_ucf, tmp_path, capsys):
    from prep.detector import PersonDetector

    weights = tiny_yolo(tmp_path / "fall.pt", {0: "Normal", 1: "Fall"}, favour=1)  # sees everyone as 'Fall'
    out = tmp_path / "shards"
    args = ["--dataset", "ucf101", "--root", str(small_ucf), "--out", str(out), "--detector", str(weights),
            "--scene-model", "none", "--det-imgsz", "64", "--workers", "1", "--device", "cpu"]
    # no class is named person: refused before anything is written, the model's names listed
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"prep-shards: error: --detector {weights}: the detector has no class named 'person'; its classes "
                   "are {0: 'Normal', 1: 'Fall'}: choose the ones that are people with --det-classes (ids or names, e.g. 0,1)"]
    assert not out.exists()

    assert main(args + ["--det-classes", "Normal,Fall"]) == 0
    boxes = read_manifest(out)["provenance"]["boxes"]
    assert (boxes["classes"], boxes["class_names"]) == ([0, 1], ["Normal", "Fall"])
    normal = PersonDetector(weights, device="cpu", imgsz=64, classes="Normal")
    for sample in iter_samples(out, "train"):  # 'Fall' boxes on every frame, where class 0 alone has none
        assert all(len(frame) > 0 for frame in sample["boxes"]) and len(sample["boxes"]) == 8
        assert normal.detect(sample["video"]) == [[]] * 8
    # the same classes named by id are the same settings; other classes are refused, by name
    capsys.readouterr()
    assert main(args + ["--det-classes", "1,0"]) == 0 and "0 done, 0 failed, 1 shards skipped" in capsys.readouterr().out
    assert main(args + ["--det-classes", "Normal"]) == 2
    assert "(--det-classes was [0, 1], now [0])" in capsys.readouterr().err


@pytest.mark.parametrize("flag, make, message", [
    ("--scene-model", lambda p: p.write_bytes(b"PK\x03\x04 not really a checkpoint" * 40),
     "--scene-model {path} --scene-arch resnet18: cannot read {path}: "),
    ("--scene-arch", None, "--scene-model {path} --scene-arch resnet5: 'resnet5' is not a timm architecture"),
    ("--detector", lambda p: p.write_bytes(b"\x80\x02 torn pickle"),
     "--detector {path}: cannot load the detector {path}: "),
])
def test_bad_model_fails_in_one_line_and_locks_nothing(small_ucf, tmp_path, flag, make, message):
    import timm
    import torch

    scene = tmp_path / "scene.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=365).state_dict(), scene)
    path = tmp_path / ("bad.pt" if flag == "--detector" else "bad.pth")
    models = {"--scene-model": ["--detector", "none", "--scene-model", str(path), "--scene-arch", "resnet18"],
              "--scene-arch": ["--detector", "none", "--scene-model", str(scene), "--scene-arch", "resnet5"],
              "--detector": ["--detector", str(path), "--scene-model", "none"]}[flag]
    if make:
        make(path)
    shown = str(scene if flag == "--scene-arch" else path)
    out = tmp_path / "shards"
    cmd = PREP + ["--dataset", "ucf101", "--root", str(small_ucf), "--out", str(out), "--workers", "1", "--device", "cpu"]
    result = subprocess.run(cmd + models, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("prep-shards: error: " + message.format(path=shown)), result.stderr
    assert not out.exists()  # nothing written, so the corrected command is not refused
    assert main(cmd[len(PREP):] + ["--detector", "none", "--scene-model", "none"]) == 0


def test_official_detector_names_pass_to_ultralytics(small_ucf, tmp_path, capsys):
    from prep.prep_shards import PrepConfig, settled

    base = dict(dataset="ucf101", root=str(small_ucf), out=str(tmp_path), scene_model="none")
    assert settled(PrepConfig(**base, detector="yolo11m.pt")).detector == "yolo11m.pt"  # ultralytics downloads it
    with pytest.raises(SystemExit):
        settled(PrepConfig(**base, detector="yolo11m-typo.pt"))
    assert ("--detector yolo11m-typo.pt: no such file (nor an official ultralytics model name such as yolo11m.pt)"
            in capsys.readouterr().err.strip().splitlines()[-1])


def test_speed_in_seconds_per_video_when_slow():
    assert speed(30, 10) == "3.0 videos/s"
    assert speed(3, 10) == "3.3 s/video"
    assert speed(0, 10) == "no video"


def test_frame_folders_decode_by_number_at_30_fps(tmp_path):
    from PIL import Image

    from prep.decode import InputError, decode_source

    folder = tmp_path / "video"
    folder.mkdir()
    for n in (1, 2, 3, 5, 10):  # numbers, not names, order them; 4 and 6-9 are absent
        Image.fromarray(np.full((60, 80, 3), n * 20, np.uint8)).save(folder / f"{n:06d}.png")
    (folder / "notes.txt").write_text("not a frame")
    dec = decode_source(folder, short_side=30)
    assert dec.frames.shape == (5, 30, 40, 3) and dec.fps == 30 and dec.source_frames == 5
    assert [int(f[0, 0, 0]) for f in dec.frames] == [20, 40, 60, 100, 200]
    assert dec.warning == ("partial decode: 5 frame number(s) absent between 1 and 10; "
                           "the folder is incomplete: fetch it again")
    half = decode_source(folder, short_side=0, fps=15)
    assert half.source_index.tolist() == [0, 2, 4] and half.frames.shape == (3, 60, 80, 3)
    with pytest.raises(InputError, match="no frames: the folder holds no numbered .jpg/.jpeg/.png images"):
        decode_source(tmp_path)


def test_a_jpeg_cut_short_is_a_damaged_frame_even_with_ultralytics_imported(tmp_path, monkeypatch):
    """ultralytics patches PIL's Image.open to pip-install a HEIF plugin on a file it cannot
    identify; a frame cut short must still read as damaged, not fail the video on the import."""
    from PIL import Image

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))
    import ultralytics.utils.patches  # noqa: F401  (applies the patch, as the detector's import does)
    from prep.decode import decode_source

    folder = tmp_path / "video"
    folder.mkdir()
    for n in (1, 2, 3):
        Image.fromarray(np.full((32, 32, 3), n * 60, np.uint8)).save(folder / f"{n:06d}.jpg")
    (folder / "000002.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    dec = decode_source(folder, short_side=0)
    assert [round(f.mean() / 60) for f in dec.frames] == [1, 1, 3]
    assert dec.warning.startswith("partial decode: 1 damaged image(s) (000002.jpg)")
