"""The parts of the eyepiece calibration fit, each against what it promises.

* ``to_uint8``: what a camera gives (grey, colour, float) becomes 8-bit grey stretched
  from its 0.5th percentile up to its 99.8th, or to that of its bright side when a small
  pattern leaves the frame's own among the markers' greys; a stack or a uniform image
  is refused.
* ``render_camera_view``, the forward model every calibration test and benchmark
  trusts: signal and background levels, a 1:1 view that is the display, per-axis
  anti-aliasing when the display is finer than the camera, optics blur, reproducible
  noise, a hidden region, a saturating camera.
* ``display_to_camera_map``: the display centre lands at the camera centre plus the
  offset, on displays and cameras that are not square.
* ``CharucoPattern.for_display``: the default layout (squares of 1/8 of the display
  height in 92 % of it), the limits on explicit squares, the dictionary that holds the
  board's markers (counted by OpenCV).
* the fit's own figures: the expected error is the residual and the map error combined,
  the coverage is the share of the drawable field that the corners span, what the 95 %
  map error covers, and a refusal names the display and squares the pattern was made
  for; markers too small to decode are read upsampled, and a display on under 1 % of a
  large camera field calibrates.
* misread corners: far-off ones and ones 2.5 px off (beyond the 2 px tolerance) are left
  out of the map, 8 corners that agree are enough and 7 are not, and a board partly seen
  displaced (under 90 % of its corners on one map) is refused with the count.
* the pattern's description file: round trip, and refusals naming the file and the fix.
"""

from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest

from inscope.acquisition.frame import colour_to_grey
from inscope.eyepiece_fit import (
    CalibrationError,
    CharucoPattern,
    display_to_camera_map,
    field_error,
    fit_pattern,
    render_camera_view,
    to_uint8,
)


