"""OpenCV's classic trackers behind the vtrack Tracker interface, as baselines.

What `confidence` means for each (OpenCV exposes no score for the correlation-filter and
MIL trackers, so the number is only as good as their own success flag):
  csrt  1.0 while TrackerCSRT.update() succeeds, 0.0 when it reports failure (its
        peak-to-sidelobe ratio fell below `psr_threshold`).
  kcf   1.0 / 0.0 likewise (KCF fails when its peak response is below `detect_thresh`).
  mil   1.0 / 0.0 likewise (MIL practically never reports failure: treat as "no score").
  nano  TrackerNano.getTrackingScore(): the classification score of the chosen anchor,
        a real 0..1 score, calibrated to a probability on target by the packaged
        weights/nanotrack_v2.calibration.json (fitted for the ONNX models' sha256).
The 0/1 flags of csrt, kcf and mil are not calibrated: a map of two points would only
rename them (each flag's share on target), and the threshold 0.5 separates them already.
On failure OpenCV returns no usable box, so the last good box is kept.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..boxes import Box
from ..calibration import CalibrationSource
from ..config import ConfigError, TrackerConfig
from ..tracker import Tracker

_REPO_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "nanotrack_v2"
# NanoTrack's models are not packaged; its calibration is, named by the models it was fitted for.
NANO_CALIBRATION = Path(__file__).resolve().parents[1] / "weights" / "nanotrack_v2.calibration.json"


def _quiet_opencv() -> None:
    # OpenCV's DNN engine warns on every net load that targets are not supported; that
    # says nothing useful to a user.
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - older builds
        pass


class _OpenCvTracker(Tracker):
    """Shared init/update plumbing. A subclass names its OpenCV class and the config fields
    copied onto that class's Params (same names), or overrides `_create`."""

    opencv_class: str = ""  # cv2.<name>, whose <name>_Params the settings go to
    params: tuple[str, ...] = ()  # config fields copied onto the Params

    def _create(self) -> cv2.Tracker:
        params = getattr(cv2, f"{self.opencv_class}_Params")()
        for name in self.params:
            setattr(params, name, getattr(self.config, name))
        return getattr(cv2, self.opencv_class).create(params)

    def _score(self, ok: bool) -> float:
        return 1.0 if ok else 0.0

    def _init(self, image: np.ndarray, box: Box) -> None:
        self._cv_tracker = self._create()
        self._cv_tracker.init(image, box.as_int_xywh())

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        ok, rect = self._cv_tracker.update(image)
        if not ok:
            return self.box, self._score(False)
        return Box.from_xywh(rect), self._score(True)


@dataclass
class CsrtConfig(TrackerConfig):
    confidence_threshold: float = 0.5
    psr_threshold: float = 0.035  # OpenCV's default: update() fails below this PSR
    use_segmentation: bool = True
    number_of_scales: int = 33
    scale_step: float = 1.02


class CsrtTracker(_OpenCvTracker):
    name = "csrt"
    config_class = CsrtConfig
    opencv_class = "TrackerCSRT"
    params = ("psr_threshold", "use_segmentation", "number_of_scales", "scale_step")


@dataclass
class KcfConfig(TrackerConfig):
    confidence_threshold: float = 0.5
    detect_thresh: float = 0.5  # OpenCV's default: update() fails below this peak
    interp_factor: float = 0.075


class KcfTracker(_OpenCvTracker):
    name = "kcf"
    config_class = KcfConfig
    opencv_class = "TrackerKCF"
    params = ("detect_thresh", "interp_factor")


@dataclass
class MilConfig(TrackerConfig):
    confidence_threshold: float = 0.5


class MilTracker(_OpenCvTracker):
    name = "mil"
    config_class = MilConfig

    def _create(self) -> cv2.Tracker:
        return cv2.TrackerMIL.create()


def default_nanotrack_dir() -> Path:
    return Path(os.environ.get("VTRACK_NANOTRACK_DIR", _REPO_SHARED))


@dataclass
class NanoConfig(TrackerConfig):
    # Anchor classification score; NanoTrack's own scores sit near 0.9-0.97 on a
    # well-tracked target and drop under 0.5 on occlusion.
    confidence_threshold: float = 0.5
    backbone: str = ""  # ONNX file; empty: $VTRACK_NANOTRACK_DIR/nanotrack_backbone_sim.onnx
    neckhead: str = ""  # ONNX file; empty: $VTRACK_NANOTRACK_DIR/nanotrack_head_sim.onnx
    calibration: str = ""  # empty: the packaged nanotrack_v2.calibration.json (applied when the models' sha256
    #                        match it) | none: the raw score | FILE


class NanoTracker(_OpenCvTracker):
    name = "nano"
    config_class = NanoConfig

    def __init__(self, config: NanoConfig | None = None) -> None:
        config = config if config is not None else NanoConfig()
        self.backbone_path, self.neckhead_path = self.model_paths(config)
        for path in (self.backbone_path, self.neckhead_path):
            if not path.is_file():
                raise ConfigError(
                    f"nano: model file {path} not found; set backbone/neckhead or VTRACK_NANOTRACK_DIR"
                )
        super().__init__(config)
        _quiet_opencv()

    @staticmethod
    def model_paths(config: NanoConfig) -> tuple[Path, Path]:
        return (Path(config.backbone or default_nanotrack_dir() / "nanotrack_backbone_sim.onnx"),
                Path(config.neckhead or default_nanotrack_dir() / "nanotrack_head_sim.onnx"))

    @classmethod
    def calibration_source(cls, config: TrackerConfig) -> CalibrationSource:
        backbone, neckhead = cls.model_paths(config)  # type: ignore[arg-type]
        return CalibrationSource(NANO_CALIBRATION, {"backbone": backbone, "neckhead": neckhead})

    def _create(self) -> cv2.Tracker:
        params = cv2.TrackerNano_Params()
        params.backbone = str(self.backbone_path)
        params.neckhead = str(self.neckhead_path)
        return cv2.TrackerNano.create(params)

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        ok, rect = self._cv_tracker.update(image)
        score = float(self._cv_tracker.getTrackingScore())
        return (Box.from_xywh(rect) if ok else self.box), score
