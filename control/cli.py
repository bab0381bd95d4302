"""``inscope calibrate`` and ``inscope scan``.

Registration imports nothing heavy (no OpenCV, no ONNX Runtime, no pycromanager), so
``inscope --help`` stays instant; the work is imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from inscope.enums import Backend

#: Backends with a stage to calibrate and scan (a replayed file has none).
BACKENDS = [b for b in Backend if b is not Backend.REPLAY]


def add_backend_args(p: argparse.ArgumentParser) -> None:
    from inscope.acquisition.factory import add_option_argument
    from inscope.cli import add_exposure_argument, add_micromanager_arguments

    p.add_argument("--backend", default=Backend.SIM, choices=BACKENDS,
                   help="sim (default: simulated microscope), headless (Micro-Manager core "
                        "in-process, demo config by default), mm (running Micro-Manager GUI), "
                        "slide (virtual microscope over a real image: -o path=FILE ...)")
    add_option_argument(p, "-o path=cells.npz -o pixel_size_um=0.65 -o z_step_um=0.3 "
                           "-o fov=256 -o noise=0.02")
    add_micromanager_arguments(p)
    p.add_argument("--port", type=int, default=4827, help="pycro-manager server port (mm)")
    add_exposure_argument(p)
    p.add_argument("--seed", type=int, default=None, help="simulator seed (sim)")
    p.add_argument("--calibration", default=None,
                   help="calibration JSON from `inscope calibrate` to apply first")


def add_limits_arguments(p: argparse.ArgumentParser) -> None:
    """``--limits``: a real stage refuses every move without soft limits, and calibrate
    and scan move it (``inscope run`` takes them from its TOML's [microscope.limits];
    here ``--config`` is still the deprecated spelling of ``--mm-config``)."""
    p.add_argument("--limits", type=float, nargs=6, default=None,
                   metavar=("X0", "X1", "Y0", "Y1", "Z0", "Z1"),
                   help="soft limits of the stage, µm: every move stays inside them "
                        "(required on a real stage; simulated and demo stages have their own)")


def register(subparsers) -> None:
    from inscope.cli import deprecated_alias

    p = subparsers.add_parser(
        "calibrate", help="measure the pixel-to-stage map (pixel size, rotation, flip)",
        description="Move the stage by a few known steps, measure the image shifts by "
                    "phase correlation and fit the 2x2 pixel-to-stage affine. Warns when it "
                    "disagrees with the microscope's configured pixel size / affine.")
    add_backend_args(p)
    add_limits_arguments(p)
    p.add_argument("--out", default="calibration.json", help="where to write the JSON")
    p.add_argument("--write-mm", action="store_true",
                   help="also write the measured pixel size and affine into Micro-Manager's "
                        "current pixel-size configuration (in memory: save the config in "
                        "Micro-Manager to keep it)")
    a = p.add_argument("--steps-um", type=float, nargs="+", default=None,
                       help="step sizes in µm (default: 10%% and 20%% of the field)")
    deprecated_alias(p, "--steps", a)
    p.add_argument("--repeats", type=int, default=1, help="repeats of every move")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="relative disagreement with the configured affine that warns")
    p.add_argument("--dry-run", action="store_true",
                   help="refused: calibration must move the stage (accepted for symmetry)")
    p.set_defaults(func=run_calibrate)

    s = subparsers.add_parser(
        "scan", help="find every cell in a region and image each in 3D (OME-TIFF)",
        description="Tile the region with overlapping fields, detect cells, de-duplicate "
                    "them in stage µm, then centre, autofocus and z-stack each one. Writes "
                    "one OME-TIFF per cell, cells.csv and summary.json as it goes.")
    add_backend_args(s)
    add_limits_arguments(s)
    s.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   required=True, help="region to scan, stage µm")
    s.add_argument("--model", default=None,
                   help="ONNX model path, 'classical' for the OpenCV baseline, or omit for "
                        "the shipped model (classical if none is shipped)")
    s.add_argument("--mirror-views", type=int, default=1, choices=(1, 2, 4),
                   help="average the detector over each field and its mirror images (1, "
                        "2, 4): steadier, tighter boxes for 2x / 4x the network's time")
    s.add_argument("--enlarge-below-px", type=float, default=None, metavar="PX",
                   help="enlarge fields whose nuclei measure under PX pixels up to PX "
                        "(default: the model card's; the shipped model's is 14 px): "
                        "accuracy for time, e.g. 36")
    s.add_argument("--out", default="runs/scan", help="output folder")
    s.add_argument("--overlap", type=float, default=0.25, help="field overlap (fraction)")
    s.add_argument("--z-range", type=float, nargs=2, default=(-2.0, 2.0),
                   metavar=("BELOW", "ABOVE"), help="z-stack range around focus (µm)")
    s.add_argument("--z-step", type=float, default=1.0, help="z-stack step (µm)")
    s.add_argument("--adaptive", action="store_true",
                   help="extend the z-stack while the cell's own signal (its sharpness "
                        "above the camera noise) lasts, and record its z extent")
    s.add_argument("--z-signal-frac", type=float, default=None, metavar="F",
                   help="with --adaptive: a cell's z extent ends where its signal falls "
                        "below F x its peak (default: 0.15 for optically sectioned "
                        "planes - confocal, light sheet, a slide of a z-stack - else 0.6 "
                        "for widefield)")
    s.add_argument("--z-signal", choices=("sharpness", "intensity", "auto"), default=None,
                   help="with --adaptive: the per-plane signal a cell's z extent is read "
                        "from: sharpness (ignores out-of-focus light), intensity (optical "
                        "sections with little out-of-focus light; ends at 0.2 of the "
                        "peak) or auto (intensity where the planes beyond the cell are "
                        "dark, else sharpness). Default: auto for optically sectioned "
                        "planes, sharpness for widefield")
    s.add_argument("--no-autofocus", action="store_true", help="skip autofocus")
    a = s.add_argument("--score-threshold", type=float, default=0.0,
                       help="ignore weaker detections (score in [0, 1])")
    deprecated_alias(s, "--min-score", a)
    s.add_argument("--max-cells", type=int, default=None, help="stop after N cells")
    s.add_argument("--dry-run", action="store_true",
                   help="plan only: one image here, the field plan, nothing moves")
    s.set_defaults(func=run_scan)


def open_from_args(args: argparse.Namespace, dry_run: bool = False):
    from inscope.acquisition.factory import open_microscope

    if args.backend == "sim":
        opts: dict[str, Any] = {"realtime": False}
        if args.seed is not None:
            opts["seed"] = args.seed
    elif args.backend == "headless":
        opts = {"mm_dir": args.mm_dir, "mm_config": args.mm_config or "MMConfig_demo.cfg",
                "exposure_ms": args.exposure_ms}
    elif args.backend == "slide":
        opts = {"realtime": False, "exposure_ms": args.exposure_ms, "seed": args.seed}
    else:
        opts = {"port": args.port, "exposure_ms": args.exposure_ms}
    from inscope.acquisition.factory import parse_options

    opts = {k: v for k, v in opts.items() if v is not None}
    opts.update(parse_options(getattr(args, "option", None)))
    scope = open_microscope(args.backend, dry_run=dry_run, limits=limits_from_args(args),
                            **opts)
    if args.calibration:
        from inscope.control.calibration import Calibration

        try:
            Calibration.load(args.calibration).apply(scope, source=args.calibration)
        except (OSError, ValueError):
            scope.close()  # a bad or stale calibration must not leave a scope open
            raise
    return scope


_LIMITS_HINT = (" Here: give the stage's soft limits with --limits X0 X1 Y0 Y1 Z0 Z1 "
                "(µm).")


def limits_from_args(args: argparse.Namespace) -> dict[str, list[float]] | None:
    """The soft limits given by ``--limits`` (None: the backend's own; a real stage then
    refuses every move)."""
    lim = getattr(args, "limits", None)
    if lim is None:
        return None
    return {"x": [lim[0], lim[1]], "y": [lim[2], lim[3]], "z": [lim[4], lim[5]]}


def load_detector_for(model: str | None, mirror_views: int = 1,
                      enlarge_below_px: float | None = None):
    """The detector for *model*: a path, 'classical', or None for the shipped default
    (the classical detector, with a note, when this build ships no model), with
    *mirror_views* (:mod:`inscope.detector.mirror`) and *enlarge_below_px*
    (:class:`~inscope.detector.onnx_detector.OnnxDetector`)."""
    from inscope.detector.onnx_detector import load_detector_or_classical

    return load_detector_or_classical(model, say=lambda line: print(line, file=sys.stderr),
                                      mirror_views=mirror_views,
                                      enlarge_below_px=enlarge_below_px)


def run_calibrate(args: argparse.Namespace) -> int:
    from inscope.acquisition.errors import AcquisitionError
    from inscope.control.calibration import CalibrationError, calibrate

    if args.dry_run:
        print("error: calibration has to move the stage; run it without --dry-run "
              "(moves stay within the soft limits, 10-20% of the field).", file=sys.stderr)
        return 2
    try:
        scope = open_from_args(args)
    except (AcquisitionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with scope:
        try:
            cal = calibrate(scope, steps_um=args.steps_um, n=args.repeats,
                            tolerance=args.tolerance)
        except ValueError as e:  # (the steps or repeats given)
            opt = "--repeats" if "repeats" in str(e) else "--steps-um"
            print(f"error: {opt}: {e}", file=sys.stderr)
            return 2
        except (CalibrationError, AcquisitionError) as e:
            print(f"error: {e}{_LIMITS_HINT if 'no soft limits' in str(e) else ''}",
                  file=sys.stderr)
            return 1
        if getattr(args, "write_mm", False):
            from inscope.control.calibration import write_to_micromanager

            try:
                res_id = write_to_micromanager(cal, scope)
            except (ValueError, RuntimeError) as e:
                cal.save(args.out)
                print(f"error: {e} (the calibration is saved in {args.out})",
                      file=sys.stderr)
                return 1
            print(f"wrote pixel size and affine to Micro-Manager pixel-size config "
                  f"{res_id!r}; save the configuration in Micro-Manager to keep it")
    path = cal.save(args.out)
    a = cal.affine
    print(f"{scope.name}: pixel size {cal.pixel_size_um:.5g} µm, rotation "
          f"{cal.rotation_deg:.2f} deg, flip {cal.flip}, residual {cal.residual_px:.3f} px "
          f"({cal.n_images} images, {cal.wall_s:.2f} s)")
    print(f"affine µm/px: [[{a[0, 0]:.5g}, {a[0, 1]:.5g}], [{a[1, 0]:.5g}, {a[1, 1]:.5g}]]")
    if cal.warning:
        print(f"WARNING: {cal.warning}", file=sys.stderr)
    print(f"saved {path}")
    return 0


def _scan_arg_error(args: argparse.Namespace) -> str | None:
    """The first mistake in the scan's arguments, as one line (None: all fine)."""
    region = args.region
    if not all(math.isfinite(v) for v in region):
        return f"--region {' '.join(f'{v:g}' for v in region)}: give four finite numbers (µm)."
    x0, y0, x1, y1 = region
    if not (x1 > x0 and y1 > y0):
        return f"--region X0 Y0 X1 Y1 needs x1 > x0 and y1 > y0 (µm); got {x0:g} {y0:g} " \
               f"{x1:g} {y1:g}."
    if not (math.isfinite(args.overlap) and 0 <= args.overlap < 0.9):
        return f"--overlap {args.overlap:g}: give a fraction of the field in [0, 0.9)."
    if not (math.isfinite(args.score_threshold) and 0 <= args.score_threshold <= 1):
        return f"--score-threshold {args.score_threshold:g}: give a score in [0, 1]."
    if args.max_cells is not None and args.max_cells < 1:
        return f"--max-cells {args.max_cells}: give at least 1."
    if not all(math.isfinite(v) for v in (*args.z_range, args.z_step)):
        return "--z-range and --z-step must be finite numbers (µm)."
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"--out {args.out} is not a folder; give a folder for the OME-TIFFs, " \
               "cells.csv and summary.json (it is created if missing)."
    for a in out.parents:
        if a.exists() and not a.is_dir():
            return f"--out {args.out} cannot be a folder: {a} is a file."
    from inscope.control.workflow import earlier_scan

    earlier = earlier_scan(out)
    if earlier:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        return f"--out {args.out} already holds an earlier scan ({shown}); give a new " \
               "folder: nothing is overwritten."
    model = args.model
    if model is not None and model.lower() != "classical" and "://" not in model \
            and not Path(model).is_file():
        return f"--model {model}: no such file; give an .onnx file, 'classical', or omit " \
               "--model for the shipped model."
    return None


