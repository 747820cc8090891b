"""Score saved results: per-sequence and overall metrics, summary.json, a table and plots.

Overall AUC / precision / normalized precision are the mean over sequences (each sequence
weighs the same, as in the OTB toolkit, so one long sequence cannot dominate); overall fps
is total updated frames / total update seconds, i.e. the real throughput of the whole run.
GOT-10k's AO / SR_0.5 / SR_0.75 are frame-weighted over all sequences, as its toolkit
reports them.
The overall curves in the plots are the mean of the per-sequence curves, so the AUC in a
legend is the same number as in summary.json.

Each tracker and sequence also gets a `calibration` block (see calibration.py: reliability
diagram, ECE, AUROC of the confidence, shares of absent frames reported LOST / UNCERTAIN and
of present ones reported LOST); a tracker's overall block pools the frames of all its
sequences. reliability.png draws every tracker's diagram.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from . import calibration, metrics
from .datasets import Sequence
from .runner import SequenceResult, load_result, tracker_results_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceEvaluation:
    scores: metrics.Scores
    updated_frames: int
    update_seconds: float
    calibration: calibration.CalibrationFrames | None = None  # None: not measured (hand-made)

    @property
    def fps(self) -> float:
        return self.updated_frames / self.update_seconds if self.update_seconds > 0 else float("nan")


Evaluation = dict[str, dict[str, SequenceEvaluation]]  # tracker -> sequence -> evaluation


def evaluate_result(result: SequenceResult, sequence: Sequence) -> SequenceEvaluation:
    """Metrics of one result against the ground truth it was run on."""
    if len(result) != len(sequence):
        raise ValueError(f"{sequence.name}: {len(result)} result rows for {len(sequence)} frames")
    scores = metrics.score(result.boxes, sequence.ground_truth)
    frames = calibration.calibration_frames(result.boxes, result.confidences, result.states,
                                            sequence.ground_truth, result.init_index, result.states_saved,
                                            result.raw_confidences)
    return SequenceEvaluation(scores, result.updated_frames, result.update_seconds, frames)


def evaluate(
    out_dir: str | Path,
    tracker_names: Iterable[str],
    sequences: list[Sequence],
    results: Mapping[str, Mapping[str, SequenceResult]] | None = None,
) -> Evaluation:
    """Evaluate each tracker on each sequence, from `results` or else from OUT/results/.

    Sequences must be cut as they were run (`Sequence.head(max_frames)`); a sequence without
    a complete saved result is left out with a warning rather than scored as a failure.
    """
    evaluation: Evaluation = {}
    for name in tracker_names:
        evaluation[name] = {}
        for sequence in sequences:
            result = (results or {}).get(name, {}).get(sequence.name)
            if result is None:
                result = load_result(tracker_results_dir(out_dir, name), sequence.name, len(sequence))
            if result is None:
                log.warning("%s/%s: no complete result in %s; left out", name, sequence.name, out_dir)
                continue
            evaluation[name][sequence.name] = evaluate_result(result, sequence)
    return evaluation


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined value (no scored frames, no timing) becomes null."""
    return float(value) if value is not None and math.isfinite(value) else None


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def overall(per_sequence: Mapping[str, SequenceEvaluation]) -> dict[str, float]:
    """Means over sequences of the scores; fps as total frames over total seconds."""
    evals = list(per_sequence.values())
    frames = sum(e.updated_frames for e in evals)
    seconds = sum(e.update_seconds for e in evals)
    return {
        "auc": _mean([e.scores.auc for e in evals]),
        "precision": _mean([e.scores.precision for e in evals]),
        "norm_precision": _mean([e.scores.norm_precision for e in evals]),
        "ao": _frame_weighted(evals, "average_overlap"),
        "sr50": _frame_weighted(evals, "success_rate_50"),
        "sr75": _frame_weighted(evals, "success_rate_75"),
        "fps": frames / seconds if seconds > 0 else float("nan"),
    }


def _frame_weighted(evals: list[SequenceEvaluation], attr: str) -> float:
    """GOT-10k's overall numbers: every scored frame of every sequence weighs the same."""
    pairs = [(getattr(e.scores, attr), e.scores.overlap_frames) for e in evals
             if e.scores.overlap_frames > 0 and math.isfinite(getattr(e.scores, attr))]
    frames = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / frames if frames else float("nan")


