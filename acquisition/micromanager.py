"""Micro-Manager backend through pycromanager: a running GUI or a headless MMCore.

One class, :class:`MicroManagerMicroscope`, drives both ways of reaching Micro-Manager:

* **GUI** (:meth:`MicroManagerMicroscope.connect`): the Micro-Manager application with its
  pycro-manager server (Tools > Options > Run pycro-manager server, port 4827). The core is
  the Java ``mmcorej.CMMCore`` bridged over ZMQ, with snake_case method names.
* **headless** (:meth:`MicroManagerMicroscope.headless`): pycromanager's Python backend,
  ``start_headless(mm_dir, config, python_backend=True)``, which runs the C++ MMCore
  (pymmcore) and the device adapters in this process. ``mm_dir`` is a Micro-Manager
  install or any adapter folder, e.g. ``mm_test_adapters.device_adapter_path()``.

Both end with a pycromanager ``Core`` object that answers the same snake_case calls
(``snap_image``, ``get_image``, ``set_xy_position``, ...); everything after construction is
shared. The two differ only in what ``get_image`` returns (a 2-D array in-process, a flat
array over the bridge), which :func:`_as_2d` absorbs.

Known traps handled here:

* pycromanager keeps an acquisition-engine singleton alive after ``stop_headless()``, so the
  headless core is started **once per process** (:func:`headless_core`); asking again with
  another config reloads that config into the same core.
* DemoCamera's "Noise" mode costs ~20 ms a frame; for DemoCamera cameras
  :data:`DEMO_CAMERA_DEFAULTS` selects "Fluorescent Beads" (beads that shift with the XY
  stage and blur with Z: a real closed-loop target) unless ``camera_properties`` says
  otherwise.
* Stage positions come back quantised (DXYStage: 0.005 µm steps) and a stage that is
  still moving reports intermediate positions: moves wait for the device by default;
  with ``wait=False`` (the live loop) MMCore's setter returns at once, the device's busy
  flag is polled while the move is pending, and frames exposed meanwhile are flagged
  ``moving``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inscope.acquisition.errors import DeviceError, MicroscopeUnavailable
from inscope.acquisition.frame import STAMP_READY, Frame, StagePosition
from inscope.acquisition.microscope import BaseMicroscope
from inscope.acquisition.pymmcore_core import (
    PixelFormat,
    as_snake_case_core,
    last_tagged_image,
    to_gray,
)
from inscope.acquisition.safety import MoveGuard, SoftLimits, shown_range, shown_um
from inscope.acquisition.stream import FrameStream

log = logging.getLogger(__name__)

DEFAULT_PORT = 4827
DEFAULT_CONFIG = "MMConfig_demo.cfg"

#: Camera properties applied to a DemoCamera camera when ``camera_properties`` is None.
#: "Fluorescent Beads" renders beads that move with the XY stage and blur with Z, at
#: ~exposure time per frame (the default "Noise"/"Artificial Waves" modes are slower or
#: carry no stage information). Beware: DemoCamera segfaults rendering beads with
#: PixelType "32bitRGB"; keep a gray pixel type in this mode.
DEMO_CAMERA_DEFAULTS: dict[str, str] = {"Mode": "Fluorescent Beads"}

#: Soft limits used when every stage device is a Micro-Manager *demo* adapter (device
#: library "DemoCamera") and no limits are given: a generous box, because nothing physical
#: can crash, yet finite so a runaway controller is still caught in tests.
DEMO_LIMITS = SoftLimits(x=(-50_000.0, 50_000.0), y=(-50_000.0, 50_000.0),
                         z=(-5_000.0, 5_000.0), max_step_xy_um=10_000.0,
                         max_step_z_um=500.0, max_rate_hz=1_000.0)

_UNREACHABLE_FIX = (
    "start Micro-Manager, enable Tools > Options > Run pycro-manager server, "
    "or use --backend headless/sim"
)

# -- the one headless core of this process ---------------------------------------------
_HEADLESS_LOCK = threading.Lock()
_HEADLESS: dict[str, str | None] = {"mm_dir": None, "config": None}


def default_mm_dir() -> str:
    """The adapter folder used when none is given: ``mm_test_adapters`` if installed,
    else an existing Micro-Manager install found by pycromanager."""
    try:
        import mm_test_adapters

        return str(mm_test_adapters.device_adapter_path())
    except ImportError:
        pass
    try:
        from pycromanager import find_existing_mm_install

        return str(find_existing_mm_install())
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise MicroscopeUnavailable(
            "No Micro-Manager folder given and none found: pass --mm-dir (a Micro-Manager "
            "install or a device-adapter folder), or `pip install mm-test-adapters` for the "
            f"demo devices. ({e})"
        ) from e


def resolve_config(mm_dir: str, config: str | os.PathLike) -> str:
    """Absolute path of *config* (absolute, relative to the cwd, or inside *mm_dir*)."""
    p = Path(config).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, Path(mm_dir) / p]
    for c in candidates:
        if c.is_file():
            return str(c.resolve())
    raise MicroscopeUnavailable(
        f"Micro-Manager config file not found: {str(config)!r} (looked in "
        f"{', '.join(str(c) for c in candidates)}). Pass --mm-config with an existing .cfg "
        "(absolute, or relative to --mm-dir), e.g. MMConfig_demo.cfg."
    )


def device_interface_check(mm_dir: str) -> str | None:
    """Compare pymmcore's device-interface number with the adapters', where it is cheap.

    pymmcore's version is ``MAJOR.MINOR.PATCH.DEVICE_INTERFACE.BUILD``; mm-test-adapters'
    major version is its device interface. Micro-Manager installs are not checked here (the
    core reports a mismatch when it loads an adapter, see :func:`_explain`). Returns a
    message naming what to install on a mismatch, else None.
    """
    try:
        import pymmcore

        core_di = int(pymmcore.__version__.split(".")[3])
    except Exception as e:  # noqa: BLE001 - no pymmcore or odd version: nothing to compare
        log.debug("no pymmcore device-interface version to compare: %s", e)
        return None
    try:
        import mm_test_adapters

        if Path(mm_dir).resolve() != Path(mm_test_adapters.device_adapter_path()).resolve():
            return None
        ad_di = int(str(mm_test_adapters.__version__).split(".")[0])
    except Exception as e:  # noqa: BLE001 - not the test adapters: nothing to compare
        log.debug("no mm-test-adapters interface version to compare: %s", e)
        return None
    if ad_di == core_di:
        return None
    return (
        f"Device-interface mismatch: pymmcore {pymmcore.__version__} speaks interface "
        f"{core_di} but mm-test-adapters {mm_test_adapters.__version__} was built for "
        f"{ad_di}. Install matching versions, e.g. `pip install 'mm-test-adapters>={core_di},"
        f"<{core_di + 1}'` (or a pymmcore whose 4th version number is {ad_di})."
    )


def headless_core(mm_dir: str | None = None, config: str | None = DEFAULT_CONFIG) -> Any:
    """Start (once per process) or reuse pycromanager's headless Python-backend core.

    A second call with the same folder and config returns the running core unchanged; with
    another config the config is reloaded into the same core (pycromanager's engine cannot
    be restarted in one process). ``config=None`` leaves whatever is loaded.
    """
    mm_dir = str(mm_dir) if mm_dir else default_mm_dir()
    if not Path(mm_dir).is_dir():
        raise MicroscopeUnavailable(
            f"Micro-Manager folder not found: {mm_dir!r}. Pass --mm-dir with a Micro-Manager "
            "install or a device-adapter folder (e.g. mm_test_adapters.device_adapter_path())."
        )
    cfg = resolve_config(mm_dir, config) if config else None
    with _HEADLESS_LOCK:
        from pycromanager import Core

        if _HEADLESS["mm_dir"] is None:
            msg = device_interface_check(mm_dir)
            if msg:
                raise MicroscopeUnavailable(msg)
            from pycromanager import start_headless

            try:
                start_headless(mm_dir, cfg, python_backend=True)
            except Exception as e:  # noqa: BLE001 - C++ / OS errors, re-raised with the fix
                raise MicroscopeUnavailable(
                    f"Micro-Manager could not load config {cfg!r} from {mm_dir!r}: "
                    f"{_explain(e)}. Check the file in Micro-Manager's Hardware Configuration "
                    "Wizard, and that the device adapters it names are in --mm-dir."
                ) from e
            _HEADLESS.update(mm_dir=mm_dir, config=cfg)
            return Core()
        core = Core()
        if mm_dir != _HEADLESS["mm_dir"]:
            core.set_device_adapter_search_paths([mm_dir])
            _HEADLESS["mm_dir"] = mm_dir
            _HEADLESS["config"] = None  # force a reload from the new folder
        if cfg and cfg != _HEADLESS["config"]:
            _stop_sequence(core)
            _HEADLESS["config"] = None
            try:
                core.load_system_configuration(cfg)
            except Exception as e:  # noqa: BLE001
                raise MicroscopeUnavailable(
                    f"Micro-Manager could not load config {cfg!r}: {_explain(e)}. Check the "
                    "file in the Hardware Configuration Wizard, and that its adapters are in "
                    "--mm-dir."
                ) from e
            _HEADLESS["config"] = cfg
        return core


def headless_config() -> str | None:
    """The config file loaded into this process's headless core (None if not started)."""
    return _HEADLESS["config"]


