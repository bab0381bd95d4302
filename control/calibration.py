"""Pixel <-> stage calibration from a few stage moves and phase correlation.

Micro-Manager's pixel-size affine is typed in by hand and is often wrong in the ways that
hurt closed-loop control most: a camera mounted rotated by 90 degrees, mirrored by an
extra relay, or a pixel size left from another objective. Steering with a wrong map
diverges instead of converging, so we *measure* the map: move the stage by known steps,
see how the image content shifts (phase correlation), and solve for the 2x2 matrix by
least squares.

Convention (see :class:`inscope.acquisition.frame.Frame`): ``A`` maps a pixel offset from the image
centre to the stage offset that centres it. Moving the stage by ``d`` shifts the image
content by ``s`` pixels with ``d = -A s``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inscope.acquisition.errors import MoveRefused
from inscope.acquisition.microscope import Microscope
from inscope.acquisition.safety import shown_range, shown_um

log = logging.getLogger(__name__)

__all__ = ["Calibration", "CalibrationError", "calibrate", "measure_shift"]


#: How far (relative) the microscope's pixel size may be from the one it reported when a
#: calibration was measured before :meth:`Calibration.apply` refuses the calibration:
#: objectives and magnification changers differ by 1.25x or more; one objective's
#: configured pixel size does not move.
STALE_PIXEL_SIZE = 0.1


def _pixel_size(affine: Any) -> float:
    """``sqrt(|det A|)`` of a 2x2 map, 0.0 when there is none or it is not a size."""
    try:
        px = math.sqrt(abs(float(np.linalg.det(np.asarray(affine, float).reshape(2, 2)))))
    except (TypeError, ValueError):
        return 0.0
    return px if math.isfinite(px) else 0.0


class CalibrationError(RuntimeError):
    """Calibration could not produce a trustworthy affine."""


@dataclass
class Calibration:
    """A measured pixel-to-stage map.

    Attributes
    ----------
    affine
        2x2 µm per pixel, our convention (pixel offset from centre -> stage offset).
    pixel_size_um
        ``sqrt(|det A|)``: the isotropic pixel size.
    rotation_deg
        Rotation of the camera relative to the stage. When ``flip`` is true the matrix is
        ``pixel_size * R(rotation) @ diag(-1, 1)`` (image x mirrored), else
        ``pixel_size * R(rotation)``.
    flip
        True when ``det A < 0`` (the image is mirrored relative to the stage).
    residual_px
        RMS distance (pixels) between the measured shifts and the fitted model; large
        values mean the moves were not seen cleanly (featureless field, backlash).
    reported_affine
        The affine the microscope reported before calibrating.
    disagreement
        ``||A - reported|| / ||reported||`` (Frobenius); 0 means they agree.
    warning
        Non-empty when the measured map disagrees with the reported one beyond the
        tolerance, saying what to fix.
    """

    affine: np.ndarray
    pixel_size_um: float
    rotation_deg: float
    flip: bool
    residual_px: float
    reported_affine: np.ndarray | None = None
    disagreement: float = 0.0
    warning: str = ""
    moves: list[dict[str, Any]] = field(default_factory=list)
    n_images: int = 0
    wall_s: float = 0.0
    microscope: str = ""

    # -- derived -----------------------------------------------------------------------
    @classmethod
    def from_affine(cls, affine: np.ndarray, residual_px: float = 0.0,
                    reported: np.ndarray | None = None, tolerance: float = 0.05,
                    **extra: Any) -> Calibration:
        """Decompose *affine* into pixel size / rotation / flip and compare to *reported*."""
        a = np.asarray(affine, float).reshape(2, 2)
        det = float(np.linalg.det(a))
        flip = det < 0
        px = math.sqrt(abs(det))
        m = a @ np.diag([-1.0, 1.0]) if flip else a
        rot = math.degrees(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))
        cal = cls(affine=a, pixel_size_um=px, rotation_deg=rot, flip=flip,
                  residual_px=float(residual_px), **extra)
        if reported is not None:
            rep = np.asarray(reported, float).reshape(2, 2)
            cal.reported_affine = rep
            cal.disagreement = float(np.linalg.norm(a - rep)) / max(float(np.linalg.norm(rep)),
                                                                    1e-12)
            if cal.disagreement > tolerance:
                rp = Calibration.from_affine(rep)
                cal.warning = (
                    f"Measured pixel-to-stage map disagrees with the microscope's by "
                    f"{100 * cal.disagreement:.0f}%: measured pixel size {px:.4g} µm, rotation "
                    f"{rot:.1f} deg, flip={flip}; reported {rp.pixel_size_um:.4g} µm, rotation "
                    f"{rp.rotation_deg:.1f} deg, flip={rp.flip}. Fix Micro-Manager's pixel "
                    "size calibration (Devices > Pixel Size Calibration, incl. the affine) or "
                    "apply this calibration (inscope uses it when given --calibration)."
                )
        return cal

    # -- io ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "affine": self.affine.tolist(),
            "pixel_size_um": self.pixel_size_um,
            "rotation_deg": self.rotation_deg,
            "flip": self.flip,
            "residual_px": self.residual_px,
            "reported_affine": None if self.reported_affine is None
            else self.reported_affine.tolist(),
            "disagreement": self.disagreement,
            "warning": self.warning,
            "moves": self.moves,
            "n_images": self.n_images,
            "wall_s": self.wall_s,
            "microscope": self.microscope,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Calibration file {path} not found; create one with `inscope calibrate "
                f"--out {path}`.") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"Calibration file {path} is not valid JSON ({e}); "
                             "re-run `inscope calibrate`.") from None
        try:
            a = np.asarray(d["affine"], float).reshape(2, 2)
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"Calibration file {path} has no valid 2x2 'affine'; "
                             "re-run `inscope calibrate`.") from None
        if not np.all(np.isfinite(a)) or abs(np.linalg.det(a)) < 1e-12:
            raise ValueError(f"Calibration file {path} holds a singular or non-finite affine "
                             f"{a.tolist()}; re-run `inscope calibrate`.")
        rep = d.get("reported_affine")
        cal = cls.from_affine(a, d.get("residual_px", 0.0))
        cal.reported_affine = None if rep is None else np.asarray(rep, float).reshape(2, 2)
        cal.disagreement = float(d.get("disagreement", 0.0))
        cal.warning = d.get("warning", "")
        cal.moves = d.get("moves", [])
        cal.n_images = int(d.get("n_images", 0))
        cal.wall_s = float(d.get("wall_s", 0.0))
        cal.microscope = d.get("microscope", "")
        return cal

    def apply(self, scope: Any, *, source: str | Path | None = None) -> None:
        """Make *scope* use this map everywhere (frames, steering, the overlay).

        Refused (``ValueError``, *source* named) when the microscope's own pixel size is
        no longer what it reported when this map was measured (by more than
        :data:`STALE_PIXEL_SIZE`; the file's ``reported_affine``): another objective or
        magnification changer is in the path, and its map scales every steering move by
        the wrong factor - the stage runs away from the cell instead of centring it. A
        map measured on purpose against a wrong pixel size in Micro-Manager still
        applies to that microscope. A file without ``reported_affine`` (written by hand,
        or by an older inscope) cannot tell a stale map from a correction: a warning
        then, when its pixel size differs as much. A microscope that reports no pixel
        size (0: none configured) is not checked.
        """
        where = f"Calibration {source}" if source else "This calibration"
        now = _pixel_size(getattr(scope, "affine", None))
        if self.reported_affine is not None:
            then = _pixel_size(self.reported_affine)
            if now and then and abs(now / then - 1) > STALE_PIXEL_SIZE:
                raise ValueError(
                    f"{where} was measured while the microscope reported {then:.4g} "
                    f"µm/pixel, but it now reports {now:.4g} µm/pixel ({now / then:.2f}x): "
                    "it belongs to another objective or magnification, and steering with "
                    "it would move the stage by the wrong distance every step. Run "
                    "`inscope calibrate` for this objective, or leave the calibration out.")
        elif now and abs(now / self.pixel_size_um - 1) > STALE_PIXEL_SIZE:
            log.warning("%s measures %.4g µm/pixel where the microscope reports %.4g "
                        "(%.2fx) and does not say what it reported when measured: if it "
                        "is from another objective, steering will move the stage by the "
                        "wrong distance (run `inscope calibrate` for this one).", where,
                        self.pixel_size_um, now, self.pixel_size_um / now)
        scope.affine = self.affine

    def mm_affine(self) -> list[float]:
        """Micro-Manager's 6-number pixel-size affine ``[a, b, tx, c, d, ty]`` for this
        map (translation 0), as :func:`inscope.acquisition.micromanager.affine_from_mm`
        reads it back."""
        a = self.affine
        return [float(a[0, 0]), float(a[0, 1]), 0.0, float(a[1, 0]), float(a[1, 1]), 0.0]


def write_to_micromanager(cal: Calibration, scope: Any) -> str:
    """Write *cal*'s pixel size and affine into the running Micro-Manager core's current
    pixel-size configuration (what Devices > Pixel Size Calibration edits).

    Only the core in memory changes: save the configuration in Micro-Manager (or with
    ``saveSystemConfiguration``) to keep it. Returns the configuration name written.

    Raises
    ------
    ValueError
        When *scope* is not a Micro-Manager microscope or no pixel-size configuration is
        active for the current objective.
    """
    core = getattr(scope, "core", None)
    if core is None or not hasattr(core, "get_current_pixel_size_config"):
        raise ValueError(f"{getattr(scope, 'name', scope)!r} is not a Micro-Manager "
                         "microscope; only a Micro-Manager core has a pixel-size "
                         "configuration to write to.")
    res_id = str(core.get_current_pixel_size_config())
    if not res_id:
        raise ValueError("Micro-Manager has no active pixel-size configuration for the "
                         "current objective; create one in Devices > Pixel Size "
                         "Calibration, then write the calibration again.")
    core.set_pixel_size_um(res_id, float(cal.pixel_size_um))
    core.set_pixel_size_affine(res_id, cal.mm_affine())
    scope.affine = None  # the core's own (now calibrated) affine is the map again
    return res_id


# -- measuring shifts ------------------------------------------------------------------
def _prep(img: np.ndarray, highpass_sigma: float) -> np.ndarray:
    f = img.astype(np.float32, copy=False)
    if highpass_sigma > 0:
        # Remove uneven illumination / vignetting: it does not move with the stage and
        # would pull the correlation peak towards zero shift.
        f = f - cv2.GaussianBlur(f, (0, 0), highpass_sigma)
    else:
        f = f - float(f.mean())
    return np.ascontiguousarray(f)


def measure_shift(ref: np.ndarray, img: np.ndarray, highpass_sigma: float = 8.0,
                  window: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Shift (dx, dy) in pixels of *img*'s content relative to *ref*, and the peak response.

    Phase correlation (OpenCV) on Hann-windowed, high-passed float32 images: sub-pixel,
    insensitive to brightness changes, ~1 ms at 512x512.
    """
    a = _prep(ref, highpass_sigma)
    b = _prep(img, highpass_sigma)
    if window is None:
        window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(a, b, window)
    return np.array([dx, dy], float), float(response)


def _consensus(D: np.ndarray, S: np.ndarray, tol_px: float = 1.0,
               tol_rel: float = 0.05) -> np.ndarray:
    """The largest set of moves that one map explains (boolean mask of the rows).

    Every pair of moves with independent shifts determines a map exactly (``d = -A s``
    for two rows is four equations); a move fits a map when its measured shift is within
    ``max(tol_px, tol_rel * |s|)`` of the shift the map predicts. The pair whose map fits
    the most moves (then the smallest total error) wins: a RANSAC over all pairs, which is
    at most 66 pairs for the default 12 moves.
    """
    n = len(S)
    lim = np.maximum(tol_px, tol_rel * np.linalg.norm(S, axis=1))
    best = np.ones(n, bool)
    best_key: tuple[int, float] | None = None
    for i in range(n):
        for j in range(i + 1, n):
            pair = S[[i, j]]
            if abs(np.linalg.det(pair)) < 0.05 * np.prod(np.linalg.norm(pair, axis=1)):
                continue  # (nearly) parallel shifts determine no map
            try:
                a = np.linalg.solve(-pair, D[[i, j]]).T
                err = np.linalg.norm(-(D @ np.linalg.inv(a).T) - S, axis=1)
            except np.linalg.LinAlgError:
                continue
            fits = err <= lim
            key = (int(fits.sum()), -float(err[fits].sum()))
            if best_key is None or key > best_key:
                best, best_key = fits, key
    return best


def _default_steps(scope: Microscope, shape: tuple[int, int]) -> list[float]:
    # 10% and 20% of the field: large enough to measure the scale precisely, small enough
    # that most of the field stays in common (phase correlation needs overlap).
    fov_um = min(shape) * float(scope.pixel_size_um)
    return [0.1 * fov_um, 0.2 * fov_um]


def calibrate(scope: Microscope, steps_um: list[float] | tuple[float, ...] | None = None,
              n: int = 1, tolerance: float = 0.05, min_response: float = 0.1,
              highpass_sigma: float = 8.0, apply: bool = False,
              max_misfit: float = 0.05) -> Calibration:
    """Measure the pixel-to-stage affine of *scope* by moving its stage.

    For every step size in *steps_um* the stage is moved by +/-step along x and y
    (and the diagonal, so both axes enter each column of the fit), *n* times each; the
    content shift of each image relative to a reference image at the start position is
    measured by phase correlation, and ``d = -A s`` is solved by least squares. The stage
    is returned to where it started.

    Parameters
    ----------
    scope
        Any :class:`~inscope.acquisition.microscope.Microscope`; moves go through its guard.
    steps_um
        Step sizes (µm). Default: 10% and 20% of the field of view (from the reported
        pixel size) so the moves stay small and the field keeps enough overlap.
    n
        Repeats of every move (averages out stage noise / quantisation).
    tolerance
        Relative disagreement with the reported affine above which a warning is logged.
    min_response
        Phase-correlation peak below which a measurement is discarded as untrustworthy.
        Where phase correlation finds the shift its peak is 0.4-0.9 (simulator,
        DemoCamera); where it finds none (a move too large for a small or sparse field:
        little content in common under the window) the highest noise peak is ~0.01-0.04,
        at a random shift. The old default 0.02 let such shifts into the fit.
    apply
        Also set ``scope.affine`` to the result.
    max_misfit
        Largest RMS misfit of the measured shifts to the fitted map, as a fraction of
        their RMS size; above it the moves did not see one consistent map (a shift
        measured wrongly, backlash) and no map is returned.

    Raises
    ------
    ValueError
        For steps that are not positive or repeats under 1 (before anything moves).
    CalibrationError
        When the stage starts outside the soft limits (before anything moves), when every
        move was refused (the guard's reason, e.g. no soft limits on a real stage), when
        fewer than two independent moves could be measured (featureless field, moves
        refused by the soft limits), or when the measured shifts do not fit one map
        (``max_misfit``).
    """
    if steps_um is not None and not (
            len(steps_um) and all(math.isfinite(v) and v > 0 for v in steps_um)):
        raise ValueError(f"steps_um must be positive stage steps in µm (e.g. 10% and 20% of "
                         f"the field of view, the default); got {list(steps_um)}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (repeats of every move) must be a whole number >= 1; got {n!r}.")
    t0 = time.perf_counter()
    reported = np.array(scope.affine, float)
    start = scope.position()
    lim = getattr(scope, "limits", None)
    if lim is not None and not lim.allows_xy(start.x, start.y):
        # The moves go out from the start and back to it: from outside the limits the
        # stage would be moved into them and left there, with too few moves to measure.
        raise CalibrationError(
            f"The stage is at ({shown_um(start.x)}, {shown_um(start.y)}) µm, outside the soft "
            f"limits x {shown_range(lim.x)}, y {shown_range(lim.y)}: "
            "calibration moves out from there and back; move the stage inside them first "
            "(e.g. Micro-Manager's stage control), or widen the limits. Nothing moved.")
    ref = scope.snap()
    n_images = 1
    if steps_um is None:
        steps_um = _default_steps(scope, ref.shape)
    window = cv2.createHanningWindow((ref.shape[1], ref.shape[0]), cv2.CV_32F)
    dirs = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)]
    d_rows: list[np.ndarray] = []
    s_rows: list[np.ndarray] = []
    used: list[dict[str, Any]] = []  # the move record of each row
    moves: list[dict[str, Any]] = []
    moved = False  # a stage that never left the start is not sent back (a refused move)
    try:
        for step in steps_um:
            for _ in range(max(1, int(n))):
                for ux, uy in dirs:
                    tx, ty = start.x + ux * step, start.y + uy * step
                    try:
                        scope.move_xy(tx, ty)
                    except MoveRefused as e:
                        moves.append({"target": [tx, ty], "refused": str(e)})
                        continue
                    moved = True
                    frame = scope.snap()
                    n_images += 1
                    pos = frame.position or scope.position()
                    d = np.array([pos.x - start.x, pos.y - start.y])
                    s, resp = measure_shift(ref.pixels, frame.pixels, highpass_sigma, window)
                    ok = resp >= min_response and np.linalg.norm(d) > 0
                    moves.append({"stage_delta_um": d.tolist(), "shift_px": s.tolist(),
                                  "response": resp, "used": bool(ok)})
                    if ok:
                        d_rows.append(d)
                        s_rows.append(s)
                        used.append(moves[-1])
    finally:
        try:
            if moved:
                scope.move_xy(start.x, start.y)
        except MoveRefused as e:  # pragma: no cover - start was allowed a moment ago
            log.warning("could not return the stage to the start position: %s", e)
    if moves and not moved:
        # One cause for all of them (a real stage without soft limits, steps above the
        # max step): the guard's own reason names it and the fix, where guessing at a
        # featureless field would send the microscopist looking for beads.
        raise CalibrationError(
            f"All {len(moves)} calibration moves were refused by the soft limits, nothing "
            f"was measured: {moves[0]['refused']}")
    if len(d_rows) < 2:
        raise CalibrationError(
            f"Only {len(d_rows)} usable calibration move(s) of {len(moves)}: the field may be "
            "featureless (move to a region with structure, e.g. beads or cells) or the moves "
            "were refused by the soft limits (start calibration away from the limits or pass "
            "smaller steps_um), or the steps were too large for the field (pass smaller "
            "steps_um).")
    D = np.array(d_rows)
    S = np.array(s_rows)
    # Shifts measured along one line only: the second singular value is then noise (an
    # absolute rank tolerance let it through and the solve failed with a numpy error).
    sv = np.linalg.svd(S, compute_uv=False)
    if sv[-1] < 0.05 * sv[0]:
        raise CalibrationError(
            "The measured image shifts are all along one line, so the 2x2 map is not "
            "determined; check that both stage axes really move the image.")
    # A shift measured wrongly (a noise peak that still passed min_response, e.g. a
    # large move on a small field of few cells) would bend a least-squares map: fit the
    # moves that agree with each other, and refuse when they are not the majority (or
    # only a pair, which always agrees with itself: two moves alone are taken as they are).
    agree = _consensus(D, S)
    k = int(agree.sum())
    if 2 * k < len(S) or 2 < len(S) and k < 3:
        raise CalibrationError(
            f"Only {k} of {len(S)} measured moves fit one pixel-to-stage map "
            "(the other image shifts were measured wrongly): calibrate on a field with more "
            "structure (beads, dense cells) or a larger camera field, or pass smaller "
            "steps_um.")
    for rec, ok in zip(used, agree, strict=True):
        if not ok:
            rec["used"] = False
            rec["outlier"] = True
    D, S = D[agree], S[agree]
    # D = -S A^T  ->  A^T = lstsq(-S, D)
    at, *_ = np.linalg.lstsq(-S, D, rcond=None)
    a = at.T
    pred = -(D @ np.linalg.inv(a).T)
    residual = float(np.sqrt(np.mean(np.sum((pred - S) ** 2, axis=1))))
    size = float(np.sqrt(np.mean(np.sum(S ** 2, axis=1))))
    if residual > max_misfit * size:
        raise CalibrationError(
            f"The measured image shifts do not fit one pixel-to-stage map (RMS misfit "
            f"{residual:.2f} px, {100 * residual / size:.0f}% of the {size:.1f} px shifts; "
            f"limit {100 * max_misfit:g}%), so the map would be wrong: calibrate on a field "
            "with more structure (beads, dense cells) or a larger camera field, or pass "
            "smaller steps_um.")
    cal = Calibration.from_affine(
        a, residual, reported=reported, tolerance=tolerance, moves=moves, n_images=n_images,
        wall_s=time.perf_counter() - t0, microscope=getattr(scope, "name", ""))
    if cal.warning:
        log.warning(cal.warning)
    if apply:
        cal.apply(scope)
    return cal