def mean_curves(per_sequence: Mapping[str, SequenceEvaluation]) -> dict[str, np.ndarray]:
    """Success / precision / normalized-precision curves averaged over sequences."""
    def stack(attr: str, size: int) -> np.ndarray:
        curves = [getattr(e.scores, attr) for e in per_sequence.values()]
        curves = [c for c in curves if np.isfinite(c).all()]  # sequences with nothing scored
        return np.mean(curves, axis=0) if curves else np.full(size, np.nan)

    return {
        "success": stack("success_curve", len(metrics.IOU_THRESHOLDS)),
        "precision": stack("precision_curve", len(metrics.CENTER_ERROR_THRESHOLDS)),
        "norm_precision": stack("norm_precision_curve", len(metrics.NORM_CENTER_ERROR_THRESHOLDS)),
    }


def pooled_calibration(per_sequence: Mapping[str, SequenceEvaluation]) -> calibration.CalibrationFrames:
    """Every measured frame of every sequence, for the frame-weighted overall calibration."""
    return calibration.CalibrationFrames.pool(
        (seq, e.calibration) for seq, e in per_sequence.items() if e.calibration is not None)


def summarize(evaluation: Evaluation) -> dict[str, Any]:
    """The summary.json structure: {"trackers": {name: {auc, precision, norm_precision, ao,
    sr50, sr75, fps, calibration, sequences}}}; each sequence has the same keys but
    `sequences`."""
    trackers: dict[str, Any] = {}
    for name, per_sequence in evaluation.items():
        entry: dict[str, Any] = {k: _number(v) for k, v in overall(per_sequence).items()}
        entry["calibration"] = calibration.calibration_summary(pooled_calibration(per_sequence))
        entry["sequences"] = {
            seq: {
                "auc": _number(e.scores.auc),
                "precision": _number(e.scores.precision),
                "norm_precision": _number(e.scores.norm_precision),
                "ao": _number(e.scores.average_overlap),
                "sr50": _number(e.scores.success_rate_50),
                "sr75": _number(e.scores.success_rate_75),
                "fps": _number(e.fps),
                **({"calibration": calibration.calibration_summary(e.calibration)}
                   if e.calibration is not None else {}),
            }
            for seq, e in per_sequence.items()
        }
        trackers[name] = entry
    return {"trackers": trackers}


def write_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path


Column = tuple[str, str, str]  # (key, header, format)
OPE_COLUMNS: list[Column] = [("auc", "AUC", "{:.3f}"), ("precision", "P@20", "{:.3f}"),
                             ("norm_precision", "NP", "{:.3f}"), ("ao", "AO", "{:.3f}"), ("fps", "FPS", "{:.1f}")]
CALIBRATION_COLUMNS: list[Column] = [("ece", "ECE", "{:.3f}"), ("ece_raw", "ECE raw", "{:.3f}"),
                                     ("auroc", "AUROC", "{:.3f}"),
                                     ("absent_frames", "absent", "{:d}"), ("absent_flagged", "abs-LU", "{:.3f}"),
                                     ("present_lost", "pres-L", "{:.3f}"), ("returns", "returns", "{:d}"),
                                     ("reacquired", "reacq", "{:.3f}")]
CALIBRATION_LEGEND = (
    "ECE, AUROC: the confidence against being on target (IoU >= 0.5), present frames after init;\n"
    "ECE raw: the same frames' scores before the tracker's calibration (the same where none is applied)\n"
    "absent: frames with NaN ground truth; abs-LU: share of them reported LOST or UNCERTAIN;\n"
    "pres-L: share of present frames reported LOST; returns: the target back after an absence;\n"
    f"reacq: share of returns tracked on target (TRACKING, IoU >= 0.5) within {calibration.REACQUIRE_FRAMES} frames"
)


def _grid(summary: Mapping[str, Any], columns: list[Column], block: str | None = None) -> str:
    """Sequences as rows (overall last), trackers side by side with `columns` of each entry
    (of its `block` sub-dictionary where given)."""
    trackers = summary["trackers"]
    names = list(trackers)
    sequences: list[str] = []
    for entry in trackers.values():
        sequences.extend(s for s in entry["sequences"] if s not in sequences)
    cell = 7
    group = len(columns) * (cell + 1) - 1
    seq_width = max([len("sequence"), len("overall")] + [len(s) for s in sequences])

    def fmt(value: float | None, pattern: str) -> str:
        return ("-" if value is None else pattern.format(value)).rjust(cell)

    def row(label: str, values: list[Mapping[str, Any] | None]) -> str:
        parts = [label.ljust(seq_width)]
        for v in values:
            if v is not None and block is not None:
                v = v.get(block)
            parts.append(" ".join(fmt(None if v is None else v.get(key), pat) for key, _, pat in columns))
        return " | ".join(parts)

    headers = " ".join(h.rjust(cell) for _, h, _ in columns)
    lines = [
        " | ".join([" " * seq_width] + [n[:group].center(group) for n in names]),
        " | ".join(["sequence".ljust(seq_width)] + [headers] * len(names)),
    ]
    lines.append("-" * len(lines[1]))
    for seq in sequences:
        lines.append(row(seq, [trackers[n]["sequences"].get(seq) for n in names]))
    lines.append("-" * len(lines[1]))
    lines.append(row("overall", [trackers[n] for n in names]))
    return "\n".join(lines)


