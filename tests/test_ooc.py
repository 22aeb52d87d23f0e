"""The out-of-context suite: each transform's pixels on constructed clips, reproducible draws, the
suite's figures against evaluate's on the same clips, and the suite on real-video shards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from shards.loader.masking import CLIP_MEAN, CLIP_STD, frame_fill
from shards.loader.out_of_context import (actor_swap, backdrop_of, frozen_frame, human_only, load_backdrops,
                                          normalise_image, scuba, scufo, stripes, swap_partners)
from train import checkpoint
from train.evaluation.evaluate import evaluate_model, main as evaluate
from train.evaluation.ooc_suite import OOC_METRICS, ooc_picture, ooc_suite, triples
from train.pretrain import main as pretrain

TRAIN = ["--device", "cpu", "--loader", "torch", "--workers", "1", "--arch", "r3d18-w16", "--frames", "8",
         "--size", "40", "--batch-size", "4", "--optimizer", "adamw", "--epochs", "1"]


def constructed(seed: int = 0, b: int = 2, t: int = 3, h: int = 4, w: int = 5):
    """Random normalised clips, a box (rows 1-2, columns 1-3) in each frame, frame means."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(b, 3, t, h, w, generator=g)
    inside = torch.zeros(b, t, h, w, dtype=torch.bool)
    inside[:, :, 1:3, 1:4] = True
    means = torch.rand(b, t, 3, generator=g) * 255
    return clip, inside, means


def normalised(rgb) -> torch.Tensor:
    return (torch.as_tensor(rgb, dtype=torch.float32) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)


def test_human_only_keeps_the_boxes_and_fills_the_rest_with_the_frame_mean():
    clip, inside, means = constructed()
    out = human_only(clip, frame_fill(means), inside)
    for b in range(2):
        for t in range(3):
            for y in range(4):
                for x in range(5):
                    want = clip[b, :, t, y, x] if inside[b, t, y, x] else normalised(means[b, t])
                    assert torch.allclose(out[b, :, t, y, x], want, atol=1e-6)


def test_actor_swap_and_scuba_paste_the_box_pixels_over_the_other_picture():
    actor, inside, _ = constructed(0)
    background, _, _ = constructed(1)
    swapped = actor_swap(actor, inside, background)
    assert torch.equal(swapped[:, :, :, 1:3, 1:4], actor[:, :, :, 1:3, 1:4])
    outside = ~inside[:, None].expand_as(actor)
    assert torch.equal(swapped[outside], background[outside])

    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    backdrop = normalise_image(image)
    assert backdrop.shape == (3, 1, 4, 5)
    on = scuba(actor, inside, torch.stack([backdrop, backdrop]))
    assert torch.equal(on[:, :, :, 1:3, 1:4], actor[:, :, :, 1:3, 1:4])
    for t in range(3):  # the same still picture in every frame, outside the box
        assert torch.allclose(on[1, :, t, 0, 0], normalised(image[0, 0]), atol=1e-6)
        assert torch.allclose(on[0, :, t, 3, 4], normalised(image[3, 4]), atol=1e-6)


def test_scufo_repeats_one_frame():
    clip, _, _ = constructed(b=3, t=4)
    out = scufo(clip, torch.tensor([0, 3, 2]))
    for b, f in enumerate([0, 3, 2]):
        for t in range(4):
            assert torch.equal(out[b, :, t], clip[b, :, f])


def test_stripes_are_two_complementary_colours_drawn_from_the_seed():
    a, again, other = stripes(64, np.random.default_rng(5)), stripes(64, np.random.default_rng(5)), stripes(64, np.random.default_rng(6))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, again) and not np.array_equal(a, other)
    colours = np.unique(a.reshape(-1, 3), axis=0)
    assert len(colours) == 2 and np.all(colours[0].astype(int) + colours[1] == 255)
    share = (a == colours[0]).all(-1).mean()
    assert 0.05 < share < 0.95  # both colours cover a real part of the picture


