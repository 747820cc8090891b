"""The real `video_publisher` and `vtrack-init` executables, run as subprocesses in an
isolated ROS domain, seen from an rclpy node in the test: frames, stamps, lockstep pacing,
exit codes."""
from __future__ import annotations

import copy

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")
cv2 = pytest.importorskip("cv2")

from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ros_helpers import private_ros_node  # noqa: E402
from vtrack_ros import init_client, video_publisher  # noqa: E402
from vtrack_ros.msg import TrackedObjectArray  # noqa: E402
from vtrack_ros.srv import InitTarget, StopTarget  # noqa: E402

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent


def command(script: str, module: str) -> list[str]:
    """The installed console script, or `python -m` before `pip install -e` declared it."""
    path = BIN / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


PUBLISHER = command("video_publisher", "vtrack_ros.video_publisher")
INIT = command("vtrack-init", "vtrack_ros.init_client")


@pytest.fixture
def couple(dev_dataset_dir: Path) -> Path:
    return dev_dataset_dir / "Couple"


@pytest.fixture
def ros(request):
    """(domain id, node, executor) in a fresh domain; subprocesses started via `spawn` die after."""
    with private_ros_node("video_publisher_test") as handles:
        yield handles


def spin_until(executor, predicate, timeout: float, step=None) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
        if step is not None:
            step()
    return predicate()


def finish(proc: subprocess.Popen, executor, timeout: float = 15.0) -> tuple[int, str]:
    """Spin (so the process's peers answer) until it exits; its exit code and output."""
    assert spin_until(executor, lambda: proc.poll() is not None, timeout), "process did not exit in time"
    output = proc.stdout.read() if proc.stdout else ""
    return proc.returncode, output


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def as_array(msg: Image) -> np.ndarray:
    channels = msg.step // msg.width
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, channels)


# --- the publisher ------------------------------------------------------------------------
def test_sequence_folder_published_frame_by_frame(ros, spawn, couple):
    domain, node, executor = ros
    images: list[Image] = []
    infos: list[CameraInfo] = []
    node.create_subscription(Image, "/cam/image", images.append, QoSProfile(depth=100))
    node.create_subscription(CameraInfo, "/cam/camera_info", infos.append, QoSProfile(depth=100))
    proc = spawn(
        PUBLISHER + [
            "--ros-args", "-p", f"source:={couple}", "-p", "rate:=50.0", "-p", "max_frames:=20",
            "-p", "stamp_mode:=sequence", "-p", "frame_id:=couple_cam", "-p", "wait_for_subscribers:=1",
            "-r", "image:=/cam/image", "-r", "camera_info:=/cam/camera_info",
        ],
        domain,
    )
    code, output = finish(proc, executor, timeout=25.0)
    spin_until(executor, lambda: len(images) >= 20, 2.0)  # anything still in flight
    assert code == 0, output
    assert "published 20 images" in output

    assert len(images) == 20
    files = sorted((couple / "img").glob("*.jpg"))
    expected_first = cv2.imread(str(files[0]))
    period_ns = 20_000_000  # 1 / 50 Hz
    start_ns = stamp_ns(images[0])
    assert start_ns > 0  # a zero stamp would mean "latest image" to the init service
    for i, msg in enumerate(images):
        assert stamp_ns(msg) - start_ns == i * period_ns  # exact: frame index from the stamp
        assert msg.header.frame_id == "couple_cam"
        assert msg.encoding == "bgr8"
        assert (msg.width, msg.height) == (expected_first.shape[1], expected_first.shape[0])
        assert msg.step == msg.width * 3
        np.testing.assert_array_equal(as_array(msg), cv2.imread(str(files[i])))

    assert infos, "no CameraInfo received"
    assert all(info.header.frame_id == "couple_cam" for info in infos)
    assert all((info.width, info.height) == (images[0].width, images[0].height) for info in infos)
    image_stamps = {stamp_ns(m) for m in images}
    assert all(stamp_ns(info) in image_stamps for info in infos)


