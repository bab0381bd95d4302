"""The service's configuration: one dataclass tree, loaded from TOML or built from flags.

Every setting a CLI flag can change lives here under the same name, so a run can be
described once in a file (``inscope run --config scope.toml``) and tweaked from the
command line. Validation is strict and names the file and the key: an unknown key gets a
did-you-mean, a wrong type or a bad value says what is allowed. A relative file or
folder in a TOML file is relative to that file's folder (:func:`resolve_paths`).

Example::

    [microscope]
    backend = "sim"            # sim | headless | mm | replay
    dry_run = false
    calibration = "calibration.json"   # optional, from `inscope calibrate`
    [microscope.options]       # passed to acquisition.factory.open_microscope
    seed = 1
    [microscope.limits]        # acquisition.SoftLimits (µm); required on real stages
    x = [-5000, 5000]
    y = [-5000, 5000]
    z = [-100, 100]

    [detector]
    model = "classical"        # omit for the shipped default model, or a path to .onnx
    provider = "auto"
    score_threshold = 0.4

    [control]
    mode = "steer+focus"       # off | track | steer | focus | steer+focus
    target = "nearest"         # nearest | largest | score | class:<name> | a track id

    [outputs]
    video = "runs/live/overlay.mp4"
    [outputs.zmq]
    pub_port = 5556
    rep_port = 5557

    [run]
    frames = 1000
"""

from __future__ import annotations

import difflib
import math
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from inscope.control.steering import SteerSettings
from inscope.enums import Backend, Mode, RecordFormat, parse_target

#: Each component owns its settings' defaults; the config reads them from there.
_STEER = SteerSettings()


class ConfigError(ValueError):
    """A configuration file or mapping is wrong; the message names the key and the fix."""


@dataclass
class MicroscopeConfig:
    """Where frames come from (``acquisition.factory.open_microscope`` arguments)."""

    backend: str = Backend.SIM
    options: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] | None = None
    dry_run: bool = False
    # JSON from `inscope calibrate`: its pixel-to-stage affine replaces the microscope's
    calibration: str | None = None


@dataclass
class DetectorConfig:
    """Which detector runs (``detector.load_detector`` arguments)."""

    model: str | None = None  # None: the shipped default; "classical"; a .onnx path; triton://
    provider: str = "auto"
    threads: int | None = None
    score_threshold: float | None = None
    # what ONNX Runtime's idle threads do: "off" sleep (leave the cores to the camera
    # and control threads: lower p99 in the loop, on 2 cores and on 16), "run" spin only
    # while a frame runs, "on" spin between frames too (lowest p50 alone); true/false =
    # "on"/"off"; unset: inscope.detector.providers.default_spinning
    spinning: bool | str | None = None
    # network outputs averaged over the frame and its mirror images (1 off, 2 + left-
    # right, 4 + up-down and both): steadier, tighter boxes for 2x / 4x the network's
    # time (inscope.detector.mirror; the model card, *Mirror views*)
    mirror_views: int = 1
    # enlarge frames whose objects measure under this many pixels up to it (unset: the
    # model card's scale.enlarge_below_px, 14 px for the shipped model): accuracy for
    # time, f² for an enlargement by f (the model card, *Accuracy for time*)
    enlarge_below_px: float | None = None


