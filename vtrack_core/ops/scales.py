"""The scale search of SiamFC-style trackers: one patch per scale in one batch, the best peak
wins after a penalty on changing scale, and the size follows the winner damped."""
from __future__ import annotations

import numpy as np
import torch


class ScalePyramid:
    """`count` scale factors step^e with exponents centred on 0: -1, 0, 1 for three scales;
    -1.5, -0.5, 0.5, 1.5 for four (no factor is then the current size). A change of e steps
    pays the penalty |e| times (penalty^|e|): for three scales that is SiamFC's one penalty on
    both changed scales, and for any count the nearest scales are preferred on a tie."""

    def __init__(self, count: int, step: float, penalty: float, damping: float,
                 device: torch.device | None = None) -> None:
        if count < 1:
            raise ValueError(f"the scale count must be >= 1, got {count}")
        exponents = np.arange(count) - (count - 1) / 2.0
        self.factors = np.array([step ** float(e) for e in exponents])
        self.penalties = torch.as_tensor(float(penalty) ** np.abs(exponents), device=device, dtype=torch.float32)
        self.damping = float(damping)

    def __len__(self) -> int:
        return len(self.factors)

    def best(self, peaks: torch.Tensor) -> torch.Tensor:
        """Index (0-d tensor, on the peaks' device) of the best scale by its penalised peak."""
        return torch.argmax(penalise_scale_change(peaks, self.penalties.to(peaks.device)))

    def new_size(self, size: np.ndarray, index: int) -> np.ndarray:
        """The damped update: size x ((1 - damping) + damping x the winner's factor)."""
        return size * ((1 - self.damping) + self.damping * self.factors[index])


def penalise_scale_change(peaks: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """Lower each scale's peak by (1 - penalty) of its magnitude (penalty 1: the current scale).

    SiamFC's released code multiplies the scores by the penalty. That only lowers a positive
    score: a logit of -2 times 0.9745 is -1.95, so when the target is unsure (all peaks
    negative) the changed scales were favoured and the box drifted in size on every frame
    (measured in docs/trackers/siamfc.md). For positive peaks this is the same multiplication."""
    return peaks - (1.0 - penalties) * peaks.abs()
