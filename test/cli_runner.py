"""The real `vtrack` command line in a subprocess, as a user runs it."""
from __future__ import annotations

import subprocess
import sys


def run_vtrack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vtrack_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout)
