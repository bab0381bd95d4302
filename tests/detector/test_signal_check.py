"""The box check behind every detection (inscope.detector.signal): the camera noise and
background measured on the frame, the median-above-background rule to the pixel, and the
shipped model no longer finding nuclei in an empty field of noise and debris (real ONNX
Runtime session)."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest

from inscope.detector.signal import background_level, has_signal, noise_sigma


def _field(shape=(512, 512), sigma=20.0, seed=0) -> np.ndarray:
    """Background 1000 with a gradient, bright discs over ~30 % of it, Gaussian noise."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 1000.0, np.float32) + np.linspace(0, 200, shape[1])[None, :]
    for y in range(40, shape[0] - 20, 60):
        for x in range(40, shape[1] - 20, 60):
            cv2.circle(img, (x, y), 17, 3000.0, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    return img + rng.normal(0, sigma, shape).astype(np.float32)


@pytest.mark.parametrize("sigma", [2.0, 20.0, 300.0])
def test_noise_of_a_plain_or_graded_background(sigma):
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 50 * sigma, 600)[None, :]  # a gradient: second differences 0
    img = 1000 * sigma + ramp + rng.normal(0, sigma, (400, 600))
    assert noise_sigma(img) == pytest.approx(sigma, rel=0.03)
    assert noise_sigma(np.full((64, 64), 7, np.uint16)) == 0.0
    assert noise_sigma(np.zeros((8, 2))) == 0.0  # too narrow for a second difference


@pytest.mark.parametrize(("sigma", "high"), [(5.0, 1.25), (20.0, 1.15), (80.0, 1.05)])
def test_noise_through_a_field_of_nuclei_reads_at_most_a_quarter_high(sigma, high):
    """Discs over 30 % of the frame with edges 400 sigma high at the worst: their edges
    are a fifth of the differences, and the quartile read stays within 25 %."""
    assert sigma <= noise_sigma(_field(sigma=sigma)) <= high * sigma


def test_background_is_the_dim_pixels_mean():
    rng = np.random.default_rng(1)
    img = rng.normal(1000, 20, (400, 400)).astype(np.float32)
    img[:, :120] += 2000  # 30 % of the frame is bright specimen
    s = noise_sigma(img)
    # the 5th percentile of all is the 7th of the background: 1000 - 1.47 sigma
    assert background_level(img, s) == pytest.approx(1000 + (1.645 - 1.47) * 20, abs=3)


def test_a_box_is_kept_when_more_than_half_its_pixels_are_above_the_background():
    """No noise: the background is its 5th percentile exactly, and a 3 x 3 box (pixel
    centres 10..12) is kept with 5 bright pixels, dropped with 4."""
    img = np.full((40, 40), 100, np.uint16)
    box = np.array([[9.6, 9.6, 12.4, 12.4]])  # holds pixel centres 10, 11, 12
    img[10, 10:13] = img[11, 10:12] = 150  # 5 bright
    assert has_signal(img, box, 0.0).tolist() == [True]
    img[11, 11] = 100  # 4 bright
    assert has_signal(img, box, 0.0).tolist() == [False]
    # the pixel centres on the box's edges count (10.0 .. 12.0 holds the same 9)
    assert has_signal(img, np.array([[10.0, 10.0, 12.0, 12.0]]), 0.0).tolist() == [False]
    img[12, 12] = 150
    assert has_signal(img, np.array([[10.0, 10.0, 12.0, 12.0]]), 0.0).tolist() == [True]
    # exactly half is not more than half: a 2 x 2 box with 2 bright pixels is dropped
    img[30, 30:32] = 150
    assert has_signal(img, np.array([[30.0, 30.0, 31.0, 31.0]]), 0.0).tolist() == [False]
    img[31, 31] = 150
    assert has_signal(img, np.array([[30.0, 30.0, 31.0, 31.0]]), 0.0).tolist() == [True]
    # a box holding no pixel centre has nothing to judge it by: kept
    assert has_signal(img, np.array([[20.2, 20.2, 20.8, 30.0]]), 0.0).tolist() == [True]
    assert has_signal(img, np.zeros((0, 4)), 0.0).shape == (0,)


