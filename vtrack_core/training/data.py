"""Training data every tracker's trainer shares: which frames are fit to learn from (the
curation rule of SiamFC sec. 2.4), which video a sequence comes from, the photometric
augmentation, and the train / validation split of a dataset folder.

The crops themselves are cut by `ops.crops.warp_crop`, the one convention trackers crop with.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..eval.datasets import DatasetError, Sequence, load_dataset

log = logging.getLogger(__name__)

# Held back from the training set for validation by every trainer: a person and a car seen
# from a drone, from videos no other training sequence comes from. (Never the dev set: that
# is for the final numbers only.)
DEFAULT_VAL_SEQUENCES = ("uav_person12_1", "uav_car10")


@dataclass(frozen=True)
class Curation:
    """The curation rule of SiamFC sec. 2.4, frame by frame: no NaN / empty boxes; target
    area between `min_area` and `max_area` of the image; the target at least `edge_margin`
    of its mean side away from every image edge (truncated objects teach a wrong shape).

    The paper's lower bound, area >= 0.1^2 of the image, is a setting whose default here is
    0: ImageNet Video objects are large, but our drone footage's targets are small and the
    bound would throw away most of its frames, exactly the kind of target we must learn to
    track (the figures: docs/training.md, SiamFC's curation)."""

    min_area: float = 0.0  # of the image
    max_area: float = 0.75 ** 2
    edge_margin: float = 0.05  # of the target's mean side


def usable_frames(sequence: Sequence, image_size: tuple[int, int], curation: Curation) -> np.ndarray:
    """Indices of the frames that pass `curation`. image_size: (W, H)."""
    width, height = image_size
    gt = sequence.ground_truth
    ok = sequence.valid_mask()
    x, y, w, h = (np.where(ok, gt[:, i], 1.0) for i in range(4))
    area = w * h / float(width * height)
    ok &= (area >= curation.min_area) & (area <= curation.max_area)
    margin = curation.edge_margin * (w + h) / 2.0
    ok &= (x >= margin) & (y >= margin) & (x + w <= width - margin) & (y + h <= height - margin)
    return np.flatnonzero(ok)


def video_of(name: str) -> str:
    """The video a sequence comes from: 'uav_car16' for 'uav_car16_2', 'Jogging' for
    'Jogging.1'. Parts of one video are never used as each other's negatives, and a
    validation sequence sharing a video with training flatters the validation."""
    return re.sub(r"[._]\d+$", "", name)


def photometric_jitter(image: np.ndarray, rng: np.random.Generator, colour_jitter: float, blur_prob: float,
                       blur_sigma: tuple[float, float], grey: bool) -> np.ndarray:
    """Brightness / contrast / saturation factors in [1-c, 1+c], a Gaussian blur now and then,
    optionally grey; BGR float32 0..255 out. The draws from `rng` are in that order, always
    the same number for given settings (a seeded sampler stays reproducible)."""
    out = image.astype(np.float32)
    if colour_jitter > 0:
        c = colour_jitter
        brightness, contrast, saturation = (float(v) for v in rng.uniform(1 - c, 1 + c, size=3))
        out *= brightness
        mean = float(out.mean())
        out = (out - mean) * contrast + mean
        grey_level = out @ np.array([0.114, 0.587, 0.299], dtype=np.float32)  # BGR luma
        out = (out - grey_level[..., None]) * saturation + grey_level[..., None]
    if blur_prob > 0 and rng.random() < blur_prob:
        sigma = float(rng.uniform(*blur_sigma))
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if grey:
        luma = out @ np.array([0.114, 0.587, 0.299], dtype=np.float32)
        out = np.repeat(luma[..., None], 3, axis=2)
    return np.clip(out, 0.0, 255.0, out=out).astype(np.float32, copy=False)


def split_sequences(data_dir: str | Path, val_sequences: Iterable[str],
                    train_sequences: Iterable[str] | None = None) -> tuple[list[Sequence], list[Sequence]]:
    """(train, validation) sequences of `data_dir`: validation = the named ones, training =
    `train_sequences` (default: every other sequence). Overlap is an error."""
    val_names = list(dict.fromkeys(val_sequences))
    val = load_dataset(data_dir, val_names) if val_names else []
    val_set = {s.name for s in val}
    if train_sequences is None:
        train = [s for s in load_dataset(data_dir) if s.name not in val_set]
    else:
        train = load_dataset(data_dir, list(train_sequences))
        both = sorted(val_set & {s.name for s in train})
        if both:
            raise DatasetError(f"sequence(s) {', '.join(both)} asked for both training and validation")
    if not train:
        raise DatasetError(f"{data_dir}: no training sequences left after holding back {', '.join(val_names)}")
    shared = sorted({video_of(s.name) for s in train} & {video_of(s.name) for s in val})
    if shared:
        log.warning("validation and training share video(s) %s: validation will flatter", ", ".join(shared))
    return train, val
