"""The simulator's renderer, part by part, against independent references: every test,
benchmark and model card scores against what it draws, so a wrong weight in a sub-pixel
paste, a blur that moves the image, or a camera whose noise is off would bias them all
without any of them failing.

References: SciPy's linear-interpolation shift (a bilinear paste is one), the moments of
a sampled Gaussian, and the camera's mean and variance from its photon-transfer model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.render import Renderer, _paste


def _sprite(n=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, n)).astype(np.float32) + 0.1


@pytest.mark.parametrize("x0, y0", [(10.0, 7.0), (10.25, 7.0), (10.0, 7.6), (10.3, 7.8),
                                    (12.999, 3.5)])
def test_paste_is_a_linear_interpolation_shift_of_the_sprite(x0, y0):
    spr = _sprite()
    canvas = np.zeros((30, 40), np.float32)
    _paste(canvas, spr, x0, y0)
    # reference: the sprite padded by one pixel, shifted by the fraction with SciPy's
    # linear interpolation, added at the whole-pixel position
    ix, iy = int(np.floor(x0 + 1e-6)), int(np.floor(y0 + 1e-6))
    pad = np.zeros((spr.shape[0] + 2, spr.shape[1] + 2), np.float64)
    pad[1:-1, 1:-1] = spr
    moved = ndimage.shift(pad, (y0 - iy, x0 - ix), order=1, mode="constant")
    ref = np.zeros((32, 42))
    ref[iy:iy + pad.shape[0], ix:ix + pad.shape[1]] = moved
    np.testing.assert_allclose(canvas, ref[1:31, 1:41], atol=2e-5)
    # the paste adds: what was on the canvas stays
    again = np.ones((30, 40), np.float32)
    _paste(again, spr, x0, y0)
    np.testing.assert_allclose(again - 1.0, canvas, atol=2e-5)


def test_paste_keeps_the_sprites_light_and_moves_its_centroid_by_the_position():
    spr = _sprite(seed=1)
    yy, xx = np.mgrid[:9, :9]
    c = np.array([(xx * spr).sum(), (yy * spr).sum()]) / spr.sum()
    for x0, y0 in [(5.0, 6.0), (5.4, 6.0), (5.0, 6.7), (5.35, 6.8)]:
        canvas = np.zeros((25, 25), np.float32)
        _paste(canvas, spr, x0, y0)
        assert canvas.sum() == pytest.approx(spr.sum(), rel=1e-5)
        yy2, xx2 = np.mgrid[:25, :25]
        got = np.array([(xx2 * canvas).sum(), (yy2 * canvas).sum()]) / canvas.sum()
        np.testing.assert_allclose(got, c + [x0, y0], atol=1e-4)


@pytest.mark.parametrize("x0, y0", [(-4.0, -3.0), (-4.3, 2.5), (16.0, 17.0), (16.6, -2.2),
                                    (-20.0, 0.0), (30.5, 30.5)])
def test_paste_cut_by_the_canvas_edge_is_the_part_that_falls_inside(x0, y0):
    spr = _sprite(seed=2)
    canvas = np.zeros((20, 20), np.float32)
    _paste(canvas, spr, x0, y0)
    big = np.zeros((60, 60), np.float32)
    _paste(big, spr, x0 + 20, y0 + 20)  # the same paste, wholly inside a larger canvas
    np.testing.assert_allclose(canvas, big[20:40, 20:40], atol=1e-6)


def _moments(img):
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    s = img.sum()
    cx, cy = (xx * img).sum() / s, (yy * img).sum() / s
    vx = ((xx - cx) ** 2 * img).sum() / s
    vy = ((yy - cy) ** 2 * img).sum() / s
    return s, cx, cy, vx, vy


@pytest.mark.parametrize("sigma", [0.1, 0.2, 0.5, 1.5, 4.0, 5.9, 6.5, 9.0, 14.0])
@pytest.mark.parametrize("shift", [None, (0.3, -0.45), (-0.2, 0.0), (0.0, 0.6)])
def test_blur_keeps_the_light_moves_it_by_the_shift_and_spreads_it_by_sigma(sigma, shift):
    img = np.zeros((161, 161), np.float32)
    img[80, 80] = 1000.0
    out = Renderer._blur_sigma(img, sigma, None if shift is None else np.array(shift))
    assert out.dtype == np.float32 and out.shape == img.shape
    s, cx, cy, vx, vy = _moments(out.astype(np.float64))
    sx, sy = (0.0, 0.0) if shift is None else shift
    assert s == pytest.approx(1000.0, rel=0.01)
    # the content moves by +shift (the stage's sub-pixel fraction), at every width
    assert cx == pytest.approx(80 + sx, abs=0.025)
    assert cy == pytest.approx(80 + sy, abs=0.025)
    if sigma < 0.3:
        # below a third of a pixel no blur is drawn: a point stays a point, or is split
        # between its neighbours by the shift (bilinear, variance f (1 - f))
        assert vx == pytest.approx(abs(sx) * (1 - abs(sx)), abs=1e-4)
        assert vy == pytest.approx(abs(sy) * (1 - abs(sy)), abs=1e-4)
    elif sigma <= 6:
        # the Gaussian sampled at the pixel centres around the shifted point: its
        # discrete moments (under a pixel wide they fall short of sigma^2, and its
        # centroid of the shift by up to 0.02 px at 0.5 px: aliasing of the sampling)
        for got_c, got_v, d in ((cx, vx, sx), (cy, vy, sy)):
            j = np.arange(-40, 41)
            g = np.exp(-0.5 * ((j - d) / sigma) ** 2)
            g /= g.sum()
            mu = (j * g).sum()
            # (a shifted kernel is cut at 3.5 sigma + 1 px: 0.2 % of the variance)
            assert got_c == pytest.approx(80 + mu, abs=2e-3)
            assert got_v == pytest.approx((((j - mu) ** 2) * g).sum(), rel=4e-3, abs=1e-3)
            if sigma >= 1:
                assert got_v == pytest.approx(sigma ** 2, rel=4e-3)
    else:
        # wide blurs are drawn on a downsampled copy: within a few % of sigma^2, plus
        # the block averaging's own spread
        assert vx == pytest.approx(sigma ** 2, rel=0.08)
        assert vy == pytest.approx(sigma ** 2, rel=0.08)


def test_blur_without_a_shift_is_opencvs_gaussian_and_a_shift_of_zero_is_no_shift():
    rng = np.random.default_rng(3)
    img = rng.random((64, 80)).astype(np.float32)
    import cv2

    for sigma in (0.5, 2.0, 6.0):
        np.testing.assert_allclose(Renderer._blur_sigma(img, sigma),
                                   cv2.GaussianBlur(img, (0, 0), sigma), atol=1e-6)
        np.testing.assert_allclose(Renderer._blur_sigma(img, sigma, np.zeros(2)),
                                   cv2.GaussianBlur(img, (0, 0), sigma), atol=1e-6)
    assert Renderer._blur_sigma(img, 0.1) is img  # nothing to draw, nothing copied


def _camera(**kw):
    cfg = SimConfig(seed=5, **kw)
    px = cfg.pixel_size_um * cfg.binning
    return cfg, Renderer(cfg, np.eye(2) * px)


@pytest.mark.parametrize("kw", [
    {},
    {"gain": 2.5, "offset": 500.0, "read_noise_e": 4.0, "exposure_ms": 20.0},
    {"binning": 2, "background_photons_per_ms": 5.0, "signal_photons_per_ms": 30.0},
    {"bit_depth": 12, "gain": 0.5, "offset": 50.0},
])
def test_camera_mean_and_variance_follow_the_photon_transfer_model(kw):
    cfg, r = _camera(**kw)
    h, w = r.shape
    rate = np.zeros((h, w), np.float32)
    rate[:, w // 2:] = 0.5  # half the frame at half a typical nucleus' peak
    frames = np.stack([r.expose(rate.copy()).astype(np.float64) for _ in range(4)])
    b2 = cfg.binning ** 2
    for value, cols in ((0.0, slice(0, w // 2)), (0.5, slice(w // 2, w))):
        e = (value * cfg.signal_photons_per_ms + cfg.background_photons_per_ms) \
            * cfg.exposure_ms * b2
        # the ADC truncates to whole ADU: half an ADU below the analogue mean, and the
        # quantisation's 1/12 ADU^2 on top of the noise
        mean = cfg.gain * e + cfg.offset - 0.5
        var = cfg.gain ** 2 * (e + cfg.read_noise_e ** 2 * b2) + 1 / 12
        part = frames[:, :, cols]
        assert part.mean() == pytest.approx(mean, rel=0.003)
        assert part.var() == pytest.approx(var, rel=0.03)
    assert frames[0].dtype == np.float64
    assert r.expose(rate.copy()).dtype == np.uint16


def test_camera_clips_to_its_bit_depth_and_to_zero():
    cfg, r = _camera(bit_depth=8, offset=0.0, background_photons_per_ms=0.0,
                     read_noise_e=3.0)
    rate = np.zeros(r.shape, np.float32)
    rate[:10] = 10.0  # 6000 photons: far above 255
    out = r.expose(rate)
    assert out.dtype == np.uint8
    assert (out[:10] == 255).all()
    dark = out[10:].astype(np.float64)
    # no light, no offset: read noise around 0, everything under 1 ADU read as 0 (the
    # negative half clipped, (0, 1) truncated): P(N(0, 3) < 1)
    assert (dark == 0).mean() == pytest.approx(0.6306, abs=0.02)
    cfg, r = _camera(bit_depth=12, offset=4000.0, gain=2.0)
    assert r.expose(np.full(r.shape, 100.0, np.float32)).max() == 4095


def test_each_frame_draws_fresh_noise_and_a_seed_repeats_the_sequence():
    _, r1 = _camera()
    _, r2 = _camera()
    rate = np.full(r1.shape, 0.3, np.float32)
    a = [r1.expose(rate.copy()) for _ in range(3)]
    b = [r2.expose(rate.copy()) for _ in range(3)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    # frame to frame the noise is independent: the difference of two frames has twice
    # the variance of one
    d = a[0].astype(np.float64) - a[1].astype(np.float64)
    assert d.var() == pytest.approx(2 * a[0].astype(np.float64).var(), rel=0.05)


def test_hot_pixels_stay_put_at_full_scale_and_cosmic_rays_come_and_go():
    cfg, r = _camera(hot_pixel_fraction=0.001, cosmic_rays_per_frame=20.0)
    rate = np.zeros(r.shape, np.float32)
    frames = [r.expose(rate.copy()) for _ in range(30)]
    full = [np.flatnonzero(f == 65535) for f in frames]
    hot = set(full[0]).intersection(*map(set, full[1:]))
    n = r.shape[0] * r.shape[1]
    assert len(hot) == pytest.approx(0.001 * n, rel=0.35)
    rays = [len(set(f) - hot) for f in full]
    # Poisson, mean 20 (a ray landing on a hot pixel, or twice on one pixel, is not seen)
    assert np.mean(rays) == pytest.approx(20.0, rel=0.2)
    assert len(set(rays)) > 3
    # the same seed: the same hot pixels; another seed: others
    _, again = _camera(hot_pixel_fraction=0.001)
    assert set(np.flatnonzero(again.expose(rate.copy()) == 65535)) == hot
    cfg6 = SimConfig(seed=6, hot_pixel_fraction=0.001)
    other = Renderer(cfg6, np.eye(2) * cfg6.pixel_size_um)
    assert len(set(np.flatnonzero(other.expose(rate.copy()) == 65535)) & hot) < 0.1 * len(hot)


@pytest.mark.parametrize("affine", [np.eye(2) * 0.65, np.array([[0.0, -0.5], [0.5, 0.0]]),
                                    np.array([[-0.6, 0.1], [0.05, 0.7]])])
def test_field_rect_covers_exactly_the_frames_corners(affine):
    cfg = SimConfig(shape=(200, 300))
    r = Renderer(cfg, affine)
    x0, y0, x1, y1 = r.field_rect_um((120.0, -40.0))
    h, w = r.shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - [w / 2, h / 2]
    pts = np.array([120.0, -40.0]) + corners @ affine.T
    assert (x0, y0) == pytest.approx((pts[:, 0].min(), pts[:, 1].min()))
    assert (x1, y1) == pytest.approx((pts[:, 0].max(), pts[:, 1].max()))
    assert x1 - x0 >= abs(affine[0, 0]) * w - 1e-9


# -- nuclei: where they are drawn, thick ones as their sections ----------------------------
from inscope.acquisition.simulated.specimen import KIND_PAIR, Cell  # noqa: E402

_QUIET = dict(seed=0, realtime=False, read_noise_e=0.0, background_photons_per_ms=0.0,
              texture=0.0, subpixel=True)


def _renderer(**kw):
    cfg = SimConfig(**{**_QUIET, **kw})
    rot = np.deg2rad(cfg.camera_rotation_deg)
    a = cfg.pixel_size_um * np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    return Renderer(cfg, a)


def _blob_centroids(img, boxes):
    """Light-weighted centroid of *img* inside each box (x0, y0, x1, y1)."""
    out = []
    for x0, y0, x1, y1 in boxes:
        xa, ya = int(np.floor(x0)), int(np.floor(y0))
        sub = img[ya:int(np.ceil(y1)) + 1, xa:int(np.ceil(x1)) + 1].astype(np.float64)
        s = _moments(sub)
        out.append((s[1] + xa, s[2] + ya))
    return np.array(out)


@pytest.mark.parametrize("thickness", [0.0, 0.5])
@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_nuclei_are_drawn_where_their_truth_boxes_are_as_the_stage_moves(thickness, rotation):
    """Thin and thick nuclei alike: the image moves against the stage, and the truth
    boxes with it (a sign or unit slip in either the drawing or the truth would part
    them)."""
    r = _renderer(thickness_ratio=thickness, camera_rotation_deg=rotation)
    cells = [Cell(1, 20.3, -31.7, 6.0, 4.5, 0.4, 1.0), Cell(2, -45.1, 12.6, 5.0, 5.0, 0.0, 1.0),
             Cell(3, 60.2, 55.5, 7.0, 4.0, 1.2, 1.0)]
    for stage in [(0.0, 0.0), (13.37, -8.21), (-20.05, 31.4)]:
        img, truth = r.render(cells, stage, 0.0, 0.0)
        assert sorted(truth.ids.tolist()) == [1, 2, 3]
        for box, cid in zip(truth.boxes, truth.ids, strict=True):
            c = next(c for c in cells if c.id == cid)
            # where the cell must be: the inverse of the true pixel -> stage map
            want = r.Ainv @ (np.array([c.x_um, c.y_um]) - stage) + r.center
            assert (box[:2] + box[2:]) / 2 == pytest.approx(want, abs=1e-3)
            got = _blob_centroids(img, [box])[0]
            assert np.hypot(*(got - want)) < 0.05, (stage, cid, got - want)


@pytest.mark.parametrize("angle", [0.6, math.pi / 2, 0.0])
def test_a_dividing_pair_is_drawn_as_two_daughters_at_their_two_boxes(angle):
    r = _renderer()
    pair = Cell(7, 3.0, -2.0, 4.0, 2.0, angle, 1.0, kind=KIND_PAIR, pair_sep_um=9.0)
    img, truth = r.render([pair], (0.0, 0.0), 0.0, 0.0)
    assert truth.ids.tolist() == [7, 7] and len(truth.boxes) == 2
    cents = _blob_centroids(img, truth.boxes)
    mids = (truth.boxes[:, :2] + truth.boxes[:, 2:]) / 2
    np.testing.assert_allclose(cents, mids, atol=0.1)
    # the two boxes hold about the same light (not one daughter drawn twice over the other)
    light = [img[int(b[1]):int(b[3]) + 1, int(b[0]):int(b[2]) + 1].sum() for b in truth.boxes]
    assert light[0] == pytest.approx(light[1], rel=0.05)
    # and between them, across the gap, the image is dark
    m = mids.mean(axis=0).round().astype(int)
    assert img[m[1], m[0]] < 0.1 * img.max()


def test_thick_nucleus_sections_sum_to_its_image_each_inside_its_cross_section():
    r = _renderer(thickness_ratio=0.5)
    c = Cell(1, 0.0, 0.0, 8.0, 6.0, 0.3, 1.0)
    u, secs = r.sections(c)
    spr = r.sprite(c)
    h = 0.5 * 6.0
    n = int(np.ceil(2 * h / 0.5))
    assert len(u) == len(secs) == n
    np.testing.assert_allclose(u, -1 + (2 * np.arange(n) + 1) / n)  # equal slabs, centred
    np.testing.assert_allclose(sum(secs), spr, rtol=1e-5, atol=1e-6)
    rr = r._radii[c.id]
    for v, sec in zip(u, secs, strict=True):
        assert sec.dtype == np.float32 and (sec >= 0).all()
        cut = np.sqrt(1 - v * v)  # the ellipsoid's cross-section at height v
        outside = sec[rr > cut + 0.15].sum() / sec.sum()
        assert outside < 0.05, (v, outside)
    # the polar sections are small; the rim is held by the sections that reach it
    area = [(s > 0.5 * s.max()).sum() for s in secs]
    assert area[0] < 0.5 * area[n // 2] and area[-1] < 0.5 * area[n // 2]
    rim = (rr > 0.9) & (rr < 0.97)
    reach = sum(s for v, s in zip(u, secs, strict=True) if np.sqrt(1 - v * v) >= 0.9)
    assert reach[rim].sum() > 0.9 * spr[rim].sum()
    # a thin nucleus has three sections at least; debris has no thickness
    thin = Cell(2, 0.0, 0.0, 1.0, 0.4, 0.0, 1.0)
    assert len(r.sections(thin)[0]) == 3
    assert r.half_thickness_um(Cell(3, 0, 0, 1.0, 1.0, 0.0, 1.0, kind=4)) == 0.0


@pytest.mark.parametrize("defocus", [0.0, 1.5, -4.0])
def test_a_nearly_flat_thick_nucleus_is_drawn_as_a_thin_one(defocus):
    """Thickness to 0: every section sits at the nucleus' own distance from focus, so
    the sum of blurred sections is the thin nucleus blurred once (to the 8 % steps in
    which sections share a blur: the blur's width in pixels, not µm, is what is
    stepped)."""
    cells = [Cell(1, 5.3, -2.2, 7.0, 6.0, 0.2, 1.0)]
    thin, _ = _renderer().render(cells, (1.1, 0.4), 0.0, defocus)
    flat, _ = _renderer(thickness_ratio=1e-4).render(cells, (1.1, 0.4), 0.0, defocus)
    assert flat.sum() == pytest.approx(thin.sum(), rel=0.01)
    s1, s2 = _moments(thin.astype(np.float64)), _moments(flat.astype(np.float64))
    assert s2[1:3] == pytest.approx(s1[1:3], abs=0.02)
    assert np.sqrt(s2[3]) == pytest.approx(np.sqrt(s1[3]), rel=0.03)
    assert np.abs(flat - thin).max() < 0.06 * thin.max()


@pytest.mark.parametrize("tilt, at", [((0.05, 0.0), (60.0, 0.0)), ((0.0, 0.05), (0.0, 60.0)),
                                      ((0.03, -0.025), (50.0, -60.0))])
def test_a_tilted_focal_surface_puts_each_thick_nucleus_in_focus_at_its_own_height(tilt, at):
    """On a tilted surface (dz/dx = 0.05) a nucleus 60 µm right of the field's centre
    sits 3 µm higher: it is sharpest 3 µm above the centre's focus (each axis, and both:
    0.03 x 50 + 0.025 x 60 = 3 µm)."""
    r = _renderer(thickness_ratio=0.3, tilt=tilt)
    cells = [Cell(1, at[0] + 40.0, at[1] - 30.0, 6.0, 5.0, 0.0, 1.0)]

    def peak(dz):  # the stage 40 µm left and 30 µm below: the surface is the stage's
        img, _ = r.render(cells, (40.0, -30.0), 0.0, dz)
        return float(img.max())

    zs = np.arange(-1.0, 7.01, 0.5)
    best = zs[int(np.argmax([peak(z) for z in zs]))]
    assert best == pytest.approx(3.0, abs=0.5)
    assert peak(3.0 + 4.0) == pytest.approx(peak(3.0 - 4.0), rel=0.03)  # symmetric about it


def test_debris_is_drawn_in_focus_among_thick_nuclei_as_among_thin_ones():
    """Debris has no thickness: in a thick slide it is one section at its own height."""
    debris = [Cell(9, 4.2, -3.1, 1.2, 0.9, 0.3, 2.0, kind=4)]
    for dz in (0.0, 2.0):
        thin, t1 = _renderer().render(debris, (0.0, 0.0), 0.0, dz)
        thick, t2 = _renderer(thickness_ratio=0.5).render(debris, (0.0, 0.0), 0.0, dz)
        assert len(t1.boxes) == len(t2.boxes) == 0  # never labelled
        assert thick.sum() == pytest.approx(thin.sum(), rel=0.01) and thin.sum() > 0
        assert np.abs(thick - thin).max() < 0.05 * thin.max()


def test_a_cell_moving_along_one_axis_moves_in_the_frames():
    for vx, vy in ((2.0, 0.0), (0.0, -1.5)):
        r = _renderer()
        cells = [Cell(3, 0.0, 0.0, 5.0, 4.0, 0.0, 1.0, vx_um_s=vx, vy_um_s=vy)]
        a, ta = r.render(cells, (0.0, 0.0), 0.0, 0.0)
        b, tb = r.render(cells, (0.0, 0.0), 3.25, 0.0)
        got = _blob_centroids(b, tb.boxes)[0] - _blob_centroids(a, ta.boxes)[0]
        want = np.array([vx, vy]) * 3.25 / 0.65
        assert got == pytest.approx(want, abs=0.05)


@pytest.mark.parametrize("subpixel", [False, True])
def test_a_stage_move_along_one_axis_redraws_the_still_cells(subpixel):
    """The sum of the cells that stand still is kept while the stage stays on one
    pixel; a move along x alone, or y alone, must still move them."""
    r = _renderer(subpixel=subpixel)
    cells = [Cell(1, 0.0, 0.0, 6.0, 5.0, 0.0, 1.0)]
    ref, _ = r.render(cells, (0.0, 0.0), 0.0, 0.0)
    c0 = _moments(ref.astype(np.float64))[1:3]
    for stage in [(6.5, 0.0), (6.5, 3.25), (0.0, 3.25), (0.0, 0.0)]:
        img, _ = r.render(cells, stage, 0.0, 0.0)
        c = _moments(img.astype(np.float64))[1:3]
        assert np.subtract(c, c0) == pytest.approx(-np.array(stage) / 0.65, abs=0.51)


@pytest.mark.parametrize("defocus", [0.0, 1.0, -3.0])
def test_the_blur_is_the_in_focus_psf_widened_by_defocus(defocus):
    """sigma = hypot(psf_sigma, blur_um_per_um x defocus), in pixels of the true map."""
    r = _renderer(psf_sigma_um=0.4, blur_um_per_um=0.35)
    img = np.zeros((101, 101), np.float32)
    img[50, 50] = 1.0
    sigma = math.hypot(0.4, 0.35 * defocus) / 0.65
    np.testing.assert_allclose(r._blur(img, defocus), Renderer._blur_sigma(img, sigma),
                               atol=1e-7)


@pytest.mark.parametrize("where", ["left", "right", "top", "bottom", "corner"])
def test_truth_boxes_are_cut_at_the_frames_pixel_extent_with_their_visible_share(where):
    """A nucleus cut by the frame's edge: its box ends at the outer edge of the outer
    pixel (-0.5 or size - 0.5: pixel centres are integers), and the share of it in view
    is the cut box's area over the whole box's."""
    r = _renderer()
    h, w = r.shape
    p = 0.65
    # the nucleus' centre 3 px inside the named edge(s); a 20 x 14 px box (13 x 9.1 µm)
    px_x = {"left": 3.0, "right": w - 4.0, "corner": 3.0}.get(where, w / 2)
    px_y = {"top": 3.0, "bottom": h - 4.0, "corner": h - 4.0}.get(where, h / 2)
    cx, cy = (px_x - w / 2) * p, (px_y - h / 2) * p
    c = Cell(1, cx, cy, 6.5, 4.55, 0.0, 1.0)
    gt = r.truth([c], (0.0, 0.0), 0.0)
    assert len(gt) == 1
    x0, y0, x1, y1 = gt.boxes[0]
    want = (max(px_x - 10, -0.5), max(px_y - 7, -0.5), min(px_x + 10, w - 0.5),
            min(px_y + 7, h - 0.5))
    assert (x0, y0, x1, y1) == pytest.approx(want, abs=1e-3)
    assert gt.visible_fraction[0] == pytest.approx((want[2] - want[0]) * (want[3] - want[1])
                                                   / (20 * 14), abs=1e-4)
    assert gt.visible_fraction[0] < 0.9
    # the µm truth is the whole object's, not the cut box's
    assert gt.centers_um[0] == pytest.approx((cx, cy))
    assert gt.sizes_um[0] == pytest.approx((13.0, 9.1))
    assert gt.boxes.dtype == np.float32 and gt.ids.dtype == np.int64
    assert gt.visible_fraction.dtype == np.float32


def test_a_nucleus_just_outside_the_frame_has_no_box_and_one_just_inside_has_one():
    r = _renderer()
    h, w = r.shape
    p = 0.65
    # box 20 px wide: centre 10.4 px beyond the outer edge's pixel boundary (-0.5)
    out_left = Cell(1, (-0.5 - 10.4 - w / 2) * p, 0.0, 6.5, 4.55, 0.0, 1.0)
    out_bottom = Cell(2, 0.0, (h - 0.5 + 7.2 - h / 2) * p, 6.5, 4.55, 0.0, 1.0)
    in_right = Cell(3, (w - 0.5 + 9.8 - w / 2) * p, 0.0, 6.5, 4.55, 0.0, 1.0)
    gt = r.truth([out_left, out_bottom, in_right], (0.0, 0.0), 0.0)
    assert gt.ids.tolist() == [3]
    assert gt.boxes[0][0] == pytest.approx(w - 0.5 - 0.2, abs=1e-3)
    assert gt.boxes[0][2] == pytest.approx(w - 0.5)
    empty = r.truth([out_left], (0.0, 0.0), 0.0)
    assert empty.boxes.shape == (0, 4) and empty.centers_um.shape == (0, 2)
    assert empty.sizes_um.shape == (0, 2) and len(empty) == 0


def test_a_pairs_truth_gives_each_daughter_its_own_centre_and_size():
    r = _renderer()
    c = Cell(5, 10.0, -20.0, 4.0, 2.0, 0.5, 1.0, kind=KIND_PAIR, pair_sep_um=8.0)
    gt = r.truth([c], (0.0, 0.0), 0.0)
    assert gt.ids.tolist() == [5, 5]
    offs = c.part_offsets_um()
    for k in range(2):
        assert gt.centers_um[k] == pytest.approx((10.0 + offs[k][0], -20.0 + offs[k][1]))
        hx, hy = c.part_half_extent_um()
        assert gt.sizes_um[k] == pytest.approx((2 * hx, 2 * hy))
        mid = (gt.boxes[k, :2] + gt.boxes[k, 2:]) / 2
        want = r.Ainv @ np.array(gt.centers_um[k]) + r.center
        assert mid == pytest.approx(want, abs=1e-3)
        assert (gt.boxes[k, 2:] - gt.boxes[k, :2]) == pytest.approx(
            np.array([2 * hx, 2 * hy]) / 0.65, abs=1e-3)