def test_nuclei_are_kept_and_noise_and_specks_are_not():
    rng = np.random.default_rng(2)
    img = rng.normal(500, 10, (256, 256)).astype(np.float32)
    cv2.circle(img, (60, 60), 10, 700.0, -1)  # a nucleus 20 sigma up
    cv2.circle(img, (180, 60), 10, 520.0, -1)  # a dim one, 2 sigma up
    img[178:180, 120:122] += 3000  # a speck of debris, 2 x 2 px
    boxes = np.array([[49.5, 49.5, 70.5, 70.5],  # the nucleus
                      [169.5, 49.5, 190.5, 70.5],  # the dim nucleus
                      [114.5, 172.5, 127.5, 185.5],  # the speck in a 13 x 13 box
                      [150.5, 150.5, 180.5, 180.5],  # empty noise
                      [-5.0, 49.5, 8.0, 70.5]])  # empty, cut by the left edge
    assert has_signal(img, boxes, 1.0).tolist() == [True, True, False, False, False]
    assert has_signal(img, boxes, 3.0).tolist() == [True, False, False, False, False]


def test_a_large_frame_is_read_on_every_other_pixel_with_the_same_decisions():
    img = _field(shape=(1536, 1024), sigma=20.0)  # 1.5 Mpx: sampled at step 2
    boxes = np.array([[22.5, 22.5, 57.5, 57.5],  # the first disc (centre 40, 40)
                      [60.0, 0.0, 80.0, 20.0],  # background between discs
                      [0.0, 1500.0, 23.5, 1535.5]])  # the bottom-left corner: background
    want = [True, False, False]
    assert has_signal(img, boxes, 1.0).tolist() == want
    assert has_signal(img[:512, :512], boxes[:2], 1.0).tolist() == want[:2]


def test_the_shipped_model_finds_no_nuclei_in_an_empty_field_of_noise_and_debris():
    """Simulated empty fields (the simulator's debris, no nuclei): the card's check
    (min_signal_sigma) removes most boxes at the threshold; on a field of nuclei it
    removes none that match one."""
    import inscope.acquisition.simulated as sim
    from inscope.detector.metrics import iou_matrix
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(provider="cpu", threads=2, warmup=False)
    # the box check alone: the sparse anchor of the stretch (tests/detector/
    # test_sparse_anchor.py) removes most of these boxes before it
    det.card.normalisation = {**(det.card.normalisation or {}), "sparse_sigma": None}
    assert det.card.decoding.get("min_signal_sigma") == 0.0
    on = det.card.decoding
    off = copy.deepcopy(on)
    off.pop("min_signal_sigma")
    thr = float(on["score_threshold"])
    counts = {"on": 0, "off": 0}
    for seed in range(960900, 960904):
        scope = sim.SimulatedMicroscope(sim.SimConfig(seed=seed, realtime=False,
                                                      camera_process=False,
                                                      density_per_mm2=0.0))
        f = scope.snap()
        scope.close()
        assert len(f.truth) == 0
        for name, dec in (("on", on), ("off", off)):
            det.card.decoding = dec
            counts[name] += int((det.detect(f).scores >= thr).sum())
    assert counts["off"] >= 20 and counts["on"] <= counts["off"] / 2, counts
    scope = sim.SimulatedMicroscope(sim.SimConfig(seed=960910, realtime=False,
                                                  camera_process=False))
    f = scope.snap()
    scope.close()
    matched = {}
    for name, dec in (("on", on), ("off", off)):
        det.card.decoding = dec
        d = det.detect(f)
        b = d.boxes[d.scores >= thr]
        matched[name] = int((iou_matrix(np.asarray(f.truth), b).max(1) >= 0.5).sum())
    det.card.decoding = on
    assert matched["on"] == matched["off"] > 20


