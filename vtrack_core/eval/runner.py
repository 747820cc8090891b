"""Run trackers over benchmark sequences (one-pass evaluation) and keep the results on disk.

Results live in OUT/results/<tracker>/ as plain text, one line per frame, so a long run can
be resumed, inspected by hand and re-scored without tracking again:

    <seq>.txt             x,y,w,h (%.2f; NaN before the init frame and on failed frames)
    <seq>_time.txt        seconds of the tracker's update on that frame (NaN where none ran)
    <seq>_confidence.txt  confidence 0..1 (NaN before the init frame and on failed frames)
    <seq>_raw_confidence.txt  the tracker's own score before its calibration (the same as the
                          confidence for an uncalibrated tracker; optional: older folders lack it)
    <seq>_state.txt       TrackState as an integer (0 INITIALIZING .. 3 LOST; -1 before the
                          init frame and on failed frames)

Result folders written before states were saved have no state file; they still load (and
resume), with every state NO_STATE and `states_saved` False, so the measures that need
states are reported as undefined rather than as a tracker that never said LOST.

Timing covers `update` only (init excluded), as reported by the tracker itself; image
decoding is never counted, so a slow disk does not make a tracker look slow.
"""
from __future__ import annotations

import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..boxes import Box
from ..registry import create_tracker, tracker_config
from ..tracker import Tracker, TrackState
from .datasets import Sequence

log = logging.getLogger(__name__)

NO_STATE = -1  # states[i] where no TrackState exists (before init, failed frames)
MAX_LOGGED_FAILURES = 3  # per sequence; later ones are only counted


@dataclass
class SequenceResult:
    """Per-frame output of one tracker on one sequence (arrays of the sequence's length)."""

    boxes: np.ndarray  # N x 4, NaN rows before init and where the tracker failed
    times: np.ndarray  # N, update seconds; NaN where no update ran (before/at init)
    confidences: np.ndarray  # N
    states: np.ndarray  # N int, TrackState values or NO_STATE
    init_index: int | None  # frame the tracker was started on; None if never
    failures: int = 0  # frames where the tracker (or the frame's image) raised
    states_saved: bool = True  # False when loaded from a folder without a state file
    raw_confidences: np.ndarray | None = None  # N, the score before calibration; None: not saved

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def updated_frames(self) -> int:
        return int(np.isfinite(self.times).sum())

    @property
    def update_seconds(self) -> float:
        return float(np.nansum(self.times))

    @property
    def fps(self) -> float:
        """Updated frames per second of update time; NaN when nothing was timed."""
        seconds = self.update_seconds
        return self.updated_frames / seconds if seconds > 0 else float("nan")


def _empty_result(n: int) -> SequenceResult:
    return SequenceResult(
        boxes=np.full((n, 4), np.nan),
        times=np.full(n, np.nan),
        confidences=np.full(n, np.nan),
        states=np.full(n, NO_STATE, dtype=np.int64),
        init_index=None,
        raw_confidences=np.full(n, np.nan),
    )


def run_sequence(
    tracker: Tracker,
    sequence: Sequence,
    label: str = "",
    on_frames: Callable[[int], None] | None = None,
) -> SequenceResult:
    """One pass of `tracker` over `sequence`, started from the first valid ground truth.

    A frame on which the tracker raises is logged and left NaN, and tracking goes on: one
    bad frame must not lose a run of hours. Its wall time still counts as update time.
    `on_frames(k)` is called as frames are done (a progress bar's update).
    """
    advance = on_frames or (lambda k: None)
    label = label or getattr(tracker, "name", "") or type(tracker).__name__
    n = len(sequence)
    result = _empty_result(n)
    start = sequence.first_valid_index()
    if start is None:
        log.warning("%s/%s: no frame has a valid ground-truth box; nothing tracked", label, sequence.name)
        return result

    def failed(index: int, error: BaseException) -> None:
        result.failures += 1
        if result.failures <= MAX_LOGGED_FAILURES:
            log.warning("%s/%s frame %d: %s: %s", label, sequence.name, index, type(error).__name__, error)
        elif result.failures == MAX_LOGGED_FAILURES + 1:
            log.warning("%s/%s: more failures; only counting them from now on", label, sequence.name)

    init_box = Box.from_xywh(sequence.ground_truth[start])
    try:
        tracker.init(sequence.image(start), init_box)
    except Exception as error:  # noqa: BLE001 - any tracker bug must only cost this sequence
        failed(start, error)
        log.warning("%s/%s: init failed, the whole sequence counts as failures", label, sequence.name)
        return result
    result.init_index = start
    advance(start + 1)
    result.boxes[start] = init_box.xywh()
    result.confidences[start] = result.raw_confidences[start] = 1.0
    result.states[start] = int(TrackState.INITIALIZING)

    for index in range(start + 1, n):
        advance(1)
        try:
            image = sequence.image(index)
        except Exception as error:  # noqa: BLE001
            failed(index, error)
            continue
        began = time.perf_counter()
        try:
            track = tracker.update(image)
        except Exception as error:  # noqa: BLE001
            result.times[index] = time.perf_counter() - began
            failed(index, error)
            continue
        result.boxes[index] = track.box.xywh()
        result.times[index] = track.seconds
        result.confidences[index] = track.confidence
        result.raw_confidences[index] = track.raw_confidence
        result.states[index] = int(track.state)
    if result.failures:
        log.warning("%s/%s: %d frame(s) failed", label, sequence.name, result.failures)
    return result


