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

import logging
import math
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F

from ..eval.datasets import DatasetError, Sequence
from .common import git_commit, make_tracking_validator, now, save_weights, write_provenance
from .data import DEFAULT_VAL_SEQUENCES, split_sequences
from .loop import CHECKPOINT, LoopConfig, TrainingError, TrainingResult, geometric_lr, run_training
from .siamfc_data import SiamFCDataConfig, SiamFCPairs, build_cache, region_sequence

log = logging.getLogger(__name__)

DEFAULT_MAX_VAL_FRAMES = 150
WEIGHTS_NAME = "siamfc.pt"


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
    return save_weights(state, target)


def make_validator(val_sequences: list[Sequence], max_frames: int | None, device: str):
    """Validation AUC of `SiamFCTracker` built from each epoch's weights file."""
    from ..trackers.siamfc import SiamFCConfig, SiamFCTracker

    return make_tracking_validator(lambda weights: SiamFCTracker(SiamFCConfig(weights=str(weights), device=device)),
                                   "siamfc-val", val_sequences, max_frames)


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
    started = now()
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
    regions: list = []
    if data_config.region_prob > 0:
        region_seqs = [region_sequence(s, s.image(0).shape[1::-1], data_config) for s in train]
        region_seqs = [r for r in region_seqs if len(r)]
        regions = build_cache(region_seqs, cache_dir or out / "cache", data_config, threads=threads,
                              progress_bar=progress)
    pairs = SiamFCPairs(cached, data_config, seed=seed, regions=regions)
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

    provenance_path = write_provenance(
        out, "siamfc", data_dir, result, weights, half,
        {"schedule": "geometric per epoch", "start": lr[0], "end": lr[1]}, started, code_version,
        str(torch_device), resume,
        {
            "train_sequences": [{"name": c.name, "frames": len(s), "usable_frames": len(c)} for s, c in zip(train, cached)],
            "val_sequences": [s.name for s in val],
            "max_val_frames": max_val_frames,
            "epochs": epochs,
            "pairs_per_epoch": pairs_per_epoch,
            "batch_size": batch_size,
            "iterations_per_epoch": iterations,
            "seed": seed,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "data": data_config.to_dict(),
        },
    )
    result.extra.update({"weights": weights, "provenance": provenance_path})
    return result