@dataclass
class ControlConfig:
    """What the loop does with detections.

    Attributes
    ----------
    mode
        ``off`` (detect only), ``track`` (IDs, no moves), ``steer`` (centre the target),
        ``focus`` (focus lock on the target), ``steer+focus``.
    target
        Target policy (``nearest`` to the image center, ``largest``, ``score``,
        ``class:<name>``, ``class`` with *target_class*) or an integer track id; parsed
        by :func:`inscope.enums.parse_target` like the CLI's and ``set_target``'s.
    target_class
        Class name for the ``class`` policy.
    deadband_um, max_step_um, gain, settle_s
        Steering (:class:`inscope.control.steering.SteerSettings`, whose defaults these
        are): no move while the target is within the deadband (None: from the target's
        measured jitter); each move is ``gain * error`` clipped to ``max_step_um``;
        frames this long after a move are ignored (stage ringing).
    focus_step_um
        Focus lock: largest correction per cycle (µm); None: the depth of field.
    objective_na, wavelength_um, immersion_index
        The objective, for the depth of field that sizes the focus lock's dither
        (``λ n / NA² + n e / NA``). None: the microscope's own (the simulator's optics).
    focus_dof_um
        Depth of field (µm) set directly, instead of computing it.
    focus_dither_um
        Focus lock dither half-amplitude (µm); None: a quarter of the depth of field.
    focus_check_s
        Focus lock duty cycle: a check of the peak every this many seconds, even while
        the sharpness holds (None: only when it degrades or the stage travelled).
    """

    mode: str = Mode.OFF
    target: str | int = "nearest"
    target_class: str | None = None
    deadband_um: float | None = _STEER.deadband_um
    max_step_um: float | None = _STEER.max_step_um
    gain: float = _STEER.gain
    settle_s: float = _STEER.settle_s
    focus_step_um: float | None = None
    objective_na: float | None = None
    wavelength_um: float = 0.52
    immersion_index: float = 1.0
    focus_dof_um: float | None = None
    focus_dither_um: float | None = None
    focus_check_s: float | None = None


@dataclass
class ZmqConfig:
    enabled: bool = True
    bind: str = "127.0.0.1"
    pub_port: int = 5556
    rep_port: int = 5557
    overlay: bool = False  # also publish overlay frames on the PUB socket
    sndhwm: int = 100
    # False (default): plain PUB, a slow subscriber loses only its own messages. True:
    # lossless for ONE trusted subscriber (XPUB_NODROP, drops counted), but then one
    # stalled subscriber starves every other.
    nodrop: bool = False
    # CURVE authentication (required when bind is not loopback; see inscope.curve):
    curve_server_key: str | None = None  # the service's server.key_secret
    curve_allowed_clients: str | None = None  # folder of allowed client public keys


@dataclass
class RecordsConfig:
    dir: str | None = None  # None: no records
    format: str = RecordFormat.JSONL
    frames: bool = False  # also write raw frames as OME-TIFF (replayable)


@dataclass
class EyepieceConfig:
    enabled: bool = False
    display_size: list[int] = field(default_factory=lambda: [1280, 720])
    calibration: str | None = None  # JSON from inscope.eyepiece.EyepieceCalibration.save
    # draw tracked boxes where their cells are when the display shows them
    # (inscope.predict.BoxPredictor); needs tracking (control mode other than "off")
    predict: bool = True
    # drawing -> light from the display (buffering, projector); None: the lag the live
    # calibration measured (in the calibration file), else inscope.predict.DEFAULT_DISPLAY_LAG_MS
    display_lag_ms: float | None = None


@dataclass
class OutputsConfig:
    video: str | None = None
    video_fps: float | None = None  # None: the display rate (the video plays in real time)
    display_fps: float = 30.0  # overlay render rate; newer frames replace, never queue
    window: bool | None = None  # None: show a window if a display is available
    snapshot_dir: str = "runs/snapshots"
    snapshot_max_per_s: float = 1.0  # rate limit of the ZMQ "snapshot" command
    zmq: ZmqConfig = field(default_factory=ZmqConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    eyepiece: EyepieceConfig = field(default_factory=EyepieceConfig)


@dataclass
class RunConfig:
    frames: int | None = None
    seconds: float | None = None
    summary: str | None = None
    progress: bool = True


@dataclass
class Config:
    microscope: MicroscopeConfig = field(default_factory=MicroscopeConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return _to_dict(self)


# -- validation ------------------------------------------------------------------------
def _to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "none (omit the key)"
    origin = typing.get_origin(tp)
    if origin is not None:
        return {dict: "table", list: "array"}.get(origin, str(origin))
    if is_dataclass(tp):
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "true/false",
            dict: "table"}.get(tp, getattr(tp, "__name__", str(tp)))


def _item(where: str, i: int) -> str:
    """Where item *i* of the array at *where* is: ``key 'a.b'`` -> ``key 'a.b[1]'`` (the
    index inside the quoted key, as one would write it), else ``where[1]``."""
    if where.endswith("'"):
        return f"{where[:-1]}[{i}]'"
    return f"{where}[{i}]"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check *value* against type hint *tp*; returns the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {_type_name(tp)}; got {value!r} "
                          f"({type(value).__name__}).")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be empty; got {value!r}.")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table; got {value!r}.")
        return _build(tp, value, where)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table; got {value!r}.")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be an array; got {value!r}.")
        (inner,) = typing.get_args(tp) or (Any,)
        return [v if inner is Any else _coerce(inner, v, _item(where, i))
                for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"{where} must be {_type_name(tp)}; got {value!r} "
                      f"({type(value).__name__}).")


