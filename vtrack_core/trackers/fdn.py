"""FDN: "Fast Dynamic Convolutional Neural Networks for Visual Tracking" (Cui, Lu, Jing,
Shi; ACML 2018). MDNet (Nam & Han) made fast: conv1-conv3 of VGG-M run once per frame on the
search region, max-RoIAlign cuts a 3x3x512 feature per candidate, fc4-fc6 classify; fc
layers are fine-tuned online only when the target score drops below m, and each update stops
as soon as its loss falls below l (the paper's "dynamic" update, sec. 3.4).

Where the FDN paper defers to MDNet (sample counts, memories, hard negative mining, bounding-
box regression) the defaults are MDNet's published values; every one is a config field.

Our reading of two under-specified points, both one config value away:
* "normalization" after conv1/conv2: the paper cites batch normalisation (Ioffe & Szegedy);
  VGG-M has local response normalisation. The layer type follows the weights loaded (our
  trained weights: batch norm; VGG-M / MDNet files: LRN).
* The whole frame: convolving a full 1280x720 frame per update is wasteful on a robot, so
  the "whole image" is a square search region around the last position, scaled so the target
  is `target_px` wide (MDNet's 75 of 107 pixels), large enough to hold every candidate.

Score and confidence: fc6 gives two logits; the score is their difference (the log-odds
that a box is the target), the target score the mean over the top 5 candidates, and the
reported confidence sigmoid(target score), the network's own probability. m = 0 is
confidence 0.5, the LOST rule's default threshold.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..boxes import Box
from ..config import TrackerConfig
from ..device import resolve_device
from ..ops.crops import crop_and_resize, image_to_tensor
from ..ops.roi import FeatureGeometry, pool_rois
from ..ops.sampling import SampleSpec, clip_boxes, draw_boxes, draw_with_overlap, xywh_to_xyxy
from ..tracker import Tracker
from ..weights import WeightsError, load_matconvnet_params, load_torch_state_dict, mat_net, matconvnet_conv_weight

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "fdn.pt"
NORMS = ("batch", "lrn")
MIN_SIDE = 2.0  # pixels: smallest sample box (MDNet's 10 px would swallow drone-sized targets)


# --- network (sec. 3.2, Fig. 1) ---------------------------------------------------------------
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "lrn":  # VGG-M's [5, 2, 1e-4, 0.75]; torch divides alpha by the size
        return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    raise ValueError(f"unknown normalisation {kind!r}; use one of {', '.join(NORMS)}")


class FDNNet(nn.Module):
    """conv1-3 (VGG-M) -> RoI layer -> fc4, fc5 (shared) -> fc6 (one 2-way branch per domain).

    Module names follow py-MDNet's ('conv1.0', 'fc4.0', 'fc5.1', 'fc6.<d>.1') so its files load
    by name."""

    feature_channels = 512

    def __init__(self, domains: int = 1, norm: str = "batch", roi_size: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.norm = norm
        self.roi_size = roi_size
        self.conv1 = nn.Sequential(nn.Conv2d(3, 96, 7, stride=2), nn.ReLU(inplace=True), _norm(norm, 96),
                                   nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(96, 256, 5, stride=2, padding=1), nn.ReLU(inplace=True),
                                   _norm(norm, 256), nn.MaxPool2d(3, 2))
        self.conv3 = nn.Sequential(nn.Conv2d(256, 512, 3, padding=1), nn.ReLU(inplace=True))
        roi_features = self.feature_channels * roi_size * roi_size
        self.fc4 = nn.Sequential(nn.Linear(roi_features, 512), nn.ReLU(inplace=True))
        self.fc5 = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, 512), nn.ReLU(inplace=True))
        self.fc6 = nn.ModuleList([self._branch(dropout) for _ in range(domains)])
        self.geometry = FeatureGeometry.of(nn.Sequential(self.conv1, self.conv2, self.conv3))
        # Marks our own files (BGR input) apart from py-MDNet's bare state dicts (RGB input).
        self.register_buffer("input_bgr", torch.ones(()))
        self.reset_parameters()

    @staticmethod
    def _branch(dropout: float = 0.5) -> nn.Sequential:
        branch = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, 2))
        nn.init.normal_(branch[1].weight, std=0.01)  # Gaussian, as sec. 3.3 / 3.4
        nn.init.zeros_(branch[1].bias)
        return branch

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def new_branches(self, domains: int) -> None:
        """Replace fc6 by `domains` freshly initialised branches (tracking: one)."""
        device = self.fc4[0].weight.device
        self.fc6 = nn.ModuleList([self._branch(self.fc5[0].p) for _ in range(domains)]).to(device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W (mean already subtracted) -> B x 512 x H/16 x W/16 conv3 maps."""
        return self.conv3(self.conv2(self.conv1(images)))

    def rois(self, features: torch.Tensor, boxes_xyxy: torch.Tensor, method: str = "align",
             sampling: int = 2) -> torch.Tensor:
        """B x N x 4 pixel-edge boxes (in the network input) -> (B*N) x 4608 RoI features."""
        pooled = pool_rois(features, self.geometry.to_features(boxes_xyxy), method, self.roi_size, sampling)
        return pooled.flatten(1)

    def head(self, roi_features: torch.Tensor, domain: int = 0) -> torch.Tensor:
        """(N x 4608) -> N x 2 logits (background, target) of branch `domain`."""
        return self.fc6[domain](self.fc5(self.fc4(roi_features)))


