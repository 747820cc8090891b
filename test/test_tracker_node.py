"""The real tracker_node process, driven through ROS like a user would: real frames of a
dev sequence in, boxes out, bad requests refused with the node still serving."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")

from node_harness import NodeUnderTest, bgr_message, frame_stamp_ns, stamp_ns  # noqa: E402
from vtrack_core import Box, create_tracker  # noqa: E402
from vtrack_core.boxes import iou  # noqa: E402
from vtrack_core.eval.datasets import load_dataset  # noqa: E402
from vtrack_core.eval.metrics import score  # noqa: E402
from vtrack_core.eval.runner import run_sequence  # noqa: E402
from vtrack_ros.msg import TrackedObject  # noqa: E402
from vtrack_ros.srv import StopTarget  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def sequence(dev_dataset_dir):
    return load_dataset(dev_dataset_dir, names=["Couple"])[0]


@pytest.fixture
def tracker_node(tmp_path, request):
    args = getattr(request, "param", [])
    harness = NodeUnderTest(tmp_path / "tracker_node.log", node_args=list(args))
    yield harness
    harness.close()


def test_lockstep_auc_matches_offline_eval(tracker_node, sequence):
    """Through ROS, with the publisher waiting for each result, the node must track as the
    offline runner does: same frames, same tracker, AUC within 0.02."""
    images = [sequence.image(i) for i in range(len(sequence))]
    gt = sequence.ground_truth
    tracker_node.publish(images[0], frame_stamp_ns(0), wait=False)
    assert tracker_node.wait_for(lambda: tracker_node.results, 10.0), tracker_node.log()
    response = tracker_node.init(*gt[0], stamp=frame_stamp_ns(0), target_id="couple")
    assert response.success, response.message

    ros_boxes = np.full((len(images), 4), np.nan)
    ros_boxes[0] = gt[0]
    for index in range(1, len(images)):
        output = tracker_node.publish(images[index], frame_stamp_ns(index))
        assert output is not None, f"no result for frame {index}\n{tracker_node.log()}"
        assert output.header.frame_id == "camera"
        (obj,) = output.objects
        assert obj.target_id == "couple" and obj.tracker == "csrt"
        assert 0.0 <= obj.confidence <= 1.0
        ros_boxes[index] = (obj.x, obj.y, obj.width, obj.height)

    offline = run_sequence(create_tracker("csrt"), sequence)
    ros_auc = score(ros_boxes, gt).auc
    offline_auc = score(offline.boxes, gt).auc
    print(f"Couple csrt AUC through ROS {ros_auc:.4f}, offline {offline_auc:.4f}")
    assert abs(ros_auc - offline_auc) <= 0.02
    assert ros_auc > 0.3  # and it really tracked the couple
    assert tracker_node.alive()


def test_init_on_older_stamp_catches_up(tracker_node, sequence):
    """A box drawn on an older frame is applied to that frame, then the tracker catches up
    through the buffered newer frames."""
    gt = sequence.ground_truth
    for index in range(12):
        tracker_node.publish(sequence.image(index), frame_stamp_ns(index))
    response = tracker_node.init(*gt[4], stamp=frame_stamp_ns(4))
    assert response.success, response.message
    assert "caught up over 7 newer frame(s)" in response.message
    ious = []
    for index in range(12, 40):
        output = tracker_node.publish(sequence.image(index), frame_stamp_ns(index))
        (obj,) = output.objects
        ious.append(Box(obj.x, obj.y, obj.width, obj.height).iou(Box.from_xywh(gt[index])))
    assert np.mean(ious) > 0.4, ious


def test_several_targets_stop_and_reinit(tracker_node, sequence):
    gt = sequence.ground_truth
    tracker_node.publish(sequence.image(0), frame_stamp_ns(0))
    first = tracker_node.init(*gt[0])
    second = tracker_node.init(200, 100, 40, 50, tracker="kcf")
    assert first.success and second.success, (first.message, second.message)
    assert first.target_id != second.target_id

    output = tracker_node.publish(sequence.image(1), frame_stamp_ns(1))
    assert {o.target_id for o in output.objects} == {first.target_id, second.target_id}
    assert {o.tracker for o in output.objects} == {"csrt", "kcf"}

    stopped = tracker_node.stop(second.target_id)
    assert stopped.success, stopped.message
    output = tracker_node.publish(sequence.image(2), frame_stamp_ns(2))
    assert [o.target_id for o in output.objects] == [first.target_id]

    again = tracker_node.init(*gt[2], target_id=first.target_id)  # re-init keeps the id
    assert again.success and again.target_id == first.target_id
    output = tracker_node.publish(sequence.image(3), frame_stamp_ns(3))
    assert [o.target_id for o in output.objects] == [first.target_id]

    assert tracker_node.stop("").success  # all
    output = tracker_node.publish(sequence.image(4), frame_stamp_ns(4))
    assert list(output.objects) == []


def test_bad_requests_are_refused_and_the_node_keeps_serving(tracker_node, sequence):
    assert not tracker_node.init(10, 10, 20, 20).success  # no image yet
    tracker_node.publish(sequence.image(0), frame_stamp_ns(0))
    height, width = sequence.image(0).shape[:2]
    refused = {
        "NaN": tracker_node.init(math.nan, 10, 20, 20),
        "positive": tracker_node.init(10, 10, 0, 20),
        "outside": tracker_node.init(width + 50, height + 50, 20, 20),
        "unknown tracker": tracker_node.init(10, 10, 20, 20, tracker="no_such_tracker"),
        "no image with stamp": tracker_node.init(10, 10, 20, 20, stamp=frame_stamp_ns(999)),
    }
    for expected, response in refused.items():
        assert not response.success, expected
        assert expected in response.message, (expected, response.message)
    unknown_stop = tracker_node.stop("ghost")
    assert not unknown_stop.success and "unknown target id" in unknown_stop.message

    # Images the node cannot use are skipped and logged, never fatal.
    mono16 = bgr_message(sequence.image(1), frame_stamp_ns(1))
    mono16.encoding, mono16.step = "mono16", mono16.width * 2
    truncated = bgr_message(sequence.image(2), frame_stamp_ns(2))
    truncated.data = bytes(truncated.data[:100])
    weird = bgr_message(sequence.image(3), frame_stamp_ns(3))
    weird.encoding = "bayer_nonsense"
    for message, logged in ((mono16, "16-bit images (mono16) are not supported"), (truncated, "image data too short"),
                            (weird, "unknown image encoding 'bayer_nonsense'")):
        tracker_node.publish_message(message)
        assert tracker_node.wait_for(lambda: logged in tracker_node.log(), 10.0), tracker_node.log()

    # Still serving: a good request and a good frame work.
    ok = tracker_node.init(*sequence.ground_truth[0], stamp=frame_stamp_ns(0))
    assert ok.success, ok.message
    output = tracker_node.publish(sequence.image(4), frame_stamp_ns(4))
    assert output is not None and len(output.objects) == 1
    assert output.objects[0].state in (TrackedObject.STATE_TRACKING, TrackedObject.STATE_UNCERTAIN)
    assert tracker_node.alive()
    log = tracker_node.log()
    assert "init_target refused" in log and "image skipped" in log


@pytest.mark.parametrize("tracker_node", [["-p", "max_targets:=1"]], indirect=True)
def test_max_targets_and_parameter_changes(tracker_node, sequence):
    tracker_node.publish(sequence.image(0), frame_stamp_ns(0))
    assert tracker_node.init(*sequence.ground_truth[0]).success
    refused = tracker_node.init(10, 10, 30, 30)
    assert not refused.success and "max_targets=1" in refused.message

    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = tracker_node.node.create_client(SetParameters, "/tracker_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)

    def set_string(name, value):
        request = SetParameters.Request(parameters=[ParameterMsg(
            name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))])
        return tracker_node.call(client, request).results[0]

    bad_tracker = set_string("tracker", "no_such_tracker")
    assert not bad_tracker.successful and "unknown tracker" in bad_tracker.reason
    bad_device = set_string("device", "tpu")
    assert not bad_device.successful and "device" in bad_device.reason
    fixed = set_string("image_transport", "compressed")
    assert not fixed.successful  # read-only: needs a restart
    assert set_string("tracker", "kcf").successful
    assert tracker_node.stop().success
    assert tracker_node.init(*sequence.ground_truth[0]).success
    output = tracker_node.publish(sequence.image(1), frame_stamp_ns(1))
    assert [o.tracker for o in output.objects] == ["kcf"]
    assert tracker_node.alive()


@pytest.mark.parametrize("tracker_node", [["-p", "diagnostics_period:=0.2"]], indirect=True)
def test_latest_frame_wins_under_a_burst(tracker_node, sequence):
    """Frames arriving faster than tracking replace each other: the node drops, counts and
    never queues them, and results still come for the newest frames."""
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics = []
    tracker_node.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    tracker_node.publish(sequence.image(0), frame_stamp_ns(0))
    assert tracker_node.init(*sequence.ground_truth[0]).success
    images = [sequence.image(i) for i in range(1, 60)]
    for index, image in enumerate(images, start=1):
        tracker_node.publish(image, frame_stamp_ns(index), wait=False)
    last = frame_stamp_ns(len(images))
    assert tracker_node.wait_for(lambda: tracker_node.result_for(last) is not None, 20.0), tracker_node.log()
    stamps = [stamp_ns(m.header.stamp) for m in tracker_node.results]
    assert stamps == sorted(stamps)  # in order, never a stale frame after a newer one
    processed = len([s for s in stamps if s > frame_stamp_ns(0)])
    print(f"burst of {len(images)} frames: {processed} tracked, {len(images) - processed} dropped")

    # The node's own account must match what came out: every frame it received was either
    # tracked or counted as dropped, and the burst made it drop some (with a depth-1 DDS
    # queue DDS replaced them unseen and the node reported 0 dropped).
    def counts(message):
        return {kv.key: int(kv.value) for kv in message.status[0].values if kv.key.startswith("frames_")}

    def settled():  # >=: a result the test's best-effort subscription lost was still processed
        return any(counts(d)["frames_processed"] >= len(stamps) for d in diagnostics)

    assert tracker_node.wait_for(settled, 10.0), tracker_node.log()
    report = counts(next(d for d in diagnostics if counts(d)["frames_processed"] >= len(stamps)))
    print(f"node account: {report}")
    assert report["frames_received"] == report["frames_processed"] + report["frames_dropped"]
    assert report["frames_dropped"] >= 1


@pytest.fixture
def slow_siamfc_node(tmp_path):
    """tracker_node running SiamFC with the paper's three search crops a frame (100-200 ms a
    frame on these CPUs, several times a 30 Hz camera's period). Re-detection off: its wide
    search on LOST frames (Crossing's calibrated score is LOST on most frames) costs several
    normal frames each, which would make the tracked share depend on how often it fires."""
    settings = tmp_path / "trackers.yaml"
    settings.write_text("siamfc:\n  scale_mode: crops\n  redetect: false\n")
    harness = NodeUnderTest(tmp_path / "tracker_node.log", node_args=[
        "-p", "tracker:=siamfc", "-p", "diagnostics_period:=0.2", "-p", f"tracker_config_file:={settings}"])
    yield harness
    harness.close()


def test_camera_faster_than_tracker_reports_drops_and_still_tracks(slow_siamfc_node, dev_dataset_dir):
    """A camera that does not wait for the tracker: the node keeps only the newest frame,
    reports what it dropped, and the robot sees the last published box for a dropped frame,
    scored that way. A 30 Hz camera and SiamFC with three search crops a frame: frames are
    dropped on any CPU, at a rate the transport never loses. (CSRT needed a camera near 70 Hz
    to drop anything on an idle machine; at that rate the node's image callback lost most
    frames to deserialising them, and the test failed on luck.) Crossing: SiamFC's offline
    AUC 0.71."""
    tracker_node = slow_siamfc_node
    import time

    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics = []
    tracker_node.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    sequence = load_dataset(dev_dataset_dir, names=["Crossing"])[0]
    images = [sequence.image(i) for i in range(len(sequence))]
    gt = sequence.ground_truth
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success
    period = 1 / 30
    next_time = time.monotonic()
    for index in range(1, len(images)):
        tracker_node.publish(images[index], frame_stamp_ns(index), wait=False)
        next_time += period
        tracker_node.wait_for(lambda: time.monotonic() >= next_time, 1.0)
    last = frame_stamp_ns(len(images) - 1)
    assert tracker_node.wait_for(lambda: tracker_node.result_for(last) is not None, 5.0), tracker_node.log()

    by_stamp = {stamp_ns(m.header.stamp): m for m in tracker_node.results}
    held = np.full((len(images), 4), np.nan)
    held[0] = gt[0]
    tracked = 0
    for index in range(1, len(images)):
        message = by_stamp.get(frame_stamp_ns(index))
        if message is not None and message.objects:
            obj = message.objects[0]
            held[index] = (obj.x, obj.y, obj.width, obj.height)
            tracked += 1
        else:
            held[index] = held[index - 1]
    dropped = len(images) - 1 - tracked
    auc = score(held, gt).auc
    print(f"Crossing siamfc, camera every {period * 1e3:.1f} ms: {tracked} tracked, {dropped} dropped, "
          f"AUC (last box held) {auc:.4f}")
    stamps = [stamp_ns(m.header.stamp) for m in tracker_node.results]
    assert stamps == sorted(stamps) and set(stamps) <= {frame_stamp_ns(i) for i in range(len(images))}
    assert dropped > 0  # the camera really outran the tracker ...

    # ... and said so. Best-effort (sensor-data) QoS may lose images before the node sees them,
    # and results before the test does; what the node counts must add up: every image it
    # received was either processed or dropped by it.
    def counts(d):
        values = {kv.key: kv.value for kv in d.status[0].values}
        return tuple(int(values.get(k, -1)) for k in ("frames_received", "frames_processed", "frames_dropped"))

    def settled():
        if not diagnostics:
            return False
        received, processed, node_dropped = counts(diagnostics[-1])
        return received - processed == node_dropped and processed >= tracked + 1

    tracker_node.wait_for(settled, 5.0)
    assert diagnostics, "no /diagnostics"
    received, processed, node_dropped = counts(diagnostics[-1])
    print(f"node: {received} received, {processed} processed, {node_dropped} dropped")
    assert received - processed == node_dropped, (received, processed, node_dropped)
    assert received <= len(images) and processed >= tracked + 1, (received, processed, tracked)
    assert node_dropped > 0, (received, processed, node_dropped)
    # How many frames get tracked is the machine's speed (a benchmark's business, not a
    # test's): what must hold on any machine is that the node works on the newest frame, so
    # its results are spread over the whole video rather than a backlog of its start, and
    # that the boxes it does publish are on the target despite the frames skipped between.
    tracked_indices = [i for i in range(1, len(images)) if frame_stamp_ns(i) in by_stamp
                       and by_stamp[frame_stamp_ns(i)].objects]
    thirds = {3 * i // len(images) for i in tracked_indices}
    assert len(tracked_indices) >= 5 and thirds == {0, 1, 2}, tracked_indices
    on_frame = [iou(held[i], gt[i]) for i in tracked_indices]
    print(f"published boxes against their own frames: mean IoU {np.mean(on_frame):.3f}")
    assert np.mean(on_frame) > 0.5, on_frame


@pytest.mark.parametrize("tracker_node", [["-p", "publish_debug_image:=true", "-p", "debug_image_max_rate:=100.0",
                                           "-p", "diagnostics_period:=0.2"]], indirect=True)
def test_debug_image_and_diagnostics(tracker_node, sequence):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    debug, diagnostics = [], []
    tracker_node.node.create_subscription(Image, "/tracker_node/debug_image", debug.append, 10)
    tracker_node.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    tracker_node.publish(sequence.image(0), frame_stamp_ns(0))
    assert tracker_node.init(*sequence.ground_truth[0], target_id="couple").success
    for index in range(1, 6):
        tracker_node.publish(sequence.image(index), frame_stamp_ns(index))
    def values(message):
        return {kv.key: kv.value for kv in message.status[0].values}

    def all_frames_reported():
        return any(int(values(d).get("frames_processed", 0)) >= 6 and "target/couple" in values(d) for d in diagnostics)

    assert tracker_node.wait_for(
        lambda: any(stamp_ns(d.header.stamp) == frame_stamp_ns(5) for d in debug) and all_frames_reported(), 10.0)
    image = next(d for d in debug if stamp_ns(d.header.stamp) == frame_stamp_ns(5))
    assert (image.width, image.height, image.encoding) == (sequence.image(0).shape[1], sequence.image(0).shape[0], "bgr8")
    assert image.header.frame_id == "camera"
    plain = sequence.image(5)
    drawn = np.frombuffer(image.data, np.uint8).reshape(plain.shape)
    assert not np.array_equal(drawn, plain)  # the box is drawn ...
    assert (drawn != plain).any(axis=2).mean() < 0.2  # ... on the real frame
    report = values(next(d for d in diagnostics if int(values(d).get("frames_processed", 0)) >= 6))
    assert {"fps", "frames_received", "frames_processed", "frames_dropped", "latency_p50_ms", "latency_p95_ms"} <= set(report)
    assert report["target/couple"].startswith("csrt ")


@pytest.mark.parametrize("tracker_node", [["-p", "image_transport:=compressed"]], indirect=True)
def test_compressed_transport(tracker_node, sequence):
    import cv2
    from sensor_msgs.msg import CompressedImage

    from node_harness import to_time

    publisher = tracker_node.node.create_publisher(CompressedImage, "/cam/image/compressed", 10)
    assert tracker_node.wait_for(lambda: publisher.get_subscription_count() > 0, 10.0)

    def send(index):
        message = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", sequence.image(index))[1].tobytes())
        message.header.stamp = to_time(frame_stamp_ns(index))
        message.header.frame_id = "camera"
        publisher.publish(message)
        tracker_node.wait_for(lambda: tracker_node.result_for(frame_stamp_ns(index)) is not None, 10.0)
        return tracker_node.result_for(frame_stamp_ns(index))

    assert send(0) is not None
    assert tracker_node.init(*sequence.ground_truth[0], stamp=frame_stamp_ns(0)).success
    output = send(1)
    (obj,) = output.objects
    assert Box(obj.x, obj.y, obj.width, obj.height).iou(Box.from_xywh(sequence.ground_truth[1])) > 0.5


def test_services_answer_while_a_slow_frame_is_tracked(tmp_path, sequence):
    """SiamFC on the CPU takes a few hundred ms a frame: a service call made right after a
    frame is published must be answered before that frame's result arrives. Also runs a deep
    tracker in the node with the `weights` and `device` parameters (random weights: speed,
    not accuracy, matters here)."""
    import torch

    from vtrack_core.trackers.siamfc import SiamFCNet

    if torch.cuda.is_available():
        pytest.skip("on a GPU SiamFC is too fast to keep the worker busy")
    weights = tmp_path / "random_siamfc.pt"
    torch.save(SiamFCNet().state_dict(), weights)  # Table 1's AlexNet: 3 search crops of 255 px a frame
    settings = tmp_path / "trackers.yaml"
    settings.write_text("siamfc:\n  backbone: alexnet\n")
    harness = NodeUnderTest(tmp_path / "tracker_node.log", node_args=[
        "-p", "tracker:=siamfc", "-p", f"weights:={weights}", "-p", "device:=cpu",
        "-p", f"tracker_config_file:={settings}"])
    try:
        harness.publish(sequence.image(0), frame_stamp_ns(0))
        response = harness.init(*sequence.ground_truth[0], stamp=frame_stamp_ns(0))
        assert response.success, response.message
        for index in range(1, 4):
            harness.publish(sequence.image(index), frame_stamp_ns(index), wait=False)
            future = harness.stop_client.call_async(StopTarget.Request(target_id="ghost"))
            first = []

            def settled():
                if future.done() and "service" not in first:
                    first.append("service")
                if harness.result_for(frame_stamp_ns(index)) is not None and "frame" not in first:
                    first.append("frame")
                return len(first) == 2

            assert harness.wait_for(settled, 30.0), harness.log()
            assert first == ["service", "frame"], f"frame {index}: {first}"
            assert not future.result().success and "unknown target id" in future.result().message
        (obj,) = harness.result_for(frame_stamp_ns(3)).objects
        assert obj.tracker == "siamfc" and 0.0 <= obj.confidence <= 1.0
    finally:
        harness.close()


def test_the_default_tracker_is_siamfc_and_follows_the_couple(couple_frames_for_default):
    """Started without a `tracker` parameter the node tracks with ours (SiamFC on its
    packaged weights, warmed up at start), and follows a real target."""
    harness, images, gt = couple_frames_for_default
    assert "warmed up 'siamfc'" in harness.log(), harness.log()
    harness.publish(images[0], frame_stamp_ns(0))
    response = harness.init(*gt[0], stamp=frame_stamp_ns(0), target_id="couple")
    assert response.success and "with siamfc" in response.message, response.message
    ious = []
    for index in range(1, 25):
        output = harness.publish(images[index], frame_stamp_ns(index))
        assert output is not None, harness.log()
        (obj,) = output.objects
        assert obj.tracker == "siamfc"
        ious.append(Box(obj.x, obj.y, obj.width, obj.height).iou(Box.from_xywh(gt[index])))
    assert np.mean(ious) > 0.5, ious


@pytest.fixture
def couple_frames_for_default(tmp_path, sequence):
    harness = NodeUnderTest(tmp_path / "tracker_node.log", tracker=None)
    images = [sequence.image(i) for i in range(25)]
    yield harness, images, sequence.ground_truth
    harness.close()
