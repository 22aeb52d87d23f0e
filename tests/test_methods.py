"""The method zoo (train/methods/): each transform on constructed clips with known answers, each
loss against its formula, each step deterministic in (seed, rank, step), and all of them under
torchrun with 2 CPU ranks."""
from __future__ import annotations

import colorsys
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shards.loader.masking import CLIP_MEAN, CLIP_STD
from train.methods import METHODS, ActorCutMix, Albar, BackgroundErasing, Fame, StillMix
from train.methods.fame import foreground_mask, gaussian_blur, rgb_to_hsv
from train.model import R3D18, SceneHead
from train.step import DebiasStep, Losses

ROOT = Path(__file__).resolve().parents[1]


def frame_valued(b: int, t: int, h: int = 6, w: int = 8) -> torch.Tensor:
    """(b, 3, t, h, w) clips whose every pixel of clip i, frame j is 10 i + j (+ 0.1 per channel)."""
    values = 10 * torch.arange(b).view(-1, 1, 1) + torch.arange(t).view(1, 1, -1) + 0.1 * torch.arange(3).view(1, 3, 1)
    return values[..., None, None].expand(b, 3, t, h, w).float().contiguous()


def test_background_erasing_blends_one_own_frame_into_every_frame():
    clip = frame_valued(4, 5)
    out = BackgroundErasing().erase(clip, torch.Generator().manual_seed(3))
    lams = []
    for i in range(4):
        # out_j = (1 - lam) x_j + lam x_t0: the frames' differences shrink by (1 - lam), the rest is lam x_t0
        lam = 1 - float(out[i, 0, 1, 0, 0] - out[i, 0, 0, 0, 0])
        still = (out[i, :, 0, 0, 0] - (1 - lam) * clip[i, :, 0, 0, 0]) / lam
        t0 = int(round(float(still[0]) - 10 * i))
        assert 0 <= t0 < 5 and torch.allclose(still, clip[i, :, t0, 0, 0], atol=1e-2)  # / lam magnifies rounding
        assert torch.allclose(out[i], (1 - lam) * clip[i] + lam * clip[i, :, t0:t0 + 1], atol=1e-5)
        lams.append(lam)
    assert 0 < lams[0] < 0.3 and np.allclose(lams, lams[0], atol=1e-5)  # one weight per batch
    assert torch.equal(BackgroundErasing(prob=0.0).erase(clip, torch.Generator().manual_seed(3)), clip)


def test_actor_cutmix_pastes_the_box_pixels_and_mixes_labels_by_area():
    b, t, h, w = 4, 2, 4, 4
    clip = frame_valued(b, t, h, w) + 1  # no pixel is 0, the fill of a removed actor
    human = torch.zeros(b, t, h, w, dtype=torch.bool)
    human[0, :, :2, :2] = True     # a quarter of clip 0
    human[1, :, :, :1] = True      # a quarter of clip 1
    human[3, :, :, :2] = True      # half of clip 3; clip 2 has nobody
    mixed, own = ActorCutMix(prob=1.0).mix(clip, human, torch.Generator().manual_seed(0))
    # clip 0 takes the background of clip 3 (reversed batch), zero where clip 3's own actor was
    expect0 = torch.where(human[0, None], clip[0], torch.where(human[3, None], torch.zeros(()), clip[3]))
    assert torch.equal(mixed[0], expect0)
    expect3 = torch.where(human[3, None], clip[3], torch.where(human[0, None], torch.zeros(()), clip[0]))
    assert torch.equal(mixed[3], expect3)
    assert torch.equal(mixed[2], clip[2])  # nobody: keeps its pixels ...
    # ... and gives clip 1 an all-zero background (its mask counts as everything, as in the official code)
    assert torch.equal(mixed[1], torch.where(human[1, None], clip[1], torch.zeros(())))
    assert torch.allclose(own, torch.tensor([1 - 0.75 ** 4, 1 - 0.75 ** 4, 1.0, 1 - 0.5 ** 4]))
    same, ones = ActorCutMix(prob=0.0).mix(clip, human, torch.Generator().manual_seed(0))
    assert torch.equal(same, clip) and torch.equal(ones, torch.ones(b))
    odd, weights = ActorCutMix(prob=1.0).mix(clip[:3], human[:3], torch.Generator().manual_seed(0))
    assert torch.equal(odd[1], clip[1]) and weights[1] == 1  # the middle clip of an odd batch pairs with itself


