"""The scale pyramid search of SiamFC-style trackers: one patch per scale, the best peak wins,
and every change of scale must beat the current scale by a margin."""
from __future__ import annotations

import torch


def penalise_scale_change(peaks: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """Lower each scale's peak by (1 - penalty) of its magnitude (penalty 1: the current scale).

    SiamFC's released code multiplies the scores by the penalty. That only lowers a positive
    score: a logit of -2 times 0.9745 is -1.95, so when the target is unsure (all peaks
    negative) the changed scales were favoured and the box drifted in size on every frame
    (5 blank frames grew it by 6 %). For positive peaks this is the same multiplication."""
    return peaks - (1.0 - penalties) * peaks.abs()
