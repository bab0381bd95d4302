"""inscope as a pycro-manager image processor: boxes in each image's metadata, and
follow-up events (e.g. a z-stack at each detected cell) queued from the detections.

Paste-able use (the pattern pycro-manager documents for adaptive acquisitions)::

    from pycromanager import Acquisition, multi_d_acquisition_events
    from inscope.detector import load_detector
    from inscope.integrations.pycromanager_processor import DetectionProcessor, zstack_at_cells

    proc = DetectionProcessor(load_detector(), follow_up=zstack_at_cells([-2, 0, 2]))
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, multi_d_acquisition_events(num_time_points=3))
    acq.await_completion()
    print(proc.results[0]["inscope"]["detections"][0]["center_um"])

With ``follow_up`` the processor ends the acquisition itself (it puts pycro-manager's
``None`` into the event queue once every submitted and follow-up image has been seen), so
submit events with :meth:`DetectionProcessor.acquire`, not inside ``with Acquisition``.
Images of follow-up events never start follow-ups of their own, whatever rule made the
events, so an adaptive acquisition always ends. An image the detector or the rule fails
on is passed through and counted (its metadata says what failed), never lost: an
exception raised in an image processor would stop pycro-manager's whole acquisition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inscope.acquisition.frame import StagePosition
from inscope.acquisition.micromanager import affine_from_core
from inscope.integrations.common import (
    METADATA_KEY,
    Detected,
    camera_count,
    detect_image,
    position_from_tags,
)

log = logging.getLogger(__name__)

#: Axis name that marks follow-up images; images carrying it never start more follow-ups.
FOLLOW_UP_AXIS = "cell"

FollowUp = Callable[[Detected, Mapping[str, Any]], Sequence[dict]]


def zstack_at_cells(offsets_um: Sequence[float], *, max_cells: int = 3,
                    min_score: float = 0.0, axis: str = FOLLOW_UP_AXIS) -> FollowUp:
    """A follow-up rule: for each detected cell (best score first, at most *max_cells*),
    centre the stage on it and take a z-stack at ``z + offsets_um``.

    The events carry the parent image's axes plus ``{axis: k, "z": i}`` so every image of
    the dataset keeps a unique address. Cells without a stage position (an image taken
    with no XY stage) get no follow-up.
    """
    offsets = [float(o) for o in offsets_um]
    counter = iter(range(1 << 62))

    def rule(det: Detected, metadata: Mapping[str, Any]) -> list[dict]:
        pos = det.frame.position
        if pos is None:
            return []
        cells = [d for d in det.record["detections"]
                 if d["center_um"] is not None and d["score"] >= min_score]
        cells.sort(key=lambda d: -d["score"])
        parent = {k: v for k, v in dict(metadata.get("Axes") or {}).items() if k != "z"}
        events = []
        for d in cells[:max_cells]:
            k = next(counter)
            cx, cy = d["center_um"]
            for i, dz in enumerate(offsets):
                events.append({"axes": {**parent, axis: k, "z": i}, "x": float(cx),
                               "y": float(cy), "z": float(pos.z + dz)})
        return events

    return rule


class DetectionProcessor:
    """A pycro-manager ``image_process_fn`` (three-argument form) running an inscope
    detector on every image.

    Each image's metadata gets ``metadata["inscope"]``: the boxes in pixels and stage µm
    (see :class:`~inscope.integrations.common.Detected`). The image itself is returned
    unchanged, so it is saved as usual.

    Parameters
    ----------
    detector
        Anything with ``detect(frame) -> Detections``.
    follow_up
        Optional rule ``(detected, metadata) -> [event, ...]`` (e.g.
        :func:`zstack_at_cells`); its events are put on pycro-manager's event queue.
    core
        The Micro-Manager core (pycromanager ``Core()``) to read the stage from when an
        image's tags carry no position (events that do not move the stage).
    affine
        2x2 µm-per-pixel map (a calibration's); default: the pixel-size affine of
        *core*'s current pixel configuration (a camera mounted rotated, as calibrated
        in Micro-Manager), else the tags' pixel size x identity.
    follow_up_camera
        Behind a Micro-Manager "Multi Camera" each event gives one image per physical
        camera (tag ``CameraChannelIndex``), all with the event's axes: every image is
        detected, follow-ups come from this camera's image only (so each event starts
        them once), and an event counts as done when this camera's image is seen.
    """

    def __init__(self, detector: Any, *, follow_up: FollowUp | None = None,
                 core: Any = None, affine: np.ndarray | None = None,
                 follow_up_camera: int = 0) -> None:
        self.detector = detector
        self.follow_up = follow_up
        self.core = core
        self.affine = affine
        self.follow_up_camera = int(follow_up_camera)
        self.results: list[dict[str, Any]] = []
        self.follow_up_events = 0
        self._lock = threading.Lock()
        self._pending = 0
        self._armed = False
        self._acq: Any = None
        self._queue: Any = None
        self._count = 0
        # the axes of every follow-up event queued: their images (one per camera) never
        # start follow-ups (a rule's own axis names need not include "cell")
        self._follow_up_axes: set[tuple] = set()
        # the channel settings ("config_group", "exposure") of each submitted event, by
        # axes: an image's metadata does not carry them, and a follow-up labelled with
        # its parent's channel must also be imaged in it
        self._channel_settings: dict[tuple, dict[str, Any]] = {}

    def acquire(self, acq: Any, events: dict | Sequence[dict]) -> None:
        """Submit *events* to *acq* and end it once they and their follow-ups are done.

        Several calls on one *acq* add to it; the first call on another acquisition
        starts afresh (what an aborted one never delivered is not waited for)."""
        events = [events] if isinstance(events, dict) else list(events)
        core = self.core
        cameras = None if core is None else camera_count(
            lambda: core.get_number_of_camera_channels())
        if cameras is not None and not 0 <= self.follow_up_camera < cameras:
            raise ValueError(f"follow_up_camera={self.follow_up_camera}, but the core has "
                             f"{cameras} camera(s): give 0"
                             + (f" to {cameras - 1}." if cameras > 1 else "."))
        settings = {_axes_key(dict(e.get("axes") or {})):
                    {k: e[k] for k in _CHANNEL_KEYS if k in e}
                    for e in events if isinstance(e, dict)}
        with self._lock:
            if acq is not self._acq:
                # another acquisition: the last one's follow-up axes would keep images
                # with the same axes from starting follow-ups, and images it never
                # delivered (aborted) would keep this one from ever being ended
                self._acq = acq
                self._pending = 0
                self._follow_up_axes.clear()
                self._channel_settings.clear()
            self._channel_settings.update({k: v for k, v in settings.items() if v})
            self._pending += len(events)
            self._armed = True
            self._queue = getattr(acq, "_event_queue", None)
        acq.acquire(events)

    def _position(self, tags: Mapping[str, Any]) -> StagePosition | None:
        pos = position_from_tags(tags)
        if self.core is None:
            return pos
        try:
            if pos is None:
                return StagePosition(float(self.core.get_x_position()),
                                     float(self.core.get_y_position()),
                                     float(self.core.get_position()))
            if not any(k.startswith("ZPosition") for k in tags):
                return StagePosition(pos.x, pos.y, float(self.core.get_position()))
        except Exception as e:  # noqa: BLE001 - no stage: pixel boxes only
            log.debug("no stage position from the core: %s", e)
            return pos
        return pos

    def __call__(self, image: np.ndarray, metadata: dict, event_queue: Any = None):
        axes = dict(metadata.get("Axes") or {})
        key = _axes_key(axes)
        # the one image of its event that starts follow-ups and counts the event done
        # (the others are the same event's images from the other cameras)
        counted = int(metadata.get("CameraChannelIndex") or 0) == self.follow_up_camera
        with self._lock:
            index = self._count
            self._count += 1
            follow_up_image = FOLLOW_UP_AXIS in axes or key in self._follow_up_axes
        new: list[dict] = []
        try:
            px = metadata.get("PixelSize_um", 1.0) or 1.0
            affine = self.affine
            if affine is None and self.core is not None:
                # the core's calibrated pixel -> stage map (a rotated camera)
                affine = affine_from_core(self.core.get_pixel_size_affine, px)
            det = detect_image(self.detector, image, index=index,
                               position=self._position(metadata), pixel_size_um=px,
                               affine=affine)
            record: dict[str, Any] = det.record
            if self.follow_up is not None and counted and not follow_up_image:
                try:
                    new = [dict(e) for e in self.follow_up(det, metadata)]
                except Exception as e:  # noqa: BLE001 - the image and the run go on
                    log.exception("follow-up rule failed on image %d (axes %s)", index, axes)
                    record = {**record, "follow_up_error": f"{type(e).__name__}: {e}"}
        except Exception as e:  # noqa: BLE001 - the image is passed through, not lost
            log.exception("detection failed on image %d (axes %s)", index, axes)
            record = {"n": 0, "detections": [], "error": f"{type(e).__name__}: {e}"}
        metadata[METADATA_KEY] = record
        self.results.append({"axes": axes, METADATA_KEY: record})
        queue = event_queue if event_queue is not None else self._queue
        with self._lock:
            new = [self._in_parent_channel(event, axes, key) for event in new]
            for event in new:
                self._follow_up_axes.add(_axes_key(dict(event.get("axes") or {})))
            self._pending += len(new) - (1 if counted else 0)
            self.follow_up_events += len(new)
            done = self._armed and counted and self._pending <= 0
        if new and queue is not None:
            queue.put(new)
        if done and queue is not None:
            queue.put(None)  # pycro-manager's "no more events"
        return image, metadata

    def _in_parent_channel(self, event: dict, axes: Mapping[str, Any], key: tuple) -> dict:
        """*event* with its parent image's channel settings, where it carries the parent's
        channel axis and no settings of its own: pycro-manager leaves the hardware in the
        last event's channel, so a follow-up of a DAPI image (the axes of
        :func:`zstack_at_cells` keep ``"channel": "DAPI"``) would be imaged in FITC and
        saved as DAPI."""
        parent = self._channel_settings.get(key)
        ev_axes = dict(event.get("axes") or {})
        if (not parent or "channel" not in axes
                or str(ev_axes.get("channel")) != str(axes["channel"])):
            return event
        return {**{k: v for k, v in parent.items() if k not in event}, **event}


#: Event keys that choose a channel's hardware (pycro-manager's event format).
_CHANNEL_KEYS = ("config_group", "exposure")


def _axes_key(axes: Mapping[str, Any]) -> tuple:
    """A hashable form of an event's or image's axes (values compared as strings: the
    metadata may carry an axis value as another type than the event gave it)."""
    return tuple(sorted((str(k), str(v)) for k, v in axes.items()))
