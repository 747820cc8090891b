"""update() speed per tracker on real frames held in memory (a benchmark, not a test).

Reports frames per second of `Tracker.update` and the ratio to OpenCV CSRT measured in the
same run. Deep trackers without trained weights can be timed with random weights
(`--random-weights`): speed does not depend on the values.

    .venv/bin/python benchmarks/tracker_speed.py --trackers csrt nano siamfc --random-weights [--device cuda --half]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", nargs="+", default=["csrt", "nano", "siamfc"])
    parser.add_argument("--sequence", default=str(REPO.parent / "shared" / "datasets" / "dev" / "David"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="cv2/torch threads (1: the eval convention)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--random-weights", action="store_true", help="time deep trackers with random weights")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for every tracker that has them, e.g. backbone=resnet50 (rar)")
    args = parser.parse_args()

    import torch

    from vtrack_core import create_tracker, tracker_class
    from vtrack_core.eval.datasets import load_dataset

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    sequence = load_dataset(Path(args.sequence).parent, names=[Path(args.sequence).name])[0]
    frames = [sequence.image(i) for i in range(min(args.frames + 1, len(sequence)))]
    from vtrack_core import Box

    init = Box.from_xywh(sequence.ground_truth[0])
    trackers = list(dict.fromkeys(["csrt", *args.trackers]))
    fps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in trackers:
            fields = set(tracker_class(name).config_class.field_names())
            overrides = {k: v for k, v in (("device", args.device), ("half", args.half)) if k in fields}
            overrides.update({k: v for k, v in (item.split("=", 1) for item in args.set) if k in fields})
            if args.random_weights and "weights" in fields and name not in ("nano",):
                module = sys.modules[tracker_class(name).__module__]
                net_kwargs = {"backbone": overrides["backbone"]} if name == "rar" and "backbone" in overrides else {}
                net = next(getattr(module, a)(**net_kwargs) for a in dir(module)
                           if a.endswith("Net") and isinstance(getattr(module, a), type))
                path = Path(tmp) / f"{name}.pt"
                torch.save(net.state_dict(), path)
                overrides["weights"] = str(path)
            tracker = create_tracker(name, **overrides)
            tracker.init(frames[0], init)
            for frame in frames[1:6]:  # warm-up (CUDA kernels, allocator)
                tracker.update(frame)
            if getattr(tracker, "device", None) is not None and tracker.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for frame in frames[6:]:
                tracker.update(frame)
            if getattr(tracker, "device", None) is not None and tracker.device.type == "cuda":
                torch.cuda.synchronize()
            fps[name] = (len(frames) - 6) / (time.perf_counter() - start)
    print(f"{sequence.name}, {len(frames) - 6} timed frames, {args.threads} thread(s), device {args.device}"
          f"{' fp16' if args.half else ''}")
    print(f"{'tracker':10} {'fps':>8} {'x csrt':>7}")
    for name, value in fps.items():
        print(f"{name:10} {value:8.1f} {value / fps['csrt']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
