"""Benchmark evaluation: read datasets, run trackers over them, score and report.

    from vtrack_core.eval import load_dataset, run_benchmark, make_report
    sequences = [s.head(300) for s in load_dataset("datasets/dev")]
    results = run_benchmark(["csrt", "kcf"], sequences, "out/dev")
    summary = make_report("out/dev", ["csrt", "kcf"], sequences, results)

Submodules import cv2 / matplotlib / tqdm only when used, so importing this stays cheap.
"""
from .calibration import auroc, calibration_summary, expected_calibration_error, reliability
from .datasets import DatasetError, Sequence, load_dataset, read_boxes
from .metrics import Scores, auc, normalized_precision, precision, precision_curve, score, success_curve
from .report import (evaluate, format_calibration_table, format_table, make_report, plot_curves, plot_reliability,
                     summarize, write_summary)
from .runner import SequenceResult, load_result, run_benchmark, run_sequence, save_result

__all__ = [
    "DatasetError",
    "Scores",
    "Sequence",
    "SequenceResult",
    "auc",
    "auroc",
    "calibration_summary",
    "evaluate",
    "expected_calibration_error",
    "format_calibration_table",
    "format_table",
    "load_dataset",
    "load_result",
    "make_report",
    "normalized_precision",
    "plot_curves",
    "plot_reliability",
    "precision",
    "precision_curve",
    "read_boxes",
    "reliability",
    "run_benchmark",
    "run_sequence",
    "save_result",
    "score",
    "success_curve",
    "summarize",
    "write_summary",
]
