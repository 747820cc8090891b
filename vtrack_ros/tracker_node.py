"""tracker_node: camera images in, tracked boxes with confidence out.

ROS plumbing only; the tracking logic is vtrack_core.session.MultiTargetTracker. Topics,
services and parameters are documented in docs/nodes.md ("tracker_node").

Threads: the image callback checks an image's size and stamp, stores it in the frame
buffer and as the newest message (latest frame wins; a frame replaced before it was tracked
counts as dropped) and wakes a worker thread that decodes, tracks and publishes. Services
run in their own callback group on a multi-threaded executor, so they answer while a frame
is being tracked; an init_target request becomes a job the worker works on between live
frames (initialise, then catch up one buffered frame at a time), and its service thread
answers when the job is done. Timers publish /diagnostics and, when no usable image came
for camera_timeout, the targets as LOST (stale).

Lifecycle (lifecycle:=true): the same node as a managed node. The parameters, publishers
(lifecycle publishers, silent until activated), services and worker exist from the start;
configure builds the targets' session and the frame buffer and warms up the tracker,
activate subscribes to the images and opens the publishers and services, deactivate undoes
that (the models stay), cleanup frees the targets, the spare tracker and the buffers.
Without it the node configures and activates itself at start-up, as it always did.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, DurabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vtrack_core import Box, TrackState, available_trackers, tracker_class, tracker_config
from vtrack_core.config import ConfigError, load_yaml_overrides
from vtrack_core.device import resolve_device
from vtrack_core.session import RESOLUTION_POLICIES, MultiTargetTracker, StampedRing, TargetError
from vtrack_core.tracker import InvalidInputError, check_init_box
from vtrack_core.video import draw_track
from vtrack_ros.image_conversion import (
    UnsupportedImageError,
    bgr_to_image_fields,
    check_pixels,
    decode_compressed,
    declared_size,
    image_to_bgr,
)
from vtrack_ros.msg import TrackedObject, TrackedObjectArray
from vtrack_ros.srv import InitTarget, StopTarget

# Parameters: name -> (default, description). Defaults mirror config/tracker.yaml.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "tracker": ("siamfc", "tracker for new targets (registry name); changeable at run time"),
    "device": ("auto", "auto | cpu | cuda | cuda:N for deep trackers; applies to targets started after a change"),
    "half": (False, "fp16 inference on CUDA for deep trackers that support it"),
    "weights": ("", "weights file for deep trackers; empty: the tracker's packaged default"),
    "tracker_config_file": ("", "YAML file with per-tracker settings (tracker name -> {field: value})"),
    "image_transport": ("raw", "raw: subscribe `image` (sensor_msgs/Image); compressed: `image/compressed`"),
    "qos_reliability": ("best_effort", "best_effort (sensor-data QoS) or reliable"),
    "confidence_threshold": (-1.0, "below it a frame is UNCERTAIN; negative: each tracker's own default"),
    "lost_after_frames": (5, "consecutive frames below the threshold before a target is LOST"),
    "recover_after_frames": (3, "consecutive frames at or above the threshold before a LOST target is TRACKING again"),
    "max_targets": (8, "targets tracked at once; more init requests are refused"),
    "frame_buffer_size": (30, "recent frames kept so init_target can start on an older stamp"),
    "publish_debug_image": (False, "publish ~/debug_image with the boxes drawn"),
    "debug_image_max_rate": (5.0, "Hz cap on ~/debug_image"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "stamp_source": ("auto", "stamp of an image: header | receive (node clock on arrival) | auto (header unless zero)"),
    "camera_timeout": (1.0, "seconds without a usable image before /diagnostics warns and the targets are published LOST"),
    "camera_error_timeout": (5.0, "seconds without a usable image before /diagnostics reports an ERROR"),
    "on_resolution_change": ("rescale", "rescale: scale the boxes and restart the trackers; lose: mark the targets LOST"),
    "on_damaged_image": ("skip", "skip: refuse JPEGs the decoder reports damaged; track: use them anyway (counted)"),
    "max_image_pixels": (4096 * 3072, "images with more pixels (width * height, read before decoding) are refused"),
    "frame_buffer_bytes": (256 * 1024 * 1024, "bytes of image messages the frame buffer may hold (besides the newest)"),
    "min_box_size": (8.0, "smallest width and height (pixels, inside the image) init_target accepts"),
    "warm_up": (True, "at start-up build the tracker, run it once on a synthetic image and keep a fresh one ready"),
    "lifecycle": (False, "a managed node: unconfigured at start, driven through ~/change_state "
                         "(configure: warm-up; activate: subscribe and publish)"),
}
# Settings fixed at start-up (subscriptions and buffers are built from them).
READ_ONLY = {"image_transport", "qos_reliability", "frame_buffer_size", "frame_buffer_bytes", "warm_up", "lifecycle"}
# QoS overrides as ROS 2 nodes offer them (QoSOverridingOptions.with_default_policies()):
# read-only parameters qos_overrides.<resolved topic>.<entity>.<policy>, for these entities.
# A value given there wins over the node's own choice (qos_reliability for the images).
QOS_OVERRIDE_POLICIES = ("history", "depth", "reliability")
QOS_OVERRIDE_ENTITIES = {"image": "subscription", "~/tracked_objects": "publisher"}
QOS_VALUES = {
    "history": ("keep_last", "keep_all", "system_default"),
    "reliability": ("reliable", "best_effort", "system_default", "best_available"),
}
IMAGE_QUEUE_DEPTH = 5  # see image_qos()
RESULTS_QUEUE_DEPTH = 10
# Tracker settings passed as overrides when the tracker's config has such a field.
TRACKER_OVERRIDES = ("device", "half", "weights", "confidence_threshold", "lost_after_frames", "recover_after_frames")
STAMP_SOURCES = ("header", "receive", "auto")
DAMAGED_IMAGE_POLICIES = ("skip", "track")
FPS_WINDOW = 2.0  # seconds: fps in /diagnostics is the frames of the last FPS_WINDOW s
MAX_CATCH_UP_FRAMES = 10  # an init on an older image catches up through at most this many newer ones
CATCH_UP_EVERY = 0.25  # seconds: the longest a catch-up waits for the worker when frames always wait
MAX_INITS_IN_PROGRESS = 2  # init_target requests worked on at once; more are answered "busy" at once
MAX_NAME_LENGTH = 64  # target ids and tracker names in requests
# Requests queue in DDS until an executor thread takes them: with the default depth of 10 a
# burst of requests overwrote all but 10, and their callers waited in vain.
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)


def image_qos(reliability: str) -> QoSProfile:
    """The image subscription's QoS before any qos_overrides: a short DDS queue, not depth 1:
    with depth 1 DDS itself replaces unread frames and the node never learns they existed.
    The callback only stores the message, so it drains this queue at once; the latest-frame
    slot does the dropping, and counts it. (Frames lost before they reach the node stay
    invisible to it.)"""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=IMAGE_QUEUE_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def results_qos() -> QoSProfile:
    """~/tracked_objects before any qos_overrides: reliable, the last 10 results."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RESULTS_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def qos_parameter_value(profile: QoSProfile, policy: str) -> str | int:
    """A policy of a profile as its qos_overrides parameter writes it (keep_last, 5, reliable)."""
    value = getattr(profile, policy)
    return value if isinstance(value, int) and not hasattr(value, "name") else value.name.lower()


