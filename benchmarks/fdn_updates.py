"""FDN's dynamic update against MDNet's fixed ten iterations (the paper's Table 1 and its
speed argument), on real sequences: per-update rows (frame, kind, score, iterations, loss)
and per-mode totals (AUC, fps, updates, iterations, seconds spent updating).

    .venv/bin/python benchmarks/fdn_updates.py [--sequences Crossing David] [--rows 12] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "dev"))
    parser.add_argument("--sequences", nargs="+", default=["Crossing"])
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--rows", type=int, default=12, help="update rows printed per sequence and mode")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    import cv2
    import torch

    from vtrack_core.eval.datasets import load_dataset
    from vtrack_core.eval.metrics import score
    from vtrack_core.eval.runner import run_sequence
    from vtrack_core.registry import create_tracker

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    report: dict[str, dict] = {}
    for sequence in load_dataset(args.dataset, args.sequences):
        sequence = sequence.head(args.max_frames)
        for mode, dynamic in (("loss threshold (FDN)", True), ("fixed 10 (MDNet)", False)):
            tracker = create_tracker("fdn", device=args.device, dynamic_update=dynamic)
            result = run_sequence(tracker, sequence, label=f"fdn {mode}")
            totals = tracker.update_iterations()
            auc = float(score(result.boxes, sequence.ground_truth).auc)
            print(f"\n{sequence.name}, {mode}: AUC {auc:.3f}, {result.fps:.2f} fps, {totals['updates']} updates, "
                  f"{totals['iterations']} iterations ({totals['mean_iterations']:.2f} per update, "
                  f"{totals['iterations_per_frame']:.2f} per frame), {totals['update_seconds']:.1f} s updating")
            print(f"{'frame':>6} {'kind':>6} {'score':>8} {'iter':>5} {'loss':>8}")
            for record in list(tracker.updates)[1:args.rows + 1]:
                print(f"{record.frame:6d} {record.kind:>6} {record.score:8.3f} {record.iterations:5d} {record.loss:8.4f}")
            report[f"{sequence.name} / {mode}"] = {"auc": auc, "fps": result.fps, **totals}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
