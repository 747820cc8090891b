"""Candidate and training boxes drawn around a target, as the detection-style trackers
(MDNet and its descendants FDN, and FCNT) draw them. Used by FDN (tracker and training) and
FCNT.

Boxes are N x 4 float arrays (x, y, w, h) in pixel-edge coordinates. Four kinds:

* 'gaussian': centre moved by trans * mean(w, h) * clip(N(0, 0.5^2), -1, 1) per axis and
  size multiplied by scale ** clip(N(0, 0.5^2), -1, 1): candidates near the last position.
* 'uniform': the same with uniform draws in [-1, 1]: negatives around the target.
* 'whole': centre anywhere in the bounds, size scale ** U(-1, 1) times the target's:
  negatives from the whole frame (or search region).
* 'normal': centre moved by N(0, trans^2) *pixels* per axis and size multiplied by
  exp(N(0, scale^2)), aspect kept: FCNT's eq. 8 as its authors' code draws it.

Every box is kept inside `bounds` (x, y, w, h; typically the image or the search region)
with sides of at least `min_side`, as MDNet clips to the image; `bounds=None` keeps them
as drawn (FCNT).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..boxes import iou

KINDS = ("gaussian", "uniform", "whole", "normal")


@dataclass(frozen=True)
class SampleSpec:
    kind: str
    trans: float  # centre spread, in units of the target's mean side ('normal': pixels, a deviation)
    scale: float  # size spread: factor per unit draw ('normal': deviation of the log size)
    aspect: float | None = None  # aspect-ratio spread (factor per unit draw); None: keep

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sample kind {self.kind!r}; use one of {', '.join(KINDS)}")


def draw_boxes(rng: np.random.Generator, box: np.ndarray, count: int, spec: SampleSpec,
               bounds: np.ndarray | None, min_side: float = 10.0) -> np.ndarray:
    """`count` boxes around `box` (x, y, w, h) kept inside `bounds` (x, y, w, h; None: not clipped)."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    centre = box[:2] + box[2:] / 2.0
    if spec.kind == "normal":
        centres = centre + rng.normal(0.0, spec.trans, (count, 2))
        sizes = box[2:] * np.exp(rng.normal(0.0, spec.scale, (count, 1)))
        boxes = np.concatenate([centres - sizes / 2, sizes], axis=1)
        return boxes if bounds is None else clip_boxes(boxes, bounds, min_side)
    if bounds is None:
        raise ValueError(f"{spec.kind!r} boxes need bounds")
    bounds = np.asarray(bounds, dtype=np.float64).reshape(4)
    size = np.tile(box[2:], (count, 1))
    if spec.kind == "gaussian":
        shift = np.clip(0.5 * rng.standard_normal((count, 2)), -1.0, 1.0)
        zoom = np.clip(0.5 * rng.standard_normal((count, 1)), -1.0, 1.0)
        centres = centre + spec.trans * box[2:].mean() * shift
    elif spec.kind == "uniform":
        shift = rng.uniform(-1.0, 1.0, (count, 2))
        zoom = rng.uniform(-1.0, 1.0, (count, 1))
        centres = centre + spec.trans * box[2:].mean() * shift
    else:  # whole
        zoom = rng.uniform(-1.0, 1.0, (count, 1))
        margin = box[2:] / 2.0
        low = bounds[:2] + np.minimum(margin, bounds[2:] / 2.0)
        high = bounds[:2] + bounds[2:] - np.minimum(margin, bounds[2:] / 2.0)
        centres = rng.uniform(low, high, (count, 2))
    size = size * spec.scale ** zoom
    if spec.aspect is not None:
        stretch = spec.aspect ** rng.uniform(-1.0, 1.0, (count, 1))
        size = size * np.concatenate([stretch, 1.0 / stretch], axis=1)
    return clip_boxes(np.concatenate([centres - size / 2.0, size], axis=1), bounds, min_side)


def grid_boxes(bounds: np.ndarray, size: np.ndarray, step: float, max_count: int) -> np.ndarray:
    """Boxes of `size` (w, h) whose centres lie on a regular grid over `bounds` (x, y, w, h),
    `step` pixels apart, or farther apart when that would give more than `max_count`: the
    candidates of a wide search, where the target may be anywhere (FDN's re-detection)."""
    bx, by, bw, bh = np.asarray(bounds, dtype=np.float64).reshape(4)
    size = np.asarray(size, dtype=np.float64).reshape(2)
    span = np.maximum(np.array([bw, bh]) - size, 0.0)  # where centres may lie, box inside the bounds
    step = max(float(step), float(np.sqrt(max(span[0], 1.0) * max(span[1], 1.0) / max(max_count, 1))), 1e-6)
    counts = np.minimum(np.floor(span / step).astype(int) + 1, max_count)
    while counts[0] * counts[1] > max_count:  # the floor's rounding may leave a few too many
        counts[np.argmax(counts)] -= 1
    xs = bx + size[0] / 2 + (np.arange(counts[0]) + 0.5) * span[0] / counts[0]
    ys = by + size[1] / 2 + (np.arange(counts[1]) + 0.5) * span[1] / counts[1]
    cx, cy = (grid.ravel() for grid in np.meshgrid(xs, ys))
    return np.stack([cx - size[0] / 2, cy - size[1] / 2, np.full_like(cx, size[0]), np.full_like(cy, size[1])], axis=1)


def clip_boxes(boxes: np.ndarray, bounds: np.ndarray, min_side: float = 10.0) -> np.ndarray:
    """Sizes into [min_side, bounds - min_side], then shift each box inside the bounds."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    bx, by, bw, bh = np.asarray(bounds, dtype=np.float64).reshape(4)
    low = min(min_side, bw / 2.0), min(min_side, bh / 2.0)
    boxes[:, 2] = np.clip(boxes[:, 2], low[0], max(bw - low[0], low[0]))
    boxes[:, 3] = np.clip(boxes[:, 3], low[1], max(bh - low[1], low[1]))
    boxes[:, 0] = np.clip(boxes[:, 0], bx, bx + bw - boxes[:, 2])
    boxes[:, 1] = np.clip(boxes[:, 1], by, by + bh - boxes[:, 3])
    return boxes


def draw_with_overlap(rng: np.random.Generator, box: np.ndarray, count: int, spec: SampleSpec,
                      bounds: np.ndarray, overlap: tuple[float, float], min_side: float = 10.0,
                      max_rounds: int = 20) -> np.ndarray:
    """Up to `count` boxes whose IoU with `box` lies in [overlap[0], overlap[1]] (positives
    IoU >= 0.7, negatives <= 0.5 and the like). Draws in rounds; returns fewer only when
    the spec cannot reach the range (then as many as were found)."""
    box = np.asarray(box, dtype=np.float64).reshape(1, 4)
    found: list[np.ndarray] = []
    total = 0
    for _ in range(max_rounds):
        drawn = draw_boxes(rng, box[0], max(2 * (count - total), 16), spec, bounds, min_side)
        overlaps = iou(drawn, box)
        keep = drawn[(overlaps >= overlap[0]) & (overlaps <= overlap[1])]
        found.append(keep[: count - total])
        total += len(found[-1])
        if total >= count:
            break
    return np.concatenate(found, axis=0) if found else np.zeros((0, 4))


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
