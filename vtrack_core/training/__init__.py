"""Training: a tracker-agnostic loop (`loop`), the entry skeleton every tracker's trainer
fills in (`entry.Trainer`), the shared data helpers (`data`), and the trainers.

    from vtrack_core.training import train_siamfc
    train_siamfc("datasets/train", "out/siamfc", epochs=50, pairs_per_epoch=50_000)

or `vtrack train siamfc --data datasets/train --epochs 50 --out out/siamfc`.

`TRAINABLE` is the one registry `vtrack train NAME` dispatches through; the trainers are
imported on first use, so `import vtrack_core.training` stays cheap and one tracker's broken
import never stops another's training. A new trainer is a `Trainer` subclass plus
`register_trainer(NAME, "module:Class")`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .loop import LoopConfig, TrainingResult, geometric_lr, run_training

if TYPE_CHECKING:
    from .entry import Trainer

TRAINABLE: dict[str, str | type[Trainer]] = {
    "siamfc": "vtrack_core.training.siamfc_train:SiamFCTrainer",
    "fdn": "vtrack_core.training.fdn_train:FDNTrainer",
    "rar": "vtrack_core.training.rar_train:RARTrainer",
}

_TRAIN_FUNCTIONS = {
    "train_siamfc": "vtrack_core.training.siamfc_train",
    "train_fdn": "vtrack_core.training.fdn_train",
    "train_rar": "vtrack_core.training.rar_train",
}

__all__ = ["LoopConfig", "TrainingResult", "geometric_lr", "run_training", "train_siamfc", "train_fdn", "train_rar",
           "TRAINABLE", "UnknownTrainerError", "register_trainer", "trainer_class"]


class UnknownTrainerError(LookupError):
    """A name that is not in TRAINABLE; the message lists the ones that are."""


def register_trainer(name: str, trainer: str | type[Trainer]) -> None:
    """Make `vtrack train NAME` (and `trainer_class(NAME)`) use `trainer`: a Trainer subclass
    whose `name` is NAME, or its 'module:Class' path, imported on first use."""
    TRAINABLE[name] = trainer


def trainer_class(name: str) -> type[Trainer]:
    """The Trainer subclass registered as `name` (imported now if registered by path)."""
    from .entry import Trainer

    if name not in TRAINABLE:
        raise UnknownTrainerError(f"cannot train {name!r}; trainable trackers: {', '.join(sorted(TRAINABLE))}")
    target = TRAINABLE[name]
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
    if not (isinstance(target, type) and issubclass(target, Trainer)) or target.name != name:
        raise TypeError(f"TRAINABLE[{name!r}] is {target!r}, not a Trainer subclass named {name!r}")
    TRAINABLE[name] = target
    return target


def __getattr__(name: str) -> Any:
    if name in _TRAIN_FUNCTIONS:
        return getattr(importlib.import_module(_TRAIN_FUNCTIONS[name]), name)
    raise AttributeError(name)