def test_lockstep_waits_for_the_echo_of_each_frame(ros, spawn, couple):
    """Echoed frames are followed after the echo (not the rate); un-echoed after the timeout."""
    domain, node, executor = ros
    echo_delay, timeout, echoed_frames = 0.25, 1.5, 5
    arrivals: list[tuple[float, Image]] = []
    pending: list[tuple[float, Image]] = []
    echo_pub = node.create_publisher(TrackedObjectArray, "/test/echo", QoSProfile(depth=10))

    def on_image(msg: Image) -> None:
        arrivals.append((time.monotonic(), msg))
        if len(arrivals) <= echoed_frames:
            pending.append((time.monotonic() + echo_delay, msg))

    def send_due_echoes() -> None:
        while pending and pending[0][0] <= time.monotonic():
            _, msg = pending.pop(0)
            echo_pub.publish(TrackedObjectArray(header=msg.header))

    node.create_subscription(Image, "/cam/image", on_image, QoSProfile(depth=100))
    proc = spawn(
        PUBLISHER + [
            "--ros-args", "-p", f"source:={couple}", "-p", "rate:=50.0", "-p", "max_frames:=7",
            "-p", "stamp_mode:=sequence", "-p", "wait_for_subscribers:=1",
            "-p", "lockstep_topic:=/test/echo", "-p", f"lockstep_timeout:={timeout}",
            "-r", "image:=/cam/image",
        ],
        domain,
    )
    spin_until(executor, lambda: proc.poll() is not None, 25.0, step=send_due_echoes)
    code, output = finish(proc, executor, timeout=1.0)
    assert code == 0, output
    assert len(arrivals) == 7, output
    gaps = np.diff([t for t, _ in arrivals])
    # Frames 0-4 were echoed after echo_delay: the next one came right after the echo,
    # far later than the 20 ms of the rate and far sooner than the timeout.
    assert all(echo_delay - 0.05 <= g < echo_delay + 0.6 for g in gaps[:echoed_frames]), gaps
    # Frame 5 got no echo: frame 6 came only after lockstep_timeout.
    assert timeout - 0.1 <= gaps[echoed_frames] < timeout + 1.0, gaps
    assert "2 timeouts" in output  # frames 5 and 6
    # Stamps stay start + k / rate whatever the pacing.
    stamps = [stamp_ns(m) for _, m in arrivals]
    assert np.all(np.diff(stamps) == 20_000_000)


def test_missing_or_bad_source_exits_2_with_a_message(ros, spawn, tmp_path):
    domain, _, executor = ros
    missing = tmp_path / "no_such_video.mp4"
    proc = spawn(PUBLISHER + ["--ros-args", "-p", f"source:={missing}"], domain)
    code, output = finish(proc, executor)
    assert code == 2
    assert f"{missing}: no such file or folder" in output

    proc = spawn(PUBLISHER, domain)
    code, output = finish(proc, executor)
    assert code == 2
    assert "'source' is required" in output

    (tmp_path / "empty").mkdir()
    proc = spawn(PUBLISHER + ["--ros-args", "-p", f"source:={tmp_path / 'empty'}", "-p", "rate:=-1.0"], domain)
    code, output = finish(proc, executor)
    assert code == 2 and "'rate' must be > 0" in output


def test_image_message_encodings():
    """The encodings offered to test the tracker's decoding hold the same picture."""
    from builtin_interfaces.msg import Time

    bgr = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    for encoding, expected in (
        ("bgr8", bgr),
        ("rgb8", bgr[:, :, ::-1]),
        ("mono8", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None]),
        ("bgra8", np.dstack([bgr, np.full((6, 5), 255, np.uint8)])),
        ("rgba8", np.dstack([bgr[:, :, ::-1], np.full((6, 5), 255, np.uint8)])),
    ):
        msg = video_publisher.to_image_msg(bgr, encoding, Time(sec=3), "f")
        assert (msg.encoding, msg.width, msg.height, msg.step) == (encoding, 5, 6, 5 * expected.shape[2])
        np.testing.assert_array_equal(as_array(msg), expected)


def test_sequence_stamps_are_exact():
    settings = video_publisher.Settings(source="x", rate=30.0, stamp_start=2.0)
    assert video_publisher.sequence_stamp_ns(settings, 0) == 2_000_000_000
    assert video_publisher.sequence_stamp_ns(settings, 3) == 2_100_000_000
    assert video_publisher.sequence_stamp_ns(settings, 30) == 3_000_000_000


# --- vtrack-init --------------------------------------------------------------------------
def test_init_client_success_refusal_and_stop(ros, spawn):
    domain, node, executor = ros
    requests = []

    def on_init(request, response):
        requests.append(request)
        response.success = request.width < 100
        response.target_id = request.target_id or "auto-1"
        response.message = "started" if response.success else "box larger than the image"
        return response

    def on_stop(request, response):
        requests.append(request)
        response.success = True
        response.message = f"stopped {request.target_id or 'all'}"
        return response

    node.create_service(InitTarget, "/fake_tracker/init_target", on_init)
    node.create_service(StopTarget, "/fake_tracker/stop_target", on_stop)

    proc = spawn(
        INIT + ["--node", "/fake_tracker", "--id", "p1", "--tracker", "csrt", "--stamp", "12.5",
                "--timeout", "10", "10,20,30,40"],
        domain,
    )
    code, output = finish(proc, executor)
    assert code == 0, output
    assert "'p1' started" in output
    got = requests[-1]
    assert (got.target_id, got.tracker, got.x, got.y, got.width, got.height) == ("p1", "csrt", 10, 20, 30, 40)
    assert (got.stamp.sec, got.stamp.nanosec) == (12, 500_000_000)

    proc = spawn(INIT + ["--node", "/fake_tracker", "--timeout", "10", "1", "2", "300", "40", "--ros-args", "--log-level", "warn"], domain)
    code, output = finish(proc, executor)
    assert code == 1, output
    assert "refused: box larger than the image" in output
    assert requests[-1].target_id == "" and (requests[-1].stamp.sec, requests[-1].stamp.nanosec) == (0, 0)

    proc = spawn(INIT + ["--node", "/fake_tracker", "--timeout", "10", "--stop", "--id", "p1"], domain)
    code, output = finish(proc, executor)
    assert code == 0, output
    assert "stopped p1" in output


