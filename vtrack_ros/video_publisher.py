"""`video_publisher`: play a video file, an OTB / image folder or a recorded bag as a camera.

Publishes `image` (sensor_msgs/Image) and `camera_info` (sensor_msgs/CameraInfo, size and
frame_id only: a file has no calibration) so the tracker node can be run, demonstrated and
tested without a camera.  Two pacing modes:

* fixed rate (default): one frame every 1/`rate` seconds;
* lockstep (`lockstep_topic` set): the next frame goes out as soon as a message with the
  stamp of the previous frame arrives on that topic (e.g. the tracker's output), or after
  `lockstep_timeout` seconds, so a slow tracker sees every frame and a fast one is not held
  back by an arbitrary rate.

With `stamp_mode: sequence` the stamps are synthetic, `stamp_start + k / rate` for source
frame k, so a test or an evaluation can map a stamp back to its frame index exactly.

A bag (a rosbag2 folder, sqlite3 or mcap, or a ROS 1 .bag, read with `rosbags` through
`vtrack_core.bags`) is played as recorded: each message of its image topic (`bag_topic`,
default the bag's only image topic) goes out as it was recorded, a sensor_msgs/Image on
`image` or a sensor_msgs/CompressedImage on `image/compressed` (the JPEG bytes untouched, so
the tracker decodes them as on the robot), with its recorded header (`stamp_mode: auto`
keeps the recorded stamp) and its recorded timing: the gaps between the recording times,
divided by `bag_speed`.
"""
from __future__ import annotations

import argparse
import array
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vtrack_ros.cli_args import EXIT_USAGE, parse_own_args

EXIT_OK = 0

# encoding -> (OpenCV conversion from BGR or None, channels)
ENCODINGS: dict[str, tuple[int | None, int]] = {}


def _encodings() -> dict[str, tuple[int | None, int]]:
    """Filled lazily so that importing this module does not need OpenCV."""
    if not ENCODINGS:
        import cv2

        ENCODINGS.update(
            {
                "bgr8": (None, 3),
                "rgb8": (cv2.COLOR_BGR2RGB, 3),
                "mono8": (cv2.COLOR_BGR2GRAY, 1),
                "bgra8": (cv2.COLOR_BGR2BGRA, 4),
                "rgba8": (cv2.COLOR_BGR2RGBA, 4),
            }
        )
    return ENCODINGS


class UsageError(ValueError):
    """A bad parameter or an unreadable source: reported in one line, exit code 2."""


