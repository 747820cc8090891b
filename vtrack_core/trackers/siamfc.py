"""SiamFC: "Fully-Convolutional Siamese Networks for Object Tracking" (Bertinetto et al.,
ECCV-W 2016). Network (Table 1), weights I/O and the online tracker (sections 2.4, 3.2).

Defaults are the paper's values; where the released code differs the alternative is noted
and is one config value away.

Confidence: the network is trained with the logistic loss (eq. 3) on +1/-1 labels, so the
sigmoid of the best raw score is its estimate of the probability that the chosen window is
the target. That is the number reported (0..1); the LOST rule thresholds it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.alexnet import SiamFCAlexNet, read_siamfc_state
from ..backbones.base import cpu_inference_graph, fold_batch_norms
from ..deep_tracker import DeepTracker, DeepTrackerConfig
from ..ops.crops import crop_and_resize
from ..ops.maps import bicubic_matrix, hann_window, sigmoid, upsample_bicubic
from ..ops.redetect import redetect_window
from ..ops.scales import ScalePyramid
from ..weights import WeightsError, load_torch_state_dict


# --- network (Table 1) ----------------------------------------------------------------------
def cross_correlate(exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
    """exemplar: Bz x C x h x w (Bz == 1 or == Bx); search: Bx x C x H x W. Returns
    Bx x 1 x (H-h+1) x (W-w+1): each search map correlated with its exemplar (or the single
    exemplar broadcast over all search maps, e.g. the scales of one frame), as one grouped
    convolution (eq. 2)."""
    batch, channels, height, width = search.shape
    if exemplar.shape[0] == 1 and search.device.type == "cpu":
        # One exemplar (tracking): a depthwise correlation summed over the channels is the same
        # sum in another order, and oneDNN runs it 4x faster than a convolution with one
        # output map and an 8x8x256 kernel.
        depthwise = F.conv2d(search, exemplar.reshape(channels, 1, *exemplar.shape[-2:]), groups=channels)
        return depthwise.sum(dim=1, keepdim=True)
    if exemplar.shape[0] == 1 and batch > 1:
        return F.conv2d(search, exemplar)
    if exemplar.shape[0] != batch:
        raise ValueError(f"{exemplar.shape[0]} exemplars for {batch} search maps")
    out = F.conv2d(search.reshape(1, batch * channels, height, width), exemplar, groups=batch)
    return out.reshape(batch, 1, out.shape[-2], out.shape[-1])


class SiamFCHead(nn.Module):
    """f(z, x) = scale * (phi(z) * phi(x)) + b: cross-correlation plus a learned bias. The
    small fixed scale keeps initial scores in the range where the logistic loss learns."""

    def __init__(self, out_scale: float = 1e-3) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(out_scale)))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return cross_correlate(exemplar, search) * self.scale + self.bias


# Backbones SiamFC runs on: Table 1's AlexNet (trained from scratch, as the paper), or an
# ImageNet trunk (sec. 4 of the paper tried a pretrained ResNet) cut at output stride 8 and
# the tap named here.
PRETRAINED_TAPS = {"mobilenet_v2": "stage5", "efficientnet_lite0": "stage5"}
SCORE_SIZE = 17  # the paper's score map: (255 - 127) / 8 + 1


class PretrainedEmbedding(nn.Module):
    """phi for a padded ImageNet trunk: the trunk at output stride 8 up to `tap`, then a 1x1
    adjust layer with batch norm (as SiamRPN++ adapts pretrained features)."""

    def __init__(self, backbone: str, tap: str, channels: int = 256, weights: str | None = "random") -> None:
        super().__init__()
        from ..backbones import build_backbone

        self.trunk = build_backbone(backbone, weights, output_stride=8)
        self.tap = tap
        self.adjust = nn.Sequential(nn.Conv2d(self.trunk.tap_channels[tap], channels, 1, bias=False),
                                    nn.BatchNorm2d(channels))
        self.total_stride = 8

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adjust(self.trunk.extract(images, self.tap))


class SiamFCNet(nn.Module):
    """phi applied to both images, then the correlation head.

    With a padded trunk the features of a cell near the crop's border see the padding, so a
    correlation over the whole maps would learn where the border is (SiamDW, SiamRPN++): the
    exemplar's features are centre-cropped to `exemplar_cells` and the search's to the cells
    that give the paper's 17 x 17 score map, both crops starting at the same cell so that the
    score map's centre is the search crop's centre. AlexNet has no padding and is not cropped."""

    def __init__(self, out_scale: float = 1e-3, backbone: str = "alexnet", exemplar_cells: int = 8,
                 adjust_channels: int = 256, trunk_weights: str | None = "random") -> None:
        super().__init__()
        if backbone == "alexnet":
            self.backbone: nn.Module = SiamFCAlexNet()
            self.crops: tuple[slice, slice] | None = None
        elif backbone in PRETRAINED_TAPS:
            self.backbone = PretrainedEmbedding(backbone, PRETRAINED_TAPS[backbone], adjust_channels, trunk_weights)
            first = (16 - exemplar_cells) // 2  # a 127 px exemplar has 16 cells at stride 8
            self.crops = (slice(first, first + exemplar_cells), slice(first, first + exemplar_cells + SCORE_SIZE - 1))
        else:
            raise ValueError(f"siamfc: unknown backbone {backbone!r}; use alexnet or one of {', '.join(PRETRAINED_TAPS)}")
        self.head = SiamFCHead(out_scale)
        self.total_stride = self.backbone.total_stride
        self.backbone_name = backbone
        self._grids: dict[tuple, torch.Tensor] = {}  # scaled_search's sampling grids

    def embed(self, images: torch.Tensor, exemplar: bool | None = None) -> torch.Tensor:
        """B x 3 x H x W BGR 0..255 -> B x C x h x w embeddings; `exemplar` True / False
        crops them as exemplar / search features (None: uncropped)."""
        features = self.backbone.extract(images, "conv5") if self.crops is None else self.backbone(images)
        if self.crops is None or exemplar is None:
            return features
        cells = self.crops[0 if exemplar else 1]
        return features[:, :, cells, cells]

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(exemplar, True), self.embed(search, False))

    def scaled_search(self, features: torch.Tensor, factors: tuple[float, ...], instance_size: int) -> torch.Tensor:
        """The search features of crops `factors` times larger than the one `features` (1 x C
        x H x W, uncropped) came from, resampled from it: cell j of a crop s times larger sits
        where the map has cell (a_j s + size / 2 - offset) / stride, a_j being cell j's distance
        from its crop's centre in input pixels. Factor 1 gives the map's own search cells. One
        trunk pass for the whole scale search (`scale_mode=features`). `factors` is a tuple, the
        grid cache's key: read on the host, never copied back from the device each frame."""
        if self.crops is None:
            raise ValueError("siamfc: scale_mode=features needs a pretrained trunk (AlexNet has no search crop)")
        size = features.shape[-1]
        key = (instance_size, size, tuple(factors), features.device)
        grid = self._grids.get(key)
        if grid is None:  # the same every frame: built once
            geometry = self.backbone.trunk.geometry(self.backbone.tap, instance_size)
            cells = torch.arange(self.crops[1].start, self.crops[1].stop, device=features.device, dtype=torch.float32)
            from_centre = geometry.offset + geometry.stride * cells - instance_size / 2  # a_j, input px
            scale = torch.tensor(factors, device=features.device, dtype=torch.float32)
            positions = (from_centre[None] * scale[:, None] + instance_size / 2 - geometry.offset) / geometry.stride
            normalised = 2.0 * positions / (size - 1) - 1.0  # S x n, align_corners=True coordinates
            grid = torch.stack(torch.broadcast_tensors(normalised[:, None, :], normalised[:, :, None]), dim=-1)
            self._grids[key] = grid
        source = features.float().expand(len(factors), -1, -1, -1)
        return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True).to(features.dtype)


