"""Loaders: backend parity, masking geometry, rank partitioning, determinism and resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shards.loader import build_loader, describe
from shards.loader.masking import CLIP_MEAN, CLIP_STD, box_rects, human_pixels, masked_copy, normalise
from shards.loader.sampling import MaskFilter, SplitIndex, epoch_batches
from shards.video import decode_frames, decode_video

ONE_LEVEL = 1 / 255 / min(CLIP_STD) + 1e-5  # one 8-bit level after normalisation


def loader(shards, split="train", **kw):
    args = dict(batch_size=4, frames=8, size=40, device="cpu", num_threads=2)
    return build_loader(shards, split, **{**args, **kw})


def denormalise(x: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) normalised -> (B, T, H, W, 3) in [0, 255]."""
    x = x.permute(0, 2, 3, 4, 1) * torch.tensor(CLIP_STD) + torch.tensor(CLIP_MEAN)
    return (x * 255).numpy()


@pytest.mark.parametrize("shape", ["box", "tube"])
def test_backends_agree_in_eval(synth_shards, shape):
    dali = list(loader(synth_shards, "val", backend="dali", train=False, clips=2, mask_shape=shape))
    ref = list(loader(synth_shards, "val", backend="torch", train=False, clips=2, mask_shape=shape))
    assert len(dali) == len(ref) == 3  # 5 videos x 2 clips in batches of 4
    for a, b in zip(dali, ref):
        assert a["key"] == b["key"] and torch.equal(a["label"], b["label"]) and torch.equal(a["scene"], b["scene"])
        for name in ("clip", "masked"):
            diff = (a[name] - b[name]).abs()
            # decoder rounding: at most one level, on under 1% of values (the masked fill differs
            # by float rounding of the frame means, far below a level)
            assert diff.max() <= ONE_LEVEL and (diff > 0.1 * ONE_LEVEL).float().mean() < 0.01, name
        assert not torch.equal(a["clip"], a["masked"])  # someone was masked


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_masked_pixels_follow_crop_and_flip(synth_shards, backend):
    """In training mode (random crop, flips): inside every box the pixels equal the full frame's
    mean, outside they are the clip's own pixels, mirrored with it."""
    ld = loader(synth_shards, backend=backend, seed=3)
    index = ld.index
    flipped = 0
    for batch in ld:
        clip, masked = denormalise(batch["clip"]), denormalise(batch["masked"])
        for b, (sample, clip_no) in enumerate(zip(batch["sample"].tolist(), batch["clip_index"].tolist())):
            d = describe(index, ld.cfg, ld.epoch, sample, clip_no)
            p = d["params"]
            full = decode_video(index.read(sample, "video"))[p.frames].astype(np.float64)  # the whole video decoded
            means = full.reshape(len(full), -1, 3).mean(1)
            inside = np.zeros(clip.shape[1:4], bool)
            for t, rects in enumerate(d["rects"]):
                for r0, r1, c0, c1 in rects:
                    inside[t, r0:r1, c0:c1] = True
            assert inside.any()
            if p.flip:
                inside = inside[:, :, ::-1]
                flipped += 1
            expect_in = np.broadcast_to(means[:, None, None, :], clip.shape[1:])[inside]
            assert np.abs(masked[b][inside] - expect_in).max() < 0.05  # the mean of a decoded frame
            assert np.abs(masked[b][~inside] - clip[b][~inside]).max() < 0.01
            crop = full[:, p.y0:p.y0 + 40, p.x0:p.x0 + 40]
            crop = crop[:, :, ::-1] if p.flip else crop
            assert np.abs(clip[b] - crop).max() <= 1.01  # the decoder's rounding, at most
    assert flipped > 0


