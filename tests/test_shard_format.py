"""Write a tiny shard set, read it back three ways (ours, plain webdataset, DALI CPU)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import webdataset as wds

from conftest import make_sample, write_tiny_set
from shards import Sample, ShardFormatError, ShardWriter, decode_video, encode_video, iter_samples, read_manifest
from shards.format import BOX_ROW
from shards.loader import build_loader
from shards.video import IVF_HEADER, clip_stream, decode_frames, ivf_frames, segment_range
from shards.index import parse_index
from shards.manifest import shard_files

# decode_video converts YUV->RGB as DALI does: they differ by at most one level (rounding).

DECODER_MAX_ABS_DIFF = 1


def test_roundtrip_reference_reader(tmp_path):
    rng = np.random.default_rng(1)
    written = [make_sample(f"v{i}", rng, "train") for i in range(3)]
    with ShardWriter(tmp_path, "train-000000") as w:
        for s in written:
            w.write(s)
    from shards import add_split, new_manifest, write_manifest
    m = new_manifest("tiny", ["a", "b", "c"], [f"s{i}" for i in range(365)], "vp9")
    add_split(m, "train", [w.info()])
    write_manifest(tmp_path, m)

    got = list(iter_samples(tmp_path, "train"))
    assert [g["key"] for g in got] == ["v0", "v1", "v2"]
    for s, g in zip(written, got):
        assert g["label"] == s.label
        np.testing.assert_array_equal(g["scene"], s.scene)
        assert g["boxes"] == [[[np.float32(v).item() for v in b] for b in f] for f in s.boxes]
        assert g["video"].shape == (8, 32, 48, 3) and g["video"].dtype == np.uint8
        assert g["meta"]["frames"] == 8 and g["meta"]["id"] == s.key and g["codec"] == "vp9"
        np.testing.assert_array_equal(g["video"], decode_video(s.video.data))
        assert g["meta"]["segments"] == [list(seg) for seg in s.video.segments] == [[0, 32]]
        assert g["boxes_raw"].shape[1] == len(BOX_ROW)


def test_same_samples_give_identical_bytes(tmp_path):
    write_tiny_set(tmp_path / "a", {"train": [3]}, seed=5)
    write_tiny_set(tmp_path / "b", {"train": [3]}, seed=5)
    for name in ("train-000000.tar", "train-000000.idx", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_index_equals_wds2idx(tiny_shards, tmp_path):
    wds2idx = Path(sys.executable).parent / "wds2idx"
    for tar, idx in shard_files(tiny_shards, read_manifest(tiny_shards), "train"):
        ref = tmp_path / (tar.stem + ".ref.idx")
        subprocess.run([str(wds2idx), str(tar), str(ref)], check=True, capture_output=True)
        assert idx.read_text() == ref.read_text()
        assert len(parse_index(idx)) == len(list(wds.WebDataset(str(tar), shardshuffle=False)))


def test_plain_webdataset_agrees(tiny_shards):
    ours = list(iter_samples(tiny_shards, "train"))
    urls = [str(t) for t, _ in shard_files(tiny_shards, read_manifest(tiny_shards), "train")]
    theirs = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert [t["__key__"] for t in theirs] == [o["key"] for o in ours]
    for o, t in zip(ours, theirs):
        assert t["cls"] == o["label"]
        assert t["json"] == o["meta"]
        assert msgpack.unpackb(t["boxes.msgpack"]) == o["boxes"]
        np.testing.assert_array_equal(np.frombuffer(t["scene.f32"], "<f4"), o["scene"])
        np.testing.assert_array_equal(decode_video(t["vp9.ivf"]), o["video"])


@pytest.mark.parametrize("codec, ext", [("vp9", "vp9.ivf"), ("mjpeg", "mjpeg.ivf")])
def test_dali_webdataset_reader_agrees(tmp_path, codec, ext):
    from nvidia.dali import fn, pipeline_def, types

    write_tiny_set(tmp_path, {"train": [3, 2]}, codec=codec)
    ours = list(iter_samples(tmp_path, "train"))
    files = shard_files(tmp_path, read_manifest(tmp_path), "train")

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        video, scene, boxes, label, meta = fn.readers.webdataset(
            paths=[str(t) for t, _ in files], index_paths=[str(i) for _, i in files],
            ext=[ext, "scene.f32", "boxes.f32", "cls", "json"],
            dtypes=[types.UINT8, types.FLOAT, types.FLOAT, types.UINT8, types.UINT8],
            missing_component_behavior="error", random_shuffle=False)
        return fn.decoders.video(video, device="cpu"), scene, boxes, label, meta

    p = pipe()
    p.build()
    for o in ours:
        frames, scene, boxes, label, meta = (np.array(x[0]) for x in p.run())
        assert json.loads(meta.tobytes()) == o["meta"]
        assert int(label.tobytes()) == o["label"]
        np.testing.assert_array_equal(scene, o["scene"])
        np.testing.assert_array_equal(boxes.reshape(-1, len(BOX_ROW)), o["boxes_raw"])
        assert frames.shape == o["video"].shape
        diff = np.abs(frames.astype(int) - o["video"])
        assert diff.max() <= DECODER_MAX_ABS_DIFF and (diff > 0).mean() < 0.01


def test_boxes_raw_rows_follow_msgpack(tiny_shards):
    for s in iter_samples(tiny_shards, "val", decode=False):
        rows = [[t, *b] for t, f in enumerate(s["boxes"]) for b in f]
        np.testing.assert_array_equal(s["boxes_raw"], np.asarray(rows, np.float32).reshape(-1, 6))


def test_writer_failure_leaves_no_shard(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train-000000") as w:
            w.write(make_sample("a", rng, "train"))
            raise RuntimeError("crash mid-shard")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key, error", [("a.b", "no dots"), ("", "1-120 characters")])
def test_writer_rejects_bad_keys(tmp_path, key, error):
    sample = make_sample("x", np.random.default_rng(0), "train")
    sample.key = key
    with pytest.raises(ShardFormatError, match=error), ShardWriter(tmp_path, "s") as w:
        w.write(sample)


def test_writer_rejects_duplicate_keys(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ShardFormatError, match="duplicate"), ShardWriter(tmp_path, "s") as w:
        w.write(make_sample("a", rng, "train"))
        w.write(make_sample("a", rng, "train"))


@pytest.mark.parametrize("codec", ["vp9", "h264", "mjpeg"])
def test_video_codecs_roundtrip(codec):
    video = np.random.default_rng(0).integers(0, 255, (6, 16, 24, 3), dtype=np.uint8)
    encoded = encode_video(video, 30.0, codec)
    assert encoded == encode_video(video, 30.0, codec)
    assert decode_video(encoded.data).shape == video.shape
    starts = [f for f, _ in encoded.segments]
    assert encoded.segments[0] == (0, IVF_HEADER) and starts == sorted(set(starts))
    # every MJPEG frame is a keyframe; VP9 keeps the gop on noise, x264 cuts a scene at every frame
    assert starts == ([0] if codec == "vp9" else [0, 1, 2, 3, 4, 5])


def moving_video(frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Noise panning one column a frame: every frame differs, inter frames carry real motion."""
    base = np.random.default_rng(7).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return np.stack([np.roll(base, t, axis=1) for t in range(frames)])


