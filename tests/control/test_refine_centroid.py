"""The refined target position is the nucleus' shape centroid (what its label mask
gives), whatever its brightness pattern and whoever touches it.

Reproduced from the control benchmark: on HeLa slides a nucleus dim on one side with a
dark nucleolus was centred 1.1-1.3 µm off its labelled centroid in every trial (Otsu's
threshold cut the dim side off; brightness weights pulled away from the nucleolus), and
on the simulator nuclei overlapping a neighbour were centred 1.5-2.5 µm off (the blob
included the neighbour). Images here are generated, with the true centroid known.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inscope.control.refine import soft_centroid


def _ellipse(shape, cx, cy, a, b, angle_deg=0.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    t = np.radians(angle_deg)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _image(mask_brightness, shape=(96, 96), seed=0):
    rng = np.random.default_rng(seed)
    img = np.full(shape, 100.0)
    for m, val in mask_brightness:
        img += m * val
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8)
    return (img + rng.normal(0, 3.0, shape)).astype(np.float32)


def _box(m, grow=0.0):
    ys, xs = np.nonzero(m)
    return np.array([xs.min() - 0.5 - grow, ys.min() - 0.5 - grow, xs.max() + 0.5 + grow,
                     ys.max() + 0.5 + grow])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_nucleus_dim_on_one_side_with_a_nucleolus_is_located_by_its_shape(seed):
    rng = np.random.default_rng(seed)
    cx, cy = 48 + rng.uniform(-1, 1), 47 + rng.uniform(-1, 1)
    nuc = _ellipse((96, 96), cx, cy, 13, 11, rng.uniform(0, 180))
    yy, xx = np.mgrid[0:96, 0:96]
    # the top half at a third of the bottom's brightness; a dark nucleolus near the top
    bright = np.where(yy > cy, 900.0, 300.0)
    nucleolus = _ellipse((96, 96), cx + 2, cy - 6, 3.5, 3.0)
    img = _image([(nuc * bright * np.where(nucleolus, 0.25, 1.0), 1.0)], seed=seed)
    truth = np.array([xx[nuc].mean(), yy[nuc].mean()])
    got = soft_centroid(img, _box(nuc, grow=1.0))
    assert got is not None
    assert np.hypot(*(got[0] - truth)) < 0.75, got[0] - truth


def test_simulator_nuclei_touching_or_overlapping_neighbours_are_located_on_themselves():
    """Every whole labelled nucleus in a few simulator fields (a quarter of them placed
    touching a neighbour, some overlapping it): its refined centroid is on its own
    centre. Before: p90 3.6 px, up to 9 px (the blob took in the neighbour)."""
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    errs = []
    s = SimulatedMicroscope(SimConfig(seed=1, realtime=False, subpixel=True))
    for xy in [(0.0, 0.0), (300.0, 200.0), (-250.0, 400.0)]:
        s.move_xy(*xy)
        s.move_z(s.true_focus_z())
        f = s.snap()
        g = s.ground_truth()
        for box, vis, c_um in zip(g.boxes, g.visible_fraction, g.centers_um, strict=True):
            if vis < 1:
                continue
            got = soft_centroid(f.pixels, box)
            truth = f.stage_to_pixel(c_um)[0]
            errs.append(np.inf if got is None else float(np.hypot(*(got[0] - truth))))
    errs = np.asarray(errs)
    assert len(errs) > 100
    assert np.isfinite(errs).mean() > 0.97
    assert np.median(errs) < 0.2 and np.percentile(errs, 90) < 1.0, np.percentile(
        errs, [50, 90, 99])
