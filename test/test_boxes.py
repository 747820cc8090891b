import math

import numpy as np
import pytest

from vtrack_core.boxes import Box, as_array, center_error, iou, normalized_center_error


def test_conversions_round_trip():
    box = Box(10.0, 20.0, 30.0, 40.0)
    assert box.xyxy() == (10.0, 20.0, 40.0, 60.0)
    assert box.cxcywh() == (25.0, 40.0, 30.0, 40.0)
    assert Box.from_xyxy(box.xyxy()) == box
    assert Box.from_center(*box.cxcywh()) == box
    assert Box.parse("10, 20,30 40") == box
    assert box.area == 1200.0
    assert box.scaled(2.0) == Box(-5.0, 0.0, 60.0, 80.0)


def test_parse_rejects_wrong_count():
    with pytest.raises(ValueError, match="4 numbers"):
        Box.parse("1,2,3")


def test_validity():
    assert Box(0, 0, 1, 1).is_valid()
    assert not Box(0, 0, 0, 1).is_valid()
    assert not Box(0, 0, -3, 1).is_valid()
    assert not Box(math.nan, 0, 3, 1).is_valid()
    assert not Box(0, 0, math.inf, 1).is_valid()


def test_clip_to_image():
    assert Box(-10, -10, 30, 30).clip(100, 50) == Box(0, 0, 20, 20)
    assert Box(90, 40, 30, 30).clip(100, 50) == Box(90, 40, 10, 10)
    assert Box(200, 200, 5, 5).clip(100, 50).area == 0.0


def test_as_int_xywh_keeps_edges():
    assert Box(10.4, 10.6, 20.2, 19.8).as_int_xywh() == (10, 11, 21, 19)
    assert Box(3.0, 3.0, 0.2, 0.2).as_int_xywh()[2:] == (1, 1)


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [np.nan, 0, 1, 1]], dtype=float)
    out = iou(a, b)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(50 / 150)
    assert out[2] == 0.0
    assert math.isnan(out[3])
    assert Box(0, 0, 10, 10).iou(Box(5, 5, 10, 10)) == pytest.approx(25 / 175)


def test_iou_zero_size_boxes_do_not_divide_by_zero():
    assert iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0] == 0.0


def test_center_errors():
    a = as_array([Box(0, 0, 10, 10), (0, 0, 10, 20)])
    b = as_array([Box(3, 4, 10, 10), (0, 0, 10, 20)])
    assert center_error(a, b) == pytest.approx([5.0, 0.0])
    # Normalised by the ground-truth size per axis: (3/10, 4/10) -> 0.5
    assert normalized_center_error(b[:1], a[:1]) == pytest.approx([0.5])
