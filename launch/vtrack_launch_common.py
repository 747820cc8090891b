"""The launch arguments of this package, each defined once, for tracker.launch.py and
demo.launch.py (docs/nodes.md, "Launch files", lists them).

Not a launch file itself (`ros2 launch` runs only `*.launch.py`). Both launch files import it
from their own folder, launch/ in the source tree or share/vtrack_ros/launch once installed
(CMakeLists.txt installs the whole folder):

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import vtrack_launch_common as common

    LaunchDescription([*common.declare_arguments('tracker', 'image'), ...])
    common.config('tracker')            # its LaunchConfiguration
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration

PACKAGE = 'vtrack_ros'
DEMO_VIDEO = '/usr/share/doc/opencv-doc/examples/data/vtest.avi'  # Debian's opencv-doc
PARAMS_FILE = None  # stands for config/tracker.yaml of the installed package

# Launch arguments that become tracker_node parameters when (and only when) they are
# non-empty: an always-passed '' would clobber the params file's value.
OVERRIDABLE = ('tracker', 'device')

# name -> (default value, description)
ARGUMENTS = {
    # tracker_node (tracker.launch.py; demo.launch.py passes them on to it)
    'tracker': ('', 'tracker registry name (e.g. csrt, siamfc); empty: from params_file'),
    'device': ('', 'torch device for learned trackers (cpu, cuda, cuda:1); empty: from params_file'),
    'params_file': (PARAMS_FILE, 'YAML parameters file of the tracker node; empty: none'),
    'image': ('/camera/image_raw',
              "topic the node's `image` input is remapped to "
              '(and <image>/compressed for `image/compressed`)'),
    'namespace': ('', 'namespace of the node (empty: none)'),
    'lifecycle': ('false',
                  'true: start tracker_node as a managed (lifecycle) node, unconfigured until a '
                  'lifecycle manager (or ros2 lifecycle set) configures and activates it'),
    # the demo's video_publisher and automatic init (demo.launch.py)
    'source': (DEMO_VIDEO, 'video file or OTB-style image-sequence folder to play as the camera'),
    'rate': ('10.0', 'frames per second to publish'),
    'loop': ('false', 'play the source again when it ends (the target then jumps back)'),
    'hold_first_frame': ('10.0',
                         'seconds the first frame is repeated once the tracker subscribed, '
                         'so the init box still matches the image when the init arrives'),
    'init_box': ('640,241,44,79', 'x,y,w,h of the target on the first frame of source'),
    'init_delay': ('5.0', 'seconds after launch to start vtrack-init (it then waits for the service)'),
}


def default_params_file():
    return os.path.join(get_package_share_directory(PACKAGE), 'config', 'tracker.yaml')


def declare_arguments(*names):
    """A DeclareLaunchArgument for each name, in the order given."""
    actions = []
    for name in names:
        default, description = ARGUMENTS[name]  # KeyError: not an argument of this package
        if default is PARAMS_FILE:
            default = default_params_file()
        actions.append(DeclareLaunchArgument(name, default_value=default, description=description))
    return actions


def config(name):
    """The LaunchConfiguration of one of ARGUMENTS."""
    if name not in ARGUMENTS:
        raise KeyError(f'{name!r} is not a launch argument of {PACKAGE}: {", ".join(ARGUMENTS)}')
    return LaunchConfiguration(name)


def value(context, name):
    """An argument's value in this launch, stripped (inside an OpaqueFunction)."""
    return config(name).perform(context).strip()


def flag(context, name):
    """A true/false argument's value; anything else stops the launch with the reason
    (a typo must not silently start the other kind of node)."""
    text = value(context, name).lower()
    if text not in ('true', 'false'):
        raise RuntimeError(f'{name} must be true or false, got {text!r}')
    return text == 'true'
