"""Soak benchmark of tracker_node: hours at camera rate on a looping sequence (not a test, not in CI).

Issue 21 asks for "a one-hour soak at 30 Hz, reported in the docs with RSS, fps, latency,
drops and the share of time the published state was true". This script runs the real
processes in a private ROS domain: `video_publisher` loops an annotated sequence (default
the dev set's David, an OTB folder) at --rate Hz with sequence stamps, `tracker_node` tracks,
and a target is started through `~/init_target` on the first frame with its ground-truth box.

Sequence stamps (`stamp_start + k / rate`, k counting every frame published, loops included)
name each result's source frame exactly: frame `start + (k - start) mod length`, held copies
of the first frame (k <= start) being that frame. So the ground truth is known for every
result, however long the run, and a result's state can be judged:

- TRACKING / UNCERTAIN with IoU >= 0.5 against the ground truth: true;
- LOST with IoU < 0.5, or with the target absent from the ground truth: true;
- anything else (a wrong box still claimed, LOST on a good box, a box claimed on an absent
  target, a result without the target, INITIALIZING): false.

Every --interval s it appends a sample to DIR/samples.jsonl (node RSS and VmHWM from
/proc/<pid>/status, CPU time, the node's own /diagnostics values, the window's results,
share true and latency), and at the end (also after Ctrl-C or a process dying) writes
DIR/summary.json and DIR/soak.png (RSS and fps over time). The RSS slope (MB per hour, least
squares over the samples) shows a leak.

Latency is measured here, from the arrival of each frame's camera_info (published with the
image) to the arrival of its result. The node's own `latency_p50_ms` / `latency_p95_ms` in
/diagnostics (node clock minus header stamp) are kept in the samples but mean nothing with
sequence stamps, which are not wall-clock times; its `processing_p50_ms` does.

    .venv/bin/python benchmarks/soak.py [--tracker csrt] [--minutes 60] [--rate 30] [--interval 10] \\
        [--sequence ../shared/datasets/dev/David] [--set PARAM:=VALUE ...] [--out out/soak]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEQUENCE = REPO.parent / "shared" / "datasets" / "dev" / "David"
HOLD_SECONDS = 120.0  # longest hold of the first frame while the tracker starts (as vtrack-demo)
IOU_TRUE = 0.5
# /diagnostics keys sampled (the node's own account); numbers where they parse.
DIAGNOSTIC_KEYS = ("fps", "camera_fps", "frames_received", "frames_processed", "frames_dropped", "images_rejected",
                   "latency_p50_ms", "latency_p95_ms", "processing_p50_ms", "frame_buffer_frames",
                   "frame_buffer_bytes", "stale", "targets")
STATE_NAMES = {0: "INITIALIZING", 1: "TRACKING", 2: "UNCERTAIN", 3: "LOST"}


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two x, y, w, h boxes; scalar maths, cheap enough to run on every result."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def proc_status(pid: int) -> dict[str, float]:
    """RSS and high-water mark (MB) and CPU seconds of a process from /proc; {} once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0  # kB -> MB (MiB)
        elif key == "Threads":
            values["threads"] = int(rest.split()[0])
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    values["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return values


def _number(text: str) -> float | int | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _num(value: object) -> float:
    """A sampled value as a float for printing (NaN where the node has not said)."""
    return float(value) if isinstance(value, (int, float)) else float("nan")


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    """p50 / p95 / max in ms (NaN when empty), so summaries have the same keys every time."""
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {"p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)), "max": float(array.max())}


def slope_per_hour(t_s: list[float], values: list[float]) -> float:
    """Least-squares slope in units per hour (NaN below three points)."""
    if len(t_s) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t_s) / 3600.0, np.asarray(values), 1)[0])