def target_scores(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds that each box is the target."""
    return logits[:, 1] - logits[:, 0]


# --- weights I/O ------------------------------------------------------------------------------
SHARED_PREFIXES = ("conv1.", "conv2.", "conv3.", "fc4.", "fc5.")


def detect_norm(state: dict[str, torch.Tensor]) -> str:
    """Batch norm leaves running statistics in a state dict; LRN has no parameters."""
    return "batch" if any(k.endswith("running_mean") for k in state) else "lrn"


def state_dict_from_py_mdnet(source: dict) -> dict[str, torch.Tensor]:
    """py-MDNet's `.pth` ({'shared_layers': {...}} or a bare state dict with 'conv1.0.weight',
    'fc4.0.weight', 'fc5.1.weight', ...). py-MDNet feeds RGB - 128; ours is BGR - 128, so
    conv1's input channels are swapped."""
    shared = source.get("shared_layers", source) if isinstance(source, dict) else source
    state = {k: v for k, v in shared.items() if k.startswith(SHARED_PREFIXES)}
    if "conv1.0.weight" not in state:
        raise WeightsError("not a py-MDNet state dict: no conv1.0.weight")
    state["conv1.0.weight"] = state["conv1.0.weight"][:, [2, 1, 0]]
    return state


def _mat_average_colour(path: Path) -> np.ndarray | None:
    """The RGB mean a MatConvNet classification net subtracts (net.meta.normalization or
    net.normalization .averageImage), or None."""
    from scipy.io import loadmat

    net = mat_net(loadmat(str(path), squeeze_me=True, struct_as_record=False))
    for holder in (getattr(getattr(net, "meta", None), "normalization", None), getattr(net, "normalization", None)):
        average = getattr(holder, "averageImage", None)
        if average is not None:
            average = np.asarray(average, dtype=np.float64)
            return average.reshape(-1, 3).mean(axis=0) if average.size >= 3 else np.full(3, float(average))
    return None


