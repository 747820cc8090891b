"""Recorded camera topics: read an image topic from a bag, write a sequence as one.

Bags are read and written with the `rosbags` library (pure Python, no ROS install): a
rosbag2 folder (sqlite3 or mcap storage, with its metadata.yaml) or a ROS 1 `.bag` file.
A topic of `sensor_msgs/Image` or `sensor_msgs/CompressedImage` becomes frames like a video:

    with BagSource("robot_run", "/camera/image_raw") as source:   # topic optional if only one
        for frame in source.frames():     # BagFrame: index, header stamp, recording time, message
            bgr = frame.bgr()

`BagSource` is a `FrameSource` too (`for index, bgr in source`), so `vtrack track` and the
demo's overlay read a bag as they read a video. `write_sequence_bag` writes an OTB-layout
sequence as a bag with stamps start + k / rate, so tests and benchmarks use real bags.

Nothing here needs ROS: the messages are rosbags' own dataclasses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .video import FrameSource, FrameSourceError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED)
FORMATS = ("rosbag2-sqlite3", "rosbag2-mcap", "ros1")
# rosbag2 storage files; such a file inside a bag folder names the folder.
_STORAGE_SUFFIXES = (".db3", ".mcap")


class BagError(FrameSourceError):
    """A bag that cannot be read as frames (not a bag, no such topic, not an image topic, a
    message that does not decode); the message names the path and the reason in one line."""


def _need_rosbags() -> None:
    """rosbags comes with the ROS requirements (requirements/ros.txt); a pip install of the
    library alone may lack it: say so in one line rather than with an ImportError."""
    try:
        import rosbags.highlevel  # noqa: F401
        import rosbags.image  # noqa: F401
    except ImportError:
        raise BagError("bags need the rosbags library: pip install rosbags rosbags-image "
                       "(in requirements/ros.txt, which tools/setup.sh installs)") from None


def bag_path(path: str | Path) -> Path | None:
    """The bag `path` names, or None if it is no bag: a `.bag` file (ROS 1), a folder with a
    metadata.yaml (rosbag2), or a `.db3` / `.mcap` file inside such a folder."""
    path = Path(path)
    if path.suffix == ".bag" and path.is_file():
        return path
    if path.is_dir() and (path / "metadata.yaml").is_file():
        return path
    if path.suffix in _STORAGE_SUFFIXES and path.is_file() and (path.parent / "metadata.yaml").is_file():
        return path.parent
    return None


def is_bag(path: str | Path) -> bool:
    return bag_path(path) is not None


def parse_stamp_ns(text: str, option: str = "stamp") -> int:
    """Seconds as written (e.g. 1700000000.033333333) to integer nanoseconds, exactly."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{option}: expected seconds like 12.5, got {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{option}: expected finite seconds >= 0, got {text!r}")
    return int((value * 1_000_000_000).to_integral_value())


