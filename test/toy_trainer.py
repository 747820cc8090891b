"""A fifth trainable tracker, as small as a real one can be: one convolution that turns a
crop around the target into a heat map of where the target's centre is, trained on real
frames and validated by a tracker that follows the heat map's peak. It is written only
from the shared parts (Trainer, the data helpers, the crop), as a new tracker's trainer
would be: `register_trainer("toy", "toy_trainer:ToyTrainer")` and `vtrack train toy`
works, options, defaults, output folder and all."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vtrack_core.boxes import Box
from vtrack_core.config import TrackerConfig
from vtrack_core.eval.datasets import DatasetError, Sequence
from vtrack_core.ops.crops import warp_crop
from vtrack_core.tracker import Tracker
from vtrack_core.training.data import Curation, usable_frames
from vtrack_core.training.entry import Trainer
from vtrack_core.training.options import BATCH_SIZE, Option, positive

CROP = 32  # px: the crop around the target (twice its mean side) the net sees


class ToyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x / 255.0 - 0.5)[:, 0]


def crop_of(image: np.ndarray, centre: tuple[float, float], side: float) -> np.ndarray:
    """CROP x CROP x 3 float32 crop of `side` image px around `centre` (pixel-edge coordinates)."""
    fill = image.reshape(-1, 3).mean(axis=0)
    return warp_crop(image, (centre[0] - 0.5, centre[1] - 0.5), side, CROP, fill).astype(np.float32)


@dataclass
class ToyTrackerConfig(TrackerConfig):
    weights: str = ""


class ToyTracker(Tracker):
    """Moves the box to the heat map's peak; confidence: the peak's sigmoid."""

    name = "toy"
    config_class = ToyTrackerConfig

    def __init__(self, config: ToyTrackerConfig | None = None) -> None:
        super().__init__(config)
        self.net = ToyNet().eval()
        state = torch.load(self.config.weights, map_location="cpu", weights_only=True)
        self.net.load_state_dict({k: v.float() for k, v in state.items()})

    def _init(self, image: np.ndarray, box: Box) -> None:
        """Nothing to learn online: the trained heat map needs only the last box (kept by Tracker)."""

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        box = self.box
        side = 2.0 * (box.w + box.h) / 2.0
        centre = (box.x + box.w / 2.0, box.y + box.h / 2.0)
        patch = torch.from_numpy(crop_of(image, centre, side)).permute(2, 0, 1)[None]
        with torch.no_grad():
            heat = self.net(patch)[0]
        row, col = divmod(int(heat.argmax()), CROP)
        scale = side / CROP
        cx = centre[0] + (col - (CROP - 1) / 2.0) * scale
        cy = centre[1] + (row - (CROP - 1) / 2.0) * scale
        return Box(cx - box.w / 2.0, cy - box.h / 2.0, box.w, box.h), float(torch.sigmoid(heat.max()))


@dataclass
class ToyData:
    max_shift: float = 0.25  # of the crop: where the target's centre may sit
    sigma: float = 2.0  # label's Gaussian, crop px

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class ToyTrainer(Trainer):
    name = "toy"
    title = "toy heat map"
    weights_name = "toy.pt"
    summary = "one convolution that finds the target's centre (a test of the trainer registry)"
    positive_settings = ("epochs", "crops_per_epoch", "batch_size")
    options = (
        Option("--crops-per-epoch", "crops_per_epoch", "training crops an epoch (default {default})", type=positive),
        BATCH_SIZE,
        Option("--max-shift", "data_config.max_shift", "target centre's shift, of the crop (default {default})",
               type=float),
    )

    crops_per_epoch: int = 8
    batch_size: int = 4
    lr: tuple[float, float] = (1e-2, 1e-3)
    max_val_frames: int | None = 5
    data_config: ToyData = field(default_factory=ToyData)

    def prepare(self, train: list[Sequence], out: Path) -> None:
        self.train = train
        self.frames = [usable_frames(s, s.image(0).shape[1::-1], Curation()) for s in train]
        if not any(len(f) for f in self.frames):
            raise DatasetError("no usable frames")

    def iterations(self) -> int:
        return math.ceil(self.crops_per_epoch / self.batch_size)

    def build_model(self) -> torch.nn.Module:
        return ToyNet()

    def loss(self):
        def heat_map_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(model(batch["crops"]), batch["labels"])

        return heat_map_loss

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch])
        grid = np.arange(CROP) - (CROP - 1) / 2.0
        usable = [i for i, f in enumerate(self.frames) if len(f)]
        while True:
            crops, labels = [], []
            for _ in range(self.batch_size):
                index = usable[int(rng.integers(len(usable)))]
                sequence, frame = self.train[index], int(rng.choice(self.frames[index]))
                x, y, w, h = sequence.ground_truth[frame]
                side = w + h
                shift = rng.uniform(-1, 1, 2) * self.data_config.max_shift * CROP
                centre = (x + w / 2 - shift[0] * side / CROP, y + h / 2 - shift[1] * side / CROP)
                crops.append(crop_of(cv2.imread(str(sequence.frames[frame])), centre, side))
                d2 = (grid[None, :] - shift[0]) ** 2 + (grid[:, None] - shift[1]) ** 2
                labels.append(np.exp(-d2 / (2 * self.data_config.sigma ** 2)).astype(np.float32))
            yield {"crops": torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous(),
                   "labels": torch.from_numpy(np.stack(labels))}

    def make_tracker(self, weights: Path, device: str) -> ToyTracker:
        return ToyTracker(ToyTrackerConfig(weights=str(weights), device=device))

    def trained_sequences(self) -> list[tuple[Sequence, int]]:
        return [(s, len(f)) for s, f in zip(self.train, self.frames)]

    def epoch_details(self) -> dict[str, Any]:
        return {"crops_per_epoch": self.crops_per_epoch, "batch_size": self.batch_size,
                "iterations_per_epoch": self.iterations()}
