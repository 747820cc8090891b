"""Out-of-view and full-occlusion variants of a tracking dataset, cut from its real frames.

OTB-style sequences (ours included) have the target in every frame, so nothing measures
whether a tracker says LOST when the target really is gone. This builds, reproducibly from
a seed, a variant of each sequence with two kinds of episode in which it is:

* out of view: every output frame is a fixed-size window (window_scale of the frame, 0.65
  by default) cut from the source frame. Normally the window follows the target like a lazy
  camera (it moves only when the target comes within follow_margin of its edge). In the
  episode it pans away (slide_frames), stays away so the target is wholly outside it
  (hold_frames), and pans back. The ground truth is the source box in window coordinates,
  clipped to the window; where less than min_visible of the box is inside, it is NaN.
  The window stays inside the frame, so it can only leave a target that is far enough
  from the frame's centre: where no hold fits at window_scale, smaller windows are tried
  down to min_window_scale; where none fits, the sequence gets no such episode (a note
  in the JSON says so).
* full occlusion: a patch of a frame of another sequence (a region clear of that
  sequence's own target) is pasted over the target: it slides in over occluder_pass
  frames, covers the target (with a margin) for occlusion_frames, and slides out the
  other side. Ground truth is NaN while less than min_visible of the box shows.

The first lead_in frames after the source's first valid box always show the target, so
trackers start as usual. Each sequence is drawn from its own generator seeded with (seed,
the sequence's name), so a sequence comes out the same whichever others are built with it.

Output, in OTB layout (so `vtrack eval --dataset OUT` reads it like any dataset):

    OUT/<seq>/img/0001.jpg ...        the window crops (JPEG, jpeg_quality)
    OUT/<seq>/groundtruth_rect.txt    x,y,w,h in window coordinates; NaN,NaN,NaN,NaN where absent
    OUT/<seq>/window.txt              the window in the source frame, x,y,w,h, one a frame
    OUT/<seq>/occluder.txt            the pasted patch in output coordinates, x,y,w,h (it may
                                      reach past the frame; the part inside is pasted);
                                      NaN where none
    OUT/outofview.json                seed, settings, per sequence its episodes, absent frames
                                      and why, the donor of each occluder
"""
from __future__ import annotations

import json
import logging
import shutil
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .datasets import DatasetError, Sequence, load_dataset

log = logging.getLogger(__name__)

DESCRIPTION_FILE = "outofview.json"
FORMAT_VERSION = 1
OUT_OF_VIEW, OCCLUDED, SOURCE_ABSENT = "out_of_view", "occluded", "source"  # why a frame is absent
OCCLUSION_KIND = "occlusion"  # the episode kinds: OUT_OF_VIEW and this
PANS = ("left", "right", "up", "down")  # direction the window moves; the target leaves the other way
SCALE_STEP = 0.05


