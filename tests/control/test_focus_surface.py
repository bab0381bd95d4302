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
