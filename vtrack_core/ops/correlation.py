"""Cross-correlation of exemplar embeddings with search embeddings, batched as one
grouped convolution (the SiamFC similarity, eq. 2 of Bertinetto et al.)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_correlate(exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
    """exemplar: Bz x C x h x w (Bz == 1 or == Bx); search: Bx x C x H x W.
    Returns Bx x 1 x (H-h+1) x (W-w+1): each search map correlated with its exemplar (or the
    single exemplar broadcast over all search maps, e.g. the scales of one frame)."""
    batch, channels, height, width = search.shape
    if exemplar.shape[0] == 1 and batch > 1:
        return F.conv2d(search, exemplar)
    if exemplar.shape[0] != batch:
        raise ValueError(f"{exemplar.shape[0]} exemplars for {batch} search maps")
    out = F.conv2d(search.reshape(1, batch * channels, height, width), exemplar, groups=batch)
    return out.reshape(batch, 1, out.shape[-2], out.shape[-1])
