"""SiamFC: "Fully-Convolutional Siamese Networks for Object Tracking" (Bertinetto et al.,
ECCV-W 2016). Network (Table 1), weights I/O and the online tracker (sections 2.4, 3.2).

Defaults are the paper's values; where the released code differs the alternative is noted
and is one config value away.

Confidence: the network is trained with the logistic loss (eq. 3) on +1/-1 labels, so the
sigmoid of the best raw score is its estimate of the probability that the chosen window is
the target. That is the number reported (0..1); the LOST rule thresholds it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..boxes import Box
from ..config import TrackerConfig
from ..device import resolve_device
from ..ops.correlation import cross_correlate
from ..ops.crops import crop_and_resize, image_to_tensor
from ..ops.scales import penalise_scale_change
from ..tracker import Tracker
from ..weights import (
    WeightsError,
    load_matconvnet_params,
    load_torch_state_dict,
    matconvnet_batchnorm,
    matconvnet_conv_weight,
)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "siamfc.pt"
BATCHNORM_EPS = 1e-5
SIAMFC_PYTORCH_BN_EPS = 1e-6  # siamfc-pytorch's _BatchNorm2d


# --- network (Table 1) ----------------------------------------------------------------------
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


class AlexNetEmbedding(nn.Module):
    """phi: AlexNet-like, total stride 8, 127 -> 6x6x256 and 255 -> 22x22x256.

    Table 1 lists per-group channel maps (two towers, as in Krizhevsky et al.): conv1
    48x3 (x2), conv2 128x24 (groups 2), conv3 192x128 (x2, full), conv4 192x192 (groups 2),
    conv5 128x192 (groups 2)."""

    total_stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv_block(3, 96, 11, stride=2, pool=True)
        self.conv2 = _conv_block(96, 256, 5, groups=2, pool=True)
        self.conv3 = _conv_block(256, 384, 3)
        self.conv4 = _conv_block(384, 384, 3, groups=2)
        self.conv5 = _conv_block(384, 256, 3, groups=2, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))


class SiamFCHead(nn.Module):
    """f(z, x) = scale * (phi(z) * phi(x)) + b: cross-correlation plus a learned bias. The
    small fixed scale keeps initial scores in the range where the logistic loss learns."""

    def __init__(self, out_scale: float = 1e-3) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(out_scale)))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return cross_correlate(exemplar, search) * self.scale + self.bias


class SiamFCNet(nn.Module):
    def __init__(self, out_scale: float = 1e-3) -> None:
        super().__init__()
        self.backbone = AlexNetEmbedding()
        self.head = SiamFCHead(out_scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian scaled by the 'improved Xavier' rule (He et al.), as section 3.2."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(exemplar), self.backbone(search))


# --- weights I/O ------------------------------------------------------------------------------
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
    scale 1e-3 and no bias) onto this network. That code reads frames as RGB 0..255 (ours
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
    this network. Their network reads RGB, ours BGR: conv1's input channels are swapped.
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


def load_siamfc_weights(net: SiamFCNet, path: str | Path) -> None:
    """Load our own checkpoints, siamfc-pytorch `.pth` files or the authors' `.mat`."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        state = state_dict_from_matconvnet(load_matconvnet_params(path))
    else:
        state = load_torch_state_dict(path)
        if "head.scale" not in state or "backbone.conv5.1.weight" not in state:
            state = state_dict_from_siamfc_pytorch(state)
    state = {k: v.float() for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit SiamFC (missing {missing[:4]}, unexpected {unexpected[:4]})")


# --- tracker (sections 2.4, 3.2) ----------------------------------------------------------------
@dataclass
class SiamFCConfig(TrackerConfig):
    weights: str = ""  # empty: the packaged vtrack_core/weights/siamfc.pt
    half: bool = False  # fp16 on CUDA
    exemplar_size: int = 127
    instance_size: int = 255
    context: float = 0.5  # margin p = context * (w + h) / 2 = (w + h) / 4 (sec. 2.4)
    scale_num: int = 3
    scale_step: float = 1.03  # paper; the released code uses 1.0375
    scale_penalty: float = 0.9745  # multiplies the response of scaled searches (released code)
    scale_lr: float = 0.65  # damped scale update (paper text; released code 0.59)
    response_up: int = 16  # bicubic upsampling 17 -> 272 (sec. 3.2)
    window_influence: float = 0.176  # cosine window weight (released code)
    out_scale: float = 1e-3
    confidence_threshold: float = 0.5  # sigmoid of the best score


class SiamFCTracker(Tracker):
    name = "siamfc"
    config_class = SiamFCConfig

    def __init__(self, config: SiamFCConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.dtype = torch.float16 if cfg.half and self.device.type == "cuda" else torch.float32
        weights = Path(cfg.weights) if cfg.weights else DEFAULT_WEIGHTS
        if not weights.is_file():
            raise WeightsError(
                f"siamfc: no weights at {weights}; train them with `vtrack train siamfc` or set weights=FILE "
                "(our checkpoints, siamfc-pytorch .pth or the authors' MatConvNet .mat)"
            )
        self.net = SiamFCNet(cfg.out_scale)
        load_siamfc_weights(self.net, weights)
        # channels_last: oneDNN (CPU) and cuDNN (tensor cores) run these convolutions faster
        # in NHWC; measured 1.28x on the CPU here.
        self.net.to(self.device, self.dtype, memory_format=torch.channels_last).eval()
        self.scale_factors = torch.tensor(
            [cfg.scale_step ** e for e in np.arange(cfg.scale_num) - (cfg.scale_num - 1) / 2],
            device=self.device, dtype=torch.float32,
        )
        penalties = torch.full((cfg.scale_num,), cfg.scale_penalty, device=self.device)
        penalties[(cfg.scale_num - 1) // 2] = 1.0
        self.scale_penalties = penalties

    @torch.inference_mode()
    def _init(self, image: np.ndarray, box: Box) -> None:
        cfg = self.config
        self.center = np.array(box.center, dtype=np.float64)
        self.target_size = np.array([box.w, box.h], dtype=np.float64)
        frame = image_to_tensor(image, self.device)  # float32: crops are placed at full precision
        self.fill = frame.mean(dim=(2, 3)).reshape(3)  # mean colour of the first frame pads crops
        z_size = self._exemplar_side()
        exemplar = crop_and_resize(frame, torch.tensor(self.center, device=self.device),
                                   torch.tensor([z_size], device=self.device), cfg.exemplar_size, self.fill).to(self.dtype)
        self.kernel = self.net.backbone(exemplar.contiguous(memory_format=torch.channels_last)).contiguous()
        self.window = None

    def _exemplar_side(self) -> float:
        cfg = self.config
        margin = cfg.context * float(self.target_size.sum())
        return math.sqrt(float(np.prod(self.target_size + margin)))

    @torch.inference_mode()
    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        cfg = self.config
        frame = image_to_tensor(image, self.device)  # float32: crops are placed at full precision
        x_side = self._exemplar_side() * cfg.instance_size / cfg.exemplar_size
        sides = self.scale_factors * x_side
        search = crop_and_resize(frame, torch.tensor(self.center, device=self.device, dtype=torch.float32),
                                 sides, cfg.instance_size, self.fill).to(self.dtype)
        embedded = self.net.backbone(search.contiguous(memory_format=torch.channels_last))
        scores = self.net.head(self.kernel, embedded).float()  # S x 1 x 17 x 17
        size = scores.shape[-1] * cfg.response_up
        response = F.interpolate(scores, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        if self.window is None or self.window.shape[-1] != size:
            hann = torch.hann_window(size, periodic=False, device=self.device)
            self.window = torch.outer(hann, hann) / torch.outer(hann, hann).sum()
        # Best scale (penalising scale changes), then the peak of its window-blended map; all
        # on the device, one transfer of three numbers at the end.
        best_scale = torch.argmax(penalise_scale_change(response.amax(dim=(1, 2)), self.scale_penalties))
        best = response[best_scale]
        confidence = torch.sigmoid(best.max())
        normalised = best - best.min()
        normalised = normalised / normalised.sum().clamp_min(1e-12)
        blended = (1 - cfg.window_influence) * normalised + cfg.window_influence * self.window
        scale_index, peak, confidence = torch.stack(
            [best_scale.float(), torch.argmax(blended).float(), confidence.float()]).tolist()
        row, col = divmod(int(peak), size)
        # Displacement from the map centre -> search-crop pixels -> image pixels.
        offset = np.array([col, row], dtype=np.float64) - (size - 1) / 2.0
        offset_in_crop = offset * self.net.backbone.total_stride / cfg.response_up
        scale = float(self.scale_factors[int(scale_index)])
        self.center = self.center + offset_in_crop * x_side * scale / cfg.instance_size
        self.target_size = self.target_size * ((1 - cfg.scale_lr) + cfg.scale_lr * scale)
        height, width = image.shape[:2]
        self.center = np.clip(self.center, 0, [width - 1, height - 1])
        self.target_size = np.clip(self.target_size, 4.0, [width, height])
        box = Box.from_center(self.center[0], self.center[1], self.target_size[0], self.target_size[1])
        return box, float(confidence)
