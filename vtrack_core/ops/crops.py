"""Square-resampled crops cut on the device with one `grid_sample` call.

Trackers upload a frame once, then cut every crop they need (several scales, exemplar and
search) as one batch on the same device: no per-crop CPU warps and uploads. Parts of a
crop outside the image take the frame's mean colour, as SiamFC and most Siamese trackers
pad.
"""
from __future__ import annotations

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
