"""The re-detection window every tracker searches while its target is LOST (issue 20): it
grows each LOST frame by a factor, up to a cap, or to what covers the whole frame, after
which it is centred on the frame. SiamFC correlates its exemplar over it; FDN scores a grid
of candidates over it; RAR and FCNT tile it with normal-size patches (`tile_centres`). One rule, so
that every tracker's wide search grows alike."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sampling import grid_boxes


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



def tile_centres(window: RedetectWindow, search_side: float, image_shape: tuple[int, ...], step: float,
                 max_tiles: int) -> np.ndarray:
    """Centres (N x 2, x y pixels) of normal-size search patches tiling `window` where it lies
    in the image, for trackers whose score map loses the target at a coarser zoom (RAR's
    correlation filter, FCNT's heat maps): the wide search is then many normal searches in one batch. On
    `grid_boxes`' grid, `step` patch sides apart or further where it would pass `max_tiles`;
    along an axis where window and image overlap by less than a patch, one tile in the middle."""
    height, width = image_shape[:2]
    half = window.factor * search_side / 2.0
    low = np.maximum(window.centre - half, 0.0)
    high = np.minimum(window.centre + half, [float(width), float(height)])
    middle, extent = (low + high) / 2.0, np.maximum(high - low, search_side)
    bounds = np.concatenate([middle - extent / 2.0, extent])
    tiles = grid_boxes(bounds, np.array([search_side, search_side]), step * search_side, max_tiles)
    return tiles[:, :2] + tiles[:, 2:] / 2.0