def state_dict_from_matconvnet(params: dict[str, np.ndarray], average_rgb: np.ndarray | None = None,
                               input_mean: float = 128.0) -> dict[str, torch.Tensor]:
    """MatConvNet VGG-M (`imagenet-vgg-m.mat`: conv1..conv3 of a longer net) or MDNet's own
    `.mat` (conv1..conv3, fc4, fc5 stored as 3x3 / 1x1 convolutions).

    Their input is RGB minus `average_rgb` (VGG-M) or minus 128 (MDNet); ours is BGR minus
    `input_mean`. conv1's channels are swapped, and the difference of means is folded into
    conv1's bias (exact: conv1 has no padding)."""
    state: dict[str, torch.Tensor] = {}
    try:
        for index in (1, 2, 3):
            weight = matconvnet_conv_weight(params[f"conv{index}f"])
            bias = torch.from_numpy(np.asarray(params[f"conv{index}b"], np.float32).reshape(-1))
            if index == 1:
                if average_rgb is not None:
                    shift = torch.as_tensor(input_mean - np.asarray(average_rgb, np.float64), dtype=torch.float32)
                    bias = bias + (weight.sum(dim=(2, 3)) * shift).sum(dim=1)
                weight = weight[:, [2, 1, 0]]
            state[f"conv{index}.0.weight"] = weight
            state[f"conv{index}.0.bias"] = bias
    except KeyError as missing:
        raise WeightsError(f"MatConvNet weights lack parameter {missing}") from None
    for name, key in (("fc4", "fc4.0"), ("fc5", "fc5.1")):
        if f"{name}f" in params:
            filters = matconvnet_conv_weight(params[f"{name}f"])  # Cout x Cin x h x w
            state[f"{key}.weight"] = filters.reshape(filters.shape[0], -1)
            state[f"{key}.bias"] = torch.from_numpy(np.asarray(params[f"{name}b"], np.float32).reshape(-1))
    return state