@dataclass
class Settings:
    """The node's parameters, checked once at start-up."""

    source: str
    rate: float = 30.0
    loop: bool = False
    wait_for_subscribers: int = 0
    lockstep_topic: str = ""
    lockstep_timeout: float = 1.0
    start_frame: int = 0
    max_frames: int = 0
    hold_first_frame: float = 0.0
    hold_until_tracked: str = ""
    qos_reliability: str = "reliable"
    qos_depth: int = 10
    frame_id: str = "camera"
    encoding: str = "bgr8"
    stamp_mode: str = "auto"
    stamp_start: float = 1.0
    bag_topic: str = ""
    bag_speed: float = 1.0

    def check(self) -> None:
        if not self.source:
            raise UsageError("parameter 'source' is required: a video file or an image-sequence folder")
        if not self.rate > 0:
            raise UsageError(f"parameter 'rate' must be > 0 Hz, not {self.rate}")
        if self.start_frame < 0 or self.max_frames < 0 or self.wait_for_subscribers < 0:
            raise UsageError("'start_frame', 'max_frames' and 'wait_for_subscribers' must be >= 0")
        if not self.lockstep_timeout > 0:
            raise UsageError(f"parameter 'lockstep_timeout' must be > 0 s, not {self.lockstep_timeout}")
        if self.hold_first_frame < 0:
            raise UsageError("parameter 'hold_first_frame' must be >= 0 s")
        if self.hold_until_tracked and self.hold_count() < 1:
            raise UsageError("parameter 'hold_until_tracked' needs hold_first_frame > 0 (the longest hold, seconds)")
        if self.qos_reliability not in ("reliable", "best_effort"):
            raise UsageError(f"parameter 'qos_reliability' must be reliable or best_effort, not {self.qos_reliability!r}")
        if self.qos_depth < 1:
            raise UsageError("parameter 'qos_depth' must be >= 1")
        if self.encoding not in _encodings():
            raise UsageError(f"parameter 'encoding' must be one of {', '.join(_encodings())}, not {self.encoding!r}")
        if self.stamp_mode not in STAMP_MODES:
            raise UsageError(f"parameter 'stamp_mode' must be one of {', '.join(STAMP_MODES)}, not {self.stamp_mode!r}")
        if not (self.bag_speed > 0 and math.isfinite(self.bag_speed)):
            raise UsageError(f"parameter 'bag_speed' must be a finite factor > 0, not {self.bag_speed}")
        if self.stamp_mode == "sequence" and self.stamp_start - self.hold_count() / self.rate <= 0:
            # A zero stamp means "the latest image" to the tracker's init service.
            raise UsageError(
                "stamp_mode sequence stamps held copies before stamp_start: set stamp_start above hold_first_frame"
            )

    def hold_count(self) -> int:
        """Copies of the first frame published before playing on."""
        return int(round(self.hold_first_frame * self.rate))

    def is_bag(self) -> bool:
        from vtrack_core.bags import is_bag

        return is_bag(self.source)

    def stamps(self) -> str:
        """The stamp mode in effect: `auto` is `recorded` for a bag, else `now`."""
        if self.stamp_mode != "auto":
            return self.stamp_mode
        return "recorded" if self.is_bag() else "now"


STAMP_MODES = ("auto", "now", "sequence", "recorded")


def sequence_stamp_ns(settings: Settings, k: int) -> int:
    """Synthetic stamp of source frame k in nanoseconds (exact for rates like 25, 30, 50)."""
    return int(round(settings.stamp_start * 1e9)) + int(round(k * 1e9 / settings.rate))


def iter_frames(settings: Settings) -> Iterator[tuple[int, np.ndarray]]:
    """(source index, BGR frame) from `start_frame` on, again and again when looping.

    Reuses vtrack_core.video for decoding so the node and `vtrack track` read the same frames.
    """
    from vtrack_core.video import ImageFolderSource, open_source

    while True:
        produced = 0
        with open_source(settings.source) as source:
            if isinstance(source, ImageFolderSource):
                # Index the file list instead of decoding the frames that are skipped.
                if settings.start_frame >= len(source.frames):
                    raise UsageError(f"{settings.source}: start_frame {settings.start_frame} but only {len(source.frames)} frames")
                source.frames = source.frames[settings.start_frame :]
                offset = settings.start_frame
            else:
                offset = 0
            for index, frame in source:
                index += offset
                if index < settings.start_frame:
                    continue
                produced += 1
                yield index, frame
        if produced == 0:
            raise UsageError(f"{settings.source}: no frames at or after start_frame {settings.start_frame}")
        if not settings.loop:
            return


def iter_bag_frames(settings: Settings):
    """(source index, BagFrame) of the bag's topic from `start_frame` on, again and again
    when looping; messages before start_frame are skipped without being decoded."""
    from vtrack_core.bags import BagError, BagSource

    while True:
        produced = 0
        try:
            with BagSource(settings.source, settings.bag_topic or None) as source:
                for frame in source.frames():
                    if frame.index < settings.start_frame:
                        continue
                    produced += 1
                    yield frame.index, frame
        except BagError as error:
            raise UsageError(f"cannot read source: {error}") from None
        if produced == 0:
            raise UsageError(f"{settings.source}: no messages at or after start_frame {settings.start_frame}")
        if not settings.loop:
            return


