"""Does a tracker's confidence mean a probability, and is its LOST true? Per-frame measures.

A tracker's confidence is read as the probability that its box is on the target, "on
target" meaning IoU >= ON_TARGET_IOU (0.5, inclusive) with the ground truth. On the frames
it is judged on:

* reliability diagram: confidence in equal-width bins over 0..1 (the last bin holds 1.0),
  per bin the frames, their mean confidence and the share of them on target;
* expected calibration error (ECE): the frame-weighted mean over bins of
  |share on target - mean confidence| (empty bins weigh nothing);
* AUROC: the probability that an on-target frame has a higher confidence than an
  off-target one (ties count half), i.e. how well confidence ranks good frames above bad
  ones whatever its scale;
* on frames whose ground truth is NaN (target absent), the share reported LOST or
  UNCERTAIN (and LOST alone), beside the share of target-present frames reported LOST;
* re-acquisition: of the target's returns (a present frame after absent ones), the share
  where within REACQUIRE_FRAMES frames (the return's frame included, until the target is
  absent again) the tracker reports TRACKING with its box on target.

Frames judged: after the init frame only (the init frame's confidence 1 and INITIALIZING
are given, not measured). Present frames are those with a usable ground-truth box (as the
OPE metrics score them), absent ones those with a NaN in the row; a finite box of zero
size is neither. A frame where the tracker raised has no confidence and no state and is
left out here (the OPE metrics already count it as a failure). Frames of several
sequences are pooled, so a tracker's overall numbers are frame-weighted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..boxes import iou
from ..tracker import TrackState
from .metrics import valid_ground_truth

ON_TARGET_IOU = 0.5
RELIABILITY_BINS = 10
NO_STATE = -1  # as in the runner: no TrackState for that frame
FLAGGED_STATES = (int(TrackState.LOST), int(TrackState.UNCERTAIN))
REACQUIRE_FRAMES = 30  # a return counts as re-acquired when tracked on target within this many frames (1 s at 30 Hz)


# --- the measures, on plain arrays ------------------------------------------------------
@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: per confidence bin, frames, mean confidence, share on target."""

    edges: np.ndarray  # bins + 1, 0 .. 1
    frames: np.ndarray  # int per bin
    confidence: np.ndarray  # mean confidence per bin; NaN where empty
    on_target: np.ndarray  # share on target per bin; NaN where empty


