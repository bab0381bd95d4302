"""Boxes on time: draw a moving cell's box where the cell is when the display shows it.

The eyepiece overlay shows each box some tens of milliseconds after its frame was exposed
(exposure, readout, detection, control, drawing, the display's own lag), while the eye sees
the specimen *now*: a cell moving at 50 µm/s has moved ~2 µm by then and its box trails
behind it. :class:`BoxPredictor` moves each tracked box along its track's velocity by the
time from the middle of the exposure to the moment the display shows the box:

    horizon = (draw time - exposure middle) + display lag

The first part is measured for every frame from its time stamps (``ready`` minus half the
exposure, to the moment of drawing); the display lag (frame buffering, scan-out, the
projector) is measured by the live ``inscope calibrate-eyepiece`` and stored in the
calibration file, or set with ``outputs.eyepiece.display_lag_ms``.

The tracker says which box belongs to which cell; the predictor fits each track's
velocity (µm/s, stage axes) to its recent positions and turns the displacement into camera
pixels through the frame's own pixel <-> stage affine. Boxes without a track, or whose track
is too young (tracking off: control mode ``off``), are drawn where they were detected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inscope.enums import Stamp

#: Display lag (ms) when neither the configuration nor the calibration gives one: about
#: one refresh plus input lag of a 60 Hz display.
DEFAULT_DISPLAY_LAG_MS = 25.0

#: Optional frame stamp: ``time.monotonic_ns()`` of the middle of the exposure. Backends
#: that know it may set it; otherwise it is ``ready`` minus half of
#: ``metadata["exposure_ms"]``.
STAMP_EXPOSURE_MID: str = Stamp.EXPOSURE_MID.value


def exposure_mid_ns(frame: Any) -> int:
    """Monotonic time (ns) of the middle of *frame*'s exposure, as well as it is known."""
    stamps = frame.stamps
    if STAMP_EXPOSURE_MID in stamps:
        return int(stamps[STAMP_EXPOSURE_MID])
    exposure_ms = float((frame.metadata or {}).get("exposure_ms", 0.0) or 0.0)
    return int(stamps["ready"] - exposure_ms * 0.5e6)


@dataclass
class Prediction:
    """What was drawn for one frame (for checks and benchmarks).

    Attributes
    ----------
    boxes
        (N, 4) boxes to draw (camera px), predicted where a track allowed it.
    shift_px
        (N, 2) shift applied to each detection box (zeros where none).
    horizon_s
        Exposure middle -> display time used (s).
    """

    boxes: np.ndarray
    shift_px: np.ndarray
    horizon_s: float


class BoxPredictor:
    """Moves tracked boxes to their predicted position at display time.

    Each track's velocity (µm/s, stage axes) is a least-squares line through the positions
    of its boxes over the last ``window_s`` seconds of exposures (at least ``min_points``
    of them). The tracker's own per-update velocity is smoothed over about two frames:
    extrapolated the 5-10 frames of a display latency it turns ~1 px of box jitter into
    5-10 px of jumping (measured: benchmarks/bench_eyepiece_prediction.py), so only the
    tracker's identities are used here.

    Parameters
    ----------
    display_lag_ms
        Time from drawing the image to the display showing it (ms): buffering, scan-out
        and the projector. One refresh of a 60 Hz display plus its input lag is typically
        20-40 ms; the live ``inscope calibrate-eyepiece`` measures yours
        (:func:`inscope.eyepiece.measure_display_lag_ms`).
    enabled
        False: boxes are drawn where they were detected (prediction off).
    window_s, min_points
        Velocity fit window and the fewest positions in it.
    max_horizon_ms
        Never predict further ahead than this (a stalled display must not throw boxes
        across the field).
    max_shift_boxes
        A predicted shift longer than this many box sizes (mean of width and height) is
        not trusted and the box is drawn as detected (a track that switched cells).
    clock
        ``time.monotonic_ns`` (the clock of the frames' stamps); replaceable in tests.
    """

    def __init__(self, display_lag_ms: float = DEFAULT_DISPLAY_LAG_MS, enabled: bool = True,
                 window_s: float = 0.3, min_points: int = 4, max_horizon_ms: float = 250.0,
                 max_shift_boxes: float = 1.0,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        if not display_lag_ms >= 0:
            raise ValueError(f"display_lag_ms must be >= 0; got {display_lag_ms}.")
        self.display_lag_ms = float(display_lag_ms)
        self.enabled = bool(enabled)
        self.window_s = float(window_s)
        self.min_points = max(int(min_points), 2)
        self.max_horizon_ms = float(max_horizon_ms)
        self.max_shift_boxes = float(max_shift_boxes)
        self.clock = clock
        self._hist: dict[int, deque[tuple[float, float, float]]] = {}

    def horizon_s(self, frame: Any, draw_ns: int | None = None) -> float:
        """Seconds from the middle of *frame*'s exposure to its display."""
        draw_ns = self.clock() if draw_ns is None else draw_ns
        h = (draw_ns - exposure_mid_ns(frame)) * 1e-9 + self.display_lag_ms * 1e-3
        return float(min(max(h, 0.0), self.max_horizon_ms * 1e-3))

    def velocity_um_s(self, track_id: int) -> np.ndarray | None:
        """Fitted velocity (µm/s) of a track, or None without enough recent positions."""
        h = self._hist.get(track_id)
        if h is None or len(h) < self.min_points:
            return None
        a = np.asarray(h)
        t = a[:, 0] - a[:, 0].mean()
        if np.ptp(t) <= 0:
            return None
        return (t @ (a[:, 1:] - a[:, 1:].mean(0))) / (t @ t)

    def _remember(self, t_s: float, ids: Sequence[int | None], centers_um: np.ndarray
                  ) -> None:
        for tid, c in zip(ids, centers_um, strict=True):
            if tid is None:
                continue
            h = self._hist.setdefault(tid, deque())
            if h and t_s <= h[-1][0]:
                continue  # a result seen twice, or out of order
            h.append((t_s, float(c[0]), float(c[1])))
            while h and h[0][0] < t_s - self.window_s:
                h.popleft()
        for tid in [k for k, h in self._hist.items() if h[-1][0] < t_s - self.window_s]:
            del self._hist[tid]  # tracks gone from view

    def predict(self, r: Any, draw_ns: int | None = None) -> Prediction:
        """Boxes of pipeline result *r* at its display time.

        Parameters
        ----------
        r
            :class:`inscope.outputs.Result` (frame, detections, tracks).
        draw_ns
            When the image is drawn (default: now).
        """
        boxes = np.asarray(r.detections.boxes, np.float64).reshape(-1, 4)
        shift = np.zeros((len(boxes), 2))
        frame = r.frame
        horizon = self.horizon_s(frame, draw_ns)
        if not len(boxes) or not r.tracks or frame.position is None:
            return Prediction(boxes, shift, horizon)
        ids = r.track_ids()
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
        self._remember(exposure_mid_ns(frame) * 1e-9, ids, frame.pixel_to_stage(centers))
        if not self.enabled:
            return Prediction(boxes, shift, horizon)
        a_inv = np.linalg.inv(np.asarray(frame.affine, np.float64))
        for i, tid in enumerate(ids):
            v = None if tid is None else self.velocity_um_s(tid)
            if v is None:
                continue
            d = a_inv @ (v * horizon)
            size = 0.5 * ((boxes[i, 2] - boxes[i, 0]) + (boxes[i, 3] - boxes[i, 1]))
            if np.hypot(*d) <= self.max_shift_boxes * size:
                shift[i] = d
        return Prediction(boxes + np.hstack([shift, shift]), shift, horizon)
