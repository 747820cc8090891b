"""Fixed-size features of many boxes on one feature map: max-RoIAlign and RoIPool.

Both take boxes already in *feature-map coordinates* (cell i's centre at i; see
`FeatureGeometry` for the pixel -> cell mapping of a network) so the tracker converts once
and the two layers can be compared on equal terms.

* `max_roi_align` (Cui et al., FDN, sec. 3.2): each of the out x out bins holds
  sampling x sampling points at fractional positions, each bilinearly interpolated; the bin
  keeps the largest. All boxes of all images in one `grid_sample` call. The gradient is the
  paper's: the bin's gradient goes to the winning point only (max), and from it to its four
  neighbouring cells with the bilinear weights (grid_sample's backward).
* `roi_pool` (Girshick, Fast R-CNN): box corners rounded to cells, bins of whole cells, max
  over each bin; the comparison the FDN paper makes in Fig. 7.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FeatureGeometry:
    """Where feature cell i sits in the input: its receptive-field centre is at pixel
    `offset + stride * i`, in coordinates where pixel p covers [p, p + 1)."""

    stride: float
    offset: float

    @classmethod
    def of(cls, layers: nn.Module) -> "FeatureGeometry":
        """Walk the convolutions and poolings of `layers` in order (they must run in the
        order `modules()` lists them, as in an nn.Sequential)."""
        stride, centre = 1.0, 0.5  # pixel 0's centre in edge coordinates
        for module in layers.modules():
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                kernel = _first(module.kernel_size)
                step = _first(module.stride)
                padding = _first(module.padding)
                dilation = _first(getattr(module, "dilation", 1))
                # output cell j reads input cells j*step - padding ... + dilation*(kernel-1)
                centre += stride * (dilation * (kernel - 1) / 2.0 - padding)
                stride *= step
        return cls(stride=stride, offset=centre)

    def to_features(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Pixel-edge x1, y1, x2, y2 -> feature-cell coordinates (same layout)."""
        return (boxes_xyxy - self.offset) / self.stride


def _first(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _check(features: torch.Tensor, boxes: torch.Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"features must be B x C x H x W, got {tuple(features.shape)}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes must be B x N x 4 (x1, y1, x2, y2) with B = {features.shape[0]}, "
                         f"got {tuple(boxes.shape)}")


def max_roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int = 3,
                  sampling: int = 2) -> torch.Tensor:
    """features B x C x H x W, boxes B x N x 4 (feature coordinates, x1 y1 x2 y2) ->
    (B*N) x C x out x out, image-major (all boxes of image 0 first)."""
    _check(features, boxes)
    batch, channels, height, width = features.shape
    count = boxes.shape[1]
    boxes = boxes.to(features.dtype)
    # Sample positions: bin j, point k sits at fraction (j + (k + 0.5) / s) / out of the box.
    bins = torch.arange(output_size, device=features.device, dtype=features.dtype)
    points = (torch.arange(sampling, device=features.device, dtype=features.dtype) + 0.5) / sampling
    fractions = ((bins.unsqueeze(1) + points) / output_size)  # out x s
    x1, y1, x2, y2 = (v[..., None, None] for v in boxes.unbind(-1))  # B x N x 1 x 1
    xs = x1 + fractions * (x2 - x1)  # B x N x out x s
    ys = y1 + fractions * (y2 - y1)
    # align_corners=True: -1 is cell 0, +1 is cell W-1; beyond the map samples read zeros.
    gx = 2.0 * xs / max(width - 1, 1) - 1.0
    gy = 2.0 * ys / max(height - 1, 1) - 1.0
    # Grid rows = (box, bin row, bin col), columns = the s x s points of that bin, so the
    # max below reduces the innermost, contiguous axis.
    gx = gx[:, :, None, :, None, :].expand(batch, count, output_size, output_size, sampling, sampling)
    gy = gy[:, :, :, None, :, None].expand(batch, count, output_size, output_size, sampling, sampling)
    grid = torch.stack([gx, gy], dim=-1).reshape(batch, count * output_size * output_size, sampling * sampling, 2)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    pooled = sampled.amax(dim=3)  # B x C x (N*out*out)
    pooled = pooled.reshape(batch, channels, count, output_size, output_size)
    return pooled.permute(0, 2, 1, 3, 4).reshape(batch * count, channels, output_size, output_size)


