"""inscope in a pymmcore-plus MDA: a ``frameReady`` handler, and an event-driven sequence
in which detections add ``useq.MDAEvent`` s (the queue-fed pattern pymmcore-plus documents
for event-driven acquisition: ``mmc.run_mda(iter(queue.get, STOP))``).

Paste-able use::

    import useq
    from pymmcore_plus import CMMCorePlus
    from inscope.detector import load_detector
    from inscope.integrations.pymmcore_plus_mda import FrameDetector, run_adaptive, zstack_at_cells

    mmc = CMMCorePlus(); mmc.loadSystemConfiguration()            # the demo config
    handler = FrameDetector(load_detector()).connect(mmc)          # boxes for every frame
    mmc.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 3})).join()
    print(handler.results[-1].record["detections"][:1])
    handler.disconnect()
    found = run_adaptive(mmc, load_detector(), [useq.MDAEvent()], zstack_at_cells([-2, 0, 2]))

pymmcore-plus is an optional dependency (``pip install inscope[pymmcore-plus]``); this
module imports it only when a function needs it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inscope.acquisition.frame import StagePosition
from inscope.acquisition.micromanager import affine_from_core
from inscope.integrations.common import Detected, camera_count, detect_image, undetected

log = logging.getLogger(__name__)

#: ``MDAEvent.metadata`` key that marks an event made by inscope (never followed up).
FOLLOW_UP_KEY = "inscope_follow_up"


@dataclass
class FrameResult:
    """Detections of one MDA frame: the ``useq.MDAEvent`` and what was found."""

    event: Any
    detected: Detected
    #: what the follow-up rule of :func:`run_adaptive` raised on this frame, if it did
    follow_up_error: str | None = None

    @property
    def error(self) -> str | None:
        """What the detector raised on this frame, if it did (then it has no boxes)."""
        return self.detected.record.get("error")

    @property
    def record(self) -> dict[str, Any]:
        return self.detected.record

    @property
    def n(self) -> int:
        return int(self.detected.record["n"])


def _position(event: Any, meta: dict | None) -> StagePosition | None:
    pos = dict((meta or {}).get("position") or {})
    x = pos.get("x", getattr(event, "x_pos", None))
    y = pos.get("y", getattr(event, "y_pos", None))
    z = pos.get("z", getattr(event, "z_pos", None))
    if x is None or y is None:
        return None
    return StagePosition(float(x), float(y), float(z or 0.0))


class FrameDetector:
    """A pymmcore-plus ``frameReady`` handler: runs the detector on every MDA frame.

    Results are kept in :attr:`results` (newest last, at most *keep*) and handed to
    ``on_detections(result)`` if given. The handler runs in the MDA runner's thread; a
    shipped-model detection costs a few ms per frame, which the runner waits for. Boxes
    are mapped to stage µm by *affine* (2x2 µm per pixel) or, by default, by the
    connected core's pixel-size affine (a camera mounted rotated, as calibrated in
    Micro-Manager), else the frame's pixel size. A frame the detector fails on (an odd
    camera image) is logged and kept with no boxes and :attr:`FrameResult.error`: raised
    out of the signal it would only be logged by pymmcore-plus, and the frame would be
    missing from the results.
    """

    def __init__(self, detector: Any, *, affine: np.ndarray | None = None,
                 on_detections: Callable[[FrameResult], Any] | None = None,
                 keep: int = 10_000) -> None:
        self.detector = detector
        self.affine = affine
        self.on_detections = on_detections
        self.keep = int(keep)
        self.results: list[FrameResult] = []
        self._mmc: Any = None
        self._count = 0

    def frameReady(self, img: np.ndarray, event: Any, meta: dict | None = None  # noqa: N802
                   ) -> FrameResult:
        """pymmcore-plus signal slot (``mmc.mda.events.frameReady``)."""
        px = float((meta or {}).get("pixel_size_um") or 1.0)
        pos = _position(event, meta)
        if pos is None and self._mmc is not None:
            # no position in the frame metadata and none commanded: the stage is where
            # it was (the runner's thread may ask the core directly)
            try:
                m = self._mmc
                pos = StagePosition(float(m.getXPosition()), float(m.getYPosition()),
                                    float(m.getPosition()))
            except Exception as e:  # noqa: BLE001 - no XY stage: pixel boxes only
                log.debug("no stage position from the core: %s", e)
                pos = None
        affine = self.affine
        if affine is None and self._mmc is not None:
            # the core's calibrated pixel -> stage map (a rotated camera)
            affine = affine_from_core(lambda: self._mmc.getPixelSizeAffine(True), px)
        try:
            det = detect_image(self.detector, img, index=self._count, position=pos,
                               pixel_size_um=px, affine=affine)
        except Exception as e:  # noqa: BLE001 - one frame; the MDA and its results go on
            log.exception("detection failed on MDA frame %d (%s)", self._count,
                          getattr(event, "index", event))
            det = undetected(img, f"{type(e).__name__}: {e}", index=self._count,
                             position=pos, pixel_size_um=px, affine=affine)
        self._count += 1
        res = FrameResult(event, det)
        self.results.append(res)
        if len(self.results) > self.keep:
            del self.results[: len(self.results) - self.keep]
        if self.on_detections is not None:
            self.on_detections(res)
        return res

    def connect(self, mmc: Any) -> FrameDetector:
        """Listen to *mmc*'s MDA frames (``mmc.mda.events.frameReady``)."""
        self.disconnect()
        mmc.mda.events.frameReady.connect(self.frameReady)
        self._mmc = mmc
        return self

    def disconnect(self) -> None:
        if self._mmc is not None:
            self._mmc.mda.events.frameReady.disconnect(self.frameReady)
            self._mmc = None


