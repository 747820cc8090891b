"""The tracker node in the field (issue 21): clocks that step back or are never set, cameras
that stop, change resolution or send damaged or huge frames, and a control plane under
pressure. Each test runs the real tracker_node process on real frames of a dev sequence.

Timing: the machine these run on is shared with training jobs, so no assertion here
depends on how fast a frame is tracked; waits are generous and bounds are loose.
"""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")

from node_harness import NodeUnderTest, bgr_message, frame_stamp_ns, stamp_ns  # noqa: E402
from vtrack_core import Box  # noqa: E402
from vtrack_core.eval.datasets import load_dataset  # noqa: E402
from vtrack_ros.msg import TrackedObject  # noqa: E402

pytestmark = pytest.mark.ros

FOLLOWING = (TrackedObject.STATE_TRACKING, TrackedObject.STATE_UNCERTAIN)


@pytest.fixture(scope="module")
def couple(dev_dataset_dir):
    sequence = load_dataset(dev_dataset_dir, names=["Couple"])[0]
    return [sequence.image(i) for i in range(len(sequence))], sequence.ground_truth


@pytest.fixture
def tracker_node(tmp_path, request):
    args = getattr(request, "param", [])
    harness = NodeUnderTest(tmp_path / "tracker_node.log", node_args=list(args))
    yield harness
    harness.close()


def iou(obj, box) -> float:
    found = obj if isinstance(obj, Box) else Box(obj.x, obj.y, obj.width, obj.height)
    return found.iou(Box.from_xywh(box))


class Diagnostics:
    """The node's /diagnostics, as key -> value dicts of its status."""

    def __init__(self, harness: NodeUnderTest) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.messages: list = []
        harness.node.create_subscription(DiagnosticArray, "/diagnostics", self.messages.append, 10)

    def latest(self) -> dict[str, str]:
        return self.values(self.messages[-1]) if self.messages else {}

    @staticmethod
    def values(message) -> dict[str, str]:
        status = message.status[0]
        return {"level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level),
                "message": status.message, **{kv.key: kv.value for kv in status.values}}

    def wait(self, harness: NodeUnderTest, predicate, timeout: float = 20.0) -> dict[str, str] | None:
        """The first diagnostics (from now on) that satisfy predicate, else None."""
        start = len(self.messages)
        found: list = []

        def check() -> bool:
            for message in self.messages[start:]:
                values = self.values(message)
                if predicate(values):
                    found.append(values)
                    return True
            return False

        harness.wait_for(check, timeout)
        return found[0] if found else None


def publish_and_wait_for_a_result(harness: NodeUnderTest, message, timeout: float = 20.0):
    """For images whose output stamp the test cannot know: the next result after it."""
    count = len(harness.results)
    harness.publish_message(message)
    assert harness.wait_for(lambda: len(harness.results) > count, timeout), harness.log()
    return harness.results[-1]


# --- 1. Time ------------------------------------------------------------------------------


def test_stamps_stepping_back_restart_the_clock(tracker_node, couple):
    """A bag that loops (or a clock step, a simulator reset): the stamps restart at an older
    time while the scene goes on. The node notices, says so once, forgets the frames of the
    old timeline and keeps tracking (before: one box for every later frame, TRACKING 1.0)."""
    images, gt = couple
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0), target_id="couple").success
    for index in range(1, 30):
        assert tracker_node.publish(images[index], frame_stamp_ns(index)) is not None
    boxes, ious = [], []
    for index in range(30, 75):
        output = tracker_node.publish(images[index], frame_stamp_ns(index - 30))  # the clock restarted
        assert output is not None, f"no result for frame {index}\n{tracker_node.log()}"
        (obj,) = output.objects
        boxes.append((obj.x, obj.y, obj.width, obj.height))
        ious.append(iou(obj, gt[index]))
        if index == 35:
            # The frame buffer holds the new timeline only: stamp 20 was an image of the old one.
            late = tracker_node.init(*gt[20], stamp=frame_stamp_ns(20), target_id="late")
            assert not late.success and "no image with stamp" in late.message, late.message
    print(f"after the step back: {len(set(boxes))} distinct boxes in {len(boxes)} frames, mean IoU {np.mean(ious):.3f}")
    assert len(set(boxes)) > len(boxes) // 2  # not frozen
    assert np.mean(ious) > 0.3
    log = tracker_node.log()
    assert log.count("stepped back") == 1, log
    assert "frame buffer cleared" in log


# The test is the camera and sends the next image only after a result: camera_timeout is
# raised so that a pause of the test process itself (a loaded CI machine) is not reported
# stale in between (that rule has its own test below).
@pytest.mark.parametrize("tracker_node", [["-p", "camera_timeout:=10.0", "-p", "camera_error_timeout:=20.0"]],
                         indirect=True)
