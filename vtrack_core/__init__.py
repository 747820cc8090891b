"""vtrack_core: ROS-free visual object tracking library.

    from vtrack_core import Box, create_tracker
    tracker = create_tracker("csrt")
    tracker.init(first_bgr_image, Box(x, y, w, h))
    result = tracker.update(next_bgr_image)   # TrackResult(box, confidence, state, seconds)
"""
from .boxes import Box
from .config import ConfigError, TrackerConfig
from .registry import (
    UnknownTrackerError,
    available_trackers,
    create_tracker,
    register_tracker,
    tracker_class,
    tracker_config,
)
from .tracker import InvalidInputError, NotInitializedError, Tracker, TrackResult, TrackState

__all__ = [
    "Box",
    "ConfigError",
    "InvalidInputError",
    "NotInitializedError",
    "Tracker",
    "TrackerConfig",
    "TrackResult",
    "TrackState",
    "UnknownTrackerError",
    "available_trackers",
    "create_tracker",
    "register_tracker",
    "tracker_class",
    "tracker_config",
]
