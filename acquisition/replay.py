"""Replay backend: frames from TIFF / OME-TIFF / NDTiff stacks, folders of image files
(TIFF, PNG, JPEG: one frame each, in name order) and video files.

Used to run the whole pipeline offline (a recorded experiment, a test clip) exactly as it
runs live: ``snap()`` and ``stream()`` hand out the recorded frames with their recorded
pixel size and, for OME-TIFF, their recorded stage positions.

**Stage moves.** A recording has no stage, and the images do not change when a controller
asks to move. What a user replaying a session expects is that the controller *runs* (its
moves are computed, checked and logged, so its decisions can be inspected), not that it
crashes. So moves are accepted through the guard (no limits, ``require_limits=False``,
unless limits are given) and only change a *virtual* position returned by
:meth:`ReplayMicroscope.position`. Frames keep the position recorded in the file (that is
where the stage really was when the image was taken); without recorded positions frames
carry the virtual position.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.frame import (
    STAMP_READY,
    Frame,
    StagePosition,
    colour_to_grey,
    without_trailing_ones,
)
from inscope.acquisition.microscope import BaseMicroscope
from inscope.acquisition.mm_tags import position_from_tags
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.acquisition.stream import FrameStream

if TYPE_CHECKING:
    import cv2

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
#: Single pictures OpenCV reads: one frame each (a file), or a folder of them in name order
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

#: Frame rate used when neither the caller nor the file gives one.
DEFAULT_FPS = 10.0


def _pixels_2d(a: np.ndarray) -> np.ndarray:
    """Make a frame's pixels a supported 2-D dtype (uint8, uint16, float32)."""
    if a.dtype in (np.uint8, np.uint16, np.float32):
        return a
    if a.dtype.kind in "iu" and a.min(initial=0) >= 0 and a.max(initial=0) <= 65535:
        return a.astype(np.uint16)
    return a.astype(np.float32)


@dataclass
class _Stack:
    """A (T, Y, X) stack in memory (or a folder's files, read as played) with optional
    per-frame positions, and the pixel size and frame rate the file gives (None if not)."""

    frames: np.ndarray | _Files
    positions: list[StagePosition] | None
    pixel_size_um: float | None
    fps: float | None

    def __len__(self) -> int:
        return len(self.frames)


def ndtiff_datasets(path: Path) -> list[Path]:
    """The NDTiff dataset folders a user's *path* names: *path* itself when it holds
    ``NDTiff.index``, else its subfolders that do, sorted (pycro-manager writes
    ``NAME_1/``, ``NAME_2/``, ... inside the folder a user gives). One is a dataset;
    none or several need a clearer path (:func:`ndtiff_folder_problem`)."""
    if (path / "NDTiff.index").is_file():
        return [path]
    return sorted(p for p in path.iterdir() if (p / "NDTiff.index").is_file())


def ndtiff_folder_problem(path: Path, found: list[Path], option: str) -> tuple[str, str]:
    """``(problem, fix)`` for a folder that is not one NDTiff dataset (*found* from
    :func:`ndtiff_datasets`, not of length 1), the fix naming the backend's *option*
    (e.g. ``"-o path="``): the replay and slide backends word it alike."""
    if found:
        return (f"holds {len(found)} NDTiff datasets ({', '.join(p.name for p in found)})",
                f"give one of them, e.g. {option}{found[0]}")
    return ("is a folder without NDTiff.index",
            "give the NDTiff dataset folder (the one holding NDTiff.index)")


def ndtiff_array(ds: Any) -> np.ndarray:
    """An ndstorage dataset's images as one numpy array, read in this thread.

    ``as_array()`` is a dask array; reading it with dask's default (threaded) scheduler
    leaves a thread pool alive after the read, and a process forked later (a camera
    process, a test runner) inherits that pool without its threads and hangs on its
    next NDTiff read."""
    arr = ds.as_array()
    compute = getattr(arr, "compute", None)
    return np.asarray(compute(scheduler="synchronous") if compute is not None else arr)


def planes_as_samples(axes: str, data: np.ndarray) -> bool:
    """True when a TIFF's samples (S) axis is stored as separate planes of a type deeper
    than 8 bit: what ``tifffile.imwrite`` makes of a plain 3- or 4-plane uint16 array (it
    guesses RGB(A)). Those planes may be z planes or time points as well as colours, and
    reading them as one colour image would silently drop all but one plane; the readers
    refuse such a file and say how to save it with its axes."""
    axes = axes.upper()
    return ("S" in axes and axes.index("S") < len(axes) - 2
            and data.shape[axes.index("S")] in (3, 4) and data.dtype != np.uint8)


