"""`vtrack-init`: start or stop a target on a running tracker node from the shell.

    vtrack-init [--node /tracker_node] [--id ID] [--tracker NAME] [--stamp SEC.FRACTION] x,y,w,h
    vtrack-init --stop [--id ID]

A one-shot client rather than `ros2 service call`, so that scripts and launch files get a
short command line and a meaningful exit code: 0 accepted, 1 refused by the node (its
message is printed), 2 bad usage or no answer within --timeout.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Sequence

from vtrack_ros.cli_args import EXIT_USAGE, parse_own_args

EXIT_OK = 0
EXIT_REFUSED = 1

_STAMP = re.compile(r"^(\d+)(?:\.(\d{1,9}))?$")


def parse_box(parts: Sequence[str]) -> tuple[float, float, float, float]:
    """`x,y,w,h` (one argument) or `x y w h` (four): pixels, top-left corner plus size."""
    fields = [f for part in parts for f in re.split(r"[,\s]+", part.strip()) if f]
    if len(fields) != 4:
        raise ValueError(f"a box is x,y,w,h (4 numbers), got {' '.join(parts)!r}")
    try:
        x, y, w, h = (float(f) for f in fields)
    except ValueError:
        raise ValueError(f"a box is x,y,w,h of numbers, got {' '.join(parts)!r}") from None
    if not (w > 0 and h > 0):
        raise ValueError(f"box width and height must be > 0, got {w:g}x{h:g}")
    return x, y, w, h


def parse_stamp(text: str) -> tuple[int, int]:
    """`SEC` or `SEC.FRACTION` as printed by `ros2 topic echo`-style tools, read exactly.

    The fraction is decimal (12.5 is 12 s 500000000 ns), kept as digits so no float rounding
    moves the stamp off the image it names.
    """
    match = _STAMP.match(text.strip())
    if not match:
        raise ValueError(f"--stamp takes SEC or SEC.FRACTION (at most 9 decimals), not {text!r}")
    return int(match.group(1)), int((match.group(2) or "").ljust(9, "0"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtrack-init",
        description="Start (or with --stop, stop) tracking a target on a vtrack tracker node.",
        epilog="Exit codes: 0 accepted, 1 refused by the node, 2 usage error or no service/answer in time. "
        "A box with a negative x goes after --, e.g. vtrack-init -- -3,10,40,80",
    )
    parser.add_argument("box", nargs="*", help="x,y,w,h in pixels of the image (or four numbers)")
    parser.add_argument("--node", default="/tracker_node", help="tracker node name (default: %(default)s)")
    parser.add_argument("--id", default="", dest="target_id", help="target id (init: empty lets the node choose; stop: empty stops all)")
    parser.add_argument("--tracker", default="", help="registry name; empty: the node's `tracker` parameter")
    parser.add_argument("--stamp", default="0", help="stamp of the image the box was drawn on; 0: the latest image")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the service, and for its answer")
    parser.add_argument(
        "--retry-for", type=float, default=0.0, metavar="S",
        help="re-send a refused init for up to S seconds (e.g. while the node has no image yet)",
    )
    parser.add_argument("--stop", action="store_true", help="stop the target --id (all targets without --id)")
    return parser


def service_name(node: str, service: str) -> str:
    return f"{node.rstrip('/')}/{service}" if node.strip("/") else service


def resolved_name(client) -> str:
    """The service name after namespaces and remapping (older rclpy: as given)."""
    return getattr(client, "service_name", client.srv_name)


def _call(node, client, request, timeout: float):
    """The response, or None when none came within `timeout` seconds."""
    import rclpy

    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        client.remove_pending_request(future)
        return None
    return future.result()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vtrack-init` console script (also `ros2 run vtrack_ros vtrack-init`)."""
    import rclpy

    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    options = parse_own_args(parser, args)
    if isinstance(options, int):
        return options
    try:
        if options.stop:
            if options.box:
                raise ValueError("--stop takes no box (use --id to pick the target)")
        else:
            if not options.box:
                raise ValueError("give the box x,y,w,h to init a target (or --stop)")
            box = parse_box(options.box)
            stamp = parse_stamp(options.stamp)
        if not options.timeout > 0:
            raise ValueError("--timeout must be > 0")
    except ValueError as error:
        parser.print_usage(sys.stderr)
        print(f"vtrack-init: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    from builtin_interfaces.msg import Time

    from vtrack_ros.srv import InitTarget, StopTarget

    rclpy.init(args=["vtrack-init", *args])
    try:
        node = rclpy.create_node(f"vtrack_init_{os.getpid()}")
        if options.stop:
            service_type, name = StopTarget, service_name(options.node, "stop_target")
            request = StopTarget.Request(target_id=options.target_id)
        else:
            service_type, name = InitTarget, service_name(options.node, "init_target")
            x, y, w, h = box
            request = InitTarget.Request(
                target_id=options.target_id, stamp=Time(sec=stamp[0], nanosec=stamp[1]),
                x=x, y=y, width=w, height=h, tracker=options.tracker,
            )
        client = node.create_client(service_type, name)
        if not client.wait_for_service(timeout_sec=options.timeout):
            print(f"vtrack-init: error: service {resolved_name(client)} not available after {options.timeout:g} s", file=sys.stderr)
            return EXIT_USAGE
        retry_until = time.monotonic() + max(0.0, options.retry_for)
        while True:
            response = _call(node, client, request, options.timeout)
            if response is None:
                print(f"vtrack-init: error: no answer from {resolved_name(client)} within {options.timeout:g} s", file=sys.stderr)
                return EXIT_USAGE
            if response.success or options.stop or time.monotonic() >= retry_until:
                break
            time.sleep(0.5)
        if not response.success:
            print(f"{resolved_name(client)} refused: {response.message}", file=sys.stderr)
            return EXIT_REFUSED
        if options.stop:
            print(f"{resolved_name(client)}: {response.message or 'stopped'}")
        else:
            print(f"{resolved_name(client)}: target '{response.target_id}' started" + (f": {response.message}" if response.message else ""))
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_USAGE
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
