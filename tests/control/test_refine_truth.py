"""The soft centroid against the truth, over many generated scenes at once.

Each scene is a soft-edged elliptical nucleus of known centre, size, angle and
brightness, in the pixel types and ranges cameras and pipelines hand over (uint16 with
a camera offset, float normalised to ~[0, 1], float centred on zero, float from zero),
boxed the way a detector boxes it (each edge up to a pixel off). Where the existing
tests of ``test_refine_centroid.py`` reproduce one failure each, these measure the
whole population against a tolerance a little above what the code achieves, so a
planted bias (a flipped sign in the rim weights, a dropped clip, a wrong threshold
scale) shows as a shifted centroid somewhere in the population, and a refusal (None)
on a range nobody tried shows as a missing one.
"""

from __future__ import annotations

import numpy as np
import pytest
from _support.nuclei import soft_ellipse

from inscope.control.refine import soft_centroid, soft_mask

KINDS = ("uint16 with offset", "float 0..1", "float around 0", "float from 0")


def _ellipse_box(cx, cy, rx, ry, angle_deg):
    """The axis-aligned box round the ellipse (x0, y0, x1, y1)."""
    t = np.radians(angle_deg)
    hx = np.hypot(rx * np.cos(t), ry * np.sin(t))
    hy = np.hypot(rx * np.sin(t), ry * np.cos(t))
    return np.array([cx - hx, cy - hy, cx + hx, cy + hy])


def _as_kind(img, noise, amp, kind):
    if kind == "uint16 with offset":
        return np.clip(img + 100.0 + noise, 0, 65535).astype(np.uint16)
    if kind == "float 0..1":
        return ((img + noise) / (1.2 * amp)).astype(np.float32)
    if kind == "float around 0":
        return ((img + noise) / amp - 0.5).astype(np.float32)
    return np.clip(img + noise, 0, None).astype(np.float32)


def _errors(kind, n=40, seed=0, size=80):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    errs = []
    for _ in range(n):
        rx, ry, ang = rng.uniform(5, 16), rng.uniform(5, 16), rng.uniform(0, 180)
        cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
        amp = rng.uniform(200, 2000)
        img = soft_ellipse(xx, yy, cx, cy, rx, ry, amp, angle_deg=ang)
        box = _ellipse_box(cx, cy, rx, ry, ang) + rng.uniform(-1, 1, 4)
        im = _as_kind(img, rng.normal(0, 0.02 * amp, img.shape), amp, kind)
        got = soft_centroid(im, box)
        errs.append(np.inf if got is None else float(np.hypot(got[0][0] - cx,
                                                              got[0][1] - cy)))
    return np.asarray(errs)


@pytest.mark.parametrize("kind", KINDS)
def test_every_nucleus_is_located_to_a_fraction_of_a_pixel_in_any_pixel_range(kind):
    """40 nuclei per pixel type: none refused, all within 0.25 px of the true centre
    (the code: median ~0.02, worst 0.15 px). A normalised float frame has a signal
    range under 1: a test that 'the crop is flat' written against a fixed 1.0 instead
    of a tiny epsilon refuses every nucleus in it."""
    errs = _errors(kind)
    assert np.isfinite(errs).all(), f"{np.isinf(errs).sum()} of {errs.size} refused"
    assert errs.max() < 0.25 and np.median(errs) < 0.06, (np.median(errs), errs.max())


def test_a_flat_crop_has_no_object():
    """A box over an even field (a constant frame, of any level) has nothing to locate:
    None, not a centroid read from a division by zero."""
    for level in (0.0, 500.0, -3.0):
        img = np.full((64, 64), level, np.float32)
        assert soft_mask(img, np.array([20.0, 20.0, 40.0, 40.0])) is None
        assert soft_centroid(img, np.array([20.0, 20.0, 40.0, 40.0])) is None


def _round_nucleus_error(xx, yy, c, r, rng):
    """How far the soft centroid of a roundish nucleus of radius ~*r* at *c* (on
    background 100, noise 10, boxed with each edge up to half a pixel off) lies from
    *c* (inf: refused)."""
    img = 100.0 + soft_ellipse(xx, yy, *c, r, r * rng.uniform(0.8, 1.2), 800.0)
    img += rng.normal(0, 10, img.shape)
    box = np.array([c[0] - r, c[1] - r, c[0] + r, c[1] + r]) + rng.uniform(-0.5, 0.5, 4)
    got = soft_centroid(img.astype(np.float32), box)
    return np.inf if got is None else float(np.hypot(*(got[0] - c)))


