"""Official parity (vt-vl-lab/SDN at b92b9ca): each difference between our code and the official
code, as an equality with the official formula reimplemented here on tiny tensors."""
from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shards.loader.sampling import MaskFilter, SplitIndex
from train.entropy_loss import entropy_loss
from train.model import R3D18, SceneHead
from train.step import DebiasStep, Losses, usable_clips

ROOT = Path(__file__).resolve().parents[1]


class OfficialMLPBlock(nn.Module):  # models/resnet.py MLP_Block
    def __init__(self, inplanes, planes):
        super().__init__()
        self.fc, self.bn, self.relu = nn.Linear(inplanes, planes), nn.BatchNorm1d(planes), nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.fc(x)))


def official_place_mlp(width: int, hidden_layers: int = 3) -> nn.Sequential:
    """ResNet.__init__'s place_mlp (_make_mlp_layer) with the README commands' --num_place_hidden_layers 3."""
    mlp = nn.Sequential(*(OfficialMLPBlock(width, width) for _ in range(hidden_layers)))
    mlp.add_module("p_last_fc", nn.Linear(width, 365))
    return mlp


def test_official_scene_head_is_the_official_place_mlp():
    torch.manual_seed(0)
    ours, theirs = SceneHead(32, layout="official"), official_place_mlp(32)
    assert [p.shape for p in ours.state_dict().values()] == [p.shape for p in theirs.state_dict().values()]
    theirs.load_state_dict(dict(zip(theirs.state_dict(), ours.state_dict().values())))
    x = torch.randn(6, 32)
    for mode in (True, False):  # batch statistics in training, running ones in evaluation
        ours.train(mode), theirs.train(mode)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in SceneHead(32).modules())  # the paper's has none
    with pytest.raises(ValueError, match="scene head layout must be one of"):
        SceneHead(32, layout="bn")


def test_dampened_sgd_is_the_official_update():
    """opts.py: momentum 0.9, dampening 0.9: after the first step each gradient enters the
    momentum buffer at a tenth of its size."""
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, dampening=0.9, weight_decay=1e-3)
    ref, buf = w.detach().clone(), None
    for step in range(4):
        grad = torch.randn(5)
        w.grad = grad.clone()
        opt.step()
        d = grad + 1e-3 * ref  # the official SGD of its PyTorch: weight decay, then the buffer
        buf = d.clone() if buf is None else 0.9 * buf + (1 - 0.9) * d
        ref = ref - 0.1 * buf
        torch.testing.assert_close(w.detach(), ref)


def official_video_valid(scores_per_frame: list[list[float]], n_frames: int, det_th=0.3, ratio_th=0.7) -> bool:
    """datasets/kinetics.py is_video_valid_det."""
    cnt = sum(1 for scores in scores_per_frame if np.sum(np.asarray(scores) > det_th) > 0)
    return cnt / n_frames >= ratio_th


@pytest.mark.parametrize("frames, with_person, score", [
    (10, 7, 0.9),   # 7 of 10: official passes (0.7 >= 0.7), 7 >= 0.7 * 10 would not
    (10, 6, 0.9),   # 6 of 10: fails
    (10, 10, 0.3),  # every score at the threshold: not above it, fails
    (10, 10, 0.31),
    (3, 3, 0.5),
])
def test_people_filter_is_the_official_one(tiny_shards, frames, with_person, score):
    index = SplitIndex(tiny_shards, "train")
    rows = np.array([[f, 0.1, 0.1, 0.5, 0.5, score] for f in range(with_person)], np.float32).reshape(-1, 6)
    index.boxes[0], index.frames[0] = rows, frames
    scores = [[score]] * with_person + [[]] * (frames - with_person)
    assert index._has_people(0, MaskFilter()) == official_video_valid(scores, frames)


def tiny_step(optimizer_steps: list) -> DebiasStep:
    torch.manual_seed(0)
    net, head = R3D18(3, width=4), SceneHead(32)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt.register_step_post_hook(lambda *_: optimizer_steps.append(1))
    return DebiasStep(net, head, opt, torch.amp.GradScaler("cpu", enabled=False), Losses())


