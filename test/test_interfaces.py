"""The package's own interfaces import and travel through a real rclpy publisher and
subscriber, and a real service, in an isolated ROS domain."""
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed: run tools/setup.sh")

from builtin_interfaces.msg import Duration, Time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from ros_helpers import fresh_domain_id  # noqa: E402
from vtrack_ros.msg import TrackedObject, TrackedObjectArray  # noqa: E402
from vtrack_ros.srv import InitTarget, StopTarget  # noqa: E402


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=fresh_domain_id())
    yield context
    rclpy.shutdown(context=context)


def spin_until(executor, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_state_constants_match_core():
    from vtrack_core import TrackState

    assert TrackedObject.STATE_INITIALIZING == TrackState.INITIALIZING
    assert TrackedObject.STATE_TRACKING == TrackState.TRACKING
    assert TrackedObject.STATE_UNCERTAIN == TrackState.UNCERTAIN
    assert TrackedObject.STATE_LOST == TrackState.LOST


def test_tracked_objects_round_trip_through_pub_sub(ros_context):
    node = rclpy.create_node("interface_roundtrip", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received = []
    node.create_subscription(TrackedObjectArray, "tracked", received.append, 10)
    publisher = node.create_publisher(TrackedObjectArray, "tracked", 10)

    message = TrackedObjectArray()
    message.header.stamp = Time(sec=12, nanosec=345)
    message.header.frame_id = "camera_optical"
    for i, state in enumerate((TrackedObject.STATE_TRACKING, TrackedObject.STATE_LOST)):
        obj = TrackedObject(
            target_id=f"t{i}", tracker="csrt", x=1.5 + i, y=2.5, width=30.25, height=40.0,
            confidence=0.75, state=state, processing_time=Duration(sec=0, nanosec=4_000_000),
        )
        message.objects.append(obj)

    def published_and_received():
        publisher.publish(message)
        return bool(received)

    assert spin_until(executor, published_and_received)
    got = received[0]
    assert got.header.frame_id == "camera_optical" and got.header.stamp.sec == 12 and got.header.stamp.nanosec == 345
    assert [o.target_id for o in got.objects] == ["t0", "t1"]
    assert got.objects[1].state == TrackedObject.STATE_LOST
    assert (got.objects[0].x, got.objects[0].width) == (1.5, 30.25)
    assert got.objects[0].confidence == pytest.approx(0.75)
    assert got.objects[0].processing_time.nanosec == 4_000_000
    node.destroy_node()


def test_init_and_stop_services_round_trip(ros_context):
    server = rclpy.create_node("fake_tracker", context=ros_context)
    client_node = rclpy.create_node("client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(server)
    executor.add_node(client_node)

    def on_init(request, response):
        response.success = request.width > 0
        response.target_id = request.target_id or "auto-1"
        response.message = f"{request.tracker}@{request.stamp.sec}"
        return response

    def on_stop(request, response):
        response.success = request.target_id == ""
        response.message = "all stopped"
        return response

    server.create_service(InitTarget, "init_target", on_init)
    server.create_service(StopTarget, "stop_target", on_stop)
    init_client = client_node.create_client(InitTarget, "init_target")
    stop_client = client_node.create_client(StopTarget, "stop_target")
    assert init_client.wait_for_service(timeout_sec=10.0)

    future = init_client.call_async(
        InitTarget.Request(target_id="", stamp=Time(sec=7), x=1.0, y=2.0, width=3.0, height=4.0, tracker="nano")
    )
    assert spin_until(executor, future.done)
    assert future.result().success and future.result().target_id == "auto-1"
    assert future.result().message == "nano@7"

    assert stop_client.wait_for_service(timeout_sec=10.0)
    future = stop_client.call_async(StopTarget.Request(target_id=""))
    assert spin_until(executor, future.done)
    assert future.result().success and future.result().message == "all stopped"
