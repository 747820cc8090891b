"""Shared fixtures: where the real data lives (../shared beside the checkout by default)."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VTRACK_SHARED", REPO_ROOT.parent / "shared"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: set VTRACK_SHARED to the folder holding datasets/ and weights/")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def dev_dataset_dir() -> Path:
    return _need(SHARED / "datasets" / "dev")


@pytest.fixture(scope="session")
def train_dataset_dir() -> Path:
    return _need(SHARED / "datasets" / "train")


@pytest.fixture(scope="session")
def nanotrack_dir() -> Path:
    return _need(SHARED / "weights" / "nanotrack_v2")


@pytest.fixture
def spawn():
    """Start processes (in a ROS domain) that are always stopped (SIGINT, then SIGKILL) when
    the test ends."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], domain: int) -> subprocess.Popen:
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