def _build(cls: Any, d: dict, where: str) -> Any:
    """*where* is ``"<source>: key 'a.b'"`` (or just the source at the top level)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    source, _, prefix = where.partition(": key ")
    prefix = prefix.strip("'")
    kw = {}
    for key, value in d.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            section = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(f"{source}: unknown key '{dotted}'.{hint} Allowed in "
                              f"{section}: {', '.join(names)}.")
        kw[key] = _coerce(hints[key], value, f"{source}: key '{dotted}'")
    return cls(**kw)


def _check_values(cfg: Config, source: str) -> None:
    def bad(key: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}' = {value!r} is not allowed; {allowed}.")

    m, c, o, r = cfg.microscope, cfg.control, cfg.outputs, cfg.run
    if m.backend not in tuple(Backend):
        raise bad("microscope.backend", m.backend, f"use one of {', '.join(Backend)}")
    if m.limits is not None:
        from inscope.acquisition.safety import SoftLimits

        for axis in ("x", "y", "z"):
            v = m.limits.get(axis)
            if v is not None and not (
                    isinstance(v, (list, tuple)) and len(v) == 2 and all(
                        isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)):
                # (SoftLimits would read a string's letters as the range)
                raise ConfigError(f"{source}: [microscope.limits] is wrong: {axis} = {v!r} is "
                                  f"not [low, high] in µm; give e.g. {axis} = [-5000, 5000].")
        try:
            SoftLimits.from_dict(m.limits)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: [microscope.limits] is wrong: {e}") from None
    if c.mode not in tuple(Mode):
        raise bad("control.mode", c.mode, f"use one of {', '.join(Mode)}")
    if c.target == "class" and not c.target_class:
        raise ConfigError(f"{source}: control.target = 'class' needs control.target_class "
                          "(the class name to follow), or give target = 'class:<name>'.")
    try:
        target = parse_target(c.target, c.target_class)
    except ValueError as e:
        raise bad("control.target", c.target, str(e)) from None
    if isinstance(target, int):
        c.target = target
    def num(key: str, v: Any, lo: float, hi: float, *, lo_open: bool = False,
            why: str = "") -> None:
        """A finite number in [lo, hi] (or (lo, hi]); one line naming key, value, range."""
        if v is None:
            return
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise bad(key, v, f"use a finite number in {rng}{why}")

    num("control.deadband_um", c.deadband_um, 0, 1000)
    num("control.max_step_um", c.max_step_um, 0, 10_000, lo_open=True)
    num("control.gain", c.gain, 0, 1.5, lo_open=True,
        why=" (1.0 with a calibrated affine, 0.5-0.8 when unsure)")
    num("control.settle_s", c.settle_s, 0, 60, why=" (frames this long after a move are "
        "ignored)")
    num("control.focus_step_um", c.focus_step_um, 0, 100, lo_open=True)
    num("control.immersion_index", c.immersion_index, 1.0, 2.0,
        why=" (the medium's refractive index: air 1.0, water 1.33, oil 1.515)")
    num("control.objective_na", c.objective_na, 0, c.immersion_index, lo_open=True,
        why=" (below control.immersion_index)")
    if c.objective_na is not None and c.objective_na >= c.immersion_index:
        raise bad("control.objective_na", c.objective_na,
                  f"it must be below control.immersion_index ({c.immersion_index})")
    num("control.wavelength_um", c.wavelength_um, 0.2, 2.0)
    num("control.focus_dof_um", c.focus_dof_um, 0, 1000, lo_open=True)
    num("control.focus_dither_um", c.focus_dither_um, 0, 100, lo_open=True)
    num("control.focus_check_s", c.focus_check_s, 0, 86_400, lo_open=True)
    # checked here, not when the first frame is written (the run went on without it);
    # a folder is check_paths' to name
    if o.video and not Path(o.video).is_dir():
        from inscope.overlay import VideoSink  # the codecs it writes

        v = Path(o.video)
        if v.suffix.lower() not in VideoSink.CODECS:
            where = _source_of(cfg, "outputs.video", source)  # the TOML file that set it
            raise ConfigError(f"{where}: outputs.video (--video) = {o.video!r} must end in "
                              f"{' or '.join(VideoSink.CODECS)}; give e.g. "
                              f"{v.parent / (v.stem or 'overlay')}.mp4.")
    num("outputs.video_fps", o.video_fps, 0.1, 240)
    num("outputs.display_fps", o.display_fps, 0.1, 240)
    num("outputs.snapshot_max_per_s", o.snapshot_max_per_s, 0, 100, lo_open=True)
    num("detector.score_threshold", cfg.detector.score_threshold, 0, 1)
    num("detector.threads", cfg.detector.threads, 1, 256)
    # (the model's own upper bound, its largest trained size, is checked when it loads)
    num("detector.enlarge_below_px", cfg.detector.enlarge_below_px, 1, 1e4, lo_open=True)
    from inscope.detector.mirror import ALLOWED_VIEWS, check_views

    try:
        check_views(cfg.detector.mirror_views)
    except ValueError:
        raise bad("detector.mirror_views", cfg.detector.mirror_views,
                  f"use one of {', '.join(map(str, ALLOWED_VIEWS))}") from None
    if isinstance(cfg.detector.spinning, str):
        from inscope.detector.providers import SPINNING_HELP, spinning_mode

        try:
            cfg.detector.spinning = spinning_mode(cfg.detector.spinning)
        except ValueError:
            raise bad("detector.spinning", cfg.detector.spinning, SPINNING_HELP) from None
    num("outputs.zmq.sndhwm", o.zmq.sndhwm, 1, 1_000_000)
    from inscope.acquisition.factory import PATH_OPTIONS

    for k, v in m.options.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(f"microscope.options.{k}", v, "use a finite number")
        if k in PATH_OPTIONS and (isinstance(v, (bool, list, tuple, dict)) or v is None):
            raise bad(f"microscope.options.{k}", v,
                      "give one file or folder path as a string (in quotes)")
    for key, port in (("outputs.zmq.pub_port", o.zmq.pub_port),
                      ("outputs.zmq.rep_port", o.zmq.rep_port)):
        if not 0 <= port <= 65535:
            raise bad(key, port, "use 0..65535 (0 = any free port)")
    if o.zmq.enabled and o.zmq.pub_port == o.zmq.rep_port and o.zmq.pub_port != 0:
        raise ConfigError(f"{source}: outputs.zmq.pub_port and rep_port are both "
                          f"{o.zmq.pub_port}; give them different ports.")
    _check_bind(o.zmq, source)
    if o.records.format not in tuple(RecordFormat):
        raise bad("outputs.records.format", o.records.format,
                  f"use one of {', '.join(RecordFormat)}")
    ds = o.eyepiece.display_size
    if len(ds) != 2 or min(ds) < 16 or max(ds) > 16384:
        raise bad("outputs.eyepiece.display_size", ds,
                  "give [width, height] in pixels, each in [16, 16384]")
    if o.eyepiece.display_lag_ms is not None:
        num("outputs.eyepiece.display_lag_ms", o.eyepiece.display_lag_ms, 0, 1000,
            why=" (the display's lag in ms; measure it: docs/service.md)")
    num("run.frames", r.frames, 1, 10**12, why=" (omit it to run until stopped)")
    num("run.seconds", r.seconds, 0, 10**7, lo_open=True,
        why=" (omit it to run until stopped)")


def _check_bind(z: ZmqConfig, source: str) -> None:
    """Anything but loopback needs CURVE keys; keys come as a pair."""
    from inscope.curve import is_loopback, setup_hint

    keys = (z.curve_server_key, z.curve_allowed_clients)
    if any(k is not None for k in keys) and not all(k is not None for k in keys):
        raise ConfigError(f"{source}: CURVE needs both outputs.zmq.curve_server_key and "
                          "outputs.zmq.curve_allowed_clients (or --curve-keys DIR).")
    if z.enabled and keys[0] is None and not is_loopback(z.bind):
        raise ConfigError(f"{source}: key 'outputs.zmq.bind' = {z.bind!r}: {setup_hint(z.bind)}")


def check_paths(cfg: Config, source: str = "config", *,
                replace_simulated: bool = False) -> None:
    """Before a run starts: every output path can be what it must be (a folder or a
    file), so nothing fails after the run (losing its summary), and none holds an
    earlier run's output: a second run into the same folder would otherwise replace its
    records, video and summary (or leave records of two runs side by side). One
    :class:`ConfigError` line naming the setting and the fix.

    *replace_simulated* (the demo's): a folder whose records came from the simulated
    microscope may be written over, since the same seed makes them again.
    """
    from inscope.records import earlier_records, simulated_records

    o, r = cfg.outputs, cfg.run

    def replaceable(d: Path) -> bool:
        return replace_simulated and simulated_records(d)

    def blocker(p: Path) -> Path | None:
        """The first ancestor of *p* that exists but is not a folder."""
        for a in reversed(p.parents):
            if a.exists() and not a.is_dir():
                return a
        return None

    def folder(key: str, value: str | None, *, records: bool = False) -> None:
        if value is None:
            return
        p = Path(value)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{source}: {key} = {value!r} is a file, not a folder; give a "
                              "folder (it is created if missing).")
        b = blocker(p)
        if b is not None:
            raise ConfigError(f"{source}: {key} = {value!r} cannot be a folder: {b} is a "
                              "file; give another folder.")
        earlier = earlier_records(p) if records else []
        if earlier and not replaceable(p):
            raise ConfigError(f"{source}: {key} = {value!r} already holds an earlier run's "
                              f"records ({', '.join(earlier)}); give a new folder (nothing "
                              "is overwritten).")

    def file(key: str, value: str | None, example: str) -> None:
        if value is None:
            return
        p = Path(value)
        if p.is_dir():
            raise ConfigError(f"{source}: {key} = {value!r} is a folder; give a file path, "
                              f"e.g. {p / example}.")
        b = blocker(p)
        if b is not None:
            raise ConfigError(f"{source}: {key} = {value!r} cannot be written: {b} is a "
                              "file, not a folder; give another path.")
        # a pipe, device or link (--summary /dev/stdout) is written through, not replaced
        if p.is_file() and not p.is_symlink() and not replaceable(p.parent):
            raise ConfigError(f"{source}: {key} = {value!r} already exists; give a new "
                              "file name (nothing is overwritten).")

    # each named with the file it came from when a TOML file set it (load_config); the
    # helpers above read *source* when they raise
    given = source
    source = _source_of(cfg, "outputs.records.dir", given)
    folder("outputs.records.dir (--record)", o.records.dir, records=True)
    source = _source_of(cfg, "outputs.snapshot_dir", given)
    folder("outputs.snapshot_dir", o.snapshot_dir)
    source = _source_of(cfg, "outputs.video", given)
    file("outputs.video (--video)", o.video, "overlay.mp4")
    source = _source_of(cfg, "run.summary", given)
    file("run.summary (--summary)", r.summary, "summary.json")


def config_from_dict(d: dict, source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a nested mapping (e.g. parsed TOML)."""
    cfg = _build(Config, d, source)
    _check_values(cfg, source)
    return cfg


#: The settings that name a file or folder (besides ``[microscope.options]``'s
#: :data:`inscope.acquisition.factory.PATH_OPTIONS`): a relative one in a TOML file is
#: relative to the file's folder (:func:`resolve_paths`).
PATH_KEYS = ("microscope.calibration", "detector.model", "outputs.video",
             "outputs.snapshot_dir", "outputs.records.dir", "outputs.zmq.curve_server_key",
             "outputs.zmq.curve_allowed_clients", "outputs.eyepiece.calibration",
             "run.summary")


def resolve_paths(d: dict, base: Path) -> dict:
    """*d* (a parsed TOML file) with every relative file or folder setting
    (:data:`PATH_KEYS`, ``[microscope.options]`` path options) made relative to *base*,
    the file's folder; absolute ones, ``detector.model = "classical"`` / ``triton://``
    and values of the wrong type (left for validation to name) are kept as written.

    Why: a config names files that sit beside it (the calibration, the slide, the
    model); read against the working folder, the same file would open other files, or
    none, depending on where ``inscope run`` was started. Flags stay relative to the
    working folder, as typed.
    """
    import datetime

    from inscope.acquisition.factory import PATH_OPTIONS

    def fix(v: Any) -> Any:
        if isinstance(v, int | float | datetime.date | datetime.time) and \
                not isinstance(v, bool):
            v = str(v)  # a folder named 2024-01-05 (the factory reads it as text too)
        if not isinstance(v, str) or not v or Path(v).expanduser().is_absolute():
            return v
        return str(base / v)

    def table(*keys: str) -> dict | None:
        t: Any = d
        for k in keys:
            t = t.get(k) if isinstance(t, dict) else None
        return t if isinstance(t, dict) else None

    for dotted in PATH_KEYS:
        *sect, key = dotted.split(".")
        t = table(*sect)
        if t is None or key not in t:
            continue
        v = t[key]
        if dotted == "detector.model" and isinstance(v, str) and (
                v.lower() == "classical" or "://" in v):
            continue
        t[key] = fix(v)
    opts = table("microscope", "options")
    for key in PATH_OPTIONS & set(opts or {}):
        assert opts is not None
        opts[key] = fix(opts[key])
    return d


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML config file; relative file and folder settings are
    relative to the file's folder (:func:`resolve_paths`), and output paths are checked
    (:func:`check_paths` then names the file for the ones it set).

    A UTF-8 byte-order mark at the start (Windows editors write one) is skipped.

    Raises
    ------
    ConfigError
        Naming the file and the key that is wrong, and what would be right.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        d = tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check the path given to "
                          "--config.") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a folder; give the TOML file (e.g. "
                          f"{path / 'scope.toml'}).") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read (permission denied).") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8 "
                          "TOML.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}.") from None
    cfg = config_from_dict(resolve_paths(d, path.parent), str(path))
    # which output paths the file set, so check_paths names the file, not the flags
    _set_sources(cfg, {k: str(path) for k in PATH_KEYS if _has(d, k)})
    return cfg


