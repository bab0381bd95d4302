"""Focus: sharpness metrics on detected boxes, few-image autofocus and a dithering lock.

Sharpness is measured on the crops of detected boxes only (the cells, not the empty
background, decide what "in focus" means), falling back to the whole frame when there
are no boxes. Defocus blur is symmetric about focus, so one image cannot tell which way to
go: :func:`autofocus` samples a coarse sweep, fits a parabola to log-sharpness (a Gaussian
in sharpness) and refines once; :class:`FocusLock` dithers a little above and below the
current plane and follows the side that is sharper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from inscope.acquisition.errors import DeviceError, MoveRefused
from inscope.acquisition.frame import STAMP_READY, Frame
from inscope.acquisition.microscope import Microscope
from inscope.detector.base import Detections, Detector

__all__ = [
    "METRICS",
    "FocusAction",
    "FocusLock",
    "FocusResult",
    "autofocus",
    "sharpness",
]


# -- metrics ---------------------------------------------------------------------------
def _normvar(f: np.ndarray) -> float:
    m = float(f.mean())
    return float(f.var()) / max(m, 1e-6)


def _laplacian(f: np.ndarray) -> float:
    return float(cv2.Laplacian(f, cv2.CV_32F, ksize=3).var())


def _brenner(f: np.ndarray) -> float:
    if f.shape[1] < 3:
        return 0.0
    d = f[:, 2:] - f[:, :-2]
    return float(np.mean(d * d))


def _tenengrad(f: np.ndarray) -> float:
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(gx * gx + gy * gy))


METRICS = {"normvar": _normvar, "laplacian": _laplacian, "brenner": _brenner,
           "tenengrad": _tenengrad}


def sharpness(pixels: np.ndarray, boxes: np.ndarray | None = None,
              metric: str = "brenner", pad: float = 0.25) -> float:
    """Focus measure of *pixels*, computed on the box crops when *boxes* are given.

    Parameters
    ----------
    pixels
        2-D image.
    boxes
        (N, 4) x0, y0, x1, y1 in pixels; each crop is enlarged by *pad* times its size so
        the (sharp) edge of the cell is included. The crop values are averaged,
        weighted by crop area. None / empty: the whole frame.
    metric
        ``"brenner"`` (squared 2-pixel difference; cheap, steep near focus),
        ``"tenengrad"``, ``"laplacian"`` (variance of the Laplacian) or ``"normvar"``
        (variance / mean; robust far from focus).
    """
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"Unknown sharpness metric {metric!r}; use one of "
                         f"{sorted(METRICS)}.") from None
    img = np.asarray(pixels)
    if img.ndim != 2:
        raise ValueError(f"sharpness needs a 2-D image; got shape {img.shape}.")
    h, w = img.shape
    if boxes is None or len(boxes) == 0:
        return fn(img.astype(np.float32, copy=False))
    total = 0.0
    weight = 0.0
    for x0, y0, x1, y1 in np.asarray(boxes, float).reshape(-1, 4):
        px, py = pad * (x1 - x0), pad * (y1 - y0)
        a, b = max(int(x0 - px), 0), min(int(math.ceil(x1 + px)), w)
        c, d = max(int(y0 - py), 0), min(int(math.ceil(y1 + py)), h)
        if b - a < 3 or d - c < 3:
            continue
        crop = img[c:d, a:b].astype(np.float32)
        wgt = float((b - a) * (d - c))
        total += wgt * fn(crop)
        weight += wgt
    if weight == 0:
        return fn(img.astype(np.float32, copy=False))
    return total / weight


# -- autofocus -------------------------------------------------------------------------
@dataclass
class FocusResult:
    """Outcome of :func:`autofocus`.

    Attributes
    ----------
    z_start, z_final, z_best_estimate
        µm. ``z_final`` is where the focus drive was left (the estimate, clipped to the
        limits; the start when moves were refused).
    images
        Images taken.
    wall_s
        Wall-clock seconds spent.
    sim_s
        Simulated seconds spent (simulated microscopes only; NaN otherwise).
    samples
        (z, sharpness) of every image, in order.
    ok
        False when no clear peak was found (featureless field) or moves were refused;
        ``message`` says what happened.
    """

    z_start: float
    z_final: float
    z_best_estimate: float
    images: int
    wall_s: float
    sim_s: float = math.nan
    samples: list[tuple[float, float]] = field(default_factory=list)
    metric: str = "brenner"
    used_boxes: int = 0
    ok: bool = True
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sim_s"] = None if math.isnan(self.sim_s) else self.sim_s
        return d


def _sim_time(scope: Any) -> float:
    t = getattr(scope, "sim_time_s", None)
    if callable(t):
        t = t()
    return float(t) if t is not None else math.nan


def _parabola_peak(z: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Vertex z and curvature of a least-squares parabola; None when it opens upwards."""
    if len(np.unique(z)) < 3:  # e.g. dry-run: every sample at one z (polyfit would fail)
        return None
    zc = float(np.mean(z))
    a, b, _ = np.polyfit(z - zc, y, 2)
    if a >= 0:
        return None
    return zc - b / (2 * a), float(a)


