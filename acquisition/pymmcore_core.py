"""Use a core the lab already holds: pymmcore ``CMMCore`` / pymmcore-plus ``CMMCorePlus``.

napari-micromanager, pymmcore-widgets and pymmcore-plus scripts hold a plain C++ MMCore
with Micro-Manager's own camelCase names (``getCameraDevice``, ``snapImage``). inscope's
Micro-Manager backend speaks pycromanager's snake_case names (``get_camera_device``),
because that is what both pycromanager cores answer (the Java bridge and the headless
Python backend). :class:`SnakeCaseCore` is the thin adapter between the two: it forwards
``get_camera_device`` to ``getCameraDevice`` on the wrapped core, adds the two
pycromanager-only calls the backend uses (``pop_next_tagged_image``, ``TaggedImage``) and
nothing else, so the user's core keeps its state (loaded config, properties, its own
``mda`` engine and signals).

This module imports neither pymmcore nor pymmcore-plus at import time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from inscope.acquisition.errors import DeviceError
from inscope.acquisition.frame import colour_to_grey

log = logging.getLogger(__name__)

_SNAKE_PART = re.compile(r"_([a-z0-9])")

#: snake_case names whose camelCase spelling is not the plain conversion
#: (Micro-Manager capitalises these acronyms).
_SPECIAL = {
    "get_pixel_size_um": "getPixelSizeUm",
    "get_xy_stage_device": "getXYStageDevice",
    "set_xy_position": "setXYPosition",
    "get_xy_position": "getXYPosition",
    "set_roi": "setROI",
    "clear_roi": "clearROI",
    "get_roi": "getROI",
    "get_image_md": "getImageMD",
    "pop_next_image_md": "popNextImageMD",
    "get_last_image_md": "getLastImageMD",
    "get_api_version_info": "getAPIVersionInfo",
}


def snake_to_camel(name: str) -> str:
    """``"get_camera_device"`` -> ``"getCameraDevice"`` (Micro-Manager's spelling)."""
    if name in _SPECIAL:
        return _SPECIAL[name]
    return _SNAKE_PART.sub(lambda m: m.group(1).upper(), name)


@dataclass
class TaggedImage:
    """Pixels plus metadata tags, as pycromanager's cores return them."""

    tags: dict[str, str]
    pix: np.ndarray


_TaggedImage = TaggedImage


def is_camel_case_core(core: Any) -> bool:
    """True for a pymmcore ``CMMCore`` (or subclass such as ``CMMCorePlus``) that does not
    already answer pycromanager's snake_case names."""
    return hasattr(core, "getCameraDevice") and not hasattr(core, "get_camera_device")


class SnakeCaseCore:
    """A pymmcore / pymmcore-plus core seen through pycromanager's snake_case API.

    Parameters
    ----------
    core
        A ``pymmcore.CMMCore`` or ``pymmcore_plus.CMMCorePlus`` with a configuration
        loaded (or about to be). It is used, never copied or re-initialised.

    Notes
    -----
    Attribute lookups are cached per name: the per-frame path (``get_remaining_image_count``,
    ``pop_next_tagged_image``) costs one dict lookup more than calling the core directly.
    """

    TaggedImage = TaggedImage  # pycromanager's name for it, on the core

    def __init__(self, core: Any) -> None:
        if not hasattr(core, "getCameraDevice"):
            raise TypeError(
                f"{type(core).__name__} is not a Micro-Manager core: pass a "
                "pymmcore.CMMCore, a pymmcore_plus.CMMCorePlus or a pycromanager Core().")
        self._core = core
        self._methods: dict[str, Any] = {}

    @property
    def wrapped(self) -> Any:
        """The user's core, unchanged."""
        return self._core

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        methods = self.__dict__.get("_methods")
        if methods is None:
            raise AttributeError(name)
        fn = methods.get(name)
        if fn is None:
            camel = snake_to_camel(name)
            try:
                fn = getattr(self._core, camel)
            except AttributeError:
                raise AttributeError(
                    f"{type(self._core).__name__} has no {camel!r} (asked as {name!r})"
                ) from None
            methods[name] = fn
        return fn

    # -- the pycromanager-only calls the backend uses ----------------------------------
    def pop_next_tagged_image(self) -> _TaggedImage:
        """Pop the oldest image of the circular buffer with its metadata tags."""
        import pymmcore

        md = pymmcore.Metadata()
        pix = pymmcore.CMMCore.popNextImageMD(self._core, 0, 0, md)
        tags = {key: md.GetSingleTag(key).GetValue() for key in md.GetKeys()}
        return TaggedImage(tags, pix)

    def __repr__(self) -> str:
        return f"SnakeCaseCore({type(self._core).__name__})"


def last_tagged_image(core: Any) -> Any:
    """The newest image in the core's circular buffer with its tags, without removing
    it (for reading a sequence someone else runs). Works on a pymmcore core (wrapped or
    pycromanager's snake_case subclass) and on the Java bridge (``getLastTaggedImage``)."""
    raw = core.wrapped if isinstance(core, SnakeCaseCore) else core
    try:
        import pymmcore
    except ImportError:  # no pymmcore: only the Java bridge can be here
        return core.get_last_tagged_image()
    if isinstance(raw, pymmcore.CMMCore):
        md = pymmcore.Metadata()
        pix = pymmcore.CMMCore.getLastImageMD(raw, md)
        return TaggedImage({k: md.GetSingleTag(k).GetValue() for k in md.GetKeys()}, pix)
    return core.get_last_tagged_image()


def as_snake_case_core(core: Any) -> Any:
    """*core* itself if it already speaks snake_case (pycromanager), else a
    :class:`SnakeCaseCore` around it."""
    return SnakeCaseCore(core) if is_camel_case_core(core) else core


# -- pixels by the core's own description ----------------------------------------------
@dataclass(frozen=True)
class PixelFormat:
    """How the camera's pixels are laid out, as the core describes them.

    ``bytes_per_pixel`` and ``components`` come from ``getBytesPerPixel()`` and
    ``getNumberOfComponents()``: only 4 components mean colour (BGRA, 8 or 16 bit per
    channel); 1 component of 4 bytes is a 32-bit grayscale camera whose values are IEEE
    floats carried in a uint32 array (DemoCamera ``PixelType = 32bit``).
    """

    bytes_per_pixel: int
    components: int

    @classmethod
    def of(cls, core: Any) -> PixelFormat | None:
        """The format of the current camera (None when the core cannot say)."""
        try:
            return cls(int(core.get_bytes_per_pixel()), int(core.get_number_of_components()))
        except Exception as e:  # noqa: BLE001 - an old bridge without these calls
            log.debug("the core gives no pixel format: %s", e)
            return None

    @property
    def is_rgb(self) -> bool:
        return self.components == 4


def to_gray(pix: Any, height: int, width: int, fmt: PixelFormat | None) -> np.ndarray:
    """Camera pixels as a 2-D array in a dtype a Frame supports (uint8, uint16, float32).

    Parameters
    ----------
    pix
        What the core returned: (H, W) in-process, a flat array over the Java bridge.
    height, width
        The image size the core reports.
    fmt
        The core's pixel description; None falls back to the array's own dtype (uint32
        as packed BGRA), which is what older code assumed.
    """
    a = np.asarray(pix)
    if a.dtype.byteorder == ">":  # the Java bridge may hand big-endian data
        a = a.astype(a.dtype.newbyteorder("="))
    rgb = fmt.is_rgb if fmt is not None else a.dtype == np.uint32 or a.size == 4 * height * width
    if fmt is not None and not rgb and fmt.bytes_per_pixel == 4:
        # 32-bit grayscale: the values are float32 bit patterns in a uint32 container
        a = np.ascontiguousarray(a).view(np.float32) if a.dtype != np.float32 else a
    n = a.size
    if rgb:
        bpp = fmt.bytes_per_pixel if fmt is not None else 4
        chan = np.uint16 if bpp == 8 else np.uint8
        flat = np.ascontiguousarray(a).reshape(-1).view(chan)
        if flat.size != 4 * height * width:
            raise DeviceError(
                f"Colour camera image has {flat.size} channel values, expected "
                f"4x{height}x{width}; check the camera's ROI/binning in Micro-Manager.")
        return colour_to_grey(flat.reshape(height, width, 4))
    if a.ndim == 1 or a.shape != (height, width):
        if n != height * width:
            raise DeviceError(
                f"Camera image has {n} values, expected {height}x{width}; check the "
                "camera's ROI/binning settings in Micro-Manager.")
        a = a.reshape(height, width)
    if a.dtype not in (np.uint8, np.uint16, np.float32):
        a = a.astype(np.float32)
    return a
