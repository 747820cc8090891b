"""A tracker-agnostic training loop: epochs of N iterations, SGD with momentum, a per-epoch
learning-rate schedule, resumable checkpoints, per-epoch validation, history and curves.

What a tracker supplies:

* `batches(epoch)`: an iterable of batches for epoch `epoch` (0-based), at least
  `iterations` long. It must draw its randomness from a generator seeded by (seed, epoch)
  alone, so that a resumed run sees the batches an uninterrupted run would have seen.
* `loss_fn(model, batch)`: the scalar loss of one batch, already on the training device
  (tensors, and tuples / lists / dicts of them, are moved by the loop).
* `validate(model, epoch, weights_path)` (optional): metrics of the epoch's weights, a dict
  of numbers. `weights_path` is the plain state dict just saved for that epoch (`last.pt`),
  for validators that rebuild a tracker from a file as users do.

What the loop writes under `out_dir`:

    checkpoint.pt   model, optimizer, epoch (epochs completed), history: `resume` continues
                    at the next epoch
    last.pt         the latest epoch's weights (plain state dict)
    best.pt         the weights of the best epoch by `monitor` (the last epoch without one)
    history.json    one entry per epoch: lr, loss, a loss trace, validation metrics, times
    curves.png      training loss and validation metrics per epoch

Reproducibility: torch's generator is reseeded from (seed, epoch) at every epoch start, and
the model, optimizer (momentum buffers) and batch-norm statistics travel in the checkpoint,
so on the CPU a run resumed after epoch k gives the same weights as one that never stopped.
(On CUDA, cuDNN's non-deterministic kernels make that "close" rather than "equal".)
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ..device import resolve_device

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LAST_WEIGHTS = "last.pt"
BEST_WEIGHTS = "best.pt"
HISTORY = "history.json"
CURVES = "curves.png"
TRACE_POINTS = 100  # loss-trace points kept per epoch in the history (chunk means)

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
Validator = Callable[[nn.Module, int, Path], Mapping[str, float]]


class TrainingError(RuntimeError):
    """A run that cannot start or go on (existing output without resume, diverged loss...)."""


@dataclass
class LoopConfig:
    epochs: int
    iterations: int  # per epoch
    momentum: float = 0.9
    weight_decay: float = 5e-4
    device: str = "auto"
    seed: int = 0
    monitor: str | None = None  # validation metric that picks best.pt; None: the last epoch
    monitor_mode: str = "max"  # "max" or "min"
    grad_clip: float | None = None  # max gradient norm; None: no clipping
    channels_last: bool = False  # NHWC model and 4-D batches (no reliable gain for SiamFC on this CPU)
    progress: bool = True  # tqdm bar with the running loss

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.iterations < 1:
            raise ValueError(f"epochs and iterations must be >= 1, got {self.epochs} and {self.iterations}")
        if self.monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    out_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int | None  # 1-based
    last_weights: Path
    best_weights: Path
    resumed_from: int = 0  # epochs already done when this call started
    extra: dict[str, Any] = field(default_factory=dict)


def geometric_lr(start: float, end: float, epochs: int) -> Callable[[int], float]:
    """lr(epoch) annealed geometrically from `start` (first epoch) to `end` (last epoch)."""
    if start <= 0 or end <= 0:
        raise ValueError("learning rates must be positive")

    def schedule(epoch: int) -> float:
        if epochs <= 1:
            return float(start)
        return float(start * (end / start) ** (epoch / (epochs - 1)))

    return schedule


def epoch_seed(seed: int, epoch: int) -> int:
    """One integer per (seed, epoch) for torch.manual_seed; independent of call order."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 12345) % (2**63 - 1)


