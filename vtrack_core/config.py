"""Tracker configuration: dataclasses whose defaults are the papers' values.

Every value can be overridden by keyword (`create_tracker("siamfc", scale_step=1.0375)`),
from a YAML file (a mapping `tracker name -> {field: value}`), or from ROS parameters, which
arrive as strings, numbers or lists: `with_overrides` converts them to the field's type and
refuses unknown names with the list of known ones.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

C = TypeVar("C", bound="TrackerConfig")


class ConfigError(ValueError):
    pass


@dataclass
class TrackerConfig:
    """Fields every tracker has."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N (deep trackers; OpenCV ones run on the CPU)
    confidence_threshold: float = 0.5  # below it a frame counts as UNCERTAIN
    lost_after_frames: int = 5  # consecutive frames below the threshold before LOST
    recover_after_frames: int = 3  # consecutive frames at or above it before a LOST target is TRACKING again

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def is_default(self, name: str) -> bool:
        """Whether field `name` is still its class default, i.e. nobody chose it: not given to
        `with_overrides` (keyword, YAML, CLI, node parameter) and equal to the default. A
        calibrated tracker replaces a default threshold only (Tracker.__init__)."""
        if name in self.__dict__.get("_given", ()):
            return False
        default = next(f for f in dataclasses.fields(self) if f.name == name)
        value = default.default_factory() if default.default_factory is not dataclasses.MISSING else default.default
        return getattr(self, name) == value

    def with_overrides(self: C, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> C:
        """A copy with some fields replaced, values converted to the fields' types."""
        merged = {**(overrides or {}), **kwargs}
        hints = typing.get_type_hints(type(self))
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} has no field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        converted = {name: _convert(name, value, hints[name]) for name, value in merged.items()}
        copy = dataclasses.replace(self, **converted)
        copy.__dict__["_given"] = frozenset(self.__dict__.get("_given", ())) | frozenset(converted)
        return copy

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "types.UnionType":  # Optional[X] / X | None
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin in (tuple, list):
            items = value
            if isinstance(value, str):
                items = [v for v in value.replace(",", " ").split() if v]
            item_type = args[0] if args else float
            converted = [_convert(name, v, item_type) for v in items]
            return tuple(converted) if origin is tuple else converted
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} as {getattr(hint, '__name__', hint)}") from None
    return value


def load_yaml_overrides(path: str | Path, tracker_name: str) -> dict[str, Any]:
    """The `tracker_name:` section of a YAML file (empty if it has none)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of tracker names to settings")
    section = data.get(tracker_name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: section {tracker_name!r} must be a mapping")
    return section
