"""End-to-end latency and drop rate of tracker_node at camera rate (a benchmark, not a test).

For each tracker, runs the real pipeline (video_publisher at --rate Hz -> tracker_node ->
result arrival) with vtrack-demo and reports the init time, latency from image stamp to the
arrival of a result holding the target (p50/p95), tracked fps and the share of frames after
the init frame that got no result for the target (dropped, or published while the tracker
was still initialising), with ratios to CSRT measured in the same run.

    .venv/bin/python benchmarks/node_latency.py [--trackers csrt nano ...] [--video PATH] [--rate 30]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "datasets" / "dev" / "David"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", nargs="+", default=None, help="default: every registered tracker but kcf/mil")
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--set", action="append", default=[], metavar="PARAM:=VALUE",
                        help="tracker_node parameter for every run (e.g. device:=cuda, half:=true)")
    args = parser.parse_args()
    from vtrack_core import available_trackers

    trackers = args.trackers or [t for t in available_trackers() if t not in ("kcf", "mil")]
    if "csrt" not in trackers:
        trackers.insert(0, "csrt")
    demo = Path(sys.executable).with_name("vtrack-demo")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            out = Path(tmp) / tracker
            command = [str(demo), "--tracker", tracker, "--video", args.video, "--rate", str(args.rate),
                       "--max-frames", str(args.max_frames), "--no-overlay", "--out", str(out)]
            command += [item for setting in args.set for item in ("--set", setting)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{tracker}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows[tracker] = json.loads((out / "summary.json").read_text())
    base = rows.get("csrt")
    print(f"\n{Path(args.video).name} at {args.rate:g} Hz, {args.max_frames} frames")
    print(f"{'tracker':10} {'frames':>6} {'init s':>6} {'tracked':>7} {'missed':>6} {'fps':>6} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p50/csrt':>9} {'fps/csrt':>9}")
    for tracker, row in rows.items():
        p50_ratio = row["latency_ms_p50"] / base["latency_ms_p50"] if base else float("nan")
        fps_ratio = row["processed_fps"] / base["processed_fps"] if base else float("nan")
        print(f"{tracker:10} {row['frames']:6d} {row.get('init_seconds', float('nan')):6.2f} {row['processed_frames']:7d} "
              f"{row['drop_rate']:6.1%} {row['processed_fps']:6.1f} "
              f"{row['latency_ms_p50']:7.1f} {row['latency_ms_p95']:7.1f} {p50_ratio:9.2f} {fps_ratio:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
