"""RAR: "Learning Reinforced Attentional Representation for End-to-End Visual Tracking"
(Gao et al.). Network (sec. 3.1, Table 1), hierarchical attention (sec. 3.2), the contextual
attentional correlation layer (sec. 3.3, `ops.correlation_filter`), weights I/O and the online
tracker (sec. 3.3-3.4).

Backbone. ResNet-50 with output stride 8 (Table 1): stride 1 in the 3x3 convolutions of
conv4_1 and conv5_1, a deformable 3x3 convolution in conv4_1, and the outputs of conv3_4,
conv4_6 and conv5_3 on one grid. Table 1's sizes (255 -> 127 -> 63 -> 63 -> 31 -> 31 -> 31)
are met by padding conv1 by 2, pooling without padding, and giving conv3_1's strided 3x3
convolution no padding; its 1x1 shortcut then reads the input without its outer ring, so
both branches sample the same centres. Module names are torchvision's (`conv1`, `bn1`,
`layer1.0.conv2`, `layer2.0.downsample.0`, ...), so a torchvision `resnet50` state dict
loads unchanged; the deformable convolution's offset branch, which torchvision lacks,
starts at zero (an ordinary convolution). Inputs are RGB normalised with ImageNet's mean and
deviation, as torchvision's weights expect.

`backbone="light"` is the same design (bottleneck blocks, output stride 8, deformable conv4_1,
three taps, attention, refinement, CACF) at a quarter of the width and 1-2 blocks per stage:
the variant we can train on our data on a CPU and run at camera rate there. It is the
default because it is the one with trained weights: no ImageNet ResNet-50 can be had here.

Hierarchical attention, per level (sec. 3.2): a convolutional LSTM (eq. 1; input weights
1x1, recurrent weights 3x3) carries the target's appearance from frame to frame; its hidden
state gives the inter-frame channel map h^c (conv + global average) and spatial map h^s
(conv). Channel attention (eq. 2) combines average- and max-pooled descriptors with the
previous frame's h^c in an MLP; spatial attention (eq. 3) combines the channel-average and
channel-max maps with the current h^s in convolutions; phi^a = phi * Psi^s * Psi^c + phi
(eq. 4). The levels are merged coarse to fine (Fig. 7): each reduced by a 1x1 convolution,
conv5 added to conv4 and passed through a 3x3 convolution, that added to conv3 and passed
through another. Every part can be switched off for the ablations (Table 3).

Which frames drive the LSTM: the template patch at the first frame starts it; afterwards
each frame's search patch (the chosen scale) advances it. All patches of one frame (the
three scales, and the template and context patches of the filter update) are read with the
same previous state.

Scale (sec. 3.4 gives only the pyramid 1.02^{-1,0,1}). The three peaks are compared after a
penalty on the two changed scales (0.9745, SiamFC's value), and the size follows the winner
damped by 0.59. Penalties of 0.95, 0.96, 0.9925 (DCFNet's) and 1.0 all scored lower on the
held-back training sequences (mean AUC 0.746, 0.749, 0.546, 0.711 against 0.757 in the same
code). A measured bias remains: the Hann window on the features favours the larger patch. Over 64 frames of the
training sequences, searched at the true size and 1.02^{-6..6} around it, the best scale was a
larger one 30 times and a smaller one 18 times (23 and 21 without the window). So boxes grow
on targets that shrink (on dev: Human7, David). Dropping the window removes the bias but
loses the person of uav_person12_1 (AUC 0.139), so the window stays.

Confidence: the filter is fitted so that the target's own patch answers with a peak of 1
(the Gaussian label's height), and a patch with no target with about 0. The peak of the
chosen response, clipped to 0..1, is the number reported. `confidence_threshold` = 0.2 was
chosen on held-back training sequences (never the dev set): with the target in view the
peak's 5th-25th percentiles were 0.15-0.19 on uav_person12_1 and 0.42-0.52 on uav_car10;
with the target painted over it stayed at 0.02-0.18 for ten frames (it creeps up as the
filter, updated every frame as the paper does, learns the occluder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..boxes import Box
from ..config import TrackerConfig
from ..device import resolve_device
from ..ops.correlation_filter import FilterState, gaussian_label, hann_window, learn_filter, peak_offset, respond
from ..ops.crops import crop_and_resize, image_to_tensor
from ..ops.scales import penalise_scale_change
from ..ops.deform_conv import DeformConv2d
from ..tracker import Tracker
from ..weights import WeightsError, load_torch_state_dict

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "rar.pt"
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# (stem channels, bottleneck widths per stage, blocks per stage); outputs are 4 x width.
BACKBONE_SPECS: dict[str, tuple[int, tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "resnet50": (64, (64, 128, 256, 512), (3, 4, 6, 3)),
    "light": (16, (16, 32, 64, 128), (1, 2, 2, 1)),
}
EXPANSION = 4


# --- backbone (sec. 3.1, Table 1) --------------------------------------------------------------
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


class ResNetOS8(nn.Module):
    """Modified ResNet-50 (or its light variant): returns conv3_x, conv4_x, conv5_x outputs,
    all at stride 8 (31 x 31 for a 255 input, 27 x 27 for 225)."""

    total_stride = 8

    def __init__(self, variant: str = "resnet50") -> None:
        super().__init__()
        if variant not in BACKBONE_SPECS:
            raise ValueError(f"unknown RAR backbone {variant!r}; choose one of {', '.join(BACKBONE_SPECS)}")
        stem, widths, blocks = BACKBONE_SPECS[variant]
        self.variant = variant
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
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_RGB).reshape(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD_RGB).reshape(1, 3, 1, 1) * 255.0, persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # offsets start at zero: an ordinary convolution
            if isinstance(module, DeformConv2d):
                nn.init.zeros_(module.offset.weight)
                nn.init.zeros_(module.offset.bias)

    def prepare(self, bgr: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W BGR 0..255 -> RGB normalised as for torchvision's ImageNet weights."""
        return (bgr.flip(1) - self.mean) / self.std

    def forward(self, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.prepare(bgr)))))
        conv3 = self.layer2(self.layer1(x))
        conv4 = self.layer3(conv3)
        conv5 = self.layer4(conv4)
        return conv3, conv4, conv5


