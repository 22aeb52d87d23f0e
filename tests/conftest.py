"""Shared fixtures: a tiny shard set written with the real writer."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

# ultralytics reads/writes settings on import; keep it offline and inside the test tree
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).parent / ".yolo-config"))

from shards import NUM_SCENES, Sample, ShardWriter, add_split, encode_video, new_manifest, write_manifest
from shards.index import format_index, index_from_tar
from shards.files import file_sha256

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CLASSES = ["wave", "jump", "clap"]
SCENE_NAMES = [f"scene_{i}" for i in range(NUM_SCENES)]


def moving_box_clip(rng: np.random.Generator, frames: int = 8, height: int = 32, width: int = 48):
    """A clip with a bright rectangle moving over a noisy background, and its per-frame box."""
    video = (rng.random((frames, height, width, 3)) * 60 + 40).astype(np.uint8)
    boxes = []
    bw, bh = width // 4, height // 2
    for t in range(frames):
        x0, y0 = 2 + 3 * t % (width - bw - 2), height // 4
        video[t, y0:y0 + bh, x0:x0 + bw] = (220, 40, 40)
        boxes.append([[x0 / width, y0 / height, (x0 + bw) / width, (y0 + bh) / height, 0.9]])
    return video, boxes


def make_sample(key: str, rng: np.random.Generator, split: str, codec: str = "vp9", frames: int = 8,
                gop: int = 16) -> Sample:
    video, boxes = moving_box_clip(rng, frames)
    if rng.random() < 0.5:
        boxes[1] = []  # a frame without a person
    scene = rng.dirichlet(np.ones(NUM_SCENES)).astype(np.float32)
    label = int(rng.integers(len(CLASSES)))
    meta = {"label_name": CLASSES[label], "split": split, "fps": 25.0, "frames": len(video),
            "height": video.shape[1], "width": video.shape[2], "source": f"{key}.mp4"}
    return Sample(key, encode_video(video, 25.0, codec, gop), codec, boxes, scene, label, meta)


def write_tiny_set(out: Path, layout: dict[str, list[int]], seed: int = 0, codec: str = "vp9", frames: int = 8,
                   gop: int = 16) -> dict:
    """Write shards: layout maps split -> samples per shard; returns the manifest."""
    rng = np.random.default_rng(seed)
    manifest = new_manifest("tiny", CLASSES, SCENE_NAMES, codec, {"boxes": "drawn", "scene": "random"})
    for split, sizes in layout.items():
        infos = []
        for i, n in enumerate(sizes):
            with ShardWriter(out, f"{split}-{i:06d}") as w:
                for j in range(n):
                    w.write(make_sample(f"{split}_{i}_{j}", rng, split, codec, frames, gop))
            infos.append(w.info())
        add_split(manifest, split, infos)
    write_manifest(out, manifest)
    return manifest


def rebuild_shard(shards: Path, tar_name: str, edit=lambda name, data: data, extra=(), keep_index: bool = False) -> None:
    """Rewrite one shard through edit(name, data) -> data (None drops the member), append `extra`
    (TarInfo, data) members, and refresh the manifest entry (and the index unless keep_index), so
    that only the planted defect is wrong."""
    path = shards / tar_name
    with tarfile.open(path) as tar:
        members = [(i.name, tar.extractfile(i).read()) for i in tar]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            data = edit(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    if not keep_index:
        path.with_suffix(".idx").write_text(format_index(index_from_tar(path)))
    edit_manifest(shards, lambda m: [s.update(bytes=path.stat().st_size, sha256=file_sha256(path))
                                     for s in m["splits"]["train"]["shards"] if s["tar"] == tar_name])


def edit_manifest(shards: Path, edit) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    edit(manifest)
    (shards / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def tiny_shards(tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    write_tiny_set(out, {"train": [3, 2], "val": [2]})
    return out


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory) -> Path:
    """A small synthetic set (medium difficulty: bystanders too) through prep-synth and prep-shards."""
    from prep.prep_shards import main as prep_shards
    from prep.synth.generate import generate

    raw = tmp_path_factory.mktemp("synth-raw")
    generate(raw, {"train": 12, "val": 5, "test": 4}, frames=14, size=48, seed=2, difficulty="medium",
             workers=2, progress=False)
    out = tmp_path_factory.mktemp("synth-shards")
    assert prep_shards(["--dataset", "synth", "--root", str(raw), "--out", str(out), "--shard-size", "5",
                        "--workers", "2"]) == 0
    return out
