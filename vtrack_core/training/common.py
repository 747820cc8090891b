"""What every tracker's training entry point shares: the validator that runs the real
tracker on held-back sequences, the export of the weights file the tracker loads, and the
provenance file that says where a set of weights came from."""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..eval.datasets import Sequence
from ..provenance import git_commit, sha256  # noqa: F401  (re-exported: the trainers use them)
from .loop import TrainingResult


PROVENANCE = "provenance.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_tracking_validator(make_tracker: Callable[[Path], Any], label: str, val_sequences: list[Sequence],
                            max_frames: int | None):
    """validate(model, epoch, weights_path) -> {'auc': mean, 'auc_<seq>': ...}: the real
    tracker, built by `make_tracker(weights_path)` from the file just saved (as users load
    it), over the first `max_frames` frames of each validation sequence."""
    from ..eval.metrics import score
    from ..eval.runner import run_sequence

    heads = [s.head(max_frames) for s in val_sequences]

    def validate(model: torch.nn.Module, epoch: int, weights_path: Path) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for sequence in heads:
            result = run_sequence(make_tracker(weights_path), sequence, label=label)
            metrics[f"auc_{sequence.name}"] = float(score(result.boxes, sequence.ground_truth).auc)
        values = [v for v in metrics.values() if math.isfinite(v)]
        return {"auc": float(np.mean(values)) if values else float("nan"), **metrics}

    return validate


def write_provenance(out: Path, tracker: str, data_dir: str | Path, result: TrainingResult, weights: Path,
                     half: bool, lr: dict[str, Any], started: str, code_version: dict[str, Any], device: str,
                     resume: bool, details: dict[str, Any]) -> Path:
    """OUT/provenance.json: the data, settings (`details`), code commit, per-epoch loss and
    validation AUC, the weights' hash, and every run that built it (resumes append)."""
    path = out / PROVENANCE
    previous: dict[str, Any] = {}
    if resume and path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    runs = list(previous.get("runs", []))
    runs.append({"started": started, "finished": now(), "from_epoch": result.resumed_from + 1,
                 "to_epoch": len(result.history), "device": device, "threads": torch.get_num_threads()})
    val_auc = [e.get("val", {}).get("auc") for e in result.history]
    provenance = {
        "tracker": tracker,
        "data_dir": str(Path(data_dir).resolve()),
        **details,
        "lr": {**lr, "per_epoch": [e["lr"] for e in result.history]},
        "half": half,
        "git": code_version,
        "torch": torch.__version__,
        "loss_per_epoch": [e["loss"] for e in result.history],
        "val_auc_per_epoch": val_auc,
        "best_epoch": result.best_epoch,
        "best_val_auc": val_auc[result.best_epoch - 1] if result.best_epoch else None,
        "weights": {"file": weights.name, "sha256": sha256(weights), "dtype": "float16" if half else "float32"},
        "started": runs[0]["started"],
        "finished": runs[-1]["finished"],
        "runs": runs,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(provenance, indent=1))
    os.replace(tmp, path)
    return path


def save_weights(state: dict[str, torch.Tensor], target: str | Path) -> Path:
    """Write an exported state dict atomically (a crash never leaves half a weights file)."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target


def export_weights(source: str | Path, target: str | Path, half: bool = False,
                   keep: Callable[[str], bool] = lambda key: True,
                   keep_fp32: Callable[[str], bool] = lambda key: False) -> Path:
    """A training state dict -> the file a tracker loads: the `keep` keys without batch-norm
    counters (trackers do not count), floating tensors in fp16 with `half` (half the file;
    loaders turn them back into float32) except the `keep_fp32` ones, written atomically."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {k: (v.half() if half and v.is_floating_point() and not keep_fp32(k) else v)
             for k, v in state.items() if keep(k) and not k.endswith("num_batches_tracked")}
    return save_weights(state, target)
