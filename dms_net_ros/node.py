"""The DMS-Net diagnosis lifecycle node ``dms_net_diagnosis``.

Data path (the exam pipeline `dms_net_core.exam_pipeline`, which ``dms-net-bag evaluate`` and
``dms-net-eval`` run too)::

    left/right Image | CompressedImage --(callback: stamp pairing only)--> bounded queue
      --(one worker thread)--> decode (here) -> ExamPipeline: grade + prepare (both eyes on two
      threads, `pair_preparer`) -> verdict -> infer (the backend normalises) -> thresholds
      -> ExamResult -> DiagnosisResult on `diagnosis` (`messages.exam_result_msg`) (+ attention overlays)

Lifecycle (transitions own resources, so re-configuring never leaks):

* configure: load the model bundle, create the backend and warm it up; create the
  publishers (``diagnosis``, ``/diagnostics``, optional ``left/attention`` and
  ``right/attention``), the ``exam_id`` subscriptions (latched and volatile, see
  `exam_id`), the pairer and the worker.
* activate: subscribe to the eye images and start the timers (diagnostics, expiry of
  unpaired images, the "publisher exists but nothing arrives" QoS warning).
* deactivate: destroy the image subscriptions and timers (buffered images are forgotten).
* cleanup: stop the worker, close the backend, destroy publishers and subscriptions.

The ``diagnose_exam`` action (`exam_action.py`, rules in `exam_slot.py`) exists in every
state and runs goals only while active; its exams go through this same pair path, so the
result a goal gets is the one published on ``diagnosis``.

Every bad input (undecodable image, eye missing, stamps out of order or from the future,
ungradable or non-fundus photo, an over-long exam id) gives one log line and one
ERROR/UNGRADABLE result; the node keeps serving. Accounting (README, "Every image is
accounted for"): each image received ends in a result or a drop counted by reason, and
images published but never received are counted from the publishers' sequence numbers
(`transport_loss`); all of it is on ``/diagnostics``. Logs never
contain image data or patient details beyond the exam id. Parameters are declared from
`node_parameters.PARAMETERS` (one place, with descriptions; the pairing, decoding and
pipeline ones generated from those steps' settings dataclasses); ``config/diagnose.yaml``
lists them with the same defaults. Parameters other than ``exam_id`` take effect at the next
configure.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import Node as LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from dms_net_core.errors import first_line
from dms_net_core.exam_pipeline import ExamPipeline, ExamResult, ExamStatus
from dms_net_ros.bundle_path import package_share_dir, resolve_bundle_path
from dms_net_ros.diagnostics import PipelineStats, to_diagnostic_array
from dms_net_ros.exam_action import ExamActionServer
from dms_net_ros.exam_id import ExamId, ExamIdState
from dms_net_ros.exam_slot import ExamTicket, Outcome, Stage
from dms_net_ros.frame_size_limit import transport_limit_warning
from dms_net_ros.image_codec import rgb_to_image_msg
from dms_net_ros.messages import ResultContext, error_result, exam_result_msg
from dms_net_ros.msg import DiagnosisResult
from dms_net_ros.node_parameters import NODE_NAME, PARAMETERS, NodeSettings, PipelineSettings
from dms_net_ros.pair_preparer import PairPreparer
from dms_net_ros.pairing import ApproximateTimePairer, Pair, Unpaired
from dms_net_ros.process_memory import dds_history_memory_warning, trim_freed_memory
from dms_net_ros.stamps import stamp_to_ns
from dms_net_ros.transport_loss import SequenceGapCounter, gid_bytes, plausible_lost_change, publisher_key
from dms_net_ros.worker import DropOldestWorker


@dataclass(frozen=True)
class PairJob:
    pair: Pair
    exam: ExamId  # the id the result carries (a refused id carries its error)
    ticket: ExamTicket | None = None  # the diagnose_exam goal this pair answers, if any

    @property
    def exam_id(self) -> str:
        return self.exam.value


#: The input QoS kinds `NodeSettings.qos` admits (validated there, once) and their reliability.
_RELIABILITY = {"sensor_data": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def _input_qos(kind: str, depth: int) -> QoSProfile:
    """The image subscriptions' QoS from already validated settings (`NodeSettings`)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=_RELIABILITY[kind],
                      durability=DurabilityPolicy.VOLATILE)