def check_source(settings: Settings) -> int:
    """Open the source once before any ROS work, so a bad path fails fast; returns its length."""
    from vtrack_core.video import FrameSourceError, open_source

    if not Path(settings.source).exists():
        raise UsageError(f"{settings.source}: no such file or folder")
    if settings.is_bag():
        return check_bag(settings)
    if settings.bag_topic:
        raise UsageError(f"parameter 'bag_topic' applies to a bag source; {settings.source} is not a bag")
    if settings.stamp_mode == "recorded":
        raise UsageError(f"stamp_mode recorded needs a bag source; {settings.source} has no recorded stamps")
    try:
        with open_source(settings.source) as source:
            return len(source)
    except (FrameSourceError, OSError) as error:
        raise UsageError(f"cannot read source: {error}") from None


def check_bag(settings: Settings) -> int:
    """Open the bag and its topic (a missing topic, a non-image topic: exit 2 with the bag's
    image topics); returns its message count."""
    from vtrack_core.bags import BagError, BagSource

    try:
        with BagSource(settings.source, settings.bag_topic or None) as source:
            count = len(source)
    except BagError as error:
        raise UsageError(f"cannot read source: {error}") from None
    if settings.start_frame >= count:
        raise UsageError(f"{settings.source}: start_frame {settings.start_frame} but only {count} messages")
    return count


def bag_message(frame, stamp) -> object:
    """The recorded message as a sensor_msgs Image or CompressedImage, with `stamp` and the
    recorded frame_id; pixels / bytes as recorded."""
    from sensor_msgs.msg import CompressedImage, Image

    recorded = frame.message
    data = array.array("B", memoryview(recorded.data).tobytes())
    if frame.compressed:
        msg = CompressedImage(format=recorded.format)
    else:
        msg = Image(height=int(recorded.height), width=int(recorded.width), encoding=recorded.encoding,
                    is_bigendian=int(recorded.is_bigendian), step=int(recorded.step))
    msg.header.stamp = stamp
    msg.header.frame_id = frame.frame_id
    msg.data = data
    return msg


def to_image_msg(frame: np.ndarray, encoding: str, stamp, frame_id: str):
    """sensor_msgs/Image from a BGR frame, converted to `encoding`."""
    import cv2
    from sensor_msgs.msg import Image

    conversion, channels = _encodings()[encoding]
    data = frame if conversion is None else cv2.cvtColor(frame, conversion)
    data = np.ascontiguousarray(data)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = array.array("B", data.tobytes())  # array.array skips the per-element checks
    return msg


def _message_size(frame) -> tuple[int, int]:
    """(height, width) of a recorded message for its CameraInfo; a compressed one's from its
    JPEG / PNG header (0, 0 where that cannot be read: the tracker will say why)."""
    if not frame.compressed:
        return int(frame.message.height), int(frame.message.width)
    from vtrack_ros.image_conversion import UnsupportedImageError, declared_size

    try:
        width, height = declared_size(np.frombuffer(memoryview(frame.message.data), np.uint8))
    except UnsupportedImageError:
        return 0, 0
    return height, width


