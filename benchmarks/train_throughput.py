"""Training throughput per trainable tracker (a benchmark, not a test): the trainer's own data,
model and loss (vtrack_core.training's registry), SGD steps for --seconds after a short
warm-up, reported as iterations and samples per second. The data is prepared from a few
training sequences only (what matters here is the step, not the data set).

    python benchmarks/train_throughput.py [--trackers siamfc fdn rar] [--device cuda] [--seconds 60]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "train"
SEQUENCES = ("uav_bike1", "davis_camel", "vot_car1", "davis_blackswan")


def batch_size(batch) -> int:
    import torch

    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
    return 1


def measure(name: str, data: Path, device: str, seconds: float, warmup: int) -> dict:
    import torch

    from vtrack_core.training import trainer_class
    from vtrack_core.training.data import split_sequences
    from vtrack_core.training.loop import to_device

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_class(name)(data, tmp, 1, device=device, train_sequences=SEQUENCES, val_sequences=(),
                                      progress=False)
        train, _ = split_sequences(data, (), SEQUENCES)
        began = time.perf_counter()
        trainer.prepare(train, Path(tmp))
        prepare_seconds = time.perf_counter() - began
        torch.manual_seed(0)
        model = trainer.build_model().to(device).train()
        groups = trainer.parameters(model) or [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(groups, lr=1e-4, momentum=0.9, weight_decay=5e-4)
        loss_fn = trainer.loss()
        torch_device = torch.device(device)
        steps = samples = 0
        start = None
        for index, batch in enumerate(islice(trainer.batches(0), 10**9)):
            if index == warmup:
                if torch_device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            batch = to_device(batch, torch_device)
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if start is not None:
                steps += 1
                samples += batch_size(batch)
                if time.perf_counter() - start >= seconds:
                    break
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return {"prepare_s": prepare_seconds, "steps": steps, "it_s": steps / elapsed, "samples_s": samples / elapsed,
            "batch": samples // max(steps, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", nargs="+", default=None, help="default: every trainable tracker")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from vtrack_core.device import resolve_device
    from vtrack_core.training import TRAINABLE

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    names = args.trackers or sorted(TRAINABLE)
    print(f"training throughput on {device}, {args.seconds:g} s per tracker after {args.warmup} warm-up steps "
          f"({', '.join(SEQUENCES)})")
    print(f"{'tracker':8} {'batch':>5} {'steps':>6} {'it/s':>7} {'samples/s':>10} {'data prep s':>11}")
    for name in names:
        row = measure(name, Path(args.data), device, args.seconds, args.warmup)
        print(f"{name:8} {row['batch']:5d} {row['steps']:6d} {row['it_s']:7.2f} {row['samples_s']:10.1f} "
              f"{row['prepare_s']:11.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
