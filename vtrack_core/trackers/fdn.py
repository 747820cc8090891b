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

While LOST (issue 20, not in the paper) the fc layers stay frozen and a second, wider region
is searched each frame (`_redetect`): docs/trackers/fdn.md, "Re-detection after LOST".
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, FeatureGeometry, build_backbone
from ..backbones.vgg import detect_norm, load_vggm_state
from ..boxes import Box
from ..deep_tracker import DeepTracker, DeepTrackerConfig
from ..ops.crops import crop_and_resize
from ..ops.redetect import redetect_window
from ..ops.sampling import SampleSpec, clip_boxes, draw_boxes, draw_with_overlap, grid_boxes, xywh_to_xyxy
from ..ops.maps import sigmoid
from ..weights import WeightsError

log = logging.getLogger(__name__)

MIN_SIDE = 2.0  # pixels: smallest sample box (MDNet's 10 px would swallow drone-sized targets)


# --- RoI layers (sec. 3.2) ------------------------------------------------------------------------
# Both take boxes already in *feature-map coordinates* (cell i's centre at i; see
# `FeatureGeometry` for the pixel -> cell mapping of a network) so the tracker converts once
# and the two layers can be compared on equal terms.
#
# * `max_roi_align` (FDN, sec. 3.2): each of the out x out bins holds sampling x sampling
#   points at fractional positions, each bilinearly interpolated; the bin keeps the largest.
#   All boxes of all images in one `grid_sample` call. The gradient is the paper's: the bin's
#   gradient goes to the winning point only (max), and from it to its four neighbouring cells
#   with the bilinear weights (grid_sample's backward).
# * `roi_pool` (Girshick, Fast R-CNN): box corners rounded to cells, bins of whole cells, max
#   over each bin; the comparison the FDN paper makes in Fig. 7.
def _check(features: torch.Tensor, boxes: torch.Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"features must be B x C x H x W, got {tuple(features.shape)}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes must be B x N x 4 (x1, y1, x2, y2) with B = {features.shape[0]}, "
                         f"got {tuple(boxes.shape)}")


def max_roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int = 3,
                  sampling: int = 2) -> torch.Tensor:
    """features B x C x H x W, boxes B x N x 4 (feature coordinates, x1 y1 x2 y2) ->
    (B*N) x C x out x out, image-major (all boxes of image 0 first)."""
    _check(features, boxes)
    batch, channels, height, width = features.shape
    count = boxes.shape[1]
    boxes = boxes.to(features.dtype)
    # Sample positions: bin j, point k sits at fraction (j + (k + 0.5) / s) / out of the box.
    bins = torch.arange(output_size, device=features.device, dtype=features.dtype)
    points = (torch.arange(sampling, device=features.device, dtype=features.dtype) + 0.5) / sampling
    fractions = ((bins.unsqueeze(1) + points) / output_size)  # out x s
    x1, y1, x2, y2 = (v[..., None, None] for v in boxes.unbind(-1))  # B x N x 1 x 1
    xs = x1 + fractions * (x2 - x1)  # B x N x out x s
    ys = y1 + fractions * (y2 - y1)
    # align_corners=True: -1 is cell 0, +1 is cell W-1; beyond the map samples read zeros.
    gx = 2.0 * xs / max(width - 1, 1) - 1.0
    gy = 2.0 * ys / max(height - 1, 1) - 1.0
    # Grid rows = (box, bin row, bin col), columns = the s x s points of that bin, so the
    # max below reduces the innermost, contiguous axis.
    gx = gx[:, :, None, :, None, :].expand(batch, count, output_size, output_size, sampling, sampling)
    gy = gy[:, :, :, None, :, None].expand(batch, count, output_size, output_size, sampling, sampling)
    grid = torch.stack([gx, gy], dim=-1).reshape(batch, count * output_size * output_size, sampling * sampling, 2)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    pooled = sampled.amax(dim=3)  # B x C x (N*out*out)
    pooled = pooled.reshape(batch, channels, count, output_size, output_size)
    return pooled.permute(0, 2, 1, 3, 4).reshape(batch * count, channels, output_size, output_size)