def test_box_rects_follow_the_format_rule():
    # a box drawn over pixel columns 10..19 and rows 4..11 of a 32 x 40 frame
    rows = np.array([[0, 10 / 40, 4 / 32, 20 / 40, 12 / 32, 0.9], [0, 0.0, 0.0, 0.05, 0.05, 0.1]], np.float32)
    rects = box_rects(rows, np.array([0, 0]), 32, 40, y0=2, x0=5, size=16)
    assert rects.tolist() == [[[2, 10, 5, 15]], [[2, 10, 5, 15]]]  # the low-score box is not masked
    assert box_rects(rows, np.array([0]), 32, 40, 0, 0, 16, threshold=0.05).tolist() == [[[4, 12, 10, 16], [0, 2, 0, 2]]]
    grown = box_rects(rows, np.array([0]), 32, 40, 0, 0, 32, dilate=0.1)
    assert grown.tolist() == [[[3, 13, 9, 21]]]


def rects_box_by_box(rows, frames, height, width, y0, x0, size, *, threshold, dilate, shape):
    """The format's pixel rule written out box by box (the loader's first box_rects)."""
    eps, per_frame = 1e-3, []
    for f in frames:
        rects = []
        for _, x1, y1, x2, y2, _ in rows[(rows[:, 0] == f) & (rows[:, 5] >= threshold)]:
            dx, dy = dilate * (x2 - x1), dilate * (y2 - y1)
            x1, x2, y1, y2 = max(0.0, x1 - dx), min(1.0, x2 + dx), max(0.0, y1 - dy), min(1.0, y2 + dy)
            r = [math.floor(y1 * height + eps) - y0, math.ceil(y2 * height - eps) - y0,
                 math.floor(x1 * width + eps) - x0, math.ceil(x2 * width - eps) - x0]
            r = [min(max(v, 0), size) for v in r]
            if r[0] < r[1] and r[2] < r[3]:
                rects.append(r)
        per_frame.append(rects)
    if shape == "tube":
        every = [r for rects in per_frame for r in rects]
        union = [[min(r[i] for r in every) if i % 2 == 0 else max(r[i] for r in every) for i in range(4)]] if every else []
        per_frame = [union] * len(frames)
    out = np.zeros((len(frames), max(1, max(len(r) for r in per_frame)), 4), np.int32)
    for t, rects in enumerate(per_frame):
        if rects:
            out[t, :len(rects)] = rects
    return out


def test_box_rects_equal_the_rule_box_by_box():
    rng = np.random.default_rng(0)
    for trial in range(300):
        t = int(rng.integers(1, 60))
        n = int(rng.integers(0, 4 * t))
        a, b = rng.random((n, 2)), rng.random((n, 2))
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        if trial % 3 == 0:  # boxes on whole pixel edges, where EPS decides
            lo, hi = np.round(lo * 40) / 40, np.round(hi * 40) / 40
        rows = np.column_stack([np.sort(rng.integers(0, t, n)), lo, hi, rng.random(n)]).astype(np.float32)
        frames = np.minimum(rng.integers(0, t) + np.arange(int(rng.integers(1, 17))) * int(rng.integers(1, 3)), t - 1)
        kw = dict(threshold=float(rng.choice([0.0, 0.3, 0.9])), dilate=float(rng.choice([0.0, 0.1, 0.25])),
                  shape=str(rng.choice(["box", "tube"])))
        size = int(rng.integers(8, 40))
        y0, x0 = int(rng.integers(0, 40 - size + 1)), int(rng.integers(0, 48 - size + 1))
        np.testing.assert_array_equal(box_rects(rows, frames, 40, 48, y0, x0, size, **kw),
                                      rects_box_by_box(rows, frames, 40, 48, y0, x0, size, **kw))


def test_masked_copy_equals_a_box_by_box_fill():
    g = torch.Generator().manual_seed(0)
    b, t, h, w, k = 3, 4, 20, 24, 3
    clip, means = torch.randn(b, 3, t, h, w, generator=g), torch.rand(b, t, 3, generator=g) * 255
    r0, c0 = torch.randint(0, 15, (b, t, k), generator=g), torch.randint(0, 18, (b, t, k), generator=g)
    rects = torch.stack([r0, r0 + torch.randint(0, 8, (b, t, k), generator=g), c0, c0 + 6], -1).int()
    flips = torch.tensor([False, True, False])
    expect, expect_inside = clip.clone(), torch.zeros(b, t, h, w, dtype=torch.bool)
    fill = ((means / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD))
    for i in range(b):
        for j in range(t):
            for r0_, r1_, c0_, c1_ in rects[i, j].tolist():
                c0_, c1_ = (w - c1_, w - c0_) if flips[i] else (c0_, c1_)
                expect[i, :, j, r0_:r1_, c0_:c1_] = fill[i, j][:, None, None]
                expect_inside[i, j, r0_:r1_, c0_:c1_] = True
    inside = human_pixels(rects, flips, h, w)
    assert torch.equal(inside, expect_inside) and 0 < inside.sum() < inside.numel()
    assert torch.equal(masked_copy(clip, means, inside), expect)


