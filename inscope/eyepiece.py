"""Eyepiece (back-projection) mode: boxes only, on black, in the display's own pixels.

A small display projected into the eyepiece shows the boxes on top of the real specimen,
so the image must be black except for the boxes, and the boxes must land where the
cells are in the *eyepiece*, not in the camera. The map between the two is an affine
measured once with :func:`calibrate`: show a ChArUco board on the display, find it in
the camera image, fit ``camera = A @ display`` (:mod:`inscope.eyepiece_fit`, which
recovers any rotation, mirror, scale and offset and says how far the map can be trusted);
the renderer maps each box's four corners through the inverse (``cv2.transform``) and
draws the resulting quadrilateral, which stays correct under rotation, mirror and shear.

A cell that moves is somewhere else by the time the display shows its box; with a
:class:`inscope.predict.BoxPredictor` the renderer draws tracked boxes where their cells
will be at that moment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inscope.eyepiece_fit import CharucoPattern, fit_pattern
from inscope.predict import BoxPredictor, Prediction


def _as_2x3(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 3):
        m = m[:2]
    if m.shape != (2, 3):
        raise ValueError(f"an affine must be 2x3 (or 3x3 homogeneous); got shape {m.shape}.")
    return m


def invert_affine(m) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(_as_2x3(m))


@dataclass
class EyepieceCalibration:
    """Display <-> camera map of an eyepiece projector.

    Attributes
    ----------
    display_to_camera
        2x3 affine: display pixel -> camera pixel.
    display_size
        (width, height) of the display in pixels.
    camera_shape
        (height, width) of the camera image used for calibration.
    rms_px
        Root-mean-square residual of the fit in camera pixels (quality check).
    points
        Pattern corners the fit used.
    expected_error_px
        Expected overlay error (camera px) where boxes are drawn; see
        :class:`inscope.eyepiece_fit.PatternFit`.
    pixel_size_um
        Camera pixel size at the specimen when calibrated (None if not known), which turns
        the expected error into µm.
    extra
        Anything else worth keeping in the file (the pattern, mirror, rotation, scale).
    """

    display_to_camera: np.ndarray
    display_size: tuple[int, int]
    camera_shape: tuple[int, int] | None = None
    rms_px: float = float("nan")
    points: int = 0
    expected_error_px: float = float("nan")
    pixel_size_um: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def expected_error_um(self) -> float | None:
        """Expected overlay error at the specimen (µm), if the pixel size is known."""
        if self.pixel_size_um is None:
            return None
        return self.expected_error_px * self.pixel_size_um

    @property
    def display_lag_ms(self) -> float | None:
        """Display lag measured by the live calibration (ms), if it was."""
        v = self.extra.get("display_lag_ms")
        return None if v is None else float(v)

    @property
    def mirrored(self) -> bool:
        return bool(np.linalg.det(np.asarray(self.display_to_camera)[:, :2]) < 0)

    @property
    def camera_to_display(self) -> np.ndarray:
        return invert_affine(self.display_to_camera)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({
            "display_to_camera": np.asarray(self.display_to_camera).tolist(),
            "display_size": list(self.display_size),
            "camera_shape": list(self.camera_shape) if self.camera_shape else None,
            "rms_px": self.rms_px, "points": self.points,
            "expected_error_px": self.expected_error_px,
            "expected_error_um": self.expected_error_um,
            "pixel_size_um": self.pixel_size_um, **self.extra}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EyepieceCalibration:
        try:
            d = json.loads(Path(path).read_text())
            known = {"display_to_camera", "display_size", "camera_shape", "rms_px", "points",
                     "expected_error_px", "expected_error_um", "pixel_size_um"}
            ps = d.get("pixel_size_um")
            return cls(_as_2x3(d["display_to_camera"]), tuple(d["display_size"]),
                       tuple(d["camera_shape"]) if d.get("camera_shape") else None,
                       float(d.get("rms_px", float("nan"))), int(d.get("points", 0)),
                       float(d.get("expected_error_px", float("nan"))),
                       None if ps is None else float(ps),
                       {k: v for k, v in d.items() if k not in known})
        except FileNotFoundError:
            raise FileNotFoundError(f"eyepiece calibration {path} not found; run the "
                                    "calibration (inscope.eyepiece.calibrate) first or "
                                    "omit [outputs.eyepiece] calibration.") from None
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"eyepiece calibration {path} is not valid ({e}); it must "
                             "hold display_to_camera (2x3) and display_size.") from None


def fit_camera_to_display(camera_shape: tuple[int, int],
                          display_size: tuple[int, int]) -> np.ndarray:
    """Uncalibrated default: scale the camera image to fit the display, centred."""
    h, w = camera_shape
    dw, dh = display_size
    s = min(dw / w, dh / h)
    return np.array([[s, 0, (dw - s * w) / 2], [0, s, (dh - s * h) / 2]], dtype=np.float64)


class EyepieceRenderer:
    """Draws boxes on a black display image through a camera -> display affine.

    Parameters
    ----------
    display_size
        (width, height) of the eyepiece display.
    calibration
        :class:`EyepieceCalibration`, or None to scale the camera frame to the display.
    predictor
        A :class:`inscope.predict.BoxPredictor`: :meth:`render_result` then draws tracked
        boxes where their cells will be when the display shows them. None: where they
        were detected.
    """

    def __init__(self, display_size: tuple[int, int] = (1280, 720),
                 calibration: EyepieceCalibration | None = None,
                 color: tuple[int, int, int] = (0, 255, 0),
                 target_color: tuple[int, int, int] = (0, 220, 255), thickness: int = 2,
                 predictor: BoxPredictor | None = None) -> None:
        self.display_size = (int(display_size[0]), int(display_size[1]))
        if calibration is not None and tuple(calibration.display_size) != self.display_size:
            raise ValueError(
                f"the eyepiece calibration was made for a {calibration.display_size[0]}x"
                f"{calibration.display_size[1]} display but the display is "
                f"{self.display_size[0]}x{self.display_size[1]}; set "
                "[outputs.eyepiece] display_size to the calibrated size or calibrate again.")
        self.calibration = calibration
        self.predictor = predictor
        self.last_prediction: Prediction | None = None
        self.color, self.target_color, self.thickness = color, target_color, thickness
        self._m: np.ndarray | None = (calibration.camera_to_display
                                      if calibration is not None else None)

    def camera_to_display(self, camera_shape: tuple[int, int]) -> np.ndarray:
        if self._m is None:
            self._m = fit_camera_to_display(camera_shape, self.display_size)
        return self._m

    def map_boxes(self, boxes: np.ndarray, camera_shape: tuple[int, int]) -> np.ndarray:
        """(N, 4) camera boxes -> (N, 4, 2) display quadrilaterals (corner order TL, TR,
        BR, BL)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], 1)
        m = self.camera_to_display(camera_shape)
        return cv2.transform(corners.reshape(-1, 1, 2), m).reshape(-1, 4, 2)

    def render(self, boxes: np.ndarray, camera_shape: tuple[int, int],
               target: int | None = None) -> np.ndarray:
        """Black (H, W, 3) uint8 display image with the boxes drawn."""
        w, h = self.display_size
        img = np.zeros((h, w, 3), np.uint8)
        quads = np.rint(self.map_boxes(boxes, camera_shape)).astype(np.int32)
        for i, q in enumerate(quads):
            is_t = target is not None and i == target
            cv2.polylines(img, [q.reshape(-1, 1, 2)], True,
                          self.target_color if is_t else self.color,
                          self.thickness + (1 if is_t else 0), cv2.LINE_AA)
        return img

    def render_result(self, r) -> np.ndarray:
        """Render a pipeline :class:`~inscope.outputs.Result` (target highlighted)."""
        target = None
        if r.target_id is not None:
            ids = r.track_ids()
            target = next((i for i, t in enumerate(ids) if t == r.target_id), None)
        boxes = r.detections.boxes
        if self.predictor is not None:
            self.last_prediction = self.predictor.predict(r)
            boxes = self.last_prediction.boxes
        return self.render(boxes, r.frame.pixels.shape, target)