FEATURE_STRIDE = 8  # input pixels between neighbouring cells of the conv3-conv5 maps


def label_sigma_cells(label_sigma: float, input_size: int, padding: float) -> float:
    """Gaussian label sigma in cells: the target spans input_size / (1 + padding) input pixels,
    FEATURE_STRIDE to a cell."""
    return label_sigma * input_size / ((1.0 + padding) * FEATURE_STRIDE)


def cell_pixels(patch_side: float, input_size: int) -> float:
    """Image pixels per feature cell for a patch of `patch_side` image pixels resized to
    `input_size`: the stride, not patch_side / output_size (27 cells span 216 of the 225
    input pixels, so that would overstate every displacement by 4 %)."""
    return patch_side * FEATURE_STRIDE / input_size


def output_size(input_size: int) -> int:
    """Side of the stride-8 maps for a square input of `input_size` px."""
    side = (input_size + 4 - 7) // 2 + 1  # conv1, padding 2
    side = (side - 3) // 2 + 1  # max-pool, no padding
    return (side - 3) // 2 + 1  # conv3_1's 3x3, stride 2, no padding


def load_torchvision_resnet50(backbone: ResNetOS8, path: str | Path) -> list[str]:
    """Load a torchvision `resnet50` state dict (e.g. resnet50-*.pth) into the backbone. The
    classifier (`fc.*`) is dropped; the deformable offsets, absent there, stay zero. Returns
    the names that were left at their initial values."""
    state = {k: v.float() for k, v in load_torch_state_dict(path).items() if not k.startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes of another width (e.g. resnet50 into the light variant)
        raise WeightsError(f"{path}: does not fit the {backbone.variant} backbone: {str(error).splitlines()[1].strip()}") from None
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if unexpected or any(".offset." not in k for k in missing):
        raise WeightsError(f"{path}: not a torchvision resnet50 state dict for the {backbone.variant} backbone "
                           f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    return missing


# --- hierarchical attention (sec. 3.2) -----------------------------------------------------------
LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c)


class ConvLSTMCell(nn.Module):
    """Eq. 1: forget / input / output gates and content from W_h h_{t-1} + W_i phi_t."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_conv = nn.Conv2d(in_channels, 4 * hidden, 1)  # W_i
        self.hidden_conv = nn.Conv2d(hidden, 4 * hidden, kernel, padding=kernel // 2, bias=False)  # W_h
        with torch.no_grad():
            self.input_conv.bias.zero_()
            self.input_conv.bias[:hidden] = 1.0  # remember by default

    def zero_state(self, like: torch.Tensor) -> LSTMState:
        shape = (like.shape[0], self.hidden, like.shape[2], like.shape[3])
        zeros = like.new_zeros(shape)
        return zeros, zeros

    def forward(self, phi: torch.Tensor, state: LSTMState) -> LSTMState:
        h, c = state
        forget, inp, out, content = (self.input_conv(phi) + self.hidden_conv(h)).chunk(4, dim=1)
        c = torch.sigmoid(forget) * c + torch.sigmoid(inp) * torch.tanh(content)
        h = torch.sigmoid(out) * torch.tanh(c)
        return h, c


class LevelAttention(nn.Module):
    """Inter- and intra-frame attention of one feature level (eq. 1-4)."""

    def __init__(self, channels: int, hidden: int = 32, reduction: int = 16, spatial_kernel: int = 7,
                 spatial_maps: int = 8) -> None:
        super().__init__()
        mid = max(channels // reduction, 8)
        pad = spatial_kernel // 2
        self.lstm = ConvLSTMCell(channels, hidden)
        self.to_channel = nn.Conv2d(hidden, channels, 1)  # h -> h^c (then averaged over space)
        self.to_spatial = nn.Conv2d(hidden, 1, 1)  # h -> h^s
        self.channel_in = nn.Linear(channels, mid)  # W_Phi^c
        self.channel_hidden = nn.Linear(channels, mid, bias=False)  # W_h^c
        self.channel_out = nn.Linear(mid, channels)  # W_o^c
        self.spatial_in = nn.Conv2d(1, spatial_maps, spatial_kernel, padding=pad)  # W_Phi^s
        self.spatial_hidden = nn.Conv2d(1, spatial_maps, spatial_kernel, padding=pad, bias=False)  # W_h^s
        self.spatial_out = nn.Conv2d(spatial_maps, 1, spatial_kernel, padding=pad)  # W_o^s

    def forward(self, phi: torch.Tensor, state: LSTMState | None, inter: bool = True, channel: bool = True,
                spatial: bool = True) -> tuple[torch.Tensor, LSTMState | None]:
        if not (inter or channel or spatial):
            return phi, None
        h_channel = h_spatial = None
        new_state = None
        if inter:
            if state is None:
                state = self.lstm.zero_state(phi)
            elif state[0].shape[0] != phi.shape[0]:  # one state read by several patches
                state = (state[0].expand(phi.shape[0], -1, -1, -1), state[1].expand(phi.shape[0], -1, -1, -1))
            new_state = self.lstm(phi, state)
            h_channel = self.to_channel(state[0]).mean(dim=(2, 3))  # h^c_{t-1}
            h_spatial = self.to_spatial(new_state[0])  # h^s_t
        attended = phi
        if channel:
            descriptor = phi.mean(dim=(2, 3)) + phi.amax(dim=(2, 3))  # Phi^c
            theta = self.channel_in(descriptor)
            if h_channel is not None:
                theta = theta + self.channel_hidden(h_channel)
            attended = attended * torch.sigmoid(self.channel_out(torch.tanh(theta)))[:, :, None, None]
        if spatial:
            descriptor = phi.mean(dim=1, keepdim=True) + phi.amax(dim=1, keepdim=True)  # Phi^s
            theta = self.spatial_in(descriptor)
            if h_spatial is not None:
                theta = theta + self.spatial_hidden(h_spatial)
            attended = attended * torch.sigmoid(self.spatial_out(torch.tanh(theta)))
        return attended + phi, new_state


class Refinement(nn.Module):
    """Fig. 7: levels merged coarse to fine into one `out_channels` map."""

    def __init__(self, level_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in level_channels])
        self.merge = nn.ModuleList([
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        ])

    def forward(self, levels: Sequence[torch.Tensor], hierarchical: bool = True) -> torch.Tensor:
        conv3, conv4, conv5 = levels
        if not hierarchical:  # RAR_NHF: conv5_3 alone
            return self.merge[1](self.reduce[2](conv5))
        merged = self.merge[0](self.reduce[2](conv5) + self.reduce[1](conv4))
        return self.merge[1](merged + self.reduce[0](conv3))


@dataclass(frozen=True)
class Switches:
    """Which parts run (Table 3's variants)."""

    inter: bool = True
    channel: bool = True
    spatial: bool = True
    hierarchical: bool = True


class RARNet(nn.Module):
    """Backbone -> per-level attention -> refinement: the features the correlation layer reads."""

    def __init__(self, backbone: str = "light", feature_channels: int = 64, lstm_hidden: int = 32) -> None:
        super().__init__()
        self.backbone = ResNetOS8(backbone)
        self.attention = nn.ModuleList([LevelAttention(c, lstm_hidden) for c in self.backbone.level_channels])
        self.refine = Refinement(self.backbone.level_channels, feature_channels)
        self.switches = Switches()
        # Module-name prefixes whose batch norm stays in eval mode while the rest trains:
        # stages frozen with ImageNet weights must normalise with ImageNet's statistics, as
        # the tracker will, not with each training batch's.
        self.frozen_norm_prefixes: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> "RARNet":
        super().train(mode)
        if mode and self.frozen_norm_prefixes:
            for name, module in self.named_modules():
                if name.startswith(self.frozen_norm_prefixes) and isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor, state: list[LSTMState | None] | None = None
                ) -> tuple[torch.Tensor, list[LSTMState | None]]:
        """images: B x 3 x H x W BGR 0..255; state: per level, from the previous frame (None: a
        fresh track). Returns the B x D x S x S features and the new state of every level."""
        levels = self.backbone(images)
        state = state if state is not None else [None] * len(levels)
        sw = self.switches
        attended, new_state = [], []
        for attention, phi, level_state in zip(self.attention, levels, state):
            out, new = attention(phi, level_state, sw.inter, sw.channel, sw.spatial)
            attended.append(out)
            new_state.append(new)
        return self.refine(attended, sw.hierarchical), new_state


def select_state(state: list[LSTMState | None], index: int) -> list[LSTMState | None]:
    """The state of one patch of a batch (kept with its batch dimension)."""
    return [None if s is None else (s[0][index:index + 1], s[1][index:index + 1]) for s in state]


# --- weights ---------------------------------------------------------------------------------------
def load_rar_weights(net: RARNet, path: str | Path) -> None:
    """Our own exports (`vtrack train rar`), or a torchvision resnet50 state dict, which
    fills the backbone only (attention and refinement stay as initialised: only useful to
    start training from)."""
    state = {k: v.float() for k, v in load_torch_state_dict(path).items()}
    if "layer1.0.conv1.weight" in state and "backbone.layer1.0.conv1.weight" not in state:
        load_torchvision_resnet50(net.backbone, path)
        return
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise WeightsError(f"{path}: does not fit this RAR network ({str(error).splitlines()[1].strip()}); "
                           "check `backbone`, `feature_channels` and `lstm_hidden`") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit this RAR network (missing {missing[:4]}, unexpected {unexpected[:4]}); "
                           "check `backbone`, `feature_channels` and `lstm_hidden`")


