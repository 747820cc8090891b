"""`vtrack calibrate NAME`: run a tracker over training sequences with its raw score, fit the
monotone map score -> P(on target) (vtrack_core/calibration.py) and write it beside the
tracker's weights with its provenance.

Frames fitted on: every frame after the init frame where the tracker gave a result, as the
eval's calibration measures take them (eval/calibration.py), plus the frames whose ground
truth is NaN (target absent: out of view, occluded), which count as off target: a box on an
absent target is not on it, and those frames are where a score must drop for LOST to be
true. Rerun whenever the tracker's weights change: the file is tied to their sha256.
"""
from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence as Seq

import numpy as np

from .. import calibration as cal
from ..provenance import git_commit
from ..registry import tracker_class, tracker_config
from .calibration import auroc, calibration_frames, expected_calibration_error
from .datasets import Sequence, load_dataset
from .runner import SequenceResult, load_result, run_sequence, save_result, tracker_results_dir

log = logging.getLogger(__name__)

CV_FOLDS = 5  # sequence-grouped folds of the cross-validated figures


class CalibrateError(ValueError):
    """A calibration that cannot be fitted (no score, no frames, one class only); says why."""


@dataclass
class FitFrames:
    """Raw scores and labels of the fitted frames, with the sequence each came from."""

    scores: np.ndarray
    on_target: np.ndarray  # bool
    present: np.ndarray  # bool: target present (False: absent, counted off target)
    sequence: np.ndarray  # int index into `names`
    names: list[str]


def collect_frames(results: Mapping[str, SequenceResult], sequences: Seq[Sequence]) -> FitFrames:
    """The judged frames of each run: present ones with their IoU >= 0.5 label, absent ones off target."""
    scores, labels, present, owner = [], [], [], []
    names = [s.name for s in sequences]
    for k, sequence in enumerate(sequences):
        result = results[sequence.name]
        frames = calibration_frames(result.boxes, result.confidences, result.states, sequence.ground_truth,
                                    result.init_index)
        for values, on, is_present in ((frames.confidence, frames.on_target, True),
                                       (frames.absent_confidence, np.zeros(len(frames.absent_confidence), bool),
                                        False)):
            scores.append(values)
            labels.append(on)
            present.append(np.full(len(values), is_present))
            owner.append(np.full(len(values), k))
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    return FitFrames(cat(scores, np.float64), cat(labels, bool), cat(present, bool), cat(owner, np.int64), names)


def _figures(scores: np.ndarray, on_target: np.ndarray) -> dict[str, float | None]:
    def number(value: float) -> float | None:
        return round(float(value), 4) if np.isfinite(value) else None

    return {"ece": number(expected_calibration_error(scores, on_target)), "auroc": number(auroc(scores, on_target))}


def cross_validated(frames: FitFrames, method: str, folds: int = CV_FOLDS) -> dict[str, Any]:
    """ECE / AUROC of maps fitted without the sequences they are scored on (sequences dealt
    to `folds` folds in name order): what the fitting-data figures, which the fit itself
    flatters, would be on sequences it did not see."""
    n_seq = len(frames.names)
    folds = max(2, min(folds, n_seq))
    fold_of = np.arange(n_seq) % folds
    calibrated = np.full(len(frames.scores), np.nan)
    for fold in range(folds):
        held = fold_of[frames.sequence] == fold
        if held.all() or not held.any():
            continue
        try:
            score_map = cal.fit(frames.scores[~held], frames.on_target[~held], method)
        except ValueError:
            continue
        calibrated[held] = score_map(frames.scores[held])
    done = np.isfinite(calibrated)
    return {"folds": folds, "frames": int(done.sum()), **_figures(calibrated[done], frames.on_target[done])}


