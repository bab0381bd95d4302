"""The focus surface find-and-image predicts each cell's focus from (issue 12, part 5):
a plane, then a smoothing spline through the cells already focused; outliers (a focus on
debris) refused; an uncertainty that grows away from the points it has seen."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.control.focus_surface import FocusSurface


def test_focus_surface_plane_spline_and_outliers():
    fs = FocusSurface()
    assert fs.predict(0, 0) is None
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(-500, 500, (6, 2)):
        assert fs.add(x, y, 3.0 + 0.01 * x - 0.02 * y)
    assert fs.predict(100.0, 200.0) == pytest.approx(3.0 + 1.0 - 4.0, abs=1e-6)
    assert fs.residual_um == pytest.approx(0.0, abs=1e-6)
    assert not fs.add(0.0, 0.0, 40.0)  # a focus on debris does not bend it
    bent = FocusSurface()
    for x, y in rng.uniform(-500, 500, (30, 2)):
        bent.add(x, y, 0.01 * x + 2e-5 * (x * x + y * y))  # bent: spline from 10 points
    truth = 0.01 * 300 + 2e-5 * (300 ** 2 + 100 ** 2)
    plane = FocusSurface(spline_from=10 ** 6)
    plane.points = list(bent.points)
    assert abs(bent.predict(300.0, -100.0) - truth) < 0.3
    assert abs(plane.predict(300.0, -100.0) - truth) > 0.5  # a plane cannot bend


def test_focus_surface_uncertainty_grows_beyond_the_points():
    """Seven cells focused in one 60 µm corner of a tilted slide, each +/-0.3 µm off the
    plane: among them the prediction is good to about the residual, but 100 µm away the
    fitted tilt's error is multiplied by the distance, and the uncertainty says so (the
    focus sweep there is sized from it)."""
    rng = np.random.default_rng(4)
    fs = FocusSurface()
    for x, y in rng.uniform(0, 60, (7, 2)):
        fs.add(x, y, 0.01 * x - 0.005 * y + rng.normal(0, 0.3))
    resid = fs.residual_um
    assert resid is not None
    near = fs.uncertainty_um(30.0, 30.0)
    far = fs.uncertainty_um(-100.0, 30.0)
    assert near is not None and far is not None
    assert 0.5 * resid < near < 1.2 * resid
    assert far > 2.0 * near
    # and it is not alarmist: the true focus there lies within 2.5 of them
    assert abs(fs.predict(-100.0, 30.0) - (0.01 * -100 - 0.005 * 30)) < 2.5 * far
    assert FocusSurface(points=[(0.0, 0.0, 1.0), (5.0, 0.0, 1.1)]).uncertainty_um(0, 0) is None


def test_focus_surface_bends_among_its_points_and_only_tilts_beyond_them():
    """A bowl-shaped slide scanned over 100 x 100 µm: inside the scanned area the spline
    follows the bend, but 300 µm beyond it the prediction is the plane's, not the
    spline's extrapolated curvature (on a HeLa z-stack that ran 4-10 µm below the plane
    50-100 µm past the scanned cells, each a full focus search)."""
    rng = np.random.default_rng(1)
    fs = FocusSurface()
    for x, y in rng.uniform(0, 100, (25, 2)):
        assert fs.add(x, y, 2e-3 * ((x - 50) ** 2 + (y - 50) ** 2) + rng.normal(0, 0.05))
    plane = FocusSurface(spline_from=10 ** 6)
    plane.points = list(fs.points)
    # the bowl's bottom (z 0), where the plane lies 2-3 µm above it
    assert abs(fs.predict(50.0, 50.0)) < 0.6
    assert abs(plane.predict(50.0, 50.0)) > 2.0
    far = fs.predict(400.0, 50.0)
    assert far == pytest.approx(plane.predict(400.0, 50.0), abs=0.05)


def test_focus_surface_does_not_read_a_tilt_into_cells_along_a_line():
    """Cells visited down one column (x within 1.5 µm), each at its own height: an
    unregularised plane made their height differences a steep x tilt and predicted the
    next cell, 65 µm to the side, several µm off (a HeLa z-stack: 12-13 focus
    images)."""
    fs = FocusSurface()
    for x, y, z in [(103.2, 367.9, 7.9), (104.7, 336.8, 8.9), (103.9, 352.0, 9.6),
                    (104.4, 321.5, 8.4)]:
        assert fs.add(x, y, z)
    pred = fs.predict(167.0, 389.0)
    assert pred is not None and 7.4 <= pred <= 10.1, pred


def test_focus_surface_spline_does_not_tilt_across_a_line_of_cells_either():
    """Twelve cells down one column (spline from 10 points), tilted along it: the
    spline's own linear term tilted it across the column as the plane once did
    (2.5 µm on the line, 5.3 µm 65 µm to the side); it now bends along the line only."""
    fs = FocusSurface()
    rng = np.random.default_rng(0)
    for k in range(12):
        assert fs.add(100.0 + rng.normal(0, 0.5), 10.0 * k,
                      2.0 + 0.1 * k + rng.normal(0, 0.2))
    on_line, beside = fs.predict(100.0, 50.0), fs.predict(165.0, 50.0)
    assert on_line is not None and beside is not None
    assert abs(beside - on_line) < 0.3, (on_line, beside)
    assert abs(on_line - 2.5) < 0.4  # and it still follows the tilt along the line


def test_focus_surface_predictions_stay_near_the_foci_it_has_seen():
    """Cells at their own heights (a 3-D sample): a spline through them swung to 22-24 µm
    away from the points on a HeLa stack whose cells lie at 8-12 µm."""
    fs = FocusSurface()
    rng = np.random.default_rng(3)
    for x, y in rng.uniform(0, 600, (30, 2)):
        fs.add(x, y, 10.0 + rng.uniform(-2.0, 2.0))
    zs = [p[2] for p in fs.points]
    lo, hi = min(zs), max(zs)
    m = max(2.0, 0.5 * (hi - lo))
    for x, y in [(-3000.0, 0.0), (5000.0, 5000.0), (300.0, 300.0), (0.0, 900.0)]:
        assert lo - m <= fs.predict(x, y) <= hi + m
    assert fs.median_z() == pytest.approx(float(np.median(zs)))
    assert FocusSurface().median_z() is None


# -- exact values: the documented rules, each computed here from its definition ----------
def _plane_lstsq(pts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The least-squares plane z = a + b x + c y through *pts*, at *q* (ordinary least
    squares, independent of the surface's own SVD form)."""
    X = np.c_[np.ones(len(pts)), pts[:, :2]]
    coef = np.linalg.lstsq(X, pts[:, 2], rcond=None)[0]
    return coef[0] + np.atleast_2d(q) @ coef[1:]


