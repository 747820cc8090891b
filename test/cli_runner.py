"""The real `vtrack` command line in a subprocess, as a user runs it, and the checks every
`vtrack train NAME` end-to-end test makes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

TEST_DIR = Path(__file__).resolve().parent


def run_vtrack(*args: str, timeout: float = 600,
               trainers: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`vtrack ARGS`; `trainers`: {NAME: 'module:Class'} registered first (modules of test/
    importable), as a package adding a trainable tracker would."""
    if not trainers:
        return subprocess.run([sys.executable, "-m", "vtrack_core.cli", *args], capture_output=True, text=True,
                              timeout=timeout)
    code = ("import sys\nfrom vtrack_core.training import register_trainer\n"
            + "".join(f"register_trainer({name!r}, {target!r})\n" for name, target in trainers.items())
            + "from vtrack_core.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TEST_DIR), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def train_resume_and_refuse(tracker: str, out: Path, options: Sequence[str], iterations: int,
                            resume_options: Sequence[str] = (), timeout: float = 600,
                            trainers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`vtrack train TRACKER OPTIONS` for 1 epoch (`iterations` of them, validated when
    OPTIONS name validation sequences), then resumed to 2 with --half (epoch 1 not redone,
    fp16 weights), then once more without --resume: refused. Returns the provenance."""
    def train(*more: str) -> subprocess.CompletedProcess[str]:
        return run_vtrack("train", tracker, *options, *more, timeout=timeout, trainers=trainers)

    first = train("--epochs", "1")
    assert first.returncode == 0, first.stderr
    epoch1 = json.loads((out / "history.json").read_text())["epochs"][0]
    assert epoch1["iterations"] == iterations
    second = train("--epochs", "2", "--resume", "--half", *resume_options)
    assert second.returncode == 0, second.stderr
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2] and history[0]["loss"] == epoch1["loss"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["tracker"] == tracker and provenance["weights"]["dtype"] == "float16"
    assert len(provenance["loss_per_epoch"]) == 2 and len(provenance["runs"]) == 2
    for name in ("checkpoint.pt", "last.pt", "best.pt", "curves.png", provenance["weights"]["file"]):
        assert (out / name).is_file(), name
    again = train("--epochs", "1")
    assert again.returncode == 2 and "already holds" in again.stderr
    return provenance