def channel_shown(channel: int, n_channels: int) -> str:
    """How a note names the channel a file's frames are taken from: a choice made for
    the user when the file holds several (a wrong one still gives valid frames)."""
    return f"channel {channel} of {n_channels} (-o channel=0..{n_channels - 1} picks another)"


def imagej_unit_is_um(meta: dict[str, Any]) -> bool:
    """Whether an ImageJ (Fiji) description's ``unit`` is the micrometre: ``micron``,
    ``microns``, ``um``, ``µm`` / ``μm`` in any case, or the micro sign / Greek mu as the
    ``\\u00B5`` / ``\\u03BC`` escapes Fiji writes in its ASCII description.

    Why one rule: the slide and the replay read the same Fiji files, and a spelling
    only one of them knew gave the replay 1 µm per pixel (with a warning that the file
    records no pixel size) where the slide read the file's own size.
    """
    unit = (str(meta.get("unit", "")).strip().lower()
            .replace("\\u00b5", "µ").replace("\\u03bc", "μ"))
    return unit in ("micron", "microns", "um", "µm", "μm")


def _read_tiff(path: Path, channel: int) -> _Stack:
    import tifffile

    try:
        tf = tifffile.TiffFile(path)
    except Exception as e:  # noqa: BLE001 - tifffile raises several types
        raise MicroscopeUnavailable(
            f"Cannot read {str(path)!r} as TIFF ({e}); give a valid TIFF/OME-TIFF stack."
        ) from e
    with tf:
        series = tf.series[0]
        axes = series.axes.upper()
        data = series.asarray()
        ome = tf.ome_metadata if tf.is_ome else None
        ij = tf.imagej_metadata or {}
        page = tf.pages[0]
        # page 0 is always a TiffPage (tifffile's keyframe); only later pages are TiffFrames
        assert isinstance(page, tifffile.TiffPage)
        res = page.tags.get("XResolution")
        unit = page.tags.get("ResolutionUnit")
        res_v = res.value if res is not None else None
        unit_v = int(unit.value) if unit is not None else None
    # Samples (RGB) -> gray, channel choice, everything else flattened into time.
    if planes_as_samples(axes, data):
        raise MicroscopeUnavailable(
            f"{path.name} holds {data.shape[axes.index('S')]} {data.dtype} planes stored as "
            f"the samples of one RGB(A) image (axes {series.axes!r}), so they may be time "
            "points or colours; save a recording with its axes (tifffile.imwrite(path, a, "
            "metadata={'axes': 'TYX'}) or as OME-TIFF), a colour picture as 8-bit RGB.")
    if "S" in axes and data.shape[axes.index("S")] in (3, 4):  # RGB(A), planar or not
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
        data = colour_to_grey(data)
        axes = axes[:-1]
    if "C" in axes:
        ci = axes.index("C")
        n_channels = data.shape[ci]
        if not 0 <= channel < n_channels:
            raise MicroscopeUnavailable(
                f"{path.name} has {n_channels} channels (0..{n_channels - 1}); channel="
                f"{channel} does not exist. Choose one with -o channel=N (TOML "
                "[microscope.options] channel)."
            )
        data = np.take(data, channel, axis=ci)
        axes = axes[:ci] + axes[ci + 1:]
        if n_channels > 1:
            log.info("%s: replaying %s", path.name, channel_shown(channel, n_channels))
    data, axes = without_trailing_ones(data, axes)
    if not axes.endswith("YX") or data.ndim < 2:
        raise MicroscopeUnavailable(
            f"{path.name}: cannot find image rows/columns in axes {series.axes!r}; save the "
            "stack as (T, Y, X) or (T, C, Y, X)."
        )
    frames = data.reshape(-1, data.shape[-2], data.shape[-1])
    px = fps = None
    positions = None
    if ome:
        px, fps, positions = _parse_ome(ome, channel, axes[:-2])
        if positions is not None and len(positions) != len(frames):
            positions = None
    if px is None and imagej_unit_is_um(ij) and res_v:
        px = float(res_v[1]) / float(res_v[0]) if res_v[0] else None
    elif px is None and res_v and unit_v == 3 and res_v[0]:  # pixels per cm
        px = 1e4 * float(res_v[1]) / float(res_v[0])
    if fps is None and ij.get("finterval"):
        fps = 1.0 / float(ij["finterval"])
    return _Stack(frames, positions, px, fps)


