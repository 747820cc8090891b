"""Shared fixtures: where the real data lives (../shared beside the checkout by default)."""
from __future__ import annotations

import os
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
