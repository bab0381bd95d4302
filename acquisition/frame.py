"""The `Frame`: one camera image plus everything needed to act on it.

A frame carries its own pixel-to-stage map so that any consumer (detector, controller,
overlay, a remote client) can turn a box in pixels into a stage position without asking
the microscope again, which may already have moved on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inscope.enums import Stamp

# Time-stamp names: inscope.enums.Stamp. The constants are plain str (the per-frame
# stamp dicts keep exact-str keys). Every stamp is ``time.monotonic_ns()`` on this host.
STAMP_READY: str = Stamp.READY.value  # the frame's pixels are in host memory


def without_trailing_ones(a: np.ndarray, axes: str = "") -> tuple[np.ndarray, str]:
    """*a* without its trailing length-1 axes past two, and its axis letters *axes* (when
    known: a TIFF's) without theirs: a (Y, X, 1) image as (Y, X), (Z, Y, X, 1) as
    (Z, Y, X). An axis named Y or X is kept whatever its length.

    Why: a grey image kept with a channel axis of one (as Keras-style datasets, imageio
    and some exporters write it) is one image; the slide, the replay and eval's npz
    reader refused it as a shape they do not take.
    """
    while a.ndim > 2 and a.shape[-1] == 1 and not (axes and axes[-1] in "YX"):
        a, axes = a[..., 0], axes[:-1]
    return a, axes


def colour_to_grey(a: np.ndarray) -> np.ndarray:
    """A colour image, (..., 3) RGB / BGR or (..., 4) with alpha, as one grey plane: the
    mean of its three colour samples, alpha ignored; the type kept (integers rounded).

    One rule wherever colour reaches the project (a colour camera through Micro-Manager,
    a colour TIFF, video or picture played or opened as a slide, a dataset's images,
    arrays handed to the integrations). The unweighted mean is ImageJ's default
    conversion, and it suits fluorescence drawn in colour, one dye per colour: the
    luminance weights (0.299, 0.587, 0.114) would keep a blue DAPI picture at a ninth of
    its range (29 grey levels of 8-bit) and a red one at under a third. Equal weights
    also make RGB and BGR order the same. OpenCV's ``transform`` does it in one pass
    (numpy's mean over the last axis is several times slower on camera frames).
    """
    import cv2

    c = np.asarray(a)
    if c.ndim < 3 or c.shape[-1] not in (3, 4):
        raise ValueError(f"colour_to_grey needs (..., 3) or (..., 4) colour samples; got "
                         f"shape {c.shape}.")
    if c.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        c = c.astype(np.float32)
    m = np.array([[1.0, 1.0, 1.0, 0.0][: c.shape[-1]]], np.float64) / 3.0
    # (cv2.transform takes one 2-D plane of at most 4 channels: every pixel in one column)
    flat = np.ascontiguousarray(c).reshape(-1, 1, c.shape[-1])
    return cv2.transform(flat, m).reshape(c.shape[:-1])


def from_file_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes in a file's ``[k, k + 1)`` pixel coordinates -> the frame's (pixel
    centres at integers): half a pixel less on every coordinate.

    Files count pixel k as the interval [k, k + 1): npz, YOLO, VOC and COCO boxes, and a
    label mask's slice (``start``, ``stop``) round an object. Frames, detections and the
    control code put pixel k's centre at k. One conversion, used wherever boxes are read.
    """
    return np.asarray(boxes, np.float32).reshape(-1, 4) - np.float32(0.5)


def open_npz(path: str | Path) -> Any:
    """``numpy.load(path, allow_pickle=False)`` of an ``.npz`` archive, refusing first a
    file that is not one: numpy reads anything without the zip or ``.npy`` header as a
    pickle, and a text file named ``.npz`` got "contains pickled (object) data".

    Raises
    ------
    ValueError
        One line naming the file, what it starts with and how to write one.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(b"PK"):
        raise ValueError(f"{path} is not an npz archive (a zip of arrays; it starts with "
                         f"{head!r}); write one with numpy.savez(path, image=...).")
    return np.load(path, allow_pickle=False)


def check_file_boxes(boxes: Any, key: str = "boxes", *, fix: str | None = None,
                     shown: Any = None, names: Sequence[str] | None = None
                     ) -> np.ndarray:
    """*boxes* as a file stores them, checked: an (N, 4) float64 array of x0, y0, x1, y1
    with finite values and x1 > x0, y1 > y0 (a single (4,) box is one row).

    Why: a malformed array reshaped to (N, 4) still scores - a transposed (4, N) array
    as N garbage boxes, x, y, w, h or swapped corners as boxes no detection can match -
    and the result is a silent AP of 0. One rule for every reader that takes boxes from
    a file (the datasets' npz, YOLO, VOC and COCO files - converted to x0, y0, x1, y1
    in the ``[k, k + 1)`` convention first - and the slide microscope's npz).

    Parameters
    ----------
    fix
        How to fix a box without area in the caller's format (default: the npz
        array's, naming x0, y0, x1, y1).
    shown
        The boxes as the file writes them (e.g. COCO's x, y, w, h), (N, ...) rows for
        the error's example; default *boxes*.
    names
        What each box is called in the file (``"line 3"``, ``"annotation id 17"``), for
        the error's example; default ``"row i"``.

    Raises
    ------
    ValueError
        One line naming *key*, how many boxes are wrong and the fix (the caller adds
        the file's name).
    """
    a = np.asarray(boxes)
    if a.dtype.kind not in "uif":
        raise ValueError(f"{key} hold {a.dtype} values; save the boxes as a numeric "
                         "(N, 4) array of x0, y0, x1, y1 pixels.")
    if a.size == 0:
        return np.zeros((0, 4), np.float64)
    if a.ndim == 1 and a.shape[0] == 4:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 4:
        hint = (f" (it looks transposed: save {key}.T, {a.shape[1]} boxes as rows)"
                if a.ndim == 2 and a.shape[0] == 4 else "")
        raise ValueError(f"{key} have shape {a.shape}; save one box per row, an (N, 4) "
                         f"array of x0, y0, x1, y1 pixels{hint}.")
    a = a.astype(np.float64)
    rows = a if shown is None else np.asarray(shown)

    def which(i: int) -> str:
        return f"{f'row {i}' if names is None else names[i]}, {rows[i].tolist()}"
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(f"{key} must be finite; {int(bad.sum())} of {len(a)} have NaN or "
                         f"infinite coordinates (the first: {which(int(np.argmax(bad)))});"
                         " remove or fix them.")
    bad = (a[:, 2] <= a[:, 0]) | (a[:, 3] <= a[:, 1])
    if bad.any():
        i = int(np.argmax(bad))
        if fix is not None:
            raise ValueError(f"{key} must have a positive width and height; {int(bad.sum())}"
                             f" of {len(a)} do not (the first: {which(i)}): {fix}.")
        raise ValueError(
            f"{key} must be (N, 4) x0, y0, x1, y1 with x1 > x0 and y1 > y0; {int(bad.sum())}"
            f" of {len(a)} are not (the first: row {i}, {a[i].tolist()}): fix the boxes "
            f"array (x, y, w, h boxes convert with {key}[:, 2:] += {key}[:, :2]).")
    return a


def boxes_outside(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N,) bool: which file boxes (:func:`check_file_boxes`) lie wholly outside an image
    of *shape* (..., H, W), whose pixels span ``[0, W) x [0, H)`` - a box no detection
    can match, so a reader warns (boxes in another image's coordinates, or x and y
    swapped)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = shape[-2:]
    return (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w) | (b[:, 1] >= h)


def check_instance_labels(labels: Any, key: str = "labels") -> np.ndarray:
    """*labels* checked as instance masks - one integer id per object, 0 background -
    and returned as an integer array (whole numbers stored as float converted).

    Why: a boolean (semantic) mask reads as one object covering every cell, and negative
    ids as no object at all; either scores, or serves as a slide's truth, without a
    word. One rule for every reader of instance labels (the datasets' masks and npz, the
    slide microscope).

    Raises
    ------
    ValueError
        One line naming *key* (e.g. ``labels``), the problem and the fix.
    """
    lab = np.asarray(labels)
    if lab.dtype == np.bool_:
        raise ValueError(
            f"{key} are a boolean (semantic) mask, not instance labels (one integer id per "
            "object, 0 background); label its objects first, e.g. "
            "scipy.ndimage.label(mask)[0] or skimage.measure.label(mask).")
    if not np.issubdtype(lab.dtype, np.integer):
        if lab.dtype.kind != "f" or not np.all(np.isfinite(lab)) or np.any(
                lab != np.round(lab)):
            raise ValueError(f"{key} are not integers ({lab.dtype} values that are not "
                             "whole numbers); instance labels must be integers (one id per "
                             "object, 0 background): save instance masks as integers.")
        lab = lab.astype(np.int64)
    if lab.size and lab.min() < 0:
        n = int(np.count_nonzero(lab < 0))
        raise ValueError(f"{key} must be >= 0 (0 background, one positive id per object);"
                         f" {n} pixels have negative ids (min {lab.min()}): save "
                         "background as 0 and each object as a positive id.")
    return lab


def looks_semantic(labels: np.ndarray) -> bool:
    """Whether integer *labels* hold one id whose pixels form several separate objects:
    a binary (0/1, 0/255) semantic mask saved as integers rather than instance labels,
    which would score as one box round every object. (One object in pieces, e.g. cut
    by a crop, reads the same: the caller warns, not refuses.)"""
    from scipy import ndimage

    lab = np.asarray(labels)
    nz = lab[lab != 0]
    if nz.size == 0 or np.any(nz != nz.flat[0]):
        return False
    return ndimage.label(lab != 0)[1] > 1


def label_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids and boxes of the objects of a 2-D instance mask (integer ids, 0
    background): ids ascending, boxes (N, 4) x0, y0, x1, y1 in the files' ``[k, k + 1)``
    convention (a slice's start and stop; :func:`from_file_boxes` takes them to the
    frame's). SciPy's ``find_objects`` reads the mask once, whatever the id count (ids
    far apart, e.g. numbered per tile, through :func:`compact_labels`)."""
    from scipy import ndimage

    lab, names = compact_labels(labels)
    ids, rows = [], []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            ids.append(int(names[i]) if names is not None else i)
            rows.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return np.asarray(ids, int), np.asarray(rows, np.float64).reshape(-1, 4)


#: Largest id for which instance labels are measured as they are (SciPy's per-label
#: functions allocate one entry per id up to the largest, used or not).
COMPACT_ABOVE_ID = 65535


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(labels, names)``: instance *labels* (ids >= 0) renumbered 1..N in the order of
    their ids when the largest id is above :data:`COMPACT_ABOVE_ID`, with ``names[k]``
    the file's id of object k (``names[0]`` is 0); ``names`` is None when they are kept.

    Why: ``scipy.ndimage.find_objects`` and ``center_of_mass`` size their work by the
    largest id, not by the objects present, so a mask of a few nuclei numbered per tile
    or by track (ids of 10^8) took gigabytes and ended in a MemoryError traceback.
    """
    lab = np.asarray(labels)
    if lab.size == 0 or int(lab.max()) <= COMPACT_ABOVE_ID:
        return lab, None
    names, inverse = np.unique(lab, return_inverse=True)
    inverse = inverse.reshape(lab.shape).astype(np.int64)
    if names[0] != 0:  # no background pixel: id 0 is still background
        names, inverse = np.concatenate([[0], names]), inverse + 1
    return inverse, names


@dataclass(frozen=True, slots=True)
class StagePosition:
    """Stage position in micrometres, with Micro-Manager's signs."""

    x: float
    y: float
    z: float


@dataclass(slots=True)
class Frame:
    """One camera image with its context.

    Parameters
    ----------
    pixels
        2-D array (H, W), dtype uint8, uint16 or float32, in the camera's own grid.
    index
        Running number of the frame in its stream (0, 1, 2, ...). Gaps mean dropped frames.
    stamps
        ``time.monotonic_ns()`` stamps keyed by stage name; the backend sets ``"ready"``,
        later stages add their own so latency is always a difference of stamps.
    position
        Stage position (µm) when the frame was exposed, as reported by the stage.
    pixel_size_um
        Size of one camera pixel in the specimen plane (µm), binning included.
    affine
        2x2 matrix A (µm per pixel) such that a pixel at offset ``d = (u - cx, v - cy)``
        from the image centre is centred by moving the stage to ``position.xy + A @ d``.
        For a plain setup it is ``pixel_size_um * identity``; calibration measures it.
    metadata
        Free-form, JSON-serialisable extras (exposure, camera name, binning, ...).
    truth
        Ground-truth boxes (N, 4) float32 x0, y0, x1, y1 in this frame's pixels, only for
        simulated frames; ``None`` otherwise.
    moving
        True when a stage or focus move was in progress while this frame was exposed:
        the image is smeared and its ``position`` is a moment of a motion, so control
        never uses it to decide a move or to measure focus.
    """

    pixels: np.ndarray
    index: int
    stamps: dict[str, int] = field(default_factory=dict)
    position: StagePosition | None = None
    pixel_size_um: float = 1.0
    # None when built: isotropic from pixel_size_um (__post_init__); always 2x2 after
    affine: np.ndarray = None  # type: ignore[assignment]
    metadata: dict[str, Any] = field(default_factory=dict)
    truth: np.ndarray | None = None
    moving: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.pixels, np.ndarray) or self.pixels.ndim != 2:
            shape = getattr(self.pixels, "shape", type(self.pixels).__name__)
            raise ValueError(
                f"Frame pixels must be a 2-D numpy array (H, W); got {shape}. "
                "Split colour or multi-channel images into one Frame per channel."
            )
        if self.affine is None:
            self.affine = np.eye(2) * float(self.pixel_size_um)
        else:
            self.affine = np.asarray(self.affine, dtype=float).reshape(2, 2)
        if STAMP_READY not in self.stamps:
            self.stamps[STAMP_READY] = time.monotonic_ns()

    # -- convenience -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.pixels.shape
        return (h, w)

    @property
    def scale_um(self) -> float:
        """µm per pixel in the specimen plane from :attr:`affine` (the calibrated scale:
        ``sqrt(|det A|)``; ``pixel_size_um`` is the nominal one)."""
        return math.sqrt(abs(float(np.linalg.det(self.affine))))

    @property
    def center(self) -> tuple[float, float]:
        """Pixel coordinate of the optical centre, x then y: pixel ``(w / 2, h / 2)``.

        Pixel centres are at integer coordinates, so this is the centre of the pixel just
        right of and below the image's geometric middle (``((w - 1) / 2, (h - 1) / 2)``
        for even sizes); the simulator and the slide backend put the stage position
        there, and steering centres targets on it.
        """
        h, w = self.pixels.shape
        return (w / 2.0, h / 2.0)

    def stamp(self, name: str) -> int:
        """Record ``time.monotonic_ns()`` under *name* and return it."""
        t = time.monotonic_ns()
        self.stamps[name] = t
        return t

    def pixel_to_stage(self, xy: np.ndarray) -> np.ndarray:
        """Map pixel coordinates (N, 2) to the stage positions (N, 2) µm that centre them."""
        if self.position is None:
            raise ValueError(
                "This frame has no stage position, so pixels cannot be mapped to the stage; "
                "use a backend that reports positions (simulated, Micro-Manager)."
            )
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        d = xy - np.asarray(self.center)
        return np.array([self.position.x, self.position.y]) + d @ self.affine.T

    def stage_to_pixel(self, xy_um: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`pixel_to_stage`: stage µm (N, 2) to pixel coordinates (N, 2)."""
        if self.position is None:
            raise ValueError("This frame has no stage position; cannot map stage to pixels.")
        xy_um = np.atleast_2d(np.asarray(xy_um, dtype=float))
        d = xy_um - np.array([self.position.x, self.position.y])
        return d @ np.linalg.inv(self.affine).T + np.asarray(self.center)