def _bracket_peak(z: np.ndarray, y: np.ndarray) -> float:
    """Peak of the parabola through the best sample and its neighbours (sorted by z)."""
    zu, inv = np.unique(np.round(z, 6), return_inverse=True)
    yu = np.array([y[inv == k].mean() for k in range(len(zu))])
    i = int(np.argmax(yu))
    if len(zu) < 3:
        return float(zu[i])
    j = min(max(i, 1), len(zu) - 2)
    pk = _parabola_peak(zu[j - 1:j + 2], yu[j - 1:j + 2])
    if pk is None:
        return float(zu[i])
    return float(np.clip(pk[0], zu[j - 1], zu[j + 1]))


def autofocus(scope: Microscope, detector: Detector | None = None, search_um: float = 12.0,
              coarse: int = 5, refine: int = 2, refine_rounds: int = 2,
              redo_frac: float = 0.75,
              metric: str = "brenner",
              boxes: np.ndarray | None = None, max_extend: int = 3,
              center: float | None = None, max_images: int = 8) -> FocusResult:
    """Find best focus around the current z in few images.

    1. A coarse sweep of *coarse* images over ``z +/- search_um``; if the sharpest image is
       at an end, the sweep is extended that way (up to *max_extend* more images).
    2. Box crops are taken from the detector's result on the sharpest image (or *boxes*)
       and every image is re-scored on those crops only (images are kept in memory).
    3. A parabola on log-sharpness through the best sample and its neighbours gives an
       estimate; *refine* (2) more images around it (at +/- a third of the coarse step)
       and the parabola through the best sample and its two neighbours (a bracket, never
       an extrapolation) give the answer. If that moved the estimate by more than
       ``redo_frac`` times the pair's half-width, another pair half as wide is taken
       (at most *refine_rounds* pairs).

    With the defaults that is 7 images (8 when the focus is near the edge of the search
    range, where the sweep is extended), never more than *max_images*; find-and-image
    calls it with ``coarse=3`` and a narrow range around a focus-surface prediction
    (:mod:`inscope.control.focus_surface`) for 5 images a cell. Micro-Manager's
    OughtaFocus took 7 iterations and 9.45 s in one user's log. On the simulator it ends
    within ~0.25 µm of the true focus from up to 10 µm away (``benchmarks/bench_control.py``).

    Moves go through the guard; a refused move ends the search early (``ok=False``) and
    leaves the focus at the best z seen so far when possible.
    """
    if coarse < 3:
        raise ValueError(f"autofocus needs coarse >= 3 images to find a peak; got {coarse}.")
    if max_images < coarse:
        raise ValueError(f"max_images ({max_images}) must be >= coarse ({coarse}).")
    if search_um <= 0:
        raise ValueError(f"search_um must be > 0; got {search_um}.")
    t0 = time.perf_counter()
    s0 = _sim_time(scope)
    z0 = scope.position().z if center is None else float(center)
    z_start = scope.position().z
    step = 2.0 * search_um / (coarse - 1)
    zs: list[float] = []
    imgs: list[np.ndarray] = []
    refused: list[str] = []

    def take(z: float) -> bool:
        try:
            made = scope.move_z(z)
        except (MoveRefused, DeviceError) as e:
            refused.append(str(e))
            return False
        f = scope.snap()
        zz = f.position.z if (made and f.position is not None) else z
        if not made:
            zz = scope.position().z
        zs.append(float(zz))
        imgs.append(f.pixels)
        return True

    for k in range(coarse):
        take(z0 - search_um + k * step)

    def scores(bx: np.ndarray | None) -> np.ndarray:
        return np.array([sharpness(im, bx, metric) for im in imgs])

    s = scores(boxes) if imgs else np.zeros(0)
    # Extend the sweep while the peak sits at an end.
    for _ in range(max_extend):
        if len(s) < 2:
            break
        order = np.argsort(zs)
        i = int(np.argmax(s[order]))
        if 0 < i < len(order) - 1 or len(imgs) >= max_images:
            break
        z_new = zs[order[-1]] + step if i == len(order) - 1 else zs[order[0]] - step
        if not take(z_new):
            break
        s = scores(boxes)
    if len(imgs) < 3:
        z_fin = z_start
        _safe_move_z(scope, z_fin)
        return FocusResult(z_start, scope.position().z, math.nan, len(imgs),
                           time.perf_counter() - t0, _sim_time(scope) - s0,
                           list(zip(zs, s.tolist(), strict=True)), metric, 0, False,
                           "; ".join(refused) or "too few images")

    used = 0
    if boxes is None and detector is not None:
        best = int(np.argmax(s))
        fr = Frame(imgs[best], index=-1)
        det = detector.detect(fr)
        if len(det):
            boxes = det.boxes
            used = len(det)
            s = scores(boxes)
    elif boxes is not None:
        used = len(boxes)

    def estimate() -> float | None:
        za = np.asarray(zs)
        sa = np.log(np.maximum(s, 1e-12))
        order = np.argsort(za)
        za, sa = za[order], sa[order]
        i = int(np.argmax(sa))
        # Samples within one coarse step of the best (at least its two neighbours).
        near = np.abs(za - za[i]) <= step * 1.01
        if near.sum() < 3:
            lo, hi = max(i - 1, 0), min(i + 2, len(za))
            near = np.zeros(len(za), bool)
            near[lo:hi] = True
        pk = _parabola_peak(za[near], sa[near])
        if pk is None:
            return float(za[i])
        # Never trust an extrapolation beyond the sampled neighbourhood.
        return float(np.clip(pk[0], za[near].min(), za[near].max()))

    z_est = estimate()
    assert z_est is not None
    # Refinement: a symmetric pair around the estimate, then the log-parabola through the
    # best sample and its nearest neighbour on each side (a bracket, so never an
    # extrapolation). If that moved the estimate by more than half the pair's half-width
    # the first estimate was poor: repeat with a pair half as wide.
    h = step / 3.0
    z_best = z_est
    for rnd in range(max(1, refine_rounds)):
        for o in (-h, h)[: max(refine, 0)]:
            if len(imgs) < max_images:
                take(z_est + o)
        s = scores(boxes)
        z_best = _bracket_peak(np.asarray(zs), np.log(np.maximum(s, 1e-12)))
        if abs(z_best - z_est) <= redo_frac * h or rnd == refine_rounds - 1:
            break
        z_est, h = z_best, h / 2
    ok = not refused
    msg = "; ".join(refused)
    if float(np.max(s)) <= 1.05 * float(np.min(s)):
        ok = False
        msg = (msg + "; " if msg else "") + ("no sharpness peak (featureless field?): "
                                             "focus left at the start")
        z_best = z_start
    if not _safe_move_z(scope, z_best):
        ok = False
    return FocusResult(z_start, scope.position().z, z_best, len(imgs),
                       time.perf_counter() - t0, _sim_time(scope) - s0,
                       [(float(a), float(b)) for a, b in zip(zs, s, strict=True)], metric,
                       used, ok, msg)


