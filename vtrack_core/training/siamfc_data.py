"""SiamFC training pairs (Bertinetto et al. 2016, sections 2.2, 2.4, 3.2) from OTB / GOT-10k
layout sequences, with a pre-cropped cache so an epoch costs no JPEG decoding.

Cache. Every usable frame of every sequence is cropped once: a square centred on the
target, `cache_size` px (287) at the *search* scale, i.e. the search image of side
z * 255 / 127 (z = sqrt((w + 2p)(h + 2p)), p = (w + h) / 4, eq. 7) resampled to 255 px,
plus 16 px a side of room for the scale and translation augmentation. Crops are cut as the
tracker cuts them (same centre x + w/2, same pixel-centre convention as
`ops.crops.crop_and_resize`, the frame's mean colour outside the image), stored as uint8 in
one `.npy` per sequence (read back as a memmap) beside a `.json` with the frame indices and
the target size in crop pixels. File names carry a hash of the sequence (names, sizes of
the frame files, ground truth) and of the crop settings: a changed sequence or setting gets
a new cache, an unchanged one is reused instantly.

Scales. Exemplar (127 px) and search (255 px) images have the *same* pixel scale, 127 / z
image px; the exemplar just covers less context. So the exemplar is the central 127 px of
the cached crop, without resampling; the search image is the central 255 px (resampled
only for the scale augmentation).

Curation (sec. 2.4): only frames that pass `data.Curation` are cached (no absent or
truncated targets, none covering most of the image; see there why the paper's lower bound
on the target's area is 0 here).

Pairs (sec. 2.2, 3.2). Exemplar and search come from frames of one sequence at most T = 100
frames apart; with probability 0.25 a negative pair (search from another video, every label
-1); with a small probability a still-image pair (one frame, differently augmented).
Augmentation: random scale (+-5 %) of both images, a random translation of the search image
of a few px (the label map follows the target, so the network is not taught that targets
sit exactly at the centre), colour jitter, Gaussian blur, and a grey pair now and then.

Region pairs (`region_prob`, off by default: they did not help our run, see
docs/trackers/siamfc.md). Fourteen annotated targets are few objects to learn "the same
thing" from. A region pair is a still-image pair around a random box of a
training frame (one box per frame, target-like size from the sequence's own ground truth
rescaled by up to 2x, anywhere it fits; flat boxes such as open water are redrawn): any
car, roof or road marking becomes an exemplar, and everything else in its search image a
negative. The boxes are drawn from a generator seeded by the sequence name and cached like
the targets (a sequence `NAME#regions`). They are never used for temporal or negative pairs:
nothing says where a region went in the next frame.

Labels (eq. 6): +1 where k * ||u - c|| <= R (k = 8, R = 16 search px, c = the target centre
in score-map cells), -1 elsewhere; weights 0.5 / count inside each class present, so each
class sums to 0.5 on every map (eq. 4's mean, balanced as the paper says).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence as Seq

import cv2
import numpy as np
import torch

from ..eval.datasets import Sequence
from ..ops.crops import warp_crop
from .data import Curation, photometric_jitter, usable_frames, video_of

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class SiamFCDataConfig:
    exemplar_size: int = 127
    instance_size: int = 255
    cache_size: int = 287  # cached crop side, at the search scale (255 + room for augmentation)
    context: float = 0.5  # p = context * (w + h) / 2, as SiamFCConfig.context
    total_stride: int = 8  # k
    radius: float = 16.0  # R, in search-image pixels
    max_gap: int = 100  # T: exemplar and search frames at most this far apart
    negative_prob: float = 0.25
    still_prob: float = 0.05  # exemplar and search from the same frame
    region_prob: float = 0.0  # still pair around a random box of a training frame (see above)
    region_scale: float = 2.0  # region sides: a ground-truth size of the sequence x [1/s, s]
    region_min_std: float = 20.0  # redraw regions whose box is flatter than this (grey levels)
    # Curation (sec. 2.4), flat here so that cache keys and provenance keep their names; see
    # `data.Curation` for why min_area is 0 and not 0.1 ** 2.
    min_area: float = Curation.min_area
    max_area: float = Curation.max_area
    edge_margin: float = Curation.edge_margin
    # Augmentation.
    scale_jitter: float = 0.05  # both images resampled by a factor in [1/(1+j), 1+j]
    max_shift: float = 4.0  # search image translation, +- px (the labels follow the target)
    colour_jitter: float = 0.2  # brightness / contrast / saturation factors in [1-c, 1+c]
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    grey_prob: float = 0.05  # both images of a pair in grey

    @property
    def score_size(self) -> int:
        return (self.instance_size - self.exemplar_size) // self.total_stride + 1

    @property
    def curation(self) -> Curation:
        """The frames this config caches: `usable_frames(sequence, size, config.curation)`."""
        return Curation(self.min_area, self.max_area, self.edge_margin)

    def cache_settings(self) -> dict:
        """The settings that decide what a cached crop holds (and so the cache key)."""
        keys = ("exemplar_size", "instance_size", "cache_size", "context", "min_area", "max_area", "edge_margin")
        return {"version": CACHE_VERSION, **{k: getattr(self, k) for k in keys}}

    def to_dict(self) -> dict:
        return asdict(self)


# --- crop geometry --------------------------------------------------------------------------
def exemplar_side(w: float, h: float, context: float = 0.5) -> float:
    """z = sqrt((w + 2p)(h + 2p)) with p = context * (w + h) / 2 (eq. 7)."""
    margin = context * (w + h)
    return math.sqrt((w + margin) * (h + margin))


def cache_crop_side(w: float, h: float, config: SiamFCDataConfig) -> float:
    """Image pixels covered by a cached crop: the search side z * 255 / 127, scaled up to
    `cache_size` px at the same pixel scale."""
    search = exemplar_side(w, h, config.context) * config.instance_size / config.exemplar_size
    return search * config.cache_size / config.instance_size


# --- cache ----------------------------------------------------------------------------------
@dataclass
class CachedSequence:
    name: str
    crops: np.ndarray  # N x S x S x 3 uint8 (read-only memmap)
    frames: np.ndarray  # N: frame index in the sequence of each crop
    sizes: np.ndarray  # N x 2: target (w, h) in crop pixels
    path: Path

    def __len__(self) -> int:
        return len(self.frames)


def region_sequence(sequence: Sequence, image_size: tuple[int, int], config: SiamFCDataConfig) -> Sequence:
    """`sequence` with one random box per frame in place of its target (see "Region pairs"):
    sides from a random valid ground-truth box of the same sequence times a factor in
    [1/region_scale, region_scale], placed uniformly where the curation rules keep it."""
    width, height = image_size
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(sequence.name.encode()).digest()[:8], "little"))
    valid = sequence.ground_truth[sequence.valid_mask()]
    if len(valid) == 0:
        return Sequence(sequence.name + "#regions", [], np.zeros((0, 4)), sequence.root)
    n = len(sequence)
    picks = valid[rng.integers(len(valid), size=n)]
    factor = np.exp(rng.uniform(-1.0, 1.0, size=(n, 1)) * math.log(config.region_scale))
    sizes = picks[:, 2:] * factor
    sizes = np.minimum(sizes, 0.6 * np.array([width, height]))  # room for the edge margin and max_area
    margin = config.edge_margin * sizes.mean(axis=1, keepdims=True) + 1.0
    low = margin
    high = np.array([width, height]) - sizes - margin
    corners = low + rng.random((n, 2)) * np.maximum(high - low, 0.0)
    return Sequence(sequence.name + "#regions", sequence.frames, np.hstack([corners, sizes]), sequence.root)


def _sequence_key(sequence: Sequence, config: SiamFCDataConfig) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config.cache_settings(), sort_keys=True).encode())
    digest.update(sequence.name.encode())
    for path in sequence.frames:
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        digest.update(f"{path.name}:{size};".encode())
    digest.update(np.ascontiguousarray(np.round(sequence.ground_truth, 4)).tobytes())
    return digest.hexdigest()[:16]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def cache_paths(sequence: Sequence, cache_dir: str | Path, config: SiamFCDataConfig) -> tuple[Path, Path]:
    stem = f"{_safe_name(sequence.name)}-{_sequence_key(sequence, config)}"
    return Path(cache_dir) / f"{stem}.npy", Path(cache_dir) / f"{stem}.json"


def _open_cached(name: str, crops_path: Path, meta_path: Path) -> CachedSequence | None:
    if not (crops_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        crops = np.load(crops_path, mmap_mode="r")
        frames = np.asarray(meta["frames"], dtype=np.int64)
        sizes = np.asarray(meta["sizes"], dtype=np.float32).reshape(-1, 2)
    except (OSError, ValueError, KeyError) as error:
        log.warning("ignoring a broken cache entry %s: %s", crops_path, error)
        return None
    if crops.ndim != 4 or len(crops) != len(frames) or len(sizes) != len(frames):
        log.warning("ignoring a cache entry of the wrong shape: %s", crops_path)
        return None
    return CachedSequence(name, crops, frames, sizes, crops_path)


def cache_sequence(sequence: Sequence, cache_dir: str | Path, config: SiamFCDataConfig,
                   threads: int = 2, progress=None) -> CachedSequence:
    """The cached crops of one sequence, building them if no matching cache exists."""
    cache_dir = Path(cache_dir)
    crops_path, meta_path = cache_paths(sequence, cache_dir, config)
    cached = _open_cached(sequence.name, crops_path, meta_path)
    if cached is not None:
        if progress is not None:
            progress(len(sequence))
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    first = sequence.image(0)
    height, width = first.shape[:2]
    frames = usable_frames(sequence, (width, height), config.curation)
    size = config.cache_size
    tmp_path = crops_path.with_name(crops_path.name + f".{os.getpid()}.tmp")
    crops = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(len(frames), size, size, 3))
    sizes = np.zeros((len(frames), 2), dtype=np.float64)
    skipped = len(sequence) - len(frames)

    def work(slot: int) -> None:
        index = int(frames[slot])
        image = first if index == 0 else sequence.image(index)
        x, y, w, h = sequence.ground_truth[index]
        side = cache_crop_side(w, h, config)
        fill = image.reshape(-1, 3).mean(axis=0)
        crops[slot] = warp_crop(image, (x + w / 2.0, y + h / 2.0), side, size, fill)
        sizes[slot] = (w * size / side, h * size / side)
        if progress is not None:
            progress(1)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(work, range(len(frames))))
    crops.flush()
    del crops
    os.replace(tmp_path, crops_path)
    meta = {"name": sequence.name, "frames": frames.tolist(), "sizes": np.round(sizes, 3).tolist(),
            "settings": config.cache_settings(), "skipped_frames": skipped}
    meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, meta_path)  # the metadata marks the entry complete
    if progress is not None:
        progress(skipped)
    if skipped:
        log.info("%s: %d of %d frames fail the curation rules", sequence.name, skipped, len(sequence))
    cached = _open_cached(sequence.name, crops_path, meta_path)
    assert cached is not None
    return cached


def build_cache(sequences: Seq[Sequence], cache_dir: str | Path, config: SiamFCDataConfig | None = None,
                threads: int | None = None, progress_bar: bool = True) -> list[CachedSequence]:
    """Cached crops of every sequence (built where missing, else reused)."""
    from tqdm import tqdm

    config = config or SiamFCDataConfig()
    threads = threads or min(4, os.cpu_count() or 1)
    total = sum(len(s) for s in sequences)
    result = []
    with tqdm(total=total, desc="SiamFC crop cache", unit="frame", disable=not progress_bar,
              dynamic_ncols=True, leave=False) as bar:
        for sequence in sequences:
            result.append(cache_sequence(sequence, cache_dir, config, threads, bar.update))
    return result


# --- labels ---------------------------------------------------------------------------------
def make_labels(config: SiamFCDataConfig, offset: tuple[float, float] = (0.0, 0.0),
                negative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(labels, weights), score_size^2 each: eq. 6 around the target at `offset` search px
    from the search-image centre; weights 0.5 / count per class present. A negative pair
    (no positives) thus weighs half a positive pair in the batch (siamfc-pytorch balances its
    positive pairs the same way and has no negative pairs). Kept so that the committed
    weights' training is reproduced; eq. 4's plain mean over the map would weigh both alike."""
    n = config.score_size
    centre = (n - 1) / 2.0
    cells = np.arange(n, dtype=np.float64) - centre
    dx = cells[None, :] - offset[0] / config.total_stride
    dy = cells[:, None] - offset[1] / config.total_stride
    inside = config.total_stride * np.sqrt(dx ** 2 + dy ** 2) <= config.radius
    if negative:
        inside[:] = False
    labels = np.where(inside, 1.0, -1.0).astype(np.float32)
    weights = np.zeros((n, n), dtype=np.float32)
    positives = int(inside.sum())
    if positives:
        weights[inside] = 0.5 / positives
    weights[~inside] = 0.5 / int((~inside).sum())
    return labels, weights


