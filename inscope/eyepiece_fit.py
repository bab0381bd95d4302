"""The eyepiece calibration pattern and the one fit that every calibration path uses.

The pattern is a ChArUco board (OpenCV's aruco module): a chessboard whose white squares
hold ArUco markers, each with its own id. Every chessboard corner that is found therefore
knows *which* corner it is, so the display -> camera map is recovered without guessing:
any rotation (the camera port is often turned against the eyepiece), a mirror (beam
splitters and prisms in the back-projection path add reflections), any scale and offset.
A symmetric dot grid cannot tell a half turn or a mirror from the identity, and matched
its dots in the wrong order for those paths while reporting a tiny residual.

A mirrored path shows every marker mirrored, which the aruco decoder does not read (or
reads as a wrong id). :func:`fit_pattern` therefore looks for the board in the camera image
as it is *and* flipped left-right; a correct reading has a proper (non-mirrored) map in
the image it was read in. Exactly one of the two must hold the board; if both do (two
patterns, strong reflections), the calibration refuses rather than pick one.

The fit reports how far the map can be trusted *where boxes are drawn*: the least-squares
95 % error of the fitted map at the worst point of the camera field that the display
covers, combined with the residual RMS of the corners (which holds detection noise and
any distortion an affine cannot follow). The calibration refuses when that expected error
exceeds a limit (1 camera pixel by default): a partly hidden pattern whose corners span
too little of the field is refused for this reason, with the numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from inscope.acquisition.frame import colour_to_grey
from inscope.detector.preprocess import without_hot_pixels
from inscope.overlay import HOT_PIXEL_SIGMA, stretch_to_uint8

#: 95 % radius of an isotropic 2-D Gaussian, in units of its per-axis sigma.
_R95 = math.sqrt(-2.0 * math.log(0.05))
#: Fewest corners a fit is made from (12 unknowns would be fitted exactly by 6).
MIN_CORNERS = 8
#: Smallest share of the found corners that the fitted map must explain (RANSAC inliers).
MIN_INLIER_FRACTION = 0.9
#: 4x4-bit dictionaries (largest bits, so smallest readable markers), by size.
_DICTIONARIES = ((50, "DICT_4X4_50"), (100, "DICT_4X4_100"), (250, "DICT_4X4_250"),
                 (1000, "DICT_4X4_1000"))


class CalibrationError(ValueError):
    """The calibration image does not give a trustworthy map; the message says why."""


@dataclass(frozen=True)
class CharucoPattern:
    """The ChArUco board shown on the eyepiece display.

    Attributes
    ----------
    display_size
        (width, height) of the display in pixels.
    squares
        (columns, rows) of chessboard squares.
    square_px
        Side of one square in display pixels.
    marker_ratio
        Marker side / square side.
    dictionary
        Name of the OpenCV aruco dictionary (``DICT_4X4_*``).
    """

    display_size: tuple[int, int]
    squares: tuple[int, int]
    square_px: int
    marker_ratio: float = 0.75
    dictionary: str = "DICT_4X4_50"

    @classmethod
    def for_display(cls, display_size: tuple[int, int],
                    squares: tuple[int, int] | None = None) -> CharucoPattern:
        """The default board for a display: squares of 1/8 of the display height (readable
        from a display -> camera scale of about 0.2 up to 1.5 on a 512-pixel camera),
        filling the display with a 4 % margin, or *squares* (columns, rows) of them."""
        w, h = (int(v) for v in display_size)
        if min(w, h) < 64:
            raise ValueError(f"an eyepiece display of {w}x{h} pixels is too small for a "
                             "calibration pattern; give its real size (--display-size WxH).")
        usable_w, usable_h = int(w * 0.92), int(h * 0.92)
        if squares is None:
            sq = max(h // 8, 8)
            squares = (max(usable_w // sq, 3), max(usable_h // sq, 3))
        cols, rows = (int(v) for v in squares)
        if cols < 3 or rows < 3:
            raise ValueError(f"a ChArUco board needs at least 3x3 squares; got {cols}x{rows}.")
        sq = min(usable_w // cols, usable_h // rows)
        if sq < 12:
            raise ValueError(f"{cols}x{rows} squares leave {sq} display px per square on a "
                             f"{w}x{h} display; use fewer squares (at least 12 px each).")
        n_markers = cols * rows // 2
        name = next((n for size, n in _DICTIONARIES if size >= n_markers), None)
        if name is None:
            raise ValueError(f"{cols}x{rows} squares need {n_markers} markers, more than the "
                             "largest 4x4 dictionary (1000); use fewer squares.")
        return cls((w, h), (cols, rows), sq, 0.75, name)

    # -- geometry --------------------------------------------------------------------------
    @property
    def origin(self) -> tuple[int, int]:
        """Display pixel of the board's top-left corner (the board is centred)."""
        cols, rows = self.squares
        w, h = self.display_size
        return ((w - cols * self.square_px) // 2, (h - rows * self.square_px) // 2)

    @property
    def corner_count(self) -> int:
        cols, rows = self.squares
        return (cols - 1) * (rows - 1)

    def board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(self.squares, float(self.square_px),
                                      self.marker_ratio * self.square_px, d)

    def corner_positions(self) -> np.ndarray:
        """(corner_count, 2) display pixels of every chessboard corner, by corner id.

        OpenCV puts a corner between pixel columns k-1 and k of the board image at
        x = k - 0.5 (pixel centres at integers), hence the half-pixel shift."""
        xy = np.asarray(self.board().getChessboardCorners(), np.float64)[:, :2]
        return xy + np.asarray(self.origin, np.float64) - 0.5

    def image(self) -> np.ndarray:
        """(H, W) uint8 display image: the board in white/black on a black display."""
        cols, rows = self.squares
        w, h = self.display_size
        size = (cols * self.square_px, rows * self.square_px)
        board = self.board().generateImage(size, marginSize=0, borderBits=1)
        img = np.zeros((h, w), np.uint8)
        x0, y0 = self.origin
        img[y0:y0 + size[1], x0:x0 + size[0]] = board
        return img

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["display_size"], d["squares"] = list(self.display_size), list(self.squares)
        return {"pattern": "charuco", **d}

    @classmethod
    def from_dict(cls, d: dict) -> CharucoPattern:
        if d.get("pattern") != "charuco":
            raise ValueError("not a ChArUco pattern description (no \"pattern\": "
                             "\"charuco\").")
        return cls(tuple(d["display_size"]), tuple(d["squares"]), int(d["square_px"]),
                   float(d["marker_ratio"]), str(d["dictionary"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CharucoPattern:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"pattern description {path} not found; it is written "
                                    "beside the PNG by --pattern-out.") from None
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"pattern description {path} is not valid ({e}); write it "
                             "again with --pattern-out.") from None


@dataclass
class PatternFit:
    """A fitted display -> camera map and how far it can be trusted.

    Attributes
    ----------
    display_to_camera
        2x3 affine, display pixel -> camera pixel.
    mirrored
        True if the map includes a reflection (negative determinant).
    corners_found, corners_used
        Chessboard corners read in the image, and those the fit kept (RANSAC inliers).
    rms_px, max_residual_px
        Residual of the kept corners (camera px).
    fit_error_px
        95 % error of the fitted map at the worst point of the field that the display
        covers (least-squares statistics).
    expected_error_px
        Expected overlay error: sqrt(rms^2 + fit_error^2) (camera px). Detection noise and
        distortion cannot be told apart in one image, so this counts both.
    coverage
        Share of the drawable field (camera field inside the display's footprint) that the
        convex hull of the used corners covers.
    """

    display_to_camera: np.ndarray
    mirrored: bool
    corners_found: int
    corners_used: int
    rms_px: float
    max_residual_px: float
    fit_error_px: float
    expected_error_px: float
    coverage: float

    @property
    def scale(self) -> float:
        """Camera pixels per display pixel (geometric mean of the two axes)."""
        return float(math.sqrt(abs(np.linalg.det(self.display_to_camera[:, :2]))))

    @property
    def rotation_deg(self) -> float:
        """Rotation (degrees, 0-360, clockwise on screen as y points down) of the display
        in the camera image, after a mirror in display x if :attr:`mirrored`."""
        m = self.display_to_camera[:, :2]
        if self.mirrored:
            m = m @ np.diag([-1.0, 1.0])
        return float(math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360.0)


# -- detection -------------------------------------------------------------------------
def to_uint8(img: np.ndarray) -> np.ndarray:
    """Any camera image (uint8/uint16/float, gray or BGR) to 8-bit gray for the detector,
    stretched between the 0.5th and 99.8th percentile of its pixels with hot pixels
    lowered (:func:`inscope.detector.preprocess.without_hot_pixels`: from 0.2 % of the
    frame they were the top percentile and squashed the pattern to grey)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = colour_to_grey(img)
    if img.ndim != 2:
        raise CalibrationError(f"the camera image has shape {img.shape}; give one 2-D "
                               "(gray) or colour image, not a stack.")
    f = np.nan_to_num(img.astype(np.float32))
    sample = without_hot_pixels(np.ascontiguousarray(f[::2, ::2]), HOT_PIXEL_SIGMA)
    lo, hi = np.percentile(sample, (0.5, 99.8))
    if hi - lo <= 1e-6 * max(abs(hi), 1.0):
        raise CalibrationError("the camera image is uniform (no pattern in it): is the "
                               "pattern on the eyepiece display, the light path to the "
                               "camera open and the exposure long enough?")
    hi = max(hi, _bright_level(sample, float(lo)))
    # (below the low percentile black: a dead pixel in a black square is no white speck)
    return stretch_to_uint8(f, float(lo), float(hi))


def _bright_level(sample: np.ndarray, lo: float) -> float:
    """The 99.8th percentile of the pixels Otsu's threshold puts on the bright side.

    The frame's own 99.8th percentile is the pattern's white only while the white
    squares cover more than 0.2 % of the frame. A display that shows in a small part of
    a large camera field (a 2048 x 2048 sCMOS, the display at a scale of ~0.2) lights
    less: that percentile then falls among the grey edges of the markers, the stretch
    saturates their black bits and no marker is read. On the bright side of the
    threshold the white squares are a large share whatever their share of the frame."""
    top = float(sample.max())
    if top <= lo:
        return top
    grey = np.clip((sample - lo) * (255.0 / (top - lo)), 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bright = sample[grey > t]
    return float(np.percentile(bright, 99.8)) if bright.size else top


@dataclass
class _Detectors:
    markers: cv2.aruco.ArucoDetector
    board: cv2.aruco.CharucoDetector


def _detectors(pattern: CharucoPattern) -> _Detectors:
    params = cv2.aruco.DetectorParameters()
    # markers down to ~10 camera px (a display -> camera scale of 0.2) must be read
    params.minMarkerPerimeterRate = 0.01
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    board = pattern.board()
    return _Detectors(cv2.aruco.ArucoDetector(board.getDictionary(), params),
                      cv2.aruco.CharucoDetector(board, cv2.aruco.CharucoParameters(), params))


@dataclass
class _Reading:
    ids: np.ndarray  # corner ids
    cam: np.ndarray  # (N, 2) camera pixels in the unflipped, unscaled image
    markers: int
    marker_side_px: float  # mean marker side in camera px (0 if none)


def _read(det: _Detectors, img8: np.ndarray, flipped: bool, upsample: int = 1) -> _Reading:
    """Read the board in the image (flipped left-right and/or upsampled first)."""
    im = cv2.flip(img8, 1) if flipped else img8
    if upsample > 1:
        # markers of ~2 px per bit (a display -> camera scale near 0.2) decode only after
        # interpolation gives the detector's contour and bit sampling room
        im = cv2.resize(im, None, fx=upsample, fy=upsample, interpolation=cv2.INTER_CUBIC)
    mc, mi, _rejected = det.markers.detectMarkers(im)
    empty = _Reading(np.zeros(0, int), np.zeros((0, 2)), 0, 0.0)
    if mi is None or not len(mi):
        return empty
    # A marker id seen twice (a mirrored marker misread as another id, a second pattern)
    # would pull the corners around both copies: keep only ids seen once.
    ids = np.asarray(mi).ravel()
    uniq, counts = np.unique(ids, return_counts=True)
    once = np.isin(ids, uniq[counts == 1])
    if not once.any():
        return empty
    mc = tuple(c for c, k in zip(mc, once, strict=True) if k)
    mi = np.asarray(mi).reshape(-1, 1)[once]
    quads = np.asarray(mc, np.float64).reshape(-1, 4, 2)
    side = float(np.linalg.norm(np.diff(quads, axis=1, append=quads[:, :1]), axis=2)
                 .mean()) / upsample
    cc, ci, _, _ = det.board.detectBoard(im, markerCorners=mc, markerIds=mi)
    if ci is None or cc is None or len(ci) == 0:
        return _Reading(np.zeros(0, int), np.zeros((0, 2)), len(mi), side)
    # pixel centres: x_up = upsample * x + (upsample - 1) / 2
    pts = (cc.reshape(-1, 2).astype(np.float64) - (upsample - 1) / 2) / upsample
    if flipped:
        pts[:, 0] = img8.shape[1] - 1 - pts[:, 0]
    return _Reading(ci.ravel().astype(int), pts, len(mi), side)


def _lstsq_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    x = np.column_stack([src, np.ones(len(src))])
    beta, *_ = np.linalg.lstsq(x, dst, rcond=None)
    return beta.T  # (2, 3)


def _drawable_polygon(m: np.ndarray, display_size: tuple[int, int],
                      camera_shape: tuple[int, int]) -> np.ndarray:
    """Vertices (K, 2) of the camera field inside the display's footprint."""
    w, h = display_size
    disp = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    foot = cv2.transform(disp.reshape(-1, 1, 2), m).reshape(-1, 2)
    hh, ww = camera_shape
    field = np.array([[-0.5, -0.5], [ww - 0.5, -0.5], [ww - 0.5, hh - 0.5], [-0.5, hh - 0.5]])
    hull = cv2.convexHull(foot.astype(np.float32))
    area, poly = cv2.intersectConvexConvex(field.astype(np.float32), hull)
    if area <= 0 or poly is None:
        return field
    return poly.reshape(-1, 2).astype(np.float64)


def field_error(m_fit: np.ndarray, m_true: np.ndarray, display_size: tuple[int, int],
                camera_shape: tuple[int, int]) -> float:
    """Largest distance (camera px) between where two display -> camera maps put the same
    display point, over the part of the camera field that the true display covers.

    The difference of two affines is affine, so its largest norm over a convex region is
    at a vertex: the vertices of that region are enough."""
    poly = _drawable_polygon(_as_2x3(m_true), display_size, camera_shape)
    disp = cv2.transform(poly.reshape(-1, 1, 2), cv2.invertAffineTransform(_as_2x3(m_true)))
    diff = cv2.transform(disp, _as_2x3(m_fit)).reshape(-1, 2) - poly
    return float(np.linalg.norm(diff, axis=1).max())


def _as_2x3(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return m[:2] if m.shape == (3, 3) else m


def _fit_candidate(ids: np.ndarray, cam: np.ndarray, pattern: CharucoPattern,
                   camera_shape: tuple[int, int]) -> PatternFit | None:
    """Robust affine fit of one reading, with its error statistics; None if too few."""
    if len(ids) < MIN_CORNERS:
        return None
    disp = pattern.corner_positions()[ids]
    m, inl = cv2.estimateAffine2D(disp, cam, method=cv2.RANSAC, ransacReprojThreshold=2.0,
                                  maxIters=4000, confidence=0.999)
    if m is None:
        return None
    keep = inl.ravel().astype(bool)
    if keep.sum() < MIN_CORNERS:
        return None
    m = _lstsq_affine(disp[keep], cam[keep])  # least squares on the inliers
    res = cv2.transform(disp[keep].reshape(-1, 1, 2), m).reshape(-1, 2) - cam[keep]
    n = int(keep.sum())
    r2 = (res ** 2).sum(1)
    rms = float(np.sqrt(r2.mean()))
    sigma = math.sqrt(float(r2.sum()) / max(2 * n - 6, 1))  # per axis
    # 95 % error of the fitted map at the vertices of the drawable field
    x = np.column_stack([disp[keep], np.ones(n)])
    xtx_inv = np.linalg.inv(x.T @ x)
    poly = _drawable_polygon(m, pattern.display_size, camera_shape)
    pd = cv2.transform(poly.reshape(-1, 1, 2), cv2.invertAffineTransform(m)).reshape(-1, 2)
    f = np.column_stack([pd, np.ones(len(pd))])
    lev = np.einsum("ij,jk,ik->i", f, xtx_inv, f)
    fit95 = float(_R95 * sigma * np.sqrt(lev.max()))
    hull_area = float(cv2.contourArea(cv2.convexHull(cam[keep].astype(np.float32))))
    field_area = float(cv2.contourArea(poly.astype(np.float32)))
    return PatternFit(m, bool(np.linalg.det(m[:, :2]) < 0), len(ids), n, rms,
                      float(np.sqrt(r2.max())), fit95, float(math.hypot(rms, fit95)),
                      hull_area / field_area if field_area > 0 else 0.0)


def _not_found_message(pattern: CharucoPattern, seen: list[_Reading],
                       shape: tuple[int, int]) -> str:
    best = max(seen, key=lambda r: (len(r.ids), r.markers))
    made_for = (f"made for a {pattern.display_size[0]}x{pattern.display_size[1]} display "
                f"with {pattern.squares[0]}x{pattern.squares[1]} squares")
    if best.markers == 0:
        return ("no calibration markers found in the camera image: check that the pattern "
                "is on the eyepiece display, in focus in the camera and not saturated, and "
                f"that it is the one {made_for}. If it looks tiny in the camera image, make "
                "one with fewer, larger squares (--squares).")
    square_cam = best.marker_side_px / pattern.marker_ratio
    if square_cam * 5 > min(shape):
        return (f"only {len(best.ids)} pattern corners ({best.markers} markers) could be read, "
                f"fewer than the {MIN_CORNERS} needed: each square is ~{square_cam:.0f} camera "
                "px, so few fit in the camera field. Make a pattern with more, smaller "
                f"squares (e.g. --squares {2 * pattern.squares[0]}x{2 * pattern.squares[1]}).")
    return (f"only {len(best.ids)} of {pattern.corner_count} pattern corners "
            f"({best.markers} markers) could be read, fewer than the {MIN_CORNERS} needed "
            "for a fit you can trust: bring more of the pattern into the camera field, focus "
            "it, or make one with fewer, larger squares (--squares).")


def fit_pattern(camera_image: np.ndarray, pattern: CharucoPattern) -> PatternFit:
    """Find *pattern* in a camera image and fit the display -> camera affine.

    Raises
    ------
    CalibrationError
        No board, too few corners, a reading that is not one consistent map, or a board
        readable both as shown and mirrored; the message says which and what to change.
    """
    img8 = to_uint8(camera_image)
    shape = img8.shape[:2]
    det = _detectors(pattern)
    fits: dict[bool, PatternFit] = {}
    seen: list[_Reading] = []
    for flipped in (False, True):
        for upsample in (1, 2):
            rd = _read(det, img8, flipped, upsample)
            seen.append(rd)
            fit = _fit_candidate(rd.ids, rd.cam, pattern, shape)
            # read in the unflipped image, a correct board gives a proper map, and a
            # mirrored one in the flipped image; anything else is a misread marker set
            if fit is not None and fit.mirrored == flipped:
                if flipped not in fits or fit.corners_used > fits[flipped].corners_used:
                    fits[flipped] = fit
            if len(rd.ids) >= 0.5 * pattern.corner_count:
                break  # read well enough at this size: no need to upsample
    if not fits:
        raise CalibrationError(_not_found_message(pattern, seen, shape))
    if len(fits) == 2:
        a, b = fits[False], fits[True]
        raise CalibrationError(
            f"the pattern reads both as shown ({a.corners_used} corners) and mirrored "
            f"({b.corners_used} corners): two patterns or a strong reflection are in view. "
            "Show one pattern only, block stray reflections, then retry.")
    fit = next(iter(fits.values()))
    if fit.corners_used < MIN_INLIER_FRACTION * fit.corners_found:
        raise CalibrationError(
            f"only {fit.corners_used} of the {fit.corners_found} corners read agree on one "
            "map: parts of the pattern are distorted or misread (reflections, a second "
            "screen, strong lens distortion). Remove stray light and retry.")
    return fit


def render_camera_view(display_image: np.ndarray, display_to_camera: np.ndarray,
                       camera_shape: tuple[int, int], *, blur_px: float = 0.0,
                       noise: float = 0.0, signal: float = 10_000.0,
                       background: float = 300.0, hide: tuple[int, int, int, int] | None = None,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """What a camera sees of a display image through a known display -> camera affine.

    The forward model the calibration tests and ``benchmarks/bench_eyepiece_calibration``
    check the fit against (and a way to try a pattern for a planned setup): each camera
    pixel integrates the display over its area (an anti-aliasing blur of ~0.45 camera px
    before the warp, where the display is finer than the camera), optics blur
    (*blur_px*, Gaussian sigma in camera px), a background and signal level in ADU,
    Gaussian noise (sigma *noise* ADU), and *hide* (x0, y0, x1, y1) covering part of the
    field (as a field stop or a dust particle would). Returns uint16.
    """
    m = _as_2x3(display_to_camera)
    src: np.ndarray = display_image.astype(np.float32) / 255.0
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale < 1:
        src = cv2.GaussianBlur(src, (0, 0), 0.45 / scale)
    h, w = camera_shape
    cam = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR)
    if blur_px > 0:
        cam = cv2.GaussianBlur(cam, (0, 0), blur_px)
    cam = cam * signal + background
    if noise > 0:
        cam = cam + (rng or np.random.default_rng(0)).normal(0, noise, cam.shape)
    if hide is not None:
        x0, y0, x1, y1 = hide
        cam[y0:y1, x0:x1] = background
    return cam.clip(0, 65535).astype(np.uint16)


def display_to_camera_map(display_size: tuple[int, int], camera_shape: tuple[int, int],
                          scale: float, rotation_deg: float = 0.0, mirrored: bool = False,
                          offset_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A display -> camera affine from its parts: mirror in display x first, then rotate
    and scale, with the display centre landing *offset_px* from the camera centre."""
    th = math.radians(rotation_deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    a = scale * rot @ (np.diag([-1.0, 1.0]) if mirrored else np.eye(2))
    c_disp = np.array([display_size[0] / 2, display_size[1] / 2])
    c_cam = np.array([camera_shape[1] / 2, camera_shape[0] / 2]) + np.asarray(offset_px)
    return np.column_stack([a, c_cam - a @ c_disp])
