"""Focus on the simulated microscope: errors against its true focal plane.

Mutation testing: ``python -m benchmarks.mutation --module focus``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from _support import sim_scope

from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.control.focus import (
    METRICS,
    FocusAction,
    FocusResult,
    autofocus,
    focus_curve,
    sharpness,
)
from inscope.enums import AutofocusIssue


def _truth(scope) -> float:
    p = scope.position()
    return scope.true_focus_z(p.x, p.y)


# -- sharpness -------------------------------------------------------------------------
def _texture(seed: int = 0, shape=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.normal(500, 100, shape).astype(np.float32), (0, 0), 1.0)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_every_metric_prefers_the_sharp_image(metric):
    sharp = _texture()
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    assert sharpness(sharp, metric=metric) > 1.5 * sharpness(blurred, metric=metric)
    # integer images give the same value as their float copy
    u16 = sharp.clip(0, 65535).astype(np.uint16)
    assert sharpness(u16, metric=metric) == pytest.approx(
        sharpness(u16.astype(np.float32), metric=metric), rel=1e-5)


def test_metric_values_by_hand():
    img = np.tile(np.array([0.0, 2.0, 4.0, 6.0], np.float32), (3, 1))  # ramp along x
    assert sharpness(img, metric="brenner") == pytest.approx(16.0)  # (x+2 - x)^2 = 4^2
    assert sharpness(img, metric="normvar") == pytest.approx(5.0 / 3.0)  # var 5, mean 3
    assert sharpness(img[:, :2], metric="brenner") == 0.0  # too narrow for a 2-px step
    flat = np.full((8, 8), 7.0, np.float32)
    for m in METRICS:
        assert sharpness(flat, metric=m) == pytest.approx(0.0, abs=1e-9)
    assert sharpness(np.zeros((8, 8), np.float32), metric="normvar") == 0.0


def test_boxes_measure_only_their_crops_weighted_by_area(monkeypatch):
    from inscope.control import focus

    # the crops' geometry only: a sub-image would measure its own noise, and so its own
    # hot-pixel margin (tested on its own below)
    monkeypatch.setattr(focus, "HOT_PIXEL_SIGMA", None)
    sharp, blurred = _texture(1), cv2.GaussianBlur(_texture(1), (0, 0), 3.0)
    img = np.concatenate([sharp, blurred], axis=1)  # sharp left half, blurred right
    on_sharp = np.array([[20, 20, 60, 60]], float)
    on_blur = on_sharp + [128, 0, 128, 0]
    assert sharpness(img, on_sharp) > 3 * sharpness(img, on_blur)
    # pad=0: exactly the box; both together: the area-weighted mean of the two
    a = sharpness(img, on_sharp, pad=0.0)
    assert a == pytest.approx(sharpness(img[20:60, 20:60]), rel=1e-6)
    big = np.array([[150, 10, 230, 90]], float)  # 80 x 80 on the blurred half
    b = sharpness(img, big, pad=0.0)
    both = sharpness(img, np.concatenate([on_sharp, big]), pad=0.0)
    assert both == pytest.approx((1600 * a + 6400 * b) / 8000, rel=1e-6)
    # pad grows each side by pad x size: 40 px box, pad 0.25 -> 10 px more each side
    assert sharpness(img, on_sharp) == pytest.approx(sharpness(img[10:70, 10:70]), rel=1e-6)
    # crops are clipped to the image
    edge = np.array([[-30, -30, 30, 30]], float)
    assert sharpness(img, edge, pad=0.0) == pytest.approx(sharpness(img[0:30, 0:30]),
                                                          rel=1e-6)


def test_boxes_too_small_or_empty_fall_back_to_the_whole_frame():
    img = _texture(2)
    whole = sharpness(img)
    assert sharpness(img, np.zeros((0, 4))) == whole
    assert sharpness(img, np.array([[10, 10, 11.5, 40]]), pad=0.0) == whole  # 2 px wide
    assert sharpness(img, np.array([[10, 10, 40, 12]]), pad=0.0) == whole  # 2 px high
    assert sharpness(img, np.array([[10, 10, 13, 13]]), pad=0.0) != whole  # 3 x 3 is used


def test_sharpness_bad_input_names_the_fix():
    with pytest.raises(ValueError, match=r"Unknown sharpness metric 'sobel'; use one of "
                                         r"\['brenner', 'laplacian', 'normvar', 'tenengrad'\]"):
        sharpness(np.zeros((8, 8)), metric="sobel")
    with pytest.raises(ValueError, match=r"needs a 2-D image; got shape \(2, 8, 8\)"):
        sharpness(np.zeros((2, 8, 8)))


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_autofocus_is_not_drawn_to_cosmic_ray_hits(seed):
    """Three hits per frame (the simulator's camera) outweighed the whole field's
    sharpness: autofocus ended on whichever image had the hits (of 8 fields, none within
    0.3 um; benchmarks/focus_hot_pixels.py)."""
    scope = sim_scope(seed=seed, shape=(256, 256), cosmic_rays_per_frame=3.0)
    zf = _truth(scope)
    scope.move_z(zf + 3.0)
    r = autofocus(scope, search_um=10.0)
    assert r.ok, r.message
    assert abs(scope.position().z - zf) < 0.3, r.samples


@pytest.mark.parametrize("n_boxes", [3, 30])  # crop by crop, and the integral image
def test_a_hot_pixel_in_a_cell_crop_leaves_its_sharpness(n_boxes, monkeypatch):
    from inscope.control import focus

    rng = np.random.default_rng(n_boxes)
    img = (_texture(5, (160, 200)) + rng.normal(0, 8, (160, 200))).astype(np.float32)
    x0, y0 = rng.uniform(0, 170, n_boxes), rng.uniform(0, 130, n_boxes)
    boxes = np.stack([x0, y0, x0 + 24, y0 + 24], 1)
    clean = sharpness(img, boxes)
    hot = img.copy()
    for x, y in ((x0[0] + 12, y0[0] + 12), (x0[0] - 3, y0[0] + 5), (199, 0)):  # in, on rim
        hot[int(y), int(x)] = 60000.0
    # (each is lowered to 8 noise sigma above its brightest neighbour: a trace is left)
    assert sharpness(hot, boxes) == pytest.approx(clean, rel=0.03)
    assert sharpness(hot) == pytest.approx(sharpness(img), rel=0.03)
    with monkeypatch.context() as m:  # what they would have done
        m.setattr(focus, "HOT_PIXEL_SIGMA", None)
        assert sharpness(hot, boxes) > 5 * clean
    # two adjacent hot pixels are not one pixel's defect: they count (documented) ...
    hot[int(y0[0] + 12), int(x0[0] + 13)] = 60000.0
    assert sharpness(hot, boxes) > 2 * clean
    with monkeypatch.context() as m:  # ... unless pairs are asked for
        m.setattr(focus, "HOT_PIXEL_PAIRS", True)
        assert sharpness(hot, boxes) == pytest.approx(clean, rel=0.03)


def test_camera_noise_is_not_taken_for_hot_pixels(monkeypatch):
    """The margin leaves noise's own maxima alone: on pure camera noise, and on a bright
    nucleus' photon noise, the measure is the one without the hot-pixel step."""
    from inscope.control import focus

    rng = np.random.default_rng(7)
    noise = rng.normal(500, 6, (128, 128)).astype(np.float32)
    bright = noise.copy()
    bright[32:96, 32:96] += rng.normal(20000, 140, (64, 64)).astype(np.float32)  # sqrt(N)
    box = np.array([[30, 30, 98, 98]], float)
    got = [sharpness(noise), sharpness(bright, box), sharpness(bright, box, "tenengrad")]
    monkeypatch.setattr(focus, "HOT_PIXEL_SIGMA", None)
    want = [sharpness(noise), sharpness(bright, box), sharpness(bright, box, "tenengrad")]
    assert got[0] == want[0]
    assert got[1:] == pytest.approx(want[1:], rel=0.01)


# -- autofocus -------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [3.0, -7.0])
def test_autofocus_finds_the_true_plane_in_seven_images(offset):
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    scope.move_z(zf + offset)
    r = autofocus(scope, search_um=10.0)
    assert r.ok and r.message == "" and r.issues == ()
    assert abs(scope.position().z - zf) < 0.3, r.samples
    assert r.z_final == scope.position().z
    assert abs(r.z_best_estimate - zf) < 0.3
    assert r.z_start == pytest.approx(zf + offset, abs=0.01)
    assert r.images == 7 and len(r.samples) == 7
    assert r.metric == "brenner" and r.used_boxes == 0
    # the coarse sweep spans start +/- search in 5 images 5 µm apart
    coarse = sorted(z for z, _ in r.samples[:5])
    np.testing.assert_allclose(np.diff(coarse), 5.0, atol=0.02)
    assert coarse[0] == pytest.approx(zf + offset - 10.0, abs=0.02)
    assert r.sim_s > 0 and r.wall_s > 0
    d = r.to_dict()
    assert d["sim_s"] == r.sim_s and d["samples"] == [list(s) for s in r.samples] or \
        d["samples"] == r.samples


def test_autofocus_extends_the_sweep_when_the_peak_is_at_an_end():
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    scope.move_z(zf + 9.0)
    r = autofocus(scope, search_um=4.0)  # sweep zf+5 .. zf+13: the peak is below it
    assert r.ok, r.message
    assert abs(scope.position().z - zf) < 0.4, r.samples
    assert 8 <= r.images <= 5 + 3 + 2 * 2  # coarse + extensions + two refine pairs
    assert min(z for z, _ in r.samples) < zf + 5.0 - 1.0  # went beyond the first sweep
    r2 = autofocus(scope, search_um=2.0, max_extend=0)
    assert r2.images == 7


def test_autofocus_says_when_the_peak_lies_beyond_its_sweep():
    """No extension allowed and the focus 9 µm below a +/-2 µm sweep: the sharpest
    image is at the sweep's end, and ``issues`` says so (callers branch on it, never on
    the message's wording)."""
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    scope.move_z(zf + 9.0)
    r = autofocus(scope, search_um=2.0, max_extend=0)
    assert not r.ok and r.issues == (AutofocusIssue.EDGE,), (r.issues, r.message)
    assert "no peak inside the sweep" in r.message


def test_autofocus_around_a_given_centre_with_boxes():
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    boxes = np.array([[20, 20, 120, 120], [130, 130, 230, 230]], float)
    r = autofocus(scope, boxes=boxes, center=zf + 2.0, search_um=6.0)
    assert r.used_boxes == 2 and r.ok
    assert abs(scope.position().z - zf) < 0.3
    assert r.z_start == pytest.approx(0.0, abs=0.01)  # where the focus was, not the centre


def test_autofocus_with_a_detector_scores_on_its_boxes(shipped_detector):
    scope = sim_scope(seed=5)
    zf = _truth(scope)
    scope.move_z(zf - 4.0)
    r = autofocus(scope, shipped_detector)
    assert r.ok and r.used_boxes >= 3
    assert abs(scope.position().z - zf) < 0.3


def test_autofocus_on_a_featureless_field_stays_put():
    scope = sim_scope(seed=4, shape=(128, 128), signal_photons_per_ms=0.0,
                      background_photons_per_ms=0.0, read_noise_e=0.0)
    scope.move_z(3.0)
    r = autofocus(scope)
    assert not r.ok and "no sharpness peak (featureless field?)" in r.message
    assert AutofocusIssue.FLAT in r.issues and AutofocusIssue.REFUSED not in r.issues
    assert r.z_final == scope.position().z == pytest.approx(3.0)
    assert r.z_best_estimate == pytest.approx(3.0)


def test_autofocus_refused_moves_end_early_and_leave_the_focus_at_the_start():
    # (the sweep is planned inside the z range, so a step limit refuses here)
    lim = SoftLimits(x=(-1e3, 1e3), y=(-1e3, 1e3), z=(-50.0, 50.0), max_step_z_um=1.0)
    scope = sim_scope(seed=4, shape=(128, 128), guard=MoveGuard(lim))
    r = autofocus(scope, search_um=10.0)
    assert not r.ok and "larger than max_step_z_um" in r.message
    assert AutofocusIssue.REFUSED in r.issues
    assert r.images < 3 and scope.position().z == 0.0
    assert math.isnan(r.z_best_estimate)
    assert r.to_dict()["z_best_estimate"] != r.to_dict()["z_best_estimate"]  # NaN kept


def test_autofocus_argument_checks():
    scope = sim_scope(seed=4, shape=(64, 64))
    with pytest.raises(ValueError, match="coarse >= 3 images"):
        autofocus(scope, coarse=2)
    with pytest.raises(ValueError, match="search_um must be > 0; got 0"):
        autofocus(scope, search_um=0)


def test_focus_result_to_dict_without_sim_time():
    d = FocusResult(1.0, 2.0, 2.0, 7, 0.5).to_dict()
    assert d["sim_s"] is None and d["ok"] is True and d["samples"] == []


def test_focus_curve_peaks_at_the_true_plane():
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    curve = focus_curve(scope, [zf - 6, zf - 3, zf, zf + 3, zf + 6])
    assert [z for z, _ in curve] == pytest.approx([zf - 6, zf - 3, zf, zf + 3, zf + 6])
    assert int(np.argmax([s for _, s in curve])) == 2
    assert scope.position().z == pytest.approx(zf + 6, abs=0.01)


# -- focus lock ------------------------------------------------------------------------
def _lock_run(scope, lock, frames: int) -> list[FocusAction]:
    return [lock.step(scope.snap()) for _ in range(frames)]


def test_tenengrad_and_laplacian_equal_scipys_filters():
    from scipy import ndimage

    img = _texture(3, (40, 56))
    # OpenCV's default border (reflect 101) is scipy's "mirror"
    sx = ndimage.sobel(img.astype(np.float64), axis=1, mode="mirror")
    sy = ndimage.sobel(img.astype(np.float64), axis=0, mode="mirror")
    assert sharpness(img, metric="tenengrad") == pytest.approx(np.mean(sx**2 + sy**2),
                                                                rel=1e-4)
    k3 = np.array([[2.0, 0.0, 2.0], [0.0, -8.0, 0.0], [2.0, 0.0, 2.0]])  # ksize=3
    lap = ndimage.convolve(img.astype(np.float64), k3, mode="mirror")
    assert sharpness(img, metric="laplacian") == pytest.approx(lap.var(), rel=1e-4)


def test_normvar_of_a_dim_image():
    img = np.tile(np.array([0.0, 1.0], np.float32), (4, 4))  # mean 0.5, variance 0.25
    assert sharpness(img, metric="normvar") == pytest.approx(0.5)


def test_bracket_and_parabola_peaks_by_hand():
    from inscope.control.focus import _bracket_peak, _parabola_peak

    z = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    y = -((z - 0.3) ** 2)
    zp, a = _parabola_peak(z, y)
    assert (zp, a) == (pytest.approx(0.3), pytest.approx(-1.0))
    assert _parabola_peak(z, (z - 0.3) ** 2) is None  # opens upwards
    assert _parabola_peak(z, np.zeros(5)) is None  # flat: no peak
    assert _parabola_peak(z[:2], y[:2]) is None
    assert _bracket_peak(z, y) == pytest.approx(0.3)
    # only the best sample and its two neighbours count; samples repeated at one z averaged
    zz = np.array([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0, 5.0])
    yy = np.array([-9.0, -1.3 ** 2, -0.2, -0.0, -0.7 ** 2, -9.0, 50.0])
    assert _bracket_peak(zz[:-1], yy[:-1]) == pytest.approx(
        _parabola_peak(np.array([-1.0, 0.0, 1.0]), np.array([-1.69, -0.1, -0.49]))[0])
    # the best at an end: the bracket is the first three samples, and never beyond them
    assert _bracket_peak(z, -((z + 5.0) ** 2)) == pytest.approx(-2.0)
    assert _bracket_peak(z, -((z - 5.0) ** 2)) == pytest.approx(2.0)
    assert _bracket_peak(np.array([1.0, 2.0]), np.array([0.0, 1.0])) == 2.0
    assert _bracket_peak(np.array([1.0, 1.0 + 1e-8, 3.0]), np.array([5.0, 5.0, 1.0])) == 1.0


def test_autofocus_defaults_sweep_twelve_micrometres_each_way():
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    scope.move_z(zf + 2.0)
    t0 = scope.sim_time_s
    r = autofocus(scope)
    coarse = sorted(z for z, _ in r.samples[:5])
    np.testing.assert_allclose(coarse, zf + 2.0 + np.array([-12, -6, 0, 6, 12]), atol=0.02)
    assert r.images == 7 and r.ok and abs(scope.position().z - zf) < 0.3
    # the refinement pair sits a third of the coarse step (2 µm) around the estimate
    pair = sorted(z for z, _ in r.samples[5:7])
    assert pair[1] - pair[0] == pytest.approx(4.0, abs=0.02)
    assert r.sim_s == pytest.approx(scope.sim_time_s - t0)


@pytest.mark.parametrize("offset", [9.0, -9.0])
def test_autofocus_extends_towards_the_peak_up_to_three_steps(offset):
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    scope.move_z(zf + offset)
    r = autofocus(scope, search_um=2.0)  # step 1 µm: three more steps cannot reach it
    zs = [z for z, _ in r.samples[:8]]
    side = -np.sign(offset)
    ext = sorted(zs[5:8], key=lambda z: side * z)
    np.testing.assert_allclose(ext, zf + offset + side * np.array([3.0, 4.0, 5.0]),
                               atol=0.02)


def test_autofocus_with_three_coarse_images_and_a_small_range():
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    scope.move_z(zf + 0.3)
    r = autofocus(scope, coarse=3, search_um=0.6)
    assert r.images >= 5 and abs(scope.position().z - zf) < 0.3


def test_autofocus_centre_sets_the_sweep():
    scope = sim_scope(seed=4, shape=(256, 256))
    zf = _truth(scope)
    r = autofocus(scope, center=zf + 2.0, search_um=6.0)
    coarse = sorted(z for z, _ in r.samples[:5])
    np.testing.assert_allclose(coarse, zf + 2.0 + np.array([-6, -3, 0, 3, 6]), atol=0.02)


def test_autofocus_records_where_the_stage_really_was():
    scope = sim_scope(seed=4, shape=(256, 256), z_quantum_um=0.5)
    scope.move_z(0.3)  # read back as 0.5
    r = autofocus(scope, search_um=4.0)
    assert all(z / 0.5 == pytest.approx(round(z / 0.5)) for z, _ in r.samples)


def test_autofocus_in_dry_run_records_the_unmoved_focus():
    scope = sim_scope(seed=4, shape=(128, 128))
    scope.move_z(2.0)
    scope.guard.dry_run = True
    r = autofocus(scope, search_um=4.0)
    assert [z for z, _ in r.samples] == [2.0] * len(r.samples)
    assert not r.ok and r.z_final == 2.0 and "no sharpness peak" in r.message


def test_autofocus_too_few_images_reports_everything():
    lim = SoftLimits(x=(-1e3, 1e3), y=(-1e3, 1e3), z=(-50.0, 50.0), max_step_z_um=1.0)
    scope = sim_scope(seed=4, shape=(128, 128), guard=MoveGuard(lim))
    t0 = scope.sim_time_s
    r = autofocus(scope, search_um=10.0)
    assert (r.z_start, r.z_final, r.images, r.metric, r.used_boxes, r.ok) == (
        0.0, 0.0, 1, "brenner", 0, False)
    assert [z for z, _ in r.samples] == [0.0] and r.samples[0][1] > 0
    assert 0 < r.wall_s < 60 and r.sim_s == pytest.approx(scope.sim_time_s - t0)
    assert r.message.count("Refused Z move") == 4


def test_focus_result_to_dict_keeps_sim_time():
    assert FocusResult(1.0, 2.0, 2.0, 7, 0.5, sim_s=0.25).to_dict()["sim_s"] == 0.25


# -- focus lock: defaults and edges ----------------------------------------------------


def test_focus_curve_scores_the_given_boxes_with_the_given_metric():
    scope = sim_scope(seed=4, shape=(128, 128))
    box = np.asarray(scope.snap().truth, float)[:1]  # one cell
    for metric in ("brenner", "normvar"):
        (_, whole), = focus_curve(scope, [0.0], metric=metric)
        (_, cell), = focus_curve(scope, [0.0], box, metric=metric)
        # the same measure as sharpness() on a frame there (frames differ by noise only)
        assert whole == pytest.approx(sharpness(scope.snap().pixels, None, metric), rel=0.1)
        assert cell == pytest.approx(sharpness(scope.snap().pixels, box, metric), rel=0.1)
        assert cell > 1.4 * whole  # the cell is sharper than the mostly empty field
    (_, b), = focus_curve(scope, [0.0], box)
    assert b > 5 * cell  # brenner (the default) is not normvar


def test_brenner_on_many_boxes_equals_the_crop_by_crop_sum(monkeypatch):
    """Over many boxes (a whole field of nuclei) the Brenner measure is read from one
    integral image; it must equal the crop-by-crop area-weighted mean, boxes cut by the
    frame's edges and boxes too small to measure included, frame after frame (the
    buffers are reused)."""
    from inscope.control import focus

    rng = np.random.default_rng(4)
    for shape in [(200, 300), (200, 300), (64, 64)]:
        img = rng.normal(1000, 60, shape).clip(0).astype(np.uint16)
        h, w = shape
        n = 40
        x0, y0 = rng.uniform(-15, w, n), rng.uniform(-15, h, n)
        boxes = np.stack([x0, y0, x0 + rng.uniform(1, 40, n), y0 + rng.uniform(1, 40, n)], 1)
        assert n > focus.BRENNER_INTEGRAL_BOXES
        fast = sharpness(img, boxes)
        with monkeypatch.context() as m:
            m.setattr(focus, "BRENNER_INTEGRAL_BOXES", 10 ** 9)  # crop by crop
            slow = sharpness(img, boxes)
        assert fast == pytest.approx(slow, rel=1e-6)