def load_fdn_state(path: str | Path, input_mean: float = 128.0) -> dict[str, torch.Tensor]:
    """Shared-layer tensors of our checkpoints, py-MDNet `.pth` or MatConvNet `.mat`. A file
    without fc4/fc5 (VGG-M) leaves them to their random initialisation, as sec. 4.5 does."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        if not path.is_file():
            raise WeightsError(f"weights file {path} not found")
        return state_dict_from_matconvnet(load_matconvnet_params(path), _mat_average_colour(path), input_mean)
    state = load_torch_state_dict(path)  # unwraps py-MDNet's {'shared_layers': ...} too
    if "input_bgr" not in state:  # not written by FDNNet: py-MDNet's layout, RGB input
        return state_dict_from_py_mdnet(state)
    return {k: v for k, v in state.items() if k.startswith(SHARED_PREFIXES)}


def build_fdn_net(path: str | Path, input_mean: float = 128.0) -> FDNNet:
    """An FDNNet with the file's shared layers, the normalisation the file implies and one
    fresh fc6 branch."""
    state = load_fdn_state(path, input_mean)
    net = FDNNet(domains=1, norm=detect_norm(state))
    state = {k: v.float() for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that do not fit
        raise WeightsError(f"{path}: does not fit FDN ({error})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and k != "input_bgr"
               and not k.startswith(("fc6.", "fc4.", "fc5."))]
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit FDN (missing {missing[:4]}, unexpected {unexpected[:4]})")
    return net


# --- bounding-box regression (MDNet / R-CNN) ---------------------------------------------------
class BoxRegressor:
    """Ridge regression from a box's conv3 RoI feature to the correction (dx/w, dy/h,
    log dw, log dh) that moves it onto the target; fitted once on the first frame."""

    def __init__(self, ridge: float = 1000.0) -> None:
        self.ridge = ridge
        self.weights: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, boxes: np.ndarray, target: np.ndarray) -> None:
        x = torch.cat([features.float(), torch.ones_like(features[:, :1])], dim=1)
        y = torch.as_tensor(_deltas(boxes, target), dtype=torch.float32, device=x.device)
        # Dual form: W = X^T (X X^T + a I)^-1 Y, an N x N solve instead of D x D (D = 4609).
        gram = x @ x.T + self.ridge * torch.eye(x.shape[0], device=x.device)
        self.weights = x.T @ torch.linalg.solve(gram, y)

    def predict(self, features: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        if self.weights is None:
            return np.asarray(boxes, dtype=np.float64)
        x = torch.cat([features.float(), torch.ones_like(features[:, :1])], dim=1)
        deltas = (x @ self.weights).cpu().numpy().astype(np.float64)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        centres = boxes[:, :2] + boxes[:, 2:] / 2 + deltas[:, :2] * boxes[:, 2:]
        sizes = boxes[:, 2:] * np.exp(np.clip(deltas[:, 2:], -1.0, 1.0))
        return np.concatenate([centres - sizes / 2, sizes], axis=1)


def _deltas(boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    target = np.asarray(target, dtype=np.float64).reshape(1, 4)
    centre_b = boxes[:, :2] + boxes[:, 2:] / 2
    centre_t = target[:, :2] + target[:, 2:] / 2
    return np.concatenate([(centre_t - centre_b) / boxes[:, 2:], np.log(target[:, 2:] / boxes[:, 2:])], axis=1)


# --- tracker (sec. 3.4) ---------------------------------------------------------------------------
@dataclass
class FDNConfig(TrackerConfig):
    weights: str = ""  # empty: the packaged vtrack_core/weights/fdn.pt
    half: bool = False  # fp16 convolutions on CUDA (fc layers and their training stay fp32)
    roi_method: str = "align"  # align: max-RoIAlign (paper) | pool: RoIPool (the paper's comparison)
    roi_sampling: int = 2  # bilinear points per bin side (2 x 2, sec. 3.2)
    input_mean: float = 128.0  # subtracted from 0..255 BGR (MDNet)
    target_px: float = 75.0  # target's mean side in the network input (MDNet: 75 of 107 px)
    search_scale: float = 4.0  # search region side / target mean side
    # candidates (MDNet)
    candidates: int = 256
    trans: float = 0.6  # Gaussian centre spread, x mean side
    trans_limit: float = 1.5  # spread grows by trans_expand per failed frame up to this
    trans_expand: float = 1.1
    scale: float = 1.05  # candidate size spread
    top_k: int = 5  # the target is the mean of the k best candidates
    score_threshold: float = 0.0  # m: below it, update (sec. 3.4)
    # first frame (MDNet)
    pos_init: int = 500
    neg_init: int = 5000
    pos_init_trans: float = 0.1
    pos_init_scale: float = 1.3
    neg_init_trans: float = 1.0
    neg_init_scale: float = 1.6
    pos_overlap: float = 0.7  # positives: IoU >= this (sec. 3.3)
    neg_overlap_init: float = 0.5  # first-frame negatives: IoU <= this
    init_iterations: int = 30  # MDNet's first-frame fine-tuning
    lr_init: float = 5e-4  # sec. 3.4
    lr_update: float = 1.5e-3  # sec. 3.4
    fc6_lr_mult: float = 10.0  # MDNet: the new branch learns 10x faster
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_pos: int = 32
    batch_neg: int = 96
    hard_negative_pool: int = 1024  # hard negative mining: the 96 best-scoring of these
    # online updates
    pos_update: int = 50
    neg_update: int = 200
    neg_overlap_update: float = 0.3
    neg_update_trans: float = 2.0
    neg_update_scale: float = 1.3
    long_interval: int = 10  # long-term update every this many frames
    long_frames: int = 100  # positives remembered (long-term memory)
    short_frames: int = 20  # negatives remembered; short-term positives
    update_iterations: int = 10  # at most, per update (MDNet always runs all of them)
    loss_threshold: float = 0.01  # l: stop an update once its loss is below (sec. 3.4)
    dynamic_update: bool = True  # False: always update_iterations (MDNet, the paper's baseline)
    # bounding-box regression (MDNet / R-CNN), first frame only
    bbox_regression: bool = True
    bbreg_samples: int = 1000
    bbreg_overlap: float = 0.6
    bbreg_trans: float = 0.3
    bbreg_scale: float = 1.6
    bbreg_aspect: float = 1.1
    bbreg_ridge: float = 1000.0
    seed: int = 0  # sampling is random; seeded so runs repeat
    confidence_threshold: float = 0.5  # sigmoid(target score): 0.5 is m = 0


@dataclass
class UpdateRecord:
    """One fine-tuning of the fc layers: the rows of the paper's Table 1."""

    frame: int
    kind: str  # init | short (score below m) | long (every long_interval frames)
    score: float  # the frame's target score (log-odds); nan for init
    iterations: int
    loss: float  # loss of the last iteration
    seconds: float


UPDATE_HISTORY = 10_000  # records kept; totals cover the whole track


