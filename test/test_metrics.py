"""Metrics: hand-computed cases, and agreement with the got10k toolkit on real ground truth."""
from __future__ import annotations

import inspect
import math
import time

import numpy as np
import pytest

from vtrack_core.eval import metrics
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.eval.report import SequenceEvaluation, overall

NAN4 = [np.nan] * 4

# Five frames, worked out by hand:
#   0: exact box                    IoU 1,    centre error 0,  normalized 0
#   1: shifted 5 px on a 10 px box  IoU 1/3,  centre error 5,  normalized 0.5
#   2: ground truth absent (NaN)    skipped
#   3: tracker gave nothing (NaN)   failure on every threshold
#   4: 30 px right, 40 px down      IoU 0,    centre error 50, normalized sqrt(1.5**2 + 1)
GT = np.array([[0, 0, 10, 10], [0, 0, 10, 10], NAN4, [0, 0, 10, 10], [100, 100, 20, 40]], dtype=float)
PRED = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [1, 2, 3, 4], NAN4, [130, 140, 20, 40]], dtype=float)


def test_success_curve_by_hand() -> None:
    curve = metrics.success_curve(PRED, GT)
    # 4 scored frames; IoU > t: frame 0 for t < 1, frame 1 for t in 0 .. 0.30 (7 thresholds).
    expected = np.array([2 / 4] * 7 + [1 / 4] * 13 + [0.0])
    np.testing.assert_array_equal(metrics.IOU_THRESHOLDS, np.linspace(0, 1, 21))
    np.testing.assert_allclose(curve, expected, rtol=0, atol=1e-15)
    assert metrics.auc(curve) == pytest.approx((7 * 0.5 + 13 * 0.25) / 21, abs=1e-15)


def test_precision_curve_by_hand() -> None:
    curve = metrics.precision_curve(PRED, GT)
    assert len(curve) == 51
    expected = np.array([0.25] * 5 + [0.5] * 45 + [0.75])  # errors 0, 5, 50 and a failure
    np.testing.assert_allclose(curve, expected, rtol=0, atol=1e-15)
    assert metrics.precision(PRED, GT) == 0.5


def test_normalized_precision_by_hand() -> None:
    curve = metrics.normalized_precision_curve(PRED, GT)
    np.testing.assert_allclose(metrics.NORM_CENTER_ERROR_THRESHOLDS, np.linspace(0, 0.5, 51), atol=1e-15)
    expected = np.array([0.25] * 50 + [0.5])  # errors 0, 0.5, 1.80 and a failure
    np.testing.assert_allclose(curve, expected, rtol=0, atol=1e-15)
    assert metrics.normalized_precision(PRED, GT) == 0.25


def test_score_bundles_everything() -> None:
    s = metrics.score(PRED, GT)
    assert s.scored_frames == 4
    assert s.auc == pytest.approx(6.75 / 21)
    assert (s.precision, s.norm_precision) == (0.5, 0.25)
    # GOT-10k: frame 0 left out, frame 2 absent, frame 3 missing = 0: IoUs 1/3, 0, 0.
    assert s.overlap_frames == 3
    assert s.average_overlap == pytest.approx(1 / 9)
    assert (s.success_rate_50, s.success_rate_75) == (0.0, 0.0)
    exact = metrics.score(GT[[0, 1, 4]], GT[[0, 1, 4]])
    assert (exact.average_overlap, exact.success_rate_50, exact.success_rate_75) == (1.0, 1.0, 1.0)


def test_nan_ground_truth_is_skipped_not_failed() -> None:
    gt = np.array([[0, 0, 10, 10], NAN4, NAN4], dtype=float)
    pred = np.array([[0, 0, 10, 10], [50, 50, 10, 10], NAN4], dtype=float)
    assert metrics.precision(pred, gt) == 1.0
    assert metrics.auc(metrics.success_curve(pred, gt)) == pytest.approx(20 / 21)


def test_nan_prediction_is_a_failure() -> None:
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    pred = gt.copy()
    pred[1:] = np.nan
    assert metrics.precision(pred, gt) == 0.25
    np.testing.assert_allclose(metrics.success_curve(pred, gt)[:-1], 0.25)
    assert metrics.normalized_precision(pred, gt) == 0.25