def _explain(e: BaseException) -> str:
    """MMCore's error text as one line (it breaks "Line 7: Device,..." and the reason onto
    two), with the fix for a device-interface mismatch."""
    text = " ".join(str(e).split()) or type(e).__name__
    if "interface version" in text.lower():
        try:
            import pymmcore

            ours = (f"pymmcore {pymmcore.__version__} speaks device interface "
                    f"{pymmcore.__version__.split('.')[3]}")
        except Exception:  # noqa: BLE001 - no pymmcore: the Java core's own message
            ours = "the core and the adapters differ"
        text += (f" ({ours}; the adapters' interface is the other number above: install a "
                 "pymmcore whose 4th version number equals the adapters' interface, or "
                 "adapters built for this pymmcore - Micro-Manager 2.0 nightlies from 2025 on "
                 "use interface 75)")
    return text


def _sequence_running(core: Any) -> bool:
    try:
        return bool(core.is_sequence_running())
    except Exception as e:  # noqa: BLE001 - a core that cannot say is treated as idle
        log.debug("is_sequence_running failed (treated as idle): %s", e)
        return False


def _stop_sequence(core: Any) -> None:
    try:
        if core.is_sequence_running():
            core.stop_sequence_acquisition()
    except Exception as e:  # noqa: BLE001 - best effort while reloading
        log.debug("could not stop the sequence acquisition before reloading: %s", e)


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _as_list(v: Any) -> list[float]:
    """A Micro-Manager DoubleVector (pymmcore tuple or bridged Java object) as a list."""
    try:
        return [float(x) for x in v]
    except TypeError:
        return [float(v.get(i)) for i in range(int(v.size()))]