def test_a_plane_from_exactly_plane_from_points_and_the_mean_below():
    """Three cells are enough for a tilt (plane_from = 3): the plane through them, exactly;
    two give their mean (nothing says how the slide tilts yet)."""
    fs = FocusSurface()
    for p in [(0.0, 0.0, 1.0), (60.0, 0.0, 1.6)]:
        fs.add(*p)
    assert fs.predict(30.0, 30.0) == pytest.approx(1.3)
    fs.add(0.0, 60.0, 0.4)
    # z = 1 + 0.01 x - 0.01 y
    assert fs.predict(30.0, 10.0) == pytest.approx(1.0 + 0.3 - 0.1, abs=1e-9)


def test_the_plane_tilts_only_along_axes_the_points_spread_over_by_min_spread_um():
    """Points 9 µm either side of x = 0 (RMS 9 < min_spread_um 10) and 30 µm either side
    of y = 0: the x slope in their heights is not trusted, the y slope is. At 11 µm
    (RMS 11) the x slope is used too."""
    def surface(half_x: float) -> FocusSurface:
        fs = FocusSurface()
        for x in (-half_x, half_x):
            for y in (-30.0, 30.0):
                assert fs.add(x, y, 0.1 * x + 0.01 * y)
        return fs

    narrow, wide = surface(9.0), surface(11.0)
    assert narrow.predict(20.0, 20.0) == pytest.approx(0.2, abs=1e-9)  # y slope only
    assert wide.predict(20.0, 20.0) == pytest.approx(2.0 + 0.2, abs=1e-9)


def test_outliers_are_refused_from_the_fourth_point_on_and_counted():
    """From plane_from points on, a focus further than max(max_residual_um, 3 x residual)
    from the fit is refused and counted in ``rejected``; it does not bend the surface."""
    fs = FocusSurface()
    for p in [(0.0, 0.0, 0.0), (50.0, 0.0, 0.5), (0.0, 50.0, -0.5)]:
        assert fs.add(*p)
    assert not fs.add(25.0, 25.0, 5.5)  # 5.5 off the plane (limit 5; residual 0)
    assert fs.add(25.0, 25.0, 4.9)  # inside the limit: kept
    assert not fs.add(-30.0, 10.0, 40.0)
    assert fs.rejected == 2
    assert len(fs) == 4