#: OME-XML length units (``UnitsLength``) in micrometres. "pixel" and "reference frame"
#: are not lengths, and a unit not listed is not guessed: the size is then not read.
OME_UNITS_UM: dict[str, float] = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0,
    "micron": 1.0, "nm": 1e-3, "pm": 1e-6, "Å": 1e-4, "in": 25_400.0,
}


def _ome_pixels(xml: str) -> tuple[ET.Element | None, Any]:
    """The OME ``Pixels`` element of the first image and a tag-name function for it
    (OME-XML with or without its namespace)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    uri = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""

    def q(tag: str) -> str:
        return f"{{{uri}}}{tag}" if uri else tag

    return root.find(f".//{q('Pixels')}"), q


def ome_length_um(pixels: ET.Element, name: str) -> float | None:
    """An OME ``Pixels`` length attribute (``PhysicalSizeX``, ``PhysicalSizeZ``) in µm,
    read in its own unit (``PhysicalSizeXUnit``; OME's default is µm); None when absent,
    not positive or in a unit that is not a length (said in the log)."""
    value = pixels.get(name)
    if not value:
        return None
    unit = pixels.get(f"{name}Unit", "µm")
    scale = OME_UNITS_UM.get(unit)
    if scale is None:
        log.warning("OME %s is given in %r, which is not a length unit inscope reads (%s); "
                    "it is not taken from the file", name, unit, ", ".join(OME_UNITS_UM))
        return None
    um = float(value) * scale
    return um if um > 0 else None


def ome_sizes(xml: str) -> tuple[float | None, float | None]:
    """Pixel size and z step (µm) from OME-XML (None for what it does not give)."""
    pixels, _ = _ome_pixels(xml)
    if pixels is None:
        return None, None
    return ome_length_um(pixels, "PhysicalSizeX"), ome_length_um(pixels, "PhysicalSizeZ")


def _parse_ome(xml: str, channel: int, order: str = "TZ"):
    """PhysicalSizeX (µm), frame rate and per-plane stage positions from OME-XML.

    *order*: the stack's own axes before Y, X once the channel is taken (as tifffile
    reads them, e.g. ``"TZ"``, or ``"ZT"`` for an OME DimensionOrder of XYCTZ): the
    positions come in the frames' order, slowest axis first. Positions of a stack with
    any other axis are not read (None): which plane is which frame is then not known.
    """
    pixels, q = _ome_pixels(xml)
    if pixels is None:
        return None, None, None
    px = ome_length_um(pixels, "PhysicalSizeX")
    py = ome_length_um(pixels, "PhysicalSizeY")
    if px and py and abs(px - py) > 1e-3 * max(px, py):
        # (the slide refuses such a file, since it moves a stage by it; a recording only
        # converts boxes to µm, so it is said, once, and played)
        log.warning("the recording's pixels are not square (%.4g µm in x, %.4g in y): "
                    "positions in µm use %.4g for both axes, so y distances are off by "
                    "%.3gx; resample it to square pixels for µm-true boxes", px, py, px,
                    py / px)
    ti = pixels.get("TimeIncrement")
    fps = 1.0 / float(ti) if ti and float(ti) > 0 else None
    if any(a not in "TZ" for a in order):
        log.info("OME stack with axes %r: per-plane positions not read", order)
        return px, fps, None
    positions: list[tuple[tuple[int, ...], StagePosition]] = []
    for p in pixels.findall(q("Plane")):
        if int(p.get("TheC", 0)) != channel or p.get("PositionX") is None:
            continue
        key = tuple(int(p.get(f"The{a}", 0)) for a in order)
        positions.append((key, StagePosition(float(p.get("PositionX", 0)),
                                             float(p.get("PositionY", 0)),
                                             float(p.get("PositionZ", 0)))))
    positions.sort(key=lambda kp: kp[0])
    return px, fps, [p for _, p in positions] or None


def _read_ndtiff(path: Path, channel: int) -> _Stack:
    """An NDTiff dataset (Micro-Manager 2 / pycromanager) via ndstorage."""
    import contextlib
    import io

    try:
        from ndstorage import Dataset
    except ImportError as e:
        raise MicroscopeUnavailable(
            "Replaying NDTiff needs the 'ndstorage' package (installed with pycromanager): "
            "`pip install ndstorage`."
        ) from e
    found = ndtiff_datasets(path)
    if len(found) != 1:
        problem, fix = ndtiff_folder_problem(path, found, "--file ")
        raise MicroscopeUnavailable(f"{str(path)!r} {problem}: {fix}.")
    path = found[0]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # ndstorage prints progress
            ds = Dataset(str(path))
        arr = ndtiff_array(ds)
        summary = ds.summary_metadata if isinstance(ds.summary_metadata, dict) else {}
        axes = {k: list(v) for k, v in ds.axes.items()}
    except Exception as e:  # noqa: BLE001
        raise MicroscopeUnavailable(
            f"Cannot read NDTiff dataset {str(path)!r} ({e}); give the dataset folder that "
            "holds NDTiff.index."
        ) from e
    names = list(axes)
    if "channel" in names and arr.ndim == len(names) + 2:
        ci = names.index("channel")
        if not 0 <= channel < arr.shape[ci]:
            raise MicroscopeUnavailable(
                f"{path.name} has {arr.shape[ci]} channels; channel={channel} does not exist."
            )
        arr = np.take(arr, channel, axis=ci)
        chan_value = axes["channel"][channel]
        names.remove("channel")
        if len(axes["channel"]) > 1:
            log.info("%s: replaying %s", path.name,
                     channel_shown(channel, len(axes["channel"])))
    else:
        chan_value = None
    frames = arr.reshape(-1, arr.shape[-2], arr.shape[-1])
    collected: list[StagePosition] = []
    positions: list[StagePosition] | None = collected
    if arr.ndim == len(names) + 2 and len(frames) <= 100_000:
        for idx in np.ndindex(*arr.shape[:-2]):
            coords = {n: axes[n][i] for n, i in zip(names, idx, strict=True)}
            if chan_value is not None:
                coords["channel"] = chan_value
            try:
                md = ds.read_metadata(**coords) or {}
            except Exception as e:  # noqa: BLE001 - no metadata: virtual positions
                log.debug("%s: no per-frame metadata (%s); virtual positions", path, e)
                positions = None
                break
            # each frame's own z (a pycro-manager z-stack records only the intended Z)
            pos = position_from_tags(md, require_xy=False)
            if pos is None:
                positions = None
                break
            collected.append(pos)
    else:
        positions = None
    px = summary.get("PixelSize_um")
    with contextlib.suppress(Exception):
        ds.close()
    return _Stack(frames, positions or None, float(px) if px else None, None)


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders ``img_2`` before ``img_10`` (numbers as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_picture(path: Path) -> np.ndarray:
    """One image file as a 2-D frame: a TIFF's first plane, or a PNG / JPEG / BMP (colour
    as grey, :func:`~inscope.acquisition.frame.colour_to_grey`); one clear line if not."""
    import cv2

    a: np.ndarray | None
    if path.name.lower().endswith(TIFF_SUFFIXES):
        import tifffile

        try:
            a = tifffile.imread(path, key=0)
        except Exception as e:  # noqa: BLE001 - tifffile raises several types
            raise MicroscopeUnavailable(f"Cannot read {str(path)!r} as TIFF ({e}); give a "
                                        "valid TIFF.") from e
        if a.ndim == 3 and a.shape[-1] in (3, 4):
            a = colour_to_grey(a)
    else:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise MicroscopeUnavailable(f"Cannot read {str(path)!r} as a picture; check "
                                        "the file or convert it to TIFF.")
        if a.ndim == 3:  # BGR(A) as OpenCV reads it: the same grey as RGB
            a = colour_to_grey(a)
    if a.ndim != 2:
        raise MicroscopeUnavailable(f"{path.name}: a frame has shape {a.shape}, not one 2-D "
                                    "image; save each frame as one grey or colour image.")
    return a


class _Files:
    """The frames of a folder of image files, read one at a time when played (a long
    recording is never all in memory)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        return read_picture(self.files[i])


