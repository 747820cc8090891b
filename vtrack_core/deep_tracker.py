"""What every deep tracker shares: where it runs (device, dtype), its weights file (the
packaged default, or the user's, with one clear error when it is missing), the first frame's
mean colour that pads crops outside the image, and the target state as one centre / size
pair. Each tracker module then holds only its network and online logic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .boxes import Box
from .calibration import CalibrationSource
from .config import TrackerConfig
from .device import resolve_device
from .ops.crops import image_to_tensor
from .tracker import Tracker
from .weights import WeightsError

PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass
class DeepTrackerConfig(TrackerConfig):
    """Settings every deep tracker has (besides device, threshold and LOST rule)."""

    weights: str = ""  # empty: the tracker's packaged weights (vtrack_core/weights/<name>.pt)
    half: bool = False  # fp16 on CUDA (trackers keep positions and their online learning in fp32)
    backbone: str = ""  # feature extractor (vtrack_core.backbones); each tracker sets its default
    calibration: str = ""  # score -> probability map: empty: <weights stem>.calibration.json beside the
    #                        weights if there is one (else the raw score) | none: the raw score | FILE


class DeepTracker(Tracker):
    """A tracker with a network. Subclasses implement `_start(frame, image)` and
    `_track(frame, image) -> confidence` and keep `center` / `target_size` up to date;
    `frame` is the image uploaded once to the device (1 x 3 x H x W float32 BGR 0..255)."""

    config: DeepTrackerConfig
    weights_formats: ClassVar[str] = "our checkpoints"  # what `weights=FILE` may be, for the error message
    trainable: ClassVar[bool] = True  # `vtrack train NAME` makes its weights
    backbones: ClassVar[tuple[str, ...]] = ()  # the `backbone` settings it runs on

    def __init__(self, config: DeepTrackerConfig | None = None) -> None:
        super().__init__(config)
        if self.backbones and self.config.backbone not in self.backbones:
            raise ValueError(f"{self.name}: backbone must be one of {', '.join(self.backbones)}, "
                             f"got {self.config.backbone!r}")
        self.device = resolve_device(self.config.device)
        self.dtype = torch.float16 if self.config.half and self.device.type == "cuda" else torch.float32
        self.center = np.zeros(2)  # target centre (x, y), pixel-edge coordinates
        self.target_size = np.zeros(2)  # target (w, h)
        self.fill: torch.Tensor | None = None  # first frame's mean colour (3,), pads crops

    @classmethod
    def default_weights(cls, backbone: str = "") -> Path:
        """vtrack_core/weights/<name>.pt for the first of `backbones` (the tracker's original
        network), <name>_<backbone>.pt for another one."""
        if not backbone or not cls.backbones or backbone == cls.backbones[0]:
            return PACKAGED_WEIGHTS / f"{cls.name}.pt"
        return PACKAGED_WEIGHTS / f"{cls.name}_{backbone}.pt"

    @classmethod
    def calibration_source(cls, config: TrackerConfig) -> CalibrationSource:
        """<weights stem>.calibration.json beside the weights file the tracker loads, fitted
        for that file's sha256 (`vtrack calibrate NAME` writes it)."""
        weights = (Path(config.weights) if getattr(config, "weights", "")
                   else cls.default_weights(getattr(config, "backbone", "")))
        return CalibrationSource(weights.with_name(f"{weights.stem}.calibration.json"), {"weights": weights})

    def weights_path(self) -> Path:
        """The weights file this tracker loads; a clear error when it does not exist."""
        path = Path(self.config.weights) if self.config.weights else self.default_weights(self.config.backbone)
        if not path.is_file():
            how = f"train them with `vtrack train {self.name}` or " if self.trainable else ""
            raise WeightsError(f"{self.name}: no weights at {path}; {how}set weights=FILE ({self.weights_formats})")
        return path

    def target_box(self) -> Box:
        return Box.from_center(self.center[0], self.center[1], self.target_size[0], self.target_size[1])

    def keep_in_image(self, image_shape: tuple[int, ...], min_side: float = 4.0) -> None:
        """Centre inside the image, size between `min_side` and the image's."""
        height, width = image_shape[:2]
        self.center = np.clip(self.center, 0, [width - 1, height - 1])
        self.target_size = np.clip(self.target_size, min_side, [width, height])

    def _init(self, image: np.ndarray, box: Box) -> None:
        self.center = np.array(box.center, dtype=np.float64)
        self.target_size = np.array([box.w, box.h], dtype=np.float64)
        frame = image_to_tensor(image, self.device)  # float32: crops are placed at full precision
        self.fill = frame.mean(dim=(2, 3)).reshape(3)
        self._start(frame, image)

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        confidence = self._track(image_to_tensor(image, self.device), image)
        return self.reported_box(), confidence

    def reported_box(self) -> Box:
        """The box published for this frame: the state, unless a tracker refines it."""
        return self.target_box()

    def _start(self, frame: torch.Tensor, image: np.ndarray) -> None:
        """Learn the target (at `center` / `target_size`) from the first frame."""
        raise NotImplementedError

    def _track(self, frame: torch.Tensor, image: np.ndarray) -> float:
        """Move `center` / `target_size` to the target in this frame; its raw confidence 0..1."""
        raise NotImplementedError