@dataclass(frozen=True)
class OutOfViewSettings:
    """What a variant is built with; stored in the JSON, so a variant can be rebuilt from it."""

    seed: int = 0
    window_scale: float = 0.65  # window side / frame side
    min_window_scale: float = 0.5  # smallest window tried when no out-of-view hold fits
    min_visible: float = 0.1  # less of the box than this visible: absent (NaN)
    follow_margin: float = 0.15  # share of the window the followed target is kept from its edges
    lead_in: int = 10  # frames with the target shown before any episode
    gap: int = 5  # frames with the target shown between episodes and after the last
    slide_frames: tuple[int, int] = (6, 12)  # pan away, and pan back: each this many frames (range)
    hold_frames: tuple[int, int] = (10, 30)  # window away, target wholly outside (range)
    hold_margin: int = 4  # pixels between the held-away window and the target
    occluder_pass: tuple[int, int] = (4, 8)  # frames the occluder takes to cover / to uncover (range)
    occlusion_frames: tuple[int, int] = (10, 25)  # frames the target is wholly covered (range)
    occluder_margin: float = 0.25  # occluder side = target side * (1 + this) + 6 px
    jpeg_quality: int = 95
    max_frames: int | None = None  # only the first N frames of each source sequence

    def __post_init__(self) -> None:
        if not 0.1 <= self.min_window_scale <= self.window_scale <= 1.0:
            raise ValueError(f"need 0.1 <= min_window_scale <= window_scale <= 1, got "
                             f"{self.min_window_scale} and {self.window_scale}")
        if not 0.0 < self.min_visible < 1.0:
            raise ValueError(f"min_visible must be in (0, 1), got {self.min_visible}")
        for name in ("slide_frames", "hold_frames", "occluder_pass", "occlusion_frames"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be a range 1 <= lo <= hi, got {lo}..{hi}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.lead_in < 1 or self.gap < 0:
            raise ValueError("lead_in must be >= 1 and gap >= 0")


# --- geometry -----------------------------------------------------------------------------
def _intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise area of the overlap of x,y,w,h boxes (0 where none; NaN rows give NaN)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def visible_shares(boxes: np.ndarray, window_size: tuple[int, int],
                   occluders: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(share of each box inside the window, share inside and not under the occluder), for
    boxes and occluders in window coordinates; NaN rows give NaN."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    window = np.tile([0.0, 0.0, *window_size], (len(boxes), 1))
    area = boxes[:, 2] * boxes[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = _intersection_area(boxes, window) / area
        if occluders is None:
            return inside, inside
        occ = np.asarray(occluders, dtype=np.float64).reshape(-1, 4)
        shown = np.isfinite(occ).all(axis=1)
        clipped = _clip_boxes(np.where(shown[:, None], occ, 0.0), window_size)
        covered = np.where(shown, _intersection_area(_clip_boxes(boxes, window_size), clipped), 0.0) / area
    return inside, inside - covered


def _clip_boxes(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """x,y,w,h boxes cut to 0..width x 0..height (zero size where wholly outside)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.clip(boxes[:, 0], 0, size[0])
    y1 = np.clip(boxes[:, 1], 0, size[1])
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, size[0])
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, size[1])
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def fill_missing(boxes: np.ndarray) -> np.ndarray:
    """Usable rows kept, others the nearest earlier usable row (else the first one): where
    the window should point while the source itself has no box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    valid = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    if not valid.any():
        raise DatasetError("no frame has a usable ground-truth box")
    last = boxes[np.flatnonzero(valid)[0]]
    for i in range(len(boxes)):
        if valid[i]:
            last = boxes[i]
        else:
            boxes[i] = last
    return boxes


def follow_windows(boxes: np.ndarray, frame_size: tuple[int, int], window_size: tuple[int, int],
                   margin: float) -> np.ndarray:
    """N x 2 integer window origins of a lazy camera: centred on the first box, then moved
    only as far as needed to keep each box `margin` of the window from its edges (centred
    on a box too big for that), never leaving the frame."""
    boxes = fill_missing(boxes)
    (fw, fh), (ww, wh) = frame_size, window_size
    origins = np.zeros((len(boxes), 2), dtype=np.int64)
    position = [boxes[0, 0] + boxes[0, 2] / 2 - ww / 2, boxes[0, 1] + boxes[0, 3] / 2 - wh / 2]
    for t, (x, y, w, h) in enumerate(boxes):
        for axis, (lo, side, win, limit) in enumerate(((x, w, ww, fw), (y, h, wh, fh))):
            keep = margin * win
            if side > win - 2 * keep:
                position[axis] = lo + side / 2 - win / 2
            elif lo < position[axis] + keep:
                position[axis] = lo - keep
            elif lo + side > position[axis] + win - keep:
                position[axis] = lo + side - win + keep
            position[axis] = min(max(position[axis], 0.0), float(limit - win))
        origins[t] = np.round(position)
    return origins


def hold_origin(boxes: np.ndarray, pan: str, frame_size: tuple[int, int], window_size: tuple[int, int],
                start: np.ndarray, margin: int) -> np.ndarray | None:
    """Window origin, inside the frame, that keeps every box wholly outside it (by `margin`
    px) when the window has panned `pan` from origin `start`; None if the frame has no room."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (fw, fh), (ww, wh) = frame_size, window_size
    origin = np.asarray(start, dtype=np.int64).copy()
    if pan == "left":
        origin[0] = int(np.floor(boxes[:, 0].min() - margin - ww))
        ok = origin[0] >= 0
    elif pan == "right":
        origin[0] = int(np.ceil((boxes[:, 0] + boxes[:, 2]).max() + margin))
        ok = origin[0] + ww <= fw
    elif pan == "up":
        origin[1] = int(np.floor(boxes[:, 1].min() - margin - wh))
        ok = origin[1] >= 0
    elif pan == "down":
        origin[1] = int(np.ceil((boxes[:, 1] + boxes[:, 3]).max() + margin))
        ok = origin[1] + wh <= fh
    else:
        raise ValueError(f"pan must be one of {PANS}, got {pan!r}")
    return origin if ok else None


def _smoothstep(u: np.ndarray) -> np.ndarray:
    """0 -> 1 with zero speed at both ends: the pan starts and stops like a camera's."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def window_size_for(frame_size: tuple[int, int], scale: float) -> tuple[int, int]:
    return int(round(frame_size[0] * scale)), int(round(frame_size[1] * scale))


# --- planning -----------------------------------------------------------------------------
@dataclass
class SequencePlan:
    """Everything that decides one output sequence; writing it only reads frames."""

    name: str
    frame_size: tuple[int, int]
    window_size: tuple[int, int]
    window_scale: float
    windows: np.ndarray  # N x 2 int origins in the source frame
    occluders: np.ndarray  # N x 4 in output coordinates, NaN where none
    ground_truth: np.ndarray  # N x 4 in output coordinates, NaN where absent
    reasons: list[str | None]  # per frame: why absent (OUT_OF_VIEW / OCCLUDED / SOURCE_ABSENT) or None
    episodes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    donor: tuple[Sequence, int, tuple[int, int, int, int]] | None = None  # sequence, frame, region
    donor_patch: np.ndarray | None = None  # the occluder's pixels (BGR), cut from the donor


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _sequence_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _same_video(a: Sequence, b: Sequence) -> bool:
    """Targets of one OTB folder (Jogging.1, Jogging.2) share frames: no donor for each other."""
    return bool(a.frames) and bool(b.frames) and a.frames[0].parent.resolve() == b.frames[0].parent.resolve()


def _out_of_view_options(boxes: np.ndarray, frame_size: tuple[int, int], window_size: tuple[int, int],
                         follow: np.ndarray, starts: Iterable[int], lengths: tuple[int, int, int],
                         margin: int) -> list[tuple[int, str, np.ndarray]]:
    """(episode start, pan, hold origin) for every start and pan where the hold fits."""
    slide_out, hold, _ = lengths
    options = []
    for start in starts:
        held = boxes[start + slide_out:start + slide_out + hold]
        for pan in PANS:
            origin = hold_origin(held, pan, frame_size, window_size, follow[start + slide_out], margin)
            if origin is not None:
                options.append((start, pan, origin))
    return options


def _pick_donor(rng: np.random.Generator, donors: list[Sequence], size: tuple[int, int]
                ) -> tuple[Sequence, int, tuple[int, int, int, int], np.ndarray] | None:
    """A (pw x ph) region of a random frame of a random donor, clear of the donor's target."""
    pw, ph = size
    for _ in range(50):
        donor = donors[int(rng.integers(len(donors)))]
        index = int(rng.integers(len(donor)))
        image = donor.image(index)
        height, width = image.shape[:2]
        if width < pw or height < ph:
            continue
        box = donor.ground_truth[index]
        for _ in range(20):
            x, y = int(rng.integers(width - pw + 1)), int(rng.integers(height - ph + 1))
            region = (x, y, pw, ph)
            if not np.isfinite(box).all() or _intersection_area(np.array(region), box)[0] == 0:
                return donor, index, region, image[y:y + ph, x:x + pw].copy()
    return None


def _shrink_to_fit(lengths: list[int], occ_lengths: list[int], settings: OutOfViewSettings, room: int) -> None:
    """Shorten the drawn episodes (the hold and the cover first, then the pans and passes,
    never below their ranges' minimums) until both fit in `room` frames, if they can."""
    minimums = [(lengths, 1, settings.hold_frames[0]), (occ_lengths, 1, settings.occlusion_frames[0]),
                (lengths, 0, settings.slide_frames[0]), (lengths, 2, settings.slide_frames[0]),
                (occ_lengths, 0, settings.occluder_pass[0]), (occ_lengths, 2, settings.occluder_pass[0])]
    for group in (minimums[:2], minimums[2:]):
        while sum(lengths) + sum(occ_lengths) > room:
            shrinkable = [(values[i] - low, values, i) for values, i, low in group if values[i] > low]
            if not shrinkable:
                break
            _, values, i = max(shrinkable, key=lambda item: item[0])
            values[i] -= 1


def plan_sequence(sequence: Sequence, donors: list[Sequence], settings: OutOfViewSettings) -> SequencePlan:
    """Choose the window, episodes and occluder of one sequence (drawn from its own seed)."""
    rng = _sequence_rng(settings.seed, sequence.name)
    n = len(sequence)
    first = sequence.first_valid_index()
    if first is None:
        raise DatasetError(f"{sequence.name}: no frame has a usable ground-truth box")
    height, width = sequence.image(first).shape[:2]
    frame_size = (width, height)
    source_gt = sequence.ground_truth
    boxes = fill_missing(source_gt)
    source_valid = sequence.valid_mask()
    notes: list[str] = []

    lengths = [_draw(rng, settings.slide_frames), _draw(rng, settings.hold_frames), _draw(rng, settings.slide_frames)]
    occ_lengths = [_draw(rng, settings.occluder_pass), _draw(rng, settings.occlusion_frames),
                   _draw(rng, settings.occluder_pass)]
    earliest, end = first + settings.lead_in, n - settings.gap  # episodes lie in [earliest, end)
    _shrink_to_fit(lengths, occ_lengths, settings, end - earliest - settings.gap)

    # Out of view: the largest window, from window_scale down, and then the longest hold (down to
    # the shortest allowed) with which the window can leave the target.
    scales = np.round(np.arange(settings.window_scale, settings.min_window_scale - 1e-9, -SCALE_STEP), 4)
    chosen: tuple[float, tuple[int, int], np.ndarray, tuple[int, str, np.ndarray]] | None = None
    occ_len = sum(occ_lengths)
    occ_shortest = 2 * settings.occluder_pass[0] + settings.occlusion_frames[0]
    for scale in scales:
        size = window_size_for(frame_size, float(scale))
        follow = follow_windows(boxes, frame_size, size, settings.follow_margin)
        for hold in range(lengths[1], settings.hold_frames[0] - 1, -1):
            tried = (lengths[0], hold, lengths[2])
            oov_len = sum(tried)
            options = _out_of_view_options(boxes, frame_size, size, follow, range(earliest, end - oov_len + 1),
                                           tried, settings.hold_margin)
            if not options:
                continue
            # Prefer starts that leave room for the drawn occlusion, else for the shortest one.
            for need in (occ_len, occ_shortest):
                room = [o for o in options if o[0] - settings.gap - need >= earliest
                        or o[0] + oov_len + settings.gap + need <= end]
                if room:
                    options = room
                    break
            chosen = (float(scale), size, follow, options[int(rng.integers(len(options)))])
            lengths[1] = hold
            break
        if chosen is not None:
            break
    if chosen is None:
        scale = float(settings.window_scale)
        size = window_size_for(frame_size, scale)
        follow = follow_windows(boxes, frame_size, size, settings.follow_margin)
        shortest = lengths[0] + settings.hold_frames[0] + lengths[2]
        if end - earliest < shortest:
            notes.append(f"no out-of-view episode: {n} frames leave no room for its {shortest}")
        else:
            notes.append(f"no out-of-view episode: the target never stays far enough from the frame's centre "
                         f"for a window of {settings.min_window_scale:g}..{settings.window_scale:g} of the "
                         f"frame to leave it for {settings.hold_frames[0]} frames")
    else:
        scale, size, follow, _ = chosen
    oov_len = sum(lengths)
    windows = follow.copy()
    episodes: list[dict[str, Any]] = []
    busy = np.zeros(n, dtype=bool)

    if chosen is not None:
        start, pan, origin = chosen[3]
        slide_out, hold, slide_back = lengths
        blend = np.zeros(n)
        blend[start:start + slide_out] = _smoothstep(np.arange(1, slide_out + 1) / (slide_out + 1))
        blend[start + slide_out:start + slide_out + hold] = 1.0
        back = start + slide_out + hold
        blend[back:back + slide_back] = _smoothstep(1 - np.arange(1, slide_back + 1) / (slide_back + 1))
        mixed = (1 - blend[:, None]) * follow + blend[:, None] * origin[None, :]
        windows = np.round(mixed).astype(np.int64)
        busy[max(start - settings.gap, 0):min(start + oov_len + settings.gap, n)] = True
        episodes.append({"kind": OUT_OF_VIEW, "pan": pan,
                         "slide_out": [start, start + slide_out - 1],
                         "hold": [start + slide_out, back - 1],
                         "slide_back": [back, back + slide_back - 1],
                         "hold_window": [int(origin[0]), int(origin[1]), *size]})

    # Full occlusion, in a stretch the out-of-view episode leaves free.
    occluders = np.full((n, 4), np.nan)
    out_boxes = boxes - np.c_[windows, np.zeros((n, 2))]
    donor_pick = None
    candidates: list[int] = []
    while True:  # the longest occlusion (down to the shortest allowed) that a free stretch holds
        occ_len = sum(occ_lengths)
        candidates = [t for t in range(earliest, end - occ_len + 1)
                      if not busy[t:t + occ_len].any() and source_valid[t:t + occ_len].all()]
        if candidates or occ_len <= occ_shortest:
            break
        if occ_lengths[1] > settings.occlusion_frames[0]:
            occ_lengths[1] -= 1
        else:
            i = 0 if occ_lengths[0] >= occ_lengths[2] else 2
            occ_lengths[i] -= 1
    donor_pool = [d for d in donors if d.name != sequence.name and not _same_video(d, sequence)]
    if not donor_pool:
        notes.append("no occlusion episode: no other sequence to cut an occluder from")
    elif not candidates:
        notes.append(f"no occlusion episode: no stretch of {occ_len} frames with the target shown is free")
    else:
        start = candidates[int(rng.integers(len(candidates)))]
        enter, covered, leave = occ_lengths
        span = out_boxes[start:start + occ_len]
        pw = int(min(np.ceil(span[:, 2].max() * (1 + settings.occluder_margin) + 6), size[0]))
        ph = int(min(np.ceil(span[:, 3].max() * (1 + settings.occluder_margin) + 6), size[1]))
        donor_pick = _pick_donor(rng, donor_pool, (pw, ph))
        if donor_pick is None:
            notes.append("no occlusion episode: no donor frame has room for the occluder")
        else:
            side = PANS[int(rng.integers(len(PANS)))]
            axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[side]
            reach = [(pw + span[:, 2].max()) / 2 + 2, (ph + span[:, 3].max()) / 2 + 2][axis]
            travel = np.r_[1 - np.arange(1, enter + 1) / (enter + 1), np.zeros(covered),
                           -np.arange(1, leave + 1) / (leave + 1)]  # 1: beside it on `side`, 0: on it
            for k, t in enumerate(range(start, start + occ_len)):
                cx, cy = out_boxes[t, 0] + out_boxes[t, 2] / 2, out_boxes[t, 1] + out_boxes[t, 3] / 2
                centre = [cx, cy]
                centre[axis] += sign * reach * travel[k]
                occluders[t] = [np.floor(centre[0] - pw / 2), np.floor(centre[1] - ph / 2), pw, ph]
            donor, donor_index, region, _ = donor_pick
            episodes.append({"kind": OCCLUSION_KIND, "from": side,
                             "cover": [start, start + enter - 1], "covered": [start + enter, start + enter + covered - 1],
                             "uncover": [start + enter + covered, start + occ_len - 1],
                             "occluder_size": [pw, ph],
                             "donor": {"sequence": donor.name, "frame": donor_index, "region": list(region)}})

    inside, visible = visible_shares(out_boxes, size, occluders)
    gt = _clip_boxes(out_boxes, size)
    reasons: list[str | None] = []
    for t in range(n):
        if not source_valid[t]:
            reasons.append(SOURCE_ABSENT)
        elif inside[t] < settings.min_visible:
            reasons.append(OUT_OF_VIEW)
        elif visible[t] < settings.min_visible:
            reasons.append(OCCLUDED)
        else:
            reasons.append(None)
    gt[[r is not None for r in reasons]] = np.nan
    if reasons[first] is not None:  # only a target larger than the window: trackers could not start
        raise DatasetError(f"{sequence.name}: the target does not fit a window of {scale:g} of the frame "
                           f"on its first frame; give a larger --window-scale")
    plan = SequencePlan(sequence.name, frame_size, size, scale, windows, occluders, gt, reasons, episodes, notes)
    if donor_pick is not None:
        plan.donor, plan.donor_patch = donor_pick[:3], donor_pick[3]
    for episode in episodes:
        first_frame = episode["slide_out"][0] if episode["kind"] == OUT_OF_VIEW else episode["cover"][0]
        last_frame = episode["slide_back"][1] if episode["kind"] == OUT_OF_VIEW else episode["uncover"][1]
        episode["absent"] = _ranges([t for t in range(first_frame, last_frame + 1) if reasons[t] is not None])
    return plan



def _ranges(indices: Iterable[int]) -> list[list[int]]:
    """[[first, last], ...] inclusive runs of sorted frame indices."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


# --- writing ------------------------------------------------------------------------------
def _format_box(row: np.ndarray) -> str:
    if not np.isfinite(row).all():
        return "NaN,NaN,NaN,NaN"
    return ",".join(np.format_float_positional(float(v), precision=2, trim="-") for v in row)


def paste(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Paste `patch` with its top-left at (x, y), the part outside `image` dropped."""
    ph, pw = patch.shape[:2]
    height, width = image.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + pw, width), min(y + ph, height)
    if x2 > x1 and y2 > y1:
        image[y1:y2, x1:x2] = patch[y1 - y:y2 - y, x1 - x:x2 - x]


def render_frame(plan: SequencePlan, source_image: np.ndarray, index: int) -> np.ndarray:
    """Output frame `index`: the window's crop of the source frame, the occluder pasted on."""
    x, y = (int(v) for v in plan.windows[index])
    ww, wh = plan.window_size
    if source_image.shape[1] != plan.frame_size[0] or source_image.shape[0] != plan.frame_size[1]:
        raise DatasetError(f"{plan.name}: frame {index} is {source_image.shape[1]}x{source_image.shape[0]}, "
                           f"not {plan.frame_size[0]}x{plan.frame_size[1]} as the first")
    crop = source_image[y:y + wh, x:x + ww].copy()
    occluder = plan.occluders[index]
    if np.isfinite(occluder).all():
        assert plan.donor_patch is not None, "an occluder is placed only once a donor patch is cut"
        paste(crop, plan.donor_patch, int(occluder[0]), int(occluder[1]))
    return crop


def write_sequence(plan: SequencePlan, sequence: Sequence, out_dir: Path, jpeg_quality: int) -> Path:
    """OUT/<seq>/ in OTB layout, plus window.txt and occluder.txt."""
    import cv2

    seq_dir = out_dir / plan.name
    img_dir = seq_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(len(sequence))))
    for index in range(len(sequence)):
        frame = render_frame(plan, sequence.image(index), index)
        path = img_dir / f"{index + 1:0{digits}d}.jpg"
        if not cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]):
            raise DatasetError(f"cannot write {path}")
    (seq_dir / "groundtruth_rect.txt").write_text("".join(_format_box(r) + "\n" for r in plan.ground_truth))
    windows = np.c_[plan.windows, np.tile(plan.window_size, (len(plan.windows), 1))]
    (seq_dir / "window.txt").write_text("".join(_format_box(r) + "\n" for r in windows))
    (seq_dir / "occluder.txt").write_text("".join(_format_box(r) + "\n" for r in plan.occluders))
    return seq_dir