def test_actor_cutmix_loss_is_the_soft_label_cross_entropy():
    torch.manual_seed(0)
    net = R3D18(3, width=4)
    clip, human = torch.randn(2, 3, 4, 16, 16), torch.zeros(2, 4, 16, 16, dtype=torch.bool)
    human[:, :, :8] = True  # half of each clip: w = 1 - 0.5^4
    batch = {"clip": clip, "human": human, "label": torch.tensor([0, 2])}
    out = ActorCutMix(prob=1.0)(net, batch, torch.Generator().manual_seed(0))
    mixed, _ = ActorCutMix(prob=1.0).mix(clip, human, torch.Generator().manual_seed(0))
    w = 1 - 0.5 ** 4
    target = torch.tensor([[w, 0, 1 - w], [1 - w, 0, w]])
    assert torch.allclose(out.loss, -(F.log_softmax(net(mixed), 1) * target).sum(1).mean(), atol=1e-6)


def test_rgb_to_hsv_and_blur_match_references():
    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    hsv = rgb_to_hsv(rgb)
    for b, i, j in ((0, 0, 0), (1, 4, 6), (0, 2, 3)):
        h, s, v = colorsys.rgb_to_hsv(*rgb[b, :, i, j].tolist())
        assert np.allclose(hsv[b, :, i, j].tolist(), [2 * np.pi * h, s, v], atol=1e-5)
    flat = torch.full((1, 9, 9), 0.7)
    assert torch.allclose(gaussian_blur(flat, 5), flat)  # weights sum to 1, reflected borders
    impulse = torch.zeros(1, 9, 9)
    impulse[0, 4, 4] = 1
    blurred = gaussian_blur(impulse, 5)
    assert blurred[0, 4, 4] == blurred.max() and torch.allclose(blurred[0], blurred[0].T) and blurred.sum().item() == pytest.approx(1)


def test_fame_foreground_is_where_the_clip_moves_and_pastes_it():
    g = np.random.default_rng(0)
    t, h, w = 6, 20, 20
    clip01 = np.repeat(g.random((1, 3, 1, h, w)) * 0.2 + 0.1, t, axis=2)  # a dark static texture
    for j in range(t):  # a bright red square moving right by one pixel per frame
        clip01[0, :, j, 6:12, 3 + j:9 + j] = np.array([0.9, 0.1, 0.1])[:, None, None]
    clip01 = torch.from_numpy(clip01).float()
    mask = foreground_mask(clip01)
    assert mask.shape == (1, h, w) and mask.sum() == int(0.5 * h * w)
    assert mask[0, 6:12, 5:12].mean() == 1  # where the square is in most frames: all foreground
    assert mask[0, 6:12, 3:14].mean() > 0.9  # where it passes: nearly all
    std, mean = (torch.tensor(v).view(1, 3, 1, 1, 1) for v in (CLIP_STD, CLIP_MEAN))
    clips = (torch.cat([clip01, torch.rand(2, 3, t, h, w)]) - mean) / std  # normalised, as the loader gives them
    merged = Fame(prob=1.0).merge(clips, torch.Generator().manual_seed(0))
    masks = foreground_mask((clips * std + mean).clamp(0, 1))[:, None, None]  # computed in [0, 1]
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(0))  # the first draw of merge
    assert torch.allclose(merged, clips[perm] * (1 - masks) + clips * masks)