# --- tracker (sec. 3.3-3.4) ------------------------------------------------------------------------
@dataclass
class RARConfig(TrackerConfig):
    weights: str = ""  # empty: the packaged vtrack_core/weights/rar.pt (light backbone)
    backbone: str = "light"  # light | resnet50 (needs weights: ImageNet ones cannot be had here)
    feature_channels: int = 64  # refinement output
    lstm_hidden: int = 32
    half: bool = False  # fp16 backbone on CUDA (the correlation layer stays fp32)
    input_size: int = 225  # patches resized to 225 x 225 (sec. 3.4)
    padding: float = 2.0  # patch side = (1 + padding) * sqrt(w * h) ("padding size of 2x")
    context_patches: int = 4  # k: left, right, above, below the target, one target size away
    lambda1: float = 1e-4
    lambda2: float = 0.1
    label_sigma: float = 0.1  # Gaussian label sigma, as a fraction of the target size
    update_rate: float = 0.01  # beta_t: weight of the newest frame in the filter's running sum (DCFNet's
    #                           value; held-back AUC 0.567 at 0.005, 0.760 at 0.01, 0.768 at 0.02)
    update_interval: int = 1  # frames between filter updates (1: every frame, the paper; more saves
    #                           the 1 + k patch pass on slow CPUs; see `update_weight`)
    scale_step: float = 1.02
    scale_num: int = 3
    scale_penalty: float = 0.9745  # multiplies the peaks of scaled patches (SiamFC's value; see the docstring)
    scale_lr: float = 0.59  # damped scale update
    correlation: str = "cacf"  # cacf | dcf (RAR_DST: no context patches)
    inter_attention: bool = True  # RAR_NTA when false
    channel_attention: bool = True  # RAR_NCA when false
    spatial_attention: bool = True  # RAR_NSA when false (all three false: RAR_NAA)
    hierarchical: bool = True  # RAR_NHF when false (conv5_3 only)
    confidence_threshold: float = 0.2  # response peak (see the module docstring)


