"""Simulated microscope: determinism, geometry, optics, stage safety, streaming."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from acquisition import MoveRefused
from acquisition.simulated import Cell, SimConfig, SimulatedMicroscope, Specimen

SMALL = dict(shape=(256, 256), realtime=False)


def scope(**kw) -> SimulatedMicroscope:
    return SimulatedMicroscope(**{**SMALL, **kw})


def test_same_seed_identical_different_seed_differs():
    a, b, c = scope(seed=3), scope(seed=3), scope(seed=4)
    for s in (a, b, c):
        s.move_xy(40.0, -25.0)
    fa, fb, fc = a.snap(), b.snap(), c.snap()
    assert np.array_equal(fa.pixels, fb.pixels)
    assert np.array_equal(fa.truth, fb.truth)
    assert not np.array_equal(fa.pixels, fc.pixels)
    assert len(fa.truth) > 5
    md = fa.metadata
    assert md["camera"] == "simulated" and md["truth_ids"] == sorted(md["truth_ids"])
    assert len(md["truth_visible_fraction"]) == len(fa.truth)


@pytest.mark.parametrize("rot,flip", [(0.0, False), (30.0, False), (90.0, True)])
def test_truth_moves_with_stage_by_inverse_affine(rot, flip):
    s = scope(seed=1, camera_rotation_deg=rot, camera_flip_x=flip)
    g0 = s.ground_truth()
    d = np.array([12.0, -7.5])
    s.move_xy(*d, relative=True)
    g1 = s.ground_truth()
    common, i0, i1 = np.intersect1d(g0.ids, g1.ids, return_indices=True)
    def interior(b):  # boxes not clipped by the frame edge
        return (b[:, :2] > 1).all(axis=1) & (b[:, 2:] < 255).all(axis=1)

    full = interior(g0.boxes[i0]) & interior(g1.boxes[i1])
    assert full.sum() > 3
    expect = -np.linalg.inv(s.true_affine) @ d
    shift = g1.boxes[i1][full] - g0.boxes[i0][full]
    np.testing.assert_allclose(shift[:, 0], expect[0], atol=1e-3)
    np.testing.assert_allclose(shift[:, 1], expect[1], atol=1e-3)
    # The frame's own affine is nominal (what Micro-Manager would report).
    np.testing.assert_allclose(s.snap().affine, np.eye(2) * 0.65)


def test_bright_blobs_sit_in_truth_boxes():
    s = scope(seed=2, debris_per_mm2=0.0, dim_fraction=0.0, cluster_fraction=0.0,
              dividing_fraction=0.0)
    f = s.snap()
    img = f.pixels.astype(np.float32)
    mask = (img > np.percentile(img, 50) + 150).astype(np.uint8)
    n, _lab, stats, cents = cv2.connectedComponentsWithStats(mask)
    boxes = f.truth
    hits = 0
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > 60]
    for i in big:
        cx, cy = cents[i]
        inside = ((boxes[:, 0] <= cx) & (cx <= boxes[:, 2])
                  & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3]))
        hits += bool(inside.any())
    assert len(big) > 5
    assert hits == len(big)


def test_one_known_cell_rendered_where_expected():
    cfg = SimConfig(**SMALL, debris_per_mm2=0.0)
    spec = Specimen.from_cells([Cell.simple(7, 20.0, -10.0, diameter_um=12.0)], cfg)
    s = SimulatedMicroscope(cfg, specimen=spec)
    f = s.snap()
    assert f.metadata["truth_ids"] == [7]
    (cx, cy), = f.stage_to_pixel(np.array([[20.0, -10.0]]))
    b = f.truth[0]
    assert abs((b[0] + b[2]) / 2 - cx) < 1.0 and abs((b[1] + b[3]) / 2 - cy) < 1.0
    assert abs((b[2] - b[0]) * 0.65 - 12.0) < 2.0
    img = f.pixels.astype(float) - np.median(f.pixels)
    yy, xx = np.mgrid[0:256, 0:256]
    w = np.clip(img, 0, None) * (img > 100)
    assert abs((w * xx).sum() / w.sum() + 0.5 - cx) < 1.0
    assert abs((w * yy).sum() / w.sum() + 0.5 - cy) < 1.0
    assert spec.cells_in_region(0, -20, 30, 0) == [7]
    assert spec.cells_in_region(25, -20, 30, 0) == []


def test_blur_grows_with_defocus():
    s = scope(seed=5, read_noise_e=0.0, background_photons_per_um2_ms=0.0,
              cell_z_spread_um=0.0)
    sharp = []
    for dz in (0.0, 3.0, 8.0, 20.0):
        s.move_z(dz)
        img = s.snap().pixels.astype(np.float32)
        sharp.append(cv2.Laplacian(cv2.GaussianBlur(img, (0, 0), 1.0), cv2.CV_32F).var())
    assert all(a > b for a, b in zip(sharp, sharp[1:], strict=False)), sharp


def test_drift_and_tilt_move_true_focus():
    s = scope(drift_um_per_s=0.5, tilt=(0.01, -0.02))
    z0 = s.true_focus_z()
    s.advance(10.0)
    assert s.true_focus_z() == pytest.approx(z0 + 5.0)
    assert s.true_focus_z(100.0, 0.0) - s.true_focus_z(0.0, 0.0) == pytest.approx(1.0)
    assert s.true_focus_z(0.0, 100.0) - s.true_focus_z(0.0, 0.0) == pytest.approx(-2.0)
    f = s.snap()
    focus = s.true_focus_z(0, 0, f.metadata["sim_time_s"])
    assert f.metadata["defocus_um"] == pytest.approx(f.position.z - focus)


def test_stream_indices_and_drops():
    s = scope(seed=0)
    with s.stream(n_frames=40) as st:
        got = []
        while True:
            fr = st.get(timeout=10)
            if fr is None:
                break
            got.append(fr)
            time.sleep(0.02)  # slow consumer
    idx = [f.index for f in got]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    stamps = [f.stamps["ready"] for f in got]
    assert stamps == sorted(stamps)
    assert st.produced == 40
    assert st.dropped == 40 - len(got) and st.dropped > 0
    times = [f.metadata["sim_time_s"] for f in got]
    assert times == sorted(times)


@pytest.mark.parametrize("binning,bits,dtype", [(1, 16, np.uint16), (2, 12, np.uint16),
                                                (2, 8, np.uint8)])
def test_binning_and_bit_depth(binning, bits, dtype):
    s = scope(binning=binning, bit_depth=bits)
    f = s.snap()
    assert f.pixels.shape == (256 // binning, 256 // binning)
    assert f.pixels.dtype == dtype
    assert f.pixels.max() <= 2 ** bits - 1
    assert f.pixel_size_um == pytest.approx(0.65 * binning)


def test_moves_outside_slide_refused_nothing_moves():
    s = scope(slide_um=(1000.0, 1000.0))
    s.move_xy(100.0, 100.0)
    before = s.position()
    with pytest.raises(MoveRefused):
        s.move_xy(600.0, 0.0)
    with pytest.raises(MoveRefused):
        s.move_z(500.0)
    assert s.position() == before


def test_moving_cells_move():
    s = scope(seed=9, cell_motion_um_per_s=2.0)
    g0 = s.ground_truth()
    cid = int(g0.ids[np.argmax(g0.visible_fraction)])
    p0 = np.array(s.specimen.position_of(cid, 0.0))
    s.advance(5.0)
    p1 = np.array(s.specimen.position_of(cid, 5.0))
    assert np.linalg.norm(p1 - p0) > 2.0
    g1 = s.ground_truth()
    i0 = list(g0.ids).index(cid)
    i1 = list(g1.ids).index(cid)
    np.testing.assert_allclose(g1.centers_um[i1], p1)
    assert not np.allclose(g0.boxes[i0], g1.boxes[i1])


def test_partly_visible_objects_in_truth_and_bad_override():
    s = scope(seed=11)
    g = s.ground_truth()
    assert (g.visible_fraction < 1).any() and (g.visible_fraction > 0).all()
    assert (g.boxes[:, 0] >= 0).all() and (g.boxes[:, 2] <= 256).all()
    with pytest.raises(TypeError, match="Unknown SimConfig"):
        SimulatedMicroscope(seeed=1)
    assert math.isfinite(s.sim_time_s)