def _has(d: dict, dotted: str) -> bool:
    """Whether the nested mapping *d* has the key ``a.b.c``."""
    *sect, key = dotted.split(".")
    for k in sect:
        d = d.get(k) if isinstance(d, dict) else None  # type: ignore[assignment]
    return isinstance(d, dict) and key in d


def _set_sources(cfg: Config, sources: dict[str, str]) -> None:
    """Remember where settings came from (dotted key -> file), for :func:`check_paths`
    (an attribute, not a field: it is no setting)."""
    cfg.__dict__["_sources"] = sources


def _source_of(cfg: Config, dotted: str, default: str) -> str:
    """The file a setting came from (:func:`load_config`), else *default*."""
    return cfg.__dict__.get("_sources", {}).get(dotted, default)


def validate(cfg: Config, source: str = "config") -> Config:
    """Re-check a Config after programmatic changes (e.g. CLI overrides)."""
    _check_values(cfg, source)
    return cfg


def with_overrides(cfg: Config, section: str, **kw: Any) -> Config:
    """A copy of *cfg* with ``section`` (dotted, e.g. ``"outputs.zmq"``) fields replaced;
    ``None`` values are ignored so unset CLI flags keep the file's value."""
    kw = {k: v for k, v in kw.items() if v is not None}
    if not kw:
        return cfg
    parts = section.split(".")

    def rec(obj: Any, parts: list[str]) -> Any:
        if not parts:
            names = {f.name for f in fields(obj)}
            for k in kw:
                if k not in names:
                    raise ConfigError(f"no setting {section}.{k}")
            return replace(obj, **kw)
        return replace(obj, **{parts[0]: rec(getattr(obj, parts[0]), parts[1:])})

    new = rec(cfg, parts)
    # (settings a flag replaced no longer come from the file)
    _set_sources(new, {k: v for k, v in cfg.__dict__.get("_sources", {}).items()
                       if k not in {f"{section}.{n}" for n in kw}})
    return new


if __name__ == "__main__":  # pragma: no cover - quick check: python -m inscope.config F
    print(load_config(sys.argv[1]))
