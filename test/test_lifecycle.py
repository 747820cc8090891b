"""tracker_node as a managed (lifecycle) node, driven through the standard lifecycle
services like a launch system or a lifecycle manager would: the real process, real frames
of a dev sequence. And the warm-up: the first init after start-up (or configure) must cost
what a warm init costs, not what a cold start does."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402

from node_harness import NodeUnderTest, frame_stamp_ns  # noqa: E402
from vtrack_core import Box  # noqa: E402
from vtrack_core.eval.datasets import load_dataset  # noqa: E402

pytestmark = pytest.mark.ros

QUIET = 1.5  # seconds without output that count as "nothing published"


@pytest.fixture
def sequence(dev_dataset_dir):
    return load_dataset(dev_dataset_dir, names=["Couple"])[0]


class Lifecycle:
    """The node's ~/get_state and ~/change_state, called from the test's node."""

    def __init__(self, harness: NodeUnderTest) -> None:
        self.harness = harness
        self.get = harness.node.create_client(GetState, f"/{harness.node_name}/get_state")
        self.change = harness.node.create_client(ChangeState, f"/{harness.node_name}/change_state")
        assert self.get.wait_for_service(timeout_sec=30.0) and self.change.wait_for_service(timeout_sec=30.0)

    def state(self) -> str:
        return self.harness.call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.harness.call(self.change, request, timeout=120.0).success


def quiet(harness: NodeUnderTest, sequence, start: int, count: int = 3) -> bool:
    """Frames sent, and no output for any of them (nor anything else) within QUIET s."""
    before = len(harness.results)
    for index in range(start, start + count):
        harness.publish(sequence.image(index), frame_stamp_ns(index), wait=False)
    harness.spin(QUIET)
    return len(harness.results) == before


def test_lifecycle_transitions_through_the_real_services(tmp_path, sequence):
    gt = sequence.ground_truth
    harness = NodeUnderTest(tmp_path / "tracker_node.log", node_args=["-p", "lifecycle:=true"],
                            expect_subscription=False)
    try:
        lifecycle = Lifecycle(harness)
        assert lifecycle.state() == "unconfigured"
        assert harness.image_publisher.get_subscription_count() == 0  # not subscribed before activate
        assert quiet(harness, sequence, 0)
        refused = harness.init(*gt[0])
        assert not refused.success and "not active" in refused.message, refused.message

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "inactive"
        assert "warmed up 'csrt'" in harness.log()
        assert quiet(harness, sequence, 3)
        assert harness.image_publisher.get_subscription_count() == 0

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == "active"
        assert harness.wait_for(lambda: harness.image_publisher.get_subscription_count() > 0, 10.0)
        harness.spin(0.5)  # the node's reader matches this writer too
        first = harness.publish(sequence.image(6), frame_stamp_ns(6))
        assert first is not None and list(first.objects) == [], harness.log()
        started = harness.init(*gt[6], stamp=frame_stamp_ns(6), target_id="couple")
        assert started.success, started.message
        for index in range(7, 12):
            output = harness.publish(sequence.image(index), frame_stamp_ns(index))
            assert output is not None and [o.target_id for o in output.objects] == ["couple"], harness.log()

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == "inactive"
        assert harness.wait_for(lambda: harness.image_publisher.get_subscription_count() == 0, 10.0)
        assert quiet(harness, sequence, 12)  # no output after deactivate
        refused = harness.init(*gt[12])
        assert not refused.success and "not active" in refused.message

        # Reactivated: the target (its tracker, its model) was kept and goes on.
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert harness.wait_for(lambda: harness.image_publisher.get_subscription_count() > 0, 10.0)
        harness.spin(0.5)
        output = harness.publish(sequence.image(15), frame_stamp_ns(15))
        assert output is not None, harness.log()
        (obj,) = output.objects
        assert obj.target_id == "couple"
        assert Box(obj.x, obj.y, obj.width, obj.height).iou(Box.from_xywh(gt[15])) > 0.3

        # Cleanup frees the trackers: configured and active again, the node has no target.
        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert lifecycle.state() == "unconfigured"
        assert not lifecycle.transition(Transition.TRANSITION_ACTIVATE)  # not from unconfigured
        assert lifecycle.state() == "unconfigured"
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert harness.wait_for(lambda: harness.image_publisher.get_subscription_count() > 0, 10.0)
        harness.spin(0.5)
        output = harness.publish(sequence.image(16), frame_stamp_ns(16))
        assert output is not None and list(output.objects) == [], harness.log()

        # Shutdown finalizes the node and ends the process.
        assert lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert harness.wait_for(lambda: not harness.alive(), 20.0), harness.log()
        assert harness.process.returncode == 0, harness.log()
        log = harness.log()
        for step in ("configured", "activated", "deactivated", "cleaned up", "finalized"):
            assert re.search(rf"lifecycle: .*{step}", log), (step, log)
    finally:
        harness.close()


def test_plain_node_is_configured_and_active_at_start(tmp_path, sequence):
    """lifecycle:=false (the default): no lifecycle services, tracking as soon as the init
    service is there, warmed up before it."""
    harness = NodeUnderTest(tmp_path / "tracker_node.log")
    try:
        names = [name for name, _ in harness.node.get_service_names_and_types()]
        assert harness.wait_for(lambda: "/tracker_node/init_target" in
                                [n for n, _ in harness.node.get_service_names_and_types()], 10.0)
        names = [n for n, _ in harness.node.get_service_names_and_types()]
        assert "/tracker_node/change_state" not in names and "/tracker_node/get_state" not in names
        assert "warmed up 'csrt'" in harness.log()
        output = harness.publish(sequence.image(0), frame_stamp_ns(0))
        assert output is not None
    finally:
        harness.close()


def _managed(tmp_path, name: str, *args: str) -> tuple[NodeUnderTest, Lifecycle]:
    harness = NodeUnderTest(tmp_path / f"{name}.log", node_args=["-p", "lifecycle:=true", *args],
                            expect_subscription=False)
    return harness, Lifecycle(harness)


@pytest.mark.parametrize("steps, shutdown", [
    ((), Transition.TRANSITION_UNCONFIGURED_SHUTDOWN),
    ((Transition.TRANSITION_CONFIGURE,), Transition.TRANSITION_INACTIVE_SHUTDOWN),
], ids=["from-unconfigured", "from-inactive"])
def test_shutdown_from_the_other_primary_states_ends_the_process(tmp_path, steps, shutdown):
    harness, lifecycle = _managed(tmp_path, "tracker_node")
    try:
        for step in steps:
            assert lifecycle.transition(step)
        label = lifecycle.state()
        assert lifecycle.transition(shutdown)
        assert harness.wait_for(lambda: not harness.alive(), 20.0), harness.log()
        assert harness.process.returncode == 0, harness.log()
        assert f"lifecycle: finalized (shut down from '{label}')" in harness.log(), harness.log()
        assert "Traceback" not in harness.log()
    finally:
        harness.close()


def test_sigint_takes_an_active_managed_node_through_shutdown(tmp_path, sequence):
    """Ctrl-C on a tracking managed node: the shutdown transition runs (deactivate, free),
    and the process exits 0 without a traceback."""
    import signal

    gt = sequence.ground_truth
    harness, lifecycle = _managed(tmp_path, "tracker_node")
    try:
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert harness.wait_for(lambda: harness.image_publisher.get_subscription_count() > 0, 10.0)
        harness.spin(0.5)
        assert harness.publish(sequence.image(0), frame_stamp_ns(0)) is not None, harness.log()
        assert harness.init(*gt[0], stamp=frame_stamp_ns(0), target_id="couple").success
        output = harness.publish(sequence.image(1), frame_stamp_ns(1))
        assert output is not None and [o.target_id for o in output.objects] == ["couple"]
        os.killpg(harness.process.pid, signal.SIGINT)
        assert harness.wait_for(lambda: not harness.alive(), 20.0), harness.log()
        log = harness.log()
        assert harness.process.returncode == 0 and "Traceback" not in log, log
        assert "lifecycle: finalized (shut down from 'active')" in log, log
    finally:
        harness.close()


def test_a_configure_that_fails_leaves_the_node_unconfigured_and_serving(tmp_path, sequence):
    """A tracker whose weights do not load: configure fails with the reason in the log, the
    node stays unconfigured and keeps answering; with another tracker, configure succeeds."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    harness, lifecycle = _managed(tmp_path, "tracker_node", "-p", "tracker:=siamfc", "-p", f"weights:={junk}",
                                  "-p", "device:=cpu")
    try:
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "unconfigured"
        assert re.search(r"lifecycle: configure failed .*warm-up of tracker 'siamfc' failed", harness.log()), harness.log()
        refused = harness.init(*sequence.ground_truth[0])
        assert not refused.success and "not active" in refused.message
        client = harness.node.create_client(SetParameters, f"/{harness.node_name}/set_parameters")
        assert client.wait_for_service(timeout_sec=10.0)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="csrt")
        result = harness.call(client, SetParameters.Request(parameters=[ParameterMsg(name="tracker", value=value)]))
        assert result.results[0].successful, result.results[0].reason
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "inactive" and "warmed up 'csrt'" in harness.log()
    finally:
        harness.close()


