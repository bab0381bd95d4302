"""The `Microscope` protocol and the base class that routes every move through the guard.

Everything downstream (detector, control, the service) talks to this protocol only, so the
same code drives the simulated microscope, Micro-Manager (GUI or headless) and replays.
"""

from __future__ import annotations

import abc
import time
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.frame import Frame, StagePosition
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.acquisition.stream import FrameStream


@runtime_checkable
class Microscope(Protocol):
    """What inscope needs from a microscope: frames in, moves out."""

    name: str
    guard: MoveGuard

    def snap(self) -> Frame:
        """Expose and return one frame (blocking)."""
        ...

    def stream(self) -> FrameStream:
        """Start continuous acquisition; the returned stream hands out the newest frame."""
        ...

    def move_xy(self, x: float, y: float, *, relative: bool = False,
                wait: bool = True) -> bool:
        """Move the XY stage (µm) through the guard; returns True if the move was made.
        ``wait=False`` returns as soon as the move is commanded (poll :meth:`moving`)."""
        ...

    def move_z(self, z: float, *, relative: bool = False, wait: bool = True) -> bool:
        """Move the focus drive (µm) through the guard; returns True if the move was made.
        ``wait=False`` returns as soon as the move is commanded (poll :meth:`moving`)."""
        ...

    def moving(self) -> bool:
        """True while a commanded stage or focus move has not finished."""
        ...

    def position(self) -> StagePosition:
        """Current stage position (µm)."""
        ...

    @property
    def pixel_size_um(self) -> float: ...

    @property
    def affine(self) -> np.ndarray:
        """2x2 µm-per-pixel map, see :class:`~inscope.acquisition.frame.Frame`."""
        ...

    @property
    def limits(self) -> SoftLimits | None: ...

    def close(self) -> None: ...


#: Values of the backend option ``sectioning``, by what a microscopist would write.
SECTIONED = ("sectioned", "confocal", "spinning-disk", "light-sheet", "two-photon")
WIDEFIELD = ("widefield", "wide-field", "epifluorescence")


def parse_sectioning(value: Any) -> bool:
    """The backend option ``sectioning`` as :attr:`BaseMicroscope.optical_sectioning`:
    ``sectioned`` (or ``confocal``, ``spinning-disk``, ``light-sheet``, ``two-photon``)
    or ``widefield``."""
    v = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    if v not in SECTIONED + WIDEFIELD:
        raise MicroscopeUnavailable(
            f"option sectioning={value!r} is not allowed; give 'sectioned' (confocal, "
            "spinning disk, light sheet, two-photon) or 'widefield'.")
    return v in SECTIONED


