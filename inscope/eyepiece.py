"""Eyepiece (back-projection) mode: boxes only, on black, in the display's own pixels.

A small display projected into the eyepiece shows the boxes on top of the real specimen,
so the image must be black except for the boxes, and the boxes must land where the
cells are in the *eyepiece*, not in the camera. The map between the two is an affine
measured once with :func:`calibrate`: show a dot grid on the display, find it in the
camera image, fit ``camera = A @ display`` with ``cv2.estimateAffine2D``; the renderer
maps each box's four corners through the inverse (``cv2.transform``) and draws the
resulting quadrilateral, which stays correct under rotation and shear.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


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
    """

    display_to_camera: np.ndarray
    display_size: tuple[int, int]
    camera_shape: tuple[int, int] | None = None
    rms_px: float = float("nan")
    points: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def camera_to_display(self) -> np.ndarray:
        return invert_affine(self.display_to_camera)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({
            "display_to_camera": np.asarray(self.display_to_camera).tolist(),
            "display_size": list(self.display_size),
            "camera_shape": list(self.camera_shape) if self.camera_shape else None,
            "rms_px": self.rms_px, "points": self.points, **self.extra}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EyepieceCalibration:
        try:
            d = json.loads(Path(path).read_text())
            return cls(_as_2x3(d["display_to_camera"]), tuple(d["display_size"]),
                       tuple(d["camera_shape"]) if d.get("camera_shape") else None,
                       float(d.get("rms_px", float("nan"))), int(d.get("points", 0)))
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
    """

    def __init__(self, display_size: tuple[int, int] = (1280, 720),
                 calibration: EyepieceCalibration | None = None,
                 color: tuple[int, int, int] = (0, 255, 0),
                 target_color: tuple[int, int, int] = (0, 220, 255), thickness: int = 2,
                 ) -> None:
        self.display_size = (int(display_size[0]), int(display_size[1]))
        self.calibration = calibration
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
        from inscope.schema import match_track_ids

        target = None
        if r.target_id is not None:
            ids = match_track_ids(r.detections.boxes, r.tracks)
            target = next((i for i, t in enumerate(ids) if t == r.target_id), None)
        return self.render(r.detections.boxes, r.frame.pixels.shape, target)


# -- calibration -----------------------------------------------------------------------
def dot_pattern(display_size: tuple[int, int], grid: tuple[int, int] = (7, 5),
                margin: float = 0.15, radius: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """A white dot grid on black for the display.

    Returns
    -------
    image
        (H, W) uint8 display image.
    points
        (cols*rows, 2) dot centres in display pixels, row-major from the top left (the
        order :func:`find_dots` returns).
    """
    w, h = display_size
    cols, rows = grid
    if cols < 3 or rows < 3:
        raise ValueError(f"a calibration grid needs at least 3x3 dots; got {grid}.")
    xs = np.linspace(margin * w, (1 - margin) * w, cols)
    ys = np.linspace(margin * h, (1 - margin) * h, rows)
    pts = np.array([(x, y) for y in ys for x in xs], dtype=np.float64)
    r = radius or max(3, int(0.18 * min(xs[1] - xs[0], ys[1] - ys[0])))
    img = np.zeros((h, w), np.uint8)
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), r, 255, -1, cv2.LINE_AA)
    return img, pts


def _to8(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX)
        img = img.astype(np.uint8)
    return img


def _blob_centroids(img8: np.ndarray, n: int) -> np.ndarray | None:
    """Centroids of the *n* largest bright blobs (Otsu threshold + connected components)."""
    blur = cv2.GaussianBlur(img8, (5, 5), 0)
    _, bw = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k, _, stats, cents = cv2.connectedComponentsWithStats(bw)
    if k - 1 < n:
        return None
    order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:n] + 1
    return cents[order]


def _grid_order(pts: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Order unordered dot centres row-major (rows by y, then x): valid for rotations
    well below 45 degrees, as with a hand-aligned eyepiece projector."""
    cols, rows = grid
    by_y = pts[np.argsort(pts[:, 1])]
    out = [row[np.argsort(row[:, 0])] for row in by_y.reshape(rows, cols, 2)]
    return np.concatenate(out)


def find_dots(camera_image: np.ndarray, grid: tuple[int, int] = (7, 5)) -> np.ndarray:
    """Find the calibration dots in a camera image; (cols*rows, 2) camera pixels,
    row-major from the top left like :func:`dot_pattern`.

    ``cv2.findCirclesGrid`` first (on the inverted image: it looks for dark blobs), then
    plain blob centroids. A symmetric grid is ambiguous up to a half turn; the ordering
    whose fitted map is closest to "no rotation, no mirror" is chosen.
    """
    img8 = _to8(camera_image)
    cols, rows = grid
    found, centers = cv2.findCirclesGrid(255 - img8, (cols, rows),
                                         flags=cv2.CALIB_CB_SYMMETRIC_GRID)
    if found:
        pts = centers.reshape(-1, 2).astype(np.float64)
        grid_pts = pts.reshape(rows, cols, 2)
        # candidates: as found, and the three symmetric re-orderings
        cands = [grid_pts, grid_pts[::-1, ::-1], grid_pts[::-1], grid_pts[:, ::-1]]

        def score(g: np.ndarray) -> float:
            dx = g[0, -1] - g[0, 0]  # along the first row: should point +x
            dy = g[-1, 0] - g[0, 0]  # down the first column: should point +y
            return dx[0] + dy[1]

        return max(cands, key=score).reshape(-1, 2)
    pts = _blob_centroids(img8, cols * rows)
    if pts is None:
        raise ValueError(
            f"could not find the {cols}x{rows} calibration dots in the camera image; make "
            "sure the whole pattern is in the field of view, in focus, and not saturated "
            "(lower the display brightness or the exposure), then retry.")
    return _grid_order(pts, grid)


def estimate_affine(display_pts: np.ndarray, camera_pts: np.ndarray
                    ) -> tuple[np.ndarray, float]:
    """Fit display -> camera (2x3) with RANSAC; returns the affine and the RMS residual."""
    m, inliers = cv2.estimateAffine2D(np.asarray(display_pts, np.float64),
                                      np.asarray(camera_pts, np.float64),
                                      method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if m is None:
        raise ValueError("could not fit an affine to the dots; check the pattern is "
                         "visible and retry.")
    pred = cv2.transform(np.asarray(display_pts, np.float64).reshape(-1, 1, 2), m)
    rms = float(np.sqrt(((pred.reshape(-1, 2) - camera_pts) ** 2).sum(1).mean()))
    return m, rms


def calibrate(show: Callable[[np.ndarray], None], capture: Callable[[], np.ndarray],
              display_size: tuple[int, int], grid: tuple[int, int] = (7, 5)
              ) -> EyepieceCalibration:
    """Measure the display -> camera map.

    Parameters
    ----------
    show
        Puts an image on the eyepiece display (e.g. ``cv2.imshow`` on that screen).
    capture
        Returns a camera image taken while the pattern is shown (e.g.
        ``lambda: scope.snap().pixels``).
    display_size
        (width, height) of the display.
    grid
        Dot grid (columns, rows).
    """
    pattern, display_pts = dot_pattern(display_size, grid)
    show(pattern)
    cam = capture()
    camera_pts = find_dots(cam, grid)
    m, rms = estimate_affine(display_pts, camera_pts)
    return EyepieceCalibration(m, tuple(display_size), tuple(cam.shape[:2]), rms,
                               len(display_pts))
