"""Start the vtrack tracker node on a camera topic.

    ros2 launch vtrack_ros tracker.launch.py image:=/camera/image_raw tracker:=csrt device:=cpu

`tracker` and `device` override the parameters file only when given: an empty value means
"whatever params_file says", so they are added in an OpaqueFunction once their values are
known instead of always being passed (an always-passed '' would clobber the file's value).
The arguments are defined in vtrack_launch_common.py, beside this file.

    ros2 launch vtrack_ros tracker.launch.py lifecycle:=true

starts it as a managed node (launch_ros' LifecycleNode, parameter lifecycle: true): it waits
unconfigured until a lifecycle manager, or `ros2 lifecycle set /tracker_node configure` and
then `activate`, drives it.
"""
import os
import sys

from launch import LaunchDescription
from launch.actions import OpaqueFunction
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

# The shared argument definitions sit beside this file (launch/, or share/vtrack_ros/launch).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import vtrack_launch_common as common  # noqa: E402


def _tracker_node(context, *args, **kwargs):
    """Build the Node with the argument values of this launch."""
    def value(name):
        return common.value(context, name)

    parameters = []
    params_file = value('params_file')
    if params_file:
        if not os.path.isfile(params_file):
            raise RuntimeError(f'tracker.launch.py: params_file {params_file!r} does not exist')
        parameters.append(params_file)
    # ParameterValue(..., value_type=str) keeps e.g. device '0' a string instead of YAML's int.
    overrides = {
        name: ParameterValue(value(name), value_type=str) for name in common.OVERRIDABLE if value(name)
    }
    if overrides:
        parameters.append(overrides)  # later entries win over the file
    lifecycle = common.flag(context, 'lifecycle')
    if lifecycle:
        parameters.append({'lifecycle': True})  # the node's own switch, whatever the file says

    image = value('image')
    namespace = value('namespace')
    # LifecycleNode also follows the node's ~/transition_event and takes ChangeState events;
    # it needs namespace as a keyword (None: none, as for Node).
    action = LifecycleNode if lifecycle else Node
    return [
        action(
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
    return LaunchDescription([
        *common.declare_arguments('tracker', 'device', 'image', 'params_file', 'namespace', 'lifecycle'),
        OpaqueFunction(function=_tracker_node),
    ])
