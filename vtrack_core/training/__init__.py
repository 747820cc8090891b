"""Training: a tracker-agnostic loop (`loop`) and per-tracker data and entry points.

    from vtrack_core.training import train_siamfc
    train_siamfc("datasets/train", "out/siamfc", epochs=50, pairs_per_epoch=50_000)

or `vtrack train siamfc --data datasets/train --epochs 50 --out out/siamfc`.

The per-tracker parts are imported lazily, so `import vtrack_core.training` stays cheap.
"""
from __future__ import annotations

from typing import Any

from .loop import LoopConfig, TrainingResult, geometric_lr, run_training

TRAINABLE = {
    "siamfc": "vtrack_core.training.siamfc_train:train_siamfc",
    "fdn": "vtrack_core.training.fdn_train:train_fdn",
    "rar": "vtrack_core.training.rar_train:train_rar",
}

__all__ = ["LoopConfig", "TrainingResult", "geometric_lr", "run_training", "train_siamfc", "train_fdn", "train_rar", "TRAINABLE"]


def __getattr__(name: str) -> Any:
    if name == "train_siamfc":
        from .siamfc_train import train_siamfc

        return train_siamfc
    if name == "train_fdn":
        from .fdn_train import train_fdn

        return train_fdn
    if name == "train_rar":
        from .rar_train import train_rar

        return train_rar
    raise AttributeError(name)
