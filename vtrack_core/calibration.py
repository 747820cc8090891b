"""Score calibration: a monotone map from a tracker's raw score to the probability that its
box is on the target (IoU >= 0.5 with the ground truth), and the file that carries it.

A tracker's raw score ranks frames (AUROC) but its scale is its own (NanoTrack sits near 0.9
on absent targets, RAR's peak answers 0.2): a map fitted on runs over the training sequences
turns it into a probability, so that one threshold (CALIBRATED_THRESHOLD, 0.5) means the same
for every calibrated tracker. Two fits:

* isotonic: pool-adjacent-violators on the (score, on target) pairs, then linear
  interpolation between the pooled blocks' mean scores (constant beyond the outer ones), so
  the map is continuous, non-decreasing and defined at every score;
* logistic (Platt): p = sigmoid(a * logit(score) + b), fitted by Newton's method with Platt's
  smoothed targets (the raw scores are probabilities already, so their log-odds are the
  feature, as the network's own logit is for SiamFC).

The file (`<weights stem>.calibration.json` beside the tracker's weights) holds the map and
its provenance, with the sha256 of every file the scores came from (weights, ONNX models):
a tracker whose files do not match is not calibrated with it (warned once, raw scores used).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .provenance import sha256

log = logging.getLogger(__name__)

CALIBRATED_THRESHOLD = 0.5  # the default confidence_threshold of every calibrated tracker
FORMAT = "vtrack-calibration/1"
METHODS = ("isotonic", "logistic")
NO_CALIBRATION = ("none", "off", "raw")  # `calibration` settings that turn it off
_LOGIT_EPS = 1e-6  # raw scores are clipped to [eps, 1 - eps] before their log-odds


class CalibrationError(ValueError):
    """A calibration file that cannot be read or used; says which and why."""


# --- the fits -------------------------------------------------------------------------------
def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least-squares fit of `y`, already in score order.

    Returns the blocks as (first index, weight, mean) arrays: block k covers y[first[k]:first[k+1]]
    and its fitted value is mean[k]; means strictly increase (equal neighbours are pooled too,
    so each block is one step of the map)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(y):
        raise ValueError(f"{len(w)} weights for {len(y)} values")
    first: list[int] = []
    weight: list[float] = []
    mean: list[float] = []
    for i, (value, wi) in enumerate(zip(y, w)):
        first.append(i)
        weight.append(float(wi))
        mean.append(float(value))
        while len(mean) > 1 and mean[-2] >= mean[-1]:  # a violation (or a tie): pool the last two
            total = weight[-2] + weight[-1]
            merged = (mean[-2] * weight[-2] + mean[-1] * weight[-1]) / total
            first.pop()
            weight.pop()
            mean.pop()
            weight[-1], mean[-1] = total, merged
    return np.array(first, dtype=np.int64), np.array(weight), np.array(mean)


def _scores_and_labels(scores: np.ndarray, on_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(on_target, dtype=np.float64).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    if len(scores) == 0:
        raise ValueError("no frames to fit on")
    if not np.isfinite(scores).all():
        raise ValueError("scores have NaN or infinite values; leave those frames out first")
    return np.clip(scores, 0.0, 1.0), labels


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # no overflow for large |z|


@dataclass(frozen=True)
class ScoreMap:
    """A fitted monotone map, raw score (0..1) -> probability on target (0..1)."""

    method: str
    # isotonic: knots (mean raw score of each pooled block) and their probabilities
    knots: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    # logistic: p = sigmoid(a * logit(score) + b)
    a: float = 1.0
    b: float = 0.0

    def __call__(self, score: float | np.ndarray) -> Any:
        """The calibrated probability of `score` (a float for a float, an array for an array)."""
        s = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
        if self.method == "isotonic":
            p = np.interp(s, self.knots, self.values)
        else:
            p = _sigmoid(self.a * _logit(s) + self.b)
        return float(p) if np.ndim(p) == 0 else p

    def to_json(self) -> dict[str, Any]:
        if self.method == "isotonic":
            # Knots at 12 digits: saturating scores (SiamFC's sigmoid) differ in the 7th.
            return {"method": "isotonic", "knots": [float(f"{k:.12g}") for k in self.knots],
                    "values": [round(v, 6) for v in self.values]}
        return {"method": "logistic", "a": self.a, "b": self.b}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "ScoreMap":
        method = data.get("method")
        if method == "isotonic":
            knots = tuple(float(k) for k in data["knots"])
            values = tuple(float(v) for v in data["values"])
            if not knots or len(knots) != len(values):
                raise ValueError(f"isotonic map with {len(knots)} knots and {len(values)} values")
            if any(b < a for a, b in zip(knots, knots[1:])) or any(b < a for a, b in zip(values, values[1:])):
                raise ValueError("isotonic map is not non-decreasing")
            if not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError("isotonic map has values outside 0..1")
            return ScoreMap("isotonic", knots, values)
        if method == "logistic":
            a, b = float(data["a"]), float(data["b"])
            if not (math.isfinite(a) and math.isfinite(b) and a >= 0):
                raise ValueError(f"logistic map needs finite a >= 0 (monotone) and b, got a={a}, b={b}")
            return ScoreMap("logistic", a=a, b=b)
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


def fit_isotonic(scores: np.ndarray, on_target: np.ndarray) -> ScoreMap:
    """PAV on the frames sorted by raw score (equal scores pooled first, so a tie is one
    point); the map interpolates between the blocks' mean scores."""
    scores, labels = _scores_and_labels(scores, on_target)
    unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    share = np.bincount(inverse, weights=labels) / counts
    first, weight, mean = pool_adjacent_violators(share, counts.astype(np.float64))
    # A block's knot: the frame-weighted mean raw score of the frames it pooled.
    sums = np.add.reduceat(unique * counts, first)
    knots = sums / weight
    return ScoreMap("isotonic", tuple(float(k) for k in knots), tuple(float(v) for v in mean))


