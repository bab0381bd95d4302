"""The live loop: acquisition -> detection -> outputs, with control on its own thread.

::

    camera thread ──newest-frame slot──▶ detect thread ──▶ outputs (published at once)
    (FrameStream)     (stale dropped)     (ONNX Runtime,     │
                                            GIL released)    └─newest slot──▶ control thread
                                                               (skipped when  (track, steer,
                                                                busy, counted) focus; moves
                                                                               commanded, not
                                                                               waited for)
                          per-output bounded queues (a slow output drops its own)
                          ├─ ZMQ PUB  (JSON encoded there, NOBLOCK send)
                          ├─ overlay  (display rate: frames skipped, never queued)
                          └─ records  (batched writes)

Detections are published the moment the detector returns: the result carries the
control state as of the newest control step (tracks, target, steering and focus), and
control reads the newest detections on its own thread, so a move never holds
publication up. Moves are commanded without waiting (``wait=False``); the frames exposed
while the stage or focus moves are flagged (``Frame.moving``) and never used to decide
the next move or to measure focus (:class:`inscope.control_stage.ControlStage`).

Time stamps (``time.monotonic_ns()``, in ``Frame.stamps``): ``ready`` (backend),
``dequeued`` (detect thread took it), ``detect_start`` / ``detect_end`` (detector),
``published`` (handed to every output), ``sent`` (ZMQ message left the socket), and for
the frames control used: ``control_start`` / ``control_end`` (tracking, steering, focus)
and ``move_commanded`` (the guard recorded a move made or dry-run for this frame).

The hot threads do no JSON, no copies, no logging per frame and no polling sleeps; they
block on Conditions. :meth:`Pipeline.command` is the thread-safe command API the ZMQ REP
server calls.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inscope import schema
from inscope.acquisition.frame import STAMP_READY, Frame
from inscope.acquisition.microscope import Microscope
from inscope.acquisition.safety import MoveRecord
from inscope.acquisition.stream import FrameStream, NewestSlot
from inscope.config import ControlConfig
from inscope.control_stage import (
    NO_STEP,
    ControlStage,
    ControlStep,
    Director,
    truth_centering_error_um,
)
from inscope.detector.base import STAMP_DETECT_END, STAMP_DETECT_START, Detections, Detector
from inscope.enums import Mode, TargetKind, parse_target
from inscope.events import Signal
from inscope.outputs import (
    STAMP_CONTROL_END,
    STAMP_CONTROL_START,
    STAMP_DEQUEUED,
    STAMP_MOVE_COMMANDED,
    STAMP_PUBLISHED,
    STAMP_SENT,
    Output,
    Result,
)
from inscope.stats import StampStats

log = logging.getLogger(__name__)

#: (label, start stamp, end stamp) of the publication path, counted for every published
#: frame when it is published.
PUBLISH_STAGES: tuple[tuple[str, str, str], ...] = (
    ("ready_to_dequeued", STAMP_READY, STAMP_DEQUEUED),
    ("dequeued_to_detect_start", STAMP_DEQUEUED, STAMP_DETECT_START),
    ("detect", STAMP_DETECT_START, STAMP_DETECT_END),
    ("detect_end_to_published", STAMP_DETECT_END, STAMP_PUBLISHED),
    ("ready_to_published", STAMP_READY, STAMP_PUBLISHED),
)
#: The stages that end when the ZMQ publisher's thread has sent the message: counted a
#: frame later (when the next one is published, or in the summary), since at publication
#: ``sent`` is not stamped yet (counted with the rest, they held 0-2 of hundreds of frames).
SENT_STAGES: tuple[tuple[str, str, str], ...] = (
    ("published_to_sent", STAMP_PUBLISHED, STAMP_SENT),
    ("ready_to_sent", STAMP_READY, STAMP_SENT),
)
#: Control's stages, beside publication: counted for every frame control used, in the
#: control thread once its step (and any move it commanded) is done.
CONTROL_STAGES: tuple[tuple[str, str, str], ...] = (
    ("detect_end_to_control_start", STAMP_DETECT_END, STAMP_CONTROL_START),
    ("control", STAMP_CONTROL_START, STAMP_CONTROL_END),
    ("ready_to_move_commanded", STAMP_READY, STAMP_MOVE_COMMANDED),
)
#: Every stage reported in summaries and benchmarks.
STAGES: tuple[tuple[str, str, str], ...] = PUBLISH_STAGES + SENT_STAGES + CONTROL_STAGES

_DETECT = (-1, STAMP_DETECT_START, STAMP_DETECT_END)

#: Derived series of the summary: signed sums of stage differences.
COMBOS: dict[str, tuple[tuple[int, str, str], ...]] = {
    # the loop's cost beyond the detector (control is not on this path)
    "overhead_ready_to_published_minus_detect": ((1, STAMP_READY, STAMP_PUBLISHED), _DETECT),
    # the same under its earlier name, when control sat between detection and publication
    "loop_overhead_minus_detect_and_control": ((1, STAMP_READY, STAMP_PUBLISHED), _DETECT),
    # hand-offs only: also minus the wait of a fresh frame for a busy detector
    "handoffs_dequeued_to_published_minus_detect": (
        (1, STAMP_DEQUEUED, STAMP_PUBLISHED), _DETECT),
    "handoffs_dequeued_to_published_minus_detect_and_control": (
        (1, STAMP_DEQUEUED, STAMP_PUBLISHED), _DETECT),
}

#: The loop stops, with an error, once the detector has failed on every frame for this
#: many seconds and at least :data:`DETECT_FAILURES_MIN` frames in a row. One bad frame,
#: or a few (a dead frame of a recording), is counted and the loop goes on; but a broken
#: model, a lost GPU or an unreachable server without a fallback fails every frame, and
#: the loop would run on, publishing nothing and never reaching its frame count.
DETECT_FAILURE_STOP_S = 5.0
DETECT_FAILURES_MIN = 20

#: Seconds without a frame from a running camera after which the loop says so, once per
#: gap (and again when frames come back). It goes on waiting: a camera on an external
#: trigger may wait that long on purpose, but a stalled camera or a sequence stopped
#: elsewhere otherwise looks like a loop that silently does nothing.
FRAME_GAP_WARN_S = 10.0


class DetectorFailing(RuntimeError):
    """The detector failed on every frame for :attr:`Pipeline.detect_failure_stop_s`."""


class Pipeline:
    """Runs a microscope, a detector, control and outputs as one low-latency loop.

    Parameters
    ----------
    scope
        Any :class:`inscope.acquisition.Microscope` (simulated, Micro-Manager, replay).
    detector
        Any :class:`inscope.detector.Detector`.
    control
        What to do with detections (:class:`inscope.config.ControlConfig`); mode
        ``"off"`` runs no tracking and makes no moves.
    outputs
        :class:`inscope.outputs.Output` objects (ZMQ PUB, overlay, records, ...).
    score_threshold
        Drop detections below this score (changeable live with ``set_threshold``).
    frames, seconds
        Stop after this many processed frames / this much time (None: until stopped).
    snapshot_dir
        Where ``snapshot`` writes its files (a request may only name a sub-folder).
    snapshot_max_per_s
        Rate limit of ``snapshot`` (:class:`inscope.snapshots.SnapshotPolicy`).
    keep_stamps
        The most recent per-frame stamp dicts kept in :attr:`records` (a ring buffer,
        for progress lines and benchmarks). The summary's statistics cover every frame
        in bounded memory (:class:`inscope.stats.StampStats`), so RSS stays flat.
    switch_interval
        Python's GIL switch interval while running (``sys.setswitchinterval``). The
        default 5 ms lets a thread busy in Python (an output encoding JSON, drawing many
        boxes) delay the wake-up of the detect or control thread by up to 5 ms; 0.5 ms
        bounds that delay. Restored on stop. None: leave it.
    director
        Optional mission for the control stage (e.g. the demo's :class:`inscope.tour.Tour`),
        see :class:`inscope.control_stage.ControlStage`.
    on_result
        Optional callable run in the detect thread for every published result (keep it
        cheap: it delays the next detection).
    """

    def __init__(self, scope: Microscope, detector: Detector, *,
                 control: ControlConfig | None = None,
                 outputs: Sequence[Output] = (), score_threshold: float | None = None,
                 frames: int | None = None, seconds: float | None = None,
                 snapshot_dir: str | Path = "runs/snapshots", keep_stamps: int = 2048,
                 switch_interval: float | None = 0.0005, director: Director | None = None,
                 on_result: Callable[[Result], None] | None = None,
                 snapshot_max_per_s: float = 1.0) -> None:
        from inscope.snapshots import SnapshotPolicy

        self.scope = scope
        self.detector = detector
        # a copy: live mode changes must not edit the caller's config object
        self.control_config = dataclasses.replace(control) if control else ControlConfig()
        self.outputs: list[Output] = list(outputs)
        self.score_threshold = score_threshold
        self.max_frames = frames
        self.max_seconds = seconds
        self.snapshot_dir = Path(snapshot_dir)
        self.snapshots = SnapshotPolicy(self.snapshot_dir, snapshot_max_per_s)
        #: why moves were stopped for the rest of the run (None: not stopped)
        self.stage_held: str | None = None
        self.switch_interval = switch_interval
        self.on_result = on_result
        self.director = director
        self.control: ControlStage | None = None  # built at start
        #: Low-rate notifications (:mod:`inscope.events`; listeners run in the thread
        #: that made the change, a failing one is logged): the mode after a change, the
        #: canonical target spec after a change, and the reason the run ended.
        self.mode_changed: Signal[Mode] = Signal("mode_changed")
        self.target_changed: Signal[str | int] = Signal("target_changed")
        self.stopped: Signal[str] = Signal("stopped")
        self._mode = Mode.parse(self.control_config.mode)
        self._stream: FrameStream | None = None
        self._slot: NewestSlot[tuple[Frame, Detections]] = NewestSlot()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._paused = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._started = False
        self._old_switch: float | None = None
        self._ctl_thread_id: int | None = None
        self._ctl_frame: Frame | None = None
        # the newest control step (tracks, target, steering, focus), read by publish
        self._ctl_state: ControlStep = NO_STEP
        self.control_steps = 0
        self.stop_reason: str | None = None
        self.error: BaseException | None = None
        # counters
        self.processed = 0
        self.detected = 0
        self.paused_frames = 0
        self.detect_errors = 0
        #: seconds of failures on every frame that stop the loop (DETECT_FAILURE_STOP_S)
        self.detect_failure_stop_s = DETECT_FAILURE_STOP_S
        #: seconds without a frame after which the loop warns (FRAME_GAP_WARN_S)
        self.frame_gap_warn_s = FRAME_GAP_WARN_S
        self.control_errors = 0
        self.last_detect_error: str | None = None
        self.last_result: Result | None = None
        self.records: deque[dict[str, int]] = deque(maxlen=keep_stamps)
        # every frame's stage latencies and the detector's own split, in bounded memory
        self.stamp_stats = StampStats(PUBLISH_STAGES, COMBOS)  # the detect thread's
        self.control_stats = StampStats(CONTROL_STAGES)  # the control thread's
        self.sent_stats = StampStats(SENT_STAGES)  # a frame later (see SENT_STAGES)
        self._unsent: dict[str, int] | None = None  # the newest frame's, not yet counted
        # camera frame numbers of the first and the newest published frame: the camera's
        # rate over the span the processed rate is measured on (summary's camera_fps)
        self._index_span: tuple[int, int] | None = None
        self.detections_total = 0
        self.t_start_ns = 0
        self.t_end_ns = 0
        self._fps = 0.0
        self._last_ready = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Start acquisition, outputs and the loop threads; returns self."""
        if self._started:
            return self
        self._started = True
        self.control = ControlStage(self.scope, self.control_config, director=self.director)
        c = self.control_config
        if (unknown := self._unknown_class(parse_target(c.target, c.target_class))) \
                is not None:
            log.warning("%s The target steers to nothing until a set_target.", unknown)
        self._apply_threshold(self.score_threshold)
        guard = getattr(self.scope, "guard", None)
        if guard is not None:
            guard.moved.connect(self._on_move)
        for out in self.outputs:
            out.start()
        if self.switch_interval:
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval)
        self._warm_up_detector()
        self.t_start_ns = time.monotonic_ns()
        try:
            self._stream = self.scope.stream()
            self._stream.start()
        except BaseException:
            self.stop_reason = "camera failed to start"
            self.stop()  # close the outputs already started; nothing is left running
            raise
        for name, fn in (("detect", self._detect_loop), ("control", self._control_loop)):
            t = threading.Thread(target=fn, name=f"inscope-{name}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def _warm_up_detector(self) -> None:
        """On a GPU provider, one detection on a snapped frame before the stream starts.

        A GPU session prepares its kernels for each new input shape on its first run
        (cuDNN's choice of algorithms and memory; TensorRT builds an engine). After the
        detector's own small warm-up frame, the first streamed frame of another size
        waited 60-80 ms on an H200 (350-510 ms with ONNX Runtime's exhaustive cuDNN
        search: ``benchmarks/results/gpu.json``, ``new_shape``) and frames were dropped.
        The snapped frame has the stream's size and goes through the same scaling. A CPU
        session has no such cost: no extra exposure there. Nor does a recording get one:
        its snap would take a frame from the stream.
        """
        provider = str(getattr(self.detector, "provider", "cpu"))
        gpu = provider in ("cuda", "tensorrt") or provider.startswith("triton")
        if not gpu or getattr(self.scope, "snap_consumes", False):
            return
        try:
            self.detector.detect(self.scope.snap())
        except Exception as e:  # noqa: BLE001 - a warm-up only; the stream reports errors
            log.debug("detector warm-up on a snapped frame skipped: %s", e)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (frames/seconds reached, stream ended, ``stop``
        command, an error). Returns True if it ended. Ctrl-C raises KeyboardInterrupt
        here, in the caller's thread, which :meth:`run` turns into a clean stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.max_seconds is not None:
            end = self.t_start_ns * 1e-9 + self.max_seconds
            deadline = end if deadline is None else min(deadline, end)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if self.max_seconds is not None and not self._done.is_set() \
                        and time.monotonic() >= self.t_start_ns * 1e-9 + self.max_seconds:
                    self._finish("seconds")
                    return True
                return self._done.is_set()
            # wake at least every 0.5 s so a signal handler gets to run on every platform
            if self._done.wait(0.5 if left is None else min(left, 0.5)):
                return True

    def stop(self) -> None:
        """Stop everything and flush every output; idempotent. Safe from any thread
        except the pipeline's own (use :meth:`request_stop` there)."""
        if self._stopped:
            return
        self._stopped = True
        self._finish(self.stop_reason or "stopped")
        self._stop.set()
        if self._stream is not None:
            self._stream.close()
        self._slot.close()
        for t in self._threads:
            t.join(10.0)
        self.t_end_ns = self.t_end_ns or time.monotonic_ns()
        for out in self.outputs:
            out.stop()
        guard = getattr(self.scope, "guard", None)
        if guard is not None:
            guard.moved.disconnect(self._on_move)
        if self.control is not None:
            self.control.close()
        if self._old_switch is not None:
            sys.setswitchinterval(self._old_switch)
            self._old_switch = None

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the run to end (thread-safe, non-blocking); :meth:`wait` returns."""
        self._finish(reason)

    def run(self) -> dict:
        """Start, wait for the end (or Ctrl-C), stop cleanly and return :meth:`summary`."""
        self.start()
        try:
            self.wait()
        except KeyboardInterrupt:
            self._finish("interrupted (Ctrl-C)")
        finally:
            self.stop()
        return self.summary()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _finish(self, reason: str) -> None:
        if not self._done.is_set():
            self.stop_reason = reason
            self.t_end_ns = time.monotonic_ns()
            self._done.set()
            self.stopped.emit(reason)

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    # -- threads -----------------------------------------------------------------------
    def _detect_loop(self) -> None:
        stream, slot, detector = self._stream, self._slot, self.detector
        stop, paused = self._stop, self._paused
        assert stream is not None, "started before the detect thread"
        streak, since = 0, 0  # detector failures in a row, and when the first one was
        frames_at_fault = True  # ... each a frame the detector refused (a ValueError)
        last_frame, gap_said = time.monotonic_ns(), False  # (the loop's start counts)
        try:
            while not stop.is_set() and not self._done.is_set():
                frame = stream.get(timeout=min(0.25, self.frame_gap_warn_s))
                now = time.monotonic_ns()
                if frame is None:
                    if not stream.running:
                        self._finish("stream ended")
                        break
                    if not gap_said and now - last_frame >= self.frame_gap_warn_s * 1e9:
                        gap_said = True
                        log.warning("no frame from %s for %.0f s; still waiting: check the "
                                    "camera (its trigger mode, a sequence stopped elsewhere)",
                                    getattr(self.scope, "name", "the camera"),
                                    (now - last_frame) / 1e9)
                    continue
                if gap_said:
                    gap_said = False
                    log.warning("frames again from %s after %.1f s without one",
                                getattr(self.scope, "name", "the camera"),
                                (now - last_frame) / 1e9)
                last_frame = frame.stamps[STAMP_DEQUEUED] = now
                if paused.is_set():
                    self.paused_frames += 1
                    continue
                try:
                    dets = detector.detect(frame)
                except Exception as e:  # noqa: BLE001 - bad frame: count, go on
                    self.detect_errors += 1
                    if self.last_detect_error is None:
                        log.warning("detector failed on frame %d: %s (the loop goes on; "
                                    "further errors are counted)", frame.index, e)
                    self.last_detect_error = f"{type(e).__name__}: {e}"
                    now = time.monotonic_ns()
                    frames_at_fault = (frames_at_fault or not streak) and isinstance(
                        e, ValueError)
                    streak, since = streak + 1, since if streak else now
                    if (streak >= DETECT_FAILURES_MIN
                            and now - since >= self.detect_failure_stop_s * 1e9):
                        # (the detectors refuse a frame they cannot read - all NaN,
                        # wrong shape - with a ValueError: if every failure of the run
                        # of them was that, the frames are at fault)
                        fix = ("check the camera or the file the frames come from"
                               if frames_at_fault else
                               "check the model, its provider or its server (the "
                               "classical detector needs none of them)")
                        raise DetectorFailing(
                            f"the detector failed on every frame for {(now - since) / 1e9:.1f}"
                            f" s ({streak} frames in a row; the last: "
                            f"{self.last_detect_error}), so the loop stopped: {fix}") from e
                    continue
                streak = 0
                st = frame.stamps
                if STAMP_DETECT_END not in st:
                    for k in (STAMP_DETECT_START, STAMP_DETECT_END):
                        if k in dets.stamps:
                            st[k] = dets.stamps[k]
                thr = self.score_threshold
                if thr is not None and len(dets) and float(dets.scores.min()) < thr:
                    dets = dets.select(dets.scores >= thr)
                self.detected += 1
                if self._mode is not Mode.OFF:
                    slot.put((frame, dets))  # control takes the newest when it is free
                self._publish(frame, dets, getattr(detector, "last_timing", None))
        except BaseException as e:  # noqa: BLE001 - e.g. the camera failed
            self.error = e
            log.error("acquisition/detection stopped: %s", e)
            self._finish(f"error: {type(e).__name__}: {e}")
        finally:
            slot.close()

    def _publish(self, frame: Frame, dets: Detections, timing: Any) -> None:
        """Hand one frame's detections to every output, with the newest control state."""
        c = self._ctl_state
        seq = self.processed
        r = Result(frame, dets, c.tracks, c.target_id, c.steer, c.focus, seq)
        st = frame.stamps
        st[STAMP_PUBLISHED] = time.monotonic_ns()
        for out in self.outputs:
            out.submit(r)
        seq += 1
        self.processed = seq
        self.detections_total += len(dets)
        self.last_result = r
        self.records.append(st)
        self.stamp_stats.add(st)
        if self._unsent is not None:
            self.sent_stats.add(self._unsent)  # (its message has gone out by now)
        self._unsent = st
        first = frame.index if self._index_span is None else self._index_span[0]
        self._index_span = (first, frame.index)
        if timing:
            self.stamp_stats.add_values(timing)
        ready = st.get(STAMP_READY, 0)
        if self._last_ready and ready > self._last_ready:
            inst = 1e9 / (ready - self._last_ready)
            self._fps = inst if not self._fps else 0.9 * self._fps + 0.1 * inst
        self._last_ready = ready
        if self.on_result is not None:
            self.on_result(r)
        if self.max_frames is not None and seq >= self.max_frames:
            self._finish("frames")

    def _control_loop(self) -> None:
        slot = self._slot
        self._ctl_thread_id = threading.get_ident()
        while True:
            item = slot.get()
            if item is None:
                if slot.closed:
                    break
                continue
            frame, dets = item
            ctl = self.control
            if ctl is None:
                continue
            frame.stamps[STAMP_CONTROL_START] = time.monotonic_ns()
            self._ctl_frame = frame
            try:
                state = ctl.step(frame, dets)
            except Exception as e:  # noqa: BLE001 - control must not kill the loop
                self.control_errors += 1
                if self.control_errors == 1:
                    log.warning("control failed on frame %d: %s (the loop goes on)",
                                frame.index, e)
                state = ControlStep(steer={"status": "error",
                                           "reason": f"{type(e).__name__}: {e}"})
            self._ctl_frame = None
            frame.stamps[STAMP_CONTROL_END] = time.monotonic_ns()
            self._ctl_state = state  # one reference swap: publish reads it whole
            self.control_steps += 1
            self.control_stats.add(frame.stamps)  # control's stages, this thread only

    def _on_move(self, rec: MoveRecord) -> None:
        """Guard listener: stamp the frame whose control step commanded this move."""
        f = self._ctl_frame
        if f is not None and threading.get_ident() == self._ctl_thread_id:
            f.stamps.setdefault(STAMP_MOVE_COMMANDED, rec.t_ns)

    # -- command API (thread-safe) -----------------------------------------------------
    def pause(self) -> None:
        """Keep acquiring (frames are dropped, counted as paused) but stop detecting."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def hold_stage(self, reason: str) -> None:
        """Stop moving the stage and focus for the rest of the run, and say why.

        Called when the command channel is lost (the REP thread died): a loop that
        steers a stage must always be stoppable, so it carries on detecting and
        publishing (control mode ``track``) but makes no more moves.
        """
        if self.stage_held is not None:
            return
        self.stage_held = reason
        log.error("%s: no more stage or focus moves in this run (control mode 'track'; "
                  "detection and outputs go on; Ctrl-C or SIGTERM stops the run).", reason)
        if self._mode.moves:
            self.set_mode(Mode.TRACK)

    def set_mode(self, mode: str) -> None:
        new = Mode.parse(mode)
        if self.stage_held is not None and new.moves:
            raise RuntimeError(f"moves are stopped for this run ({self.stage_held}).")
        self._mode = new
        self.control_config.mode = new
        if self.control is not None:
            self.control.set_mode(new)
        if new is Mode.OFF:
            self._ctl_state = NO_STEP  # publish no stale control state
        self.mode_changed.emit(new)

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_target(self, target: str | int, target_class: str | None = None) -> str | int:
        if self.control is None:
            raise RuntimeError("the pipeline is not started; start it before set_target.")
        spec = parse_target(target, target_class)
        if (unknown := self._unknown_class(spec)) is not None:
            # (accepted, it would steer to nothing, for good, without a word)
            raise ValueError(unknown)
        spec = self.control.set_target(spec)
        self.target_changed.emit(spec)
        return spec

    def _unknown_class(self, spec: str | int) -> str | None:
        """Why *spec* (a canonical target) can never be found, when it names a class the
        detector does not have (None otherwise, and for a detector naming none)."""
        names = tuple(getattr(self.detector, "class_names", ()) or ())
        prefix = f"{TargetKind.CLASS}:"
        if not (isinstance(spec, str) and spec.startswith(prefix)) or not names \
                or spec[len(prefix):] in names:
            return None
        return (f"the detector has no class {spec[len(prefix):]!r}; its classes: "
                f"{', '.join(names)}.")

    def _apply_threshold(self, thr: float | None) -> None:
        # Lower the detector's own threshold too, so a lower value can let boxes through.
        if thr is not None and hasattr(self.detector, "score_threshold"):
            try:
                cur = self.detector.score_threshold
                if cur is None or cur > thr:
                    self.detector.score_threshold = thr
            except AttributeError:
                pass

    def set_threshold(self, score: float) -> None:
        score = float(score)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"score threshold must be in [0, 1]; got {score}.")
        self._apply_threshold(score)
        self.score_threshold = score

    def snapshot(self, directory: str | None = None) -> dict[str, str]:
        """Save the newest frame (TIFF), its overlay (PNG) and detections (JSON).

        *directory* is a sub-folder of the snapshot folder (relative, no ``..``); every
        snapshot gets a new name, and they are rate-limited (:attr:`snapshots`).
        """
        import cv2
        import tifffile

        from inscope.overlay import OverlayRenderer

        r = self.last_result
        if r is None:
            raise RuntimeError("no frame processed yet; wait for the first frame (or resume "
                               "if paused) and try again.")
        stem = self.snapshots.take(directory, r.frame.index)
        paths = {"frame": f"{stem}_frame.tif", "overlay": f"{stem}_overlay.png",
                 "detections": f"{stem}_detections.json"}
        # with its pixel size (ImageJ's resolution and unit), as Fiji reads it: a plain
        # TIFF opened in pixels, unlike the run's frames.ome.tif
        px = float(r.frame.scale_um)
        tifffile.imwrite(paths["frame"], r.frame.pixels, imagej=True,
                         resolution=(1.0 / px, 1.0 / px) if px > 0 else None,
                         metadata={"unit": "um"} if px > 0 else {})
        cv2.imwrite(paths["overlay"], OverlayRenderer().render(r, mode=self.mode))
        Path(paths["detections"]).write_bytes(r.message()[1])
        return {k: str(Path(v).resolve()) for k, v in paths.items()}

    def command(self, req: dict) -> dict:
        """Handle one command dict (see docs/zmq.md); never raises for bad input."""
        cmd = req.get("cmd")
        try:
            if cmd == "status":
                return schema.ok(**self.status())
            if cmd == "pause":
                self.pause()
                return schema.ok(paused=True)
            if cmd == "resume":
                self.resume()
                return schema.ok(paused=False)
            if cmd == "set_mode":
                mode = req.get("mode")
                if not isinstance(mode, str) or mode not in tuple(Mode):
                    return schema.error(f"set_mode needs \"mode\": one of "
                                        f"{', '.join(Mode)}; got {mode!r}.")
                self.set_mode(mode)
                return schema.ok(mode=mode)
            if cmd == "set_target":
                target = req.get("target", req.get("id"))
                if target is None or isinstance(target, (bool, float, list, dict)):
                    return schema.error(
                        "set_target needs \"target\": a policy (nearest, largest, score, "
                        "class:<name>, or class with \"class\": <name>) or an integer "
                        f"track id; got {target!r}.")
                spec = self.set_target(target, req.get("class"))
                return schema.ok(target=spec)
            if cmd == "set_threshold":
                score = req.get("score", req.get("value"))
                if isinstance(score, bool) or not isinstance(score, (int, float)):
                    return schema.error("set_threshold needs \"score\": a number in [0, 1]; "
                                        f"got {score!r}.")
                self.set_threshold(score)
                return schema.ok(score_threshold=self.score_threshold)
            if cmd == "snapshot":
                return schema.ok(paths=self.snapshot(req.get("dir")))
            if cmd == "stop":
                self.request_stop("stop command")
                return schema.ok(stopping=True)
        except (ValueError, RuntimeError, OSError) as e:
            return schema.error(f"{cmd}: {e}")
        return schema.error(f"unknown command {cmd!r}; use one of "
                            f"{', '.join(schema.COMMANDS)}.")

    # -- reporting ---------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Frames acquired but never detected and published (stale in the camera slot).
        Control skipping a published frame while it is busy is counted apart
        (``control_skipped`` in :meth:`summary`)."""
        s = self._stream
        return s.dropped if s is not None else 0

    @property
    def fps(self) -> float:
        return self._fps

    def status(self) -> dict[str, Any]:
        """A cheap snapshot of the loop's state (for the REP ``status`` command)."""
        r = self.last_result
        s = self._stream
        return {
            "state": ("paused" if self.paused else "running") if self.running else "stopped",
            "processed": self.processed,
            "acquired": s.produced if s is not None else 0,
            "dropped": self.dropped,
            "paused_frames": self.paused_frames,
            "fps": round(self._fps, 2),
            "mode": self.mode,
            "target_policy": self.control.target_policy if self.control else None,
            "target_id": r.target_id if r else None,
            "score_threshold": self.score_threshold,
            "last_frame_index": r.frame.index if r else None,
            "last_detections": len(r.detections) if r else 0,
            "detector": {"name": getattr(self.detector, "name", "?"),
                         "provider": getattr(self.detector, "provider", None)},
            "microscope": getattr(self.scope, "name", "?"),
            "outputs": {o.name: {"handled": o.handled, "dropped": o.dropped}
                        for o in self.outputs},
            "stage_held": self.stage_held,
        }

    def _camera_fps(self, acquired: int, dur: float) -> float:
        """The camera's frame rate over the span ``fps`` is measured on (the first to the
        last published frame's ``ready``): the frame numbers the camera gave in it.

        Why not *acquired* over the whole run: that span includes the camera's start-up,
        and a short run then read as processing faster than its camera delivered (60
        frames: 50.3 against 38.9 fps, nothing dropped). Frame numbers that do not run
        forwards (a replay started again) fall back to that."""
        ss, span = self.stamp_stats, self._index_span
        if span is not None and span[1] > span[0] and ss.first_ready is not None \
                and ss.last_ready is not None and ss.last_ready > ss.first_ready:
            return round((span[1] - span[0]) / ((ss.last_ready - ss.first_ready) * 1e-9), 2)
        return round(acquired / dur, 2) if dur else 0.0

    def latencies(self) -> dict[str, dict]:
        """Per-stage latency percentiles (ms) over every processed frame: the
        publication path (every published frame) and control's stages (every frame
        control used)."""
        last, self._unsent = self._unsent, None
        if last is not None:
            self.sent_stats.add(last)
        out = self.stamp_stats.latencies_ms()
        out.update(self.sent_stats.latencies_ms())
        out.update(self.control_stats.latencies_ms())
        ss = self.stamp_stats
        for key in ss.value_keys():
            sketch = ss.values(key)
            if key != "total_ms" and sketch is not None:
                out[f"detector_{key.removesuffix('_ms')}"] = sketch.summary()
        return out

    def summary(self) -> dict[str, Any]:
        """Everything a run report needs (JSON-able)."""
        end = self.t_end_ns or time.monotonic_ns()
        dur = max((end - self.t_start_ns) * 1e-9, 1e-9) if self.t_start_ns else 0.0
        s = self._stream
        acquired = s.produced if s is not None else 0
        fps = self.stamp_stats.fps
        lat = self.latencies()
        out: dict[str, Any] = {
            "frames": self.processed,
            "acquired": acquired,
            "dropped": self.dropped,
            "dropped_camera_slot": s.dropped if s is not None else 0,
            "control_steps": self.control_steps,
            "control_skipped": self._slot.dropped,
            "paused_frames": self.paused_frames,
            "detect_errors": self.detect_errors,
            "control_errors": self.control_errors,
            "duration_s": round(dur, 3),
            "fps": round(fps, 2),
            "camera_fps": self._camera_fps(acquired, dur),
            "detections_per_frame": round(self.detections_total / self.processed, 2)
            if self.processed else 0.0,
            "stop_reason": self.stop_reason,
            "latency_ms": lat,
            "detector": {"name": getattr(self.detector, "name", type(self.detector).__name__),
                         "provider": getattr(self.detector, "provider", None),
                         "threads": getattr(self.detector, "threads", None)},
            "microscope": getattr(self.scope, "name", type(self.scope).__name__),
            "control": self.control.summary() if self.control else {"mode": self.mode},
            "outputs": {o.name: o.stats() for o in self.outputs},
        }
        err = self._final_error()
        out["control"]["final_centring_error_um"] = err
        if self.control is not None and self.control.last_steer is not None:
            # which target the final error is about, and what the loop was doing with it
            # (a tour that has just picked a new, distant cell shows a large error)
            last = self.control.last_steer
            out["control"]["final_target"] = {"track_id": last.get("target_id"),
                                              "status": last.get("status")}
        guard = getattr(self.scope, "guard", None)
        if guard is not None:
            made = sum(1 for m in guard.history if m.made)
            out["control"]["guard"] = {"moves_made": made,
                                       "moves_not_made": len(guard.history) - made}
        if self.error is not None:
            out["error"] = f"{type(self.error).__name__}: {self.error}"
        if self.stage_held is not None:
            out["stage_held"] = self.stage_held
        return out

    def _final_error(self) -> float | None:
        """Ground-truth centring error of the target on the newest frame control used
        (simulated frames only)."""
        ctl = self.control
        if ctl is None or ctl.last_frame is None or ctl.last_frame.truth is None:
            return None
        tid = ctl.steerer.target_id
        for t in ctl.last_tracks:
            if t.id == tid and not t.missed:
                v = truth_centering_error_um(ctl.last_frame, np.asarray(t.box))
                return None if v is None else round(v, 3)
        return None
