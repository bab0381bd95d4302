"""Calibration and centring on real Micro-Manager demo devices (DemoCamera beads).

DemoCamera's "Fluorescent Beads" mode renders beads fixed on the slide, so they shift with
the DXYStage and blur with the DStage: a real closed loop through MMCore.
"""

from __future__ import annotations

import numpy as np
import pytest

from control.calibration import calibrate
from control.steering import CENTRED, MOVED, Steerer
from control.targets import TrackId


def test_calibration_recovers_demo_pixel_size(mm_scope):
    configured = mm_scope.pixel_size_um
    assert configured == pytest.approx(1.0)  # MMConfig_demo.cfg: Res10x = 1.0 µm/px
    start = mm_scope.position()
    cal = calibrate(mm_scope)
    assert cal.pixel_size_um == pytest.approx(configured, rel=0.01)
    assert abs(cal.rotation_deg) < 0.5
    assert not cal.flip
    assert cal.residual_px < 0.5
    assert cal.warning == ""  # agrees with the configured identity affine
    end = mm_scope.position()
    assert np.hypot(end.x - start.x, end.y - start.y) < 0.5  # returned to the start


def test_bead_is_centred(mm_scope):
    from detector.classical import ClassicalDetector

    det = ClassicalDetector()
    steer = Steerer(mm_scope, deadband_um=0.6)
    frame = mm_scope.snap()
    d = det.detect(frame)
    tracks = steer.tracker.update(frame, d)
    c = np.asarray(frame.center)
    # A bead well off-centre, clear of the border.
    off = [t for t in tracks if 60 < np.hypot(*(t.center_px - c)) < 150]
    assert off, "the demo field should contain beads 60-150 px from the centre"
    target = off[0]
    steer.select(TrackId(target.id))
    statuses = []
    for _ in range(6):
        frame = mm_scope.snap()
        act = steer.step(frame, det.detect(frame))
        statuses.append(act.status)
        if act.status == CENTRED:
            break
    assert statuses[0] == MOVED
    assert statuses[-1] == CENTRED, statuses
    assert statuses.count(MOVED) <= 2
    # Independent check: the bead's box in a fresh frame sits at the image centre.
    frame = mm_scope.snap()
    d = det.detect(frame)
    dist = np.hypot(*(d.centers - c).T)
    assert dist.min() < 1.0