def test_drawn_rectangle_masked_exactly():
    frame = np.full((1, 1, 8, 10, 3), 50, np.uint8)
    frame[0, 0, 2:5, 3:7] = 250  # the "person"
    rows = np.array([[0, 0.3, 0.25, 0.7, 0.625, 1.0]], np.float32)
    rects = torch.from_numpy(box_rects(rows, np.array([0]), 8, 10, 0, 0, 8)[None])
    crop = torch.from_numpy(frame[:, :, :, :8].copy())
    means = torch.tensor([[[90.0, 90.0, 90.0]]])
    for flip in (False, True):
        flips = torch.tensor([flip])
        clip = normalise(crop, flips)
        masked = masked_copy(clip, means, human_pixels(rects, flips, 8, 8))
        expected = frame[:, :, :, :8].astype(np.float32)
        expected[0, 0, 2:5, 3:7] = 90.0
        if flip:
            expected, source = expected[:, :, :, ::-1], frame[:, :, :, 7::-1]
        else:
            source = frame[:, :, :, :8]
        np.testing.assert_allclose(denormalise(masked)[0], expected[0], atol=1e-3)
        np.testing.assert_allclose(denormalise(clip)[0], source[0].astype(np.float32), atol=1e-3)


def test_tube_mask_is_the_clip_union():
    rows = np.array([[0, 0.1, 0.1, 0.3, 0.5, 1], [1, 0.2, 0.2, 0.6, 0.4, 1]], np.float32)
    tube = box_rects(rows, np.array([0, 1, 2]), 10, 10, 0, 0, 10, shape="tube")
    assert tube.tolist() == [[[1, 5, 1, 6]]] * 3