# -- to_uint8 ---------------------------------------------------------------------------
def _pattern_like(shape=(64, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(200, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize("channels", [3, 4])
def test_a_colour_camera_image_is_read_as_its_grey(channels):
    grey = _pattern_like()
    rng = np.random.default_rng(1)
    colour = np.stack([grey] * 3 + [rng.integers(0, 65535, grey.shape, dtype=np.uint16)]
                      * (channels - 3), axis=-1)
    out = to_uint8(colour)
    assert out.shape == grey.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, to_uint8(colour_to_grey(colour)))
    np.testing.assert_array_equal(out, to_uint8(grey))  # alpha ignored


def test_a_stack_is_refused_with_its_shape():
    with pytest.raises(CalibrationError, match=r"shape \(5, 64, 80\).*not a stack"):
        to_uint8(np.stack([_pattern_like(seed=s) for s in range(5)]))


def test_the_stretch_runs_from_the_low_to_the_high_percentile():
    """A ramp of 0 .. 9999: black at its 0.5th percentile (~50) and below, white at its
    99.8th (~9980) and above, linear between."""
    ramp = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    out = to_uint8(ramp).astype(float)
    lo, hi = 50.0, 9980.0
    expect = np.clip((ramp - lo) / (hi - lo) * 255.0, 0, 255)
    assert np.abs(out - expect).max() <= 3.0
    assert out[ramp <= 40].max() == 0 and out[ramp >= 9990].min() == 255
    assert out[(ramp > 120) & (ramp < 200)].min() >= 1  # the darkest 1-2 % are not black


def test_a_small_bright_patch_keeps_its_grey_levels():
    """A pattern lighting 0.1 % of the frame (a display in a corner of a large camera
    field): its white is white and its mid-grey stays mid-grey. The frame's 99.8th
    percentile alone lies inside the patch's greys and would saturate them."""
    img = np.full((1024, 1024), 300.0, np.float32)
    img += np.random.default_rng(4).normal(0, 20, img.shape).astype(np.float32)
    img[100:120, 100:140] = 10_300.0  # white
    img[100:120, 140:160] = 5_300.0  # half way
    out = to_uint8(img)
    assert out[102:118, 102:138].min() >= 250
    assert 100 <= np.median(out[102:118, 142:158]) <= 155
    assert np.median(out[500:, 500:]) <= 5


def test_the_black_point_is_the_half_percent_darkest():
    """1 % of the frame dark (0), the rest 1000-2000: the black point is the dark level
    (more than 0.5 % of the pixels are there), so the signal's darkest pixels are mid-grey,
    not black."""
    img = np.linspace(1000, 2000, 200 * 200, dtype=np.float32).reshape(200, 200)
    img[np.random.default_rng(5).random(img.shape) < 0.01] = 0.0
    out = to_uint8(img)
    assert out[img == 0].max() == 0
    assert 110 <= out[img > 0].min() <= 140, out[img > 0].min()


@pytest.mark.parametrize("level", [500.0, 60_000.0])
def test_an_image_uniform_to_a_millionth_of_its_level_is_refused(level):
    """A float camera image whose pixels differ only by rounding (a few 1e-7 of the level)
    holds no pattern, however large the level."""
    img = np.full((64, 64), level, np.float32)
    img[::4] = np.nextafter(np.float32(level), np.float32(np.inf))  # (rows the sample keeps)
    with pytest.raises(CalibrationError, match="uniform"):
        to_uint8(img)


# -- render_camera_view -----------------------------------------------------------------
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_white_is_signal_plus_background_and_black_is_background():
    disp = np.zeros((40, 60), np.uint8)
    disp[:, 30:] = 255
    cam = render_camera_view(disp, IDENTITY, (40, 60))
    assert cam.dtype == np.uint16
    assert (cam[:, :30] == 300).all() and (cam[:, 30:] == 10_300).all()  # no noise by default
    cam = render_camera_view(disp, IDENTITY, (40, 60), signal=1000.0, background=0.0)
    assert (cam[:, :30] == 0).all() and (cam[:, 30:] == 1000).all()


def test_a_one_to_one_view_is_the_display_itself():
    """At scale 1 the camera pixel is the display pixel: no anti-aliasing blur."""
    rng = np.random.default_rng(2)
    disp = rng.integers(0, 256, (48, 64)).astype(np.uint8)
    cam = render_camera_view(disp, IDENTITY, (48, 64), signal=255.0, background=0.0)
    np.testing.assert_array_equal(cam, disp)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_grating_finer_than_the_camera_is_averaged_not_aliased(axis):
    """Lines one display pixel wide seen at half scale: each camera pixel covers two
    lines, so every pixel is mid-grey, whichever axis the lines run along."""
    disp = np.zeros((128, 128), np.uint8)
    if axis == 0:
        disp[::2] = 255  # horizontal lines: needs the blur along y
    else:
        disp[:, ::2] = 255  # vertical lines: along x
    half = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    cam = render_camera_view(disp, half, (64, 64), signal=1000.0, background=0.0)
    inner = cam[4:-4, 4:-4].astype(float)
    assert abs(inner.mean() - 500.0) < 60 and inner.std() < 80, (inner.mean(), inner.std())


@pytest.mark.parametrize("blur", [0.6, 2.0])
def test_optics_blur_is_a_gaussian_of_the_given_sigma(blur):
    disp = np.zeros((64, 64), np.uint8)
    disp[16:48:8] = 255
    disp[:, 20:24] = 255
    cam = render_camera_view(disp, IDENTITY, (64, 64), blur_px=blur, signal=60_000.0,
                             background=0.0)
    want = cv2.GaussianBlur(disp.astype(np.float32) / 255.0, (0, 0), blur) * 60_000.0
    assert np.abs(cam.astype(float) - want).max() <= 1.0
    sharp = render_camera_view(disp, IDENTITY, (64, 64), signal=60_000.0, background=0.0)
    assert np.abs(cam.astype(float) - sharp).max() > 5_000  # it did blur


def test_noise_has_the_given_sigma_and_is_reproducible():
    disp = np.full((100, 100), 128, np.uint8)
    base = render_camera_view(disp, IDENTITY, (100, 100)).astype(float)
    for sigma in (0.8, 40.0):
        a = render_camera_view(disp, IDENTITY, (100, 100), noise=sigma).astype(float)
        assert 0.5 * sigma < (a - base).std() < 1.5 * sigma + 0.5
        assert abs((a - base).mean()) < 0.1 * sigma + 0.6  # zero mean (uint16 truncates)
    # without a generator the noise is the seed-0 draw, so a call is reproducible
    a = render_camera_view(disp, IDENTITY, (100, 100), noise=40.0)
    b = render_camera_view(disp, IDENTITY, (100, 100), noise=40.0)
    np.testing.assert_array_equal(a, b)
    seed0 = render_camera_view(disp, IDENTITY, (100, 100), noise=40.0,
                               rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a, seed0)
    # a generator given is the one drawn from, added to the image
    c = render_camera_view(disp, IDENTITY, (100, 100), noise=40.0,
                           rng=np.random.default_rng(9))
    draw = np.random.default_rng(9).normal(0, 40.0, base.shape)
    assert np.corrcoef((c - base).ravel(), draw.ravel())[0, 1] > 0.99


def test_a_hidden_region_shows_only_background():
    disp = np.full((60, 80), 255, np.uint8)
    cam = render_camera_view(disp, IDENTITY, (60, 80), noise=30.0, hide=(10, 5, 40, 25))
    assert (cam[5:25, 10:40] == 300).all()
    assert cam[30:, 45:].min() > 5_000


def test_a_saturating_camera_clips_at_its_full_scale():
    disp = np.zeros((20, 20), np.uint8)
    disp[:, 10:] = 255
    cam = render_camera_view(disp, IDENTITY, (20, 20), signal=90_000.0, background=0.0)
    assert (cam[:, 10:] == 65535).all() and (cam[:, :10] == 0).all()


# -- display_to_camera_map --------------------------------------------------------------
def test_the_default_map_neither_turns_nor_mirrors():
    m = display_to_camera_map((800, 600), (480, 640), 0.5)
    np.testing.assert_allclose(m[:, :2], 0.5 * np.eye(2))


@pytest.mark.parametrize("rotation, mirrored", [(0, False), (90, False), (33, True)])
def test_the_display_centre_lands_at_the_camera_centre_plus_the_offset(rotation, mirrored):
    """A 1024 x 600 display on a 480 x 640 (rows x columns) camera: neither is square."""
    m = display_to_camera_map((1024, 600), (480, 640), 0.4, rotation, mirrored,
                              offset_px=(25.0, -12.0))
    centre = m @ np.array([512.0, 300.0, 1.0])
    np.testing.assert_allclose(centre, [320.0 + 25.0, 240.0 - 12.0], atol=1e-9)
    assert (np.linalg.det(m[:, :2]) < 0) == mirrored


def test_field_error_reads_a_homogeneous_3x3_map_as_its_2x3():
    truth = display_to_camera_map((400, 300), (256, 256), 0.5, 10.0)
    fit = truth + np.array([[0.001, 0.0, 0.4], [0.0, -0.002, -0.3]])
    want = field_error(fit, truth, (400, 300), (256, 256))
    assert want > 0.3
    h = lambda m: np.vstack([m, [0.0, 0.0, 1.0]])  # noqa: E731
    for a, b in ((h(fit), truth), (fit, h(truth)), (h(fit), h(truth))):
        assert field_error(a, b, (400, 300), (256, 256)) == pytest.approx(want)
    assert field_error(h(truth).tolist(), truth, (400, 300), (256, 256)) == pytest.approx(0.0)


# -- CharucoPattern.for_display ---------------------------------------------------------
def test_the_default_board_has_squares_of_an_eighth_of_the_display_height():
    p = CharucoPattern.for_display((1024, 768))
    # squares of 768 // 8 = 96 px fit 9 x 7 times in 92 % (942 x 706); then each square is
    # as large as both axes allow: min(942 // 9, 706 // 7) = 100
    assert p == CharucoPattern((1024, 768), (9, 7), 100, 0.75, "DICT_4X4_50")
    # a height that is no multiple of 8: whole display pixels per square (770 // 8 = 96),
    # 866 // 96 = 9 columns in the 942 px display's 866 usable ones
    assert CharucoPattern.for_display((942, 770)).squares == (9, 7)


def test_a_narrow_display_keeps_three_columns():
    """A portrait display (300 x 700): squares of 87 px fit three times across."""
    p = CharucoPattern.for_display((300, 700))
    assert p.squares == (3, 7)
    assert p.square_px == min(276 // 3, 644 // 7)


@pytest.mark.parametrize("squares", [(2, 5), (5, 2), (2, 2)])
def test_fewer_than_three_squares_on_a_side_is_refused(squares):
    with pytest.raises(ValueError, match=rf"at least 3x3 squares; got {squares[0]}x"
                                         rf"{squares[1]}"):
        CharucoPattern.for_display((800, 600), squares)


def test_three_squares_a_side_and_twelve_pixel_squares_are_enough():
    assert CharucoPattern.for_display((800, 600), (3, 3)).squares == (3, 3)
    # 200 x 200 display: 184 usable px; 15 squares leave 12 px each, 16 leave 11
    assert CharucoPattern.for_display((200, 200), (15, 15)).square_px == 12
    with pytest.raises(ValueError, match=r"16x16 squares leave 11 display px per square "
                                         r"on a 200x200 display"):
        CharucoPattern.for_display((200, 200), (16, 16))


def test_the_smallest_display_is_64_pixels():
    assert CharucoPattern.for_display((64, 64), (4, 4)).square_px == 14
    with pytest.raises(ValueError, match="63x200 pixels is too small"):
        CharucoPattern.for_display((63, 200), (3, 3))


@pytest.mark.parametrize("display, squares", [
    ((1024, 768), None), ((200, 200), (15, 15)), ((100, 900), (3, 67)),
    ((100, 900), (3, 66)), ((600, 600), (40, 40))])
def test_the_dictionary_is_the_smallest_that_holds_the_boards_markers(display, squares):
    p = CharucoPattern.for_display(display, squares)
    markers = len(p.board().getIds())  # OpenCV's own count
    sizes = {"DICT_4X4_50": 50, "DICT_4X4_100": 100, "DICT_4X4_250": 250,
             "DICT_4X4_1000": 1000}
    assert sizes[p.dictionary] >= markers
    smaller = [s for s in sizes.values() if s < sizes[p.dictionary]]
    assert all(s < markers for s in smaller), (p.dictionary, markers)


def test_a_board_of_more_markers_than_any_dictionary_is_refused():
    with pytest.raises(ValueError, match=r"45x45 squares need 1012 markers"):
        CharucoPattern.for_display((1000, 1000), (45, 45))


# -- the fit's figures ------------------------------------------------------------------
def test_the_fit_reports_its_error_parts_and_coverage_consistently():
    display, camera = (640, 480), (512, 512)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.6, 20.0)
    cam = render_camera_view(pattern.image(), truth, camera, blur_px=0.7, noise=60.0)
    fit = fit_pattern(cam, pattern)
    assert fit.expected_error_px == pytest.approx(math.hypot(fit.rms_px, fit.fit_error_px))
    assert fit.rms_px > 0 and fit.fit_error_px > 0
    # coverage: the corners' hull over the drawable field (the whole display, inside
    # the camera at this scale), both in camera pixels
    corners = cv2.transform(pattern.corner_positions().reshape(-1, 1, 2), truth)
    hull = cv2.contourArea(cv2.convexHull(corners.astype(np.float32)))
    w, h = display
    foot = cv2.transform(np.array([[[-0.5, -0.5]], [[w - 0.5, -0.5]], [[w - 0.5, h - 0.5]],
                                   [[-0.5, h - 0.5]]]), truth)
    field = cv2.contourArea(foot.astype(np.float32))
    assert fit.coverage == pytest.approx(hull / field, rel=0.03)
    assert 0.3 < fit.coverage < 1.0


def test_a_refusal_names_the_display_and_squares_the_pattern_was_made_for():
    pattern = CharucoPattern.for_display((1280, 720), (11, 6))
    noise = np.random.default_rng(3).integers(0, 4000, (256, 256)).astype(np.uint16)
    with pytest.raises(CalibrationError, match="made for a 1280x720 display with 11x6 "
                                               "squares"):
        fit_pattern(noise, pattern)


def test_markers_too_small_to_decode_are_read_after_upsampling():
    """At a display -> camera scale of 0.18 the default board's markers are ~11 camera px
    (under 2 px per bit): read as they are, fewer than a third of the 72 corners decode;
    the fit reads the image again at twice the size and keeps that reading."""
    display, camera = (1280, 720), (512, 512)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.18, 10.0)
    cam = render_camera_view(pattern.image(), truth, camera, blur_px=0.5, noise=50.0)
    fit = fit_pattern(cam, pattern)
    assert fit.corners_used >= 50, fit
    assert field_error(fit.display_to_camera, truth, display, camera) < 0.3


def test_too_few_large_squares_are_measured_in_camera_pixels():
    """The default board at scale 1.5: 90 display px squares are ~135 camera px, and the
    refusal says so (the size it reads from the markers it found)."""
    display, camera = (1280, 720), (512, 512)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 1.5, 0.0)
    cam = render_camera_view(pattern.image(), truth, camera, blur_px=0.5, noise=50.0)
    with pytest.raises(CalibrationError) as e:
        fit_pattern(cam, pattern)
    size = float(re.search(r"each square is ~(\d+) camera px", str(e.value)).group(1))
    assert size == pytest.approx(1.5 * pattern.square_px, rel=0.08)