def test_zero_stamps_use_the_receive_time(tracker_node, couple):
    """A driver that never sets header.stamp: the node stamps images with their receive time
    (stamp_source auto), warns once, and both a target that was tracking and a new one go on
    (before: the old one froze, the new one stayed INITIALIZING)."""
    images, gt = couple
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0), target_id="old").success
    for index in range(1, 10):
        tracker_node.publish(images[index], frame_stamp_ns(index))
    stamps, ious = [], []
    for index in range(10, 40):
        output = publish_and_wait_for_a_result(tracker_node, bgr_message(images[index], 0))
        stamps.append(stamp_ns(output.header.stamp))
        by_id = {o.target_id: o for o in output.objects}
        ious.append(iou(by_id["old"], gt[index]))
        if index == 20:
            new = tracker_node.init(*gt[index], target_id="new")  # stamp 0: the latest image
            assert new.success, new.message
        if index > 21:
            assert by_id["new"].state in FOLLOWING, by_id["new"]
            ious.append(iou(by_id["new"], gt[index]))
    assert all(s > frame_stamp_ns(9) for s in stamps) and stamps == sorted(set(stamps)), stamps
    print(f"zero stamps: mean IoU {np.mean(ious):.3f}")
    assert np.mean(ious) > 0.3
    # The stamp a result carries names its image: an init on it starts there.
    again = tracker_node.init(*gt[39], stamp=stamps[-1], target_id="new")
    assert again.success, again.message
    assert tracker_node.log().count("header.stamp is zero") == 1


@pytest.mark.parametrize("tracker_node", [["-p", "stamp_source:=header", "-p", "diagnostics_period:=0.2"]],
                         indirect=True)
def test_zero_stamps_are_refused_when_the_header_is_required(tracker_node, couple):
    images, _ = couple
    diagnostics = Diagnostics(tracker_node)
    tracker_node.publish_message(bgr_message(images[0], 0))
    report = diagnostics.wait(tracker_node, lambda d: d.get("stamps_zero") == "1")
    assert report is not None, diagnostics.latest()
    assert report["images_rejected"] == "1" and report["frames_processed"] == "0"
    assert "header.stamp is zero and stamp_source is 'header'" in tracker_node.log()
    assert tracker_node.publish(images[1], frame_stamp_ns(1)) is not None  # stamped images still work


# The test pauses 0.3 s after each repeated image: camera_timeout is raised so that those
# pauses on a loaded machine are not reported stale (a stale report republishes the last
# header with every target LOST, by design; see test_a_camera_that_stops_makes_the_targets_stale).
@pytest.mark.parametrize("tracker_node", [["-p", "diagnostics_period:=0.2", "-p", "camera_timeout:=10.0",
                                           "-p", "camera_error_timeout:=20.0"]], indirect=True)
def test_repeated_stamps_are_refused_and_counted(tracker_node, couple):
    """The rule: an image whose stamp equals the previous image's is refused (a stamp names
    one image), counted in /diagnostics and logged, never tracked nor published (before: it
    was published again with the previous box)."""
    images, gt = couple
    diagnostics = Diagnostics(tracker_node)
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success
    repeated = 0
    for index in range(1, 25):
        if index % 4 == 0:  # same stamp as the image before it
            tracker_node.publish(images[index], frame_stamp_ns(index - 1), wait=False)
            tracker_node.spin(0.3)
            repeated += 1
        else:
            assert tracker_node.publish(images[index], frame_stamp_ns(index)) is not None, tracker_node.log()
    report = diagnostics.wait(tracker_node, lambda d: d.get("frames_received") == "25")
    assert report is not None, diagnostics.latest()
    assert report["stamps_repeated"] == str(repeated), report
    assert int(report["frames_processed"]) + int(report["frames_dropped"]) + int(report["images_rejected"]) == 25
    stamps = [stamp_ns(m.header.stamp) for m in tracker_node.results]
    twice = [(stamp, [(o.state, round(o.confidence, 3)) for o in m.objects]) for m in tracker_node.results
             for stamp in [stamp_ns(m.header.stamp)] if stamps.count(stamp) > 1]
    assert len(stamps) == len(set(stamps)), ("an image was published twice under one stamp", twice)
    (obj,) = tracker_node.results[-1].objects
    assert obj.state in FOLLOWING and iou(obj, gt[23]) > 0.3
    assert "repeats the previous image's" in tracker_node.log()


# --- 2. The camera -------------------------------------------------------------------------

OK, WARN, ERROR = 0, 1, 2


@pytest.mark.parametrize("tracker_node", [["-p", "diagnostics_period:=0.2", "-p", "camera_timeout:=1.0",
                                           "-p", "camera_error_timeout:=3.0"]], indirect=True)
