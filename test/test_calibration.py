"""Confidence calibration and LOST measures: hand-computed ECE, AUROC against a pairwise count,
the frames they are taken on, and the state files that make them survive a resumed run."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vtrack_core.boxes import Box
from vtrack_core.eval import calibration as cal
from vtrack_core.eval.datasets import Sequence
from vtrack_core.eval.report import format_calibration_table, make_report
from vtrack_core.eval.runner import NO_STATE, SequenceResult, load_result, result_files, run_benchmark, save_result
from vtrack_core.tracker import Tracker, TrackState

T, U, L, I = (int(s) for s in (TrackState.TRACKING, TrackState.UNCERTAIN, TrackState.LOST, TrackState.INITIALIZING))


# --- reliability and ECE ------------------------------------------------------------------
# Eight frames in 10 bins, by hand:
#   bin 0: 0.05 off                           1 frame,  confidence 0.05,   on target 0    gap 0.05
#   bin 1: 0.15 on, 0.15 off                  2 frames, confidence 0.15,   on target 0.5  gap 0.35
#   bin 5: 0.55 on                            1 frame,  confidence 0.55,   on target 1    gap 0.45
#   bin 9: 0.95 on, 0.95 on, 0.95 off, 1.0 on 4 frames, confidence 0.9625, on target 0.75 gap 0.2125
#   ECE = (1 * 0.05 + 2 * 0.35 + 1 * 0.45 + 4 * 0.2125) / 8 = 2.05 / 8
CONF = np.array([0.05, 0.15, 0.15, 0.55, 0.95, 0.95, 0.95, 1.0])
ON = np.array([False, True, False, True, True, True, False, True])


def test_reliability_diagram_by_hand() -> None:
    diagram = cal.reliability(CONF, ON)
    np.testing.assert_allclose(diagram.edges, np.linspace(0, 1, 11))
    np.testing.assert_array_equal(diagram.frames, [1, 2, 0, 0, 0, 1, 0, 0, 0, 4])
    filled = diagram.frames > 0
    np.testing.assert_allclose(diagram.confidence[filled], [0.05, 0.15, 0.55, 0.9625])
    np.testing.assert_allclose(diagram.on_target[filled], [0.0, 0.5, 1.0, 0.75])
    assert np.isnan(diagram.confidence[~filled]).all() and np.isnan(diagram.on_target[~filled]).all()


def test_ece_by_hand_and_empty_bins_weigh_nothing() -> None:
    assert cal.expected_calibration_error(CONF, ON) == pytest.approx(2.05 / 8, abs=1e-12)
    # Two bins: [0, 0.5) holds 0.05, 0.15, 0.15 (confidence 0.35/3, on target 1/3), [0.5, 1] the rest
    # (confidence 4.4/5, on target 4/5).
    two = (3 * abs(1 / 3 - 0.35 / 3) + 5 * abs(4 / 5 - 4.4 / 5)) / 8
    assert cal.expected_calibration_error(CONF, ON, bins=2) == pytest.approx(two, abs=1e-12)
    assert cal.expected_calibration_error(np.full(4, 0.75), np.array([1, 1, 1, 0], bool)) == pytest.approx(0.0)
    assert cal.expected_calibration_error(np.ones(3), np.zeros(3, bool)) == 1.0  # sure and always wrong
    assert math.isnan(cal.expected_calibration_error(np.zeros(0), np.zeros(0, bool)))


def test_bins_hold_their_lower_edge_and_one_goes_in_the_last() -> None:
    np.testing.assert_array_equal(cal.bin_index(np.array([0.0, 0.0999, 0.1, 0.5, 0.9999, 1.0])), [0, 0, 1, 5, 9, 9])
    with pytest.raises(ValueError, match="NaN"):
        cal.reliability(np.array([0.5, np.nan]), np.array([True, False]))
    with pytest.raises(ValueError, match="2 confidences for 3 labels"):
        cal.expected_calibration_error(np.zeros(2), np.zeros(3, bool))


# --- AUROC --------------------------------------------------------------------------------
def _pairwise_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The definition: over every (positive, negative) pair, 1 if the positive scores higher, 1/2 on a tie."""
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_the_pairwise_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    positive = rng.random(n) < rng.uniform(0.1, 0.9)
    positive[:2] = [True, False]
    scores = np.clip(rng.normal(0.5 + 0.2 * positive, 0.25), 0, 1)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    assert cal.auroc(scores, positive) == pytest.approx(_pairwise_auroc(scores, positive), abs=1e-12)


