"""sensor_msgs Image / CompressedImage -> BGR uint8 arrays, without cv_bridge.

Colour conversions come from rosbags-image; row padding (`step` larger than
width * pixel size) is handled here, since that library assumes packed rows. Only 8-bit
encodings are accepted: the trackers work on 8-bit colour, and silently rescaling a 16-bit
depth or IR image would track something other than what the user sees.

Compressed images: only JPEG and PNG (what image_transport's compressed plugin sends). Their
size is read from the header (JPEG SOF, PNG IHDR) before anything is decoded, so a small
file that claims a huge image is refused instead of allocated. A JPEG that libjpeg decodes
with warnings ("Corrupt JPEG data: ...", "Premature end of JPEG file") is damaged: libjpeg
fills or garbles the rest and says so only on the process's stderr (fd 2), so the decode
runs with fd 2 pointed at a scratch file for its duration; the decoder's lines are kept as
the damage report, anything else written meanwhile (another thread's log line) is passed on
to the real stderr. Damage libjpeg does not notice (a flipped bit that still decodes) cannot
be told from a real image.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np
from rosbags.image.image import ImageConversionError, ImageFormatError, convert_color, to_cvtype

SUPPORTED_ENCODINGS = ("bgr8", "rgb8", "mono8", "bgra8", "rgba8", "8UC1", "8UC3", "8UC4")


class UnsupportedImageError(ValueError):
    """An image the node cannot track on; the message says why, for the log."""


class OversizedImageError(UnsupportedImageError):
    """An image with more pixels than allowed (refused before it is decoded)."""


class DamagedImageError(UnsupportedImageError):
    """A compressed image the decoder reported damaged (it would decode to garbage)."""


JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (C4 DHT, C8 JPG, CC DAC are not frames).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# libjpeg's warnings (jerror.h JWRN_*) that mean the data is damaged, and the other ones.
_JPEG_DAMAGE = re.compile(r"(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|"
                          r"Inconsistent progression sequence|Application transferred too many scanlines)")
_JPEG_BENIGN = re.compile(r"(Warning: unknown JFIF revision|Unknown Adobe color transform|Warning: thumbnail image size)")
_OPENCV_LOG = re.compile(r"\[ ?(WARN|ERROR|INFO|DEBUG):")


def check_pixels(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise OversizedImageError(
            f"{what} of {width}x{height} ({width * height / 1e6:.1f} MP) exceeds max_image_pixels={max_pixels} "
            f"({max_pixels / 1e6:.1f} MP)"
        )


def declared_size(data) -> tuple[int, int]:
    """(width, height) a JPEG or PNG says it has, read from its header without decoding.

    Raises UnsupportedImageError for other formats and for headers it cannot read."""
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    n = len(view)
    if bytes(view[:8]) == PNG_MAGIC:
        if n < 24 or bytes(view[12:16]) != b"IHDR":
            raise UnsupportedImageError("PNG without an IHDR header")
        return int.from_bytes(view[16:20], "big"), int.from_bytes(view[20:24], "big")
    if bytes(view[:2]) != JPEG_MAGIC:
        raise UnsupportedImageError(
            f"cannot decode compressed image: neither JPEG nor PNG (starts {bytes(view[:4]).hex()}); "
            "only those are supported")
    i = 2
    while i + 4 <= n:
        if view[i] != 0xFF:
            raise UnsupportedImageError(f"JPEG header broken at byte {i} (no marker)")
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        i += 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):
            break
        length = int.from_bytes(view[i:i + 2], "big")
        if marker in _SOF_MARKERS:
            if i + 7 > n:
                break
            height = int.from_bytes(view[i + 3:i + 5], "big")
            width = int.from_bytes(view[i + 5:i + 7], "big")
            if width == 0 or height == 0:
                raise UnsupportedImageError(f"JPEG frame header gives no size ({width}x{height})")
            return width, height
        if length < 2:
            raise UnsupportedImageError(f"JPEG header broken at byte {i} (segment length {length})")
        i += length
    raise UnsupportedImageError("JPEG without a frame header (SOF) before its data: truncated or not a JPEG")


class _Stderr:
    """fd 2 pointed at a scratch file while a decoder runs (one decode at a time)."""

    lock = threading.Lock()
    scratch = None

    @classmethod
    def capture(cls, function, *args):
        with cls.lock:
            if cls.scratch is None:
                cls.scratch = tempfile.TemporaryFile()
            fd = cls.scratch.fileno()
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            saved = os.dup(2)
            try:
                os.dup2(fd, 2)
                try:
                    result = function(*args)
                finally:
                    os.dup2(saved, 2)
            finally:
                os.close(saved)
            written = os.lseek(fd, 0, os.SEEK_CUR)
            text = os.pread(fd, written, 0) if written else b""
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        decoder, others = [], []
        for line in text.decode("utf-8", "replace").splitlines(keepends=True):
            stripped = line.strip()
            if _JPEG_DAMAGE.match(stripped) or _JPEG_BENIGN.match(stripped) or _OPENCV_LOG.match(stripped):
                decoder.append(stripped)
            elif stripped:
                others.append(line)
        if others:  # not ours: another thread wrote meanwhile
            os.write(2, "".join(others).encode())
        return result, decoder


@dataclass
class Decoded:
    image: np.ndarray
    damage: list[str] = field(default_factory=list)  # the decoder's damage reports, empty if none


def image_to_bgr(encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into an HxWx3 uint8 BGR array (a view when
    the input already is packed bgr8). Refuses images over max_pixels."""
    try:
        depth, _, typestr, channels = to_cvtype(encoding)
    except (ImageFormatError, KeyError):
        raise UnsupportedImageError(
            f"unknown image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        ) from None
    if depth != 8:
        raise UnsupportedImageError(
            f"{depth}-bit images ({encoding}) are not supported: trackers need 8-bit colour or mono; "
            "convert upstream (e.g. normalise a depth/IR image to mono8)"
        )
    if height <= 0 or width <= 0:
        raise UnsupportedImageError(f"empty image ({width}x{height})")
    check_pixels(width, height, max_pixels)
    row_bytes = width * channels
    buffer = np.frombuffer(data, dtype=np.uint8)
    if step < row_bytes or buffer.size < step * (height - 1) + row_bytes:
        raise UnsupportedImageError(
            f"image data too short: {buffer.size} bytes for {width}x{height} {encoding} with step {step}"
        )
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1))
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if encoding.startswith("8UC"):
        # Generic types carry no colour order: take 3 channels as BGR, 1 as mono.
        encoding = {1: "mono8", 3: "bgr8", 4: "bgra8"}.get(channels, encoding)
    try:
        bgr = convert_color(pixels, encoding, "bgr8")
    except (ImageConversionError, ImageFormatError, cv2.error) as exc:
        raise UnsupportedImageError(f"cannot convert {encoding} to bgr8: {exc}") from None
    return np.ascontiguousarray(bgr)


