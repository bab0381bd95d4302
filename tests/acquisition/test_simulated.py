"""The simulated microscope's ground truth is what the rest of inscope is scored on, so it
is checked against the rendered pixels and against the stage geometry here."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from _support import ids_reaching, light_centroid

from inscope.acquisition import MoveRefused
from inscope.acquisition.simulated import (
    KIND_DEBRIS,
    KIND_NORMAL,
    KIND_PAIR,
    Cell,
    SimConfig,
    SimulatedMicroscope,
    Specimen,
)


def _scope(**kw) -> SimulatedMicroscope:
    kw.setdefault("realtime", False)
    return SimulatedMicroscope(SimConfig(**kw))


def test_same_seed_same_frames_different_seed_different():
    a, b, c = _scope(seed=3), _scope(seed=3), _scope(seed=4)
    for s in (a, b, c):
        s.move_xy(120.0, -40.0)
    fa, fb, fc = a.snap(), b.snap(), c.snap()
    np.testing.assert_array_equal(fa.pixels, fb.pixels)
    np.testing.assert_array_equal(fa.truth, fb.truth)
    assert not np.array_equal(fa.pixels, fc.pixels)


def test_specimen_independent_of_visit_order():
    a, b = _scope(seed=5), _scope(seed=5)
    b.move_xy(800, 800)
    b.snap()
    b.move_xy(0, 0)
    assert a.ground_truth().ids.tolist() == b.ground_truth().ids.tolist()


@pytest.mark.parametrize("rotation,flip", [(0.0, False), (30.0, False), (90.0, True)])
def test_truth_moves_with_stage_by_the_true_affine(rotation, flip):
    s = _scope(seed=1, camera_rotation_deg=rotation, camera_flip_x=flip)
    g0 = s.ground_truth()
    d = np.array([6.0, -4.0])
    s.move_xy(*d, relative=True)
    g1 = s.ground_truth()
    common = np.intersect1d(g0.ids, g1.ids)
    assert len(common) > 20
    full0 = g0.visible_fraction == 1
    full1 = g1.visible_fraction == 1
    shifts = []
    for cid in common:
        i, j = np.flatnonzero(g0.ids == cid)[0], np.flatnonzero(g1.ids == cid)[0]
        if full0[i] and full1[j]:
            shifts.append(g1.boxes[j, :2] - g0.boxes[i, :2])
    expected = -np.linalg.inv(s.true_affine) @ d  # move by d => content shifts by -A^-1 d
    np.testing.assert_allclose(np.median(shifts, axis=0), expected, atol=0.05)
    assert np.ptp(np.array(shifts), axis=0).max() < 0.1


def test_truth_boxes_sit_on_the_rendered_nuclei():
    cells = [Cell(1, 0.0, 0.0, 8.0, 6.0, 0.3, 1.0),
             Cell(2, 60.0, 30.0, 5.0, 5.0, 0.0, 1.0),
             Cell(3, -50.0, -70.0, 7.0, 4.0, 1.2, 0.8)]
    cfg = SimConfig(seed=0, realtime=False, texture=0.0)
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
    f = s.snap()
    img = f.pixels.astype(np.float32)
    mask = (img > cfg.offset + 0.5 * cfg.signal_photons_per_ms * cfg.exposure_ms).astype(np.uint8)
    n, _, stats, cents = cv2.connectedComponentsWithStats(mask)
    assert n - 1 == len(cells) == len(f.truth)
    for box in f.truth:
        c = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        d = np.hypot(cents[1:, 0] - c[0], cents[1:, 1] - c[1])
        k = int(np.argmin(d)) + 1
        assert d[k - 1] < 1.0
        x, y, w, h = stats[k, :4]
        # the half-maximum blob lies inside the box, and fills most of it
        assert box[0] - 1 <= x and x + w <= box[2] + 1 and box[1] - 1 <= y <= y + h <= box[3] + 1
        assert w >= 0.7 * (box[2] - box[0]) and h >= 0.7 * (box[3] - box[1])


def test_partly_visible_objects_are_in_truth_with_fraction():
    cfg = SimConfig(seed=0, realtime=False)
    half_w = cfg.shape[1] / 2 * cfg.pixel_size_um
    cells = [Cell(7, half_w, 0.0, 6.0, 6.0, 0.0, 1.0)]  # centred on the right edge
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
    g = s.ground_truth()
    assert g.ids.tolist() == [7]
    assert 0.4 < g.visible_fraction[0] < 0.6
    # pixel centres at integers: the last column's outer edge is w - 0.5
    assert g.boxes[0, 2] == cfg.shape[1] - 0.5


def test_debris_is_rendered_but_not_labelled():
    cfg = SimConfig(seed=0, realtime=False)
    cells = [Cell(1, 0.0, 0.0, 1.0, 1.0, 0.0, 3.0, KIND_DEBRIS)]
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
    f = s.snap()
    assert len(f.truth) == 0
    assert f.pixels[256, 256] > cfg.offset + cfg.signal_photons_per_ms * cfg.exposure_ms


def test_dividing_pair_is_two_daughter_boxes_under_one_id():
    cfg = SimConfig(seed=0, realtime=False, read_noise_e=0.0, background_photons_per_ms=0.0)
    # plate along x (angle 0), daughters 8 µm apart across it (along y)
    cells = [Cell(5, 0.0, 0.0, 4.0, 1.5, 0.0, 2.0, KIND_PAIR, pair_sep_um=8.0)]
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
    f = s.snap()
    g = s.ground_truth()
    assert g.ids.tolist() == [5, 5]
    px = cfg.pixel_size_um
    c = (g.boxes[:, :2] + g.boxes[:, 2:]) / 2
    assert np.allclose(sorted(c[:, 1]), [256 - 4 / px, 256 + 4 / px], atol=0.6)
    assert np.allclose(c[:, 0], 256, atol=0.6)
    assert np.allclose(g.boxes[:, 2] - g.boxes[:, 0], 8 / px, atol=0.1)  # one ellipse each
    assert np.allclose(g.boxes[:, 3] - g.boxes[:, 1], 3 / px, atol=0.1)
    assert np.allclose(sorted(g.centers_um[:, 1]), [-4, 4])
    img = f.pixels.astype(float) - cfg.offset
    assert img[256, 256] < 0.05 * img.max()  # the gap between the daughters is dark
    assert img[int(round(256 + 4 / px)), 256] > 0.5 * img.max()


def test_nuclei_fade_towards_the_envelope_with_dome():
    def profile(dome):
        cfg = SimConfig(seed=0, realtime=False, read_noise_e=0.0, texture=0.0, dome=dome,
                        background_photons_per_ms=0.0, psf_sigma_um=0.01)
        cells = [Cell(1, 0.0, 0.0, 10.0, 10.0, 0.0, 1.0)]
        s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
        row = s.snap().pixels[256].astype(float) - cfg.offset
        return row / row[256]

    r = 10.0 / 0.65  # radius in pixels
    flat, domed = profile(0.0), profile(0.5)
    at = int(256 + 0.8 * r)
    assert flat[at] > 0.9  # a flat disc is as bright at 80 % of the radius as at the centre
    assert 0.5 < domed[at] < 0.7  # a solid ellipsoid: sqrt(1 - 0.8^2) = 0.6
    assert domed[int(256 + r + 3)] < 0.05 and flat[int(256 + r + 3)] < 0.05


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var())


def test_blur_grows_with_defocus():
    s = _scope(seed=2, read_noise_e=0.0, background_photons_per_ms=0.0,
               signal_photons_per_ms=5000.0)
    vals = []
    for dz in (0.0, 2.0, 5.0, 10.0, 20.0):
        s.move_z(s.true_focus_z() + dz)
        vals.append(_sharpness(s.snap().pixels))
    assert all(a > b for a, b in zip(vals, vals[1:], strict=False)), vals
    s.move_z(s.true_focus_z() - 5.0)
    below = _sharpness(s.snap().pixels)
    assert vals[3] < below < vals[1]  # symmetric: -5 µm is as blurred as +5 µm


def test_tilt_and_drift_move_true_focus():
    s = _scope(seed=0, tilt=(0.01, -0.02), drift_um_per_s=0.5)
    z0 = s.true_focus_z()
    assert s.true_focus_z(100.0, 0.0) == pytest.approx(z0 + 1.0)
    assert s.true_focus_z(0.0, 100.0) == pytest.approx(z0 - 2.0)
    s.advance(4.0)
    assert s.true_focus_z() == pytest.approx(z0 + 2.0)
    for _ in range(10):
        s.snap()  # frames advance simulated time too
    assert s.sim_time_s == pytest.approx(4.0 + 10 * s.config.exposure_ms / 1000)


def test_moving_cells_move():
    s = _scope(seed=0, cell_motion_um_per_s=2.0)
    g0 = s.ground_truth()
    s.advance(5.0)
    g1 = s.ground_truth()
    common = np.intersect1d(g0.ids, g1.ids)
    i = [np.flatnonzero(g0.ids == c)[0] for c in common]
    j = [np.flatnonzero(g1.ids == c)[0] for c in common]
    dist = np.linalg.norm(g1.centers_um[j] - g0.centers_um[i], axis=1)
    np.testing.assert_allclose(dist, 10.0, atol=1e-6)
    cid = int(common[0])
    assert s.specimen.position_of(cid, 5.0) == pytest.approx(tuple(g1.centers_um[j[0]]))


def test_binning_and_bit_depth():
    f = _scope(binning=2, bit_depth=8, gain=0.05, offset=5).snap()
    assert f.pixels.shape == (256, 256) and f.pixels.dtype == np.uint8
    assert f.pixel_size_um == pytest.approx(1.3)
    f12 = _scope(bit_depth=12, signal_photons_per_ms=1e5).snap()
    assert f12.pixels.dtype == np.uint16 and f12.pixels.max() == 4095


def test_camera_defects_hot_pixels_stay_cosmic_rays_come_and_go():
    """Hot pixels: the same pixels at full scale in every frame, about the fraction asked
    for, on the binned sensor too; cosmic-ray hits: a Poisson number of single pixels
    per frame at new places each time; none unless asked for."""
    clean = _scope().snap().pixels
    assert clean.max() < 65535
    s = _scope(hot_pixel_fraction=0.002, cosmic_rays_per_frame=20.0)
    a, b = s.snap().pixels, s.snap().pixels
    hot = (a == 65535) & (b == 65535)
    assert 0.0015 < hot.mean() < 0.0025  # 0.2 % of 512 x 512: ~524
    rays_a, rays_b = (a == 65535) & ~hot, (b == 65535) & ~hot
    assert 5 <= rays_a.sum() <= 40 and 5 <= rays_b.sum() <= 40
    assert not (rays_a & rays_b).any()
    assert _scope(hot_pixel_fraction=0.002).snap().pixels[hot].min() == 65535  # same seed
    binned = _scope(hot_pixel_fraction=0.002, binning=2, bit_depth=12, gain=0.1).snap().pixels
    assert 100 < (binned == 4095).sum() < 160  # 0.2 % of 256 x 256, full scale at 12 bit


def test_stream_indices_stamps_and_drops():
    # the newest-frame slot, with the camera in a thread (the camera process: see
    # test_sim_camera_process.py)
    s = SimulatedMicroscope(seed=0, realtime=True, exposure_ms=5.0, camera_process=False)
    frames = []
    with s.stream() as st:
        for f in st:
            frames.append(f)
            if len(frames) == 3:
                import time
                time.sleep(0.5)  # slow consumer: the camera runs on, frames are dropped
            if len(frames) >= 6:
                break
        dropped = st.dropped
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    stamps = [f.stamps["ready"] for f in frames]
    assert stamps == sorted(stamps)
    assert dropped > 0
    assert idx[3] - idx[2] > 1  # the consumer got the newest frame, not the backlog


def test_moves_outside_the_slide_are_refused_and_nothing_moves():
    s = _scope(seed=0, slide_um=(1000.0, 1000.0))
    before = s.position()
    with pytest.raises(MoveRefused, match="outside the soft limit"):
        s.move_xy(600.0, 0.0)
    with pytest.raises(MoveRefused, match="Z move"):
        s.move_z(500.0)
    assert s.position() == before
    assert s.guard.history[-1].made is False


def test_stage_positions_are_quantised_and_moves_take_settle_time():
    s = _scope(seed=0, xy_quantum_um=0.05, xy_settle_ms=30.0)
    t0 = s.sim_time_s
    s.move_xy(10.0123, -3.0377)
    p = s.position()
    assert p.x == pytest.approx(10.0) and p.y == pytest.approx(-3.05)
    assert s.sim_time_s - t0 == pytest.approx(0.03)


def test_regions_list_the_cells_a_scan_must_find():
    s = _scope(seed=9)
    ids = s.specimen.cells_in_region(-150, -150, 150, 150)
    assert len(ids) > 30
    for cid in ids:
        c = s.specimen.get(cid)
        assert c.kind != KIND_DEBRIS and abs(c.x_um) <= 150 and abs(c.y_um) <= 150


def test_bad_config_is_refused_clearly():
    with pytest.raises(ValueError, match="binning"):
        SimConfig(binning=5)
    with pytest.raises(TypeError, match="Unknown SimConfig field"):
        SimulatedMicroscope(sed=1)


def test_kinds_are_varied():
    s = _scope(seed=11, dividing_fraction=0.3, dim_fraction=0.2)
    cells = s.specimen.cells_near(-300, -300, 300, 300)
    kinds = {c.kind for c in cells}
    assert {KIND_NORMAL, KIND_DEBRIS} <= kinds and len(kinds) == 5
    sizes = [2 * max(c.a_um, c.b_um) for c in cells if c.kind == KIND_NORMAL]
    assert min(sizes) < 14 < max(sizes)
    assert not math.isnan(float(np.mean(sizes)))


@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_nuclei_follow_sub_pixel_stage_moves(rotation):
    """Before: sprites were pasted at the nearest whole pixel, so the image stood still
    while the stage moved by less than half a pixel and then jumped (up to 0.46 µm from
    the truth): registration measured 0.4 px of jitter that no real slide has."""
    cfg = SimConfig(seed=0, realtime=False, read_noise_e=0.0,
                    background_photons_per_ms=0.0, texture=0.0, xy_quantum_um=0.0,
                    camera_rotation_deg=rotation, subpixel=True)
    cells = [Cell(1, 0.37, -0.21, 6.0, 5.0, 0.3, 1.0)]
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
    for dx, dy in [(0.0, 0.0), (0.1, 0.0), (0.2, -0.13), (0.325, 0.05), (0.5, 0.29)]:
        s.move_xy(dx, dy)
        f = s.snap()
        c = light_centroid(f.pixels.astype(float) - cfg.offset)
        # the true map (a rotated camera's frames carry the nominal one until calibrated)
        truth = np.linalg.inv(s.true_affine) @ (np.array([0.37, -0.21]) - [dx, dy]) + 256
        assert np.hypot(*(c - truth)) < 0.05, (dx, dy, c - truth)
        box = f.truth[0]
        assert np.hypot(*(c - (box[:2] + box[2:]) / 2)) < 0.05


def test_thick_nuclei_have_a_z_extent_and_are_imaged_as_their_sections():
    """Thin nuclei (the default) have no z extent: the focal plane is all there is. Thick
    ones (``thickness_ratio``) are ellipsoids centred on the focal surface: a plane
    inside one shows its in-focus section (as sharp as at its centre), a plane beyond its
    top or bottom only blur; ``true_z_range`` gives the extent they are scored on."""
    cells = [Cell(1, 0.0, 0.0, 9.0, 7.0, 0.3, 1.0, texture_seed=3)]

    def sharp_at(cfg, dzs):
        s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg))
        out = []
        for dz in dzs:
            s.move_z(s.true_focus_z() + dz)
            out.append(_sharpness(s.snap().pixels))
        return s, np.array(out)

    kw = dict(seed=0, realtime=False, read_noise_e=0.0, background_photons_per_ms=0.0,
              signal_photons_per_ms=5000.0, tilt=(0.01, 0.0))
    thin_cfg, thick_cfg = SimConfig(**kw), SimConfig(**kw, thickness_ratio=0.5)
    thin, a = sharp_at(thin_cfg, [0.0, 2.5, 6.0])
    thick, b = sharp_at(thick_cfg, [0.0, 2.5, 6.0])
    assert thin.true_z_range(1) == (pytest.approx(thin.true_focus_z(0, 0)),) * 2
    lo, hi = thick.true_z_range(1)
    assert hi - lo == pytest.approx(2 * 0.5 * 7.0)
    assert (lo + hi) / 2 == pytest.approx(thick.true_focus_z(0.0, 0.0))
    # inside the nucleus (2.5 µm above its centre, 3.5 µm half-thickness) it stays sharp;
    # a thin nucleus 2.5 µm out of focus has lost far more
    assert b[1] / b[0] > 1.5 * a[1] / a[0]
    assert b[2] < 0.5 * b[0]  # beyond its top: blurred
    with pytest.raises(ValueError, match="thickness_ratio"):
        SimConfig(thickness_ratio=-1.0)


@pytest.mark.parametrize("subpixel", [True, False])
def test_frames_rendered_from_the_kept_still_canvas_equal_fresh_renders(subpixel):
    """The renderer keeps the sum of the still objects while the stage stays within a
    pixel and adds the moving ones each frame; every frame must equal one rendered from
    scratch: small moves inside a pixel, across pixels, back again, time passing (moving
    cells), and without sub-pixel placement (each object rounds on its own)."""
    from inscope.acquisition.simulated.render import Renderer

    s = _scope(seed=5, subpixel=subpixel, cell_motion_um_per_s=3.0, moving_fraction=0.3)
    r = s._renderer
    px = s.pixel_size_um
    moves = [(0.0, 0.0), (0.2, 0.1), (0.45, -0.3), (1.6, 0.2), (-0.7, 2.3), (0.0, 0.0),
             (0.2, 0.1)]
    for k, (dx, dy) in enumerate(moves):
        xy = (10.0 + dx * px, -4.0 + dy * px)
        t = 0.7 * k
        cells = s.specimen.cells_near(*r.field_rect_um(xy), t)
        assert any(c.vx_um_s or c.vy_um_s for c in cells)
        assert any(not (c.vx_um_s or c.vy_um_s) for c in cells)
        got, _ = r.render(cells, xy, t, 0.8)
        want, _ = Renderer(s.config, r.A).render(cells, xy, t, 0.8)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("speed", [0.0, 8.0])
def test_cells_near_finds_every_object_that_reaches_the_field_however_late(speed):
    """The lookup keeps the moving cells of the tiles in their reach in one index (so a
    long run does not scan ever more tiles); it must return exactly the objects whose
    box reaches the rectangle, in id order, as a scan of every tile of the slide does:
    at t = 0 (moving cells not yet moved), early, and after the cells have crossed the
    slide, for fields anywhere on it."""
    from inscope.acquisition.simulated.specimen import TILE_UM, Specimen

    cfg = SimConfig(seed=3, cell_motion_um_per_s=speed, moving_fraction=0.1,
                    slide_um=(1600.0, 1600.0))
    sp, every = Specimen(cfg), Specimen(cfg)
    n = int(cfg.slide_um[0] / 2 // TILE_UM) + 1
    tiles = [every._tile(tx, ty) for tx in range(-n, n + 1) for ty in range(-n, n + 1)]
    rng = np.random.default_rng(0)
    found = 0
    for t in (0.0, 0.0, 2.0, 30.0, 150.0, 400.0, 30.0, 0.0):
        for _ in range(6):
            cx, cy = rng.uniform(-800, 800, 2)
            w = rng.uniform(20, 250)
            x0, y0, x1, y1 = cx - w, cy - w, cx + w, cy + w
            got = [c.id for c in sp.cells_near(x0, y0, x1, y1, t)]
            assert got == ids_reaching([c for cells in tiles for c in cells], x0, y0, x1,
                                       y1, t)
            found += len(got)
    assert found > 0


def test_dim_brightness_sets_the_dim_nuclei_alone():
    """``dim_brightness``: the dim nuclei take a fraction in that range of a typical
    nucleus' brightness; every other object, and every other draw, is as before (the
    default is the range the simulator always had, so seeds keep their slides)."""
    from inscope.acquisition.simulated.specimen import KIND_DIM

    def cells(**kw) -> list[Cell]:
        cfg = SimConfig(seed=5, realtime=False, dim_fraction=0.3, **kw)
        return Specimen(cfg).cells_near(-300, -300, 300, 300)

    base, same, faint = cells(), cells(dim_brightness=(0.15, 0.35)), cells(
        dim_brightness=(0.02, 0.02))
    assert [c.brightness for c in base] == [c.brightness for c in same]
    assert [(c.id, c.x_um, c.kind) for c in faint] == [(c.id, c.x_um, c.kind) for c in base]
    dim = [(f.brightness / b.brightness) for f, b in zip(faint, base, strict=True)
           if b.kind == KIND_DIM]
    assert len(dim) >= 10
    # faint = base * 0.02 / u with the same draw u in [0.15, 0.35]
    assert all(0.02 / 0.35 - 1e-9 <= r <= 0.02 / 0.15 + 1e-9 for r in dim)
    assert all(f.brightness == b.brightness for f, b in zip(faint, base, strict=True)
               if b.kind != KIND_DIM)
    with pytest.raises(ValueError, match="dim_brightness must be"):
        SimConfig(dim_brightness=(0.3, 0.1))