def describe(plan: SequencePlan, source_frames: int) -> dict[str, Any]:
    """The JSON entry of one sequence."""
    absent = {reason: _ranges(t for t, r in enumerate(plan.reasons) if r == reason)
              for reason in (OUT_OF_VIEW, OCCLUDED, SOURCE_ABSENT)}
    return {
        "frames": len(plan.reasons),
        "source_frames": source_frames,
        "source_size": list(plan.frame_size),
        "window_size": list(plan.window_size),
        "window_scale": plan.window_scale,
        "absent_frames": sum(r is not None for r in plan.reasons),
        "absent": {k: v for k, v in absent.items() if v},
        "episodes": plan.episodes,
        "notes": plan.notes,
    }


def build_out_of_view(dataset: str | Path, out: str | Path, settings: OutOfViewSettings = OutOfViewSettings(),
                      names: Iterable[str] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Build the variant of `dataset` (its sequences `names`, or all) in `out`; returns the
    description also written to OUT/outofview.json. Occluders come from any sequence of the
    dataset, not only those built, so a sequence's variant does not depend on `names`."""
    dataset, out = Path(dataset).resolve(), Path(out).resolve()
    if out == dataset or dataset in out.parents:
        raise DatasetError(f"--out {out} lies inside the source dataset {dataset}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"{out} is not empty; give another folder or --overwrite")
        _remove_previous(out)
    every = load_dataset(dataset)
    chosen = load_dataset(dataset, names) if names is not None else every
    description: dict[str, Any] = {
        "tool": "vtrack outofview",
        "format": FORMAT_VERSION,
        "source": str(dataset),
        "seed": settings.seed,
        "settings": asdict(settings),
        "frame_indexing": "0-based: frame 0 is img/0001.jpg; ranges are [first, last], both included",
        "sequences": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    for sequence in chosen:
        source_frames = len(sequence)
        sequence = sequence.head(settings.max_frames)
        plan = plan_sequence(sequence, every, settings)
        write_sequence(plan, sequence, out, settings.jpeg_quality)
        description["sequences"][sequence.name] = describe(plan, source_frames)
        log.info("%s: %d frames, %d absent", sequence.name, len(sequence), description["sequences"][sequence.name]["absent_frames"])
    text = _json_text(description)
    (out / DESCRIPTION_FILE).write_text(text + "\n")
    return json.loads(text)  # as a reader of the file sees it (lists, not tuples)


def _json_text(value: Any, depth: int = 0) -> str:
    """JSON with objects one key a line but lists of numbers (or of number lists) on one
    line, so the description reads as a table of episodes, not a column of digits."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_json_text(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value):
        return "[\n" + ",\n".join(inner + _json_text(v, depth + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, allow_nan=False)


def _remove_previous(out: Path) -> None:
    """--overwrite: remove what an earlier build wrote (the sequences its JSON names, the
    JSON); refuse a folder that holds anything else, rather than delete a user's files."""
    described = out / DESCRIPTION_FILE
    if not described.is_file():
        raise DatasetError(f"{out} is not empty and holds no {DESCRIPTION_FILE}: not a variant to overwrite")
    previous = json.loads(described.read_text()).get("sequences", {})
    for name in previous:
        target = out / name
        if target.is_dir() and target.parent == out:
            shutil.rmtree(target)
    described.unlink()
    left = sorted(p.name for p in out.iterdir())
    if left:
        raise DatasetError(f"{out} holds more than an earlier variant ({', '.join(left[:5])}); not overwriting")


def read_description(root: str | Path) -> dict[str, Any]:
    """OUT/outofview.json of a built variant."""
    path = Path(root) / DESCRIPTION_FILE
    if not path.is_file():
        raise DatasetError(f"{root}: no {DESCRIPTION_FILE} (not built by `vtrack outofview`)")
    return json.loads(path.read_text())
