"""`SlideMicroscope`: a stage-addressable virtual microscope made from a real image.

A real image, a mosaic or a z-stack (npz, TIFF / OME-TIFF, NDTiff; a PNG / JPEG picture)
becomes a slide: the camera sees the ``fov x fov`` crop at the stage position, the focus
drive picks (and interpolates between) planes, and the file's instance labels travel
with every frame as ground truth. Control code can then be run - and scored - on real
cells, real defocus and real detector behaviour, which the simulator hides (box jitter,
blinking detections, haze).

Geometry (the contract the tests check)
---------------------------------------
* Stage (x, y) µm shows the field whose centre (``Frame.center``, pixel ``fov / 2``)
  is image pixel ``(x / P, y / P)``; pixel centres are at integer coordinates, so a label's
  centroid ``(cx, cy)`` px lies at stage ``(cx * P, cy * P)``. Sub-pixel positions are
  honoured (bilinear resampling with OpenCV).
* Stage z µm shows plane ``z / Z`` (linear interpolation between neighbouring planes);
  the soft limits keep z inside the stack. A single 2-D image has no planes: with
  ``defocus > 0`` it is blurred by ``defocus * |z|`` µm (Gaussian sigma), so z = 0 is
  focus and autofocus can be exercised on 2-D data.
* The stage starts over the image centre and the middle plane.
* Outside the image the camera sees the image's background level; camera noise
  (``noise``) is drawn fresh for every frame, everywhere.

A stack's frames are kept in memory (float32); a 100-plane 1024 x 1024 stack is 400 MiB.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.frame import (
    STAMP_READY,
    Frame,
    StagePosition,
    boxes_outside,
    check_file_boxes,
    check_instance_labels,
    colour_to_grey,
    compact_labels,
    from_file_boxes,
    label_boxes,
    looks_semantic,
    open_npz,
    without_trailing_ones,
)
from inscope.acquisition.microscope import BaseMicroscope, parse_sectioning
from inscope.acquisition.replay import (
    PICTURE_SUFFIXES,
    channel_shown,
    imagej_unit_is_um,
    ndtiff_array,
    ndtiff_datasets,
    ndtiff_folder_problem,
    planes_as_samples,
)
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.acquisition.stream import FrameStream, pace

log = logging.getLogger(__name__)

__all__ = ["SLIDE_OPTIONS", "SlideMicroscope", "SlideTruth", "extrude_to_stack", "load_slide",
           "parse_noise"]

#: Options of the ``slide`` backend (``-o KEY=VALUE`` on the command line).
SLIDE_OPTIONS = {
    "path": "npz (image (Y, X) or (Z, Y, X), optional labels / boxes), TIFF, OME-TIFF, "
            "PNG / JPEG (one 2-D image) or NDTiff folder",
    "pixel_size_um": "µm per image pixel (default: from the file; required otherwise)",
    "z_step_um": "µm between planes (default: from the file, else 1)",
    "fov": "camera size in pixels (square; default 512)",
    "noise": "fresh camera noise per frame: a number = Gaussian sigma as a fraction of the "
             "image's signal range (default 0.01), 'shot:N' = Poisson noise with N photons "
             "at the bright level, 0 = none",
    "labels": "a second file with instance labels (npz 'labels', TIFF or grey PNG), "
              "same Y, X",
    "channel": "channel of a multi-channel file (default 0)",
    "defocus": "2-D images only: blur sigma (µm) per µm of defocus (default 0.35)",
    "tilt": "focal plane tilt (dz/dx, dz/dy) added to the z of every plane (default 0, 0)",
    "exposure_ms": "frame interval (default 10)",
    "realtime": "pace frames and moves in wall time (default true; false: as fast as "
                "possible, time counted on a simulated clock)",
    "seed": "camera noise seed (default 0)",
    "xy_settle_ms": "simulated XY settle time (default 20)",
    "z_settle_ms": "simulated focus settle time (default 10)",
    "sectioning": "how the z-stack was recorded: 'sectioned' (or confocal, spinning-disk, "
                  "light-sheet, two-photon) or 'widefield' (default: sectioned for a "
                  "z-stack; a 2-D image's defocus is a widefield blur)",
}


def _fail(path: Path | str, problem: str, fix: str) -> MicroscopeUnavailable:
    return MicroscopeUnavailable(f"slide {str(path)!r}: {problem}; {fix}")


def parse_noise(spec: Any) -> tuple[str, float]:
    """``(kind, value)`` from a noise option: ``0.02`` / ``"gauss:0.02"`` / ``"shot:300"``."""
    s = str(spec).strip().lower()
    if s in ("none", "off", "false"):
        return "gauss", 0.0
    kind, sep, val = s.partition(":")
    if not sep:
        kind, val = "gauss", s
    try:
        v = float(val)
    except ValueError:
        v = math.nan
    if kind not in ("gauss", "shot") or not math.isfinite(v) or v < 0 or (
            kind == "shot" and v == 0):
        raise MicroscopeUnavailable(
            f"slide option noise={spec!r} is not understood; write a number (Gaussian sigma "
            "as a fraction of the signal range, e.g. noise=0.02), shot:N (Poisson, N "
            "photons at the bright level, e.g. noise=shot:300) or noise=0.")
    return kind, v


# -- reading files ---------------------------------------------------------------------
@dataclass
class _SlideFile:
    image: np.ndarray  # (Z, Y, X)
    labels: np.ndarray | None  # (Z, Y, X) or (1, Y, X) integer instance masks
    boxes: np.ndarray | None  # (N, 4) x0, y0, x1, y1 image px (x1, y1 exclusive)
    pixel_size_um: float | None
    z_step_um: float | None
    # the file's y pixel size when it gives one (OME PhysicalSizeY, ImageJ's Y
    # resolution): SlideMicroscope refuses pixels that are not square
    pixel_size_y_um: float | None = None


def _as_zyx(a: np.ndarray, path, what: str) -> np.ndarray:
    a, _ = without_trailing_ones(np.asarray(a))
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape[1:]) < 2:
        raise _fail(path, f"{what} has shape {a.shape}", "give (Y, X) or (Z, Y, X)")
    return a


def _read_npz(path: Path, channel: int) -> _SlideFile:
    try:
        z = open_npz(path)
    except Exception as e:  # noqa: BLE001 - numpy raises several types
        raise _fail(path, f"cannot be read as npz ({type(e).__name__}: {e})",
                    "write it with numpy.savez(path, image=..., labels=...)") from e
    with z:
        keys = list(z.keys())
        if "image" not in keys:
            raise _fail(path, f"has no 'image' array (keys: {keys})",
                        "save the image as image=(Y, X) or (Z, Y, X), optional labels= "
                        "(instance masks) or boxes=(N, 4) x0 y0 x1 y1")
        # (a member numpy cannot read without pickles, or a scale that is not one
        # number, gets one line too, not a traceback)
        what = "image"
        try:
            image, _ = without_trailing_ones(np.asarray(z[what]))
            if image.ndim in (3, 4) and image.shape[-1] in (3, 4) and image.shape[-2] > 4:
                # colour (Y, X, 3) / (Z, Y, X, 3): read as a colour TIFF or PNG is
                image = colour_to_grey(image)
            image = _as_zyx(image, path, what)
            labels = None
            if "labels" in keys:
                what = "labels"
                labels = _as_zyx(z[what], path, what)
            boxes = None
            if "boxes" in keys:
                what = "boxes"
                boxes = np.asarray(z[what])  # checked by load_slide
            scale = []
            for what in ("pixel_size_um", "z_step_um"):
                scale.append(float(z[what]) if what in keys else None)
        except MicroscopeUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - numpy raises several types
            raise _fail(path, f"its {what!r} cannot be read ({type(e).__name__}: {e})",
                        f"save {what} as a plain numeric array (numpy.savez, no objects"
                        "; boxes as (N, 4), pixel_size_um and z_step_um as one number)"
                        ) from e
    return _SlideFile(image, labels, boxes, scale[0], scale[1])


def _read_tiff(path: Path, channel: int) -> _SlideFile:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            axes = series.axes.upper()
            data = series.asarray()
            if len(tf.series) > 1:
                data, axes = _more_series(tf, path, data, axes)
            ome = tf.ome_metadata if tf.is_ome else None
            ij_px, ij_dz, ij_py = (_imagej_sizes(tf) if tf.is_imagej
                                   else (None, None, None))
    except Exception as e:  # noqa: BLE001 - tifffile raises several types
        raise _fail(path, f"cannot be read as TIFF ({type(e).__name__}: {e})",
                    "give a (Z, Y, X) TIFF / OME-TIFF stack") from e
    unknown = axes[:-2].count("Q") + axes[:-2].count("I")
    if unknown > 1:
        # e.g. a (Z, C, Y, X) array saved without axes: which axis is z is a guess, and a
        # wrong guess would show the channels as planes
        raise _fail(path, f"has shape {data.shape} with no axis names (axes "
                          f"{series.axes!r}), so which axis is z cannot be told",
                    "save it as an OME-TIFF or ImageJ hyperstack with axes (e.g. "
                    "tifffile.imwrite(path, a, imagej=True, metadata={'axes': 'ZCYX'})), "
                    "or as one channel (Z, Y, X)")
    n_channels = 0
    if "C" in axes:
        ci = axes.index("C")
        n_channels = data.shape[ci]
        if not 0 <= channel < n_channels:
            raise _fail(path, f"has {n_channels} channels, channel={channel} is not one",
                        f"pass -o channel=0..{n_channels - 1}")
        data = np.take(data, channel, axis=ci)
        axes = axes.replace("C", "")
    if "S" in axes:  # RGB(A): colour_to_grey (alpha ignored); other samples: their mean
        si = axes.index("S")
        if planes_as_samples(axes, data):  # averaging would flatten a z-stack
            raise _fail(path, f"holds {data.shape[si]} {data.dtype} planes stored as the "
                              "samples of one RGB(A) image (axes "
                              f"{series.axes!r}), so they may be z planes or colours",
                        "save a z-stack with its axes (tifffile.imwrite(path, a, "
                        "metadata={'axes': 'ZYX'}) or as OME-TIFF), a colour picture "
                        "as 8-bit RGB")
        data = (colour_to_grey(np.moveaxis(data, si, -1)) if data.shape[si] in (3, 4)
                else data.mean(axis=si))
        axes = axes.replace("S", "")
    data, axes = without_trailing_ones(data, axes)
    if not axes.endswith("YX"):
        raise _fail(path, f"axes {series.axes!r} have no Y, X at the end",
                    "save the stack as (Z, Y, X)")
    # Everything before Y, X: Z if there is one, otherwise one plane per leading index.
    lead = axes[:-2]
    # the axes of which the slide takes index 0 (time points, tiles, ...), and their sizes
    firsts = {a: n for a, n in zip(lead, data.shape[:len(lead)], strict=True) if a != "Z"}
    if "Z" in lead:
        zi = lead.index("Z")
        data = np.moveaxis(data, zi, 0)
        data = data.reshape(data.shape[0], -1, *data.shape[-2:])[:, 0]
    else:
        data = data.reshape(-1, *data.shape[-2:])
        if len(lead) and data.shape[0] > 1 and lead not in ("Q", "I"):
            data = data[:1]  # time series: the first time point is the slide
        else:
            firsts = {}  # (planes without axis names are the stack's planes)
    _say_what_is_shown(path, channel, n_channels,
                       {_TIFF_AXIS_NAMES.get(a, f"{a} indices"): n for a, n in firsts.items()})
    px, dz, py = ij_px, ij_dz, ij_py
    if ome:
        from inscope.acquisition.replay import _ome_pixels, ome_length_um, ome_sizes

        px, dz = ome_sizes(ome)
        pixels, _ = _ome_pixels(ome)
        py = ome_length_um(pixels, "PhysicalSizeY") if pixels is not None else None
    return _SlideFile(_as_zyx(data, path, "image"), None, None, px, dz, py)


#: What tifffile's axis letters count, for the note of :func:`_say_what_is_shown`.
_TIFF_AXIS_NAMES = {"T": "time points", "R": "tiles", "A": "angles", "E": "wavelengths",
                    "H": "lifetime bins", "P": "phases", "V": "positions", "L": "exposures",
                    "Q": "planes", "I": "planes"}


def _say_what_is_shown(path: Path, channel: int, n_channels: int,
                       firsts: dict[str, int]) -> None:
    """Log which part of a larger file the slide shows: the channel of several, and the
    first index of every other axis (time points, positions, ...) of more than one.

    Why: a slide of the wrong channel or time point looks like a valid one - nuclei in a
    DAPI channel and a membrane stain both give frames - so the choice made for the user
    is said once, with the option that changes it.
    """
    parts = []
    if n_channels > 1:
        parts.append(channel_shown(channel, n_channels))
    parts += [f"the first of {n} {name}" for name, n in firsts.items() if n > 1]
    if parts:
        log.info("%s: the slide shows %s", path.name, "; ".join(parts))


def _more_series(tf, path: Path, data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """A TIFF of several series: planes written one ``imwrite`` / ``write`` call at a
    time (tifffile's default metadata makes each its own series) are the planes of one
    stack, as a page sequence is; anything else (a thumbnail, a label image, another
    size) is left out, and the log says so, rather than dropped silently."""
    others = tf.series[1:]
    if axes == "YX" and all(tuple(x.shape) == data.shape and x.dtype == data.dtype
                            for x in others):
        log.info("%s: %d single-plane series of one shape, read as %d planes",
                 path.name, len(tf.series), len(tf.series))
        return np.stack([data, *(x.asarray() for x in others)]), "IYX"
    log.warning("%s holds %d image series; the slide is the first (shape %s, axes %s), "
                "the others (%s) are left out", path.name, len(tf.series), data.shape,
                axes, ", ".join(f"{tuple(x.shape)} {x.axes}" for x in others))
    return data, axes


def _imagej_sizes(tf) -> tuple[float | None, float | None, float | None]:
    """Pixel size, z step and y pixel size (µm) of an ImageJ (Fiji) TIFF: the X (and Y)
    resolution tags in pixels per ``unit`` and ``spacing``, when the unit is a
    micrometre (None otherwise: ImageJ writes 1 pixel per pixel when it was never
    calibrated)."""
    meta = tf.imagej_metadata or {}
    if not imagej_unit_is_um(meta):
        return None, None, None

    def size(name: str) -> float | None:
        tag = tf.pages[0].tags.get(name)
        if tag is not None:
            num, den = tag.value
            if num > 0 and den > 0:
                return float(den) / float(num)
        return None

    dz = meta.get("spacing")
    return (size("XResolution"), (float(dz) if dz is not None and float(dz) > 0 else None),
            size("YResolution"))


def _read_ndtiff(path: Path, channel: int) -> _SlideFile:
    import contextlib
    import io

    try:
        from ndstorage import Dataset
    except ImportError as e:
        raise _fail(path, "is an NDTiff folder but 'ndstorage' is not installed",
                    "pip install ndstorage") from e
    found = ndtiff_datasets(path)
    if len(found) != 1:
        raise _fail(path, *ndtiff_folder_problem(path, found, "-o path="))
    path = found[0]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ds = Dataset(str(path))
        arr = ndtiff_array(ds)
        axes = {n: list(v) for n, v in ds.axes.items()}
        summary = ds.summary_metadata if isinstance(ds.summary_metadata, dict) else {}
    except Exception as e:  # noqa: BLE001
        raise _fail(path, f"cannot be read as NDTiff ({type(e).__name__}: {e})",
                    "give the NDTiff dataset folder") from e
    names = list(axes)
    n_channels = len(axes.get("channel", []))
    if n_channels and not 0 <= channel < n_channels:  # (no channel axis: one image)
        raise _fail(path, f"has {n_channels} channels, channel={channel} is not one",
                    f"pass -o channel=0..{n_channels - 1}")
    # Keep z; the chosen channel; index 0 of everything else.
    _say_what_is_shown(path, channel, n_channels,
                       {f"{n!r} values": len(v) for n, v in axes.items()
                        if n not in ("z", "channel")})
    if arr.ndim == len(names) + 2:
        idx: list[Any] = [slice(None) if n == "z" else channel if n == "channel" else 0
                          for n in names]
        arr = arr[tuple(idx)]
    dz = summary.get("z-step_um") or None
    flip = False
    if not dz and "z" in names:
        # pycro-manager writes no z step in the summary, only each image's z
        dz, flip = _ndtiff_z_step(ds, axes, channel)
    px = summary.get("PixelSize_um")
    if "z" in names:
        _warn_missing_planes(ds, axes, channel, path)
    with contextlib.suppress(Exception):
        ds.close()
    planes = arr.reshape(-1, *arr.shape[-2:])
    if flip:  # acquired top down: the slide's planes go up in z
        planes = planes[::-1]
    return _SlideFile(_as_zyx(planes, path, "image"), None, None,
                      float(px) if px else None, float(dz) if dz else None)


def _read_picture(path: Path, what: str = "image") -> np.ndarray:
    """A PNG / JPEG / BMP (:data:`~inscope.acquisition.replay.PICTURE_SUFFIXES`: no pixel
    size in the file) as (1, Y, X): grey as it is (8 or 16 bit), colour as
    :func:`~inscope.acquisition.frame.colour_to_grey` makes it. Labels must be grey."""
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise _fail(path, f"cannot be read as a {path.suffix.lower()[1:].upper()} picture",
                    "check the file, or save it as TIFF or npz")
    if a.ndim == 3:
        if what == "labels":
            raise _fail(path, f"labels picture has {a.shape[2]} colour samples",
                        "save instance labels as a grey 8 / 16-bit PNG of integer ids")
        a = colour_to_grey(a)
    return _as_zyx(a, path, what)


def _plane_coords(axes: dict[str, list], channel: int) -> dict:
    """The NDTiff coordinates, except z, of the slide's planes: the chosen channel (the
    caller has checked its index; the first one otherwise) and the first value of every
    other axis (time, position, ...)."""
    return {n: (v[channel] if n == "channel" and channel < len(v) else v[0])
            for n, v in axes.items() if n != "z"}


def _warn_missing_planes(ds, axes: dict[str, list], channel: int, path: Path) -> None:
    """Say which z planes of the chosen channel the dataset lacks (an acquisition that
    was stopped, or a channel imaged on some planes only): ndstorage fills them with
    zeros, which the slide would otherwise show as black planes without a word."""
    base = _plane_coords(axes, channel)
    try:
        missing = [z for z in axes["z"] if not ds.has_image(**base, z=z)]
    except Exception:  # noqa: BLE001 - a dataset that cannot say: nothing to report
        return
    if missing:
        log.warning("%s: no image at z index %s (%s); those planes are black in the slide",
                    path.name, missing, ", ".join(f"{n}={v}" for n, v in base.items())
                    or "the only channel")


def _ndtiff_z_step(ds, axes: dict[str, list], channel: int) -> tuple[float | None, bool]:
    """``(z step µm, planes acquired top down)`` of an NDTiff z-stack from its planes'
    own z positions (pycro-manager records ``ZPosition_um_Intended`` per image, no step
    in the summary); ``(None, False)`` when they are not recorded. Uneven spacing uses
    the median step and says so in the log."""
    from inscope.acquisition.mm_tags import tag_axis

    zs = axes.get("z", [])
    if len(zs) < 2:
        return None, False
    base = _plane_coords(axes, channel)
    got = []
    for z in zs:
        try:
            v = tag_axis(ds.read_metadata(**base, z=z) or {}, "Z")
        except Exception:  # noqa: BLE001 - no per-image metadata
            return None, False
        if v is None:
            return None, False
        got.append(float(v))
    steps = np.diff(got)
    step = float(np.median(steps))
    if step == 0 or np.any(np.sign(steps) != np.sign(step)):
        return None, False
    if np.any(np.abs(steps - step) > 0.05 * abs(step)):
        log.warning("NDTiff z planes are not evenly spaced (z = %s um); the slide uses "
                    "their median step %.4g um", [round(v, 3) for v in got], abs(step))
    return abs(step), step < 0


def _read_labels(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    if not path.exists():
        raise _fail(path, "labels file does not exist", "check -o labels=FILE")
    if path.suffix.lower() == ".npz":
        try:
            with open_npz(path) as z:
                key = "labels" if "labels" in z else next(iter(z.keys()), None)
                if key is None:
                    raise _fail(path, "labels npz is empty", "save labels=(Z, Y, X) masks")
                lab = _as_zyx(z[key], path, "labels")
        except MicroscopeUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - numpy raises several types
            raise _fail(path, f"labels cannot be read as npz ({type(e).__name__}: {e})",
                        "save them with numpy.savez(path, labels=(Z, Y, X) masks)") from e
    elif path.suffix.lower() in PICTURE_SUFFIXES:
        lab = _read_picture(path, "labels")
    else:
        lab = _read_tiff(path, 0).image
    return lab


def load_slide(path: str | Path, channel: int = 0, labels: str | Path | None = None
               ) -> _SlideFile:
    """Read a slide file; raises :class:`MicroscopeUnavailable` with one clear line."""
    p = Path(path)
    if not p.exists():
        raise _fail(p, "does not exist", "give an npz, TIFF / OME-TIFF, PNG or NDTiff folder "
                    "path with -o path=FILE")
    name = p.name.lower()
    if p.is_dir():
        sf = _read_ndtiff(p, channel)
    elif name.endswith(".npz"):
        sf = _read_npz(p, channel)
    elif name.endswith((".tif", ".tiff", ".btf")):
        sf = _read_tiff(p, channel)
    elif name.endswith(PICTURE_SUFFIXES):
        sf = _SlideFile(_read_picture(p), None, None, None, None)
    else:
        raise _fail(p, f"has an unknown type ({p.suffix or 'no suffix'})",
                    "use .npz, .tif / .ome.tif, .png / .jpg or an NDTiff folder")
    if labels is not None:
        sf.labels = _read_labels(Path(labels), sf.image.shape)
    img = sf.image
    if not np.issubdtype(img.dtype, np.number) or img.dtype == np.bool_:
        raise _fail(p, f"image dtype {img.dtype} is not numeric", "save a numeric image")
    if not np.all(np.isfinite(img)):
        raise _fail(p, "image has NaN or infinite values", "replace them before use")
    if sf.labels is not None:
        lab = sf.labels
        if lab.shape[1:] != img.shape[1:] or lab.shape[0] not in (1, img.shape[0]):
            raise _fail(p, f"labels shape {lab.shape} does not match image {img.shape}",
                        "give labels of shape (Y, X) or the image's (Z, Y, X)")
        # (the rules the datasets' readers apply too: inscope eval refuses what the
        # slide refuses)
        try:
            sf.labels = check_instance_labels(lab, "labels")
        except ValueError as e:
            raise MicroscopeUnavailable(f"slide {str(p)!r}: {e}") from None
        if looks_semantic(sf.labels):
            log.warning("slide %s: its labels have one id over several separate objects: "
                        "a binary (semantic) mask, not instance labels, is one object "
                        "covering every cell in the truth; label its objects first "
                        "(scipy.ndimage.label(mask > 0)[0] or skimage.measure.label(mask "
                        "> 0))", p.name)
    if sf.boxes is not None:
        try:
            sf.boxes = check_file_boxes(sf.boxes, "boxes")
        except ValueError as e:
            raise MicroscopeUnavailable(f"slide {str(p)!r}: {e}") from None
        out = boxes_outside(sf.boxes, img.shape)
        if out.any():
            log.warning("slide %s: %d of %d boxes lie wholly outside the %d x %d image "
                        "(the first: row %d, %s), so they are never in a frame; are they "
                        "in another image's coordinates, or x and y swapped?", p.name,
                        int(out.sum()), len(out), img.shape[2], img.shape[1],
                        int(np.argmax(out)), sf.boxes[np.argmax(out)].tolist())
    return sf


# -- ground truth ----------------------------------------------------------------------
@dataclass
class SlideTruth:
    """The labelled objects of a slide, in stage coordinates.

    ``xyz_um`` is each object's centroid (all its voxels) as the stage position that
    centres and focuses it; ``z_range_um`` the z of its first and last labelled plane
    (NaN for 2-D labels); ``boxes_px`` its (x0, y0, x1, y1) box in image pixels (edges at
    half-pixels) over all planes.
    """

    ids: np.ndarray
    xyz_um: np.ndarray
    z_range_um: np.ndarray
    boxes_px: np.ndarray

    def nearest(self, xy_um: np.ndarray) -> int:
        """Index (into the arrays) of the object whose centroid is nearest *xy_um*."""
        d = np.hypot(*(self.xyz_um[:, :2] - np.asarray(xy_um, float)[:2]).T)
        return int(np.argmin(d))


def _slice_box(rows: slice, cols: slice) -> list[float]:
    """The box (frame pixels) of a label's slices, which count pixel k as [k, k + 1)."""
    return [float(v) for v in from_file_boxes(
        np.array([cols.start, rows.start, cols.stop, rows.stop]))[0]]


