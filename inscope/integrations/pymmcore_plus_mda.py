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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inscope.acquisition.frame import StagePosition
from inscope.acquisition.micromanager import affine_from_core
from inscope.integrations.common import Detected, detect_image

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
    Micro-Manager), else the frame's pixel size.
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
        det = detect_image(self.detector, img, index=self._count, position=pos,
                           pixel_size_um=px, affine=affine)
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
    ``{"p": cell, "z": i}`` and ``metadata["inscope_follow_up"]`` set."""
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
    would then have run out of events before any follow-up was queued.

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
    q: queue.Queue = queue.Queue()
    first = list(events)
    if not first:
        return []
    if mmc.mda.is_running():
        raise RuntimeError("Another MDA is running on this core: wait for it to end "
                           "(or cancel it) before starting an adaptive one.")

    def on_result(res: FrameResult) -> None:
        if (res.event.metadata or {}).get(FOLLOW_UP_KEY):
            return
        if int(dict(res.event.index or {}).get("cam", 0)) != follow_up_camera:
            return
        try:
            new = list(follow_up(res))
        except Exception as e:  # noqa: BLE001 - one frame's rule; the run goes on
            log.exception("follow-up rule failed on the frame of %s", res.event)
            res.follow_up_error = f"{type(e).__name__}: {e}"
            return
        for event in new:
            q.put(_as_follow_up(event))

    deadline = time.monotonic() + timeout_s
    late = [False]

    def feed() -> Iterator[Any]:
        while not q.empty():
            if time.monotonic() > deadline:
                late[0] = True
                return
            yield q.get_nowait()

    handler = FrameDetector(detector, affine=affine, on_detections=on_result)
    handler.connect(mmc)
    try:
        for e in first:
            q.put(e)
        mmc.mda.run(feed())
    finally:
        handler.disconnect()
    if late[0]:
        unrun = q.qsize()
        raise AdaptiveTimeout(
            f"The adaptive MDA ran past timeout_s={timeout_s:g} s and was stopped with "
            f"{unrun} queued events not run; the frames taken are in this error's "
            "`results`. Raise timeout_s or queue fewer follow-ups (max_cells).",
            handler.results, unrun)
    return handler.results


def _as_follow_up(event: Any) -> Any:
    """*event* as a ``useq.MDAEvent`` marked as a follow-up (a dict is converted)."""
    import useq

    ev = event if isinstance(event, useq.MDAEvent) else useq.MDAEvent(**dict(event))
    if (ev.metadata or {}).get(FOLLOW_UP_KEY):
        return ev
    return ev.model_copy(update={"metadata": {**(ev.metadata or {}), FOLLOW_UP_KEY: True}})
