"""vtrack-demo: the whole pipeline as real ROS processes, measured.

Starts `video_publisher` (a video as a camera at a set rate) and `tracker_node` in a private
ROS domain, initialises a target through `~/init_target` on the first frame, records every
frame's publication (its camera_info) and the node's output, and ends with a summary
(frames, tracked fps, dropped frames, end-to-end latency from publication to result
arrival, p50/p95), an overlay video and a boxes file. The main job of the README and the
node latency benchmark both run it.

The publisher holds frame 0 (repeats it, each copy with its own stamp) until the node
reports a target on one of the copies; the demo starts the target on the newest copy the
node has answered. So the box drawn on frame 0 is started on frame 0's pixels whenever the
node's subscription matched the publisher and however long the tracker takes to start, and
no frame of the video passes while it starts.

`--video` may name a bag (rosbag2 folder or ROS 1 .bag): the publisher plays its image topic
at the recorded timing, as recorded (a compressed topic reaches the node as JPEG, which then
subscribes `image/compressed`), stamped like a video (`stamp_start + k / rate`) so a result
still names its frame.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
DEFAULT_INIT = "640,241,44,79"  # the pedestrian walking left on the right of vtest.avi's first frame


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vtrack-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=DEFAULT_VIDEO, help="video file, OTB sequence folder or bag")
    parser.add_argument("--bag-topic", default="", help="the image topic of a bag (default: its only image topic)")
    parser.add_argument("--init", default=None, help="x,y,w,h on the first frame (default: the vtest.avi pedestrian, "
                        "or the first ground-truth box of a sequence folder)")
    parser.add_argument("--tracker", default="siamfc",
                        help="registry name (default siamfc: ours, above CSRT on the dev set, weights in the package)")
    parser.add_argument("--rate", type=float, default=25.0, help="publishing rate in Hz (camera rate)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: the whole video)")
    parser.add_argument("--lockstep", action="store_true", help="publish the next frame only after the tracker answered")
    parser.add_argument("--out", default="out/demo", help="folder for overlay.mp4, boxes.txt, summary.json")
    parser.add_argument("--no-overlay", action="store_true", help="skip writing the overlay video")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM:=VALUE",
                        help="extra tracker_node parameter, e.g. --set device:=cpu")
    return parser.parse_args(argv)


def choose_tracker(name: str) -> str:
    """The registry name, checked before any process starts (UnknownTrackerError lists the
    known ones)."""
    from vtrack_core import tracker_class

    tracker_class(name)
    return name


def default_init(video: str) -> str:
    from vtrack_core.bags import is_bag
    from vtrack_core.eval.datasets import is_otb_sequence, read_otb_sequence

    if is_bag(video):
        raise ValueError(f"{video} is a bag: give the box on its first frame with --init x,y,w,h")
    if Path(video).is_dir() and is_otb_sequence(video):
        sequence = read_otb_sequence(video)[0]
        return ",".join(f"{v:.1f}" for v in sequence.ground_truth[sequence.first_valid_index()])
    return DEFAULT_INIT


HOLD_SECONDS = 120.0  # longest hold of the first frame while the tracker starts (models, warm-up)


def run(args: argparse.Namespace) -> dict:
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo

    from vtrack_core import Box
    from vtrack_ros.msg import TrackedObjectArray
    from vtrack_ros.srv import InitTarget
    from vtrack_ros.video_publisher import Settings, sequence_stamp_ns

    tracker = choose_tracker(args.tracker)
    init_box = Box.parse(args.init or default_init(args.video))
    bag_compressed = _bag_is_compressed(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    domain = int(os.environ.get("VTRACK_DEMO_DOMAIN_ID", random.randint(120, 200)))
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    image_topic = "/vtrack_demo/image"
    info_topic = "/vtrack_demo/camera_info"
    # Sequence stamps: source frame k has stamp stamp_start + k / rate, so a result names its
    # frame exactly; the held copies of frame 0 are stamped before stamp_start (k <= 0).
    stamps = Settings(source=args.video, rate=args.rate, stamp_start=HOLD_SECONDS + 1.0,
                      hold_first_frame=HOLD_SECONDS)

    def frame_of(stamp: int) -> int:
        k = round((stamp - sequence_stamp_ns(stamps, 0)) * args.rate / 1e9)
        return k if sequence_stamp_ns(stamps, k) == stamp else -10**9

    node_log = open(out / "tracker_node.log", "w")
    publisher_log = open(out / "video_publisher.log", "w")
    # Reliable: Fast DDS loses fragments of large (768x576: 1.3 MB) best-effort images on a
    # busy host; the node still keeps only the newest frame.
    node_args = [_bin("tracker_node"), "--ros-args", "-r", f"image:={image_topic}", "-p", f"tracker:={tracker}",
                 "-p", "qos_reliability:=reliable"]
    if bag_compressed:  # the publisher sends the recorded JPEGs on image/compressed
        node_args += ["-p", "image_transport:=compressed"]
    for extra in args.set:
        node_args += ["-p", extra]
    processes = [subprocess.Popen(node_args, env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True)]

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("vtrack_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    # The demo listens to camera_info (same header as each image, a few hundred bytes), not
    # to the images: 1.3 MB messages at 25 Hz deserialised in this process cost the node
    # CPU on a small machine, and a listener that falls behind loses them from its history.
    published_at: dict[int, float] = {}  # stamp -> arrival of its camera_info (wall time)
    results: dict[int, tuple[float, object]] = {}  # stamp -> (arrival wall time, message)

    def stamp_ns(stamp) -> int:
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    def on_info(message: CameraInfo) -> None:
        published_at[stamp_ns(message.header.stamp)] = time.time()

    def on_result(message) -> None:
        results[stamp_ns(message.header.stamp)] = (time.time(), message)

    node_counts: dict[str, str] = {}  # the node's own account, from its last /diagnostics

    def on_diagnostics(message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith("/tracker_node"):
                node_counts.update({kv.key: kv.value for kv in status.values})

    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(CameraInfo, info_topic, on_info, reliable)
    node.create_subscription(TrackedObjectArray, "/tracker_node/tracked_objects", on_result, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    init_client = node.create_client(InitTarget, "/tracker_node/init_target")

    def spin_until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in processes):
                return False
            executor.spin_once(timeout_sec=0.01)
        return True

    try:
        # The service comes up once the node has built and warmed up its tracker.
        if not init_client.wait_for_service(timeout_sec=120.0):
            raise RuntimeError(f"tracker_node did not start; see {out / 'tracker_node.log'}")
        # The publisher repeats frame 0 until the node reports a target on one of its copies
        # (hold_until_tracked), so the box drawn on frame 0 is started on frame 0 whenever the
        # node's subscription matched and however long its tracker takes to start.
        publisher_args = [
            _bin("video_publisher"), "--ros-args", "-r", f"image:={image_topic}", "-r", f"camera_info:={info_topic}",
            "-p", f"source:={args.video}", "-p", f"rate:={args.rate}",
            "-p", "wait_for_subscribers:=1", "-p", "stamp_mode:=sequence", "-p", f"stamp_start:={stamps.stamp_start}",
            "-p", f"hold_first_frame:={HOLD_SECONDS}", "-p", "hold_until_tracked:=/tracker_node/tracked_objects",
        ]
        if args.max_frames:
            publisher_args += ["-p", f"max_frames:={args.max_frames}"]
        if args.bag_topic:
            publisher_args += ["-p", f"bag_topic:={args.bag_topic}"]
        if args.lockstep:
            publisher_args += ["-p", "lockstep_topic:=/tracker_node/tracked_objects"]
        publisher = subprocess.Popen(publisher_args, env=env, stdout=publisher_log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        processes.append(publisher)
        # The node's first output proves it holds a copy of frame 0 (the publisher plays on
        # only once a target is tracked on one).
        if not spin_until(lambda: results, HOLD_SECONDS):
            raise RuntimeError(f"no image reached tracker_node; see {out / 'video_publisher.log'}, {out / 'tracker_node.log'}")
        init_stamp = max(results)
        if frame_of(init_stamp) > 0:
            raise RuntimeError(f"the node's first result is for frame {frame_of(init_stamp)}, not a copy of frame 0")
        request = InitTarget.Request(stamp=Time(sec=init_stamp // 1_000_000_000, nanosec=init_stamp % 1_000_000_000),
                                     x=init_box.x, y=init_box.y, width=init_box.w, height=init_box.h)
        asked = time.monotonic()
        future = init_client.call_async(request)
        if not spin_until(future.done, 120.0) or not future.result().success:
            message = future.result().message if future.done() else "no answer"
            raise RuntimeError(f"init_target failed: {message}")
        init_seconds = time.monotonic() - asked
        print(f"vtrack-demo: {future.result().message}")
        spin_until(lambda: publisher.poll() is not None, 24 * 3600.0)
        last = max(published_at, default=0)
        spin_until(lambda: last in results, 5.0)  # the last frames' results are still on their way
        spin_until(lambda: False, 1.2)  # and the node's last /diagnostics
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        node_log.close()
        publisher_log.close()

    # Source frames 1.. count; one counts as tracked when the node's answer for it holds the
    # target. Frames dropped by the node (or answered without the target) are not tracked.
    frames = max([frame_of(s) for s in list(published_at) + list(results)] + [0]) + 1
    after = [sequence_stamp_ns(stamps, k) for k in range(1, frames)]
    tracked = [s for s in after if s in results and results[s][1].objects]
    latencies = np.array([results[s][0] - published_at[s] for s in tracked if s in published_at]) * 1e3
    begun = [published_at[s] for s in after if s in published_at]
    ended = [results[s][0] for s in tracked]
    duration = max(ended) - min(begun) if begun and ended else float("nan")
    summary = {
        "tracker": tracker,
        "video": args.video,
        "rate_hz": args.rate,
        "lockstep": bool(args.lockstep),
        "frames": frames,
        "init_frame": 0,  # the box is started on a held copy of frame 0 (its pixels)
        "init_stamp": init_stamp / 1e9,
        "init_seconds": init_seconds,  # init_target call to answer
        "processed_frames": len(tracked),  # frames after the init frame with a result for the target
        "dropped_frames": len(after) - len(tracked),
        "drop_rate": (len(after) - len(tracked)) / max(1, len(after)),
        "processed_fps": len(tracked) / duration if duration > 0 else float("nan"),
        "latency_ms_p50": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
        # What the node itself counted (held copies included): a frame the node never
        # received was lost in transport, one it received and dropped it skipped for a newer one.
        "node_frames_received": int(node_counts.get("frames_received", -1)),
        "node_frames_dropped": int(node_counts.get("frames_dropped", -1)),
        "node_images_rejected": int(node_counts.get("images_rejected", -1)),
        "node_processing_ms_p50": float(node_counts.get("processing_p50_ms", "nan")),
    }
    frame_stamps = [sequence_stamp_ns(stamps, k) for k in range(frames)]
    write_outputs(args, out, frame_stamps, results, summary, init_box, frame_stamps[0])
    return summary


def write_outputs(args, out: Path, frame_stamps, results, summary, init_box, init_stamp: int) -> None:
    """boxes.txt (x,y,w,h,confidence,state per published frame; NaN where the node dropped
    the frame or had no target yet), summary.json, and overlay.mp4 on the source frames."""
    from vtrack_core import Box, TrackState
    from vtrack_core.bags import open_frames
    from vtrack_core.video import BoxesWriter, OverlayWriter, draw_track

    rows: list[tuple[Box | None, float | None, int | None, str]] = []
    for stamp in frame_stamps:
        message = results.get(stamp, (None, None))[1]
        if stamp == init_stamp:
            rows.append((init_box, 1.0, int(TrackState.INITIALIZING), "init"))
        elif message is None:
            rows.append((None, None, None, "frame dropped"))
        elif not message.objects:
            rows.append((None, None, None, "no target yet"))
        else:
            obj = message.objects[0]
            rows.append((Box(obj.x, obj.y, obj.width, obj.height), obj.confidence, obj.state, obj.target_id))
    with BoxesWriter(out / "boxes.txt") as boxes:
        for box, confidence, state, _ in rows:
            boxes.write(box, confidence, state)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.no_overlay:
        return
    with open_frames(args.video, args.bag_topic or None) as source, OverlayWriter(out / "overlay.mp4", fps=args.rate) as writer:
        for (_, frame), (box, confidence, state, label) in zip(source, rows):
            writer.write(draw_track(frame, box, confidence, state, f"{summary['tracker']} {label}"))


def _bag_is_compressed(args: argparse.Namespace) -> bool:
    """Whether --video is a bag whose topic is CompressedImage (a bad bag or topic: ValueError)."""
    from vtrack_core.bags import BagSource, is_bag

    if not is_bag(args.video):
        if args.bag_topic:
            raise ValueError(f"--bag-topic: {args.video} is not a bag")
        return False
    with BagSource(args.video, args.bag_topic or None) as bag:
        return bag.compressed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (RuntimeError, ValueError, FileNotFoundError, KeyError) as exc:  # KeyError: unknown tracker
        # str() of a KeyError quotes its message; its argument is the message itself.
        print(f"vtrack-demo: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 1
    print(
        f"vtrack-demo: {summary['tracker']}: {summary['frames']} frames at {summary['rate_hz']:g} Hz, "
        f"init {summary['init_seconds']:.2f} s, {summary['processed_frames']} tracked ({summary['processed_fps']:.1f} fps), "
        f"{summary['dropped_frames']} not tracked, "
        f"latency p50 {summary['latency_ms_p50']:.1f} ms, p95 {summary['latency_ms_p95']:.1f} ms"
    )
    print(f"vtrack-demo: wrote {args.out}/boxes.txt, {args.out}/summary.json"
          + ("" if args.no_overlay else f", {args.out}/overlay.mp4"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
