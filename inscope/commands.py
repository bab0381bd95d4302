"""``inscope demo``, ``inscope run`` and ``inscope bench``.

Registration imports nothing heavy (``inscope --help`` stays instant); each command
imports what it needs when it runs. Every flag of ``run`` has the same name as a config
key (see :mod:`inscope.config`); flags override the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inscope.cli import (
    add_exposure_argument,
    add_micromanager_arguments,
    deprecated_alias,
    setup_logging,
)
from inscope.enums import Backend, Mode, RecordFormat, Spinning

#: The demo's length when neither --frames nor --seconds is given.
DEMO_FRAMES = 300


def register(subparsers) -> None:
    _register_demo(subparsers)
    _register_run(subparsers)
    _register_bench(subparsers)


# -- shared flags ----------------------------------------------------------------------
def _add_service_flags(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--model", default=None,
                   help="ONNX model path, 'classical', or a shared Triton server's "
                   "triton://HOST:PORT/NAME (default: the shipped model)")
    g.add_argument("--provider", default=None,
                   help="ONNX Runtime provider: auto (default), cpu, cuda, tensorrt")
    g.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    a = g.add_argument("--score-threshold", type=float, default=None,
                       help="score threshold in [0, 1] (default: the model card's)")
    deprecated_alias(g, "--score", a)
    g.add_argument("--mirror-views", type=int, default=None, choices=(1, 2, 4),
                   help="average the network over the frame and its mirror images: 1 "
                        "(default), 2, 4; steadier, tighter boxes for 2x / 4x its time")
    g.add_argument("--enlarge-below-px", type=float, default=None, metavar="PX",
                   help="enlarge frames whose nuclei measure under PX pixels up to PX "
                        "(default: the model card's; the shipped model's is 14 px): "
                        "accuracy for time, e.g. 36")
    g = p.add_argument_group("control")
    g.add_argument("--mode", default=None, choices=list(Mode),
                   help="control mode" + (" (demo default: steer+focus)" if demo else
                                          " (default: off)"))
    g.add_argument("--target", default=None,
                   help="target: nearest, largest, score, class:<name> (e.g. class:mitotic), "
                        "or a track id")
    g.add_argument("--dry-run", action="store_true", default=None,
                   help="compute and publish moves without making them")
    g.add_argument("--calibration", default=None, metavar="FILE",
                   help="pixel-to-stage calibration JSON from `inscope calibrate` (TOML: "
                        "[microscope] calibration)")
    g = p.add_argument_group("outputs")
    g.add_argument("--window", action=argparse.BooleanOptionalAction, default=None,
                   help="show the overlay window (default: if a display is available)")
    g.add_argument("--zmq", action=argparse.BooleanOptionalAction, default=None,
                   help="ZMQ PUB (detections) + REP (commands) (default: on)")
    g.add_argument("--bind", default=None,
                   help="ZMQ bind address (default 127.0.0.1; any other needs --curve-keys)")
    g.add_argument("--curve-keys", default=None, metavar="DIR",
                   help="CURVE authentication with the keys made by 'inscope keys init DIR' "
                        "(DIR/server.key_secret, DIR/allowed_clients)")
    g.add_argument("--pub-port", type=int, default=None, help="ZMQ PUB port (default 5556)")
    g.add_argument("--rep-port", type=int, default=None, help="ZMQ REP port (default 5557)")
    g.add_argument("--zmq-overlay", action="store_true", default=None,
                   help="also publish rendered overlay frames (topic 'overlay')")
    g.add_argument("--eyepiece", action="store_true", default=None,
                   help="eyepiece mode: the window shows boxes only on black")
    g.add_argument("--eyepiece-calibration", default=None,
                   help="JSON from the eyepiece calibration (display <-> camera affine)")
    g.add_argument("--eyepiece-predict", action=argparse.BooleanOptionalAction, default=None,
                   help="draw tracked eyepiece boxes where their cells are when the display "
                        "shows them (default: on; needs --mode track or higher)")
    g.add_argument("--display-lag-ms", type=float, default=None,
                   help="eyepiece display lag, drawing -> light, for the prediction "
                        "(default: as measured by the live calibration, else 25)")
    g = p.add_argument_group("run")
    g.add_argument("--frames", type=int, default=None, help="stop after N processed frames")
    g.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    g.add_argument("--summary", default=None, help="write the run summary JSON here")
    g.add_argument("--no-progress", action="store_true", help="no live progress line")
    g.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _register_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="live demo on the simulated microscope (steering + focus, overlay video)",
        description="Run the whole loop on the simulated microscope in real time. It "
                    "starts off target and 6 µm out of focus with the focus drifting: the "
                    "focus lock finds focus, then the tour centres a clearly visible cell, "
                    "holds it, moves to the next, and follows a moving cell, while the "
                    "lock holds focus. The default model (or the classical detector if it "
                    "is missing), overlay video in OUT/overlay.mp4 with a status line (and "
                    "a window if a display is available), ZMQ on 127.0.0.1, records, a "
                    "live progress line and OUT/summary.json with the same story against "
                    "the simulator's ground truth. Ctrl-C stops cleanly.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=None, help="simulated specimen seed")
    _add_service_flags(p, demo=True)
    p.set_defaults(func=cmd_demo)
    for a in p._actions:
        if a.dest == "frames":
            a.help = (f"stop after N processed frames (default {DEMO_FRAMES} unless "
                      "--seconds is given)")


def _register_run(sub) -> None:
    from inscope.acquisition.factory import add_option_argument

    p = sub.add_parser(
        "run", help="run the live service (any microscope, model, control mode, outputs)",
        description="Run the live service. Settings come from --config FILE.toml and are "
                    "overridden by flags of the same name.")
    p.add_argument("--config", default=None, help="TOML config file (see docs/service.md)")
    p.add_argument("--backend", default=None, choices=list(Backend),
                   help="microscope backend (default sim)")
    p.add_argument("--file", default=None,
                   help="replay: the TIFF / OME-TIFF / video file or folder of frames")
    add_micromanager_arguments(p, old_config_flag=False)  # run's --config is the TOML
    add_exposure_argument(p, old_flag=False)
    add_option_argument(p, "-o exposure_ms=10 -o seed=3")
    p.add_argument("--video", default=None, help="write the overlay video (.mp4 or .avi)")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="record detections (and with --record-frames the raw frames) to DIR")
    p.add_argument("--record-format", default=None, choices=list(RecordFormat),
                   help="format of the recorded detections (default: jsonl)")
    p.add_argument("--record-frames", action="store_true", default=None,
                   help="also record raw frames as a replayable OME-TIFF")
    _add_service_flags(p)
    p.set_defaults(func=cmd_run)


def _register_bench(sub) -> None:
    from inscope.acquisition.factory import add_option_argument

    p = sub.add_parser(
        "bench", help="latency benchmark of the whole loop (per stage, p50/p90/p99/max)",
        description="Run the whole loop on the simulated microscope and on Micro-Manager's "
                    "DemoCamera (pycromanager headless), for each model and each available "
                    "provider, and report per-stage latency percentiles, pipeline overhead, "
                    "throughput, drops and CPU time per thread and process side by side; "
                    "JSON plus PNG plots.")
    p.add_argument("--frames", type=int, default=200, help="frames per configuration")
    p.add_argument("--model", action="append", default=None,
                   help="model (repeatable): a .onnx path, 'default' or 'classical' "
                        "(default: default + classical)")
    p.add_argument("--backend", action="append", default=None,
                   choices=[Backend.SIM, Backend.HEADLESS, Backend.SLIDE, "demo"],
                   help="microscope(s) (default: sim and headless); slide needs -o "
                        "path=FILE; 'demo' is the demo's configuration (drifting simulator, "
                        "steer+focus with the tour, every output)")
    add_option_argument(p, "-o path=cells.npz -o pixel_size_um=0.65 -o fov=512 (slide)")
    p.add_argument("--provider", action="append", default=None,
                   help="ONNX Runtime provider(s) (default: every available one)")
    p.add_argument("--mode", default=Mode.STEER, choices=list(Mode),
                   help="control mode during the benchmark (default steer)")
    add_exposure_argument(p, default=10.0, what=" (the frame period)")
    add_micromanager_arguments(p, old_config_flag=False)  # never had --config
    p.add_argument("--spinning", action="append", choices=list(Spinning), default=None,
                   help="ONNX Runtime's idle threads sleep (off), spin while a frame runs "
                        "(run) or also between frames (on) (repeatable: side by side; "
                        "default: the service's [detector] spinning)")
    p.add_argument("--mirror-views", type=int, default=1, choices=(1, 2, 4),
                   help="ONNX models averaged over each frame and its mirror images (1, 2, "
                        "4); the classical baseline runs as it is")
    p.add_argument("--enlarge-below-px", type=float, default=None, metavar="PX",
                   help="ONNX models enlarge frames of nuclei measuring under PX pixels up "
                        "to PX (default: the model card's; the shipped model's is 14 px); "
                        "classical as it is")
    p.add_argument("--out", default="runs/bench/bench.json",
                   help="JSON report path, or a folder to write bench.json into "
                        "(plots go beside it)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="pixel-to-stage calibration JSON from `inscope calibrate`, applied "
                        "to each microscope")
    p.set_defaults(func=cmd_bench)


# -- building the config ---------------------------------------------------------------
def _parse_value(v: str):
    import tomllib

    try:
        return tomllib.loads(f"v = {v}")["v"]
    except tomllib.TOMLDecodeError:
        return v


def config_from_args(args: argparse.Namespace, base=None, *, replace_simulated: bool = False):
    """Apply CLI flags on top of *base* (a Config, from --config or defaults).

    *replace_simulated*: outputs may replace an earlier simulated run's in their folder
    (the demo's; see :func:`inscope.config.check_paths`)."""
    from inscope.config import Config, ConfigError, check_paths, validate, with_overrides

    cfg = base or Config()
    g = lambda name: getattr(args, name, None)  # noqa: E731
    opts = dict(cfg.microscope.options)
    for kv in g("option") or []:
        if "=" not in kv:
            raise ConfigError(f"--option {kv!r} must be KEY=VALUE, e.g. -o exposure_ms=10.")
        k, v = kv.split("=", 1)
        opts[k.strip()] = _parse_value(v.strip())
    if g("file"):
        opts["path"] = g("file")
    if g("mm_config"):
        opts["mm_config"] = g("mm_config")
    if g("mm_dir"):
        opts["mm_dir"] = g("mm_dir")
    if g("exposure_ms") is not None:
        opts["exposure_ms"] = g("exposure_ms")
    cfg = with_overrides(cfg, "microscope", backend=g("backend"), options=opts,
                         dry_run=g("dry_run"), calibration=g("calibration"))
    cfg = with_overrides(cfg, "detector", model=g("model"), provider=g("provider"),
                         threads=g("threads"), score_threshold=g("score_threshold"),
                         mirror_views=g("mirror_views"),
                         enlarge_below_px=g("enlarge_below_px"))
    # any target form: validated (and a track id made an int) by the config's check,
    # inscope.enums.parse_target, the parser set_target and the TOML use too
    cfg = with_overrides(cfg, "control", mode=g("mode"), target=g("target"))
    cfg = with_overrides(cfg, "outputs", video=g("video"), window=g("window"))
    cfg = with_overrides(cfg, "outputs.zmq", enabled=g("zmq"), bind=g("bind"),
                         pub_port=g("pub_port"), rep_port=g("rep_port"),
                         overlay=g("zmq_overlay"))
    if g("curve_keys"):
        from inscope.curve import ALLOWED, SERVER_SECRET

        keys = Path(args.curve_keys)
        cfg = with_overrides(cfg, "outputs.zmq", curve_server_key=str(keys / SERVER_SECRET),
                             curve_allowed_clients=str(keys / ALLOWED))
    cfg = with_overrides(cfg, "outputs.records", dir=g("record"), format=g("record_format"),
                         frames=g("record_frames"))
    cfg = with_overrides(cfg, "outputs.eyepiece", enabled=g("eyepiece"),
                         calibration=g("eyepiece_calibration"), predict=g("eyepiece_predict"),
                         display_lag_ms=g("display_lag_ms"))
    cfg = with_overrides(cfg, "run", frames=g("frames"), seconds=g("seconds"),
                         summary=g("summary"))
    if g("no_progress"):
        cfg = with_overrides(cfg, "run", progress=False)
    cfg = validate(cfg, "command line")
    check_paths(cfg, "command line", replace_simulated=replace_simulated)
    return cfg


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _serve(cfg, *, port_fallback: bool, header: str | None = None, director=None) -> int:
    from inscope.acquisition.errors import AcquisitionError
    from inscope.service import build_service, failed_outputs, format_summary, run_service

    try:
        svc = build_service(cfg, port_fallback=port_fallback, director=director)
    except ImportError as e:
        print(f"error: a part inscope needs is not installed or not built: {e}. "
              "Reinstall with 'pip install -e .' (see README).", file=sys.stderr)
        return 1
    except (AcquisitionError, OSError, ValueError, TypeError, RuntimeError) as e:
        # RuntimeError: e.g. --provider cuda on a machine without CUDA
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    if header:
        print(header)
    print(f"microscope {getattr(svc.scope, 'name', '?')}, detector "
          f"{getattr(svc.detector, 'name', '?')} on {getattr(svc.detector, 'provider', '?')}, "
          f"control {cfg.control.mode}" + (" (dry-run)" if cfg.microscope.dry_run else ""))
    note = getattr(svc.detector, "provider_note", "")
    if note:
        print(note)
    summary = run_service(svc, progress=cfg.run.progress, summary_path=cfg.run.summary)
    print(format_summary(summary))
    if cfg.run.summary and "summary_write_error" not in summary:
        print(f"summary: {cfg.run.summary}")
    failed = failed_outputs(summary)
    if failed:
        print("error: output(s) stopped during the run: " + "; ".join(
            f"{k}: {v}" for k, v in failed.items()), file=sys.stderr)
    bad = summary.get("error") or failed or "summary_write_error" in summary
    return 1 if bad else 0


def cmd_run(args: argparse.Namespace) -> int:
    from inscope.config import ConfigError, load_config

    setup_logging(args)
    try:
        base = load_config(args.config) if args.config else None
        cfg = config_from_args(args, base)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _serve(cfg, port_fallback=False)


#: The demo's simulated microscope: the stage starts off target and 6 µm out of focus, the
#: focal plane drifts (3 µm/min) and is tilted (0.3 / -0.2 µm per 100 µm), and one cell in
#: twelve crawls at 8 µm/s, so focusing, holding focus, touring and following all show.
DEMO_SIM = {"start_z_um": 6.0, "drift_um_per_s": 0.05, "tilt": [0.003, -0.002],
            "cell_motion_um_per_s": 8.0, "moving_fraction": 0.08, "seed": 3}


def demo_config(out, seed: int | None = None, base=None):
    """The demo's :class:`~inscope.config.Config` (also ``inscope bench --backend demo``):
    the simulator of :data:`DEMO_SIM`, steer+focus, every output into *out*."""
    from pathlib import Path

    from inscope.config import Config, with_overrides

    out = Path(out)
    base = base or Config()
    opts = dict(DEMO_SIM)
    if seed is not None:
        opts["seed"] = seed
    base = with_overrides(base, "microscope", backend="sim", options=opts)
    # one move reaches the next cell of the tour (a calibrated simulator: gain 1)
    base = with_overrides(base, "control", mode=Mode.STEER_FOCUS, max_step_um=250.0, gain=1.0)
    base = with_overrides(base, "outputs", video=str(out / "overlay.mp4"),
                          snapshot_dir=str(out / "snapshots"))
    base = with_overrides(base, "outputs.records", dir=str(out))
    return with_overrides(base, "run", summary=str(out / "summary.json"))


def cmd_demo(args: argparse.Namespace) -> int:
    from inscope.config import ConfigError
    from inscope.records import earlier_records, simulated_records
    from inscope.tour import Tour

    setup_logging(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {args.out} is a file; give a folder for the demo's outputs "
              "(it is created if missing).", file=sys.stderr)
        return 2
    # `make demo` runs again into runs/demo: it replaces an earlier demo's outputs (the
    # simulator makes them again), never the records of a run on a real microscope
    earlier = earlier_records(out)
    if earlier and not simulated_records(out):
        print(f"error: --out {args.out} holds an earlier run's records ({', '.join(earlier)}) "
              "not made on the simulated microscope; give the demo a new folder with --out "
              "(it replaces only an earlier demo's outputs).", file=sys.stderr)
        return 2
    if args.frames is None and args.seconds is None:
        args.frames = DEMO_FRAMES  # an explicit --seconds alone sets the length
    try:
        cfg = config_from_args(args, demo_config(out, args.seed), replace_simulated=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tour = Tour() if Mode(cfg.control.mode).steers else None
    return _serve(cfg, port_fallback=True, director=tour,
                  header=f"inscope demo: simulated microscope (starts off target and out of "
                         f"focus, drift on), {_length(cfg)}, outputs in {out}/ "
                         "(Ctrl-C stops cleanly)")


def _length(cfg) -> str:
    r = cfg.run
    parts = ([f"{r.frames} frames"] if r.frames else []) + \
        ([f"{r.seconds:g} s"] if r.seconds else [])
    return " or ".join(parts) or "until stopped"


def cmd_bench(args: argparse.Namespace) -> int:
    from inscope.bench import main as bench_main

    setup_logging(args)  # one-line notices, e.g. frames resized for the detector
    return bench_main(args)
