"""Maps on a grid of cells that several trackers build: the Gaussian label a network or a
filter is trained to answer with (RAR's correlation filter, FCNT's heat maps), and the Hann
(cosine) window that tapers a response or a feature map (SiamFC's motion prior, RAR's DCF).
"""
from __future__ import annotations

from typing import Sequence

import torch


def gaussian_label(size: int | tuple[int, int], sigma: float | tuple[float, float],
                   center: Sequence[float] | torch.Tensor | None = None, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """H x W map with peak 1 at `center` (row, col in cells; default the middle cell) and
    standard deviation `sigma` cells (one value, or (rows, cols)); B x H x W for a B x 2
    tensor of centres."""
    height, width = (size, size) if isinstance(size, int) else size
    sigma_r, sigma_c = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    if center is None:
        center = ((height - 1) / 2.0, (width - 1) / 2.0)
    centers = torch.as_tensor(center, device=device, dtype=dtype)
    flat = centers.dim() == 1
    centers = centers.reshape(-1, 2)
    rows = torch.arange(height, device=device, dtype=dtype).reshape(1, -1)
    cols = torch.arange(width, device=device, dtype=dtype).reshape(1, -1)
    dr = ((rows - centers[:, 0:1]) / sigma_r) ** 2  # B x H
    dc = ((cols - centers[:, 1:2]) / sigma_c) ** 2  # B x W
    label = torch.exp(-0.5 * (dr.unsqueeze(2) + dc.unsqueeze(1)))
    return label[0] if flat else label


def hann_window(size: int, normalised: bool = False, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """S x S cosine window (the outer product of two symmetric Hann windows; all ones for
    S <= 2, where a Hann window would be all zeros); `normalised`: divided by its sum, as
    SiamFC blends it with a normalised response."""
    if size <= 2:
        window = torch.ones(size, size, device=device, dtype=dtype)
    else:
        hann = torch.hann_window(size, periodic=False, device=device, dtype=dtype)
        window = torch.outer(hann, hann)
    return window / window.sum() if normalised else window