def format_stamp(ns: int) -> str:
    """Integer nanoseconds as exact seconds, `sec.nanosec`."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class BagFrame:
    """One image message of the topic, in recording order."""

    index: int
    log_ns: int  # when the recorder got it (the bag's own timestamp): the timing to replay
    stamp_ns: int  # its header stamp, as recorded
    frame_id: str
    msgtype: str  # IMAGE or COMPRESSED
    message: object  # the rosbags message (fields as in sensor_msgs)
    _bgr: np.ndarray | None = field(default=None, repr=False)

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED

    def bgr(self) -> np.ndarray:
        """The image as HxWx3 uint8 BGR (decoded once)."""
        if self._bgr is None:
            self._bgr = decode_bgr(self.message, self.msgtype, f"message {self.index}")
        return self._bgr


def decode_bgr(message, msgtype: str, what: str = "message") -> np.ndarray:
    """sensor_msgs Image (8-bit encodings, padded rows too) or CompressedImage to BGR."""
    from rosbags.image.image import ImageConversionError, ImageFormatError, convert_color, to_cvtype

    data = np.frombuffer(memoryview(message.data), np.uint8)
    if msgtype == COMPRESSED:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise BagError(f"{what}: cannot decode the compressed image (format {message.format!r})")
        return image
    try:
        depth, _, _, channels = to_cvtype(message.encoding)
    except (ImageFormatError, KeyError):
        raise BagError(f"{what}: unknown image encoding {message.encoding!r}") from None
    if depth != 8:
        raise BagError(f"{what}: {depth}-bit images ({message.encoding}) are not supported: trackers need 8-bit")
    height, width, step = int(message.height), int(message.width), int(message.step)
    row = width * channels
    if height <= 0 or width <= 0 or step < row or data.size < step * (height - 1) + row:
        raise BagError(f"{what}: {data.size} bytes do not hold a {width}x{height} {message.encoding} image "
                       f"with step {step}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row), strides=(step, 1))
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    encoding = {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8"}.get(message.encoding, message.encoding)
    try:
        return np.ascontiguousarray(convert_color(pixels, encoding, "bgr8"))
    except (ImageConversionError, ImageFormatError, cv2.error) as error:
        raise BagError(f"{what}: cannot convert {message.encoding} to bgr8: {error}") from None


def _describe(topics: dict[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in sorted(topics.items())) or "none"


class BagSource(FrameSource):
    """One image topic of a bag as frames. Opening reads only the index (topics, counts);
    messages are read and deserialised as they are iterated, decoded only when asked."""

    def __init__(self, path: str | Path, topic: str | None = None) -> None:
        _need_rosbags()
        from rosbags.highlevel import AnyReader, AnyReaderError

        given = Path(path)
        if not given.exists():
            raise BagError(f"{given}: no such file or folder")
        found = bag_path(given)
        if found is None:
            raise BagError(f"{given}: not a bag (expected a rosbag2 folder with metadata.yaml, or a ROS 1 .bag file)")
        self.path = found
        self.ground_truth = None
        self._reader = AnyReader([found])
        try:
            self._reader.open()
        except (AnyReaderError, FileNotFoundError, OSError, ValueError, KeyError) as error:
            raise BagError(f"{found}: cannot read this bag: {error}") from None
        try:
            self._choose(topic)
        except BagError:
            self.close()
            raise
        #: header stamps of the messages iterated so far (line i of a boxes file: message i)
        self.stamps: list[int] = []

    def _choose(self, topic: str | None) -> None:
        topics = {name: info.msgtype or "mixed types" for name, info in self._reader.topics.items()}
        images = {name: kind for name, kind in topics.items() if kind in IMAGE_TYPES}
        if topic:
            if topic not in topics:
                raise BagError(f"{self.path}: no topic {topic}; image topics: {_describe(images)}"
                               + ("" if images else f"; topics: {_describe(topics)}"))
            if topic not in images:
                raise BagError(f"{self.path}: {topic} is {topics[topic]}, not an image topic "
                               f"(sensor_msgs/msg/Image or CompressedImage); image topics: {_describe(images)}")
        elif len(images) == 1:
            topic = next(iter(images))
        elif not images:
            raise BagError(f"{self.path}: no image topic (sensor_msgs/msg/Image or CompressedImage); "
                           f"topics: {_describe(topics)}")
        else:
            raise BagError(f"{self.path}: {len(images)} image topics, name one: {_describe(images)}")
        self.topic: str = topic
        self.msgtype: str = images[topic]
        self._connections = [c for c in self._reader.connections if c.topic == topic]
        self.count = sum(c.msgcount for c in self._connections)
        self.fps = self._estimate_fps()

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED

    def _estimate_fps(self) -> float:
        """Rate from the recording's span (the overlay video's fps); 30 when it cannot say."""
        if self.count < 2:
            return 30.0
        # end_time is 1 ns "after the latest message"; the span covers every topic of the bag.
        span = (self._reader.end_time - 1 - self._reader.start_time) / 1e9
        fps = (self.count - 1) / span if span > 0 else 30.0
        return fps if math.isfinite(fps) and 0 < fps < 10_000 else 30.0

    def __len__(self) -> int:
        return self.count

    def frames(self) -> Iterator[BagFrame]:
        """The topic's messages in recording order; also records their stamps in `stamps`."""
        from rosbags.highlevel import AnyReaderError

        self.stamps = []
        try:
            for index, (connection, log_ns, raw) in enumerate(self._reader.messages(connections=self._connections)):
                message = self._reader.deserialize(raw, connection.msgtype)
                stamp = _stamp_ns(message.header.stamp)
                self.stamps.append(stamp)
                yield BagFrame(index, int(log_ns), stamp, message.header.frame_id, connection.msgtype, message)
        except AnyReaderError as error:
            raise BagError(f"{self.path}: {self.topic}: {error}") from None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for frame in self.frames():
            yield frame.index, frame.bgr()

    def close(self) -> None:
        if getattr(self._reader, "stack", None):
            self._reader.close()