def test_a_camera_that_stops_makes_the_targets_stale(tracker_node, couple):
    """The camera stops: after camera_timeout /diagnostics warns (then reports an error), its
    fps falls to the real rate, and the targets are published LOST under the last image's
    header (before: 8 s of silence with OK at "29.9 fps" and the target TRACKING)."""
    images, gt = couple
    diagnostics = Diagnostics(tracker_node)
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0), target_id="couple").success
    for index in range(1, 30):
        assert tracker_node.publish(images[index], frame_stamp_ns(index)) is not None
    # The camera stopped when its last image was answered: camera_timeout counts from there
    # (not from the end of the wait below, which can itself take most of a second).
    stopped = time.monotonic()
    running = diagnostics.wait(tracker_node, lambda d: int(d["frames_processed"]) >= 30)
    assert running is not None and running["level"] == OK and "TRACKING" in running["target/couple"], running

    count = len(tracker_node.results)
    warn = diagnostics.wait(tracker_node, lambda d: d["level"] == WARN, 15.0)
    assert warn is not None, diagnostics.latest()
    assert time.monotonic() - stopped >= 0.9  # not before camera_timeout
    assert "no image for" in warn["message"] and warn["stale"] == "true", warn
    assert warn["target/couple"].startswith("csrt LOST") and "stale" in warn["target/couple"], warn
    assert tracker_node.wait_for(lambda: len(tracker_node.results) > count, 10.0), "no stale result published"
    stale = tracker_node.results[count]
    assert stamp_ns(stale.header.stamp) == frame_stamp_ns(29) and stale.header.frame_id == "camera"
    (obj,) = stale.objects
    assert obj.state == TrackedObject.STATE_LOST and obj.confidence == 0.0 and obj.target_id == "couple"
    error = diagnostics.wait(tracker_node, lambda d: d["level"] == ERROR, 15.0)
    assert error is not None, diagnostics.latest()
    assert error["fps"] == "0.00" and error["camera_fps"] == "0.00", error  # the real rate, not the last one
    print(f"camera stopped: WARN '{warn['message']}', ERROR '{error['message']}' at fps {error['fps']}")

    # The camera comes back: the tracker's own state again.
    for index in range(30, 40):
        output = tracker_node.publish(images[index], frame_stamp_ns(index))
        assert output is not None, tracker_node.log()
    (obj,) = output.objects
    assert obj.state in FOLLOWING and iou(obj, gt[39]) > 0.3, obj
    assert diagnostics.wait(tracker_node, lambda d: d["level"] == OK and d["stale"] == "false") is not None


def _upscaled(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)


def test_resolution_changes_rescale_the_targets(tracker_node, couple):
    """The camera switches between 320x240 and 640x480 (binning), then stays at 640x480: the
    boxes follow into the new pixels (before: the box stayed in the old pixels, TRACKING
    1.0, IoU 0)."""
    images, gt = couple
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success
    for index in range(1, 10):
        tracker_node.publish(images[index], frame_stamp_ns(index))
    alternating, permanent = [], []
    for index in range(10, 70):
        big = index % 2 == 0 if index < 40 else True
        image = _upscaled(images[index]) if big else images[index]
        output = tracker_node.publish(image, frame_stamp_ns(index))
        assert output is not None, tracker_node.log()
        (obj,) = output.objects
        assert obj.x + obj.width <= image.shape[1] + 1 and obj.y + obj.height <= image.shape[0] + 1, (index, obj)
        assert obj.state != TrackedObject.STATE_LOST, (index, obj)
        score = iou(obj, np.asarray(gt[index]) * (2 if big else 1))
        (alternating if index < 40 else permanent).append(score)
    print(f"IoU alternating 320/640: {np.mean(alternating):.3f}, after the switch to 640: {np.mean(permanent):.3f}")
    assert np.mean(alternating) > 0.3 and np.mean(permanent) > 0.3
    log = tracker_node.log()
    assert "image size changed from 320x240 to 640x480" in log
    assert log.count("image size changed from") < 15  # 31 changes, logged at most every 5 s per kind


@pytest.mark.parametrize("tracker_node", [["-p", "on_resolution_change:=lose"]], indirect=True)
def test_resolution_change_can_lose_the_targets(tracker_node, couple):
    images, gt = couple
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success
    for index in range(1, 10):
        tracker_node.publish(images[index], frame_stamp_ns(index))
    boxes = {}
    for index in range(10, 16):
        big = index < 13  # then back to 320x240: still LOST
        image = _upscaled(images[index]) if big else images[index]
        (obj,) = tracker_node.publish(image, frame_stamp_ns(index)).objects
        assert obj.state == TrackedObject.STATE_LOST and obj.confidence == 0.0, (index, obj)
        boxes[index] = np.array([obj.x, obj.y, obj.width, obj.height]) * (1 if big else 2)
    # The last box, always in the pixels of the image it is published with.
    assert iou(Box.from_xywh(boxes[10]), np.asarray(gt[10]) * 2) > 0.3, boxes[10]
    assert all(np.allclose(box, boxes[10]) for box in boxes.values()), boxes
    assert "LOST: image size changed from 320x240 to 640x480 (on_resolution_change is 'lose')" in tracker_node.log()