def _confidence_and_labels(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if confidence.shape != correct.shape:
        raise ValueError(f"{len(confidence)} confidences for {len(correct)} labels")
    if np.isnan(confidence).any():
        raise ValueError("confidence has NaN values; leave those frames out first")
    return np.clip(confidence, 0.0, 1.0), correct


def bin_index(confidence: np.ndarray, bins: int = RELIABILITY_BINS) -> np.ndarray:
    """Bin of each confidence in `bins` equal-width bins over 0..1; 1.0 goes in the last."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return np.minimum((np.asarray(confidence, dtype=np.float64) * bins).astype(np.int64), bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> Reliability:
    """The reliability diagram of confidences against whether each frame was on target."""
    confidence, correct = _confidence_and_labels(confidence, correct)
    index = bin_index(confidence, bins)
    frames = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / frames
        share = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / frames
    return Reliability(np.linspace(0.0, 1.0, bins + 1), frames, mean_confidence, share)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> float:
    """Frame-weighted mean over bins of |share on target - mean confidence|; NaN with no frames."""
    diagram = reliability(confidence, correct, bins)
    total = int(diagram.frames.sum())
    if total == 0:
        return float("nan")
    filled = diagram.frames > 0
    gaps = np.abs(diagram.on_target[filled] - diagram.confidence[filled])
    return float(np.sum(diagram.frames[filled] * gaps) / total)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (as Mann-Whitney needs)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half; NaN unless both classes occur.

    Computed from ranks (Mann-Whitney U), O(n log n), so a long run needs no pairwise table.
    """
    scores, positive = _confidence_and_labels(scores, positive)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def share_in(states: np.ndarray, wanted: Iterable[int]) -> float:
    """Share of frames with a state (not NO_STATE) whose state is one of `wanted`; NaN if none."""
    states = np.asarray(states, dtype=np.int64).reshape(-1)
    states = states[states != NO_STATE]
    if len(states) == 0:
        return float("nan")
    return float(np.isin(states, list(wanted)).mean())


# --- the frames of one result -----------------------------------------------------------
@dataclass(frozen=True)
class CalibrationFrames:
    """The frames of one result (or several, pooled) that the measures are taken on."""

    confidence: np.ndarray  # present frames with a confidence
    on_target: np.ndarray  # bool, IoU >= ON_TARGET_IOU on those frames
    present_states: np.ndarray  # TrackState values of present frames (NO_STATE where none)
    absent_states: np.ndarray  # TrackState values of absent frames (NO_STATE where none)
    absent_confidence: np.ndarray  # confidence on absent frames with one
    states_saved: bool = True  # False for results saved before states were
    missing_states: tuple[str, ...] = field(default=())  # sequences without a state file
    returns: int = 0  # the target's returns after an absence (after init)
    reacquired: int = 0  # of them, tracked on target (TRACKING, IoU >= 0.5) within REACQUIRE_FRAMES
    raw_confidence: np.ndarray | None = None  # the score before calibration on the `confidence` frames; None: unknown

    @staticmethod
    def pool(parts: Iterable[tuple[str, "CalibrationFrames"]]) -> "CalibrationFrames":
        """All frames of several sequences as one set (each frame weighs the same)."""
        parts = list(parts)
        frames = [f for _, f in parts]

        def cat(attr: str, dtype: Any) -> np.ndarray:
            arrays = [getattr(f, attr) for f in frames]
            return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)

        raws = [f.raw_confidence for f in frames]
        raw = np.concatenate(raws).astype(np.float64) if raws and all(r is not None for r in raws) else None
        missing: list[str] = []
        for name, f in parts:
            missing.extend(f.missing_states or ([] if f.states_saved else [name]))
        return CalibrationFrames(
            confidence=cat("confidence", np.float64),
            on_target=cat("on_target", bool),
            present_states=cat("present_states", np.int64),
            absent_states=cat("absent_states", np.int64),
            absent_confidence=cat("absent_confidence", np.float64),
            states_saved=all(f.states_saved for f in frames),
            missing_states=tuple(missing),
            returns=sum(f.returns for f in frames),
            reacquired=sum(f.reacquired for f in frames),
            raw_confidence=raw,
        )