class BaseMicroscope(abc.ABC):
    """Shared behaviour: guarded moves, context management, calibrated affine override.

    Subclasses implement the hardware half (``_set_xy``, ``_set_z``, ``_wait_xy``,
    ``_wait_z``, ``_busy_xy``, ``_busy_z``, ``_read_position``, ``snap``, ``stream``) and
    never expose a move that bypasses :attr:`guard`.

    A move made with ``wait=False`` is only *commanded* (Micro-Manager's setters return at
    once); until the device reports it is no longer busy, :meth:`moving` is True, and a
    backend flags the frames exposed meanwhile (:attr:`Frame.moving
    <inscope.acquisition.frame.Frame.moving>`) through :meth:`motion_during`. The busy
    state is polled only while a move is pending, so a still stage costs nothing.
    """

    name: str = "microscope"
    #: True when a plane holds only in-focus light (confocal, spinning disk, light sheet,
    #: two-photon); False for widefield, where every plane also holds the blur of the
    #: rest. Decides how a cell's z extent is read from its per-plane signal
    #: (:class:`~inscope.control.workflow.ZStackSpec`).
    optical_sectioning: bool = False
    #: True when :meth:`snap` takes the next frame of a recording rather than a new
    #: exposure: a snap then costs the stream a frame, so nothing snaps "just to look".
    snap_consumes: bool = False

    def __init__(self, guard: MoveGuard) -> None:
        self.guard = guard
        self._affine_override: np.ndarray | None = None
        self._pending: dict[str, int] = {}  # axis -> monotonic ns the move was commanded
        self._settled_ns = 0  # when the last pending move was seen finished

    # -- hardware half -----------------------------------------------------------------
    @abc.abstractmethod
    def snap(self) -> Frame: ...

    @abc.abstractmethod
    def stream(self) -> FrameStream: ...

    @abc.abstractmethod
    def _read_position(self) -> StagePosition: ...

    @abc.abstractmethod
    def _set_xy(self, x: float, y: float) -> None: ...

    @abc.abstractmethod
    def _set_z(self, z: float) -> None: ...

    def _wait_xy(self) -> None:  # noqa: B027 - optional hook
        """Block until the XY stage has settled (default: moves are synchronous)."""

    def _wait_z(self) -> None:  # noqa: B027 - optional hook
        """Block until the focus drive has settled (default: moves are synchronous)."""

    def _busy_xy(self) -> bool:
        """True while the XY stage is still moving (default: moves are synchronous)."""
        return False

    def _busy_z(self) -> bool:
        """True while the focus drive is still moving (default: moves are synchronous)."""
        return False

    # -- motion state --------------------------------------------------------------------
    def moving(self) -> bool:
        """True while a move commanded with ``wait=False`` has not finished (polls the
        device's busy flag, only while a move is pending)."""
        for axis in list(self._pending):
            if not (self._busy_xy() if axis == "xy" else self._busy_z()):
                self._pending.pop(axis, None)
                self._settled_ns = time.monotonic_ns()
                self._on_settled()
        return bool(self._pending)

    def _on_settled(self) -> None:  # noqa: B027 - optional hook
        """Called once when a pending move is seen finished (e.g. drop a cached position)."""

    def motion_during(self, start_ns: int, end_ns: int | None = None) -> bool:
        """True if a move was in progress at any time in ``[start_ns, end_ns]`` (an
        exposure); *end_ns* defaults to now. Backends use it to set ``Frame.moving``."""
        if self.moving():
            return any(t <= (end_ns or time.monotonic_ns()) for t in self._pending.values())
        return self._settled_ns >= start_ns

    @property
    @abc.abstractmethod
    def pixel_size_um(self) -> float: ...

    def _native_affine(self) -> np.ndarray:
        return np.eye(2) * self.pixel_size_um

    # -- public, guarded ---------------------------------------------------------------
    def position(self) -> StagePosition:
        return self._read_position()

    def move_xy(self, x: float, y: float, *, relative: bool = False,
                wait: bool = True) -> bool:
        p = self._read_position()
        tx, ty = (p.x + x, p.y + y) if relative else (float(x), float(y))

        def do() -> None:
            self._pending["xy"] = time.monotonic_ns()
            self._set_xy(tx, ty)
            if wait:
                self._wait_xy()
                self._pending.pop("xy", None)
                self._settled_ns = time.monotonic_ns()

        return self.guard.run("xy", (p.x, p.y), (tx, ty), do)

    def move_z(self, z: float, *, relative: bool = False, wait: bool = True) -> bool:
        p = self._read_position()
        tz = p.z + z if relative else float(z)

        def do() -> None:
            self._pending["z"] = time.monotonic_ns()
            self._set_z(tz)
            if wait:
                self._wait_z()
                self._pending.pop("z", None)
                self._settled_ns = time.monotonic_ns()

        return self.guard.run("z", (p.z,), (tz,), do)

    @property
    def limits(self) -> SoftLimits | None:
        return self.guard.limits

    @property
    def affine(self) -> np.ndarray:
        """The calibrated pixel-to-stage map if one was set, else the backend's own."""
        if self._affine_override is not None:
            return self._affine_override
        return self._native_affine()

    @affine.setter
    def affine(self, a: np.ndarray | None) -> None:
        self._affine_override = None if a is None else np.asarray(a, float).reshape(2, 2)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the hardware; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