def _compressed(data: bytes, stamp: int):
    from sensor_msgs.msg import CompressedImage

    from node_harness import to_time

    message = CompressedImage(format="jpeg", data=data)
    message.header.stamp = to_time(stamp)
    message.header.frame_id = "camera"
    return message


def _compressed_publisher(harness: NodeUnderTest):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    publisher = harness.node.create_publisher(CompressedImage, "/cam/image/compressed",
                                              QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    assert harness.wait_for(lambda: publisher.get_subscription_count() > 0, 10.0)
    return publisher


def _libjpeg_warns(blobs: list[bytes], tmp_path) -> list[bool]:
    """Whether libjpeg (through OpenCV, in a process of its own) warns decoding each blob:
    the oracle for the node's damage count, independent of how the node captures it."""
    import subprocess
    import sys

    paths = []
    for index, blob in enumerate(blobs):
        path = tmp_path / f"blob_{index}.jpg"
        path.write_bytes(blob)
        paths.append(str(path))
    script = ("import sys, numpy as np, cv2\n"
              "for path in sys.argv[1:]:\n"
              "    sys.stderr.write('@@\\n'); sys.stderr.flush()\n"
              "    cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)\n")
    stderr = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, check=True).stderr
    chunks = stderr.split("@@\n")[1:]
    assert len(chunks) == len(blobs)
    return ["Corrupt JPEG data" in chunk or "Premature end" in chunk for chunk in chunks]


@pytest.mark.parametrize("tracker_node", [["-p", "image_transport:=compressed", "-p", "diagnostics_period:=0.2"]],
                         indirect=True)
def test_damaged_jpegs_are_counted_and_skipped(tracker_node, couple, dev_dataset_dir, tmp_path):
    """The dev sequence's own JPEG files, every second one with 64 bytes of its scan flipped:
    those libjpeg reports damaged are counted and skipped (before: the warnings went to raw
    stderr, uncounted, and the tracker ran on the garbled images)."""
    images, gt = couple
    files = sorted((dev_dataset_dir / "Couple" / "img").glob("*.jpg"))[:40]
    good = [path.read_bytes() for path in files]
    damaged = []
    for blob in good:
        flipped = bytearray(blob)
        middle = len(flipped) // 2
        flipped[middle:middle + 64] = bytes(b ^ 0xFF for b in flipped[middle:middle + 64])
        damaged.append(bytes(flipped))
    warns = _libjpeg_warns(damaged, tmp_path)
    publisher = _compressed_publisher(tracker_node)
    diagnostics = Diagnostics(tracker_node)

    def send(blob, index, wait=True):
        since = len(tracker_node.results)
        publisher.publish(_compressed(blob, frame_stamp_ns(index)))
        if wait:
            assert tracker_node.wait_for(lambda: tracker_node.result_for(frame_stamp_ns(index), since), 20.0), \
                tracker_node.log()
            return tracker_node.result_for(frame_stamp_ns(index), since)
        tracker_node.spin(0.3)
        return None

    send(good[0], 0)
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success
    sent_damaged, ious = [], []
    for index in range(1, 40):
        if index % 2 == 0 and warns[index]:
            send(damaged[index], index, wait=False)
            sent_damaged.append(frame_stamp_ns(index))
        else:
            (obj,) = send(good[index], index).objects
            ious.append(iou(obj, gt[index]))
    assert len(sent_damaged) >= 10, warns
    report = diagnostics.wait(tracker_node, lambda d: d["frames_received"] == "40")
    assert report is not None, diagnostics.latest()
    published = {stamp_ns(m.header.stamp) for m in tracker_node.results}
    assert not published & set(sent_damaged), f"{len(published & set(sent_damaged))} damaged frames were tracked"
    print(f"{len(sent_damaged)} damaged JPEGs sent: node counted {report.get('images_damaged')} damaged, "
          f"{report['images_rejected']} rejected; mean IoU on the good ones {np.mean(ious):.3f}")
    # A damaged frame the next good one replaced before the worker decoded it counts as dropped.
    assert report["images_damaged"] == report["images_rejected"], report
    assert len(sent_damaged) - int(report["frames_dropped"]) <= int(report["images_damaged"]) <= len(sent_damaged), report
    assert np.mean(ious) > 0.4
    log = tracker_node.log()
    assert "damaged JPEG (decoder: Corrupt JPEG data" in log
    raw = [line for line in log.splitlines() if "Corrupt JPEG data" in line and "image skipped" not in line]
    assert not raw, raw  # libjpeg's own lines no longer reach stderr


@pytest.mark.parametrize("tracker_node", [["-p", "image_transport:=compressed", "-p", "diagnostics_period:=0.2"]],
                         indirect=True)
