"""The number the eyepiece calibration is judged by: how far a fitted display -> camera
map puts a drawn box from where the true map puts it, at the worst point of the camera
field that the display covers. Checked against geometry worked out by hand: two maps that
differ by a scaling about a point P disagree by s * |v - P| at each point v, so the worst
point is the vertex of the covered region farthest from P.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inscope.eyepiece_fit import field_error


def _scaling(s: float, anchor: tuple[float, float]) -> np.ndarray:
    """The 2x3 affine that scales by (1 + s) about *anchor*."""
    ax, ay = anchor
    return np.array([[1 + s, 0.0, -s * ax], [0.0, 1 + s, -s * ay]])


def _corners(w: int, h: int) -> list[tuple[float, float]]:
    """A w x h grid of pixels spans -0.5 .. w - 0.5 (pixel centres at integers)."""
    return [(-0.5, -0.5), (w - 0.5, -0.5), (w - 0.5, h - 0.5), (-0.5, h - 0.5)]


def _worst(corners, anchor, s) -> float:
    return max(s * math.dist(v, anchor) for v in corners)


@pytest.mark.parametrize("anchor_i", range(4))
def test_a_display_inside_the_camera_field_is_judged_at_its_own_corners(anchor_i):
    """Display 100 x 50 drawn 1:1 into a 300 x 200 camera field, 40 px in: the covered
    region is the display's footprint, and each of its corners is the worst point for the
    scaling about the opposite one."""
    display, camera = (100, 50), (200, 300)  # (w, h) and (rows, cols)
    truth = np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 40.0]])
    foot = [(x + 40, y + 40) for x, y in _corners(*display)]
    anchor = foot[anchor_i]
    fit = _scaling(0.01, anchor) @ np.vstack([truth, [0, 0, 1]])
    assert field_error(fit, truth, display, camera) == pytest.approx(
        _worst(foot, anchor, 0.01), rel=1e-6)


@pytest.mark.parametrize("anchor_i", range(4))
def test_a_display_larger_than_the_camera_field_is_judged_at_the_fields_corners(anchor_i):
    """The display covers the whole 300 x 200 field and more (scale 4, centred): only the
    field can show a box, so the field's corners are the worst points."""
    display, camera = (100, 80), (200, 300)
    truth = np.array([[4.0, 0.0, 150 - 4 * 49.5], [0.0, 4.0, 100 - 4 * 39.5]])
    field = _corners(300, 200)
    anchor = field[anchor_i]
    fit = _scaling(0.02, anchor) @ np.vstack([truth, [0, 0, 1]])
    assert field_error(fit, truth, display, camera) == pytest.approx(
        _worst(field, anchor, 0.02), rel=1e-6)


def test_equal_maps_agree_everywhere_and_a_shift_is_its_length():
    truth = np.array([[0.9, 0.1, 20.0], [-0.1, 0.9, 30.0]])
    assert field_error(truth, truth, (100, 50), (200, 300)) == pytest.approx(0, abs=1e-9)
    shifted = truth + np.array([[0, 0, 3.0], [0, 0, -4.0]])
    assert field_error(shifted, truth, (100, 50), (200, 300)) == pytest.approx(5.0)