# -- calibration -----------------------------------------------------------------------
def calibration_from_image(camera_image: Any, pattern: CharucoPattern,
                           pixel_size_um: float | None = None, max_error_px: float = 1.0
                           ) -> EyepieceCalibration:
    """The one fit behind every calibration path (live, ``--from-image``, Python).

    Parameters
    ----------
    camera_image
        Camera image taken while *pattern* was on the display: an array, or a
        :class:`~inscope.acquisition.frame.Frame` (its pixel size is then used).
    pattern
        The pattern that was shown.
    pixel_size_um
        Camera pixel size at the specimen (µm), to report the expected error in µm.
    max_error_px
        Refuse the calibration when its expected overlay error exceeds this (camera px).

    Raises
    ------
    inscope.eyepiece_fit.CalibrationError
        The pattern was not found, only ambiguously, or not well enough; the message says
        why and what to change. Nothing is returned, so nothing wrong can be saved.
    """
    from inscope.eyepiece_fit import CalibrationError

    pixels = getattr(camera_image, "pixels", camera_image)
    if pixel_size_um is None and hasattr(camera_image, "pixel_size_um"):
        pixel_size_um = float(camera_image.pixel_size_um)
    pixels = np.asarray(pixels)
    fit = fit_pattern(pixels, pattern)
    um = "" if pixel_size_um is None else f" ({fit.expected_error_px * pixel_size_um:.2f} µm)"
    if not fit.expected_error_px <= max_error_px:
        raise CalibrationError(
            f"expected overlay error {fit.expected_error_px:.2f} camera px{um} exceeds the "
            f"limit of {max_error_px:g} px (corner residual {fit.rms_px:.2f} px RMS over "
            f"{fit.corners_used} corners, which span {fit.coverage:.0%} of the field the "
            "display covers). Bring more of the pattern into view, focus it, or lengthen "
            "the exposure to lower the noise; raise the limit (--max-error) only if that "
            "error is acceptable.")
    cal = EyepieceCalibration(
        fit.display_to_camera, (int(pattern.display_size[0]), int(pattern.display_size[1])),
        (pixels.shape[0], pixels.shape[1]),
        fit.rms_px, fit.corners_used, fit.expected_error_px, pixel_size_um,
        {"mirrored": fit.mirrored, "rotation_deg": round(fit.rotation_deg, 3),
         "scale": round(fit.scale, 6), "corners_found": fit.corners_found,
         "max_residual_px": fit.max_residual_px, "fit_error_px": fit.fit_error_px,
         "pattern": pattern.to_dict()})
    return cal


def describe(cal: EyepieceCalibration) -> str:
    """One line a user can check against the optics: mirror, rotation, scale, error."""
    m = np.asarray(cal.display_to_camera)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    r = m[:, :2] @ np.diag([-1.0, 1.0]) if cal.mirrored else m[:, :2]
    rot = math.degrees(math.atan2(r[1, 0], r[0, 0])) % 360.0
    um = "" if cal.expected_error_um is None else f" = {cal.expected_error_um:.2f} µm"
    return (f"{'mirrored' if cal.mirrored else 'not mirrored'}, rotated {rot:.1f}°, "
            f"{scale:.3f} camera px per display px, offset ({m[0, 2]:.1f}, {m[1, 2]:.1f}) px; "
            f"{cal.points} corners, residual {cal.rms_px:.2f} px RMS; expected overlay "
            f"error {cal.expected_error_px:.2f} camera px{um}")


def calibrate(show: Callable[[np.ndarray], None], capture: Callable[[], Any],
              display_size: tuple[int, int], pattern: CharucoPattern | None = None,
              pixel_size_um: float | None = None, max_error_px: float = 1.0
              ) -> EyepieceCalibration:
    """Measure the display -> camera map live.

    Parameters
    ----------
    show
        Puts an image on the eyepiece display (e.g. ``cv2.imshow`` on that screen).
    capture
        Returns a camera image (array or :class:`~inscope.acquisition.frame.Frame`) taken
        while the pattern is shown (e.g. ``scope.snap``).
    display_size
        (width, height) of the display.
    pattern
        The ChArUco board to show (default: :meth:`CharucoPattern.for_display`).
    pixel_size_um, max_error_px
        As in :func:`calibration_from_image`, which does the fit.
    """
    pattern = pattern or CharucoPattern.for_display(display_size)
    if tuple(pattern.display_size) != tuple(display_size):
        raise ValueError(f"the pattern is for a {pattern.display_size} display, not "
                         f"{tuple(display_size)}; make it for this display.")
    show(pattern.image())
    return calibration_from_image(capture(), pattern, pixel_size_um, max_error_px)


