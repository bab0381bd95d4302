"""Stable boxes and calibrated scores: 3 x 3 neighbourhood targets, centre vote, Platt
scaling, ECE, and no fixed cap on the number of boxes.

Real numpy / OpenCV code on hand-built model outputs whose right answers are known.
"""

from __future__ import annotations

import numpy as np
import pytest

from inscope.detector.calibration import (
    ScoredDetections,
    best_f1_threshold,
    expected_calibration_error,
    fit_platt,
)
from inscope.detector.decode import calibrate_scores, decode_centernet, raw_threshold


def _outputs(centres, size=20.0, hw=(32, 32), noise_peak=0.0):
    """Heatmap / size / offset maps as a model trained on the 3 x 3 targets emits them:
    every cell near a centre points at it (offset = centre - cell corner, in cells)."""
    h, w = hw
    hm = np.zeros((1, h, w), np.float32)
    off = np.zeros((2, h, w), np.float32)
    sz = np.full((2, h, w), size, np.float32)
    for cx, cy in centres:  # in cells
        ix, iy = int(cx), int(cy)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                hm[0, iy + dy, ix + dx] = 0.9 if dx == dy == 0 else 0.6
                off[0, iy + dy, ix + dx] = cx - (ix + dx)
                off[1, iy + dy, ix + dx] = cy - (iy + dy)
        off[0, iy, ix] += noise_peak  # the peak cell's own estimate is off
    return {"heatmap": hm, "size": sz, "offset": off}


def test_centre_vote_averages_neighbours_and_ignores_another_nucleus() -> None:
    out = _outputs([(10.3, 12.6), (12.4, 12.5)], noise_peak=0.4)
    spec = {"stride": 4, "offset": "offset", "score_threshold": 0.5}
    b0, _, _ = decode_centernet(out, spec)
    b1, _, _ = decode_centernet(out, {**spec, "centre_vote": True})
    cx0 = np.sort((b0[:, 0] + b0[:, 2]) / 2)
    cx1 = np.sort((b1[:, 0] + b1[:, 2]) / 2)
    true = np.array([10.3, 12.4]) * 4
    # without the vote the peak cell's error (0.4 cell = 1.6 px) goes straight through
    np.testing.assert_allclose(cx0, true + 1.6, atol=1e-4)
    # with it, the agreeing neighbours pull it back; the other nucleus 2 cells away (the
    # shared column points 2 cells off) is not mixed in
    err = np.abs(cx1 - true)
    assert err.max() < 0.5, cx1
    assert err.max() < 0.4 * 1.6


def test_centre_vote_keeps_exact_centres_and_sizes() -> None:
    out = _outputs([(7.25, 9.75)], size=18.0)
    b, s, _ = decode_centernet(out, {"stride": 4, "offset": "offset",
                                     "score_threshold": 0.5, "centre_vote": True})
    np.testing.assert_allclose(b[0], [29 - 9, 39 - 9, 29 + 9, 39 + 9], atol=1e-4)
    assert s[0] == pytest.approx(0.9)


def test_centre_vote_is_exact_far_from_the_origin_of_a_large_frame() -> None:
    # a 2048 x 2048 frame: 512 x 512 cells; the vote's arithmetic is float32, and a
    # nucleus in the last cells must come out as exactly as one at the origin
    out = _outputs([(508.3, 509.6), (3.3, 4.6)], size=18.0, hw=(512, 512), noise_peak=0.0)
    for spec in ({"centre_vote": True}, {"centre_vote": 2, "vote_sigma": 0.75}):
        b, _, _ = decode_centernet(out, {"stride": 4, "offset": "offset",
                                         "score_threshold": 0.5, **spec})
        got = np.sort((b[:, 0] + b[:, 2]) / 2), np.sort((b[:, 1] + b[:, 3]) / 2)
        np.testing.assert_allclose(got[0], [3.3 * 4, 508.3 * 4], atol=2e-4)
        np.testing.assert_allclose(got[1], [4.6 * 4, 509.6 * 4], atol=2e-4)
        np.testing.assert_allclose(b[:, 2] - b[:, 0], 18.0, atol=1e-4)