def roi_pool(features: torch.Tensor, boxes: torch.Tensor, output_size: int = 3) -> torch.Tensor:
    """RoIPool: corners rounded to the nearest cell, the box's cells split into out x out bins
    (floor / ceil of the fractional bin edges, as Fast R-CNN), the maximum of each bin; bins
    outside the map are 0. Same shapes as `max_roi_align`."""
    _check(features, boxes)
    batch, channels, height, width = features.shape
    count = boxes.shape[1]
    corners = torch.round(boxes.detach().float())
    x1, y1, x2, y2 = corners.unbind(-1)
    box_w = (x2 - x1 + 1).clamp_min(1.0)
    box_h = (y2 - y1 + 1).clamp_min(1.0)
    bins = torch.arange(output_size, device=features.device, dtype=torch.float32)
    # Bin edges in cells, B x N x out.
    x_start = torch.floor(x1.unsqueeze(-1) + bins * (box_w / output_size).unsqueeze(-1))
    x_end = torch.ceil(x1.unsqueeze(-1) + (bins + 1) * (box_w / output_size).unsqueeze(-1))
    y_start = torch.floor(y1.unsqueeze(-1) + bins * (box_h / output_size).unsqueeze(-1))
    y_end = torch.ceil(y1.unsqueeze(-1) + (bins + 1) * (box_h / output_size).unsqueeze(-1))
    x_start, x_end = x_start.clamp(0, width), x_end.clamp(0, width)
    y_start, y_end = y_start.clamp(0, height), y_end.clamp(0, height)
    # Every bin is read as a fixed K x K block of cells (the widest bin); cells past a bin's
    # end repeat its last cell, which leaves the maximum unchanged. One gather for all boxes.
    span = int(max(float((x_end - x_start).max()), float((y_end - y_start).max()), 1.0))
    steps = torch.arange(span, device=features.device, dtype=torch.float32)
    cols = torch.minimum(x_start.unsqueeze(-1) + steps, (x_end - 1).clamp_min(x_start).unsqueeze(-1))
    rows = torch.minimum(y_start.unsqueeze(-1) + steps, (y_end - 1).clamp_min(y_start).unsqueeze(-1))
    empty_x = x_end <= x_start  # B x N x out
    empty_y = y_end <= y_start
    cols = cols.clamp(0, width - 1).long()  # B x N x out x K
    rows = rows.clamp(0, height - 1).long()
    # flat index of (row, col) for every (bin_y, k_y, bin_x, k_x): B x N x out x K x out x K
    flat = rows[:, :, :, :, None, None] * width + cols[:, :, None, None, :, :]
    flat = flat.reshape(batch, 1, -1).expand(batch, channels, -1)
    values = torch.gather(features.reshape(batch, channels, height * width), 2, flat)
    values = values.reshape(batch, channels, count, output_size, span, output_size, span)
    pooled = values.amax(dim=(4, 6))  # B x C x N x out x out
    empty = (empty_y.unsqueeze(-1) | empty_x.unsqueeze(-2)).unsqueeze(1)  # B x 1 x N x out x out
    pooled = pooled.masked_fill(empty, 0.0)
    return pooled.permute(0, 2, 1, 3, 4).reshape(batch * count, channels, output_size, output_size)


def pool_rois(features: torch.Tensor, boxes: torch.Tensor, method: str = "align", output_size: int = 3,
              sampling: int = 2) -> torch.Tensor:
    """`method`: 'align' (max-RoIAlign, FDN's choice) or 'pool' (RoIPool)."""
    if method == "align":
        return max_roi_align(features, boxes, output_size, sampling)
    if method == "pool":
        return roi_pool(features, boxes, output_size)
    raise ValueError(f"unknown RoI method {method!r}; use 'align' or 'pool'")