def run_scan(args: argparse.Namespace) -> int:
    import signal

    from inscope.acquisition.errors import AcquisitionError
    from inscope.control.workflow import FindAndImage, ZStackSpec
    from inscope.provenance import run_provenance  # stdlib only: the run's one record

    bad = _scan_arg_error(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        spec = ZStackSpec(tuple(args.z_range), args.z_step, adaptive=args.adaptive,
                          signal_frac=args.z_signal_frac, signal=args.z_signal)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        det = load_detector_for(args.model, args.mirror_views, args.enlarge_below_px)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: cannot load the detector: {' '.join(str(e).split())}",
              file=sys.stderr)
        return 2
    try:
        scope = open_from_args(args, dry_run=args.dry_run)
    except (AcquisitionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    def progress(rec) -> None:
        print(f"cell {rec.id:4d} {rec.status:18s} ({rec.x_um:9.1f}, {rec.y_um:9.1f}) µm "
              f"{rec.n_planes:3d} planes {rec.seconds:6.2f} s  {rec.reason}", flush=True)

    try:
        wf = FindAndImage(scope, det, region=args.region, out_dir=Path(args.out),
                          overlap=args.overlap, z_stack=spec,
                          autofocus=not args.no_autofocus, dry_run=args.dry_run,
                          min_score=args.score_threshold, on_cell=progress,
                          max_cells=args.max_cells,
                          provenance=run_provenance(scope, det))
    except ValueError as e:
        scope.close()
        print(f"error: {e}", file=sys.stderr)
        return 2

    def on_term(*_) -> None:  # SIGTERM ends the scan like Ctrl-C: summary "stopped"
        raise KeyboardInterrupt("terminated (SIGTERM)")

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        with scope:
            try:
                summary = wf.run()
            except (ValueError, FileExistsError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            except AcquisitionError as e:
                print(f"error: {e}\n(everything acquired so far is in {args.out})",
                      file=sys.stderr)
                return 1
            except KeyboardInterrupt as e:
                s = wf.summary
                print(f"stopped: {e or 'interrupted (Ctrl-C)'}; {s.cells_imaged} cells "
                      f"imaged, {s.cells_skipped} skipped, of {s.cells_found} found "
                      f"(everything acquired so far is in {args.out})", file=sys.stderr)
                return 143 if "SIGTERM" in str(e) else 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
    d = summary.to_dict()
    d.pop("planned_fields", None)
    d.pop("seconds_per_cell", None)
    d.pop("sim_seconds_per_cell", None)
    print(json.dumps(d, indent=2))
    return 0
