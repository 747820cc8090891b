"""Command-line parsing shared by the executables that also take `--ros-args`."""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def parse_own_args(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace | int:
    """The program's own options, with `--ros-args ...` left to rclpy. An int is the exit
    code to return: 2 for malformed --ros-args or options, 0 after --help."""
    from rclpy.utilities import remove_ros_args

    try:
        own_args = remove_ros_args([parser.prog, *args])[1:]
    except Exception as error:  # noqa: BLE001 - rclpy raises its own types for bad --ros-args
        print(f"{parser.prog}: error: bad --ros-args: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return parser.parse_args(own_args)
    except SystemExit as exit_:  # argparse already printed why
        return int(exit_.code or 0)
