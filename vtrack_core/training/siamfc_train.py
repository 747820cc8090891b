"""Train SiamFC from scratch (Bertinetto et al. 2016, sec. 2.2 and 3.2) on OTB / GOT-10k
layout sequences: random init (Gaussian, improved-Xavier scaling), the logistic loss on the
score map (eq. 3-4, balanced weights), SGD with momentum 0.9 and weight decay 5e-4 (the
MatConvNet solver's), mini-batches of 8, learning rate annealed geometrically per epoch
from 1e-2 to 1e-5. Each epoch is validated by running the real tracker
(`SiamFCTracker`) with that epoch's weights over held-back training sequences.

Output folder:

    siamfc.pt        best-validation weights, a plain state dict (fp16 with half=True);
                     `SiamFCConfig(weights=...)` loads it
    provenance.json  data, sequences, settings, seed, git commit, validation AUC per epoch
    checkpoint.pt, last.pt, best.pt, history.json, curves.png   (see training.loop)
    cache/           cached crops (unless cache_dir is given elsewhere)
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..eval.datasets import DatasetError, Sequence, load_dataset
from .loop import CHECKPOINT, LoopConfig, TrainingError, TrainingResult, geometric_lr, run_training
from .siamfc_data import SiamFCDataConfig, SiamFCPairs, build_cache, video_of

log = logging.getLogger(__name__)

# Held back from the training set for validation: a person and a car seen from a drone,
# from videos no other training sequence comes from. (Never the dev set: that is for the
# final numbers only.)
DEFAULT_VAL_SEQUENCES = ("uav_person12_1", "uav_car10")
DEFAULT_MAX_VAL_FRAMES = 150
WEIGHTS_NAME = "siamfc.pt"
PROVENANCE = "provenance.json"


def siamfc_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 3-4: log(1 + exp(-y v)) over the score map, weighted (each class sums to 0.5 per
    map), summed over the map and averaged over the batch."""
    scores = model(batch["exemplar"], batch["search"])
    targets = (batch["labels"] + 1.0) / 2.0  # -1/+1 -> 0/1: BCE-with-logits is then eq. 3
    loss = F.binary_cross_entropy_with_logits(scores, targets, weight=batch["weights"], reduction="sum")
    return loss / scores.shape[0]


def export_weights(source: str | Path, target: str | Path, half: bool = False) -> Path:
    """A training state dict -> the file the tracker loads (no batch-norm counters; with `half`
    the backbone in fp16, which `load_siamfc_weights` turns back into float32; the head's two
    scalars stay float32)."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {k: (v.half() if half and v.is_floating_point() and not k.startswith("head.") else v)
             for k, v in state.items() if not k.endswith("num_batches_tracked")}
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target


def git_commit(path: str | Path | None = None) -> dict[str, Any]:
    """{'commit': sha or None, 'dirty': bool or None} of the repository holding `path`."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def make_validator(val_sequences: list[Sequence], max_frames: int | None, device: str):
    """validate(model, epoch, weights_path) -> {'auc': mean, 'auc_<seq>': ...}: the real
    tracker, built from the saved weights file, over the first `max_frames` frames."""
    from ..eval.metrics import score
    from ..eval.runner import run_sequence
    from ..trackers.siamfc import SiamFCConfig, SiamFCTracker

    heads = [s.head(max_frames) for s in val_sequences]

    def validate(model: torch.nn.Module, epoch: int, weights_path: Path) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for sequence in heads:
            tracker = SiamFCTracker(SiamFCConfig(weights=str(weights_path), device=device))
            result = run_sequence(tracker, sequence, label="siamfc-val")
            metrics[f"auc_{sequence.name}"] = float(score(result.boxes, sequence.ground_truth).auc)
        values = [v for v in metrics.values() if math.isfinite(v)]
        return {"auc": float(np.mean(values)) if values else float("nan"), **metrics}

    return validate


def train_siamfc(
    data_dir: str | Path,
    out_dir: str | Path,
    epochs: int,
    pairs_per_epoch: int,
    batch_size: int = 8,
    device: str = "auto",
    resume: bool = False,
    seed: int = 0,
    val_sequences: Iterable[str] = DEFAULT_VAL_SEQUENCES,
    max_val_frames: int | None = DEFAULT_MAX_VAL_FRAMES,
    train_sequences: Iterable[str] | None = None,
    cache_dir: str | Path | None = None,
    half: bool = False,
    lr: tuple[float, float] = (1e-2, 1e-5),
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    data_config: SiamFCDataConfig | None = None,
    threads: int | None = None,
    progress: bool = True,
    channels_last: bool = False,
) -> TrainingResult:
    """Train SiamFC; returns the loop's result (history, best epoch) with
    `extra['weights']` = OUT/siamfc.pt and `extra['provenance']` = OUT/provenance.json."""
    from ..device import resolve_device
    from ..trackers.siamfc import SiamFCNet

    if batch_size < 1 or pairs_per_epoch < 1 or epochs < 1:
        raise ValueError("epochs, pairs_per_epoch and batch_size must be >= 1")
    started = _now()
    code_version = git_commit()  # the code that trains, not whatever is checked out at the end
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        import cv2

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    if (out / CHECKPOINT).is_file() and not resume:  # before minutes of cache building
        raise TrainingError(f"{out} already holds a training run ({CHECKPOINT}); resume it or choose another folder")
    data_config = data_config or SiamFCDataConfig()
    train, val = split_sequences(data_dir, val_sequences, train_sequences)
    cached = build_cache(train, cache_dir or out / "cache", data_config, threads=threads, progress_bar=progress)
    if not any(len(c) for c in cached):
        raise DatasetError(f"{data_dir}: every frame of the training sequences fails the curation rules")
    pairs = SiamFCPairs(cached, data_config, seed=seed)
    iterations = math.ceil(pairs_per_epoch / batch_size)
    torch_device = resolve_device(device)

    torch.manual_seed(seed)  # the random initialisation (sec. 3.2) is part of the seeded run
    model = SiamFCNet()
    loop = LoopConfig(epochs=epochs, iterations=iterations, momentum=momentum, weight_decay=weight_decay,
                      device=str(torch_device), seed=seed, monitor="auc" if val else None, monitor_mode="max",
                      progress=progress, channels_last=channels_last)
    validate = make_validator(val, max_val_frames, str(torch_device)) if val else None
    result = run_training(
        model, siamfc_loss, lambda epoch: pairs.batches(epoch, batch_size), out, loop,
        geometric_lr(lr[0], lr[1], epochs), validate=validate, resume=resume, title="SiamFC",
    )
    weights = export_weights(result.best_weights, out / WEIGHTS_NAME, half=half)

    provenance_path = out / PROVENANCE
    previous: dict[str, Any] = {}
    if resume and provenance_path.is_file():
        try:
            previous = json.loads(provenance_path.read_text())
        except ValueError:
            previous = {}
    runs = list(previous.get("runs", []))
    runs.append({"started": started, "finished": _now(), "from_epoch": result.resumed_from + 1,
                 "to_epoch": len(result.history), "device": str(torch_device),
                 "threads": torch.get_num_threads()})
    val_auc = [e.get("val", {}).get("auc") for e in result.history]
    provenance = {
        "tracker": "siamfc",
        "data_dir": str(Path(data_dir).resolve()),
        "train_sequences": [{"name": c.name, "frames": len(s), "usable_frames": len(c)} for s, c in zip(train, cached)],
        "val_sequences": [s.name for s in val],
        "max_val_frames": max_val_frames,
        "epochs": epochs,
        "pairs_per_epoch": pairs_per_epoch,
        "batch_size": batch_size,
        "iterations_per_epoch": iterations,
        "seed": seed,
        "lr": {"schedule": "geometric per epoch", "start": lr[0], "end": lr[1],
               "per_epoch": [e["lr"] for e in result.history]},
        "momentum": momentum,
        "weight_decay": weight_decay,
        "half": half,
        "data": data_config.to_dict(),
        "git": code_version,
        "torch": torch.__version__,
        "loss_per_epoch": [e["loss"] for e in result.history],
        "val_auc_per_epoch": val_auc,
        "best_epoch": result.best_epoch,
        "best_val_auc": val_auc[result.best_epoch - 1] if result.best_epoch else None,
        "weights": {"file": WEIGHTS_NAME, "sha256": _sha256(weights), "dtype": "float16" if half else "float32"},
        "started": runs[0]["started"],
        "finished": runs[-1]["finished"],
        "runs": runs,
    }
    tmp = provenance_path.with_name(provenance_path.name + ".tmp")
    tmp.write_text(json.dumps(provenance, indent=1))
    os.replace(tmp, provenance_path)
    result.extra.update({"weights": weights, "provenance": provenance_path})
    return result