def context_offsets(width: float, height: float, count: int) -> np.ndarray:
    """Centres of the k context patches relative to the target: left, right, above, below
    (CACF's choice), then the diagonals, one target size away."""
    offsets = [(-width, 0.0), (width, 0.0), (0.0, -height), (0.0, height),
               (-width, -height), (width, -height), (-width, height), (width, height)]
    if count > len(offsets):
        raise ValueError(f"at most {len(offsets)} context patches")
    return np.array(offsets[:count], dtype=np.float64).reshape(-1, 2)


def update_weight(rate_per_frame: float, interval: int) -> float:
    """Blend weight of a filter update made every `interval` frames: the weight the frames it
    stands for would have had together, 1 - (1 - rate)^interval. The filter then forgets as
    fast per frame whatever the interval; with the per-frame rate alone, updating every
    third frame adapted three times slower and lost the held-back person (mean AUC 0.562
    against 0.750 with this weight and 0.760 updating every frame)."""
    return 1.0 - (1.0 - rate_per_frame) ** max(1, interval)


class RARTracker(Tracker):
    name = "rar"
    config_class = RARConfig

    def __init__(self, config: RARConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.correlation not in ("cacf", "dcf"):
            raise ValueError(f"rar: correlation must be cacf or dcf, got {cfg.correlation!r}")
        self.device = resolve_device(cfg.device)
        self.dtype = torch.float16 if cfg.half and self.device.type == "cuda" else torch.float32
        weights = Path(cfg.weights) if cfg.weights else DEFAULT_WEIGHTS
        if not weights.is_file():
            raise WeightsError(f"rar: no weights at {weights}; train them with `vtrack train rar` or set weights=FILE")
        self.net = RARNet(cfg.backbone, cfg.feature_channels, cfg.lstm_hidden)
        load_rar_weights(self.net, weights)
        self.net.switches = Switches(cfg.inter_attention, cfg.channel_attention, cfg.spatial_attention, cfg.hierarchical)
        # channels_last: oneDNN (CPU) and cuDNN run these convolutions faster in NHWC.
        self.net.to(self.device, self.dtype, memory_format=torch.channels_last).eval()
        self.size = output_size(cfg.input_size)
        self.window = hann_window(self.size, self.device)
        self.label = gaussian_label(self.size, label_sigma_cells(cfg.label_sigma, cfg.input_size, cfg.padding),
                                    device=self.device)
        exponents = np.arange(cfg.scale_num) - (cfg.scale_num - 1) // 2
        self.scale_factors = np.array([cfg.scale_step ** float(e) for e in exponents])
        self.scale_penalties = torch.as_tensor(np.where(exponents == 0, 1.0, cfg.scale_penalty),
                                               device=self.device, dtype=torch.float32)
        self.contexts = 0 if cfg.correlation == "dcf" else cfg.context_patches


    def _patch_side(self) -> float:
        return (1.0 + self.config.padding) * math.sqrt(float(self.target_size[0] * self.target_size[1]))

    def _features(self, frame: torch.Tensor, centers: np.ndarray, sides: np.ndarray,
                  state: list[LSTMState | None] | None) -> tuple[torch.Tensor, list[LSTMState | None]]:
        patches = crop_and_resize(frame, torch.as_tensor(centers, device=self.device, dtype=torch.float32),
                                  torch.as_tensor(sides, device=self.device, dtype=torch.float32),
                                  self.config.input_size, self.fill).to(self.dtype)
        features, new_state = self.net(patches.contiguous(memory_format=torch.channels_last), state)
        return features.float() * self.window, new_state

    def _learn(self, frame: torch.Tensor, state: list[LSTMState | None] | None
               ) -> tuple[FilterState, list[LSTMState | None]]:
        """Eq. 7 for the current frame: template patch at the target, k context patches around."""
        side = self._patch_side()
        centers = np.vstack([self.center, self.center + context_offsets(*self.target_size, self.contexts)])
        features, new_state = self._features(frame, centers, np.full(len(centers), side), state)
        context = features[1:].unsqueeze(0) if self.contexts else None
        return learn_filter(features[:1], self.label, context, self.config.lambda2), new_state

    @torch.inference_mode()
    def _init(self, image: np.ndarray, box: Box) -> None:
        self.center = np.array(box.center, dtype=np.float64)
        self.target_size = np.array([box.w, box.h], dtype=np.float64)
        frame = image_to_tensor(image, self.device)  # float32: crops are placed at full precision
        self.fill = frame.mean(dim=(2, 3)).reshape(3)
        filter_state, state = self._learn(frame, None)
        self.filter = filter_state
        self.state = select_state(state, 0)  # the template patch starts the LSTM

    @torch.inference_mode()
    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        cfg = self.config
        frame = image_to_tensor(image, self.device)  # float32: crops are placed at full precision
        side = self._patch_side()
        sides = side * self.scale_factors
        centers = np.repeat(self.center[None], len(sides), axis=0)
        features, state = self._features(frame, centers, sides, self.state)
        responses = respond(self.filter, features, cfg.lambda1)  # scales x S x S
        peaks = penalise_scale_change(responses.amax(dim=(1, 2)), self.scale_penalties)
        best = int(torch.argmax(peaks))
        d_row, d_col, peak = peak_offset(responses[best])
        cell = cell_pixels(sides[best], cfg.input_size)  # image px per cell at the chosen scale
        height, width = image.shape[:2]
        self.center = np.clip(self.center + np.array([d_col, d_row]) * cell, 0, [width - 1, height - 1])
        self.target_size = np.clip(
            self.target_size * ((1 - cfg.scale_lr) + cfg.scale_lr * self.scale_factors[best]), 4.0, [width, height])
        previous = self.state
        self.state = select_state(state, best)
        if cfg.update_rate > 0 and (self.frame_index + 1) % max(1, cfg.update_interval) == 0:
            new_filter, _ = self._learn(frame, previous)
            self.filter = self.filter.blend(new_filter, update_weight(cfg.update_rate, cfg.update_interval))
        box = Box.from_center(self.center[0], self.center[1], self.target_size[0], self.target_size[1])
        return box, peak
