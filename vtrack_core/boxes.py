"""Axis-aligned boxes in pixel coordinates, and the IoU / centre-error maths on them.

One convention everywhere: (x, y) is the top-left corner, (w, h) the size, all floats in
pixels of the source image, as in OTB ground truth and in vtrack_ros/msg/TrackedObject.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def from_xywh(cls, values: Sequence[float]) -> "Box":
        x, y, w, h = (float(v) for v in values)
        return cls(x, y, w, h)

    @classmethod
    def from_xyxy(cls, values: Sequence[float]) -> "Box":
        x1, y1, x2, y2 = (float(v) for v in values)
        return cls(x1, y1, x2 - x1, y2 - y1)

    @classmethod
    def from_center(cls, cx: float, cy: float, w: float, h: float) -> "Box":
        return cls(float(cx) - w / 2.0, float(cy) - h / 2.0, float(w), float(h))

    @classmethod
    def parse(cls, text: str) -> "Box":
        """Parse 'x,y,w,h' (commas, spaces or tabs), as typed on a command line."""
        parts = [p for p in text.replace(",", " ").replace("\t", " ").split() if p]
        if len(parts) != 4:
            raise ValueError(f"expected 4 numbers x,y,w,h, got {text!r}")
        return cls.from_xywh([float(p) for p in parts])

    # --- conversions --------------------------------------------------------------------
    @property
    def cx(self) -> float:
        return self.x + self.w / 2.0

    @property
    def cy(self) -> float:
        return self.y + self.h / 2.0

    @property
    def center(self) -> tuple[float, float]:
        return (self.cx, self.cy)

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def cxcywh(self) -> tuple[float, float, float, float]:
        return (self.cx, self.cy, self.w, self.h)

    def as_int_xywh(self) -> tuple[int, int, int, int]:
        """Rounded for OpenCV APIs, which take integer rectangles."""
        x1, y1 = round(self.x), round(self.y)
        return (x1, y1, max(1, round(self.x + self.w) - x1), max(1, round(self.y + self.h) - y1))

    # --- checks and geometry ------------------------------------------------------------
    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.x, self.y, self.w, self.h))

    def is_valid(self) -> bool:
        """Finite with a positive size: something a tracker can start from."""
        return self.is_finite() and self.w > 0 and self.h > 0

    def clip(self, width: int, height: int) -> "Box":
        """The part of the box inside a width x height image (may have zero size)."""
        x1 = min(max(self.x, 0.0), float(width))
        y1 = min(max(self.y, 0.0), float(height))
        x2 = min(max(self.x + self.w, 0.0), float(width))
        y2 = min(max(self.y + self.h, 0.0), float(height))
        return Box(x1, y1, x2 - x1, y2 - y1)

    def scaled(self, factor: float) -> "Box":
        """Same centre, size times factor."""
        return Box.from_center(self.cx, self.cy, self.w * factor, self.h * factor)

    def iou(self, other: "Box") -> float:
        return float(iou(np.array([self.xywh()]), np.array([other.xywh()]))[0])


def as_array(boxes: Iterable[Box | Sequence[float]]) -> np.ndarray:
    """N x 4 float64 array of x, y, w, h."""
    rows = [b.xywh() if isinstance(b, Box) else tuple(float(v) for v in b) for b in boxes]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two N x 4 (x, y, w, h) arrays; NaN where either row has a NaN."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, 0], b[:, 0])
    iy1 = np.maximum(a[:, 1], b[:, 1])
    ix2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    iy2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    union = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None) + np.clip(b[:, 2], 0, None) * np.clip(
        b[:, 3], 0, None
    ) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    out[np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1)] = np.nan
    return out


def center_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance in pixels between box centres."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ca = a[:, :2] + a[:, 2:] / 2.0
    cb = b[:, :2] + b[:, 2:] / 2.0
    return np.sqrt(((ca - cb) ** 2).sum(axis=1))


def normalized_center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Centre error with each axis divided by the ground-truth size (TrackingNet's metric)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    cp = pred[:, :2] + pred[:, 2:] / 2.0
    cg = gt[:, :2] + gt[:, 2:] / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((((cp - cg) / gt[:, 2:]) ** 2).sum(axis=1))
