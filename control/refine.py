"""Where exactly is the target? A position that does not follow box jitter.

On real images the box of one nucleus jumps by 1-2 px RMS (up to 4-8 px) from frame to
frame as the stage shifts by a few pixels: a box edge is a detector decision, not a
measurement. Steering on box centres therefore hunts, and "centred" means "within box
jitter". Once a target is chosen this module measures it from its pixels instead:

* :func:`soft_centroid` - the centroid of a soft mask of the object inside its padded box
  (background and threshold from the crop itself, the component under the box centre
  only, so neighbours do not pull it). It estimates the same thing as a label-mask
  centroid, which is what "the cell's position" means to a person.
  :func:`steady_centroid` takes its median over a few smoothing scales, so that one
  camera-noise draw cannot tip a packed nucleus' mask into its neighbour.
* :class:`TargetRefiner` - keeps a template of the target's neighbourhood from the frame
  it was acquired in and finds it again in every later frame by normalised
  cross-correlation (OpenCV ``matchTemplate``, sub-pixel by a quadratic fitted to the peak),
  searching around where the stage says it must be. A stage move shifts the whole field
  rigidly, so registration is ~10x steadier than any box; the absolute position is the
  registered template position plus a correction (centroid - registered, measured in the
  frame the target was acquired in), so its bias is that centroid's and its jitter is
  the registration's.

It also records the frame-to-frame spread of its own measurements, in stage µm, from
which the steering controller sets its deadband (:attr:`TargetRefiner.jitter_px`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from inscope.acquisition.frame import Frame

__all__ = ["Fix", "TargetRefiner", "one_object", "soft_centroid", "soft_mask",
           "steady_centroid"]


#: The mask grows from Otsu's threshold down to this fraction of it (above background).
HYSTERESIS = 0.5
#: A blob larger than this fraction of its box (an ellipse fills pi/4 of it; soft edges
#: a little more) is taken for two touching nuclei and split.
SPLIT_FILL = 0.9
#: Two points lie on one object when the blob joins them by a path nowhere narrower than
#: this fraction of the blob's width at the points (see :func:`one_object`).
NECK_RATIO = 0.5
#: A point lies on an object's body in a blob when the blob there is at least this
#: fraction of the object's box half-width thick (see :func:`one_object`).
MIN_BODY = 0.25
#: The centroid correction in use changes only when the median of the offsets measured
#: so far differs from it by more than OFFSET_HOLD_SE standard errors of that median,
#: and by more than OFFSET_HOLD_PX pixels.
OFFSET_HOLD_SE = 3.0
OFFSET_HOLD_PX = 0.75
#: Gaussian smoothing scales (px; 0: none) at which :func:`steady_centroid` measures the
#: soft centroid; their median replaces the unsmoothed one when the two are more than
#: FLIP_PX apart.
STEADY_SCALES = (0.0, 0.7, 1.0, 1.4, 2.0)
FLIP_PX = 1.0
#: The least per-frame noise of a centroid offset assumed (px): about what a soft mask's
#: centroid varies by as the stage shifts on the HeLa slides of bench_control (0.3-2 px).
OFFSET_NOISE_PX = 0.5


def _correction(offsets: np.ndarray, current: np.ndarray | None, px_um: float
                ) -> np.ndarray:
    """The centroid correction (µm) to use, from the offsets measured so far (N x 2,
    centroid - registered, µm) and the correction in use (None: none yet).

    The median of the offsets, robust to a frame whose blob merged with a neighbour. But
    it is only adopted when it is news: when it differs from the correction in use by
    more than the noise of a median of that many offsets (:data:`OFFSET_HOLD_SE`
    standard errors, from their spread, at least :data:`OFFSET_NOISE_PX` per frame). A
    soft mask's centroid varies by 0.3-2 px from frame to frame as the stage shifts (a
    touching neighbour's sliver in or out, a fringe of haze), and a median of a few such
    values wanders by a good part of that with every frame added: adopted each frame, it
    made the target's position jitter by up to 0.66 px RMS while nothing moved
    (bench_control's HeLa slides). A first frame that was truly off is still corrected
    as soon as later frames agree on it.
    """
    o = np.asarray(offsets, float).reshape(-1, 2)
    if not len(o):
        return np.zeros(2) if current is None else current
    med = np.median(o, axis=0)
    if current is None:
        return med
    # robust per-frame spread: 1.4826 x the median absolute deviation (a normal's sigma)
    sigma = max(1.4826 * float(np.median(np.hypot(*(o - med).T))), OFFSET_NOISE_PX * px_um)
    # the median's standard error is about 1.25 sigma / sqrt(n)
    se = 1.25 * sigma / math.sqrt(len(o))
    if np.hypot(*(med - current)) <= max(OFFSET_HOLD_PX * px_um, OFFSET_HOLD_SE * se):
        return current
    return med


def _crop(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """img[y0:y1, x0:x1] as float32, edge-replicated where it leaves the image."""
    h, w = img.shape
    a, b, c, d = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    if a >= b or c >= d:
        return np.zeros((0, 0), np.float32)
    out: np.ndarray = img[c:d, a:b].astype(np.float32)
    if (a, b, c, d) != (x0, x1, y0, y1):
        out = cv2.copyMakeBorder(out, c - y0, y1 - d, a - x0, x1 - b, cv2.BORDER_REPLICATE)
    return out


def _to_u8(img: np.ndarray, bg: float, hi: float) -> np.ndarray:
    """*img* scaled so *bg* is 0 and *hi* is 255 (clipped), as uint8 for Otsu."""
    return np.clip((img - bg) * (255.0 / (hi - bg)), 0, 255).astype(np.uint8)


def soft_centroid(pixels: np.ndarray, box: np.ndarray, pad: float = 0.3,
                  others: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
    """Centroid (x, y) px of the object in *box* and its soft-mask area (px), or None
    (see :func:`soft_mask`; *others*: the frame's other detection boxes)."""
    m = soft_mask(pixels, box, pad, others)
    if m is None:
        return None
    wgt, (a, c) = m
    s = float(wgt.sum())
    yy, xx = np.mgrid[0:wgt.shape[0], 0:wgt.shape[1]]
    return np.array([float((wgt * xx).sum()) / s + a, float((wgt * yy).sum()) / s + c]), s


def steady_centroid(pixels: np.ndarray, box: np.ndarray, pad: float = 0.3,
                    others: np.ndarray | None = None,
                    scales: tuple[float, ...] = STEADY_SCALES
                    ) -> tuple[np.ndarray, float] | None:
    """:func:`soft_centroid` of *pixels* as they are, unless it is more than
    :data:`FLIP_PX` from the median of the soft centroids of *pixels* smoothed at each of
    *scales* (Gaussian sigma, px; 0 the pixels as they are): then that median (and the
    median of their areas). None unless more than half of the scales find one.

    Why: a packed nucleus' soft mask is decided at a neck or a threshold, and one camera
    noise draw can tip it to take in its touching neighbour's near half or not - a
    centroid 6-7 px (1.6 µm) off on 4 of 20 draws of the same field for one nucleus of
    bench_control's confocal-like stack, and the refiner keeps the first frame's. A
    slight blur moves the decision, one way for some draws and the other for others; the
    median over a few scales follows the majority of them (none of those 20 draws more
    than 1.5 px off). Where the scales agree the unsmoothed centroid is kept: the median
    alone moved typical targets too (bench_control centring error p90 0.30 -> 0.39 µm on
    the simulator, 0.33 -> 0.40 on the HeLa 3-D slide).
    """
    # Blur only the window soft_mask reads (its crop, grown by the widest kernel's
    # radius), not the frame: the same pixels where it reads them, at a cost that does
    # not grow with the camera (a whole 2048 x 2048 frame blurred at four scales took
    # tens of ms of every control step). Hand-written window, OpenCV blur.
    box = np.asarray(box, float)
    ox, oy, ex, ey = _blur_window(np.shape(pixels), box, pad, max(scales))
    sub = np.asarray(np.asarray(pixels)[oy:ey, ox:ex], np.float32)
    if min(sub.shape) < 2:  # the crop is outside the frame: no blob (as soft_mask says)
        return None
    shift = np.array([ox, oy, ox, oy], float)
    box = box - shift
    if others is not None:
        others = np.asarray(others, float).reshape(-1, 4) - shift
    each = [soft_centroid(sub if s <= 0 else cv2.GaussianBlur(sub, (0, 0), s), box, pad,
                          others) for s in scales]
    each = [None if c is None else (c[0] + np.array([ox, oy], float), c[1]) for c in each]
    got = [(c[0][0], c[0][1], c[1]) for c in each if c is not None]
    if 2 * len(got) <= len(scales):
        return None  # most scales see no blob of this box's own (e.g. a fragment box)
    m = np.median(np.asarray(got, float), axis=0)
    raw = next((c for s, c in zip(scales, each, strict=True) if s <= 0), None)
    if raw is not None and math.hypot(*(raw[0] - m[:2])) <= FLIP_PX:
        return raw
    return m[:2].copy(), float(m[2])


def _blur_window(shape: tuple[int, ...], box: np.ndarray, pad: float, sigma: float
                 ) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the part of a frame of *shape* that :func:`soft_mask` reads
    for *box* (its crop), grown by the radius of OpenCV's Gaussian kernel at *sigma*
    (4 sigma for float images) and clipped to the frame, so a blur of that part equals
    the frame's blur wherever the crop reads it. The left and top are never cut inside
    the crop, so the box keeps positive coordinates in the window."""
    h, w = shape[:2]
    m = int(math.ceil(4.0 * max(sigma, 0.0))) + 2
    a, c, b, d = _crop_rect(box, pad)
    a, c = min(max(a - m, 0), w), min(max(c - m, 0), h)
    return a, c, max(min(b + m, w), a), max(min(d + m, h), c)


def _crop_rect(box: np.ndarray, pad: float) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (x1, y1 exclusive): the crop :func:`soft_mask` reads for
    *box*, the box grown by *pad* of its size plus 2 px on every side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    px, py = pad * (x1 - x0) + 2, pad * (y1 - y0) + 2
    return (int(math.floor(x0 - px)), int(math.floor(y0 - py)),
            int(math.ceil(x1 + px)), int(math.ceil(y1 + py)))


def soft_mask(pixels: np.ndarray, box: np.ndarray, pad: float = 0.3,
              others: np.ndarray | None = None
              ) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Soft mask (weights in [0, 1]) of the object in *box* and the (x, y) of its
    top-left pixel in *pixels*, or None.

    The crop is the box grown by *pad* of its size on every side; background is its 10th
    percentile, the threshold the lower of Otsu's on the crop and on the box; the mask is
    the connected component that covers most of the box's central half (split from a
    touching neighbour if it is larger than the box), kept near the box (see below), its
    holes filled and its interior weighted 1 (the object's shape, as a label mask, not its
    brightness: a dark nucleolus must not move the centroid), its rim softened to
    ``clip((I - bg) / (2 (t - bg)), 0, 1)`` so the centroid moves smoothly (sub-pixel)
    instead of jumping with single edge pixels. None when that centroid strays more than
    a quarter of the box from the box centre (then the box is not this blob's).

    *others* (N x 4, the frame's other detection boxes, same pixels): when the blob is
    still larger than the box after the neck and sliver cuts (touching nuclei), it is
    divided between the boxes it reaches into (:func:`_split_by_boxes`), since the
    detector already knows how many nuclei it holds and how big each is.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if w < 2 or h < 2:
        return None
    a, c, b, d = _crop_rect(box, pad)
    crop = _crop(np.asarray(pixels), a, c, b, d)
    if crop.size < 16:
        return None
    bg = float(np.percentile(crop, 10))
    inner = crop[max(int(y0) - c, 0):max(int(math.ceil(y1)) - c, 1),
                 max(int(x0) - a, 0):max(int(math.ceil(x1)) - a, 1)]
    hi = float(np.percentile(inner, 99)) if inner.size else float(np.percentile(crop, 99))
    if hi - bg <= 1e-6:
        return None
    u8 = _to_u8(crop, bg, hi)
    t8, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if inner.size >= 16:
        # a dim nucleus beside a bright one: the crop's threshold would cut it, the box's
        # own (lower) one does not; a textured nucleus: the crop's is the lower one
        i8 = _to_u8(inner, bg, hi)
        ti, _ = cv2.threshold(i8.reshape(-1, 1), 0, 255,
                              cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        t8 = min(t8, ti)
    t = bg + float(t8) * (hi - bg) / 255.0
    binary = (u8 > t8).astype(np.uint8)
    n, lab = cv2.connectedComponents(binary, connectivity=8)
    if n < 2:
        return None
    # the component covering most of the box's central half
    cx, cy = (x0 + x1) / 2 - a, (y0 + y1) / 2 - c
    cen = lab[max(int(cy - h / 4), 0):int(cy + h / 4) + 1,
              max(int(cx - w / 4), 0):int(cx + w / 4) + 1]
    counts = np.bincount(cen.ravel(), minlength=n)[1:]
    if counts.size and counts.max() > 0:
        k = int(np.argmax(counts)) + 1
    else:
        ys, xs = np.nonzero(lab)
        k = int(lab[ys, xs][np.argmin((xs - cx) ** 2 + (ys - cy) ** 2)])
    comp = (lab == k).astype(np.uint8)
    if HYSTERESIS < 1.0:
        # grown down to a lower threshold (hysteresis): a nucleus' dim side belongs to it
        # (Otsu's threshold on a nucleus bright on one side cuts the other away)
        _, lo_lab = cv2.connectedComponents((u8 > HYSTERESIS * t8).astype(np.uint8),
                                            connectivity=8)
        ids = np.unique(lo_lab[comp > 0])
        comp = np.isin(lo_lab, ids[ids > 0]).astype(np.uint8)
        t = bg + HYSTERESIS * (t - bg)
    cbox = (x0 - a, y0 - c, x1 - a, y1 - c)
    comp = _split_touching(comp, cbox)
    if others is not None and len(others) and not (
            _fits(comp, cbox) and float(comp.sum()) <= w * h):
        # still larger than the nucleus can be: the neighbours' boxes divide it
        comp = _split_by_boxes(comp, cbox, np.asarray(others, float).reshape(-1, 4)
                               - [a, c, a, c])
    # Keep it near the box: tightly (10 %) when the blob still does not fit the box (a
    # neighbour it could not be split from, or a nucleus the detector split in two - whose
    # halves must then drift together, not stay apart), loosely (35 %) otherwise, since a
    # box can sit a pixel or two off its nucleus.
    f = 0.1 if not _fits(comp, cbox) or float(comp.sum()) > w * h else 0.35
    mx, my = max(2.0, f * w), max(2.0, f * h)
    bx0, by0 = max(int(math.floor(x0 - mx)) - a, 0), max(int(math.floor(y0 - my)) - c, 0)
    bx1 = min(int(math.ceil(x1 + mx)) - a, crop.shape[1])
    by1 = min(int(math.ceil(y1 + my)) - c, crop.shape[0])
    keep = np.zeros_like(comp)
    keep[by0:by1, bx0:bx1] = 1
    # Inside the blob every pixel counts fully, dark nucleoli and holes included (the
    # blob's shape is the object, as a label mask is; weighting by brightness would pull
    # the centroid away from a nucleolus); only its one-pixel rim is soft.
    filled = ndimage.binary_fill_holes(comp & keep).astype(np.uint8)
    interior = cv2.erode(filled, np.ones((3, 3), np.uint8)).astype(np.float32)
    comp = cv2.dilate(filled, np.ones((3, 3), np.uint8))  # keep the soft edge pixels
    wgt = np.maximum(np.clip((crop - bg) / (2.0 * max(t - bg, 1e-6)), 0.0, 1.0)
                     * (comp & keep), interior)
    sw = float(wgt.sum())
    if sw <= 1e-6:
        return None
    yy, xx = np.mgrid[0:wgt.shape[0], 0:wgt.shape[1]]
    gx, gy = float((wgt * xx).sum()) / sw, float((wgt * yy).sum()) / sw
    if abs(gx - cx) > 0.25 * w or abs(gy - cy) > 0.25 * h:
        return None
    return wgt.astype(np.float32), (a, c)


def one_object(pixels: np.ndarray, p: np.ndarray, q: np.ndarray,
               boxes: np.ndarray, neck_ratio: float = NECK_RATIO) -> bool:
    """Whether the points *p* and *q* (x, y px) lie on one object: the same foreground
    blob, joined without a neck.

    The detector sometimes boxes the two ends of one elongated or kidney-shaped nucleus
    as two objects, and each end, centred and detected again, stays a box of its own; by
    distance alone the ends look like two neighbours. Two touching nuclei share a blob
    too, but meet at a neck. So: the blob is the crop around *boxes* (N x 4, the objects'
    boxes) above Otsu's threshold, holes filled; its width at a point is twice the
    distance to the background (the largest value within 3 px of the point, which may lie
    off the blob's axis); *p* and *q* are one object when a path joins them on which the
    width never drops below *neck_ratio* (:data:`NECK_RATIO`) of the smaller of their
    widths - the classic neck criterion for splitting touching nuclei, applied the other
    way round.
    """
    pts = np.array([p, q], float).reshape(2, 2)
    b = np.asarray(boxes, float).reshape(-1, 4)
    lo = np.minimum(b[:, :2].min(0), pts.min(0))
    hi = np.maximum(b[:, 2:].max(0), pts.max(0))
    pad = 0.15 * float((hi - lo).max()) + 3
    a, c = int(math.floor(lo[0] - pad)), int(math.floor(lo[1] - pad))
    crop = _crop(np.asarray(pixels), a, c, int(math.ceil(hi[0] + pad)),
                 int(math.ceil(hi[1] + pad)))
    if crop.size < 16:
        return False
    bg = float(np.percentile(crop, 10))
    top = float(np.percentile(crop, 99))
    if top - bg <= 1e-6:
        return False
    u8 = _to_u8(crop, bg, top)
    t8, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    blob = ndimage.binary_fill_holes(u8 > t8).astype(np.uint8)
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 5)
    h, w = blob.shape
    seeds, widths = [], []
    bc = (b[:, :2] + b[:, 2:]) / 2
    halves = []
    for x, y in pts:
        k = int(np.argmin(np.hypot(*(bc - [x, y]).T)))
        halves.append(0.5 * float(min(b[k, 2] - b[k, 0], b[k, 3] - b[k, 1])))
    for (x, y), half in zip(pts - [a, c], halves, strict=True):
        i, j = int(round(y)), int(round(x))
        if not (0 <= i < h and 0 <= j < w):
            return False
        # the blob's width near the point: its largest distance to the background within
        # a quarter of the box (at least 3 px) - a detection centre can sit a few pixels
        # off its nucleus' axis, where the blob is thinner than the nucleus
        r = max(3, int(round(0.5 * half)))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disc = xx ** 2 + yy ** 2 <= r * r
        r0, r1, c0, c1 = max(i - r, 0), min(i + r + 1, h), max(j - r, 0), min(j + r + 1, w)
        win = dist[r0:r1, c0:c1] * disc[r0 - i + r:r1 - i + r, c0 - j + r:c1 - j + r]
        di, dj = np.unravel_index(int(np.argmax(win)), win.shape)
        if win[di, dj] <= 0:
            return False  # the point is on background
        seeds.append((r0 + int(di), c0 + int(dj)))
        widths.append(float(win[di, dj]))
    # A point on a mere scrap of the blob (a dim nucleus beside a bright one, which the
    # crop's threshold mostly leaves out) says nothing about a neck: with its width of a
    # pixel or two, no path is narrower, and two touching nuclei read as one (a confocal
    # pair of bench_control). Its nucleus is not this blob.
    if any(wdt < MIN_BODY * half for wdt, half in zip(widths, halves, strict=True)):
        return False
    return not _neck_between(dist, seeds[0], seeds[1], min(widths), neck_ratio)


def _neck_between(dist: np.ndarray, a: tuple[int, int], b: tuple[int, int],
                  width: float, ratio: float = NECK_RATIO) -> bool:
    """Whether every path inside the blob from pixel *a* to pixel *b* (row, col) passes
    a neck: a point whose distance to the background (*dist*) is below *ratio* of
    *width* (the smaller of the two points' own widths)."""
    keep = (dist >= ratio * width).astype(np.uint8)
    _, lab = cv2.connectedComponents(keep, connectivity=8)
    return not (lab[a] != 0 and lab[a] == lab[b])


#: A piece cut off a blob as a touching neighbour must lie mostly (more than this
#: fraction) outside the nucleus' box, unless a clear neck separates them.
INSIDE_BOX = 0.5


def _split_is_real(comp: np.ndarray, part: np.ndarray,
                   box: tuple[float, float, float, float], dist: np.ndarray) -> bool:
    """Whether cutting *part* out of blob *comp* separates the boxed nucleus from another
    object: what is cut away lies mostly outside the box (a neighbour, a halo), or the
    two meet at a clear neck (see :func:`_neck_between`; *dist* is the blob's distance
    transform). A single elongated or tilted
    nucleus that overhangs its axis-aligned box has its other half inside the box and
    no neck; cutting it in some frames and not in others (as the box fell) moved its
    centroid by several pixels from frame to frame on the HeLa slides of bench_control.
    """
    rest = (comp > 0) & (part == 0)
    n_rest = int(rest.sum())
    if n_rest == 0:
        return True
    x0, y0, x1, y1 = box
    h, w = comp.shape
    inside = rest[max(int(round(y0)), 0):min(int(round(y1)), h),
                  max(int(round(x0)), 0):min(int(round(x1)), w)]
    if float(inside.sum()) < INSIDE_BOX * n_rest:
        return True
    dp, dr = np.where(part > 0, dist, 0.0), np.where(rest, dist, 0.0)
    a = np.unravel_index(int(np.argmax(dp)), dist.shape)
    b = np.unravel_index(int(np.argmax(dr)), dist.shape)
    return _neck_between(dist, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])),
                         min(float(dp.max()), float(dr.max())))


#: A detection box whose centre lies within this fraction of the target box's
#: half-widths (or holds the target's centre so) boxes the same nucleus, not a neighbour.
SAME_BOX = 0.8


def _split_by_boxes(comp: np.ndarray, box: tuple[float, float, float, float],
                    others: np.ndarray) -> np.ndarray:
    """The part of blob *comp* (crop pixels) that belongs to the nucleus in *box* when
    the blob reaches into other detected nuclei (*others*, boxes in crop pixels; their
    centres may lie outside the crop): each blob pixel goes to the box it is nearest to
    in that box's own half-widths (elliptical distance), so a small nucleus pressed
    against a large one keeps its share, and the piece holding the box's centre is kept.
    Two boxes each holding the other's centre well inside (:data:`SAME_BOX` of its
    half-widths) are one nucleus boxed twice: that box takes nothing."""
    h, w = comp.shape
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0)
    oc = (others[:, :2] + others[:, 2:]) / 2
    ohw = np.maximum((others[:, 2] - others[:, 0]) / 2, 1.0)
    ohh = np.maximum((others[:, 3] - others[:, 1]) / 2, 1.0)
    # one nucleus boxed twice (the detector split it): either centre well inside the
    # other's box; touching nuclei have their centres outside each other's boxes
    same = (((np.abs(oc[:, 0] - cx) < SAME_BOX * hw) & (np.abs(oc[:, 1] - cy) < SAME_BOX * hh))
            | ((np.abs(oc[:, 0] - cx) < SAME_BOX * ohw)
               & (np.abs(oc[:, 1] - cy) < SAME_BOX * ohh)))
    nb = others[~same]
    if not len(nb):
        return comp
    ys, xs = np.nonzero(comp)
    nc = (nb[:, :2] + nb[:, 2:]) / 2
    nh = np.maximum((nb[:, 2:] - nb[:, :2]) / 2, 1.0)
    theirs = (((xs[:, None] - nc[None, :, 0]) / nh[None, :, 0]) ** 2
              + ((ys[:, None] - nc[None, :, 1]) / nh[None, :, 1]) ** 2)
    reach = (theirs < 1.0).any(0)  # neighbours the blob reaches into
    if not reach.any():
        return comp
    theirs = theirs[:, reach].min(1)
    own = ((xs - cx) / hw) ** 2 + ((ys - cy) / hh) ** 2
    part = np.zeros_like(comp)
    mine = own <= theirs
    part[ys[mine], xs[mine]] = 1
    n, lab = cv2.connectedComponents(part, connectivity=8)
    if n > 2:  # keep the piece holding the box's centre (else the largest)
        i, j = int(np.clip(round(cy), 0, h - 1)), int(np.clip(round(cx), 0, w - 1))
        k = int(lab[i, j]) or int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
        part = (lab == k).astype(np.uint8)
    return part if part.any() else comp


