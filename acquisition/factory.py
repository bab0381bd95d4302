"""One entry point to open any microscope backend by name.

The service, the CLI and notebooks all call :func:`open_microscope` so that the choice of
backend is a string in a config file, not an import in code. Backends are imported lazily:
opening the simulator never loads pycromanager, and vice versa.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from inscope.acquisition.errors import BackendOptionError
from inscope.acquisition.microscope import BaseMicroscope, parse_sectioning
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.enums import Backend

#: What each backend opens.
BACKENDS: dict[Backend, str] = {
    Backend.SIM: "simulated microscope (virtual specimen, camera, XY stage, focus; ground truth)",
    Backend.HEADLESS: "Micro-Manager core in this process (pycromanager Python backend; "
                "options mm_dir, mm_config, camera_properties, exposure_ms)",
    Backend.MM: "running Micro-Manager GUI via its pycro-manager server (option port)",
    Backend.REPLAY: "frames from a TIFF / OME-TIFF / NDTiff / video file or a folder of "
              "image files (options path, fps, loop, channel, pixel_size_um)",
    Backend.SLIDE: "virtual microscope made from a real image, mosaic or z-stack (npz, TIFF, "
             "OME-TIFF, NDTiff, PNG) with its labels as ground truth (options path, "
             "pixel_size_um, z_step_um, fov, noise, labels, ...)",
}


def add_option_argument(parser: Any, example: str = "-o path=cells.npz -o fov=256") -> None:
    """The CLI's repeatable ``-o/--option KEY=VALUE`` (read by :func:`parse_options`),
    one definition for every subcommand that opens a microscope."""
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help=f"backend option (repeatable), e.g. {example}")


#: Options that name a file or folder: their values are kept as written, never read as
#: a number or a date (acquisition folders are often named ``2024-01-05`` or ``20240105``).
PATH_OPTIONS = frozenset({"path", "labels", "mm_dir", "mm_config", "config"})


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the CLI's ``-o``) as a dict; values are read as TOML
    (numbers, booleans, ``[a, b]``), anything else stays a string; a file or folder
    (:data:`PATH_OPTIONS`) and anything TOML would read as a date stay as written."""
    import datetime
    import tomllib

    out: dict[str, Any] = {}
    for kv in items or []:
        key, sep, value = kv.partition("=")
        if not sep or not key.strip():
            from inscope.acquisition.errors import MicroscopeUnavailable

            raise MicroscopeUnavailable(
                f"backend option {kv!r} must be KEY=VALUE, e.g. -o pixel_size_um=0.65.")
        v = value.strip()
        try:
            parsed = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = v
        if isinstance(parsed, datetime.date | datetime.time) or (
                key.strip() in PATH_OPTIONS and not isinstance(parsed, str)):
            parsed = v  # a folder named 2024-01-05 or 20240105, a file named 1.5
        out[key.strip()] = parsed
    return out


def _path_options_as_text(options: dict[str, Any]) -> dict[str, Any]:
    """File and folder options given as a number or a date (an unquoted TOML value,
    ``path = 2024-01-05``) as the text they were written as."""
    import datetime

    for key in PATH_OPTIONS & set(options):
        v = options[key]
        if isinstance(v, int | float | datetime.date | datetime.time) and \
                not isinstance(v, bool):
            options[key] = str(v)
    return options


def _limits(limits: SoftLimits | Mapping | None) -> SoftLimits | None:
    if limits is None or isinstance(limits, SoftLimits):
        return limits
    if isinstance(limits, Mapping):
        return SoftLimits.from_dict(dict(limits))
    raise TypeError(f"limits must be SoftLimits, a mapping or None; got {type(limits).__name__}.")


