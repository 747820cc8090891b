"""`vtrack` command line: track one video / sequence / bag, write a sequence as a bag, evaluate trackers,
list trackers.

    vtrack list
    vtrack track --tracker csrt --video walk.mp4 --init 10,20,40,80 --out out/walk
    vtrack track --tracker kcf --sequence datasets/dev/Couple --out out/couple
    vtrack track --tracker csrt --bag robot_run --topic /camera/image_raw --init 10,20,40,80 --out out/run
    vtrack bag --sequence datasets/dev/Couple --out couple_bag --format rosbag2-mcap --compressed
    vtrack eval --trackers csrt kcf --dataset datasets/dev --max-frames 100 --out out/dev
    vtrack outofview --dataset datasets/dev --out out/dev-oov --seed 0
    vtrack calibrate siamfc --data datasets/train out/train-oov
    vtrack train siamfc --data datasets/train --epochs 50 --out out/siamfc
    vtrack train fdn --data datasets/train --epochs 10 --lr 1e-2 1e-3 --out out/fdn
    vtrack train rar --data datasets/train --epochs 6 --samples-per-epoch 480 --out out/rar

Mistakes a user can make (unknown tracker, bad box or setting, missing input) end with a
one-line message on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .boxes import Box
    from .video import FrameSource

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs; printed without a traceback."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .calibration import CalibrationError
    from .config import ConfigError
    from .eval.datasets import DatasetError
    from .registry import UnknownTrackerError
    from .tracker import InvalidInputError
    from .video import FrameSourceError

    return (UsageError, ConfigError, DatasetError, UnknownTrackerError, InvalidInputError, FrameSourceError,
            CalibrationError)


# --- argument helpers ---------------------------------------------------------------------
def _parse_box(text: str):
    from .boxes import Box

    try:
        box = Box.parse(text)
    except ValueError as error:
        raise UsageError(f"--init: {error}") from None
    if not box.is_valid():
        raise UsageError(f"--init: box needs finite values and a positive width and height, got {text!r}")
    return box


def _split_setting(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{option}: expected key=value, got {text!r}")
    return key.strip(), value.strip()


def _track_overrides(settings: list[str]) -> dict[str, str]:
    return dict(_split_setting(s, "--set") for s in settings)


def _eval_overrides(settings: list[str], trackers: list[str]) -> dict[str, dict[str, str]]:
    """NAME.key=value -> {NAME: {key: value}}; a bare key=value applies to every tracker."""
    overrides: dict[str, dict[str, str]] = {}
    for text in settings:
        key, value = _split_setting(text, "--set")
        name, dot, field = key.partition(".")
        if not dot:
            for tracker in trackers:
                overrides.setdefault(tracker, {})[key] = value
            continue
        if name not in trackers:
            raise UsageError(
                f"--set {text}: tracker {name!r} is not among --trackers ({', '.join(trackers)})"
            )
        overrides.setdefault(name, {})[field] = value
    return overrides


def _set_threads(threads: int) -> None:
    """Pin OpenCV and torch to `threads`: single-thread numbers are what we compare."""
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import cv2

    cv2.setNumThreads(threads)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# --- commands -----------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    """Each tracker with its calibration: calibrated (file, method), not calibrated, or no score."""
    from .calibration import describe
    from .registry import available_trackers, tracker_class, tracker_config

    names = available_trackers()
    width = max(len(n) for n in names)
    for name in names:
        try:
            config = tracker_config(name)
            status = describe(tracker_class(name).calibration_source(config), getattr(config, "calibration", ""))
        except Exception as error:  # noqa: BLE001 - a tracker that cannot load must not hide the others
            status = f"cannot load ({type(error).__name__}: {error})"
        print(f"{name.ljust(width)}  {status}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit a tracker's score -> P(on target) map on training runs and write it beside its weights."""
    from .eval.calibrate import CalibrateError, calibrate

    overrides = _track_overrides(args.set)
    _set_threads(args.threads)
    command = " ".join(["vtrack calibrate", *sys.argv[2:]]) if sys.argv[1:2] == ["calibrate"] else None
    try:
        written = calibrate(args.tracker, args.data, args.method, args.out, args.max_frames, overrides,
                            args.runs, command, progress=not args.no_progress)
    except CalibrateError as error:
        raise UsageError(str(error)) from None
    fit = written["provenance"]["fit"]
    cv = fit["cross_validated"][args.method]
    show = (lambda v: "-" if v is None else f"{v:.3f}")
    print(f"{args.tracker}: {args.method} on {fit['frames']} frames ({fit['on_target']} on target, "
          f"{fit['absent_frames']} with the target absent) of {len(written['provenance']['data']['sequences'])} "
          f"sequence(s)")
    print(f"  fitting data: ECE {show(fit['ece_before'])} -> {show(fit['ece_after'])}, AUROC "
          f"{show(fit['auroc_before'])} -> {show(fit['auroc_after'])}; sequence-held-out ({cv['folds']} folds): "
          f"ECE {show(cv['ece'])}, AUROC {show(cv['auroc'])}")
    print(f"wrote {written['path']}")
    return 0


