"""SiamFC's AlexNet (Bertinetto et al. 2016, Table 1): five convolutions without padding,
batch norm after each, ReLU after all but conv5, 3x3/2 max-pooling after conv1 and conv2;
total stride 8, 127 px -> 6 x 6 x 256 and 255 px -> 22 x 22 x 256. Input: BGR 0..255 as is.

Table 1 lists per-group channel maps (two towers, as in Krizhevsky et al.): conv1 48x3 (x2),
conv2 128x24 (groups 2), conv3 192x128 (x2, full), conv4 192x192 (groups 2), conv5 128x192
(groups 2). Stages (taps): `conv1` ... `conv5`.

Files, all converted to our names (`backbone.convN.{0,1}.*` in a SiamFC file; `convN.*`
here) and our input: our own SiamFC exports; siamfc-pytorch `.pth` (RGB input: conv1's
channels are swapped; batch-norm eps 1e-6: running variances lowered by the difference; no
batch norm after conv5: an identity one); the authors' MatConvNet `.mat` (RGB as well; the
final "adjust" batch norm on the score map belongs to SiamFC's head). The functions return a
whole SiamFC state dict (head included) so the tracker and this backbone read one format.
No ImageNet weights exist for this network: SiamFC trains it from scratch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..weights import (
    WeightsError,
    load_matconvnet_params,
    load_torch_state_dict,
    matconvnet_batchnorm,
    matconvnet_conv_weight,
)
from .base import Backbone, load_strict

BATCHNORM_EPS = 1e-5
SIAMFC_PYTORCH_BN_EPS = 1e-6  # siamfc-pytorch's _BatchNorm2d


def _conv_block(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True,
                pool: bool = False) -> nn.Sequential:
    """conv (no padding: the embedding must stay fully convolutional) -> batch norm -> ReLU
    -> 3x3/2 max-pool, the last two optional."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups),
        nn.BatchNorm2d(cout, eps=BATCHNORM_EPS, momentum=0.05),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers)


class SiamFCAlexNet(Backbone):
    name = "alexnet"
    stage_names = ("conv1", "conv2", "conv3", "conv4", "conv5")
    default_taps = ("conv5",)
    formats = "our SiamFC exports, siamfc-pytorch .pth or the authors' MatConvNet .mat"
    total_stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.input_norm.set("bgr", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.conv1 = _conv_block(3, 96, 11, stride=2, pool=True)
        self.conv2 = _conv_block(96, 256, 5, groups=2, pool=True)
        self.conv3 = _conv_block(256, 384, 3)
        self.conv4 = _conv_block(384, 384, 3, groups=2)
        self.conv5 = _conv_block(384, 256, 3, groups=2, relu=False)
        self.tap_strides = {"conv1": 4, "conv2": 8, "conv3": 8, "conv4": 8, "conv5": 8}
        self.tap_channels = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian scaled by the 'improved Xavier' rule (He et al.), as SiamFC's sec. 3.2."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stage_modules(self, stage: str) -> list[nn.Module]:
        return [getattr(self, stage)]

    def load(self, path: str | Path) -> None:
        state = {k.removeprefix("backbone."): v for k, v in read_siamfc_state(path).items() if k.startswith("backbone.")}
        load_strict(self, state, path, "SiamFC AlexNet weights")


def _identity_batchnorm(prefix: str) -> dict[str, torch.Tensor]:
    """A BatchNorm that passes values through (for releases without one after conv5)."""
    return {
        f"{prefix}.weight": torch.ones(256),
        f"{prefix}.bias": torch.zeros(256),
        f"{prefix}.running_mean": torch.zeros(256),
        f"{prefix}.running_var": torch.full((256,), 1.0 - 1e-5),
    }


def state_dict_from_siamfc_pytorch(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The siamfc-pytorch layout ('backbone.convN.{0,1}.*', no BN after conv5, fixed output
    scale 1e-3 and no bias) onto SiamFC's network. That code reads frames as RGB 0..255 (ours
    BGR): conv1's input channels are swapped. Its batch norms use eps 1e-6 (ours 1e-5): the
    running variances are lowered by the difference, so var + eps is what it was trained with."""
    state = {k: v for k, v in source.items() if k.startswith("backbone.") and "num_batches_tracked" not in k}
    if "backbone.conv1.0.weight" in state:  # (otherwise not this layout: the load says what is missing)
        state["backbone.conv1.0.weight"] = state["backbone.conv1.0.weight"][:, [2, 1, 0]]
    for key in [k for k in state if k.endswith(".running_var")]:
        state[key] = (state[key] + SIAMFC_PYTORCH_BN_EPS - BATCHNORM_EPS).clamp_min(0.0)
    if "backbone.conv5.1.weight" not in state:
        state.update(_identity_batchnorm("backbone.conv5.1"))
    state["head.scale"] = source.get("head.scale", torch.tensor(1e-3))
    state["head.bias"] = source.get("head.bias", torch.zeros(1))
    return state


def state_dict_from_matconvnet(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The authors' MatConvNet release ('br_convNf/b', 'br_bnNm/b/x', 'fin_adjust_bn*') onto
    SiamFC's network. Their network reads RGB, ours BGR: conv1's input channels are swapped.
    The final 'adjust' batch norm on the score map is an affine map, folded into the head."""
    state: dict[str, torch.Tensor] = {}
    try:
        for index in range(1, 6):
            weight = matconvnet_conv_weight(params[f"br_conv{index}f"])
            if index == 1:
                weight = weight[:, [2, 1, 0]]
            state[f"backbone.conv{index}.0.weight"] = weight
            state[f"backbone.conv{index}.0.bias"] = torch.from_numpy(np.asarray(params[f"br_conv{index}b"], np.float32).reshape(-1))
            if f"br_bn{index}m" in params:
                bn = matconvnet_batchnorm(params[f"br_bn{index}m"], params[f"br_bn{index}b"], params[f"br_bn{index}x"])
                state.update({f"backbone.conv{index}.1.{k}": v for k, v in bn.items()})
            elif index == 5:
                state.update(_identity_batchnorm("backbone.conv5.1"))
            else:
                raise KeyError(f"br_bn{index}m")
        if "fin_adjust_bnm" in params:
            gain = float(np.asarray(params["fin_adjust_bnm"]).reshape(-1)[0])
            bias = float(np.asarray(params["fin_adjust_bnb"]).reshape(-1)[0])
            mean, sigma = (float(v) for v in np.asarray(params["fin_adjust_bnx"]).reshape(-1)[:2])
            state["head.scale"] = torch.tensor(gain / sigma)
            state["head.bias"] = torch.tensor([bias - gain * mean / sigma])
        else:
            state["head.scale"] = torch.tensor(1e-3)
            state["head.bias"] = torch.zeros(1)
    except KeyError as missing:
        raise WeightsError(f"MatConvNet SiamFC weights lack parameter {missing}") from None
    return state


def read_siamfc_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A SiamFC state dict (`backbone.*`, `head.*`, float32) from our files, siamfc-pytorch
    `.pth` or the authors' `.mat`."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        state = state_dict_from_matconvnet(load_matconvnet_params(path))
    else:
        state = load_torch_state_dict(path)
        if "head.scale" not in state or "backbone.conv5.1.weight" not in state:
            state = state_dict_from_siamfc_pytorch(state)
    return {k: v.float() for k, v in state.items()}