def _safe_move_z(scope: Microscope, z: float) -> bool:
    try:
        scope.move_z(z)
        return True
    except (MoveRefused, DeviceError):
        return False


# -- focus lock ------------------------------------------------------------------------
@dataclass
class FocusAction:
    """What :class:`FocusLock` did with one frame (``status``: ``dither``, ``moved``,
    ``settling``, ``refused``, ``dry-run``, ``disabled``, ``no-position``)."""

    frame_index: int
    status: str
    z_center: float = math.nan
    z_target: float | None = None
    sharpness: float = math.nan
    offset_um: float = 0.0
    made: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


class FocusLock:
    """Follows slow focus drift while the loop runs, one frame at a time.

    A cycle takes three settled frames at ``z_c``, ``z_c + dither`` and ``z_c - dither``;
    the log-sharpness parabola through them says where the peak is (clipped to
    ``max_step_um``) and becomes the new ``z_c``. Sharpness is measured inside the
    detected boxes, so the cells, not debris, decide the focus. If the XY stage moved
    during a cycle the cycle restarts (the scene changed, the comparison is void).

    Parameters
    ----------
    scope
        Microscope whose focus drive is moved (through its guard).
    dither_um
        Half the dither amplitude; small against the depth of field so the image
        stays usable (0.3-1 µm for high-NA objectives).
    max_step_um
        Largest correction per cycle.
    gain
        Fraction of the estimated correction applied per cycle.
    metric
        Sharpness metric (see :func:`sharpness`).
    xy_tol_um
        XY movement that voids a cycle.
    """

    def __init__(self, scope: Microscope, dither_um: float = 0.5, max_step_um: float = 1.0,
                 gain: float = 0.8, metric: str = "brenner", xy_tol_um: float = 1.0,
                 z_tol_um: float = 0.05, max_settle_frames: int = 10) -> None:
        if dither_um <= 0 or max_step_um <= 0:
            raise ValueError("dither_um and max_step_um must be > 0 (µm).")
        self.scope = scope
        self.dither_um = float(dither_um)
        self.max_step_um = float(max_step_um)
        self.gain = float(gain)
        self.metric = metric
        self.xy_tol_um = float(xy_tol_um)
        self.z_tol_um = float(z_tol_um)
        self.max_settle_frames = int(max_settle_frames)
        self.enabled = True
        self.z_center: float | None = None
        self._phase = 0
        self._vals: list[float] = []
        self._xy: tuple[float, float] | None = None
        self._last_move_ns: int | None = None
        self._expect_z: float | None = None
        self._settle = 0
        self.history: list[FocusAction] = []

    def reset(self) -> None:
        self.z_center = None
        self._phase = 0
        self._vals = []
        self._xy = None
        self._last_move_ns = None
        self._expect_z = None

    def _offsets(self) -> tuple[float, float, float]:
        return (0.0, self.dither_um, -self.dither_um)

    def _move(self, z: float) -> tuple[bool, str, str]:
        try:
            made = self.scope.move_z(z)
        except MoveRefused as e:
            return False, "refused", str(e)
        except DeviceError as e:
            return False, "failed", str(e)
        if made:
            self._last_move_ns = time.monotonic_ns()
            self._expect_z = z
            self._settle = 0
            return True, "dither", ""
        return False, "dry-run", "dry-run: move computed, not made"

    def step(self, frame: Frame, detections: Detections | None = None) -> FocusAction:
        """Use *frame* for the current dither phase and move to the next one."""
        act = self._step(frame, detections)
        self.history.append(act)
        if len(self.history) > 1000:
            del self.history[:500]
        return act

    def _step(self, frame: Frame, detections: Detections | None) -> FocusAction:
        idx = frame.index
        if not self.enabled:
            return FocusAction(idx, "disabled")
        if frame.position is None:
            return FocusAction(idx, "no-position")
        pos = frame.position
        if self.z_center is None:
            self.z_center = pos.z
        # Ignore frames exposed before the last move settled.
        if self._last_move_ns is not None:
            stale = frame.stamps.get(STAMP_READY, 0) < self._last_move_ns or (
                self._expect_z is not None and abs(pos.z - self._expect_z) > self.z_tol_um)
            self._settle += 1
            if stale and self._settle <= self.max_settle_frames:
                return FocusAction(idx, "settling", self.z_center)
            self._last_move_ns = None
        xy = (pos.x, pos.y)
        if self._xy is not None and math.hypot(xy[0] - self._xy[0],
                                               xy[1] - self._xy[1]) > self.xy_tol_um:
            self._phase, self._vals = 0, []  # the scene changed: restart the cycle
        if self._phase == 0:
            self._xy = xy
        boxes = detections.boxes if detections is not None and len(detections) else None
        val = sharpness(frame.pixels, boxes, self.metric)
        self._vals.append(val)
        self._phase += 1
        offset = 0.0
        if self._phase < 3:
            zt = self.z_center + self._offsets()[self._phase]
        else:
            s0, sp, sm = (math.log(max(v, 1e-12)) for v in self._vals[:3])
            denom = sp + sm - 2 * s0
            d = self.dither_um
            if denom < 0:
                offset = d * (sp - sm) / (2 * -denom)  # vertex of the parabola
            else:  # no curvature: just go towards the sharper side
                offset = math.copysign(self.max_step_um, sp - sm) if sp != sm else 0.0
            offset = float(np.clip(self.gain * offset, -self.max_step_um, self.max_step_um))
            self.z_center += offset
            zt = self.z_center
            self._phase, self._vals = 0, []
        made, status, reason = self._move(zt)
        if status == "dither" and self._phase == 0:
            status = "moved"
        if not made:
            self._phase, self._vals = 0, []
        return FocusAction(idx, status, self.z_center, zt, val, offset, made, reason)


def focus_curve(scope: Microscope, zs: Sequence[float], boxes: np.ndarray | None = None,
                metric: str = "brenner") -> list[tuple[float, float]]:
    """Sharpness at each z in *zs* (a diagnostic sweep; leaves the focus at the last z)."""
    out = []
    for z in zs:
        scope.move_z(float(z))
        out.append((float(z), sharpness(scope.snap().pixels, boxes, metric)))
    return out