def decode_compressed(fmt: str, data, max_pixels: int | None = None) -> Decoded:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) into HxWx3 uint8 BGR, with what the
    JPEG decoder reported as damage. Refuses images over max_pixels before decoding."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise UnsupportedImageError("empty compressed image")
    width, height = declared_size(buffer)
    check_pixels(width, height, max_pixels, "compressed image")
    if bytes(buffer[:2]) == JPEG_MAGIC:
        image, messages = _Stderr.capture(cv2.imdecode, buffer, cv2.IMREAD_UNCHANGED)
        damage = [m for m in messages if _JPEG_DAMAGE.match(m)]
    else:
        image, damage = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED), []
    if image is None:
        raise UnsupportedImageError(f"cannot decode compressed image (format {fmt!r})")
    return Decoded(_to_bgr(image), damage)


def compressed_to_bgr(fmt: str, data, max_pixels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) into HxWx3 uint8 BGR; a damaged
    JPEG raises DamagedImageError."""
    decoded = decode_compressed(fmt, data, max_pixels)
    if decoded.damage:
        raise DamagedImageError(f"damaged JPEG: {'; '.join(decoded.damage[:3])}")
    return decoded.image


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise UnsupportedImageError(f"compressed image is {image.dtype}, only 8-bit is supported")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def bgr_to_image_fields(image: np.ndarray) -> dict:
    """Fields of a packed bgr8 sensor_msgs/Image for an HxWx3 array (debug overlays)."""
    height, width = image.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": "bgr8",
        "is_bigendian": 0,
        "step": width * 3,
        "data": np.ascontiguousarray(image).tobytes(),
    }