def run_raw(name: str, sequences: Seq[Sequence], overrides: Mapping[str, Any], runs_dir: Path | None,
            progress: bool = True) -> dict[str, SequenceResult]:
    """One pass of the uncalibrated tracker over each sequence (kept in `runs_dir` when given,
    and resumed from there)."""
    from tqdm import tqdm

    settings = {**overrides, "calibration": "none"}
    results: dict[str, SequenceResult] = {}
    folder = tracker_results_dir(runs_dir, name) if runs_dir is not None else None
    with tqdm(total=sum(len(s) for s in sequences), unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for sequence in sequences:
            bar.set_description(f"{name} {sequence.name}")
            saved = load_result(folder, sequence.name, len(sequence)) if folder is not None else None
            if saved is None:
                tracker = tracker_class(name)(tracker_config(name, **settings))
                saved = run_sequence(tracker, sequence, label=name, on_frames=bar.update)
                if folder is not None:
                    save_result(saved, folder, sequence.name)
            else:
                bar.update(len(sequence))
            results[sequence.name] = saved
    return results


def _load(data: Seq[str | Path], max_frames: int | None) -> list[Sequence]:
    """The sequences of every folder; with several folders each name gets its folder's name
    (a dataset and its out-of-view variant share sequence names)."""
    sequences = []
    for folder in data:
        for sequence in load_dataset(folder):
            if len(data) > 1:
                sequence = Sequence(f"{Path(folder).name}/{sequence.name}", sequence.frames, sequence.ground_truth,
                                    sequence.root)
            sequences.append(sequence.head(max_frames))
    if len({s.name for s in sequences}) != len(sequences):
        raise CalibrateError("two --data folders share a name and sequence names; give folders of distinct names")
    return sequences


def calibrate(name: str, data: Seq[str | Path], method: str = "isotonic", out: str | Path | None = None,
              max_frames: int | None = None, overrides: Mapping[str, Any] | None = None,
              runs_dir: str | Path | None = None, command: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Fit `name`'s calibration on runs over the sequences of `data` and write it (default:
    beside the weights the tracker loads). Returns what was written, with the path."""
    if method not in cal.METHODS:
        raise CalibrateError(f"--method must be one of {', '.join(cal.METHODS)}, got {method!r}")
    overrides = dict(overrides or {})
    cls = tracker_class(name)
    config = tracker_config(name, **overrides)
    source = cls.calibration_source(config)
    if source is None or "calibration" not in config.field_names():
        raise CalibrateError(f"{name} has no score to calibrate (its confidence is OpenCV's 0/1 success flag)")
    missing = [f"{role} {path}" for role, path in source.files.items() if not Path(path).is_file()]
    if missing:
        raise CalibrateError(f"{name}: no {', '.join(missing)} to fit a calibration for")
    sequences = _load(data, max_frames)
    results = run_raw(name, sequences, overrides, Path(runs_dir) if runs_dir else None, progress)
    frames = collect_frames(results, sequences)
    if len(frames.scores) == 0 or frames.on_target.all() or not frames.on_target.any():
        raise CalibrateError(f"{name}: {len(frames.scores)} frames, {int(frames.on_target.sum())} on target: "
                             "both classes are needed to fit")
    try:
        score_map = cal.fit(frames.scores, frames.on_target, method)
    except ValueError as error:
        raise CalibrateError(f"{name}: {error}") from None
    calibrated = score_map(frames.scores)
    present = frames.present
    fit_figures: dict[str, Any] = {
        "frames": int(len(frames.scores)),
        "on_target": int(frames.on_target.sum()),
        "absent_frames": int((~present).sum()),
        "ece_before": _figures(frames.scores, frames.on_target)["ece"],
        "ece_after": _figures(calibrated, frames.on_target)["ece"],
        "auroc_before": _figures(frames.scores, frames.on_target)["auroc"],
        "auroc_after": _figures(calibrated, frames.on_target)["auroc"],
        # as `vtrack eval` measures them: target-present frames only
        "present_only": {"before": _figures(frames.scores[present], frames.on_target[present]),
                         "after": _figures(calibrated[present], frames.on_target[present])},
        "cross_validated": {m: cross_validated(frames, m) for m in cal.METHODS},
        "mean_score_absent": {
            "before": round(float(frames.scores[~present].mean()), 4) if (~present).any() else None,
            "after": round(float(calibrated[~present].mean()), 4) if (~present).any() else None},
    }
    per_sequence = []
    for k, sequence in enumerate(sequences):
        mine = frames.sequence == k
        per_sequence.append({"name": sequence.name, "root": str(sequence.root or ""), "frames": len(sequence),
                             "fitted_frames": int(mine.sum()), "absent_frames": int((mine & ~present).sum())})
    repo = Path(__file__).resolve().parents[2]
    provenance = {
        "tracker": name,
        "method": method,
        "map_form": ("pool-adjacent-violators, linear between the blocks' mean scores, constant beyond"
                     if method == "isotonic" else "sigmoid(a * logit(score) + b), Platt targets"),
        "on_target": "IoU >= 0.5 with the ground truth; frames with NaN ground truth (target absent) off target",
        "settings": {k: str(v) for k, v in overrides.items()},
        "config": {k: v for k, v in config.to_dict().items() if k not in ("device",)},
        "data": {"folders": [str(d) for d in data], "max_frames": max_frames, "sequences": per_sequence},
        "fit": fit_figures,
        "command": command or " ".join(shlex.quote(a) for a in ["vtrack", *sys.argv[1:]]),
        "code": git_commit(repo),
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "weights_sha256": {role: cal.sha256_of(path) for role, path in source.files.items()},
    }
    target = Path(out) if out else source.path
    cal.write_calibration(target, score_map, source.files, provenance)
    return {"path": target, "map": score_map, "provenance": provenance}