def _check_options(backend: str, options: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise BackendOptionError(
            f"Unknown option(s) {sorted(unknown)} for backend {backend!r}; allowed: "
            f"{sorted(allowed)}."
        )


def open_microscope(backend: str = Backend.SIM, *, limits: SoftLimits | Mapping | None = None,
                    dry_run: bool = False, **options: Any) -> BaseMicroscope:
    """Open a microscope backend.

    Parameters
    ----------
    backend
        A :class:`inscope.enums.Backend` (``"sim"``, ``"headless"``, ``"mm"`` (GUI),
        ``"replay"``, ``"slide"``; see :data:`BACKENDS`).
    limits
        Soft limits (``SoftLimits``, a ``{"x": [lo, hi], ...}`` mapping, or None). With
        None a real Micro-Manager stage refuses every move; demo and simulated stages get
        generous defaults.
    dry_run
        Check and record moves without making them.
    **options
        Passed to the backend: ``sim``: :class:`inscope.acquisition.simulated.SimConfig` fields;
        ``headless``: ``mm_dir``, ``mm_config`` (the Micro-Manager .cfg; CLI
        ``--mm-config``), ``camera_properties``, ``exposure_ms``, ...;
        ``mm``: ``port``, ``timeout_ms``, ``camera_properties``, ``exposure_ms``, ...;
        both Micro-Manager backends: ``sectioning`` (``sectioned`` for a confocal, spinning
        disk, light sheet or two-photon; default ``widefield``);
        ``replay``: ``path``, ``fps``, ``loop``, ``channel``, ``pixel_size_um``;
        ``slide``: see :data:`inscope.acquisition.slide.SLIDE_OPTIONS`.
    """
    name = str(backend).lower().strip()
    lim = _limits(limits)
    options = _path_options_as_text(dict(options))
    if name == Backend.SIM:
        from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

        fields = {f.name for f in dataclasses.fields(SimConfig)}
        _check_options(name, options, fields)
        if lim is None:  # keep the simulator's own limits (slide extent, Z range)
            scope = SimulatedMicroscope(SimConfig(**options))
            scope.guard.dry_run = bool(dry_run)
            return scope
        guard = MoveGuard(limits=lim, require_limits=False, dry_run=dry_run)
        return SimulatedMicroscope(SimConfig(**options), guard=guard)
    if name in (Backend.HEADLESS, Backend.MM):
        from inscope.acquisition.micromanager import MicroManagerMicroscope

        common = {"camera_properties", "exposure_ms", "position_refresh_s", "poll_s",
                  "attach_running", "sectioning"}
        options = dict(options)
        # how the microscope's planes are recorded (decides where a cell's z extent ends)
        sec = options.pop("sectioning", None)
        sectioned = None if sec is None else parse_sectioning(sec)
        if name == Backend.HEADLESS:
            _check_options(name, options, common | {"mm_dir", "mm_config", "config"})
            if "config" in options:  # the old name, before one name per meaning
                import logging

                logging.getLogger("inscope").warning(
                    "backend option 'config' is deprecated; use 'mm_config' (TOML "
                    "[microscope.options] mm_config, CLI --mm-config).")
                old = options.pop("config")
                options.setdefault("mm_config", old)
            if "mm_config" in options:
                options["config"] = options.pop("mm_config")
            mm = MicroManagerMicroscope.headless(limits=lim, dry_run=dry_run, **options)
        else:
            _check_options(name, options, common | {"port", "timeout_ms"})
            mm = MicroManagerMicroscope.connect(limits=lim, dry_run=dry_run, **options)
        if sectioned is not None:
            mm.optical_sectioning = sectioned
        return mm
    if name == Backend.REPLAY:
        from inscope.acquisition.replay import ReplayMicroscope

        _check_options(name, options, {"path", "fps", "loop", "channel", "pixel_size_um"})
        if options.get("path") in (None, ""):  # "" would open the working folder
            raise BackendOptionError(
                "The replay backend needs path=<file> (CLI: --file PATH).")
        path = options.pop("path")
        return ReplayMicroscope(path, limits=lim, dry_run=dry_run, **options)
    if name == Backend.SLIDE:
        from inscope.acquisition.slide import SLIDE_OPTIONS, SlideMicroscope

        unknown = sorted(set(options) - set(SLIDE_OPTIONS))
        if unknown:
            raise BackendOptionError(
                f"Unknown option(s) {unknown} for backend 'slide'; allowed: "
                f"{', '.join(SLIDE_OPTIONS)} (e.g. -o path=cells.npz -o pixel_size_um=0.65).")
        if options.get("path") in (None, ""):
            raise BackendOptionError(
                "The slide backend needs a file: -o path=FILE (npz with image=(Y, X) or "
                "(Z, Y, X), TIFF / OME-TIFF, or an NDTiff folder).")
        path = options.pop("path")
        return SlideMicroscope(path, limits=lim, dry_run=dry_run, **options)
    raise ValueError(
        f"Unknown microscope backend {backend!r}; choose one of: "
        + "; ".join(f"{k} ({v})" for k, v in BACKENDS.items())
    )