def fit_logistic(scores: np.ndarray, on_target: np.ndarray, iterations: int = 100) -> ScoreMap:
    """Platt scaling on the log-odds of the raw score: maximum likelihood of
    sigmoid(a * logit(s) + b) against Platt's targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2),
    which keep a and b finite on separable data. Newton steps, halved while they do not
    lower the loss. A negative slope (a score that ranks backwards) is refused."""
    scores, labels = _scores_and_labels(scores, on_target)
    x = _logit(scores)
    positives = labels.sum()
    negatives = len(labels) - positives
    target = np.where(labels > 0.5, (positives + 1) / (positives + 2), 1.0 / (negatives + 2))

    def loss(params: np.ndarray) -> float:
        z = params[0] * x + params[1]
        # -[t log p + (1 - t) log(1 - p)] with log p = -softplus(-z), log(1 - p) = -softplus(z)
        return float(np.sum(target * np.logaddexp(0.0, -z) + (1 - target) * np.logaddexp(0.0, z)))

    params = np.array([1.0, 0.0])
    current = loss(params)
    for _ in range(iterations):
        p = _sigmoid(params[0] * x + params[1])
        gradient = np.array([np.sum((p - target) * x), np.sum(p - target)])
        h = p * (1 - p)
        hessian = np.array([[np.sum(h * x * x), np.sum(h * x)], [np.sum(h * x), np.sum(h)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:
            candidate = params - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale *= 0.5
        else:
            break
        moved = np.abs(candidate - params).max()
        params, current = candidate, value
        if moved < 1e-10:
            break
    if params[0] < 0:
        raise ValueError(f"the logistic fit ranks scores backwards (a = {params[0]:.3g}): no monotone map")
    return ScoreMap("logistic", a=float(params[0]), b=float(params[1]))


def fit(scores: np.ndarray, on_target: np.ndarray, method: str = "isotonic") -> ScoreMap:
    if method == "isotonic":
        return fit_isotonic(scores, on_target)
    if method == "logistic":
        return fit_logistic(scores, on_target)
    raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")


# --- files and hashes -----------------------------------------------------------------------
_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | Path) -> str:
    """The file's sha256, cached per (path, size, mtime): eval builds a tracker per sequence."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256(path)
    return _HASHES[key]


@dataclass(frozen=True)
class CalibrationSource:
    """Where a tracker's calibration lives and which files its raw scores come from."""

    path: Path  # the calibration file
    files: Mapping[str, Path]  # role (weights, backbone, neckhead) -> file hashed into it


@dataclass(frozen=True)
class Calibration:
    """A loaded calibration file: its map, the hashes it was fitted for, its provenance."""

    path: Path
    score_map: ScoreMap
    sha256: Mapping[str, str]  # role -> sha256 of the file the fit ran with
    provenance: Mapping[str, Any]

    def __call__(self, score: float) -> float:
        return float(self.score_map(score))

    def mismatches(self, files: Mapping[str, Path]) -> list[str]:
        """Roles whose file now differs from the one fitted for (or is not named in the file)."""
        wrong = []
        for role, file in files.items():
            expected = self.sha256.get(role)
            if expected is None or sha256_of(file) != expected:
                wrong.append(role)
        return wrong


def read_calibration(path: str | Path) -> Calibration:
    """Load and check a calibration file; CalibrationError says what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} not found") from None
    except (OSError, ValueError) as error:
        raise CalibrationError(f"{path}: not a calibration file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CalibrationError(f"{path}: not a {FORMAT} file")
    try:
        score_map = ScoreMap.from_json(data["map"])
        hashes = {str(k): str(v) for k, v in data["sha256"].items()}
    except (KeyError, TypeError, ValueError) as error:
        raise CalibrationError(f"{path}: {type(error).__name__}: {error}") from None
    return Calibration(path, score_map, hashes, data.get("provenance", {}))


def write_calibration(path: str | Path, score_map: ScoreMap, files: Mapping[str, Path],
                      provenance: Mapping[str, Any]) -> Path:
    """Write the map with the sha256 of each file it was fitted for and its provenance."""
    path = Path(path)
    data = {
        "format": FORMAT,
        "tracker": provenance.get("tracker"),
        "map": score_map.to_json(),
        "sha256": {role: sha256_of(file) for role, file in files.items()},
        "files": {role: Path(file).name for role, file in files.items()},
        "provenance": dict(provenance),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def load_for(source: CalibrationSource | None, setting: str, tracker: str) -> Calibration | None:
    """The calibration a tracker applies, or None (raw scores).

    `setting` is the tracker's `calibration` value: "" the file of `source` when it exists
    (absent: raw scores, said at INFO level), "none" raw scores, a path that file (it must
    exist). A file fitted for other weights or models is not applied: warned once per file
    and hashes, raw scores used, so a tracker is never calibrated with another one's map."""
    if setting.strip().lower() in NO_CALIBRATION or source is None:
        return None
    explicit = bool(setting.strip())
    path = Path(setting) if explicit else source.path
    if not explicit and not path.is_file():
        log.info("%s: not calibrated (no %s); reporting the raw score", tracker, path)
        return None
    if not all(Path(f).is_file() for f in source.files.values()):
        return None  # the tracker itself says which weights are missing
    calibration = read_calibration(path)  # an explicit file that is missing or broken is an error
    wrong = calibration.mismatches(source.files)
    if wrong:
        key = (str(path.resolve()), tuple(sha256_of(source.files[r]) for r in wrong))
        if key not in _WARNED:
            _WARNED.add(key)
            named = ", ".join(f"{role} {source.files[role]}" for role in wrong)
            log.warning("%s: calibration %s was fitted for other files than %s (sha256 differs); NOT applied, "
                        "reporting the raw score: refit with `vtrack calibrate %s`", tracker, path, named, tracker)
        return None
    return calibration


def describe(source: CalibrationSource | None, setting: str = "") -> str:
    """One line on a tracker's calibration for `vtrack list` and the docs."""
    if source is None:
        return "no score to calibrate"
    if setting.strip().lower() in NO_CALIBRATION:
        return "calibration off (raw score)"
    path = Path(setting) if setting.strip() else source.path
    if not path.is_file():
        return f"not calibrated (no {path.name})"
    try:
        calibration = read_calibration(path)
        missing = [r for r, f in source.files.items() if not Path(f).is_file()]
        if missing:
            return f"calibration {path.name}, but no {', '.join(missing)} file to check it against"
        wrong = calibration.mismatches(source.files)
    except (CalibrationError, OSError) as error:
        return f"calibration unusable: {error}"
    if wrong:
        return f"NOT calibrated: {path.name} was fitted for another {', '.join(wrong)} (refit)"
    fitted = calibration.provenance.get("fit", {})
    figures = ""
    if fitted:
        figures = f", fitting-data ECE {fitted.get('ece_before', float('nan')):.3f} -> " \
                  f"{fitted.get('ece_after', float('nan')):.3f}"
    return f"calibrated ({calibration.score_map.method}, {path.name}{figures})"
