"""Automatic object scale: how large are the nuclei in this image, and must it be resized?

A CNN finds objects within the size range it was trained on (the card's
``scale.object_size_px``, 7-72 px for the shipped model) and fails beyond it: nuclei of
~90 px (a 40-60x objective on a large sensor) come out fragmented or not at all. When the
user gives no size, the detector measures it here, cheaply, without the network: a
percentile-normalised, blurred and Otsu-thresholded copy of the image downsampled to a
few hundred pixels, whose connected components' median equivalent diameter is the
typical object size (touching nuclei merge, but the median is robust while most are
apart). Only a size clearly above the trained range triggers a resize (a shrink), so
estimation errors of even 2x inside the range change nothing.

OpenCV's Otsu and connected components are used rather than a learned estimate: they are
~1 ms on the downsampled copy whatever the frame size, and need nothing trained.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from inscope.detector.preprocess import normalise
from inscope.detector.signal import without_hot_pixels

#: the estimate works on a copy at most this many pixels on its longer side (objects of
#: 40 px stay >= 6 px there, enough to measure the large sizes that matter)
MAX_SIDE = 320
#: only sizes above this fraction of the card's largest trained size trigger a resize
UPPER_MARGIN = 0.85
#: at most this downsampling: the blur and threshold make even a point several pixels
#: wide in the copy, so at a factor f nothing measures under ~3.5-5 f px. Uncapped, a
#: 3,072 px wide frame of 5 px nuclei (factor 10) measured 49 px, and from about 4,000
#: px wide a frame of small nuclei would measure above the shrink threshold (61 px) and
#: be shrunk, losing them: a frame that large is measured on a copy 1/8 its size instead
#: (10-16 ms at 6,000 x 6,000 on this 2-core VM against ~1.5 ms at 2,048 x 3,072; a
#: stream measures it once every AUTO_SCALE_EVERY frames)
MAX_FACTOR = 8


def estimate_object_size_px(img: np.ndarray, max_side: int = MAX_SIDE) -> float | None:
    """Median equivalent diameter (px) of the bright objects in *img*; None if too few.

    Parameters
    ----------
    img
        2-D image, any dtype, bright objects on a dark background (fluorescence).
    max_side
        Longest side of the downsampled copy that is measured.
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"estimate_object_size_px needs a 2-D image; got {img.shape}.")
    if img.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        # OpenCV's resize and dilate refuse int32, bool, float16 (a user's own arrays;
        # the detector passes camera types, kept as they are: the stretch reads uint16
        # faster than float)
        img = img.astype(np.float32)
    h, w = img.shape
    f = min(max(1, math.ceil(max(h, w) / max_side)), MAX_FACTOR)
    # INTER_LINEAR point-samples at large factors: ~0.1 ms even for 4k frames, where
    # INTER_AREA costs ~30 ms; the blur below removes what aliasing leaves.
    small = (cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_LINEAR)
             if f > 1 else img)
    # Hot pixels (and cosmic-ray hits) are single bright pixels: after the blur below
    # each is a speck of several pixels, and on an sCMOS frame with 0.1 % of them they
    # outnumber large nuclei in the copy, so the median measured the specks (70 px
    # nuclei read as a fraction of that, and the frame was never shrunk: the test
    # test_hot_pixels_do_not_hide_large_nuclei): they are lowered to their neighbours'
    # level first.
    small = without_hot_pixels(small)
    # (no pixel is above all its neighbours now, so normalise's own hot-pixel step, and
    # the noise estimate it starts with, would change nothing: off)
    x = normalise(small, {"method": "percentile", "low": 1.0, "high": 99.8, "subsample": 1,
                          "clip": True, "hot_pixel_sigma": None})
    u8 = cv2.convertScaleAbs(cv2.GaussianBlur(x, (0, 0), 1.0), alpha=255.0)
    _, mask = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    area = area[area >= 4]  # single-pixel specks are noise, not objects
    if len(area) < 3:
        return None
    return float(np.median(2.0 * np.sqrt(area / np.pi))) * f


def auto_scale_factor(estimate_px: float | None, card_range: Any) -> float:
    """Resize factor for an *estimated* object size: 1 unless the objects are too large.

    Above ``UPPER_MARGIN`` x the largest trained size the image is shrunk so the estimate
    lands on the range's geometric centre, where the model is most reliable. Small
    objects are never enlarged on an estimate: the threshold measures the bright core of
    a blurred object, smaller than its box, and debris can dominate a sparse field, so a
    small estimate is not trusted (give ``object_size_px`` for tiny objects).
    """
    if estimate_px is None or card_range in (None, [], ()):
        return 1.0
    r = np.atleast_1d(np.asarray(card_range, dtype=float))
    lo, hi = float(r.min()), float(r.max())
    if estimate_px <= UPPER_MARGIN * hi:
        return 1.0
    return math.sqrt(lo * hi) / estimate_px