# --- helpers ------------------------------------------------------------------------------
def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    """Tensors of a batch (nested in tuples / lists / dicts) onto `device`; 4-D ones in NHWC
    order with `channels_last`."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _save_atomically(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _trace(losses: list[float], points: int = TRACE_POINTS) -> list[float]:
    """Means of up to `points` consecutive chunks: a loss curve without every iteration."""
    if len(losses) <= points:
        return [float(v) for v in losses]
    bounds = [round(i * len(losses) / points) for i in range(points + 1)]
    return [float(sum(losses[a:b]) / (b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def best_epoch(history: list[dict[str, Any]], monitor: str | None, mode: str = "max") -> int | None:
    """1-based epoch with the best `monitor` value in its validation; the last one without."""
    if not history:
        return None
    if monitor is None:
        return int(history[-1]["epoch"])
    scored = [(e["val"][monitor], e["epoch"]) for e in history
              if isinstance(e.get("val"), Mapping) and _finite(e["val"].get(monitor))]
    if not scored:
        return int(history[-1]["epoch"])
    sign = 1.0 if mode == "max" else -1.0
    # Ties go to the earlier epoch (max over (value, -epoch)).
    return int(max(scored, key=lambda item: (sign * item[0], -item[1]))[1])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_curves(history: list[dict[str, Any]], path: str | Path, title: str = "", monitor: str | None = None) -> None:
    """Training loss (a per-iteration trace, each epoch spanning [epoch - 1, epoch], and the
    epoch means) and validation metrics per epoch (`monitor` drawn bold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({k for e in history for k, v in (e.get("val") or {}).items() if _finite(v)})
    panels = 2 if metrics else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    xs, ys = [], []
    for entry in history:
        trace = entry.get("loss_trace") or []
        for k, value in enumerate(trace):
            xs.append(entry["epoch"] - 1 + (k + 0.5) / len(trace))
            ys.append(value)
    if xs:
        ax.plot(xs, ys, lw=0.8, alpha=0.6, label="training loss (trace)")
    ax.plot([e["epoch"] - 0.5 for e in history], [e["loss"] for e in history], "o-", label="epoch mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if metrics:
        ax = axes[0][1]
        for name in metrics:
            points = [(e["epoch"], e["val"][name]) for e in history if _finite((e.get("val") or {}).get(name))]
            main = name == monitor or len(metrics) == 1
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-" if main else "x--",
                    lw=2.0 if main else 0.8, alpha=1.0 if main else 0.6, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# --- the loop -----------------------------------------------------------------------------
def run_training(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Callable[[int], Iterable[Batch]],
    out_dir: str | Path,
    config: LoopConfig,
    lr_schedule: Callable[[int], float],
    validate: Validator | None = None,
    resume: bool = False,
    parameters: Iterable[Any] | None = None,
    title: str = "",
) -> TrainingResult:
    """Train `model` for `config.epochs` epochs (continuing a checkpoint with `resume`).

    `parameters`: what the optimizer updates (param groups allowed); all trainable
    parameters by default. Returns the history and where the weights are.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    params = list(parameters) if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr_schedule(0), momentum=config.momentum,
                                weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.is_file():
        if not resume:
            raise TrainingError(
                f"{out} already holds a training run ({CHECKPOINT}); resume it or choose another folder"
            )
        start_epoch, history = _load_checkpoint(checkpoint_path, model, optimizer, config, device)
        log.info("resuming %s after epoch %d", out, start_epoch)
    elif resume:
        log.info("%s has no %s: starting from scratch", out, CHECKPOINT)
    resumed_from = start_epoch

    for epoch in range(start_epoch, config.epochs):
        entry = _train_epoch(model, loss_fn, batches, optimizer, lr_schedule, config, epoch, device)
        weights = out / LAST_WEIGHTS
        _save_atomically(cpu_state_dict(model), weights)
        if validate is not None:
            began = time.perf_counter()
            metrics = dict(validate(model, epoch, weights))
            entry["val"] = {k: float(v) for k, v in metrics.items()}
            entry["validation_seconds"] = round(time.perf_counter() - began, 3)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in entry["val"].items())
            log.info("epoch %d validation: %s", epoch + 1, shown)
        entry["finished"] = _now()
        history.append(entry)
        best = best_epoch(history, config.monitor, config.monitor_mode)
        if best == epoch + 1 or not (out / BEST_WEIGHTS).is_file():
            shutil.copyfile(weights, out / (BEST_WEIGHTS + ".tmp"))
            os.replace(out / (BEST_WEIGHTS + ".tmp"), out / BEST_WEIGHTS)
        _write_outputs(out, history, config, title)
        # The checkpoint goes last: if anything above fails, a resume redoes this epoch from
        # the previous checkpoint, which gives the same result.
        _save_atomically(
            {
                "model": cpu_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "loop": config.to_dict(),
            },
            checkpoint_path,
        )
        model.train()
    if history:  # also when there was nothing left to do: refresh history and curves
        _write_outputs(out, history, config, title)
    return TrainingResult(
        out_dir=out,
        history=history,
        best_epoch=best_epoch(history, config.monitor, config.monitor_mode),
        last_weights=out / LAST_WEIGHTS,
        best_weights=out / BEST_WEIGHTS,
        resumed_from=resumed_from,
    )


def _load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: LoopConfig,
                     device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except Exception as error:  # a checkpoint of another model, a truncated file...
        raise TrainingError(f"cannot resume from {path}: {type(error).__name__}: {error}") from None
    for group_state in optimizer.state.values():  # momentum buffers onto the training device
        for key, value in group_state.items():
            if isinstance(value, torch.Tensor):
                group_state[key] = value.to(device)
    previous = state.get("loop", {})
    for key in ("iterations", "seed", "momentum", "weight_decay"):
        if key in previous and previous[key] != getattr(config, key):
            log.warning("resuming with %s=%s, the checkpoint was trained with %s: the result will differ "
                        "from an uninterrupted run", key, getattr(config, key), previous[key])
    return int(state["epoch"]), list(state.get("history", []))


def _train_epoch(model, loss_fn, batches, optimizer, lr_schedule, config, epoch, device) -> dict[str, Any]:
    from tqdm import tqdm

    torch.manual_seed(epoch_seed(config.seed, epoch))
    lr = float(lr_schedule(epoch))
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    model.train()
    losses: list[float] = []
    started, began = _now(), time.perf_counter()
    running = None
    bar = tqdm(total=config.iterations, desc=f"epoch {epoch + 1}/{config.epochs}", unit="it",
               disable=not config.progress, dynamic_ncols=True, leave=True)
    with bar:
        count = 0
        for batch in islice(batches(epoch), config.iterations):
            batch = to_device(batch, device, config.channels_last)
            loss = loss_fn(model, batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"epoch {epoch + 1}, iteration {count + 1}: loss is {value}; "
                                    "lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(value)
            count += 1
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}", refresh=False)
            bar.update(1)
    if count < config.iterations:
        raise TrainingError(f"epoch {epoch + 1}: the batch source ran dry after {count} of "
                            f"{config.iterations} iterations")
    seconds = time.perf_counter() - began
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "loss": float(sum(losses) / len(losses)),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_trace": _trace(losses),
        "iterations": count,
        "seconds": round(seconds, 3),
        "seconds_per_iteration": round(seconds / count, 4),
        "started": started,
    }


def _write_outputs(out: Path, history: list[dict[str, Any]], config: LoopConfig, title: str) -> None:
    best = best_epoch(history, config.monitor, config.monitor_mode)
    document = {"monitor": config.monitor, "monitor_mode": config.monitor_mode, "best_epoch": best,
                "loop": config.to_dict(), "epochs": history}
    _write_text_atomically(out / HISTORY, json.dumps(document, indent=1))
    try:
        plot_curves(history, out / CURVES, title, config.monitor)
    except Exception as error:  # noqa: BLE001 - a plotting problem must not stop hours of training
        log.warning("could not draw %s: %s: %s", out / CURVES, type(error).__name__, error)
