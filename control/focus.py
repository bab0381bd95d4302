"""Focus: sharpness metrics on detected boxes, few-image autofocus and a dithering lock.

Sharpness is measured on the crops of detected boxes only (the cells, not the empty
background, decide what "in focus" means), falling back to the whole frame when there
are no boxes. Defocus blur is symmetric about focus, so one image cannot tell which way to
go: :func:`autofocus` samples a coarse sweep, fits a parabola to log-sharpness (a Gaussian
in sharpness) and refines once; :class:`FocusLock` dithers a little above and below the
current plane only when the cells blur (or on a duty cycle), and otherwise holds still.
"""

from __future__ import annotations

import math
import threading
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
from inscope.detector.signal import noise_sigma, without_hot_pixels
from inscope.enums import AutofocusIssue, FocusStatus

__all__ = [
    "METRICS",
    "FocusAction",
    "FocusLock",
    "FocusResult",
    "autofocus",
    "depth_of_field_um",
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


#: With more boxes than this, :func:`sharpness` sums the Brenner measure of every crop
#: from one integral image of the frame's squared differences (a whole field of nuclei:
#: one pass over the frame instead of a crop per nucleus); with fewer, crop by crop is
#: cheaper.
BRENNER_INTEGRAL_BOXES = 12
#: A sweep whose sharpest image is at most this many times as sharp as its least sharp
#: one is flat: no peak in it (autofocus widens it, or reports it flat).
FLAT_SWEEP = 1.05
#: A FocusLock whose widened dither finds a peak converges only where this many of its
#: cycles' centres lie within half the dither of the plane it ends on (see
#: ``FocusLock._balance``; a balance between tipped sides rests on two already).
WIDE_CENTRES = 2
#: A pixel more than this many camera-noise sigma above the brightest of its eight
#: neighbours is a hot pixel or a cosmic-ray hit, lowered to that many before a focus
#: measure reads it (:func:`sharpness`). Noise alone never gets that far above all of
#: them (a 6-sigma excess is ~1e-9 per pixel); a nucleus' photon noise, several times
#: the background's, sometimes does, and loses only the excess. None: no such step.
HOT_PIXEL_SIGMA: float | None = 8.0
#: Also lower two hot pixels side by side (each judged against its second-brightest
#: neighbour). Off: a fixed pair keeps its sharpness and can flatten an autofocus sweep
#: (benchmarks/focus_hot_pixels.py), but judged so, some of a nucleus' brightest
#: photon-noise maxima are lowered too (it moved the simulator's z extents in a
#: bench_control run), and it costs about twice as much (docs/service.md, *Hot pixels*).
HOT_PIXEL_PAIRS = False
_BUFFERS = threading.local()


def _crop_bounds(bx: np.ndarray, pad: float, h: int, w: int) -> np.ndarray:
    """(N, 4) int crop bounds a, b, c, d (x from a to b, y from c to d) of each box grown
    by *pad* of its size, clipped to the image."""
    px, py = pad * (bx[:, 2] - bx[:, 0]), pad * (bx[:, 3] - bx[:, 1])
    a = np.maximum((bx[:, 0] - px).astype(int), 0)
    b = np.minimum(np.ceil(bx[:, 2] + px).astype(int), w)
    c = np.maximum((bx[:, 1] - py).astype(int), 0)
    d = np.minimum(np.ceil(bx[:, 3] + py).astype(int), h)
    return np.stack([a, b, c, d], 1)


def hot_pixel_margin(pixels: np.ndarray) -> float:
    """How far above all its neighbours a pixel of *pixels* may lie before a focus
    measure calls it hot: :data:`HOT_PIXEL_SIGMA` times the frame's camera noise (0 for
    a frame without noise: nothing is called hot there; 0 when the step is off)."""
    if not HOT_PIXEL_SIGMA:
        return 0.0
    return HOT_PIXEL_SIGMA * noise_sigma(pixels)


def clean_crop(pixels: np.ndarray, rows: slice, cols: slice, margin: float) -> np.ndarray:
    """``pixels[rows, cols]`` as float32 with its hot pixels lowered
    (:func:`inscope.detector.signal.without_hot_pixels`, *margin* from
    :func:`hot_pixel_margin`), each judged against its neighbours in the frame, also on
    the crop's border (the crop is cleaned with a 1-pixel rim, then trimmed)."""
    h, w = pixels.shape
    r0, r1, _ = rows.indices(h)
    c0, c1, _ = cols.indices(w)
    a, c = max(c0 - 1, 0), max(r0 - 1, 0)
    rim = np.asarray(pixels[c:min(r1 + 1, h), a:min(c1 + 1, w)], np.float32)
    if margin > 0:
        rim = without_hot_pixels(rim, margin, pairs=HOT_PIXEL_PAIRS)
    return rim[r0 - c:r1 - c, c0 - a:c1 - a]


def _brenner_boxes(img: np.ndarray, bx: np.ndarray, pad: float, hot: float) -> float:
    """:func:`sharpness` with the Brenner measure over many boxes: the same crops and
    area weights, each crop's mean squared 2-pixel difference read from one integral
    image instead of computed crop by crop."""
    h, w = img.shape
    if w < 3:
        return 0.0
    # Buffers kept per thread and shape: fresh megabyte-sized arrays each call can cost
    # more in page faults than the arithmetic itself.
    bufs = getattr(_BUFFERS, "brenner", None)
    if bufs is None or bufs[0].shape != (h, w):
        bufs = _BUFFERS.brenner = (np.empty((h, w), np.float32),
                                   np.empty((h, w - 2), np.float32),
                                   np.empty((h + 1, w - 1), np.float64))
    f, dd, ii = bufs
    np.copyto(f, img, casting="unsafe")
    if hot > 0:  # as sharpness() does crop by crop, rims included
        without_hot_pixels(f, hot, out=f, pairs=HOT_PIXEL_PAIRS)
    np.subtract(f[:, 2:], f[:, :-2], out=dd)
    np.multiply(dd, dd, out=dd)
    cv2.integral(dd, sum=ii, sdepth=cv2.CV_64F)  # ii[y, x]: the sum above and left
    cb = _crop_bounds(bx, pad, h, w)
    ok = (cb[:, 1] - cb[:, 0] >= 3) & (cb[:, 3] - cb[:, 2] >= 3)
    if not ok.any():
        return _brenner(f)
    a, b, c, d = cb[ok].T
    # a crop's differences: columns a .. b-3 of dd (pairs (x, x+2) inside the crop)
    sums = ii[d, b - 2] - ii[c, b - 2] - ii[d, a] + ii[c, a]
    means = sums / ((d - c) * (b - a - 2))
    wgt = ((b - a) * (d - c)).astype(float)
    return float((wgt * means).sum() / wgt.sum())


def brenner_noise_floor(pixels: np.ndarray) -> float:
    """Brenner value of pure camera noise in this frame (robust, from the MAD of the
    2-pixel differences over a subsample of the frame): what a frame with no structure
    would score, to be subtracted where only the specimen's sharpness should count."""
    f = np.asarray(pixels[::2, ::2], np.float32)
    d = f[:, 2:] - f[:, :-2]
    mad = float(np.median(np.abs(d - np.median(d))))
    return (1.4826 * mad) ** 2


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

    Notes
    -----
    Every measure squares or sums differences between neighbouring pixels, so one hot
    pixel or cosmic-ray hit inside a crop (tens of thousands of counts over a
    background of hundreds) outweighs the cell's own sharpness many times over: an
    autofocus sweep would pick the image that has it. A pixel more than
    :data:`HOT_PIXEL_SIGMA` camera-noise sigma above all eight of its neighbours in the
    frame is lowered to that many first
    (:func:`inscope.detector.signal.without_hot_pixels`); the noise is measured on
    *pixels* (:func:`inscope.detector.signal.noise_sigma`).
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
    hot = hot_pixel_margin(img)
    if boxes is None or len(boxes) == 0:
        return fn(clean_crop(img, slice(0, h), slice(0, w), hot))
    bx = np.asarray(boxes, float).reshape(-1, 4)
    if metric == "brenner" and len(bx) > BRENNER_INTEGRAL_BOXES:
        return _brenner_boxes(img, bx, pad, hot)
    total = 0.0
    weight = 0.0
    for a, b, c, d in _crop_bounds(bx, pad, h, w).tolist():
        if b - a < 3 or d - c < 3:
            continue
        crop = clean_crop(img, slice(c, d), slice(a, b), hot)
        wgt = float((b - a) * (d - c))
        total += wgt * fn(crop)
        weight += wgt
    if weight == 0:
        return fn(clean_crop(img, slice(0, h), slice(0, w), hot))
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
    issues
        Why it is not ok, as :class:`~inscope.enums.AutofocusIssue` members (empty
        when ok): what a caller should branch on.
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
    issues: tuple[AutofocusIssue, ...] = ()

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


def _top_middle(z: np.ndarray, v: np.ndarray, drop: float) -> tuple[float, bool]:
    """The middle of a sweep's top: where the log-sharpness *v* is within *drop* of its
    peak, around the peak, the two crossings interpolated between planes. For one
    sharp peak that is the peak; for a plateau (cells at several heights) its middle,
    which a peak's position on the ripple of the plateau is not. Also whether both
    flanks fell below the level inside the sweep (the top is bounded)."""
    order = np.argsort(z)
    z, v = np.asarray(z, float)[order], np.asarray(v, float)[order]
    i = int(np.argmax(v))
    level = float(v[i]) - drop
    lo = hi = i
    while lo > 0 and v[lo - 1] >= level:
        lo -= 1
    while hi < len(v) - 1 and v[hi + 1] >= level:
        hi += 1

    def cross(a: int, b: int) -> float:  # a on the top, b below it
        return float(z[a] + (z[b] - z[a]) * (v[a] - level) / (v[a] - v[b]))

    z_lo = cross(lo, lo - 1) if lo > 0 else float(z[0])
    z_hi = cross(hi, hi + 1) if hi < len(v) - 1 else float(z[-1])
    return 0.5 * (z_lo + z_hi), 0 < lo and hi < len(v) - 1


def autofocus(scope: Microscope, detector: Detector | None = None, search_um: float = 12.0,
              coarse: int = 5, refine: int = 2, refine_rounds: int = 2,
              redo_frac: float = 0.75,
              metric: str = "brenner",
              boxes: np.ndarray | None = None, max_extend: int = 3,
              center: float | None = None, max_images: int = 8,
              widen_flat: float = 0.0) -> FocusResult:
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

    A narrow sweep around a good prediction can be flat: every plane within the depth
    of field of the focus, or on the flat top of a thick cell. With *widen_flat* > 0 a
    coarse sweep whose sharpness varies by less than 5 % takes its next two images at
    ``center +/- widen_flat * search_um`` instead of extending or refining: when both
    are less sharp than the sweep (by 5 %), the flat top is bracketed and its middle
    (the vertex of a least-squares log-parabola through all samples, kept inside the
    sweep) is the answer; otherwise the five images are judged as any sweep (the
    sharpest plane of a flat top open on one side; not-ok when the sharpest is the
    widest plane, or nothing varies). Without it such a sweep reads as a featureless
    field.

    With the defaults that is 7 images (8 when the focus is near the edge of the search
    range, where the sweep is extended), never more than *max_images*; find-and-image
    calls it with ``coarse=3`` and a narrow range around a focus-surface prediction
    (:mod:`inscope.control.focus_surface`) for 5 images a cell. Micro-Manager's
    OughtaFocus took 7 iterations and 9.45 s in one user's log. On the simulator it ends
    within ~0.25 µm of the true focus from up to 10 µm away (``benchmarks/bench_control.py``).

    The sweep is planned inside the focus drive's soft limits (``scope.limits.z``, e.g.
    a slide's z-stack): shifted to fit, or narrowed to the whole range when that is
    shorter, and never extended or refined beyond it. Moves go through the guard; a
    refused move ends the search early (``ok=False``) and leaves the focus at the best z
    seen so far when possible.
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
    zlim = _z_limits(scope)
    if zlim is not None:
        # plan the sweep inside the focus drive's soft limits (a short z-stack, a cell
        # near the limit): the same images, shifted or narrowed to fit, instead of a
        # sweep that runs into the limit and ends after two images
        search_um = min(search_um, 0.5 * (zlim[1] - zlim[0]))
        z0 = float(np.clip(z0, zlim[0] + search_um, zlim[1] - search_um))
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

    issues: list[AutofocusIssue] = []

    def result(z_best: float, used: int, ok: bool, msg: str) -> FocusResult:
        # every sample taken so far, with its score on the crops in use now (``s``)
        return FocusResult(z_start, scope.position().z, z_best, len(imgs),
                           time.perf_counter() - t0, _sim_time(scope) - s0,
                           [(float(a), float(b)) for a, b in zip(zs, s, strict=True)],
                           metric, used, ok, msg, tuple(dict.fromkeys(issues)))

    s = scores(boxes) if imgs else np.zeros(0)
    if widen_flat > 0 and len(s) >= 3 and float(s.max()) <= FLAT_SWEEP * float(s.min()):
        top = float(s.max())
        for z in (z0 - widen_flat * search_um, z0 + widen_flat * search_um):
            if len(imgs) < max_images and _within(zlim, z):
                take(z)
        s = scores(boxes)
        if len(s) == coarse + 2 and float(s[-2:].max()) * 1.05 < top:
            # both wide planes fall off: a flat top between them, take its middle
            za = np.asarray(zs)
            inner = za[:coarse]
            pk = _parabola_peak(za, np.log(np.maximum(s, 1e-12)))
            z_mid = float(np.mean(inner)) if pk is None else float(
                np.clip(pk[0], inner.min(), inner.max()))
            ok = _safe_move_z(scope, z_mid)
            if not ok:
                issues.append(AutofocusIssue.REFUSED)
            return result(z_mid, 0 if boxes is None else len(boxes), ok,
                          "" if ok else "the move to the focus was refused")
        # else the five images are judged as any sweep below: the sharpest plane of a
        # top open on one side (its middle from noisy samples was tried: worse on HeLa),
        # not-ok when the sharpest is the widest plane or nothing varies
    # Extend the sweep while the peak sits at an end.
    for _ in range(max_extend):
        if len(s) < 2:
            break
        order = np.argsort(zs)
        i = int(np.argmax(s[order]))
        if 0 < i < len(order) - 1 or len(imgs) >= max_images:
            break
        z_new = zs[order[-1]] + step if i == len(order) - 1 else zs[order[0]] - step
        if not _within(zlim, z_new) or not take(z_new):
            break  # (at a soft limit: the peak may lie beyond it, reported below)
        s = scores(boxes)
    if len(imgs) < 3:
        z_fin = z_start
        _safe_move_z(scope, z_fin)
        issues.append(AutofocusIssue.REFUSED if refused else AutofocusIssue.FLAT)
        return result(math.nan, 0, False, "; ".join(refused) or "too few images")

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
            if len(imgs) < max_images and _within(zlim, z_est + o):
                take(z_est + o)
        s = scores(boxes)
        z_best = _bracket_peak(np.asarray(zs), np.log(np.maximum(s, 1e-12)))
        if abs(z_best - z_est) <= redo_frac * h or rnd == refine_rounds - 1:
            break
        z_est, h = z_best, h / 2
    ok = not refused
    if refused:
        issues.append(AutofocusIssue.REFUSED)
    msg = "; ".join(refused)
    if not min(zs) + 1e-6 < z_best < max(zs) - 1e-6:
        # the sharpest plane is the last one sampled: the focus may lie beyond the sweep
        # (a haze brightening towards a cell out of range looks like this)
        ok = False
        issues.append(AutofocusIssue.EDGE)
        msg = (msg + "; " if msg else "") + (
            f"no peak inside the sweep ({min(zs):.2f}-{max(zs):.2f} µm): the sharpest "
            "image is at its end, so the focus may lie beyond it")
    if float(np.max(s)) <= FLAT_SWEEP * float(np.min(s)):
        ok = False
        issues.append(AutofocusIssue.FLAT)
        msg = (msg + "; " if msg else "") + ("no sharpness peak (featureless field?): "
                                             "focus left at the start")
        z_best = z_start
    if not _safe_move_z(scope, z_best):
        ok = False
        issues.append(AutofocusIssue.REFUSED)
    return result(z_best, used, ok, msg)


def _z_limits(scope: Microscope) -> tuple[float, float] | None:
    """The focus drive's soft limits (µm), or None when it has none."""
    lim = getattr(scope, "limits", None)
    z = getattr(lim, "z", None)
    return None if z is None else (float(z[0]), float(z[1]))


def _within(zlim: tuple[float, float] | None, z: float) -> bool:
    return zlim is None or zlim[0] <= z <= zlim[1]


def _safe_move_z(scope: Microscope, z: float) -> bool:
    try:
        scope.move_z(z)
        return True
    except (MoveRefused, DeviceError):
        return False


# -- focus lock ------------------------------------------------------------------------
def depth_of_field_um(na: float, wavelength_um: float = 0.52, immersion_index: float = 1.0,
                      pixel_size_um: float = 0.0) -> float:
    """Depth of field of an objective (µm), wave-optical term plus the camera's.

    ``d = λ n / NA² + n e / NA`` with *e* the camera pixel in the specimen plane (the
    form used by Nikon's and Olympus' microscopy primers, with *e* = sensor pixel /
    magnification). 60x/1.4 oil at 520 nm with 0.108 µm pixels: ~0.52 µm; 20x/0.5 air,
    0.65 µm pixels: ~3.4 µm.
    """
    if not (na > 0 and wavelength_um > 0 and immersion_index >= 1.0):
        raise ValueError(f"depth of field needs NA > 0, wavelength > 0 and refractive index "
                         f">= 1; got NA={na}, wavelength={wavelength_um} µm, "
                         f"n={immersion_index}.")
    if na >= immersion_index:
        raise ValueError(f"NA {na} cannot reach the immersion index {immersion_index}; "
                         "check the objective's NA and the medium (air 1.0, water 1.33, "
                         "oil 1.515).")
    return (wavelength_um * immersion_index / na ** 2
            + immersion_index * max(pixel_size_um, 0.0) / na)


@dataclass
class FocusAction:
    """What :class:`FocusLock` did with one frame.

    ``status``: ``locked`` (holding; the sharpness holds), ``acquiring`` (finding the
    peak), ``correcting`` (the sharpness degraded: re-finding it), ``checking`` (a
    scheduled or scene-change check of the peak), ``settling`` (frame exposed before the
    last focus move finished: ignored), ``moving`` (frame flagged as exposed during a
    move: ignored), ``refused`` / ``failed`` / ``dry-run`` (the move was not made),
    ``lost`` (no sharpness peak found: focus left where it was), ``disabled``,
    ``no-position``.
    """

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
    """Holds the focus still while the cells stay sharp; re-finds the peak when they blur.

    Defocus blur is symmetric, so one image cannot say which way focus went. The lock
    therefore works in two regimes:

    - **holding** (``locked``): each usable frame's sharpness inside the detected boxes
      is compared with the reference taken at the peak; nothing moves while it holds.
      The tolerance is the drop the last peak fit predicts for a defocus of
      ``trigger_dof`` (1/8) of the depth of field, and never below four times the
      frame-to-frame noise, so noise alone does not trigger a move.
    - **a dither cycle** (``acquiring``, ``correcting``, ``checking``): sharpness at
      ``z_c``, ``z_c + d`` and ``z_c - d`` (``samples`` frames each); the vertex of the
      parabola through their logarithms is the new ``z_c`` (clipped to ``max_step_um``;
      a vertex beyond the samples is not trusted: a step of ``2 d`` that way; far from
      focus, where the curve is flat or convex, a full step towards the sharper side).
      When the vertex is within ``d / 2`` of the centre the lock is ``locked`` again,
      with a fresh reference. All frames of one three-point cycle are scored on the same
      crops (the boxes detected at its centre), and a hold's frames on its reference's,
      so a box found in one frame and not in another cannot tilt the comparison.
    - **a flat top** (a thick specimen, or many cells at different heights: every plane
      within a few µm is about as sharp as the best): when neither dithered plane differs
      from the centre by ``flat_drop`` (log-sharpness), the dither is doubled, up to
      ``max_dither_um``, until it reaches the flanks, and the lock converges to the plane
      midway between them (the vertex within ``dither_um / 2``). A cycle that would
      converge with one dithered plane as sharp as the centre and the other falling (the
      edge of a flat top, or a peak half a dither away) is confirmed on a wider dither
      first. Stepping towards the noisier side of a flat top instead would walk the
      focus off in a random direction, and the plane it stopped on would depend on where
      it started.

    - **a sweep first** (``acquiring``): a cold start does not know which way focus
      is, nor which of several sharpness peaks (cells at different heights, a haze
      brightening towards a cell out of range) is the field's. Before its first dither
      cycle the lock images planes ``+/- sweep_um`` around where it started, every
      ``sweep_step_um`` (the whole frame scored: which cells are detected depends on
      the plane), extended past an end that is the sharpest, and starts the cycles from
      the sharpest plane. A dither cycle alone climbs the nearest peak, so the plane it
      locked on depended on where it started.

    A cycle runs at the start, when the sharpness degrades, every ``check_every_s``
    seconds if set (an explicit duty cycle), and after the stage has travelled
    ``check_travel_um`` in XY (the comparison across scenes is void and a tilted slide
    moves the focus). A smaller XY move only renews the reference.

    The dither half-amplitude *d* is a quarter of the objective's depth of field
    (:func:`depth_of_field_um` from NA, wavelength and refractive index, or ``dof_um``),
    or ``dither_um`` when given: big enough to see, small enough that a dithered frame
    stays usable. Frames flagged ``moving`` and frames exposed before the last focus
    move settled are never measured.

    Parameters
    ----------
    scope
        Microscope whose focus drive is moved (through its guard). The live loop passes
        one whose moves are commanded and not waited for.
    dither_um
        Dither half-amplitude (µm); None: ``dof / 4``.
    max_step_um
        Largest correction per cycle; None: the depth of field.
    dof_um, na, wavelength_um, immersion_index
        Depth of field, or the objective to compute it from. None for both: the
        scope's own (``scope.config.na`` etc. on the simulator), else 2 µm with a note.
    gain
        Fraction of the estimated correction applied per cycle.
    metric
        Sharpness metric (see :func:`sharpness`).
    samples
        Frames averaged per measurement (reference and each dither point).
    trigger_dof
        Defocus, as a fraction of the depth of field, that triggers a correction.
    check_every_s
        Duty cycle: a check every this many seconds of frame time (None: only when the
        sharpness degrades or the scene changes).
    check_travel_um
        XY travel since the last check after which a check runs (None: never).
    xy_tol_um
        XY movement that renews the reference (the scene changed).
    z_tol_um
        A frame whose z is further than this from the last commanded z is not settled.
    max_settle_frames
        Give up waiting for a settled frame after this many.
    max_cycles
        A check or correction that has not converged after this many cycles (noise, a
        fast drift, a moving scene) holds its estimate (``locked``) rather than hunt.
    flat_drop
        Log-sharpness difference (0.1: about 10 %) below which a dither cycle sees a flat
        top rather than a peak.
    max_dither_um
        Widest dither on a flat top; None: twice the depth of field.
    sweep_um
        Half-range of the sweep that starts a cold acquisition (µm); None: twice the
        depth of field, at least 4 µm; 0: no sweep (dither cycles from the start plane).
    sweep_step_um
        Spacing of the sweep's planes; None: half the depth of field, at most 13 planes.
    sweep_extend
        Planes added past an end of the sweep that is the sharpest (the focus beyond it).
    """

    def __init__(self, scope: Microscope, dither_um: float | None = None,
                 max_step_um: float | None = None, *, dof_um: float | None = None,
                 na: float | None = None, wavelength_um: float = 0.52,
                 immersion_index: float = 1.0, gain: float = 1.0, metric: str = "brenner",
                 samples: int = 2, trigger_dof: float = 0.125,
                 check_every_s: float | None = None, check_travel_um: float | None = 50.0,
                 xy_tol_um: float = 1.0, z_tol_um: float = 0.05,
                 max_settle_frames: int = 10, max_cycles: int = 3,
                 flat_drop: float = 0.1, max_dither_um: float | None = None,
                 sweep_um: float | None = None, sweep_step_um: float | None = None,
                 sweep_extend: int = 6) -> None:
        if dither_um is not None and dither_um <= 0:
            raise ValueError(f"dither_um must be > 0 (µm) or None (a quarter of the depth "
                             f"of field); got {dither_um}.")
        if max_step_um is not None and max_step_um <= 0:
            raise ValueError(f"max_step_um must be > 0 (µm); got {max_step_um}.")
        if samples < 1:
            raise ValueError(f"samples must be >= 1; got {samples}.")
        self.scope = scope
        self.dof_um, self.dof_source = self._dof(scope, dof_um, na, wavelength_um,
                                                 immersion_index)
        self.dither_um = float(dither_um) if dither_um is not None else self.dof_um / 4
        self.max_step_um = float(max_step_um) if max_step_um is not None else self.dof_um
        self.gain = float(gain)
        self.metric = metric
        self.samples = int(samples)
        self.trigger_dof = float(trigger_dof)
        self.check_every_s = check_every_s
        self.check_travel_um = check_travel_um
        self.xy_tol_um = float(xy_tol_um)
        self.z_tol_um = float(z_tol_um)
        self.max_settle_frames = int(max_settle_frames)
        self.max_cycles = int(max_cycles)
        if not flat_drop > 0:
            raise ValueError(f"flat_drop must be > 0 (log-sharpness); got {flat_drop}.")
        self.flat_drop = float(flat_drop)
        self.max_dither_um = max(float(max_dither_um) if max_dither_um is not None
                                 else 2.0 * self.dof_um, self.dither_um)
        if sweep_um is not None and not sweep_um >= 0:
            raise ValueError(f"sweep_um must be >= 0 (µm; 0: no sweep) or None; got "
                             f"{sweep_um}.")
        if sweep_step_um is not None and not sweep_step_um > 0:
            raise ValueError(f"sweep_step_um must be > 0 (µm) or None; got {sweep_step_um}.")
        self.sweep_um = (max(2.0 * self.dof_um, 4.0) if sweep_um is None
                         else float(sweep_um))
        self.sweep_step_um = (max(self.dof_um / 2, self.sweep_um / 6) if sweep_step_um is None
                              else float(sweep_step_um))
        self.sweep_extend = max(0, int(sweep_extend))
        self.enabled = True
        self.history: list[FocusAction] = []
        self.moves = 0
        self.reset()

    @staticmethod
    def _dof(scope, dof_um, na, wavelength_um, n) -> tuple[float, str]:
        if dof_um is not None:
            if not dof_um > 0:
                raise ValueError(f"dof_um must be > 0 (µm); got {dof_um}.")
            return float(dof_um), "config"
        px = float(getattr(scope, "pixel_size_um", 0.0) or 0.0)
        if na is not None:
            return depth_of_field_um(na, wavelength_um, n, px), "config"
        cfg = getattr(scope, "config", None)
        if cfg is not None and getattr(cfg, "na", None):
            return depth_of_field_um(cfg.na, cfg.wavelength_um, cfg.immersion_index,
                                     px), "microscope"
        return 2.0, "default (set control.objective_na or control.focus_dof_um)"

    def reset(self) -> None:
        """Forget the lock: the next frame starts a new acquisition at the current z."""
        self.z_center: float | None = None
        self.state = "acquiring"
        self.locked = False
        self._phase = 0  # dither cycle: 0 centre, 1 plus, 2 minus
        self._acc: list[float] = []  # samples of the current measurement
        self._vals: list[float] = []  # the cycle's three log-sharpness values
        self._ref: float | None = None  # log-sharpness at the peak (holding)
        self._noise = 0.0
        self._curv = 0.0  # -d²(log s)/dz² / 2 of the last fit (per µm²)
        self._low = 0
        self._ref_xy: tuple[float, float] | None = None
        self._check_xy: tuple[float, float] | None = None
        self._travel = 0.0
        self._last_check_ns: int | None = None
        self._expect_z: float | None = None
        self._settle = 0
        self._fails = 0
        self._d = self.dither_um  # the dither of the running cycle (widened on a flat top)
        self._d_cap = self.max_dither_um
        self._crops: np.ndarray | None = None  # boxes every frame of a cycle is scored on
        self._seen: list[tuple[float, float, float]] = []  # (z_c, imbalance, dither)
        self._balanced = 0  # centres near the last wide-dither step's plane
        self._shoulders = 0
        # the cold start's sweep: planes still to image, and (z, log-sharpness) taken
        self._plan: list[float] = []
        self._swept: list[tuple[float, float]] = []
        self._extended = 0
        self._swept_middle: float | None = None  # the sweep's bounded top's middle

    @property
    def cycling(self) -> bool:
        """True while a dither cycle runs (its frames must all show one scene)."""
        return self.state != "locked" and self.z_center is not None

    @property
    def tolerance(self) -> float:
        """Drop of log-sharpness below the reference that triggers a correction."""
        by_curve = self._curv * (self.trigger_dof * self.dof_um) ** 2
        return max(by_curve, 4.0 * self._noise, 0.01)

    # -- moves -------------------------------------------------------------------------
    def _move(self, z: float) -> tuple[bool, str, str]:
        try:
            made = self.scope.move_z(z)
        except MoveRefused as e:
            return False, "refused", str(e)
        except DeviceError as e:
            return False, "failed", str(e)
        if made:
            self._expect_z = z
            self._settle = 0
            self.moves += 1
            return True, "", ""
        return False, "dry-run", "dry-run: move computed, not made"

    # -- the loop ----------------------------------------------------------------------
    def step(self, frame: Frame, detections: Detections | None = None) -> FocusAction:
        """Use *frame* (if it is usable) and move the focus when the lock needs to."""
        act = self._step(frame, detections)
        self.history.append(act)
        if len(self.history) > 1000:
            del self.history[:500]
        return act

    def _start_cycle(self, why: str, frame: Frame) -> None:
        self.state = why
        self.locked = False
        self._phase, self._acc, self._vals = 0, [], []
        self._cycles = 0
        self._d, self._d_cap = self.dither_um, self.max_dither_um
        self._seen = []
        self._shoulders = 0  # shoulders seen in a row (see _cycle)
        self._swept_middle = None  # (a new cycle: a scene or focus that has changed)
        self._last_check_ns = frame.stamps.get(STAMP_READY, 0)
        p = frame.position
        assert p is not None  # only reached through _step, which returns without a position
        self._check_xy = (p.x, p.y)
        self._travel = 0.0

    def _step(self, frame: Frame, detections: Detections | None) -> FocusAction:
        idx = frame.index
        if not self.enabled:
            return FocusAction(idx, "disabled")
        if frame.position is None:
            return FocusAction(idx, "no-position")
        if frame.moving:
            return FocusAction(idx, "moving", self._zc(), reason="exposed during a move")
        pos = frame.position
        if self.z_center is None:
            self.z_center = pos.z
            self._start_cycle("acquiring", frame)
            self._plan_sweep(pos.z)
        if self._expect_z is not None:
            self._settle += 1
            if abs(pos.z - self._expect_z) > self.z_tol_um \
                    and self._settle <= self.max_settle_frames:
                return FocusAction(idx, "settling", self.z_center,
                                   reason="frame exposed before the focus move finished")
            self._expect_z = None
        # XY: a small move renews the reference, travel adds up towards a check
        xy = (pos.x, pos.y)
        if self._ref_xy is not None:
            dxy = math.hypot(xy[0] - self._ref_xy[0], xy[1] - self._ref_xy[1])
            if dxy > self.xy_tol_um:
                self._travel += dxy
                self._ref_xy = xy
                if self.state == "locked":
                    self._ref = None  # the scene changed: measure a new reference
                    self._acc = []
                elif self._plan:  # a sweep across scenes is void: sweep again here
                    self._plan_sweep(self._zc())
                elif self._phase > 0 or self._acc:
                    self._start_cycle(self.state, frame)  # a cycle across scenes is void
        if self._plan:
            return self._sweep(frame)
        boxes = detections.boxes if detections is not None and len(detections) else None
        if self.state != "locked" or self._ref is None:
            # a cycle's centre, or a fresh reference: fix the crops that every frame of
            # the cycle, or of the hold, is scored on (a box found in one frame and not
            # the next would otherwise move the sharpness as much as a defocus)
            if (self._phase == 0 or self.state == "locked") and not self._acc:
                self._crops = None if boxes is None else np.array(boxes, float)
        boxes = self._crops
        val = math.log(max(sharpness(frame.pixels, boxes, self.metric), 1e-12))
        if self.state == "locked":
            return self._hold(frame, val)
        return self._cycle(frame, val)

    # -- the cold start's sweep -----------------------------------------------------------
    def _plan_sweep(self, z0: float) -> None:
        """Plan the planes of a cold start's sweep around *z0* (none when disabled),
        inside the focus drive's soft limits."""
        self._swept, self._acc, self._extended = [], [], 0
        if self.sweep_um <= 0:
            self._plan = []
            return
        n = max(1, int(round(self.sweep_um / self.sweep_step_um)))
        zs = [z0 + k * self.sweep_step_um for k in range(-n, n + 1)]
        self._plan = [z for z in zs if _within(_z_limits(self.scope), z)]
        self._expect_z = None  # the first plane is measured once the drive is there

    def _sweep(self, frame: Frame) -> FocusAction:
        """One frame of the sweep: measure it if it was taken at the plane due, move on
        when a plane has its samples, and at the end start the dither cycles from the
        sharpest plane."""
        idx, pos = frame.index, frame.position
        assert pos is not None  # (_step returns earlier without a position)
        self._ref_xy = self._ref_xy or (pos.x, pos.y)
        zt = self._plan[0]
        # the whole frame (which cells a detector finds depends on the plane); Brenner
        # less what camera noise alone scores (on a sparse field noise flattens it)
        raw = sharpness(frame.pixels, None, self.metric)
        if self.metric == "brenner":
            raw -= brenner_noise_floor(frame.pixels)
        val = math.log(max(raw, 1e-12))
        if abs(pos.z - zt) > self.z_tol_um:  # not there yet: go (the next frames settle)
            made, status, reason = self._move(zt)
            if not made:  # refused or dry-run: no sweep, dither from here
                self._plan = []
                return FocusAction(idx, status, self._zc(), zt, val, 0.0, False, reason)
            return FocusAction(idx, self.state, self._zc(), zt, val, 0.0, True,
                               "sweeping for the sharpest plane")
        self._acc.append(val)
        if len(self._acc) < self.samples:
            return FocusAction(idx, self.state, self._zc(), sharpness=val)
        self._swept.append((pos.z, float(np.mean(self._acc))))
        self._acc = []
        self._plan.pop(0)
        if not self._plan:
            self._plan = self._sweep_more()
        if self._plan:
            made, status, reason = self._move(self._plan[0])
            if made:
                return FocusAction(idx, self.state, self._zc(), self._plan[0], val, 0.0,
                                   True, "sweeping for the sharpest plane")
            self._plan = []  # a refused plane ends the sweep with what it has
        z = np.array([a for a, _ in self._swept])
        v = np.array([b for _, b in self._swept])
        if len(z) >= 3 and float(v.max() - v.min()) > math.log(1.05):  # else featureless
            self.z_center, bounded = _top_middle(z, v, 2.0 * self.flat_drop)
            # a top seen from flank to flank: a dither cycle that finds it flat even at
            # its widest is in its middle, not lost
            self._swept_middle = self.z_center if bounded else None
        zc = self._zc()
        made, status, reason = self._move(zc)
        return FocusAction(idx, self.state, zc, zc, val, 0.0, made,
                           reason or "swept: dither cycles from the sharpest plane")

    def _sweep_more(self) -> list[float]:
        """One plane past an end of the sweep that is still on the top (within twice
        ``flat_drop`` of the sharpest: the peak, or a plateau, may go on beyond it), up
        to ``sweep_extend`` planes, inside the soft limits; [] when both flanks fall.
        Seeing both flanks of a plateau (cells at several heights, thick nuclei) is what
        makes its middle the same from any start."""
        if self._extended >= self.sweep_extend or len(self._swept) < 2:
            return []
        z = np.array([a for a, _ in self._swept])
        v = np.array([b for _, b in self._swept])
        if float(v.max() - v.min()) <= math.log(1.05):
            return []  # featureless: nothing to follow
        top = float(v.max()) - 2.0 * self.flat_drop
        lim = _z_limits(self.scope)
        for end, step in ((int(np.argmax(z)), 1.0), (int(np.argmin(z)), -1.0)):
            nxt = float(z[end] + step * self.sweep_step_um)
            if v[end] >= top and _within(lim, nxt):
                self._extended += 1
                return [nxt]
        return []

    def _balance(self, zc: float, g: float, offset: float) -> float:
        """A wide dither's step: the plane where both flanks are equally sharp.

        A parabola through a flat top with steep flanks overshoots, so the vertex would
        bounce from flank to flank. Once two centres have seen opposite imbalances
        ``g = s(z + d) - s(z - d)`` the step interpolates between them (false position),
        which stays inside that bracket and closes it; with three or more centres near
        that root, to the root of the least-squares line through them, still inside the
        bracket (a dip between cells at two heights folds the imbalance back beyond it).
        Each imbalance is the difference of two noisy measurements, and on a wide flat
        top its slope is small: on a 7 µm plateau of the HeLa 3-D slide one noisy cycle
        moved the plane a lock ended on by +-0.16 µm, so that plane depended on where the
        lock started. :attr:`_balanced` counts the centres at this dither within ``d / 2``
        of the plane stepped to: a peak's vertex on a wide dither converges only where two
        or more cycles agree (:data:`WIDE_CENTRES`); a bracket holds two already.
        """
        prev = [(z, gg) for z, gg, dd in self._seen if dd == self._d]
        self._seen.append((zc, g, self._d))
        pts = [*prev, (zc, g)]
        other = [(z, gg) for z, gg in prev if gg * g < 0]
        if other:
            z2, g2 = min(other, key=lambda t: abs(t[0] - zc))
            root = zc - g * (z2 - zc) / (g2 - g)
            near = [(z, gg) for z, gg in pts if abs(z - root) <= self._d / 2]
            zs = np.array([z for z, _ in near])
            if len(near) >= 3 and float(np.ptp(zs)) > 0:
                slope, icpt = np.polyfit(zs, np.array([gg for _, gg in near]), 1)
                if slope < 0:  # (g = s(z + d) - s(z - d) falls through a top's middle)
                    root = -icpt / slope
            offset = float(np.clip(root, min(zc, z2), max(zc, z2)) - zc)
        new = zc + offset
        self._balanced = sum(abs(z - new) <= self._d / 2 for z, _ in pts)
        return offset

    def _zc(self) -> float:
        return math.nan if self.z_center is None else self.z_center

    def _hold(self, frame: Frame, val: float) -> FocusAction:
        idx = frame.index
        pos, zc = frame.position, self.z_center
        # _step returns early without a position and sets z_center before calling here
        assert pos is not None and zc is not None
        self._ref_xy = self._ref_xy or (pos.x, pos.y)
        if self.check_travel_um is not None and self._travel > self.check_travel_um:
            self._start_cycle("checking", frame)  # far from the last check: re-find it
            return self._cycle(frame, val)
        if self._ref is None:  # a fresh reference (after locking or a scene change)
            self._acc.append(val)
            if len(self._acc) >= self.samples:
                self._ref = float(np.mean(self._acc))
                if len(self._acc) > 1:
                    self._noise = max(self._noise * 0.5, float(np.std(self._acc)))
                self._acc = []
            return FocusAction(idx, "locked", zc, sharpness=val)
        why = None
        ready = frame.stamps.get(STAMP_READY, 0)
        if self.check_every_s is not None and self._last_check_ns is not None \
                and ready - self._last_check_ns > self.check_every_s * 1e9:
            why = "checking"
        if val < self._ref - self.tolerance:
            self._low += 1
            if self._low >= self.samples:
                why = "correcting"
        else:
            self._low = 0
        if why is None:
            return FocusAction(idx, "locked", zc, sharpness=val)
        self._low = 0
        self._start_cycle(why, frame)
        return self._cycle(frame, val)

    def _cycle(self, frame: Frame, val: float) -> FocusAction:
        idx = frame.index
        pos, zc = frame.position, self.z_center
        # _step returns early without a position and sets z_center before calling here
        assert pos is not None and zc is not None
        self._ref_xy = self._ref_xy or (pos.x, pos.y)
        if self._phase == 0 and not self._acc and abs(pos.z - zc) > self.z_tol_um:
            # a cycle restarted mid-dither (the scene changed): its centre is measured
            # at the centre, not at the dithered plane the focus was left on
            made, status, reason = self._move(zc)
            if made:
                return FocusAction(idx, self.state, zc, zc, val, 0.0, True,
                                   "back to the centre plane before the cycle")
        self._acc.append(val)
        if len(self._acc) < self.samples:
            return FocusAction(idx, self.state, zc, sharpness=val)
        self._vals.append(float(np.mean(self._acc)))
        if len(self._acc) > 1:
            self._noise = max(self._noise * 0.9, float(np.std(self._acc)))
        self._acc = []
        self._phase += 1
        d = self._d
        offset = 0.0
        if self._phase < 3:
            zt = zc + (d if self._phase == 1 else -d)
        else:
            s0, sp, sm = self._vals
            denom = sp + sm - 2 * s0
            converged = False
            flat = max(abs(sp - s0), abs(sm - s0)) < self.flat_drop
            widened = flat and d < self._d_cap
            if widened:
                # a flat top: no peak and no side within reach; widen until the flanks show
                self._d = min(2.0 * d, self._d_cap)
                denom = 0.0
            elif flat:  # flat even at the widest dither: a plateau, or featureless
                bracketed = any(g * (sp - sm) < 0 for _, g, dd in self._seen if dd == d)
                offset = self._balance(zc, sp - sm, 0.0)
                if bracketed:  # between two centres whose flanks tipped either way
                    converged = abs(offset) <= self.dither_um / 2
                    self._fails = 0
                elif self._swept_middle is not None \
                        and abs(zc - self._swept_middle) <= self.dither_um / 2:
                    # flat even at the widest dither, in the middle of a top the sweep
                    # saw from flank to flank (the boxes scored here hold cells at
                    # several heights): that middle is the plane, not lost
                    converged, offset = True, 0.0
                    self._fails = 0
                else:
                    self._fails += 1
                denom = 0.0
            elif denom < 0:
                self._curv = -denom / (2 * d * d)
                offset = d * (sp - sm) / (2 * -denom)  # vertex of the parabola
                if abs(offset) > 2 * d:  # beyond the samples: a step of 2 d, not a fit
                    offset = math.copysign(min(2 * d, self.max_step_um), offset)
                wide = d > self.dither_um
                if wide:
                    offset = self._balance(zc, sp - sm, offset)
                # converged: the vertex is within half the base dither (a wide dither's
                # vertex is not trusted to d / 2 of several µm, nor one cycle's balance
                # point: see _balance)
                converged = abs(offset) <= self.dither_um / 2
                near, far = sorted((abs(sp - s0), abs(sm - s0)))
                if converged and near < self.flat_drop / 2 and far >= self.flat_drop \
                        and d < self._d_cap:
                    # one side as sharp as the centre, the other falling: the edge of a
                    # flat top looks just like a peak half a dither away. First a cycle
                    # at the vertex with the same dither (a peak's flanks then both
                    # fall: locked, no frame dithered wider than needed); a second such
                    # shoulder in a row is confirmed on a wider dither. So is one on a
                    # wide dither at once (a layer of cells beside a dip looks like a
                    # peak to it), unless the sweep saw this top from flank to flank
                    # and its middle is within the dither's reach: then this is not the
                    # top's edge but its peak's asymmetry, and a wider dither would
                    # balance that asymmetry instead, ending on another plane by
                    # whether a shoulder happened to show on the way
                    converged = False
                    self._shoulders += 1
                    mid_top = self._swept_middle is not None \
                        and abs(zc + offset - self._swept_middle) <= d
                    if self._shoulders >= 2 or (d > self.dither_um and not mid_top):
                        self._d = min(2.0 * d, self._d_cap)
                else:
                    self._shoulders = 0
                    if converged and wide and self._balanced < WIDE_CENTRES:
                        converged = False  # one more cycle there first, see _balance
                self._fails = 0
            elif sp != sm:  # flat or convex: far from focus, go towards the sharper side
                offset = math.copysign(self.max_step_um, sp - sm)
                if d > self.dither_um:  # (a dip between cells at two heights: balance)
                    offset = self._balance(zc, sp - sm, offset)
                    converged = abs(offset) <= self.dither_um / 2
                self._fails = 0
            else:
                self._fails += 1
            offset = float(np.clip(self.gain * offset, -self.max_step_um, self.max_step_um))
            zc += offset
            self.z_center = zt = zc
            self._phase, self._vals = 0, []
            if not widened:  # widening is part of one measurement, not a new try
                self._cycles = getattr(self, "_cycles", 0) + 1
            # a check or correction near the peak that keeps hunting (noise, a fast drift,
            # a moving scene) ends after max_cycles: hold the best estimate so far
            if self.state in (FocusStatus.CHECKING, FocusStatus.CORRECTING) \
                    and self._cycles >= self.max_cycles and denom < 0:
                converged = True
            if converged:
                self.state, self.locked = "locked", True
                self._ref, self._acc, self._low = None, [], 0
                self._ref_xy = (pos.x, pos.y)
                self._check_xy, self._travel = self._ref_xy, 0.0
            elif self._fails >= 3:
                self.state = "lost"
        made, status, reason = self._move(zt)
        if not made:
            if self._d > self.dither_um:  # a widened dither reached a limit: narrow it
                self._d_cap = self._d = max(self._d / 2, self.dither_um)
            self._phase, self._vals, self._acc = 0, [], []
            if self.state == "locked":
                self._ref = None
            return FocusAction(idx, status, zc, zt, val, offset, False, reason)
        return FocusAction(idx, self.state, zc, zt, val, offset, True)


def focus_curve(scope: Microscope, zs: Sequence[float], boxes: np.ndarray | None = None,
                metric: str = "brenner") -> list[tuple[float, float]]:
    """Sharpness at each z in *zs* (a diagnostic sweep; leaves the focus at the last z)."""
    out = []
    for z in zs:
        scope.move_z(float(z))
        out.append((float(z), sharpness(scope.snap().pixels, boxes, metric)))
    return out
