"""One source for the nodes' parameters: what the node declares is what config/tracker.yaml
sets and what docs/nodes.md documents, names, types and defaults alike.

tracker_node declares its parameters from `vtrack_ros.tracker_node.PARAMETERS`
(name -> (default, description)); video_publisher from the fields of
`vtrack_ros.video_publisher.Settings`. A parameter added, removed, renamed or given another
default in one place and not the others fails here.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")

ROOT = Path(__file__).resolve().parents[1]
NODES_DOC = ROOT / "docs" / "nodes.md"
TRACKER_YAML = ROOT / "config" / "tracker.yaml"
ROS_TYPES = {bool: "bool", int: "int", float: "double", str: "string"}
REQUIRED = "(required)"  # docs' default for a parameter that has none


def _doc_text(value) -> str:
    """A default as docs/nodes.md writes it (inside backticks)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)  # 5, -1.0, 30.0


def parameter_table(heading: str) -> dict[str, dict[str, str]]:
    """The first table after the markdown heading `heading`: name -> {column: cell}."""
    lines = NODES_DOC.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"#+\s+" + re.escape(heading), line.strip())]
    assert len(starts) == 1, f"docs/nodes.md needs exactly one heading {heading!r}, found {len(starts)}"
    rows = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break  # the table ended
    assert len(rows) > 2, f"no parameter table under {heading!r} in docs/nodes.md"
    header, rule, *body = rows
    assert header == ["name", "type", "default", "meaning"], header
    assert set("".join(rule)) <= set("-: "), rule
    table: dict[str, dict[str, str]] = {}
    for cells in body:
        assert len(cells) == len(header), f"malformed row in docs/nodes.md: {cells}"
        row = dict(zip(header, cells))
        name = row["name"].strip("`")
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), f"one parameter per row, got {row['name']!r}"
        assert name not in table, f"{name} is documented twice under {heading!r}"
        row["default"] = row["default"].removeprefix("`").removesuffix("`")
        table[name] = row
    return table


def check_table(heading: str, declared: dict[str, tuple[object, type]]) -> None:
    """declared: name -> (default or dataclasses.MISSING, type)."""
    table = parameter_table(heading)
    assert sorted(table) == sorted(declared), (
        f"docs/nodes.md {heading!r}: documented but not declared {sorted(set(table) - set(declared))}, "
        f"declared but not documented {sorted(set(declared) - set(table))}")
    for name, (default, kind) in declared.items():
        row = table[name]
        assert row["type"] == ROS_TYPES[kind], f"{name}: docs say type {row['type']}, the node declares {kind.__name__}"
        expected = REQUIRED if default is dataclasses.MISSING else _doc_text(default)
        assert row["default"] == expected, f"{name}: docs say default {row['default']}, the node declares {expected}"


def tracker_node_parameters() -> dict[str, tuple[object, type]]:
    from vtrack_ros.tracker_node import PARAMETERS

    return {name: (default, type(default)) for name, (default, _description) in PARAMETERS.items()}


def video_publisher_parameters() -> dict[str, tuple[object, type]]:
    """Settings' fields are exactly the parameters `declare_settings` declares."""
    from vtrack_ros.video_publisher import Settings

    kinds = {"str": str, "float": float, "int": int, "bool": bool}
    return {
        field.name: (field.default, kinds[field.type if isinstance(field.type, str) else field.type.__name__])
        for field in dataclasses.fields(Settings)
    }


def test_tracker_yaml_sets_every_parameter_with_the_nodes_default():
    config = yaml.safe_load(TRACKER_YAML.read_text())
    assert list(config) == ["/**"] and list(config["/**"]) == ["ros__parameters"], list(config)
    values = config["/**"]["ros__parameters"]
    declared = tracker_node_parameters()
    assert sorted(values) == sorted(declared), (
        f"config/tracker.yaml: not declared by tracker_node {sorted(set(values) - set(declared))}, "
        f"missing {sorted(set(declared) - set(values))}")
    for name, (default, kind) in declared.items():
        # type first: YAML's 5 is not the node's 5.0 (ROS refuses a params file of the wrong type)
        assert type(values[name]) is kind, f"{name}: tracker.yaml has {values[name]!r}, the node declares {kind.__name__}"
        assert values[name] == default, f"{name}: tracker.yaml has {values[name]!r}, the node declares {default!r}"


def test_docs_table_matches_tracker_node_parameters():
    check_table("`tracker_node` parameters", tracker_node_parameters())


def test_docs_say_which_tracker_node_parameters_are_read_only():
    from vtrack_ros.tracker_node import READ_ONLY

    table = parameter_table("`tracker_node` parameters")
    documented = {name for name, row in table.items() if "read-only" in row["meaning"]}
    assert documented == set(READ_ONLY)


def test_docs_table_matches_video_publisher_parameters():
    declared = video_publisher_parameters()
    assert declared["source"][0] is dataclasses.MISSING  # no default: the docs say "(required)"
    check_table("`video_publisher` parameters", declared)


def test_video_publisher_declares_exactly_the_settings_fields():
    """declare_settings declares one parameter per Settings field, with its default."""
    from vtrack_ros.video_publisher import declare_settings

    declared = {}

    class Parameter:
        def __init__(self, value):
            self.value = value

    class FakeNode:
        def declare_parameter(self, name, default, descriptor=None):
            declared[name] = default
            return Parameter("x.mp4" if name == "source" else default)

    declare_settings(FakeNode(), None)
    expected = video_publisher_parameters()
    assert sorted(declared) == sorted(expected)
    for name, (default, kind) in expected.items():
        assert type(declared[name]) is kind
        if default is not dataclasses.MISSING:
            assert declared[name] == default
