"""The FDN tracker with our packaged weights on real dev sequences (never used in training):
it follows targets, its confidence says when the target is gone, the loss-threshold update
spends fewer iterations than MDNet's fixed ten, and bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest

from vtrack_core import Box, create_tracker
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.eval.metrics import score
from vtrack_core.eval.runner import run_sequence
from vtrack_core.registry import tracker_config
from vtrack_core.tracker import InvalidInputError, NotInitializedError, TrackState
from vtrack_core.trackers.fdn import FDNTracker

DEFAULT_WEIGHTS = FDNTracker.default_weights()
from occlusion import target_painted_over

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="vtrack_core/weights/fdn.pt not trained yet")


@pytest.fixture(scope="module")
def crossing(dev_dataset_dir):
    return load_dataset(dev_dataset_dir, ["Crossing"])[0]


def test_registry_and_config():
    config = tracker_config("fdn", roi_method="pool", dynamic_update="false")
    assert config.roi_method == "pool" and config.dynamic_update is False
    assert config.score_threshold == 0.0 and config.loss_threshold == 0.01 and config.update_iterations == 10
    with pytest.raises(ValueError, match="roi_method"):
        create_tracker("fdn", roi_method="average")


def test_bad_input_is_refused(crossing):
    tracker = create_tracker("fdn", device="cpu")
    with pytest.raises(NotInitializedError):
        tracker.update(crossing.image(0))
    with pytest.raises(InvalidInputError):
        tracker.init(crossing.image(0), Box(float("nan"), 1, 10, 10))
    with pytest.raises(InvalidInputError):
        tracker.init(crossing.image(0), Box(5000, 5000, 20, 20))
    with pytest.raises(InvalidInputError):
        tracker.init(np.zeros((0, 0, 3), np.uint8), Box(1, 1, 10, 10))


@pytest.mark.slow
def test_tracks_crossing_and_updates_dynamically(crossing):
    """Crossing (120 frames): FDN follows the pedestrian; seeded, so the AUC is repeatable.
    With the paper's loss threshold, updates stop early; MDNet's rule always runs ten."""
    head = crossing.head(60)
    dynamic = FDNTracker(tracker_config("fdn", device="cpu"))
    result = run_sequence(dynamic, head, label="fdn")
    auc = score(result.boxes, head.ground_truth).auc
    assert auc > 0.55
    fixed = FDNTracker(tracker_config("fdn", device="cpu", dynamic_update=False))
    run_sequence(fixed, head, label="fdn-fixed")
    online_fixed = [u for u in fixed.updates if u.kind != "init"]
    assert online_fixed and all(u.iterations == 10 for u in online_fixed)
    assert fixed.update_iterations()["iterations"] == 10 * len(online_fixed)
    online = [u for u in dynamic.updates if u.kind != "init"]
    early = [u for u in online if u.iterations < 10]
    assert early and all(u.loss < 0.01 for u in early)  # stopped by the loss threshold, not otherwise
    assert all(u.kind == "short" and u.score <= 0.0 for u in online if u.kind != "long")
    assert dynamic.update_iterations()["mean_iterations"] < 10


@pytest.mark.slow
def test_confidence_falls_when_the_target_is_gone(crossing):
    """Initialised on the Crossing pedestrian; after five normal frames the pedestrian is
    painted over with the frame's mean colour (a full occlusion): the confidence drops
    below 0.5 within three frames and the track is reported LOST."""
    tracker = create_tracker("fdn", device="cpu")
    tracker.init(crossing.image(0), Box.from_xywh(crossing.ground_truth[0]))
    on_target = [tracker.update(crossing.image(i)).confidence for i in range(1, 6)]
    hidden = []
    for index in range(6, 16):
        hidden.append(tracker.update(target_painted_over(crossing, index)))
    assert np.mean(on_target) > 0.5
    assert all(r.confidence < 0.5 for r in hidden[2:])
    assert hidden[-1].state == TrackState.LOST


@pytest.mark.slow
def test_roi_pool_variant_tracks(crossing):
    head = crossing.head(30)
    tracker = create_tracker("fdn", device="cpu", roi_method="pool")
    result = run_sequence(tracker, head, label="fdn-pool")
    assert np.isfinite(result.boxes).all()
    assert score(result.boxes, head.ground_truth).auc > 0.3


def test_the_default_is_vgg16_with_its_packaged_weights_and_provenance():
    """The default trunk is ImageNet VGG-16 to conv4-3 (fdn_vgg16.pt: fc4-fc5 trained on 31
    domains); its provenance names the file's hash. `backbone: vggm` keeps fdn.pt."""
    import hashlib
    import json

    tracker = create_tracker("fdn", device="cpu")
    path = tracker.weights_path()
    assert tracker.config.backbone == "vgg16" and path.name == "fdn_vgg16.pt"
    provenance = json.loads(path.with_name("fdn_vgg16.provenance.json").read_text())
    assert provenance["weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance["backbone"] == "vgg16" and provenance["val_sequences"] == ["uav_person12_1", "uav_car10"]
    assert path.stat().st_size < 10 * 2 ** 20
    assert create_tracker("fdn", device="cpu", backbone="vggm").weights_path().name == "fdn.pt"


@pytest.mark.slow
def test_vggm_weights_still_track(crossing):
    head = crossing.head(30)
    result = run_sequence(create_tracker("fdn", device="cpu", backbone="vggm"), head, label="fdn-vggm")
    assert score(result.boxes, head.ground_truth).auc > 0.5


def _lost_elsewhere(tracker: FDNTracker, offset_sides: float, lost_frames: int = 3) -> None:
    """The state a lost tracker is in: its box `offset_sides` target sides to the right of
    the target, `lost_frames` LOST results behind it (what the LOST rule would hold)."""
    tracker.center = tracker.center + np.array([offset_sides * tracker.target_size.mean(), 0.0])
    tracker.lost_rule.lost, tracker.lost_rule.lost_frames = True, lost_frames


@pytest.mark.slow
def test_a_lost_fdn_finds_the_target_again_in_its_wide_region(crossing, tmp_path):
    """Issue 20: FDN LOST on a calibrated score (here an identity map fitted "for" the
    packaged weights) 4 target sides left of the pedestrian, on background, beyond its normal
    region (2 sides each way): the wide region finds him on the next frame, and after
    `recover_after_frames` passing frames he is TRACKING again. Without re-detection, or on
    a raw score's LOST (FDN's raw LOST is often on a target in view), the tracker stays where
    it was. LOST 4 sides to his right, on the other pedestrians, whose score is within
    `redetect_margin` of his, it stays too: the margin keeps it from jumping between look-alikes."""
    from vtrack_core import calibration as cal
    from vtrack_core.registry import tracker_class

    source = tracker_class("fdn").calibration_source(tracker_config("fdn"))
    identity = str(cal.write_calibration(tmp_path / "fdn.calibration.json", cal.ScoreMap("logistic", a=1.0, b=0.0),
                                         source.files, {"tracker": "fdn"}))

    def run(offset_sides: float, frames: int, **settings):
        tracker = create_tracker("fdn", device="cpu", **settings)
        tracker.init(crossing.image(0), Box.from_xywh(crossing.ground_truth[0]))
        _lost_elsewhere(tracker, offset_sides)
        results = [tracker.update(crossing.image(index)) for index in range(1, frames + 1)]
        return results, [r.box.iou(Box.from_xywh(crossing.ground_truth[i])) for i, r in enumerate(results, 1)]

    results, ious = run(-4.0, 5, calibration=identity)
    assert min(ious) > 0.5, ious  # found on the first frame, followed by the normal region after
    assert results[0].state == TrackState.LOST  # not yet claimed back ...
    assert results[-1].state == TrackState.TRACKING  # ... until recover_after_frames passed
    for settings in ({"calibration": identity, "redetect": False}, {"calibration": "none"}):
        results, ious = run(-4.0, 2, **settings)
        assert max(ious) < 0.1 and all(r.state == TrackState.LOST for r in results), (settings, ious)
    results, ious = run(4.0, 1, calibration=identity)
    assert ious[0] < 0.1 and results[0].state == TrackState.LOST, ious