def test_the_fit_error_covers_the_true_map_error_as_its_statistics_say():
    """``fit_error_px`` is the least-squares 95 % error of the map at the worst point of
    the drawable field, from the corners' own scatter (2n - 6 degrees of freedom). Over
    600 readings of 10 corners with 0.3 px noise, the true map error at the field's worst
    vertex stays within it in 78-95 % of them: under 95 % because ten corners estimate
    the scatter loosely and the worst of the vertices is taken. An error estimated from
    the wrong degrees of freedom (2n + 6, 3n - 6) covers too few; one twice too large
    nearly all."""
    from inscope.eyepiece_fit import _fit_candidate

    display, camera = (640, 480), (512, 512)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.6, 20.0)
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(pattern.corner_count, 10, replace=False))
    clean = cv2.transform(pattern.corner_positions()[ids].reshape(-1, 1, 2),
                          truth).reshape(-1, 2)
    covered = []
    for _ in range(600):
        fit = _fit_candidate(ids, clean + rng.normal(0, 0.3, clean.shape), pattern, camera)
        assert fit is not None  # (RANSAC may leave out a corner now and then)
        covered.append(field_error(fit.display_to_camera, truth, display, camera)
                       <= fit.fit_error_px)
    assert 0.78 <= np.mean(covered) <= 0.95, np.mean(covered)