def test_oversized_compressed_images_are_refused_before_decoding(tracker_node, couple, dev_dataset_dir):
    """A 20 kB JPEG whose header claims 20000 x 20000 (it cost 1.3 GB and 7 s) and a real
    8000 x 6000 JPEG (it lost the target for good) are refused from their headers; the node's
    memory stays small and the target goes on."""
    import cv2

    images, gt = couple
    files = sorted((dev_dataset_dir / "Couple" / "img").glob("*.jpg"))
    publisher = _compressed_publisher(tracker_node)
    diagnostics = Diagnostics(tracker_node)
    bomb = bytearray(files[5].read_bytes())
    i = 2
    while bomb[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(bomb[i + 2:i + 4], "big")
    bomb[i + 5:i + 9] = (20000).to_bytes(2, "big") * 2  # height, width
    huge = cv2.imencode(".jpg", cv2.resize(images[6], (8000, 6000)))[1].tobytes()

    def send(blob, index, wait=True):
        since = len(tracker_node.results)
        publisher.publish(_compressed(blob, frame_stamp_ns(index)))
        if wait:
            tracker_node.wait_for(lambda: tracker_node.result_for(frame_stamp_ns(index), since), 20.0)
            return tracker_node.result_for(frame_stamp_ns(index), since)
        return None

    for index in range(5):
        send(files[index].read_bytes(), index)
        if index == 0:
            assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success
    began = time.monotonic()
    send(bytes(bomb), 5, wait=False)
    send(huge, 6, wait=False)
    ious = []
    for index in range(7, 30):
        output = send(files[index].read_bytes(), index)
        assert output is not None, tracker_node.log()
        if index == 7:
            print(f"bomb ({len(bomb)} B) and 8000x6000 ({len(huge)} B) passed in {time.monotonic() - began:.2f} s")
        (obj,) = output.objects
        ious.append(iou(obj, gt[index]))
    status = {line.split(":")[0]: line.split(":")[1].strip()
              for line in open(f"/proc/{tracker_node.process.pid}/status") if ":" in line}
    peak_mb = int(status["VmHWM"].split()[0]) / 1024
    print(f"node peak memory {peak_mb:.0f} MB, mean IoU after {np.mean(ious):.3f}")
    assert peak_mb < 900, peak_mb  # the bomb alone took 1.3 GB
    assert np.mean(ious) > 0.4, ious
    report = diagnostics.wait(tracker_node, lambda d: d.get("images_oversized") == "2", 30.0)
    assert report is not None, diagnostics.latest()
    log = tracker_node.log()
    assert "compressed image of 20000x20000 (400.0 MP) exceeds max_image_pixels" in log
    assert "compressed image of 8000x6000 (48.0 MP) exceeds max_image_pixels" in log


@pytest.mark.parametrize("tracker_node", [["-p", "max_image_pixels:=100000", "-p", "frame_buffer_bytes:=1000000",
                                           "-p", "diagnostics_period:=0.2"]], indirect=True)
def test_raw_size_limit_and_a_frame_buffer_bounded_by_bytes(tracker_node, couple):
    """Raw images over max_image_pixels are refused from their width and height; the frame
    buffer holds what frame_buffer_bytes allows (4 of these 230 kB frames), not 30."""
    images, gt = couple
    diagnostics = Diagnostics(tracker_node)
    for index in range(12):
        assert tracker_node.publish(images[index], frame_stamp_ns(index)) is not None, tracker_node.log()
    tracker_node.publish(_upscaled(images[12]), frame_stamp_ns(12), wait=False)  # 307200 pixels
    report = diagnostics.wait(tracker_node, lambda d: d["images_oversized"] == "1")
    assert report is not None, diagnostics.latest()
    assert report["frame_buffer_frames"] == "4" and int(report["frame_buffer_bytes"]) <= 1_000_000, report
    old = tracker_node.init(*gt[6], stamp=frame_stamp_ns(6))
    assert not old.success and "no image with stamp" in old.message, old.message
    recent = tracker_node.init(*gt[9], stamp=frame_stamp_ns(9))
    assert recent.success and "caught up over 2 newer frame(s)" in recent.message, recent.message
    assert "image of 640x480 (0.3 MP) exceeds max_image_pixels=100000" in tracker_node.log()


# --- 3. The control plane -----------------------------------------------------------------


def _init_request(box, stamp: int = 0, target_id: str = "", tracker: str = ""):
    from node_harness import to_time
    from vtrack_ros.srv import InitTarget

    x, y, w, h = (float(v) for v in box)
    return InitTarget.Request(target_id=target_id, stamp=to_time(stamp), x=x, y=y, width=w, height=h, tracker=tracker)


def test_a_crowd_of_init_requests_is_answered(tracker_node, couple):
    """200 init_target calls at once (4 clients): every one is answered, accepted or "busy"
    (before: 10 were answered, the rest waited until their caller gave up)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vtrack_ros.srv import InitTarget

    images, gt = couple
    diagnostics = Diagnostics(tracker_node)
    tracker_node.publish(images[0], frame_stamp_ns(0))
    # Deep client histories too: every client's response reader sees the answers to all of
    # them (rmw_fastrtps sends each answer to every client, which keeps its own), so with a
    # depth below the crowd a client's own answers are overwritten before it reads them.
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    clients = [tracker_node.node.create_client(InitTarget, "/tracker_node/init_target", qos_profile=qos)
               for _ in range(4)]
    assert all(client.wait_for_service(timeout_sec=10.0) for client in clients)
    # One call each first: a service seen by a new client may not have matched that client's
    # response reader yet (DDS discovery, slow on a loaded host), and answers sent before
    # that are lost on the way whatever the node does.
    for client in clients:
        assert tracker_node.call(client, _init_request(gt[0], frame_stamp_ns(0), "crowd")).success
    began = time.monotonic()
    futures = [clients[k % 4].call_async(_init_request(gt[0], frame_stamp_ns(0), "crowd")) for k in range(200)]
    answered = tracker_node.wait_for(lambda: all(f.done() for f in futures), 60.0)
    answers = [f.result() for f in futures if f.done()]
    accepted = [a for a in answers if a.success]
    busy = [a for a in answers if not a.success and a.message.startswith("busy:")]
    print(f"200 concurrent init_target: {len(answers)} answered in {time.monotonic() - began:.1f} s, "
          f"{len(accepted)} accepted, {len(busy)} busy")
    assert answered, f"{200 - len(answers)} of 200 requests never answered"
    assert accepted and len(accepted) + len(busy) == 200, {a.message for a in answers}
    (obj,) = tracker_node.publish(images[1], frame_stamp_ns(1)).objects  # and it still tracks
    assert obj.target_id == "crowd" and iou(obj, gt[1]) > 0.5
    counted = diagnostics.wait(tracker_node, lambda d: d.get("init_requests") == "204")  # 4 first calls + 200
    assert counted is not None and counted["init_requests_busy"] == str(len(busy)), diagnostics.latest()


# The re-inits name images 22-28 frames old; a buffer of 60 frames keeps them there even when
# a loaded machine answers the request seconds after the test sent it (with the default 30,
# a delay of 0.4 s at 10 Hz was enough to push them out and have the inits refused).
@pytest.mark.parametrize("tracker_node", [["-p", "frame_buffer_size:=60"]], indirect=True)
def test_catch_up_inits_do_not_hold_up_live_frames(tracker_node, couple):
    """A camera at 10 Hz, one target tracked, and three re-inits of a second target on
    images 22-28 frames old: the catch-ups run between live frames on the worker, so the live
    output keeps coming (before: it stalled 1.5-3.5 s). How many live frames a machine
    tracks is its speed (two CSRT targets take 70 ms a frame on one of these cores, a
    loaded one twice that); the test compares the frames missed while the catch-ups run
    with the share missed just before them, in the same run."""
    from vtrack_ros.msg import TrackedObjectArray

    images, gt = couple
    arrivals: list[tuple[float, int]] = []
    tracker_node.node.create_subscription(TrackedObjectArray, "/tracker_node/tracked_objects",
                                          lambda m: arrivals.append((time.monotonic(), stamp_ns(m.header.stamp))), 50)
    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0), target_id="steady").success
    assert tracker_node.init(150, 60, 40, 60, stamp=frame_stamp_ns(0), target_id="other").success
    for index in range(1, 30):
        tracker_node.publish(images[index], frame_stamp_ns(index))
    futures, asked, answered, period, sent = [], None, None, 1 / 10, {}
    ask_at = 60  # frames 30-59 (3 s) give the share tracked without catch-ups
    next_time = time.monotonic()
    for index in range(30, len(images)):
        sent[frame_stamp_ns(index)] = time.monotonic()
        tracker_node.publish(images[index], frame_stamp_ns(index), wait=False)
        if index == ask_at:
            asked = time.monotonic()
            # Name images the node is known to hold: ones it tracked. On a loaded machine the
            # image queue drops frames (41 of 57 held in one CI run, the one named among the
            # missing), and a refusal for a frame never received says nothing about catch-ups.
            tracked = sorted({s for _, s in arrivals} & {frame_stamp_ns(i) for i in range(ask_at - 28, ask_at - 21)})
            stamps = (tracked + [frame_stamp_ns(ask_at - 26 + k) for k in range(3)])[:3]
            futures = [tracker_node.init_client.call_async(_init_request((150 + k, 60, 40, 60), stamp, "other"))
                       for k, stamp in enumerate(stamps)]
        if answered is None and all(f.done() for f in futures) and futures:
            answered = time.monotonic()
        if answered is not None and time.monotonic() > answered + 1.0:
            break  # frames go on after the answers: a result lost in transport is repaired by the next one
        next_time += period
        tracker_node.wait_for(lambda: time.monotonic() >= next_time, 1.0)
    if answered is None:  # the video ran out first (a loaded machine): the answers must still come
        tracker_node.wait_for(lambda: all(f.done() for f in futures), 30.0)
        answered = time.monotonic() if all(f.done() for f in futures) else None
    assert answered is not None, [f.done() for f in futures]
    last = max(sent)
    assert tracker_node.wait_for(lambda: any(s == last for _, s in arrivals), 20.0)
    answers = [f.result() for f in futures]
    assert any(a.success for a in answers), [a.message for a in answers]
    # The frames sent while the re-inits were worked on: how many got a result, how late;
    # against the frames sent before they were asked.
    arrived = {s: t for t, s in arrivals}
    before = [stamp for stamp, at in sent.items() if at < asked]
    during = [stamp for stamp, at in sent.items() if asked <= at <= answered]
    latencies = [arrived[s] - sent[s] for s in during if s in arrived]
    gaps = np.diff([t for t, _ in arrivals if asked <= t <= answered])
    share_before = sum(s in arrived for s in before) / len(before)
    share = len(latencies) / len(during)
    print(f"re-inits answered in {answered - asked:.2f} s ({[a.message for a in answers]}); live frames meanwhile: "
          f"{len(latencies)} of {len(during)} tracked ({share:.0%}; before: {share_before:.0%} of {len(before)}), "
          f"latency max {max(latencies):.3f} s; output gap max {gaps.max() if len(gaps) else 0:.3f} s")
    # The worker's promise: a catch-up step (an init or one caught-up frame) delays one live
    # frame at most, so the live frames lost beyond the machine's own rate are at most the
    # steps taken (a tenth of the frames spare for the transport's best-effort losses).
    steps = sum(int(m.group(1)) + 1 for a in answers if a.success
                for m in [re.search(r"caught up over (\d+)", a.message)] if m)
    missed = len(during) - len(latencies)
    allowed = (1 - share_before) * len(during) + steps + 0.1 * len(during)
    print(f"live frames missed meanwhile {missed}, allowed {allowed:.1f} ({steps} catch-up steps)")
    assert missed <= allowed, (missed, allowed, share, share_before)
    assert max(latencies) < 1.0 and (len(gaps) == 0 or gaps.max() < 1.0), (max(latencies), gaps)
    index_of = {frame_stamp_ns(i): i for i in range(len(images))}
    steady = [iou(o, gt[index_of[s]]) for s in during[:20] if tracker_node.result_for(s) is not None
              for o in tracker_node.result_for(s).objects if o.target_id == "steady"]
    assert np.mean(steady) > 0.3, steady  # and the live target was tracked meanwhile (CSRT drifts off later)


def _set_parameter(harness: NodeUnderTest, name: str, value):
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    if not hasattr(harness, "_parameters_client"):
        harness._parameters_client = harness.node.create_client(SetParameters, "/tracker_node/set_parameters")
        assert harness._parameters_client.wait_for_service(timeout_sec=10.0)
    if isinstance(value, str):
        parameter = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    else:
        parameter = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=parameter)])
    return harness.call(harness._parameters_client, request).results[0]


def test_parameters_that_must_be_refused_and_a_period_that_must_apply(tracker_node, couple, tmp_path):
    """NaN, inf or 5.0 as confidence_threshold (every new target became LOST showing
    confidence 1.0), NaN periods, missing weights / tracker_config_file (they broke every
    later init, csrt too) are refused; a new diagnostics_period applies at once (the timer
    kept its first period)."""
    images, gt = couple
    diagnostics = Diagnostics(tracker_node)
    refused = {
        ("confidence_threshold", float("nan")): "confidence_threshold",
        ("confidence_threshold", float("inf")): "confidence_threshold",
        ("confidence_threshold", 5.0): "at most 1.0",
        ("diagnostics_period", float("nan")): "diagnostics_period must be a positive number",
        ("debug_image_max_rate", float("nan")): "debug_image_max_rate must be a positive number",
        ("camera_timeout", float("inf")): "camera_timeout must be a positive number",
        ("weights", str(tmp_path / "missing.pt")): "weights: no such file",
        ("tracker_config_file", str(tmp_path / "missing.yaml")): "tracker_config_file: no such file",
    }
    for (name, value), reason in refused.items():
        result = _set_parameter(tracker_node, name, value)
        assert not result.successful and reason in result.reason, (name, value, result.reason)
    broken = tmp_path / "broken.yaml"
    broken.write_text("- just\n- a list\n")
    result = _set_parameter(tracker_node, "tracker_config_file", str(broken))
    assert not result.successful and "mapping" in result.reason, result.reason
    assert _set_parameter(tracker_node, "confidence_threshold", 0.3).successful  # a good value still goes

    tracker_node.publish(images[0], frame_stamp_ns(0))
    assert tracker_node.init(*gt[0], stamp=frame_stamp_ns(0)).success  # nothing broke the inits
    for index in range(1, 5):
        (obj,) = tracker_node.publish(images[index], frame_stamp_ns(index)).objects
        assert obj.state in FOLLOWING, obj

    def rate(seconds: float) -> float:
        start = len(diagnostics.messages)
        tracker_node.spin(seconds)
        return (len(diagnostics.messages) - start) / seconds

    before = rate(4.0)
    assert _set_parameter(tracker_node, "diagnostics_period", 0.1).successful
    tracker_node.spin(0.5)
    after = rate(4.0)
    print(f"/diagnostics at {before:.1f} Hz with period 1.0, {after:.1f} Hz after setting 0.1")
    assert before <= 2.0 and after >= 4.0, (before, after)


def test_bad_start_parameters_stop_the_node_with_a_reason(tmp_path):
    import subprocess

    from node_harness import tracker_node_command

    for setting, reason in (("confidence_threshold:=5.0", "confidence_threshold"),
                            (f"weights:={tmp_path / 'missing.pt'}", "weights: no such file")):
        result = subprocess.run([*tracker_node_command(), "--ros-args", "-p", setting], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and reason in result.stderr, (setting, result.returncode, result.stderr)


def test_boxes_and_ids_that_must_be_refused(tracker_node, couple):
    """Boxes mostly outside the image (1e30 wide: they became whole-frame targets), boxes
    below min_box_size (a 2x2 box drifted to the corner at TRACKING 1.0), target ids that are
    not short printable text: refused, with messages that do not echo huge strings."""
    images, gt = couple
    tracker_node.publish(images[0], frame_stamp_ns(0))
    height, width = images[0].shape[:2]
    refused = {
        (0, 0, 1e30, 1e30): "lies inside",
        (-1e30, 50, 2e30, 40): "lies inside",
        (width - 20, height - 20, 100, 100): "lies inside",  # 4 % of it inside
        (100, 100, 1, 1): "too small",
        (100, 100, 2, 2): "too small",
        (100, 100, 40, 6): "too small",
    }
    for box, reason in refused.items():
        response = tracker_node.init(*box)
        assert not response.success and reason in response.message, (box, response.message)
    partly = tracker_node.init(width - 60, height - 80, 100, 120, target_id="edge")  # 40 % inside: clipped
    assert partly.success, partly.message
    assert tracker_node.stop("edge").success

    long_id, long_name = "x" * 100_000, "y" * 100_000
    for response in (tracker_node.init(*gt[0], target_id=long_id), tracker_node.init(*gt[0], target_id="bad\nid"),
                     tracker_node.init(*gt[0], tracker=long_name)):
        assert not response.success and "printable characters" in response.message, response.message[:200]
        assert len(response.message) < 300 and len(response.target_id) <= 64
    stop = tracker_node.stop(long_id)
    assert not stop.success and len(stop.message) < 300
    log = tracker_node.log()
    assert "x" * 100 not in log and "y" * 100 not in log

    ok = tracker_node.init(*gt[0], target_id="couple")
    assert ok.success, ok.message
    (obj,) = tracker_node.publish(images[1], frame_stamp_ns(1)).objects
    assert obj.target_id == "couple" and iou(obj, gt[1]) > 0.5


def test_shutdown_during_catch_up_inits_is_clean(tmp_path, couple):
    """SIGINT while init requests catch up, and a second SIGINT right after: exit code 0,
    and no "context is invalid" or unretrieved-exception lines (before: both lines, and
    exit -2 on the second SIGINT)."""
    import os
    import signal

    images, gt = couple
    harness = NodeUnderTest(tmp_path / "tracker_node.log")
    try:
        for index in range(30):
            harness.publish(images[index], frame_stamp_ns(index))
        futures = [harness.init_client.call_async(_init_request(gt[5 + k], frame_stamp_ns(5 + k), f"t{k}"))
                   for k in range(4)]
        for index in range(30, 36):
            harness.publish(images[index], frame_stamp_ns(index), wait=False)
        # Two are worked on, two answered "busy" at once: then the catch-ups are under way.
        assert harness.wait_for(lambda: sum(f.done() for f in futures) >= 2, 20.0), harness.log()
        os.killpg(harness.process.pid, signal.SIGINT)
        for index in range(36, 40):  # the camera does not know
            harness.publish(images[index], frame_stamp_ns(index), wait=False)
        harness.spin(0.2)
        os.killpg(harness.process.pid, signal.SIGINT)
        assert harness.wait_for(lambda: harness.process.poll() is not None, 30.0), harness.log()
        harness.wait_for(lambda: all(f.done() for f in futures), 5.0)
        print(f"exit code {harness.process.returncode}; init answers: "
              f"{[f.result().message[:40] if f.done() else None for f in futures]}")
        assert harness.process.returncode == 0, harness.log()
        log = harness.log()
        for bad in ("context is invalid", "never retrieved", "Traceback", "KeyboardInterrupt"):
            assert bad not in log, log
    finally:
        harness.close()
