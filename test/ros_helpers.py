"""Helpers for tests that use a real rclpy: an isolated ROS domain per test."""
from __future__ import annotations

import itertools
import os

_counter = itertools.count()


def fresh_domain_id() -> int:
    """A ROS_DOMAIN_ID no other test of this run (nor a parallel run) is likely to use."""
    return 1 + (os.getpid() * 7 + next(_counter)) % 100
