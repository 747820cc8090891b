#!/usr/bin/env bash
# README command 2: set up whatever is missing, then run every test.
#   tools/run_tests.sh [pytest arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
# Tests compare single-thread numbers and start several ROS processes on 2 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$ROOT/.venv/bin/python" -m pytest "$@"
