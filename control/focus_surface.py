"""A focus surface: where the focus is across the slide, learnt from cells already focused.

A slide is never flat: it is tilted on the stage and bends by a few µm over a
millimetre. Autofocusing every cell from scratch costs 7-8 images; once a few cells have
been focused their z values predict the next cell's to within a micron, and a short
3-image sweep around the prediction (plus a refining pair) is enough.

The model grows with the data: the mean z with 1-2 points, a plane with 3-9, then a
smoothing thin-plate spline (SciPy ``RBFInterpolator``) that follows bending without
chasing one bad focus. The plane's tilt has a prior (ridge regression): cells found one
after another often lie along a line (down one column of a field), and an unregularised
plane through them turns their own height differences into a steep tilt across the
line, which predicts a cell 60 µm to the side 10 µm off (seen on a HeLa z-stack: a full
search for that cell). A tilt is believed as far as the points' spread supports it.
:attr:`FocusSurface.residual_um` (leave-one-out RMS of the plane or spline) sizes the
search around each prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FocusSurface"]


@dataclass
class FocusSurface:
    """Focus z (µm) as a function of stage (x, y) µm, fitted through focused points.

    Parameters
    ----------
    plane_from
        Points needed for a plane (below: their mean).
    spline_from
        Points needed for a smoothing thin-plate spline (below: the plane).
    smoothing
        RBF smoothing; larger follows single points less.
    max_residual_um
        Points further than this from the current fit (and 3x its residual) are kept
        out of the fit: one autofocus on debris must not bend the surface.
    tilt_prior
        Typical slide tilt (µm of z per µm of x or y; 0.02 = 20 µm over a mm): the scale
        of the zero-mean prior on the plane's slopes.
    focus_scatter_um
        Typical scatter of cells' foci about the surface (cells at their own heights,
        focus noise). With *tilt_prior* it sets the ridge weight
        ``(focus_scatter_um / tilt_prior) ** 2`` (µm²): points spread over much more
        than ``focus_scatter_um / tilt_prior`` (50 µm) fix the tilt themselves.
    """

    plane_from: int = 3
    spline_from: int = 10
    smoothing: float = 0.1
    max_residual_um: float = 5.0
    tilt_prior: float = 0.02
    focus_scatter_um: float = 1.0
    points: list[tuple[float, float, float]] = field(default_factory=list)
    rejected: int = 0
    _resid: float = math.nan

    def __len__(self) -> int:
        return len(self.points)

    def add(self, x: float, y: float, z: float) -> bool:
        """Add a focused point; False when it is an outlier against the current fit."""
        if len(self.points) >= self.plane_from:
            pred = self.predict(x, y)
            assert pred is not None
            lim = max(self.max_residual_um, 3 * (self.residual_um or 0.0))
            if abs(z - pred) > lim:
                self.rejected += 1
                return False
        self.points.append((float(x), float(y), float(z)))
        self._resid = math.nan
        return True

    def _fit(self, pts: np.ndarray):
        n = len(pts)
        xy, z = pts[:, :2], pts[:, 2]
        if n < self.plane_from:
            m = float(z.mean())
            return lambda q: np.full(len(q), m)  # noqa: E731
        c = xy.mean(axis=0)
        # ridge on the two slopes (not the offset): two prior rows pull them to zero
        # with weight (scatter / tilt prior)^2, the Gaussian-prior least squares
        w = self.focus_scatter_um / self.tilt_prior
        a = np.vstack([np.column_stack([np.ones(n), xy - c]),
                       [[0.0, w, 0.0], [0.0, 0.0, w]]])
        coef, *_ = np.linalg.lstsq(a, np.concatenate([z, [0.0, 0.0]]), rcond=None)

        def plane(q):
            return coef[0] + (np.asarray(q) - c) @ coef[1:]

        if n < self.spline_from:
            return plane
        from scipy.interpolate import RBFInterpolator

        # the spline models what the plane leaves; scaled to ~unit coordinates
        scale = max(float(np.ptp(xy, axis=0).max()), 1e-6)
        rbf = RBFInterpolator((xy - c) / scale, z - plane(xy), kernel="thin_plate_spline",
                              smoothing=self.smoothing, degree=1)
        return lambda q: plane(q) + rbf((np.atleast_2d(q) - c) / scale)

    def predict(self, x: float, y: float) -> float | None:
        """Predicted focus z at (x, y); None before the first point.

        Kept within the z range of the points plus half that range (at least 2 µm) on
        each side: a spline through noisy foci (cells at their own heights) can swing
        far outside them away from the points, and a prediction beyond the soft limits
        would only have its moves refused.
        """
        if not self.points:
            return None
        pts = np.asarray(self.points, float)
        f = self._fit(pts)
        lo, hi = float(pts[:, 2].min()), float(pts[:, 2].max())
        m = max(2.0, 0.5 * (hi - lo))
        return float(np.clip(f(np.array([[x, y]], float))[0], lo - m, hi + m))

    def median_z(self) -> float | None:
        """The median focus z of the points (None before the first)."""
        return float(np.median([p[2] for p in self.points])) if self.points else None

    @property
    def residual_um(self) -> float | None:
        """Leave-one-out RMS error of the predictions (µm); None with < 3 points."""
        n = len(self.points)
        if n < 3:
            return None
        if math.isnan(self._resid):
            pts = np.asarray(self.points, float)
            last = pts[-min(n, 30):]  # the recent ones (cost grows with n)
            errs = []
            for i in range(len(last)):
                rest = np.delete(pts, n - len(last) + i, axis=0)
                f = self._fit(rest)
                errs.append(float(f(last[i:i + 1, :2])[0]) - last[i, 2])
            self._resid = float(np.sqrt(np.mean(np.square(errs))))
        return self._resid
