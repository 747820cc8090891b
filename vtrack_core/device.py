"""Where deep trackers run: `auto` picks CUDA when present, else the CPU."""
from __future__ import annotations

import re

from .config import ConfigError


def resolve_device(spec: str = "auto"):
    """torch.device for 'auto' | 'cpu' | 'cuda' | 'cuda:N'; a clear error if it is absent."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but this machine has no CUDA device")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)
