"""``inscope calibrate-eyepiece``: measure where the eyepiece display lands in the camera.

The AR eyepiece shows boxes on a small display back-projected into the eyepiece; the boxes
are drawn in *display* pixels, so the service needs the display -> camera map. This
command measures it from a ChArUco board shown on the display and seen by the camera, and
writes the JSON that ``inscope run --eyepiece --eyepiece-calibration FILE`` reads. Two
ways, one fit (:func:`inscope.eyepiece.calibration_from_image`):

* live: ``--backend mm|headless|sim`` shows the pattern full screen on the eyepiece display
  (an OpenCV window moved to ``--screen X,Y`` on the desktop) and snaps a camera frame;
* offline, two steps, for setups where the display is driven by another program:
  ``--pattern-out pattern.png`` writes the pattern (and ``pattern.json`` beside it, which
  describes it); show it on the display, save a camera image, then ``--from-image
  camera.tif --pattern pattern.json`` fits the map from that image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _pair(text: str, sep: str = "x") -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().replace(",", sep).split(sep))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two integers like 1280{sep}720; got {text!r}") from None
    return a, b


class ImageReadError(OSError):
    """A camera image file could not be read (missing, not an image, unsupported)."""


def read_camera_image(path: Path) -> np.ndarray:
    """Read one camera image (TIFF of any common compression, PNG, JPEG, ...) as 2-D.

    tifffile reads TIFF (OME-TIFF, stacks: the first page); a compression it needs the
    optional ``imagecodecs`` package for (LZW, deflate as OpenCV writes them) is read with
    OpenCV instead, so the service needs no extra dependency for it.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"camera image {path} does not exist (or is a folder); give "
                             "the path of the image saved while the pattern was shown.")
    img = None
    why = ""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                img = tif.pages[0].asarray()
        except Exception as e:  # noqa: BLE001 - any reader failure: try OpenCV below
            why = f" (tifffile: {e})"
    if img is None:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f"cannot read {path} as an image{why}; save the camera image "
                             "as TIFF or PNG and give that file.")
    img = np.squeeze(np.asarray(img))
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        return img
    if img.ndim != 2:
        raise ImageReadError(f"{path} holds an array of shape {img.shape}, not one image; "
                             "save a single camera frame.")
    return img


def register(subparsers) -> None:
    from inscope.cli import deprecated_alias
    from inscope.control.cli import add_backend_args

    p = subparsers.add_parser(
        "calibrate-eyepiece", help="measure the eyepiece display -> camera map (AR overlay)",
        description="Show a ChArUco board on the eyepiece display, find it in the camera "
                    "image and fit the display -> camera affine (any rotation, mirror, scale, "
                    "offset); writes the JSON that `inscope run --eyepiece "
                    "--eyepiece-calibration` reads.")
    add_backend_args(p)
    a = p.add_argument("--display-size", type=_pair, default=(1280, 720), metavar="WxH",
                       help="eyepiece display size in pixels (default 1280x720; TOML "
                            "[outputs.eyepiece] display_size)")
    deprecated_alias(p, "--display", a)
    p.add_argument("--squares", type=_pair, default=None, metavar="COLSxROWS",
                   help="chessboard squares of the pattern (default: squares of 1/8 of the "
                        "display height); more if the camera sees only a small part of "
                        "the display, fewer if the pattern looks tiny in the camera")
    p.add_argument("--pattern", type=Path, default=None, metavar="JSON",
                   help="offline step 2: the pattern.json written by --pattern-out (sets "
                        "--display-size and --squares)")
    p.add_argument("--screen", type=lambda t: _pair(t, ","), default=(0, 0), metavar="X,Y",
                   help="desktop position of the eyepiece display (live mode)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds to wait after showing the pattern before the snap")
    p.add_argument("--pattern-out", type=Path, default=None, metavar="PNG",
                   help="offline step 1: write the pattern (PNG + JSON beside it) and stop")
    p.add_argument("--from-image", type=Path, default=None, metavar="IMAGE",
                   help="offline step 2: fit from a camera image taken while it was shown")
    a = p.add_argument("--pixel-size-um", type=float, default=None, metavar="UM",
                       help="camera pixel size at the specimen (µm), to give the expected "
                            "error in µm (live mode: from the microscope)")
    deprecated_alias(p, "--pixel-size", a)
    p.add_argument("--lag-repeats", type=int, default=5, metavar="N",
                   help="live mode: also measure the display lag (drawing -> light) over N "
                        "black -> pattern switches, for the box prediction (0: skip)")
    p.add_argument("--out", type=Path, default=Path("eyepiece.json"),
                   help="calibration JSON (default eyepiece.json)")
    p.add_argument("--max-error", type=float, default=1.0, metavar="PX",
                   help="refuse a calibration whose expected overlay error exceeds this "
                        "(camera px, default 1)")
    p.set_defaults(func=run_calibrate_eyepiece)


