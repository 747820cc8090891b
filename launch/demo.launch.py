"""Demo without a camera: a video played as a camera, the tracker, and an automatic init.

    ros2 launch vtrack_ros demo.launch.py
    ros2 launch vtrack_ros demo.launch.py tracker:=csrt source:=walk.mp4 init_box:=10,20,40,80

The init box refers to the first frame of `source`.  So that it still fits when the init
arrives (the tracker may take seconds to load its model), the publisher waits for the
tracker to subscribe and then keeps publishing the first frame for `hold_first_frame`
seconds; `vtrack-init` (started after `init_delay`) waits for the service and retries a
refused init (e.g. "no image yet") for a while.  The defaults track a pedestrian in
OpenCV's sample video vtest.avi (package opencv-doc).  The tracker node comes from
tracker.launch.py; the arguments of both are defined in vtrack_launch_common.py.
"""
import os
import sys

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# The shared argument definitions sit beside this file (launch/, or share/vtrack_ros/launch).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import vtrack_launch_common as common  # noqa: E402

IMAGE_TOPIC = '/camera/image_raw'
CAMERA_INFO_TOPIC = '/camera/camera_info'


def generate_launch_description():
    arg = common.config

    video_publisher = Node(
        package='vtrack_ros',
        executable='video_publisher',
        name='video_publisher',
        parameters=[{
            'source': ParameterValue(arg('source'), value_type=str),
            'rate': ParameterValue(arg('rate'), value_type=float),
            'loop': ParameterValue(arg('loop'), value_type=bool),
            'hold_first_frame': ParameterValue(arg('hold_first_frame'), value_type=float),
            'wait_for_subscribers': 1,  # the tracker: do not play frames nobody sees
            'frame_id': 'camera',
        }],
        remappings=[('image', IMAGE_TOPIC), ('camera_info', CAMERA_INFO_TOPIC)],
        output='screen',
    )

    tracker = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(_HERE, 'tracker.launch.py')),
        launch_arguments={
            'tracker': arg('tracker'),
            'device': arg('device'),
            'params_file': arg('params_file'),
            'image': IMAGE_TOPIC,
        }.items(),
    )

    init = TimerAction(
        period=arg('init_delay'),
        actions=[
            Node(
                package='vtrack_ros',
                executable='vtrack-init',
                # `--` so that a box with a negative x is not read as an option.
                arguments=['--node', '/tracker_node', '--timeout', '60', '--retry-for', '10',
                           '--', arg('init_box')],
                output='screen',
            )
        ],
    )

    return LaunchDescription([
        *common.declare_arguments('source', 'rate', 'loop', 'tracker', 'device', 'params_file',
                                  'init_box', 'init_delay', 'hold_first_frame'),
        video_publisher,
        tracker,
        init,
    ])