def attention_overlay(prepared_rgb: np.ndarray, attention: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a map ([h,w] in [0,1]: OSIM attention, or an eye's normalised class activation map)
    as a JET heat map on the network's view of the eye."""
    size = prepared_rgb.shape[1], prepared_rgb.shape[0]
    att = cv2.resize(np.clip(np.asarray(attention, np.float32), 0.0, 1.0), size, interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap((att * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(prepared_rgb, 1.0 - alpha, heat, alpha, 0.0)


def has_overlay_maps(bundle: Any) -> bool:
    """The bundle gives maps worth drawing: OSIM attention (DMS-Net) or class activation maps
    (a plain per-eye bundle exported with them); the plain control's all-ones maps are not."""
    return bool(bundle.model_config.has_attention_maps or getattr(bundle, "has_cams", False))


class DiagnosisNode(LifecycleNode):
    """Lifecycle node pairing left/right fundus images and publishing DMS-Net diagnoses."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(description=spec.description))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._exam = ExamIdState()
        self._set_exam_id(str(self.get_parameter("exam_id").value), "parameter")
        self.stats = PipelineStats()
        self._bundle: Any = None
        self._backend: Any = None
        self._worker: DropOldestWorker | None = None
        self._pipeline: ExamPipeline | None = None
        self._preparer: PairPreparer | None = None
        self._pairer: ApproximateTimePairer | None = None
        self._result_pub = None
        self._diag_pub = None
        self._attention_pubs: dict[str, Any] = {}
        self._exam_subs: list[Any] = []
        self._image_subs: dict[str, Any] = {}
        self._gap_counters: dict[str, SequenceGapCounter] = {}
        self._timers: list[Any] = []
        self._last_rx: dict[str, float] = {}  # eye -> monotonic time of the last image since activation
        # eye -> monotonic time its publisher was first seen since activation
        self._publisher_seen_at: dict[str, float] = {}
        self._last_warn: dict[str, float] = {}
        self._trimmed_at_processed = 0  # worker.processed when freed memory was last returned
        self._settings = NodeSettings()  # replaced by the parameters at configure
        self._exam_action = ExamActionServer(
            self,
            submit_pair=self._submit_exam_pair,
            default_timeout_s=lambda: float(self.get_parameter("exam_timeout_s").value),
            state_label=self._lifecycle_state_label,
        )

    # -- parameters -------------------------------------------------------------------
    def _read_params(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name == "exam_id":
                self._set_exam_id(str(p.value), "parameter")
        return SetParametersResult(successful=True)

    def _set_exam_id(self, exam_id: str, source: str, message_info: dict | None = None) -> None:
        publisher, sequence = publisher_key(message_info)
        changed, line = self._exam.set(exam_id, publisher, sequence)
        if changed:
            if self._exam.current.error:
                self.get_logger().error(f"{line} ({source}; starts {self._exam.current.value!r})")
            else:
                self.get_logger().info(f"{line} ({source})")

    def _on_exam_id_message(self, msg: String, message_info: dict) -> None:
        self._set_exam_id(msg.data, "topic", message_info)

    @property
    def exam_id(self) -> str:
        return self._exam.current.value

    # -- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from dms_net_core.bundle import ModelBundle
        from dms_net_core.runtime import create_backend, torch_acceleration_options

        values = self._read_params()
        log = self.get_logger()
        try:
            p = self._settings = NodeSettings.from_parameters(values)  # every value checked here, one line each
            settings = PipelineSettings.from_parameters(values)
            bundle_path, found = resolve_bundle_path(p.bundle, Path.cwd(), package_share_dir())
            log.info(f"model bundle {bundle_path} ({found})")
            self._bundle = ModelBundle.load(bundle_path)
            accel = torch_acceleration_options(p.torch_accel)
            if accel and p.backend not in ("auto", "torch"):
                raise ValueError(f"torch_accel={p.torch_accel} applies to the torch backend only: "
                                 "set backend to torch or auto, or torch_accel to none")
            if p.backend in ("auto", "torch"):  # the torch backend copies attention maps back only when they are drawn
                accel["attention_outputs"] = p.publish_attention and has_overlay_maps(self._bundle)
            self._backend = create_backend(self._bundle, backend=p.backend, device=p.device, precision=p.precision,
                                           **accel)
            self._backend.warmup(p.warmup_iterations)
        except Exception as exc:  # noqa: BLE001 - a failed configure must leave the node unconfigured, not dead
            log.error(f"configure failed: {first_line(exc)}")
            self._release_backend()
            return TransitionCallbackReturn.FAILURE
        log.info(f"model {self._bundle.model_id} on {self._backend.describe()}")
        memory_warning = dds_history_memory_warning()
        if memory_warning:
            log.warning(memory_warning)
        size_warning = transport_limit_warning(p.qos, p.image_transport, settings.decode.max_pixels)
        if size_warning:
            log.warning(size_warning)

        self._result_pub = self.create_publisher(DiagnosisResult, "diagnosis",
                                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if p.publish_attention and not has_overlay_maps(self._bundle):
            log.warning(f"publish_attention is on but model {self._bundle.name} "
                        f"({self._bundle.model_config.architecture}) "
                        "has no OSIM attention maps and no class activation maps: no overlays are published; "
                        "load a DMS-Net bundle, or re-export a plain per-eye model with this version of "
                        "dms-net-export / dms-net-ensemble")
        elif p.publish_attention:
            self._attention_pubs = {eye: self.create_publisher(Image, f"{eye}/attention", 2)
                                    for eye in ("left", "right")}
        # Latched (a workflow that published before the node started) and volatile (ros2 topic
        # pub, a bag played without recorded QoS); duplicates are dropped by sequence number.
        # A volatile publisher is incompatible with the latched subscription by design (the
        # volatile one serves it): no "incompatible QoS" warning for that pair.
        quiet = SubscriptionEventCallbacks(incompatible_qos=lambda info: None)
        self._exam_subs = [
            self.create_subscription(String, "exam_id", self._on_exam_id_message,
                                     QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=durability),
                                     event_callbacks=events)
            for durability, events in ((DurabilityPolicy.TRANSIENT_LOCAL, quiet), (DurabilityPolicy.VOLATILE, None))
        ]
        self._pairer = ApproximateTimePairer.from_settings(settings.pairing)
        self._pipeline = ExamPipeline.for_bundle(self._bundle, self._backend, settings.exam)
        self._preparer = PairPreparer(self._pipeline, settings.decode.max_pixels, threads=2)
        self._worker = DropOldestWorker(
            self._process_pair, p.worker_queue_size, on_drop=self._on_worker_drop, on_error=self._on_worker_error
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        p = self._settings
        qos = _input_qos(p.qos, p.qos_depth)
        compressed = p.image_transport == "compressed"
        msg_type = CompressedImage if compressed else Image
        suffix = "/image_raw/compressed" if compressed else "/image_raw"
        for eye in ("left", "right"):
            topic = self.resolve_topic_name(eye + suffix)
            known = [gid_bytes(i.endpoint_gid) for i in self.get_publishers_info_by_topic(topic)]
            self._gap_counters[eye] = SequenceGapCounter(known)
            events = SubscriptionEventCallbacks(
                message_lost=lambda info, e=eye: self._on_dds_message_lost(e, info.total_count_change))
            self._image_subs[eye] = self.create_subscription(
                msg_type, eye + suffix, lambda m, i, e=eye: self._on_image(e, m, i), qos, event_callbacks=events)
        self._publisher_seen_at = {}
        self._last_rx = {}
        self._last_warn = {}
        self._timers = [
            self.create_timer(p.diagnostics_period_s, self._publish_diagnostics),
            self.create_timer(0.5, self._housekeeping),
        ]
        topics = ", ".join(s.topic_name for s in self._image_subs.values())
        self.get_logger().info(
            f"active: subscribed to {topics} ({msg_type.__name__}) with QoS {p.qos} "
            f"({qos.reliability.name.lower()}, keep last {qos.depth}); publishing {self._result_pub.topic_name}"
        )
        self._exam_action.slot.open()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        self.get_logger().info("inactive: image subscriptions removed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release_all()
        self.get_logger().info("cleaned up: backend and publishers released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release_all()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release_all()
        return TransitionCallbackReturn.SUCCESS

    def _stop_inputs(self) -> None:
        self._exam_action.slot.close("the node left the active state before the exam finished: "
                                     "activate it and send the goal again")
        for sub in self._image_subs.values():
            self.destroy_subscription(sub)
        self._image_subs = {}
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        if self._pairer is not None:
            forgotten = self._pairer.clear()
            if forgotten:
                self.stats.record_drop("deactivated", len(forgotten))
                self.get_logger().warning(f"deactivated with {len(forgotten)} unpaired image(s) buffered: "
                                          "not diagnosed (counted)")

    def _lifecycle_state_label(self) -> str:
        try:
            return str(self._state_machine.current_state[1])
        except (AttributeError, IndexError, TypeError):
            return "not active"

    def destroy_node(self) -> None:
        self._exam_action.destroy()
        super().destroy_node()

    def _release_backend(self) -> None:
        if self._backend is not None:
            try:
                self._backend.close()
            finally:
                self._backend = None
        self._bundle = None

    def _release_all(self) -> None:
        self._stop_inputs()
        if self._worker is not None:
            pending = self._worker.stop()
            if pending:
                self.stats.record_drop("shutdown", len(pending), images=2 * len(pending))
                self.get_logger().warning(f"stopped with {len(pending)} pair(s) queued: not diagnosed (counted)")
            self._worker = None
        if self._preparer is not None:
            self._preparer.close()
            self._preparer = None
        self._pipeline = None
        self._release_backend()
        for pub in [self._result_pub, self._diag_pub, *self._attention_pubs.values()]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._result_pub = self._diag_pub = None
        self._attention_pubs = {}
        for sub in self._exam_subs:
            self.destroy_subscription(sub)
        self._exam_subs = []
        self._pairer = None

    # -- callbacks (executor thread: cheap work only) -----------------------------------
    def _on_image(self, eye: str, msg: Any, message_info: dict | None = None) -> None:
        now = time.monotonic()
        self._last_rx[eye] = now
        self.stats.record_received(eye)
        counter = self._gap_counters.get(eye)
        if counter is not None:
            missed = counter.observe(*publisher_key(message_info))
            if missed:
                self.stats.record_sequence_gap(eye, missed)
                self.get_logger().warning(
                    f"{missed} {eye} image(s) published but never received (transport loss, counted): "
                    "lower the camera rate, use qos:=reliable with a deeper qos_depth, "
                    "or the Fast DDS profile for large images",
                    throttle_duration_sec=5.0,
                )
        if self._pairer is None or self._worker is None:
            self.stats.record_drop("inactive")
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        out = self._pairer.add(eye, stamp_ns, msg, received=now, now_ns=self.get_clock().now().nanoseconds)
        exams = self._exam_action.slot
        # before the report: the image may be unpaired at once
        exams.note_image(eye, stamp_ns, completes_pair=bool(out.pairs))
        self._report_unpaired(out.unpaired)
        for pair in out.pairs:
            ticket = exams.take_pair()  # the first pair after a camera goal is that goal's
            self._worker.submit(PairJob(pair, ExamId(ticket.exam_id) if ticket else self._exam.current, ticket))

    def _submit_exam_pair(self, ticket: ExamTicket, left: Any, right: Any) -> str | None:
        """Queue a diagnose_exam goal's inline pair on the worker; None, or why it could not be."""
        if self._worker is None:
            return "the node has no pipeline (not configured): configure and activate it"
        for eye in ("left", "right"):
            self.stats.record_received(eye)
        pair = Pair(stamp_to_ns(left.header.stamp), stamp_to_ns(right.header.stamp), left, right, time.monotonic())
        try:
            self._worker.submit(PairJob(pair, ExamId(ticket.exam_id), ticket))
        except RuntimeError as exc:
            self.stats.record_drop("inactive", images=2)
            return f"the inference worker is stopped ({exc}): reconfigure the node"
        return None

    def _on_dds_message_lost(self, eye: str, count: int) -> None:
        """Fast DDS's own loss report: the only one when nothing of a publisher ever arrives
        (best-effort images of ~40 MB and more, measured; README "QoS"). An implausible
        change (INT32_MAX, seen for fragmented 50 MB samples) is not a count: ignored."""
        if count and not plausible_lost_change(count):
            self.get_logger().debug(f"ignored a Fast DDS message-lost change of {count} on {eye} (not a count)")
            return
        self.stats.record_dds_message_lost(eye, count)
        if count:
            self.get_logger().warning(
                f"Fast DDS reports {count} {eye} image(s) lost in transport (counted): for images over ~10 MB use "
                "qos:=reliable on both sides, and the Fast DDS profile for large images",
                throttle_duration_sec=5.0,
            )

    def _report_unpaired(self, items: list[Unpaired]) -> None:
        for item in items:
            text = item.describe()
            if item.reason == "duplicate":
                self.stats.record_drop(item.reason)
                self.get_logger().warning(text)
                continue
            ticket = self._exam_action.slot.unpaired_owner(item.eye, item.stamp_ns)
            if ticket is not None and ticket.abandoned:  # its goal ended: publish nothing, the image is dropped
                self.stats.record_drop(item.reason, images=1)
                self.get_logger().info(f"exam {ticket.exam_id!r} ({ticket.outcome.name}): {text}; not published")
                continue
            self.stats.record_drop(item.reason, images=0)  # the image is accounted for by its ERROR result
            exam_id = ticket.exam_id if ticket is not None else self.exam_id
            self.get_logger().error(f"exam {exam_id!r}: {text}")
            ctx = self._result_context(item.eye == "left" and item.stamp_ns or 0,
                                       item.eye == "right" and item.stamp_ns or 0, item.item.header.frame_id, exam_id)
            self._publish_for(ticket, error_result(ctx, text), images=1)

    def _housekeeping(self) -> None:
        if self._pairer is not None:
            self._report_unpaired(self._pairer.expire(time.monotonic()))
        self._warn_silent_inputs()
        self._return_memory_when_idle()

    def _return_memory_when_idle(self, idle_s: float = 1.0) -> None:
        """After work, once nothing arrived for ``idle_s`` and the worker is idle, hand the
        frames' freed memory back to the OS (`process_memory`): never while serving pairs."""
        worker = self._worker
        if worker is None or worker.processed == self._trimmed_at_processed or worker.unfinished:
            return
        if self._last_rx and time.monotonic() - max(self._last_rx.values()) < idle_s:
            return
        self._trimmed_at_processed = worker.processed
        trim_freed_memory()

    def _warn_silent_inputs(self) -> None:
        """The classic silent QoS mismatch: a publisher is there, yet nothing ever arrives.

        Exams are sparse, so silence after images did arrive is normal; the warning is for
        a topic whose publishers have delivered nothing for ``no_input_warn_s`` since they
        were first seen after activation (repeated at most every 10 x that). The clock runs
        from the publisher's appearance, not from activation: a camera started a while after
        the node needs its own few seconds to send its first image.
        """
        limit = self._settings.no_input_warn_s
        now = time.monotonic()
        for eye, sub in self._image_subs.items():
            if eye in self._last_rx or now - self._last_warn.get(eye, -1e9) < 10 * limit:
                continue
            infos = self.get_publishers_info_by_topic(sub.topic_name)
            if not infos:
                self._publisher_seen_at.pop(eye, None)  # gone again: a new publisher gets its own time
                continue
            seen_at = self._publisher_seen_at.setdefault(eye, now)
            if now - seen_at < limit:
                continue
            self._last_warn[eye] = now
            theirs = sorted({i.qos_profile.reliability.name.lower() for i in infos})
            ours = _input_qos(self._settings.qos, self._settings.qos_depth).reliability.name.lower()
            hint = (
                "a RELIABLE subscription never receives from a BEST_EFFORT publisher: set qos:=sensor_data"
                if ours == "reliable" and "best_effort" in theirs
                else ("check the message type/image_transport and the Fast DDS profile for large images "
                      "(FASTDDS_DEFAULT_PROFILES_FILE)")
            )
            self.get_logger().warning(
                f"{len(infos)} publisher(s) on {sub.topic_name} (QoS {', '.join(theirs)}) but no image in the "
                f"{now - seen_at:.0f} s since the publisher was first seen (our QoS {ours}): {hint}"
            )

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        engine = self._backend.describe() if self._backend is not None else ""
        extra = {"exam_id": self.exam_id, "worker_processed": self._worker.processed if self._worker else 0}
        pending = 0
        if self._pairer is not None:
            buffered = self._pairer.buffered()
            extra.update({f"buffered_{e}": n for e, n in buffered.items()})
            pending += sum(buffered.values())
        if self._worker is not None:
            pending += 2 * self._worker.unfinished
        extra["images_pending"] = pending
        extra["exam_id_refused"] = self._exam.refused_too_long
        extra["clock_resets"] = self._pairer.clock_resets if self._pairer is not None else 0
        self._diag_pub.publish(
            to_diagnostic_array(
                self.stats,
                node_name=self.get_fully_qualified_name(),
                stamp=self.get_clock().now().to_msg(),
                backend=self._backend.name if self._backend is not None else "",
                engine=engine,
                model_id=self._bundle.model_id if self._bundle is not None else "",
                queue_depth=self._worker.depth if self._worker else 0,
                extra=extra,
            )
        )

    # -- worker thread -------------------------------------------------------------------
    def _on_worker_drop(self, job: PairJob) -> None:
        self.stats.record_drop("queue_overflow", images=2)
        if job.ticket is not None:
            self._exam_action.slot.finish(job.ticket, Outcome.ERROR,
                                          "the exam's pair was dropped from a full inference queue "
                                          "(cameras faster than inference): "
                                          "lower the camera rate or use a faster backend")
        self.get_logger().warning(
            "inference slower than the cameras: dropped the oldest queued pair "
            f"(stamp {job.pair.stamp_ns / 1e9:.3f}); lower the camera rate or use a faster backend",
            throttle_duration_sec=5.0,
        )

    def _on_worker_error(self, job: PairJob, exc: BaseException) -> None:
        """A bug, not a bad input: the pair still ends as a counted ERROR result (issue 16)."""
        detail = first_line(str(exc), limit=200)
        text = (f"internal error while processing the pair ({type(exc).__name__}: {detail}): "
                "the node keeps serving; please report it with the node log")
        self.get_logger().error(f"exam {job.exam_id!r}: {text}")
        try:
            pair = job.pair
            ctx = self._result_context(pair.left_stamp_ns, pair.right_stamp_ns, pair.left.header.frame_id, job.exam_id)
            self._publish_for(job.ticket, error_result(ctx, text))
        except Exception as again:  # noqa: BLE001 - the result itself cannot be built: count the pair
            self.stats.record_drop("internal_error", images=2)
            self.get_logger().error(f"could not publish the ERROR result either ({type(again).__name__}: {again}); "
                                    "pair counted as dropped")
            if job.ticket is not None:
                self._exam_action.slot.finish(job.ticket, Outcome.ERROR,
                                              f"internal error while processing the pair ({type(exc).__name__}): "
                                              "see the node log")

    def _result_context(self, left_ns: int, right_ns: int, frame_id: str, exam_id: str) -> ResultContext:
        backend = self._backend
        return ResultContext(
            exam_id=exam_id,
            left_stamp_ns=left_ns,
            right_stamp_ns=right_ns,
            frame_id=frame_id,
            model_id=self._bundle.model_id if self._bundle is not None else "",
            backend=backend.name if backend is not None else "",
            backend_detail=backend.describe() if backend is not None else "",
        )

    def _publish_result(self, msg: DiagnosisResult, total_ms: float | None = None, images: int = 2) -> None:
        pub = self._result_pub
        if pub is None:
            self.stats.record_drop("not_configured", images=images)
            return
        pub.publish(msg)
        self.stats.record_result(msg.status, total_ms, images=images)

    def _publish_for(self, exam: ExamTicket | None, msg: DiagnosisResult, total_ms: float | None = None,
                     images: int = 2) -> None:
        """Publish a result; one made for a diagnose_exam goal is also that goal's result,
        unless the goal already ended (timeout, cancel): then nothing is published and the
        ``images`` it covered are counted as dropped."""
        if exam is not None and not self._exam_action.slot.deliver(exam, msg):
            self._drop_abandoned(exam, images)
            return
        self._publish_result(msg, total_ms, images=images)

    def _exam_stage(self, exam: ExamTicket | None, stage: Stage) -> bool:
        """Report a goal's stage; False when its goal already ended (stop working on the pair)."""
        if exam is None or self._exam_action.slot.set_stage(exam, stage):
            return True
        self._drop_abandoned(exam)
        return False

    def _drop_abandoned(self, exam: ExamTicket, images: int = 2) -> None:
        self.stats.record_drop("exam_abandoned", images=images)
        self.get_logger().info(f"exam {exam.exam_id!r}: its goal ended ({exam.outcome.name}) before the result: "
                               "nothing published")

    def _process_pair(self, job: PairJob) -> None:
        """One pair through the exam pipeline (`dms_net_core.exam_pipeline`); the node adds the
        goal's stages, the exam id, the messages and the overlays."""
        pair = job.pair
        pipeline, preparer, bundle = self._pipeline, self._preparer, self._bundle
        if pipeline is None or preparer is None or bundle is None:
            self.stats.record_drop("not_configured", images=2)
            return
        if not self._exam_stage(job.ticket, Stage.GRADING):
            return
        t0 = time.monotonic()
        ctx = self._result_context(pair.left_stamp_ns, pair.right_stamp_ns, pair.left.header.frame_id, job.exam_id)
        if job.exam.error:
            self.get_logger().error(f"exam {job.exam_id!r}: {job.exam.error}")
            self._publish_for(job.ticket, error_result(ctx, job.exam.error))
            return
        left, right = preparer.prepare(pair.left, pair.right)  # decode, grade, prepare: both eyes at once
        preprocess_ms = (time.monotonic() - t0) * 1e3
        inferred: list[bool] = []  # the stage hook runs only when the pair goes to the network

        def before_inference() -> bool:
            inferred.append(self._exam_stage(job.ticket, Stage.INFERRING))
            return inferred[-1]

        result = pipeline.examine_prepared(left, right, before_inference=before_inference)
        if result is None:  # the goal ended before inference (the stage hook accounted for it)
            return
        if inferred and job.ticket is not None and job.ticket.done:
            self._drop_abandoned(job.ticket)  # goal ended during inference: no overlays either
            return
        self._publish_exam_result(job, ctx, result, preprocess_ms, bundle)

    def _publish_exam_result(self, job: PairJob, ctx: ResultContext, result: ExamResult, preprocess_ms: float,
                             bundle: Any) -> None:
        pair, log = job.pair, self.get_logger()
        attention = result.status is ExamStatus.OK and self._publish_overlays(pair, result)
        ctx.timings_ms = {"preprocess": preprocess_ms,
                          "total": (time.monotonic() - pair.received) * 1e3}  # decode included
        if "inference" in result.timings_ms:
            ctx.timings_ms["inference"] = result.timings_ms["inference"]
        msg = exam_result_msg(ctx, result, bundle.class_codes, bundle.class_names, attention_published=attention)
        if result.status is ExamStatus.ERROR:
            log.error(f"exam {job.exam_id!r}: {result.message}")
        elif result.status is ExamStatus.UNGRADABLE:
            log.warning(f"exam {job.exam_id!r}: {msg.status_message}")
        self._publish_for(job.ticket, msg, ctx.timings_ms["total"] if result.status is ExamStatus.OK else None)

    def _publish_overlays(self, pair: Pair, result: ExamResult) -> bool:
        """Each eye's evidence drawn on the eye the network saw, on ``<eye>/attention``: its class
        activation map (`ExamResult.evidence_left/right`) for a bundle that has them, else OSIM
        attention; True when published."""
        if not self._attention_pubs:
            return False
        if result.evidence_left is not None and result.evidence_right is not None:
            maps = (result.evidence_left.heatmap, result.evidence_right.heatmap)
        elif result.attention_left is not None and result.attention_right is not None:
            maps = (result.attention_left, result.attention_right)
        else:
            return False
        for eye, prepared, att, msg in (("left", result.left, maps[0], pair.left),
                                        ("right", result.right, maps[1], pair.right)):
            overlay = attention_overlay(prepared.image, att)
            self._attention_pubs[eye].publish(rgb_to_image_msg(overlay, "rgb8", stamp=msg.header.stamp,
                                                               frame_id=msg.header.frame_id))
        return True


def main(argv: list[str] | None = None) -> int:
    """``diagnose`` executable: ``ros2 run dms_net_ros diagnose --ros-args --params-file ...``."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=sys.argv if argv is None else argv)
    node = DiagnosisNode()
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see above); fix the parameters and restart")
                return 1
            node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _ignore_further_interrupts()
        node._release_all()
        node.destroy_node()
        rclpy.try_shutdown()
        _ignore_further_interrupts()  # try_shutdown put back the handler rclpy had replaced
    return 0


def _ignore_further_interrupts() -> None:
    """Ctrl-C on ``ros2 launch`` in a terminal delivers SIGINT twice (the terminal signals the
    whole process group, and launch forwards its own): the second one used to land during
    clean-up or interpreter exit, where Python has restored the default action, and kill the
    node (launch: "process has died [exit code -2]"). The shutdown is already under way, so
    later SIGINTs are ignored; launch still escalates to SIGTERM/SIGKILL if it ever hangs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