def _fits(m: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether blob *m* lies within *box* (crop pixels) grown by 12 % (at least 2 px)."""
    x0, y0, x1, y1 = box
    gx, gy = max(2.0, 0.12 * (x1 - x0)), max(2.0, 0.12 * (y1 - y0))
    ys, xs = np.nonzero(m)
    return bool(len(xs) and xs.min() >= x0 - gx and xs.max() + 1 <= x1 + gx
                and ys.min() >= y0 - gy and ys.max() + 1 <= y1 + gy)


def _split_touching(comp: np.ndarray, box: tuple[float, float, float, float]
                    ) -> np.ndarray:
    """The part of a binary blob that belongs to the nucleus in *box* (crop pixels) when
    the blob has merged with a touching neighbour - it is larger than the nucleus can be
    (an ellipse fills pi/4 of its box) or reaches well beyond the box: cores - the blob
    opened with a disc that cuts the neck between two touching nuclei, else where the
    distance to the background exceeds a rising fraction of its maximum - and every blob
    pixel given to its nearest core (a Voronoi split, the cheap cousin of a
    distance-transform watershed), until the chosen part fits the box. A split must cut
    at a neck or shave off a sliver (:func:`_split_is_real`): a single nucleus that
    merely overhangs its box stays whole."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box_area = (x1 - x0) * (y1 - y0)
    if float(comp.sum()) <= SPLIT_FILL * box_area and _fits(comp, box):
        return comp
    # the blob's distance transform: every candidate cut is judged on it, and the last
    # resort takes its cores from it
    dist = cv2.distanceTransform(comp, cv2.DIST_L2, 5)

    def nearest(lab: np.ndarray) -> int:
        ys, xs = np.nonzero(lab)
        i = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
        return int(lab[ys[i], xs[i]])

    def ok(part: np.ndarray) -> bool:
        return (0.25 * box_area <= float(part.sum()) <= box_area and _fits(part, box)
                and _split_is_real(comp, part, box, dist))

    def part_of(core: np.ndarray) -> np.ndarray | None:
        n, _ = cv2.connectedComponents(core, connectivity=8)
        if n <= 2:
            return None
        _, vor = cv2.distanceTransformWithLabels(1 - core, cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_CCOMP)
        part = (comp & (vor == nearest(vor * core))).astype(np.uint8)
        return part if ok(part) else None

    side = math.sqrt(box_area)
    for f in (0.2, 0.3, 0.4):
        r = max(1, int(round(f * side / 2)))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        opened = cv2.morphologyEx(comp, cv2.MORPH_OPEN, disc)
        if not opened.any():
            break
        got = part_of(opened)
        if got is None:
            # one body left: the neighbour's piece was thinner than the disc (a neck, a
            # sliver at the crop's edge); the body grown back by the disc, within the blob
            _, lab = cv2.connectedComponents(opened, connectivity=8)
            body = (lab == nearest(lab)).astype(np.uint8)
            got = comp & cv2.dilate(body, disc)
            if not ok(got):
                got = None
        if got is not None:
            return got
    for frac in (0.5, 0.6, 0.7, 0.8, 0.9):
        got = part_of((dist > frac * float(dist.max())).astype(np.uint8))
        if got is not None:
            return got
    return comp


def _design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Design matrix of a quadratic surface c0 + c1 x + c2 y + c3 x² + c4 xy + c5 y²."""
    x, y = x.astype(float), y.astype(float)
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


@functools.lru_cache(maxsize=8)
def _quadratic_fit(k: int) -> np.ndarray:
    """Least-squares pseudo-inverse for a (2k+1) x (2k+1) window centred on its peak."""
    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    return np.linalg.pinv(_design(xx.ravel(), yy.ravel()))


def _subpixel(r: np.ndarray, i: int, j: int, k: int) -> tuple[float, float]:
    """Sub-pixel offsets (dx, dy) of the peak of correlation map *r* near r[i, j] (row i,
    column j): the vertex of a quadratic surface fitted by least squares to the
    (2k+1) x (2k+1) values around it.

    The correlation peak of a whole nucleus is as wide as the nucleus; a 3-point parabola
    reads its vertex from the top pixel and its two neighbours only, which on a dim,
    noisy nucleus moves by ~1 px from frame to frame. Fitting the wider neighbourhood
    uses the whole peak (much steadier on the HeLa slides). Hand-written: 6-parameter least
    squares on <= 49 values; OpenCV and scipy have no sub-pixel peak fit.
    """
    h, w = r.shape
    i0, i1, j0, j1 = max(i - k, 0), min(i + k + 1, h), max(j - k, 0), min(j + k + 1, w)
    if i1 - i0 < 3 or j1 - j0 < 3:
        return 0.0, 0.0
    vals = r[i0:i1, j0:j1].ravel().astype(float)
    if i1 - i0 == j1 - j0 == 2 * k + 1:
        c = _quadratic_fit(k) @ vals  # the usual case: a precomputed pseudo-inverse
    else:  # cut by the map's edge
        yy, xx = np.mgrid[i0 - i:i1 - i, j0 - j:j1 - j]
        c = np.linalg.lstsq(_design(xx.ravel(), yy.ravel()), vals, rcond=None)[0]
    hess = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
    if np.linalg.eigvalsh(hess).max() >= 0:
        return 0.0, 0.0  # not a maximum (flat or saddle): keep the whole-pixel peak
    d = -np.linalg.solve(hess, c[1:3])
    return float(np.clip(d[0], -1.0, 1.0)), float(np.clip(d[1], -1.0, 1.0))


@dataclass
class Fix:
    """One measurement of the target in one frame.

    ``xy_um`` is the stage position that centres the target; ``xy_px`` the same point in
    the frame's pixels; ``score`` the registration's normalised correlation (1 for the
    frame it was acquired in); ``method`` ``"acquired"`` or ``"registered"``.
    """

    xy_um: np.ndarray
    xy_px: np.ndarray
    score: float
    method: str
    frame_index: int = -1


@dataclass
class TargetRefiner:
    """Register a target's neighbourhood from frame to frame (see the module notes).

    Parameters
    ----------
    pad
        Template = the target's box grown by this fraction of its size on every side
        (context makes the registration unique and steady).
    search_px
        Extra pixels searched around the predicted position on every side; None: half
        the box size, at least 8.
    min_score
        Normalised correlation below which the target counts as not found.
    max_template_px
        Templates larger than this (big nuclei at high magnification) are registered on
        a downsampled copy (speed; sub-pixel accuracy scales with it).
    smooth_px
        Gaussian sigma (px of the registered images) applied to the template and the
        search window before correlating. Camera noise on a dim nucleus (signal ~1.5x the
        noise per pixel on the HeLa slides) otherwise keeps the correlation under
        ``min_score``, and the target is lost although it is plainly there; a nucleus'
        position lives in its outline, which a 1-px blur keeps. 0 turns it off.
    max_offsets
        Frames whose (centroid - registered) offset is measured for the centroid
        correction, the acquired one included; with more than one, the median of the
        offsets replaces the one in use when it is news (see :func:`_correction`). The
        default, 1, keeps the acquired frame's: measured again in each of the next 25
        frames (``benchmarks/refiner_offsets.py``: the simulator and four HeLa slides,
        seeds 1-3, 600 targets), the correction made the refined position better by
        more than 0.2 µm against the true centroid for 7 targets and worse for 9, and
        its jumps when a soft mask flipped between two shapes (a neighbour's sliver in
        or out) took the worst target's jitter from at most 0.39 to up to 2.70 px RMS;
        a soft mask per frame was also most of the refiner's time.
    """

    pad: float = 0.5
    search_px: float | None = None
    min_score: float = 0.6
    max_template_px: int = 96
    smooth_px: float = 1.0
    max_offsets: int = 1
    fixes: list[Fix] = field(default_factory=list)
    _tmpl: np.ndarray | None = None
    _tmpl_reg: np.ndarray | None = None  # the template as registered: scaled, smoothed
    _d0: np.ndarray | None = None  # centroid relative to the template's top-left (px)
    _ref_um: np.ndarray | None = None
    _offsets: list[np.ndarray] = field(default_factory=list)  # centroid - registered, µm
    _corr: np.ndarray | None = None  # the centroid correction in use (µm)
    _box_wh: tuple[float, float] = (0.0, 0.0)
    _scale: float = 1.0

    @property
    def active(self) -> bool:
        return self._tmpl is not None

    @property
    def measuring(self) -> bool:
        """Whether :meth:`locate` still measures the centroid (given a box) to refine
        the centroid correction; after ``max_offsets`` frames it only registers."""
        return len(self._offsets) < self.max_offsets

    def _smooth(self, img: np.ndarray) -> np.ndarray:
        if self.smooth_px <= 0:
            return img
        return cv2.GaussianBlur(img, (0, 0), self.smooth_px)

    def reset(self) -> None:
        self._tmpl = self._tmpl_reg = self._d0 = self._ref_um = self._corr = None
        self._offsets = []
        self.fixes = []

    def acquire(self, frame: Frame, box: np.ndarray, others: np.ndarray | None = None
                ) -> Fix | None:
        """Take the target's template from *frame* around *box* (*others*: the frame's
        other detection boxes, for touching neighbours); None if it is empty."""
        self.reset()
        box = np.asarray(box, float)
        cen = steady_centroid(frame.pixels, box, others=others)
        c = cen[0] if cen is not None else np.array([(box[0] + box[2]) / 2,
                                                      (box[1] + box[3]) / 2])
        w, h = box[2] - box[0], box[3] - box[1]
        hw, hh = (0.5 + self.pad) * w, (0.5 + self.pad) * h
        x0, y0 = int(round(c[0] - hw)), int(round(c[1] - hh))
        x1, y1 = int(round(c[0] + hw)) + 1, int(round(c[1] + hh)) + 1
        tmpl = _crop(frame.pixels, x0, y0, x1, y1)
        if tmpl.size < 25 or float(tmpl.std()) <= 1e-6:
            return None
        self._scale = s = min(1.0, self.max_template_px / max(tmpl.shape))
        self._tmpl = tmpl
        # scaled and smoothed once here, not again in every frame's registration
        self._tmpl_reg = self._smooth(
            tmpl if s >= 1.0 else cv2.resize(tmpl, None, fx=s, fy=s,
                                             interpolation=cv2.INTER_AREA))
        self._d0 = c - np.array([x0, y0], float)
        self._box_wh = (float(w), float(h))
        self._ref_um = frame.pixel_to_stage(c)[0]
        # The first centroid offset, measured as every later one is: the template
        # registered on its own frame. The wide peak fit of a lopsided correlation peak
        # is biased by up to a pixel, the same in every frame; an offset of zero here
        # (the template's centroid, unregistered) would differ from all later ones by
        # that bias, and the median would move while it settled.
        got = self._register(frame, self._ref_um) if frame.position is not None else None
        self._offsets = [self._ref_um - frame.pixel_to_stage(got[0])[0]
                         if got is not None else np.zeros(2)]
        self._corr = self._offsets[0]
        fix = Fix(self._ref_um.copy(), c.copy(), 1.0, "acquired", frame.index)
        self.fixes.append(fix)
        return fix

    def _register(self, frame: Frame, pred_um: np.ndarray
                  ) -> tuple[np.ndarray, float] | None:
        """Where the template's centroid point lies in *frame* (px), searched around
        *pred_um*, and the correlation there; None below ``min_score``."""
        assert self._tmpl is not None and self._tmpl_reg is not None
        assert self._d0 is not None
        p_px = frame.stage_to_pixel(pred_um)[0]
        th, tw = self._tmpl.shape
        m = self.search_px if self.search_px is not None else max(
            8.0, 0.5 * max(self._box_wh))
        m = int(math.ceil(m))
        # template top-left expected at p_px - d0
        ex, ey = p_px - self._d0
        x0, y0 = int(math.floor(ex)) - m, int(math.floor(ey)) - m
        win = _crop(frame.pixels, x0, y0, x0 + tw + 2 * m + 1, y0 + th + 2 * m + 1)
        if win.size == 0:
            return None
        s = self._scale
        tm, wn = self._tmpl_reg, win
        if s < 1.0:
            wn = cv2.resize(wn, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        if wn.shape[0] < tm.shape[0] or wn.shape[1] < tm.shape[1]:
            return None
        r = cv2.matchTemplate(self._smooth(wn), tm, cv2.TM_CCOEFF_NORMED)
        _, best, _, (j, i) = cv2.minMaxLoc(r)
        if not math.isfinite(best) or best < self.min_score:
            return None
        # the fit spans the peak: about a tenth of the template (1 to 3 px each way)
        dx, dy = _subpixel(r, i, j, max(1, min(3, min(tm.shape) // 12)))
        tl = np.array([x0 + (j + dx) / s, y0 + (i + dy) / s])
        return tl + self._d0, float(best)

    def locate(self, frame: Frame, predicted_um: np.ndarray | None = None,
               box: np.ndarray | None = None, others: np.ndarray | None = None
               ) -> Fix | None:
        """Find the target in *frame* near *predicted_um* (default: where it was last);
        with *box* (its detection in this frame) the centroid correction is updated too.
        None when the best correlation is below ``min_score``."""
        if self._tmpl is None or frame.position is None:
            return None
        pred = self._ref_um if predicted_um is None else np.asarray(predicted_um, float)
        if self.fixes:
            pred = self.fixes[-1].xy_um if predicted_um is None else pred
        # acquire() sets _ref_um together with _tmpl (checked above)
        assert pred is not None
        got = self._register(frame, pred)
        if got is None:
            return None
        reg_px, best = got
        reg_um = frame.pixel_to_stage(reg_px)[0]
        if box is not None and self.measuring:
            cen = steady_centroid(frame.pixels, np.asarray(box, float), others=others)
            if cen is not None and np.hypot(*(cen[0] - reg_px)) < 0.5 * max(self._box_wh):
                self._offsets.append(frame.pixel_to_stage(cen[0])[0] - reg_um)
        # the median, adopted when it is news (see _correction): one frame whose blob
        # merged with a neighbour must not pull it, nor each new offset move it
        self._corr = _correction(np.asarray(self._offsets), self._corr, frame.scale_um)
        xy_um = reg_um + self._corr
        fix = Fix(xy_um, frame.stage_to_pixel(xy_um)[0], float(best), "registered",
                  frame.index)
        self.fixes.append(fix)
        if len(self.fixes) > 200:
            del self.fixes[:100]
        return fix

    def jitter_px(self, frame: Frame, last: int = 10) -> float | None:
        """RMS frame-to-frame spread of the recent fixes (px of *frame*), None with fewer
        than three fixes. Differences of successive fixes divided by sqrt(2), so a
        steady drift (a moving cell) counts only by its change."""
        f = [x.xy_um for x in self.fixes[-last:]]
        if len(f) < 3:
            return None
        d = np.diff(np.asarray(f), axis=0)
        d = d - d.mean(axis=0)
        px = frame.scale_um
        return float(np.sqrt((d ** 2).sum(axis=1).mean() / 2.0)) / px