def test_auroc_edge_cases() -> None:
    assert cal.auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert cal.auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0], bool)) == 0.0
    assert cal.auroc(np.full(5, 0.7), np.array([1, 0, 1, 0, 0], bool)) == 0.5  # a constant says nothing
    assert math.isnan(cal.auroc(np.array([0.2, 0.9]), np.array([True, True])))  # all one class
    assert math.isnan(cal.auroc(np.array([0.2, 0.9]), np.array([False, False])))
    assert math.isnan(cal.auroc(np.zeros(0), np.zeros(0, bool)))


def test_auroc_of_a_long_run_is_the_known_value_in_well_under_a_second() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(200_000), 3)
    positive = rng.random(200_000) < scores
    began = time.perf_counter()
    value = cal.auroc(scores, positive)
    assert time.perf_counter() - began < 1.0  # ranks, not 10^10 pairs
    assert value == pytest.approx(5 / 6, abs=0.01)  # P(s_pos > s_neg) for uniform s, P(pos | s) = s


def test_share_in_leaves_out_frames_without_a_state() -> None:
    assert cal.share_in(np.array([L, U, T, T, NO_STATE]), cal.FLAGGED_STATES) == 0.5
    assert cal.share_in(np.array([L, U, T, T]), [L]) == 0.25
    assert math.isnan(cal.share_in(np.array([NO_STATE, NO_STATE]), [L]))
    assert math.isnan(cal.share_in(np.zeros(0), [L]))


# --- the frames a result is judged on -----------------------------------------------------
NAN4 = [np.nan] * 4
BOX = [10.0, 10.0, 20.0, 20.0]
HALF = [20.0, 10.0, 20.0, 20.0]  # IoU with BOX: 200 / 600 = 1/3
#           0 (pre-init)  1 (init)  2 on     3 off     4 absent  5 absent  6 failed  7 zero-size 8 on
GT = np.array([BOX,        BOX,      BOX,     BOX,      NAN4,     NAN4,     BOX,      [5, 5, 0, 0], BOX])
PRED = np.array([NAN4,     BOX,      BOX,     HALF,     BOX,      BOX,      NAN4,     BOX,         [11, 10, 20, 20]])
CONFS = np.array([np.nan,  1.0,      0.9,     0.8,      0.7,      0.2,      np.nan,   0.5,         0.6])
STATES = np.array([NO_STATE, I,      T,       T,        T,        L,        NO_STATE, U,           L])


def test_calibration_frames_pick_present_and_absent_frames_after_init() -> None:
    frames = cal.calibration_frames(PRED, CONFS, STATES, GT, init_index=1)
    np.testing.assert_array_equal(frames.confidence, [0.9, 0.8, 0.6])  # frames 2, 3, 8
    np.testing.assert_array_equal(frames.on_target, [True, False, True])  # IoU 1, 1/3, 19*20/(21*20)
    np.testing.assert_array_equal(frames.present_states, [T, T, NO_STATE, L])  # 2, 3, 6, 8
    np.testing.assert_array_equal(frames.absent_states, [T, L])
    np.testing.assert_array_equal(frames.absent_confidence, [0.7, 0.2])

    summary = cal.calibration_summary(frames)
    assert summary["frames"] == 3 and summary["on_target"] == 2 and summary["absent_frames"] == 2
    assert summary["absent_flagged"] == 0.5 and summary["absent_lost"] == 0.5
    assert summary["present_lost"] == pytest.approx(1 / 3)  # the failed frame has no state to count
    assert summary["auroc"] == 0.5  # on-target 0.9 and 0.6 around the off-target 0.8
    # bins: 0.6 on (gap 0.4), 0.8 off (gap 0.8), 0.9 on (gap 0.1)
    assert summary["ece"] == pytest.approx((0.4 + 0.8 + 0.1) / 3)
    assert summary["absent_mean_confidence"] == pytest.approx(0.45)
    assert sum(summary["reliability"]["frames"]) == 3
    assert "note" not in summary
    json.dumps(summary, allow_nan=False)  # JSON-safe: undefined values are None


def test_later_init_leaves_more_frames_out() -> None:
    frames = cal.calibration_frames(PRED, CONFS, STATES, GT, init_index=4)
    np.testing.assert_array_equal(frames.confidence, [0.6])
    np.testing.assert_array_equal(frames.absent_states, [L])
    never = cal.calibration_frames(PRED, CONFS, STATES, GT, init_index=None)
    assert len(never.confidence) == 0 and len(never.absent_states) == 0


