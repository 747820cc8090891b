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
from typing import Callable, Generic, Iterable, Sequence, TypeVar

import numpy as np

from .boxes import Box
from .tracker import Tracker, TrackResult, TrackState

T = TypeVar("T")


class StampedRing(Generic[T]):
    """The last `size` items with their stamps (ns), so that a target can be started on the
    image its box was drawn on and then caught up to the newest one."""

    def __init__(self, size: int) -> None:
        self._items: deque[tuple[int, T]] = deque(maxlen=max(1, int(size)))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            self._items.append((stamp_ns, item))

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


class TargetError(ValueError):
    """A start/stop request that cannot be honoured; the message says why."""


@dataclass
class _Target:
    target_id: str
    tracker_name: str
    tracker: Tracker
    last_stamp: int
    result: TrackResult
    failed: bool = False


@dataclass(frozen=True)
class TargetReport:
    target_id: str
    tracker_name: str
    result: TrackResult
    error: str | None = None  # set on the first failure of this target only


@dataclass
class MultiTargetTracker:
    """Targets by id. `tracker_factory(name)` builds a configured tracker (may raise with a
    clear message for an unknown name or a bad setting)."""

    tracker_factory: Callable[[str], Tracker]
    default_tracker: str
    max_targets: int = 8
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
        frames: Sequence[tuple[int, np.ndarray]],
        box: Box,
        target_id: str = "",
        tracker_name: str = "",
    ) -> TargetReport:
        """Initialise on frames[0] and catch up through the newer frames[1:].

        Re-using an existing id re-initialises that target. Raises TargetError (or the
        tracker's InvalidInputError / config errors) without touching existing targets.
        The work runs outside the lock, so frames keep being tracked meanwhile; a frame the
        worker tracks between the end of the catch-up and the insertion is skipped by this
        new target only.
        """
        if not frames:
            raise TargetError("no image to start on")
        name = tracker_name or self.default_tracker
        self._check_room(target_id)
        with self._lock:
            epoch = self._epoch
        tracker = self.tracker_factory(name)  # may load a network
        first_stamp, first_image = frames[0]
        tracker.init(first_image, box)
        result = TrackResult(box=tracker.box, confidence=1.0, state=TrackState.INITIALIZING)
        last_stamp = first_stamp
        for stamp, image in frames[1:]:
            result = tracker.update(image)
            last_stamp = stamp
        with self._lock:
            self._check_room(target_id)
            target_id = target_id or self._new_id()
            if self._epoch != epoch:  # the clock stepped back meanwhile: take the next frame
                last_stamp = -1
            self._targets[target_id] = _Target(target_id, name, tracker, last_stamp, result)
        return TargetReport(target_id, name, result)

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
            error = None
            if stamp_ns > target.last_stamp:
                try:
                    target.result = target.tracker.update(image)
                except Exception as exc:  # one broken tracker must not stop the stream
                    if not target.failed:
                        error = f"{type(exc).__name__}: {exc}"
                    target.failed = True
                    last = target.result
                    target.result = TrackResult(last.box, 0.0, TrackState.LOST, last.seconds)
                target.last_stamp = stamp_ns
            reports.append((target, TargetReport(target.target_id, target.tracker_name, target.result, error)))
        with self._lock:
            return [report for target, report in reports if self._targets.get(target.target_id) is target]

    def _new_id(self) -> str:
        while True:
            candidate = f"target_{next(self._ids)}"
            if candidate not in self._targets:
                return candidate