# --- network (sec. 3.2, Fig. 1) ---------------------------------------------------------------
class FDNNet(nn.Module):
    """Shared conv layers (a backbone tap: VGG-M's conv3 in the paper) -> RoI layer -> fc4,
    fc5 (shared) -> fc6 (one 2-way branch per domain).

    fc module names follow py-MDNet's ('fc4.0', 'fc5.1', 'fc6.<d>.1') so its files load by
    name; the conv layers are the backbone's (`backbone.conv1.0.*` for VGG-M)."""

    def __init__(self, backbone: Backbone | None = None, tap: str = "conv3", domains: int = 1, roi_size: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else build_backbone("vggm", "random")
        self.backbone.check_taps([tap])
        self.tap = tap
        self.roi_size = roi_size
        self.feature_channels = self.backbone.tap_channels[tap]
        roi_features = self.feature_channels * roi_size * roi_size
        self.fc4 = nn.Sequential(nn.Linear(roi_features, 512), nn.ReLU(inplace=True))
        self.fc5 = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, 512), nn.ReLU(inplace=True))
        self.fc6 = nn.ModuleList([self._branch(dropout) for _ in range(domains)])
        # Marks our own files (BGR input) apart from py-MDNet's bare state dicts (RGB input).
        self.register_buffer("input_bgr", torch.ones(()))
        for module in (self.fc4, self.fc5):
            for layer in module:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=0.01)
                    nn.init.zeros_(layer.bias)
        self._geometry: dict[int | None, FeatureGeometry] = {}

    @staticmethod
    def _branch(dropout: float = 0.5) -> nn.Sequential:
        branch = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, 2))
        nn.init.normal_(branch[1].weight, std=0.01)  # Gaussian, as sec. 3.3 / 3.4
        nn.init.zeros_(branch[1].bias)
        return branch

    def geometry(self, input_size: int | None = None) -> FeatureGeometry:
        if input_size not in self._geometry:
            self._geometry[input_size] = self.backbone.geometry(self.tap, input_size)
        return self._geometry[input_size]

    def new_branches(self, domains: int) -> None:
        """Replace fc6 by `domains` freshly initialised branches (tracking: one)."""
        device = self.fc4[0].weight.device
        self.fc6 = nn.ModuleList([self._branch(self.fc5[0].p) for _ in range(domains)]).to(device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W BGR 0..255 -> the shared layers' maps (B x C x H/16 x W/16 for VGG-M)."""
        return self.backbone.extract(images, self.tap)

    def rois(self, features: torch.Tensor, boxes_xyxy: torch.Tensor, method: str = "align",
             sampling: int = 2, input_size: int | None = None) -> torch.Tensor:
        """B x N x 4 pixel-edge boxes (in the network input) -> (B*N) x C*out*out RoI features."""
        cells = self.geometry(input_size).to_features(boxes_xyxy)
        return pool_rois(features, cells, method, self.roi_size, sampling).flatten(1)

    def head(self, roi_features: torch.Tensor, domain: int = 0) -> torch.Tensor:
        """(N x C*out*out) -> N x 2 logits (background, target) of branch `domain`."""
        return self.fc6[domain](self.fc5(self.fc4(roi_features)))


def target_scores(logits: torch.Tensor) -> torch.Tensor:
    """Log-odds that each box is the target."""
    return logits[:, 1] - logits[:, 0]


# --- weights I/O ------------------------------------------------------------------------------
SHARED_PREFIXES = ("backbone.", "fc4.", "fc5.")
VGGM_LAYER_PREFIXES = ("conv1.", "conv2.", "conv3.")


def load_fdn_state(path: str | Path, input_mean: float = 128.0) -> dict[str, torch.Tensor]:
    """Shared-layer tensors (`backbone.*`, fc4, fc5) of our checkpoints, py-MDNet `.pth` or
    MatConvNet `.mat`, in FDNNet's names. VGG-M-shaped files name the conv layers `convN.*`
    (MDNet's, and ours from before the backbones library, the packaged fdn.pt among them):
    they become `backbone.convN.*`. A file without fc4 / fc5 (VGG-M) leaves them to their
    random initialisation, as sec. 4.5 does."""
    state = load_vggm_state(path, input_mean) if Path(path).suffix.lower() == ".mat" else None
    if state is None:
        from ..weights import load_torch_state_dict

        raw = load_torch_state_dict(path)
        state = raw if any(k.startswith("backbone.") for k in raw) else load_vggm_state(path, input_mean)
    state = {("backbone." + k if k.startswith(VGGM_LAYER_PREFIXES) else k): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.startswith(SHARED_PREFIXES)}


# The shared conv layers FDN can run on, and the tap its RoI layer reads: VGG-M's conv3 (the
# paper's), or a pretrained trunk's stride-8 map (sec. 3.2 cuts RoIs from the last conv map).
TRUNK_TAPS = {"vggm": "conv3", "vgg16": "conv4", "efficientnet_lite0": "stage3", "mobilenet_v2": "stage3"}


def build_fdn_net(path: str | Path, input_mean: float = 128.0, backbone: str = "vggm", tap: str = "",
                  output_stride: int = 0) -> FDNNet:
    """An FDNNet with the file's shared layers and one fresh fc6 branch. VGG-M: every conv
    layer from the file, its normalisation as the file implies. A pretrained trunk: its
    installed ImageNet weights, then the file's fc layers and whatever trunk layers it holds
    (those fine-tuned in training; a frozen trunk is not in our files)."""
    state = load_fdn_state(path, input_mean)
    if backbone == "vggm":
        trunk = build_backbone("vggm", "random", norm=detect_norm(state), input_mean=input_mean)
    else:
        trunk = build_backbone(backbone, None, output_stride=output_stride or None)
    net = FDNNet(trunk, tap or TRUNK_TAPS[backbone], domains=1)
    state = {k: v.float() for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that do not fit
        raise WeightsError(f"{path}: does not fit FDN on {backbone} ({str(error).splitlines()[1].strip()}); "
                           "check `backbone` and `tap`") from None
    allowed = ("fc6.", "fc4.", "fc5.") if backbone == "vggm" else ("fc6.", "backbone.")
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and k != "input_bgr"
               and not k.startswith(allowed)]
    if backbone != "vggm" and not any(k.startswith("fc4.") for k in state):
        missing.append("fc4.0.weight")  # a trunk without trained fc layers cannot score boxes
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit FDN on {backbone} (missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}); check `backbone` and `tap`")
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
class FDNConfig(DeepTrackerConfig):
    backbone: str = "vgg16"  # vgg16: ImageNet VGG-16 to conv4-3 (stride 8; fdn_vgg16.pt) | vggm: conv1-3 of VGG-M
    #                          (the paper's; fdn.pt, ours from scratch) | efficientnet_lite0 | mobilenet_v2
    tap: str = ""  # the map the RoI layer reads; empty: TRUNK_TAPS' (vggm conv3, stride 16; the others stride 8)
    output_stride: int = 0  # pretrained trunks: dilate to keep this stride (8: a stride-16 tap at stride 8); 0: none
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
    # re-detection while LOST (issue 20; not in the paper): a second region, wider, scored on a grid
    redetect: bool = True  # while LOST on a calibrated score: a grid over a wider region, the best looked at again (_redetect)
    redetect_growth: float = 1.5  # the wide region's side grows by this factor each LOST frame ...
    redetect_max_scale: float = 3.0  # ... up to this many normal region sides, or the whole frame if less
    redetect_step: float = 0.5  # grid step of the wide candidates, x the target's mean side ...
    redetect_candidates: int = 576  # ... wider where the grid would hold more than this many
    redetect_margin: float = 1.0  # target score (log-odds) by which the wide region's best must beat the normal one's
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