def test_stillmix_random_variant_mixes_a_frame_of_another_clip():
    clip = frame_valued(3, 4)
    out = StillMix(prob=1.0).mix(clip, torch.Generator().manual_seed(5))
    lams = []
    for i in range(3):
        lam = float(out[i, 0, 1, 0, 0] - out[i, 0, 0, 0, 0])  # frame differences scale by lam
        still = (out[i, 0, 0, 0, 0] - lam * clip[i, 0, 0, 0, 0]) / (1 - lam)
        other, frame = divmod(int(round(float(still))), 10)
        assert other != i and 0 <= frame < 4
        assert torch.allclose(out[i], lam * clip[i] + (1 - lam) * clip[other, :, frame:frame + 1], atol=1e-4)
        lams.append(lam)
    assert abs(lams[0] - 0.5) < 0.1 and np.allclose(lams, lams[0], atol=1e-5)  # Beta(200, 200), once per batch
    bank = torch.stack([torch.full((3, 6, 8), 100.0), torch.full((3, 6, 8), 200.0)])
    out = StillMix(bank, prob=1.0).mix(clip, torch.Generator().manual_seed(5))
    stills = (out - lams[0] * clip) / (1 - lams[0])
    assert set(stills.round().unique().tolist()) <= {100.0, 200.0}


def test_albar_loss_is_its_formula():
    torch.manual_seed(0)
    net = R3D18(4, width=4)
    clip, label = torch.randn(3, 3, 5, 16, 16), torch.tensor([0, 1, 3])
    out = Albar()(net, {"clip": clip, "label": label}, torch.Generator())
    static = clip[:, :, 2:3].expand_as(clip).contiguous()
    assert torch.equal(Albar.static_clip(clip), static)
    logits = net(torch.cat([clip, static]))  # one pass, as the method makes it (BatchNorm sees both)
    p = F.softmax(logits[3:], 1)
    entropy = -(p * p.log()).sum(1).mean()
    assert out.ce.item() == pytest.approx(F.cross_entropy(logits[:3], label).item(), rel=1e-5)
    assert out.parts["static_ce"].item() == pytest.approx(F.cross_entropy(logits[3:], label).item(), rel=1e-5)
    assert out.parts["static_entropy"].item() == pytest.approx(entropy.item(), rel=1e-5)
    x = static.clone().requires_grad_()
    grad, = torch.autograd.grad(net(torch.cat([clip, x]))[3:].sum(), x)
    penalty = grad.pow(2).sum(dim=(1, 2, 3)).add(1e-12).sqrt().mean()  # per sample and image column
    assert out.parts["gradient_penalty"].item() == pytest.approx(penalty.item(), rel=1e-4)
    expect = out.ce - out.parts["static_ce"] - 4.25 * out.parts["static_entropy"] + 10 * out.parts["gradient_penalty"]
    assert out.loss.item() == pytest.approx(expect.item(), rel=1e-5)


def test_albar_pushes_static_predictions_away_from_the_label():
    """One gradient step on ALBAR's static terms alone lowers the static clip's true-class
    probability, where the same step on the plain cross-entropy raises it."""
    torch.manual_seed(0)
    clip, label = torch.randn(4, 3, 4, 16, 16), torch.tensor([0, 1, 2, 0])
    static = Albar.static_clip(clip)
    moved = {}
    for name, method in (("albar", Albar(entropy_weight=0.0, penalty_weight=0.0)), ("ce", None)):
        net = R3D18(3, width=4).eval()  # BatchNorm in eval: the two passes see the same network
        torch.manual_seed(1)
        for p_ in net.parameters():
            p_.data.normal_(0, 0.1)
        before = F.softmax(net(static), 1)[torch.arange(4), label].mean()
        if method is None:
            loss = F.cross_entropy(net(static), label)
        else:  # the static part of ALBAR's loss: - CE(static)
            loss = method(net, {"clip": clip, "label": label}, torch.Generator()).loss - F.cross_entropy(net(clip), label)
        loss.backward()
        with torch.no_grad():
            for p_ in net.parameters():
                p_ -= 0.5 * p_.grad
        moved[name] = (F.softmax(net(static), 1)[torch.arange(4), label].mean() - before).item()
    assert moved["albar"] < 0 < moved["ce"]


