"""Feature extractors that give a mid-level and a high-level map of a region, for trackers
that read two levels (FCNT: VGG-16 conv4-3 and conv5-3).

Both maps come out on the mid-level grid, so a tracker computes one heat map per level on
the same cells; `geometry` says where cell i sits in the input. The high-level map is
resampled (bilinearly) at the input positions of the mid-level cells, from both levels'
geometry: a plain resize to the mid map's size lines the cells up only when the two maps
cover the input alike (VGG-16 here), and for FDN's maps (46 and 22 cells for a 386 px ROI)
it put the high level 0.6 cell off at the centre.

* `vgg16`: torchvision's VGG-16 layout (`features.N.weight`), the paper's backbone; conv4-3
  (stride 8) and conv5-3 (stride 16). Needs a weights file: ImageNet weights are the point
  of it, and none can be downloaded here.
* `fdn`: the conv layers our FDN training produced (`vtrack_core/weights/fdn.pt`): conv2
  before its pooling (stride 8, 256 maps) and conv3 (stride 16, 512 maps). Trained on
  tracking data (targets against nearby background), so it is the default.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.roi import FeatureGeometry
from ..weights import WeightsError, load_torch_state_dict

BACKBONES = ("fdn", "vgg16")

# torchvision vgg16().features: (out channels or "M" for max-pool) in index order.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
VGG16_CONV4_3 = 23  # index after conv4_3's ReLU (exclusive end of the mid-level slice)
VGG16_CONV5_3 = 30  # index after conv5_3's ReLU
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


class TwoLevelBackbone(nn.Module):
    mid_channels: int
    high_channels: int
    geometry: FeatureGeometry  # of the mid-level map
    high_geometry: FeatureGeometry  # of the high-level map, before it is put on the mid grid

    def prepare(self, bgr: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W BGR 0..255 -> the network's input."""
        raise NotImplementedError

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid, high = self.levels(self.prepare(bgr))
        return mid, resample_to_grid(high, self.high_geometry, mid.shape[-2:], self.geometry)


def resample_to_grid(features: torch.Tensor, geometry: FeatureGeometry, size: tuple[int, int],
                     grid_geometry: FeatureGeometry) -> torch.Tensor:
    """`features` (cells at `geometry`) sampled bilinearly at the input positions of a
    `size` map of cells at `grid_geometry`; beyond the outer cells the edge value is kept."""
    rows, cols = features.shape[-2:]

    def normalised(count: int, source_count: int) -> torch.Tensor:
        positions = grid_geometry.offset + grid_geometry.stride * torch.arange(count, dtype=torch.float32,
                                                                               device=features.device)
        index = (positions - geometry.offset) / geometry.stride  # fractional source cell
        return 2.0 * index / max(source_count - 1, 1) - 1.0  # align_corners=True coordinates

    ys, xs = normalised(size[0], rows), normalised(size[1], cols)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).to(features.dtype)
    grid = grid.unsqueeze(0).expand(features.shape[0], -1, -1, -1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)


class VGG16Backbone(TwoLevelBackbone):
    mid_channels = 512
    high_channels = 512

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.geometry = FeatureGeometry.of(self.features[:VGG16_CONV4_3])
        self.high_geometry = FeatureGeometry.of(self.features[:VGG16_CONV5_3])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_RGB).reshape(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD_RGB).reshape(1, 3, 1, 1) * 255.0)

    def prepare(self, bgr: torch.Tensor) -> torch.Tensor:
        return (bgr.flip(1) - self.mean) / self.std  # torchvision models read normalised RGB

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.features[:VGG16_CONV4_3](x)
        return mid, self.features[VGG16_CONV4_3:VGG16_CONV5_3](mid)

    def load(self, path: str | Path) -> None:
        """torchvision `vgg16` state dict (`features.N.*`; the classifier is ignored)."""
        state = {k: v.float() for k, v in load_torch_state_dict(path).items() if k.startswith("features.")}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes that do not fit
            raise WeightsError(f"{path}: not a torchvision VGG-16 state dict ({error})") from None
        missing = [k for k in missing if k not in ("mean", "std")]
        if missing or unexpected:
            raise WeightsError(f"{path}: not a torchvision VGG-16 state dict (missing {missing[:4]}, "
                               f"unexpected {unexpected[:4]})")


class FDNBackbone(TwoLevelBackbone):
    """FDN's conv1-conv3: conv2 (before pool2) and conv3."""

    def __init__(self, path: str | Path, input_mean: float = 128.0) -> None:
        super().__init__()
        from .fdn import build_fdn_net

        net = build_fdn_net(path, input_mean)
        self.conv1 = net.conv1
        self.conv2 = nn.Sequential(*list(net.conv2.children())[:3])  # conv, ReLU, norm
        self.pool2 = list(net.conv2.children())[3]
        self.conv3 = net.conv3
        self.input_mean = input_mean
        self.mid_channels = 256
        self.high_channels = 512
        self.geometry = FeatureGeometry.of(nn.Sequential(self.conv1, self.conv2))
        self.high_geometry = FeatureGeometry.of(nn.Sequential(self.conv1, self.conv2, self.pool2, self.conv3))

    def prepare(self, bgr: torch.Tensor) -> torch.Tensor:
        return bgr - self.input_mean

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.conv2(self.conv1(x))
        return mid, self.conv3(self.pool2(mid))


def build_backbone(name: str, weights: str | Path = "") -> TwoLevelBackbone:
    if name == "fdn":
        from .fdn import DEFAULT_WEIGHTS

        path = Path(weights) if weights else DEFAULT_WEIGHTS
        if not path.is_file():
            raise WeightsError(f"fdn backbone: no weights at {path}")
        return FDNBackbone(path)
    if name == "vgg16":
        if not weights:
            raise WeightsError("vgg16 backbone: set backbone_weights to a torchvision vgg16 state dict "
                               "(e.g. vgg16-397923af.pth); none is packaged")
        backbone = VGG16Backbone()
        backbone.load(weights)
        return backbone
    raise ValueError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
