"""ROS 2 nodes of vtrack: thin rclpy wrappers around vtrack_core.

The generated interfaces (vtrack_ros.msg, vtrack_ros.srv) may live in another folder on
sys.path than this source (the venv set-up builds them into install/): extend the package
path so both halves import as one package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