class _Labels:
    """Per-plane boxes and centroids of instance labels, computed once."""

    def __init__(self, labels: np.ndarray | None, boxes: np.ndarray | None, px: float,
                 dz: float, nz_image: int) -> None:
        from scipy import ndimage

        self.planes: list[tuple[np.ndarray, np.ndarray]] = []  # per plane: ids, boxes
        self.is3d = labels is not None and labels.shape[0] > 1
        if labels is None and boxes is None:
            self.truth = SlideTruth(np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 2)),
                                    np.zeros((0, 4)))
            return
        if labels is None:
            assert boxes is not None
            ids = np.arange(1, len(boxes) + 1)
            b = from_file_boxes(boxes).astype(float)
            c = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
            zc = np.full(len(ids), (nz_image - 1) / 2 * dz)
            self.planes = [(ids, b)]
            self.truth = SlideTruth(ids, np.column_stack([c * px, zc]),
                                    np.full((len(ids), 2), np.nan), b)
            return
        # (measured on ids 1..N when the file's are far apart, reported as the file's)
        lab, names = compact_labels(labels)
        ids = np.unique(lab)
        ids = ids[ids > 0]
        objs = ndimage.find_objects(lab)
        com = np.asarray(ndimage.center_of_mass(np.ones(lab.shape, np.float32), lab,
                                                ids), float).reshape(-1, 3)
        bxs, zr = [], []
        for i in ids:
            sl = objs[i - 1]
            bxs.append(_slice_box(sl[1], sl[2]))
            zr.append([sl[0].start * dz, (sl[0].stop - 1) * dz] if self.is3d
                      else [np.nan, np.nan])
        zc = com[:, 0] * dz if self.is3d else np.full(len(ids), (nz_image - 1) / 2 * dz)
        if names is not None:
            ids = names[ids]
        self.truth = SlideTruth(ids.astype(int), np.column_stack([com[:, 2] * px,
                                                                  com[:, 1] * px, zc]),
                                np.asarray(zr, float).reshape(-1, 2),
                                np.asarray(bxs, float).reshape(-1, 4))
        for k in range(lab.shape[0]):
            pid, pb = label_boxes(lab[k])
            self.planes.append((pid if names is None else names[pid].astype(int),
                                from_file_boxes(pb).astype(float)))

    def at(self, plane: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.planes:
            return np.zeros(0, int), np.zeros((0, 4))
        return self.planes[min(max(plane, 0), len(self.planes) - 1)]


#: Gaussian sigma (pixels of the sampled planes) that averages away an image's own pixel
#: noise before its background level is read (:func:`background_level`).
BACKGROUND_SMOOTH_PX = 2.0


def background_level(planes: np.ndarray) -> float:
    """The background level of *planes* (Z, Y, X): the 10th percentile of the planes
    smoothed by a Gaussian of :data:`BACKGROUND_SMOOTH_PX`.

    Why smoothed: the camera sees this level outside the image, beside the image's own
    background. The 10th percentile of a noisy background lies 1.3 noise sigmas below
    its mean, so outside the image was a darker field with a sharp edge along the
    image's border, and the detector found "nuclei" at the image's corners and edges
    (a scan over a region that reaches the border reported them as cells). Smoothing
    first divides the pixel noise by about 7, so the level is the background's mean
    while a flat field, a ramp or a dark gap between nuclei keeps its 10th percentile.
    (In float64, rounded to the frames' float32: a flat background stays exactly its
    value, which shot noise, adding no photons there, must give back.)
    """
    import cv2

    smooth = [cv2.GaussianBlur(np.asarray(p, np.float64), (0, 0), BACKGROUND_SMOOTH_PX,
                               borderType=cv2.BORDER_REFLECT) for p in planes]
    return float(np.float32(np.percentile(np.stack(smooth), 10)))


#: Relative difference of a file's x and y pixel sizes above which pixels are not square.
SQUARE_TOLERANCE = 1e-3


def _check_square(path: str | Path, sf: _SlideFile, given: Any) -> None:
    """Refuse a file whose pixels are not square (OME PhysicalSizeY unlike PhysicalSizeX,
    or ImageJ's Y resolution unlike its X), unless ``pixel_size_um`` was given, which
    then says the pixels are square at that size (logged).

    Why: the slide is stage-addressable - stage (x, y) µm is image pixel (x / P, y / P),
    one size for both axes, as on a camera - so a 0.4 x 0.8 µm pixel read as 0.4 µm
    square puts every y position, move and truth centroid off by 2x. Resampling the
    image to square pixels keeps the geometry right.
    """
    px, py = sf.pixel_size_um, sf.pixel_size_y_um
    if px is None or py is None or abs(px - py) <= SQUARE_TOLERANCE * max(px, py):
        return
    if given is not None:
        log.warning("slide %s: the file's pixels are %.4g x %.4g µm (x, y), not square; "
                    "the slide takes pixel_size_um=%s for both axes", Path(path).name, px,
                    py, given)
        return
    raise MicroscopeUnavailable(
        f"slide {str(path)!r}: its pixels are not square ({px:.4g} µm in x, {py:.4g} µm in "
        "y) and the slide moves the stage by one pixel size in both axes; resample it to "
        f"square pixels (e.g. cv2.resize(plane, None, fx=1, fy={py / px:.4g}) for each "
        "plane, labels with interpolation=cv2.INTER_NEAREST) and give -o "
        f"pixel_size_um={px:.4g}.")


def _opt_bool(name: str, v: Any) -> bool:
    """A yes/no option; a word that is neither (a typo such as ``realtime=flase``) is
    refused rather than read as no."""
    if isinstance(v, str):
        w = v.strip().lower()
        if w in ("1", "true", "yes", "on"):
            return True
        if w in ("0", "false", "no", "off"):
            return False
        raise MicroscopeUnavailable(f"slide option {name}={v!r} is not allowed; give true "
                                    f"or false ({SLIDE_OPTIONS.get(name, '')}).")
    return bool(v)


class SlideMicroscope(BaseMicroscope):
    """A virtual microscope over a real image, mosaic or z-stack (see the module notes).

    Parameters
    ----------
    path
        npz / TIFF / OME-TIFF / NDTiff.
    pixel_size_um, z_step_um, fov, noise, labels, channel, defocus, tilt, exposure_ms,
    realtime, seed, xy_settle_ms, z_settle_ms, sectioning
        See :data:`SLIDE_OPTIONS`.
    guard
        Move guard; by default the image extent grown by half a field, and the stack's z
        range, as soft limits.
    """

    name = "slide"

    def __init__(self, path: str | Path, *, pixel_size_um: float | None = None,
                 z_step_um: float | None = None, fov: int = 512, noise: Any = 0.01,
                 labels: str | Path | None = None, channel: int = 0, defocus: float = 0.35,
                 tilt: Any = (0.0, 0.0), exposure_ms: float = 10.0, realtime: Any = True,
                 seed: int = 0, xy_settle_ms: float = 20.0, z_settle_ms: float = 10.0,
                 sectioning: str | None = None,
                 guard: MoveGuard | None = None, limits: SoftLimits | None = None,
                 dry_run: bool = False) -> None:
        def num(name: str, v: Any, lo: float, hi: float = math.inf) -> float:
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            if not (lo <= f <= hi):
                raise MicroscopeUnavailable(
                    f"slide option {name}={v!r} is not allowed; give a number in "
                    f"[{lo:g}, {hi:g}] ({SLIDE_OPTIONS.get(name, '')}).")
            return f

        self.fov = int(num("fov", fov, 16, 8192))
        self.noise = parse_noise(noise)
        self.defocus = num("defocus", defocus, 0.0, 100.0)
        self.exposure_ms = num("exposure_ms", exposure_ms, 0.01, 1e5)
        self.xy_settle_ms = num("xy_settle_ms", xy_settle_ms, 0.0, 1e5)
        self.z_settle_ms = num("z_settle_ms", z_settle_ms, 0.0, 1e5)
        if isinstance(tilt, str):
            tilt = [t for t in tilt.replace("(", "").replace(")", "").split(",") if t.strip()]
        try:
            tx, ty = (float(t) for t in tilt)
        except (TypeError, ValueError):
            raise MicroscopeUnavailable(f"slide option tilt={tilt!r} is not allowed; give "
                                        "two numbers dz/dx, dz/dy, e.g. tilt=[0.01, 0]."
                                        ) from None
        self.tilt = (tx, ty)
        self.realtime = _opt_bool("realtime", realtime)
        sf = load_slide(path, int(num("channel", channel, 0, 1e6)), labels)
        self.path = Path(path)
        px = pixel_size_um if pixel_size_um is not None else sf.pixel_size_um
        if px is None:
            raise MicroscopeUnavailable(
                f"slide {str(path)!r}: the file does not say its pixel size; give it with "
                "-o pixel_size_um=P (µm per image pixel).")
        self._px = num("pixel_size_um", px, 1e-6, 1e6)
        _check_square(path, sf, pixel_size_um)
        dz = z_step_um if z_step_um is not None else (sf.z_step_um or 1.0)
        self.z_step_um = num("z_step_um", dz, 1e-6, 1e6)
        self._stack = np.ascontiguousarray(sf.image, dtype=np.float32)
        self._dtype = sf.image.dtype if sf.image.dtype in (np.uint8, np.uint16) else np.float32
        nz, h, w = self._stack.shape
        self.shape_zyx = (nz, h, w)
        self.optical_sectioning = nz > 1 if sectioning is None else parse_sectioning(
            sectioning)
        sample = self._stack[:, ::max(1, h // 256), ::max(1, w // 256)]
        self.background = background_level(sample)
        self.bright = float(np.percentile(sample, 99.9))
        self._range = max(self.bright - self.background, 1e-6)
        self._labels = _Labels(sf.labels, sf.boxes, self._px, self.z_step_um, nz)
        self._rng = np.random.default_rng(int(num("seed", seed, 0, 2**63)))
        self._lock = threading.RLock()
        self._t = 0.0
        self._index = 0
        self._x = (w - 1) / 2 * self._px
        self._y = (h - 1) / 2 * self._px
        self._z = (nz - 1) / 2 * self.z_step_um
        self._xy0 = (self._x, self._y)
        # clock time until which each axis is still settling after its last move
        self._xy_until = self._z_until = -math.inf
        if guard is None:
            half = self.fov / 2 * self._px
            zr = ((0.0, (nz - 1) * self.z_step_um) if nz > 1 else (-50.0, 50.0))
            lim = limits or SoftLimits(x=(-half, (w - 1) * self._px + half),
                                       y=(-half, (h - 1) * self._px + half), z=zr)
            guard = MoveGuard(lim, require_limits=False, dry_run=dry_run)
        guard.clock, guard.sleep = self._clock, self.advance
        super().__init__(guard)

    # -- clock (as the simulator: wall time when realtime, else a simulated clock) ----
    @property
    def sim_time_s(self) -> float:
        return self._t

    def _clock(self) -> float:
        return time.monotonic() if self.realtime else self._t

    def advance(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._t += seconds
        if self.realtime:
            time.sleep(seconds)

    # -- truth -------------------------------------------------------------------------
    def true_cells(self) -> SlideTruth:
        """Every labelled object with its stage-coordinate centroid (see SlideTruth)."""
        return self._labels.truth

    @property
    def has_truth(self) -> bool:
        return len(self._labels.truth.ids) > 0

    def focus_offset_um(self, x_um: float, y_um: float) -> float:
        """Tilt of the focal plane at (x, y) relative to the start position."""
        return self.tilt[0] * (x_um - self._xy0[0]) + self.tilt[1] * (y_um - self._xy0[1])

    def true_focus_z(self, x_um: float | None = None, y_um: float | None = None) -> float:
        """Stage z that shows the middle plane (2-D images: the in-focus z) at (x, y)."""
        x = self._x if x_um is None else x_um
        y = self._y if y_um is None else y_um
        nz = self.shape_zyx[0]
        return (nz - 1) / 2 * self.z_step_um + self.focus_offset_um(x, y)

    # -- camera ------------------------------------------------------------------------
    @property
    def pixel_size_um(self) -> float:
        return self._px

    def _plane(self, z: float, x: float, y: float) -> float:
        return (z - self.focus_offset_um(x, y)) / self.z_step_um

    def _window(self, plane: int, x0: int, y0: int, n: int) -> np.ndarray:
        """Image plane *plane*, rows y0..y0+n, cols x0..x0+n, background outside."""
        nz, h, w = self.shape_zyx
        out = np.full((n, n), self.background, np.float32)
        a, b = max(x0, 0), min(x0 + n, w)
        c, d = max(y0, 0), min(y0 + n, h)
        if a < b and c < d:
            out[c - y0:d - y0, a - x0:b - x0] = self._stack[plane, c:d, a:b]
        return out

    def render(self, x: float, y: float, z: float) -> np.ndarray:
        """The noiseless float32 field (fov x fov) at stage (x, y, z)."""
        import cv2

        n = self.fov
        nz = self.shape_zyx[0]
        ox = x / self._px - n / 2  # image coordinate of frame pixel 0
        oy = y / self._px - n / 2
        zf = self._plane(z, x, y)
        blur = 0.0
        if nz == 1:
            planes = [(0, 1.0)]
            blur = self.defocus * abs(zf * self.z_step_um) / self._px
        else:
            zc = float(np.clip(zf, 0, nz - 1))
            k = min(int(math.floor(zc)), nz - 2)
            f = zc - k
            planes = [(k, 1.0 - f), (k + 1, f)]
        m = int(math.ceil(3 * blur)) + 2
        ix, iy = int(math.floor(ox)) - m, int(math.floor(oy)) - m
        size = n + 2 * m + 1
        win: np.ndarray = np.zeros((size, size), np.float32)
        for k, wgt in planes:
            if wgt > 1e-6:
                win += wgt * self._window(k, ix, iy, size)
        if blur > 0.05:
            win = cv2.GaussianBlur(win, (0, 0), blur, borderType=cv2.BORDER_REPLICATE)
        # dst(u, v) = win(u + fx, v + fy): bilinear, sub-pixel
        fx, fy = ox - ix, oy - iy
        mat = np.array([[1.0, 0.0, fx], [0.0, 1.0, fy]], np.float64)
        return cv2.warpAffine(win, mat, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def _expose(self, clean: np.ndarray) -> np.ndarray:
        kind, v = self.noise
        img = clean
        if kind == "gauss" and v > 0:
            img = clean + self._rng.normal(0.0, v * self._range, clean.shape).astype(np.float32)
        elif kind == "shot":
            scale = v / self._range  # photons per ADU above background
            sig = np.maximum(clean - self.background, 0) * scale
            img = (self._rng.poisson(sig).astype(np.float32) / scale + self.background
                   ).astype(np.float32)
        if self._dtype == np.float32:
            return img.astype(np.float32, copy=False)
        hi = np.iinfo(self._dtype).max
        return np.clip(np.rint(img), 0, hi).astype(self._dtype)

    def _truth(self, x: float, y: float, z: float) -> tuple[np.ndarray, np.ndarray, dict]:
        n = self.fov
        ox, oy = x / self._px - n / 2, y / self._px - n / 2
        zf = self._plane(z, x, y)
        ids, boxes = self._labels.at(int(round(zf)) if self._labels.is3d else 0)
        if not len(ids):
            return np.zeros((0, 4), np.float32), ids, {}
        b = boxes - np.array([ox, oy, ox, oy])
        keep = (b[:, 2] > -0.5) & (b[:, 0] < n - 0.5) & (b[:, 3] > -0.5) & (b[:, 1] < n - 0.5)
        b, ids = b[keep], ids[keep]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        c = np.clip(b, -0.5, n - 0.5)
        vis = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) / np.maximum(area, 1e-9)
        t = self._labels.truth
        pos = {int(i): k for k, i in enumerate(t.ids)}
        cent = np.array([t.xyz_um[pos[int(i)], :2] / self._px - [ox, oy] for i in ids]
                        ).reshape(-1, 2)
        return c.astype(np.float32), ids, {"truth_visible_fraction": vis.tolist(),
                                           "truth_centroids_px": cent.tolist()}

    def _render_frame(self) -> Frame:
        with self._lock:
            x, y, z, t = self._x, self._y, self._z, self._t
            index = self._index
            self._index += 1
            # exposed while a move settles (it starts before the settle time ends)
            moving = self._clock() < max(self._xy_until, self._z_until)
        pixels = self._expose(self.render(x, y, z))
        boxes, ids, extra = self._truth(x, y, z)
        md = {"camera": "slide", "file": self.path.name, "exposure_ms": self.exposure_ms,
              "plane": self._plane(z, x, y), "sim_time_s": t, "truth_ids": ids.tolist()}
        md.update(extra)
        return Frame(pixels=pixels, index=index, stamps={STAMP_READY: time.monotonic_ns()},
                     position=StagePosition(x, y, z), pixel_size_um=self._px,
                     affine=self.affine, metadata=md,
                     truth=boxes if self.has_truth else None, moving=moving)

    def snap(self) -> Frame:
        """Expose one frame (one exposure of simulated time; real time when realtime)."""
        t0 = time.monotonic()
        frame = self._render_frame()
        dt = self.exposure_ms / 1000
        with self._lock:
            self._t += dt
        if self.realtime:
            rest = dt - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
        return frame

    def stream(self) -> FrameStream:
        """Continuous acquisition, one frame per exposure (paced when realtime)."""

        def produce(emit, stop) -> None:
            dt = self.exposure_ms / 1000
            next_t = time.monotonic()
            while not stop.is_set():
                frame = self._render_frame()
                with self._lock:
                    self._t += dt
                if self.realtime:
                    next_t = pace(frame, next_t, dt, stop)
                emit(frame)

        return FrameStream(produce, name="slide-camera")

    # -- stage (moves arrive here only through BaseMicroscope's guarded path) -----------
    def _read_position(self) -> StagePosition:
        return StagePosition(self._x, self._y, self._z)

    # A move is commanded at once and settles over its settle time, as a motorised stage
    # does (Micro-Manager's setters return at once): ``wait=False`` returns without
    # sleeping, the caller's thread (the live loop's control) is not held for the settle
    # time, ``moving()`` is True until it has passed and the frames exposed meanwhile are
    # flagged ``moving``. A waited move lets the settle time pass (sleeping when realtime,
    # on the simulated clock otherwise).
    def _set_xy(self, x: float, y: float) -> None:
        with self._lock:
            self._x, self._y = float(x), float(y)
            self._xy_until = self._clock() + self.xy_settle_ms / 1000

    def _set_z(self, z: float) -> None:
        with self._lock:
            self._z = float(z)
            self._z_until = self._clock() + self.z_settle_ms / 1000

    def _wait_xy(self) -> None:
        self.advance(self._xy_until - self._clock())

    def _wait_z(self) -> None:
        self.advance(self._z_until - self._clock())

    def _busy_xy(self) -> bool:
        return self._clock() < self._xy_until

    def _busy_z(self) -> bool:
        return self._clock() < self._z_until


def extrude_to_stack(image: np.ndarray, labels: np.ndarray, pixel_size_um: float,
                     z_step_um: float = 0.5, planes: int = 41, thickness: float = 0.35,
                     z_spread_um: float = 2.0, haze: float = 0.5, haze_sigma_um: float = 2.5,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A labelled z-stack ``(stack, labels3d)`` made from a 2-D labelled image.

    Every nucleus becomes an ellipsoid: half-thickness ``thickness`` x its equivalent
    diameter, centred ``+/- z_spread_um`` (uniform) around the middle plane; a plane shows
    the nucleus' optical section (its pixels within the ellipsoid, at their 2-D brightness)
    plus out-of-focus light (``haze`` x a wide blur, fading over twice its half-thickness),
    which a detector keeps finding beyond the nucleus - as on real stacks. ``labels3d``
    marks the sections, so the true z extent of each nucleus is known. For tests and
    benchmarks of z-aware control on 2-D data (no real stack needed).
    """
    import cv2
    from scipy import ndimage

    img = np.asarray(image, np.float32)
    # (ids far apart are worked on as 1..N: the arrays below have one entry per id)
    lab, names = compact_labels(np.asarray(labels))
    lab = lab.astype(np.int32)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    rng = np.random.default_rng(seed)
    # normalised radial coordinate inside each nucleus: 0 at its centre, 1 at its edge
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    dist = ndimage.distance_transform_edt((lab > 0) & ~edge)
    nmax = int(lab.max()) + 1
    dmax = np.ones(nmax)
    if len(ids):
        dmax[ids] = np.maximum(np.asarray(ndimage.maximum(dist, lab, ids), float), 1.0)
    rho = np.where(lab > 0, 1.0 - dist / dmax[lab], 2.0)
    area: np.ndarray | list[float] = (
        np.asarray(ndimage.sum(np.ones_like(lab), lab, ids), float) if len(ids) else [])
    zc = np.zeros(nmax)
    hz = np.full(nmax, 1e-6)
    zc[ids] = (planes - 1) / 2 * z_step_um + rng.uniform(-z_spread_um, z_spread_um, len(ids))
    hz[ids] = thickness * 2 * np.sqrt(np.asarray(area) / np.pi) * pixel_size_um
    bg = float(np.percentile(img, 10))
    sig = np.maximum(img - bg, 0) * (lab > 0)
    out_dtype = image.dtype if image.dtype in (np.uint8, np.uint16) else np.float32
    hi = np.iinfo(out_dtype).max if out_dtype != np.float32 else np.inf
    stack = np.empty((planes, *img.shape), out_dtype)
    labs = np.zeros((planes, *img.shape), np.int32)
    sigma_px = haze_sigma_um / pixel_size_um
    for k in range(planes):
        u = (k * z_step_um - zc) / hz
        u[0] = 1e6
        inside = (rho ** 2 + u[lab] ** 2) <= 1.0
        h = haze * np.exp(-0.5 * (u / 2.0) ** 2)
        plane = sig * inside + cv2.GaussianBlur(sig * h[lab], (0, 0), sigma_px)
        stack[k] = np.clip(plane + bg, 0, hi).astype(out_dtype)
        labs[k] = np.where(inside, lab, 0)
    return stack, (labs if names is None else names[labs])
