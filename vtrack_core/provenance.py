"""What a provenance file records about where a result came from, shared by training (the
exported weights) and calibration (the fitted maps): the code's commit and whether the tree
was dirty, and a file's sha256."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any


def git_commit(path: str | Path | None = None) -> dict[str, Any]:
    """{'commit': sha or None, 'dirty': bool or None} of the repository holding `path`."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
