"""Compressed-image limits and damage reports (vtrack_ros.image_conversion), on real dev
JPEG bytes: the size a header declares, refused before decoding, and libjpeg's damage
warnings captured instead of printed."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vtrack_ros.image_conversion import (
    DamagedImageError,
    OversizedImageError,
    UnsupportedImageError,
    compressed_to_bgr,
    decode_compressed,
    declared_size,
    image_to_bgr,
)


@pytest.fixture(scope="module")
def jpeg(dev_dataset_dir):
    return (dev_dataset_dir / "Couple" / "img" / "0001.jpg").read_bytes()


def _with_size(blob: bytes, width: int, height: int) -> bytes:
    data = bytearray(blob)
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 7] = height.to_bytes(2, "big")
    data[i + 7:i + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_declared_size_of_jpeg_and_png(jpeg):
    assert declared_size(jpeg) == (320, 240)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert declared_size(cv2.imencode(".png", image)[1].tobytes()) == (320, 240)
    assert declared_size(np.frombuffer(jpeg, np.uint8)) == (320, 240)
    with pytest.raises(UnsupportedImageError, match="neither JPEG nor PNG"):
        declared_size(cv2.imencode(".bmp", image)[1].tobytes())
    with pytest.raises(UnsupportedImageError, match="without a frame header"):
        declared_size(jpeg[:20])


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(jpeg):
    bomb = _with_size(jpeg, 20000, 20000)
    assert declared_size(bomb) == (20000, 20000)
    with pytest.raises(OversizedImageError, match="20000x20000 .* exceeds max_image_pixels=12582912"):
        decode_compressed("jpeg", bomb, 4096 * 3072)
    with pytest.raises(OversizedImageError):
        image_to_bgr("bgr8", 5000, 5000, 15000, b"", max_pixels=4096 * 3072)


def test_libjpeg_damage_is_reported_not_printed(jpeg, tmp_path):
    damaged = bytearray(jpeg)
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(b ^ 0xFF for b in damaged[middle:middle + 64])
    decoded = decode_compressed("jpeg", bytes(damaged))
    assert decoded.image.shape == (240, 320, 3)
    assert decoded.damage and decoded.damage[0].startswith("Corrupt JPEG data"), decoded.damage
    assert decode_compressed("jpeg", jpeg).damage == []
    with pytest.raises(DamagedImageError, match="damaged JPEG: Corrupt JPEG data"):
        compressed_to_bgr("jpeg", bytes(damaged))
    with pytest.raises(UnsupportedImageError):  # truncated: damaged, or not decodable at all
        compressed_to_bgr("jpeg", jpeg[: len(jpeg) * 2 // 3])


def test_other_output_during_a_decode_still_reaches_stderr(jpeg, tmp_path):
    """In a process of its own: another thread writes to stderr while damaged JPEGs are
    decoded; its lines come out, libjpeg's do not."""
    damaged = bytearray(jpeg)
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(b ^ 0xFF for b in damaged[middle:middle + 64])
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bytes(damaged))
    script = f"""
import os, threading, time
from vtrack_ros.image_conversion import decode_compressed
data = open({str(path)!r}, "rb").read()
def chatter():
    for k in range(40):
        os.write(2, f"chatter {{k}}\\n".encode()); time.sleep(0.001)
thread = threading.Thread(target=chatter); thread.start()
reports = sum(bool(decode_compressed("jpeg", data).damage) for _ in range(200))
thread.join()
print(reports)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.stdout.strip() == "200"
    lines = result.stderr.splitlines()
    assert sorted(lines, key=lambda line: int(line.split()[1])) == [f"chatter {k}" for k in range(40)], lines
