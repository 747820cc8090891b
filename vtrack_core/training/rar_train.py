"""Train RAR end to end (Gao et al., sec. 3.3-3.4) on OTB / GOT-10k layout sequences.

A sample is one template frame and `search_frames` later frames of the same sequence (at
most `max_gap` apart, in time order, so the LSTM of the attention module sees a short clip):

* template patch z_0: (1 + padding) * sqrt(w h) px square around the target, resized to
  `input_size` (225, sec. 3.4); k context patches of the same size one target size to the
  left, right, above and below (CACF);
* search patches x_j: the same size around the target of frame j, moved by up to
  `max_shift` of the patch side and rescaled by up to `scale_jitter`, so that the target
  sits off centre (as after motion) and the label moves with it.

The filter is solved in closed form from z_0 and its context (eq. 7) inside the graph; every
search patch is answered with eq. 5 and scored with eq. 8, ||g(x) - y||^2, y the Gaussian at
the target's true position. Gradients flow through the FFT solve into the template, context
and search branches (which share weights), as eq. 9. Frames pass the curation rules of the
SiamFC sampler (no absent targets, none truncated by the image border).

Optimiser (sec. 3.4): SGD, momentum 0.9, weight decay 5e-4, learning rate annealed
geometrically. The paper fine-tunes ImageNet ResNet-50 weights from 1e-3 to 1e-4 with the
first two stages frozen; `backbone_weights` (a torchvision resnet50 file) does exactly that.
Without ImageNet weights (our case) the whole network trains from scratch and the default
rates are 10x higher, as for our other from-scratch trainers.

Output folder: rar.pt (best-validation weights, exported), provenance.json, and the loop's
checkpoint.pt / last.pt / best.pt / history.json / curves.png.
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import cv2
import numpy as np
import torch

from ..eval.datasets import DatasetError, Sequence
from ..backbones.resnet import output_size
from ..ops.maps import gaussian_label, hann_window
from ..ops.crops import warp_crop
from ..tracker import Tracker
from ..trackers.rar import cell_pixels, context_offsets, label_sigma_cells, learn_filter, respond
from .data import Curation, photometric_jitter, usable_frames
from .entry import PretrainedTrunk, Trainer
from .loop import TrainingResult
from .options import BATCH_SIZE, TRUNK_OPTIONS, Option, format_default, positive

log = logging.getLogger(__name__)

FROZEN_WITH_IMAGENET = "layer1"  # the backbone up to conv2_x: "the first two residual blocks" (stem and conv2_x)


@dataclass
class RARDataConfig:
    input_size: int = 225
    padding: float = 2.0
    context_patches: int = 4
    search_frames: int = 2
    max_gap: int = 100
    max_shift: float = 0.12  # search patch centre moved by up to this fraction of its side
    scale_jitter: float = 0.05
    label_sigma: float = 0.1  # as RARConfig.label_sigma
    colour_jitter: float = 0.2
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    grey_prob: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


class RARSamples:
    """Batches of (template, context, search, labels) cut straight from the JPEG frames."""

    def __init__(self, sequences: list[Sequence], config: RARDataConfig | None = None, seed: int = 0,
                 threads: int = 2, size: int | None = None) -> None:
        """`size`: the side of the network's feature maps for the patches (the labels' side;
        default: the ResNet's Table 1 size)."""
        self.config = config or RARDataConfig()
        self.seed = int(seed)
        self.size = size or output_size(self.config.input_size)
        curation = Curation()  # the SiamFC sampler's rule: no absent or truncated targets
        self.sequences: list[Sequence] = []
        self.frames: list[np.ndarray] = []
        for sequence in sequences:
            first = cv2.imread(str(sequence.frames[0]), cv2.IMREAD_COLOR)
            if first is None:
                raise DatasetError(f"{sequence.frames[0]}: not an image")
            usable = usable_frames(sequence, (first.shape[1], first.shape[0]), curation)
            if len(usable) >= 2:
                self.sequences.append(sequence)
                self.frames.append(usable)
        if not self.sequences:
            raise DatasetError("no training sequence has two usable frames")
        counts = np.array([len(f) for f in self.frames], dtype=np.float64)
        self._sequence_prob = counts / counts.sum()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads))

    def __len__(self) -> int:
        return int(sum(len(f) for f in self.frames))

    def _patch(self, image: np.ndarray, center: np.ndarray, side: float, rng: np.random.Generator | None,
               grey: bool) -> np.ndarray:
        cfg = self.config
        fill = image.reshape(-1, 3).mean(axis=0)
        patch = warp_crop(image, (float(center[0]), float(center[1])), side, cfg.input_size, fill)
        if rng is None:
            return patch.astype(np.float32)
        return photometric_jitter(patch, rng, cfg.colour_jitter, cfg.blur_prob, cfg.blur_sigma, grey)

    def sample(self, rng: np.random.Generator, augment: bool = True) -> dict[str, np.ndarray]:
        cfg = self.config
        index = int(rng.choice(len(self.sequences), p=self._sequence_prob))
        sequence, usable = self.sequences[index], self.frames[index]
        slot = int(rng.integers(len(usable)))
        start = usable[slot]
        later = usable[(usable > start) & (usable <= start + cfg.max_gap)]
        if len(later) == 0:  # the clip's end: look back instead (the order is then reversed)
            later = usable[(usable < start) & (usable >= start - cfg.max_gap)][::-1]
        picks = np.sort(rng.choice(later, size=cfg.search_frames, replace=len(later) < cfg.search_frames))
        if later[0] < start:
            picks = picks[::-1]
        gt = sequence.ground_truth
        grey = bool(augment and rng.random() < cfg.grey_prob)
        jitter_rng = rng if augment else None

        template_image = cv2.imread(str(sequence.frames[start]), cv2.IMREAD_COLOR)
        x, y, w, h = (float(v) for v in gt[start])
        center = np.array([x + w / 2.0, y + h / 2.0])
        side = (1.0 + cfg.padding) * math.sqrt(w * h)
        template = self._patch(template_image, center, side, jitter_rng, grey)
        context = [self._patch(template_image, center + offset, side, jitter_rng, grey)
                   for offset in context_offsets(w, h, cfg.context_patches)]

        searches, labels = [], []
        for frame in picks:
            image = cv2.imread(str(sequence.frames[int(frame)]), cv2.IMREAD_COLOR)
            x, y, w, h = (float(v) for v in gt[int(frame)])
            target = np.array([x + w / 2.0, y + h / 2.0])
            scale = float(np.exp(rng.uniform(-1, 1) * math.log1p(cfg.scale_jitter))) if augment else 1.0
            search_side = side * scale  # the tracker searches at its last size estimate
            shift = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * search_side if augment else np.zeros(2)
            patch_center = target - shift
            searches.append(self._patch(image, patch_center, search_side, jitter_rng, grey))
            cell = cell_pixels(search_side, cfg.input_size)
            mid = (self.size - 1) / 2.0
            labels.append(gaussian_label(self.size, self.label_sigma_cells(),
                                         (mid + shift[1] / cell, mid + shift[0] / cell)).numpy())
        return {
            "template": template.transpose(2, 0, 1),
            "context": np.stack(context).transpose(0, 3, 1, 2) if context else np.zeros((0, 3, cfg.input_size, cfg.input_size), np.float32),
            "search": np.stack(searches).transpose(0, 3, 1, 2),
            "labels": np.stack(labels).astype(np.float32),
        }

    def label_sigma_cells(self) -> float:
        return label_sigma_cells(self.config.label_sigma, self.config.input_size, self.config.padding)

    def batch(self, rng: np.random.Generator, size: int, augment: bool = True) -> dict[str, torch.Tensor]:
        """template Bx3xHxW, context Bxkx3xHxW, search BxLx3xHxW (float32 BGR 0..255),
        labels BxLxSxS."""
        seeds = rng.integers(0, 2**63 - 1, size=size)
        samples = list(self._pool.map(lambda s: self.sample(np.random.default_rng(int(s)), augment), seeds))
        return {key: torch.from_numpy(np.ascontiguousarray(np.stack([s[key] for s in samples])))
                for key in samples[0]}

    def batches(self, epoch: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches for `epoch`, from a generator seeded by (seed, epoch) only."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        while True:
            yield self.batch(rng, batch_size)


class RARLoss:
    """Eq. 8 averaged over the search frames of every sample, filters from eq. 7 in the graph."""

    def __init__(self, size: int, label_sigma_cells: float, lambda1: float = 1e-4, lambda2: float = 0.1) -> None:
        self.size = size
        self.lambda1, self.lambda2 = lambda1, lambda2
        self.sigma = label_sigma_cells
        self._window: torch.Tensor | None = None
        self._label: torch.Tensor | None = None

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        template, context, search, labels = batch["template"], batch["context"], batch["search"], batch["labels"]
        if self._window is None or self._window.device != template.device:
            self._window = hann_window(self.size, device=template.device)
            self._label = gaussian_label(self.size, self.sigma, device=template.device)
        count, contexts = template.shape[0], context.shape[1]
        patches = torch.cat([template, context.flatten(0, 1)]) if contexts else template
        features, state = model(patches, None)
        features = features * self._window
        context_features = features[count:].reshape(count, contexts, *features.shape[1:]) if contexts else None
        filters = learn_filter(features[:count], self._label, context_features, self.lambda2)
        state = [None if s is None else (s[0][:count], s[1][:count]) for s in state]
        loss = template.new_zeros(())
        for frame in range(search.shape[1]):
            features, state = model(search[:, frame], state)
            response = respond(filters, features * self._window, self.lambda1)
            loss = loss + ((response - labels[:, frame]) ** 2).sum(dim=(1, 2)).mean()
        return loss / search.shape[1]


@dataclass(kw_only=True)
class RARTrainer(PretrainedTrunk, Trainer):
    """RAR's settings (beyond `Trainer`'s) and its parts of the run."""

    name = "rar"
    title = "RAR"
    weights_name = "rar.pt"
    summary = "RAR end to end (sec. 3.3-3.4): template, context and a search clip through the closed-form filter"
    positive_settings = ("epochs", "samples_per_epoch", "batch_size")
    LR_FROM_SCRATCH: ClassVar[tuple[float, float]] = (1e-2, 1e-3)
    LR_IMAGENET: ClassVar[tuple[float, float]] = (1e-3, 1e-4)  # the paper's
    options = (
        Option("--samples-per-epoch", "samples_per_epoch",
               "template + context + search-clip samples an epoch (default {default})", type=positive),
        BATCH_SIZE,
        Option("--backbone", "backbone", "light / resnet50 (Table 1's ResNet) or an ImageNet trunk at stride 8 "
               "(default {default})", choices=("light", "resnet50", "mobilenet_v2", "efficientnet_lite0")),
        *TRUNK_OPTIONS,
        Option("--clip-frames", "data_config.search_frames",
               "search frames after each template (in time order: what the attention's LSTM sees; default {default})",
               type=positive),
        Option("--backbone-weights", "backbone_weights",
               "torchvision resnet50 state dict to start from (conv1 and conv2_x then frozen, lr default "
               f"{format_default(LR_IMAGENET)} as the paper)", metavar="FILE"),
    )
    default_notes = {"lr": f"{format_default(LR_FROM_SCRATCH)} from scratch, the paper's "
                           f"{format_default(LR_IMAGENET)} with --backbone-weights or an ImageNet trunk"}

    samples_per_epoch: int = 4000
    batch_size: int = 8
    lr: tuple[float, float] | None = None  # None: LR_IMAGENET with backbone_weights, else LR_FROM_SCRATCH
    backbone: str = "mobilenet_v2"  # the tracker's default trunk
    backbone_weights: str | Path | None = None
    feature_channels: int = 64
    lstm_hidden: int = 32
    data_config: RARDataConfig = field(default_factory=RARDataConfig)
    grad_clip: float | None = 10.0
    # An ImageNet trunk trains end to end but for its stem, stage1 and stage2 (stride <= 4), as the
    # paper freezes conv1 and conv2_x.
    trunk_lr_scale: float = 1.0
    freeze_up_to: str = "stage2"

    def prepare(self, train: list[Sequence], out: Path) -> None:
        from ..trackers.rar import feature_size

        self.samples = RARSamples(train, self.data_config, seed=self.seed, threads=self.threads or 2,
                                  size=feature_size(self.backbone, self.data_config.input_size))

    def iterations(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def build_model(self) -> torch.nn.Module:
        """RARNet; with `backbone_weights` (ResNet-50) or an ImageNet trunk its pretrained
        stages loaded and the first two frozen."""
        from ..trackers.rar import PRETRAINED, RARNet, load_torchvision_resnet50

        model = RARNet(self.backbone, self.feature_channels, self.lstm_hidden, trunk_weights=None)
        self.frozen: list[str] = []
        if self.backbone in PRETRAINED:
            self.freeze_trunk(model.backbone, "backbone.", model.taps[-1])
        elif self.backbone_weights:
            load_torchvision_resnet50(model.backbone, self.backbone_weights)
            # Frozen stages also normalise with ImageNet's statistics in training (their batch
            # norms stay in eval mode), so they compute what the tracker will compute.
            self.frozen = ["backbone." + name for name in model.backbone.freeze(up_to=FROZEN_WITH_IMAGENET)]
        return model

    def learning_rates(self) -> tuple[float, float]:
        from ..trackers.rar import PRETRAINED

        pretrained = self.backbone_weights or self.backbone in PRETRAINED
        return tuple(self.lr or (self.LR_IMAGENET if pretrained else self.LR_FROM_SCRATCH))

    def parameters(self, model: torch.nn.Module) -> list[Any] | None:
        from ..trackers.rar import PRETRAINED

        if self.backbone not in PRETRAINED:
            return None
        rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        return [{"params": rest, "lr_scale": 1.0}, *self.trunk_group(model)]

    def exported(self, key: str) -> bool:  # type: ignore[override]
        return self.trained(key)

    def loss(self) -> RARLoss:
        return RARLoss(self.samples.size, self.samples.label_sigma_cells())

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        return self.samples.batches(epoch, self.batch_size)

    def make_tracker(self, weights: Path, device: str) -> Tracker:
        from ..trackers.rar import RARConfig, RARTracker

        return RARTracker(RARConfig(weights=str(weights), device=device, backbone=self.backbone,
                                    feature_channels=self.feature_channels, lstm_hidden=self.lstm_hidden))

    def loop_settings(self) -> dict[str, Any]:
        return {"grad_clip": self.grad_clip}

    def trained_sequences(self) -> list[tuple[Sequence, int]]:
        return [(s, len(f)) for s, f in zip(self.samples.sequences, self.samples.frames)]

    def epoch_details(self) -> dict[str, Any]:
        return {"samples_per_epoch": self.samples_per_epoch, "batch_size": self.batch_size,
                "iterations_per_epoch": self.iterations()}

    def model_details(self) -> dict[str, Any]:
        return {
            "grad_clip": self.grad_clip,
            "backbone": self.backbone,
            "backbone_weights": str(self.backbone_weights) if self.backbone_weights else None,
            "frozen_parameters": len(self.frozen),
            **(self.trunk_details() if self.backbone in ("mobilenet_v2", "efficientnet_lite0") else {}),
            "feature_channels": self.feature_channels,
            "lstm_hidden": self.lstm_hidden,
        }


def train_rar(data_dir: str | Path, out_dir: str | Path, epochs: int, **settings: Any) -> TrainingResult:
    """Train RAR (`settings`: `RARTrainer`'s fields); `extra['weights']` = OUT/rar.pt,
    `extra['provenance']` = OUT/provenance.json."""
    return RARTrainer(data_dir, out_dir, epochs, **settings).run()