def _ground_truth_start(source: FrameSource) -> tuple[int, Box]:
    """(frame, box) of a sequence's first valid ground truth: where eval would start too."""
    from .boxes import Box
    from .eval.metrics import valid_ground_truth

    if source.ground_truth is None:
        raise UsageError("--init x,y,w,h is required: this input has no ground truth to start from")
    valid = valid_ground_truth(source.ground_truth).nonzero()[0]
    if len(valid) == 0:
        raise UsageError(f"{source.path}: no frame has a valid ground-truth box; give --init")
    start = int(valid[0])
    return start, Box.from_xywh(source.ground_truth[start])


def cmd_track(args: argparse.Namespace) -> int:
    from .registry import create_tracker, tracker_config
    from .tracker import TrackState
    from .video import BoxesWriter, OverlayWriter, draw_track

    log = logging.getLogger("vtrack.track")
    init_box = _parse_box(args.init) if args.init else None
    overrides = _track_overrides(args.set)
    tracker_config(args.tracker, args.config, **overrides)  # typos fail before the slow imports
    source_path = next(p for p in (args.video, args.sequence, args.bag) if p is not None)
    init_stamp = _bag_options(args)
    out = Path(args.out)
    with _open_track_source(args) as source:
        if args.bag is not None:
            if init_box is None:
                raise UsageError("--init x,y,w,h is required with --bag: a bag has no ground truth to start from")
            start = -1  # the frame is found by its stamp while reading
        else:
            start, init_box = (0, init_box) if init_box is not None else _ground_truth_start(source)
        _set_threads(args.threads)
        tracker = create_tracker(args.tracker, args.config, **overrides)
        frames = updates = failures = 0
        seconds = 0.0
        started = False
        overlay_writer = OverlayWriter(out / "overlay.mp4", source.fps)
        with overlay_writer as overlay, BoxesWriter(out / "boxes.txt") as boxes:
            for index, frame in source:
                if args.max_frames is not None and index >= args.max_frames:
                    break
                frames += 1
                if not started:
                    # A bag starts on its first message stamped at or after --init-stamp.
                    is_start = index == start if start >= 0 else source.stamps[-1] >= init_stamp
                    if not is_start:
                        boxes.write(None)
                        overlay.write(draw_track(frame.copy(), None, None, None, args.tracker))
                        continue
                    start, started = index, True
                    tracker.init(frame, init_box)  # a bad box raises InvalidInputError -> exit 2
                    box, confidence, state = tracker.box, 1.0, TrackState.INITIALIZING
                else:
                    try:
                        result = tracker.update(frame)
                    except Exception as error:  # noqa: BLE001 - keep the video going, as eval does
                        failures += 1
                        log.warning("frame %d: %s: %s", index, type(error).__name__, error)
                        boxes.write(None)
                        overlay.write(draw_track(frame.copy(), None, None, None, args.tracker))
                        continue
                    box, confidence, state = result.box, result.confidence, result.state
                    updates += 1
                    seconds += result.seconds
                boxes.write(box, confidence, state)
                overlay.write(draw_track(frame.copy(), box, confidence, state, args.tracker))
        stamps = list(getattr(source, "stamps", []))[:frames]
    if frames == 0:
        raise UsageError(f"{source_path}: no frames")
    if not started and args.bag is not None:
        from .bags import format_stamp

        raise UsageError(f"{source_path}: no message on {source.topic} stamped at or after --init-stamp "
                         f"{format_stamp(init_stamp)} among the {frames} read (stamps "
                         f"{format_stamp(stamps[0])} to {format_stamp(stamps[-1])})")
    if not started:
        raise UsageError(f"{source_path}: the init frame {start} is beyond the {frames} frame(s) read")
    fps = f"{updates / seconds:.1f} fps" if seconds > 0 else "fps n/a"
    print(
        f"{args.tracker}: {frames} frames ({updates} updates"
        f"{f', {failures} failed' if failures else ''}) in {seconds:.2f} s of tracking: {fps}"
    )
    if args.bag is not None:
        from .bags import format_stamp

        # Line i is message i of the topic, as in boxes.txt: its header stamp as recorded.
        (out / "stamps.txt").write_text("".join(f"{format_stamp(s)}\n" for s in stamps))
        print(f"{source.topic}: init on message {start}, stamp {format_stamp(stamps[start])}")
        print(f"wrote {out / 'overlay.mp4'}, {out / 'boxes.txt'} and {out / 'stamps.txt'}")
    else:
        print(f"wrote {out / 'overlay.mp4'} and {out / 'boxes.txt'}")
    return 0