def test_small_nuclei_are_located_to_a_fraction_of_a_pixel():
    """Nuclei 5-9 px across (a 10x objective's small nuclei): within 0.2 px (the code:
    worst 0.09 px)."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    errs = []
    for _ in range(40):
        r = rng.uniform(2.5, 4.5)
        c = np.array([32.0, 32.0]) + rng.uniform(-2, 2, 2)
        errs.append(_round_nucleus_error(xx, yy, c, r, rng))
    assert max(errs) < 0.2, max(errs)


def test_a_nucleus_beside_the_frame_edge_is_located_on_itself():
    """A nucleus a pixel or three from the frame's edge, whose padded crop leaves the
    frame: within 0.6 px (the code: p90 0.18, worst 0.42 px; the crop's replicated edge
    adds a sliver of the nucleus' own rim)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    errs = []
    for i in range(40):
        r = rng.uniform(6, 10)
        c = np.array([r + rng.uniform(0.8, 3), rng.uniform(20, 44)])
        if i % 2:
            c = c[::-1].copy()
        if i % 4 >= 2:  # the right or bottom edge
            c = 63.0 - c if i % 2 == 0 else np.array([c[0], 63.0 - c[1]])
        errs.append(_round_nucleus_error(xx, yy, c, r, rng))
    assert max(errs) < 0.6, max(errs)


def test_touching_neighbours_boxed_by_the_detector_are_divided_between_their_boxes():
    """60 nuclei each touching or overlapping one neighbour (up to twice as bright or
    half as bright), the neighbour's box given: p90 within 0.6 px and none more than
    1.5 px off (the code: p90 0.44, worst 1.27 px - a nucleus overlapping a neighbour
    1.9x as bright by 3 px, whose shared pixels are split between the two boxes).
    Without the neighbour's box the same scenes are well off: the boxes are what
    divides the blob."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:96, 0:96].astype(float)
    with_boxes, without = [], []
    for _ in range(60):
        r1, r2 = rng.uniform(7, 12), rng.uniform(7, 14)
        c1 = np.array([48.0, 48.0]) + rng.uniform(-1, 1, 2)
        th = rng.uniform(0, 2 * np.pi)
        c2 = c1 + (r1 + r2) * rng.uniform(0.85, 1.0) * np.array([np.cos(th), np.sin(th)])
        a1 = rng.uniform(300, 1000)
        img = (100.0 + soft_ellipse(xx, yy, *c1, r1, r1, a1)
               + soft_ellipse(xx, yy, *c2, r2, r2, a1 * rng.uniform(0.5, 2.0)))
        img = (img + rng.normal(0, 10, img.shape)).astype(np.float32)
        b1 = np.array([c1[0] - r1, c1[1] - r1, c1[0] + r1, c1[1] + r1]) + rng.uniform(
            -0.7, 0.7, 4)
        b2 = np.array([[c2[0] - r2, c2[1] - r2, c2[0] + r2, c2[1] + r2]])
        for out, others in ((with_boxes, b2), (without, None)):
            got = soft_centroid(img, b1, others=others)
            out.append(np.inf if got is None else float(np.hypot(*(got[0] - c1))))
    e = np.asarray(with_boxes)
    assert np.isfinite(e).all()
    assert np.percentile(e, 90) < 0.6 and e.max() < 1.5, (np.percentile(e, 90), e.max())
    # (the scenes are hard: without the boxes the same code is well off)
    assert np.percentile(without, 90) > 0.8


# -- the refiner's contract -------------------------------------------------------------
def _nucleus_frame(k, rng, stage=(0.0, 0.0), position=True):
    """A textured nucleus centred at pixel (60.3, 58.7) minus the stage (1 µm per px)."""
    from inscope.acquisition.frame import Frame, StagePosition

    yy, xx = np.mgrid[0:120, 0:120].astype(float)
    cx, cy = 60.3 - stage[0], 58.7 - stage[1]
    img = 500.0 + soft_ellipse(xx, yy, cx, cy, 11.0, 8.0, 900.0, angle_deg=20.0)
    img *= 1.0 + 0.1 * np.sin((xx - cx) / 2.0) * np.cos((yy - cy) / 3.0)
    img += rng.normal(0, 8.0, img.shape)
    pos = StagePosition(stage[0], stage[1], 0.0) if position else None
    return Frame(img.astype(np.float32), k, position=pos), np.array([cx, cy])


BOX = np.array([48.0, 49.0, 73.0, 69.0])


def test_a_reset_refiner_has_no_target_and_finds_nothing():
    from inscope.control.refine import TargetRefiner

    rng = np.random.default_rng(0)
    ref = TargetRefiner()
    frame, _ = _nucleus_frame(0, rng)
    assert ref.acquire(frame, BOX) is not None and ref.active
    ref.reset()
    assert not ref.active and ref.measuring and ref.fixes == []
    assert ref.locate(frame) is None


def test_a_frame_without_a_stage_position_gives_no_fix():
    """Registration searches around a stage position: a frame that has none (a replayed
    file without metadata) gives None, not a fix read from nowhere."""
    from inscope.control.refine import TargetRefiner

    rng = np.random.default_rng(1)
    ref = TargetRefiner()
    frame, _ = _nucleus_frame(0, rng)
    assert ref.acquire(frame, BOX) is not None
    assert ref.locate(_nucleus_frame(1, rng, position=False)[0]) is None


@pytest.mark.parametrize("smooth_px", [0.0, 1.0])
def test_the_refiner_registers_with_and_without_smoothing(smooth_px):
    """``smooth_px=0`` turns the smoothing off (it must not reach OpenCV as a zero
    sigma); either way a shifted frame is registered on the nucleus."""
    from inscope.control.refine import TargetRefiner

    rng = np.random.default_rng(2)
    ref = TargetRefiner(smooth_px=smooth_px)
    frame, _ = _nucleus_frame(0, rng)
    assert ref.acquire(frame, BOX) is not None
    moved, centre = _nucleus_frame(1, rng, stage=(3.4, -2.2))
    fix = ref.locate(moved)
    assert fix is not None
    assert np.hypot(*(fix.xy_px - centre)) < 0.3, fix.xy_px - centre


def test_jitter_needs_three_fixes_and_reads_their_spread():
    """None with one or two fixes; from three on, the RMS frame-to-frame spread in px
    (0 for fixes that do not move, about the noise for a still target)."""
    from inscope.control.refine import TargetRefiner

    rng = np.random.default_rng(3)
    ref = TargetRefiner()
    frame, _ = _nucleus_frame(0, rng)
    assert ref.acquire(frame, BOX) is not None
    assert ref.jitter_px(frame) is None
    assert ref.locate(_nucleus_frame(1, rng)[0]) is not None
    assert ref.jitter_px(frame) is None
    assert ref.locate(_nucleus_frame(2, rng)[0]) is not None
    j = ref.jitter_px(frame)
    assert j is not None and 0.0 <= j < 0.2


def test_the_centroid_correction_with_no_offsets_is_the_one_in_use():
    from inscope.control.refine import _correction

    assert np.array_equal(_correction(np.zeros((0, 2)), None, 0.5), np.zeros(2))
    cur = np.array([0.4, -0.2])
    assert _correction(np.zeros((0, 2)), cur, 0.5) is cur


def test_a_correction_far_from_zero_is_held_against_noise_around_it():
    """The hold compares the new median with the correction in use, wherever that is: a
    correction of (3, -2) µm and offsets scattered round it by a tenth of a pixel keep it
    exactly (a median 0.1 px away is noise, not news); offsets agreeing on a point 2 px
    away replace it."""
    from inscope.control.refine import _correction

    px = 0.5
    rng = np.random.default_rng(4)
    cur = np.array([3.0, -2.0])
    offs = [cur + rng.normal(0, 0.1 * px, 2) for _ in range(6)]
    assert np.array_equal(_correction(np.asarray(offs), cur, px), cur)
    offs = [cur + np.array([2.0 * px, 0.0]) + rng.normal(0, 0.05 * px, 2) for _ in range(6)]
    got = _correction(np.asarray(offs), cur, px)
    assert np.hypot(*(got - cur - [2.0 * px, 0.0])) < 0.1 * px, got