def test_two_ranks_disjoint_and_complete(synth_shards):
    n = len(SplitIndex(synth_shards, "train"))
    seen = []
    for rank in (0, 1):
        plan = loader(synth_shards, backend="torch", rank=rank, world_size=2, batch_size=2).batches()
        seen.append([s for b in plan for s, _ in b])
        assert len(plan) == (n // 2) // 2  # the same number of batches on every rank
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 2 * ((n // 2) // 2) * 2
    ev = [[s for b in loader(synth_shards, "val", backend="torch", train=False, rank=r, world_size=2).batches()
           for s, _ in b] for r in (0, 1)]
    assert sorted(ev[0] + ev[1]) == list(range(5))  # every sample exactly once


def test_fewer_shards_than_ranks_still_balanced():
    sizes = [len(epoch_batches(5, 1, seed=0, epoch=0, rank=r, world_size=4)) for r in range(4)]
    assert sizes == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="cannot give each of 4 rank"):
        epoch_batches(3, 1, seed=0, epoch=0, rank=0, world_size=4)


def test_epochs_reshuffle_deterministically_and_resume(synth_shards):
    a, b = loader(synth_shards, backend="torch", seed=5), loader(synth_shards, backend="torch", seed=5)
    assert a.batches() == b.batches()
    b.set_epoch(1)
    assert a.batches() != b.batches()
    full = list(a)
    a.set_epoch(0, start_batch=1)
    resumed = list(a)
    assert len(resumed) == len(full) - 1
    for x, y in zip(full[1:], resumed):
        assert x["key"] == y["key"] and torch.equal(x["clip"], y["clip"]) and torch.equal(x["masked"], y["masked"])


def test_mask_filter_counts(synth_shards):
    ld = loader(synth_shards, backend="torch")
    kept, total = ld.mask_filter_kept
    assert total == 12 and kept == 12  # the synthetic actor is in every frame
    strict = build_loader(synth_shards, "train", backend="torch", batch_size=2, frames=8, size=40, device="cpu",
                          mask_filter=MaskFilter(min_score=1.1))
    assert strict.mask_filter_kept == (0, 12)


def test_bad_arguments(synth_shards):
    with pytest.raises(ValueError, match="smaller than size=112"):
        build_loader(synth_shards, "train", backend="torch", batch_size=2, device="cpu")
    with pytest.raises(ValueError, match="backend must be"):
        loader(synth_shards, backend="jax")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dali_gpu_matches_cpu(synth_shards):
    gpu = list(loader(synth_shards, "val", backend="dali", train=False, device="cuda"))
    cpu = list(loader(synth_shards, "val", backend="dali", train=False, device="cpu"))
    for a, b in zip(gpu, cpu):
        assert a["clip"].is_cuda and a["masked"].is_cuda
        for name in ("clip", "masked"):
            assert (a[name].cpu() - b[name]).abs().max() <= 2 * ONE_LEVEL


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_shards_preview_writes_a_picture(synth_shards, tmp_path, backend):
    from PIL import Image

    from shards.loader.preview import main

    out = tmp_path / "preview.png"
    assert main(["--shards", str(synth_shards), "--split", "val", "--backend", backend, "--n", "3",
                 "--frames", "8", "--show", "4", "--scale", "2", "--out", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (3 * (48 * 2 + 14 + 4), 2 * 4 * 48 * 2 + 3 * 4, 3)
    assert (image == [255, 0, 0]).all(axis=2).any()  # box outlines drawn
    assert main(["--shards", str(synth_shards), "--split", "nope", "--out", str(out)]) == 2


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_late_windows_of_a_long_video_are_its_exact_frames(tmp_path, backend):
    """A clip is decoded from the segments it spans alone: the first, middle and last windows of a
    90-frame video (gop 16: the last one starts mid-segment) hold the frames a full decode gives."""
    from conftest import write_tiny_set

    write_tiny_set(tmp_path, {"val": [2]}, frames=90, gop=16)
    ld = loader(tmp_path, "val", backend=backend, train=False, clips=3, frames=8, size=24, stride=2)
    seen = set()
    for batch in ld:
        clip = denormalise(batch["clip"])
        for b, (sample, k) in enumerate(zip(batch["sample"].tolist(), batch["clip_index"].tolist())):
            p = describe(ld.index, ld.cfg, 0, sample, k)["params"]
            full = decode_video(ld.index.read(sample, "video"))  # the whole video
            expect = full[p.frames, p.y0:p.y0 + 24, p.x0:p.x0 + 24].astype(np.float64)
            # torch: the same decoder on the cut stream, exact; DALI: its YUV rounding, one level
            assert np.abs(clip[b] - expect).max() <= (1.01 if backend == "dali" else 1e-3)
            seen.add(int(p.frames[0]))
            stream, within = ld.index.clip_stream(sample, p.frames)
            if p.frames[0] == 75:  # read from the segments at 64 and 80 alone, not from frame 0
                assert within[0] == 11 and len(stream) < 0.5 * len(ld.index.read(sample, "video"))
    assert seen == {0, 38, 75}  # round(k * (90 - 15) / 2): 75 is 11 frames into the segment from 64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dali_gpu_late_windows_match_cpu(tmp_path):
    """NVDEC on streams cut from mid-video segments: the first, middle and last windows."""
    from conftest import write_tiny_set

    write_tiny_set(tmp_path, {"val": [3]}, frames=90, gop=16)
    kw = dict(train=False, clips=3, frames=8, size=24, stride=2)
    gpu = list(loader(tmp_path, "val", backend="dali", device="cuda", **kw))
    cpu = list(loader(tmp_path, "val", backend="dali", device="cpu", **kw))
    assert len(gpu) == len(cpu) == 3
    for a, b in zip(gpu, cpu):
        for name in ("clip", "masked"):
            assert (a[name].cpu() - b[name]).abs().max() <= 2 * ONE_LEVEL
