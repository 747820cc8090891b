"""Latency of the node's tracking path at camera rate without ROS (a benchmark, not a test).

What tracker_node does between a message's arrival and its result, in one process: a camera
thread delivers real frames at --rate Hz into a one-slot mailbox (the newest frame replaces an
untracked one, which counts as dropped, as in the node), a worker takes the newest frame,
runs `MultiTargetTracker.update` (vtrack_core.session, the node's logic) and records the time
from the frame's capture to its result. For machines where the ROS wheels do not install (the
GPU machine's Python 3.12); `benchmarks/node_latency.py` measures the real node where they do.

    python benchmarks/session_latency.py --trackers csrt siamfc fdn --rate 30 [--device cuda --half]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEQUENCE = REPO.parent / "shared" / "datasets" / "dev" / "David"


def measure(name: str, frames: list[np.ndarray], init_box, rate: float, settings: dict) -> dict:
    from vtrack_core import create_tracker
    from vtrack_core.session import MultiTargetTracker

    session = MultiTargetTracker(lambda tracker: create_tracker(tracker, **settings), name)
    began = time.perf_counter()
    session.start([(0, frames[0])], init_box)
    init_seconds = time.perf_counter() - began
    mailbox: dict = {}
    ready = threading.Condition()
    latencies, dropped, tracked = [], [0], [0]

    def camera() -> None:
        start = time.perf_counter()
        for index, frame in enumerate(frames[1:], start=1):
            due = start + index / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            with ready:
                if "frame" in mailbox:
                    dropped[0] += 1
                mailbox["frame"] = (index, time.perf_counter(), frame)
                ready.notify()
        with ready:
            mailbox["done"] = True
            ready.notify()

    def worker() -> None:
        while True:
            with ready:
                while "frame" not in mailbox and "done" not in mailbox:
                    ready.wait()
                if "frame" not in mailbox:
                    return
                index, captured, frame = mailbox.pop("frame")
            session.update(index, frame)
            latencies.append(time.perf_counter() - captured)
            tracked[0] += 1

    threads = [threading.Thread(target=camera), threading.Thread(target=worker)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    values = np.array(latencies) * 1000.0
    return {"init_s": init_seconds, "tracked": tracked[0], "dropped": dropped[0], "fps": tracked[0] / seconds,
            "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", nargs="+", default=["csrt", "siamfc", "fdn", "fcnt", "rar"])
    parser.add_argument("--sequence", default=str(DEFAULT_SEQUENCE))
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import cv2
    import torch

    from vtrack_core import Box, tracker_class
    from vtrack_core.eval.datasets import load_dataset

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    sequence = load_dataset(Path(args.sequence).parent, [Path(args.sequence).name])[0]
    frames = [sequence.image(i) for i in range(min(args.frames, len(sequence)))]
    init = Box.from_xywh(sequence.ground_truth[0])
    rows = {}
    for name in dict.fromkeys(["csrt", *args.trackers]):
        fields = set(tracker_class(name).config_class.field_names())
        settings = {k: v for k, v in (("device", args.device), ("half", args.half)) if k in fields}
        rows[name] = measure(name, frames, init, args.rate, settings)
    base = rows["csrt"]
    print(f"{sequence.name} at {args.rate:g} Hz, {len(frames) - 1} frames, device {args.device}"
          f"{' fp16' if args.half else ''} (the node's session path, no ROS)")
    print(f"{'tracker':8} {'init s':>6} {'tracked':>7} {'dropped':>7} {'fps':>6} {'p50 ms':>7} {'p95 ms':>7} {'p50/csrt':>8}")
    for name, row in rows.items():
        print(f"{name:8} {row['init_s']:6.2f} {row['tracked']:7d} {row['dropped']:7d} {row['fps']:6.1f} "
              f"{row['p50_ms']:7.1f} {row['p95_ms']:7.1f} {row['p50_ms'] / base['p50_ms']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
