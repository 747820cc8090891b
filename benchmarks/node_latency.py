"""End-to-end latency and drop rate of tracker_node at camera rate (a benchmark, not a test).

For each tracker, runs the real pipeline (video_publisher at --rate Hz -> tracker_node ->
result arrival) with vtrack-demo and reports the init time, latency from publication to the
arrival of a result holding the target (p50/p95), tracked fps and the share of frames after
the init frame that got no result for the target (dropped, or published while the tracker
was still initialising), with ratios to CSRT measured in the same run.

    .venv/bin/python benchmarks/node_latency.py [--trackers csrt nano ...] [--video PATH] [--rate 30]
    .venv/bin/python benchmarks/node_latency.py --trackers nano --video vtest.avi --rate 25 --max-frames 0 \\
        --cold-start --repeat 2
    .venv/bin/python benchmarks/node_latency.py --trackers csrt nano --bag run.bag [--topic /cam/image_raw] \\
        --init x,y,w,h

--bag replays a recorded image topic (rosbag2 folder or ROS 1 .bag; `vtrack bag` writes one
from a sequence) through the same pipeline: the publisher plays it at its recorded timing,
as recorded (a CompressedImage topic reaches the node as JPEG on image/compressed); --rate
then only spaces the stamps. A bag has no ground truth: --init gives the box on its first
frame.

--cold-start runs each tracker twice in a row, a "fresh" run first and a "second" run: before
the fresh one it removes the __pycache__ folders of vtrack_core, vtrack_ros and the generated
interfaces (what a fresh clone lacks) and drops from the page cache the files the pipeline
reads (the venv, install/, this source, the video, the NanoTrack models), as after a reboot.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "datasets" / "dev" / "David"


def _package_dirs() -> list[Path]:
    """Where this interpreter imports vtrack_core and vtrack_ros (both halves) from."""
    import vtrack_core
    import vtrack_ros

    return [Path(vtrack_core.__file__).parent, *(Path(p) for p in vtrack_ros.__path__)]


def make_cold(video: str) -> str:
    """Remove the package's bytecode and evict the pipeline's files from the page cache."""
    removed = 0
    for folder in _package_dirs():
        for cache in list(folder.rglob("__pycache__")):
            shutil.rmtree(cache, ignore_errors=True)
            removed += 1
    evicted = 0
    roots = [Path(sys.prefix), REPO / "install", *_package_dirs(), Path(video)]
    from vtrack_core.trackers.opencv_baselines import default_nanotrack_dir

    roots.append(default_nanotrack_dir())
    for root in roots:
        files = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for path in files:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                evicted += os.fstat(fd).st_size
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return f"{removed} __pycache__ folders removed, {evicted / 1e9:.2f} GB dropped from the page cache"


def run_demo(tracker: str, args, out: Path) -> dict | None:
    demo = Path(sys.executable).with_name("vtrack-demo")
    command = [str(demo), "--tracker", tracker, "--video", args.video, "--rate", str(args.rate),
               "--max-frames", str(args.max_frames), "--no-overlay", "--out", str(out)]
    if args.init:
        command += ["--init", args.init]
    if args.topic:
        command += ["--bag-topic", args.topic]
    command += [item for setting in args.set for item in ("--set", setting)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{tracker}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    row = json.loads((out / "summary.json").read_text())
    log = (out / "tracker_node.log").read_text()
    row["init_refused"] = log.count("init_target refused")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", nargs="+", default=None, help="default: every registered tracker but kcf/mil")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--video", default=str(DEFAULT_VIDEO), help="video file or sequence folder (default: dev David)")
    source.add_argument("--bag", help="a recorded bag (rosbag2 folder or ROS 1 .bag), replayed at its recorded timing")
    parser.add_argument("--topic", help="--bag: its image topic (default: the bag's only image topic)")
    parser.add_argument("--init", help="x,y,w,h on the first frame (required with --bag; default: the sequence's "
                        "ground truth)")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--max-frames", type=int, default=300, help="0: the whole video")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM:=VALUE",
                        help="tracker_node parameter for every run (e.g. device:=cuda, half:=true)")
    parser.add_argument("--cold-start", action="store_true",
                        help="per tracker a fresh run (no bytecode, cold page cache) then a second run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (of fresh + second runs with --cold-start)")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    from vtrack_core import available_trackers
    from vtrack_core.bags import BagError, BagSource

    pacing = f"at {args.rate:g} Hz"
    if args.bag:
        if not args.init:
            parser.error("--bag needs --init x,y,w,h: a bag has no ground truth")
        try:
            with BagSource(args.bag, args.topic) as bag:  # a bad bag or topic fails here, once
                pacing = f"{bag.topic}, recorded timing ({bag.fps:.1f} Hz, {len(bag)} messages)"
        except BagError as error:
            parser.error(str(error))
        args.video = args.bag
    elif args.topic:
        parser.error("--topic applies to --bag only")

    trackers = args.trackers or [t for t in available_trackers() if t not in ("kcf", "mil")]
    if "csrt" not in trackers and not args.cold_start:
        trackers.insert(0, "csrt")
    rows: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for tracker in trackers:
                kinds = ("fresh", "second") if args.cold_start else ("run",)
                for kind in kinds:
                    if kind == "fresh":
                        print(f"{tracker}: {make_cold(args.video)}", file=sys.stderr)
                    row = run_demo(tracker, args, Path(tmp) / f"{tracker}-{round_}-{kind}")
                    if row is not None:
                        rows.append((tracker, kind, row))
    base = next((row for tracker, _, row in rows if tracker == "csrt"), None)
    print(f"\n{Path(args.video).name} {pacing}, {args.max_frames or 'all'} frames")
    print(f"{'tracker':10} {'run':6} {'frames':>6} {'init s':>6} {'refused':>7} {'tracked':>7} {'missed':>6} "
          f"{'fps':>6} {'p50 ms':>7} {'p95 ms':>7} {'node rx':>7} {'node drop':>9} {'p50/csrt':>9} {'fps/csrt':>9}")
    for tracker, kind, row in rows:
        p50_ratio = row["latency_ms_p50"] / base["latency_ms_p50"] if base else float("nan")
        fps_ratio = row["processed_fps"] / base["processed_fps"] if base else float("nan")
        print(f"{tracker:10} {kind:6} {row['frames']:6d} {row.get('init_seconds', float('nan')):6.2f} "
              f"{row['init_refused']:7d} {row['processed_frames']:7d} {row['drop_rate']:6.1%} {row['processed_fps']:6.1f} "
              f"{row['latency_ms_p50']:7.1f} {row['latency_ms_p95']:7.1f} {row.get('node_frames_received', -1):7d} "
              f"{row.get('node_frames_dropped', -1):9d} {p50_ratio:9.2f} {fps_ratio:9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"tracker": t, "run": k, **r} for t, k, r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