def format_table(summary: Mapping[str, Any]) -> str:
    """Sequences as rows (overall last), trackers side by side with AUC / P@20 / NP / AO / FPS."""
    return _grid(summary, OPE_COLUMNS)


def format_calibration_table(summary: Mapping[str, Any]) -> str:
    """The same grid with ECE / AUROC / absent frames / abs-LU / pres-L, a legend and any
    note on results without states."""
    lines = [_grid(summary, CALIBRATION_COLUMNS, block="calibration"), CALIBRATION_LEGEND]
    for name, entry in summary["trackers"].items():
        note = (entry.get("calibration") or {}).get("note")
        if note:
            lines.append(f"{name}: {note}")
    return "\n".join(lines)


def plot_curves(evaluation: Evaluation, out_dir: str | Path, title: str = "OPE") -> list[Path]:
    """success.png and precision.png with every tracker, best first in the legend (as OTB plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {name: mean_curves(per_seq) for name, per_seq in evaluation.items() if per_seq}
    plots = [
        ("success.png", "success", metrics.IOU_THRESHOLDS, "Overlap threshold (IoU)", "Success rate",
         f"Success plots of {title}", lambda c: float(np.mean(c)), "AUC"),
        ("precision.png", "precision", metrics.CENTER_ERROR_THRESHOLDS, "Location error threshold (px)",
         "Precision", f"Precision plots of {title}",
         lambda c: float(c[int(metrics.PRECISION_PIXELS)]), "P@20"),
    ]
    written = []
    for filename, key, thresholds, xlabel, ylabel, plot_title, scalar, score_name in plots:
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        ranked = sorted(curves.items(), key=lambda item: -np.nan_to_num(scalar(item[1][key]), nan=-1.0))
        for name, c in ranked:
            ax.plot(thresholds, c[key], linewidth=2, label=f"{name} [{scalar(c[key]):.3f}]")
        ax.set(xlim=(thresholds[0], thresholds[-1]), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel,
               title=plot_title)
        ax.grid(True, alpha=0.3)
        if ranked:
            ax.legend(loc="lower left" if key == "success" else "lower right", title=score_name, fontsize=9)
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def plot_reliability(evaluation: Evaluation, out_dir: str | Path, title: str = "OPE") -> Path:
    """reliability.png: every tracker's reliability diagram (share on target against mean
    confidence per bin, pooled over sequences; the diagonal is a calibrated tracker) above
    the share of its frames in each bin, so an empty or thin bin is not over-read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), dpi=100, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for name, per_seq in evaluation.items():
        frames = pooled_calibration(per_seq)
        diagram = calibration.reliability(frames.confidence, frames.on_target)
        ece = calibration.expected_calibration_error(frames.confidence, frames.on_target)
        filled = diagram.frames > 0
        label = f"{name} [ECE {ece:.3f}]" if math.isfinite(ece) else f"{name} [no frames]"
        (line,) = top.plot(diagram.confidence[filled], diagram.on_target[filled], marker="o", linewidth=2,
                           label=label)
        total = max(int(diagram.frames.sum()), 1)
        bottom.step(diagram.edges, np.r_[diagram.frames / total, 0.0], where="post", color=line.get_color())
    top.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="share on target (IoU >= 0.5)",
            title=f"Reliability of the confidence, {title}")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bottom.set(xlabel="confidence", ylabel="share of frames", xlim=(0, 1))
    bottom.set_xticks(np.linspace(0, 1, 11))
    bottom.grid(True, alpha=0.3)
    fig.tight_layout()
    path = out_dir / "reliability.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def make_report(
    out_dir: str | Path,
    tracker_names: Iterable[str],
    sequences: list[Sequence],
    results: Mapping[str, Mapping[str, SequenceResult]] | None = None,
    title: str = "OPE",
) -> dict[str, Any]:
    """Evaluate, write OUT/summary.json, success.png, precision.png, reliability.png; return
    the summary."""
    evaluation = evaluate(out_dir, list(tracker_names), sequences, results)
    summary = summarize(evaluation)
    write_summary(summary, Path(out_dir) / "summary.json")
    plot_curves(evaluation, out_dir, title)
    plot_reliability(evaluation, out_dir, title)
    return summary
