"""Offline multi-domain training of FDN (Cui et al. 2018, sec. 3.3; MDNet's scheme).

Every training sequence is a domain with its own fc6 branch; conv1-3, fc4 and fc5 are
shared. Each iteration takes one domain (domains in turn, reshuffled every cycle), 8 of its
frames and, per frame, positives (IoU >= 0.7) and negatives (IoU <= 0.5) around the ground
truth: 32 + 96 boxes, MDNet's minibatch. The network sees each frame as the tracker will: a
square search region around the target (centre and zoom jittered, so the target is not
always in the middle), convolved once, with the boxes cut by the RoI layer. Softmax
cross-entropy, SGD with momentum 0.9 and weight decay 5e-4, fc6 at 10x the learning rate.

The paper starts from ImageNet VGG-M conv layers and trains with lr 1e-4. There are no
ImageNet weights here, so conv1-3 are trained from scratch too (Kaiming init, batch norm as
the normalisation layer) with a larger learning rate: `lr` is a parameter, its default the
paper's. Validation runs the real `FDNTracker` on held-back sequences after every epoch.

Output folder: fdn.pt (shared layers of the best epoch, what `FDNConfig(weights=...)`
loads), provenance.json, and the loop's checkpoint.pt, last.pt, best.pt, history.json,
curves.png.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..eval.datasets import DatasetError, Sequence
from ..ops.crops import warp_crop
from ..ops.sampling import SampleSpec, draw_with_overlap, xywh_to_xyxy
from ..tracker import Tracker
from . import common
from .entry import PretrainedTrunk, Trainer
from .loop import LossFn, TrainingResult, epoch_seed
from .options import TRUNK_OPTIONS, Option, positive

log = logging.getLogger(__name__)

MIN_TARGET_SIDE = 3.0  # frames whose target is smaller than this carry too little to learn from


@dataclass
class FDNDataConfig:
    frames_per_batch: int = 8  # MDNet: 8 frames per minibatch
    pos_per_frame: int = 4  # 32 positives per minibatch
    neg_per_frame: int = 12  # 96 negatives per minibatch
    pos_overlap: float = 0.7  # sec. 3.3, t1
    neg_overlap: float = 0.5  # sec. 3.3, t2
    pos_trans: float = 0.1
    pos_scale: float = 1.3
    neg_trans: float = 1.0
    neg_scale: float = 1.6
    target_px: float = 75.0  # as FDNConfig
    search_scale: float = 4.0  # as FDNConfig
    centre_jitter: float = 0.3  # region centre moved up to this x target mean side
    zoom_jitter: float = 1.25  # region zoom varies by this factor either way
    flip: bool = True
    colour_jitter: float = 0.2  # brightness / contrast / per-channel gain spread
    blur_probability: float = 0.2

    @property
    def region_px(self) -> int:
        return int(16 * math.ceil(self.target_px * self.search_scale / 16))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "region_px": self.region_px}


class FDNDomains:
    """Minibatches of one domain each: images B x 3 x S x S (mean subtracted), boxes B x N x 4
    (x1 y1 x2 y2 in the region), labels B x N (1 target, 0 background), domain index."""

    def __init__(self, sequences: list[Sequence], config: FDNDataConfig | None = None, seed: int = 0) -> None:
        self.config = config or FDNDataConfig()
        self.seed = seed
        self.sequences = sequences
        self.frames = []
        for sequence in sequences:
            gt = sequence.ground_truth
            ok = np.isfinite(gt).all(axis=1) & (gt[:, 2] >= MIN_TARGET_SIDE) & (gt[:, 3] >= MIN_TARGET_SIDE)
            self.frames.append(np.flatnonzero(ok))
        empty = [s.name for s, f in zip(sequences, self.frames) if len(f) == 0]
        if empty:
            raise DatasetError(f"no usable frames (target visible and >= {MIN_TARGET_SIDE:.0f} px) in {', '.join(empty)}")

    @property
    def domains(self) -> int:
        return len(self.sequences)

    def region(self, image: np.ndarray, box: np.ndarray, rng: np.random.Generator,
               augment: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(region S x S x 3 uint8, target box in the region, image bounds in the region)."""
        cfg = self.config
        size = cfg.region_px
        mean_side = float(box[2:].mean())
        zoom = cfg.target_px / mean_side
        centre = box[:2] + box[2:] / 2
        if augment:
            zoom *= cfg.zoom_jitter ** rng.uniform(-1, 1)
            centre = centre + cfg.centre_jitter * mean_side * rng.uniform(-1, 1, 2)
        origin = centre - size / (2 * zoom)
        fill = image.reshape(-1, 3).mean(axis=0)
        # `centre` is in pixel-edge coordinates (x + w / 2), the crop's convention is pixel centres.
        region = warp_crop(image, (centre[0] - 0.5, centre[1] - 0.5), size / zoom, size, fill)
        target = np.concatenate([(box[:2] - origin) * zoom, box[2:] * zoom])
        height, width = image.shape[:2]
        corner = -origin * zoom
        bounds = np.array([corner[0], corner[1], width * zoom, height * zoom])
        x1, y1 = max(bounds[0], 0.0), max(bounds[1], 0.0)
        x2, y2 = min(bounds[0] + bounds[2], size), min(bounds[1] + bounds[3], size)
        return region, target, np.array([x1, y1, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])

    def _photometric(self, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        out = region.astype(np.float32)
        if cfg.colour_jitter > 0:
            gain = 1 + cfg.colour_jitter * rng.uniform(-1, 1) + 0.5 * cfg.colour_jitter * rng.uniform(-1, 1, 3)
            out = (out - out.mean()) * (1 + cfg.colour_jitter * rng.uniform(-1, 1)) + out.mean()
            out = out * gain + 255 * cfg.colour_jitter * 0.5 * rng.uniform(-1, 1)
        if rng.random() < cfg.blur_probability:
            sigma = rng.uniform(0.5, 1.5)
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        return np.clip(out, 0, 255)

    def frame_sample(self, domain: int, frame: int, rng: np.random.Generator, augment: bool = True):
        cfg = self.config
        sequence = self.sequences[domain]
        box = np.asarray(sequence.ground_truth[frame], dtype=np.float64)
        region, target, bounds = self.region(sequence.image(frame), box, rng, augment)
        pos = draw_with_overlap(rng, target, cfg.pos_per_frame, SampleSpec("gaussian", cfg.pos_trans, cfg.pos_scale),
                                bounds, (cfg.pos_overlap, 1.0))
        if len(pos) < cfg.pos_per_frame:  # tiny or clipped targets: the box itself fills up
            pos = np.concatenate([pos, np.tile(target, (cfg.pos_per_frame - len(pos), 1))])
        half = cfg.neg_per_frame // 2
        neg = np.concatenate([
            draw_with_overlap(rng, target, half, SampleSpec("uniform", cfg.neg_trans, cfg.neg_scale), bounds,
                              (0.0, cfg.neg_overlap)),
            draw_with_overlap(rng, target, cfg.neg_per_frame - half, SampleSpec("whole", 0.0, cfg.neg_scale), bounds,
                              (0.0, cfg.neg_overlap)),
        ])
        if len(neg) < cfg.neg_per_frame:  # a target filling the region: far boxes anywhere
            extra = draw_with_overlap(rng, target, cfg.neg_per_frame - len(neg), SampleSpec("whole", 0.0, 3.0),
                                      np.array([0, 0, cfg.region_px, cfg.region_px], float), (0.0, cfg.neg_overlap),
                                      max_rounds=100)
            neg = np.concatenate([neg, extra])
        boxes = np.concatenate([pos, neg])[: cfg.pos_per_frame + cfg.neg_per_frame]
        labels = np.zeros(len(boxes), dtype=np.int64)
        labels[: cfg.pos_per_frame] = 1
        if len(boxes) < cfg.pos_per_frame + cfg.neg_per_frame:
            missing = cfg.pos_per_frame + cfg.neg_per_frame - len(boxes)
            boxes = np.concatenate([boxes, np.tile(boxes[-1:], (missing, 1))])
            labels = np.concatenate([labels, np.full(missing, labels[-1])])
        if augment:
            region = self._photometric(region, rng)
            if cfg.flip and rng.random() < 0.5:
                region = region[:, ::-1]
                boxes = boxes.copy()
                boxes[:, 0] = cfg.region_px - boxes[:, 0] - boxes[:, 2]
        return region, xywh_to_xyxy(boxes), labels

    def batch(self, domain: int, rng: np.random.Generator, augment: bool = True) -> dict[str, Any]:
        cfg = self.config
        frames = rng.choice(self.frames[domain], size=cfg.frames_per_batch,
                            replace=len(self.frames[domain]) < cfg.frames_per_batch)
        regions, boxes, labels = zip(*(self.frame_sample(domain, int(f), rng, augment) for f in frames))
        # BGR 0..255: the backbone subtracts its input mean itself, as in the tracker
        images = torch.from_numpy(np.stack(regions).astype(np.float32)).permute(0, 3, 1, 2)
        return {
            "images": images.contiguous(),
            "boxes": torch.from_numpy(np.stack(boxes).astype(np.float32)),
            "labels": torch.from_numpy(np.stack(labels)),
            "domain": domain,
        }

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        """Endless: cycles over the domains in a fresh random order each cycle."""
        rng = np.random.default_rng(epoch_seed(self.seed, epoch))
        while True:
            for domain in rng.permutation(self.domains):
                yield self.batch(int(domain), rng)


def make_fdn_loss(roi_method: str = "align") -> LossFn:
    def fdn_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        features = model.features(batch["images"])
        rois = model.rois(features, batch["boxes"], roi_method, input_size=batch["images"].shape[-1])
        logits = model.head(rois, domain=int(batch["domain"]))
        return F.cross_entropy(logits, batch["labels"].reshape(-1))

    return fdn_loss


def _exported(key: str) -> bool:
    """FDN's file holds the shared layers only: the fc6 branches belong to the training domains."""
    from ..trackers.fdn import SHARED_PREFIXES

    return key.startswith(SHARED_PREFIXES) or key == "input_bgr"


BACKBONE_OPTION = Option("--backbone", "backbone", "shared conv layers: vggm (VGG-M conv1-3 from scratch) or an "
                         "ImageNet trunk (default {default})", choices=("vggm", "vgg16", "efficientnet_lite0",
                                                                       "mobilenet_v2"))


def _batch_norm_statistic(key: str) -> bool:
    return "running_" in key


def export_weights(source: str | Path, target: str | Path, half: bool = False) -> Path:
    """Training state dict -> the tracker's file: shared layers only, fp16 weights with `half`
    (loaded back as float32; batch-norm statistics stay float32)."""
    return common.export_weights(source, target, half, _exported, _batch_norm_statistic)


@dataclass(kw_only=True)
class FDNTrainer(PretrainedTrunk, Trainer):
    """FDN's settings (beyond `Trainer`'s) and its parts of the run. An epoch is
    `cycles_per_epoch` passes over all domains (one minibatch per domain per pass; the paper
    trains 100 passes)."""

    name = "fdn"
    title = "FDN (multi-domain)"
    weights_name = "fdn.pt"
    summary = "FDN's offline multi-domain training (sec. 3.3, MDNet's scheme)"
    positive_settings = ("epochs", "cycles_per_epoch")
    sequences_key = "domains"
    options = (
        Option("--cycles-per-epoch", "cycles_per_epoch",
               "passes over all domains an epoch, one minibatch per domain each (default {default}; paper: 100 in all)",
               type=positive),
        Option("--roi-method", "roi_method",
               "RoI layer to train with (max-RoIAlign, or RoIPool for the ablation; default {default})",
               choices=("align", "pool")),
        BACKBONE_OPTION,
        Option("--tap", "tap", "pretrained trunk: the map the RoI layer reads (default: the trunk's stride-8 tap)"),
        Option("--output-stride", "output_stride", "pretrained trunk: dilate to keep this stride (8 reads a "
               "stride-16 tap at stride 8; default {default}: none)", type=int, choices=(0, 8, 16)),
        *TRUNK_OPTIONS,
    )
    default_notes = {"lr": "the paper's, for ImageNet-initialised conv layers"}

    cycles_per_epoch: int = 10
    max_val_frames: int | None = 100  # FDN tracks at a few fps
    lr: tuple[float, float] = (1e-4, 1e-4)
    fc6_lr_mult: float = 10.0
    roi_method: str = "align"
    data_config: FDNDataConfig = field(default_factory=FDNDataConfig)
    backbone: str = "vggm"
    tap: str = ""
    output_stride: int = 0

    def set_threads(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        cv2.setNumThreads(1)

    def prepare(self, train: list[Sequence], out: Path) -> None:
        self.domains = FDNDomains(train, self.data_config, seed=self.seed)

    def iterations(self) -> int:
        return self.cycles_per_epoch * self.domains.domains

    def build_model(self) -> torch.nn.Module:
        from ..backbones import build_backbone
        from ..trackers.fdn import TRUNK_TAPS, FDNNet

        if self.backbone == "vggm":
            self.frozen: list[str] = []
            return FDNNet(domains=self.domains.domains)  # VGG-M conv1-3 with batch norm, from scratch
        model = FDNNet(build_backbone(self.backbone, None, output_stride=self.output_stride or None),
                       self.tap or TRUNK_TAPS[self.backbone],
                       domains=self.domains.domains)
        self.freeze_trunk(model.backbone, "backbone.", model.tap)
        return model

    def parameters(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """fc6 (the domain branches) at `fc6_lr_mult` times the learning rate."""
        if self.backbone == "vggm":
            return [
                {"params": [p for n, p in model.named_parameters() if not n.startswith("fc6.")], "lr_scale": 1.0},
                {"params": list(model.fc6.parameters()), "lr_scale": self.fc6_lr_mult},
            ]
        fc = [p for n, p in model.named_parameters() if n.startswith(("fc4.", "fc5."))]
        return [{"params": fc, "lr_scale": 1.0}, {"params": list(model.fc6.parameters()), "lr_scale": self.fc6_lr_mult},
                *self.trunk_group(model)]

    def loss(self) -> LossFn:
        return make_fdn_loss(self.roi_method)

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        return self.domains.batches(epoch)

    def make_tracker(self, weights: Path, device: str) -> Tracker:
        from ..trackers.fdn import FDNConfig, FDNTracker

        return FDNTracker(FDNConfig(weights=str(weights), device=device, backbone=self.backbone, tap=self.tap,
                                    output_stride=self.output_stride))

    def lr_details(self) -> dict[str, Any]:
        return {"fc6_mult": self.fc6_lr_mult}

    def exported(self, key: str) -> bool:  # type: ignore[override]
        return _exported(key) and self.trained(key)

    fp32_in_half = staticmethod(_batch_norm_statistic)

    def trained_sequences(self) -> list[tuple[Sequence, int]]:
        return [(s, len(f)) for s, f in zip(self.domains.sequences, self.domains.frames)]

    def epoch_details(self) -> dict[str, Any]:
        cfg = self.data_config
        return {"cycles_per_epoch": self.cycles_per_epoch, "iterations_per_epoch": self.iterations(),
                "minibatch": {"frames": cfg.frames_per_batch, "positives": cfg.frames_per_batch * cfg.pos_per_frame,
                              "negatives": cfg.frames_per_batch * cfg.neg_per_frame}}

    def model_details(self) -> dict[str, Any]:
        if self.backbone == "vggm":
            return {"roi_method": self.roi_method, "backbone": "vggm", "norm": "batch"}
        return {"roi_method": self.roi_method, "backbone": self.backbone, "tap": self.tap,
                "output_stride": self.output_stride, **self.trunk_details()}


def train_fdn(data_dir: str | Path, out_dir: str | Path, epochs: int, **settings: Any) -> TrainingResult:
    """Train FDN (`settings`: `FDNTrainer`'s fields); `extra['weights']` = OUT/fdn.pt,
    `extra['provenance']` = OUT/provenance.json."""
    return FDNTrainer(data_dir, out_dir, epochs, **settings).run()