def test_zero_size_ground_truth_is_skipped() -> None:
    gt = np.array([[0, 0, 10, 10], [5, 5, 0, 0]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [5, 5, 10, 10]], dtype=float)
    assert metrics.normalized_precision(pred, gt) == 1.0
    assert metrics.score(pred, gt).scored_frames == 1


def test_thresholds_are_strict_for_iou_and_inclusive_for_error() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 20]], dtype=float)  # IoU exactly 0.5, centre error exactly 5
    curve = metrics.success_curve(pred, gt)
    assert curve[9] == 1.0 and curve[10] == 0.0  # 0.45 passes, 0.5 does not (IoU > t)
    assert metrics.precision_curve(pred, gt)[5] == 1.0  # 5 px counts at 5 (error <= t)
    assert metrics.precision_curve(pred, gt)[4] == 0.0


def test_no_scorable_frame_gives_nan() -> None:
    gt = np.full((3, 4), np.nan)
    s = metrics.score(np.zeros((3, 4)), gt)
    assert math.isnan(s.auc) and math.isnan(s.precision) and math.isnan(s.norm_precision)
    assert s.scored_frames == 0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 predicted boxes for 3"):
        metrics.success_curve(np.zeros((2, 4)), np.zeros((3, 4)))


# --- agreement with got10k ---------------------------------------------------------------
DEV_SEQUENCES = ["Couple", "Crossing", "DragonBaby", "Football1", "Skiing"]


def _got10k_otb() -> object:
    """got10k's OTB experiment without its constructor (which would download OTB)."""
    try:
        from got10k.experiments.otb import ExperimentOTB
    except ImportError as error:  # got10k.experiments needs `six`, which got10k does not declare
        pytest.skip(f"got10k.experiments does not import: {error}")
    experiment = ExperimentOTB.__new__(ExperimentOTB)
    experiment.nbins_iou, experiment.nbins_ce = 21, 51  # the values its __init__ sets
    return experiment


