"""sensor_msgs Image / CompressedImage -> BGR uint8 arrays, without cv_bridge.

Colour conversions come from rosbags-image; row padding (`step` larger than
width * pixel size) is handled here, since that library assumes packed rows. Only 8-bit
encodings are accepted: the trackers work on 8-bit colour, and silently rescaling a 16-bit
depth or IR image would track something other than what the user sees.
"""
from __future__ import annotations

import cv2
import numpy as np
from rosbags.image.image import ImageConversionError, ImageFormatError, convert_color, to_cvtype

SUPPORTED_ENCODINGS = ("bgr8", "rgb8", "mono8", "bgra8", "rgba8", "8UC1", "8UC3", "8UC4")


class UnsupportedImageError(ValueError):
    """An image the node cannot track on; the message says why, for the log."""


def image_to_bgr(encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into an HxWx3 uint8 BGR array (a view when
    the input already is packed bgr8)."""
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


def compressed_to_bgr(fmt: str, data) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) into HxWx3 uint8 BGR."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise UnsupportedImageError("empty compressed image")
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UnsupportedImageError(f"cannot decode compressed image (format {fmt!r})")
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