def load_siamfc_weights(net: SiamFCNet, path: str | Path) -> None:
    """Load our own checkpoints, siamfc-pytorch `.pth` files or the authors' `.mat`
    (converted by `backbones.alexnet.read_siamfc_state`) into the AlexNet network; our
    pretrained-trunk exports into a network built on the same trunk."""
    if isinstance(net.backbone, SiamFCAlexNet):
        state = read_siamfc_state(path)
    else:
        state = {k: v.float() for k, v in load_torch_state_dict(path).items()}
    pretrained = any(k.startswith("backbone.adjust.") for k in state)  # the adjust layer is always exported
    if pretrained != isinstance(net.backbone, PretrainedEmbedding):
        raise WeightsError(f"{path}: holds SiamFC on {'a pretrained trunk' if pretrained else 'AlexNet'}; "
                           "set `backbone` to the one it was trained on")
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes of another trunk or adjust layer
        raise WeightsError(f"{path}: does not fit SiamFC on {net.backbone_name} ({str(error).splitlines()[1].strip()}); "
                           "check `backbone` and `adjust_channels`") from None
    # A trunk trained frozen is not in our files: its layers keep the installed ImageNet weights.
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("backbone.trunk.")]
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit SiamFC on {net.backbone_name} (missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}); check `backbone`")


