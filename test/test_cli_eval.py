"""`vtrack` end to end (through the installed console script) and the runner it drives."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vtrack_core.boxes import Box, iou
from vtrack_core.eval.datasets import Sequence, load_dataset
from vtrack_core.eval.report import make_report
from vtrack_core.eval.runner import load_result, run_benchmark, run_sequence
from vtrack_core.tracker import Tracker, TrackState


def _vtrack() -> list[str]:
    """The venv's console script, else the module (same main) where it is not installed."""
    script = Path(sys.executable).parent / "vtrack"
    if script.exists():
        return [str(script)]
    found = shutil.which("vtrack")
    return [found] if found else [sys.executable, "-m", "vtrack_core.cli"]


def vtrack(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(_vtrack() + list(args), capture_output=True, text=True, timeout=timeout, env=env)


SUMMARY_KEYS = {"auc", "precision", "norm_precision", "fps", "ao", "sr50", "sr75"}


def _check_summary(summary: dict, trackers: list[str], sequences: list[str]) -> None:
    assert set(summary) == {"trackers"}
    assert list(summary["trackers"]) == trackers
    for entry in summary["trackers"].values():
        assert set(entry) == SUMMARY_KEYS | {"sequences", "calibration"}
        assert list(entry["sequences"]) == sequences
        for scores in [entry, *entry["sequences"].values()]:
            assert set(scores) >= SUMMARY_KEYS
            for key in ("auc", "precision", "norm_precision"):
                assert 0.0 <= scores[key] <= 1.0
            assert scores["fps"] > 0


# --- vtrack eval --------------------------------------------------------------------------
def test_eval_csrt_writes_summary_and_resumes(dev_dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["eval", "--trackers", "csrt", "--dataset", str(dev_dataset_dir), "--sequences", "Couple",
            "--max-frames", "30", "--out", str(out), "--no-progress"]
    began = time.perf_counter()
    first = vtrack(*args)
    first_seconds = time.perf_counter() - began
    assert first.returncode == 0, first.stderr
    assert "Couple" in first.stdout and "overall" in first.stdout and "AUC" in first.stdout

    summary = json.loads((out / "summary.json").read_text())
    _check_summary(summary, ["csrt"], ["Couple"])
    csrt = summary["trackers"]["csrt"]
    assert csrt["auc"] == csrt["sequences"]["Couple"]["auc"]  # one sequence: mean = itself
    assert csrt["auc"] > 0.3 and csrt["precision"] > 0.5  # CSRT follows Couple for 30 frames
    for name in ("success.png", "precision.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100
    results = out / "results" / "csrt"
    for suffix in ("", "_time", "_confidence"):
        lines = (results / f"Couple{suffix}.txt").read_text().splitlines()
        assert len(lines) == 30
    first_row = (results / "Couple.txt").read_text().splitlines()[0]
    assert first_row == "51.00,47.00,25.00,62.00"  # the init frame's row is the init box
    assert (results / "Couple_time.txt").read_text().splitlines()[0] == "nan"  # init is not timed

    mtimes = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    began = time.perf_counter()
    second = vtrack(*args)
    second_seconds = time.perf_counter() - began
    assert second.returncode == 0, second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == mtimes  # nothing rerun
    assert json.loads((out / "summary.json").read_text()) == summary
    assert second_seconds < first_seconds + 1.0


def test_eval_errors_exit_2_without_traceback(dev_dataset_dir: Path, tmp_path: Path) -> None:
    cases = [
        (["--trackers", "nope"], "unknown tracker 'nope'"),
        (["--trackers", "csrt", "--sequences", "Nope"], "no sequence(s) Nope"),
        (["--trackers", "csrt", "--set", "kcf.scale_step=2"], "not among --trackers"),
        (["--trackers", "csrt", "--set", "csrt.no_such_field=1"], "no_such_field"),
    ]
    for extra, message in cases:
        done = vtrack("eval", "--dataset", str(dev_dataset_dir), "--out", str(tmp_path), *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    done = vtrack("eval", "--trackers", "csrt", "--dataset", str(tmp_path), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "neither an OTB dataset" in done.stderr


def test_list_prints_trackers() -> None:
    done = vtrack("list")
    assert done.returncode == 0
    assert {"csrt", "kcf", "mil", "nano"} <= set(done.stdout.split())


# --- vtrack track -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def couple_video(dev_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The first 20 frames of Couple as an mp4, with their ground truth."""
    (couple,) = load_dataset(dev_dataset_dir, ["Couple"])
    path = tmp_path_factory.mktemp("video") / "couple.mp4"
    first = couple.image(0)
    size = (first.shape[1], first.shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    assert writer.isOpened()
    for i in range(20):
        writer.write(couple.image(i))
    writer.release()
    return path, couple.ground_truth[:20]


def _read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_track_video_writes_overlay_and_boxes(couple_video: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    video, gt = couple_video
    init = ",".join(str(int(v)) for v in gt[0])
    done = vtrack("track", "--tracker", "csrt", "--video", str(video), "--init", init, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "20 frames" in done.stdout and "fps" in done.stdout

    frames = _read_video(tmp_path / "overlay.mp4")
    assert len(frames) == 20 and frames[0].shape == (240, 320, 3)
    rows = np.loadtxt(tmp_path / "boxes.txt", delimiter=",", ndmin=2)
    assert rows.shape == (20, 6)
    np.testing.assert_array_equal(rows[0], [*gt[0], 1.0, TrackState.INITIALIZING])
    assert set(rows[1:, 5].astype(int)) <= {int(s) for s in TrackState}
    assert ((rows[:, 4] >= 0) & (rows[:, 4] <= 1)).all()
    assert np.mean(iou(rows[:, :4], gt)) > 0.4  # it follows the couple (video compression aside)


def test_track_sequence_defaults_to_ground_truth(dev_dataset_dir: Path, tmp_path: Path) -> None:
    done = vtrack("track", "--tracker", "csrt", "--sequence", str(dev_dataset_dir / "Skiing"),
                  "--max-frames", "8", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "boxes.txt").read_text().splitlines()
    assert len(lines) == 8 and lines[0] == "446.00,181.00,29.00,26.00,1.0000,0"
    assert len(_read_video(tmp_path / "overlay.mp4")) == 8


def test_track_errors_exit_2_without_traceback(couple_video: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    video, _ = couple_video
    cases = [
        (["--tracker", "nope", "--video", str(video), "--init", "1,2,30,40"], "unknown tracker 'nope'"),
        (["--tracker", "csrt", "--video", str(video)], "--init x,y,w,h is required"),
        (["--tracker", "csrt", "--video", str(video), "--init", "1,2,3"], "expected 4 numbers"),
        (["--tracker", "csrt", "--video", str(video), "--init", "1,2,-3,4"], "positive width and height"),
        (["--tracker", "csrt", "--video", str(video), "--init", "900,900,30,30"], "outside the 320x240"),
        (["--tracker", "csrt", "--video", str(tmp_path / "none.mp4"), "--init", "1,2,30,40"], "no such file"),
    ]
    for extra, message in cases:
        done = vtrack("track", *extra, "--out", str(tmp_path / "out"))
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr, (extra, done.stderr)
        assert "Traceback" not in done.stderr


# --- runner, with a scripted tracker ------------------------------------------------------
class ScriptedTracker(Tracker):
    """Moves the box one pixel right per frame; raises on chosen frames."""

    name = "scripted"

    def __init__(self, fail_on: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.fail_on = set(fail_on)
        self.calls = 0

    def _init(self, image: np.ndarray, box: Box) -> None:
        self.start = box

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError(f"scripted failure {self.calls}")
        time.sleep(0.002)
        return Box(self.start.x + self.calls, self.start.y, self.start.w, self.start.h), 0.9


def _tiny_sequence(tmp_path: Path, frames: int = 8) -> Sequence:
    paths = []
    for i in range(frames):
        path = tmp_path / f"{i:04d}.jpg"
        cv2.imwrite(str(path), np.full((40, 60, 3), 100, np.uint8))
        paths.append(path)
    gt = np.array([[10.0 + i, 10, 20, 15] for i in range(frames)])
    gt[:2] = np.nan  # target absent at first: tracking starts on frame 2
    return Sequence("tiny", paths, gt)


def test_run_sequence_starts_on_first_valid_frame_and_survives_failures(tmp_path: Path) -> None:
    seq = _tiny_sequence(tmp_path)
    result = run_sequence(ScriptedTracker(fail_on={2}), seq)
    assert result.init_index == 2
    assert np.isnan(result.boxes[:2]).all() and np.isnan(result.times[:3]).all()
    np.testing.assert_array_equal(result.boxes[2], [12, 10, 20, 15])
    assert result.states[2] == TrackState.INITIALIZING and result.confidences[2] == 1.0
    assert np.isnan(result.boxes[4]).all() and result.failures == 1  # second update raised
    np.testing.assert_array_equal(result.boxes[5], [15, 10, 20, 15])  # and tracking went on
    assert result.updated_frames == 5  # frames 3..7, the failed one's time included
    assert result.fps == pytest.approx(5 / np.nansum(result.times))
    assert math.isfinite(result.times[4])
    assert result.fps <= 5 / (4 * 0.002)  # four updates slept 2 ms each


def test_run_benchmark_saves_resumes_and_reports(tmp_path: Path) -> None:
    seq = _tiny_sequence(tmp_path)
    made: list[ScriptedTracker] = []

    def factory(name: str) -> ScriptedTracker:
        made.append(ScriptedTracker())
        return made[-1]

    out = tmp_path / "out"
    results = run_benchmark(["a", "b"], [seq], out, tracker_factory=factory, progress=False)
    assert len(made) == 2 and set(results) == {"a", "b"}
    loaded = load_result(out / "results" / "a", "tiny", len(seq))
    assert loaded is not None and loaded.init_index == 2
    np.testing.assert_allclose(loaded.boxes, results["a"]["tiny"].boxes, atol=0.005, equal_nan=True)
    assert load_result(out / "results" / "a", "tiny", len(seq) + 1) is None  # wrong length: rerun

    run_benchmark(["a", "b"], [seq], out, tracker_factory=factory, progress=False)
    assert len(made) == 2  # resumed: no new tracker made
    run_benchmark(["a"], [seq], out, tracker_factory=factory, progress=False, resume=False)
    assert len(made) == 3

    summary = make_report(out, ["a", "b"], [seq])
    a = summary["trackers"]["a"]
    # Ground truth moves 1 px a frame and so does the tracker: perfect on the 6 scored frames.
    assert a["auc"] == pytest.approx(20 / 21) and a["precision"] == 1.0 and a["norm_precision"] == 1.0
    assert math.isfinite(a["fps"]) and a["sequences"]["tiny"]["fps"] == pytest.approx(a["fps"])
    assert json.loads((out / "summary.json").read_text()) == summary