def zstack_at_cells(offsets_um: Sequence[float], *, max_cells: int = 3,
                    min_score: float = 0.0) -> Callable[[FrameResult], list]:
    """A follow-up rule: centre each detected cell (best first, at most *max_cells*) and
    take a z-stack at ``z + offsets_um``; the events are ``useq.MDAEvent`` with index
    ``{"p": cell, "z": i}`` and ``metadata["inscope_follow_up"]`` set. They keep the
    channel and exposure of the frame the cell was found in: without them the engine
    leaves the core in the sequence's last channel, and a cell found in DAPI would be
    imaged in FITC."""
    import useq

    offsets = [float(o) for o in offsets_um]
    counter = iter(range(1 << 62))

    def rule(res: FrameResult) -> list:
        pos = res.detected.frame.position
        if pos is None:
            return []
        cells = [d for d in res.record["detections"]
                 if d["center_um"] is not None and d["score"] >= min_score]
        cells.sort(key=lambda d: -d["score"])
        out = []
        for d in cells[:max_cells]:
            k = next(counter)
            cx, cy = d["center_um"]
            for i, dz in enumerate(offsets):
                out.append(useq.MDAEvent(
                    index={"p": k, "z": i},  # type: ignore[arg-type]  # useq converts
                    x_pos=float(cx), y_pos=float(cy),
                    z_pos=float(pos.z + dz),
                    channel=getattr(res.event, "channel", None),
                    exposure=getattr(res.event, "exposure", None),
                    metadata={FOLLOW_UP_KEY: True, "cell_center_px": d["center_px"],
                              "cell_box_px": d["box_px"]}))
        return out

    return rule


class AdaptiveTimeout(TimeoutError):
    """:func:`run_adaptive` ran out of time; :attr:`results` holds every frame taken."""

    def __init__(self, message: str, results: list[FrameResult], unrun: int) -> None:
        super().__init__(message)
        self.results = results
        self.unrun = unrun


def run_adaptive(mmc: Any, detector: Any, events: Iterable[Any],
                 follow_up: Callable[[FrameResult], Sequence[Any]], *,
                 affine: np.ndarray | None = None, timeout_s: float = 600.0,
                 follow_up_camera: int = 0) -> list[FrameResult]:
    """Run an event-driven MDA on *mmc*: *events* first, then whatever *follow_up* adds
    from the detections of each first-round frame; returns every frame's result.

    The MDA runs in the calling thread (``mmc.mda.run``; this call blocks until it
    ends), so every frame's handler runs before the runner asks for the next event,
    whichever signal backend the core uses: with a Qt application running (napari-
    micromanager, pymmcore-widgets) pymmcore-plus's MDA signals are Qt signals, which
    deliver a frame emitted in another thread later, on the Qt thread; a runner thread
    would then have run out of events before any follow-up was queued. From a GUI's
    button, where blocking would freeze the window, use :func:`start_adaptive`.

    The sequence ends by itself when the runner asks for the next event and none is
    queued (an event the engine skips, or one that yields no image, cannot keep it
    waiting). Follow-up frames are detected too (their boxes are in the results) but
    never start new follow-ups: every event the rule returns is marked
    ``metadata["inscope_follow_up"]``, whichever rule made it, so the run always ends. A
    rule that raises on a frame is logged and the run goes on (the frame's result says
    what it raised: :attr:`FrameResult.follow_up_error`). Past *timeout_s* no further
    event is started and :class:`AdaptiveTimeout` is raised, carrying the results.

    With a Micro-Manager "Multi Camera" each event gives one frame per physical camera
    (``index["cam"]``); every frame is detected, and follow-ups come from the frames of
    camera *follow_up_camera* only, so each event starts them once.
    """
    run = AdaptiveRun(mmc, detector, events, follow_up, affine=affine, timeout_s=timeout_s,
                      follow_up_camera=follow_up_camera, handler_wait_s=0.0)
    if not run._first:
        return []
    run._prepare()
    run._drive()
    return run._outcome()