def open_frames(path: str | Path, topic: str | None = None) -> FrameSource:
    """A bag's image topic, or whatever `vtrack_core.video.open_source` opens."""
    from .video import open_source

    if is_bag(path):
        return BagSource(path, topic)
    if topic:
        raise BagError(f"{path}: not a bag, so it has no topic {topic}")
    return open_source(path)


# --- writing ------------------------------------------------------------------------------
def default_topic(compressed: bool) -> str:
    return "/camera/image_raw/compressed" if compressed else "/camera/image_raw"


def camera_info_topic(image_topic: str) -> str:
    """Where a camera driver puts the camera info beside `image_topic`:
    /camera/image_raw[/compressed] -> /camera/camera_info."""
    base = image_topic.removesuffix("/compressed").rstrip("/")
    parent = base.rsplit("/", 1)[0] if "/" in base.lstrip("/") else ""
    return f"{parent}/camera_info"


def _guess_format(out: Path) -> str:
    return "ros1" if out.suffix == ".bag" else "rosbag2-sqlite3"


@dataclass
class WrittenBag:
    path: Path
    format: str
    topic: str
    msgtype: str
    frames: int
    first_stamp_ns: int
    last_stamp_ns: int


def write_sequence_bag(
    sequence: str | Path,
    out: str | Path,
    fmt: str | None = None,
    compressed: bool = False,
    rate: float = 30.0,
    topic: str | None = None,
    start: str | float = "1.0",
    frame_id: str = "camera",
    max_frames: int | None = None,
) -> WrittenBag:
    """Write the frames of an image sequence (OTB layout, or a folder of images) as an image
    topic with stamps start + k / rate (header stamp and recording time alike), plus its
    camera_info. Raw: bgr8 sensor_msgs/Image of the decoded frame. Compressed: the frame's
    own JPEG / PNG bytes (nothing re-encoded; other files become JPEG at quality 95)."""
    from .video import ImageFolderSource, open_source

    out = Path(out)
    fmt = fmt or _guess_format(out)
    if fmt not in FORMATS:
        raise BagError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise BagError(f"rate must be > 0 Hz, got {rate}")
    if out.exists():
        raise BagError(f"{out}: exists already; bags are never overwritten")
    if fmt == "ros1" and out.suffix != ".bag":
        raise BagError(f"{out}: a ROS 1 bag is a file named *.bag")
    if fmt != "ros1" and out.suffix == ".bag":
        raise BagError(f"{out}: a rosbag2 bag is a folder; *.bag names a ROS 1 bag (--format ros1)")
    if not out.parent.is_dir():
        raise BagError(f"{out.parent}: no such folder")
    topic = topic or default_topic(compressed)
    if not topic.startswith("/") or topic.endswith("/") or " " in topic:
        raise BagError(f"topic must be an absolute ROS name like /camera/image_raw, not {topic!r}")
    try:
        start_ns = parse_stamp_ns(str(start), "start")
    except ValueError as error:
        raise BagError(str(error)) from None
    source = open_source(sequence)
    if not isinstance(source, ImageFolderSource):
        source.close()
        raise BagError(f"{sequence}: not an image sequence folder (OTB layout or a folder of images)")
    files = source.frames[:max_frames] if max_frames else source.frames
    if not files:
        raise BagError(f"{sequence}: no frames")
    msgtype = COMPRESSED if compressed else IMAGE
    _need_rosbags()
    writer, typestore, serialize = _open_writer(out, fmt)
    try:
        image_conn = _add_connection(writer, fmt, topic, msgtype, typestore)
        info_conn = _add_connection(writer, fmt, camera_info_topic(topic), CAMERA_INFO, typestore)
        stamp = start_ns
        for k, file in enumerate(files):
            stamp = start_ns + round(k * 1_000_000_000 / rate)
            header = _header(typestore, fmt, stamp, frame_id, k)
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise BagError(f"{file}: cannot read this image")
            height, width = image.shape[:2]
            if compressed:
                message = _compressed_message(typestore, header, file, image)
            else:
                message = typestore.types[IMAGE](
                    header=header, height=height, width=width, encoding="bgr8", is_bigendian=0,
                    step=width * 3, data=np.ascontiguousarray(image).reshape(-1))
            writer.write(image_conn, stamp, serialize(message, msgtype))
            writer.write(info_conn, stamp, serialize(_camera_info(typestore, fmt, header, width, height), CAMERA_INFO))
    except BaseException:
        writer.close()
        _remove(out)
        raise
    writer.close()
    return WrittenBag(out, fmt, topic, msgtype, len(files), start_ns, stamp)