def tiny_batch(seed: int = 0, b: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    human = torch.zeros(b, 4, 16, 16, dtype=torch.bool)
    human[:, :, 4:12, 2:8] = True
    return {"clip": torch.randn(b, 3, 4, 16, 16, generator=g), "human": human,
            "label": torch.randint(3, (b,), generator=g), "scene": torch.softmax(torch.randn(b, 365, generator=g), 1),
            "masked": torch.zeros(b, 3, 4, 16, 16), "mask_ok": torch.ones(b, dtype=torch.bool),
            "has_human": torch.ones(b, dtype=torch.bool)}


def make_step(name: str, seed: int = 0) -> DebiasStep:
    torch.manual_seed(seed)
    net, head = R3D18(3, width=4), SceneHead(32)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    method = METHODS[name](prob=1.0) if name in ("be", "actorcutmix", "fame", "stillmix") else METHODS[name]()
    return DebiasStep(net, head, opt, scaler, Losses(adv=False, ent=False), method=method, seed=seed)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_step_trains_and_repeats_in_seed_rank_step(name):
    runs = []
    for _ in range(2):
        step = make_step(name)
        before = [p.detach().clone() for p in step.net.parameters()]
        losses = [step(tiny_batch(s), s) for s in range(3)]
        runs.append((losses, [p.detach().clone() for p in step.net.parameters()]))
        assert all(np.isfinite(v) for l in losses for v in l.values()) and {"ce", "scene"} <= set(losses[0])
        assert any(not torch.equal(a, b) for a, b in zip(before, step.net.parameters()))
    (losses_a, params_a), (losses_b, params_b) = runs
    assert losses_a == losses_b and all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    if name in ("be", "fame", "stillmix"):  # they draw per step: another step number, other draws
        assert make_step(name)(tiny_batch(0), 7) != losses_a[0]


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
sys.path.insert(0, {tests!r})
from test_methods import make_step, tiny_batch
dist.init_process_group("gloo")
rank = dist.get_rank()
for name in {names!r}:
    step = make_step(name)
    step.net, step.head = DDP(step.net), DDP(step.head)
    step.rank = rank
    for s in range(2):
        losses = step(tiny_batch(seed=10 * rank + s), s)  # each rank its own batch
    flat = torch.cat([p.detach().flatten() for p in step.net.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), name  # DDP kept the ranks' weights equal
    if rank == 0:
        print(name, "ok", sorted(losses), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_every_method_step_runs_under_torchrun_with_2_cpu_ranks(tmp_path):
    script = tmp_path / "ddp_methods.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests"), names=sorted(METHODS)))
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[0] for line in result.stdout.splitlines() if " ok " in line] == sorted(METHODS)


def test_stillmix_bank_holds_decoded_frames_and_trains(synth_shards, tmp_path):
    from shards.loader import build_loader
    from shards.loader.preview import to_uint8
    from train.methods.stillmix_bank import main as stillmix_bank
    from train.pretrain import main as pretrain

    bank_path = tmp_path / "bank.npz"
    assert stillmix_bank(["--shards", str(synth_shards), "--out", str(bank_path), "--size", "40", "--steps", "2",
                          "--batch-size", "4", "--frames-per-video", "2", "--bank-size", "5", "--device", "cpu",
                          "--workers", "1"]) == 0
    with np.load(bank_path, allow_pickle=False) as f:
        frames, keys, clips, scores = f["frames"], f["keys"], f["clip_index"], f["score"]
    assert frames.shape == (5, 40, 40, 3) and frames.dtype == np.uint8 and len(set(zip(keys, clips))) == 5
    assert np.all((0 < scores) & (scores <= 1))
    loader = build_loader(synth_shards, "train", backend="torch", batch_size=5, frames=1, size=40, train=False,
                          clips=2, device="cpu", num_threads=1)
    index = {k: i for i, k in enumerate(loader.index.keys)}
    batch = next(iter(loader.run([[(index[str(k)], int(c)) for k, c in zip(keys, clips)]])))
    assert np.array_equal(np.stack([to_uint8(c)[0] for c in batch["clip"]]), frames)  # the frames the loader decodes
    out = tmp_path / "run"
    assert pretrain(["--shards", str(synth_shards), "--out", str(out), "--device", "cpu", "--loader", "torch",
                     "--workers", "1", "--arch", "r3d18-w16", "--frames", "4", "--size", "40", "--batch-size", "4",
                     "--max-steps", "2", "--val-every", "0", "--method", "stillmix", "--stillmix-bank",
                     str(bank_path)]) == 0