def _pattern(args: argparse.Namespace):
    from inscope.eyepiece_fit import CharucoPattern

    if args.pattern is not None:
        return CharucoPattern.load(args.pattern)
    return CharucoPattern.for_display(args.display_size, args.squares)


def run_calibrate_eyepiece(args: argparse.Namespace) -> int:
    import cv2

    from inscope.eyepiece import calibration_from_image, describe
    from inscope.eyepiece_fit import CalibrationError

    def fail(msg: str) -> int:
        print(f"inscope calibrate-eyepiece: {msg}", file=sys.stderr)
        return 2

    try:
        pattern = _pattern(args)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    if args.pattern_out is not None:
        args.pattern_out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(args.pattern_out), pattern.image()):
            return fail(f"could not write {args.pattern_out}; give a .png path in a "
                        "writable folder.")
        spec = args.pattern_out.with_suffix(".json")
        pattern.save(spec)
        w, h = pattern.display_size
        print(f"wrote {args.pattern_out} ({w}x{h}, {pattern.squares[0]}x{pattern.squares[1]} "
              f"ChArUco squares) and {spec}: show the PNG full screen on the eyepiece "
              f"display, save a camera image, then run with --from-image IMAGE --pattern "
              f"{spec}")
        return 0
    try:
        if args.from_image is not None:
            cam = read_camera_image(args.from_image)
            cal = calibration_from_image(cam, pattern, args.pixel_size_um, args.max_error)
        else:
            cal = _calibrate_live(args, pattern)
    except ImageReadError as e:
        return fail(str(e))
    except CalibrationError as e:
        return fail(f"{e} Nothing written.")
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        return fail(str(e))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(args.out)
    print(describe(cal))
    if cal.display_lag_ms is not None:
        print(f"display lag (drawing -> light, seen by the camera): {cal.display_lag_ms:.0f} "
              "ms; the box prediction uses it")
    if cal.expected_error_um is None:
        print("(give --pixel-size-um UM to also get the error in µm at the specimen)")
    print(f"wrote {args.out}; use it with: inscope run --eyepiece --eyepiece-calibration "
          f"{args.out}")
    return 0


def _calibrate_live(args: argparse.Namespace, pattern):
    """Show the pattern full screen on the eyepiece display, snap, fit (the same fit as
    ``--from-image``)."""
    import os
    import time

    import cv2

    from inscope.control.cli import open_from_args
    from inscope.eyepiece import calibrate, measure_display_lag_ms

    no_gui = RuntimeError("No display to show the pattern on (no desktop session, or OpenCV "
                          "without GUI). Use the offline steps: --pattern-out, then "
                          "--from-image.")
    # without a desktop, OpenCV's Qt backend aborts the process instead of raising
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                  or os.environ.get("WAYLAND_DISPLAY")):
        raise no_gui
    title = "inscope eyepiece calibration"
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise no_gui from None
    cv2.moveWindow(title, *args.screen)
    cv2.setWindowProperty(title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)

    def show(img: np.ndarray) -> None:
        cv2.imshow(title, img)
        t_end = time.monotonic() + args.settle
        while time.monotonic() < t_end:
            cv2.waitKey(20)

    def show_now(img: np.ndarray) -> None:
        cv2.imshow(title, img)
        cv2.waitKey(1)  # hands the image to the window system; the lag starts here

    scope = open_from_args(args)
    try:
        cal = calibrate(show, scope.snap, pattern.display_size, pattern, args.pixel_size_um,
                        args.max_error)
        if args.lag_repeats > 0:
            cal.extra["display_lag_ms"] = round(measure_display_lag_ms(
                show_now, scope.snap, pattern.image(), args.lag_repeats,
                settle_s=max(args.settle, 0.1)), 1)
        return cal
    finally:
        scope.close()
        cv2.destroyWindow(title)