class FDNTracker(Tracker):
    name = "fdn"
    config_class = FDNConfig

    def __init__(self, config: FDNConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.roi_method not in ("align", "pool"):
            raise ValueError(f"fdn: roi_method must be 'align' or 'pool', got {cfg.roi_method!r}")
        self.device = resolve_device(cfg.device)
        self.conv_dtype = torch.float16 if cfg.half and self.device.type == "cuda" else torch.float32
        weights = Path(cfg.weights) if cfg.weights else DEFAULT_WEIGHTS
        if not weights.is_file():
            raise WeightsError(
                f"fdn: no weights at {weights}; train them with `vtrack train fdn` or set weights=FILE "
                "(our checkpoints, py-MDNet .pth, MatConvNet VGG-M or MDNet .mat)"
            )
        self.base = build_fdn_net(weights, cfg.input_mean)
        self.region_px = int(16 * math.ceil(cfg.target_px * cfg.search_scale / 16))
        self.updates: deque[UpdateRecord] = deque(maxlen=UPDATE_HISTORY)
        self.update_totals = {"updates": 0, "iterations": 0, "seconds": 0.0}

    # -- helpers -----------------------------------------------------------------------------
    def _region(self, frame: torch.Tensor, box: np.ndarray) -> tuple[torch.Tensor, np.ndarray, float]:
        """Search region around `box`: (conv3 features, region origin in the image, input
        pixels per image pixel)."""
        centre = box[:2] + box[2:] / 2
        zoom = self.config.target_px / float(box[2:].mean())
        side = self.region_px / zoom
        crop = crop_and_resize(frame, torch.as_tensor(centre - 0.5, device=self.device, dtype=torch.float32),
                               torch.tensor([side], device=self.device, dtype=torch.float32), self.region_px,
                               self.fill)
        crop = (crop - self.config.input_mean).to(self.conv_dtype)
        with torch.no_grad():
            features = self.net.features(crop.contiguous(memory_format=torch.channels_last)).float()
        return features, centre - side / 2, zoom

    def _roi_features(self, features: torch.Tensor, origin: np.ndarray, zoom: float, boxes: np.ndarray) -> torch.Tensor:
        xyxy = (xywh_to_xyxy(boxes) - np.tile(origin, 2)) * zoom
        rois = torch.as_tensor(xyxy, dtype=torch.float32, device=self.device).unsqueeze(0)
        with torch.no_grad():
            return self.net.rois(features, rois, self.config.roi_method, self.config.roi_sampling)

    def _scores(self, roi_features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return target_scores(self.net.head(roi_features))

    def _region_bounds(self, origin: np.ndarray, zoom: float, width: int, height: int) -> np.ndarray:
        """Search region intersected with the image, x y w h: where samples may lie."""
        side = self.region_px / zoom
        x1, y1 = max(origin[0], 0.0), max(origin[1], 0.0)
        x2, y2 = min(origin[0] + side, width), min(origin[1] + side, height)
        return np.array([x1, y1, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])

    def _train_fc(self, pos: torch.Tensor, neg: torch.Tensor, iterations: int, lr: float,
                  stop_loss: float | None) -> tuple[int, float]:
        """Fine-tune fc4-fc6 on RoI features: minibatches of batch_pos positives and the
        batch_neg hardest of hard_negative_pool negatives; stop early below `stop_loss`."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        loss_value = float("nan")
        done = 0
        for _ in range(iterations):
            pos_batch = pos[torch.as_tensor(self.rng.integers(0, len(pos), cfg.batch_pos), device=self.device)]
            pool = neg[torch.as_tensor(self.rng.integers(0, len(neg), min(cfg.hard_negative_pool, max(len(neg), 1))),
                                       device=self.device)]
            self._fc_training(False)
            with torch.no_grad():
                hardest = torch.topk(target_scores(self.net.head(pool)), min(cfg.batch_neg, len(pool))).indices
            neg_batch = pool[hardest]
            self._fc_training(True)
            logits = self.net.head(torch.cat([pos_batch, neg_batch]))
            labels = torch.cat([torch.ones(len(pos_batch), dtype=torch.long, device=self.device),
                                torch.zeros(len(neg_batch), dtype=torch.long, device=self.device)])
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            done += 1
            loss_value = float(loss.detach())
            if stop_loss is not None and loss_value < stop_loss:
                break
        self._fc_training(False)
        return done, loss_value

    def _fc_training(self, training: bool) -> None:
        """Dropout on while fine-tuning; the conv layers (and their batch norm) stay in eval."""
        for layer in (self.net.fc4, self.net.fc5, self.net.fc6):
            layer.train(training)

    def _collect(self, features: torch.Tensor, origin: np.ndarray, zoom: float, box: np.ndarray,
                 bounds: np.ndarray) -> None:
        cfg = self.config
        pos = draw_with_overlap(self.rng, box, cfg.pos_update, SampleSpec("gaussian", cfg.pos_init_trans, cfg.pos_init_scale),
                                bounds, (cfg.pos_overlap, 1.0), MIN_SIDE)
        neg = draw_with_overlap(self.rng, box, cfg.neg_update, SampleSpec("uniform", cfg.neg_update_trans, cfg.neg_update_scale),
                                bounds, (0.0, cfg.neg_overlap_update), MIN_SIDE)
        if len(pos) + len(neg) == 0:
            return
        both = self._roi_features(features, origin, zoom, np.concatenate([pos, neg]))  # one RoI pass
        if len(pos):
            self.pos_memory.append(both[: len(pos)])
        if len(neg):
            self.neg_memory.append(both[len(pos):])

    def _update_fc(self, kind: str, score: float) -> None:
        cfg = self.config
        if not self.neg_memory or not self.pos_memory:
            return
        pos_frames = list(self.pos_memory) if kind == "long" else list(self.pos_memory)[-cfg.short_frames:]
        pos = torch.cat(pos_frames)
        neg = torch.cat(list(self.neg_memory))
        start = time.perf_counter()
        iterations, loss = self._train_fc(pos, neg, cfg.update_iterations, cfg.lr_update,
                                          cfg.loss_threshold if cfg.dynamic_update else None)
        record = UpdateRecord(self.frame_index + 1, kind, score, iterations, loss, time.perf_counter() - start)
        self.updates.append(record)
        self.update_totals["updates"] += 1
        self.update_totals["iterations"] += iterations
        self.update_totals["seconds"] += record.seconds
        log.debug("fdn frame %d: %s update, score %.3f, %d iteration(s), loss %.4f, %.3f s", record.frame, kind,
                  score, iterations, loss, record.seconds)

    # -- Tracker -----------------------------------------------------------------------------
    def _init(self, image: np.ndarray, box: Box) -> None:
        cfg = self.config
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        # A private copy of the network: the fc layers are fine-tuned for this target only.
        self.net = copy.deepcopy(self.base).to(self.device)
        self.net.new_branches(1)
        for layer in (self.net.conv1, self.net.conv2, self.net.conv3):  # fixed while tracking (sec. 3.4)
            layer.to(self.conv_dtype, memory_format=torch.channels_last).requires_grad_(False)
        self.net.eval()
        self.optimizer = torch.optim.SGD(
            [{"params": list(self.net.fc4.parameters()) + list(self.net.fc5.parameters()), "lr_mult": 1.0},
             {"params": self.net.fc6.parameters(), "lr_mult": cfg.fc6_lr_mult}],
            lr=cfg.lr_init, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        frame = image_to_tensor(image, self.device)
        self.fill = frame.mean(dim=(2, 3)).reshape(3)
        target = np.array(box.xywh(), dtype=np.float64)
        features, origin, zoom = self._region(frame, target)
        height, width = image.shape[:2]
        bounds = self._region_bounds(origin, zoom, width, height)
        pos = draw_with_overlap(self.rng, target, cfg.pos_init, SampleSpec("gaussian", cfg.pos_init_trans, cfg.pos_init_scale),
                                bounds, (cfg.pos_overlap, 1.0), MIN_SIDE)
        half = cfg.neg_init // 2
        neg = np.concatenate([
            draw_with_overlap(self.rng, target, half, SampleSpec("uniform", cfg.neg_init_trans, cfg.neg_init_scale),
                              bounds, (0.0, cfg.neg_overlap_init), MIN_SIDE),
            draw_with_overlap(self.rng, target, cfg.neg_init - half, SampleSpec("whole", 0.0, cfg.neg_init_scale),
                              bounds, (0.0, cfg.neg_overlap_init), MIN_SIDE),
        ])
        if len(pos) == 0:  # a box too small for the IoU range at min_side: the box itself
            pos = target.reshape(1, 4)
        pos_features = self._roi_features(features, origin, zoom, pos)
        neg_features = self._roi_features(features, origin, zoom, neg)
        start = time.perf_counter()
        iterations, loss = self._train_fc(pos_features, neg_features, cfg.init_iterations, cfg.lr_init, None)
        self.updates.clear()
        self.updates.append(UpdateRecord(0, "init", float("nan"), iterations, loss, time.perf_counter() - start))
        self.update_totals = {"updates": 0, "iterations": 0, "seconds": 0.0}
        self.regressor = None
        if cfg.bbox_regression:
            samples = draw_with_overlap(
                self.rng, target, cfg.bbreg_samples,
                SampleSpec("uniform", cfg.bbreg_trans, cfg.bbreg_scale, cfg.bbreg_aspect), bounds, (cfg.bbreg_overlap, 1.0), MIN_SIDE)
            if len(samples):
                self.regressor = BoxRegressor(cfg.bbreg_ridge)
                self.regressor.fit(self._roi_features(features, origin, zoom, samples), samples, target)
        long_frames = max(cfg.long_frames, 1)
        self.pos_memory: deque[torch.Tensor] = deque([pos_features], maxlen=long_frames)
        self.neg_memory: deque[torch.Tensor] = deque([neg_features[: cfg.neg_update]], maxlen=max(cfg.short_frames, 1))
        self.target = target
        self.trans = cfg.trans

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        cfg = self.config
        height, width = image.shape[:2]
        frame = image_to_tensor(image, self.device)
        features, origin, zoom = self._region(frame, self.target)
        bounds = np.array([0.0, 0.0, float(width), float(height)])
        candidates = draw_boxes(self.rng, self.target, cfg.candidates, SampleSpec("gaussian", self.trans, cfg.scale), bounds, MIN_SIDE)
        roi_features = self._roi_features(features, origin, zoom, candidates)
        scores = self._scores(roi_features)
        top_scores, top_index = torch.topk(scores, min(cfg.top_k, len(scores)))
        top_index_np = top_index.cpu().numpy()
        score = float(top_scores.mean())
        success = score > cfg.score_threshold
        # The state the next frame samples around is the mean of the best candidates (their
        # aspect ratio is the first frame's); box regression refines only the reported box,
        # as MDNet does, so its errors cannot accumulate into the state.
        self.target = clip_boxes(candidates[top_index_np].mean(axis=0), bounds, MIN_SIDE)[0]
        reported = self.target
        if success:
            self.trans = cfg.trans
            if self.regressor is not None:
                refined = self.regressor.predict(roi_features[top_index], candidates[top_index_np])
                reported = clip_boxes(refined.mean(axis=0), bounds, MIN_SIDE)[0]
        else:
            self.trans = min(self.trans * cfg.trans_expand, cfg.trans_limit)
        frame_number = self.frame_index + 1
        if success:
            region_bounds = self._region_bounds(origin, zoom, width, height)
            self._collect(features, origin, zoom, self.target, region_bounds)
        if not success:
            self._update_fc("short", score)  # the dynamic update of sec. 3.4
        elif cfg.long_interval > 0 and frame_number % cfg.long_interval == 0:
            self._update_fc("long", score)
        x, y, w, h = reported
        return Box(x, y, w, h), 1.0 / (1.0 + math.exp(-max(min(score, 50.0), -50.0)))

    def update_iterations(self) -> dict[str, float]:
        """Online fine-tuning effort since init (the paper's Table 1 in summary)."""
        totals = self.update_totals
        return {
            "frames": self.frame_index,
            "updates": totals["updates"],
            "iterations": totals["iterations"],
            "mean_iterations": totals["iterations"] / totals["updates"] if totals["updates"] else 0.0,
            "iterations_per_frame": totals["iterations"] / max(self.frame_index, 1),
            "update_seconds": totals["seconds"],
        }