# --- pairs ----------------------------------------------------------------------------------
class SiamFCPairs:
    """Pairs and batches drawn from cached sequences."""

    def __init__(self, sequences: Seq[CachedSequence], config: SiamFCDataConfig | None = None,
                 seed: int = 0, regions: Seq[CachedSequence] = ()) -> None:
        self.config = config or SiamFCDataConfig()
        if not 0.0 <= self.config.region_prob <= 1.0:
            raise ValueError(f"region_prob must be in [0, 1], got {self.config.region_prob}")
        self.sequences = [s for s in sequences if len(s) > 0]
        if not self.sequences:
            raise ValueError("no training frames: every frame failed the curation rules")
        # Region crops follow the tracked sequences in one list; only region pairs index them,
        # drawing a region sequence in proportion to its frames (as _frame_prob does for targets).
        self._tracked = len(self.sequences)
        self.sequences += [r for r in regions if len(r) > 0]
        region_counts = np.array([len(s) for s in self.sequences[self._tracked:]], dtype=np.float64)
        self._region_frame_prob = region_counts / region_counts.sum() if len(region_counts) else region_counts
        if self.config.region_prob > 0 and not len(region_counts):
            raise ValueError("region_prob > 0 but no region crops were given")
        self.seed = int(seed)
        counts = np.array([len(s) for s in self.sequences[:self._tracked]], dtype=np.float64)
        self._frame_prob = counts / counts.sum()  # exemplar frames uniformly over all frames
        self._videos = [video_of(s.name) for s in self.sequences[:self._tracked]]
        self._negatives = [[j for j, v in enumerate(self._videos) if v != video] for video in self._videos]
        if not any(self._negatives) and self.config.negative_prob > 0:
            log.warning("every training sequence comes from one video: no negative pairs")

    def __len__(self) -> int:
        return int(sum(len(s) for s in self.sequences[:self._tracked]))

    # -- sampling
    def sample_refs(self, rng: np.random.Generator) -> tuple[tuple[int, int], tuple[int, int], bool]:
        """((seq, slot) of the exemplar, (seq, slot) of the search image, negative?)."""
        cfg = self.config
        if cfg.region_prob > 0 and rng.random() < cfg.region_prob:
            for _ in range(8):  # open water or sky teaches nothing: prefer a textured box
                region = self._tracked + int(rng.choice(len(self._region_frame_prob), p=self._region_frame_prob))
                slot = int(rng.integers(len(self.sequences[region])))
                if self.box_std(region, slot) >= cfg.region_min_std:
                    break
            return (region, slot), (region, slot), False
        seq = int(rng.choice(self._tracked, p=self._frame_prob))
        frames = self.sequences[seq].frames
        slot = int(rng.integers(len(frames)))
        if self._negatives[seq] and rng.random() < cfg.negative_prob:
            other = int(rng.choice(self._negatives[seq]))
            return (seq, slot), (other, int(rng.integers(len(self.sequences[other])))), True
        if rng.random() < cfg.still_prob:
            return (seq, slot), (seq, slot), False
        lo = np.searchsorted(frames, frames[slot] - cfg.max_gap, side="left")
        hi = np.searchsorted(frames, frames[slot] + cfg.max_gap, side="right")
        candidates = [s for s in range(lo, hi) if s != slot]
        search = int(rng.choice(candidates)) if candidates else slot
        return (seq, slot), (seq, search), False

    def box_std(self, seq: int, slot: int) -> float:
        """Grey-level spread inside the cached box (the crop's centre): low for open water."""
        cached = self.sequences[seq]
        w, h = cached.sizes[slot]
        c = (cached.crops.shape[1] - 1) / 2.0
        box = cached.crops[slot, max(0, int(c - h / 2)):int(c + h / 2) + 1, max(0, int(c - w / 2)):int(c + w / 2) + 1]
        return float(np.asarray(box, dtype=np.float32).mean(axis=2).std()) if box.size else 0.0

    # -- images
    def _resample(self, crop: np.ndarray, out_size: int, scale: float, shift: tuple[float, float]) -> np.ndarray:
        """out_size px window of a cached crop, `scale` times the out_size at the cached pixel
        scale, whose content is moved by `shift` output px (the target lands at centre + shift)."""
        centre = (crop.shape[0] - 1) / 2.0
        window = (centre - shift[0] * scale, centre - shift[1] * scale)
        return warp_crop(np.asarray(crop), window, out_size * scale, out_size, (0, 0, 0), cv2.BORDER_REPLICATE)

    def _photometric(self, image: np.ndarray, rng: np.random.Generator, grey: bool) -> np.ndarray:
        cfg = self.config
        return photometric_jitter(image, rng, cfg.colour_jitter, cfg.blur_prob, cfg.blur_sigma, grey)

    def make_pair(self, exemplar: tuple[int, int], search: tuple[int, int], negative: bool = False,
                  rng: np.random.Generator | None = None, augment: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(exemplar HxWx3, search HxWx3, labels, weights) as float32 (BGR 0..255). Without
        `augment`: exact centre crops, the target at the search centre."""
        cfg = self.config
        rng = rng if rng is not None else np.random.default_rng()
        z_crop = self.sequences[exemplar[0]].crops[exemplar[1]]
        x_crop = self.sequences[search[0]].crops[search[1]]
        if augment:
            j = math.log1p(cfg.scale_jitter)
            z_scale, x_scale = np.exp(rng.uniform(-j, j, size=2))
            shift = tuple(rng.uniform(-cfg.max_shift, cfg.max_shift, size=2)) if cfg.max_shift > 0 else (0.0, 0.0)
            grey = rng.random() < cfg.grey_prob
            z = self._photometric(self._resample(z_crop, cfg.exemplar_size, z_scale, (0.0, 0.0)), rng, grey)
            x = self._photometric(self._resample(x_crop, cfg.instance_size, x_scale, shift), rng, grey)
        else:
            shift = (0.0, 0.0)
            z = self._resample(z_crop, cfg.exemplar_size, 1.0, shift).astype(np.float32)
            x = self._resample(x_crop, cfg.instance_size, 1.0, shift).astype(np.float32)
        labels, weights = make_labels(cfg, shift, negative)
        return z, x, labels, weights

    def sample_pair(self, rng: np.random.Generator, augment: bool = True):
        z_ref, x_ref, negative = self.sample_refs(rng)
        return self.make_pair(z_ref, x_ref, negative, rng, augment)

    def batch(self, rng: np.random.Generator, size: int, augment: bool = True) -> dict[str, torch.Tensor]:
        """exemplar Bx3x127x127, search Bx3x255x255 (float32, BGR 0..255), labels and
        weights Bx1x17x17."""
        pairs = [self.sample_pair(rng, augment) for _ in range(size)]
        return {
            "exemplar": torch.from_numpy(np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2).copy()),
            "search": torch.from_numpy(np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2).copy()),
            "labels": torch.from_numpy(np.stack([p[2] for p in pairs])[:, None]),
            "weights": torch.from_numpy(np.stack([p[3] for p in pairs])[:, None]),
        }

    def batches(self, epoch: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches for `epoch`, drawn from a generator seeded by (seed, epoch) only."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        while True:
            yield self.batch(rng, batch_size)