def _as_2d(pix: Any, height: int, width: int, fmt: PixelFormat | None = None) -> np.ndarray:
    """Camera pixels as a 2-D array, read by the core's own pixel description (see
    :func:`inscope.acquisition.pymmcore_core.to_gray`): in-process cores give (H, W), the
    Java bridge a flat array; only 4 components are colour (turned into grayscale)."""
    return to_gray(pix, height, width, fmt)


def affine_from_mm(vec: list[float] | None, pixel_size_um: float) -> np.ndarray:
    """Convert Micro-Manager's 6-vector pixel-size affine to our 2x2 ``A``.

    Micro-Manager stores ``[a, b, tx, c, d, ty]`` (row-major 2x3). Its translation is
    irrelevant for offsets from the image centre. An identity (or empty / singular) matrix
    is what Micro-Manager reports when no affine was calibrated: it means
    ``pixel_size_um * I``. A calibrated matrix already carries the pixel size (µm per
    pixel) and is used as is; with the demo devices ``+I`` matches what the DemoCamera
    shows (moving the stage +x moves the beads -x in the image).
    """
    eye = np.eye(2) * float(pixel_size_um)
    if not vec or len(vec) < 5:
        return eye
    m = np.array([[vec[0], vec[1]], [vec[3], vec[4]]], dtype=float)
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12 or np.allclose(m, np.eye(2)):
        return eye
    return m


def affine_from_core(get_affine: Any, pixel_size_um: float | None) -> np.ndarray:
    """The pixel -> stage map (2x2 µm per pixel) of a core's current pixel-size
    configuration, read with *get_affine* (``core.get_pixel_size_affine``, or
    pymmcore-plus's ``mmc.getPixelSizeAffine``; a pymmcore tuple or a bridged Java
    vector). A camera mounted rotated or mirrored is calibrated in Micro-Manager as this
    affine; a core that cannot give one (an old core), or an uncalibrated one, means the
    pixel size alone (:func:`affine_from_mm`); an unset pixel size (0) reads as 1 µm."""
    try:
        vec: list[float] | None = _as_list(get_affine())
    except Exception as e:  # noqa: BLE001 - old cores without affine support
        log.debug("no pixel-size affine from the core (%s); from the pixel size", e)
        vec = None
    px = pixel_size_um if pixel_size_um and pixel_size_um > 0 else 1.0
    return affine_from_mm(vec, px)


