"""Is there an object in the box? A check of the pixels behind each detection.

A network trained on fields of nuclei has never seen a field without any: pointed at an
empty part of the coverslip it still finds "nuclei", because the percentile stretch of
its input (:func:`inscope.detector.preprocess.normalise`) blows the camera noise and a few
specks of debris up to the contrast of cells. On simulated empty fields with debris the
shipped model returned ~21 boxes per 512 x 512 frame at its threshold, boxes of empty
noise or of a speck a few pixels wide (``benchmarks/sparse_fields.py``).

A nucleus fills most of its box, and each of those pixels is brighter than the
background; a box drawn round noise or round a speck is mostly background. So a
detection is kept only when more than half of its pixels (its median) lie at least
``k`` camera-noise standard deviations above the frame's background. The noise is
measured on the frame itself (the spread of neighbouring pixels' second differences,
which cancel the specimen's smooth signal), the background from its dimmest pixels
(the 5th percentile is 1.645 noise sigma below the background's mean where at least a
tenth of the frame is background). The check costs a threshold and an integral image
and reads each box in O(1) (``benchmarks/results/sparse_fields.json``, ``has_signal_ms``).

Where it cannot hurt: a nucleus as dim as the noise (signal-to-noise 1) still has its
median about one sigma up; an upsampled or smoothed frame has correlated neighbours, so
its noise is underestimated and fewer boxes are dropped, not more.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from inscope.detector.preprocess import percentile_range

__all__ = ["background_level", "has_signal", "noise_sigma", "without_hot_pixels"]

#: rows and differences read for the noise estimate (a quartile of 32k values: ~1 %)
_NOISE_ROWS = 64
_NOISE_SAMPLES = 32768
#: the 5th percentile of Gaussian noise lies this many sigma below its mean
_Z05 = 1.6449
#: the lower quartile of |z| for a standard normal z (scipy.stats.norm.ppf(0.625))
_Q25_ABS_NORMAL = 0.3186


def noise_sigma(img: np.ndarray) -> float:
    """The camera noise's standard deviation in *img* (its units), from the second
    differences of neighbouring pixels along up to 64 rows (``x[i-1] - 2 x[i] + x[i+1]``,
    variance 6 sigma^2 for white noise: a gradient or an even blur cancels). Their lower
    quartile, not their median, is read: where nuclei cover much of a frame their edges
    are a fifth of the differences or more, and the quartile then reads the noise ~20 %
    high instead of ~30 % (tests/detector/test_signal_check.py). 0 for an image without
    noise (synthetic, or quantised flat)."""
    h, w = img.shape
    if w < 3:
        return 0.0
    rows = np.asarray(img[:: max(1, h // _NOISE_ROWS)], np.float32)
    d = np.abs(rows[:, 2:] - 2.0 * rows[:, 1:-1] + rows[:, :-2]).ravel()
    if d.size > _NOISE_SAMPLES:
        d = d[:: -(-d.size // _NOISE_SAMPLES)]
    k = d.size // 4
    q25 = float(np.partition(d, k)[k])
    return q25 / (_Q25_ABS_NORMAL * math.sqrt(6.0))


def background_level(img: np.ndarray, sigma: float) -> float:
    """The mean background of *img*: its 5th percentile (a strided subsample) plus 1.645
    *sigma* - the background's own spread, where at least a tenth of the frame is
    background. In a frame packed wall to wall the percentile lies on the dimmest nuclei
    and the estimate is high, which could drop boxes of nuclei dimmer than most; not
    seen on simulated fields packed at 4000 nuclei per mm^2 (``sparse_fields.json``)."""
    p5, _ = percentile_range(img, 5.0, 50.0, 4)
    return p5 + _Z05 * sigma


def has_signal(img: np.ndarray, boxes: np.ndarray, k: float) -> np.ndarray:
    """Which *boxes* (x0, y0, x1, y1, pixel centres at integers) have more than half of
    their pixels at least *k* noise sigma above the background of *img*.

    A box holding no pixel centre (thinner than a pixel) is kept: there is nothing to
    judge it by.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(b):
        return np.zeros(0, bool)
    sigma = noise_sigma(img)
    level = background_level(img, sigma) + k * sigma
    # above 1 Mpx every other pixel in each direction is read: a box of the smallest
    # nuclei (7 px) still holds 9+ of them, and the integral image - most of the cost,
    # being memory-bound - is a quarter the size
    step = 1 if img.size <= 1 << 20 else 2
    sampled = img[::step, ::step]
    h, w = sampled.shape
    bright = np.greater(sampled, level).view(np.uint8)  # 1 above the level, else 0
    ii = cv2.integral(bright)  # (h + 1, w + 1): the bright pixels above-left
    # the (sampled) pixel centres a box holds: columns ceil(x0) .. floor(x1), rows alike
    bs = b / step
    c0 = np.clip(np.ceil(bs[:, 0]), 0, w).astype(np.intp)
    c1 = np.clip(np.floor(bs[:, 2]) + 1, 0, w).astype(np.intp)
    r0 = np.clip(np.ceil(bs[:, 1]), 0, h).astype(np.intp)
    r1 = np.clip(np.floor(bs[:, 3]) + 1, 0, h).astype(np.intp)
    area = np.maximum(c1 - c0, 0) * np.maximum(r1 - r0, 0)
    count = ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]
    return (area == 0) | (2 * count > area)


