"""A full occlusion painted into a real frame, for the tests that check that confidence
falls (and the track is reported LOST) when the target is gone."""
from __future__ import annotations

import numpy as np

from vtrack_core.eval.datasets import Sequence


def target_painted_over(sequence: Sequence, index: int) -> np.ndarray:
    """Frame `index` with the ground-truth target, and a margin around it, filled with the
    frame's mean colour."""
    image = sequence.image(index).copy()
    x, y, w, h = sequence.ground_truth[index]
    top, left = max(int(y - h / 4), 0), max(int(x - w / 2), 0)
    image[top:int(y + 1.25 * h), left:int(x + 1.5 * w)] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    return image