def test_summary_edge_cases_are_undefined_not_zero() -> None:
    keep = [0, 1, 2, 3, 8]  # no absent frames
    frames = cal.calibration_frames(PRED[keep], CONFS[keep], STATES[keep], GT[keep], init_index=1)
    summary = cal.calibration_summary(frames)
    assert summary["absent_frames"] == 0
    assert summary["absent_flagged"] is None and summary["absent_lost"] is None
    assert summary["absent_mean_confidence"] is None
    assert summary["present_lost"] == pytest.approx(1 / 3)

    on_only = cal.calibration_frames(GT[[1, 2, 8]], np.array([1.0, 0.9, 0.9]), np.array([I, T, T]),
                                     GT[[1, 2, 8]], init_index=0)
    summary = cal.calibration_summary(on_only)
    assert summary["auroc"] is None  # one class: no ranking to judge
    assert summary["ece"] == pytest.approx(0.1)
    assert summary["reliability"]["confidence"][:9] == [None] * 9  # empty bins are null, not 0

    nothing = cal.calibration_summary(cal.calibration_frames(PRED[:2], CONFS[:2], STATES[:2], GT[:2], 1))
    assert nothing["frames"] == 0 and nothing["ece"] is None and nothing["auroc"] is None
    assert nothing["present_lost"] is None and nothing["mean_confidence"] is None


def test_without_saved_states_the_state_measures_are_undefined_with_a_note() -> None:
    frames = cal.calibration_frames(PRED, CONFS, np.full(len(GT), NO_STATE), GT, 1, states_saved=False)
    summary = cal.calibration_summary(frames)
    assert summary["absent_flagged"] is None and summary["present_lost"] is None and summary["absent_lost"] is None
    assert summary["ece"] == pytest.approx((0.4 + 0.8 + 0.1) / 3)  # confidence was saved all along
    assert "no state file" in summary["note"]
    pooled = cal.CalibrationFrames.pool([("new", cal.calibration_frames(PRED, CONFS, STATES, GT, 1)), ("old", frames)])
    assert len(pooled.confidence) == 6 and not pooled.states_saved and pooled.missing_states == ("old",)
    assert "no state file for old" in cal.calibration_summary(pooled)["note"]


# --- state files, resume and the report ---------------------------------------------------
class ScriptedTracker(Tracker):
    """Stays on its init box with a confidence that falls each frame, so the LostRule (0.5,
    5 frames) goes TRACKING -> UNCERTAIN -> LOST."""

    name = "scripted"

    def _init(self, image: np.ndarray, box: Box) -> None:
        self.start, self.calls = box, 0

    def _update(self, image: np.ndarray) -> tuple[Box, float]:
        self.calls += 1
        return self.start, max(1.0 - 0.1 * self.calls, 0.0)


def _still_sequence(tmp_path: Path, frames: int = 14) -> Sequence:
    """A still target, absent (NaN) on the last four frames."""
    paths = []
    for i in range(frames):
        path = tmp_path / f"{i:04d}.png"
        cv2.imwrite(str(path), np.full((40, 60, 3), 90, np.uint8))
        paths.append(path)
    gt = np.array([[10.0, 10, 20, 15]] * frames)
    gt[-4:] = np.nan
    return Sequence("still", paths, gt)


def test_states_are_saved_resumed_and_reported(tmp_path: Path) -> None:
    seq = _still_sequence(tmp_path)
    out = tmp_path / "out"
    results = run_benchmark(["a"], [seq], out, tracker_factory=lambda name: ScriptedTracker(), progress=False)
    states = results["a"]["still"].states
    # confidence 0.9 .. 0.5 TRACKING (frames 1-5), 0.4 .. 0.0 UNCERTAIN for 4 frames, then LOST.
    expected = [I] + [T] * 5 + [U] * 4 + [L] * 4
    np.testing.assert_array_equal(states, expected)
    lines = (out / "results" / "a" / "still_state.txt").read_text().split()
    assert lines == [str(s) for s in expected]
    loaded = load_result(out / "results" / "a", "still", len(seq))
    assert loaded is not None and loaded.states_saved
    np.testing.assert_array_equal(loaded.states, expected)

    summary = make_report(out, ["a"], [seq])
    block = summary["trackers"]["a"]["calibration"]
    assert block == summary["trackers"]["a"]["sequences"]["still"]["calibration"]  # one sequence
    assert block["absent_frames"] == 4 and block["absent_flagged"] == 1.0 and block["absent_lost"] == 1.0
    assert block["present_lost"] == 0.0  # 9 present frames after init, none LOST
    assert block["frames"] == 9 and block["on_target"] == 9 and block["auroc"] is None
    assert block["ece"] == pytest.approx(np.mean(1 - np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])))
    assert (out / "reliability.png").is_file() and cv2.imread(str(out / "reliability.png")) is not None
    table = format_calibration_table(summary)
    assert "ECE" in table and "abs-LU" in table and "1.000" in table

    # A resumed run reads the same states back: the same summary.
    run_benchmark(["a"], [seq], out, tracker_factory=lambda name: pytest.fail("resumed, not rerun"), progress=False)
    assert make_report(out, ["a"], [seq]) == summary