def _open_writer(out: Path, fmt: str):
    from rosbags.typesys import Stores, get_typestore

    if fmt == "ros1":
        from rosbags.rosbag1 import Writer as Writer1

        typestore = get_typestore(Stores.ROS1_NOETIC)
        writer = Writer1(out)
        serialize = typestore.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer as Writer2

        typestore = get_typestore(Stores.ROS2_KILTED)
        plugin = StoragePlugin.MCAP if fmt == "rosbag2-mcap" else StoragePlugin.SQLITE3
        writer = Writer2(out, version=9, storage_plugin=plugin)
        serialize = typestore.serialize_cdr
    writer.open()
    return writer, typestore, serialize


def _add_connection(writer, fmt: str, topic: str, msgtype: str, typestore):
    return writer.add_connection(topic, msgtype, typestore=typestore)


def _header(typestore, fmt: str, stamp_ns: int, frame_id: str, seq: int):
    time = typestore.types["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    if fmt == "ros1":  # ROS 1 headers carry a sequence number
        return typestore.types["std_msgs/msg/Header"](seq=seq, stamp=time, frame_id=frame_id)
    return typestore.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def _compressed_message(typestore, header, file: Path, image: np.ndarray):
    suffix = file.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".png"):
        data = np.frombuffer(file.read_bytes(), np.uint8)
        kind = "png" if suffix == ".png" else "jpeg"
    else:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise BagError(f"{file}: cannot encode as JPEG")
        data, kind = encoded.reshape(-1), "jpeg"
    # image_transport's compressed plugin writes "<encoding>; <format> compressed <encoding>".
    return typestore.types[COMPRESSED](header=header, format=f"bgr8; {kind} compressed bgr8", data=data)


def _camera_info(typestore, fmt: str, header, width: int, height: int):
    """Size and frame_id only: a sequence has no calibration (all-zero matrices)."""
    info = typestore.types[CAMERA_INFO]
    roi = typestore.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                               do_rectify=False)
    zeros9, zeros12 = np.zeros(9, np.float64), np.zeros(12, np.float64)
    if fmt == "ros1":
        return info(header=header, height=height, width=width, distortion_model="", D=np.zeros(0, np.float64),
                    K=zeros9, R=zeros9, P=zeros12, binning_x=0, binning_y=0, roi=roi)
    return info(header=header, height=height, width=width, distortion_model="", d=np.zeros(0, np.float64),
                k=zeros9, r=zeros9, p=zeros12, binning_x=0, binning_y=0, roi=roi)


def _remove(path: Path) -> None:
    """Remove a half-written bag, so a rerun can write it."""
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