def calibration_frames(
    boxes: np.ndarray,
    confidences: np.ndarray,
    states: np.ndarray,
    ground_truth: np.ndarray,
    init_index: int | None,
    states_saved: bool = True,
    raw_confidences: np.ndarray | None = None,
) -> CalibrationFrames:
    """Pick the judged frames of one result: after `init_index`, present or absent target
    (`raw_confidences`, the scores before calibration, taken on the same frames)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 4)
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    states = np.asarray(states, dtype=np.int64).reshape(-1)
    raws = None if raw_confidences is None else np.asarray(raw_confidences, dtype=np.float64).reshape(-1)
    n = len(gt)
    if not (len(boxes) == len(confidences) == len(states) == n) or (raws is not None and len(raws) != n):
        raise ValueError(f"{len(boxes)} boxes, {len(confidences)} confidences, {len(states)} states"
                         f"{'' if raws is None else f', {len(raws)} raw scores'} for {n} ground-truth rows")
    after = np.arange(n) > (init_index if init_index is not None else n)
    present = after & valid_ground_truth(gt)
    absent = after & ~np.isfinite(gt).all(axis=1)
    rated = present & np.isfinite(confidences)
    with np.errstate(invalid="ignore"):
        overlap = iou(boxes[rated], gt[rated])
    on_target = np.nan_to_num(overlap, nan=-1.0) >= ON_TARGET_IOU
    absent_conf = confidences[absent]
    returns, reacquired = reacquisitions(boxes, states, gt, present, absent)
    raw = None if raws is None else np.clip(raws[rated], 0.0, 1.0)
    raw = raw if raw is not None and np.isfinite(raw).all() else None  # a frame without one: undefined
    return CalibrationFrames(
        confidence=np.clip(confidences[rated], 0.0, 1.0),
        on_target=on_target,
        present_states=states[present] if states_saved else np.full(int(present.sum()), NO_STATE),
        absent_states=states[absent] if states_saved else np.full(int(absent.sum()), NO_STATE),
        absent_confidence=absent_conf[np.isfinite(absent_conf)],
        states_saved=states_saved,
        returns=returns,
        reacquired=reacquired if states_saved else 0,
        raw_confidence=raw,
    )


def reacquisitions(boxes: np.ndarray, states: np.ndarray, gt: np.ndarray, present: np.ndarray,
                   absent: np.ndarray, within: int = REACQUIRE_FRAMES) -> tuple[int, int]:
    """(returns, re-acquired): a return is a judged present frame right after a judged absent
    one; it is re-acquired when one of the `within` frames from it (while the target stays
    present) is reported TRACKING with IoU >= ON_TARGET_IOU."""
    starts = np.flatnonzero(present[1:] & absent[:-1]) + 1
    reacquired = 0
    for start in starts:
        stop = start
        while stop < min(len(gt), start + within) and present[stop]:
            stop += 1
        span = slice(start, stop)
        with np.errstate(invalid="ignore"):
            overlap = np.nan_to_num(iou(boxes[span], gt[span]), nan=-1.0)
        if ((overlap >= ON_TARGET_IOU) & (states[span] == int(TrackState.TRACKING))).any():
            reacquired += 1
    return int(len(starts)), reacquired


def _number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def calibration_summary(frames: CalibrationFrames, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """The `calibration` block of summary.json (None where a measure is undefined)."""
    diagram = reliability(frames.confidence, frames.on_target, bins)
    states_known = frames.states_saved
    summary: dict[str, Any] = {
        "frames": int(len(frames.confidence)),
        "on_target": int(frames.on_target.sum()),
        "ece": _number(expected_calibration_error(frames.confidence, frames.on_target, bins)),
        "auroc": _number(auroc(frames.confidence, frames.on_target)),
        # the same frames' raw scores: ECE before calibration (equal to `ece` where none is applied)
        "ece_raw": (_number(expected_calibration_error(frames.raw_confidence, frames.on_target, bins))
                    if frames.raw_confidence is not None else None),
        "mean_confidence": _number(float(frames.confidence.mean())) if len(frames.confidence) else None,
        "on_target_share": _number(float(frames.on_target.mean())) if len(frames.on_target) else None,
        "absent_frames": int(len(frames.absent_states)),
        "absent_flagged": _number(share_in(frames.absent_states, FLAGGED_STATES)) if states_known else None,
        "absent_lost": _number(share_in(frames.absent_states, [int(TrackState.LOST)])) if states_known else None,
        "absent_mean_confidence": (_number(float(frames.absent_confidence.mean()))
                                   if len(frames.absent_confidence) else None),
        "present_lost": _number(share_in(frames.present_states, [int(TrackState.LOST)])) if states_known else None,
        "returns": frames.returns,
        "reacquired": (_number(frames.reacquired / frames.returns) if frames.returns and states_known else None),
        "reacquire_frames": REACQUIRE_FRAMES,
        "reliability": {
            "edges": [round(float(e), 6) for e in diagram.edges],
            "frames": [int(c) for c in diagram.frames],
            "confidence": [_number(v) for v in diagram.confidence],
            "on_target": [_number(v) for v in diagram.on_target],
        },
    }
    if not states_known:
        missing = ", ".join(frames.missing_states) or "this sequence"
        summary["note"] = (f"no state file for {missing} (results saved before states were): "
                           "absent_flagged, absent_lost, present_lost and reacquired are undefined; rerun with "
                           "--no-resume to measure them")
    return summary
