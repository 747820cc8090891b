"""FCNT: "Visual Tracking with Fully Convolutional Networks" (Wang, Ouyang, Wang, Lu;
ICCV 2015). Two feature levels of a CNN, the feature maps that matter for this target
selected at the first frame (sec. 4.1), a general network (GNet, high level) and a specific
network (SNet, mid level) that regress a foreground heat map (sec. 4.2), a distractor test
that decides which heat map locates the target, and SNet-only online updates (sec. 4.3).

Backbone: any two taps of a `vtrack_core.backbones` network (`TWO_LEVELS`); the default is
the paper's VGG-16 conv4-3 / conv5-3, from the installed HED weights or
`backbone_weights=FILE` (a torchvision state dict); `efficientnet_lite0` (stride 8 / 16) and
VGG-M conv2 / conv3 with the conv layers of our FDN weights (`vggm`) are config values. The high-level map is resampled at the input positions of the
mid-level cells (`resample_to_grid`), so both heat maps live on one grid.

Our reading of points the paper leaves open, each a config value (why each default, and
the held-back runs that decided it: docs/trackers/fcnt.md):
* Feature scaling: both levels are divided by their first-frame RMS activation, so the
  heat-map networks see inputs of unit scale whatever the backbone; the selected maps they
  read are also centred on their first-frame means. ReLU maps are non-negative, so without
  the centring every Adam step moves all of a hidden unit's weights the same way, and on
  sparse VGG-16 conv4-3 maps whole networks died in the first steps (docs/trackers/fcnt.md).
* Optimiser: Adam. The paper's SGD rates (1e-9 sel-CNN, 1e-7 GNet/SNet) belong to Caffe's
  unnormalised sums over raw VGG activations and do not carry over.
* The heat-map networks end in a ReLU as in the paper; on the target's cells the loss is
  taken before it (see `heatmap_error`).
* Candidate spread (eq. 8): sec. 5 calls {10, 10, 0.004} the "variances" of x, y and scale;
  the authors' released tracker uses them as standard deviations (pixels, and 0.4 % of the
  size). We follow the code (`spread_as=std`); read as variances (`spread_as=variance`) the
  scale spread is 6 % per frame and the box size drifts.
* Distractor test (eq. 9): P_d over the plain heat-map sums, as the paper writes it; the
  authors' code counts only cells above 0.2 x the map's peak (`distractor_floor=0.2`).
* Candidate score: the paper's sum of the heat map inside the box (an integral image),
  taken over the heat map minus a level times the map's peak (`edge_level`, chosen so that
  the sum over a target Gaussian peaks at the target's own box). With the literal sum
  (`candidate_score=sum`) a larger box never scores lower and the box grows to the whole
  ROI; with the offset, cells outside the target count against a box. The authors' code
  ranks by the floored mean times area^0.7 (`candidate_score=area_power`).
* SNet's updates (sec. 4.3): the paper takes every result; we skip results below
  `update_min_confidence` = 0.3, the confidence below which the tracker reports the target
  as not tracked (the authors' code skips below its 0.35): learning from every result
  teaches SNet the background where a hidden target had been.
* The ROI side is `roi_context` x the first box's mean side; the authors' code cuts it from
  the current box (`roi_follows_target=true`), an option.

Confidence (0..1): the chosen box's heat-map sum divided by the sum the first frame's
target heat map M has inside the target box, clipped: about 1 when the predicted heat map is
as strong as the trained one, near 0 when it has vanished.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import FeatureGeometry, MissingWeightsError, build_backbone, installed_weights
from ..boxes import Box
from ..calibration import CalibrationSource
from ..deep_tracker import PACKAGED_WEIGHTS, DeepTracker, DeepTrackerConfig
from ..tracker import TrackerConfig
from ..ops.crops import crop_and_resize
from ..ops.maps import gaussian_label
from ..ops.redetect import redetect_window, tile_centres
from ..ops.sampling import SampleSpec, draw_boxes, grid_boxes

# Backbone -> (mid-level tap, high-level tap): SNet reads the first, GNet the second.
TWO_LEVELS = {
    "vgg16": ("conv4", "conv5"),  # the paper's conv4-3 and conv5-3
    "vggm": ("conv2", "conv3"),  # FDN's conv2 (before its pool) and conv3
    "efficientnet_lite0": ("stage3", "stage5"),  # stride 8 and 16
    "mobilenet_v2": ("stage3", "stage5"),
}


# --- heat maps ------------------------------------------------------------------------------------
def resample_to_grid(features: torch.Tensor, geometry: FeatureGeometry, size: tuple[int, int],
                     grid_geometry: FeatureGeometry) -> torch.Tensor:
    """`features` (cells at `geometry`) sampled bilinearly at the input positions of a
    `size` map of cells at `grid_geometry`; beyond the outer cells the edge value is kept. A
    plain resize lines the cells up only when both maps cover the input alike (VGG-16); for
    VGG-M's maps (46 and 22 cells for a 386 px ROI) it put the high level 0.6 cell off."""
    rows, cols = features.shape[-2:]

    def normalised(count: int, source_count: int) -> torch.Tensor:
        positions = grid_geometry.offset + grid_geometry.stride * torch.arange(count, dtype=torch.float32,
                                                                               device=features.device)
        index = (positions - geometry.offset) / geometry.stride  # fractional source cell
        return 2.0 * index / max(source_count - 1, 1) - 1.0  # align_corners=True coordinates

    ys, xs = normalised(size[0], rows), normalised(size[1], cols)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).to(features.dtype)
    grid = grid.unsqueeze(0).expand(features.shape[0], -1, -1, -1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)


