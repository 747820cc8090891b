"""MultiTargetTracker and StampedRing: the node's logic, on real frames, without ROS."""
import numpy as np
import pytest

from vtrack_core import Box, InvalidInputError, TrackState, UnknownTrackerError, create_tracker
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.session import MultiTargetTracker, StampedRing, TargetError
from vtrack_core.tracker import Tracker


@pytest.fixture(scope="module")
def couple(dev_dataset_dir):
    sequence = load_dataset(dev_dataset_dir, names=["Couple"])[0]
    return [sequence.image(i) for i in range(30)], sequence.ground_truth


def test_ring_keeps_the_newest_and_finds_by_stamp():
    ring = StampedRing[str](3)
    assert ring.latest() is None and ring.from_stamp(1) is None
    for stamp in (10, 20, 30, 40):
        ring.append(stamp, f"f{stamp}")
    assert len(ring) == 3 and ring.latest() == (40, "f40")
    assert ring.from_stamp(30) == [(30, "f30"), (40, "f40")]
    assert ring.from_stamp(10) is None  # fell out
    assert ring.stamp_range() == (20, 40)


def test_start_catches_up_and_update_skips_seen_frames(couple):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="csrt")
    frames = [(i, images[i]) for i in range(0, 10)]
    report = targets.start(frames, Box.from_xywh(gt[0]))
    assert report.target_id == "target_1" and report.tracker_name == "csrt"
    assert report.result.state == TrackState.TRACKING  # 9 catch-up updates ran
    caught_up = report.result.box
    # Frame 9 was already seen during the catch-up: not tracked twice.
    (same,) = targets.update(9, images[9])
    assert same.result.box == caught_up
    (next_report,) = targets.update(10, images[10])
    assert next_report.result.box.iou(Box.from_xywh(gt[10])) > 0.5


def test_limits_ids_and_refusals(couple):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="kcf", max_targets=2)
    frame = [(0, images[0])]
    a = targets.start(frame, Box.from_xywh(gt[0]))
    b = targets.start(frame, Box(150, 60, 30, 30), target_id="mine", tracker_name="csrt")
    assert (a.target_id, b.target_id, b.tracker_name) == ("target_1", "mine", "csrt")
    with pytest.raises(TargetError, match="max_targets=2"):
        targets.start(frame, Box(10, 10, 30, 30))
    targets.start(frame, Box(12, 12, 30, 30), target_id="mine")  # re-init is allowed at the limit
    with pytest.raises(InvalidInputError):
        targets.start(frame, Box(np.nan, 1, 2, 3), target_id="mine")
    with pytest.raises(UnknownTrackerError):
        targets.start(frame, Box(1, 1, 20, 20), target_id="mine", tracker_name="nope")
    assert sorted(targets.target_ids()) == ["mine", "target_1"]  # refusals changed nothing
    with pytest.raises(TargetError, match="unknown target id 'ghost'"):
        targets.stop("ghost")
    assert targets.stop("mine") == ["mine"]
    assert targets.stop() == ["target_1"] and targets.target_ids() == []


class _ExplodingTracker(Tracker):
    name = "exploding"

    def _init(self, image, box):
        pass

    def _update(self, image):
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_failing_tracker_only_loses_its_own_target(couple):
    images, gt = couple

    def factory(name):
        return _ExplodingTracker() if name == "exploding" else create_tracker(name)

    targets = MultiTargetTracker(factory, default_tracker="csrt")
    good = targets.start([(0, images[0])], Box.from_xywh(gt[0])).target_id
    bad = targets.start([(0, images[0])], Box(150, 60, 30, 30), tracker_name="exploding").target_id
    first = {r.target_id: r for r in targets.update(1, images[1])}
    second = {r.target_id: r for r in targets.update(2, images[2])}
    assert first[bad].result.state == TrackState.LOST and "out of memory" in first[bad].error
    assert second[bad].error is None  # reported once
    assert second[bad].result.box == Box(150, 60, 30, 30)
    assert second[good].result.state == TrackState.TRACKING