def test_the_outlier_limit_grows_with_three_times_the_residual():
    """Cells at their own heights (residual ~2 µm): a focus 3.5 residuals off is
    refused, 2.9 residuals off is kept, although both exceed max_residual_um."""
    rng = np.random.default_rng(7)
    fs = FocusSurface(max_residual_um=1.0)
    for x, y in rng.uniform(0, 200, (8, 2)):
        fs.add(x, y, rng.normal(0.0, 2.0))
    r = fs.residual_um
    assert r is not None and r > 1.0
    pred = fs.predict(100.0, 100.0)
    assert not fs.add(100.0, 100.0, pred + 3.5 * r)
    assert fs.residual_um == r  # refused: the fit is unchanged
    assert fs.add(100.0, 100.0, pred + 2.9 * r)


def test_an_exact_plane_refuses_a_point_beyond_max_residual_um():
    """Points exactly on a plane have residual 0: the limit is max_residual_um itself
    (the residual adds nothing), also from the first check on (plane_from = 2)."""
    fs = FocusSurface(plane_from=2, max_residual_um=1.0)
    assert fs.add(0.0, 0.0, 0.0) and fs.add(100.0, 0.0, 0.0)
    assert not fs.add(50.0, 0.0, 2.0)  # 2 off the mean of two, limit 1
    for p in [(0.0, 100.0, 1.0), (100.0, 100.0, 1.0)]:
        fs.add(*p)
    assert fs.residual_um == pytest.approx(0.0, abs=1e-9)
    assert not fs.add(50.0, 50.0, 0.5 + 2.0)
    assert fs.add(50.0, 50.0, 0.5 + 0.9)


def test_predictions_are_clipped_to_the_z_range_of_the_points_plus_a_margin():
    """A steep plane extrapolated 10 mm: the prediction stops at the points' z range
    plus max(2 µm, half that range) on each side."""
    fs = FocusSurface()
    for p in [(0.0, 0.0, 0.0), (100.0, 0.0, 1.0), (0.0, 100.0, 0.0)]:
        fs.add(*p)
    assert fs.predict(10_000.0, 0.0) == pytest.approx(1.0 + 2.0)
    assert fs.predict(-10_000.0, 0.0) == pytest.approx(0.0 - 2.0)


def test_uncertainty_is_the_residual_scaled_by_the_planes_leverage():
    """The regression prediction interval: residual x sqrt((1 + h(q)) / (1 + mean h)),
    h(q) = [1 q] (XᵀX)⁻¹ [1 q]ᵀ the leverage of the plane's design matrix X = [1 x y] and
    mean h = 3 / n (its trace over n)."""
    rng = np.random.default_rng(2)
    fs = FocusSurface()
    pts = np.c_[rng.uniform(20, 80, (6, 2)), rng.normal(1.0, 0.3, 6)]
    for p in pts:
        fs.add(*p)
    X = np.c_[np.ones(6), pts[:, :2]]
    inv = np.linalg.inv(X.T @ X)
    for q in [(50.0, 50.0), (-100.0, 30.0), (200.0, 250.0)]:
        v = np.array([1.0, *q])
        expected = fs.residual_um * np.sqrt((1 + v @ inv @ v) / (1 + 3 / 6))
        assert fs.uncertainty_um(*q) == pytest.approx(expected, rel=1e-9)


def _bent_grid() -> FocusSurface:
    """Sixteen cells on a jittered 4 x 4 grid (corners exact: the convex hull is the
    rectangle [0, 45] x [0, 30]) over a bowl-shaped slide: the spline is used."""
    rng = np.random.default_rng(5)
    fs = FocusSurface()
    for i, x in enumerate(np.linspace(0.0, 45.0, 4)):
        for j, y in enumerate(np.linspace(0.0, 30.0, 4)):
            corner = i in (0, 3) and j in (0, 3)
            dx, dy = (0.0, 0.0) if corner else rng.uniform(-3, 3, 2)
            xx, yy = x + dx, y + dy
            assert fs.add(xx, yy, 0.02 * xx - 0.01 * yy + 2e-3 * ((xx - 20) ** 2 + yy ** 2))
    return fs