@pytest.mark.parametrize("codec", ["vp9", "h264", "mjpeg"])
def test_late_window_cut_from_its_segments_equals_a_full_decode(codec):
    """A clip read from the segments it spans alone (what both loaders decode) holds exactly the
    frames a decode of the whole video gives at those positions, wherever the clip starts."""
    encoded = encode_video(moving_video(150), 25.0, codec, gop=16)
    full = decode_video(encoded.data)
    if codec != "mjpeg":
        assert [f for f, _ in encoded.segments][:4] == [0, 16, 32, 48]
    for first, stride in ((0, 1), (70, 1), (134, 1), (120, 2), (149, 1)):
        frames = np.minimum(first + np.arange(16) * stride, 149)
        start, end, f0, count = segment_range(encoded.segments, 150, len(encoded.data), frames.min(), frames.max())
        assert f0 <= frames.min() and frames.max() < f0 + count and f0 > frames.min() - 16
        stream = clip_stream(encoded.data[:IVF_HEADER], encoded.data[start:end], count)
        assert len(stream) < len(encoded.data) or first == 0
        np.testing.assert_array_equal(decode_frames(stream, frames - f0), full[frames])


def test_segment_table_points_at_keyframe_records():
    encoded = encode_video(moving_video(40), 25.0, "vp9", gop=8)
    records = ivf_frames(encoded.data)
    assert [pts for _, _, pts in records] == list(range(40))
    offsets = {pts: off for off, _, pts in records}
    assert [(f, offsets[f]) for f, _ in encoded.segments] == list(encoded.segments)
    assert [f for f, _ in encoded.segments] == [0, 8, 16, 24, 32]
    with pytest.raises(ShardFormatError, match="outside the video's 40 frames"):
        segment_range(encoded.segments, 40, len(encoded.data), 30, 40)


def test_odd_frame_size_is_refused():
    with pytest.raises(ShardFormatError, match="odd"):
        encode_video(np.zeros((2, 15, 16, 3), np.uint8), 25.0)


@pytest.mark.parametrize("old", [0, 1])
def test_manifest_version_mismatch_says_what_to_run(tiny_shards, old):
    path = tiny_shards / "manifest.json"
    m = json.loads(path.read_text())
    assert m["version"] == 2
    m["version"] = old
    path.write_text(json.dumps(m))
    with pytest.raises(ShardFormatError, match=f"version {old}.*re-run prep-shards"):
        read_manifest(tiny_shards)
    with pytest.raises(ShardFormatError, match="re-run prep-shards"):
        build_loader(tiny_shards, "train", backend="torch", batch_size=1, frames=4, size=16, device="cpu")


def test_missing_manifest_and_split(tiny_shards, tmp_path):
    with pytest.raises(ShardFormatError, match="no manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(ShardFormatError, match="split 'test' is not in the shards"):
        list(iter_samples(tiny_shards, "test"))
