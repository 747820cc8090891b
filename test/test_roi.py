"""RoI layers (max-RoIAlign of FDN sec. 3.2, RoIPool) against plain-loop references written
from the papers' descriptions, including the paper's backward pass, and the pixel -> cell
geometry of a network."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vtrack_core.backbones import FeatureGeometry
from vtrack_core.trackers.fdn import max_roi_align, pool_rois, roi_pool


def bilinear(feature: np.ndarray, x: float, y: float) -> tuple[float, list[tuple[int, int, float]]]:
    """Value at (x, y) from the four neighbouring cells (cells beyond the map read 0), and
    the (row, col, weight) of each neighbour: the paper's V1..V4."""
    height, width = feature.shape
    x0, y0 = math.floor(x), math.floor(y)
    value, parts = 0.0, []
    for row, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for col, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= row < height and 0 <= col < width:
                value += wx * wy * feature[row, col]
                parts.append((row, col, wx * wy))
    return value, parts


def reference_max_roi_align(feature: np.ndarray, box, out: int = 3, sampling: int = 2):
    """Loops: out x out bins, sampling x sampling points each, the largest point wins.
    Returns the pooled C x out x out values and, per (c, i, j), the winner's neighbours."""
    channels = feature.shape[0]
    x1, y1, x2, y2 = box
    bin_w, bin_h = (x2 - x1) / out, (y2 - y1) / out
    pooled = np.zeros((channels, out, out))
    winners = {}
    for c in range(channels):
        for i in range(out):
            for j in range(out):
                best, best_parts = -np.inf, None
                for a in range(sampling):
                    for b in range(sampling):
                        y = y1 + bin_h * (i + (a + 0.5) / sampling)
                        x = x1 + bin_w * (j + (b + 0.5) / sampling)
                        value, parts = bilinear(feature[c], x, y)
                        if value > best:
                            best, best_parts = value, parts
                pooled[c, i, j] = best
                winners[c, i, j] = best_parts
    return pooled, winners


def reference_roi_pool(feature: np.ndarray, box, out: int = 3) -> np.ndarray:
    channels, height, width = feature.shape
    x1, y1, x2, y2 = (round(v) for v in box)
    box_w, box_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    pooled = np.zeros((channels, out, out))
    for i in range(out):
        for j in range(out):
            ys = range(max(math.floor(y1 + i * box_h / out), 0), min(math.ceil(y1 + (i + 1) * box_h / out), height))
            xs = range(max(math.floor(x1 + j * box_w / out), 0), min(math.ceil(x1 + (j + 1) * box_w / out), width))
            if len(ys) == 0 or len(xs) == 0:
                continue
            pooled[:, i, j] = feature[:, ys][:, :, xs].reshape(channels, -1).max(axis=1)
    return pooled


BOXES = [
    (1.3, 0.7, 6.9, 5.2),  # inside, fractional
    (0.0, 0.0, 8.0, 8.0),  # whole map
    (-1.5, 2.2, 2.4, 9.6),  # over the left and bottom edges
    (4.25, 4.75, 5.0, 5.5),  # smaller than a cell
]


@pytest.fixture
def feature_map() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 9, 8, generator=generator, dtype=torch.float64)


def test_max_roi_align_matches_reference(feature_map):
    boxes = torch.tensor([BOXES, BOXES[::-1]], dtype=torch.float64)
    pooled = max_roi_align(feature_map, boxes).numpy()
    assert pooled.shape == (8, 5, 3, 3)
    for image in range(2):
        for index, box in enumerate(boxes[image].tolist()):
            expected, _ = reference_max_roi_align(feature_map[image].numpy(), box)
            np.testing.assert_allclose(pooled[image * 4 + index], expected, atol=1e-10)


def test_max_roi_align_gradient_is_the_papers(feature_map):
    """Backward: each bin's gradient reaches only its winning point's four neighbours, with
    the bilinear weights (sec. 3.2)."""
    features = feature_map[:1].clone().requires_grad_(True)
    box = BOXES[0]
    pooled = max_roi_align(features, torch.tensor([[box]], dtype=torch.float64))
    upstream = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (pooled * upstream).sum().backward()
    _, winners = reference_max_roi_align(feature_map[0].detach().numpy(), box)
    expected = np.zeros(feature_map.shape[1:])
    for (c, i, j), parts in winners.items():
        for row, col, weight in parts:
            expected[c, row, col] += weight * float(upstream[0, c, i, j])
    np.testing.assert_allclose(features.grad[0].numpy(), expected, atol=1e-10)


def test_roi_pool_matches_reference(feature_map):
    boxes = torch.tensor([BOXES, BOXES[::-1]], dtype=torch.float64)
    pooled = roi_pool(feature_map, boxes).numpy()
    for image in range(2):
        for index, box in enumerate(boxes[image].tolist()):
            np.testing.assert_allclose(pooled[image * 4 + index], reference_roi_pool(feature_map[image].numpy(), box))


def test_roi_pool_loses_sub_cell_shifts_that_align_keeps(feature_map):
    """The paper's argument for RoIAlign: a box moved by a fraction of a cell changes the
    RoIAlign feature but (mostly) not the RoIPool one."""
    base = torch.tensor([[[1.1, 1.1, 6.1, 6.1]]], dtype=torch.float64)
    shifted = base + 0.3
    image = feature_map[:1]
    assert torch.equal(roi_pool(image, base), roi_pool(image, shifted))
    assert not torch.allclose(max_roi_align(image, base), max_roi_align(image, shifted))


def test_pool_rois_rejects_unknown_method_and_bad_shapes(feature_map):
    with pytest.raises(ValueError, match="unknown RoI method"):
        pool_rois(feature_map, torch.zeros(2, 1, 4, dtype=torch.float64), method="average")
    with pytest.raises(ValueError, match="B x N x 4"):
        max_roi_align(feature_map, torch.zeros(1, 4, dtype=torch.float64))


def test_feature_geometry():
    assert FeatureGeometry.of(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))) == FeatureGeometry(1.0, 0.5)
    assert FeatureGeometry.of(nn.Sequential(nn.MaxPool2d(2, 2))) == FeatureGeometry(2.0, 1.0)
    # FDN's conv1-3 (7/2, pool 3/2, 5/2 pad 1, pool 3/2, 3/1 pad 1): cell i is centred on
    # pixel edge-coordinate 17.5 + 16 i, worked out by hand layer by layer.
    from vtrack_core.trackers.fdn import FDNNet

    assert FDNNet().geometry() == FeatureGeometry(16.0, 17.5)


def test_feature_geometry_locates_a_bright_pixel():
    """A 3x3 average then 2x2 max-pool: the cell the geometry names for a pixel is where the
    pixel's response peaks."""
    layers = nn.Sequential(nn.Conv2d(1, 1, 3, padding=0, bias=False), nn.MaxPool2d(2, 2))
    with torch.no_grad():
        layers[0].weight.fill_(1.0)
    geometry = FeatureGeometry.of(layers)
    for x in (5, 8, 13):
        image = torch.zeros(1, 1, 24, 24)
        image[0, 0, 10, x] = 1.0
        response = layers(image)[0, 0, 4]
        cells = torch.nonzero(response == response.max()).flatten().tolist()
        predicted = (x + 0.5 - geometry.offset) / geometry.stride
        assert min(abs(c - predicted) for c in cells) <= 0.75