# --- files --------------------------------------------------------------------------------
def result_files(results_dir: str | Path, sequence_name: str) -> dict[str, Path]:
    results_dir = Path(results_dir)
    return {
        "boxes": results_dir / f"{sequence_name}.txt",
        "times": results_dir / f"{sequence_name}_time.txt",
        "confidences": results_dir / f"{sequence_name}_confidence.txt",
        "states": results_dir / f"{sequence_name}_state.txt",
        "raw_confidences": results_dir / f"{sequence_name}_raw_confidence.txt",
    }


REQUIRED_FILES = ("boxes", "times", "confidences")  # a result without a state file predates them


def tracker_results_dir(out_dir: str | Path, tracker_name: str) -> Path:
    return Path(out_dir) / "results" / tracker_name


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file so an interrupted run never leaves a half file to resume from."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _lines(values: np.ndarray, fmt: str) -> str:
    """Comma-separated rows; NaN is written as 'nan', which np.loadtxt reads back."""
    buffer = io.StringIO()
    np.savetxt(buffer, np.asarray(values, dtype=np.float64), fmt=fmt, delimiter=",")
    return buffer.getvalue()


def save_result(result: SequenceResult, results_dir: str | Path, sequence_name: str) -> None:
    """Write the per-sequence files; boxes last, since their presence marks completion."""
    files = result_files(results_dir, sequence_name)
    files["boxes"].parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(files["times"], _lines(result.times, "%.9f"))
    _write_atomically(files["confidences"], _lines(result.confidences, "%.4f"))
    _write_atomically(files["states"], _lines(result.states, "%d"))
    if result.raw_confidences is not None:
        _write_atomically(files["raw_confidences"], _lines(result.raw_confidences, "%.4f"))
    _write_atomically(files["boxes"], _lines(result.boxes, "%.2f"))


def _read_rows(path: Path, columns: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty file warns; it is reported as a wrong length
        array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    if array.size and array.shape[1] != columns:
        raise ValueError(f"{path}: expected {columns} value(s) a line, got {array.shape[1]}")
    return array.reshape(-1, columns) if columns > 1 else array.reshape(-1)


def load_result(
    results_dir: str | Path, sequence_name: str, expected_frames: int | None = None
) -> SequenceResult | None:
    """Saved result of one sequence, or None if missing, unreadable or of the wrong length.

    A missing state file (a folder from before states were saved) is not a missing result:
    the states come back as NO_STATE with `states_saved` False.
    """
    files = result_files(results_dir, sequence_name)
    if not all(files[key].is_file() for key in REQUIRED_FILES):
        return None
    states_saved = files["states"].is_file()
    try:
        boxes = _read_rows(files["boxes"], 4)
        times = _read_rows(files["times"], 1)
        confidences = _read_rows(files["confidences"], 1)
        states = _read_rows(files["states"], 1) if states_saved else None
        raw = _read_rows(files["raw_confidences"], 1) if files["raw_confidences"].is_file() else None
    except ValueError as error:
        log.warning("ignoring unreadable result: %s", error)
        return None
    n = len(boxes)
    if len(times) != n or len(confidences) != n or (expected_frames is not None and n != expected_frames):
        return None
    if states is not None and (len(states) != n or not np.isfinite(states).all()):
        log.warning("ignoring %s: %d state rows for %d frames", files["states"], len(states), n)
        return None
    if raw is not None and len(raw) != n:
        raw = None  # a stale file from another run: the raw-score measures are then undefined
    started = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    return SequenceResult(
        boxes=boxes,
        times=times,
        confidences=confidences,
        states=states.astype(np.int64) if states is not None else np.full(n, NO_STATE, dtype=np.int64),
        init_index=int(started[0]) if len(started) else None,
        states_saved=states_saved,
        raw_confidences=raw,
    )


# --- many trackers x many sequences -------------------------------------------------------
def run_benchmark(
    tracker_names: Iterable[str],
    sequences: list[Sequence],
    out_dir: str | Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    config_file: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    tracker_factory: Callable[[str], Tracker] | None = None,
) -> dict[str, dict[str, SequenceResult]]:
    """Run every tracker on every sequence, saving each sequence's result as it finishes.

    `overrides` maps a tracker name to config overrides for `create_tracker`. Every
    tracker's config is built before anything runs, so a typo fails in a second, not after
    the first tracker's hour. With `resume`, a sequence whose files exist with the right
    length is loaded instead of run. Returns results[tracker][sequence].
    """
    from contextlib import nullcontext

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    names = list(dict.fromkeys(tracker_names))
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    unused = sorted(set(overrides) - set(names))
    if unused:
        raise ValueError(f"settings given for tracker(s) not being run: {', '.join(unused)}")

    def default_factory(name: str) -> Tracker:
        return create_tracker(name, config_file, **overrides.get(name, {}))

    factory = tracker_factory or default_factory
    if tracker_factory is None:
        for name in names:
            tracker_config(name, config_file, **overrides.get(name, {}))  # raises on bad names/settings

    results: dict[str, dict[str, SequenceResult]] = {name: {} for name in names}
    total = len(names) * sum(len(s) for s in sequences)
    quiet_logs = logging_redirect_tqdm() if progress else nullcontext()  # warnings above the bar
    with quiet_logs, tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for name in names:
            results_dir = tracker_results_dir(out_dir, name)
            for sequence in sequences:
                bar.set_description(f"{name} {sequence.name}")
                saved = load_result(results_dir, sequence.name, len(sequence)) if resume else None
                if saved is not None:
                    results[name][sequence.name] = saved
                    bar.update(len(sequence))
                    continue
                done_before = bar.n
                result = run_sequence(factory(name), sequence, label=name, on_frames=bar.update)
                save_result(result, results_dir, sequence.name)
                results[name][sequence.name] = result
                bar.update(done_before + len(sequence) - bar.n)  # frames an early return skipped
    return results
