"""Crops: on the device for tracking (`crop_and_resize`), on the CPU for training data
(`warp_crop`), with one convention so a network is trained on the crops it will track on.

Convention: pixel centres sit at integer coordinates (pixel (0, 0) covers [-0.5, 0.5)), a
crop of side s around centre c resampled to n px puts output pixel u at input position
c + (u - (n - 1) / 2) * s / n, bilinear, and parts outside the image take a fill colour
(the frame's mean, as SiamFC and most Siamese trackers pad). Code that thinks in pixel-edge
coordinates (a box's x + w / 2 is its centre there, too) passes `centre - 0.5`.

Trackers upload a frame once, then cut every crop they need (several scales, exemplar and
search) as one batch with one `grid_sample` call: no per-crop CPU warps and uploads.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def image_to_tensor(image: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """HxWx3 uint8 BGR -> 1x3xHxW float on `device` (0..255, BGR kept: networks are trained
    on what the tracker feeds them)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device, non_blocking=True)
    return tensor.permute(2, 0, 1).unsqueeze(0).to(dtype)


def crop_and_resize(
    frame: torch.Tensor,
    centers: torch.Tensor,
    sizes: torch.Tensor,
    out_size: int,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut len(sizes) square (or w x h) windows around `centers` and resample each to
    out_size x out_size, bilinearly, in one batched call.

    frame: 1x3xHxW; centers: Nx2 (cx, cy) or 2 in pixels (pixel centres at integers);
    sizes: N (square side) or Nx2 (w, h) in pixels; fill: 3 values for outside the image
    (default: the frame's per-channel mean). Returns Nx3xout_size x out_size.
    """
    _, channels, height, width = frame.shape
    # Positions and sampling in float32 whatever the frame's dtype: in float16 a pixel
    # coordinate near 1500 is only good to 1 px, and a crop would land up to ~1 px off.
    # The crop is returned in the frame's dtype.
    out_dtype = frame.dtype
    frame = frame.float()
    sizes = sizes.float()
    if sizes.dim() == 1:
        sizes = torch.stack([sizes, sizes], dim=1)
    count = sizes.shape[0]
    centers = centers.float().reshape(-1, 2).expand(count, 2)
    fill = frame.mean(dim=(2, 3)).reshape(channels) if fill is None else fill.float().reshape(channels)
    # Normalised coordinates (align_corners=True): -1 is pixel 0, +1 is pixel W-1.
    steps = torch.linspace(-0.5, 0.5, out_size, device=frame.device, dtype=torch.float32) * (out_size - 1) / out_size
    xs = centers[:, 0:1] + steps.unsqueeze(0) * sizes[:, 0:1]  # N x out (pixels)
    ys = centers[:, 1:2] + steps.unsqueeze(0) * sizes[:, 1:2]
    grid_x = (2.0 * xs / max(width - 1, 1) - 1.0).unsqueeze(1).expand(count, out_size, out_size)
    grid_y = (2.0 * ys / max(height - 1, 1) - 1.0).unsqueeze(2).expand(count, out_size, out_size)
    grid = torch.stack([grid_x, grid_y], dim=3)
    # Sample (frame - fill) with zero padding, then add fill back: outside becomes `fill`.
    shifted = (frame - fill.reshape(1, channels, 1, 1)).expand(count, -1, -1, -1)
    crops = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return (crops + fill.reshape(1, channels, 1, 1)).to(out_dtype)


def warp_crop(image: np.ndarray, center: tuple[float, float], side: float | tuple[float, float], out_size: int,
              fill: Sequence[float], border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """The CPU twin of `crop_and_resize` for one crop (OpenCV's bilinear warp): a `side` px
    window (square, or (w, h)) around `center` resampled to out_size x out_size; the input's
    dtype is kept. `border=cv2.BORDER_REPLICATE` repeats the edge instead of `fill`."""
    side_w, side_h = (side, side) if np.isscalar(side) else side
    kx, ky = out_size / float(side_w), out_size / float(side_h)
    offset = (out_size - 1) / 2.0
    warp = np.array([[kx, 0.0, offset - center[0] * kx], [0.0, ky, offset - center[1] * ky]])
    return cv2.warpAffine(image, warp, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=border,
                          borderValue=tuple(float(v) for v in fill))