@dataclass
class Ledger:
    """What the listener saw, judged as it arrives (an hour at 30 Hz is 108 000 results, so
    nothing per message is kept but the latency)."""

    start: int  # first source frame played (the init frame)
    length: int  # frames in the loop
    ground_truth: np.ndarray
    rate: float
    stamp0_ns: int  # stamp of k = 0
    published_at: dict[int, float] = field(default_factory=dict)  # k -> camera_info arrival (wall)
    infos_seen: int = 0  # camera_info messages, held copies included
    max_k: int = -10**9
    max_held_k: int = -10**9  # newest held copy of the first frame seen (k <= start)
    init_k: int | None = None  # results count from the frame after the init copy
    results: int = 0
    true: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    ious: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    true_seconds: float = 0.0  # time-weighted: each result holds until the next one arrives
    held_seconds: float = 0.0
    last_arrival: float | None = None
    last_true: bool = False
    window: dict[str, list] = field(default_factory=lambda: {"true": [], "latency_ms": []})
    first_results: int = 0  # results before init (any copy), to know the node answers
    first_result_k: int = -10**9  # the newest copy the node answered before init: the init stamp

    def k_of(self, stamp_ns: int) -> int | None:
        """k of a sequence stamp, or None where it is not one of ours (exact: checked back)."""
        k = round((stamp_ns - self.stamp0_ns) * self.rate / 1e9)
        return k if self.stamp0_ns + int(round(k * 1e9 / self.rate)) == stamp_ns else None

    def frame_of(self, k: int) -> int:
        """Source frame of k: the first frame for held copies, then the loop."""
        return self.start if k <= self.start else self.start + (k - self.start) % self.length

    def on_info(self, stamp_ns: int, now: float) -> None:
        k = self.k_of(stamp_ns)
        if k is None:
            return
        self.infos_seen += 1
        self._seen(k)
        if self.init_k is not None and k > self.init_k:
            self.published_at[k] = now

    def _seen(self, k: int) -> None:
        self.max_k = max(self.max_k, k)
        if k <= self.start:
            self.max_held_k = max(self.max_held_k, k)

    def on_result(self, stamp_ns: int, objects, now: float) -> None:
        k = self.k_of(stamp_ns)
        if k is None:
            return
        self._seen(k)
        if self.init_k is None or k <= self.init_k:
            self.first_results += 1
            self.first_result_k = max(self.first_result_k, k)
            return
        sent = self.published_at.pop(k, None)
        if sent is not None:
            latency = (now - sent) * 1e3
            self.latencies_ms.append(latency)
            self.window["latency_ms"].append(latency)
        truth = self.ground_truth[self.frame_of(k)]
        present = bool(np.all(np.isfinite(truth)) and truth[2] > 0 and truth[3] > 0)
        if not objects:
            outcome, state = "no_target_in_result", "NONE"
        else:
            obj = objects[0]
            state = STATE_NAMES.get(int(obj.state), str(obj.state))
            overlap = iou((obj.x, obj.y, obj.width, obj.height), tuple(truth)) if present else 0.0
            if present:
                self.ious.append(overlap)
            if state in ("TRACKING", "UNCERTAIN"):
                outcome = "on_target" if present and overlap >= IOU_TRUE else "claimed_off_target"
            elif state == "LOST":
                outcome = "lost_rightly" if overlap < IOU_TRUE else "lost_on_target"
            else:
                outcome = "initializing"
        correct = outcome in ("on_target", "lost_rightly")
        self.results += 1
        self.true += correct
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.states[state] = self.states.get(state, 0) + 1
        self.window["true"].append(correct)
        self._hold_until(now)
        self.last_arrival, self.last_true = now, correct

    def _hold_until(self, now: float) -> None:
        if self.last_arrival is not None:
            span = max(0.0, now - self.last_arrival)
            self.held_seconds += span
            self.true_seconds += span * self.last_true

    def frames_after_init(self) -> int:
        """Frames published after the init copy. The publisher plays every k in turn, except
        that the hold ends early (once a target is tracked on a copy) and jumps to start + 1."""
        if self.init_k is None:
            return 0
        return max(0, self.max_held_k - self.init_k) + max(0, self.max_k - self.start)

    def take_window(self) -> dict[str, float]:
        window, self.window = self.window, {"true": [], "latency_ms": []}
        lat = percentiles(window["latency_ms"])
        return {"results": len(window["true"]),
                "share_true": float(np.mean(window["true"])) if window["true"] else float("nan"),
                "latency_ms_p50": lat["p50"], "latency_ms_p95": lat["p95"]}

    def prune(self, keep_s: float = 30.0) -> None:
        """Forget publications that got no result for keep_s (they are counted as misses)."""
        if len(self.published_at) > keep_s * self.rate * 2:
            horizon = self.max_k - int(keep_s * self.rate)
            self.published_at = {k: t for k, t in self.published_at.items() if k > horizon}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracker", default="siamfc", help="registry name (default: the node's default, siamfc)")
    parser.add_argument("--sequence", default=str(DEFAULT_SEQUENCE),
                        help="annotated sequence folder (OTB or GOT-10k) played in a loop (default: dev David)")
    parser.add_argument("--minutes", type=float, default=60.0, help="soak length after the init (default 60)")
    parser.add_argument("--rate", type=float, default=30.0, help="publishing rate in Hz (default 30)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM:=VALUE",
                        help="extra tracker_node parameter, e.g. --set device:=cpu (repeatable)")
    parser.add_argument("--out", default="out/soak", help="folder for samples.jsonl, summary.json, soak.png, logs")
    return parser.parse_args(argv)


class Soak:
    """The two processes, the listener and the sampling loop; `run` always ends in `finish`."""

    def __init__(self, args: argparse.Namespace) -> None:
        from vtrack_core import tracker_class
        from vtrack_core.video import open_source
        from vtrack_ros.video_publisher import Settings, sequence_stamp_ns

        tracker_class(args.tracker)  # an unknown name fails here, before any process starts
        with open_source(args.sequence) as source:
            if getattr(source, "ground_truth", None) is None:
                raise ValueError(f"{args.sequence}: no ground truth (an OTB or GOT-10k folder is needed)")
            ground_truth = np.asarray(source.ground_truth, dtype=np.float64)
            length = len(source)
        valid = np.flatnonzero(np.all(np.isfinite(ground_truth), axis=1) & (ground_truth[:, 2] > 0)
                               & (ground_truth[:, 3] > 0))
        if not valid.size:
            raise ValueError(f"{args.sequence}: no frame with a ground-truth box")
        self.args = args
        self.start = int(valid[0])  # the publisher starts (and loops back) here: start_frame
        self.init_box = tuple(float(v) for v in ground_truth[self.start])
        self.stamps = Settings(source=args.sequence, rate=args.rate, stamp_start=HOLD_SECONDS + 1.0,
                               hold_first_frame=HOLD_SECONDS, start_frame=self.start)
        self.ledger = Ledger(start=self.start, length=length - self.start, ground_truth=ground_truth, rate=args.rate,
                             stamp0_ns=sequence_stamp_ns(self.stamps, 0))
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.domain = int(os.environ.get("VTRACK_SOAK_DOMAIN_ID", random.randint(120, 200)))
        self.stop_reason = ""
        self.node_proc: subprocess.Popen | None = None
        self.pub_proc: subprocess.Popen | None = None
        self.samples: list[dict] = []
        self.diagnostics: dict[str, object] = {}
        self.diagnostics_level = -1
        self.t0: float | None = None  # monotonic time of the init answer: the soak's t = 0
        self.init_seconds = float("nan")
        self.ready: dict[str, float] = {}
        self.exit_codes: dict[str, int | None] = {}

    # --- processes ---------------------------------------------------------------------
    def start_node(self, env: dict[str, str]) -> None:
        node_args = [_bin("tracker_node"), "--ros-args", "-r", "image:=/vtrack_soak/image",
                     "-p", f"tracker:={self.args.tracker}", "-p", "qos_reliability:=reliable"]
        for extra in self.args.set:
            node_args += ["-p", extra]
        self.node_log = open(self.out / "tracker_node.log", "w")
        self.node_proc = subprocess.Popen(node_args, env=env, stdout=self.node_log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    def start_publisher(self, env: dict[str, str]) -> None:
        s = self.stamps
        publisher_args = [
            _bin("video_publisher"), "--ros-args", "-r", "image:=/vtrack_soak/image",
            "-r", "camera_info:=/vtrack_soak/camera_info", "-p", f"source:={s.source}", "-p", f"rate:={s.rate}",
            "-p", "loop:=true", "-p", f"start_frame:={s.start_frame}", "-p", "wait_for_subscribers:=1",
            "-p", "stamp_mode:=sequence", "-p", f"stamp_start:={s.stamp_start}",
            "-p", f"hold_first_frame:={s.hold_first_frame}", "-p", "hold_until_tracked:=/tracker_node/tracked_objects",
        ]
        self.pub_log = open(self.out / "video_publisher.log", "w")
        self.pub_proc = subprocess.Popen(publisher_args, env=env, stdout=self.pub_log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def processes(self) -> list[tuple[str, subprocess.Popen]]:
        return [(name, p) for name, p in (("video_publisher", self.pub_proc), ("tracker_node", self.node_proc))
                if p is not None]

    def dead(self) -> str:
        """Name and exit code of a process that ended on its own, else ''."""
        for name, process in self.processes():
            if process.poll() is not None:
                return f"{name} exited with {process.returncode}"
        return ""

    def stop(self, name: str, process: subprocess.Popen) -> None:
        """SIGINT (the nodes shut down cleanly on it), SIGKILL after 10 s."""
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGINT)
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        self.exit_codes[name] = process.returncode

    # --- sampling ----------------------------------------------------------------------
    def sample(self) -> dict:
        """One line of samples.jsonl, written at once so a crash or Ctrl-C keeps it."""
        now = time.monotonic()
        node = proc_status(self.node_proc.pid) if self.node_proc else {}
        pub = proc_status(self.pub_proc.pid) if self.pub_proc else {}
        previous = self.samples[-1] if self.samples else None
        cpu_pct = float("nan")
        if previous and "node_cpu_s" in previous and "cpu_s" in node and now > previous["_mono"]:
            cpu_pct = 100.0 * (node["cpu_s"] - previous["node_cpu_s"]) / (now - previous["_mono"])
        row = {
            "t_s": round(now - self.t0, 3) if self.t0 is not None else 0.0,
            "wall": time.time(),
            "node_rss_mb": node.get("VmRSS"), "node_hwm_mb": node.get("VmHWM"), "node_cpu_s": node.get("cpu_s"),
            "node_cpu_pct": cpu_pct, "node_threads": node.get("threads"),
            "publisher_rss_mb": pub.get("VmRSS"),
            "frames_published": self.ledger.frames_after_init(), "results_total": self.ledger.results,
            "share_true_total": self.ledger.true / self.ledger.results if self.ledger.results else float("nan"),
            **{f"window_{k}": v for k, v in self.ledger.take_window().items()},
            "diagnostics_level": self.diagnostics_level,
            **{f"diag_{k}": self.diagnostics.get(k) for k in DIAGNOSTIC_KEYS},
        }
        with open(self.out / "samples.jsonl", "a") as f:
            f.write(json.dumps({k: v for k, v in row.items()}) + "\n")
        row["_mono"] = now
        self.samples.append(row)
        return row

    # --- the run -----------------------------------------------------------------------
    def run(self) -> dict:
        """The session, then the summary of whatever it collected, whatever ended it."""
        try:
            self._session()
        except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - the summary is still written
            import traceback

            traceback.print_exc()
            self.stop_reason = self.stop_reason or f"error: {error!r}"
        return self.finish()

    def _session(self) -> None:
        import rclpy
        from builtin_interfaces.msg import Time
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CameraInfo

        from vtrack_ros.msg import TrackedObjectArray
        from vtrack_ros.srv import InitTarget

        (self.out / "samples.jsonl").unlink(missing_ok=True)
        interrupted = {"flag": False}

        def on_signal(signum, _frame) -> None:
            interrupted["flag"] = True
            signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C ends at once (the finally still stops both)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain), PYTHONUNBUFFERED="1")
        context = rclpy.Context()
        # Our own handler, not rclpy's: Ctrl-C must end the loop, not the context we still read.
        rclpy.init(context=context, domain_id=self.domain, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("vtrack_soak", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        ledger = self.ledger

        def stamp_ns(stamp) -> int:
            return stamp.sec * 1_000_000_000 + stamp.nanosec

        def on_diagnostics(message: DiagnosticArray) -> None:
            for status in message.status:
                if status.name.startswith("/tracker_node"):
                    self.diagnostics_level = int.from_bytes(status.level, "little") if isinstance(
                        status.level, bytes) else int(status.level)
                    self.diagnostics.update({kv.key: _number(kv.value) for kv in status.values})

        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(CameraInfo, "/vtrack_soak/camera_info",
                                 lambda m: ledger.on_info(stamp_ns(m.header.stamp), time.time()), reliable)
        node.create_subscription(TrackedObjectArray, "/tracker_node/tracked_objects",
                                 lambda m: ledger.on_result(stamp_ns(m.header.stamp), m.objects, time.time()),
                                 reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        client = node.create_client(InitTarget, "/tracker_node/init_target")

        def spin_until(predicate, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while not predicate():
                if interrupted["flag"]:
                    self.stop_reason = self.stop_reason or "interrupted (Ctrl-C / SIGTERM)"
                    return False
                if (died := self.dead()) or time.monotonic() > deadline:
                    self.stop_reason = self.stop_reason or died
                    return False
                executor.spin_once(timeout_sec=0.02)
            return True

        try:
            self.start_node(env)
            started = time.monotonic()
            if not spin_until(lambda: client.service_is_ready(), 180.0):
                self.stop_reason = self.stop_reason or "tracker_node did not start within 180 s"
                return
            self.ready["node_start_s"] = time.monotonic() - started
            self.ready["node_rss_mb_before_init"] = proc_status(self.node_proc.pid).get("VmRSS", float("nan"))
            self.start_publisher(env)
            # The publisher holds the first frame until the node reports a target on a copy;
            # the node's first output proves it holds one (as vtrack-demo).
            if not spin_until(lambda: ledger.first_results > 0, HOLD_SECONDS):
                self.stop_reason = self.stop_reason or "no image reached tracker_node"
                return
            init_k = ledger.first_result_k
            if init_k > self.start:
                self.stop_reason = f"the node's first result is for k={init_k}, past the first frame"
                return
            stamp = ledger.stamp0_ns + int(round(init_k * 1e9 / self.args.rate))
            x, y, w, h = self.init_box
            asked = time.monotonic()
            future = client.call_async(InitTarget.Request(
                stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), x=x, y=y, width=w, height=h))
            # Results for copies after init_k (and frames after them) are judged from now on.
            ledger.init_k = init_k
            if not spin_until(future.done, 120.0) or not future.result().success:
                message = future.result().message if future.done() else "no answer"
                self.stop_reason = self.stop_reason or f"init_target failed: {message}"
                return
            self.t0 = time.monotonic()
            self.init_seconds = self.t0 - asked
            print(f"soak: {self.args.tracker}: {future.result().message}; {self.args.minutes:g} min at "
                  f"{self.args.rate:g} Hz, domain {self.domain}, samples every {self.args.interval:g} s -> {self.out}",
                  file=sys.stderr)
            self.sample()
            end = self.t0 + self.args.minutes * 60.0
            next_sample = self.t0 + self.args.interval
            while True:
                now = time.monotonic()
                if now >= end:
                    self.stop_reason = "done"
                    break
                if not spin_until(lambda: time.monotonic() >= min(next_sample, end), end - now + 1.0):
                    break
                if time.monotonic() >= next_sample:
                    row = self.sample()
                    ledger.prune()
                    next_sample += self.args.interval
                    print(f"soak: t={row['t_s'] / 60:5.1f} min rss {row['node_rss_mb'] or float('nan'):7.1f} MB "
                          f"fps {_num(row['diag_fps']):5.1f} share true {row['window_share_true']:.3f} "
                          f"p50 {row['window_latency_ms_p50']:.1f} ms", file=sys.stderr)
        finally:
            try:
                # A last sample while the camera still plays, then the publisher, a moment for
                # the last results, and the node.
                recent = self.samples and time.monotonic() - self.samples[-1]["_mono"] < 1.0
                if self.t0 is not None and self.node_proc is not None and self.node_proc.poll() is None and not recent:
                    self.sample()
                if self.pub_proc is not None:
                    self.stop("video_publisher", self.pub_proc)
                if self.t0 is not None:
                    end_spin = time.monotonic() + 1.5
                    while time.monotonic() < end_spin:
                        executor.spin_once(timeout_sec=0.05)
                if self.node_proc is not None:
                    self.stop("tracker_node", self.node_proc)
            finally:
                node.destroy_node()
                rclpy.try_shutdown(context=context)
                for log in ("node_log", "pub_log"):
                    if hasattr(self, log):
                        getattr(self, log).close()

    def finish(self) -> dict:
        """summary.json and the plot from whatever was collected (also after Ctrl-C)."""
        if not self.stop_reason:
            self.stop_reason = "interrupted"
        ledger = self.ledger
        rows = [r for r in self.samples if r.get("node_rss_mb") is not None]
        t = [r["t_s"] for r in rows]
        rss = [r["node_rss_mb"] for r in rows]
        half = [i for i, ti in enumerate(t) if ti >= (t[-1] / 2 if t else 0)]
        lat = percentiles(ledger.latencies_ms)
        frames = ledger.frames_after_init()
        running = [r for r in rows if r["t_s"] > 0]  # t = 0 is the init: the node's fps window is still empty
        node_fps = [r["diag_fps"] for r in running if isinstance(r.get("diag_fps"), (int, float))]
        cam_fps = [r["diag_camera_fps"] for r in running if isinstance(r.get("diag_camera_fps"), (int, float))]
        cpu = [r["node_cpu_pct"] for r in rows if isinstance(r.get("node_cpu_pct"), float)
               and math.isfinite(r["node_cpu_pct"])]
        diag = self.diagnostics
        summary = {
            "tracker": self.args.tracker,
            "sequence": self.args.sequence,
            "sequence_frames": ledger.length,
            "rate_hz": self.args.rate,
            "set": self.args.set,
            "minutes_requested": self.args.minutes,
            "minutes_run": (t[-1] / 60.0) if t else 0.0,
            "stop_reason": self.stop_reason,
            "exit_codes": self.exit_codes,
            "domain_id": self.domain,
            "init_seconds": self.init_seconds,
            **self.ready,
            # Judged results (frames after the init copy).
            "frames_published": frames,
            "results": ledger.results,
            "share_with_result": ledger.results / frames if frames else float("nan"),
            "frames_without_result": max(0, frames - ledger.results),
            "share_true": ledger.true / ledger.results if ledger.results else float("nan"),
            "share_true_time_weighted": (ledger.true_seconds / ledger.held_seconds
                                         if ledger.held_seconds > 0 else float("nan")),
            "outcomes": ledger.outcomes,
            "states": ledger.states,
            "mean_iou_present": float(np.mean(ledger.ious)) if ledger.ious else float("nan"),
            "success_iou_0_5": float(np.mean(np.asarray(ledger.ious) >= IOU_TRUE)) if ledger.ious else float("nan"),
            "latency_ms": lat,  # camera_info arrival (the publisher's stamp goes out) -> result arrival
            "latency_samples": len(ledger.latencies_ms),
            # The node's own account (held copies included) and an estimate of transport losses.
            "node_frames_received": diag.get("frames_received"),
            "node_frames_processed": diag.get("frames_processed"),
            "node_frames_dropped": diag.get("frames_dropped"),
            "node_images_rejected": diag.get("images_rejected"),
            "camera_infos_seen": ledger.infos_seen,
            "node_fps_mean": float(np.mean(node_fps)) if node_fps else float("nan"),
            "node_fps_min": float(np.min(node_fps)) if node_fps else float("nan"),
            "camera_fps_mean": float(np.mean(cam_fps)) if cam_fps else float("nan"),
            "node_cpu_pct_mean": float(np.mean(cpu)) if cpu else float("nan"),
            "frame_buffer_bytes_last": diag.get("frame_buffer_bytes"),
            "rss_mb": {
                "start": rss[0] if rss else float("nan"),
                "end": rss[-1] if rss else float("nan"),
                "max": max(rss) if rss else float("nan"),
                "hwm_end": rows[-1].get("node_hwm_mb") if rows else float("nan"),
                "slope_mb_per_h": slope_per_hour(t, rss),
                "slope_mb_per_h_second_half": slope_per_hour([t[i] for i in half], [rss[i] for i in half]),
            },
            "publisher_rss_mb": {
                "start": rows[0].get("publisher_rss_mb") if rows else None,
                "end": next((r["publisher_rss_mb"] for r in reversed(rows) if r.get("publisher_rss_mb")), None),
            },
            "samples": len(self.samples),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        summary["plot"] = self.plot(rows)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def plot(self, rows: list[dict]) -> str:
        """soak.png: RSS, fps and the window's share true against time (skipped without matplotlib)."""
        if len(rows) < 2:
            return "skipped: fewer than two samples"
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return "skipped: matplotlib is not installed"
        minutes = [r["t_s"] / 60.0 for r in rows]

        def series(key: str) -> list[float]:
            return [float(r[key]) if isinstance(r.get(key), (int, float)) else float("nan") for r in rows]

        fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
        axes[0].plot(minutes, series("node_rss_mb"), label="RSS")
        axes[0].plot(minutes, series("node_hwm_mb"), "--", label="VmHWM")
        axes[0].set_ylabel("tracker_node MB")
        axes[0].legend()
        axes[1].plot(minutes, series("diag_fps"), label="node fps")
        axes[1].plot(minutes, series("diag_camera_fps"), label="camera fps")
        axes[1].set_ylabel("fps (node's 2 s window)")
        axes[1].legend()
        axes[2].plot(minutes, series("window_share_true"))
        axes[2].set_ylim(0, 1.05)
        axes[2].set_ylabel("share true (window)")
        axes[2].set_xlabel("minutes since init")
        fig.suptitle(f"soak: {self.args.tracker} on {Path(self.args.sequence).name} at {self.args.rate:g} Hz")
        fig.tight_layout()
        fig.savefig(self.out / "soak.png", dpi=100)
        plt.close(fig)
        return str(self.out / "soak.png")


def report(summary: dict) -> str:
    rss, lat = summary["rss_mb"], summary["latency_ms"]
    return (
        f"soak: {summary['tracker']} {summary['minutes_run']:.1f} of {summary['minutes_requested']:g} min "
        f"({summary['stop_reason']}): {summary['frames_published']} frames, "
        f"{summary['share_with_result']:.1%} with a result, state true {summary['share_true']:.1%} "
        f"(time-weighted {summary['share_true_time_weighted']:.1%}); node fps {summary['node_fps_mean']:.1f} "
        f"(camera {summary['camera_fps_mean']:.1f}), dropped by node {summary['node_frames_dropped']}; "
        f"latency p50 {lat['p50']:.1f} / p95 {lat['p95']:.1f} / max {lat['max']:.1f} ms; "
        f"RSS {rss['start']:.1f} -> {rss['end']:.1f} MB (max {rss['max']:.1f}, slope {rss['slope_mb_per_h']:+.1f} MB/h); "
        f"CPU {summary['node_cpu_pct_mean']:.0f} %"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        soak = Soak(args)
    except (ValueError, KeyError, FileNotFoundError) as error:  # KeyError: unknown tracker
        print(f"soak: {str(error).strip(chr(39))}", file=sys.stderr)
        return 1
    summary = soak.run()
    print(report(summary))
    print(f"soak: wrote {soak.out}/samples.jsonl, {soak.out}/summary.json ({summary['plot']})")
    return 0 if summary["stop_reason"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