def _spline_parts(fs: FocusSurface, q: np.ndarray) -> tuple[float, float]:
    """The plane and the smoothing thin-plate spline of the plane's residuals at *q*, as
    the module documents them (coordinates centred on the points' mean and scaled by
    their largest extent), computed here with SciPy directly."""
    from scipy.interpolate import RBFInterpolator

    pts = np.asarray(fs.points)
    c = pts[:, :2].mean(0)
    scale = float(np.ptp(pts[:, :2] - c, axis=0).max())
    resid = pts[:, 2] - _plane_lstsq(pts, pts[:, :2])
    rbf = RBFInterpolator((pts[:, :2] - c) / scale, resid, kernel="thin_plate_spline",
                          smoothing=fs.smoothing, degree=1)
    return float(_plane_lstsq(pts, q)[0]), float(rbf((np.atleast_2d(q) - c) / scale)[0])


def test_inside_the_points_hull_the_prediction_is_the_plane_plus_the_spline():
    fs = _bent_grid()
    rng = np.random.default_rng(6)
    for q in rng.uniform([0.5, 0.5], [44.5, 29.5], (40, 2)):
        plane, bend = _spline_parts(fs, q)
        assert fs.predict(*q) == pytest.approx(plane + bend, abs=1e-9)


def test_outside_the_hull_the_bend_fades_over_the_points_typical_spacing():
    """Beyond the points the spline's bend is weighted by exp(-(d / s)²), d the distance
    to the nearest point and s the points' median nearest-neighbour distance."""
    fs = _bent_grid()
    pts = np.asarray(fs.points)[:, :2]
    nn = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    np.fill_diagonal(nn, np.inf)
    s = float(np.median(nn.min(1)))
    assert s != pytest.approx(float(nn.min()))  # (jittered: the median is not the least)
    for q in [(50.0, 15.0), (-8.0, 5.0), (20.0, 40.0), (60.0, -10.0)]:
        plane, bend = _spline_parts(fs, np.array(q))
        d = float(np.sqrt(((pts - np.array(q)) ** 2).sum(1)).min())
        expected = plane + np.exp(-(d / s) ** 2) * bend
        assert fs.predict(*q) == pytest.approx(expected, abs=1e-9)


def test_cells_exactly_on_a_line_have_no_hull_and_still_get_a_spline():
    """Ten cells down one exact column (SciPy's Delaunay refuses them): the spline still
    bends along the line, and off it the bend fades."""
    fs = FocusSurface()
    for k in range(10):
        y = 12.0 * k
        assert fs.add(50.0, y, 1.0 + 3e-4 * (y - 54.0) ** 2)
    on = fs.predict(50.0, 54.0)
    assert on is not None and on < 1.0 + 3e-4 * 54 ** 2 * 0.5  # follows the bowl's bottom
    far = fs.predict(500.0, 54.0)
    assert far == pytest.approx(float(np.mean([p[2] for p in fs.points])), abs=1e-6)


def test_the_spline_bends_from_exactly_spline_from_points():
    """spline_from = 10: ten cells around a bowl already get the spline (the bowl's
    bottom), nine only the plane."""
    def bowl(n: int) -> FocusSurface:
        fs = FocusSurface()
        for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
            x, y = 40 * np.cos(a), 40 * np.sin(a)
            fs.add(x, y, 2e-3 * (x * x + y * y))  # 3.2 µm on the ring
        fs.add(0.0, 0.0, 0.0) if n == 9 else None
        return fs

    ring_and_centre = bowl(9)  # 10 points with the centre
    assert len(ring_and_centre) == 10
    assert ring_and_centre.predict(5.0, 0.0) < 1.0  # the spline dips to the bottom
    plane = FocusSurface()
    for p in ring_and_centre.points[:9]:
        plane.add(*p)
    assert plane.predict(5.0, 0.0) == pytest.approx(3.2, abs=1e-6)  # nine: a (flat) plane


def test_spline_along_a_line_ignores_height_steps_across_it():
    """Cells down one column with a little x scatter, whose heights happen to follow that
    scatter steeply (0.5 µm per µm): across the column nothing says the slide tilts, so
    65 µm to the side the prediction is the one on the line."""
    fs = FocusSurface()
    for k in range(12):
        dx = 0.8 if k % 2 else -0.8
        assert fs.add(100.0 + dx, 10.0 * k, 2.0 + 0.05 * k + 0.5 * dx)
    on_line, beside = fs.predict(100.0, 55.0), fs.predict(165.0, 55.0)
    assert beside == pytest.approx(on_line, abs=0.05)