def roi_pool(features: torch.Tensor, boxes: torch.Tensor, output_size: int = 3) -> torch.Tensor:
    """RoIPool: corners rounded to the nearest cell, the box's cells split into out x out bins
    (floor / ceil of the fractional bin edges, as Fast R-CNN), the maximum of each bin; bins
    outside the map are 0. Same shapes as `max_roi_align`."""
    _check(features, boxes)
    batch, channels, height, width = features.shape
    count = boxes.shape[1]
    corners = torch.round(boxes.detach().float())
    x1, y1, x2, y2 = corners.unbind(-1)
    box_w = (x2 - x1 + 1).clamp_min(1.0)
    box_h = (y2 - y1 + 1).clamp_min(1.0)
    bins = torch.arange(output_size, device=features.device, dtype=torch.float32)
    # Bin edges in cells, B x N x out.
    x_start = torch.floor(x1.unsqueeze(-1) + bins * (box_w / output_size).unsqueeze(-1))
    x_end = torch.ceil(x1.unsqueeze(-1) + (bins + 1) * (box_w / output_size).unsqueeze(-1))
    y_start = torch.floor(y1.unsqueeze(-1) + bins * (box_h / output_size).unsqueeze(-1))
    y_end = torch.ceil(y1.unsqueeze(-1) + (bins + 1) * (box_h / output_size).unsqueeze(-1))
    x_start, x_end = x_start.clamp(0, width), x_end.clamp(0, width)
    y_start, y_end = y_start.clamp(0, height), y_end.clamp(0, height)
    # Every bin is read as a fixed K x K block of cells (the widest bin); cells past a bin's
    # end repeat its last cell, which leaves the maximum unchanged. One gather for all boxes.
    span = int(max(float((x_end - x_start).max()), float((y_end - y_start).max()), 1.0))
    steps = torch.arange(span, device=features.device, dtype=torch.float32)
    cols = torch.minimum(x_start.unsqueeze(-1) + steps, (x_end - 1).clamp_min(x_start).unsqueeze(-1))
    rows = torch.minimum(y_start.unsqueeze(-1) + steps, (y_end - 1).clamp_min(y_start).unsqueeze(-1))
    empty_x = x_end <= x_start  # B x N x out
    empty_y = y_end <= y_start
    cols = cols.clamp(0, width - 1).long()  # B x N x out x K
    rows = rows.clamp(0, height - 1).long()
    # flat index of (row, col) for every (bin_y, k_y, bin_x, k_x): B x N x out x K x out x K
    flat = rows[:, :, :, :, None, None] * width + cols[:, :, None, None, :, :]
    flat = flat.reshape(batch, 1, -1).expand(batch, channels, -1)
    values = torch.gather(features.reshape(batch, channels, height * width), 2, flat)
    values = values.reshape(batch, channels, count, output_size, span, output_size, span)
    pooled = values.amax(dim=(4, 6))  # B x C x N x out x out
    empty = (empty_y.unsqueeze(-1) | empty_x.unsqueeze(-2)).unsqueeze(1)  # B x 1 x N x out x out
    pooled = pooled.masked_fill(empty, 0.0)
    return pooled.permute(0, 2, 1, 3, 4).reshape(batch * count, channels, output_size, output_size)


def pool_rois(features: torch.Tensor, boxes: torch.Tensor, method: str = "align", output_size: int = 3,
              sampling: int = 2) -> torch.Tensor:
    """`method`: 'align' (max-RoIAlign, FDN's choice) or 'pool' (RoIPool)."""
    if method == "align":
        return max_roi_align(features, boxes, output_size, sampling)
    if method == "pool":
        return roi_pool(features, boxes, output_size)
    raise ValueError(f"unknown RoI method {method!r}; use 'align' or 'pool'")