def start_adaptive(mmc: Any, detector: Any, events: Iterable[Any],
                   follow_up: Callable[[FrameResult], Sequence[Any]], *,
                   affine: np.ndarray | None = None, timeout_s: float = 600.0,
                   follow_up_camera: int = 0, handler_wait_s: float = 10.0) -> AdaptiveRun:
    """:func:`run_adaptive` without blocking: the MDA runs in a thread of its own and
    this returns as soon as the core is acquiring, with an :class:`AdaptiveRun`
    (``done()``, ``results`` as they come, ``wait()``, ``cancel()``). For a GUI's button
    (napari-micromanager, pymmcore-widgets), whose window must keep drawing while the
    stage moves.

    Under a Qt application the frames' handlers (detection and the follow-up rule) run
    later, on the Qt thread, while the runner goes on; so when the queue is empty the
    runner waits for the first-round frames it has started to be handled before it
    decides the run is over: up to *handler_wait_s* after the last handled frame (an
    event that gives no image costs that long at the end). ``wait()`` called on the Qt
    thread keeps Qt's events flowing while it waits; a GUI would rather poll ``done()``
    or listen to ``mmc.mda.events.sequenceFinished``, which arrives after every frame.
    """
    run = AdaptiveRun(mmc, detector, events, follow_up, affine=affine, timeout_s=timeout_s,
                      follow_up_camera=follow_up_camera, handler_wait_s=handler_wait_s)
    run._start()
    return run


#: ``MDAEvent.metadata`` key numbering the events of a threaded adaptive run (how the
#: runner knows which of them still wait for their frames' handler)
_EVENT_KEY = "inscope_event"


