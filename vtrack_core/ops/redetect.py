"""The re-detection window every tracker searches while its target is LOST (issue 20): it
grows each LOST frame by a factor, up to a cap, or to what covers the whole frame, after
which it is centred on the frame. SiamFC correlates its exemplar over it; FDN scores a grid
of candidates over it. One rule, so that every tracker's wide search grows alike."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RedetectWindow:
    """A square window `factor` normal search sides wide, centred at `centre` (x, y, pixels)."""

    centre: np.ndarray
    factor: float  # >= 1: the normal search side times this
    whole_frame: bool  # the window spans the frame (and is centred on it)


def redetect_window(centre: np.ndarray, search_side: float, image_shape: tuple[int, ...], lost_frames: int,
                    growth: float, max_scale: float) -> RedetectWindow:
    """The window after `lost_frames` LOST results: `search_side` (image pixels) times
    growth^lost_frames (at least one growth step), at most `max_scale` times it or the factor
    at which it spans the longer side of the frame (then centred on the frame)."""
    height, width = image_shape[:2]
    grow = min(growth ** max(1, lost_frames), max_scale)
    whole = max(width, height) / search_side  # the factor at which the window spans the frame
    factor = max(1.0, min(grow, whole))
    if grow >= whole:
        return RedetectWindow(np.array([width / 2.0, height / 2.0]), factor, True)
    return RedetectWindow(np.asarray(centre, dtype=np.float64), factor, False)