class MicroManagerMicroscope(BaseMicroscope):
    """A Micro-Manager core (GUI bridge or headless) as an inscope :class:`Microscope`.

    Prefer the constructors :meth:`headless` and :meth:`connect`; ``__init__`` wraps any
    pycromanager ``Core`` object.

    Parameters
    ----------
    core
        A pycromanager ``Core()`` (in-process pymmcore or the Java bridge).
    limits
        Soft limits; ``None`` means :data:`DEMO_LIMITS` if all stages are demo devices,
        else none, and then every move on a real stage is refused (``require_limits``).
    dry_run
        Check and record moves without making them.
    camera_properties
        ``{property: value}`` set on the camera at start; None applies
        :data:`DEMO_CAMERA_DEFAULTS` to a DemoCamera camera and nothing to others.
    exposure_ms
        Camera exposure to set (None keeps the current one).
    position_refresh_s
        Streams tag each frame with a *cached* stage position, refreshed after every move
        made here and re-read from the stage at most this often (to see joystick or GUI
        moves). Position queries go through the device (serial lines on real stages take
        several ms), so asking once per frame would cap the frame rate. 0 = every frame.
        The exposure, pixel size and affine that frames carry are re-read as often (the
        objective or the exposure changed while the stream runs).
    poll_s
        Sleep between polls of the camera buffer while streaming (adds up to this much
        latency, spares a CPU core).
    """

    #: With a sequence already running on the camera (the GUI's live mode), read its
    #: newest images instead of stopping it and starting inscope's own (option
    #: ``attach_running`` of the headless / mm backends and :meth:`from_core`).
    attach_running: bool = False

    def __init__(self, core: Any, *, limits: SoftLimits | Mapping | None = None,
                 dry_run: bool = False, camera_properties: Mapping[str, Any] | None = None,
                 exposure_ms: float | None = None, position_refresh_s: float = 0.25,
                 poll_s: float = 0.0005, backend: str = "headless",
                 guard: MoveGuard | None = None) -> None:
        self.core = core = as_snake_case_core(core)  # a pymmcore / pymmcore-plus core too
        self.backend = backend
        self._lock = threading.RLock()
        self.camera = str(core.get_camera_device())
        if not self.camera:
            raise MicroscopeUnavailable(
                "Micro-Manager has no camera: the loaded configuration defines no camera "
                "device (or Core-Camera is empty). Add a camera in the Hardware Configuration "
                "Wizard (demo: DemoCamera/DCam) and set it as the Core camera."
            )
        self.xy_device = str(core.get_xy_stage_device())
        self.z_device = str(core.get_focus_device())
        self.name = f"micromanager-{backend}:{self.camera}"
        stages = [d for d in (self.xy_device, self.z_device) if d]
        self.demo_stages = bool(stages) and all(
            self._library(d) == "DemoCamera" for d in stages)
        if isinstance(limits, Mapping):
            limits = SoftLimits.from_dict(dict(limits))
        if guard is None:
            if limits is None and self.demo_stages:
                limits = DEMO_LIMITS
                log.info("no soft limits given and the stages (%s) are Micro-Manager demo "
                         "devices: using the demo limits x, y [-50000, 50000] µm, z "
                         "[-5000, 5000] µm, max step 10000 µm (XY) / 500 µm (Z); set "
                         "[microscope.limits] to change them.", ", ".join(stages))
            guard = MoveGuard(limits=limits, require_limits=not self.demo_stages,
                              dry_run=dry_run)
        super().__init__(guard)
        if camera_properties is None:
            camera_properties = (DEMO_CAMERA_DEFAULTS
                                 if self._library(self.camera) == "DemoCamera" else {})
        self.set_camera_properties(camera_properties)
        if exposure_ms is not None:
            self._call(self.camera, "set exposure", core.set_exposure, float(exposure_ms))
        self.position_refresh_s = float(position_refresh_s)
        self.poll_s = float(poll_s)
        self._pos_cache: StagePosition | None = None
        self._pos_t = 0.0
        self._streaming = False
        self._say_why_moves_will_not_be_made()

    def _say_why_moves_will_not_be_made(self) -> None:
        """Say at start, one line each, what will stop moves: no XY stage or focus device,
        a real stage without soft limits (on every axis or on one), a stage parked outside
        its limits.

        Steering and the focus lock count a refused or failed move and go on, so a run
        that can never move only shows ``refused 58`` in its summary; the microscopist
        needs the reason and the fix before the run, not a count after it.
        """
        for dev, what, fix in (
                (self.xy_device, "XY stage (Core-XYStage is empty): XY moves (steer, "
                 "calibrate, scan) fail", "add one in the Hardware Configuration Wizard "
                 "(demo: DemoCamera/DXYStage)"),
                (self.z_device, "focus device (Core-Focus is empty): focus moves fail",
                 "set Core-Focus (demo: DemoCamera/DStage)")):
            if not dev:
                log.info("This Micro-Manager configuration has no %s; %s.", what, fix)
        g = self.guard
        axes = [a for a, dev in (("x", self.xy_device), ("y", self.xy_device),
                                 ("z", self.z_device)) if dev]
        if g.dry_run or not axes:
            return
        # (no flag named: the message is read by every command that opens a microscope)
        fix = ("give them in µm: [microscope.limits] x, y, z in the run's TOML, or the "
               "command's limits option (see its --help); or make it a dry run")
        if g.limits is None:
            if g.require_limits:
                log.warning("No soft limits for the stage(s) %s of this real microscope: "
                            "inscope refuses every move; %s.",
                            ", ".join(d for d in (self.xy_device, self.z_device) if d), fix)
            return
        missing = [a for a in axes if getattr(g.limits, a) is None]
        if g.require_limits and missing:
            log.warning("No soft limit for %s on this real stage: inscope refuses every %s "
                        "move; %s.", " and ".join(missing),
                        "focus" if missing == ["z"] else "stage", fix)
        try:
            p = self._read_position()
        except DeviceError as e:  # it will fail again, with its own message, when used
            log.debug("no position to check against the soft limits: %s", e)
            return
        out = [f"{a}={shown_um(getattr(p, a))} µm outside {shown_range(rng)}"
               for a in axes if (rng := getattr(g.limits, a)) is not None
               and not rng[0] <= getattr(p, a) <= rng[1]]
        if out:
            log.warning("The stage is outside its soft limits (%s): every move that ends "
                        "outside them is refused; move it inside first (Micro-Manager's "
                        "stage control), or widen the limits if it may go there.",
                        ", ".join(out))

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def headless(cls, mm_dir: str | None = None, config: str | None = DEFAULT_CONFIG,
                 limits: SoftLimits | Mapping | None = None, dry_run: bool = False,
                 **kwargs: Any) -> MicroManagerMicroscope:
        """Micro-Manager's C++ core in this process (pycromanager Python backend).

        *mm_dir* is a Micro-Manager install or adapter folder (default: mm-test-adapters);
        *config* a ``.cfg`` (absolute or inside *mm_dir*). Started once per process.
        """
        core = headless_core(mm_dir, config)
        attach = bool(kwargs.pop("attach_running", False))
        scope = cls(core, limits=limits, dry_run=dry_run, backend="headless", **kwargs)
        scope.attach_running = attach
        return scope

    @classmethod
    def from_core(cls, core: Any, *, limits: SoftLimits | Mapping | None = None,
                  dry_run: bool = False, **kwargs: Any) -> MicroManagerMicroscope:
        """A core the caller already holds: ``pymmcore.CMMCore``,
        ``pymmcore_plus.CMMCorePlus`` (e.g. napari-micromanager's) or a pycromanager core.

        The core is used as it is: its loaded config, properties and exposure stay (no
        DemoCamera defaults are applied unless ``camera_properties`` asks), and closing the
        microscope leaves the core running for its owner.
        """
        kwargs.setdefault("camera_properties", {})
        kwargs.setdefault("backend", "pymmcore")
        attach = bool(kwargs.pop("attach_running", False))
        scope = cls(core, limits=limits, dry_run=dry_run, **kwargs)
        scope.attach_running = attach
        return scope

    @classmethod
    def connect(cls, port: int = DEFAULT_PORT, limits: SoftLimits | Mapping | None = None,
                dry_run: bool = False, timeout_ms: int = 2000,
                **kwargs: Any) -> MicroManagerMicroscope:
        """The core of a running Micro-Manager GUI through its pycro-manager server."""
        if not _port_open(port):
            raise MicroscopeUnavailable(
                f"No Micro-Manager pycro-manager server on 127.0.0.1:{port}: "
                f"{_UNREACHABLE_FIX}."
            )
        # pycromanager.Core() would return an in-process headless core if one exists, so
        # the bridged Java core is created directly (this is what Core(port=...) does).
        from mmpycorex.core import ZMQRemoteMMCoreJ

        try:
            core = ZMQRemoteMMCoreJ(port=port, timeout=timeout_ms)
        except Exception as e:  # noqa: BLE001
            raise MicroscopeUnavailable(
                f"Port {port} is open but no Micro-Manager core answered ({e}): "
                f"{_UNREACHABLE_FIX}."
            ) from e
        # every poll of the camera buffer is a ZMQ round trip (~0.1-0.5 ms): poll less often
        kwargs.setdefault("poll_s", 0.002)
        attach = bool(kwargs.pop("attach_running", False))
        scope = cls(core, limits=limits, dry_run=dry_run, backend="mm", **kwargs)
        scope.attach_running = attach
        return scope

    # -- helpers -----------------------------------------------------------------------
    def _library(self, device: str) -> str:
        try:
            return str(self.core.get_device_library(device))
        except Exception as e:  # noqa: BLE001 - only for an error message
            log.debug("no library name for device %r: %s", device, e)
            return ""

    def _call(self, device: str, action: str, fn, *args):
        """Call a core method; wrap any C++/Java error into one DeviceError with the fix."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            lib = self._library(device) if device else ""
            what = f"{device!r} ({lib})" if lib else repr(device or "core")
            raise DeviceError(
                f"Micro-Manager device {what} failed to {action}: {_explain(e)}. Check that "
                "it is switched on, connected and configured (Device Property Browser), and "
                "see Micro-Manager's CoreLog for details."
            ) from e

    def set_camera_properties(self, props: Mapping[str, Any]) -> None:
        """Set camera properties by name (e.g. ``{"Mode": "Fluorescent Beads"}``)."""
        for k, v in props.items():
            self._call(self.camera, f"set property {k!r} to {v!r}", self.core.set_property,
                       self.camera, str(k), str(v))

    def _refuse_demo_beads_in_colour(self) -> None:
        """One line instead of a dead process: DemoCamera crashes (segfault, or free():
        invalid pointer) in a sequence acquisition of "Fluorescent Beads" in a colour
        PixelType (32bitRGB, 64bitRGB), e.g. ``-p PixelType=32bitRGB -p "Mode=Fluorescent
        Beads"``."""
        c, cam = self.core, self.camera
        try:
            if self._library(cam) != "DemoCamera" or not c.has_property(cam, "Mode"):
                return
            mode, ptype = str(c.get_property(cam, "Mode")), str(
                c.get_property(cam, "PixelType"))
        except Exception as e:  # noqa: BLE001 - a camera that cannot say: let it stream
            log.debug("could not read DemoCamera's Mode / PixelType: %s", e)
            return
        if mode == "Fluorescent Beads" and "RGB" in ptype:
            raise DeviceError(
                f"DemoCamera {cam!r} crashes streaming Mode 'Fluorescent Beads' in PixelType "
                f"{ptype!r}: choose PixelType 8bit, 16bit or 32bit (-p PixelType=16bit), or "
                "another Mode for colour (-p 'Mode=Artificial Waves').")

    @property
    def exposure_ms(self) -> float:
        return float(self.core.get_exposure())

    @property
    def pixel_size_um(self) -> float:
        px = float(self.core.get_pixel_size_um())
        if not (px > 0 and math.isfinite(px)):
            if not getattr(self, "_px_warned", False):
                self._px_warned = True
                warnings.warn(
                    "Micro-Manager has no pixel size configured for the current objective; "
                    "using 1.0 µm/pixel. Set it in Devices > Pixel Size Calibration, or "
                    "calibrate with `inscope calibrate`.", stacklevel=2)
            return 1.0
        return px

    @property
    def pixel_size_configured(self) -> bool:
        return float(self.core.get_pixel_size_um()) > 0

    def _native_affine(self) -> np.ndarray:
        return affine_from_core(self.core.get_pixel_size_affine, self.pixel_size_um)

    def _frame_context(self) -> tuple[float, np.ndarray, dict[str, Any]]:
        px = self.pixel_size_um
        md = {
            "backend": self.backend,
            "camera": self.camera,
            "exposure_ms": float(self.core.get_exposure()),
            "binning": str(self.core.get_property(self.camera, "Binning"))
            if self.core.has_property(self.camera, "Binning") else "1",
            "pixel_size_configured": self.pixel_size_configured,
        }
        return px, self.affine, md

    def _stream_context(self) -> tuple[float, np.ndarray, dict[str, Any], int, float]:
        """:meth:`_frame_context` for a stream, with the exposure in ns (the window in
        which a move blurs a frame) and when it was read (``time.monotonic()``).

        A stream re-reads it every ``position_refresh_s``, as it does the stage
        position: the exposure, the objective (pixel size, affine) can be changed while
        a sequence runs (Micro-Manager's GUI, a pymmcore-plus script), and frames
        carrying the start's would steer by the old objective's pixel size and judge
        motion blur by the old exposure."""
        px, aff, md = self._frame_context()
        return px, aff, md, int(float(md["exposure_ms"]) * 1e6), time.monotonic()

    # -- position ----------------------------------------------------------------------
    def _read_position(self) -> StagePosition:
        c = self.core
        x = y = z = 0.0  # an axis without a device reads 0
        if self.xy_device:
            x = float(self._call(self.xy_device, "report its position", c.get_x_position))
            y = float(self._call(self.xy_device, "report its position", c.get_y_position))
        if self.z_device:
            z = float(self._call(self.z_device, "report its position", c.get_position))
        p = StagePosition(x, y, z)
        self._pos_cache, self._pos_t = p, time.monotonic()
        return p

    def _cached_position(self) -> StagePosition:
        p = self._pos_cache
        if p is None or time.monotonic() - self._pos_t >= self.position_refresh_s:
            p = self._read_position()
        return p

    def _set_xy(self, x: float, y: float) -> None:
        if not self.xy_device:
            raise DeviceError("No XY stage in this Micro-Manager configuration; add one in "
                              "the Hardware Configuration Wizard (demo: DemoCamera/DXYStage).")
        self._pos_cache = None  # frames exposed from now on need a fresh reading
        self._call(self.xy_device, f"move to ({x:.2f}, {y:.2f}) µm",
                   self.core.set_xy_position, float(x), float(y))

    def _set_z(self, z: float) -> None:
        if not self.z_device:
            raise DeviceError("No focus device in this Micro-Manager configuration; set "
                              "Core-Focus (demo: DemoCamera/DStage).")
        self._pos_cache = None
        self._call(self.z_device, f"move to z={z:.2f} µm", self.core.set_position, float(z))

    def _wait_xy(self) -> None:
        self._call(self.xy_device, "finish its move", self.core.wait_for_device,
                   self.xy_device)
        self._read_position()

    def _wait_z(self) -> None:
        self._call(self.z_device, "finish its move", self.core.wait_for_device, self.z_device)
        self._read_position()

    def _busy_xy(self) -> bool:
        return bool(self.xy_device) and bool(
            self._call(self.xy_device, "report whether it is busy", self.core.device_busy,
                       self.xy_device))

    def _busy_z(self) -> bool:
        return bool(self.z_device) and bool(
            self._call(self.z_device, "report whether it is busy", self.core.device_busy,
                       self.z_device))

    def _on_settled(self) -> None:
        self._pos_cache = None  # the cached reading may be from the middle of the move

    # -- frames ------------------------------------------------------------------------
    def snap(self) -> Frame:
        """Expose one image (blocking) and return it with position, pixel size, affine."""
        with self._lock:
            if self._streaming:
                raise DeviceError("Cannot snap while a stream is running on this camera; "
                                  "close the stream first (or take frames from it).")
            c = self.core
            pos = self._read_position()
            self._call(self.camera, "snap an image", c.snap_image)
            pix = self._call(self.camera, "return its image", c.get_image)
            ready = time.monotonic_ns()
            h, w = int(c.get_image_height()), int(c.get_image_width())
            fmt = PixelFormat.of(c)
        pixels = _as_2d(pix, h, w, fmt)
        px, aff, md = self._frame_context()
        self._snap_count = getattr(self, "_snap_count", -1) + 1
        return Frame(pixels, index=self._snap_count, stamps={STAMP_READY: ready},
                     position=pos, pixel_size_um=px, affine=aff, metadata=md)

    def stream(self) -> FrameStream:
        """Continuous sequence acquisition; the newest frame goes to the consumer.

        ``Frame.index`` is the camera's own image number (Micro-Manager's ``ImageNumber``)
        so a gap means frames the camera made that nobody saw (here or in the slot).
        ``"ready"`` is stamped when the image has been copied out of the core's circular
        buffer into host memory.
        """
        return FrameStream(self._produce, name=f"mm-{self.camera}")

    def _produce(self, emit, stop: threading.Event) -> None:
        c = self.core
        if self.attach_running and _sequence_running(c):
            return self._produce_attached(emit, stop)
        with self._lock:
            if self._streaming:
                raise DeviceError("A stream is already running on this camera; close it "
                                  "before starting another.")
            if _sequence_running(c):
                log.warning("Micro-Manager's camera %r was acquiring (live mode or another "
                            "sequence): inscope stops it and starts its own sequence; "
                            "restart live mode in Micro-Manager after inscope is done.",
                            self.camera)
            _stop_sequence(c)  # e.g. left running by the GUI's live mode
            self._refuse_demo_beads_in_colour()
            h, w = int(c.get_image_height()), int(c.get_image_width())
            fmt = PixelFormat.of(c)
            px, aff, md, exposure_ns, ctx_t = self._stream_context()
            self._call(self.camera, "start continuous acquisition",
                       c.start_continuous_sequence_acquisition, 0.0)
            self._streaming = True
        count = 0
        try:
            while not stop.is_set():
                n = int(c.get_remaining_image_count())
                if n == 0:
                    if not c.is_sequence_running():
                        raise DeviceError(
                            f"Camera {self.camera!r} stopped acquiring (sequence ended or "
                            "circular buffer overflowed); check the camera and CoreLog.")
                    time.sleep(self.poll_s)
                    continue
                for _ in range(n - 1):  # only the newest frame matters (low latency)
                    c.pop_next_image()
                ti = self._call(self.camera, "return its image", c.pop_next_tagged_image)
                ready = time.monotonic_ns()
                if time.monotonic() - ctx_t >= self.position_refresh_s:
                    px, aff, md, exposure_ns, ctx_t = self._stream_context()
                try:
                    tags = dict(ti.tags) if ti.tags is not None else {}
                except (TypeError, ValueError):  # a bridged Java object, not a dict
                    tags = {}
                try:
                    index = int(tags.get("ImageNumber", count))
                except (TypeError, ValueError):
                    index = count
                count = index + 1
                meta = dict(md)
                if "ElapsedTime-ms" in tags:
                    meta["camera_elapsed_ms"] = float(tags["ElapsedTime-ms"])
                # exposed during a move? (the exposure ended at most one readout ago)
                moving = self.motion_during(ready - 2 * exposure_ns, ready)
                emit(Frame(_as_2d(ti.pix, h, w, fmt), index=index, stamps={STAMP_READY: ready},
                           position=self._read_position() if moving
                           else self._cached_position(), pixel_size_um=px,
                           affine=aff, metadata=meta, moving=moving))
        finally:
            with self._lock:
                _stop_sequence(c)
                self._streaming = False

    def _produce_attached(self, emit, stop: threading.Event) -> None:
        """Read the newest image of a sequence someone else runs (Micro-Manager's live
        mode, a pymmcore-plus MDA) without stopping it or taking images from its buffer:
        each new ``ImageNumber`` of the core's last image becomes a frame."""
        c = self.core
        with self._lock:
            if self._streaming:
                raise DeviceError("A stream is already running on this camera; close it "
                                  "before starting another.")
            log.info("attaching to the sequence already running on camera %r (live mode): "
                     "reading its newest images; it keeps running after inscope", self.camera)
            h, w = int(c.get_image_height()), int(c.get_image_width())
            fmt = PixelFormat.of(c)
            px, aff, md, exposure_ns, ctx_t = self._stream_context()
            self._streaming = True
        last = None
        try:
            while not stop.is_set():
                if not _sequence_running(c):
                    raise DeviceError(f"The sequence on camera {self.camera!r} that inscope "
                                      "was attached to has stopped (live mode ended).")
                try:
                    ti = last_tagged_image(c)
                except (AttributeError, TypeError) as e:  # a core that cannot do it
                    raise DeviceError(
                        f"Cannot read the newest image of camera {self.camera!r} from "
                        f"this core ({type(c).__name__}: {e}); attach to live mode through "
                        "pycromanager's Core(), a pymmcore CMMCore or pymmcore-plus "
                        "CMMCorePlus, or let inscope run its own sequence "
                        "(attach_running=False).") from e
                except Exception:  # noqa: BLE001 - MMCore's error: no image in the buffer yet
                    time.sleep(self.poll_s)
                    continue
                ready = time.monotonic_ns()
                try:
                    index = int(dict(ti.tags).get("ImageNumber", ""))
                except (TypeError, ValueError):
                    index = None
                if index is None or index == last:
                    time.sleep(self.poll_s)
                    continue
                last = index
                if time.monotonic() - ctx_t >= self.position_refresh_s:
                    px, aff, md, exposure_ns, ctx_t = self._stream_context()
                moving = self.motion_during(ready - 2 * exposure_ns, ready)
                emit(Frame(_as_2d(ti.pix, h, w, fmt), index=index, stamps={STAMP_READY: ready},
                           position=self._read_position() if moving
                           else self._cached_position(), pixel_size_um=px,
                           affine=aff, metadata=dict(md, attached=True), moving=moving))
        finally:
            with self._lock:
                self._streaming = False

    # -- housekeeping ------------------------------------------------------------------
    def reset(self, camera_properties: Mapping[str, Any] | None = None,
              exposure_ms: float | None = None) -> None:
        """Back to a known state (used by test fixtures): no sequence running, full-chip
        ROI, stage at the origin (directly, not through the guard), camera properties and
        exposure set."""
        _stop_sequence(self.core)
        self._streaming = False
        self._call(self.camera, "clear its ROI", self.core.clear_roi)
        if self.xy_device:
            self._call(self.xy_device, "move to the origin", self.core.set_xy_position,
                       0.0, 0.0)
            self.core.wait_for_device(self.xy_device)
        if self.z_device:
            self._call(self.z_device, "move to 0", self.core.set_position, 0.0)
            self.core.wait_for_device(self.z_device)
        if camera_properties:
            self.set_camera_properties(camera_properties)
        if exposure_ms is not None:
            self.core.set_exposure(float(exposure_ms))
        self._read_position()

    def close(self) -> None:
        """Stop any acquisition. The headless core stays alive for reuse (see module doc)."""
        _stop_sequence(self.core)
        self._streaming = False