def box_sums(heatmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Sum of `heatmap` (H x W) inside each of N boxes (x1, y1, x2, y2 in cells, half-open,
    rounded to whole cells and clipped to the map), from one integral image."""
    height, width = heatmap.shape
    integral = F.pad(heatmap.float().cumsum(0).cumsum(1), (1, 0, 1, 0))
    corners = torch.round(boxes).long()
    x1 = corners[:, 0].clamp(0, width)
    x2 = corners[:, 2].clamp(0, width)
    y1 = corners[:, 1].clamp(0, height)
    y2 = corners[:, 3].clamp(0, height)
    x2, y2 = torch.maximum(x2, x1), torch.maximum(y2, y1)
    return integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]


# --- candidates (eq. 8) ---------------------------------------------------------------------------
def draw_candidates(state_xywh: np.ndarray, count: int, trans_std: float, scale_std: float,
                    rng: np.random.Generator) -> np.ndarray:
    """`count` boxes (x, y, w, h) around `state_xywh`: centre + N(0, trans_std^2) pixels per
    axis, size x exp(N(0, scale_std^2)) (aspect kept). Row 0 is the state itself, so standing
    still is always a candidate."""
    candidates = draw_boxes(rng, state_xywh, count, SampleSpec("normal", trans_std, scale_std), bounds=None)
    candidates[0] = state_xywh
    return candidates


CANDIDATE_RULES = ("edge_offset", "sum", "area_power")


def above_floor(heatmap: torch.Tensor, floor: float) -> torch.Tensor:
    """The heat map with every cell at or below `floor` x its peak set to 0."""
    return torch.where(heatmap > floor * heatmap.max(), heatmap, torch.zeros_like(heatmap))


def edge_level(heatmap_sigma: float) -> float:
    """Level (x the peak) to subtract per cell so that a box's sum over a target Gaussian
    (sigma = heatmap_sigma x side) peaks at the target's own box. Growing the box's half-width
    a adds an edge strip worth G(a) x (the Gaussian's mean along the other side), so the
    optimum sits where that equals the level: exp(-1 / (8 k^2)) x sqrt(2 pi) k erf(1 / (2 sqrt(2) k))
    for k = heatmap_sigma; 0.081 for k = 1/4. (exp(-1 / (8 k^2)) alone, 0.135, ignores the
    mean along the other side, and its optimum is a box 0.89 x the target's.)"""
    k = heatmap_sigma
    return math.exp(-1.0 / (8.0 * k * k)) * math.sqrt(2.0 * math.pi) * k * math.erf(1.0 / (2.0 * math.sqrt(2.0) * k))


def candidate_scores(heatmap: torch.Tensor, cells: torch.Tensor, rule: str, heatmap_sigma: float,
                     area_power: float = 0.7, floor: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranking score, plain heat-map sum) of N candidate boxes (cells, x1 y1 x2 y2).

    sum: the paper's conf_i, which never prefers a smaller box; edge_offset: the sum of the
    map minus the level a target Gaussian (sigma = heatmap_sigma x side) has at its box's
    edge, so cells outside the target count against a box; area_power: the authors' code,
    mean of the map floored at `floor` x peak, times area ** area_power."""
    sums = box_sums(heatmap, cells)
    areas = (torch.round(cells[:, 2]) - torch.round(cells[:, 0])).clamp_min(0) * \
            (torch.round(cells[:, 3]) - torch.round(cells[:, 1])).clamp_min(0)
    if rule == "edge_offset":
        return sums - edge_level(heatmap_sigma) * heatmap.max() * areas, sums
    if rule == "area_power":
        return box_sums(above_floor(heatmap, floor), cells) * areas.clamp_min(1.0) ** (area_power - 1.0), sums
    if rule == "sum":
        return sums, sums
    raise ValueError(f"unknown candidate score {rule!r}")


def distractor_ratio(heatmap: torch.Tensor, box_cells: torch.Tensor, floor: float) -> float:
    """P_d of eq. 9: heat outside the chosen box over heat inside it, counting only cells
    above `floor` x the map's peak (0: every cell, the paper's plain sums). A faint haze over
    the whole ROI adds up to more than the target's blob; the floor keeps P_d about other
    blobs, i.e. distractors."""
    if floor > 0:
        heatmap = above_floor(heatmap, floor)
    inside = float(box_sums(heatmap, box_cells.reshape(1, 4))[0])
    return (float(heatmap.sum()) - inside) / max(inside, 1e-9)


# --- feature-map selection (sec. 4.1) -----------------------------------------------------------
class SelCNN(nn.Module):
    """Dropout, then one convolution to a single map, no nonlinearity."""

    def __init__(self, channels: int, kernel: int = 3, dropout: float = 0.3) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(channels, 1, kernel, padding=kernel // 2)
        nn.init.normal_(self.conv.weight, std=1e-3)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dropout(features))


def map_significance(model: SelCNN, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """S_k = sum over the k-th map of s_i = -g_i f_i + 1/2 h_ii f_i^2 (eq. 6) for
    L = ||conv(F) - M||^2, dropout off.

    g = dL/dF by back-propagation. The model is linear in F, so the Hessian's diagonal has a
    closed form: d2L/df_i^2 = 2 * sum over the outputs o that f_i feeds of w_{o,i}^2, which is
    the transposed convolution of a map of ones with the squared kernel (exact at the borders
    too)."""
    features = features.detach().requires_grad_(True)
    model.eval()
    loss = (model(features) - target).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, features)
    weight = model.conv.weight.detach()
    padding = model.conv.padding
    ones = torch.ones(1, 1, *target.shape[-2:], device=features.device, dtype=features.dtype)
    hessian = 2.0 * F.conv_transpose2d(ones, weight.pow(2), padding=padding)  # 1 x C x H x W
    values = features.detach()
    significance = -grad * values + 0.5 * hessian * values.pow(2)
    return significance.sum(dim=(0, 2, 3))


def select_maps(features: torch.Tensor, target: torch.Tensor, keep: int, iterations: int, lr: float,
                dropout: float = 0.3, kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a sel-CNN on (features -> target heat map) and keep the `keep` most significant
    maps. Returns (indices, significances), both sorted by significance, descending."""
    channels = features.shape[1]
    if keep >= channels:  # nothing to drop (the paper's K = 512 for 512 maps)
        return torch.arange(channels, device=features.device), torch.zeros(channels, device=features.device)
    model = SelCNN(channels, kernel, dropout).to(features.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(iterations):
        loss = (model(features) - target).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    significance = map_significance(model, features, target)
    order = torch.argsort(significance, descending=True)
    return order[:keep], significance[order[:keep]]


# --- GNet / SNet (sec. 4.2) ------------------------------------------------------------------------
class HeatmapNet(nn.Module):
    """conv 9x9 -> 36 maps -> ReLU -> conv 5x5 -> heat map -> ReLU (sizes kept by padding)."""

    def __init__(self, channels: int, hidden: int = 36) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 9, padding=4)
        self.conv2 = nn.Conv2d(hidden, 1, 5, padding=2)
        nn.init.normal_(self.conv1.weight, std=math.sqrt(2.0 / (channels * 81)))
        nn.init.constant_(self.conv1.bias, 0.01)
        # A small start keeps the output ReLU alive: a first step that overshoots below zero
        # everywhere would leave no gradient at all.
        nn.init.normal_(self.conv2.weight, std=1e-3)
        nn.init.constant_(self.conv2.bias, 0.01)

    def forward(self, features: torch.Tensor, clip: bool = True) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(features)))
        return F.relu(out) if clip else out

    def weight_norm(self) -> torch.Tensor:
        return self.conv1.weight.pow(2).sum() + self.conv2.weight.pow(2).sum()