def _read_sequence(path: Path) -> _Stack:
    """A folder of image files (TIFF, PNG, JPEG, BMP; one frame each), played in natural
    name order (``t2`` before ``t10``): how many tools export a time-lapse."""
    files = sorted((f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.name.lower().endswith(TIFF_SUFFIXES + PICTURE_SUFFIXES)),
                   key=lambda f: _natural_key(f.name))
    if not files:
        raise MicroscopeUnavailable(
            f"{str(path)!r} is a folder without NDTiff.index and without image files: give "
            "an NDTiff dataset folder or a folder of TIFF / PNG / JPEG frames.")
    first = files[0]
    read_picture(first)  # a first frame that cannot be read is said at once
    px = None
    if first.name.lower().endswith(TIFF_SUFFIXES):
        import tifffile

        with tifffile.TiffFile(first) as tf:
            pages = len(tf.pages)
        if pages > 1:
            log.warning("%s holds %d images; a folder of frames plays the first of each "
                        "file (give one multi-page TIFF to play all of its planes)",
                        first.name, pages)
        else:  # its pixel size (ImageJ / OME / resolution tags), taken as the sequence's
            px = _read_tiff(first, 0).pixel_size_um
    return _Stack(_Files(files), None, px, None)


class ReplayMicroscope(BaseMicroscope):
    """Frames from a file, as if from a camera.

    Parameters
    ----------
    path
        A TIFF / OME-TIFF stack ((Y, X), (T, Y, X), (T, C, Y, X), ...: all axes other than
        the chosen channel and Y, X are played in file order), an NDTiff dataset folder, or
        a video file (converted to grayscale).
    fps
        Playback rate. None: the file's own (OME TimeIncrement, ImageJ finterval, video
        FPS), else :data:`DEFAULT_FPS`; frames the consumer is too slow for are dropped,
        as from a camera. 0: as fast as the consumer takes them, none dropped (offline
        processing of every frame).
    loop
        Start again at the end; otherwise the stream ends after the last frame.
    channel
        Which channel of a multi-channel stack to play.
    pixel_size_um
        Override the file's pixel size (or give one where the file has none).
    limits, dry_run, guard
        Moves only change a virtual position (see module docstring); limits may still be
        given to exercise a controller's safety behaviour offline.
    """

    snap_consumes = True  # snap() plays the next recorded frame

    def __init__(self, path: str | Path, *, fps: float | None = None, loop: bool = False,
                 channel: int = 0, pixel_size_um: float | None = None,
                 limits: SoftLimits | Mapping | None = None, dry_run: bool = False,
                 guard: MoveGuard | None = None) -> None:
        if isinstance(limits, Mapping):
            limits = SoftLimits.from_dict(dict(limits))
        super().__init__(guard or MoveGuard(limits=limits, require_limits=False,
                                            dry_run=dry_run))
        self.path = Path(path).expanduser()
        self.loop = bool(loop)
        self._lock = threading.Lock()
        self._video: cv2.VideoCapture | None = None
        self._stack: _Stack | None = None
        self._cursor = 0
        self._count = 0
        self._virtual = StagePosition(0.0, 0.0, 0.0)
        if not self.path.exists():
            raise MicroscopeUnavailable(
                f"Replay file not found: {str(self.path)!r}. Pass --file with an existing "
                "TIFF/OME-TIFF stack, NDTiff folder or video."
            )
        name = self.path.name.lower()
        if self.path.is_dir() and not ndtiff_datasets(self.path):
            self._stack = _read_sequence(self.path)
            kind = "sequence"
        elif self.path.is_dir():
            self._stack = _read_ndtiff(self.path, channel)
            kind = "ndtiff"
        elif name.endswith(TIFF_SUFFIXES):
            self._stack = _read_tiff(self.path, channel)
            kind = "tiff"
        elif name.endswith(PICTURE_SUFFIXES):
            self._stack = _Stack(read_picture(self.path)[None], None, None, None)
            kind = "picture"
        elif name.endswith(VIDEO_SUFFIXES):
            self._open_video()
            kind = "video"
        else:
            raise MicroscopeUnavailable(
                f"Unsupported replay file {self.path.name!r}: use a TIFF/OME-TIFF "
                f"({', '.join(TIFF_SUFFIXES)}), an NDTiff folder, a folder of image files, "
                f"a picture ({', '.join(PICTURE_SUFFIXES)}) or a video "
                f"({', '.join(VIDEO_SUFFIXES)})."
            )
        if self._stack is not None and len(self._stack) == 0:
            raise MicroscopeUnavailable(f"{self.path.name} holds no frames.")
        self.kind = kind
        self.name = f"replay:{self.path.name}"
        file_fps = self._stack.fps if self._stack is not None else self._video_fps
        if fps is None:
            fps = file_fps if file_fps and math.isfinite(file_fps) and file_fps > 0 \
                else DEFAULT_FPS
        if not (fps >= 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be >= 0 (0 = as fast as possible); got {fps!r}.")
        self.fps = float(fps)
        file_px = self._stack.pixel_size_um if self._stack is not None else None
        self._px_known = pixel_size_um is not None or file_px is not None
        self._px = float(pixel_size_um or file_px or 1.0)
        if not self._px_known:
            warnings.warn(f"{self.path.name} records no pixel size; using 1.0 µm/pixel. "
                          "Pass -o pixel_size_um=UM (TOML [microscope.options] "
                          "pixel_size_um) for real units.", stacklevel=2)

    # -- video -------------------------------------------------------------------------
    def _open_video(self) -> None:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise MicroscopeUnavailable(
                f"OpenCV cannot open video {str(self.path)!r} (unknown codec or damaged "
                "file); convert it to TIFF or an MJPG .avi."
            )
        self._video = cap
        self._video_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._n_video = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def _next_video(self) -> tuple[np.ndarray, int] | None:
        import cv2

        cap = self._video
        assert cap is not None  # only called by _next when a video is open
        ok, img = cap.read()
        if not ok:
            if not self.loop or self._cursor == 0:
                return None
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._cursor = 0
            ok, img = cap.read()
            if not ok:
                return None
        i = self._cursor
        self._cursor += 1
        if img.ndim == 3:
            img = colour_to_grey(img)
        return img, i

    # -- frames ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._stack) if self._stack is not None else self._n_video

    def _next(self, wrap: bool) -> tuple[np.ndarray, int] | None:
        with self._lock:
            if self._video is not None:
                out = self._next_video()
                if out is None and wrap and self._cursor > 0:
                    saved, self.loop = self.loop, True
                    try:
                        out = self._next_video()
                    finally:
                        self.loop = saved
                return out
            stack = self._stack
            assert stack is not None  # __init__ opens either a video or a stack
            n = len(stack)
            if self._cursor >= n:
                if not (self.loop or wrap):
                    return None
                self._cursor = 0
            i = self._cursor
            self._cursor += 1
            return stack.frames[i], i

    def _frame(self, pixels: np.ndarray, src: int) -> Frame:
        ready = time.monotonic_ns()
        pos = self._virtual
        if self._stack is not None and self._stack.positions is not None:
            pos = self._stack.positions[src]
        with self._lock:
            idx = self._count
            self._count += 1
        return Frame(_pixels_2d(np.asarray(pixels)), index=idx, stamps={STAMP_READY: ready},
                     position=pos, pixel_size_um=self._px, affine=self.affine,
                     metadata={"backend": "replay", "source": self.path.name,
                               "source_index": int(src), "kind": self.kind,
                               "pixel_size_configured": self._px_known})

    def snap(self) -> Frame:
        """The next recorded frame (wrapping to the first after the last)."""
        out = self._next(wrap=True)
        if out is None:
            raise MicroscopeUnavailable(f"{self.path.name}: no frame could be read.")
        return self._frame(*out)

    def stream(self) -> FrameStream:
        """Play from the current frame at :attr:`fps` (0 = every frame, as fast as the
        consumer takes them); the stream ends after the last frame unless ``loop``."""
        return FrameStream(self._produce, name=f"replay-{self.path.name}",
                           lossless=self.fps == 0)

    def _produce(self, emit, stop: threading.Event) -> None:
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            if self.fps > 0:
                due = t0 + k / self.fps - time.monotonic()
                if due > 0 and stop.wait(due):
                    return
            out = self._next(wrap=False)
            if out is None:
                return
            emit(self._frame(*out))
            k += 1

    def rewind(self) -> None:
        """Back to the first frame."""
        with self._lock:
            self._cursor = 0
            if self._video is not None:
                import cv2

                self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)

    # -- virtual stage -----------------------------------------------------------------
    @property
    def pixel_size_um(self) -> float:
        return self._px

    def _read_position(self) -> StagePosition:
        return self._virtual

    def _set_xy(self, x: float, y: float) -> None:
        self._virtual = StagePosition(float(x), float(y), self._virtual.z)

    def _set_z(self, z: float) -> None:
        self._virtual = StagePosition(self._virtual.x, self._virtual.y, float(z))

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
