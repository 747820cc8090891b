#!/usr/bin/env bash
# README command 1: set up whatever is missing, then the main job: video_publisher streams
# a real video (Debian opencv-doc's vtest.avi) and tracker_node follows a pedestrian in it,
# as real ROS 2 processes. Ends with a summary and out/demo/{overlay.mp4,boxes.txt}.
#   tools/run_demo.sh [vtrack-demo options: --tracker NAME --video FILE --init x,y,w,h --rate HZ ...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/vtrack-demo" --out "$ROOT/out/demo" "$@"
