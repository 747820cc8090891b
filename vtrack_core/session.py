"""Several targets on one camera stream, each with its own tracker: the logic of the ROS
node without ROS, so it is tested here and the node only translates messages.

Thread-safe: a worker thread calls `update` per frame while service threads call `start`
and `stop`. A tracker that raises loses only its own target (marked LOST, the error is
reported once), never the stream.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, TypeVar

import cv2
import numpy as np

from .boxes import Box
from .tracker import InvalidInputError, Tracker, TrackResult, TrackState

T = TypeVar("T")


class StampedRing(Generic[T]):
    """The last `size` items with their stamps (ns), so that a target can be started on the
    image its box was drawn on and then caught up to the newest one.

    With `max_bytes`, the oldest items also go once the items' sizes (as given to append)
    add up to more than that; the newest item always stays, however large."""

    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        self._items: deque[tuple[int, T]] = deque()
        self._sizes: deque[int] = deque()
        self._size = max(1, int(size))
        self._max_bytes = None if max_bytes is None else max(0, int(max_bytes))
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """The sizes of the items held, added up."""
        return self._bytes

    def append(self, stamp_ns: int, item: T, nbytes: int = 0) -> None:
        with self._lock:
            self._items.append((stamp_ns, item))
            self._sizes.append(int(nbytes))
            self._bytes += int(nbytes)
            while len(self._items) > 1 and (
                len(self._items) > self._size or (self._max_bytes is not None and self._bytes > self._max_bytes)
            ):
                self._items.popleft()
                self._bytes -= self._sizes.popleft()

    def latest(self) -> tuple[int, T] | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def from_stamp(self, stamp_ns: int) -> list[tuple[int, T]] | None:
        """The item with exactly this stamp and every newer one; None if it is not held."""
        with self._lock:
            items = list(self._items)
        for index, (stamp, _) in enumerate(items):
            if stamp == stamp_ns:
                return items[index:]
        return None

    def stamp_range(self) -> tuple[int, int] | None:
        with self._lock:
            return (self._items[0][0], self._items[-1][0]) if self._items else None

    def clear(self) -> None:
        """Forget every item (the stamps stepped back: the old ones describe another time)."""
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._bytes = 0


class TargetError(ValueError):
    """A start/stop request that cannot be honoured; the message says why."""


RESOLUTION_POLICIES = ("rescale", "lose")
ASPECT_TOLERANCE = 0.02  # relative: 641x480 -> 320x240 is the same camera binned


@dataclass
class _Target:
    target_id: str
    tracker_name: str
    tracker: Tracker
    last_stamp: int
    result: TrackResult
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the images its box lives in
    last_image: np.ndarray | None = None  # the last image it saw (a reference, not a copy)
    failed: bool = False
    lost_reason: str | None = None  # LOST for good (until re-initialised), and why


@dataclass(frozen=True)
class TargetReport:
    target_id: str
    tracker_name: str
    result: TrackResult
    error: str | None = None  # set on the first failure of this target only
    note: str | None = None  # something that happened to this target on this frame (image size change)


def _size_of(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


def _scale_box(box: Box, old: tuple[int, int], new: tuple[int, int]) -> Box:
    sx, sy = new[0] / old[0], new[1] / old[1]
    return Box(box.x * sx, box.y * sy, box.w * sx, box.h * sy)


@dataclass
class Starting:
    """A target between begin() and finish(): initialised, catching up, not yet tracked with
    the others."""

    target: _Target
    epoch: int
    frames_caught_up: int = 0

    @property
    def last_stamp(self) -> int:
        return self.target.last_stamp


@dataclass
class MultiTargetTracker:
    """Targets by id. `tracker_factory(name)` builds a configured tracker (may raise with a
    clear message for an unknown name or a bad setting).

    Image size changes: a target's box lives in the pixels of the images it was tracked on.
    When a frame of another size comes, `on_resolution_change` says what happens: "rescale"
    (the same camera binned differently: the box is scaled to the new size and the tracker
    restarted with it on the previous image resized to the new size, then run on the new
    frame) or "lose" (the target becomes LOST for good, with the reason). A change of aspect
    ratio is not a binning: LOST under either policy. A LOST target's box is still reported
    in the new image's pixels, never in the old ones."""

    tracker_factory: Callable[[str], Tracker]
    default_tracker: str
    max_targets: int = 8
    on_resolution_change: str = "rescale"
    _targets: dict[str, _Target] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: Iterable[int] = field(default_factory=lambda: itertools.count(1))
    _epoch: int = 0  # bumped by restart_clock(): stamps before it belong to another timeline

    def target_ids(self) -> list[str]:
        with self._lock:
            return list(self._targets)

    def reports(self) -> list[TargetReport]:
        with self._lock:
            return [TargetReport(t.target_id, t.tracker_name, t.result) for t in self._targets.values()]

    def start(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        box: Box,
        target_id: str = "",
        tracker_name: str = "",
    ) -> TargetReport:
        """Initialise on the first frame and catch up through the newer ones (any iterable:
        frames may be decoded one by one as they are needed).

        Re-using an existing id re-initialises that target. Raises TargetError (or the
        tracker's InvalidInputError / config errors) without touching existing targets.
        The work runs outside the lock, so frames keep being tracked meanwhile; a frame the
        worker tracks between the end of the catch-up and the insertion is skipped by this
        new target only. The same in steps (so that a caller can interleave them with live
        frames): prepare, begin, catch_up per frame, finish.
        """
        name, tracker = self.prepare(target_id, tracker_name)
        frames = iter(frames)
        try:
            first_stamp, first_image = next(frames)
        except StopIteration:
            raise TargetError("no image to start on") from None
        starting = self.begin(name, tracker, target_id, first_stamp, first_image, box)
        for stamp, image in frames:
            self.catch_up(starting, stamp, image)
        return self.finish(starting)

    def prepare(self, target_id: str = "", tracker_name: str = "") -> tuple[str, Tracker]:
        """Check there is room and build the tracker: (tracker name, tracker)."""
        name = tracker_name or self.default_tracker
        self._check_room(target_id)
        return name, self.tracker_factory(name)  # may load a network

    def begin(self, name: str, tracker: Tracker, target_id: str, stamp_ns: int, image: np.ndarray,
              box: Box) -> "Starting":
        """Initialise `tracker` on this frame (raises InvalidInputError for a box it cannot
        start from); the target is not tracked with the others until finish()."""
        with self._lock:
            epoch = self._epoch
        tracker.init(image, box)
        target = _Target(target_id, name, tracker, stamp_ns,
                         TrackResult(box=tracker.box, confidence=1.0, state=TrackState.INITIALIZING),
                         image_size=_size_of(image), last_image=image)
        return Starting(target, epoch)

    def catch_up(self, starting: "Starting", stamp_ns: int, image: np.ndarray) -> None:
        """Track a target being started in one newer frame."""
        target = starting.target
        if stamp_ns <= target.last_stamp and starting.epoch == self._epoch:
            return
        self._advance(target, stamp_ns, image)
        starting.frames_caught_up += 1
        if target.lost_reason is not None:
            raise TargetError(f"cannot catch up to the newest image: {target.lost_reason}; start on a newer image")

    def finish(self, starting: "Starting") -> TargetReport:
        """Track the started target with the others from the next frame on."""
        target = starting.target
        with self._lock:
            self._check_room(target.target_id)
            target.target_id = target.target_id or self._new_id()
            if self._epoch != starting.epoch:  # the clock stepped back meanwhile: take the next frame
                target.last_stamp = -1
            self._targets[target.target_id] = target
        return TargetReport(target.target_id, target.tracker_name, target.result)

    def _check_room(self, target_id: str) -> None:
        with self._lock:
            if target_id not in self._targets and len(self._targets) >= self.max_targets:
                raise TargetError(
                    f"already tracking {len(self._targets)} targets (max_targets={self.max_targets}); stop one first"
                )

    def stop(self, target_id: str = "") -> list[str]:
        """Stop one target, or all with an empty id; returns the ids stopped. Never waits for
        a frame being tracked: its result for a stopped target is dropped."""
        with self._lock:
            if not target_id:
                stopped = list(self._targets)
                self._targets.clear()
                return stopped
            if target_id not in self._targets:
                known = ", ".join(self._targets) or "none"
                raise TargetError(f"unknown target id {target_id!r} (tracking: {known})")
            del self._targets[target_id]
            return [target_id]

    def restart_clock(self) -> None:
        """The stamps stepped back (bag loop, clock step, simulator reset): every target takes
        the next frame whatever its stamp, instead of waiting for stamps newer than the last
        one it saw (which would freeze it until the new clock passed the old one)."""
        with self._lock:
            self._epoch += 1
            for target in self._targets.values():
                target.last_stamp = -1

    def update(self, stamp_ns: int, image: np.ndarray) -> list[TargetReport]:
        """Track every target in this frame (targets that already saw it are not re-run).

        Only the worker calls this; trackers run outside the lock so that start/stop answer
        at once. Targets stopped or re-initialised meanwhile are left out of the reports."""
        with self._lock:
            targets = list(self._targets.values())
        reports = []
        for target in targets:
            error, note = None, None
            if stamp_ns > target.last_stamp:
                was_failed = target.failed
                try:
                    note = self._advance(target, stamp_ns, image)
                except Exception as exc:  # one broken tracker must not stop the stream
                    target.failed = True
                    last = target.result
                    target.result = TrackResult(last.box, 0.0, TrackState.LOST, last.seconds)
                    target.last_stamp = stamp_ns
                    if not was_failed:
                        error = f"{type(exc).__name__}: {exc}"
            reports.append((target, TargetReport(target.target_id, target.tracker_name, target.result, error, note)))
        with self._lock:
            return [report for target, report in reports if self._targets.get(target.target_id) is target]

    def _advance(self, target: _Target, stamp_ns: int, image: np.ndarray) -> str | None:
        """Track one target in one frame, minding image size changes; returns a note when
        the size changed. Raises what the tracker raises."""
        size = _size_of(image)
        note = None
        if size != target.image_size:
            old = target.image_size
            scaled = _scale_box(target.result.box, old, size)
            change = f"image size changed from {old[0]}x{old[1]} to {size[0]}x{size[1]}"
            sx, sy = size[0] / old[0], size[1] / old[1]
            same_aspect = abs(sx - sy) <= ASPECT_TOLERANCE * max(sx, sy)
            if target.lost_reason is not None or target.failed:
                target.result = TrackResult(scaled, 0.0, TrackState.LOST)
            elif self.on_resolution_change == "rescale" and same_aspect and target.last_image is not None:
                # Same camera, new binning: restart on the previous image at the new size.
                previous = target.last_image
                interpolation = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
                resized = cv2.resize(previous, size, interpolation=interpolation)
                try:
                    target.tracker.init(resized, scaled)
                except InvalidInputError as exc:
                    target.lost_reason = f"{change}: the rescaled box is unusable ({exc})"
                    target.result = TrackResult(scaled, 0.0, TrackState.LOST)
                    note = f"LOST: {target.lost_reason}"
                else:
                    note = f"{change}: box rescaled by {sx:.3g} x {sy:.3g}, tracker restarted"
            else:
                why = "the aspect ratio changed" if not same_aspect else "on_resolution_change is 'lose'"
                target.lost_reason = f"{change} ({why})"
                target.result = TrackResult(scaled, 0.0, TrackState.LOST)
                note = f"LOST: {target.lost_reason}"
            target.image_size = size
        if target.lost_reason is None:
            target.result = target.tracker.update(image)
        target.last_image = image
        target.last_stamp = stamp_ns
        return note

    def _new_id(self) -> str:
        while True:
            candidate = f"target_{next(self._ids)}"
            if candidate not in self._targets:
                return candidate
