"""Shared helpers for tests that drive the simulated microscope with known objects.

Importable from any test as ``from _support import ...`` (pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives there). Fixtures that wrap these live in
``tests/conftest.py``.
"""

from __future__ import annotations

import math

import numpy as np

from inscope.acquisition.frame import Frame, StagePosition
from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
from inscope.detector.base import Detections


def sim_scope(seed: int = 0, guard=None, **config) -> SimulatedMicroscope:
    """The project's simulated microscope, unpaced (``realtime=False``): moves and frames
    cost simulated time only, so a control test runs as fast as frames render."""
    cfg = SimConfig(seed=seed, realtime=False, **config)
    if guard is None:
        return SimulatedMicroscope(cfg)
    return SimulatedMicroscope(cfg, guard=guard)


def boxes_at(frame: Frame, cells_um, size_px: float = 16.0, score: float = 0.9,
             class_ids=None, class_names: tuple[str, ...] = ("cell",)) -> Detections:
    """Detections whose box centres sit exactly on *cells_um* (stage µm) in *frame*.

    A controller fed these sees objects at known stage positions, so every move it makes
    can be checked against the truth with no detector noise in between.
    """
    cells = np.asarray(cells_um, float).reshape(-1, 2)
    c = frame.stage_to_pixel(cells) if len(cells) else np.zeros((0, 2))
    boxes = np.concatenate([c - size_px / 2, c + size_px / 2], axis=1)
    n = len(cells)
    cls = np.zeros(n, np.int32) if class_ids is None else np.asarray(class_ids, np.int32)
    return Detections(boxes, np.full(n, score, np.float32), cls, class_names,
                      frame_index=frame.index)


def made_moves(scope, axis: str = "xy") -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(start, target) of every move the scope's guard let through and made."""
    return [(r.start, r.target) for r in scope.guard.history if r.axis == axis and r.made]


def step_len(move) -> float:
    """Length (µm) of a (start, target) XY move."""
    (x0, y0), (x1, y1) = move
    return math.hypot(x1 - x0, y1 - y0)


def frame_at(frame: Frame, position: StagePosition | None, index: int | None = None,
             ready_ns: int | None = None) -> Frame:
    """A copy of *frame* reporting another stage position / exposure stamp (what a camera
    returns for an image exposed while the stage was elsewhere)."""
    stamps = dict(frame.stamps)
    if ready_ns is not None:
        stamps["ready"] = ready_ns
    return Frame(frame.pixels, frame.index if index is None else index, stamps, position,
                 frame.pixel_size_um, frame.affine.copy())


def disc_track(tid: int, cx: float, cy: float, r: float = 12.0, *, hits: int = 5,
               score: float = 0.9, missed: int = 0, um=None):
    """A :class:`~inscope.control.tracking.Track` of a disc of radius *r* px at pixel
    (*cx*, *cy*) of a 0.5 µm/px frame (stage µm = pixel / 2 unless *um* is given)."""
    from inscope.control.tracking import Track

    box = np.array([cx - r, cy - r, cx + r, cy + r])
    center_um = np.array(um if um is not None else [cx * 0.5, cy * 0.5], float)
    return Track(tid, box, center_um, np.array([2 * r * 0.5] * 2), score=score, hits=hits,
                 missed=missed)


def disc_frame(tracks, brightness=None, *, index: int = 0, t_s: float | None = None,
               position: StagePosition | None = None, moving: bool = False,
               metadata=None, truth=None) -> Frame:
    """A 400 x 400, 0.5 µm/px frame drawing each track's disc (grey level 1000, or
    *brightness*[id]) on a background of 100; *t_s* is its simulator clock
    (``sim_time_s``)."""
    import cv2

    img = np.full((400, 400), 100, np.uint16)
    for t in tracks:
        cx, cy = (t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2
        r = (t.box[2] - t.box[0]) / 2
        v = (brightness or {}).get(t.id, 1000)
        cv2.circle(img, (int(cx), int(cy)), max(int(r) - 1, 0), int(v), -1)
    meta = dict(metadata or {})
    if t_s is not None:
        meta["sim_time_s"] = t_s
    pos = position if position is not None else StagePosition(100.0, 100.0, 0.0)
    return Frame(img, index, position=pos, pixel_size_um=0.5, metadata=meta,
                 truth=truth, moving=moving)


def ids_reaching(cells, x0: float, y0: float, x1: float, y1: float, t: float) -> list[int]:
    """Ids (sorted) of the simulated *cells* whose box at time *t* reaches the rectangle:
    the brute-force answer the specimen's indexed lookup (``cells_near``) must give."""
    out = []
    for c in cells:
        x, y = c.position(t)
        hx, hy = c.half_extent_um()
        if x + hx >= x0 and x - hx <= x1 and y + hy >= y0 and y - hy <= y1:
            out.append(c.id)
    return sorted(out)


def light_centroid(img: np.ndarray) -> np.ndarray:
    """(x, y) centroid of the light in *img* (offset already taken off), pixels under 5 %
    of the brightest left out: where a single nucleus is drawn."""
    w = np.where(img > 0.05 * img.max(), img, 0.0)
    yy, xx = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def one_error_line(capsys) -> tuple[str, str]:
    """A command's stderr as one ``error:`` line (no traceback anywhere), and its stdout:
    what every refused command must print."""
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in cap.err + cap.out
    return err, cap.out


def refused_in_one_line(call, *args, exc: type[BaseException] = ValueError, **kw) -> str:
    """The message of the *exc* that ``call(*args, **kw)`` raises, checked to be one line
    (bad input gets one line naming the problem and the fix)."""
    import pytest

    with pytest.raises(exc) as e:
        call(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg
