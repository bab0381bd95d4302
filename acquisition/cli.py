"""``inscope stream``: stream frames from any backend and show the frame rate live.

The quickest check that a microscope is reachable and how fast it delivers frames, before
any detector is involved. Registration imports nothing heavy (no pycromanager, no OpenCV).
"""

from __future__ import annotations

import argparse
import sys
import time

from inscope.enums import Backend


def register(subparsers) -> None:
    from inscope.acquisition.factory import add_option_argument
    from inscope.cli import add_exposure_argument, add_micromanager_arguments

    p = subparsers.add_parser(
        "stream", help="stream frames from a microscope and print the frame rate",
        description="Stream frames from a backend, printing a live frame rate and drop "
                    "counter, then a summary (frames, fps, drops, ready->consumer latency).")
    p.add_argument("--backend", default=Backend.SIM, choices=list(Backend),
                   help="sim (default), headless (Micro-Manager core in-process), "
                        "mm (running Micro-Manager GUI), replay (a file), slide (a "
                        "virtual microscope over a real image: -o path=FILE ...)")
    add_option_argument(p, "-o path=cells.npz -o pixel_size_um=0.65 -o fov=256")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after S seconds (default 5 if --frames is not given)")
    add_micromanager_arguments(p)
    p.add_argument("--file", default=None, help="file for --backend replay")
    p.add_argument("--fps", type=float, default=None,
                   help="replay rate (default: the file's; 0 = as fast as possible)")
    p.add_argument("--loop", action="store_true", help="replay: start again at the end")
    p.add_argument("--port", type=int, default=4827, help="pycro-manager server port (mm)")
    add_exposure_argument(p)
    p.add_argument("--camera-property", "-p", action="append", default=[],
                   metavar="NAME=VALUE",
                   help="Micro-Manager camera property (repeatable), e.g. -p Mode=Noise")
    p.set_defaults(func=run)


def _camera_properties(items: list[str]) -> dict[str, str] | None:
    if not items:
        return None
    props = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--camera-property {item!r}: write NAME=VALUE, e.g. Mode=Noise")
        props[name.strip()] = value.strip()
    return props


def _options(args: argparse.Namespace) -> dict:
    props = _camera_properties(args.camera_property)
    if args.backend == "headless":
        opts = {"mm_dir": args.mm_dir, "mm_config": args.mm_config or "MMConfig_demo.cfg",
                "exposure_ms": args.exposure_ms, "camera_properties": props}
    elif args.backend == "mm":
        opts = {"port": args.port, "exposure_ms": args.exposure_ms,
                "camera_properties": props}
    elif args.backend == "replay":
        opts = {"path": args.file, "fps": args.fps, "loop": args.loop}
    else:
        opts = {}
    from inscope.acquisition.factory import parse_options

    opts = {k: v for k, v in opts.items() if v is not None}
    opts.update(parse_options(getattr(args, "option", None)))
    if args.backend == "replay" and not opts.get("path"):  # --file or -o path= (as `run`)
        raise SystemExit("inscope stream --backend replay needs --file PATH (or -o "
                         "path=PATH): a TIFF/OME-TIFF stack, NDTiff folder or video.")
    return opts


def run(args: argparse.Namespace) -> int:
    from inscope.acquisition.errors import AcquisitionError
    from inscope.acquisition.factory import open_microscope

    if args.frames is not None and args.frames <= 0:
        print("--frames must be a positive number", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (None if args.frames else 5.0)
    try:
        scope = open_microscope(args.backend, **_options(args))
    except AcquisitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lat_ms: list[float] = []
    first_index = last_index = None
    n = 0
    t0 = time.monotonic()
    t_print = t0
    try:
        with scope, scope.stream() as frames:
            while True:
                frame = frames.get(timeout=5.0)
                now_ns = time.monotonic_ns()
                if frame is None:
                    break
                n += 1
                lat_ms.append((now_ns - frame.stamps["ready"]) / 1e6)
                first_index = frame.index if first_index is None else first_index
                last_index = frame.index
                t = time.monotonic()
                if t - t_print >= 0.25:
                    t_print = t
                    print(f"\r{n} frames  {n / (t - t0):7.1f} fps  dropped {frames.dropped}"
                          f"  #{frame.index}  {frame.shape[1]}x{frame.shape[0]}",
                          end="", flush=True)
                if args.frames is not None and n >= args.frames:
                    break
                if seconds is not None and t - t0 >= seconds:
                    break
            dropped = frames.dropped
    except AcquisitionError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - t0
    print()
    if not n:
        print("no frames received", file=sys.stderr)
        return 1
    import numpy as np

    p50, p90, p99 = np.percentile(lat_ms, [50, 90, 99])
    gaps = (last_index - first_index + 1 - n) \
        if last_index is not None and first_index is not None else 0
    print(f"{scope.name}: {n} frames in {elapsed:.2f} s = {n / elapsed:.1f} fps; "
          f"dropped in slot {dropped}, index gaps {gaps}; ready->consumer latency ms "
          f"p50 {p50:.3f} p90 {p90:.3f} p99 {p99:.3f} max {max(lat_ms):.3f}")
    return 0
