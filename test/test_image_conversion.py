"""sensor_msgs image fields -> BGR, on a real frame, for every supported encoding."""
import cv2
import numpy as np
import pytest

from vtrack_ros.image_conversion import UnsupportedImageError, bgr_to_image_fields, compressed_to_bgr, image_to_bgr


@pytest.fixture(scope="module")
def frame(dev_dataset_dir):
    return cv2.imread(str(dev_dataset_dir / "Couple" / "img" / "0001.jpg"))


def _padded(pixels: np.ndarray, pad: int) -> tuple[bytes, int]:
    rows = pixels.reshape(pixels.shape[0], -1)
    out = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.tobytes(), out.shape[1]


@pytest.mark.parametrize("pad", [0, 13])
@pytest.mark.parametrize(
    "encoding, to_encoding",
    [
        ("bgr8", lambda im: im),
        ("rgb8", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2RGB)),
        ("bgra8", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA)),
        ("rgba8", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2RGBA)),
        ("8UC3", lambda im: im),
    ],
)
def test_colour_encodings_with_and_without_row_padding(frame, encoding, to_encoding, pad):
    data, step = _padded(to_encoding(frame), pad)
    out = image_to_bgr(encoding, frame.shape[0], frame.shape[1], step, data)
    assert out.shape == frame.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, frame)


def test_mono8_becomes_three_equal_channels(frame):
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    data, step = _padded(gray, 3)
    out = image_to_bgr("mono8", gray.shape[0], gray.shape[1], step, data)
    assert out.shape == frame.shape and np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)


@pytest.mark.parametrize(
    "encoding, step_factor, message",
    [("mono16", 2, "16-bit"), ("16UC1", 2, "16-bit"), ("32FC1", 4, "32-bit"), ("nonsense", 3, "unknown image encoding")],
)
def test_unsupported_encodings_are_refused_clearly(encoding, step_factor, message):
    with pytest.raises(UnsupportedImageError, match=message):
        image_to_bgr(encoding, 4, 5, 5 * step_factor, bytes(4 * 5 * step_factor))


def test_short_or_empty_data_is_refused(frame):
    with pytest.raises(UnsupportedImageError, match="too short"):
        image_to_bgr("bgr8", frame.shape[0], frame.shape[1], frame.shape[1] * 3, frame.tobytes()[:-1])
    with pytest.raises(UnsupportedImageError, match="empty"):
        image_to_bgr("bgr8", 0, 0, 0, b"")


def test_compressed_jpeg_and_png(frame):
    ok, png = cv2.imencode(".png", frame)
    assert np.array_equal(compressed_to_bgr("png", png.tobytes()), frame)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert compressed_to_bgr("jpeg", jpg.tobytes()).shape == frame.shape
    with pytest.raises(UnsupportedImageError, match="cannot decode"):
        compressed_to_bgr("jpeg", b"not a jpeg at all")


def test_debug_image_fields_round_trip(frame):
    fields = bgr_to_image_fields(frame)
    assert np.array_equal(image_to_bgr(fields["encoding"], fields["height"], fields["width"], fields["step"], fields["data"]), frame)
