"""The one skeleton of every tracker's training entry point (`Trainer.run`), so that a
tracker supplies only what is its own: its data, model, loss, the tracker that validates
its weights, its export and its provenance details.

What `run` does for every tracker, in this order (the order of the random draws is part of
a seeded run: data first, then `torch.manual_seed(seed)` and the model's initialisation):

1. settings checked (`positive_settings` >= 1), start time and code commit noted, OUT made,
   threads set, and an existing OUT/checkpoint.pt without `resume` refused before any slow
   work;
2. the device resolved (a missing one fails at once) and the dataset split into training
   and validation sequences;
3. `prepare(train, out)`: the tracker's training data;
4. `torch.manual_seed(seed)`, `build_model()`, `parameters(model)`;
5. the shared loop (`loop.run_training`): `iterations()` per epoch, `loss()`, `batches`, the
   learning rate annealed geometrically from `lr[0]` to `lr[1]`, each epoch validated by
   the real tracker (`make_tracker`) on the validation sequences, best epoch by AUC;
6. the best epoch's weights exported to OUT/`weights_name` (`exported` keys, fp16 with
   `half` except `fp32_in_half` keys), and OUT/provenance.json written.

The settings are the dataclass fields: the ones here are every tracker's, a subclass adds
its own (keyword-only) and sets its defaults; they are declared once, and `vtrack train`
reads its defaults from them (`options`, see `training.options`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, MISSING, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from ..eval.datasets import Sequence
from ..tracker import Tracker
from .common import export_weights, git_commit, make_tracking_validator, now, write_provenance
from .data import DEFAULT_VAL_SEQUENCES, split_sequences
from .loop import CHECKPOINT, LoopConfig, LossFn, TrainingError, TrainingResult, geometric_lr, run_training
from .options import Option


@dataclass
class Trainer(ABC):
    """One training run of one tracker's network: `SomeTrainer(data_dir, out_dir, epochs,
    **settings).run()`. Subclasses are dataclasses too (`@dataclass(kw_only=True)`)."""

    name: ClassVar[str]  # as `vtrack train NAME` and the provenance's "tracker"
    title: ClassVar[str]  # of the curves
    weights_name: ClassVar[str]  # OUT/<weights_name>: the file the tracker loads
    summary: ClassVar[str] = ""  # one line for `vtrack train --help`
    options: ClassVar[tuple[Option, ...]] = ()  # its own `vtrack train` options (the shared ones: options.py)
    positive_settings: ClassVar[tuple[str, ...]] = ("epochs",)  # settings that must be >= 1
    sequences_key: ClassVar[str] = "train_sequences"  # provenance: the training sequences under this key
    default_notes: ClassVar[dict[str, str]] = {}  # `--help` text for defaults a value cannot say

    data_dir: str | Path
    out_dir: str | Path
    epochs: int
    _: KW_ONLY
    lr: tuple[float, float]  # start, end; every tracker sets its own default
    device: str = "auto"
    resume: bool = False
    seed: int = 0
    val_sequences: Iterable[str] = DEFAULT_VAL_SEQUENCES
    max_val_frames: int | None = 150  # a tracker may set its own (FDN: 100)
    train_sequences: Iterable[str] | None = None
    half: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4
    threads: int | None = None
    progress: bool = True
    data_config: Any = None  # the tracker's data settings (a dataclass with to_dict()), for the provenance

    def __post_init__(self) -> None:
        if any(getattr(self, name) < 1 for name in self.positive_settings):
            raise ValueError(f"{_and(self.positive_settings)} must be >= 1")
        for f in fields(self):  # `data_config=None` and the like: the default
            if f.default_factory is not MISSING and getattr(self, f.name) is None:
                setattr(self, f.name, f.default_factory())

    @classmethod
    def default(cls, setting: str) -> Any:
        """The default of a setting; 'data_config.region_prob' reads a field of the default
        data config. MISSING for a setting without one."""
        name, _, inner = setting.partition(".")
        f = {f.name: f for f in fields(cls)}[name]
        value = f.default if f.default_factory is MISSING else f.default_factory()
        return getattr(value, inner) if inner and value is not MISSING else value

    # --- the skeleton ---------------------------------------------------------------------
    def run(self) -> TrainingResult:
        """Train; returns the loop's result (history, best epoch) with
        `extra['weights']` = OUT/<weights_name> and `extra['provenance']` = OUT/provenance.json."""
        from ..device import resolve_device

        started = now()
        code_version = git_commit()  # the code that trains, not whatever is checked out at the end
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.set_threads()
        if (out / CHECKPOINT).is_file() and not self.resume:  # before minutes of data preparation
            raise TrainingError(f"{out} already holds a training run ({CHECKPOINT}); resume it or choose another folder")
        device = str(resolve_device(self.device))
        train, val = split_sequences(self.data_dir, self.val_sequences, self.train_sequences)
        self.prepare(train, out)

        torch.manual_seed(self.seed)  # the random initialisation is part of the seeded run
        model = self.build_model()
        parameters = self.parameters(model)
        lr = self.learning_rates()
        loop = LoopConfig(epochs=self.epochs, iterations=self.iterations(), momentum=self.momentum,
                          weight_decay=self.weight_decay, device=device, seed=self.seed,
                          monitor="auc" if val else None, monitor_mode="max", progress=self.progress,
                          **self.loop_settings())
        validate = None
        if val:
            validate = make_tracking_validator(lambda weights: self.make_tracker(weights, device),
                                               f"{self.name}-val", val, self.max_val_frames)
        result = run_training(model, self.loss(), self.batches, out, loop, geometric_lr(lr[0], lr[1], self.epochs),
                              validate=validate, resume=self.resume, parameters=parameters, title=self.title)
        weights = self.export(result.best_weights, out / self.weights_name)
        provenance = write_provenance(
            out, self.name, self.data_dir, result, weights, self.half,
            {"schedule": "geometric per epoch", "start": lr[0], "end": lr[1], **self.lr_details()},
            started, code_version, device, self.resume, self.details(val),
        )
        result.extra.update({"weights": weights, "provenance": provenance})
        return result

    def details(self, val: list[Sequence]) -> dict[str, Any]:
        """provenance.json's settings part: the sequences, the shared settings and the tracker's own."""
        return {
            self.sequences_key: [{"name": s.name, "frames": len(s), "usable_frames": int(n)}
                                 for s, n in self.trained_sequences()],
            "val_sequences": [s.name for s in val],
            "max_val_frames": self.max_val_frames,
            "epochs": self.epochs,
            **self.epoch_details(),
            "seed": self.seed,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            **self.model_details(),
            **({"data": self.data_config.to_dict()} if self.data_config is not None else {}),
        }

    # --- what every tracker supplies ------------------------------------------------------
    @abstractmethod
    def prepare(self, train: list[Sequence], out: Path) -> None:
        """Build the training data from the training sequences (the slow part before the loop)."""

    @abstractmethod
    def iterations(self) -> int:
        """Iterations (batches) an epoch."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The network to train, freshly initialised (torch is seeded just before)."""

    @abstractmethod
    def loss(self) -> LossFn:
        """loss(model, batch) -> scalar tensor."""

    @abstractmethod
    def batches(self, epoch: int) -> Iterable[Any]:
        """Batches of `epoch`, drawn from a generator seeded by (seed, epoch) alone (see loop)."""

    @abstractmethod
    def make_tracker(self, weights: Path, device: str) -> Tracker:
        """The real tracker, loading `weights` as users do: what validation runs."""

    @abstractmethod
    def trained_sequences(self) -> list[tuple[Sequence, int]]:
        """(sequence, usable frames) of every sequence the data draws from, for the provenance."""

    @abstractmethod
    def epoch_details(self) -> dict[str, Any]:
        """Provenance: what an epoch is (its size settings and iterations_per_epoch)."""

    # --- what a tracker may change --------------------------------------------------------
    def set_threads(self) -> None:
        """torch's and OpenCV's threads, when `threads` is given."""
        if self.threads is not None:
            import cv2

            torch.set_num_threads(self.threads)
            cv2.setNumThreads(self.threads)

    def parameters(self, model: nn.Module) -> list[Any] | None:
        """What the optimizer updates (param groups with an 'lr_scale' allowed); None: every
        trainable parameter."""
        return None

    def learning_rates(self) -> tuple[float, float]:
        """(start, end) of the geometric schedule."""
        return tuple(self.lr)

    def lr_details(self) -> dict[str, Any]:
        """Provenance: more about the learning rates than start and end."""
        return {}

    def loop_settings(self) -> dict[str, Any]:
        """More `LoopConfig` fields (grad_clip, channels_last)."""
        return {}

    def model_details(self) -> dict[str, Any]:
        """Provenance: the model's settings."""
        return {}

    @staticmethod
    def exported(key: str) -> bool:
        """Whether the tracker's weights file holds the training state's `key`."""
        return True

    @staticmethod
    def fp32_in_half(key: str) -> bool:
        """Floating tensors that stay float32 in a `half` file."""
        return False

    def export(self, source: Path, target: Path) -> Path:
        """The best epoch's training state -> the tracker's weights file."""
        return export_weights(source, target, self.half, self.exported, self.fp32_in_half)


def _and(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(kw_only=True)
class PretrainedTrunk:
    """Settings and steps of a trainer whose network stands on a pretrained backbone (a
    `vtrack_core.backbones` network with installed ImageNet weights): the trunk frozen
    (`trunk_lr_scale` 0) or its stages after `freeze_up_to` fine-tuned at that share of the
    learning rate; frozen stages keep their batch norms in eval, and the exported file holds
    only what training changed (a frozen stage comes from the installed weights)."""

    trunk_lr_scale: float = 0.0
    freeze_up_to: str = ""

    def freeze_trunk(self, trunk: Any, prefix: str, tap: str) -> None:
        """Freeze `trunk` (named `prefix` in the model, e.g. 'backbone.', read at `tap`) as the
        settings say; fine-tuning without `freeze_up_to` trains the tap's own stage only."""
        if self.trunk_lr_scale < 0:
            raise ValueError(f"trunk_lr_scale must be >= 0, got {self.trunk_lr_scale}")
        stages = trunk.stage_names
        up_to = None if self.trunk_lr_scale == 0 else (self.freeze_up_to or stages[max(stages.index(tap) - 1, 0)])
        self.frozen = [prefix + name for name in trunk.freeze(up_to=up_to)]
        self.trunk_prefix = prefix

    def trunk_group(self, model: nn.Module) -> list[dict[str, Any]]:
        """The fine-tuned part of the trunk as an optimizer group at `trunk_lr_scale` (none when frozen)."""
        params = [p for n, p in model.named_parameters() if n.startswith(self.trunk_prefix) and p.requires_grad]
        return [{"params": params, "lr_scale": self.trunk_lr_scale}] if params else []

    def trained(self, key: str) -> bool:
        """Whether a state-dict key changed in training: not in a frozen module (whose
        parameters and batch-norm statistics stay those of the installed weights)."""
        frozen_modules = {name.rsplit(".", 1)[0] + "." for name in getattr(self, "frozen", ())}
        return not any(key.startswith(prefix) for prefix in frozen_modules)

    def trunk_details(self) -> dict[str, Any]:
        return {"trunk_lr_scale": self.trunk_lr_scale,
                "freeze_up_to": (self.freeze_up_to or "the stage before the tap") if self.trunk_lr_scale > 0 else "all",
                "frozen_parameters": len(getattr(self, "frozen", ()))}
