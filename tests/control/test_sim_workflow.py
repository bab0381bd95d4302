"""Find-and-image on the simulator: every true cell in the region imaged exactly once."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

import inscope.acquisition.simulated as sim
from inscope.acquisition.simulated.specimen import Specimen  # noqa: E402
from inscope.control.workflow import FindAndImage, ZStackSpec, plan_fields  # noqa: E402

# Small 256x256 fields (166 µm at 0.65 µm/px) so a region needs several of them.
SHAPE = (256, 256)


def _scope(seed=0, **kw):
    return sim.SimulatedMicroscope(sim.SimConfig(seed=seed, realtime=False, shape=SHAPE,
                                                 **kw))


def _layout_scope(seed=0, spacing=34.0, extent=260.0, **kw):
    """Nuclei on a jittered grid (never touching): every one is detectable by the
    classical baseline, so any miss or double is the workflow's fault."""
    cfg = sim.SimConfig(seed=seed, realtime=False, shape=SHAPE, debris_per_mm2=0.0, **kw)
    return sim.SimulatedMicroscope(cfg, specimen=Specimen.grid(cfg, extent, spacing, seed))


def _detector():
    from inscope.detector.classical import ClassicalDetector

    return ClassicalDetector(object_size_um=13.0)


def _region(scope, frac=1.3):
    """A region a little larger than one field around the start: needs several fields."""
    f = scope.snap()
    h, w = f.shape
    side = frac * min(h, w) * f.pixel_size_um
    p = scope.position()
    return (p.x - side / 2, p.y - side / 2, p.x + side / 2, p.y + side / 2)