def test_draws_are_per_video_and_reproducible(tmp_path):
    labels = np.array([0, 0, 1, 1, 1, 2])
    diff, same = swap_partners(labels, 3, False), swap_partners(labels, 3, True)
    assert np.array_equal(diff, swap_partners(labels, 3, False)) and np.array_equal(same, swap_partners(labels, 3, True))
    assert all(labels[p] != labels[i] for i, p in enumerate(diff))
    assert all(p != i and labels[p] == labels[i] for i, p in enumerate(same) if p >= 0)
    assert same[5] == -1 and (same[:5] >= 0).all()  # class 2 has one video: no same-class partner
    # a video's draws depend on (seed, video), not on what else is evaluated with it
    assert swap_partners(np.array([0, 1]), 3, False)[0] == 1
    draws = [tuple(swap_partners(labels, s, False)) for s in range(8)]
    assert len(set(draws)) > 1
    assert [frozen_frame(v, 0, 8) for v in range(20)] == [frozen_frame(v, 0, 8) for v in range(20)]
    assert all(0 <= frozen_frame(v, 1, 8) < 8 for v in range(50)) and len({frozen_frame(v, 1, 8) for v in range(50)}) > 3
    assert np.array_equal(backdrop_of(4, 0, 32), backdrop_of(4, 0, 32))

    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (30, 20), colour).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_backdrops(tmp_path, 16)
    assert [im.shape for im in images] == [(16, 16, 3)] * 2 and tuple(images[1][0, 0]) == (0, 0, 255)
    assert any(backdrop_of(v, 0, 16, images) is images[1] for v in range(10))
    with pytest.raises(ValueError, match=r"^--backdrops .*: no \.jpg/\.jpeg/\.png images there"):
        load_backdrops(tmp_path / "notes.txt", 16)


def test_the_decode_plan_puts_each_clip_with_its_partners():
    plan = triples(3, 2, 2, np.array([2, 2, 0]), np.array([1, 0, -1]))
    assert plan == [[(0, 0), (2, 0), (1, 0), (0, 1), (2, 1), (1, 1)],
                    [(1, 0), (2, 0), (0, 0), (1, 1), (2, 1), (0, 1)],
                    [(2, 0), (0, 0), (2, 0), (2, 1), (0, 1), (2, 1)]]