def check_qos_override(name: str, policy: str, value: Any) -> None:
    """Raise ValueError naming the parameter for a value rclpy could not apply (it raised a
    bare RuntimeError without the parameter's name) or the middleware would refuse."""
    if policy == "depth":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    elif value not in QOS_VALUES[policy]:
        raise ValueError(f"{name} must be one of {', '.join(QOS_VALUES[policy])}, got {value!r}")


def synthetic_scene() -> tuple[np.ndarray, Box, np.ndarray]:
    """A 640x480 textured image with a distinct target, its box, and the next frame with the
    target moved a little: what the warm-up runs a tracker on (no camera needed)."""
    import cv2

    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    target = np.kron((np.indices((8, 8)).sum(axis=0) % 2) * 200 + 30, np.ones((10, 10))).astype(np.uint8)

    def scene(x: int, y: int) -> np.ndarray:
        image = background.copy()
        image[y:y + 80, x:x + 80] = target[:, :, None]
        return image

    return scene(280, 200), Box(280.0, 200.0, 80.0, 80.0), scene(284, 203)


def _evenly(items: list, count: int) -> list:
    """At most `count` of the items, evenly spaced, the last one always among them."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[len(items) - 1 - int(k * step)] for k in reversed(range(count))]


def _short(text: str, limit: int = 32) -> str:
    """A request's string for a message or log line: at most `limit` characters of it."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class _InitJob:
    """An init_target request handed to the worker: it initialises the tracker and catches
    it up one frame at a time between live frames, then adds the target."""

    def __init__(self, name: str, tracker, target_id: str, box: Box, first: tuple[int, np.ndarray],
                 newer: list["_Frame"]) -> None:
        self.name, self.tracker, self.target_id, self.box = name, tracker, target_id, box
        self.first = first
        self.newer = deque(newer)
        self.starting = None
        self.skipped = 0
        self.build_seconds = 0.0  # building the tracker (service thread)
        self.init_seconds = 0.0  # its init on the first image (worker)
        self.cancelled = False
        self.report = None
        self.error: str | None = None
        self.done = threading.Event()

LOG_EVERY = 5.0  # seconds: a recurring problem of one kind is logged at most this often


@dataclass
class _Frame:
    """An image as received: the stamp the node uses for it (header or receive time, see
    stamp_source), the message, and the clock epoch it belongs to (bumped when the stamps
    step back)."""

    stamp_ns: int
    message: Any
    epoch: int
    received: float  # time.monotonic() on arrival
    damage_counted: bool = False  # its damage is counted once, however often it is decoded


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _header(source: Header, stamp_ns: int) -> Header:
    """The image's header with the stamp the node used for it (the receive time for an
    image whose stamp was zero)."""
    return Header(frame_id=source.frame_id, stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000))


def _tracked_object(report, state: int | None = None, confidence: float | None = None) -> TrackedObject:
    result = report.result
    return TrackedObject(
        target_id=report.target_id,
        tracker=report.tracker_name,
        x=result.box.x, y=result.box.y, width=result.box.w, height=result.box.h,
        confidence=float(result.confidence if confidence is None else confidence),
        state=int(result.state if state is None else state),
        processing_time=_duration(result.seconds),
    )


