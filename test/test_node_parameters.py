"""One source for the nodes' parameters: what the node declares is what config/tracker.yaml
sets and what docs/nodes.md documents, names, types and defaults alike.

tracker_node declares its parameters from `vtrack_ros.tracker_node.PARAMETERS`
(name -> (default, description)); video_publisher from the fields of
`vtrack_ros.video_publisher.Settings`. A parameter added, removed, renamed or given another
default in one place and not the others fails here.

tracker_node also offers rclpy's qos_overrides (`qos_overrides.<topic>.<entity>.<policy>`,
the topic being the resolved one, so docs/nodes.md writes it as a placeholder and
config/tracker.yaml only shows them in a comment); the real node is started to check that
they are declared read-only, win over qos_reliability, and that bad values stop it at once.
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
# A qos_overrides row: the topic as a placeholder, <image> or <tracked_objects>.
QOS_ROW = re.compile(r"qos_overrides\.<([a-z_]+)>\.(subscription|publisher)\.([a-z_]+)")


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
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name) or QOS_ROW.fullmatch(name), (
            f"one parameter per row, got {row['name']!r}")
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


def tracker_node_qos_overrides() -> dict[str, tuple[object, type]]:
    """The qos_overrides rows docs/nodes.md must have, with the defaults the node gives them
    (its own QoS: image_qos of the default qos_reliability, results_qos)."""
    from vtrack_ros.tracker_node import (PARAMETERS, QOS_OVERRIDE_ENTITIES, QOS_OVERRIDE_POLICIES, image_qos,
                                         qos_parameter_value, results_qos)

    profiles = {"image": image_qos(PARAMETERS["qos_reliability"][0]), "~/tracked_objects": results_qos()}
    rows = {}
    for topic, entity in QOS_OVERRIDE_ENTITIES.items():
        for policy in QOS_OVERRIDE_POLICIES:
            default = qos_parameter_value(profiles[topic], policy)
            rows[f"qos_overrides.<{topic.removeprefix('~/')}>.{entity}.{policy}"] = (default, type(default))
    return rows


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
    check_table("`tracker_node` parameters", {**tracker_node_parameters(), **tracker_node_qos_overrides()})


def test_docs_say_which_tracker_node_parameters_are_read_only():
    from vtrack_ros.tracker_node import READ_ONLY

    table = parameter_table("`tracker_node` parameters")
    documented = {name for name, row in table.items() if "read-only" in row["meaning"]}
    assert documented == set(READ_ONLY) | set(tracker_node_qos_overrides())  # rclpy declares them read-only


def test_tracker_yaml_shows_the_qos_overrides_in_a_comment():
    """Their names hold the resolved topic, so tracker.yaml cannot set them for every
    remapping: it shows them in a comment that, uncommented, is valid YAML with the
    documented names (for the launch file's default topic) and values the node accepts."""
    from vtrack_ros.tracker_node import check_qos_override

    text = TRACKER_YAML.read_text().splitlines()
    starts = [i for i, line in enumerate(text) if line.startswith("    # qos_overrides:")]
    assert len(starts) == 1, "config/tracker.yaml needs one commented qos_overrides example"
    block = [text[starts[0]]]
    for line in text[starts[0] + 1:]:
        if not line.startswith("    #   "):
            break
        block.append(line)
    example = yaml.safe_load("\n".join(line[len("    # "):] for line in block))["qos_overrides"]
    documented = {name.replace("<image>", "/camera/image_raw").replace("<tracked_objects>", "/tracker_node/tracked_objects")
                  for name in tracker_node_qos_overrides()}
    shown = {}
    for topic, entities in example.items():
        for entity, policies in entities.items():
            for policy, value in policies.items():
                shown[f"qos_overrides.{topic}.{entity}.{policy}"] = value
                check_qos_override(policy, policy, value)
    assert shown and set(shown) <= documented, (sorted(shown), sorted(documented))


# --- qos_overrides on the real node -------------------------------------------------------------

def _parameter_client(harness, service, kind):
    client = harness.node.create_client(kind, f"/{harness.node_name}/{service}")
    assert client.wait_for_service(timeout_sec=10.0)
    return client


def test_qos_overrides_are_read_only_parameters_that_win_over_qos_reliability(tmp_path, dev_dataset_dir):
    """The harness starts the node with qos_reliability:=reliable; the override makes the
    image subscription best effort (seen from the graph, and a best-effort camera, which a
    reliable subscription would never match, gets its frames tracked)."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from node_harness import NodeUnderTest, bgr_message, frame_stamp_ns
    from vtrack_core.eval.datasets import load_dataset

    sequence = load_dataset(dev_dataset_dir, names=["Couple"])[0]
    image = "qos_overrides./cam/image.subscription"
    harness = NodeUnderTest(tmp_path / "tracker_node.log", node_args=[
        "-p", f"{image}.reliability:=best_effort", "-p", f"{image}.depth:=3"])
    try:
        (endpoint,) = [info for info in harness.node.get_subscriptions_info_by_topic("/cam/image")
                       if info.node_name == "tracker_node"]
        assert endpoint.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT, endpoint

        listed = harness.call(_parameter_client(harness, "list_parameters", ListParameters),
                              ListParameters.Request(prefixes=["qos_overrides"])).result.names
        results = "qos_overrides./tracker_node/tracked_objects.publisher"
        expected = {f"{prefix}.{policy}" for prefix in (image, results) for policy in ("history", "depth", "reliability")}
        assert expected <= set(listed), listed
        names = sorted(expected)
        values = harness.call(_parameter_client(harness, "get_parameters", GetParameters),
                              GetParameters.Request(names=names)).values
        got = {name: value.string_value if value.type == ParameterType.PARAMETER_STRING else value.integer_value
               for name, value in zip(names, values)}
        assert got == {f"{image}.history": "keep_last", f"{image}.depth": 3, f"{image}.reliability": "best_effort",
                       f"{results}.history": "keep_last", f"{results}.depth": 10, f"{results}.reliability": "reliable"}
        descriptors = harness.call(_parameter_client(harness, "describe_parameters", DescribeParameters),
                                   DescribeParameters.Request(names=names)).descriptors
        assert all(descriptor.read_only for descriptor in descriptors), descriptors
        change = ParameterMsg(name=f"{image}.reliability",
                              value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="reliable"))
        refused = harness.call(_parameter_client(harness, "set_parameters", SetParameters),
                               SetParameters.Request(parameters=[change])).results[0]
        assert not refused.successful and "read-only" in refused.reason, refused

        camera = harness.node.create_publisher(Image, "/cam/image", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert harness.wait_for(lambda: camera.get_subscription_count() > 0, 10.0), "best-effort camera not matched"
        harness.spin(0.5)
        tracked = None
        for index in range(10):  # best effort: a frame may be lost on the way
            since = len(harness.results)
            camera.publish(bgr_message(sequence.image(index), frame_stamp_ns(index)))
            if harness.wait_for(lambda: harness.result_for(frame_stamp_ns(index), since) is not None, 2.0):
                tracked = index
                break
        assert tracked is not None, harness.log()
        assert "parameters changed" not in harness.log(), harness.log()
    finally:
        harness.close()


@pytest.mark.parametrize("setting, reason", [
    ("qos_overrides./cam/image.subscription.reliability:=sometimes",
     "qos_overrides./cam/image.subscription.reliability must be one of reliable, best_effort"),
    ("qos_overrides./cam/image.subscription.depth:=0",
     "qos_overrides./cam/image.subscription.depth must be a whole number of at least 1, got 0"),
    ("qos_overrides./cam/image.subscription.depth:=deep",
     "parameter 'qos_overrides./cam/image.subscription.depth' to 'deep' of type 'STRING', expecting type 'INTEGER'"),
    ("qos_overrides./tracker_node/tracked_objects.publisher.history:=keep_some",
     "qos_overrides./tracker_node/tracked_objects.publisher.history must be one of keep_last"),
])
@pytest.mark.parametrize("lifecycle", ["false", "true"])
def test_bad_qos_overrides_stop_the_node_at_start(setting, reason, lifecycle):
    """Refused before anything is built, managed node too (its subscription would only come
    at activate): exit code 2, one clear line, no traceback."""
    import os
    import subprocess

    from node_harness import tracker_node_command
    from ros_helpers import fresh_domain_id

    result = subprocess.run([*tracker_node_command(), "--ros-args", "-r", "image:=/cam/image", "-p",
                             f"lifecycle:={lifecycle}", "-p", setting], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, ROS_DOMAIN_ID=str(fresh_domain_id())))
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert result.returncode == 2 and len(lines) == 1 and reason in lines[0], (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr


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