# --- tracker (sections 2.4, 3.2) ----------------------------------------------------------------
@dataclass
class SiamFCConfig(DeepTrackerConfig):
    backbone: str = "mobilenet_v2"  # alexnet: Table 1 (the paper's) | mobilenet_v2, efficientnet_lite0: ImageNet trunks
    #                                 at stride 8 (mobilenet_v2: the better on dev, docs/trackers/siamfc.md)
    exemplar_cells: int = 8  # pretrained trunks: exemplar features kept (centre crop; the search's follow)
    adjust_channels: int = 256  # pretrained trunks: channels of the 1x1 adjust layer
    scale_mode: str = "auto"  # crops: one crop a scale, in one batch (the paper) | features: one crop, the
    #                           scales resampled from its feature map (pretrained trunks; a third of the cost) |
    #                           auto: crops on CUDA (the batch costs little there), features on a CPU
    cpu_graph: bool = True  # scale_mode features on a CPU: the search embedding as a traced oneDNN graph
    #                         (backbones.cpu_inference_graph; same scores to float rounding, ~1.2x faster)
    exemplar_size: int = 127
    instance_size: int = 255
    context: float = 0.5  # margin p = context * (w + h) / 2 = (w + h) / 4 (sec. 2.4)
    scale_num: int = 3
    scale_step: float = 1.03  # paper; the released code uses 1.0375
    scale_penalty: float = 0.9745  # scaled peaks lowered by (1 - this) x |peak| (the released code's value; ops.scales)
    scale_lr: float = 0.65  # damped scale update (paper text; released code 0.59)
    response_up: int = 16  # bicubic upsampling 17 -> 272 (sec. 3.2)
    window_influence: float = 0.176  # cosine window weight (released code)
    out_scale: float = 1e-3
    confidence_threshold: float = 0.5  # sigmoid of the best score
    redetect: bool = True  # while LOST on a calibrated score: search a wider window at the target's scale (_redetect)
    redetect_growth: float = 1.5  # the window's side grows by this factor each LOST frame ...
    redetect_max_scale: float = 3.0  # ... up to this many normal search sides, or the whole frame if less
    #                                  (a frame then costs up to its square in embedding work: ~9x at 3)
    redetect_margin: float = 1.0  # logits by which the wide search's peak must beat the normal search's


