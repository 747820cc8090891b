"""Demo without a camera: a video played as a camera, the tracker, and an automatic init.

    ros2 launch vtrack_ros demo.launch.py
    ros2 launch vtrack_ros demo.launch.py tracker:=csrt source:=walk.mp4 init_box:=10,20,40,80

The init box refers to the first frame of `source`.  So that it still fits when the init
arrives (the tracker may take seconds to load its model), the publisher waits for the
tracker to subscribe and then keeps publishing the first frame for `hold_first_frame`
seconds; `vtrack-init` (started after `init_delay`) waits for the service and retries a
refused init (e.g. "no image yet") for a while.  The defaults track a pedestrian in
OpenCV's sample video vtest.avi (package opencv-doc).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

IMAGE_TOPIC = '/camera/image_raw'
CAMERA_INFO_TOPIC = '/camera/camera_info'


def generate_launch_description():
    share = get_package_share_directory('vtrack_ros')

    def arg(name):
        return LaunchConfiguration(name)

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
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'tracker.launch.py')),
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
        DeclareLaunchArgument(
            'source', default_value='/usr/share/doc/opencv-doc/examples/data/vtest.avi',
            description='video file or OTB-style image-sequence folder to play as the camera'),
        DeclareLaunchArgument(
            'rate', default_value='10.0', description='frames per second to publish'),
        DeclareLaunchArgument(
            'loop', default_value='false',
            description='play the source again when it ends (the target then jumps back)'),
        DeclareLaunchArgument(
            'tracker', default_value='', description='tracker registry name; empty: from params_file'),
        DeclareLaunchArgument(
            'device', default_value='', description='torch device; empty: from params_file'),
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(share, 'config', 'tracker.yaml'),
            description='YAML parameters file of the tracker node'),
        DeclareLaunchArgument(
            'init_box', default_value='640,241,44,79',
            description='x,y,w,h of the target on the first frame of source'),
        DeclareLaunchArgument(
            'init_delay', default_value='5.0',
            description='seconds after launch to start vtrack-init (it then waits for the service)'),
        DeclareLaunchArgument(
            'hold_first_frame', default_value='10.0',
            description='seconds the first frame is repeated once the tracker subscribed, '
                        'so the init box still matches the image when the init arrives'),
        video_publisher,
        tracker,
        init,
    ])