class AdaptiveRun:
    """An adaptive MDA under way (:func:`start_adaptive`) or run (:func:`run_adaptive`).

    :attr:`results` grows as frames are handled (one :class:`FrameResult` per frame,
    follow-ups included).
    """

    def __init__(self, mmc: Any, detector: Any, events: Iterable[Any],
                 follow_up: Callable[[FrameResult], Sequence[Any]], *,
                 affine: np.ndarray | None, timeout_s: float, follow_up_camera: int,
                 handler_wait_s: float) -> None:
        self._mmc = mmc
        self._follow_up = follow_up
        self._follow_up_camera = int(follow_up_camera)
        self._timeout_s = float(timeout_s)
        self._handler_wait_s = float(handler_wait_s)
        self._first = [_as_event(e) for e in events]
        self._queue: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        # events started whose frames are not all handled yet: number -> frames to come
        self._pending: dict[int, int] = {}
        self._track = self._handler_wait_s > 0  # threaded: handlers may run later
        self._cameras = 1
        self._started = 0
        self._progress = time.monotonic()  # when a frame was last handled
        self._late = False
        self._cancelled = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._handler = FrameDetector(detector, affine=affine, on_detections=self._on_result)
        self._deadline = 0.0

    @property
    def results(self) -> list[FrameResult]:
        return self._handler.results

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        """True once the MDA has ended (or never started)."""
        return self._thread is None or not self._thread.is_alive()

    def cancel(self) -> None:
        """Start no further event and cancel the one under way (``mmc.mda.cancel``)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        if not self.done():
            self._mmc.mda.cancel()

    def wait(self, timeout: float | None = None) -> list[FrameResult]:
        """Wait for the run to end and return :attr:`results`; raises what the run
        raised (:class:`AdaptiveTimeout` past its *timeout_s*), or ``TimeoutError`` if
        it is still running after *timeout* s. On the Qt application's thread, Qt's
        events are processed meanwhile (they carry the frames to their handlers)."""
        end = None if timeout is None else time.monotonic() + float(timeout)
        pump = _qt_event_pump(self._mmc)
        while not self.done():
            if end is not None and time.monotonic() >= end:
                raise TimeoutError(f"the adaptive MDA is still running after {timeout:g} s "
                                   "(wait longer, or cancel() it)")
            if pump is not None:
                pump()
            assert self._thread is not None
            self._thread.join(0.01 if pump is not None else 0.1)
        if pump is not None:
            pump()  # frames the runner emitted last
        return self._outcome()

    # -- internals ---------------------------------------------------------------------

    def _check_free(self) -> None:
        if self._mmc.mda.is_running():
            raise RuntimeError("Another MDA is running on this core: wait for it to end "
                               "(or cancel it) before starting an adaptive one.")

    def _prepare(self) -> None:
        """Queue the first round and connect the handler, in the caller's thread: a Qt
        signal delivers to a plain function in the thread it was connected from."""
        self._check_free()
        # a Multi Camera's event gives a frame per physical camera
        self._cameras = camera_count(lambda: self._mmc.getNumberOfCameraChannels()) or 1
        self._deadline = time.monotonic() + self._timeout_s
        for e in self._first:
            self._queue.put(e)
        self._handler.connect(self._mmc)

    def _drive(self) -> None:
        """Run the MDA in this thread; the handler is disconnected when it ends."""
        try:
            self._mmc.mda.run(self._feed())
        finally:
            self._handler.disconnect()

    def _start(self) -> None:
        if not self._first:
            return
        self._prepare()

        def body() -> None:
            try:
                self._drive()
            except BaseException as e:  # noqa: BLE001 - handed to wait()
                log.exception("the adaptive MDA failed")
                self._error = e

        self._thread = threading.Thread(target=body, name="inscope-adaptive-mda",
                                        daemon=True)
        self._thread.start()
        # return once the core says it is acquiring (or the run is already over), so a
        # caller's next MDA on this core is refused rather than raced
        until = time.monotonic() + 5.0
        while (self._thread.is_alive() and not self._mmc.mda.is_running()
               and time.monotonic() < until):
            time.sleep(0.001)

    def _on_result(self, res: FrameResult) -> None:
        meta = res.event.metadata or {}
        try:
            if meta.get(FOLLOW_UP_KEY) or res.error is not None:
                return
            if int(dict(res.event.index or {}).get("cam", 0)) != self._follow_up_camera:
                return
            try:
                new = list(self._follow_up(res))
            except Exception as e:  # noqa: BLE001 - one frame's rule; the run goes on
                log.exception("follow-up rule failed on the frame of %s", res.event)
                res.follow_up_error = f"{type(e).__name__}: {e}"
                return
            for event in new:
                self._queue.put(_as_follow_up(event))
        finally:
            with self._cond:
                self._progress = time.monotonic()
                key = meta.get(_EVENT_KEY)
                if key in self._pending:
                    self._pending[key] -= 1
                    if self._pending[key] <= 0:
                        del self._pending[key]
                self._cond.notify_all()

    def _feed(self) -> Iterator[Any]:
        while True:
            if self._cancelled:
                return
            if time.monotonic() > self._deadline:
                self._late = True
                return
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                if not self._await_handlers():
                    return
                continue
            if self._track:
                key = self._started
                event = event.model_copy(
                    update={"metadata": {**(event.metadata or {}), _EVENT_KEY: key}})
                with self._cond:
                    self._pending[key] = self._cameras
                    self._progress = time.monotonic()
            self._started += 1
            yield event

    def _await_handlers(self) -> bool:
        """With the queue empty: wait for the frames of the events started to be
        handled (a first-round frame's rule may queue follow-ups, and a frame handled
        after the run would miss the core); True if there is something to run again."""
        with self._cond:
            while self._pending and self._queue.empty() and not self._cancelled:
                now = time.monotonic()
                left = min(self._progress + self._handler_wait_s, self._deadline) - now
                if left <= 0:
                    if now <= self._deadline:
                        log.warning("no frame handled for %g s: the adaptive MDA ends "
                                    "with %d events' frames not handled (an event that "
                                    "gave no image, or a Qt event loop that is not "
                                    "running)", self._handler_wait_s, len(self._pending))
                    break
                self._cond.wait(left)
        return not self._queue.empty()

    def _outcome(self) -> list[FrameResult]:
        if self._error is not None:
            raise self._error
        if self._late:
            unrun = self._queue.qsize()
            raise AdaptiveTimeout(
                f"The adaptive MDA ran past timeout_s={self._timeout_s:g} s and was "
                f"stopped with {unrun} queued events not run; the frames taken are in "
                "this error's `results`. Raise timeout_s or queue fewer follow-ups "
                "(max_cells).", self.results, unrun)
        return self.results


def _qt_event_pump(mmc: Any) -> Callable[[], Any] | None:
    """``QCoreApplication.processEvents`` when *mmc*'s MDA signals are Qt's and this is
    the Qt application's thread (where those signals are delivered), else None."""
    if not type(mmc.mda.events).__name__.startswith("Q"):
        return None
    try:
        from qtpy.QtCore import QCoreApplication, QThread
    except ImportError:
        return None
    app = QCoreApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return None
    return QCoreApplication.processEvents


def _as_event(event: Any) -> Any:
    """*event* as a ``useq.MDAEvent`` (a dict is converted)."""
    import useq

    return event if isinstance(event, useq.MDAEvent) else useq.MDAEvent(**dict(event))


def _as_follow_up(event: Any) -> Any:
    """*event* as a ``useq.MDAEvent`` marked as a follow-up (a dict is converted)."""
    ev = _as_event(event)
    if (ev.metadata or {}).get(FOLLOW_UP_KEY):
        return ev
    return ev.model_copy(update={"metadata": {**(ev.metadata or {}), FOLLOW_UP_KEY: True}})
