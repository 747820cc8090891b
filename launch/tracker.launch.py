"""Start the vtrack tracker node on a camera topic.

    ros2 launch vtrack_ros tracker.launch.py image:=/camera/image_raw tracker:=csrt device:=cpu

`tracker` and `device` override the parameters file only when given: an empty value means
"whatever params_file says", so they are added in an OpaqueFunction once their values are
known instead of always being passed (an always-passed '' would clobber the file's value).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# Launch arguments that become node parameters when (and only when) they are non-empty.
OVERRIDABLE = ('tracker', 'device')


def _tracker_node(context, *args, **kwargs):
    """Build the Node with the argument values of this launch."""
    def value(name):
        return LaunchConfiguration(name).perform(context).strip()

    parameters = []
    params_file = value('params_file')
    if params_file:
        if not os.path.isfile(params_file):
            raise RuntimeError(f'tracker.launch.py: params_file {params_file!r} does not exist')
        parameters.append(params_file)
    # ParameterValue(..., value_type=str) keeps e.g. device '0' a string instead of YAML's int.
    overrides = {
        name: ParameterValue(value(name), value_type=str) for name in OVERRIDABLE if value(name)
    }
    if overrides:
        parameters.append(overrides)  # later entries win over the file

    image = value('image')
    namespace = value('namespace')
    return [
        Node(
            package='vtrack_ros',
            executable='tracker_node',
            name='tracker_node',
            namespace=namespace or None,
            parameters=parameters,
            remappings=[
                ('image', image),
                ('image/compressed', image + '/compressed'),
            ],
            output='screen',
        )
    ]


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory('vtrack_ros'), 'config', 'tracker.yaml')
    return LaunchDescription([
        DeclareLaunchArgument(
            'tracker', default_value='',
            description='tracker registry name (e.g. csrt, siamfc); empty: from params_file'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='torch device for learned trackers (cpu, cuda, cuda:1); empty: from params_file'),
        DeclareLaunchArgument(
            'image', default_value='/camera/image_raw',
            description="topic the node's `image` input is remapped to "
                        '(and <image>/compressed for `image/compressed`)'),
        DeclareLaunchArgument(
            'params_file', default_value=default_params,
            description='YAML parameters file of the node; empty: none'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='namespace of the node (empty: none)'),
        OpaqueFunction(function=_tracker_node),
    ])