def test_a_display_in_a_small_part_of_a_large_camera_field_calibrates():
    """A 2048 x 2048 camera seeing the 1280 x 720 display at a scale of 0.18 (the pattern
    on under 1 % of the frame): read, and within a tenth of a pixel."""
    display, camera = (1280, 720), (2048, 2048)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.18, 10.0, offset_px=(300.0, -200.0))
    cam = render_camera_view(pattern.image(), truth, camera, blur_px=0.5, noise=50.0)
    fit = fit_pattern(cam, pattern)
    assert fit.corners_used >= 40
    assert field_error(fit.display_to_camera, truth, display, camera) < 0.1


def _corner_reading(n=40, seed=1):
    """*n* corners of the 640 x 480 display's default board as a camera at scale 0.6
    reads them exactly, and that true map."""
    display, camera = (640, 480), (512, 512)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.6, 20.0)
    ids = np.sort(np.random.default_rng(seed).choice(pattern.corner_count, n, replace=False))
    cam = cv2.transform(pattern.corner_positions()[ids].reshape(-1, 1, 2), truth)
    return pattern, truth, ids, cam.reshape(-1, 2), display, camera


def test_misread_corners_are_left_out_of_the_map():
    """A reflection or a misdecoded marker puts a few corners far from the rest: the fit
    keeps the map the others agree on, to a hundredth of a pixel (a least-squares fit
    through all of them is pulled pixels off)."""
    from inscope.eyepiece_fit import _fit_candidate

    pattern, truth, ids, cam, display, camera = _corner_reading()
    bad = cam.copy()
    bad[[3, 17, 29]] += [[30.0, -12.0], [-25.0, 40.0], [18.0, 22.0]]
    fit = _fit_candidate(ids, bad, pattern, camera)
    assert (fit.corners_found, fit.corners_used) == (40, 37)
    assert field_error(fit.display_to_camera, truth, display, camera) < 0.01
    assert fit.max_residual_px < 0.01


def test_a_corner_2_5_px_off_the_others_map_is_an_outlier():
    """Corners read 2.5 px off (a marker's corner refined onto the wrong edge) do not
    enter the map: the fit's tolerance is 2 camera px, about ten times the scatter of
    corners read well."""
    from inscope.eyepiece_fit import _fit_candidate

    pattern, truth, ids, cam, display, camera = _corner_reading()
    off = cam.copy()
    off[[5, 11, 23, 31]] += [[2.5, 0.0], [0.0, -2.5], [-1.77, 1.77], [1.77, 1.77]]
    fit = _fit_candidate(ids, off, pattern, camera)
    assert fit.corners_used == 36
    assert field_error(fit.display_to_camera, truth, display, camera) < 0.01
    near = cam.copy()
    near[[5, 11]] += [[1.5, 0.0], [0.0, -1.5]]  # inside the tolerance: kept
    assert _fit_candidate(ids, near, pattern, camera).corners_used == 40


def test_eight_corners_that_agree_are_enough_and_seven_are_not():
    from inscope.eyepiece_fit import MIN_CORNERS, _fit_candidate

    pattern, truth, ids, cam, display, camera = _corner_reading()
    assert MIN_CORNERS == 8
    off = cam + np.random.default_rng(2).uniform(20, 60, cam.shape) * [1, -1]
    # 12 corners read, 8 on one map and 4 scattered: RANSAC finds the 8 ...
    small = _fit_candidate(ids[:12], np.vstack([cam[:8], off[8:12]]), pattern, camera)
    assert small is not None and (small.corners_found, small.corners_used) == (12, 8)
    assert field_error(small.display_to_camera, truth, display, camera) < 0.01
    # ... and 7 that agree are too few to trust
    assert _fit_candidate(ids[:12], np.vstack([cam[:7], off[7:12]]), pattern, camera) is None


