"""The one interface every tracker implements, and the input checks they all share.

Subclasses implement `_init` and `_update`; the public `init` / `update` validate input
(so bad images and boxes fail the same, clear way for every tracker), pass the raw score
through the tracker's calibration when it has one (vtrack_core/calibration.py) and turn the
reported confidence into a TrackState with the LOST rule below.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import numpy as np

from .boxes import Box
from .calibration import CALIBRATED_THRESHOLD, Calibration, CalibrationSource, load_for
from .config import TrackerConfig


class TrackState(IntEnum):
    """Same numbers as the STATE_* constants of vtrack_ros/msg/TrackedObject."""

    INITIALIZING = 0
    TRACKING = 1
    UNCERTAIN = 2
    LOST = 3


@dataclass(frozen=True)
class TrackResult:
    box: Box
    confidence: float  # 0..1: the calibrated probability on target where the tracker is calibrated
    state: TrackState
    seconds: float = 0.0  # wall time the tracker spent on this frame
    raw_confidence: float | None = None  # the tracker's own score before calibration (None: not from update())


class InvalidInputError(ValueError):
    """An image or box a tracker cannot work with; the message says what is wrong."""


class NotInitializedError(RuntimeError):
    pass


MIN_BOX_SIDE = 2.0  # pixels; smaller boxes carry no appearance to track
MIN_INSIDE_SHARE = 0.25  # of a box's area that must lie inside the image (else it is mostly guessed)


def check_image(image: object) -> np.ndarray:
    """Return the image if it is a non-empty HxWx3 uint8 array (BGR), else raise."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise InvalidInputError(f"image is empty (shape {image.shape})")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"image must be HxWx3 BGR, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"image must be uint8, got {image.dtype}")
    return image


def check_init_box(box: Box, image_shape: tuple[int, ...], min_side: float = MIN_BOX_SIDE) -> Box:
    """A box a tracker can start from: finite, positive size, at least `min_side` pixels a
    side, mostly inside the image.

    A box partly outside the image is clipped to it; one with less than `min_side` pixels of
    either side left inside, or with less than MIN_INSIDE_SHARE of its area inside (a box of
    1e30 pixels at the origin would otherwise become a whole-frame target), is refused.
    """
    if not box.is_finite():
        raise InvalidInputError(f"box has a NaN or infinite value: {box.xywh()}")
    if box.w <= 0 or box.h <= 0:
        raise InvalidInputError(f"box must have a positive width and height, got {box.w} x {box.h}")
    if box.w < min_side or box.h < min_side:
        raise InvalidInputError(
            f"box of {box.w:g} x {box.h:g} pixels is too small: at least {min_side:g} x {min_side:g} needed")
    height, width = image_shape[:2]
    inside = box.clip(width, height)
    shown = tuple(float(f"{v:.4g}") for v in box.xywh())
    if inside.w < min_side or inside.h < min_side:
        raise InvalidInputError(f"box {shown} lies outside the {width}x{height} image")
    share = inside.area / box.area if box.area > 0 else 0.0
    if not share >= MIN_INSIDE_SHARE:
        raise InvalidInputError(
            f"only {share:.2%} of box {shown} lies inside the {width}x{height} image "
            f"(at least {MIN_INSIDE_SHARE:.0%} must)")
    return inside


class LostRule:
    """TRACKING while confidence >= threshold; UNCERTAIN below it; LOST after
    `lost_after_frames` consecutive frames below it. A LOST target is TRACKING again only
    after `recover_after_frames` consecutive frames at or above the threshold (one stray
    match on the background while searching must not claim it back); until then it stays LOST.
    An UNCERTAIN one recovers as soon as its confidence does."""

    def __init__(self, threshold: float, lost_after_frames: int, recover_after_frames: int = 1) -> None:
        self.threshold = float(threshold)
        self.lost_after_frames = max(1, int(lost_after_frames))
        self.recover_after_frames = max(1, int(recover_after_frames))
        self.frames_below = 0
        self.frames_above = 0  # while LOST: consecutive frames at or above the threshold
        self.lost = False
        self.lost_frames = 0  # consecutive results reported LOST so far

    def reset(self) -> None:
        self.frames_below = self.frames_above = self.lost_frames = 0
        self.lost = False

    def __call__(self, confidence: float) -> TrackState:
        state = self._next(confidence)
        self.lost_frames = self.lost_frames + 1 if state == TrackState.LOST else 0
        return state

    def _next(self, confidence: float) -> TrackState:
        if confidence >= self.threshold:
            self.frames_below = 0
            if self.lost:
                self.frames_above += 1
                if self.frames_above < self.recover_after_frames:
                    return TrackState.LOST
                self.lost = False
            self.frames_above = 0
            return TrackState.TRACKING
        self.frames_above = 0
        self.frames_below += 1
        if self.frames_below >= self.lost_after_frames:
            self.lost = True
        return TrackState.LOST if self.lost else TrackState.UNCERTAIN