#: the eight neighbours of a pixel (its 3 x 3 window without the centre), and its four
#: side and four corner neighbours
_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)
_SIDES = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.uint8)
_CORNERS = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], np.uint8)
#: the eight neighbours as (row, column) offsets
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def without_hot_pixels(img: np.ndarray, margin: float = 0.0,
                       out: np.ndarray | None = None,
                       work: np.ndarray | None = None, pairs: bool = False) -> np.ndarray:
    """*img* with no pixel more than *margin* above the brightest of its eight neighbours
    (with *pairs*: above all of them but one).

    An isolated hot pixel of an uncorrected sCMOS frame, or a one-pixel cosmic-ray hit,
    is lowered to its surroundings; every pixel within *margin* of a neighbour is
    unchanged (a 3 x 3 median would also erode the edges of the smallest nuclei, and
    blunt the texture that focus measures read). One dilation and one minimum: ~0.2 ms
    on a 512 x 512 frame. Two hot pixels side by side are each other's brightest
    neighbour and stay, unless *pairs*: then a pixel is judged against its
    second-brightest neighbour, so both are lowered (a run of three or more, a
    cosmic-ray track, still stays; so does a line one pixel wide, each of whose pixels
    has two bright neighbours - only its two end pixels are lowered).

    Parameters
    ----------
    img
        2-D image of a type OpenCV's dilate takes (uint8, uint16, int16, float32,
        float64).
    margin
        How far above its brightest neighbour a pixel may stay, in *img*'s units. 0
        flattens every strict local maximum - right where only objects' extents
        matter (the object-size estimate); a measure of fine detail should leave the
        camera noise's own maxima alone with several noise sigma (:func:`noise_sigma`).
    out
        Where to write the result (same shape and type; may be *img* itself): a caller
        that measures every frame of a stream keeps one buffer instead of a fresh
        frame-sized array each call (at 2048 x 2048 the fresh arrays' page faults cost
        more than the arithmetic). With *pairs* and no *out*, *img* itself comes back
        when no pixel is lowered, else a copy.
    work
        A buffer like *out* for the neighbours' maximum (not *img* or *out*).
    pairs
        Judge each pixel against its second-brightest neighbour. Costs a second
        dilation; the exact second-brightest is read only where a pixel stands out
        from its four side or its four corner neighbours (a handful per frame).
    """
    x = np.ascontiguousarray(img)
    if not pairs:
        # (dilate's default border counts as darker than any pixel, so a hot pixel on
        # the frame's edge is lowered too; a replicated border made it its own neighbour)
        ring = cv2.dilate(x, _RING, dst=work)
        if margin > 0:
            cv2.add(ring, margin, dst=ring)  # saturates for integer types
        return cv2.min(x, ring, dst=out)
    # A pixel above all its neighbours but one, by more than the margin, stands out from
    # its side neighbours or from its corner ones (the one brighter neighbour is in one
    # group only): those few candidates get the exact second-brightest neighbour.
    sides = cv2.dilate(x, _SIDES, dst=work)
    lower = cv2.min(sides, cv2.dilate(x, _CORNERS), dst=sides)
    if margin > 0:
        cv2.add(lower, margin, dst=lower)
    res = out if out is not None else x  # (without *out*: a copy if a pixel is lowered)
    if out is not None and out is not x:
        np.copyto(out, x)
    pts = cv2.findNonZero(cv2.compare(x, lower, cv2.CMP_GT))  # (x, y) of each, or None
    if pts is not None:
        h, w = x.shape
        pts = pts.reshape(-1, 2)  # ((N, 1, 2) in OpenCV 4, (N, 2) in 5)
        c, r = pts[:, 0].astype(np.intp), pts[:, 1].astype(np.intp)
        cand = r * w + c
        low = (np.finfo(x.dtype).min if x.dtype.kind == "f" else np.iinfo(x.dtype).min)
        nb = np.empty((cand.size, 8), x.dtype)
        for k, (dy, dx) in enumerate(_OFFSETS):  # (beyond the frame's edge: darker than any)
            rr, cc = r + dy, c + dx
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            nb[:, k] = np.where(inside, x[rr.clip(0, h - 1), cc.clip(0, w - 1)], low)
        second = np.partition(nb, 6, axis=1)[:, 6].astype(np.float64) + margin
        v = x.reshape(-1)[cand]
        hot = v > second
        if hot.any():
            if out is None:
                res = x.copy()
            top = (np.finfo(x.dtype).max if x.dtype.kind == "f" else np.iinfo(x.dtype).max)
            res.reshape(-1)[cand[hot]] = np.minimum(second[hot], top).astype(x.dtype)
    return res
