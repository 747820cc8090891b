"""Start the real tracker_node process and talk to it from a test-side rclpy node."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ros_helpers import fresh_domain_id
from vtrack_ros.msg import TrackedObjectArray
from vtrack_ros.srv import InitTarget, StopTarget



def tracker_node_command() -> list[str]:
    """The console script beside this interpreter (the venv's), else the module (a colcon
    install, where the executable lives in lib/vtrack_ros)."""
    script = Path(sys.executable).parent / "tracker_node"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vtrack_ros.tracker_node"]

STAMP_ZERO_NS = 1_000 * 1_000_000_000  # synthetic stamps: frame i at 1000 s + i / 30 s


def frame_stamp_ns(index: int) -> int:
    return STAMP_ZERO_NS + index * 33_333_333


def to_time(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def bgr_message(image: np.ndarray, stamp: int, frame_id: str = "camera") -> Image:
    message = Image()
    message.header.stamp = to_time(stamp)
    message.header.frame_id = frame_id
    message.height, message.width = image.shape[:2]
    message.encoding = "bgr8"
    message.step = image.shape[1] * 3
    message.data = np.ascontiguousarray(image).tobytes()
    return message


@dataclass
class NodeUnderTest:
    """A tracker_node process plus a client node in the same, fresh ROS domain."""

    log_path: Path
    node_args: list[str] = field(default_factory=list)
    node_name: str = "tracker_node"
    image_topic: str = "/cam/image"
    expect_subscription: bool = True  # False: a managed node subscribes only once activated
    # The node's behaviour is tested with CSRT (fast, deterministic on a loaded CPU); None
    # starts the node with its own default tracker.
    tracker: str | None = "csrt"

    def __post_init__(self) -> None:
        self.domain_id = fresh_domain_id()
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id), PYTHONUNBUFFERED="1")
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [*tracker_node_command(), "--ros-args", "-r", f"image:={self.image_topic}",
             "-p", "qos_reliability:=reliable", *(["-p", f"tracker:={self.tracker}"] if self.tracker else []),
             *self.node_args],
            env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = rclpy.create_node("test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.results: list[TrackedObjectArray] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(TrackedObjectArray, f"/{self.node_name}/tracked_objects", self.results.append, qos)
        self.image_publisher = self.node.create_publisher(Image, self.image_topic, qos)
        self.init_client = self.node.create_client(InitTarget, f"/{self.node_name}/init_target")
        self.stop_client = self.node.create_client(StopTarget, f"/{self.node_name}/stop_target")
        if not self.init_client.wait_for_service(timeout_sec=30.0):
            raise RuntimeError(f"tracker_node did not come up:\n{self.log()}")
        self.stop_client.wait_for_service(timeout_sec=10.0)
        if self.expect_subscription:
            self.wait_for(lambda: self.image_publisher.get_subscription_count() > 0, 10.0)

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def spin(self, seconds: float) -> None:
        self.wait_for(lambda: False, seconds)

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.02)
        return True

    def result_for(self, stamp: int, since: int = 0) -> TrackedObjectArray | None:
        """The newest result with this stamp among results[since:]."""
        for message in reversed(self.results[since:]):
            if stamp_ns(message.header.stamp) == stamp:
                return message
        return None

    def publish(self, image: np.ndarray, stamp: int, wait: bool = True, timeout: float = 20.0) -> TrackedObjectArray | None:
        """Publish one frame; with wait, return the node's output for it (lockstep): a result
        with its stamp that arrived after it was published (a stamp may come again when a
        test steps the clock back)."""
        since = len(self.results)
        self.image_publisher.publish(bgr_message(image, stamp))
        if not wait:
            return None
        self.wait_for(lambda: self.result_for(stamp, since) is not None, timeout)
        return self.result_for(stamp, since)

    def publish_message(self, message) -> None:
        self.image_publisher.publish(message)

    def call(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        if not self.wait_for(future.done, timeout):
            raise TimeoutError(f"service {client.srv_name} did not answer in {timeout} s\n{self.log()}")
        return future.result()

    def init(self, x, y, w, h, stamp: int = 0, target_id: str = "", tracker: str = "") -> InitTarget.Response:
        request = InitTarget.Request(target_id=target_id, stamp=to_time(stamp), x=float(x), y=float(y),
                                     width=float(w), height=float(h), tracker=tracker)
        return self.call(self.init_client, request)

    def stop(self, target_id: str = "") -> StopTarget.Response:
        return self.call(self.stop_client, StopTarget.Request(target_id=target_id))

    def close(self) -> None:
        try:
            self.node.destroy_node()
            rclpy.shutdown(context=self.context)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGINT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            self.log_file.close()