class Tracker(ABC):
    """Single-object tracker: `init(image, box)` once, then `update(image)` per frame."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[TrackerConfig]] = TrackerConfig

    def __init__(self, config: TrackerConfig | None = None) -> None:
        config = config if config is not None else self.config_class()
        self.calibration: Calibration | None = load_for(
            self.calibration_source(config), str(getattr(config, "calibration", "")), self.name)
        if self.calibration is not None and config.is_default("confidence_threshold"):
            # Calibrated scores are probabilities: one threshold serves every tracker.
            config = config.with_overrides(confidence_threshold=CALIBRATED_THRESHOLD)
        self.config = config
        self.lost_rule = LostRule(self.config.confidence_threshold, self.config.lost_after_frames,
                                  self.config.recover_after_frames)
        self.box: Box | None = None
        self.frame_index = 0

    @property
    def initialized(self) -> bool:
        return self.box is not None

    @property
    def lost(self) -> bool:
        """Whether the last result was LOST: a tracker then searches wider (where it can) and
        learns nothing from the frame, whose target may be absent."""
        return self.lost_rule.lost

    @property
    def lost_on_calibrated_score(self) -> bool:
        """LOST, and from a calibrated score: then the target is likely gone. Only then do the
        trackers search wider and stop learning (RAR and FCNT only where `likely_absent`); on
        a raw LOST, FDN's wide search jumped to look-alikes (docs/trackers/fdn.md)."""
        return self.lost and self.calibration is not None

    def likely_absent(self, raw: float, below: float) -> bool:
        """LOST on a calibrated score and this frame's `raw` score, calibrated, under `below`:
        the frame a tracker learns nothing from (RAR and FCNT stay LOST on targets in view, so
        LOST alone does not mean absent; their `freeze_below` is `below`)."""
        return self.lost_on_calibrated_score and self.calibrated(raw) < below

    def calibrated(self, raw: float) -> float:
        """The confidence `update()` will report for a raw score (the state rule's scale)."""
        raw = float(min(max(raw, 0.0), 1.0))
        return self.calibration(raw) if self.calibration is not None else raw

    @classmethod
    def calibration_source(cls, config: TrackerConfig) -> CalibrationSource | None:
        """Where this tracker's calibration file is and which files its scores depend on;
        None for a tracker without a score to calibrate (the default: OpenCV's 0/1 flags)."""
        return None

    def init(self, image: np.ndarray, box: Box) -> None:
        image = check_image(image)
        box = check_init_box(box, image.shape)
        self._init(image, box)
        self.box = box
        self.frame_index = 0
        self.lost_rule.reset()

    def update(self, image: np.ndarray) -> TrackResult:
        if self.box is None:
            raise NotInitializedError(f"{self.name}: update() before init()")
        image = check_image(image)
        start = time.perf_counter()
        box, raw = self._update(image)
        seconds = time.perf_counter() - start
        if not (math.isfinite(raw) and box.is_finite()):  # no score, or no box: not trusted
            raw, confidence = 0.0, 0.0
            box = box if box.is_finite() else self.box  # keep the last good box
        else:
            raw = float(min(max(raw, 0.0), 1.0))
            confidence = self.calibrated(raw)
        self.box = box
        self.frame_index += 1
        return TrackResult(box=box, confidence=confidence, state=self.lost_rule(confidence), seconds=seconds,
                           raw_confidence=raw)

    @abstractmethod
    def _init(self, image: np.ndarray, box: Box) -> None:
        """Learn the target from a validated image and box (clipped to the image)."""

    @abstractmethod
    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        """Locate the target in a validated image: (box, raw confidence in 0..1)."""