def test_centre_vote_weights_each_peak_by_its_own_class_heatmap() -> None:
    # two classes, one nucleus each, in different places: each peak's neighbours are
    # weighted by its own class's channel (the other channel is zero there)
    one = _outputs([(6.5, 7.5)], size=10.0)
    two = _outputs([(20.25, 22.75)], size=14.0)
    size = one["size"].copy()
    size[:, 19:27, 17:25] = 14.0  # the second nucleus' cells (and a margin) say 14 px
    out = {"heatmap": np.concatenate([one["heatmap"], two["heatmap"]]), "size": size,
           "offset": one["offset"] + two["offset"]}
    b, _, c = decode_centernet(out, {"stride": 4, "offset": "offset", "score_threshold": 0.5,
                                     "centre_vote": 2, "vote_sigma": 0.75})
    assert sorted(c.tolist()) == [0, 1]
    for cls, (cx, cy), w in ((0, (6.5, 7.5), 10.0), (1, (20.25, 22.75), 14.0)):
        (bx,) = b[c == cls]
        np.testing.assert_allclose(bx, [4 * cx - w / 2, 4 * cy - w / 2,
                                        4 * cx + w / 2, 4 * cy + w / 2], atol=1e-4)


def test_centre_vote_counts_each_cell_once_at_the_frame_border() -> None:
    # a nucleus in the corner cell: the 5 x 5 window reaches 2 cells past the border,
    # where the clipped indices repeat row / column 0; each real cell counts once
    h = w = 8
    hm = np.zeros((1, h, w), np.float32)
    off = np.zeros((2, h, w), np.float32)
    hm[0, 0, 0], hm[0, 0, 1], hm[0, 1, 0], hm[0, 1, 1] = 0.9, 0.6, 0.6, 0.6
    # every cell's centre estimate (x, y), in cells: the corner says (0.2, 0.2), its
    # right-hand neighbour (0.4, 0.2), the others (0.2, 0.2)
    est = {(0, 0): (0.2, 0.2), (0, 1): (0.4, 0.2), (1, 0): (0.2, 0.2), (1, 1): (0.2, 0.2)}
    for (y, x), (ex, ey) in est.items():
        off[0, y, x], off[1, y, x] = ex - x, ey - y
    out = {"heatmap": hm, "size": np.full((2, h, w), 6.0, np.float32), "offset": off}
    b, _, _ = decode_centernet(out, {"stride": 4, "offset": "offset", "score_threshold": 0.5,
                                     "centre_vote": 2, "vote_agree": 0.75})
    want_x = (0.9 * 0.2 + 0.6 * 0.4 + 0.6 * 0.2 + 0.6 * 0.2) / 2.7 * 4
    assert (b[0, 0] + b[0, 2]) / 2 == pytest.approx(want_x, abs=1e-5)
    assert (b[0, 1] + b[0, 3]) / 2 == pytest.approx(0.2 * 4, abs=1e-5)


def test_calibration_maps_scores_and_threshold_consistently() -> None:
    cal = {"method": "platt", "a": 2.0, "b": -1.0}
    s = np.array([0.1, 0.5, 0.9], np.float32)
    c = calibrate_scores(s, cal)
    z = 2.0 * np.log(s / (1 - s)) - 1.0
    np.testing.assert_allclose(c, 1 / (1 + np.exp(-z)), rtol=1e-5)
    assert np.all(np.diff(c) > 0)  # monotonic: ranking and AP unchanged
    for t in (0.2, 0.5, 0.8):
        r = raw_threshold(t, cal)
        assert calibrate_scores(np.array([r]), cal)[0] == pytest.approx(t, abs=1e-5)
    # decoding: the card's threshold is in calibrated units, scores come out calibrated
    out = _outputs([(8.5, 8.5)])
    spec = {"stride": 4, "offset": "offset", "calibration": cal}
    cal_peak = float(calibrate_scores(np.array([0.9]), cal)[0])
    _, sc, _ = decode_centernet(out, {**spec, "score_threshold": cal_peak - 0.01})
    assert sc.tolist() == pytest.approx([cal_peak])
    _, sc, _ = decode_centernet(out, {**spec, "score_threshold": cal_peak + 0.01})
    assert len(sc) == 0
    with pytest.raises(ValueError, match="Unknown score calibration"):
        calibrate_scores(s, {"method": "isotonic"})