COLD_START = """
import sys, time
started = time.perf_counter()
import cv2
from vtrack_core import Box, create_tracker
image = cv2.imread(sys.argv[1])
tracker = create_tracker("siamfc", weights=sys.argv[2], device="cpu", backbone="alexnet")
built = time.perf_counter()
tracker.init(image, Box(*map(float, sys.argv[3].split(","))))
print(f"{built - started:.4f} {time.perf_counter() - built:.4f}")
"""


def _start_times(message: str) -> tuple[float, float]:
    match = re.search(r"tracker built in ([\d.]+) s, initialised in ([\d.]+) s", message)
    assert match, message
    return float(match.group(1)), float(match.group(2))


def test_warm_up_makes_the_first_init_as_fast_as_a_warm_one(tmp_path, sequence):
    """SiamFC on the CPU: a cold process pays the import of torch and the tracker, building
    the network and loading its weights, and the first inference; the node does all that at
    start-up, so its first real init is cheap (the spare tracker is ready). Compared with a
    cold-start subprocess doing the same first init, and with the node under warm_up:=false."""
    import torch

    from vtrack_core.trackers.siamfc import SiamFCNet

    weights = tmp_path / "random_siamfc.pt"
    torch.save(SiamFCNet().state_dict(), weights)  # Table 1's AlexNet (the default backbone is mobilenet_v2)
    settings = tmp_path / "siamfc_alexnet.yaml"
    settings.write_text("siamfc:\n  backbone: alexnet\n")
    box = ",".join(str(v) for v in sequence.ground_truth[0])
    cold = subprocess.run(
        [sys.executable, "-c", COLD_START, str(sequence.frames[0]), str(weights), box],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert cold.returncode == 0, cold.stderr
    cold_build, cold_init = map(float, cold.stdout.split()[-2:])

    def first_inits(warm_up: str) -> list[tuple[float, float, float]]:
        harness = NodeUnderTest(tmp_path / f"tracker_node_{warm_up}.log", node_args=[
            "-p", "tracker:=siamfc", "-p", f"weights:={weights}", "-p", "device:=cpu", "-p", f"warm_up:={warm_up}",
            "-p", f"tracker_config_file:={settings}"])
        try:
            times = []
            for index in range(2):
                harness.publish(sequence.image(index), frame_stamp_ns(index))
                asked = time.monotonic()
                response = harness.init(*sequence.ground_truth[index], stamp=frame_stamp_ns(index), target_id="a")
                answered = time.monotonic() - asked
                assert response.success, response.message
                times.append((*_start_times(response.message), answered))
            if warm_up == "true":
                assert re.search(r"warmed up 'siamfc' in [\d.]+ s", harness.log()), harness.log()
            return times
        finally:
            harness.close()

    warm = first_inits("true")
    unwarmed = first_inits("false")
    print(f"cold-start subprocess: build (imports, network, weights) {cold_build:.3f} s, init {cold_init:.3f} s")
    print(f"node, warm_up:=true: first init build {warm[0][0]:.4f} s, init {warm[0][1]:.4f} s, answer {warm[0][2]:.3f} s; "
          f"second {warm[1]}")
    print(f"node, warm_up:=false: first init build {unwarmed[0][0]:.4f} s, init {unwarmed[0][1]:.4f} s, "
          f"answer {unwarmed[0][2]:.3f} s; second {unwarmed[1]}")
    # The first real init takes the spare: nothing is built while the request waits.
    assert warm[0][0] < 0.005 and warm[0][0] < 0.25 * unwarmed[0][0], (warm, unwarmed)
    # Far below the cold start: the node's whole answer against the cold process's first init.
    assert warm[0][2] < 0.25 * (cold_build + cold_init), (warm, cold_build, cold_init)
    assert np.isfinite(warm[0][1]) and warm[0][1] < max(0.5, 0.5 * (cold_build + cold_init))
