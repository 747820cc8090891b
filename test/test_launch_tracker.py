"""launch_testing test of launch/tracker.launch.py, for machines with a ROS 2 install
(colcon test). Where launch_testing is absent (the pip/venv set-up: `launch` is not on
PyPI) it is skipped; tracker_node itself is tested as a real process in
test_tracker_node.py either way."""
import os
import unittest

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (needs a ROS 2 Jazzy/Kilted install)"
)
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from vtrack_ros.srv import InitTarget, StopTarget  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(get_package_share_directory("vtrack_ros"), "launch", "tracker.launch.py")
    return launch.LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(launch_file),
            launch_arguments={"tracker": "kcf", "image": "/launch_test/image", "namespace": "lt"}.items(),
        ),
        launch_testing.actions.ReadyToTest(),
    ])


class TestTrackerLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("launch_test_client")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_real_frames_in_boxes_out(self):
        """Through the launched node: frames of a dev sequence on the remapped topic, a bad box
        refused for what is wrong with it, a good one tracked by the tracker the launch
        argument chose, on the namespaced output topic."""
        import numpy as np
        from sensor_msgs.msg import Image

        from vtrack_core.eval.datasets import load_dataset
        from vtrack_ros.msg import TrackedObjectArray

        shared = os.environ.get("VTRACK_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
        sequence = load_dataset(os.path.join(shared, "datasets", "dev"), names=["Couple"])[0]
        init = self.node.create_client(InitTarget, "/lt/tracker_node/init_target")
        stop = self.node.create_client(StopTarget, "/lt/tracker_node/stop_target")
        self.assertTrue(init.wait_for_service(timeout_sec=30.0))
        self.assertTrue(stop.wait_for_service(timeout_sec=10.0))
        images = self.node.create_publisher(Image, "/launch_test/image", 10)
        outputs = []
        self.node.create_subscription(TrackedObjectArray, "/lt/tracker_node/tracked_objects", outputs.append, 10)

        def publish(index):
            frame = sequence.image(index)
            message = Image(encoding="bgr8", height=frame.shape[0], width=frame.shape[1], step=frame.shape[1] * 3)
            message.header.stamp.sec = index + 1
            message.header.frame_id = "camera"
            message.data = np.ascontiguousarray(frame).tobytes()
            images.publish(message)

        def call(request):
            future = init.call_async(request)
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=10.0)
            return future.result()

        for _ in range(100):  # until the node has a frame (discovery takes a moment)
            publish(0)
            rclpy.spin_once(self.node, timeout_sec=0.1)
            if any(not m.objects for m in outputs):
                break
        x, y, w, h = sequence.ground_truth[0]
        bad = call(InitTarget.Request(x=float(x), y=float(y), width=0.0, height=float(h)))
        self.assertFalse(bad.success)
        self.assertIn("width", bad.message)
        good = call(InitTarget.Request(target_id="couple", x=float(x), y=float(y), width=float(w), height=float(h)))
        self.assertTrue(good.success, good.message)
        for index in range(1, 6):
            publish(index)
            for _ in range(50):
                rclpy.spin_once(self.node, timeout_sec=0.1)
                if any(m.header.stamp.sec == index + 1 for m in outputs):
                    break
        tracked = [m.objects[0] for m in outputs if m.objects]
        self.assertTrue(tracked, "no tracked box came back")
        self.assertEqual(tracked[-1].target_id, "couple")
        self.assertEqual(tracked[-1].tracker, "kcf")  # the launch argument beat the params file

    def test_image_remap_and_parameters(self):
        subscribers = []
        for _ in range(100):
            subscribers = self.node.get_subscriptions_info_by_topic("/launch_test/image")
            if subscribers:
                break
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(subscribers, "tracker_node does not subscribe to the remapped image topic")
        publishers = self.node.get_publishers_info_by_topic("/lt/tracker_node/tracked_objects")
        self.assertTrue(publishers)
        self.assertEqual(publishers[0].topic_type, "vtrack_ros/msg/TrackedObjectArray")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