@pytest.fixture(scope="module")
def pretrained(synth_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("ooc-pre")
    assert pretrain(["--shards", str(synth_shards), "--out", str(out), *TRAIN]) == 0
    return out / "best.pt"


def test_suite_figures_agree_with_evaluate_and_do_not_depend_on_the_batch(synth_shards, pretrained, tmp_path):
    common = dict(clips=2, device="cpu", loader="torch", workers=1)
    suite = ooc_suite(pretrained, synth_shards, "val", batch_size=6, **common)
    plain = evaluate_model(pretrained, synth_shards, "val", batch_size=4, **common)
    # the original clips are evaluate's clips, the background-only ones its masked clips
    assert suite["top1"] == plain["top1"] and suite["background_top1"] == plain["masked_top1"]
    assert set(OOC_METRICS) <= suite.keys() and suite["videos"] == 5 and suite["backdrop"] == "stripes"
    assert all(0 <= suite[m] <= 1 for m in OOC_METRICS if suite[m] is not None)
    assert suite["contrasted_acc"] <= suite["scuba_top1"]
    assert suite == ooc_suite(pretrained, synth_shards, "val", batch_size=3, **common)  # 1 triple a batch
    other = ooc_suite(pretrained, synth_shards, "val", batch_size=6, seed=1, **common)
    assert other["top1"] == suite["top1"]  # the seed draws partners and backdrops, never the clips themselves

    picture = ooc_picture(synth_shards, "val", tmp_path / "ooc.png", {"frames": 8, "size": 40, "stride": 1,
                                                                    "mask_shape": "box", "mask_threshold": 0.3})
    with Image.open(picture) as im:
        assert im.size == (90 + 6 * 82, 7 * 82)


def test_evaluate_suite_ooc_cli(synth_shards, pretrained, tmp_path, capsys):
    out = tmp_path / "ooc.json"
    args = ["--checkpoint", str(pretrained), "--shards", str(synth_shards), "--split", "val", "--clips", "1",
            "--device", "cpu", "--loader", "torch", "--workers", "1", "--batch-size", "6"]
    assert evaluate([*args, "--suite", "ooc", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "val" and result["clips"] == 1 and set(OOC_METRICS) <= result.keys()
    capsys.readouterr()
    for extra, message in [(["--backdrops", str(tmp_path)], "--backdrops is for --suite ooc"),
                           (["--suite", "ooc", "--backdrops", str(tmp_path / "none")], f"--backdrops {tmp_path / 'none'}: no such folder"),
                           (["--suite", "ooc", "--dataset-bias"], "--dataset-bias measures the dataset, not a model: drop --suite ooc")]:
        with pytest.raises(SystemExit) as stop:
            evaluate([*args, *extra])
        assert stop.value.code == 2 and capsys.readouterr().err.strip() == f"evaluate: error: {message} (see --help)"


def test_suite_on_real_video_shards_with_classes_matched_by_name(pretrained, tmp_path, capsys):
    """Mimetics as a user has it: its CSV, H.264 files named the Kinetics way, boxes from a detector;
    a model whose classes hold the Mimetics classes among others, matched by name."""
    from prep.prep_shards import main as prep_shards
    from test_prep_real_data import noise, tiny_yolo, write_video

    root = tmp_path / "mimetics"
    rows = [("playing guitar", "aaaaaaaaaaa", 3, 13), ("surfing water", "bbbbbbbbbbb", 0, 10),
            ("playing guitar", "ccccccccccc", 7, 17), ("dancing ballet", "ddddddddddd", 1, 11)]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "mimetics_v1.0.csv").write_text(
        "label,youtube_id,time_start,time_end\n" + "".join(f"{c},{y},{a},{b}\n" for c, y, a, b in rows))
    for i, (c, y, a, b) in enumerate(rows[:3]):  # the fourth is gone from YouTube
        write_video(root / c / f"{y}_{a:06d}_{b:06d}.mp4", noise(i, frames=20, height=48, width=64))
    weights = tiny_yolo(tmp_path / "people.pt", {0: "person"}, favour=0)
    shards = tmp_path / "shards"
    assert prep_shards(["--dataset", "mimetics", "--root", str(root), "--out", str(shards), "--detector", str(weights),
                        "--det-imgsz", "64", "--scene-model", "none", "--workers", "1", "--device", "cpu"]) == 0
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["classes"] == ["dancing ballet", "playing guitar", "surfing water"]

    # a "Kinetics" model: the pretrained network with class names of which the Mimetics ones are three
    state = checkpoint.load(pretrained)
    names = [f"class {i}" for i in range(len(state["classes"]))]
    names[1], names[4], names[2] = "surfing water", "playing guitar", "dancing ballet"
    checkpoint.save({**state, "classes": names}, tmp_path / "kinetics.pt")
    out = tmp_path / "ooc.json"
    args = ["--checkpoint", str(tmp_path / "kinetics.pt"), "--shards", str(shards), "--split", "test", "--clips", "1",
            "--device", "cpu", "--loader", "torch", "--workers", "1"]
    assert evaluate([*args, "--suite", "ooc", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["videos"] == 3 and result["swap_pairs"] == 3 and result["swap_same_pairs"] == 2

    checkpoint.save({**state, "classes": [f"class {i}" for i in range(len(state["classes"]))]}, tmp_path / "other.pt")
    capsys.readouterr()
    assert evaluate([*args[:1], str(tmp_path / "other.pt"), *args[2:], "--suite", "ooc"]) == 1
    assert capsys.readouterr().err.startswith(
        f"evaluate: error: 3 of the 3 classes of the shards are not among the model's {len(names)} "
        "(e.g. 'dancing ballet', 'playing guitar', 'surfing water'): evaluate a model of these classes")


def hat_layout(root, videos: dict, damaged: str = "") -> None:
    """HAT's release as downloaded: ori/ and inp/ frame folders, seg/ masks, the rawframes list.
    videos: "class/video" -> (label, [(person rows, person cols), ...]); 12 frames of 48 x 64 each,
    every person a white block that moves one column a frame, and a 2-pixel speck in each mask."""
    lines = []
    for entry, (label, people) in videos.items():
        lines.append(f"{entry} 12 {label}")
        for t in range(1, 13):
            frame, mask = np.full((48, 64, 3), 40, np.uint8), np.zeros((48, 64), np.uint8)
            for rows, cols in people:
                frame[rows, cols.start + t:cols.stop + t], mask[rows, cols.start + t:cols.stop + t] = 230, 255
            mask[0, :2] = 200
            for folder, pixels in (("ori", frame), ("inp", np.full_like(frame, 40))):
                (root / folder / entry).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / folder / entry / f"{t:06d}.jpg", quality=95)
            (root / "seg" / entry).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "seg" / entry / f"{t:06d}.png")
    (root / "kinetics400_val_list_rawframes.txt").write_text("\n".join(lines) + "\n")
    if damaged:
        (root / "ori" / damaged / "000005.jpg").write_bytes(b"\xff\xd8\xff\xe0")  # a copy cut short


def test_hat_release_to_shards_with_boxes_from_its_masks_then_the_suite(pretrained, tmp_path, capsys):
    from prep.prep_shards import main as prep_shards
    from shards import iter_samples, read_manifest

    root, shards = tmp_path / "hat", tmp_path / "shards"
    one, two = (slice(10, 30), slice(4, 12)), (slice(20, 40), slice(40, 48))
    hat_layout(root, {"bending back/05mZDSLkGQI_000007_000017": (20, [one]),
                      "archery/01xStFVYC7U_000011_000021": (5, [one, two])}, damaged="archery/01xStFVYC7U_000011_000021")
    with open(root / "kinetics400_val_list_rawframes.txt", "a") as f:
        f.write("archery/gone_000001_000011 300 5\n")  # listed, not downloaded
    args = ["--dataset", "hat", "--root", str(root), "--out", str(shards), "--scene-model", "none", "--workers", "1"]
    assert prep_shards(args) == 0
    manifest = read_manifest(shards)
    assert manifest["classes"] == ["archery", "bending back"] and manifest["missing"]["count"] == 2
    assert {s: e["samples"] for s, e in manifest["splits"].items()} == {"test": 2, "inpainted": 2}
    assert manifest["provenance"]["boxes"] == {"source": "segmentation masks", "human_above": 128, "min_region": 0.001}
    assert [w["key"] for w in manifest["warnings"]] == ["01xStFVYC7U_000011_000021"]
    assert "1 damaged image(s) (000005.jpg)" in manifest["warnings"][0]["warning"]

    box = lambda rows, cols, t: [(cols.start + t) / 64, rows.start / 48, (cols.stop + t) / 64, rows.stop / 48, 1.0]
    for split in ("test", "inpainted"):  # the speck is left out; two people, two boxes, in raster order
        samples = {s["key"]: s for s in iter_samples(shards, split)}
        archery, bending = samples["01xStFVYC7U_000011_000021"], samples["05mZDSLkGQI_000007_000017"]
        assert bending["label"] == 1 and archery["label"] == 0 and bending["video"].shape == (12, 48, 64, 3)
        assert bending["boxes"] == [[pytest.approx(box(*one, t))] for t in range(1, 13)]
        assert archery["boxes"] == [[pytest.approx(box(*one, t)), pytest.approx(box(*two, t))] for t in range(1, 13)]
    assert np.abs(samples["05mZDSLkGQI_000007_000017"]["video"].astype(int) - 40).max() <= 3  # inpainted: no person
    assert samples["01xStFVYC7U_000011_000021"]["meta"]["source"] == "inp/archery/01xStFVYC7U_000011_000021"

    capsys.readouterr()
    assert prep_shards(args) == 0 and "2 shards skipped" in capsys.readouterr().out
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "seg/bending back/05mZDSLkGQI_000007_000017/000013.png")
    assert prep_shards(args) == 0  # new masks: the shards of that video are made again
    assert "test: 0 new, 1 changed, 0 gone" in capsys.readouterr().out

    state = checkpoint.load(pretrained)
    names = [f"class {i}" for i in range(len(state["classes"]))]
    names[0], names[3] = "bending back", "archery"
    checkpoint.save({**state, "classes": names}, tmp_path / "kinetics.pt")
    out = tmp_path / "ooc.json"
    assert evaluate(["--checkpoint", str(tmp_path / "kinetics.pt"), "--shards", str(shards), "--split", "test",
                     "--clips", "1", "--device", "cpu", "--loader", "torch", "--workers", "1", "--suite", "ooc",
                     "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["videos"] == 2 and result["swap_pairs"] == 2 and set(OOC_METRICS) <= result.keys()