def test_raw_scores_are_saved_and_give_the_ece_before_calibration(tmp_path: Path) -> None:
    """A calibrated tracker's run keeps its raw scores beside the calibrated confidences, so
    one eval reports the ECE before and after on the same frames; an uncalibrated one's are
    the same numbers; a folder without the file (older runs) reports it undefined."""
    from vtrack_core import calibration as score_calibration

    seq = _still_sequence(tmp_path)
    lift = score_calibration.Calibration(tmp_path / "lift.json", score_calibration.ScoreMap("logistic", a=1.0, b=1.0),
                                         {}, {})

    def calibrated(name: str) -> Tracker:
        tracker = ScriptedTracker()
        tracker.calibration = lift  # sigmoid(logit(raw) + 1): above the raw score
        return tracker

    out = tmp_path / "out"
    run_benchmark(["lifted"], [seq], out, tracker_factory=calibrated, progress=False)
    loaded = load_result(out / "results" / "lifted", "still", len(seq))
    raw = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])  # the 9 present frames after init
    np.testing.assert_allclose(loaded.raw_confidences[1:10], raw, atol=1e-4)
    np.testing.assert_allclose(loaded.confidences[1:10], [lift(r) for r in raw], atol=1e-4)
    block = make_report(out, ["lifted"], [seq])["trackers"]["lifted"]["calibration"]
    assert block["ece_raw"] == pytest.approx(np.mean(1 - raw), abs=1e-4)  # every frame on target
    assert block["ece"] == pytest.approx(np.mean([1 - lift(r) for r in raw]), abs=1e-4)
    assert block["ece"] < block["ece_raw"]
    assert "ECE raw" in format_calibration_table(make_report(out, ["lifted"], [seq]))

    run_benchmark(["plain"], [seq], out, tracker_factory=lambda name: ScriptedTracker(), progress=False)
    plain = make_report(out, ["plain"], [seq])["trackers"]["plain"]["calibration"]
    assert plain["ece_raw"] == plain["ece"]
    result_files(out / "results" / "plain", "still")["raw_confidences"].unlink()  # a folder from before
    older = make_report(out, ["plain"], [seq])["trackers"]["plain"]["calibration"]
    assert older["ece_raw"] is None and older["ece"] == plain["ece"]


def test_result_folders_without_state_files_stay_readable(tmp_path: Path) -> None:
    seq = _still_sequence(tmp_path)
    out = tmp_path / "out"
    run_benchmark(["a"], [seq], out, tracker_factory=lambda name: ScriptedTracker(), progress=False)
    files = result_files(out / "results" / "a", "still")
    before = make_report(out, ["a"], [seq])
    files["states"].unlink()  # as a folder written before states were saved

    loaded = load_result(out / "results" / "a", "still", len(seq))
    assert loaded is not None and not loaded.states_saved and (loaded.states == NO_STATE).all()
    summary = make_report(out, ["a"], [seq])
    block = summary["trackers"]["a"]["calibration"]
    assert block["absent_flagged"] is None and block["present_lost"] is None
    assert block["ece"] == before["trackers"]["a"]["calibration"]["ece"]
    assert "no state file" in block["note"]
    assert summary["trackers"]["a"]["auc"] == before["trackers"]["a"]["auc"]
    assert "no state file" in format_calibration_table(summary)


def test_a_state_file_of_the_wrong_length_means_rerun(tmp_path: Path) -> None:
    result = SequenceResult(boxes=np.zeros((3, 4)), times=np.zeros(3), confidences=np.ones(3),
                            states=np.array([I, T, T]), init_index=0)
    save_result(result, tmp_path, "s")
    assert load_result(tmp_path, "s", 3) is not None
    result_files(tmp_path, "s")["states"].write_text("0\n1\n")
    assert load_result(tmp_path, "s", 3) is None
