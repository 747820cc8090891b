"""Bags on real frames (dev Couple): `vtrack bag` writes each format, `vtrack_core.bags` and
plain rosbags read them back (pixels, bytes and stamps of the source frames), the real
`video_publisher` plays one to a subscriber with the recorded stamps and timing, `vtrack
track --bag` follows the couple, `vtrack-demo` runs the node on one, and bad bags, topics
and options end in one line with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("rosbags", reason="rosbags is not installed: run tools/setup.sh")

from vtrack_core import Box  # noqa: E402
from vtrack_core.bags import BagError, BagSource, camera_info_topic, format_stamp, parse_stamp_ns  # noqa: E402

BIN = Path(sys.executable).parent
START = "1700000000.25"  # an epoch-like first stamp: nanoseconds must survive the float range
START_NS = 1_700_000_000_250_000_000


def vtrack(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    command = [str(BIN / "vtrack")] if (BIN / "vtrack").exists() else [sys.executable, "-m", "vtrack_core.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def couple(dev_dataset_dir: Path) -> Path:
    return dev_dataset_dir / "Couple"


@pytest.fixture(scope="module")
def couple_files(couple: Path) -> list[Path]:
    return sorted((couple / "img").glob("*.jpg"))


@pytest.fixture(scope="module")
def couple_gt(couple: Path) -> np.ndarray:
    return np.loadtxt(couple / "groundtruth_rect.txt", delimiter=",")


def write_bag(couple: Path, out: Path, *options: str) -> Path:
    done = vtrack("bag", "--sequence", str(couple), "--out", str(out), *options)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([Box.from_xywh(x).iou(Box.from_xywh(y)) for x, y in zip(a, b)])


# --- writing and reading ------------------------------------------------------------------
FORMATS = [("rosbag2-sqlite3", ""), ("rosbag2-mcap", ""), ("ros1", ".bag")]


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
@pytest.mark.parametrize("fmt, suffix", FORMATS, ids=[f for f, _ in FORMATS])
def test_vtrack_bag_round_trip(couple, couple_files, tmp_path, fmt, suffix, compressed):
    """Every frame comes back with the source's pixels (compressed: the file's own JPEG bytes,
    decoding to the same pixels) and the stamp start + k / rate, read by our reader and by
    rosbags' own."""
    out = tmp_path / f"couple{suffix}"
    options = ["--format", fmt, "--rate", "25", "--start", START, "--frame-id", "couple_cam"]
    write_bag(couple, out, *options, *(["--compressed"] if compressed else []))
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    if fmt == "ros1":
        assert out.is_file()
    else:
        storage = "mcap" if fmt == "rosbag2-mcap" else "sqlite3"
        assert f"storage_identifier: {storage}" in (out / "metadata.yaml").read_text()
        assert list(out.glob("*.mcap" if storage == "mcap" else "*.db3"))

    expected_stamps = [START_NS + k * 40_000_000 for k in range(len(couple_files))]
    with BagSource(out) as source:  # the only image topic, chosen without being named
        assert source.topic == topic and source.compressed == compressed
        assert len(source) == len(couple_files) == 140
        assert source.fps == pytest.approx(25.0, rel=1e-6)
        read = 0
        for frame in source.frames():
            file = couple_files[frame.index]
            assert frame.stamp_ns == frame.log_ns == expected_stamps[frame.index]
            assert frame.frame_id == "couple_cam"
            if compressed:
                assert bytes(frame.message.data) == file.read_bytes()
                assert "jpeg" in frame.message.format
            else:
                assert (frame.message.encoding, frame.message.step) == ("bgr8", frame.message.width * 3)
            np.testing.assert_array_equal(frame.bgr(), cv2.imread(str(file)))
            read += 1
        assert read == 140 and source.stamps == expected_stamps

    # Independently of BagSource: the topics, types and counts rosbags sees.
    from rosbags.highlevel import AnyReader

    with AnyReader([out]) as reader:
        topics = {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
        info_conn = [c for c in reader.connections if c.topic == "/camera/camera_info"]
        _, _, raw = next(reader.messages(connections=info_conn))
        info = reader.deserialize(raw, info_conn[0].msgtype)
    kind = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    assert topics == {topic: (kind, 140), "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 140)}
    assert (info.width, info.height, info.header.frame_id) == (320, 240, "couple_cam")


def test_stamps_are_exact_nanoseconds():
    assert parse_stamp_ns("1700000000.033333333") == 1_700_000_000_033_333_333
    assert parse_stamp_ns("12") == 12_000_000_000
    assert format_stamp(1_700_000_000_033_333_333) == "1700000000.033333333"
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_stamp_ns(bad)
    assert camera_info_topic("/camera/image_raw") == "/camera/camera_info"
    assert camera_info_topic("/camera/image_raw/compressed") == "/camera/camera_info"
    assert camera_info_topic("/image") == "/camera_info"


@pytest.fixture(scope="module")
def two_image_topics(couple_files, tmp_path_factory) -> Path:
    """A rosbag2 bag with two image topics (a stereo pair) and a string topic, written with
    rosbags directly from Couple frames."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    out = tmp_path_factory.mktemp("stereo") / "stereo"
    Image, Header, Time = (store.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    with Writer(out, version=9) as writer:
        left = writer.add_connection("/left/image_raw", Image.__msgtype__, typestore=store)
        right = writer.add_connection("/right/image_raw", Image.__msgtype__, typestore=store)
        note = writer.add_connection("/note", "std_msgs/msg/String", typestore=store)
        for k, file in enumerate(couple_files[:3]):
            image = cv2.imread(str(file))
            stamp = 5_000_000_000 + k * 100_000_000
            message = Image(header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="l"),
                            height=240, width=320, encoding="bgr8", is_bigendian=0, step=960, data=image.reshape(-1))
            writer.write(left, stamp, store.serialize_cdr(message, Image.__msgtype__))
            writer.write(right, stamp, store.serialize_cdr(message, Image.__msgtype__))
            writer.write(note, stamp, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"),
                                                          "std_msgs/msg/String"))
    return out


def test_reader_errors_say_what_is_wrong(couple, two_image_topics, tmp_path):
    with pytest.raises(BagError, match=r"2 image topics, name one: /left/image_raw \(sensor_msgs/msg/Image\), "
                                       r"/right/image_raw"):
        BagSource(two_image_topics)
    with pytest.raises(BagError, match=r"no topic /camera/image_raw; image topics: /left/image_raw"):
        BagSource(two_image_topics, "/camera/image_raw")
    with pytest.raises(BagError, match=r"/note is std_msgs/msg/String, not an image topic"):
        BagSource(two_image_topics, "/note")
    with BagSource(two_image_topics, "/right/image_raw") as right:
        assert len(right) == 3 and [f.stamp_ns for f in right.frames()][-1] == 5_200_000_000
    with pytest.raises(BagError, match="not a bag"):
        BagSource(couple)
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"#ROSBAG V1.0\nnot really")
    with pytest.raises(BagError, match="cannot read this bag"):
        BagSource(garbage)
    with pytest.raises(BagError, match="no such file"):
        BagSource(tmp_path / "none.bag")


def test_vtrack_bag_usage_errors_exit_2(couple, tmp_path):
    write_bag(couple, tmp_path / "once", "--max-frames", "2")
    cases = [
        ([str(couple), str(tmp_path / "once")], "exists already"),
        ([str(couple), str(tmp_path / "x"), "--format", "ros1"], "a ROS 1 bag is a file named *.bag"),
        ([str(couple), str(tmp_path / "x.bag"), "--format", "rosbag2-mcap"], "a rosbag2 bag is a folder"),
        ([str(couple), str(tmp_path / "x"), "--rate", "0"], "rate must be > 0"),
        ([str(couple), str(tmp_path / "x"), "--start", "soon"], "start: expected seconds"),
        ([str(couple), str(tmp_path / "x"), "--topic", "camera"], "absolute ROS name"),
        ([str(tmp_path / "nothing"), str(tmp_path / "x")], "no such file or folder"),
        ([str(couple), str(tmp_path / "no" / "x")], "no such folder"),
    ]
    for (sequence, out, *extra), message in cases:
        done = vtrack("bag", "--sequence", sequence, "--out", out, *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.bag").exists()


# --- vtrack track --bag -------------------------------------------------------------------
@pytest.mark.slow
def test_track_bag_follows_the_couple_as_on_the_sequence(couple, couple_gt, tmp_path):
    """csrt on a compressed mcap bag of Couple's first 60 frames: the same boxes as `vtrack
    track --sequence` on the JPEG files (same pixels, same tracker), on the target (mean
    IoU), with each message's recorded stamp beside its box."""
    frames = 60
    bag = write_bag(couple, tmp_path / "couple_bag", "--format", "rosbag2-mcap", "--compressed",
                    "--start", START, "--max-frames", str(frames))
    init = ",".join(f"{v:g}" for v in couple_gt[0])
    done = vtrack("track", "--tracker", "csrt", "--bag", str(bag), "--init", init, "--out", str(tmp_path / "bag"))
    assert done.returncode == 0, done.stderr
    assert f"{frames} frames" in done.stdout and "stamps.txt" in done.stdout
    boxes = np.loadtxt(tmp_path / "bag" / "boxes.txt", delimiter=",", ndmin=2)
    assert boxes.shape == (frames, 6)
    np.testing.assert_array_equal(boxes[0], [*couple_gt[0], 1.0, 0])
    ious = iou(boxes[1:, :4], couple_gt[1:frames])
    assert ious.mean() > 0.6, ious  # measured 0.68 on these frames
    stamps = (tmp_path / "bag" / "stamps.txt").read_text().split()
    assert stamps == [format_stamp(START_NS + round(k * 1e9 / 30)) for k in range(frames)]
    # Frame for frame what the tracker does on the image files.
    done = vtrack("track", "--tracker", "csrt", "--sequence", str(couple), "--init", init,
                  "--max-frames", str(frames), "--out", str(tmp_path / "seq"))
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(boxes, np.loadtxt(tmp_path / "seq" / "boxes.txt", delimiter=",", ndmin=2))
    capture = cv2.VideoCapture(str(tmp_path / "bag" / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0, abs=0.1)
    capture.release()


def test_track_bag_init_stamp_starts_on_that_message(couple, couple_gt, tmp_path):
    """--init-stamp: messages before it get no box (NaN lines, so line i stays message i),
    the box starts on the first message stamped at or after it (here between frames 9 and 10),
    and csrt follows the couple from there (ROS 1 bag, raw)."""
    bag = write_bag(couple, tmp_path / "couple.bag", "--rate", "10", "--start", START, "--max-frames", "40")
    init = ",".join(f"{v:g}" for v in couple_gt[10])
    init_stamp = format_stamp(START_NS + 950_000_000)  # after frame 9 (0.9 s), before frame 10 (1.0 s)
    done = vtrack("track", "--tracker", "csrt", "--bag", str(bag), "--topic", "/camera/image_raw",
                  "--init", init, "--init-stamp", init_stamp, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert f"init on message 10, stamp {format_stamp(START_NS + 1_000_000_000)}" in done.stdout
    boxes = np.loadtxt(tmp_path / "out" / "boxes.txt", delimiter=",", ndmin=2)
    assert boxes.shape == (40, 6)
    assert np.isnan(boxes[:10, :5]).all() and (boxes[:10, 5] == -1).all()
    np.testing.assert_array_equal(boxes[10], [*couple_gt[10], 1.0, 0])
    assert iou(boxes[11:, :4], couple_gt[11:40]).mean() > 0.5


def test_track_bag_errors_exit_2_in_one_line(couple, couple_gt, two_image_topics, tmp_path):
    bag = write_bag(couple, tmp_path / "couple_bag", "--max-frames", "5", "--start", START)
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"not a bag at all")
    box = ",".join(f"{v:g}" for v in couple_gt[0])
    cases = [
        (["--bag", str(bag), "--topic", "/nope", "--init", box], "no topic /nope; image topics: /camera/image_raw"),
        (["--bag", str(bag), "--topic", "/camera/camera_info", "--init", box],
         "/camera/camera_info is sensor_msgs/msg/CameraInfo, not an image topic"),
        (["--bag", str(two_image_topics), "--init", box], "2 image topics, name one"),
        (["--bag", str(couple), "--init", box], "not a bag"),
        (["--bag", str(garbage), "--init", box], "cannot read this bag"),
        (["--bag", str(bag)], "--init x,y,w,h is required with --bag"),
        (["--bag", str(bag), "--init", box, "--init-stamp", "soon"], "--init-stamp: expected seconds"),
        (["--bag", str(bag), "--init", box, "--init-stamp", "1800000000"], "no message on /camera/image_raw stamped "
                                                                           "at or after --init-stamp 1800000000.0"),
        (["--sequence", str(couple), "--topic", "/camera/image_raw"], "--topic applies to --bag only"),
    ]
    for extra, message in cases:
        done = vtrack("track", "--tracker", "csrt", *extra, "--out", str(tmp_path / "out"))
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- video_publisher on a bag, seen by a real subscriber ----------------------------------
rclpy = None


def _ros():
    global rclpy
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")
    return rclpy


@pytest.fixture
def ros():
    """(domain id, node, executor) in a fresh ROS domain."""
    _ros()
    from ros_helpers import private_ros_node

    with private_ros_node("bag_test") as handles:
        yield handles


def publisher() -> list[str]:
    path = BIN / "video_publisher"
    return [str(path)] if path.exists() else [sys.executable, "-m", "vtrack_ros.video_publisher"]


def spin_until(executor, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    return predicate()


def finish(proc: subprocess.Popen, executor, timeout: float = 20.0) -> tuple[int, str]:
    assert spin_until(executor, lambda: proc.poll() is not None, timeout), "process did not exit in time"
    return proc.returncode, proc.stdout.read() if proc.stdout else ""


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


PLAYED = [("rosbag2-sqlite3", "", False), ("rosbag2-mcap", "", True), ("ros1", ".bag", False)]


@pytest.mark.ros
@pytest.mark.parametrize("fmt, suffix, compressed", PLAYED, ids=["sqlite3-raw", "mcap-compressed", "ros1-raw"])
def test_publisher_plays_a_bag_with_its_stamps_and_timing(ros, spawn, couple, couple_files, tmp_path,
                                                          fmt, suffix, compressed):
    """A 10 Hz bag at bag_speed 2 arrives 50 ms apart (not at `rate`, 50 Hz, which only
    spaces the copies of hold_first_frame), each message with its recorded stamp and
    frame_id and the source's pixels (compressed: the JPEG bytes, on image/compressed of the
    remapped image topic), after 5 held copies of frame 0 stamped 20 ms apart before it."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    domain, node, executor = ros
    frames = 20
    bag = write_bag(couple, tmp_path / f"couple{suffix}", "--format", fmt, "--rate", "10", "--start", START,
                    "--max-frames", str(frames), "--frame-id", "couple_cam", *(["--compressed"] if compressed else []))
    received: list[tuple[float, object]] = []
    infos: list[CameraInfo] = []
    kind, topic = (CompressedImage, "/cam/image/compressed") if compressed else (Image, "/cam/image")
    node.create_subscription(kind, topic, lambda m: received.append((time.monotonic(), m)), QoSProfile(depth=100))
    node.create_subscription(CameraInfo, "/cam/camera_info", infos.append, QoSProfile(depth=100))
    proc = spawn(publisher() + [
        "--ros-args", "-p", f"source:={bag}", "-p", "bag_speed:=2.0", "-p", "rate:=50.0",
        "-p", "hold_first_frame:=0.1", "-p", "wait_for_subscribers:=1",
        "-r", "image:=/cam/image", "-r", "camera_info:=/cam/camera_info"], domain)
    code, output = finish(proc, executor, timeout=30.0)
    spin_until(executor, lambda: len(received) >= frames + 5 and len(infos) >= frames + 5, 2.0)
    assert code == 0, output
    assert f"published {frames + 5} images ({frames} source frames)" in output, output
    assert "recorded timing x2" in output

    recorded = [START_NS + k * 100_000_000 for k in range(frames)]
    held = [START_NS - j * 20_000_000 for j in range(5, 0, -1)]
    assert [stamp_ns(m) for _, m in received] == held + recorded
    assert all(m.header.frame_id == "couple_cam" for _, m in received)
    played = [m for _, m in received][5:]
    for k, message in enumerate(played):
        if compressed:
            assert bytes(message.data) == couple_files[k].read_bytes()
        else:
            assert (message.encoding, message.width, message.height, message.step) == ("bgr8", 320, 240, 960)
            pixels = np.frombuffer(bytes(message.data), np.uint8).reshape(240, 320, 3)
            np.testing.assert_array_equal(pixels, cv2.imread(str(couple_files[k])))
    assert {stamp_ns(i) for i in infos} == set(held + recorded)
    assert all((i.width, i.height, i.header.frame_id) == (320, 240, "couple_cam") for i in infos)
    arrivals = np.array([t for t, _ in received])
    gaps = np.diff(arrivals[5:])
    assert 0.04 <= np.median(gaps) <= 0.065, gaps  # 100 ms recorded / bag_speed 2
    assert arrivals[-1] - arrivals[5] >= 0.9 * (frames - 1) * 0.05, gaps
    assert np.median(np.diff(arrivals[:6])) < 0.035  # the held copies: 1 / rate (20 ms)


@pytest.mark.ros
def test_publisher_bag_errors_exit_2(ros, spawn, couple, two_image_topics, tmp_path):
    domain, _, executor = ros
    bag = write_bag(couple, tmp_path / "couple_bag", "--max-frames", "3", "--start", START)
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"not a bag at all")
    cases = [
        ([f"source:={bag}", "bag_topic:=/nope"], "no topic /nope; image topics: /camera/image_raw"),
        ([f"source:={bag}", "bag_topic:=/camera/camera_info"], "/camera/camera_info is sensor_msgs/msg/CameraInfo, "
                                                               "not an image topic"),
        ([f"source:={two_image_topics}"], "2 image topics, name one: /left/image_raw"),
        ([f"source:={garbage}"], "cannot read this bag"),
        ([f"source:={couple}", "bag_topic:=/camera/image_raw"], "'bag_topic' applies to a bag source"),
        ([f"source:={couple}", "stamp_mode:=recorded"], "stamp_mode recorded needs a bag source"),
        ([f"source:={bag}", "bag_speed:=0.0"], "'bag_speed' must be a finite factor > 0"),
        ([f"source:={bag}", "start_frame:=3"], "start_frame 3 but only 3 messages"),
        ([f"source:={bag}", "hold_first_frame:=2.0", "rate:=1.0", "wait_for_subscribers:=0"],
         None),  # stamps from 1.7e9 s: holding 2 s before them is fine
    ]
    for params, message in cases:
        args = [item for p in params for item in ("-p", p)]
        proc = spawn(publisher() + ["--ros-args", *args], domain)
        code, output = finish(proc, executor)
        if message is None:
            assert code == 0, output
            continue
        assert code == 2, (params, output)
        assert message in output and "Traceback" not in output, (params, output)


# --- the node on a bag: vtrack-demo (what benchmarks/node_latency.py --bag runs) ----------
@pytest.mark.ros
@pytest.mark.slow
def test_demo_tracks_a_compressed_bag_through_the_node(couple, couple_gt, tmp_path):
    """vtrack-demo --video BAG --lockstep: the publisher plays the recorded JPEGs on
    image/compressed, each once the node has answered the one before, and the node
    (image_transport compressed) tracks the couple on every frame from frame 1. Lockstep, so
    that what is counted does not depend on the machine's load: at the recorded timing a loaded
    clean-clone CI run tracked 39, 29, 13 and 6 of 39 frames. The recorded timing itself is
    checked by test_publisher_plays_a_bag_with_its_stamps_and_timing."""
    from ros_helpers import fresh_domain_id

    _ros()
    frames = 40
    bag = write_bag(couple, tmp_path / "couple_bag", "--format", "rosbag2-mcap", "--compressed",
                    "--max-frames", "60", "--start", START)
    demo = BIN / "vtrack-demo"
    command = [str(demo)] if demo.exists() else [sys.executable, "-m", "vtrack_ros.demo"]
    env = dict(os.environ, VTRACK_DEMO_DOMAIN_ID=str(fresh_domain_id()))
    init = ",".join(f"{v:g}" for v in couple_gt[0])
    out = tmp_path / "demo"
    done = subprocess.run([*command, "--tracker", "csrt", "--video", str(bag), "--init", init, "--lockstep",
                           "--max-frames", str(frames), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    # Each frame waits up to lockstep_timeout (1 s) for its answer: only a stall of a second
    # could cost one.
    assert summary["frames"] == frames and summary["processed_frames"] >= frames - 3, summary
    assert "/vtrack_demo/image/compressed" in (out / "tracker_node.log").read_text()
    assert "lockstep on /tracker_node/tracked_objects" in (out / "video_publisher.log").read_text()
    boxes = np.loadtxt(out / "boxes.txt", delimiter=",", ndmin=2)[:, :4]
    tracked = np.isfinite(boxes).all(axis=1)
    assert iou(boxes[1:][tracked[1:]], couple_gt[1:frames][tracked[1:]]).mean() > 0.6
    assert (out / "overlay.mp4").stat().st_size > 0

    # Without --init a bag is refused (it has no ground truth), in one line.
    done = subprocess.run([*command, "--video", str(bag), "--out", str(tmp_path / "no_init")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is a bag: give the box on its first frame with --init" in done.stderr