def batch(usable: list[bool], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(usable)
    return {"clip": torch.randn(b, 3, 4, 16, 16, generator=g), "masked": torch.randn(b, 3, 4, 16, 16, generator=g),
            "label": torch.randint(3, (b,), generator=g), "scene": torch.softmax(torch.randn(b, 365, generator=g), 1),
            "mask_ok": torch.tensor(usable), "has_human": torch.ones(b, dtype=torch.bool)}


def test_a_batch_without_usable_masked_clips_takes_one_step_not_two():
    steps: list = []
    step = tiny_step(steps)
    out = step(batch([True, False, True]))
    assert len(steps) == 2 and out["entropy"] < 0
    steps.clear()
    before = [p.detach().clone() for p in step.net.parameters()]
    out = step(batch([False, False, False], seed=1))
    # the old code stepped on a zero loss here: momentum and weight decay moved every weight again
    assert len(steps) == 1 and out["entropy"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, step.net.parameters()))  # the CE step itself
    assert usable_clips(torch.tensor([False, True, True])) == 2.0


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
sys.path.insert(0, {root!r})
from train.entropy_loss import entropy_loss
from train.step import usable_clips
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
layer = torch.nn.Linear(6, 4)
x = torch.randn(8, 6)
weight = torch.tensor([True, True, True, False, True, False, False, False])  # rank 0: 3 usable, rank 1: 1
ref = layer.weight.detach().clone().requires_grad_()
entropy_loss(x @ ref.T + layer.bias.detach(), weight).backward()  # one process, the whole batch
net = DDP(layer)
mine = slice(4 * rank, 4 * rank + 4)
entropy_loss(net(x[mine]), weight[mine], usable_clips(weight[mine])).backward()
assert torch.allclose(layer.weight.grad, ref.grad, atol=1e-7), (layer.weight.grad - ref.grad).abs().max()
assert usable_clips(torch.zeros(4, dtype=torch.bool)) == 0.0  # no rank has one: every rank skips
if rank == 0:
    print("mean over the global batch ok", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_masked_mean_under_ddp_is_the_global_batch_mean(tmp_path):
    """Each rank's own mean, averaged by DDP, would weigh rank 1's single clip as much as rank 0's
    three; the official code (one process, DataParallel) takes the mean over all four."""
    script = tmp_path / "ddp_entropy.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT)))
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean over the global batch ok" in result.stdout
    # and what each rank's own mean would have given instead: not the same gradient
    logits = torch.randn(8, 4, requires_grad=True)
    w = torch.tensor([True, True, True, False, True, False, False, False])
    per_rank = (entropy_loss(logits[:4], w[:4]) + entropy_loss(logits[4:], w[4:])) / 2
    assert not torch.allclose(per_rank, entropy_loss(logits, w))


def test_pretrain_with_the_official_head_and_dampening(synth_shards, tmp_path, capsys):
    from train import checkpoint
    from train.evaluation.models import load_model
    from train.pretrain import main as pretrain

    out = tmp_path / "run"
    args = ["--shards", str(synth_shards), "--out", str(out), "--device", "cpu", "--loader", "torch", "--workers", "1",
            "--arch", "r3d18-w16", "--frames", "8", "--size", "40", "--batch-size", "4", "--max-steps", "2",
            "--val-every", "0"]
    assert pretrain([*args, "--scene-head", "official", "--dampening", "0.9"]) == 0
    state = checkpoint.load(out / "checkpoint.pt")
    assert state["optimizer"]["param_groups"][0]["dampening"] == 0.9
    assert "mlp.1.running_mean" in state["scene_head"] and state["config"]["scene_head"] == "official"
    _, head, cfg = load_model(str(out / "checkpoint.pt"), torch.device("cpu"))
    assert isinstance(head.mlp[1], nn.BatchNorm1d) and cfg["scene_head"] == "official"
    capsys.readouterr()
    # resuming with the other head is refused before any data is read, naming both
    with pytest.raises(SystemExit) as stop:
        pretrain([*args, "--max-steps", "3", "--dampening", "0.9"])
    assert str(stop.value) == (
        f"pretrain: {out / 'checkpoint.pt'} was trained with --scene-head official, this run has --scene-head paper: "
        "run the same command again, or use another --out")
    with pytest.raises(SystemExit) as stop:
        pretrain([*args, "--optimizer", "adamw", "--dampening", "0.9"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "pretrain: error: --dampening is for --optimizer sgd, not adamw (see --help)"


# ---------------------------------------------------------------------------------------------
# the official backbone and its checkpoints: models/resnet.py of vt-vl-lab/SDN, reimplemented


def official_shortcut_a(x, planes, stride):  # downsample_basic_block
    out = torch.nn.functional.avg_pool3d(x, kernel_size=1, stride=stride)
    return torch.cat([out, out.new_zeros(out.size(0), planes - out.size(1), *out.shape[2:])], 1)


class OfficialBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class OfficialResNet18(nn.Module):
    """ResNet(BasicBlock, [2, 2, 2, 2], shortcut_type='A', is_adv=True, num_place_hidden_layers=3)."""

    def __init__(self, num_classes=7, sample_size=112, sample_duration=16):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(kernel_size=(3, 3, 3), stride=2, padding=1)
        self.layer1, self.layer2 = self._make_layer(64, 1), self._make_layer(128, 2)
        self.layer3, self.layer4 = self._make_layer(256, 2), self._make_layer(512, 2)
        self.avgpool = nn.AvgPool3d((-(-sample_duration // 16), -(-sample_size // 32), -(-sample_size // 32)), stride=1)
        self.fc = nn.Linear(512, num_classes)
        self.place_mlp = official_place_mlp(512)

    def _make_layer(self, planes, stride):
        down = None
        if stride != 1 or self.inplanes != planes:
            down = lambda x, planes=planes, stride=stride: official_shortcut_a(x, planes, stride)
        layers = [OfficialBlock(self.inplanes, planes, stride, down), OfficialBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer4(self.layer3(self.layer2(self.layer1(x))))).flatten(1)
        return self.fc(x), self.place_mlp(x)


@pytest.mark.slow
def test_an_official_sdn_checkpoint_loads_as_hara_r18_with_its_scene_head(tmp_path):
    from shards.loader.masking import CLIP_MEAN, CLIP_STD
    from train import checkpoint
    from train.evaluation.models import load_model
    from train.model import ACTIVITYNET_MEAN

    torch.manual_seed(0)
    official = OfficialResNet18()
    with torch.no_grad():  # trained-looking BatchNorm statistics, so that evaluation mode tests them
        for m in official.modules():
            if isinstance(m, (nn.BatchNorm3d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.uniform_(0.5, 1.5)
    optimizer = torch.optim.SGD(official.parameters(), lr=0.1, momentum=0.9, dampening=0.9)
    official.eval()
    x = torch.randn(2, 3, 16, 112, 112)
    official(x)[0].sum().backward()
    optimizer.step()
    path = tmp_path / "save_5.pth"  # libs/train_epoch.py writes its checkpoints so, DataParallel names included
    torch.save({"epoch": 6, "arch": "resnet-18", "optimizer": optimizer.state_dict(),
                "state_dict": {f"module.{k}": v for k, v in official.state_dict().items()}}, path)
    backbone, head, cfg = load_model(str(path), torch.device("cpu"))
    assert (cfg["arch"], cfg["input"], cfg["scene_head"], len(cfg["classes"])) == ("hara-r18", "rgb255", "official", 7)
    mean, std, activitynet = (torch.tensor(v).view(1, 3, 1, 1, 1) for v in (CLIP_MEAN, CLIP_STD, ACTIVITYNET_MEAN))
    with torch.no_grad():
        logits, places = official(x)  # x: 0-255 minus the ActivityNet mean; ours reads the loader's clip of it
        ours, features = backbone(((x + activitynet) / 255 - mean) / std, with_features=True)
        torch.testing.assert_close(ours, logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(head(features), places, rtol=1e-3, atol=1e-4)  # logits in the hundreds

    for arch, extra, message in [
        ("resnet-34", {}, "is a 'resnet-34' checkpoint of the 3D-ResNets code; only its resnet-18 is a backbone here"),
        ("resnet-18", {"module.layer2.0.downsample.0.weight": torch.zeros(1)}, "is a resnet-18 with shortcut B"),
    ]:
        bad = tmp_path / f"{arch}.pth"
        torch.save({"arch": arch, "state_dict": {**{f"module.{k}": v for k, v in official.state_dict().items()},
                                                 **extra}}, bad)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.load(bad)


def official_loop_crop(n: int, size: int, begin: int) -> list[int]:
    """libs/temporal_transforms.py TemporalRandomCrop / TemporalCenterCrop after the begin index is
    drawn: the window of frame indices, then its indices again until the clip is full."""
    out = list(range(n))[begin:begin + size]
    for index in out:
        if len(out) >= size:
            break
        out.append(index)
    return out


@pytest.mark.parametrize("n", [1, 3, 5, 15, 16, 40])
def test_short_videos_loop_as_the_official_temporal_crops(n):
    from shards.loader.sampling import clip_params

    common = dict(height=40, width=40, frames=16, stride=1, size=32, seed=0, epoch=0)
    train = clip_params(7, n, train=True, loop=True, **common)
    assert train.frames.tolist() == official_loop_crop(n, 16, int(train.frames[0]))
    centre = clip_params(7, n, train=False, loop=True, **common)  # TemporalCenterCrop: begin n//2 - 8, at least 0
    assert centre.frames.tolist() == official_loop_crop(n, 16, max(0, n // 2 - 8))
    if n < 16:  # without loop: the last frame repeats
        assert clip_params(7, n, train=True, **common).frames.tolist() == [*range(n), *[n - 1] * (16 - n)]
    strided = clip_params(7, 5, train=True, loop=True, **{**common, "stride": 2, "frames": 8})
    assert strided.frames.tolist() == [0, 2, 4, 0, 2, 4, 0, 2]


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_a_looped_clip_shows_the_short_video_again_on_both_backends(tiny_shards, backend):
    from shards.loader import build_loader

    common = dict(backend=backend, batch_size=2, frames=12, size=32, device="cpu", num_threads=1, train=False)
    looped = next(iter(build_loader(tiny_shards, "val", loop=True, **common)))["clip"]  # videos of 8 frames
    padded = next(iter(build_loader(tiny_shards, "val", **common)))["clip"]
    torch.testing.assert_close(looped[:, :, 8:], looped[:, :, :4], rtol=0, atol=0)
    torch.testing.assert_close(looped[:, :, :8], padded[:, :, :8], rtol=0, atol=0)
    assert all(torch.equal(padded[:, :, t], padded[:, :, 7]) for t in range(8, 12))
    assert not torch.equal(looped[:, :, 0], looped[:, :, 7])


class OfficialMultiScaleCornerCrop:  # libs/spatial_transforms.py, with randomize_parameters' draw given
    def __init__(self, scale, position, size):
        self.scale, self.crop_position, self.size = scale, position, size

    def __call__(self, img):
        from PIL import Image

        min_length = min(img.size[0], img.size[1])
        crop_size = int(min_length * self.scale)
        image_width, image_height = img.size
        if self.crop_position == "c":
            center_x, center_y, box_half = image_width // 2, image_height // 2, crop_size // 2
            x1, y1, x2, y2 = center_x - box_half, center_y - box_half, center_x + box_half, center_y + box_half
        elif self.crop_position == "tl":
            x1, y1, x2, y2 = 0, 0, crop_size, crop_size
        elif self.crop_position == "tr":
            x1, y1, x2, y2 = image_width - crop_size, 0, image_width, crop_size
        elif self.crop_position == "bl":
            x1, y1, x2, y2 = 0, image_height - crop_size, crop_size, image_height
        else:
            x1, y1, x2, y2 = image_width - crop_size, image_height - crop_size, image_width, image_height
        return img.crop((x1, y1, x2, y2)).resize((self.size, self.size), Image.BILINEAR)


def test_corner_crop_is_the_official_multiscale_corner_crop():
    from PIL import Image

    from shards.loader.sampling import CORNER_POSITIONS, CORNER_SCALES, clip_params, corner_crop
    from shards.loader.torch_decoder import resized

    assert CORNER_SCALES == pytest.approx([1, 0.8408964, 0.7071068, 0.5946036, 0.5])  # opts.py: 0.84089641525 ** i
    rng = np.random.default_rng(0)
    frame = (rng.random((128, 171, 3)) * 255).astype(np.uint8)
    frame[:, ::7] = 255  # edges, where resampling rules show
    for scale in CORNER_SCALES:
        for position in CORNER_POSITIONS:
            theirs = np.asarray(OfficialMultiScaleCornerCrop(scale, position, 112)(Image.fromarray(frame)))
            y0, x0, side = corner_crop(128, 171, scale, position)
            ours = resized(torch.from_numpy(frame[None, y0:y0 + side, x0:x0 + side].copy()), 112)[0].numpy()
            diff = np.abs(ours.astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.3, (scale, position, diff.max(), diff.mean())  # PIL rounds in fixed point
    drawn = {(p.side, p.y0, p.x0) for p in (clip_params(s, 32, 128, 171, frames=8, stride=1, size=112, seed=0, epoch=0,
                                                         train=True, crop="corner") for s in range(400))}
    assert drawn == {(side, y0, x0) for y0, x0, side in (corner_crop(128, 171, s, p) for s in CORNER_SCALES
                                                          for p in CORNER_POSITIONS)}  # all 25, and nothing else
    centre = clip_params(0, 32, 128, 171, frames=8, stride=1, size=112, seed=0, epoch=0, train=False, crop="corner")
    assert (centre.side, centre.y0, centre.x0) == (128, 0, 21)  # Scale(112) + CenterCrop(112): the short side, centred


def test_corner_crop_masks_what_the_box_covers_in_the_resized_crop(tiny_shards):
    from shards.loader import build_loader
    from shards.loader.masking import box_rects

    rows = np.array([[0, 10 / 160, 20 / 128, 50 / 160, 41 / 128, 0.9]], np.float32)  # pixels x 10-50, y 20-41
    # a 64 crop at (16, 8) resized to 32: halved, y 2-12.5 and x 1-21 of the crop, grown to whole pixels
    assert box_rects(rows, np.array([0]), 128, 160, 16, 8, 32, side=64).tolist() == [[[2, 13, 1, 21]]]
    assert box_rects(rows, np.array([0]), 128, 160, 16, 8, 32).tolist() == [[[4, 25, 2, 32]]]  # no resize: clipped

    common = dict(batch_size=2, frames=8, size=24, device="cpu", num_threads=1, crop="corner")
    for train in (True, False):
        torch_batch, dali_batch = (next(iter(build_loader(tiny_shards, "train", backend=b, train=train, **common)))
                                   for b in ("torch", "dali"))
        levels = (torch_batch["clip"] - dali_batch["clip"]).abs() * 0.23 * 255  # the two resizers: within 3 levels
        assert levels.max() < 3 and levels.mean() < 0.2
        assert torch.equal(torch_batch["human"], dali_batch["human"])


def test_rgb255_input_is_the_official_scaling_of_the_loader_clip():
    """train.py:40-46 with opts.py's defaults (norm_value 1, mean_dataset activitynet, no std_norm):
    ToTensor keeps 0-255 and Normalize subtracts libs/mean.py's ActivityNet mean, dividing by 1. Our
    loader hands the clip normalised by the Kinetics mean/std; --input rgb255 maps it back exactly."""
    from shards.loader.masking import CLIP_MEAN, CLIP_STD
    from train.model import build_backbone

    u8 = torch.randint(0, 256, (2, 3, 4, 16, 16), generator=torch.Generator().manual_seed(0)).float()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    ours = (u8 / 255 - mean) / std  # what the loaders give (torch backend: this formula; DALI: the same in one op)
    official = u8 - torch.tensor([114.7748, 107.7354, 99.4750]).view(1, 3, 1, 1, 1)
    torch.manual_seed(0)
    net = build_backbone("hara-r18-w16", 5, "rgb255").eval()
    seen = {}
    net.stem.register_forward_pre_hook(lambda _module, args: seen.update(x=args[0]))
    net(ours)
    torch.testing.assert_close(seen["x"], official, rtol=0, atol=1e-4)
    assert "rgb255_scale" not in net.state_dict()  # constants: the weights stay Hara's names and shapes
    with pytest.raises(ValueError, match="input must be one of"):
        build_backbone("r3d18", 5, "bgr")


def test_pretrain_starts_from_a_hara_checkpoint(synth_shards, tmp_path):
    from train import checkpoint
    from train.model import build_backbone
    from train.pretrain import main as pretrain

    torch.manual_seed(3)
    hara = build_backbone("hara-r18-w16", 400).state_dict()  # Hara's Kinetics-400 model, as their code names it
    names = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    official = {"module." + next((new + k[len(old):] for old, new in names.items() if k.startswith(old)), k): v
                for k, v in hara.items()}
    torch.save({"epoch": 200, "arch": "resnet-18", "state_dict": official}, tmp_path / "resnet-18-kinetics.pth")
    out = tmp_path / "run"
    assert pretrain(["--shards", str(synth_shards), "--out", str(out), "--device", "cpu", "--loader", "torch",
                     "--workers", "1", "--arch", "hara-r18-w16", "--frames", "8", "--size", "40", "--batch-size", "4",
                     "--max-steps", "1", "--val-every", "0", "--lr", "1e-12", "--optimizer", "adamw",
                     "--init", str(tmp_path / "resnet-18-kinetics.pth"), "--no-init-head", "--input", "rgb255"]) == 0
    trained = checkpoint.load(out / "checkpoint.pt")["backbone"]
    for k, v in hara.items():  # every backbone weight came from the file (a 1e-12 step leaves them;
        if not k.startswith("fc.") and "running_" not in k and v.is_floating_point():  # BatchNorm statistics move)
            torch.testing.assert_close(trained[k], v, rtol=1e-6, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------------------
# the official entropy loss: its own head behind a second gradient reversal


class OfficialReverse(torch.autograd.Function):  # models/grad_reversal.py ReverseLayerF
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * ctx.alpha, None


def official_hloss_maximisation(x):  # loss/hloss.py HLoss(is_maximization=True)
    b = torch.softmax(x, dim=1) * torch.log_softmax(x, dim=1)
    return 1.0 * b.sum(dim=1).mean()


def test_official_entropy_is_the_official_hm_branch_and_pushes_the_backbone_the_other_way():
    from train.model import MaskHead

    torch.manual_seed(0)
    step = DebiasStep(nn.Identity(), nn.Identity(), None, None, Losses(), mask_head=MaskHead(8, 5))
    official_hm = official_mlp_of(step.mask_head)
    features = torch.randn(6, 8, requires_grad=True)
    ours = step._masked_entropy(torch.zeros(6, 5, requires_grad=True), features, torch.ones(6, dtype=torch.bool), 6.0)
    ours.backward()
    theirs_x = features.detach().clone().requires_grad_()
    theirs = official_hloss_maximisation(official_hm(OfficialReverse.apply(theirs_x, 1.0)))
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(features.grad, theirs_x.grad)
    # the paper's loss on the same head without the reversal: the backbone's gradient flips sign
    plain_x = features.detach().clone().requires_grad_()
    entropy_loss(step.mask_head(plain_x)).backward()
    torch.testing.assert_close(features.grad, -plain_x.grad)
    # one step on the features alone lowers the head's entropy (the paper's text would raise it)
    with torch.no_grad():
        before = -entropy_loss(step.mask_head(features)).item()
        after = -entropy_loss(step.mask_head(features - 0.5 * features.grad)).item()
    assert after < before


def official_mlp_of(head) -> nn.Sequential:
    """The official hm_mlp (one MLP_Block, then hm_last_fc) holding `head`'s weights."""
    mlp = nn.Sequential(OfficialMLPBlock(8, 8))
    mlp.add_module("hm_last_fc", nn.Linear(8, 5))
    mlp.load_state_dict(dict(zip(mlp.state_dict(), head.state_dict().values())))
    return mlp


def test_pretrain_with_the_official_entropy_trains_and_resumes_its_head(synth_shards, tmp_path):
    from train import checkpoint
    from train.pretrain import main as pretrain

    out = tmp_path / "run"
    args = ["--shards", str(synth_shards), "--out", str(out), "--device", "cpu", "--loader", "torch", "--workers", "1",
            "--arch", "r3d18-w16", "--frames", "8", "--size", "40", "--batch-size", "4", "--val-every", "0",
            "--entropy", "official"]
    assert pretrain([*args, "--max-steps", "1"]) == 0
    first = checkpoint.load(out / "checkpoint.pt")
    assert set(first["mask_head"]) >= {"mlp.0.weight", "mlp.1.running_mean", "mlp.3.weight"}
    assert first["mask_head"]["mlp.3.weight"].shape == (len(first["classes"]), 128)
    assert pretrain([*args, "--max-steps", "2"]) == 0  # resumes, mask head included
    second = checkpoint.load(out / "checkpoint.pt")
    assert second["step"] == 2 and not torch.equal(first["mask_head"]["mlp.0.weight"], second["mask_head"]["mlp.0.weight"])
    whole = tmp_path / "whole"  # the same two steps without the stop: the resumed head is the same to the bit
    assert pretrain([*args, "--max-steps", "2", "--out", str(whole)]) == 0
    uninterrupted = checkpoint.load(whole / "checkpoint.pt")["mask_head"]
    assert all(torch.equal(uninterrupted[k], second["mask_head"][k]) for k in uninterrupted)
    with pytest.raises(SystemExit) as stop:
        pretrain([*args, "--debias", "adv", "--out", str(tmp_path / "other")])
    assert stop.value.code == 2


def test_official_recipe_sets_the_flags_left_at_their_defaults(synth_shards, tmp_path):
    import json

    from train import checkpoint
    from train.pretrain import OFFICIAL_RECIPE, Config, main as pretrain, with_recipe

    cfg = with_recipe(Config(shards="s", out="o", recipe="official", arch="hara-r18-w16", lr=2e-3))
    assert (cfg.arch, cfg.lr) == ("hara-r18-w16", 2e-3)  # given: kept
    assert all(getattr(cfg, k) == v for k, v in OFFICIAL_RECIPE.items() if k not in ("arch", "lr"))
    assert with_recipe(Config(shards="s", out="o")) == Config(shards="s", out="o")

    out = tmp_path / "run"
    assert pretrain(["--shards", str(synth_shards), "--out", str(out), "--device", "cpu", "--loader", "torch",
                     "--workers", "1", "--frames", "8", "--size", "40", "--batch-size", "4", "--epochs", "1",
                     "--recipe", "official", "--arch", "hara-r18-w16"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in OFFICIAL_RECIPE} == {**OFFICIAL_RECIPE, "arch": "hara-r18-w16"}
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line][-1]
    # the plateau scheduler watched the validation CE plus the scene loss, as the official code does
    best = checkpoint.load(out / "checkpoint.pt")["scheduler"]["best"]
    assert best == pytest.approx(val["loss"] + val["scene_loss"], rel=1e-6) and val["scene_loss"] > 1


def test_official_stage_one_recipe_is_the_readme_command():
    from train.pretrain import OFFICIAL_STAGE1, Config, check, with_recipe

    cfg = with_recipe(Config(shards="s", out="o", recipe="official-stage1", device="cpu"))
    # README "SDN model with scene adversarial loss only": --is_place_adv --alpha 1.0, no mask loss,
    # --new_layer_lr 1e-2 --learning_rate 1e-4 --warm_up_epochs 5; the full model's head, backbone, SGD
    assert {k: getattr(cfg, k) for k in OFFICIAL_STAGE1} == {
        "arch": "hara-r18", "input": "rgb255", "short_videos": "loop", "crop": "corner", "scene_head": "official",
        "dampening": 0.9,
        "lr": 1e-4, "lr_patience": 10, "plateau": "ce+scene", "debias": "adv", "adv_lambda": 1.0, "warmup_epochs": 5,
        "warmup_lr": 1e-2}
    assert cfg.entropy == "paper"
    check(cfg)  # no mask loss, so no --entropy official to refuse


def test_warm_up_trains_the_new_layers_alone_then_everything_and_resumes_exactly(synth_shards, tmp_path):
    """train.py:85-107, 146-152: for --warm_up_epochs an optimizer of the new layers alone (place_mlp,
    fc) at --new_layer_lr, with a plateau schedule of its own; then every parameter at the learning
    rate. The backbone's BatchNorm statistics still move during the warm-up (model.train())."""
    import json

    from train import checkpoint
    from train.pretrain import main as pretrain

    def run(out, *more):
        assert pretrain(["--shards", str(synth_shards), "--out", str(out), "--device", "cpu", "--loader", "torch",
                         "--workers", "1", "--arch", "r3d18-w16", "--frames", "8", "--size", "40", "--batch-size", "4",
                         "--val-every", "0", "--log-every", "1", "--epochs", "2", "--warmup-epochs", "1",
                         "--warmup-lr", "0.08", "--lr", "0.016", *more]) == 0  # 12 videos: 3 steps per epoch
        return checkpoint.load(out / "checkpoint.pt")

    out = tmp_path / "run"
    first, warm, done = run(out, "--max-steps", "1"), run(out, "--max-steps", "3"), run(out)
    assert (first["step"], warm["step"], done["step"]) == (1, 3, 6)
    frozen = [k for k, v in first["backbone"].items() if not k.startswith("fc.") and v.is_floating_point()
              and "running" not in k]
    assert frozen and all(torch.equal(first["backbone"][k], warm["backbone"][k]) for k in frozen)
    assert not torch.equal(first["backbone"]["fc.weight"], warm["backbone"]["fc.weight"])
    assert not all(torch.equal(first["scene_head"][k], warm["scene_head"][k]) for k in first["scene_head"])
    running = [k for k in first["backbone"] if k.endswith("running_mean")]
    assert not all(torch.equal(first["backbone"][k], warm["backbone"][k]) for k in running)
    assert not all(torch.equal(warm["backbone"][k], done["backbone"][k]) for k in frozen)
    assert len(done["warmup_optimizer"]["param_groups"][0]["params"]) == 2 + 8  # fc; the scene head's 4 Linear
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert lrs == pytest.approx([0.08 * 4 / 32] * 3 + [0.016 * 4 / 32] * 3)  # global batch 4: scaled
    with pytest.raises(SystemExit, match="trained with --warmup-epochs 1, this run has --warmup-epochs 0"):
        run(out, "--warmup-epochs", "0")  # the last flag wins: a resume without the warm-up's optimizer
    whole = run(tmp_path / "whole")  # the same six steps without the two stops
    assert all(torch.equal(whole["backbone"][k], done["backbone"][k]) for k in whole["backbone"])
    assert all(torch.equal(whole["scene_head"][k], done["scene_head"][k]) for k in whole["scene_head"])


def test_separate_masked_batches_are_the_filtered_videos_shuffled_on_their_own(tmp_path):
    """The official full model (dataset kinetics_adv_msk; libs/train_epoch.py:276) reads the masked
    clips from a second loader over the videos that pass the people filter, shuffled on its own and
    zipped with the first: an epoch is as long as the shorter of the two."""
    import dataclasses
    import json

    from conftest import CLASSES, SCENE_NAMES, make_sample
    from shards import ShardWriter, add_split, new_manifest, write_manifest
    from shards.loader import build_loader
    from train import checkpoint
    from train.pretrain import main as pretrain

    shards, rng = tmp_path / "shards", np.random.default_rng(0)
    manifest = new_manifest("tiny", CLASSES, SCENE_NAMES, "vp9", {"boxes": "drawn", "scene": "random"})
    for split, n in (("train", 10), ("val", 2)):
        with ShardWriter(shards, f"{split}-000000") as w:
            for i in range(n):
                sample = make_sample(f"{split}_{i}", rng, split)
                w.write(dataclasses.replace(sample, boxes=[[]] * 8) if split == "train" and i % 5 in (1, 3) else sample)
        add_split(manifest, split, [w.info()])
    write_manifest(shards, manifest)

    common = dict(backend="torch", batch_size=2, frames=8, size=32, device="cpu", num_threads=1)
    plain, masked = build_loader(shards, "train", **common), build_loader(shards, "train", filtered_only=True, **common)
    passing = np.flatnonzero(masked.index.mask_ok)
    assert passing.tolist() == [0, 2, 4, 5, 7, 9]
    assert [s for b in masked.batches() for s, _ in b] == passing[np.random.default_rng([0, 0, 1]).permutation(6)].tolist()
    assert [s for b in plain.batches() for s, _ in b] == np.random.default_rng([0, 0]).permutation(10).tolist()
    assert next(iter(masked))["mask_ok"].all()

    args = ["--shards", str(shards), "--device", "cpu", "--loader", "torch", "--workers", "1", "--arch", "r3d18-w16",
            "--frames", "8", "--size", "32", "--epochs", "1", "--val-every", "0", "--log-every", "1",
            "--masked-batches", "separate"]
    assert pretrain([*args, "--out", str(tmp_path / "run"), "--batch-size", "2"]) == 0
    assert checkpoint.load(tmp_path / "run" / "checkpoint.pt")["step"] == 3  # 6 filtered videos in batches of 2, not 5
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert len(steps) == 3 and all(s["entropy"] < 0 for s in steps)  # every masked batch holds usable clips
    with pytest.raises(SystemExit, match="--masked-batches separate: 6 of 10 train videos pass the people filter, "
                                         "too few for a batch of 8 per rank"):
        pretrain([*args, "--out", str(tmp_path / "big"), "--batch-size", "8"])


def test_confusion_adversary_trains_the_head_on_detached_features_and_the_features_towards_uniform():
    torch.manual_seed(0)
    head = SceneHead(8, layout="official")  # with BatchNorm: its statistics move once per step, not twice
    reference = copy.deepcopy(head)
    step = DebiasStep(nn.Identity(), head, None, None, Losses(adversary="confusion", adv_lambda=0.3))
    features = torch.randn(6, 8, requires_grad=True)
    scene = torch.softmax(torch.randn(6, 365), 1)
    _, total, logged = step._adversary(torch.randn(6, 3), features, {"label": torch.zeros(6, dtype=torch.long),
                                                                     "scene": scene})
    total.backward()

    # reference: the head's soft CE on detached features; the features' gradient from 0.3 x the
    # cross-entropy against a uniform target, through a head that this term does not move
    x = features.detach().clone().requires_grad_()
    head_loss = -(scene * torch.log_softmax(reference(x.detach()), 1)).sum(1).mean()
    head_loss.backward()
    bn, reference_bn = (next(m for m in h.modules() if isinstance(m, nn.BatchNorm1d)) for h in (head, reference))
    torch.testing.assert_close(bn.running_mean, reference_bn.running_mean)  # one update: the confusion pass kept out
    head_grads = [p.grad.clone() for p in reference.parameters()]
    for p in reference.parameters():
        p.requires_grad_(False)
    (0.3 * -(torch.full((6, 365), 1 / 365) * torch.log_softmax(reference(x), 1)).sum(1).mean()).backward()
    torch.testing.assert_close(logged, head_loss)
    for ours, theirs in zip((p.grad for p in head.parameters()), head_grads):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(features.grad, x.grad)

    # a step on the features alone brings the head's prediction (batch statistics, as trained) closer to uniform
    with torch.no_grad():
        kl = lambda f: (-torch.log_softmax(head(f), 1).mean(1) - math.log(365)).mean().item()
        assert kl(features - 5.0 * features.grad) < kl(features)


# ---------------------------------------------------------------------------------------------
# hard scene labels: the majority vote of the frames' argmax (datasets/kinetics.py:410-412)

def official_place_index(pred_cls: np.ndarray) -> int:
    """Kinetics_adv.__getitem__ without --is_place_soft: `np.bincount(place_index).argmax()`."""
    return int(np.bincount(pred_cls).argmax())


def test_majority_vote_is_the_official_hard_label():
    from shards.format import majority_vote

    rng = np.random.default_rng(0)
    for _ in range(300):
        votes = rng.integers(0, rng.integers(1, 365), rng.integers(1, 12))  # few scenes at times: many ties
        assert majority_vote(votes.tolist()) == official_place_index(votes)
    assert majority_vote([5, 5, 3, 3, 7]) == 3  # a tie goes to the lowest index
    assert majority_vote([364]) == 364


VOTES = {"train_0": [5, 5, 3, 3, 7], "train_1": [200, 7, 200], "train_2": [364], "train_3": [1, 2, 1, 2],
         "train_4": [9] * 8, "train_5": [17, 17, 4], "val_0": [40, 41, 41], "val_1": [0]}


def shards_with_votes(out: Path, votes: dict = VOTES) -> Path:
    import dataclasses

    from conftest import CLASSES, SCENE_NAMES, make_sample
    from shards import ShardWriter, add_split, new_manifest, write_manifest

    rng = np.random.default_rng(0)
    manifest = new_manifest("tiny", CLASSES, SCENE_NAMES, "vp9", {"boxes": "drawn", "scene": "random"})
    for split in ("train", "val"):
        with ShardWriter(out, f"{split}-000000") as w:
            for key in (k for k in votes if k.startswith(split)):
                w.write(dataclasses.replace(make_sample(key, rng, split), scene_votes=votes[key]))
        add_split(manifest, split, [w.info()])
    write_manifest(out, manifest)
    return out


def test_vote_labels_from_the_shards_to_the_adversary(tmp_path):
    from shards.check import check_dir
    from shards.loader import build_loader
    from train.pretrain import main as pretrain

    shards = shards_with_votes(tmp_path / "shards")
    assert check_dir(shards)[1] == []
    loader = build_loader(shards, "train", backend="torch", batch_size=2, frames=8, size=32, device="cpu",
                          num_threads=1, train=False)
    seen = {k: (int(v), int(s.argmax())) for b in loader for k, v, s in zip(b["key"], b["scene_vote"], b["scene"])}
    assert {k: v for k, (v, _) in seen.items()} == {k: official_place_index(np.asarray(VOTES[k])) for k in seen}
    assert sum(vote != argmax for vote, argmax in seen.values()) >= 4  # the vote is not the soft label's argmax

    # the adversary's loss: cross-entropy at the vote
    torch.manual_seed(0)
    head = SceneHead(8)
    features, batch = torch.randn(2, 8), {"label": torch.zeros(2, dtype=torch.long), "scene_vote": torch.tensor([3, 200]),
                                          "scene": torch.softmax(torch.randn(2, 365), 1)}
    step = DebiasStep(nn.Identity(), head, None, None, Losses(scene_labels="vote"))
    _, loss, _ = step._adversary(torch.randn(2, 3), features, batch)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(head(features), batch["scene_vote"]))

    args = ["--shards", str(shards), "--device", "cpu", "--loader", "torch", "--workers", "1", "--arch", "r3d18-w16",
            "--frames", "8", "--size", "32", "--epochs", "1", "--batch-size", "2", "--scene-labels", "vote"]
    assert pretrain([*args, "--out", str(tmp_path / "run")]) == 0
    # shards without votes (written before they were stored, or with --scene-model none): refused before any output
    from conftest import write_tiny_set
    write_tiny_set(tmp_path / "old", {"train": [4], "val": [2]})
    with pytest.raises(SystemExit, match=r"^pretrain: --scene-labels vote: 4 of 4 train videos have no per-frame scene "
                                         r"votes \(first: train-000000.tar: train_0_0\); .*--scene-labels soft or hard$"):
        pretrain([*args, "--shards", str(tmp_path / "old"), "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused" / "config.json").exists()


@pytest.mark.parametrize("votes", [[365], [-1], ["3"], [True], [2.0], [], 4])
def test_damaged_votes_are_named_by_the_writer_the_checker_and_the_loader(tmp_path, votes):
    import dataclasses
    import json
    import re

    from conftest import make_sample, rebuild_shard
    from shards import ShardFormatError
    from shards.check import check_dir
    from shards.format import encode_members

    why = f"metadata scene_votes is {str(votes)[:60]}, not a list of scene indices in [0, 365)"
    if isinstance(votes, list) and votes:  # (an empty list is no votes: the writer stores none)
        with pytest.raises(ShardFormatError, match=re.escape(f"scene label of x: {why}")):
            encode_members(dataclasses.replace(make_sample("x", np.random.default_rng(0), "train"), scene_votes=votes))
    shards = shards_with_votes(tmp_path / "shards")
    edit = lambda name, data: json.dumps({**json.loads(data), "scene_votes": votes}).encode() \
        if name == "train_2.json" else data
    rebuild_shard(shards, "train-000000.tar", edit)
    assert [p for p in check_dir(shards)[1] if "train_2" in p and why in p]
    with pytest.raises(ShardFormatError, match=re.escape(f"train-000000.tar: train_2: {why}")):
        SplitIndex(shards, "train")


def test_synthetic_truth_votes_for_its_scene(synth_shards):
    index = SplitIndex(synth_shards, "train")
    assert (index.scene_vote == np.stack([index.scene(i) for i in range(len(index))]).argmax(1)).all()
