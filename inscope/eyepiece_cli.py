"""``inscope calibrate-eyepiece``: measure where the eyepiece display lands in the camera.

The AR eyepiece shows boxes on a small display back-projected into the eyepiece; the boxes
are drawn in *display* pixels, so the service needs the display -> camera map. This
command measures it from a dot grid shown on the display and seen by the camera
(:func:`inscope.eyepiece.calibrate`), and writes the JSON that ``inscope run
--eyepiece --eyepiece-calibration FILE`` reads. Two ways:

* live: ``--backend mm|headless|sim`` shows the pattern full screen on the eyepiece display
  (an OpenCV window moved to ``--screen X,Y`` on the desktop) and snaps a camera frame;
* offline, two steps, for setups where the display is driven by another program:
  ``--pattern-out pattern.png`` writes the dot pattern; show it on the display, save a
  camera image, then ``--from-image camera.tif`` fits the map from that image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _pair(text: str, sep: str = "x") -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().replace(",", sep).split(sep))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two integers like 1280{sep}720; got {text!r}") from None
    return a, b


def register(subparsers) -> None:
    from inscope.control.cli import add_backend_args

    p = subparsers.add_parser(
        "calibrate-eyepiece", help="measure the eyepiece display -> camera map (AR overlay)",
        description="Show a dot grid on the eyepiece display, find it in the camera image and "
                    "fit the display -> camera affine; writes the JSON that `inscope run "
                    "--eyepiece --eyepiece-calibration` reads.")
    add_backend_args(p)
    p.add_argument("--display", type=_pair, default=(1280, 720), metavar="WxH",
                   help="eyepiece display size in pixels (default 1280x720)")
    p.add_argument("--grid", type=_pair, default=(7, 5), metavar="COLSxROWS",
                   help="dot grid (default 7x5)")
    p.add_argument("--screen", type=lambda t: _pair(t, ","), default=(0, 0), metavar="X,Y",
                   help="desktop position of the eyepiece display (live mode)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds to wait after showing the pattern before the snap")
    p.add_argument("--pattern-out", type=Path, default=None, metavar="PNG",
                   help="offline step 1: write the dot pattern and stop")
    p.add_argument("--from-image", type=Path, default=None, metavar="IMAGE",
                   help="offline step 2: fit from a camera image taken while it was shown")
    p.add_argument("--out", type=Path, default=Path("eyepiece.json"),
                   help="calibration JSON (default eyepiece.json)")
    p.add_argument("--max-rms", type=float, default=2.0,
                   help="refuse a fit whose RMS residual exceeds this (camera px)")
    p.set_defaults(func=run_calibrate_eyepiece)


def run_calibrate_eyepiece(args: argparse.Namespace) -> int:
    import cv2

    from inscope.eyepiece import calibrate, dot_pattern

    def fail(msg: str) -> int:
        print(f"inscope calibrate-eyepiece: {msg}", file=sys.stderr)
        return 2

    if args.pattern_out is not None:
        pattern, _ = dot_pattern(args.display, args.grid)
        args.pattern_out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.pattern_out), pattern)
        print(f"wrote {args.pattern_out} ({args.display[0]}x{args.display[1]}, "
              f"{args.grid[0]}x{args.grid[1]} dots): show it full screen on the eyepiece "
              "display, save a camera image, then run with --from-image IMAGE")
        return 0
    try:
        if args.from_image is not None:
            from inscope.detector.datasets import read_image

            cam = read_image(args.from_image)
            cal = calibrate(lambda _: None, lambda: cam, args.display, args.grid)
        else:
            cal = _calibrate_live(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        return fail(f"{e} Check that the whole dot grid is visible in the camera image "
                    "(focus, exposure, --grid).")
    if cal.rms_px > args.max_rms:
        return fail(f"fit residual {cal.rms_px:.2f} camera px exceeds --max-rms "
                    f"{args.max_rms}: dots were mislocated (stray light, partly hidden "
                    "grid?). Nothing written.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(args.out)
    m = cal.display_to_camera
    print(f"display -> camera affine [[{m[0, 0]:.4f} {m[0, 1]:.4f} {m[0, 2]:.1f}] "
          f"[{m[1, 0]:.4f} {m[1, 1]:.4f} {m[1, 2]:.1f}]], RMS {cal.rms_px:.2f} px over "
          f"{cal.points} dots")
    print(f"wrote {args.out}; use it with: inscope run --eyepiece --eyepiece-calibration "
          f"{args.out}")
    return 0


def _calibrate_live(args: argparse.Namespace):
    """Show the pattern full screen on the eyepiece display, snap, fit."""
    import time

    import cv2
    import numpy as np

    from inscope.control.cli import open_from_args
    from inscope.eyepiece import calibrate

    title = "inscope eyepiece calibration"
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise RuntimeError("No display to show the pattern on (OpenCV has no GUI here). "
                           "Use the offline steps: --pattern-out, then --from-image.") from None
    cv2.moveWindow(title, *args.screen)
    cv2.setWindowProperty(title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)

    def show(img: np.ndarray) -> None:
        cv2.imshow(title, img)
        t_end = time.monotonic() + args.settle
        while time.monotonic() < t_end:
            cv2.waitKey(20)

    scope = open_from_args(args)
    try:
        return calibrate(show, lambda: np.asarray(scope.snap().pixels), args.display,
                         args.grid)
    finally:
        scope.close()
        cv2.destroyWindow(title)
