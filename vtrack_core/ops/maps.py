"""Maps on a grid of cells that several trackers build: the Gaussian label a network or a
filter is trained to answer with (RAR's correlation filter, FCNT's heat maps), the Hann
(cosine) window that tapers a response or a feature map (SiamFC's motion prior, RAR's DCF),
and the bicubic upsampling of a score map as two matrix products.
"""
from __future__ import annotations

import math

from typing import Sequence

import torch
import torch.nn.functional as F


def gaussian_label(size: int | tuple[int, int], sigma: float | tuple[float, float],
                   center: Sequence[float] | torch.Tensor | None = None, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """H x W map with peak 1 at `center` (row, col in cells; default the middle cell) and
    standard deviation `sigma` cells (one value, or (rows, cols)); B x H x W for a B x 2
    tensor of centres."""
    height, width = (size, size) if isinstance(size, int) else size
    if center is None:
        center = ((height - 1) / 2.0, (width - 1) / 2.0)
    centers = torch.as_tensor(center, device=device, dtype=dtype)
    flat = centers.dim() == 1
    centers = centers.reshape(-1, 2)
    rows = torch.arange(height, device=device, dtype=dtype).reshape(1, -1) - centers[:, 0:1]  # B x H
    cols = torch.arange(width, device=device, dtype=dtype).reshape(1, -1) - centers[:, 1:2]  # B x W
    if isinstance(sigma, (int, float)):  # isotropic: exp(-d^2 / (2 sigma^2))
        label = torch.exp(-((rows ** 2).unsqueeze(2) + (cols ** 2).unsqueeze(1)) / (2.0 * sigma * sigma))
    else:  # one deviation per axis: exp(-((dr / sigma_r)^2 + (dc / sigma_c)^2) / 2)
        sigma_r, sigma_c = sigma
        label = torch.exp(-0.5 * (((rows / sigma_r) ** 2).unsqueeze(2) + ((cols / sigma_c) ** 2).unsqueeze(1)))
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


def bicubic_matrix(size_in: int, size_out: int, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """size_out x size_in matrix A with A @ m @ A.T equal to `F.interpolate(m, (size_out,
    size_out), mode="bicubic", align_corners=False)` for any size_in x size_in map m: the
    interpolation is linear and separable (one cubic kernel per axis, border indices
    clamped), so each axis is a matrix. Two small matrix products instead of the generic
    kernel: SiamFC upsamples three 17 x 17 maps to 272 x 272 every frame."""
    basis = torch.eye(size_in, dtype=torch.float64).reshape(size_in, 1, size_in, 1)
    columns = F.interpolate(basis, size=(size_out, 1), mode="bicubic", align_corners=False)
    return columns[:, 0, :, 0].T.contiguous().to(device=device, dtype=dtype)


def upsample_bicubic(maps: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """... x n x n maps -> ... x N x N with `matrix` from `bicubic_matrix(n, N)`."""
    return matrix @ maps @ matrix.T


def sigmoid(logit: float) -> float:
    """A score's logit as a 0..1 confidence, clamped so that exp cannot overflow."""
    return 1.0 / (1.0 + math.exp(-max(min(float(logit), 50.0), -50.0)))