class VideoPublisherNode:
    """Holds the ROS objects; the pacing loop lives in `run` so it is easy to follow."""

    def __init__(self, node, settings: Settings) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self.node = node
        self.settings = settings
        self.log = node.get_logger()
        self.stamp_mode = settings.stamps()
        self.bag_topic = ""  # the bag's topic being played, "" for videos and folders
        self.bag_compressed = False
        self.bag_fps = settings.rate
        if settings.is_bag():
            from vtrack_core.bags import BagSource

            with BagSource(settings.source, settings.bag_topic or None) as bag:
                self.bag_topic, self.bag_compressed, self.bag_fps = bag.topic, bag.compressed, bag.fps
        reliability = ReliabilityPolicy.RELIABLE if settings.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth, reliability=reliability)
        if self.bag_compressed:
            # Like image_transport: remapping the base topic `image` moves `image/compressed` too.
            topic = node.resolve_topic_name("image") + "/compressed"
            self.image_pub = node.create_publisher(CompressedImage, topic, qos)
        else:
            self.image_pub = node.create_publisher(Image, "image", qos)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
        self.echoed: set[tuple[int, int]] = set()
        self.lockstep_sub = None
        if settings.lockstep_topic:
            from vtrack_ros.msg import TrackedObjectArray

            self.lockstep_sub = node.create_subscription(
                TrackedObjectArray, settings.lockstep_topic, self._on_echo, QoSProfile(depth=10)
            )
        # hold_until_tracked: stamps that came back on that topic with a target in them.
        self.tracked: set[tuple[int, int]] = set()
        self.hold_sub = None
        if settings.hold_until_tracked:
            from vtrack_ros.msg import TrackedObjectArray

            self.hold_sub = node.create_subscription(
                TrackedObjectArray, settings.hold_until_tracked, self._on_tracked,
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            )
        self.held = 0  # copies of the first frame published
        self.hold_ended_by: str = ""
        self.published = 0  # all publications, held copies included
        self.source_frames = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.lockstep_timeouts = 0
        self.last_due = 0.0  # when the last frame was due (bags: the next one is due a recorded gap later)

    def _on_echo(self, msg) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.echoed.add(stamp)
        if len(self.echoed) > 1000:  # only the latest stamp matters; keep the set small
            self.echoed = {stamp}

    def _on_tracked(self, msg) -> None:
        if msg.objects:
            self.tracked.add((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def wait_for_peers(self, spin) -> bool:
        """Block until enough image subscribers (and a lockstep / hold_until_tracked
        publisher) are matched."""
        wanted = self.settings.wait_for_subscribers
        if wanted <= 0 and self.hold_sub is None:
            return True
        next_log = time.monotonic()
        while True:
            have = self.image_pub.get_subscription_count()
            echo_ok = self.lockstep_sub is None or self.lockstep_sub.get_publisher_count() > 0
            hold_ok = self.hold_sub is None or self.hold_sub.get_publisher_count() > 0
            if have >= wanted and echo_ok and hold_ok:
                return True
            if time.monotonic() >= next_log:
                missing = f"{have}/{wanted} subscribers on {self.image_pub.topic_name}"
                if not echo_ok:
                    missing += f", no publisher on {self.lockstep_sub.topic_name} yet"
                if not hold_ok:
                    missing += f", no publisher on {self.hold_sub.topic_name} yet"
                self.log.info(f"waiting: {missing}")
                next_log = time.monotonic() + 5.0
            spin(0.05)

    def stamp_for(self, k: int, frame=None):
        """Header stamp for source frame k (k < start_frame for held copies); `frame`, a
        BagFrame, gives the recorded stamp (held copies: 1 / rate apart before it)."""
        from builtin_interfaces.msg import Time

        if self.stamp_mode == "sequence":
            ns = sequence_stamp_ns(self.settings, k)
        elif self.stamp_mode == "recorded" and frame is not None:
            ns = frame.stamp_ns - int(round(max(0, self.settings.start_frame - k) * 1e9 / self.settings.rate))
            if ns <= 0:  # a zero stamp means "the latest image" to the tracker's init service
                raise UsageError(f"the recorded stamps start at {frame.stamp_ns / 1e9:.9f} s: too early to stamp "
                                 f"hold_first_frame's copies before them; lower hold_first_frame or use stamp_mode now")
        else:
            return self.node.get_clock().now().to_msg()
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def publish(self, frame, k: int) -> tuple[int, int]:
        """Publish one frame (a BGR array, or a bag's BagFrame as recorded) with its camera
        info; returns its stamp as (sec, nanosec)."""
        from sensor_msgs.msg import CameraInfo

        if isinstance(frame, np.ndarray):
            stamp = self.stamp_for(k)
            image = to_image_msg(frame, self.settings.encoding, stamp, self.settings.frame_id)
            size = image.height, image.width
        else:
            stamp = self.stamp_for(k, frame)
            image = bag_message(frame, stamp)
            size = _message_size(frame)
        info = CameraInfo()
        info.header = image.header
        info.height, info.width = size
        self.image_pub.publish(image)
        self.info_pub.publish(info)
        now = time.monotonic()
        self.first_time = now if self.first_time is None else self.first_time
        self.last_time = now
        self.published += 1
        return stamp.sec, stamp.nanosec

    def run(self, spin) -> None:
        """Publish until the source (or max_frames) ends; `spin(t)` serves callbacks for up to t s."""
        s = self.settings
        period = 1.0 / s.rate
        self.next_due = self.last_due = time.monotonic()
        previous_log: int | None = None
        frames = iter_bag_frames(s) if self.bag_topic else iter_frames(s)
        for index, frame in frames:
            if self.source_frames == 0 and s.hold_count() > 0:
                self._hold(frame, spin)
            else:
                if self.bag_topic and previous_log is not None:
                    # The recorded gap (a loop starting again: one frame period of the bag).
                    gap_ns = frame.log_ns - previous_log
                    gap = (gap_ns / 1e9 if gap_ns >= 0 else 1.0 / self.bag_fps) / s.bag_speed
                    self.next_due = self.last_due + gap
                    if time.monotonic() - self.next_due > max(gap, 1e-3):  # fell behind: no burst
                        self.next_due = time.monotonic()
                self._paced(frame, s.start_frame + self.source_frames, spin, period)
            if self.bag_topic:
                previous_log = frame.log_ns
            self.source_frames += 1
            if s.max_frames and self.source_frames >= s.max_frames:
                break

    def _paced(self, frame, k: int, spin, period: float) -> tuple[int, int]:
        """Publish frame k at its time (fixed rate) or after the last frame's echo (lockstep)."""
        if self.settings.lockstep_topic:
            stamp = self.publish(frame, k)
            self._wait_echo(stamp, spin)
            return stamp
        while (left := self.next_due - time.monotonic()) > 0:
            spin(left)
        stamp = self.publish(frame, k)
        self.last_due = self.next_due
        self.next_due += period
        if time.monotonic() - self.next_due > period:  # fell behind (slow decode): no burst
            self.next_due = time.monotonic()
        return stamp

    def _hold(self, frame, spin) -> None:
        """The first frame, again and again for hold_first_frame s: copy j gets the k (and
        the sequence stamp) start_frame - holds + j, the last copy is the frame itself. With
        hold_until_tracked, the hold ends as soon as a result with a target and the stamp of
        one of the copies comes back on that topic (the target was started on the first
        frame), else after hold_first_frame s."""
        s = self.settings
        holds = s.hold_count()
        copies: set[tuple[int, int]] = set()
        for j in range(holds + 1):
            copies.add(self._paced(frame, s.start_frame - holds + j, spin, 1.0 / s.rate))
            self.held += 1
            if self.hold_sub is not None and copies & self.tracked:
                self.hold_ended_by = "tracked"
                self.log.info(f"first frame held for {self.held} copies: a target is tracked on it; playing on")
                return
        if self.hold_sub is not None:
            self.hold_ended_by = "timeout"
            self.log.warning(f"no target tracked on the first frame within hold_first_frame ({s.hold_first_frame:g} s) "
                             f"on {self.hold_sub.topic_name}: playing on")

    def _wait_echo(self, stamp: tuple[int, int], spin) -> None:
        deadline = time.monotonic() + self.settings.lockstep_timeout
        while stamp not in self.echoed:
            left = deadline - time.monotonic()
            if left <= 0:
                self.lockstep_timeouts += 1
                self.log.debug(f"lockstep: no echo of {stamp[0]}.{stamp[1]:09d} within {self.settings.lockstep_timeout} s")
                return
            spin(min(left, 0.1))
        self.echoed.discard(stamp)

    def flush(self, timeout: float = 2.0) -> None:
        """Let reliable subscribers fetch the last frames before the publisher goes away."""
        from rclpy.duration import Duration

        try:
            self.image_pub.wait_for_all_acked(Duration(seconds=timeout))
        except Exception:  # noqa: BLE001 - best effort on shutdown; best_effort QoS has no acks
            pass

    def summary(self) -> str:
        elapsed = (self.last_time - self.first_time) if self.first_time is not None and self.last_time else 0.0
        rate = (self.published - 1) / elapsed if self.published > 1 and elapsed > 0 else 0.0
        requested = (f"recorded timing x{self.settings.bag_speed:g}" if self.bag_topic and not self.settings.lockstep_topic
                     else f"{self.settings.rate:g} Hz requested")
        text = (
            f"published {self.published} images ({self.source_frames} source frames) "
            f"in {elapsed:.2f} s: {rate:.1f} Hz achieved, {requested}"
        )
        if self.settings.lockstep_topic:
            text += f"; lockstep on {self.lockstep_sub.topic_name}: {self.lockstep_timeouts} timeouts"
        return text


def declare_settings(node, source_arg: str | None) -> Settings:
    """Declare every parameter (numbers accept ints or floats) and read them into Settings."""
    from rcl_interfaces.msg import ParameterDescriptor

    defaults = Settings(source="")
    values = {}
    for name, default in vars(defaults).items():
        if isinstance(default, float):
            # `-p rate:=50` gives an integer; accept it rather than fail on the type.
            param = node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True))
        else:
            param = node.declare_parameter(name, default)
        values[name] = param.value
    for name, default in vars(defaults).items():
        value = values[name]
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"parameter '{name}' must be a number, not {value!r}")
            values[name] = float(value)
    if not values["source"] and source_arg:
        values["source"] = source_arg
    settings = Settings(**values)
    settings.check()
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `video_publisher` console script and `ros2 run vtrack_ros video_publisher`."""
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="video_publisher",
        description="Publish a video file or an image-sequence folder as sensor_msgs/Image. "
        "Parameters go after --ros-args, e.g. -p source:=walk.mp4 -p rate:=15.0",
    )
    parser.add_argument("source", nargs="?", help="shorthand for -p source:=PATH")
    options = parse_own_args(parser, args)
    if isinstance(options, int):
        return options

    rclpy.init(args=["video_publisher", *args])
    node = None
    player: VideoPublisherNode | None = None
    try:
        node = rclpy.create_node("video_publisher")
        try:
            settings = declare_settings(node, options.source)
            length = check_source(settings)
        except (UsageError, ParameterException) as error:
            node.get_logger().error(str(error))
            return EXIT_USAGE
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        player = VideoPublisherNode(node, settings)
        if player.bag_topic and (settings.encoding, settings.frame_id) != ("bgr8", "camera"):
            node.get_logger().warning("'encoding' and 'frame_id' do not apply to a bag: its messages go out as recorded")

        def spin(timeout: float) -> None:
            executor.spin_once(timeout_sec=max(0.0, timeout))

        if player.bag_topic:
            kind = "CompressedImage" if player.bag_compressed else "Image"
            pacing = "" if settings.lockstep_topic else f" at recorded timing x{settings.bag_speed:g}"
            played = f"{settings.source} {player.bag_topic} ({length} {kind} messages) -> {player.image_pub.topic_name} " \
                     f"as recorded{pacing}, stamps {player.stamp_mode}"
        else:
            played = f"{settings.source} ({length or '?'} frames) -> {player.image_pub.topic_name} " \
                     f"as {settings.encoding} at {settings.rate:g} Hz"
        node.get_logger().info(
            played
            + (f", lockstep on {player.lockstep_sub.topic_name}" if player.lockstep_sub else "")
            + (", looping" if settings.loop else "")
        )
        player.wait_for_peers(spin)
        try:
            player.run(spin)
        except UsageError as error:
            node.get_logger().error(str(error))
            return EXIT_USAGE
        player.flush()
        node.get_logger().info(player.summary())
        return EXIT_OK
    except (KeyboardInterrupt, ExternalShutdownException):
        if player is not None:
            print(f"video_publisher: interrupted: {player.summary()}", file=sys.stderr)
        return EXIT_OK
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