class SiamFCTracker(DeepTracker):
    name = "siamfc"
    config_class = SiamFCConfig
    weights_formats = "our checkpoints, siamfc-pytorch .pth or the authors' MatConvNet .mat"
    backbones = ("alexnet", *PRETRAINED_TAPS)

    def __init__(self, config: SiamFCConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.scale_mode not in ("auto", "crops", "features"):
            raise ValueError(f"siamfc: scale_mode must be auto, crops or features, got {cfg.scale_mode!r}")
        if cfg.scale_mode == "features" and cfg.backbone == "alexnet":
            raise ValueError("siamfc: scale_mode=features needs a pretrained trunk (backbone mobilenet_v2 or "
                             "efficientnet_lite0)")
        self.scale_from_features = cfg.scale_mode == "features" or (
            cfg.scale_mode == "auto" and cfg.backbone != "alexnet" and self.device.type == "cpu")
        weights = self.weights_path()
        # A pretrained trunk starts from its installed ImageNet weights; our file holds what training changed.
        self.net = SiamFCNet(cfg.out_scale, cfg.backbone, cfg.exemplar_cells, cfg.adjust_channels, trunk_weights=None)
        load_siamfc_weights(self.net, weights)
        # channels_last: oneDNN (CPU) and cuDNN (tensor cores) run these convolutions faster
        # in NHWC (measured in docs/trackers/siamfc.md).
        self.net.to(self.device, self.dtype, memory_format=torch.channels_last).eval()
        fold_batch_norms(self.net.backbone)  # frozen while tracking: batch norms folded into the convolutions
        self.scales = ScalePyramid(cfg.scale_num, cfg.scale_step, cfg.scale_penalty, cfg.scale_lr, self.device)
        self.scale_factors = torch.tensor(self.scales.factors, device=self.device, dtype=torch.float32)
        self.scale_tuple = tuple(float(f) for f in self.scales.factors)  # scaled_search's cache key
        self.window: torch.Tensor | None = None
        self.upsampler: torch.Tensor | None = None
        # The per-frame search embedding: one fixed-size crop on a CPU, as a traced graph.
        self._embed_search = self.net.backbone
        if self.scale_from_features and cfg.cpu_graph and self.device.type == "cpu":
            example = torch.zeros(1, 3, cfg.instance_size, cfg.instance_size, dtype=self.dtype)
            self._embed_search = cpu_inference_graph(self.net.backbone,
                                                     example.contiguous(memory_format=torch.channels_last))

    def _exemplar_side(self) -> float:
        margin = self.config.context * float(self.target_size.sum())
        return math.sqrt(float(np.prod(self.target_size + margin)))

    @torch.inference_mode()
    def _start(self, frame: torch.Tensor, image: np.ndarray) -> None:
        cfg = self.config
        exemplar = crop_and_resize(frame, torch.tensor(self.center, device=self.device),
                                   torch.tensor([self._exemplar_side()], device=self.device), cfg.exemplar_size,
                                   self.fill).to(self.dtype)
        self.kernel = self.net.embed(exemplar.contiguous(memory_format=torch.channels_last), True).contiguous()

    @torch.inference_mode()
    def _track(self, frame: torch.Tensor, image: np.ndarray) -> float:
        cfg = self.config
        x_side = self._exemplar_side() * cfg.instance_size / cfg.exemplar_size
        centre = torch.tensor(self.center, device=self.device, dtype=torch.float32)
        if self.scale_from_features:
            search = crop_and_resize(frame, centre, torch.tensor([x_side], device=self.device), cfg.instance_size,
                                     self.fill).to(self.dtype)
            features = self._embed_search(search.contiguous(memory_format=torch.channels_last))
            embedded = self.net.scaled_search(features, self.scale_tuple, cfg.instance_size)
        else:
            search = crop_and_resize(frame, centre, self.scale_factors * x_side, cfg.instance_size,
                                     self.fill).to(self.dtype)
            embedded = self.net.embed(search.contiguous(memory_format=torch.channels_last), False)
        scores = self.net.head(self.kernel, embedded).float()  # S x 1 x 17 x 17
        size = scores.shape[-1] * cfg.response_up
        if self.upsampler is None or self.upsampler.shape != (size, scores.shape[-1]):
            self.upsampler = bicubic_matrix(scores.shape[-1], size, self.device)
        response = upsample_bicubic(scores[:, 0], self.upsampler)  # F.interpolate's bicubic, as two products
        if self.window is None or self.window.shape[-1] != size:
            self.window = hann_window(size, normalised=True, device=self.device)
        # Best scale (penalising scale changes), then the peak of its window-blended map; all
        # on the device, one transfer of three numbers at the end.
        best_scale = self.scales.best(response.amax(dim=(1, 2)))
        best = response[best_scale]
        peak_logit = best.max()  # its sigmoid is the raw confidence
        normalised = best - best.min()
        normalised = normalised / normalised.sum().clamp_min(1e-12)
        blended = (1 - cfg.window_influence) * normalised + cfg.window_influence * self.window
        scale_index, peak, peak_logit = torch.stack(
            [best_scale.float(), torch.argmax(blended).float(), peak_logit.float()]).tolist()
        if cfg.redetect and self.lost_on_calibrated_score:
            found = self._redetect(frame, image, x_side)
            if found is not None and found[1] > peak_logit + cfg.redetect_margin:
                self.center = found[0]  # a clearly better match elsewhere: the target is there
                self.keep_in_image(image.shape)
                return sigmoid(found[1])
        row, col = divmod(int(peak), size)
        # Displacement from the map centre -> search-crop pixels -> image pixels.
        offset = np.array([col, row], dtype=np.float64) - (size - 1) / 2.0
        offset_in_crop = offset * self.net.total_stride / cfg.response_up
        scale = float(self.scale_factors[int(scale_index)])
        self.center = self.center + offset_in_crop * x_side * scale / cfg.instance_size
        self.target_size = self.scales.new_size(self.target_size, int(scale_index))
        self.keep_in_image(image.shape)
        return sigmoid(peak_logit)

    def redetect_window(self, x_side: float, image_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """Centre and crop size (pixels, at the normal search's scale) of the re-detection
        window after `lost_rule.lost_frames` LOST results: the normal search side times
        growth^k, at most `redetect_max_scale` of it or what covers the whole frame (then
        centred on the frame). Sizes are instance_size + k * stride so that the score map's
        centre stays the crop's centre."""
        cfg = self.config
        window = redetect_window(self.center, x_side, image_shape, self.lost_rule.lost_frames,
                                 cfg.redetect_growth, cfg.redetect_max_scale)
        stride = self.net.total_stride
        pixels = cfg.instance_size + stride * int(math.ceil((window.factor - 1.0) * cfg.instance_size / stride))
        return window.centre, pixels

    def _redetect(self, frame: torch.Tensor, image: np.ndarray, x_side: float) -> tuple[np.ndarray, float] | None:
        """One wide search while the target is LOST (issue 20), besides the normal one: the
        exemplar correlated, at the target's last scale, over a window that grows each LOST
        frame up to the whole frame (`redetect_window`), with no scale pyramid and no cosine
        window (the target may be anywhere in it). Returns the peak's centre in the image and
        its logit when its calibrated score passes the threshold, else None. `_track` moves
        there only if that logit beats the normal search's by `redetect_margin`: a target
        still in view (a LOST from a pessimistic score) keeps being followed as before, and
        the LOST rule asks for `recover_after_frames` passing frames before TRACKING."""
        cfg = self.config
        centre, pixels = self.redetect_window(x_side, image.shape)
        side = x_side * pixels / cfg.instance_size  # image pixels the window covers
        search = crop_and_resize(frame, torch.tensor(centre, device=self.device, dtype=torch.float32),
                                 torch.tensor([side], device=self.device), pixels, self.fill).to(self.dtype)
        search = search.contiguous(memory_format=torch.channels_last)
        if self.net.crops is None:  # AlexNet: no padding, the whole map is valid
            embedded = self.net.embed(search, False)
        else:  # drop the cells that see the padding, as the normal search does on each side
            trim = self.net.crops[1].start
            embedded = self.net.backbone(search)[:, :, trim:-trim, trim:-trim]
        scores = self.net.head(self.kernel, embedded).float()[0, 0]
        logit, peak = (float(v) for v in torch.stack([scores.max(), torch.argmax(scores).float()]).tolist())
        if self.calibrated(sigmoid(logit)) < self.lost_rule.threshold:
            return None
        row, col = divmod(int(peak), scores.shape[-1])
        offset = (np.array([col, row], dtype=np.float64) - (scores.shape[-1] - 1) / 2.0) * self.net.total_stride
        return centre + offset * x_side / cfg.instance_size, logit