def test_init_client_without_service_exits_2_after_timeout(ros, spawn):
    domain, _, executor = ros
    started = time.monotonic()
    proc = spawn(INIT + ["--node", "/nobody_here", "--timeout", "1.5", "10,20,30,40"], domain)
    code, output = finish(proc, executor, timeout=20.0)
    assert code == 2, output
    assert "/nobody_here/init_target not available" in output
    assert time.monotonic() - started >= 1.5


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give the box"),
        (["1,2,3"], "4 numbers"),
        (["1,2,0,4"], "must be > 0"),
        (["--stamp", "1.5e3", "1,2,3,4"], "--stamp"),
        (["--stop", "1,2,3,4"], "--stop takes no box"),
    ],
)
def test_init_client_usage_errors_exit_2(argv, message, capsys):
    assert init_client.main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_stamp_and_box():
    assert init_client.parse_stamp("7") == (7, 0)
    assert init_client.parse_stamp("7.000000001") == (7, 1)
    assert init_client.parse_stamp("1700000000.25") == (1_700_000_000, 250_000_000)
    assert init_client.parse_box(["-3,4.5,10,20"]) == (-3.0, 4.5, 10.0, 20.0)
    assert init_client.parse_box(["1", "2", "3", "4"]) == (1.0, 2.0, 3.0, 4.0)


def test_hold_until_tracked_repeats_frame_0_until_a_target_is_tracked_on_it(ros, spawn, couple):
    """hold_until_tracked: the first frame goes out again and again (each copy with its own
    stamp, before frame 0's) until a result with a target and the stamp of a copy comes back;
    results without a target, or for other stamps, do not end the hold. Then frame 1 follows
    with its own sequence stamp."""
    domain, node, executor = ros
    rate = 20.0
    images: list[Image] = []
    node.create_subscription(Image, "/cam/image", images.append, QoSProfile(depth=500))
    results = node.create_publisher(TrackedObjectArray, "/test/tracked", QoSProfile(depth=10))
    proc = spawn(
        PUBLISHER + [
            "--ros-args", "-p", f"source:={couple}", "-p", f"rate:={rate}", "-p", "max_frames:=5",
            "-p", "stamp_mode:=sequence", "-p", "stamp_start:=31.0", "-p", "hold_first_frame:=30.0",
            "-p", "hold_until_tracked:=/test/tracked", "-p", "wait_for_subscribers:=1", "-r", "image:=/cam/image",
        ],
        domain,
    )
    first = cv2.imread(str(sorted((couple / "img").glob("*.jpg"))[0]))
    assert spin_until(executor, lambda: len(images) >= 10, 30.0), proc.poll()
    # An empty result (no target yet) on a copy, and a target on a stamp that is no copy.
    from vtrack_ros.msg import TrackedObject

    results.publish(TrackedObjectArray(header=images[5].header))
    bogus = TrackedObjectArray(header=copy.deepcopy(images[5].header), objects=[TrackedObject(target_id="t")])
    bogus.header.stamp.sec += 1000  # a copy: the received message keeps its stamp
    results.publish(bogus)
    count = len(images)
    spin_until(executor, lambda: len(images) >= count + 20, 5.0)
    assert all(np.array_equal(as_array(m), first) for m in images), "the hold ended without a target on a copy"
    # A target on a copy ends it.
    results.publish(TrackedObjectArray(header=images[8].header, objects=[TrackedObject(target_id="t")]))
    code, output = finish(proc, executor, timeout=20.0)
    spin_until(executor, lambda: False, 0.5)
    assert code == 0, output
    assert "a target is tracked on it; playing on" in output
    copies = [m for m in images if stamp_ns(m) < 31_000_000_000]
    played = [m for m in images if stamp_ns(m) > 31_000_000_000]
    assert len(copies) >= count + 10 and all(np.array_equal(as_array(m), first) for m in copies)
    files = sorted((couple / "img").glob("*.jpg"))
    assert [stamp_ns(m) for m in played] == [31_000_000_000 + k * 50_000_000 for k in range(1, 5)]
    for k, message in enumerate(played, start=1):
        np.testing.assert_array_equal(as_array(message), cv2.imread(str(files[k])))
    stamps = [stamp_ns(m) for m in images]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
