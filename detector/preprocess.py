"""Input checks and normalisation shared by every detector (ONNX, classical, training).

Everything here is written for a per-frame budget well under a millisecond at 512x512:
percentiles are computed on a strided subsample (a full-frame percentile of a 512x512
uint16 frame costs ~3 ms, more than the tiny CNN itself), arithmetic is done in float32,
and resizing / padding go through OpenCV.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from inscope.acquisition.frame import Frame

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)

DEFAULT_NORMALISATION: dict[str, Any] = {
    "method": "percentile", "low": 1.0, "high": 99.8, "subsample": 4, "clip": False,
    "hot_pixel_sigma": 8.0, "sparse_sigma": 5.0,
}
#: :func:`sparse_high` needs this many subsample pixels on objects to anchor on (fewer: a
#: field without objects, where the stretch stays as it is and the box check judges)
SPARSE_MIN_SAMPLES = 16


def as_image(frame: Frame | np.ndarray) -> np.ndarray:
    """Return the 2-D pixel array of *frame*, or raise one clear ``ValueError``.

    Colour (H, W, 3) and stacks (T, H, W) are refused rather than silently converted:
    a detector trained on one fluorescence channel gives wrong answers on a mixed-down
    RGB picture, so the caller must choose the channel (``img[..., 1]``) or the mix
    (``img.mean(axis=2)``) knowingly. Dataset readers (:mod:`inscope.detector.datasets`) do
    convert colour files, because there the file format, not the camera, is colour.

    Parameters
    ----------
    frame
        A :class:`inscope.acquisition.frame.Frame` or a numpy array (H, W) of dtype uint8,
        uint16, float32 or float64 (int16/int32 and bool are accepted and cast).
    """
    pixels = frame.pixels if isinstance(frame, Frame) else frame
    if not isinstance(pixels, np.ndarray):
        raise ValueError(
            f"A detector needs a Frame or a 2-D numpy array; got {type(pixels).__name__}. "
            "Wrap your data with numpy.asarray(...) first.")
    if pixels.ndim != 2:
        hint = ("pick one channel (img[..., 1]) or mix them (img.mean(axis=2))"
                if pixels.ndim == 3 and pixels.shape[-1] in (3, 4)
                else "pass one 2-D image (H, W) at a time (e.g. stack[i])")
        raise ValueError(
            f"A detector needs one 2-D grayscale image (H, W); got shape {pixels.shape}: "
            f"{hint}.")
    if pixels.size == 0 or min(pixels.shape) < 2:
        raise ValueError(
            f"The image is empty or degenerate (shape {pixels.shape}); pass an image at "
            "least 2x2 pixels.")
    if pixels.dtype.kind in "biu" and pixels.dtype not in (np.uint8, np.uint16) or (
            pixels.dtype == np.float16):
        pixels = pixels.astype(np.float32)  # int16/int32/bool/float16: cast (exact to 2**24)
    if pixels.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Unsupported pixel dtype {pixels.dtype}; use uint8, uint16, float32 or "
            "float64 (e.g. img.astype(numpy.float32)).")
    if pixels.dtype.kind == "f":
        finite = np.isfinite(pixels)
        if not finite.all():
            if not finite.any():
                raise ValueError(
                    "The image has no finite pixel (all NaN/inf); check the camera or the "
                    "file it came from.")
            # A few bad pixels (hot/dead, division by zero in a flat-field) are replaced by
            # the median of the good ones so they neither poison percentiles nor fire.
            pixels = np.where(finite, pixels, np.median(pixels[finite])).astype(
                pixels.dtype, copy=False)
    return pixels


def subsample(img: np.ndarray, step: int, max_samples: int = 65536) -> np.ndarray:
    """A strided view of *img* with at least *step* stride and at most ~*max_samples*.

    The stride grows with the frame so a 2048x2048 frame costs the same as a 512x512 one
    (a few hundred microseconds) instead of ~50 ms for a full-frame percentile.
    """
    h, w = img.shape
    step = max(1, int(step))
    while (h // step) * (w // step) > max_samples:
        step += 1
    return img[::step, ::step]


def percentile_range(img: np.ndarray, low: float = 1.0, high: float = 99.8,
                     step: int = 4) -> tuple[float, float]:
    """Low/high intensity percentiles of *img* estimated on a strided subsample."""
    sub = subsample(img, step).ravel()  # ravel copies the strided view once
    n = sub.size
    # numpy's default (linear) percentile: interpolate between sorted[floor(pos)] and
    # sorted[ceil(pos)]; the same numbers as np.percentile, found faster
    pos = np.array([low, high], float) / 100.0 * (n - 1)
    f = np.floor(pos).astype(np.int64)
    c = np.ceil(pos).astype(np.int64)
    if sub.dtype in (np.uint8, np.uint16):
        # integer pixels: a histogram (bincount + cumsum) is ~3x faster than a partial
        # sort; sorted[i] is the first value whose cumulative count exceeds i
        cum = np.cumsum(np.bincount(sub))
        vf = np.searchsorted(cum, f, side="right").astype(np.float64)
        vc = np.searchsorted(cum, c, side="right").astype(np.float64)
    else:
        part = np.partition(sub, np.unique(np.concatenate([f, c])))
        vf, vc = part[f].astype(np.float64), part[c].astype(np.float64)
    v = vf + (vc - vf) * (pos - f)
    return float(v[0]), float(v[1])


def normalise(img: np.ndarray, spec: Mapping[str, Any] | None = None,
              out: np.ndarray | None = None,
              stats: dict[str, float] | None = None) -> np.ndarray:
    """Map *img* to float32, ~[0, 1], as the model card's ``normalisation`` says.

    Parameters
    ----------
    img
        2-D array from :func:`as_image`.
    spec
        ``{"method": "percentile", "low": 1, "high": 99.8, "subsample": 4, "clip": False}``
        maps the low percentile to 0 and the high one to 1 (robust to uint8/uint16/float
        and to the camera's offset and gain); ``{"method": "scale", "divisor": 255}``
        divides; ``{"method": "none"}`` only casts. ``clip`` (default False) clips to
        [0, 1]. ``sparse_sigma`` (default 5; 0 or None: off): the high anchor is at
        least the median of the pixels on objects (that many noise sigma above the
        background), which only moves it in a frame of a few objects
        (:func:`sparse_high`). ``hot_pixel_sigma``
        (default 8; 0 or None: off) first lowers every pixel
        more than that many camera-noise sigma above all eight neighbours to that much
        (:func:`without_hot_pixels`); ``hot_pixel_pairs`` (default False) also lowers two
        side by side (each against its second-brightest neighbour; costs about as much
        again, and the model card gives both; :func:`hot_pixel_step`). Training uses this
        same function, so train and test match by construction.
    out
        Optional float32 array of the same shape to write into (e.g. the top-left corner
        of an already padded network input, which saves one full-frame copy).
    stats
        Optional dict that receives what the stretch measured, for a caller that needs
        the same figures (the classical detector's noise floor): ``lo`` and ``hi`` (the
        values mapped to 0 and 1; ``hi`` after the sparse anchor) and ``noise`` (the
        camera-noise sigma, when a step measured it).

    Returns
    -------
    float32 array of the same shape.
    """
    spec = {**DEFAULT_NORMALISATION, **(spec or {})}
    method = spec.get("method", "percentile")
    if out is None:
        out = np.empty(img.shape, np.float32)
    elif out.shape != img.shape or out.dtype != np.float32:
        raise ValueError(f"normalise: out must be float32 {img.shape}; got {out.dtype} "
                         f"{out.shape}.")
    noise = None
    if method != "none":
        if spec.get("hot_pixel_sigma") or spec.get("sparse_sigma"):
            from inscope.detector import signal  # (signal reads this module's percentiles)

            noise = signal.noise_sigma(img)  # measured once, for both steps
        img = hot_pixel_step(img, spec, noise=noise)
    if method == "percentile":
        lo, hi = percentile_range(img, spec["low"], spec["high"], spec["subsample"])
        if spec.get("sparse_sigma"):
            hi = sparse_high(img, hi, int(spec["subsample"]), float(spec["sparse_sigma"]),
                             noise=noise)
        scale = 1.0 / (hi - lo) if hi > lo else 1.0
        _affine(img, scale, -lo * scale, out)
        if stats is not None:
            stats.update(lo=lo, hi=hi)
    elif method == "scale":
        _affine(img, 1.0 / float(spec.get("divisor", 255.0)), 0.0, out)
    elif method == "none":
        np.copyto(out, img, casting="unsafe")
    else:
        raise ValueError(
            f"Unknown normalisation method {method!r} in the model card; use "
            "'percentile', 'scale' or 'none'.")
    if stats is not None and noise is not None:
        stats["noise"] = noise
    if spec.get("clip"):
        np.clip(out, 0.0, 1.0, out=out)
    return out


def sparse_high(img: np.ndarray, hi: float, step: int, k: float,
                noise: float | None = None) -> float:
    """The stretch's high anchor for *img*: *hi* (its high percentile), or in a sparse
    frame the median of the pixels on objects, whichever is higher.

    Why: the network was trained on crops 6-50 % covered by nuclei, where the 99.8th
    percentile lies on the nuclei's brightest pixels and maps them to ~1. In a frame of
    a few nuclei - a lone cell, a low-density culture on a full 2048 x 2048 sCMOS frame
    - that percentile lies in the camera noise, the noise is stretched to the contrast
    of cells and the nuclei to 10-20x it, values training never showed: the shipped
    network found at most half of 20 bright nuclei on such a frame
    (tests/detector/test_sparse_anchor.py). Anchoring on the objects' own median
    restores their range. A pixel is on an object when it lies more than *k*
    camera-noise sigma above the frame's background (both measured on the frame,
    :mod:`inscope.detector.signal`; *noise*: the noise sigma when already measured).
    The median, not a high percentile, because in a sparse field the simulator's
    specks of debris are as many as the nuclei' pixels and brighter: the 98th
    percentile of the object pixels lay on them and lost lone nuclei (the model card,
    *Empty and sparse fields*). Where objects cover more than ~0.4 % of a frame, the
    99.8th percentile already lies in the upper half of their pixels, so every training
    crop, HeLa frame and default simulated frame keeps *hi* exactly.
    """
    from inscope.detector import signal  # (signal reads this module's percentiles)

    sigma = signal.noise_sigma(img) if noise is None else noise
    if not sigma > 0:
        return hi
    level = signal.background_level(img, sigma) + k * sigma
    sub = subsample(img, step)
    on = sub > level
    n = np.count_nonzero(on)
    # objects on 0.4 % of the pixels or more: the top 0.2 % (the 99.8th percentile) are
    # theirs and lie in their upper half, above their median - *hi* stands, and the
    # median (most of this step's cost in a field of cells) is not taken
    if n < SPARSE_MIN_SAMPLES or n >= 0.004 * on.size:
        return hi
    return max(hi, float(np.median(sub[on])))


def hot_pixel_step(img: np.ndarray, spec: Mapping[str, Any] | None,
                   noise: float | None = None) -> np.ndarray:
    """*img* through the hot-pixel step a card's ``normalisation`` *spec* asks for
    (``hot_pixel_sigma``, ``hot_pixel_pairs``; missing keys take
    :data:`DEFAULT_NORMALISATION`'s): :func:`normalise` takes it, and so does a client
    whose server normalises without it (the Triton detector)."""
    spec = {**DEFAULT_NORMALISATION, **(spec or {})}
    if not spec.get("hot_pixel_sigma"):
        return img
    return without_hot_pixels(img, float(spec["hot_pixel_sigma"]),
                              bool(spec.get("hot_pixel_pairs")), noise=noise)


def without_hot_pixels(img: np.ndarray, sigma: float, pairs: bool = False,
                       noise: float | None = None) -> np.ndarray:
    """*img* with every pixel more than *sigma* camera-noise sigma above all eight of its
    neighbours lowered to that much; *img* itself when none is (or the frame has no
    noise to measure).

    Why before the network: an uncorrected sCMOS frame's hot pixels or a long exposure's
    cosmic-ray hits are single bright pixels that the percentile stretch and the network
    both take for signal. On simulated 512 x 512 frames the shipped network went from 1.6
    to 6.9 false boxes per frame with 0.01 % hot pixels, and at 0.3 % the stretch's top
    percentile lay on them and recall fell to 0.16 (``benchmarks/hot_pixels.py``).
    Noise never lies that far above all its neighbours, so a clean frame passes
    unchanged (a nucleus' brighter photon noise loses at most its excess over the
    margin). Measured on the frame: :func:`inscope.detector.signal.noise_sigma`
    (*noise*: already measured).
    """
    from inscope.detector import signal  # (signal reads this module's percentiles)

    if img.dtype not in _HOT_TYPES:  # (a mask, int32: nothing a camera calls a pixel)
        return img
    margin = sigma * (signal.noise_sigma(img) if noise is None else noise)
    if not margin > 0:
        return img
    # one pair of buffers per thread, shape and type: the result is read at once by
    # normalise(), before this thread's next frame can overwrite it
    key = (img.shape, img.dtype.str)
    bufs = getattr(_HOT_BUFFERS, "bufs", None)
    if bufs is None or bufs[0] != key:
        bufs = _HOT_BUFFERS.bufs = (key, np.empty(img.shape, img.dtype),
                                    np.empty(img.shape, img.dtype))
    if pairs:  # (the result: *img* itself unless a pixel is lowered, then a copy)
        return signal.without_hot_pixels(img, margin, work=bufs[2], pairs=True)
    return signal.without_hot_pixels(img, margin, out=bufs[1], work=bufs[2])


_HOT_BUFFERS = threading.local()
#: pixel types OpenCV's dilation takes
_HOT_TYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


#: Pixel types OpenCV's arithmetic reads; anything else takes the numpy path.
_CV_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)


def _affine(img: np.ndarray, a: float, b: float, out: np.ndarray) -> None:
    """``out = img * a + b`` as float32, in one pass over the frame.

    OpenCV's ``addWeighted`` (second weight 0) casts, scales and shifts in one
    multi-threaded pass: about 4x faster than numpy's cast-and-subtract then multiply on
    a 2048 x 2048 uint16 frame (0.5 vs 2.0 ms, 2 cores), which is most of the
    pre-processing a GPU leaves on the CPU. numpy for the pixel types OpenCV lacks.
    """
    if img.dtype.type in _CV_TYPES and img.ndim == 2:
        # OpenCV writes only into rows of contiguous pixels (a padded buffer's corner is
        # fine); a transposed, column-strided, flipped or read-only *out* gets the result
        # copied in (OpenCV refuses such a dst outright)
        rows = (out.flags.writeable and out.strides[1] == out.itemsize
                and out.strides[0] > 0)
        r = cv2.addWeighted(img, float(a), img, 0.0, float(b),
                            dst=out if rows else None, dtype=cv2.CV_32F)
        if r is not out:
            np.copyto(out, r)
    else:
        np.multiply(img, np.float32(a), out=out, dtype=np.float32, casting="unsafe")
        np.add(out, np.float32(b), out=out)


def resize(img: np.ndarray, factor: float) -> np.ndarray:
    """Resize *img* by *factor* (area averaging down, bilinear up); no-op for ~1."""
    if abs(factor - 1.0) < 1e-3:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def unscale_boxes(boxes: np.ndarray, factor: float, shape: tuple[int, ...]) -> None:
    """Map *boxes* found on ``resize(img, factor)`` back to *img* (of *shape*), in place.

    Boxes have pixel centres at integer coordinates, and OpenCV aligns pixel centres when
    it resizes: a point at ``x`` in the source lies at ``(x + 0.5) s - 0.5`` in the result,
    ``s`` the true per-axis ratio of the rounded sizes. Dividing by *factor* alone
    (the edge convention) puts boxes ``(1 / f - 1) / 2`` px off: half a pixel at 2x.
    """
    if abs(factor - 1.0) < 1e-3 or not len(boxes):
        return
    h, w = shape[:2]
    sx = max(1, round(w * factor)) / w
    sy = max(1, round(h * factor)) / h
    boxes[:, 0::2] = (boxes[:, 0::2] + 0.5) / sx - 0.5
    boxes[:, 1::2] = (boxes[:, 1::2] + 0.5) / sy - 0.5


def pad_to_multiple(img: np.ndarray, multiple: int, value: float = 0.0) -> np.ndarray:
    """Pad *img* at the bottom/right so both sides are multiples of *multiple*.

    Padding at the far edges only keeps pixel coordinates unchanged, so boxes need no
    shift afterwards.
    """
    h, w = img.shape[:2]
    m = max(1, int(multiple))
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return img
    return cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=value)


def scale_factor(object_size_px: float | None, card_range: Any) -> float:
    """Resize factor that brings objects of *object_size_px* into the model's range.

    ``card_range`` is the card's ``scale.object_size_px`` ([lo, hi] or one number). The
    target is the geometric centre of the range; with no size given, 1 (no rescale).
    """
    if object_size_px is None or card_range in (None, [], ()):
        return 1.0
    if object_size_px <= 0:
        raise ValueError(f"object_size_px must be positive; got {object_size_px}.")
    rng = np.atleast_1d(np.asarray(card_range, dtype=float))
    target = float(np.sqrt(rng.min() * rng.max()))
    return target / float(object_size_px)
