"""MultiTargetTracker and StampedRing for the node in the field (issue 21), on real frames
without ROS: a clock that steps back, image size changes, a buffer bounded by bytes, and
a start in steps (what the node's worker interleaves with live frames)."""
import cv2
import numpy as np
import pytest

from vtrack_core import Box, InvalidInputError, TrackState, create_tracker
from vtrack_core.eval.datasets import load_dataset
from vtrack_core.session import MultiTargetTracker, StampedRing, TargetError
from vtrack_core.tracker import check_init_box


@pytest.fixture(scope="module")
def couple(dev_dataset_dir):
    sequence = load_dataset(dev_dataset_dir, names=["Couple"])[0]
    return [sequence.image(i) for i in range(40)], sequence.ground_truth


def test_ring_bounded_by_bytes_keeps_the_newest():
    ring = StampedRing[str](30, max_bytes=1000)
    for stamp in range(10):
        ring.append(stamp, f"f{stamp}", 300)
    assert len(ring) == 3 and ring.nbytes == 900 and ring.stamp_range() == (7, 9)
    ring.append(10, "huge", 5000)  # larger than the bound: it alone stays
    assert len(ring) == 1 and ring.latest() == (10, "huge")
    ring.clear()
    assert len(ring) == 0 and ring.nbytes == 0 and ring.latest() is None


def test_restart_clock_lets_targets_take_older_stamps(couple):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="csrt")
    targets.start([(100, images[0])], Box.from_xywh(gt[0]))
    (before,) = targets.update(101, images[1])
    (frozen,) = targets.update(5, images[2])  # older stamp: skipped, as a repeat would be
    assert frozen.result is before.result
    targets.restart_clock()
    (moved,) = targets.update(5, images[2])
    assert moved.result is not before.result and moved.result.box.iou(Box.from_xywh(gt[2])) > 0.5


def test_a_start_in_steps_across_a_clock_step(couple):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="csrt")
    name, tracker = targets.prepare("a")
    starting = targets.begin(name, tracker, "a", 100, images[0], Box.from_xywh(gt[0]))
    for stamp in (101, 102):
        targets.catch_up(starting, stamp, images[stamp - 100])
    targets.restart_clock()  # meanwhile the live stream stepped back
    report = targets.finish(starting)
    assert report.target_id == "a" and starting.frames_caught_up == 2
    (live,) = targets.update(3, images[3])  # the new timeline is taken at once
    assert live.result.box.iou(Box.from_xywh(gt[3])) > 0.5


@pytest.mark.parametrize("policy", ["rescale", "lose"])
def test_image_size_changes(couple, policy):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="csrt", on_resolution_change=policy)
    targets.start([(0, images[0])], Box.from_xywh(gt[0]))
    for index in range(1, 5):
        targets.update(index, images[index])
    big = cv2.resize(images[5], (640, 480))
    (report,) = targets.update(5, big)
    assert "image size changed from 320x240 to 640x480" in report.note
    expected = Box.from_xywh(np.asarray(gt[5]) * 2)
    if policy == "rescale":
        assert report.result.state != TrackState.LOST and report.result.box.iou(expected) > 0.4
        (back,) = targets.update(6, images[6])  # and back to 320x240
        assert back.result.box.iou(Box.from_xywh(gt[6])) > 0.4
    else:
        assert report.result.state == TrackState.LOST and report.note.startswith("LOST")
        assert report.result.box.iou(expected) > 0.3  # the last box, in the new pixels
        (later,) = targets.update(6, images[6])  # back to 320x240: still LOST, the box follows
        assert later.result.state == TrackState.LOST
        assert later.result.box == Box(*(v / 2 for v in report.result.box.xywh()))


def test_an_aspect_change_is_not_a_binning(couple):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="csrt")
    targets.start([(0, images[0])], Box.from_xywh(gt[0]))
    (report,) = targets.update(1, cv2.resize(images[1], (640, 240)))
    assert report.result.state == TrackState.LOST and "aspect ratio changed" in report.note


def test_a_catch_up_across_a_size_change_under_lose_is_refused(couple):
    images, gt = couple
    targets = MultiTargetTracker(create_tracker, default_tracker="csrt", on_resolution_change="lose")
    with pytest.raises(TargetError, match="start on a newer image"):
        targets.start([(0, images[0]), (1, cv2.resize(images[1], (640, 480)))], Box.from_xywh(gt[0]))
    assert targets.target_ids() == []


@pytest.mark.parametrize("box, message", [
    (Box(0, 0, 1e30, 1e30), "lies inside"),
    (Box(-1e30, 50, 2e30, 40), "lies inside"),
    (Box(300, 220, 100, 100), "lies inside"),
    (Box(100, 100, 1, 1), "too small"),
])
def test_init_boxes_mostly_outside_or_tiny_are_refused(box, message):
    with pytest.raises(InvalidInputError, match=message):
        check_init_box(box, (240, 320, 3))


def test_min_side_and_clipping():
    with pytest.raises(InvalidInputError, match="at least 8 x 8"):
        check_init_box(Box(10, 10, 6, 40), (240, 320, 3), min_side=8)
    assert check_init_box(Box(260, 160, 100, 120), (240, 320, 3), min_side=8) == Box(260, 160, 60, 80)