def _jittered(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible tracker output: centre and size noise growing with the box, some drift-offs
    far from the target, and some frames without a box."""
    n = len(gt)
    centre = gt[:, :2] + gt[:, 2:] / 2 + rng.normal(0, 0.25, (n, 2)) * gt[:, 2:]
    size = gt[:, 2:] * np.exp(rng.normal(0, 0.2, (n, 2)))
    pred = np.hstack([centre - size / 2, size])
    lost = rng.random(n) < 0.1
    pred[lost, :2] += rng.uniform(80, 200, (lost.sum(), 2))
    pred[rng.random(n) < 0.05] = np.nan
    return pred


@pytest.fixture(scope="module")
def jittered_dev(dev_dataset_dir) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    sequences = load_dataset(dev_dataset_dir, DEV_SEQUENCES)
    return [(s.name, s.ground_truth.copy(), _jittered(s.ground_truth, rng)) for s in sequences]


def test_iou_matches_got10k(jittered_dev) -> None:
    from got10k.utils.metrics import rect_iou

    from vtrack_core.boxes import iou

    for name, gt, pred in jittered_dev:
        with np.errstate(invalid="ignore"):
            theirs = rect_iou(pred.copy(), gt.copy())
        ours = iou(pred, gt)
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=name)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9, equal_nan=True, err_msg=name)


def test_curves_match_got10k_otb(jittered_dev) -> None:
    experiment = _got10k_otb()
    ours_auc, ours_prec, their_succ, their_prec = [], [], [], []
    for name, gt, pred in jittered_dev:
        with np.errstate(invalid="ignore"):
            ious, errors = experiment._calc_metrics(pred.copy(), gt.copy())
            succ, prec = experiment._calc_curves(ious, errors)
        assert 0.1 < np.mean(succ) < 0.9, "jitter should give a curve with something to compare"
        np.testing.assert_allclose(metrics.success_curve(pred, gt), succ, rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(metrics.precision_curve(pred, gt), prec, rtol=0, atol=1e-9, err_msg=name)
        s = metrics.score(pred, gt)
        assert s.auc == pytest.approx(np.mean(succ), abs=1e-9)
        assert s.precision == pytest.approx(prec[20], abs=1e-9)
        ours_auc.append(s.auc)
        ours_prec.append(s.precision)
        their_succ.append(succ)
        their_prec.append(prec)
    # got10k's overall score: the mean curve's mean / its value at 20 px; ours: mean over sequences.
    assert np.mean(ours_auc) == pytest.approx(np.mean(np.mean(their_succ, axis=0)), abs=1e-9)
    assert np.mean(ours_prec) == pytest.approx(np.mean(their_prec, axis=0)[20], abs=1e-9)


def test_report_overall_matches_got10k(jittered_dev) -> None:
    experiment = _got10k_otb()
    per_seq = {name: SequenceEvaluation(metrics.score(pred, gt), 1, 1.0) for name, gt, pred in jittered_dev}
    ours = overall(per_seq)
    curves = []
    for _, gt, pred in jittered_dev:
        with np.errstate(invalid="ignore"):
            curves.append(experiment._calc_curves(*experiment._calc_metrics(pred.copy(), gt.copy())))
    assert ours["auc"] == pytest.approx(np.mean([np.mean(c[0]) for c in curves]), abs=1e-9)
    assert ours["precision"] == pytest.approx(np.mean([c[1][20] for c in curves]), abs=1e-9)


def test_ao_and_success_rate_match_got10k(jittered_dev) -> None:
    """GOT-10k's report: per sequence the IoUs after the first frame (rect_iou), concatenated
    over sequences; AO is their mean and SR their fraction above 0.5. A missing box is
    IoU 0 for both toolkits here (got10k never sees one: its trackers must give a box)."""
    from got10k.experiments.got10k import ExperimentGOT10k
    from got10k.utils.metrics import rect_iou

    per_seq, theirs = {}, []
    for name, gt, pred in jittered_dev:
        with np.errstate(invalid="ignore"):
            ious = rect_iou(pred[1:].copy(), gt[1:].copy())
        theirs.append(np.nan_to_num(ious, nan=0.0))
        per_seq[name] = SequenceEvaluation(metrics.score(pred, gt), 1, 1.0)
    experiment = ExperimentGOT10k.__new__(ExperimentGOT10k)
    ao, sr, _, _ = experiment._evaluate(np.concatenate(theirs), np.array([]))
    ours = overall(per_seq)
    assert 0.1 < ao < 0.9
    assert ours["ao"] == pytest.approx(ao, abs=1e-9)
    assert ours["sr50"] == pytest.approx(sr, abs=1e-9)
    assert ours["sr75"] == pytest.approx(np.mean(np.concatenate(theirs) > 0.75), abs=1e-9)
    # Frame-weighted, not a mean of sequence means (the sequences differ in length).
    assert ours["ao"] != pytest.approx(np.mean([t.mean() for t in theirs]), abs=1e-6)


def test_nan_ground_truth_matches_got10k_on_the_annotated_frames(jittered_dev) -> None:
    """got10k scores every frame (OTB has no absent targets); ours skips absent ones, so the
    two agree when got10k is given only the frames whose ground truth exists."""
    experiment = _got10k_otb()
    rng = np.random.default_rng(7)
    for name, gt, pred in jittered_dev:
        gt = gt.copy()
        absent = rng.random(len(gt)) < 0.2
        gt[absent] = np.nan
        with np.errstate(invalid="ignore"):
            ious, errors = experiment._calc_metrics(pred[~absent].copy(), gt[~absent].copy())
            succ, prec = experiment._calc_curves(ious, errors)
        np.testing.assert_allclose(metrics.success_curve(pred, gt), succ, rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(metrics.precision_curve(pred, gt), prec, rtol=0, atol=1e-9, err_msg=name)


def test_metrics_have_no_per_frame_python_loop() -> None:
    """A 100k-frame track scores in well under a second (vectorised numpy)."""
    rng = np.random.default_rng(0)
    gt = np.abs(rng.normal(100, 20, (100_000, 4)))
    pred = gt + rng.normal(0, 5, gt.shape)
    began = time.perf_counter()
    metrics.score(pred, gt)
    assert time.perf_counter() - began < 1.0


def test_got10k_experiment_stub_is_what_its_constructor_sets() -> None:
    """Guard the stub above: ExperimentOTB.__init__ really uses 21 and 51 bins."""
    source = inspect.getsource(type(_got10k_otb()).__init__)
    assert "nbins_iou = 21" in source and "nbins_ce = 51" in source
