"""ResNet-50 as RAR modifies it (Gao et al., Table 1): output stride 8, a deformable 3x3
convolution in conv4_1, and conv3_x, conv4_x and conv5_x on one grid; and `resnet_light`,
the same design at a quarter of the width with 1-2 blocks per stage.

Stride 1 in the 3x3 convolutions of conv4_1 and conv5_1 (no dilation, as the paper's sizes
say). Table 1's sizes (255 -> 127 -> 63 -> 63 -> 31 -> 31 -> 31) are met by padding conv1 by
2, pooling without padding, and giving conv3_1's strided 3x3 convolution no padding; its 1x1
shortcut then reads the input without its outer ring, so both branches sample the same
centres. Module names are torchvision's (`conv1`, `bn1`, `layer1.0.conv2`,
`layer2.0.downsample.0`, ...), so a torchvision `resnet50` state dict loads unchanged; the
deformable convolution's offset branch, which torchvision lacks, starts at zero (an ordinary
convolution). Input: RGB normalised with ImageNet's mean and deviation, as torchvision's
weights expect.

Stages (taps): `stem` (conv1, bn1, ReLU, max-pool: stride 4), `layer1` (conv2_x, 4),
`layer2` (conv3_x, 8), `layer3` (conv4_x, 8), `layer4` (conv5_x, 8). No ImageNet ResNet-50
can be installed here; the loader reads torchvision files for users who have one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..weights import WeightsError, load_torch_state_dict
from .base import IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255, Backbone
from .deform_conv import DeformConv2d

# (stem channels, bottleneck widths per stage, blocks per stage); outputs are 4 x width.
SPECS: dict[str, tuple[int, tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "resnet50": (64, (64, 128, 256, 512), (3, 4, 6, 3)),
    "resnet_light": (16, (16, 32, 64, 128), (1, 2, 2, 1)),
}
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with batch norm, and a shortcut; torchvision's names."""

    def __init__(self, in_channels: int, width: int, stride: int = 1, pad: int = 1, trim: int = 0,
                 deformable: bool = False, downsample: bool = False) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if deformable:
            self.conv2: nn.Module = DeformConv2d(width, width, 3, stride, pad)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.trim = trim  # shortcut skips the outer `trim` px so it stays centred with conv2
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                         nn.BatchNorm2d(out_channels)) if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x[:, :, self.trim:x.shape[2] - self.trim, self.trim:x.shape[3] - self.trim] if self.trim else x
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.relu(out + shortcut)


class ResNetOS8(Backbone):
    """RAR's ResNet-50 (`variant="resnet50"`) or its quarter-width variant (`resnet_light`)."""

    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4")
    default_taps = ("layer2", "layer3", "layer4")  # conv3_4, conv4_6, conv5_3
    formats = "a torchvision resnet50 state dict (resnet50-*.pth), or a RAR export holding backbone.*"
    total_stride = 8

    def __init__(self, variant: str = "resnet50") -> None:
        super().__init__()
        if variant not in SPECS:
            raise ValueError(f"unknown ResNet variant {variant!r}; choose one of {', '.join(SPECS)}")
        stem, widths, blocks = SPECS[variant]
        self.variant = variant
        self.name = variant
        self.input_norm.set("rgb", IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2)
        channels = stem
        stages = []
        for index, (width, count) in enumerate(zip(widths, blocks)):
            layer = []
            for block in range(count):
                first = block == 0
                stride = 2 if (first and index == 1) else 1  # only conv3_1 keeps its stride
                layer.append(Bottleneck(
                    channels, width, stride=stride, pad=0 if stride == 2 else 1, trim=1 if stride == 2 else 0,
                    deformable=first and index == 2, downsample=first,
                ))
                channels = width * EXPANSION
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.level_channels = tuple(w * EXPANSION for w in widths[1:])
        self.tap_strides = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 8, "layer4": 8}
        self.tap_channels = {"stem": stem, **{f"layer{i + 1}": w * EXPANSION for i, w in enumerate(widths)}}
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # offsets start at zero: an ordinary convolution
            if isinstance(module, DeformConv2d):
                nn.init.zeros_(module.offset.weight)
                nn.init.zeros_(module.offset.bias)

    def stage_modules(self, stage: str) -> list[nn.Module]:
        if stage == "stem":
            return [self.conv1, self.bn1, self.relu, self.maxpool]
        return [getattr(self, stage)]

    def load(self, path: str | Path) -> list[str]:
        """A torchvision `resnet50` state dict (the classifier `fc.*` is dropped; the
        deformable offsets, absent there, stay zero), or the `backbone.*` part of a RAR
        export. Returns the names left at their initial values."""
        source = load_torch_state_dict(path)
        if any(k.startswith("backbone.") for k in source):  # a RAR export: its backbone part
            state = {k.removeprefix("backbone."): v.float() for k, v in source.items() if k.startswith("backbone.")}
        else:
            state = {k: v.float() for k, v in source.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes of another width (e.g. resnet50 into the light variant)
            raise WeightsError(f"{path}: does not fit the {self.variant} backbone: "
                               f"{str(error).splitlines()[1].strip()}") from None
        unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if unexpected or any(".offset." not in k for k in missing):
            raise WeightsError(f"{path}: not a torchvision resnet50 state dict for the {self.variant} backbone "
                               f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
        return missing


def output_size(input_size: int) -> int:
    """Side of the stride-8 maps for a square input of `input_size` px."""
    side = (input_size + 4 - 7) // 2 + 1  # conv1, padding 2
    side = (side - 3) // 2 + 1  # max-pool, no padding
    return (side - 3) // 2 + 1  # conv3_1's 3x3, stride 2, no padding
