"""Helpers for tests that use a real rclpy: an isolated ROS domain per test."""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from typing import Iterator

_counter = itertools.count()


def fresh_domain_id() -> int:
    """A ROS_DOMAIN_ID no other test of this run (nor a parallel run) is likely to use."""
    return 1 + (os.getpid() * 7 + next(_counter)) % 100


@contextmanager
def private_ros_node(name: str) -> Iterator[tuple[int, object, object]]:
    """(domain id, node, executor): a test node in a fresh ROS domain, shut down after."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    domain = fresh_domain_id()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield domain, node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