def measure_display_lag_ms(show: Callable[[np.ndarray], None], snap: Callable[[], Any],
                           image: np.ndarray, repeats: int = 5, timeout_s: float = 2.0,
                           settle_s: float = 0.3, clock: Callable[[], int] | None = None
                           ) -> float:
    """Time from handing an image to the display until the camera sees it (ms).

    The part of the exposure -> display latency no time stamp sees (display buffering,
    scan-out, the projector), for :class:`inscope.predict.BoxPredictor`. The display
    alternates black and *image*; the lag of one switch is from the ``show`` call to the
    moment the light came on, read from the first frame that is partly lit: the lit share
    of its exposure tells when in the exposure the light arrived (its stamps, as for the
    prediction). The median of *repeats* switches is returned.

    Parameters
    ----------
    show
        Puts an image on the display and returns at once (no settling wait).
    snap
        Returns a :class:`~inscope.acquisition.frame.Frame` (stamps, exposure).
    image
        A bright image for the display (e.g. the calibration pattern).
    settle_s
        Frames are taken for this long after each switch before its level counts (longer
        than any plausible lag).
    """
    import time

    from inscope.predict import exposure_mid_ns

    clock = clock or time.monotonic_ns
    dark = np.zeros_like(image)

    def level() -> float:
        return float(np.mean(np.asarray(snap().pixels, np.float32)))

    def settle(img: np.ndarray) -> float:
        show(img)
        t0 = clock()
        v = level()
        while clock() - t0 < settle_s * 1e9:  # early frames may show the previous image
            v = level()
        return v

    lit, black = settle(image), settle(dark)
    if lit - black <= 0.05 * max(abs(lit), 1.0):
        raise RuntimeError("the camera does not see the display change from black to the "
                           "pattern; check the light path, then measure again.")
    lags = []
    for _ in range(max(int(repeats), 1)):
        settle(dark)
        t0 = clock()
        show(image)
        while True:
            f = snap()
            lit_share = (float(np.mean(np.asarray(f.pixels, np.float32))) - black) / (lit - black)
            if lit_share > 0.1:
                # the light came on when the lit share of this exposure was still to come:
                # onset = end of exposure - share * exposure (sub-exposure resolution)
                exp_ns = float((f.metadata or {}).get("exposure_ms", 0.0) or 0.0) * 1e6
                onset = exposure_mid_ns(f) + exp_ns / 2 - min(lit_share, 1.0) * exp_ns
                lags.append((onset - t0) / 1e6)
                break
            if clock() - t0 > timeout_s * 1e9:
                raise RuntimeError(f"the display did not light up in the camera within "
                                   f"{timeout_s:g} s; check the display, then retry.")
    return float(max(np.median(lags), 0.0))
