"""The 3D-ResNet-18 backbone (torchvision's r3d_18 layout) with a width knob, and the heads.

`R3D18(width=64)` has exactly the parameter names and shapes of
`torchvision.models.video.r3d_18()`, so its state dict loads there with strict=True; narrower
widths (16, 32) are the same network for CPU runs. Features are the pooled conv5 activations
(8 * width channels).

`input="rgbdiff"` feeds the stem the clip and its frame differences (6 channels, computed
inside the model from the RGB clip): small 3D CNNs trained briefly from scratch pick up motion
far sooner that way. `input="rgb255"` feeds it the clip as the official code does (and Hara's
Kinetics weights expect it): 0-255, minus the ActivityNet mean, not divided by a std; the
loader's normalisation is undone inside the model, an exact affine map. Only `input="rgb"`
exports to torchvision.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

from shards.format import NUM_SCENES
from shards.loader.masking import CLIP_MEAN, CLIP_STD

INPUTS = ("rgb", "rgbdiff", "rgb255")
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)  # vt-vl-lab/SDN libs/mean.py get_mean(1, "activitynet")


class R3D18(nn.Module):
    def __init__(self, num_classes: int, width: int = 64, input: str = "rgb"):
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, not {input!r}")
        self.input = input
        if input == "rgb255":  # x * scale + shift: the loader's (u8 / 255 - mean) / std back to u8, minus the mean
            scale, shift = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1, 1) for v in
                            ([255 * s for s in CLIP_STD], [255 * m - a for m, a in zip(CLIP_MEAN, ACTIVITYNET_MEAN)]))
            self.register_buffer("rgb255_scale", scale, persistent=False)  # not in the state dict: constants
            self.register_buffer("rgb255_shift", shift, persistent=False)
        self.stem = self._stem(6 if input == "rgbdiff" else 3, width)
        self.inplanes = width
        self.layer1 = self._layer(width, stride=1)
        self.layer2 = self._layer(width * 2, stride=2)
        self.layer3 = self._layer(width * 4, stride=2)
        self.layer4 = self._layer(width * 8, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(width * 8, num_classes)
        self.feature_dim = width * 8
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def _stem(self, channels: int, width: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv3d(channels, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                             nn.BatchNorm3d(width), nn.ReLU(inplace=True))

    def _layer(self, planes: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                 nn.BatchNorm3d(planes))
        blocks = [BasicBlock(self.inplanes, planes, Conv3DSimple, stride, down), BasicBlock(planes, planes, Conv3DSimple)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def stem_input(self, x: torch.Tensor) -> torch.Tensor:
        """The loader's clip (B, 3, T, H, W) as --input feeds it to the stem."""
        if self.input == "rgbdiff":  # difference to the previous frame; zero for the first
            return torch.cat([x, torch.diff(x, dim=2, prepend=x[:, :, :1])], dim=1)
        if self.input == "rgb255":
            return x * self.rgb255_scale + self.rgb255_shift
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 8 * width) pooled conv5 features."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(self.stem_input(x))))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """Action logits; with_features=True also returns the pooled features (one call, so
        that DistributedDataParallel sees it)."""
        features = self.features(x)
        logits = self.fc(features)
        return (logits, features) if with_features else logits


SCENE_HEADS = ("paper", "official")


class SceneHead(nn.Module):
    """The scene adversary, from the backbone features to 365 Places365 logits.

    layout "paper": a 4-layer MLP with 512 hidden units, as the paper describes it;
    "official": what vt-vl-lab/SDN trains (models/resnet.py MLP_Block; its README's commands pass
    --num_place_hidden_layers 3): three hidden blocks of Linear (the feature width), BatchNorm1d
    and ReLU, then the output Linear."""

    def __init__(self, in_features: int, num_scenes: int = NUM_SCENES, hidden: int = 512, layout: str = "paper"):
        super().__init__()
        if layout not in SCENE_HEADS:
            raise ValueError(f"scene head layout must be one of {SCENE_HEADS}, not {layout!r}")
        if layout == "official":
            self.mlp = official_mlp(in_features, num_scenes, hidden_blocks=3)
            return
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_scenes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class HaraR18(R3D18):
    """Hara et al.'s 3D-ResNet-18 (kenshohara/3D-ResNets-PyTorch models/resnet.py), the backbone
    vt-vl-lab/SDN trains (its README: --model resnet --model_depth 18 --resnet_shortcut A): a
    7x7x7 conv1 with stride (1, 2, 2) and a 3x3x3 max-pool of stride 2, and shortcut A, the
    identity subsampled and zero-padded to the new width (no weights). Their checkpoints load
    after renaming conv1/bn1 to stem.0/stem.1 (train/checkpoint.py from_official); the blocks keep
    their names. Average pooling over whatever is left, which at 16 x 112 x 112 is their fixed
    AvgPool3d((1, 4, 4))."""

    def _stem(self, channels: int, width: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv3d(channels, width, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False),
                             nn.BatchNorm3d(width), nn.ReLU(inplace=True), nn.MaxPool3d(kernel_size=3, stride=2, padding=1))

    def _layer(self, planes: int, stride: int) -> nn.Sequential:
        blocks = [HaraBlock(self.inplanes, planes, stride), HaraBlock(planes, planes, 1)]
        self.inplanes = planes
        return nn.Sequential(*blocks)


class HaraBlock(nn.Module):
    """Hara's BasicBlock with shortcut A."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.stride, self.pad = stride, planes - inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = torch.cat([shortcut, shortcut.new_zeros(shortcut.shape[0], self.pad, *shortcut.shape[2:])], 1)
        return torch.relu(out + shortcut)


def official_mlp(in_features: int, out_features: int, hidden_blocks: int) -> nn.Sequential:
    """The official code's heads (models/resnet.py _make_mlp_layer of MLP_Block): `hidden_blocks`
    times Linear (the feature width), BatchNorm1d, ReLU, then the output Linear."""
    blocks = [[nn.Linear(in_features, in_features), nn.BatchNorm1d(in_features), nn.ReLU(inplace=True)]
              for _ in range(hidden_blocks)]
    return nn.Sequential(*(m for block in blocks for m in block), nn.Linear(in_features, out_features))


class MaskHead(nn.Module):
    """The official code's `hm_mlp` (--entropy official): an action classifier of its own for the
    masked clips, one hidden BatchNorm block (the README's --num_human_mask_adv_hidden_layers 1),
    fed through a second gradient reversal (train/step.py)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.mlp = official_mlp(in_features, num_classes, hidden_blocks=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


ARCHS = {"r3d18": 64, "r3d18-w32": 32, "r3d18-w16": 16, "hara-r18": 64, "hara-r18-w16": 16}


def build_backbone(arch: str, num_classes: int, input: str = "rgb") -> R3D18:
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    return (HaraR18 if arch.startswith("hara-") else R3D18)(num_classes, ARCHS[arch], input)