def _rows(path):
    with open(path / "cells.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _true_centers(scope, ids):
    return {int(i): np.asarray(scope.specimen.position_of(i, scope.sim_time_s), float)
            for i in ids}


def test_plan_fields_covers_region_with_overlap():
    fields = plan_fields((0, 0, 300, 200), field_um=100, overlap_um=20)
    xs = sorted({x for x, _ in fields})
    ys = sorted({y for _, y in fields})
    assert xs[0] - 50 <= -10 and xs[-1] + 50 >= 310
    assert ys[0] - 50 <= -10 and ys[-1] + 50 >= 210
    assert max(np.diff(xs)) <= 80 + 1e-9 and max(np.diff(ys)) <= 80 + 1e-9
    with pytest.raises(ValueError, match="x1 > x0"):
        plan_fields((10, 0, 0, 5), 100, 10)


@pytest.mark.parametrize("rot,flip,tilt", [(0.0, False, (0.0, 0.0)),
                                           (90.0, True, (0.03, -0.02))])
def test_every_true_cell_imaged_exactly_once(tmp_path, rot, flip, tilt):
    scope = _layout_scope(seed=11, camera_rotation_deg=rot, camera_flip_x=flip, tilt=tilt)
    scope.affine = scope.true_affine  # as after `calibrate(scope, apply=True)`
    region = _region(scope)
    truth_ids = [int(i) for i in scope.specimen.cells_in_region(*region)]
    assert len(truth_ids) >= 20
    wf = FindAndImage(scope, _detector(), region=region, out_dir=tmp_path,
                      z_stack=ZStackSpec((-1.0, 1.0), 1.0))
    summary = wf.run()
    assert summary.status == "done" and summary.fields > 1
    rows = _rows(tmp_path)
    imaged = [r for r in rows if r["status"] == "imaged"]
    # Map every imaged cell to the nearest true cell (ground truth, not the detector).
    all_ids = [int(i) for i in scope.specimen.cells_in_region(
        region[0] - 50, region[1] - 50, region[2] + 50, region[3] + 50)]
    centers = _true_centers(scope, all_ids)
    hits = []
    for r in imaged:
        xy = np.array([float(r["x_um"]), float(r["y_um"])])
        cid = min(centers, key=lambda i: float(np.hypot(*(centers[i] - xy))))
        assert np.hypot(*(centers[cid] - xy)) < 3.0
        # Each stack is centred on the true focus there (the slide may be tilted).
        assert abs(float(r["z_um"]) - scope.true_focus_z(*centers[cid])) < 0.5
        hits.append(cid)
    assert len(hits) == len(set(hits)), "a cell was imaged twice"
    missing = set(truth_ids) - set(hits)
    assert not missing, f"true cells not imaged: {sorted(missing)}"
    # Anything imaged beyond the true set must sit on the region's border (detector vs
    # truth centre disagree by a fraction of a µm there).
    for cid in set(hits) - set(truth_ids):
        x, y = centers[cid]
        d = min(abs(x - region[0]), abs(x - region[2]), abs(y - region[1]),
                abs(y - region[3]))
        assert d < 2.0
    assert summary.cells_imaged == len(imaged)

    # OME-TIFF with physical sizes, positions and the boxes.
    r = imaged[0]
    with tifffile.TiffFile(tmp_path / r["file"]) as tf:
        assert tf.is_ome
        stack = tf.asarray()
        ome = tf.ome_metadata
    assert stack.ndim == 3 and stack.shape[0] == int(r["n_planes"]) == 3
    assert "PhysicalSizeX" in ome and "PhysicalSizeZ" in ome and "PositionX" in ome
    assert "box_px" in ome
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["cells_imaged"] == len(imaged) and s["status"] == "done"
    assert s["sim_s"] is not None and s["sim_s"] > 0


def test_interrupted_run_keeps_what_it_saved(tmp_path):
    scope = _layout_scope(seed=12)
    region = _region(scope)
    done = []

    def stop_after_two(rec):
        done.append(rec)
        if len([d for d in done if d.status == "imaged"]) == 2:
            raise KeyboardInterrupt

    wf = FindAndImage(scope, _detector(), region=region, out_dir=tmp_path,
                      z_stack=ZStackSpec((0.0, 0.0), 1.0), autofocus=False,
                      on_cell=stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        wf.run()
    rows = _rows(tmp_path)
    imaged = [r for r in rows if r["status"] == "imaged"]
    assert len(imaged) == 2
    for r in imaged:
        with tifffile.TiffFile(tmp_path / r["file"]) as tf:
            assert tf.is_ome and 'SizeZ="1"' in tf.ome_metadata
            assert tf.asarray().shape[-2:] == SHAPE
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "stopped" and s["cells_imaged"] == 2
    assert not list(tmp_path.glob("*.part"))


def test_dry_run_moves_nothing(tmp_path):
    scope = _layout_scope(seed=13)
    start = scope.position()
    region = _region(scope)
    s = FindAndImage(scope, _detector(), region=region, out_dir=tmp_path,
                     dry_run=True).run()
    assert s.status == "dry-run" and s.fields > 1 and len(s.planned_fields) == s.fields
    assert scope.position() == start
    assert all(r["status"] == "planned" for r in _rows(tmp_path))


def test_adaptive_z_stack_stops_when_the_cells_own_signal_fades(tmp_path):
    scope = _layout_scope(seed=14, blur_um_per_um=1.2)
    p = scope.position()
    region = (p.x - 20, p.y - 20, p.x + 20, p.y + 20)
    spec = ZStackSpec((-1.0, 1.0), 1.0, adaptive=True, max_extent_um=30.0)
    s = FindAndImage(scope, _detector(), region=region, out_dir=tmp_path, z_stack=spec).run()
    assert s.cells_imaged >= 1
    for r in (r for r in _rows(tmp_path) if r["status"] == "imaged"):
        n = int(r["n_planes"])
        # at least the +/-1 µm asked for, one plane past the signal's end each way, and
        # never the 30 µm cap (out-of-focus haze is still detected there)
        assert 3 <= n <= 7, n
        with tifffile.TiffFile(tmp_path / r["file"]) as tf:
            desc = json.loads(tf.ome_metadata.split("<Description>")[1]
                              .split("</Description>")[0].replace("&quot;", '"'))
        z = np.asarray(desc["z_um"])
        assert len(z) == n and np.allclose(np.diff(z), 1.0, atol=0.05)
        zf = float(r["z_um"])
        prof = np.asarray(desc["signal_profile"])
        assert np.allclose(prof[:, 0], z)
        assert prof[np.argmin(np.abs(z - zf)), 1] == pytest.approx(prof[:, 1].max(), rel=0.2)
        assert prof[0, 1] < 0.6 * prof[:, 1].max() and prof[-1, 1] < 0.6 * prof[:, 1].max()
