import math

import numpy as np
import pytest
import yaml

from vtrack_core import (
    Box,
    ConfigError,
    InvalidInputError,
    NotInitializedError,
    TrackState,
    UnknownTrackerError,
    available_trackers,
    create_tracker,
    tracker_config,
)
from vtrack_core.tracker import LostRule


def test_baselines_registered():
    assert {"csrt", "kcf", "mil", "nano"} <= set(available_trackers())


def test_unknown_tracker_names_the_known_ones():
    with pytest.raises(UnknownTrackerError, match="available: .*csrt"):
        create_tracker("no-such-tracker")


def test_overrides_are_converted_and_checked():
    config = tracker_config("csrt", psr_threshold="0.1", use_segmentation="false", lost_after_frames=3.0)
    assert config.psr_threshold == 0.1 and config.use_segmentation is False and config.lost_after_frames == 3
    with pytest.raises(ConfigError, match="no field.*bogus"):
        tracker_config("csrt", bogus=1)
    with pytest.raises(ConfigError, match="cannot use"):
        tracker_config("csrt", number_of_scales="many")
    with pytest.raises(ConfigError, match="cannot use"):
        tracker_config("csrt", number_of_scales=2.5)


def test_yaml_then_keyword_overrides(tmp_path):
    path = tmp_path / "trackers.yaml"
    path.write_text(yaml.safe_dump({"csrt": {"psr_threshold": 0.2, "scale_step": 1.05}, "kcf": {"detect_thresh": 0.1}}))
    config = tracker_config("csrt", path, scale_step=1.01)
    assert config.psr_threshold == 0.2 and config.scale_step == 1.01
    assert tracker_config("mil", path).confidence_threshold == 0.5  # no section: defaults


def test_lost_rule():
    rule = LostRule(threshold=0.5, lost_after_frames=3)
    states = [rule(c) for c in (0.9, 0.4, 0.4, 0.4, 0.4, 0.8, 0.1)]
    assert states == [
        TrackState.TRACKING,
        TrackState.UNCERTAIN,
        TrackState.UNCERTAIN,
        TrackState.LOST,
        TrackState.LOST,
        TrackState.TRACKING,
        TrackState.UNCERTAIN,
    ]


def test_a_lost_target_needs_consecutive_frames_above_the_threshold_to_recover():
    rule = LostRule(threshold=0.5, lost_after_frames=2, recover_after_frames=3)
    L, T, U = TrackState.LOST, TrackState.TRACKING, TrackState.UNCERTAIN
    # lost; a stray match (0.9) then a miss: still LOST; three matches in a row: TRACKING
    states = [rule(c) for c in (0.1, 0.1, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.3)]
    assert states == [U, L, L, L, L, L, T, T, U]
    assert rule.lost is False and rule.lost_frames == 0
    rule.reset()
    assert [rule(c) for c in (0.1, 0.1)] == [U, L] and rule.lost and rule.lost_frames == 1
    assert tracker_config("csrt").recover_after_frames == 3


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "box, message",
    [
        (Box(math.nan, 10, 20, 20), "NaN"),
        (Box(10, 10, 0, 20), "positive"),
        (Box(10, 10, -5, 20), "positive"),
        (Box(500, 500, 20, 20), "outside"),
        (Box(-30, 10, 31, 20), "outside"),  # 1 px left inside
    ],
)
def test_bad_init_boxes_are_refused(image, box, message):
    tracker = create_tracker("csrt")
    with pytest.raises(InvalidInputError, match=message):
        tracker.init(image, box)
    assert not tracker.initialized


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((10, 10), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ("not an image", "numpy"),
    ],
)
def test_bad_images_are_refused(image, bad, message):
    tracker = create_tracker("csrt")
    with pytest.raises(InvalidInputError, match=message):
        tracker.init(bad, Box(10, 10, 20, 20))
    tracker.init(image, Box(10, 10, 20, 20))
    with pytest.raises(InvalidInputError, match=message):
        tracker.update(bad)


def test_update_before_init():
    with pytest.raises(NotInitializedError):
        create_tracker("kcf").update(np.zeros((10, 10, 3), np.uint8))


def test_box_partly_outside_is_clipped(image):
    tracker = create_tracker("csrt")
    tracker.init(image, Box(-10, -10, 40, 40))
    assert tracker.box == Box(0, 0, 30, 30)


def test_device_choice():
    import torch

    from vtrack_core.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ConfigError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