def test_platt_fit_recovers_the_true_mapping_and_lowers_ece() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.02, 0.98, 20000)
    a, b = 3.0, 1.0  # truth: P(correct) = sigmoid(3 logit(s) + 1): overconfident-free
    p = 1 / (1 + np.exp(-(a * np.log(raw / (1 - raw)) + b)))
    y = rng.random(len(raw)) < p
    fa, fb = fit_platt(raw, y)
    assert fa == pytest.approx(a, rel=0.08) and fb == pytest.approx(b, abs=0.1)
    before = expected_calibration_error(raw, y)
    after = expected_calibration_error(calibrate_scores(raw, {"a": fa, "b": fb}), y)
    assert before > 0.1 and after < 0.02
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_platt(raw[:10], np.ones(10, bool))


def test_ece_of_known_bins() -> None:
    s = np.array([0.95] * 10 + [0.15] * 10)
    y = np.array([True] * 5 + [False] * 5 + [False] * 10)
    # bin 0.9-1: mean score 0.95, accuracy 0.5; bin 0.1-0.2: 0.15 vs 0 -> (0.45 + 0.15) / 2
    assert expected_calibration_error(s, y) == pytest.approx(0.30)


def test_best_f1_threshold_picks_the_separating_score() -> None:
    sd = ScoredDetections(np.array([0.9, 0.8, 0.7, 0.3, 0.2]),
                          np.array([True, True, True, False, False]), n_gt=3)
    t, f1 = best_f1_threshold(sd)
    assert 0.3 < t <= 0.7 and f1 == pytest.approx(1.0)


def test_no_fixed_cap_on_boxes() -> None:
    # 64 x 64 = 4096 isolated peaks on a checkerboard-like grid (every other cell)
    h = w = 128
    hm = np.zeros((1, h, w), np.float32)
    hm[0, ::2, ::2] = 0.8
    out = {"heatmap": hm, "size": np.full((2, h, w), 6.0, np.float32)}
    from inscope.detector.train.export import MAX_DETECTIONS, default_card

    spec = default_card().decoding
    assert spec["max_detections"] == MAX_DETECTIONS >= 30000
    b, _, _ = decode_centernet(out, {**spec, "offset": None})
    assert len(b) == 64 * 64


def test_neighbourhood_targets_point_every_cell_at_its_own_centre() -> None:
    import torch  # noqa: F401 - the [train] extra, installed by CI (make test)

    from inscope.detector.train.data import draw_targets

    # two 20 px nuclei whose 3 x 3 neighbourhoods share a column of cells
    boxes = np.array([[10, 10, 30, 30], [18, 14, 38, 34]], np.float32)
    t = draw_targets(boxes, (16, 16))
    cx = np.array([20.0, 28.0]) / 4
    cy = np.array([20.0, 24.0]) / 4
    w, off = t["reg_weight"], t["reg_offset"]
    ys, xs = np.nonzero(w)
    assert len(ys) == 16  # 9 + 9 cells, 2 shared
    for y, x in zip(ys, xs, strict=True):
        # each cell points at the centre of the nucleus nearer to it
        k = int(np.argmin((cx - x) ** 2 + (cy - y) ** 2))
        assert off[0, y, x] + x == pytest.approx(cx[k], abs=1e-5)
        assert off[1, y, x] + y == pytest.approx(cy[k], abs=1e-5)
        assert t["reg_size"][:, y, x].tolist() == [20.0, 20.0]
    assert w[5, 5] == 1.0 and w[6, 7] == 1.0  # centre cells
    assert 0 < w[4, 5] < 1.0