def test_hot_pixel_margin_keeps_what_lies_within_it():
    from inscope.detector.signal import without_hot_pixels

    img = np.full((6, 7), 100, np.uint16)
    img[1, 1], img[3, 4], img[5, 6] = 130, 65000, 60000  # a noise peak, two hot pixels
    out = without_hot_pixels(img, margin=50)
    assert out[1, 1] == 130  # within the margin: unchanged
    assert out[3, 4] == 150 and out[5, 6] == 150  # lowered to neighbour + margin
    assert np.array_equal(np.delete(out.ravel(), [3 * 7 + 4, 5 * 7 + 6]),
                          np.delete(img.ravel(), [3 * 7 + 4, 5 * 7 + 6]))
    assert without_hot_pixels(img)[1, 1] == 100  # no margin: every strict maximum
    # the caller's buffer, in place; integer types saturate instead of wrapping
    f = img.astype(np.float32)
    assert without_hot_pixels(f, 50.0, out=f) is f and f[3, 4] == 150.0
    assert without_hot_pixels(img, margin=1e9)[3, 4] == 65000


def test_boxes_cut_by_the_frame_count_only_the_pixels_inside_it():
    """A box that runs off the top-left corner holds the frame's pixel centres from row /
    column 0 only; one wholly off the frame holds none and is kept (nothing to judge)."""
    rng = np.random.default_rng(5)
    img = rng.normal(100, 5, (40, 50)).astype(np.float32)
    img[10:21, 0:2] = 1000  # bright in columns 0 and 1
    img[0:2, 20:31] = 1000  # bright in rows 0 and 1
    boxes = np.array([
        [-2.5, 9.5, 2.5, 20.5],  # columns 0..2: two of three bright -> kept
        [19.5, -2.5, 30.5, 2.5],  # rows 0..2: two of three bright -> kept
        [1.5, 9.5, 4.5, 20.5],  # columns 2..4: none bright
        [10.0, 45.0, 20.0, 50.0],  # below the frame: no pixel centre -> kept
        [-9.0, 10.0, -2.0, 20.0],  # left of it
    ])
    assert has_signal(img, boxes, 1.0).tolist() == [True, True, False, True, True]


def test_a_margin_below_one_on_a_float_frame_still_counts():
    from inscope.detector.signal import without_hot_pixels

    img = np.full((5, 5), 0.1, np.float32)
    img[2, 2] = 0.9
    assert without_hot_pixels(img, 0.5)[2, 2] == pytest.approx(0.6)
    assert without_hot_pixels(img, 0.0)[2, 2] == pytest.approx(0.1)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_pairs_judge_each_pixel_against_its_second_brightest_neighbour(dtype):
    """Two hot pixels side by side (each the other's brightest neighbour) are lowered; a
    run of three keeps its middle (two bright neighbours), its ends are lowered; on the
    frame's edge too; *out* is written in place; without *out* the frame itself comes
    back when nothing is lowered."""
    from inscope.detector.signal import without_hot_pixels

    rng = np.random.default_rng(6)
    img = rng.normal(100, 5, (40, 50)).astype(dtype)
    clean = img.copy()
    img[10, 10] = img[11, 11] = 60000  # a diagonal pair
    img[20, 20] = 60000  # alone
    img[0, 0] = img[0, 1] = 60000  # a pair in the corner
    img[30, 5:8] = 60000  # a run of three
    out = without_hot_pixels(img, 40.0, pairs=True)
    for y, x in ((10, 10), (11, 11), (20, 20), (0, 0), (0, 1), (30, 5), (30, 7)):
        assert out[y, x] <= clean.max() + 40, (y, x)
    assert out[30, 6] == 60000
    changed = out != img
    assert changed.sum() == 7
    assert without_hot_pixels(img, 40.0, pairs=False)[10, 10] == 60000  # alone only
    assert without_hot_pixels(clean, 40.0, pairs=True) is clean
    buf = img.copy()
    assert without_hot_pixels(buf, 40.0, out=buf, pairs=True) is buf
    np.testing.assert_array_equal(buf, out)