def heatmap_error(net: HeatmapNet, features: torch.Tensor, target: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """Squared error of the heat map, per cell. Where the target is (M > floor) it is taken
    before the output ReLU, so a cell pushed below zero still gets gradient (without this,
    first-frame fits died: docs/trackers/fcnt.md); on the background it is taken after it,
    so any value <= 0 is already right and the background comes out exactly 0, as the
    distractor test (eq. 9) needs."""
    raw = net(features, clip=False)
    return torch.where(target > floor, raw - target, F.relu(raw) - target).pow(2)


@dataclass(frozen=True)
class Localised:
    """One search's answer: the box (x, y, w, h), its strength (heat in the box over the first
    frame's, unclipped), whether eq. 9 found a distractor, and the ROI it was found on (its
    selected, scaled, centred mid-level features, origin and zoom), which SNet learns from."""

    box: np.ndarray
    strength: float
    distractor: bool
    mid: torch.Tensor
    origin: np.ndarray
    zoom: float


@dataclass
class FCNTConfig(DeepTrackerConfig):
    backbone: str = "vgg16"  # a TWO_LEVELS backbone: vgg16 (the paper's; the better on dev), efficientnet_lite0,
    #                          vggm (our FDN conv layers): docs/trackers/fcnt.md
    backbone_weights: str = ""  # empty: vggm -> vtrack_core/weights/fdn.pt, others -> their installed weights
    # `weights` (the node's parameter) is an alias of backbone_weights: FCNT trains nothing offline
    roi_size: int = 386  # input ROI, pixels (sec. 5)
    roi_context: float = 3.0  # ROI side / target mean side (ours; the paper gives only the 386 px)
    roi_follows_target: bool = False  # True: ROI side from the current box (authors' code); False: the first box's
    selected_maps: int = 384  # K per level (sec. 5); >= the level's maps: no selection
    sel_iterations: int = 50  # sec. 5
    sel_lr: float = 1e-3
    sel_dropout: float = 0.3
    sel_kernel: int = 3
    net_iterations: int = 50  # GNet / SNet at the first frame (sec. 5)
    net_lr: float = 3e-4
    update_iterations: int = 3  # SNet per update (sec. 5)
    update_lr: float = 1e-4
    weight_decay: float = 0.005  # beta, eq. 7 and 10
    heatmap_sigma: float = 0.25  # Gaussian sigma per axis = this x target w, h
    candidates: int = 600  # sec. 5
    trans_variance: float = 10.0  # eq. 8, sec. 5: x and y, image pixels (see spread_as)
    scale_variance: float = 0.004  # eq. 8, sec. 5: relative scale (see spread_as)
    spread_as: str = "std"  # std: the two numbers are standard deviations (authors' code) | variance (paper's text)
    candidate_score: str = "edge_offset"  # edge_offset | sum (the paper's literal sum) | area_power (authors' code)
    area_power: float = 0.7  # area_power: mean of the floored map inside the box x area ** this
    area_power_floor: float = 0.1  # area_power: cells below this x the peak count as 0
    distractor_threshold: float = 0.2  # P_d (eq. 9) above it: SNet decides
    distractor_floor: float = 0.0  # P_d counts only cells above this x the peak (authors' code: 0.2); 0: all (paper)
    adaptation_interval: int = 20  # SNet fine-tuned with the most confident result every N frames
    update_min_confidence: float = 0.3  # SNet learns only from results at least this confident (authors: 0.35; paper: always)
    use_gnet: bool = True  # ablation: False = FCNT_S
    use_snet: bool = True  # ablation: False = FCNT_G
    seed: int = 0
    confidence_threshold: float = 0.3
    redetect: bool = True  # while LOST on a calibrated score: GNet over normal-size ROIs tiled over a wider window
    redetect_growth: float = 1.5  # the window's side grows by this factor each LOST frame ...
    redetect_max_scale: float = 3.0  # ... up to this many ROI sides, or the whole frame if less
    redetect_step: float = 0.5  # ROIs this many ROI sides apart ...
    redetect_max_tiles: int = 9  # ... further apart where more would be needed: at most this many more
    #                              backbone ROIs on a LOST frame (in one batch; a normal frame reads one)
    redetect_box_step: float = 0.25  # target-size boxes on each ROI's heat map, this x the mean side apart
    redetect_margin: float = 0.3  # strength (heat-map share of the first frame's) by which the wide best must win
    #                                (0.3 chosen on the training val out-of-view sequences, docs/trackers/fcnt.md)
    redetect_verify: bool = True  # a wide find is taken only if the normal search on a ROI centred on it passes too
    #                               (chosen on the training out-of-view sequences, docs/trackers/fcnt.md)
    redetect_strength: str = "sum"  # a wide find's strength: sum (heat in the box / the first frame's) |
    #                                 concentrated (the lower of that and its concentration, see below)
    freeze_below: float = 0.15  # while LOST on a calibrated score, SNet learns nothing from frames whose
    #                             calibrated confidence is below this (target likely absent); 1.0: from no LOST frame


class FCNTTracker(DeepTracker):
    name = "fcnt"
    config_class = FCNTConfig
    trainable = False
    backbones = tuple(TWO_LEVELS)

    def __init__(self, config: FCNTConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if not (cfg.use_gnet or cfg.use_snet):
            raise ValueError("fcnt: use_gnet and use_snet cannot both be off")
        weights = self.backbone_file(cfg)
        # channels_last: oneDNN (CPU) and cuDNN run these convolutions faster in NHWC (VGG-16 on a 386 px ROI: 1.2x here).
        self.backbone = build_backbone(cfg.backbone, weights).to(self.device, self.dtype).eval()
        self.backbone.to(memory_format=torch.channels_last).fold_batch_norms()
        self.backbone.requires_grad_(False)
        self.taps = TWO_LEVELS[cfg.backbone]
        self.geometry = self.backbone.geometry(self.taps[0], cfg.roi_size)
        self.high_geometry = self.backbone.geometry(self.taps[1], cfg.roi_size)
        self.map_size: tuple[int, int] | None = None  # heat-map cells, set at init
        if cfg.candidate_score not in CANDIDATE_RULES:
            raise ValueError(f"fcnt: candidate_score must be one of {', '.join(CANDIDATE_RULES)}, "
                             f"not {cfg.candidate_score!r}")
        if cfg.redetect_strength not in ("sum", "concentrated"):
            raise ValueError(f"fcnt: redetect_strength must be 'sum' or 'concentrated', not {cfg.redetect_strength!r}")
        if cfg.spread_as not in ("std", "variance"):
            raise ValueError(f"fcnt: spread_as must be 'std' or 'variance', not {cfg.spread_as!r}")
        if cfg.spread_as == "std":
            self.spread = (cfg.trans_variance, cfg.scale_variance)
        else:
            self.spread = (math.sqrt(cfg.trans_variance), math.sqrt(cfg.scale_variance))

    @staticmethod
    def backbone_file(config: FCNTConfig) -> str | None:
        """The backbone weights FCNT runs on: `backbone_weights` (or its alias `weights`),
        FDN's VGG-M file for `vggm`, else None (the backbone's installed ImageNet weights)."""
        weights = FCNTTracker.own_backbone_file(config)
        if weights is None and config.backbone == "vggm":
            weights = str(PACKAGED_WEIGHTS / "fdn.pt")
        return weights

    @staticmethod
    def own_backbone_file(config: TrackerConfig) -> str | None:
        """A backbone file the user chose (`backbone_weights` or its alias `weights`), else None."""
        return getattr(config, "backbone_weights", "") or getattr(config, "weights", "") or None

    @classmethod
    def calibration_source(cls, config: TrackerConfig) -> CalibrationSource:
        """FCNT learns nothing offline: its scores depend on the backbone's weights alone. The
        packaged calibration is `fcnt_<backbone>.calibration.json`, fitted for the installed
        weights' sha256; a backbone file of one's own gets `<its stem>.fcnt.calibration.json`
        beside it."""
        own = cls.own_backbone_file(config)
        if own:
            path = Path(own)
            return CalibrationSource(path.with_name(f"{path.stem}.fcnt.calibration.json"), {"backbone": path})
        target = PACKAGED_WEIGHTS / f"fcnt_{config.backbone}.calibration.json"
        packaged = cls.backbone_file(config)  # type: ignore[arg-type]
        try:
            weights = Path(packaged) if packaged else installed_weights(config.backbone)  # type: ignore[attr-defined]
        except MissingWeightsError:  # the tracker itself says what to install
            weights = Path(f"<{config.backbone} weights not installed>")  # type: ignore[attr-defined]
        return CalibrationSource(target, {"backbone": weights})

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """The target as x, y, w, h (candidates and heat maps are boxes)."""
        return np.concatenate([self.center - self.target_size / 2, self.target_size])

    def _roi_side(self) -> float:
        cfg = self.config
        return cfg.roi_context * (float(self.target_size.mean()) if cfg.roi_follows_target else self.mean_side)

    def _rois(self, frame: torch.Tensor, centres: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
        """ROIs of the normal side around N centres in one backbone pass: (mid, high features
        on the mid grid, N each; zoom)."""
        cfg = self.config
        side = self._roi_side()
        roi = crop_and_resize(frame, torch.as_tensor(centres - 0.5, device=self.device, dtype=torch.float32),
                              torch.full((len(centres),), side, device=self.device), cfg.roi_size, self.fill)
        with torch.no_grad():
            maps = self.backbone(roi.to(self.dtype).contiguous(memory_format=torch.channels_last), self.taps)
            mid, high = maps[self.taps[0]].contiguous(), maps[self.taps[1]].contiguous()
            high = resample_to_grid(high, self.high_geometry, mid.shape[-2:], self.geometry)
        return mid.float(), high.float(), cfg.roi_size / side

    def _crop(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, float]:
        """ROI around the target: (mid, high features on the mid grid, origin, zoom)."""
        mid, high, zoom = self._rois(frame, self.center[None])
        return mid, high, self.center - self._roi_side() / 2, zoom

    def _to_cells(self, boxes_xywh: np.ndarray, origin: np.ndarray, zoom: float) -> torch.Tensor:
        """Image boxes (x, y, w, h) -> map-cell x1 y1 x2 y2 (cell i covers input pixels
        offset + stride * (i -+ 1/2))."""
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        geometry = self.geometry
        cells = ((xyxy - np.tile(origin, 2)) * zoom - geometry.offset) / geometry.stride + 0.5
        return torch.as_tensor(cells, dtype=torch.float32, device=self.device)

    def _target_map(self, box: np.ndarray, origin: np.ndarray, zoom: float) -> torch.Tensor:
        cells = self._to_cells(box, origin, zoom)[0].cpu().numpy()
        centre = ((cells[0] + cells[2]) / 2 - 0.5, (cells[1] + cells[3]) / 2 - 0.5)
        size = (max(cells[2] - cells[0], 1.0), max(cells[3] - cells[1], 1.0))
        sigma = (self.config.heatmap_sigma * size[0], self.config.heatmap_sigma * size[1])
        return gaussian_label(self.map_size, (sigma[1], sigma[0]), (centre[1], centre[0]), self.device)[None, None]

    # -- training ---------------------------------------------------------------------------------
    def _fit(self, net: HeatmapNet, inputs: list[torch.Tensor], targets: list[torch.Tensor],
             masks: list[torch.Tensor | None], optimizer: torch.optim.Optimizer, iterations: int) -> float:
        """Minimise sum ||(M_hat - M) * mask||^2 + beta ||W||^2 (eq. 7 / eq. 10)."""
        loss_value = float("nan")
        # All inputs in one batch: one pass of the network per iteration.
        features = torch.cat(inputs)
        target = torch.cat(targets)
        mask = None if all(m is None for m in masks) else \
            torch.cat([torch.ones_like(t) if m is None else m for m, t in zip(masks, targets)])
        for _ in range(iterations):
            error = heatmap_error(net, features, target)
            loss = self.config.weight_decay * net.weight_norm() + (error if mask is None else error * mask).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
        return loss_value

    # -- Tracker -----------------------------------------------------------------------------------
    def _start(self, frame: torch.Tensor, image: np.ndarray) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.mean_side = float(self.target_size.mean())
        mid, high, origin, zoom = self._crop(frame)
        self.map_size = tuple(mid.shape[-2:])
        self.scales = (float(mid.pow(2).mean().sqrt().clamp_min(1e-6)), float(high.pow(2).mean().sqrt().clamp_min(1e-6)))
        mid, high = mid / self.scales[0], high / self.scales[1]
        target = self._target_map(self.state, origin, zoom)
        self.first_target = target
        first_cells = self._to_cells(self.state, origin, zoom)[0]
        self.ideal_sum = float(box_sums(target[0, 0], first_cells.reshape(1, 4))[0])
        centre, half = (first_cells[:2] + first_cells[2:]) / 2, (first_cells[2:] - first_cells[:2]) / 2
        self.ideal_concentration = self.ideal_sum / max(float(box_sums(
            target[0, 0], torch.cat([centre - 2 * half, centre + 2 * half]).reshape(1, 4))[0]), 1e-9)
        # sec. 4.1: the K most significant maps of each level
        keep_mid, _ = select_maps(mid, target, cfg.selected_maps, cfg.sel_iterations, cfg.sel_lr, cfg.sel_dropout,
                                  cfg.sel_kernel)
        keep_high, _ = select_maps(high, target, cfg.selected_maps, cfg.sel_iterations, cfg.sel_lr,
                                   cfg.sel_dropout, cfg.sel_kernel)
        self.keep_mid, self.keep_high = keep_mid, keep_high
        mid, high = mid[:, keep_mid], high[:, keep_high]
        self.centres = (mid.mean(dim=(0, 2, 3), keepdim=True), high.mean(dim=(0, 2, 3), keepdim=True))
        mid, high = mid - self.centres[0], high - self.centres[1]
        # sec. 4.2: GNet on the high level, SNet on the mid level, trained on frame 1 (eq. 7)
        self.gnet = HeatmapNet(len(keep_high)).to(self.device)
        self.snet = HeatmapNet(len(keep_mid)).to(self.device)
        if cfg.use_gnet:
            self._fit(self.gnet, [high], [target], [None], torch.optim.Adam(self.gnet.parameters(), lr=cfg.net_lr),
                      cfg.net_iterations)
        if cfg.use_snet:
            self._fit(self.snet, [mid], [target], [None], torch.optim.Adam(self.snet.parameters(), lr=cfg.net_lr),
                      cfg.net_iterations)
        self.gnet.requires_grad_(False)  # GNet stays fixed (sec. 4.3)
        self.snet_optimizer = torch.optim.Adam(self.snet.parameters(), lr=cfg.update_lr)
        self.first_mid = mid
        # the most confident result since the last adaptation: (unclipped strength, mid, target)
        self.best_recent: tuple[float, torch.Tensor, torch.Tensor] | None = None
        self.snet_updates = {"adaptation": 0, "discrimination": 0}

    def _locate(self, heatmap: torch.Tensor, candidates: np.ndarray, origin: np.ndarray,
                zoom: float) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Best candidate on one heat map: (index, the plain heat-map sum inside it, its cells)."""
        cfg = self.config
        cells = self._to_cells(candidates, origin, zoom)
        scores, sums = candidate_scores(heatmap, cells, cfg.candidate_score, cfg.heatmap_sigma, cfg.area_power,
                                        cfg.area_power_floor)
        best = int(torch.argmax(scores))
        return best, sums[best], cells[best]

    def _localise(self, mid: torch.Tensor, high: torch.Tensor, origin: np.ndarray, zoom: float,
                  around: np.ndarray) -> Localised:
        """The normal search on one ROI's features (as the backbone gives them): eq. 8's
        candidates around `around` (x, y, w, h), GNet's best, and SNet's where eq. 9 finds a
        distractor."""
        cfg = self.config
        mid = mid[:, self.keep_mid] / self.scales[0] - self.centres[0]
        high = high[:, self.keep_high] / self.scales[1] - self.centres[1]
        candidates = draw_candidates(around, cfg.candidates, *self.spread, self.rng)
        with torch.no_grad():
            g_map = self.gnet(high)[0, 0] if cfg.use_gnet else None
            s_map = self.snet(mid)[0, 0] if cfg.use_snet else None
        distractor = False
        if g_map is not None:
            best, inside, best_cells = self._locate(g_map, candidates, origin, zoom)
            p_d = distractor_ratio(g_map, best_cells, cfg.distractor_floor)
            distractor = p_d > cfg.distractor_threshold
        if g_map is None or (distractor and s_map is not None):
            best, inside, _ = self._locate(s_map, candidates, origin, zoom)
        strength = float(inside) / max(self.ideal_sum, 1e-9)  # unclipped: ranks results above 1 too
        return Localised(candidates[best], strength, distractor, mid, origin, zoom)

    def _track(self, frame: torch.Tensor, image: np.ndarray) -> float:
        cfg = self.config
        height, width = image.shape[:2]
        mid, high, origin, zoom = self._crop(frame)
        result = self._localise(mid, high, origin, zoom, self.state)
        if cfg.redetect and self.lost_on_calibrated_score:
            wide = self._redetect(frame, image.shape)
            found = None
            if wide is not None:  # unverified, SNet learns the find from the frame's own ROI
                found = self._verify(frame, wide[0]) if cfg.redetect_verify else \
                    replace(result, box=wide[0], strength=wide[1])
            if found is not None and found.strength > result.strength + cfg.redetect_margin:
                result = found  # a clearly better match elsewhere: the target is there
        box, strength = result.box, result.strength
        confidence = min(strength, 1.0)
        self.center = np.clip(box[:2] + box[2:] / 2, 0, [width - 1, height - 1])
        self.target_size = box[2:].copy()
        # sec. 4.3: SNet updates (GNet fixed); none from a frame where the target is likely absent
        # (issue 20): LOST on a calibrated score and that score below `freeze_below` (LOST alone
        # froze SNet on in-view targets: docs/trackers/fcnt.md, "Freezing while LOST")
        if cfg.use_snet and not self.likely_absent(confidence, cfg.freeze_below):
            mid, origin, zoom = result.mid, result.origin, result.zoom
            target = self._target_map(self.state, origin, zoom)
            if self.best_recent is None or strength > self.best_recent[0]:
                self.best_recent = (strength, mid.detach(), target)
            frame_number = self.frame_index + 1
            if cfg.adaptation_interval > 0 and frame_number % cfg.adaptation_interval == 0 and self.best_recent:
                best_strength, best_mid, best_target = self.best_recent
                if min(best_strength, 1.0) >= cfg.update_min_confidence:
                    self._fit(self.snet, [best_mid], [best_target], [None], self.snet_optimizer, cfg.update_iterations)
                    self.snet_updates["adaptation"] += 1
                self.best_recent = None
            # eq. 10: first frame, and the current frame's background only
            if result.distractor and confidence >= cfg.update_min_confidence:
                cells = self._to_cells(self.state, origin, zoom)[0]
                mask = torch.ones_like(target)
                x1, y1, x2, y2 = (int(v) for v in torch.round(cells).tolist())
                mask[..., max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 0.0
                self._fit(self.snet, [self.first_mid, mid], [self.first_target, target], [None, mask],
                          self.snet_optimizer, cfg.update_iterations)
                self.snet_updates["discrimination"] += 1
        return confidence

    def _verify(self, frame: torch.Tensor, box: np.ndarray) -> Localised | None:
        """A wide find looked at again as the next frame's normal search would see it: a ROI
        centred on it, GNet and SNet with the distractor test, candidates around it. A tile's
        heat map sees the find off its centre, with other context, and GNet's category-level
        heat summed over a box there can pass the threshold on a textured background where a
        centred search does not (docs/trackers/fcnt.md). None unless the centred search's
        calibrated score passes the threshold too."""
        centre = box[:2] + box[2:] / 2
        mid, high, zoom = self._rois(frame, centre[None])
        found = self._localise(mid, high, centre - self._roi_side() / 2, zoom, box)
        if self.calibrated(min(found.strength, 1.0)) < self.lost_rule.threshold:
            return None
        return found

    def _concentration(self, heatmap: torch.Tensor, cells: torch.Tensor, inside: torch.Tensor) -> float:
        """The share of the heat in a box twice its size that lies in the box, over the same
        share for the first frame's target map (about 0.91 for sigma = side / 4). A box's heat
        sum alone saturates on a response broader than the target (a textured ground under
        GNet); a blob of the target's size keeps its heat inside the box."""
        centre, half = (cells[:2] + cells[2:]) / 2, (cells[2:] - cells[:2]) / 2
        around = float(box_sums(heatmap.clamp_min(0), torch.cat([centre - 2 * half, centre + 2 * half]).reshape(1, 4))[0])
        share = float(inside) / max(around, 1e-9)
        return share / max(self.ideal_concentration, 1e-9)

    def _redetect(self, frame: torch.Tensor, image_shape: tuple[int, ...]) -> tuple[np.ndarray, float] | None:
        """One wide search while the target is LOST (issue 20), besides the normal one. The
        heat maps fail at a coarser zoom (docs/trackers/fcnt.md), so the window, growing each
        LOST frame up to the whole frame (`redetect_window`), is tiled with ROIs of the normal
        side (`tile_centres`, at most `redetect_max_tiles`), read in one backbone batch. GNet
        (SNet for FCNT_S), the category-level map that is stable under appearance change,
        scores a grid of target-size boxes on each. Returns the best box (x, y, w, h) and its
        strength when its calibrated score passes the threshold, else None; `_track` takes it
        only if it beats the normal search's by `redetect_margin`."""
        cfg = self.config
        side = self._roi_side()
        window = redetect_window(self.center, side, image_shape, self.lost_rule.lost_frames,
                                 cfg.redetect_growth, cfg.redetect_max_scale)
        centres = tile_centres(window, side, image_shape, cfg.redetect_step, cfg.redetect_max_tiles)
        mid, high, zoom = self._rois(frame, centres)
        with torch.no_grad():
            if cfg.use_gnet:
                maps = self.gnet(high[:, self.keep_high] / self.scales[1] - self.centres[1])[:, 0]
            else:
                maps = self.snet(mid[:, self.keep_mid] / self.scales[0] - self.centres[0])[:, 0]
        found: tuple[np.ndarray, float] | None = None
        step = cfg.redetect_box_step * float(self.target_size.mean())
        for centre, heatmap in zip(centres, maps):  # a few tiles; the boxes of each are scored at once
            origin = centre - side / 2
            boxes = grid_boxes(np.array([*origin, side, side]), self.target_size, step, cfg.candidates)
            index, inside, cells = self._locate(heatmap, boxes, origin, zoom)
            strength = float(inside) / max(self.ideal_sum, 1e-9)
            if cfg.redetect_strength == "concentrated":
                strength = min(strength, self._concentration(heatmap, cells, inside))
            if found is None or strength > found[1]:
                found = (boxes[index], strength)
        if found is None or self.calibrated(min(found[1], 1.0)) < self.lost_rule.threshold:
            return None
        return found