def _duration(seconds: float) -> Duration:
    nanoseconds = max(0, int(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class TrackerNode(LifecycleNodeMixin, Node):
    """The tracker node; a managed (lifecycle) node when its `lifecycle` parameter says so
    (the lifecycle mixin is then initialised: the state machine, ~/change_state and the
    other lifecycle services, ~/transition_event)."""

    def __init__(self) -> None:
        Node.__init__(self, "tracker_node")
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=name in READ_ONLY))
        self._check_settings({name: self.get_parameter(name).value for name in PARAMETERS})
        self.managed = bool(self.param("lifecycle"))
        if self.managed:
            LifecycleNodeMixin.__init__(self)

        # Built by configure, freed by cleanup (a plain node configures itself at once).
        self.targets: MultiTargetTracker | None = None
        self.frames: StampedRing[_Frame] | None = None
        # Active: images subscribed, frames tracked, results published, services served.
        self._active = False
        self._subscription = None
        self.finished = threading.Event()  # a managed node was shut down: main() ends the process
        self._finalized = False

        # Latest-frame-wins hand-over between the image callback and the worker.
        self._pending: Any = None
        self._pending_cv = threading.Condition()
        self._work_lock = threading.Lock()  # held by the worker while it tracks a frame or takes a job step
        self._running = True
        self.stats = {"received": 0, "processed": 0, "dropped": 0, "bad_images": 0,
                      "repeated_stamps": 0, "stamp_steps_back": 0, "zero_stamps": 0,
                      "damaged": 0, "oversized": 0, "size_changes": 0}
        # Camera health: when the last image arrived, and the arrival time of the last frame
        # tracked. A frame waiting for the worker or in its hands (_holding) counts as usable
        # now, unless the last frame the worker decoded could not be used (a stream of
        # damaged images stays stale). Targets are stale once no usable image came for
        # camera_timeout s. Silence counts from activation at most.
        self._started_at = time.monotonic()
        self._last_image_at: float | None = None
        self._last_usable_at: float | None = None
        self._holding = False
        self._last_frame_usable = True
        self._received_at: deque[float] = deque(maxlen=1000)
        self._publish_lock = threading.Lock()  # results and stale re-publications stay in order
        # init_target: at most MAX_INITS_IN_PROGRESS at once; their jobs run on the worker.
        self._init_slots = threading.Semaphore(MAX_INITS_IN_PROGRESS)
        # A tracker built (weights loaded) by the warm-up for the next init: (name, settings, tracker).
        self._spare: tuple[str, tuple, Any] | None = None
        self._spare_lock = threading.Lock()
        self.warm_up_seconds: float | None = None
        self._jobs: deque[_InitJob] = deque()
        self.stats["init_requests"] = 0
        self.stats["inits_busy"] = 0
        self._forget_images()
        self._last_log: dict[str, float] = {}
        self._latencies: deque[float] = deque(maxlen=300)
        self._process_times: deque[float] = deque(maxlen=300)
        self._processed_at: deque[float] = deque(maxlen=1000)
        self._last_bad_image_log: dict[str, float] = {}
        self._last_debug = 0.0

        # Like image_transport: remapping the base topic `image` moves `image/compressed` too.
        self.image_topic = self.resolve_topic_name("image")
        if self.param("image_transport") == "compressed":
            self.image_topic += "/compressed"
        self.results_topic = self.resolve_topic_name("~/tracked_objects")
        # Declared now in either mode, so that a bad value stops the node at start-up with
        # its name (a managed node subscribes only when activated).
        self._declare_qos_overrides("subscription", self.image_topic, image_qos(self.param("qos_reliability")))
        self._declare_qos_overrides("publisher", self.results_topic, results_qos())
        create = self.create_lifecycle_publisher if self.managed else self.create_publisher
        self.publisher = create(TrackedObjectArray, "~/tracked_objects", results_qos(),
                                qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.debug_publisher = create(Image, "~/debug_image", 1)
        self.diagnostics_publisher = create(DiagnosticArray, "/diagnostics", 10)
        self._image_group = MutuallyExclusiveCallbackGroup()
        # After the declarations above: they are not changes to check or log.
        self.add_on_set_parameters_callback(self._on_set_parameters)

        if not self.managed:
            self._configure()
            self._activate()
        service_group = ReentrantCallbackGroup()
        self.create_service(InitTarget, "~/init_target", self._on_init_target, qos_profile=SERVICE_QOS,
                            callback_group=service_group)
        self.create_service(StopTarget, "~/stop_target", self._on_stop_target, qos_profile=SERVICE_QOS,
                            callback_group=service_group)
        self._diagnostics_timer = self.create_timer(
            self.param("diagnostics_period"), self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._watchdog = self.create_timer(
            self._watchdog_period(self.param("camera_timeout")), self._check_stale,
            callback_group=MutuallyExclusiveCallbackGroup())

        self._worker = threading.Thread(target=self._work, name="tracking", daemon=True)
        self._worker.start()
        if self.managed:
            self.get_logger().info(
                f"managed node (lifecycle:=true), unconfigured: configure (warm-up of '{self.param('tracker')}') and "
                f"activate it through {self.get_fully_qualified_name()}/change_state; it will track on "
                f"'{self.image_topic}'")
        else:
            self.get_logger().info(
                f"tracking on '{self.image_topic}' "
                f"with '{self.param('tracker')}' (available: {', '.join(available_trackers())}); "
                f"call {self.get_fully_qualified_name()}/init_target to start"
            )

    def _forget_images(self) -> None:
        """The image bookkeeping of a fresh start (at start-up and after cleanup): a stream
        that starts again after a cleanup is not a step back nor a size change."""
        self._last_header: Header | None = None
        self._last_size: tuple[int, int] | None = None
        self._last_live: tuple[int, np.ndarray] | None = None  # the last frame tracked live
        # Stamp bookkeeping of the image callback (under _pending_cv): the last stamp used,
        # the clock epoch (bumped on a step back) and the epoch the worker has applied.
        self._last_stamp = -1
        self._epoch = 0
        self._worker_epoch = 0

    def _declare_qos_overrides(self, entity: str, topic: str, profile: QoSProfile) -> None:
        """rclpy's qos_overrides parameters of one entity (the names and read-only
        descriptors QoSOverridingOptions.with_default_policies() declares), with the node's
        own QoS as defaults, checked: create_subscription / create_publisher find them
        declared and apply them."""
        for policy in QOS_OVERRIDE_POLICIES:
            name = f"qos_overrides.{topic}.{entity}.{policy}"
            descriptor = ParameterDescriptor(description=f"{policy} for {entity} `{topic}` with id `None`",
                                             read_only=True)
            value = self.declare_parameter(name, qos_parameter_value(profile, policy), descriptor).value
            check_qos_override(name, policy, value)

    def _qos_text(self, entity: str, topic: str) -> str:
        values = {policy: self.param(f"qos_overrides.{topic}.{entity}.{policy}") for policy in QOS_OVERRIDE_POLICIES}
        return f"{values['reliability']}, {values['history']}, depth {values['depth']}"

    # --- lifecycle --------------------------------------------------------------------
    def _configure(self) -> None:
        """Build what tracking needs: the targets' session, the frame buffer, and (warm_up)
        the tracker, run once, with a fresh one kept for the first init. Raises ValueError
        when the tracker cannot be built or run."""
        self.targets = MultiTargetTracker(
            tracker_factory=self._make_tracker,
            default_tracker=self.param("tracker"),
            max_targets=self.param("max_targets"),
            on_resolution_change=self.param("on_resolution_change"),
        )
        self.frames = StampedRing(self.param("frame_buffer_size"), self.param("frame_buffer_bytes"))
        if self.param("warm_up"):
            self._warm_up()

    def _activate(self) -> None:
        """Subscribe to the images (QoS: qos_reliability, then the qos_overrides) and serve."""
        message_type = CompressedImage if self.param("image_transport") == "compressed" else Image
        self._subscription = self.create_subscription(
            message_type, self.image_topic, self._on_image, image_qos(self.param("qos_reliability")),
            callback_group=self._image_group, qos_overriding_options=QoSOverridingOptions.with_default_policies())
        with self._pending_cv:
            self._started_at = time.monotonic()
            self._active = True

    def _deactivate(self, reason: str) -> None:
        """Stop taking images and requests: unsubscribe, drop the frame not yet tracked,
        answer init requests still in progress, and wait (bounded) for the frame or job
        step in hand. Targets, trackers and the frame buffer stay."""
        with self._pending_cv:
            self._active = False
            if self._pending is not None:
                self.stats["dropped"] += 1
                self._pending = None
            jobs = list(self._jobs)
        for job in jobs:
            self._complete(job, error=f"the node was {reason} before the target started")
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._work_lock.acquire(timeout=10.0):
            self._work_lock.release()
        else:
            self.get_logger().warning("lifecycle: the frame in hand took over 10 s; going on without it")

    def _release(self) -> None:
        """Free what configure built: targets (their trackers and models), the spare
        tracker, the frame buffer, the last frames; CUDA's cached blocks go back too."""
        import gc

        with self._pending_cv:
            self._pending = None
            self.targets = None
            self.frames = None
            self._forget_images()
        with self._spare_lock:
            self._spare = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def _lifecycle_state(self) -> str:
        return self._state_machine.current_state[1] if self.managed else "active"

    def _not_active(self) -> str:
        """What init_target and stop_target answer while the node is not active."""
        return (f"the node is not active (lifecycle state '{self._lifecycle_state()}'): requests are served only "
                f"in the active state; configure and activate it through {self.get_fully_qualified_name()}/change_state")

    def _transition(self, step: str, work, state: LifecycleState, failure=TransitionCallbackReturn.ERROR):
        """Run one transition's work: log its outcome (rclpy turns an exception into ERROR
        silently), then let the managed publishers follow."""
        try:
            work()
        except Exception as exc:
            self.get_logger().error(f"lifecycle: {step} failed (from '{state.label}'): {type(exc).__name__}: {exc}")
            return failure
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        def work() -> None:
            try:
                self._configure()
            except Exception:
                self._release()  # FAILURE leaves it unconfigured: nothing half-built stays
                raise
        result = self._transition("configure", work, state, failure=TransitionCallbackReturn.FAILURE)
        if result == TransitionCallbackReturn.SUCCESS:
            result = super().on_configure(state)
            self.get_logger().info(f"lifecycle: configured (tracker '{self.param('tracker')}'"
                                   f"{', warmed up' if self.param('warm_up') else ''}); inactive until activated")
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # publishers first: the first frame's result goes out
        if result == TransitionCallbackReturn.SUCCESS:
            result = self._transition("activate", self._activate, state)
        if result == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info(
                f"lifecycle: activated: tracking on '{self.image_topic}' "
                f"(QoS {self._qos_text('subscription', self.image_topic)}); call "
                f"{self.get_fully_qualified_name()}/init_target to start")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition("deactivate", lambda: self._deactivate("deactivated"), state)
        if result == TransitionCallbackReturn.SUCCESS:
            result = super().on_deactivate(state)
            self.get_logger().info(f"lifecycle: deactivated: not subscribed, nothing published; "
                                   f"{len(self.targets.reports()) if self.targets else 0} target(s) and the models kept")
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition("cleanup", self._release, state)
        if result == TransitionCallbackReturn.SUCCESS:
            result = super().on_cleanup(state)
            self.get_logger().info("lifecycle: cleaned up: targets, spare tracker and frame buffer freed; unconfigured")
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any primary state: deactivate if active, free everything, and end the
        process (main() sees `finished`)."""
        def work() -> None:
            if self._active:
                self._deactivate("shut down")
                super(TrackerNode, self).on_deactivate(state)
            self._release()
        result = self._transition("shutdown", work, state)
        super().on_shutdown(state)
        self._finalized = True
        self.get_logger().info(f"lifecycle: finalized (shut down from '{state.label}'); the process ends")
        self.finished.set()
        return result

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: back to unconfigured with everything freed."""
        def work() -> None:
            if self._active:
                self._deactivate("in error")
                super(TrackerNode, self).on_deactivate(state)
            self._release()
        result = self._transition("error processing", work, state)
        self.get_logger().error(f"lifecycle: error processing after a failed transition from '{state.label}': "
                                "everything freed, unconfigured")
        return result

    def finalize(self) -> None:
        """On SIGINT / SIGTERM: a managed node not yet finalized goes through its shutdown
        transition (its transition event still goes out)."""
        if not self.managed or self._finalized:
            return
        try:
            self.trigger_shutdown()
        except Exception as exc:  # in the middle of another transition
            self.get_logger().warning(f"lifecycle: no shutdown transition from "
                                      f"'{self._lifecycle_state()}' ({exc}); shutting down anyway")

    # --- parameters -------------------------------------------------------------------
    def param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _check_settings(self, values: dict[str, Any]) -> None:
        """Raise ValueError with a reason for a setting the node cannot use."""
        if "tracker" in values:
            tracker_class(values["tracker"])  # UnknownTrackerError names the known ones
        if "device" in values:
            resolve_device(values["device"])
        if values.get("image_transport", "raw") not in ("raw", "compressed"):
            raise ValueError(f"image_transport must be raw or compressed, got {values['image_transport']!r}")
        if values.get("qos_reliability", "best_effort") not in ("best_effort", "reliable"):
            raise ValueError(f"qos_reliability must be best_effort or reliable, got {values['qos_reliability']!r}")
        for positive in ("max_targets", "frame_buffer_size", "lost_after_frames", "recover_after_frames", "max_image_pixels",
                         "frame_buffer_bytes"):
            if positive in values and int(values[positive]) < 1:
                raise ValueError(f"{positive} must be at least 1, got {values[positive]}")
        for positive in ("debug_image_max_rate", "diagnostics_period", "camera_timeout", "camera_error_timeout",
                         "min_box_size"):
            if positive in values and not (math.isfinite(float(values[positive])) and float(values[positive]) > 0):
                raise ValueError(f"{positive} must be a positive number, got {values[positive]}")
        if "confidence_threshold" in values:
            threshold = float(values["confidence_threshold"])
            if not (math.isfinite(threshold) and threshold <= 1.0):
                raise ValueError(f"confidence_threshold must be at most 1.0 (confidences are 0..1; negative: each "
                                 f"tracker's default), got {values['confidence_threshold']}")
        if values.get("stamp_source", "auto") not in STAMP_SOURCES:
            raise ValueError(f"stamp_source must be one of {', '.join(STAMP_SOURCES)}, got {values['stamp_source']!r}")
        if values.get("on_resolution_change", "rescale") not in RESOLUTION_POLICIES:
            raise ValueError(f"on_resolution_change must be one of {', '.join(RESOLUTION_POLICIES)}, "
                             f"got {values['on_resolution_change']!r}")
        if values.get("on_damaged_image", "skip") not in DAMAGED_IMAGE_POLICIES:
            raise ValueError(f"on_damaged_image must be one of {', '.join(DAMAGED_IMAGE_POLICIES)}, "
                             f"got {values['on_damaged_image']!r}")
        # A file that is not there would break every later init (the config file is read
        # for every tracker, csrt too): refuse it now.
        for path_name in ("weights", "tracker_config_file"):
            path = values.get(path_name) or ""
            if path and not os.path.isfile(path):
                raise ValueError(f"{path_name}: no such file {path!r}")
        if values.get("tracker_config_file"):
            for name in available_trackers():
                load_yaml_overrides(values["tracker_config_file"], name)  # ConfigError says what is wrong

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = {p.name: p.value for p in parameters}
        try:
            self._check_settings(values)
        except Exception as exc:
            self.get_logger().warning(f"parameter change refused: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        targets = self.targets  # None while unconfigured: configure reads the parameters
        if targets is not None and "tracker" in values:
            targets.default_tracker = values["tracker"]
        if targets is not None and "max_targets" in values:
            targets.max_targets = int(values["max_targets"])
        if targets is not None and "on_resolution_change" in values:
            targets.on_resolution_change = values["on_resolution_change"]
        if "diagnostics_period" in values:
            self._diagnostics_timer.timer_period_ns = int(float(values["diagnostics_period"]) * 1e9)
        if "camera_timeout" in values:
            self._watchdog.timer_period_ns = int(self._watchdog_period(values["camera_timeout"]) * 1e9)
        changed = ", ".join(f"{k}={v}" for k, v in values.items())
        self.get_logger().info(f"parameters changed: {changed} (tracker/device settings apply to targets started from now on)")
        return SetParametersResult(successful=True)

    def _tracker_settings(self) -> tuple:
        """The parameters a tracker is built from: a spare built with others is not used."""
        return tuple(self.param(key) for key in (*TRACKER_OVERRIDES, "tracker_config_file"))

    def _warm_up(self) -> None:
        """The cold start, done before the node offers its services: import the tracker's
        code, load its weights, run one init and one update on a synthetic image (first
        inference: torch / OpenCV DNN kernels, CUDA context, allocations), decode one JPEG,
        and keep a freshly built tracker (weights loaded, never run) for the first init_target.
        Raises (ConfigError, ValueError, ...) when the tracker cannot be built or run."""
        import cv2

        name = self.param("tracker")
        started = time.perf_counter()
        image, box, moved = synthetic_scene()
        try:
            tracker = self._make_tracker(name, use_spare=False)
            tracker.init(image, box)
            tracker.update(moved)
            tracker.update(image)
            del tracker
        except Exception as exc:  # the node cannot track with this tracker: say why, at once
            raise ValueError(f"warm-up of tracker '{name}' failed: {type(exc).__name__}: {exc}") from exc
        # max_image_pixels limits camera images; a smaller one must not refuse this synthetic one.
        limit = max(self.param("max_image_pixels"), image.shape[0] * image.shape[1])
        decode_compressed("jpeg", cv2.imencode(".jpg", image)[1].tobytes(), limit)
        image_to_bgr("bgr8", 480, 640, 640 * 3, image.tobytes(), False, limit)
        draw_track(image.copy(), box, 1.0, TrackState.TRACKING, "warm-up")
        with self._spare_lock:
            self._spare = (name, self._tracker_settings(), self._make_tracker(name, use_spare=False))
        self.warm_up_seconds = time.perf_counter() - started
        self.get_logger().info(f"warmed up '{name}' in {self.warm_up_seconds:.2f} s (one init and two updates on a "
                               "synthetic image; a fresh one is ready for the first init)")

    def _make_tracker(self, name: str, use_spare: bool = True):
        """A tracker configured from the node's parameters (those its config knows); the
        warm-up's spare when it was built for this tracker and these settings."""
        if use_spare:
            with self._spare_lock:
                spare, self._spare = self._spare, None
            if spare is not None and spare[:2] == (name, self._tracker_settings()):
                return spare[2]
        cls = tracker_class(name)
        known = set(cls.config_class.field_names())
        overrides = {}
        for key in TRACKER_OVERRIDES:
            value = self.param(key)
            if key not in known or value in ("", None) or (key == "confidence_threshold" and value < 0):
                continue
            overrides[key] = value
        config_file = self.param("tracker_config_file") or None
        return cls(tracker_config(name, config_file, **overrides))

    # --- images -----------------------------------------------------------------------
    def _log_every(self, kind: str, level: str, text: str) -> None:
        """Log `text` unless a message of this kind was logged in the last LOG_EVERY s."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= LOG_EVERY:
            self._last_log[kind] = now
            # One call site per severity: rclpy refuses a site that changes its severity.
            logger = self.get_logger()
            if level == "error":
                logger.error(text)
            elif level == "warning":
                logger.warning(text)
            else:
                logger.info(text)

    def _frame_stamp(self, message) -> int | None:
        """The stamp the node uses for this image (None: refuse the image). Called under
        _pending_cv with the image callback's bookkeeping."""
        header_ns = _stamp_ns(message.header.stamp)
        source = self.param("stamp_source")
        if source == "header" or (source == "auto" and header_ns != 0):
            if header_ns == 0:
                self.stats["zero_stamps"] += 1
                self._log_every("zero_stamp", "error",
                                f"image refused: header.stamp is zero and stamp_source is 'header' "
                                f"({self.stats['zero_stamps']} so far); use stamp_source:=auto or receive")
                return None
            return header_ns
        if header_ns == 0:
            self.stats["zero_stamps"] += 1
            if self.stats["zero_stamps"] == 1:
                self.get_logger().warning(
                    "image header.stamp is zero (the driver does not set it): using the receive time as its "
                    "stamp (stamp_source auto); published results carry that stamp")
        stamp = self.get_clock().now().nanoseconds
        if stamp == self._last_stamp:  # two images within one clock tick: keep stamps unique
            stamp += 1
        return stamp

    def _check_size(self, message) -> None:
        """Refuse an image with more than max_image_pixels before anything is decoded or
        buffered: the size a compressed image declares in its header, a raw one's fields."""
        limit = self.param("max_image_pixels")
        if isinstance(message, CompressedImage):
            width, height = declared_size(message.data)
            check_pixels(width, height, limit, "compressed image")
        else:
            check_pixels(int(message.width), int(message.height), limit)

    def _on_image(self, message) -> None:
        received = time.monotonic()
        try:
            self._check_size(message)
            error = None
        except UnsupportedImageError as exc:
            error = exc
        with self._pending_cv:
            if not self._active:  # in flight while the node was deactivated
                return
            self.stats["received"] += 1
            self._last_image_at = received
            self._received_at.append(received)
            if error is not None:
                if "max_image_pixels" in str(error):
                    self.stats["oversized"] += 1
                self._log_bad_image(error)
                return
            stamp = self._frame_stamp(message)
            if stamp is None:
                self.stats["bad_images"] += 1
                return
            if stamp == self._last_stamp:
                # A stamp names one image (init_target finds its image by it): a second image
                # under the same stamp is refused, counted and logged, never tracked.
                self.stats["repeated_stamps"] += 1
                self.stats["bad_images"] += 1
                self._log_every("repeated_stamp", "warning",
                                f"image refused: its stamp {stamp / 1e9:.9f} repeats the previous image's "
                                f"({self.stats['repeated_stamps']} so far); each image needs its own stamp")
                return
            if stamp < self._last_stamp:
                # Bag loop, clock step, simulator reset: a new timeline. The buffered frames
                # belong to the old one, and the targets must not wait for the new clock to
                # pass their last stamp.
                self.stats["stamp_steps_back"] += 1
                self._epoch += 1
                self.frames.clear()
                self._log_every("step_back", "warning",
                                f"image stamps stepped back from {self._last_stamp / 1e9:.9f} to {stamp / 1e9:.9f} "
                                f"(bag loop, clock step or simulator reset; {self.stats['stamp_steps_back']} so far): "
                                "frame buffer cleared, targets go on with the new frames")
            self._last_stamp = stamp
            frame = _Frame(stamp, message, self._epoch, received)
            self.frames.append(stamp, frame, len(message.data))
            if self._pending is not None:
                self.stats["dropped"] += 1
            self._pending = frame
            self._pending_cv.notify()

    def _decode(self, frame: _Frame) -> np.ndarray:
        """The image as BGR; raises UnsupportedImageError for one the node cannot use (a
        damaged JPEG too, under on_damaged_image:=skip)."""
        message = frame.message
        limit = self.param("max_image_pixels")
        if isinstance(message, CompressedImage):
            decoded = decode_compressed(message.format, message.data, limit)
            if decoded.damage:
                with self._pending_cv:
                    if not frame.damage_counted:
                        frame.damage_counted = True
                        self.stats["damaged"] += 1
                report = "; ".join(decoded.damage[:2])
                if self.param("on_damaged_image") == "skip":
                    raise UnsupportedImageError(f"damaged JPEG (decoder: {report})")
                self._log_every("damaged_tracked", "warning",
                                f"damaged JPEG tracked anyway (on_damaged_image:=track; decoder: {report}; "
                                f"{self.stats['damaged']} so far)")
            return decoded.image
        return image_to_bgr(message.encoding, message.height, message.width, message.step, message.data,
                            bool(message.is_bigendian), limit)

    def _log_bad_image(self, error: Exception) -> None:
        """Each kind of problem is logged at most every 5 s: a camera with the wrong encoding
        must not flood the log, but a second, different problem must still show."""
        self.stats["bad_images"] += 1
        kind = str(error)[:24]
        now = time.monotonic()
        if now - self._last_bad_image_log.get(kind, -1e9) > LOG_EVERY:
            self._last_bad_image_log[kind] = now
            self.get_logger().error(f"image skipped: {error} ({self.stats['bad_images']} images rejected so far)")

    def _work(self) -> None:
        """Live frames first: after each one, init jobs take steps (initialise, or catch up
        one frame) as long as no new frame waits. So a catch-up delays a live frame by one
        tracker update at most. When the camera is faster than the tracker (a frame always
        waits), a step still runs once CATCH_UP_EVERY s have passed since the last one, so a
        catch-up finishes anyway."""
        last_step = time.monotonic()
        while self._running:
            with self._pending_cv:
                while self._pending is None and not self._jobs and self._running:
                    self._pending_cv.wait(timeout=0.5)
                frame, self._pending = self._pending, None
                self._holding = frame is not None
            if frame is not None:
                try:
                    with self._work_lock:
                        if self._active:  # else deactivated meanwhile: the frame counts as dropped
                            self._track(frame)
                except Exception as exc:  # the worker must survive anything a frame does
                    self._log_every("unexpected", "error",
                                    f"frame skipped after an unexpected error: {type(exc).__name__}: {exc}")
                finally:
                    self._holding = False
            while self._running:
                with self._pending_cv:
                    if not self._jobs:
                        last_step = time.monotonic()
                        break
                    if self._pending is not None and time.monotonic() - last_step < CATCH_UP_EVERY:
                        break
                    job = self._jobs[0]
                with self._work_lock:
                    if not job.done.is_set():  # else answered meanwhile (stopped, deactivated)
                        self._step(job)
                last_step = time.monotonic()
        with self._pending_cv:
            jobs, self._jobs = list(self._jobs), deque()
        for job in jobs:
            self._complete(job, error="the node is shutting down")

    def _complete(self, job: _InitJob, report=None, error: str | None = None) -> None:
        """Answer a job once (the first answer wins: a stop may come while it works)."""
        with self._pending_cv:
            if job in self._jobs:
                self._jobs.remove(job)
            if job.done.is_set():
                return
            job.report, job.error = report, error
            job.done.set()

    def _step(self, job: _InitJob) -> None:
        """One piece of an init job's work on the worker thread."""
        try:
            if job.starting is None:
                stamp, image = job.first
                began = time.perf_counter()
                job.starting = self.targets.begin(job.name, job.tracker, job.target_id, stamp, image, job.box)
                job.init_seconds = time.perf_counter() - began
                return
            if job.newer:
                frame = job.newer.popleft()
                try:
                    image = self._decode(frame)
                except UnsupportedImageError:
                    job.skipped += 1
                    return
                self.targets.catch_up(job.starting, frame.stamp_ns, image)
                return
            live = self._last_live  # frames tracked live meanwhile: jump to the newest one
            if live is not None and live[0] > job.starting.last_stamp:
                self.targets.catch_up(job.starting, *live)
            with self._pending_cv:
                if job.cancelled:
                    return
                report = self.targets.finish(job.starting)
            self._complete(job, report)
        except Exception as exc:  # a refusal (box, catch-up) or a broken tracker: answered
            self._complete(job, error=str(exc) if isinstance(exc, (ValueError, TargetError)) else
                           f"{type(exc).__name__}: {exc}")

    def _track(self, frame: _Frame) -> None:
        started = time.perf_counter()
        try:
            image = self._decode(frame)
        except UnsupportedImageError as exc:
            with self._pending_cv:
                self._last_frame_usable = False
                self._log_bad_image(exc)
            return
        self._last_frame_usable = True
        self._track_image(frame, image, started)

    def _track_image(self, frame: _Frame, image: np.ndarray, started: float) -> None:
        message = frame.message
        size = (int(image.shape[1]), int(image.shape[0]))
        if self._last_size is not None and size != self._last_size:
            self.stats["size_changes"] += 1
            self._log_every("size_change", "warning",
                            f"image size changed from {self._last_size[0]}x{self._last_size[1]} to {size[0]}x{size[1]} "
                            f"({self.stats['size_changes']} changes so far; on_resolution_change: "
                            f"{self.param('on_resolution_change')})")
        self._last_size = size
        if frame.epoch != self._worker_epoch:
            self._worker_epoch = frame.epoch
            self.targets.restart_clock()
        reports = self.targets.update(frame.stamp_ns, image)
        self._last_live = (frame.stamp_ns, image)
        header = _header(message.header, frame.stamp_ns)
        output = TrackedObjectArray(header=header)
        for report in reports:
            if report.error:
                self.get_logger().error(f"target {report.target_id} ({report.tracker_name}) is LOST: tracker failed: {report.error}")
            if report.note:
                level = "error" if report.note.startswith("LOST") else "info"
                self._log_every(f"note:{report.target_id}:{report.note[:4]}", level, f"target {report.target_id}: {report.note}")
            output.objects.append(_tracked_object(report))
        with self._publish_lock:
            self.publisher.publish(output)
            self._last_header = header
            self._last_usable_at = frame.received
        self.stats["processed"] += 1
        done = time.perf_counter()
        self._process_times.append(done - started)
        self._processed_at.append(time.monotonic())
        self._latencies.append(self.get_clock().now().nanoseconds / 1e9 - frame.stamp_ns / 1e9)
        if self.param("publish_debug_image"):
            self._publish_debug(header, image, reports)

    def _publish_debug(self, header, image: np.ndarray, reports) -> None:
        now = time.monotonic()
        if now - self._last_debug < 1.0 / self.param("debug_image_max_rate"):
            return
        self._last_debug = now
        canvas = image.copy()
        for report in reports:
            draw_track(canvas, report.result.box, report.result.confidence, report.result.state,
                       f"{report.target_id} {report.tracker_name}")
        self.debug_publisher.publish(Image(header=header, **bgr_to_image_fields(canvas)))

    # --- services ---------------------------------------------------------------------
    def _check_name(self, what: str, text: str) -> None:
        if len(text) > MAX_NAME_LENGTH or not text.isprintable():
            raise TargetError(f"{what} must be at most {MAX_NAME_LENGTH} printable characters, got {_short(text)}")

    def _on_init_target(self, request: InitTarget.Request, response: InitTarget.Response) -> InitTarget.Response:
        """Answered at once when refused or busy; else when the worker has started the
        target (initialised and caught up between live frames)."""
        with self._pending_cv:
            self.stats["init_requests"] += 1
        response.success = False
        response.target_id = request.target_id if len(request.target_id) <= MAX_NAME_LENGTH else ""
        try:
            self._check_name("target_id", request.target_id)
            self._check_name("tracker", request.tracker)
        except TargetError as exc:
            response.message = str(exc)
            self._log_every("init_refused_name", "warning", f"init_target refused: {exc}")
            return response
        if not self._running:
            response.message = "the node is shutting down"
            return response
        if not self._active:
            response.message = self._not_active()
            self._log_every("init_not_active", "warning", f"init_target refused: {response.message}")
            return response
        if not self._init_slots.acquire(blocking=False):
            with self._pending_cv:
                self.stats["inits_busy"] += 1
            response.message = (f"busy: {MAX_INITS_IN_PROGRESS} init_target requests are in progress; "
                                "try again shortly")
            self._log_every("init_busy", "warning",
                            f"init_target refused: busy ({self.stats['inits_busy']} busy answers so far)")
            return response
        try:
            return self._init_target(request, response)
        finally:
            self._init_slots.release()

    def _init_target(self, request: InitTarget.Request, response: InitTarget.Response) -> InitTarget.Response:
        box = Box(request.x, request.y, request.width, request.height)
        wanted_ns = _stamp_ns(request.stamp)
        frames, targets = self.frames, self.targets  # this request's, whatever a cleanup does meanwhile
        try:
            if frames is None or targets is None:
                raise TargetError(self._not_active())
            if not box.is_finite():
                raise InvalidInputError(f"box has a NaN or infinite value: {box.xywh()}")
            if wanted_ns == 0:
                latest = frames.latest()
                if latest is None:
                    raise TargetError(f"no image received yet on '{self.image_topic}'")
                stamped = [latest]
            else:
                stamped = frames.from_stamp(wanted_ns)
                if stamped is None:
                    held = frames.stamp_range()
                    held_text = f"{held[0] / 1e9:.3f}..{held[1] / 1e9:.3f}" if held else "none"
                    raise TargetError(
                        f"no image with stamp {wanted_ns / 1e9:.9f} among the last {len(frames)} frames "
                        f"(held: {held_text}); use a recent stamp or 0 for the latest image"
                    )
            first_stamp, first_frame = stamped[0]
            try:
                first_image = self._decode(first_frame)
            except UnsupportedImageError as exc:
                raise TargetError(f"cannot start on that image: {exc}") from None
            check_init_box(box, first_image.shape, self.param("min_box_size"))
            built = time.perf_counter()
            name, tracker = targets.prepare(request.target_id, request.tracker)
            job = _InitJob(name, tracker, request.target_id, box, (first_stamp, first_image),
                           _evenly([frame for _, frame in stamped[1:]], MAX_CATCH_UP_FRAMES))
            job.build_seconds = time.perf_counter() - built
            with self._pending_cv:
                if not self._active:  # deactivated while this request was checked: never queued
                    raise TargetError(self._not_active())
                self._jobs.append(job)
                self._pending_cv.notify()
            while not job.done.wait(timeout=0.5):
                if not self._running and not self._worker.is_alive():
                    raise TargetError("the node is shutting down")
            if job.error is not None:
                raise TargetError(job.error)
            report = job.report
        except Exception as exc:  # every refusal is answered, logged, and survived
            response.success = False
            response.message = str(exc)
            self.get_logger().warning(f"init_target refused: {exc}")
            return response
        response.success = True
        response.target_id = report.target_id
        caught_up = job.starting.frames_caught_up if job.starting is not None else 0
        response.message = (
            f"tracking {report.target_id} with {report.tracker_name} from stamp {first_stamp / 1e9:.3f}, "
            f"caught up over {caught_up} newer frame(s); tracker built in {job.build_seconds:.3f} s, "
            f"initialised in {job.init_seconds:.3f} s"
        )
        self.get_logger().info(response.message)
        return response

    def _on_stop_target(self, request: StopTarget.Request, response: StopTarget.Response) -> StopTarget.Response:
        target_id = request.target_id
        try:
            self._check_name("target_id", target_id)
        except TargetError as exc:
            response.success, response.message = False, str(exc)
            self._log_every("stop_refused_name", "warning", f"stop_target refused: {exc}")
            return response
        targets = self.targets
        if not self._active or targets is None:
            response.success, response.message = False, self._not_active()
            self._log_every("stop_not_active", "warning", f"stop_target refused: {response.message}")
            return response
        with self._pending_cv:  # targets still being started are stopped too
            cancelled = [job for job in self._jobs if not target_id or job.target_id == target_id]
            for job in cancelled:
                job.cancelled = True
        for job in cancelled:
            self._complete(job, error="stopped (stop_target) before it started")
        try:
            stopped = targets.stop(target_id)
        except TargetError as exc:
            if not cancelled:
                response.success, response.message = False, str(exc)
                self.get_logger().warning(f"stop_target refused: {exc}")
                return response
            stopped = []
        stopped += [f"{job.target_id or 'a new target'} (while starting)" for job in cancelled]
        response.success = True
        response.message = f"stopped {', '.join(stopped) if stopped else 'nothing (no targets)'}"
        self.get_logger().info(response.message)
        return response

    # --- camera health and diagnostics ------------------------------------------------
    @staticmethod
    def _watchdog_period(camera_timeout: float) -> float:
        return max(0.05, float(camera_timeout) / 2)

    def _silence(self, now: float) -> tuple[float, float]:
        """(seconds since the last image arrived, seconds since the last usable one): since
        start-up when none came; a frame being tracked, or waiting for the worker after a
        usable one, counts as usable now (a slow update must not make the next frame stale)."""
        image = now - max(self._last_image_at or self._started_at, self._started_at)
        usable = now - max(self._last_usable_at or self._started_at, self._started_at)
        return image, 0.0 if self._working() else usable

    def _working(self) -> bool:
        return self._last_frame_usable and (self._pending is not None or self._holding)

    def _check_stale(self) -> None:
        """No usable image for camera_timeout s: publish the targets LOST (confidence 0, their
        last box) under the last image's header, every camera_timeout / 2 s, so that a robot
        listening to ~/tracked_objects only learns that the data is stale."""
        targets = self.targets
        if not self._running or not self._active or targets is None:
            return
        _, usable = self._silence(time.monotonic())
        if usable <= self.param("camera_timeout") or self._last_header is None:
            return
        reports = targets.reports()
        if not reports:
            return
        with self._publish_lock:
            if self._working() or not self._running or not self._active:
                return
            output = TrackedObjectArray(header=self._last_header)
            output.objects = [_tracked_object(r, state=TrackedObject.STATE_LOST, confidence=0.0) for r in reports]
            self.publisher.publish(output)

    def _rate(self, times, now: float) -> float:
        """Events per second over the last FPS_WINDOW s (or since start-up, if shorter)."""
        window = min(FPS_WINDOW, max(now - self._started_at, 1e-3))
        return sum(1 for t in times if now - t <= window) / window

    def _publish_diagnostics(self) -> None:
        targets, frames = self.targets, self.frames
        if not self._running or not self._active or targets is None or frames is None:
            return
        now = time.monotonic()
        fps = self._rate(list(self._processed_at), now)
        camera_fps = self._rate(list(self._received_at), now)
        image_silence, usable_silence = self._silence(now)
        latencies = np.array(self._latencies) if self._latencies else np.array([np.nan])
        process = np.array(self._process_times) if self._process_times else np.array([np.nan])
        reports = targets.reports()
        warn_after, error_after = self.param("camera_timeout"), self.param("camera_error_timeout")
        stale = usable_silence > warn_after
        values = {
            "fps": f"{fps:.2f}",
            "camera_fps": f"{camera_fps:.2f}",
            "seconds_since_image": f"{image_silence:.2f}" if self._last_image_at is not None else "inf",
            "seconds_since_usable_image": f"{usable_silence:.2f}" if self._last_usable_at is not None else "inf",
            "stale": "true" if stale else "false",
            "frames_received": str(self.stats["received"]),
            "frames_processed": str(self.stats["processed"]),
            "frames_dropped": str(self.stats["dropped"]),
            "images_rejected": str(self.stats["bad_images"]),
            "images_damaged": str(self.stats["damaged"]),
            "images_oversized": str(self.stats["oversized"]),
            "image_size_changes": str(self.stats["size_changes"]),
            "stamps_repeated": str(self.stats["repeated_stamps"]),
            "stamps_zero": str(self.stats["zero_stamps"]),
            "stamp_steps_back": str(self.stats["stamp_steps_back"]),
            "init_requests": str(self.stats["init_requests"]),
            "init_requests_busy": str(self.stats["inits_busy"]),
            "frame_buffer_frames": str(len(frames)),
            "frame_buffer_bytes": str(frames.nbytes),
            "latency_p50_ms": f"{np.nanpercentile(latencies, 50) * 1e3:.1f}" if self._latencies else "nan",
            "latency_p95_ms": f"{np.nanpercentile(latencies, 95) * 1e3:.1f}" if self._latencies else "nan",
            "processing_p50_ms": f"{np.nanpercentile(process, 50) * 1e3:.1f}" if self._process_times else "nan",
            "targets": str(len(reports)),
        }
        for report in reports:
            state = "LOST" if stale else TrackState(report.result.state).name
            confidence = 0.0 if stale else report.result.confidence
            values[f"target/{report.target_id}"] = f"{report.tracker_name} {state} {confidence:.2f}" + (
                " (stale)" if stale else "")
        lost = [r.target_id for r in reports if r.result.state == TrackState.LOST]
        if image_silence > warn_after:
            level = DiagnosticStatus.ERROR if image_silence > error_after else DiagnosticStatus.WARN
            text = (f"no image for {image_silence:.1f} s on '{self.image_topic}'" if self._last_image_at is not None
                    else f"no image received yet on '{self.image_topic}'")
        elif stale:
            level = DiagnosticStatus.ERROR if usable_silence > error_after else DiagnosticStatus.WARN
            text = (f"images arrive ({camera_fps:.1f} fps) but none was usable for {usable_silence:.1f} s "
                    f"({self.stats['bad_images']} rejected so far)")
        elif lost:
            level, text = DiagnosticStatus.WARN, f"lost: {', '.join(lost)}"
        else:
            level, text = DiagnosticStatus.OK, f"{len(reports)} target(s), {fps:.1f} fps"
        if stale and reports:
            text += f"; targets published LOST (stale): {', '.join(r.target_id for r in reports)}"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: tracking",
            hardware_id="vtrack",
            message=text,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(diagnostics)

    def begin_shutdown(self) -> None:
        """Stop taking work while the ROS context is still valid: the worker finishes the
        frame or catch-up step in hand (its last publish still goes out) and ends, init
        requests still waiting are answered "shutting down", the timers publish no more."""
        if not getattr(self, "_running", False):  # not yet set when __init__ refused the settings
            return
        self._running = False
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with self._pending_cv:
                self._pending_cv.notify_all()
            worker.join(timeout=10.0)

    def destroy_node(self) -> None:
        self.begin_shutdown()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on SIGINT or SIGTERM, however many come: the first starts an orderly shutdown
    (work in hand finished and answered, then the executor, the node, the context), later
    ones are ignored (a stuck shutdown still ends with SIGKILL; each wait in it is bounded). rclpy's own signal handlers are off: they invalidated the context
    while the worker and services were still publishing and answering."""
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        node = TrackerNode()
    except (ConfigError, ValueError, KeyError, ParameterException) as exc:
        print(f"tracker_node: cannot start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        while not stop.is_set() and not node.finished.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        # Ignored from now on, at the OS level: Python's finalization resets handlers of its
        # own to the default (a second SIGINT then killed the process: exit -2), not SIG_IGN.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        node.get_logger().info("shutting down")
        node.finalize()
        node.begin_shutdown()
        executor.shutdown(timeout_sec=10.0)  # callbacks in flight finish (and answer) first
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