def test_old_offset_head_is_widened_and_the_shipped_one_recognised(tmp_path) -> None:
    import torch  # the [train] extra, installed by CI (make test)

    from inscope.detector.onnx_detector import default_model_path
    from inscope.detector.train.export import export_onnx, model_from_onnx
    from inscope.detector.train.model import OFFSET_RANGE, TinyCenterNet, widen_offset_head

    torch.manual_seed(0)
    m = TinyCenterNet().eval()
    m.offset_range = (0.0, 1.0)  # a model trained before the 3 x 3 targets
    m.export_mode = True
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        before = m(x)[2]
        widen_offset_head(m)
        after = m(x)[2]
    assert m.offset_range == OFFSET_RANGE
    # same offsets near the cell centre, now able to reach the neighbours' range
    assert float((after - before).abs().mean()) < 0.05
    assert float(after.min()) > OFFSET_RANGE[0] and float(after.max()) < OFFSET_RANGE[1]
    shipped = model_from_onnx(default_model_path())
    assert shipped.offset_range == OFFSET_RANGE
    export_onnx(shipped, tmp_path / "again.onnx")  # checks ONNX == torch on export
    assert model_from_onnx(tmp_path / "again.onnx").offset_range == OFFSET_RANGE


def _gaussian_outputs(centres, size=24.0, hw=(40, 40), sigma=1.2, peak_error=0.0):
    """Outputs of a model trained on neighbourhood targets, every cell of a 5 x 5 window
    pointing at its nucleus (the nearer one where windows meet); the peak cell's own
    offset is *peak_error* cells off in x."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cs = np.asarray(centres, np.float32)
    d2 = (xx[None] - np.floor(cs[:, 0])[:, None, None]) ** 2 + \
        (yy[None] - np.floor(cs[:, 1])[:, None, None]) ** 2
    near = d2.argmin(0)
    hm = (0.95 * np.exp(-d2.min(0) / (2 * sigma ** 2)))[None].astype(np.float32)
    off = np.stack([cs[near, 0] - xx, cs[near, 1] - yy]).astype(np.float32)
    for cx, cy in cs:
        off[0, int(cy), int(cx)] += peak_error
    return {"heatmap": hm, "size": np.full((2, h, w), size, np.float32), "offset": off}


def test_soft_5x5_vote_steadies_the_centre_more_than_the_3x3_one() -> None:
    true = np.array([[10.3, 12.6], [15.4, 12.5]])  # 5 cells apart: windows touch
    out = _gaussian_outputs(true, peak_error=0.6)
    spec = {"stride": 4, "offset": "offset", "score_threshold": 0.5}

    def err(**kw):
        b, _, _ = decode_centernet(out, {**spec, **kw})
        assert len(b) == 2
        c = (b[:, :2] + b[:, 2:]) / 2
        c = c[np.argsort(c[:, 0])]
        return np.abs(c - true * 4).max()

    e3 = err(centre_vote=1)
    e5 = err(centre_vote=2, vote_sigma=0.5)
    # the 3 x 3 vote cuts the peak cell's 2.4 px error to ~1/3 of it; 25 cells cut more,
    # and the neighbour nucleus' cells (5 cells away) are not mixed in
    assert e3 < 0.5 * 2.4
    assert e5 < 0.6 * e3, (e3, e5)
    # all cells agree: the exact centre whatever the window
    exact = _gaussian_outputs(true)
    b, _, _ = decode_centernet(exact, {**spec, "centre_vote": 2, "vote_sigma": 0.5})
    c = np.sort((b[:, 0] + b[:, 2]) / 2)
    np.testing.assert_allclose(c, np.sort(true[:, 0]) * 4, atol=1e-4)


def test_nms_in_decoding_removes_a_second_peak_on_one_nucleus_only() -> None:
    # one big nucleus with a second, weaker peak 2 cells away (texture), and a touching
    # neighbour whose box overlaps the first by IoU ~0.2
    out = _gaussian_outputs([[10.5, 10.5], [17.5, 10.5]], size=36.0, sigma=1.0)
    out["heatmap"][0, 10, 12] = 0.9  # second peak inside nucleus 1
    out["offset"][:, 10, 12] = [0.2, 0.5]  # its own centre estimate, 1.8 cells off
    spec = {"stride": 4, "offset": "offset", "score_threshold": 0.5}
    b0, s0, _ = decode_centernet(out, spec)
    b1, s1, _ = decode_centernet(out, {**spec, "merge_iou": 0.5})
    assert len(b0) == 3 and len(b1) == 2
    np.testing.assert_allclose(np.sort((b1[:, 0] + b1[:, 2]) / 2), [42.0, 70.0], atol=1e-4)
    assert sorted(s1.tolist()) == pytest.approx([0.95, 0.95])


def test_sparse_nms_equals_greedy_nms() -> None:
    from inscope.detector.decode import nms, suppress_overlaps

    # a chain: A suppresses B; B would suppress C, but B is gone, so C stays (greedy)
    chain = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)
    assert suppress_overlaps(chain, np.array([0.9, 0.8, 0.7]), 0.4).tolist() == [0, 2]
    # class-wise: the same box of another class stays
    two = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert suppress_overlaps(two, np.array([0.9, 0.8]), 0.5, np.array([0, 1])).tolist() \
        == [0, 1]
    assert suppress_overlaps(two, np.array([0.8, 0.9]), 0.5).tolist() == [1]
    rng = np.random.default_rng(3)
    for n, t in ((40, 0.1), (300, 0.3), (600, 0.5)):
        c = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(5, 40, (n, 2))
        b = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
        s = rng.random(n).astype(np.float32)
        assert suppress_overlaps(b, s, t).tolist() == nms(b, s, t).tolist()


def test_shipped_card_decodes_as_a_rebuilt_model_would() -> None:
    # benchmarks/train_default_model.sh must reproduce the shipped card's decoding: the
    # export writes DEFAULT_VOTE, so the shipped card must hold exactly that
    import json

    # torch (the train extra) is part of the test setup: never a skip
    from inscope.detector.onnx_detector import default_model_path
    from inscope.detector.train.export import DEFAULT_VOTE, MIN_SIGNAL_SIGMA, default_card

    card = json.loads(default_model_path().with_suffix(".json").read_text())
    shipped = card["decoding"]
    for k, v in {**DEFAULT_VOTE, "min_signal_sigma": MIN_SIGNAL_SIGMA}.items():
        assert shipped[k] == v == default_card().decoding[k], k
    # ... and its scale, the small-nucleus enlargement included (14 px for 7-72 px)
    assert card["scale"] == default_card().scale
    assert card["scale"]["enlarge_below_px"] == 14.0


def test_centre_shift_is_the_median_error_of_correct_detections_above_threshold() -> None:
    from inscope.detector.calibration import centre_shift

    sd = ScoredDetections(np.array([0.9, 0.8, 0.7, 0.2, 0.95]),
                          np.array([True, True, True, True, False]), 4,
                          np.array([[0.4, -0.2], [0.5, -0.3], [3.0, 9.0], [-5.0, -5.0]]))
    # correct and >= 0.5: the first three; the wrong one has no error, the 0.2 is below
    assert centre_shift(sd, 0.5) == (0.5, -0.2)
    assert centre_shift(sd, 0.99) == (0.0, 0.0)


def test_calibration_measures_the_centre_error_and_decoding_takes_it_off(tmp_path) -> None:
    """On a copy of the shipped model: whatever centre error the network has, the card
    written by calibration decodes with a median error under 0.1 px on the same frames."""
    import shutil

    from inscope.detector.calibration import calibrate_model, centre_shift, collect
    from inscope.detector.datasets import simulated_samples
    from inscope.detector.onnx_detector import OnnxDetector, default_model_path

    src = default_model_path()
    m = tmp_path / src.name
    shutil.copy(src, m)
    shutil.copy(src.with_suffix(".json"), m.with_suffix(".json"))
    rec = calibrate_model(m, frames=4)
    err = rec["fit"]["centre_error_px"]
    shift = rec["centre_shift_px"]
    assert (shift is None) == (max(abs(v) for v in err) <= 0.1)
    det = OnnxDetector(m, provider="cpu")
    assert det.card.decoding.get("centre_shift_px") == shift
    after = centre_shift(collect(det, simulated_samples(4, 950000)),
                         det.card.decoding["score_threshold"])
    assert max(abs(v) for v in after) < 0.1, (err, after)
    det.close()


def _vote_by_hand(hm, size, off, c, y, x, logits, stride, agree, radius, sigma, iterations=2):
    """The centre vote written plainly, one peak and one cell at a time: the oracle."""
    out = []
    H, W = hm.shape[1:]
    for cc, yy, xx in zip(c, y, x, strict=True):
        cells = [(yy + dy, xx + dx) for dy in range(-radius, radius + 1)
                 for dx in range(-radius, radius + 1)
                 if 0 <= yy + dy < H and 0 <= xx + dx < W]
        heat = np.array([hm[cc, j, i] for j, i in cells], float)
        if logits:
            heat = 1 / (1 + np.exp(-heat))
        ex = np.array([i + off[0, j, i] for j, i in cells], float)
        ey = np.array([j + off[1, j, i] for j, i in cells], float)
        own = (xx + off[0, yy, xx], yy + off[1, yy, xx])
        w = heat * ((abs(ex - own[0]) <= agree) & (abs(ey - own[1]) <= agree))
        mx, my = (w * ex).sum() / w.sum(), (w * ey).sum() / w.sum()
        if sigma:
            for _ in range(iterations):
                w = heat * np.exp(-((ex - mx) ** 2 + (ey - my) ** 2) / (2 * sigma ** 2))
                mx, my = (w * ex).sum() / w.sum(), (w * ey).sum() / w.sum()
        sw = np.array([max(size[0, j, i], 0) for j, i in cells])
        sh = np.array([max(size[1, j, i], 0) for j, i in cells])
        out.append((mx * stride, my * stride, (w * sw).sum() / w.sum(),
                    (w * sh).sum() / w.sum()))
    return np.array(out).T


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("sigma", [0.0, 0.75])
@pytest.mark.parametrize("logits", [False, True])
def test_the_centre_vote_equals_the_vote_written_plainly(radius, sigma, logits):
    """Random outputs (two classes, disagreeing neighbours, negative sizes) and peaks in
    every corner and along every border: the vectorised vote equals the plain one."""
    from inscope.detector.decode import _centre_vote

    rng = np.random.default_rng(radius * 10 + int(logits) + int(sigma * 4))
    C, H, W = 2, 23, 31
    hm = rng.uniform(0.05, 1.0, (C, H, W)).astype(np.float32)
    if logits:
        hm = rng.normal(0, 2, (C, H, W)).astype(np.float32)
    off = rng.uniform(-1.25, 2.25, (2, H, W)).astype(np.float32)
    size = rng.uniform(-2, 30, (2, H, W)).astype(np.float32)
    ys = [0, 0, H - 1, H - 1, 1, H - 2, 0, H - 1, 5, 11, 17, 3]
    xs = [0, W - 1, 0, W - 1, W - 2, 1, 15, 7, 0, W - 1, 13, 1]
    y, x = np.array(ys), np.array(xs)
    c = rng.integers(0, C, len(y)).astype(np.int32)
    got = _centre_vote(hm, size, off, c, y, x, logits, 4.0, agree_cells=0.75, radius=radius,
                       sigma=sigma)
    want = _vote_by_hand(hm, size, off, c, y, x, logits, 4.0, 0.75, radius, sigma)
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g, float), w_, rtol=1e-5, atol=1e-4)
