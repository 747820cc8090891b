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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..eval.datasets import DatasetError, Sequence
from ..tracker import Tracker
from .entry import PretrainedTrunk, Trainer
from .loop import LossFn, TrainingResult
from .options import BATCH_SIZE, TRUNK_OPTIONS, Option, positive, probability
from .siamfc_data import CachedSequence, SiamFCDataConfig, SiamFCPairs, build_cache, region_sequence


def siamfc_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 3-4: log(1 + exp(-y v)) over the score map, weighted (each class sums to 0.5 per
    map), summed over the map and averaged over the batch."""
    scores = model(batch["exemplar"], batch["search"])
    targets = (batch["labels"] + 1.0) / 2.0  # -1/+1 -> 0/1: BCE-with-logits is then eq. 3
    loss = F.binary_cross_entropy_with_logits(scores, targets, weight=batch["weights"], reduction="sum")
    return loss / scores.shape[0]


@dataclass(kw_only=True)
class SiamFCTrainer(PretrainedTrunk, Trainer):
    """SiamFC's settings (beyond `Trainer`'s) and its parts of the run."""

    name = "siamfc"
    title = "SiamFC"
    weights_name = "siamfc.pt"
    summary = "SiamFC (sec. 2.2-2.4, 3.2): exemplar / search pairs, logistic loss; AlexNet from scratch or a pretrained trunk"
    positive_settings = ("epochs", "pairs_per_epoch", "batch_size")
    options = (
        Option("--pairs-per-epoch", "pairs_per_epoch", "sampled pairs an epoch (default and paper: {default})",
               type=positive),
        BATCH_SIZE,
        Option("--cache-dir", "cache_dir", "cropped-pair cache (default OUT/cache; reused when it matches)"),
        Option("--region-prob", "data_config.region_prob",
               "share of still pairs around random boxes of training frames (default {default})", type=probability),
        Option("--backbone", "backbone", "alexnet (Table 1, from scratch) or an ImageNet trunk at stride 8 "
               "(default {default})", choices=("alexnet", "mobilenet_v2", "efficientnet_lite0")),
        *TRUNK_OPTIONS,
    )
    default_notes = {"lr": "the paper's"}

    pairs_per_epoch: int = 50_000
    batch_size: int = 8
    cache_dir: str | Path | None = None
    lr: tuple[float, float] = (1e-2, 1e-5)
    data_config: SiamFCDataConfig = field(default_factory=SiamFCDataConfig)
    channels_last: bool = False
    backbone: str = "alexnet"
    freeze_up_to: str = "stage3"  # fine-tuning a trunk: these early stages stay frozen

    def prepare(self, train: list[Sequence], out: Path) -> None:
        config, cache_dir = self.data_config, self.cache_dir or out / "cache"
        self.train = train
        self.cached: list[CachedSequence] = build_cache(train, cache_dir, config, threads=self.threads,
                                                        progress_bar=self.progress)
        if not any(len(c) for c in self.cached):
            raise DatasetError(f"{self.data_dir}: every frame of the training sequences fails the curation rules")
        regions: list[CachedSequence] = []
        if config.region_prob > 0:
            region_seqs = [region_sequence(s, s.image(0).shape[1::-1], config) for s in train]
            region_seqs = [r for r in region_seqs if len(r)]
            regions = build_cache(region_seqs, cache_dir, config, threads=self.threads, progress_bar=self.progress)
        self.pairs = SiamFCPairs(self.cached, config, seed=self.seed, regions=regions)

    def iterations(self) -> int:
        return math.ceil(self.pairs_per_epoch / self.batch_size)

    def build_model(self) -> torch.nn.Module:
        """AlexNet: random initialisation (sec. 3.2). A pretrained trunk: its ImageNet weights,
        frozen (all, or up to `freeze_up_to` when fine-tuned), batch norms of frozen stages in
        eval; the adjust layer and head start random."""
        from ..trackers.siamfc import SiamFCNet

        if self.backbone == "alexnet":
            self.frozen: list[str] = []
            return SiamFCNet()
        model = SiamFCNet(backbone=self.backbone, trunk_weights=None)
        self.freeze_trunk(model.backbone.trunk, "backbone.trunk.", model.backbone.tap)
        return model

    def parameters(self, model: torch.nn.Module) -> list[Any] | None:
        if self.backbone == "alexnet":
            return None
        rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.trunk.")]
        return [{"params": rest, "lr_scale": 1.0}, *self.trunk_group(model)]

    def exported(self, key: str) -> bool:  # type: ignore[override]
        return self.trained(key)

    def loss(self) -> LossFn:
        return siamfc_loss

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        return self.pairs.batches(epoch, self.batch_size)

    def make_tracker(self, weights: Path, device: str) -> Tracker:
        from ..trackers.siamfc import SiamFCConfig, SiamFCTracker

        return SiamFCTracker(SiamFCConfig(weights=str(weights), device=device, backbone=self.backbone))

    def model_details(self) -> dict[str, Any]:
        if self.backbone == "alexnet":
            return {"backbone": "alexnet"}
        return {"backbone": self.backbone, **self.trunk_details()}

    def loop_settings(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last}

    @staticmethod
    def fp32_in_half(key: str) -> bool:
        # `load_siamfc_weights` turns the fp16 backbone back into float32; the head's two scalars stay float32.
        return key.startswith("head.")

    def trained_sequences(self) -> list[tuple[Sequence, int]]:
        return [(s, len(c)) for s, c in zip(self.train, self.cached)]

    def epoch_details(self) -> dict[str, Any]:
        return {"pairs_per_epoch": self.pairs_per_epoch, "batch_size": self.batch_size,
                "iterations_per_epoch": self.iterations()}


def train_siamfc(data_dir: str | Path, out_dir: str | Path, epochs: int, **settings: Any) -> TrainingResult:
    """Train SiamFC (`settings`: `SiamFCTrainer`'s fields); `extra['weights']` = OUT/siamfc.pt,
    `extra['provenance']` = OUT/provenance.json."""
    return SiamFCTrainer(data_dir, out_dir, epochs, **settings).run()