def _bag_options(args: argparse.Namespace) -> int:
    """--topic / --init-stamp belong to --bag; the init stamp in nanoseconds (0: the first message)."""
    from .bags import parse_stamp_ns

    if args.bag is None:
        for option, value in (("--topic", args.topic), ("--init-stamp", args.init_stamp)):
            if value is not None:
                raise UsageError(f"{option} applies to --bag only")
        return 0
    if args.init_stamp is None:
        return 0
    try:
        return parse_stamp_ns(args.init_stamp, "--init-stamp")
    except ValueError as error:
        raise UsageError(str(error)) from None


def _open_track_source(args: argparse.Namespace) -> FrameSource:
    from .video import open_source

    if args.bag is not None:
        from .bags import BagSource

        return BagSource(args.bag, args.topic)
    return open_source(args.video if args.video is not None else args.sequence)


def cmd_bag(args: argparse.Namespace) -> int:
    """Write an image sequence as a bag (stamps start + k / rate), for tests and benchmarks."""
    from .bags import format_stamp, write_sequence_bag

    written = write_sequence_bag(args.sequence, args.out, args.format, args.compressed, args.rate, args.topic,
                                 args.start, args.frame_id, args.max_frames)
    print(f"wrote {written.path} ({written.format}): {written.frames} frames on {written.topic} "
          f"({written.msgtype}) at {args.rate:g} Hz, stamps {format_stamp(written.first_stamp_ns)} to "
          f"{format_stamp(written.last_stamp_ns)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.datasets import load_dataset
    from .eval.report import format_calibration_table, format_table, make_report
    from .eval.runner import run_benchmark
    from .registry import tracker_config

    trackers = list(dict.fromkeys(args.trackers))
    overrides = _eval_overrides(args.set, trackers)
    for name in trackers:  # fail on typos before loading anything
        tracker_config(name, args.config, **overrides.get(name, {}))
    sequences = [s.head(args.max_frames) for s in load_dataset(args.dataset, args.sequences)]
    _set_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    run_benchmark(
        trackers, sequences, out, overrides=overrides, config_file=args.config,
        resume=not args.no_resume, progress=not args.no_progress,
    )
    # Scored from the files, not the in-memory results, so a resumed run reports the same numbers.
    summary = make_report(out, trackers, sequences, title=Path(args.dataset).name)
    print(format_table(summary))
    print("\nconfidence and LOST:")
    print(format_calibration_table(summary))
    elapsed = time.perf_counter() - started
    print(f"\n{len(trackers)} tracker(s) x {len(sequences)} sequence(s) in {elapsed:.1f} s; "
          f"wrote {out / 'summary.json'}, {out / 'success.png'}, {out / 'precision.png'}, "
          f"{out / 'reliability.png'}")
    return 0


def _range(text: str) -> tuple[int, int]:
    """'A..B' (or one number A) as an inclusive frame-count range."""
    low, sep, high = text.partition("..")
    try:
        bounds = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LOW..HIGH, got {text!r}") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"need 1 <= LOW <= HIGH, got {text!r}")
    return bounds


def cmd_outofview(args: argparse.Namespace) -> int:
    """Build the out-of-view / occlusion variant of a dataset (eval/outofview.py)."""
    from .eval.outofview import OutOfViewSettings, build_out_of_view

    given = {key: getattr(args, key) for key in (
        "window_scale", "min_window_scale", "min_visible", "slide_frames", "hold_frames",
        "occluder_pass", "occlusion_frames", "jpeg_quality", "max_frames") if getattr(args, key) is not None}
    if args.window_scale is not None and args.min_window_scale is None:  # a small window alone is meant
        given["min_window_scale"] = min(args.window_scale, OutOfViewSettings.min_window_scale)
    try:
        settings = OutOfViewSettings(seed=args.seed, **given)
    except ValueError as error:
        raise UsageError(str(error)) from None
    started = time.perf_counter()
    description = build_out_of_view(args.dataset, args.out, settings, args.sequences, overwrite=args.overwrite)
    width = max([len("sequence")] + [len(n) for n in description["sequences"]])
    print(f"{'sequence'.ljust(width)}  frames  window  absent  out-of-view  occluded")
    for name, entry in description["sequences"].items():
        counts = {reason: sum(b - a + 1 for a, b in runs) for reason, runs in entry["absent"].items()}
        print(f"{name.ljust(width)}  {entry['frames']:6d}  {entry['window_scale']:6.2f}  {entry['absent_frames']:6d}  "
              f"{counts.get('out_of_view', 0):11d}  {counts.get('occluded', 0):8d}")
        for note in entry["notes"]:
            print(f"  {name}: {note}")
    out = Path(args.out)
    print(f"\n{len(description['sequences'])} sequence(s), seed {settings.seed}, in "
          f"{time.perf_counter() - started:.1f} s; wrote {out} (episodes in {out / 'outofview.json'})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`vtrack train NAME ...`: NAME's trainer from the registry (`training.TRAINABLE`) parses
    the options (the shared ones and its own, each with the trainer's default) and trains."""
    from .training import TRAINABLE, UnknownTrainerError, trainer_class
    from .training.loop import TrainingError
    from .training.options import USAGE, find_name, overview, settings_from, trainer_parser

    name, help_asked = find_name(args.arguments)
    if name is None:
        if help_asked:
            print(overview(_load_trainers(TRAINABLE)), end="")
            return 0
        raise UsageError(f"name the tracker to train: {USAGE.format(name='NAME')} "
                         f"(trainable: {', '.join(sorted(TRAINABLE))}; `vtrack train --help` for the options)")
    try:
        trainer = trainer_class(name)
    except UnknownTrainerError as error:
        raise UsageError(str(error)) from None
    parser = trainer_parser(trainer)
    try:
        parsed, extras = parser.parse_known_args(args.arguments)
        if extras:
            _refuse_foreign_options(name, extras, TRAINABLE)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exit_:  # --help, or argparse already printed what is wrong
        return int(exit_.code or 0)
    try:
        result = trainer(**settings_from(trainer, parsed)).run()
    except TrainingError as error:
        raise UsageError(str(error)) from None
    last = result.history[-1] if result.history else {}
    best = result.best_epoch
    val = result.history[best - 1].get("val", {}).get("auc") if best else None
    print(f"{name}: {len(result.history)} epoch(s), last loss {last.get('loss', float('nan')):.4f}"
          + (f", best validation AUC {val:.4f} (epoch {best})" if val is not None else ""))
    print(f"wrote {result.extra['weights']} and {result.extra['provenance']}")
    return 0


def _refuse_foreign_options(name: str, extras: Sequence[str], trainable: Sequence[str]) -> None:
    """A UsageError naming the trackers an option left over belongs to (they are imported
    only now, on this error's path)."""
    flags = [e.partition("=")[0] for e in extras if e.startswith("--")]
    owners = {flag: [other for other, trainer in _load_trainers(trainable).items()
                     if not isinstance(trainer, Exception) and any(o.flag == flag for o in trainer.options)]
              for flag in flags}
    foreign = [f"{flag} (an option of {', '.join(sorted(users))})" for flag, users in owners.items() if users]
    if foreign:
        verb = "does" if len(foreign) == 1 else "do"
        raise UsageError(f"{'; '.join(foreign)} {verb} not apply to {name}; `vtrack train {name} --help` lists its options")


def _load_trainers(names: Sequence[str]) -> dict[str, object]:
    """Every named tracker's trainer (for the help and the error above); one that cannot be
    imported comes as its error instead of hiding the others."""
    from .training import trainer_class

    trainers: dict[str, object] = {}
    for name in names:
        try:
            trainers[name] = trainer_class(name)
        except Exception as error:  # noqa: BLE001 - one broken trainer must not hide the others
            trainers[name] = error
    return trainers


# --- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtrack", description="Visual object tracking: run and evaluate trackers."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="print the available trackers and whether each is calibrated").set_defaults(
        func=cmd_list)

    calib = sub.add_parser(
        "calibrate", help="fit a tracker's score -> probability-on-target map on training sequences",
        description="Run the tracker (raw score) over the sequences of --data, fit a monotone map from its score "
                    "to the probability that its box is on the target (IoU >= 0.5), and write it with its "
                    "provenance beside the tracker's weights (<weights stem>.calibration.json). Rerun whenever "
                    "the weights change. Fit on training data only, never on the evaluation set.")
    calib.add_argument("tracker", metavar="NAME", help="tracker name (see `vtrack list`)")
    calib.add_argument("--data", nargs="+", required=True, metavar="DIR",
                       help="OTB- or GOT-10k-layout folder(s) of training sequences")
    calib.add_argument("--out", help="the calibration file (default: beside the weights the tracker loads)")
    calib.add_argument("--method", choices=["isotonic", "logistic"], default="isotonic",
                       help="isotonic (pool-adjacent-violators, interpolated; default) or logistic (Platt)")
    calib.add_argument("--max-frames", type=_positive, help="only the first N frames of each sequence")
    calib.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="tracker config override")
    calib.add_argument("--runs", metavar="DIR", help="keep the raw runs here and resume from them")
    calib.add_argument("--threads", type=int, default=1, help="OpenCV / torch threads (default 1)")
    calib.add_argument("--no-progress", action="store_true", help="no progress bar")
    calib.set_defaults(func=cmd_calibrate)

    track = sub.add_parser("track", help="track one target through a video or a sequence folder")
    track.add_argument("--tracker", required=True, help="tracker name (see `vtrack list`)")
    source = track.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file")
    source.add_argument("--sequence", help="OTB / GOT-10k sequence folder, or a folder of images")
    source.add_argument("--bag", help="rosbag2 folder (sqlite3 or mcap) or ROS 1 .bag file")
    track.add_argument(
        "--init", help="initial box x,y,w,h in pixels (default for a sequence: its ground truth)"
    )
    track.add_argument("--topic", help="--bag: the image topic (default: the bag's only image topic)")
    track.add_argument("--init-stamp", metavar="SECONDS",
                       help="--bag: start on the first message stamped at or after this (default: the first message)")
    track.add_argument("--max-frames", type=_positive, help="stop after this many frames")
    track.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="tracker config override"
    )
    track.add_argument("--config", help="YAML file of tracker settings (section per tracker name)")
    track.add_argument("--threads", type=int, default=1, help="OpenCV / torch threads (default 1)")
    track.add_argument("--out", required=True, help="folder for overlay.mp4 and boxes.txt (and stamps.txt for --bag)")
    track.set_defaults(func=cmd_track)

    bag = sub.add_parser("bag", help="write an image sequence as a bag (rosbag2 or ROS 1)",
                         description="Write the frames of an OTB-layout sequence (or a folder of images) as an "
                                     "image topic, stamped start + k / rate, with its camera_info beside it.")
    bag.add_argument("--sequence", required=True, help="OTB / GOT-10k sequence folder, or a folder of images")
    bag.add_argument("--out", required=True, help="the bag to write: a folder for rosbag2, a *.bag file for ros1")
    bag.add_argument("--format", choices=["rosbag2-sqlite3", "rosbag2-mcap", "ros1"],
                     help="default: ros1 for *.bag, else rosbag2-sqlite3")
    bag.add_argument("--compressed", action="store_true",
                     help="sensor_msgs/CompressedImage with each frame's own JPEG/PNG bytes (default: raw bgr8 Image)")
    bag.add_argument("--rate", type=float, default=30.0, help="frames per second of the stamps (default 30)")
    bag.add_argument("--topic", help="default /camera/image_raw (/camera/image_raw/compressed with --compressed)")
    bag.add_argument("--start", default="1.0", metavar="SECONDS", help="stamp of the first frame (default 1.0)")
    bag.add_argument("--frame-id", default="camera", help="header frame_id (default camera)")
    bag.add_argument("--max-frames", type=_positive, help="only the first N frames")
    bag.set_defaults(func=cmd_bag)

    ev = sub.add_parser("eval", help="one-pass evaluation of trackers on a dataset")
    ev.add_argument("--trackers", nargs="+", required=True, metavar="NAME")
    ev.add_argument("--dataset", required=True, help="OTB- or GOT-10k-layout folder")
    ev.add_argument("--sequences", nargs="+", metavar="SEQ", help="only these sequences")
    ev.add_argument("--max-frames", type=_positive, help="only the first N frames of each sequence")
    ev.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                    help="config override for one tracker (KEY=VALUE alone: for all)")
    ev.add_argument("--config", help="YAML file of tracker settings (section per tracker name)")
    ev.add_argument("--out", required=True, help="folder for results/, summary.json and plots")
    ev.add_argument("--no-resume", action="store_true", help="rerun sequences that already have results")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--threads", type=int, default=1, help="OpenCV / torch threads (default 1)")
    ev.set_defaults(func=cmd_eval)

    oov = sub.add_parser(
        "outofview", help="build a dataset variant in which the target leaves the view and is occluded",
        description="Cut out-of-view episodes (a crop window pans off the target and back) and full "
                    "occlusions (a patch of another sequence's frame over the target) into real "
                    "sequences; writes OTB layout with NaN ground truth where the target is absent.")
    oov.add_argument("--dataset", required=True, help="OTB- or GOT-10k-layout folder to build from")
    oov.add_argument("--out", required=True, help="folder for the variant (must be empty, or --overwrite)")
    oov.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    oov.add_argument("--sequences", nargs="+", metavar="SEQ", help="only these sequences")
    oov.add_argument("--max-frames", type=_positive, help="only the first N frames of each sequence")
    oov.add_argument("--window-scale", type=float, help="crop window side / frame side (default 0.65)")
    oov.add_argument("--min-window-scale", type=float,
                     help="smallest window tried where none at --window-scale can leave the target (default 0.5)")
    oov.add_argument("--min-visible", type=float,
                     help="share of the box that must show for the target to count as present (default 0.1)")
    oov.add_argument("--slide-frames", type=_range, metavar="LOW..HIGH", help="frames of each pan (default 6..12)")
    oov.add_argument("--hold-frames", type=_range, metavar="LOW..HIGH",
                     help="frames the window stays off the target (default 10..30)")
    oov.add_argument("--occluder-pass", type=_range, metavar="LOW..HIGH",
                     help="frames the occluder takes to cover and to uncover (default 4..8)")
    oov.add_argument("--occlusion-frames", type=_range, metavar="LOW..HIGH",
                     help="frames the target is wholly covered (default 10..25)")
    oov.add_argument("--jpeg-quality", type=int, help="JPEG quality of the frames (default 95)")
    oov.add_argument("--overwrite", action="store_true", help="replace an earlier variant in --out")
    oov.set_defaults(func=cmd_outofview)

    # `train` parses its arguments itself once it knows the tracker: the options differ per
    # tracker, and each tracker's trainer is imported only when it is used. Here argparse
    # takes them all as they are (no prefix characters it would read as options).
    tr = sub.add_parser("train", help="train a tracker's network (`vtrack train --help`: trainable trackers, options)",
                        add_help=False, prefix_chars="\0")
    tr.add_argument("arguments", nargs=argparse.REMAINDER)
    tr.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage message
        return int(exit_.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="vtrack: %(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except _expected_errors() as error:
        print(f"vtrack {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vtrack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
