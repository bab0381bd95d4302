"""Calibration and centring on real Micro-Manager demo devices (DemoCamera beads).

DemoCamera's "Fluorescent Beads" mode renders beads fixed on the slide, so they shift with
the DXYStage and blur with the DStage: a real closed loop through MMCore.
"""

from __future__ import annotations

import numpy as np
import pytest

from inscope.control.calibration import calibrate
from inscope.control.steering import CENTERED, MOVED, Steerer
from inscope.control.targets import TrackId


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
    from inscope.detector.classical import ClassicalDetector

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
        if act.status == CENTERED:
            break
    assert statuses[0] == MOVED
    assert statuses[-1] == CENTERED, statuses
    assert statuses.count(MOVED) <= 2
    # Independent check: the bead's box in a fresh frame sits at the image centre.
    frame = mm_scope.snap()
    d = det.detect(frame)
    dist = np.hypot(*(d.centers - c).T)
    assert dist.min() < 1.0


def _far_bead(scope, steer, det):
    frame = scope.snap()
    tracks = steer.tracker.update(frame, det.detect(frame))
    c = np.asarray(frame.center)
    far = [t for t in tracks if 80 < np.hypot(*(t.center_px - c)) < 200]
    assert far
    steer.select(TrackId(far[0].id))


def test_steering_reports_refused_and_dry_run_moves(mm_scope):
    from inscope.acquisition.safety import SoftLimits
    from inscope.detector.classical import ClassicalDetector

    det = ClassicalDetector()
    start = mm_scope.position()
    # Soft limits that allow only 20 µm around the origin: the bead is further away.
    mm_scope.guard.limits = SoftLimits(x=(-10, 10), y=(-10, 10), z=(-50, 50))
    steer = Steerer(mm_scope)
    _far_bead(mm_scope, steer, det)
    frame = mm_scope.snap()
    act = steer.step(frame, det.detect(frame))  # must not raise
    assert act.status == "refused" and not act.made
    assert "outside the soft limit" in act.reason
    assert mm_scope.guard.history[-1].made is False

    mm_scope.guard.limits = SoftLimits(x=(-1000, 1000), y=(-1000, 1000), z=(-50, 50))
    mm_scope.guard.dry_run = True
    n_hist = len(mm_scope.guard.history)
    for _ in range(3):
        frame = mm_scope.snap()
        act = steer.step(frame, det.detect(frame))
        assert act.status == "dry-run" and not act.made
        assert act.error_norm_um > 50  # the move was computed ...
    end = mm_scope.position()
    assert (end.x, end.y) == pytest.approx((start.x, start.y), abs=1e-6)  # ... not made
    recs = list(mm_scope.guard.history)[n_hist:]
    assert len(recs) == 3 and all(r.reason == "dry-run" and not r.made for r in recs)


@pytest.mark.parametrize("start", [10.0, -10.0])
def test_autofocus_on_demo_beads(mm_scope, start):
    from inscope.control.focus import autofocus

    # DemoCamera's beads are sharpest at Z = 0 and blur symmetrically with |Z|.
    mm_scope.move_z(start)
    r = autofocus(mm_scope)
    assert r.ok, r.message
    assert abs(mm_scope.position().z) < 0.5, r.samples
    assert r.images <= 10


def test_find_and_image_every_bead_once_with_small_fields(mm_scope, tmp_path):
    """A 160x160 ROI makes 160 µm fields, so a 200 µm region needs several overlapping
    fields with beads cut by field edges. The reference is one full 512x512 frame that
    holds the whole region (every bead in it seen whole)."""
    import csv

    from inscope.control.workflow import FindAndImage, ZStackSpec
    from inscope.detector.classical import ClassicalDetector

    det = ClassicalDetector()
    f = mm_scope.snap()
    ref = f.pixel_to_stage(det.detect(f).centers)
    region = (-100.0, -100.0, 100.0, 100.0)
    inside = ref[(np.abs(ref[:, 0]) <= 100) & (np.abs(ref[:, 1]) <= 100)]
    assert len(inside) >= 5
    mm_scope.core.set_roi(176, 176, 160, 160)
    try:
        s = FindAndImage(mm_scope, det, region=region, out_dir=tmp_path,
                         z_stack=ZStackSpec((-1, 1), 1.0)).run()
    finally:
        mm_scope.core.clear_roi()
    assert s.status == "done" and s.fields >= 4
    with open(tmp_path / "cells.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "imaged"]
    xy = np.array([[float(r["x_um"]), float(r["y_um"])] for r in rows])
    matched = []
    for c in inside:
        d = np.hypot(*(xy - c).T)
        assert d.min() < 1.5, f"bead at {c} not imaged"
        matched.append(int(np.argmin(d)))
    assert len(set(matched)) == len(matched)
    # Nothing imaged twice, nothing extra except beads on the region's border.
    for k, p in enumerate(xy):
        if k not in matched:
            assert min(100 - abs(p[0]), 100 - abs(p[1])) < 2.0, p


def test_interrupted_scan_keeps_what_it_saved(mm_scope, tmp_path):
    import csv
    import json

    import tifffile

    from inscope.control.workflow import FindAndImage, ZStackSpec
    from inscope.detector.classical import ClassicalDetector

    seen = []

    def stop_after_three(rec):
        seen.append(rec)
        if sum(r.status == "imaged" for r in seen) == 3:
            raise KeyboardInterrupt

    wf = FindAndImage(mm_scope, ClassicalDetector(), region=(0, 0, 150, 150),
                      out_dir=tmp_path, z_stack=ZStackSpec((-1, 1), 1.0),
                      on_cell=stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        wf.run()
    with open(tmp_path / "cells.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "imaged"]
    assert len(rows) == 3
    for r in rows:
        with tifffile.TiffFile(tmp_path / r["file"]) as tf:
            assert tf.is_ome and tf.asarray().shape[0] == 3
            assert "PhysicalSizeZ" in tf.ome_metadata and "box_px" in tf.ome_metadata
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "stopped" and s["cells_imaged"] == 3
    assert s["cells_found"] > 3
    assert not list(tmp_path.glob("*.part"))


def test_focus_lock_pulls_back_to_focus(mm_scope):
    from inscope.control.focus import FocusLock

    mm_scope.move_z(3.0)
    lock = FocusLock(mm_scope, dither_um=0.5, max_step_um=1.0)
    zs = []
    for _ in range(30):
        act = lock.step(mm_scope.snap())
        assert act.status in ("acquiring", "locked", "settling"), act
        zs.append(lock.z_center)
    assert abs(zs[0] - 3.0) < 1e-6
    # DemoCamera renders the beads equally sharp for |Z| up to ~1.5 µm (its blur is
    # quantised), so the lock may settle anywhere on that plateau, not closer.
    assert max(abs(z) for z in zs[-6:]) < 1.5, zs


def test_calibration_warns_about_a_wrong_configured_affine(mm_scope, tmp_path, caplog):
    import logging

    from inscope.control.calibration import Calibration

    # Someone configured a 90-degree rotated, 2x too large pixel-size affine.
    mm_scope.affine = np.array([[0.0, -2.0], [2.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger="inscope.control.calibration"):
        cal = calibrate(mm_scope, steps_um=[40.0])
    assert cal.warning and "disagrees" in cal.warning
    assert any("disagrees" in r.message for r in caplog.records)
    np.testing.assert_allclose(cal.affine, np.eye(2), atol=0.01)
    cal.save(tmp_path / "c.json")
    Calibration.load(tmp_path / "c.json").apply(mm_scope)
    np.testing.assert_allclose(mm_scope.snap().affine, cal.affine)