def test_a_pattern_partly_misread_as_another_map_is_refused():
    """Part of the board seen displaced (a second reflection, a cracked relay lens): the
    corners read, but only those of the larger part agree on one map, under the 90 % a
    calibration needs; the refusal says how many agree and what to check."""
    display, camera = (640, 480), (512, 512)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.6, 20.0)
    cam = render_camera_view(pattern.image(), truth, camera, blur_px=0.7, noise=30.0)
    # the camera image right of column 300 (about a third of the board) 6 px lower
    cam[:, 300:] = np.roll(cam[:, 300:], 6, axis=0)
    with pytest.raises(CalibrationError, match=r"only \d+ of the \d+ corners read agree on "
                                               "one map") as e:
        fit_pattern(cam, pattern)
    used, found = (int(v) for v in re.search(r"only (\d+) of the (\d+)", str(e.value)).groups())
    assert found >= 40 and 0.5 < used / found < 0.9
    assert "Remove stray light" in str(e.value)


# -- the pattern's description file ------------------------------------------------------
def test_a_pattern_description_round_trips_with_its_dictionary(tmp_path):
    p = CharucoPattern.for_display((200, 200), (15, 15))
    assert p.dictionary == "DICT_4X4_250"  # not the default: it must travel in the file
    d = p.to_dict()
    assert set(d) == {"pattern", "display_size", "squares", "square_px", "marker_ratio",
                      "dictionary"}
    assert d["pattern"] == "charuco" and d["display_size"] == [200, 200]
    assert d["squares"] == [15, 15]
    f = tmp_path / "pattern.json"
    p.save(f)
    assert CharucoPattern.load(f) == p
    assert json.loads(f.read_text()) == d


def test_a_description_that_is_no_charuco_pattern_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r'not a ChArUco pattern description \(no '
                                         r'"pattern": "charuco"\)'):
        CharucoPattern.from_dict({"pattern": "dots", "display_size": [10, 10]})
    f = tmp_path / "p.json"
    f.write_text('{"pattern": "charuco", "display_size": [800, 600]}')
    with pytest.raises(ValueError, match=rf"pattern description {f} is not valid .*"
                                         r"write it again with --pattern-out"):
        CharucoPattern.load(f)
    with pytest.raises(FileNotFoundError, match=rf"pattern description {tmp_path / 'no.json'}"
                                                r" not found; it is written beside the PNG"):
        CharucoPattern.load(tmp_path / "no.json")
