"""Tracker names -> classes. The node and the CLI only ever go through here.

Entries name a module and class instead of importing them, so `import vtrack_core` stays
cheap and a tracker whose dependencies are missing fails only when it is asked for.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .config import TrackerConfig, load_yaml_overrides
from .tracker import Tracker

_REGISTRY: dict[str, str] = {
    "csrt": "vtrack_core.trackers.opencv_baselines:CsrtTracker",
    "kcf": "vtrack_core.trackers.opencv_baselines:KcfTracker",
    "mil": "vtrack_core.trackers.opencv_baselines:MilTracker",
    "nano": "vtrack_core.trackers.opencv_baselines:NanoTracker",
    "siamfc": "vtrack_core.trackers.siamfc:SiamFCTracker",
    "fdn": "vtrack_core.trackers.fdn:FDNTracker",
    "fcnt": "vtrack_core.trackers.fcnt:FCNTTracker",
    "rar": "vtrack_core.trackers.rar:RARTracker",
}


class UnknownTrackerError(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr
        return str(self.args[0])


def register_tracker(name: str, target: str) -> None:
    """Add a tracker as 'package.module:ClassName' (for plug-ins outside this package)."""
    _REGISTRY[name] = target


def available_trackers() -> list[str]:
    return sorted(_REGISTRY)


def tracker_class(name: str) -> type[Tracker]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownTrackerError(
            f"unknown tracker {name!r}; available: {', '.join(available_trackers())}"
        ) from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls


def tracker_config(name: str, config_file: str | Path | None = None, **overrides: Any) -> TrackerConfig:
    """The tracker's config: paper defaults, then the YAML file's section, then overrides."""
    config = tracker_class(name).config_class()
    if config_file is not None:
        config = config.with_overrides(load_yaml_overrides(config_file, name))
    return config.with_overrides(overrides)


def create_tracker(name: str, config_file: str | Path | None = None, **overrides: Any) -> Tracker:
    """A fresh tracker `name`, its config built as in `tracker_config`."""
    return tracker_class(name)(tracker_config(name, config_file, **overrides))