class FDNTracker(DeepTracker):
    name = "fdn"
    config_class = FDNConfig
    weights_formats = "our checkpoints, py-MDNet .pth, MatConvNet VGG-M or MDNet .mat"
    backbones = tuple(TRUNK_TAPS)

    def __init__(self, config: FDNConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.roi_method not in ("align", "pool"):
            raise ValueError(f"fdn: roi_method must be 'align' or 'pool', got {cfg.roi_method!r}")
        self.base = build_fdn_net(self.weights_path(), cfg.input_mean, cfg.backbone, cfg.tap, cfg.output_stride)
        self.base.backbone.eval().fold_batch_norms()  # fixed while tracking (sec. 3.4)
        self.region_px = int(16 * math.ceil(cfg.target_px * cfg.search_scale / 16))
        self.updates: deque[UpdateRecord] = deque(maxlen=UPDATE_HISTORY)
        self.update_totals = {"updates": 0, "iterations": 0, "seconds": 0.0}
        self.reported = np.zeros(4)

    @property
    def target(self) -> np.ndarray:
        """The state as x, y, w, h (the sampler's and the RoI layer's boxes)."""
        return np.concatenate([self.center - self.target_size / 2, self.target_size])

    def _set_target(self, box_xywh: np.ndarray) -> None:
        self.center = box_xywh[:2] + box_xywh[2:] / 2
        self.target_size = np.array(box_xywh[2:], dtype=np.float64)

    # -- helpers -----------------------------------------------------------------------------
    def _region(self, frame: torch.Tensor, centre: np.ndarray | None = None,
                factor: float = 1.0) -> tuple[torch.Tensor, np.ndarray, float]:
        """Search region around the target (or `factor` times wider, around `centre`: the
        re-detection region, at the same input size, so coarser): (the shared layers'
        features, region origin in the image, input pixels per image pixel)."""
        centre = self.center if centre is None else centre
        zoom = self._region_zoom(factor)
        side = self.region_px / zoom
        crop = crop_and_resize(frame, torch.as_tensor(centre - 0.5, device=self.device, dtype=torch.float32),
                               torch.tensor([side], device=self.device, dtype=torch.float32), self.region_px,
                               self.fill)
        with torch.no_grad():
            features = self.net.features(crop.contiguous(memory_format=torch.channels_last)).float()
        return features, centre - side / 2, zoom

    def _region_zoom(self, factor: float = 1.0) -> float:
        """Input pixels per image pixel of the search region (`factor` times wider: that much
        coarser): the target `target_px` wide in the normal one."""
        return self.config.target_px / float(self.target_size.mean()) / factor

    def _roi_features(self, features: torch.Tensor, origin: np.ndarray, zoom: float, boxes: np.ndarray) -> torch.Tensor:
        xyxy = (xywh_to_xyxy(boxes) - np.tile(origin, 2)) * zoom
        rois = torch.as_tensor(xyxy, dtype=torch.float32, device=self.device).unsqueeze(0)
        with torch.no_grad():
            return self.net.rois(features, rois, self.config.roi_method, self.config.roi_sampling, self.region_px)

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
    def _start(self, frame: torch.Tensor, image: np.ndarray) -> None:
        cfg = self.config
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        # A private copy of the network: the fc layers are fine-tuned for this target only.
        self.net = copy.deepcopy(self.base).to(self.device)
        self.net.new_branches(1)
        # The shared layers stay fixed while tracking (sec. 3.4).
        self.net.backbone.to(self.dtype, memory_format=torch.channels_last).requires_grad_(False)
        self.net.eval()
        self.optimizer = torch.optim.SGD(
            [{"params": list(self.net.fc4.parameters()) + list(self.net.fc5.parameters()), "lr_mult": 1.0},
             {"params": self.net.fc6.parameters(), "lr_mult": cfg.fc6_lr_mult}],
            lr=cfg.lr_init, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        target = self.target
        features, origin, zoom = self._region(frame)
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
        self.reported = target
        self.trans = cfg.trans

    def reported_box(self) -> Box:
        return Box(*self.reported)

    def _track(self, frame: torch.Tensor, image: np.ndarray) -> float:
        cfg = self.config
        height, width = image.shape[:2]
        features, origin, zoom = self._region(frame)
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
        state = clip_boxes(candidates[top_index_np].mean(axis=0), bounds, MIN_SIDE)[0]
        self._set_target(state)
        reported = state
        if cfg.redetect and self.lost_on_calibrated_score:
            found = self._redetect(frame, image.shape)
            if found is not None and found[1] > score + cfg.redetect_margin:
                state, score = found  # the target seen elsewhere: the normal region moves there
                self._set_target(state)
                self.trans = cfg.trans
                self.reported = state
                return sigmoid(score)  # frozen while LOST: nothing learnt, nothing collected
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
            self._collect(features, origin, zoom, state, region_bounds)
        if not self.lost:  # the model stays frozen while LOST: the target may be absent (issue 20)
            if not success:
                self._update_fc("short", score)  # the dynamic update of sec. 3.4
            elif cfg.long_interval > 0 and frame_number % cfg.long_interval == 0:
                self._update_fc("long", score)
        self.reported = reported
        return sigmoid(score)

    def _redetect(self, frame: torch.Tensor, image_shape: tuple[int, ...]) -> tuple[np.ndarray, float] | None:
        """One wide search while the target is LOST on a calibrated score (issue 20; uncalibrated,
        FDN's LOST is too often on a target in view), besides the normal one. The
        shared layers run once more on a region `redetect_window` times wider (growing each
        LOST frame, up to the whole frame) at the same input size, so coarser, and a grid of
        candidates of the target's size (`redetect_step` apart, at most
        `redetect_candidates`) is scored in one batch. The coarse scores only rank: the best
        one is looked at again at the normal zoom, with the normal candidates around it, so
        that its target score (top-k mean) compares like for like with the normal region's.
        Returns that state and score when its calibrated confidence passes the threshold,
        else None; `_track` moves there only if it beats the normal region's score by
        `redetect_margin`. Cost per LOST frame: two more backbone passes and two more head
        batches."""
        cfg = self.config
        height, width = image_shape[:2]
        image_bounds = np.array([0.0, 0.0, float(width), float(height)])
        window = redetect_window(self.center, self.region_px / self._region_zoom(), image_shape,
                                 self.lost_rule.lost_frames, cfg.redetect_growth, cfg.redetect_max_scale)
        features, origin, zoom = self._region(frame, window.centre, window.factor)
        grid = grid_boxes(self._region_bounds(origin, zoom, width, height), self.target_size,
                          cfg.redetect_step * float(self.target_size.mean()), cfg.redetect_candidates)
        grid = clip_boxes(grid, image_bounds, MIN_SIDE)
        best = grid[int(torch.argmax(self._scores(self._roi_features(features, origin, zoom, grid))))]
        centre = best[:2] + best[2:] / 2
        features, origin, zoom = self._region(frame, centre)
        candidates = draw_boxes(self.rng, best, cfg.candidates, SampleSpec("gaussian", cfg.trans, cfg.scale),
                                image_bounds, MIN_SIDE)
        top_scores, top_index = torch.topk(self._scores(self._roi_features(features, origin, zoom, candidates)),
                                           min(cfg.top_k, len(candidates)))
        score = float(top_scores.mean())
        if self.calibrated(sigmoid(score)) < self.lost_rule.threshold:
            return None
        return clip_boxes(candidates[top_index.cpu().numpy()].mean(axis=0), image_bounds, MIN_SIDE)[0], score

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