def _second_brightest_reference(img, margin):
    """Every pixel more than *margin* above its second-brightest neighbour (of the
    eight, those inside the frame; beyond the edge counts as darker than any) lowered
    to that neighbour plus *margin*: the rule, pixel by pixel, as a plain loop."""
    h, w = img.shape
    out = img.astype(np.float64).copy()
    for y in range(h):
        for x in range(w):
            nb = sorted((float(img[y + dy, x + dx]) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                         if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w), reverse=True)
            second = nb[1] + margin
            if img[y, x] > second:
                out[y, x] = second
    return out


@pytest.mark.parametrize(("dtype", "scale", "margin"),
                         [(np.uint16, 1.0, 40.0), (np.float32, 1.0, 40.0),
                          (np.float32, 1e-3, 0.04)])
def test_pairs_are_lowered_to_exactly_their_second_brightest_neighbour_at_every_edge(
        dtype, scale, margin):
    """Hot pairs on each of the four edges and in each corner (the first and the last
    row and column), and in the middle: each pixel of a pair comes down to its
    second-brightest neighbour inside the frame plus the margin, exactly as the rule
    says, pixel by pixel - also on a float frame scaled to ~0.1 whose margin is under 1.
    The caller's *out* gets the result and the frame itself is left as it was."""
    from inscope.detector.signal import without_hot_pixels

    rng = np.random.default_rng(7)
    img = (rng.normal(100, 5, (16, 19)) * scale).astype(dtype)
    h, w = img.shape
    hot = 60000 * scale
    for (y0, x0), (y1, x1) in [((0, 5), (0, 6)), ((h - 1, 9), (h - 1, 10)),
                               ((6, 0), (7, 0)), ((10, w - 1), (11, w - 1)),
                               ((0, 0), (1, 1)), ((h - 1, w - 1), (h - 2, w - 1)),
                               ((0, w - 1), (1, w - 2)), ((h - 1, 0), (h - 1, 1)),
                               ((8, 9), (8, 10))]:
        img[y0, x0] = img[y1, x1] = hot
    before = img.copy()
    want = _second_brightest_reference(img, margin)
    out = np.zeros_like(img)
    got = without_hot_pixels(img, margin, out=out, pairs=True)
    assert got is out
    np.testing.assert_array_equal(img, before)  # the frame itself is untouched
    if dtype == np.uint16:
        np.testing.assert_array_equal(out, np.minimum(want, 65535).astype(np.uint16))
    else:
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6 * scale)
    assert (before == hot).sum() == 18 and (out[before == hot] < hot).all()


def test_a_box_over_the_frame_edge_counts_the_edge_row_and_column_exactly():
    """Boxes reaching past the left / top edge hold the pixel centres from column / row
    0 on - not from 1 - and a box wholly past an edge holds none (kept: nothing to
    judge). Each region is two bright lines and one dark, so a count that skips the
    edge line (one of two lines bright) drops a box that has two of three."""
    from inscope.detector.signal import has_signal

    rng = np.random.default_rng(8)
    img = rng.normal(100, 5, (40, 50)).astype(np.float32)
    img[10:21, 0:2], img[10:21, 2] = 1000, 50  # columns 0, 1 bright, 2 dark
    img[0:2, 20:31], img[2, 20:31] = 1000, 50  # rows 0, 1 bright, 2 dark
    img[25:36, 0:3] = 50  # dark at the left edge
    boxes = np.array([
        [-2.5, 9.5, 2.5, 20.5],  # columns 0..2: two of three bright -> kept
        [19.5, -2.5, 30.5, 2.5],  # rows 0..2: two of three bright -> kept
        [-6.0, 25.0, -1.0, 35.0],  # wholly left of the frame, beside dark pixels -> kept
        [-2.5, 24.5, 2.5, 35.5],  # columns 0..2, all dark -> dropped
    ])
    assert has_signal(img, boxes, 1.0).tolist() == [True, True, True, False]
