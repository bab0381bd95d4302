"""Automatic object scale: how large are the nuclei in this image, and must it be resized?

A CNN finds objects within the size range it was trained on (the card's
``scale.object_size_px``, 7-72 px for the shipped model) and fails beyond it: nuclei of
~90 px (a 40-60x objective on a large sensor) come out fragmented or not at all. When the
user gives no size, the detector measures it here, cheaply, without the network: a
percentile-normalised, blurred and Otsu-thresholded copy of the image downsampled to a
few hundred pixels, whose connected components' median equivalent diameter is the
typical object size (touching nuclei merge, but the median is robust while most are
apart). Objects too small to be resolved in the copy are measured again on the frame's
middle at full resolution. A size clearly above the trained range triggers a shrink; a
size below the one the card says the model starts losing objects at
(``scale.enlarge_below_px``) an enlargement - in a field of cells only, never on an
empty field's debris, and further in a packed field - so estimation errors inside the
range change nothing.

OpenCV's Otsu and connected components are used rather than a learned estimate: they are
1-5 ms whatever the frame size, and need nothing trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
#: objects measuring under this many pixels in the downsampled copy are not resolved
#: there: they are measured again on a full-resolution crop. In a probe (not committed),
#: HeLa frames resized and tiled to 2,100 x 3,300 (a 1/8 copy) read 31-34 px for nuclei
#: of 7-28 px (4 px in the copy) and 51, 62, 75 px for nuclei of 57, 71, 86 px (6.4-9.4
#: px in the copy), where the crop, holding few of them whole, read less well (a first
#: value of 10 px let the crop measure 86 px nuclei and their frames were shrunk too
#: little: the 3x-upscaled robustness row of benchmarks/eval_model.py fell)
RESOLVED_PX = 6.0
#: side of that full-resolution crop (the frame's middle): a 2048 x 2048 frame of small
#: nuclei is measured in ~8 ms on this 2-core VM (benchmarks/small_nuclei.py; a stream
#: measures once every AUTO_SCALE_EVERY frames), and the objects it measures (under
#: RESOLVED_PX x MAX_FACTOR = 48 px) fit dozens of times
CROP_SIDE = 512
#: the crop's estimate replaces the whole frame's only when it measured this many objects
CROP_MIN_OBJECTS = 10
#: a copy whose objects stand fewer noise sigmas out than this has averaged them away
#: (a regular field of 8 px nuclei in a 1/7 copy is a flat grey: thresholded noise at
#: 0.3 sigma) and is re-measured on the crop too. Its own constant: it is not the trust
#: test's MIN_CONTRAST, though it has the same value
FLAT_COPY_CONTRAST = 3.0
#: estimates under this are noise and specks (the area floor of 4 px is ~2.3 px), never a
#: reason to enlarge a frame
MIN_TRUSTED_PX = 4.0
#: at most this enlargement on an estimate (the shipped model, simulated nuclei of 5.5 px:
#: AP50 0.31 at 1x, 0.95 at 3x; benchmarks/small_nuclei.py) ...
MAX_ENLARGE = 3.0
#: ... and at least this much, or not at all: a frame of ~15 px nuclei measures ~13 px,
#: and 1.07x would cost 14 % more time for a small gain (in a probe, not committed, real HeLa
#: nuclei of ~15 px scored about the same at 1x, 1.12x and 1.6x)
MIN_ENLARGE = 1.2
#: A stream re-measures every AUTO_SCALE_EVERY frames; a new measurement changes the
#: factor in use only when it lies this far (relative) beyond the boundary it crosses
#: (the enlargement's MIN_ENLARGE, the shrink's UPPER_MARGIN), and a factor within this
#: much of the one in use keeps it. The estimate of one field moves by ~4 % with camera
#: noise alone, more between focus planes: on a confocal-like slide of ~12 px nuclei
#: (the boundary 11.7 px) a focus lock's frames were enlarged 1.21x for 50 frames and
#: not for the next 50, and every box changed with the factor (which plane the lock
#: ended on too)
HYSTERESIS = 0.1
#: ... and never to more pixels than a 4096 x 4096 frame (a 1024 x 6144 frame of 5 px
#: nuclei would become 49 Mpx: ~200 MB of input and seconds per frame on a CPU)
MAX_ENLARGED_PIXELS = 4096 * 4096
#: a field of cells, not specks (SizeEstimate.field_of_objects): on simulated frames
#: (benchmarks/small_nuclei.py, seed 1030000) the debris of empty fields and of fields
#: of 10-100 nuclei per mm^2 covered at most 1.8 % of the frame (thresholded noise more,
#: but at 0.9 sigma), fields of cells at 700 per mm^2 (any nucleus size) from 7.7 %...
MIN_COVER = 0.03
#: ... standing out of the noise: thresholded noise (an empty field without debris)
#: stood 0.9 noise sigmas above the rest, fields of nuclei 6-15 when packed wall to wall
#: (their "background" is the gaps and dim nuclei), 70-200 otherwise; debris, up to 26,
#: is told by its cover (a first value of 30 never enlarged packed fields, where the
#: enlargement matters most: simulated 11 px nuclei at 4,000 per mm^2, AP50 0.64 -> 0.95)
MIN_CONTRAST = 3.0
#: the objects are whole nuclei, not the bright texture inside larger ones, when their
#: outlines (a threshold 30 % of the way from the background to Otsu's) are at most this
#: many times their size: textured 37 px confocal-like nuclei measured 7-16 px at Otsu's
#: threshold and 1.9-5.3x that at the outline, and were enlarged 2.7x and split until
#: this test (bench_control --confocal); small, packed and HeLa nuclei measured
#: 1.05-1.54x (benchmarks/small_nuclei.py)
MAX_OUTLINE_RATIO = 1.75
#: where the outline threshold lies between the background and Otsu's
OUTLINE_LEVEL = 0.3
#: a field of cells covering this much of the frame is packed: touching nuclei, which the
#: network (its 5 x 5-cell centre vote, NMS) separates best at the size it was trained
#: around, so such a field is enlarged up to the card range's centre, not only to
#: ``enlarge_below_px`` (simulated 4,000 nuclei per mm^2, AP50 at 1x / 1.5x: 0.92 / 0.95
#: at 21 px, 0.82 / 0.93 at 15 px; seed 1030000: fields of 700 per mm^2 covered at most
#: 11 %, packed ones 27-36 %; benchmarks/small_nuclei.py)
PACKED_COVER = 0.2


@dataclass(frozen=True)
class SizeEstimate:
    """What :func:`measure_objects` saw: the objects' typical size and how much to trust
    a small one.

    Attributes
    ----------
    size_px
        Median equivalent diameter of the objects, in the frame's pixels.
    count
        Objects measured.
    cover
        Fraction of the measured area the objects cover.
    contrast
        The objects' median above the background's, in background noise sigmas (MAD).
    outline_px
        Median equivalent diameter of the objects' outlines: the components at a
        threshold ``OUTLINE_LEVEL`` of the way from the background to Otsu's (NaN: not
        measured). Much larger than *size_px* when the objects are the bright texture
        of larger nuclei.
    """

    size_px: float
    count: int
    cover: float
    contrast: float
    outline_px: float = math.nan

    @property
    def packed(self) -> bool:
        """A field of cells packed wall to wall (cover at least ``PACKED_COVER``)."""
        return self.field_of_objects and self.cover >= PACKED_COVER

    @property
    def field_of_objects(self) -> bool:
        """Whether the objects are a field of whole cells rather than specks in an empty
        or sparse one, or the texture of larger nuclei: covering at least ``MIN_COVER``,
        ``MIN_CONTRAST`` sigmas above the background, and with outlines at most
        ``MAX_OUTLINE_RATIO`` times their size. Only such an estimate may enlarge a
        frame: an empty field's debris and noise, and the bright patches of textured
        nuclei, also measure a few pixels; enlarging the first bred false boxes, the
        second split nuclei."""
        return (self.cover >= MIN_COVER and self.contrast >= MIN_CONTRAST
                and self.outline_px <= MAX_OUTLINE_RATIO * self.size_px)


def estimate_object_size_px(img: np.ndarray, max_side: int = MAX_SIDE) -> float | None:
    """Median equivalent diameter (px) of the bright objects in *img*; None if too few
    (:func:`measure_objects`' ``size_px``)."""
    m = measure_objects(img, max_side)
    return None if m is None else m.size_px


def measure_objects(img: np.ndarray, max_side: int = MAX_SIDE) -> SizeEstimate | None:
    """The bright objects in *img*: their median size and how they stand out; None if
    fewer than three.

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
    h, w = img.shape
    f = min(max(1, math.ceil(max(h, w) / max_side)), MAX_FACTOR)
    est = _measure(img, f)
    if f > 1 and est is not None and (est.size_px < RESOLVED_PX * f
                                      or est.contrast < FLAT_COPY_CONTRAST):
        # unresolved in the copy (or averaged away: a regular field of 8 px nuclei in a
        # 1/7 copy is a flat grey, thresholded noise measuring 53 px at 0.3 sigma):
        # measure the frame's middle at full resolution (a sparse middle keeps the
        # whole-frame estimate)
        ch, cw = min(h, CROP_SIDE), min(w, CROP_SIDE)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        fine = _measure(img[y0:y0 + ch, x0:x0 + cw], 1, whole_only=True)
        if fine is not None and fine.count >= CROP_MIN_OBJECTS:
            est = fine
    return est


def _measure(img: np.ndarray, f: int, whole_only: bool = False) -> SizeEstimate | None:
    """The estimate of :func:`estimate_object_size_px` on *img* downsampled *f* times;
    *whole_only* leaves out objects cut by its edge (a crop's cut objects would read
    small)."""
    if img.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        # OpenCV's resize and dilate refuse int32, bool, float16 (a user's own arrays;
        # the detector passes camera types, kept as they are: the stretch reads uint16
        # faster than float)
        img = img.astype(np.float32)
    h, w = img.shape
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
    # the noise estimate it starts with, would change nothing: off; and the plain
    # stretch, without the sparse anchor: cover and contrast are read on it)
    x = normalise(small, {"method": "percentile", "low": 1.0, "high": 99.8, "subsample": 1,
                          "clip": True, "hot_pixel_sigma": None, "sparse_sigma": None})
    u8 = cv2.convertScaleAbs(cv2.GaussianBlur(x, (0, 0), 1.0), alpha=255.0)
    otsu, mask = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    area = _object_areas(mask, whole_only)
    if len(area) < 3:
        return None
    # contrast on every 4th pixel each way (medians of the whole copy cost ~5 ms)
    sub, fg = small[::4, ::4], mask[::4, ::4] > 0
    bg = sub[~fg]
    if bg.size == 0 or not fg.any():
        contrast = 0.0
    else:
        mid = float(np.median(bg))
        mad = 1.4826 * float(np.median(np.abs(bg - mid)))
        # (a noiseless background - drawn or clipped - makes any object stand out)
        contrast = (float(np.median(sub[fg])) - mid) / mad if mad > 0 else math.inf
    return SizeEstimate(size_px=_median_diameter(area) * f,
                        count=int(len(area)), cover=float(area.sum() / mask.size),
                        contrast=float(contrast),
                        outline_px=_outline_px(u8, float(otsu), whole_only) * f)


def _outline_px(u8: np.ndarray, otsu: float, whole_only: bool) -> float:
    """Median equivalent diameter of the components of *u8* above a threshold
    ``OUTLINE_LEVEL`` of the way from its background (the median below *otsu*) to
    *otsu*: the outlines of the objects Otsu's threshold found (NaN if fewer than 3)."""
    below = u8[u8 <= otsu]
    bg = float(np.median(below)) if below.size else 0.0
    low = (u8 > bg + OUTLINE_LEVEL * (otsu - bg)).astype(np.uint8)
    area = _object_areas(low, whole_only)
    return _median_diameter(area) if len(area) >= 3 else math.nan


def _object_areas(mask: np.ndarray, whole_only: bool) -> np.ndarray:
    """Areas (px) of the 8-connected components of *mask*'s non-zero pixels, those of
    fewer than 4 px left out (single-pixel specks are noise, not objects); with
    *whole_only*, also those cut by its edge."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:]  # row 0 is the background
    if whole_only:
        stats = stats[_inside(stats, mask.shape)]
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    return area[area >= 4]


def _median_diameter(area: np.ndarray) -> float:
    """Median equivalent-circle diameter (px) of components of these areas."""
    return float(np.median(2.0 * np.sqrt(area / np.pi)))


def _inside(stats: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Components (rows of OpenCV's stats) that do not touch the image's edge."""
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1 = x0 + stats[:, cv2.CC_STAT_WIDTH]
    y1 = y0 + stats[:, cv2.CC_STAT_HEIGHT]
    return (x0 > 0) & (y0 > 0) & (x1 < shape[1]) & (y1 < shape[0])


def auto_scale_factor(estimate: float | SizeEstimate | None, card_range: Any,
                      enlarge_below_px: float | None = None,
                      shape: tuple[int, int] | None = None,
                      previous: float | None = None) -> float:
    """Resize factor for an *estimated* object size: 1 unless the objects are too large
    or, for a model whose card says where it starts losing small objects, too small.

    Above ``UPPER_MARGIN`` x the largest trained size the image is shrunk so the estimate
    lands on the range's geometric centre, where the model is most reliable. Below
    *enlarge_below_px* (the card's ``scale.enlarge_below_px``) it is enlarged just enough
    to bring the estimate up to it - not to the centre: every enlargement costs its
    square in latency, so only what the model needs - by at most ``MAX_ENLARGE`` and to
    at most ``MAX_ENLARGED_PIXELS`` for a frame of *shape*, and not at all when that is
    under ``MIN_ENLARGE``. Only a trusted estimate enlarges: a :class:`SizeEstimate` of
    a field of objects (:attr:`SizeEstimate.field_of_objects`), or a bare size, of at
    least ``MIN_TRUSTED_PX`` (smaller ones are specks and noise). A packed field
    (:attr:`SizeEstimate.packed`) is enlarged up to the range's centre instead.

    *previous*: the factor in use (a stream's last measurement of the same field of
    view), or None. With it, a measurement switches between resizing and not only
    ``HYSTERESIS`` beyond the boundary, a factor within ``HYSTERESIS`` of *previous*
    keeps *previous*, and an estimate that cannot be trusted keeps an enlargement: a
    size near a boundary would otherwise flip the factor, and every box with it, each
    time the stream measures.
    """
    was = 1.0 if previous is None else float(previous)
    band = 0.0 if previous is None else HYSTERESIS
    f = _scale_for(estimate, card_range, enlarge_below_px, shape,
                   shrink_at=UPPER_MARGIN * (1 - band if was < 1 else 1 + band),
                   enlarge_from=MIN_ENLARGE / (1 + band) if was > 1
                   else MIN_ENLARGE * (1 + band),
                   keep=was if was > 1 else None)
    if previous is not None and f != 1.0 and was != 1.0 \
            and abs(f / was - 1.0) <= HYSTERESIS:
        return was
    return f


def _scale_for(estimate: float | SizeEstimate | None, card_range: Any,
               enlarge_below_px: float | None, shape: tuple[int, int] | None,
               shrink_at: float, enlarge_from: float, keep: float | None) -> float:
    """:func:`auto_scale_factor`'s rule with its boundaries given: shrink above
    *shrink_at* x the largest trained size, enlarge when the factor is at least
    *enlarge_from*; *keep* is returned for an estimate that cannot be trusted."""
    if estimate is None or card_range in (None, [], ()):
        return 1.0
    if isinstance(estimate, SizeEstimate):
        estimate_px, trusted = estimate.size_px, estimate.field_of_objects
        packed = estimate.packed
    else:
        estimate_px, trusted, packed = float(estimate), True, False
    r = np.atleast_1d(np.asarray(card_range, dtype=float))
    lo, hi = float(r.min()), float(r.max())
    centre = math.sqrt(lo * hi)
    if estimate_px > shrink_at * hi:
        return centre / estimate_px
    if enlarge_below_px is None:
        return 1.0
    if not trusted:
        return 1.0 if keep is None else keep
    target = max(float(enlarge_below_px), centre) if packed else float(enlarge_below_px)
    if not MIN_TRUSTED_PX <= estimate_px < target:
        return 1.0
    f = min(target / estimate_px, MAX_ENLARGE)
    if shape is not None:
        f = min(f, math.sqrt(MAX_ENLARGED_PIXELS / (shape[0] * shape[1])))
    return f if f >= enlarge_from else 1.0
