"""One-pass-evaluation (OPE) metrics: success, precision and normalized precision.

Conventions, chosen so numbers compare with published OTB / LaSOT tables:

* Frames whose ground truth is not a usable box (a NaN row, or a non-positive width or
  height) are skipped: there is nothing to score the tracker against.
* Predictions with a NaN (the tracker gave no box) count as failures on every threshold,
  never as skipped frames; skipping them would reward a tracker for giving up.
* Success: IoU > threshold over IoU_THRESHOLDS = linspace(0, 1, 21) (strict, as in the
  OTB toolkit, so a box with zero overlap never succeeds); AUC = mean of that curve.
* Precision: centre error <= threshold over 0..50 px in steps of 1; the score is the value
  at 20 px.
* Normalized precision: the centre error with each axis divided by the ground-truth width /
  height (as in pytracking's LaSOT / TrackingNet evaluation); the score is the fraction
  of frames with a normalized error <= 0.2, which is pytracking's "Norm Precision". (The
  LaSOT paper itself ranks by the area under the 0..0.5 curve; `normalized_precision_curve`
  gives that curve for whoever wants the area.)

GOT-10k style: average overlap (AO, the mean IoU) and success rates SR_0.5 / SR_0.75 (the
fraction with IoU > 0.5 / 0.75), computed as the GOT-10k toolkit does: the first frame (the
initialisation) is left out, a missing prediction counts as IoU 0, and the overall number is
the mean over all frames of all sequences (frame-weighted, unlike OTB's sequence means).

The box centre is x + w / 2; toolkits that use x + (w - 1) / 2 give the same centre
*errors*, since the -1/2 cancels between prediction and ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..boxes import center_error, iou, normalized_center_error

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)
CENTER_ERROR_THRESHOLDS = np.arange(0, 51, dtype=np.float64)  # pixels
NORM_CENTER_ERROR_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0  # 0 .. 0.5
PRECISION_PIXELS = 20.0
NORM_PRECISION_THRESHOLD = 0.2


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if pred.shape != gt.shape:
        raise ValueError(f"{len(pred)} predicted boxes for {len(gt)} ground-truth boxes")
    return pred, gt


def valid_ground_truth(gt: np.ndarray) -> np.ndarray:
    """Boolean mask of frames with a scorable ground-truth box."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)


def _scored(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with usable ground truth; predictions there may still be NaN."""
    pred, gt = _pair(pred, gt)
    keep = valid_ground_truth(gt)
    return pred[keep], gt[keep]


def _fraction_below(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of errors <= each threshold; NaN errors never qualify. NaN curve if no frames."""
    if len(errors) == 0:
        return np.full(len(thresholds), np.nan)
    errors = np.where(np.isnan(errors), np.inf, errors)
    return (errors[:, None] <= np.asarray(thresholds)[None, :]).mean(axis=0)


def overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU per scored frame; -1 where the prediction is missing, so it fails every threshold."""
    pred, gt = _scored(pred, gt)
    values = iou(pred, gt)
    return np.where(np.isnan(values), -1.0, values)


def success_curve(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """Fraction of scored frames with IoU > threshold, per threshold (NaN if none scored)."""
    ious = overlaps(pred, gt)
    if len(ious) == 0:
        return np.full(len(thresholds), np.nan)
    return (ious[:, None] > np.asarray(thresholds)[None, :]).mean(axis=0)


def auc(curve: np.ndarray) -> float:
    """Area under a success curve sampled on evenly spaced thresholds in 0..1: its mean."""
    return float(np.mean(curve))


def precision_curve(
    pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray = CENTER_ERROR_THRESHOLDS
) -> np.ndarray:
    """Fraction of scored frames with centre error <= threshold (pixels), per threshold."""
    pred, gt = _scored(pred, gt)
    return _fraction_below(center_error(pred, gt), thresholds)


def precision(pred: np.ndarray, gt: np.ndarray, pixels: float = PRECISION_PIXELS) -> float:
    return float(precision_curve(pred, gt, np.array([pixels]))[0])


def normalized_precision_curve(
    pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray = NORM_CENTER_ERROR_THRESHOLDS
) -> np.ndarray:
    """Fraction of scored frames with size-normalized centre error <= threshold."""
    pred, gt = _scored(pred, gt)
    return _fraction_below(normalized_center_error(pred, gt), thresholds)


def normalized_precision(
    pred: np.ndarray, gt: np.ndarray, threshold: float = NORM_PRECISION_THRESHOLD
) -> float:
    """pytracking's 'Norm Precision': fraction with normalized centre error <= 0.2."""
    return float(normalized_precision_curve(pred, gt, np.array([threshold]))[0])


@dataclass(frozen=True)
class Scores:
    """All metrics of one prediction track against its ground truth."""

    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray
    auc: float
    precision: float
    norm_precision: float
    scored_frames: int  # frames with usable ground truth
    average_overlap: float = float("nan")  # GOT-10k AO (first frame left out)
    success_rate_50: float = float("nan")  # GOT-10k SR_0.5
    success_rate_75: float = float("nan")  # SR_0.75
    overlap_frames: int = 0  # frames behind the three above, to weigh them overall


def got10k_overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of the frames GOT-10k scores: after the first, with usable ground truth; a missing
    prediction is 0."""
    pred, gt = _pair(pred, gt)
    return np.maximum(overlaps(pred[1:], gt[1:]), 0.0)


def score(pred: np.ndarray, gt: np.ndarray) -> Scores:
    """Every metric at once (NaN everywhere when no frame has usable ground truth)."""
    pred, gt = _pair(pred, gt)
    success = success_curve(pred, gt)
    prec = precision_curve(pred, gt)
    norm = normalized_precision_curve(pred, gt)
    got = got10k_overlaps(pred, gt)
    nan = float("nan")
    return Scores(
        success_curve=success,
        precision_curve=prec,
        norm_precision_curve=norm,
        auc=auc(success),
        precision=precision(pred, gt),
        norm_precision=normalized_precision(pred, gt),
        scored_frames=int(valid_ground_truth(gt).sum()),
        average_overlap=float(got.mean()) if len(got) else nan,
        success_rate_50=float((got > 0.5).mean()) if len(got) else nan,
        success_rate_75=float((got > 0.75).mean()) if len(got) else nan,
        overlap_frames=len(got),
    )
