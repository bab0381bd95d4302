"""Score calibration on known values (``inscope.detector.calibration``): the expected
calibration error bin by bin, Platt scaling against an independent maximum-likelihood
fit, the best-F1 threshold and the centre shift from hand-counted detections, what
``collect`` labels right, wrong or left out on a drawn frame with the shipped model, and
what ``calibrate_model`` writes into a copy of the shipped card.

Real parts: the shipped ONNX model in ONNX Runtime, the simulator's frames; scipy's
optimiser as the oracle for the logistic fit.
"""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest

from inscope.detector.calibration import (
    MIN_SCORE,
    ScoredDetections,
    _centres,
    best_f1_threshold,
    calibrate_model,
    centre_shift,
    collect,
    expected_calibration_error,
    fit_platt,
)
from inscope.detector.card import ModelCard
from inscope.detector.datasets import Sample
from inscope.detector.decode import _logit
from inscope.detector.onnx_detector import DEFAULT_MODEL, OnnxDetector


# -- ECE ---------------------------------------------------------------------------------------
def test_ece_weighs_each_bins_gap_by_its_share_of_detections():
    # bins of 0.1: 0.05 -> bin 0, 0.15 -> 1, 0.95 and 1.0 (the top edge) -> 9
    s, c = np.array([0.05, 0.15, 0.95, 1.0]), np.array([0, 0, 1, 1])
    assert expected_calibration_error(s, c) == pytest.approx(
        0.25 * 0.05 + 0.25 * 0.15 + 0.5 * (1 - 0.975))
    # the two top bins are two bins: 0.85 wrong, 0.95 right
    assert expected_calibration_error(np.array([0.85, 0.95]), np.array([0, 1])) == (
        pytest.approx(0.5 * 0.85 + 0.5 * 0.05))
    # 5 bins of 0.2: 0.05 and 0.15 share bin 0
    assert expected_calibration_error(s, c, bins=5) == pytest.approx(
        0.5 * 0.1 + 0.5 * (1 - 0.975))
    assert expected_calibration_error(np.array([0.3, 0.3]), np.array([1, 0])) == (
        pytest.approx(0.2))


def test_ece_of_nothing_is_nan():
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))


# -- Platt scaling -------------------------------------------------------------------------------
def _oracle(scores, correct):
    from scipy.optimize import minimize

    z, y = _logit(np.asarray(scores, float)), np.asarray(correct, float)

    def nll(w):
        t = w[0] * z + w[1]
        return float(np.sum(np.logaddexp(0, t) - y * t) + 0.5e-6 * (w @ w))

    return minimize(nll, [1.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x


def test_platt_scaling_is_the_maximum_likelihood_fit():
    rng = np.random.default_rng(3)
    z = rng.uniform(-3, 3, 40)
    s = 1 / (1 + np.exp(-z))
    y = rng.random(40) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))
    a, b = fit_platt(s, y)
    assert (a, b) == pytest.approx(tuple(_oracle(s, y)), abs=1e-4)


def test_platt_scaling_recovers_the_mapping_that_made_the_labels():
    rng = np.random.default_rng(4)
    z = rng.uniform(-4, 4, 20000)
    y = rng.random(len(z)) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))
    a, b = fit_platt(1 / (1 + np.exp(-z)), y)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)


def test_platt_scaling_needs_right_and_wrong_detections():
    for s, c in (([0.3, 0.7, 0.9], [1, 1, 1]), ([0.3, 0.7], [0, 0]), ([0.5], [1])):
        with pytest.raises(ValueError, match="both right and wrong"):
            fit_platt(np.array(s), np.array(c))
    # two detections, one of each, are enough (the ridge keeps it finite)
    a, b = fit_platt(np.array([0.3, 0.7]), np.array([0, 1]))
    assert math.isfinite(a) and math.isfinite(b) and a > 0


# -- threshold and centre shift --------------------------------------------------------------
def test_the_best_f1_threshold_from_counted_detections():
    sd = ScoredDetections(np.array([0.9, 0.8, 0.7, 0.35, 0.3]),
                          np.array([True, True, False, True, False]), n_gt=4)
    # at 0.35: P 3/4, R 3/4 -> F1 0.75 (0.7: 2/3, 2/4 -> 0.571; 0.3: 3/5, 3/4 -> 0.667)
    t, f1 = best_f1_threshold(sd)
    assert t == 0.35 and f1 == pytest.approx(0.75)
    t, f1 = best_f1_threshold(sd, grid=[0.75, 0.95])
    assert t == 0.75 and f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    # a tie keeps the lower threshold (the first found)
    sd2 = ScoredDetections(np.array([0.9]), np.array([True]), n_gt=1)
    assert best_f1_threshold(sd2, grid=[0.1, 0.5]) == (0.1, pytest.approx(1.0))
    # nothing right anywhere: F1 0 at the first threshold
    sd3 = ScoredDetections(np.array([0.9]), np.array([False]), n_gt=0)
    assert best_f1_threshold(sd3, grid=[0.2, 0.4]) == (0.2, 0.0)


def test_the_centre_shift_is_the_median_error_of_right_detections_above_the_threshold():
    sd = ScoredDetections(np.array([0.9, 0.8, 0.7, 0.2]), np.array([True, False, True, True]),
                          n_gt=3, centre_error=np.array([[0.5, -1.0], [0.1, 0.2],
                                                         [5.0, 5.0]]))
    # the right ones in order: 0.9 -> (0.5, -1), 0.7 -> (0.1, 0.2), 0.2 -> (5, 5)
    assert centre_shift(sd, 0.5) == pytest.approx((0.3, -0.4))
    assert centre_shift(sd, 0.8) == pytest.approx((0.5, -1.0))
    assert centre_shift(sd, 0.95) == (0.0, 0.0)


def test_box_centres():
    np.testing.assert_allclose(_centres(np.array([[0, 0, 4, 2], [1, 3, 2, 9]])),
                               [[2, 1], [1.5, 6]])


# -- collect: right, wrong, left out ------------------------------------------------------------
@pytest.fixture(scope="module")
def detector():
    d = OnnxDetector(DEFAULT_MODEL, provider="cpu")
    yield d
    d.close()


def _scene():
    """256 x 256: nuclei (r 10 px) at (80, 80), (180, 150) and cut by the left edge at
    (2, 200)."""
    img = np.full((256, 256), 100, np.float32)
    for cx, cy in ((80, 80), (180, 150), (2, 200)):
        cv2.circle(img, (cx, cy), 10, 900.0, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


GT = [[69.5, 69.5, 90.5, 90.5], [169.5, 139.5, 190.5, 160.5]]


def _sample(boxes, difficult=None):
    return Sample(_scene(), np.asarray(boxes, np.float32).reshape(-1, 4), None, "scene",
                  difficult=None if difficult is None else np.asarray(difficult, bool))


def test_collect_labels_each_detection_and_measures_the_centre_error(detector):
    # the annotation of the first nucleus (a disc of 21 px centred on (80, 80)) is 2 px
    # right of it and 1 px above
    gt = [[69.5 + 2, 69.5 - 1, 90.5 + 2, 90.5 - 1], GT[1]]
    thr, dec = detector.score_threshold, detector.card.decoding
    sd = collect(detector, [_sample(gt)])
    assert detector.score_threshold == thr and detector.card.decoding is dec  # restored
    assert sd.n_gt == 2 and int(sd.correct.sum()) == 2
    assert (sd.scores >= MIN_SCORE).all() and len(sd.scores) == len(sd.correct)
    # the cut nucleus at the left edge has no annotation: a wrong detection ...
    assert int((~sd.correct).sum()) >= 1
    # ... unless border detections are left out
    sb = collect(detector, [_sample(gt)], ignore_border_fp=True)
    assert len(sb.scores) == len(sd.scores) - int((~sd.correct).sum()) and sb.correct.all()
    # centre error = detection - annotation: (-2, +1) for the first, ~0 for the second
    e = sd.centre_error[np.argsort(np.abs(sd.centre_error[:, 0]))]
    assert len(e) == 2
    assert e[0] == pytest.approx([0.0, 0.0], abs=0.5)  # the network is off by < 0.5 px
    assert e[1] == pytest.approx([-2.0, 1.0], abs=0.5)


def test_collect_leaves_out_detections_of_difficult_objects(detector):
    gt = GT
    sd = collect(detector, [_sample(gt)])
    sdd = collect(detector, [_sample(gt, difficult=[True, False])])
    assert sdd.n_gt == 1 and len(sdd.scores) == len(sd.scores) - 1
    assert int(sdd.correct.sum()) == 1


def test_collect_raw_switches_the_cards_calibration_off_for_the_run(detector):
    assert "calibration" in detector.card.decoding
    gt = GT
    cal = collect(detector, [_sample(gt)])
    raw = collect(detector, [_sample(gt)], raw=True)
    from inscope.detector.decode import calibrate_scores

    assert "calibration" in detector.card.decoding
    top_raw, top_cal = np.sort(raw.scores)[-2:], np.sort(cal.scores)[-2:]
    np.testing.assert_allclose(calibrate_scores(top_raw, detector.card.decoding["calibration"]),
                               top_cal, atol=1e-5)
    assert not np.allclose(top_raw, top_cal)


def test_collect_of_no_samples_is_empty(detector):
    sd = collect(detector, [])
    assert sd.n_gt == 0 and len(sd.scores) == 0 and sd.centre_error.shape == (0, 2)


# -- calibrate_model: what goes into the card ---------------------------------------------------
def test_calibrate_model_writes_its_fit_into_the_card(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(DEFAULT_MODEL, model)
    shutil.copy(ModelCard.path_for(DEFAULT_MODEL), ModelCard.path_for(model))
    rec = calibrate_model(model, frames=2, seed=950000)
    card = ModelCard.load(ModelCard.path_for(model))
    cal = card.decoding["calibration"]
    assert cal == rec["calibration"] and cal["method"] == "platt"
    assert cal["a"] > 0 and round(cal["a"], 4) == cal["a"] and round(cal["b"], 4) == cal["b"]
    assert card.decoding["score_threshold"] == rec["score_threshold"]
    assert 0.05 <= rec["score_threshold"] <= 0.95
    fit = card.metrics["calibration_fit"]
    assert fit == rec["fit"] and fit["frames"] == "2 simulated 512x512 frames, seed 950000"
    assert fit["detections"] > 0 and 0 <= fit["ece_calibrated"] <= 1
    assert 0 < fit["best_f1"] <= 1 and len(fit["centre_error_px"]) == 2
    # a centre shift is stored only from a tenth of a pixel on
    shift = fit["centre_error_px"]
    if max(abs(v) for v in shift) > 0.1:
        assert rec["centre_shift_px"] == shift == card.decoding["centre_shift_px"]
    else:
        assert rec["centre_shift_px"] is None and "centre_shift_px" not in card.decoding
    # the fitted calibration is what the same frames give by hand
    det = OnnxDetector(model, provider="cpu")
    try:
        from inscope.detector.datasets import simulated_samples

        raw = collect(det, simulated_samples(2, 950000), raw=True)
    finally:
        det.close()
    a, b = fit_platt(raw.scores, raw.correct)
    assert (cal["a"], cal["b"]) == (round(a, 4), round(b, 4))
    assert fit["detections"] == len(raw.scores)
    assert fit["ece_raw"] == round(expected_calibration_error(raw.scores, raw.correct), 4)
    # the threshold, F1 and ECE are those of the calibrated scores
    from inscope.detector.decode import calibrate_scores

    fitted = ScoredDetections(calibrate_scores(raw.scores, cal).astype(np.float64),
                              raw.correct, raw.n_gt, raw.centre_error)
    thr, f1 = best_f1_threshold(fitted)
    assert rec["score_threshold"] == thr and fit["best_f1"] == round(f1, 4)
    assert fit["ece_calibrated"] == round(
        expected_calibration_error(fitted.scores, fitted.correct), 4)


def test_calibrate_model_without_write_leaves_the_card(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(DEFAULT_MODEL, model)
    shutil.copy(ModelCard.path_for(DEFAULT_MODEL), ModelCard.path_for(model))
    before = ModelCard.path_for(model).read_bytes()
    calibrate_model(model, frames=2, seed=950000, write=False)
    assert ModelCard.path_for(model).read_bytes() == before


def test_a_score_of_exactly_one_is_in_the_top_bin():
    # 0.95 right and 1.0 wrong share bin 9: accuracy 0.5 against a mean score of 0.975
    s, c = np.array([0.05, 0.15, 0.95, 1.0]), np.array([0, 0, 1, 0])
    assert expected_calibration_error(s, c) == pytest.approx(
        0.25 * 0.05 + 0.25 * 0.15 + 0.5 * 0.475)


def test_the_centre_shift_counts_a_detection_exactly_at_the_threshold():
    sd = ScoredDetections(np.array([0.7, 0.9]), np.array([True, True]), n_gt=2,
                          centre_error=np.array([[1.0, 1.0], [3.0, 3.0]]))
    assert centre_shift(sd, 0.7) == pytest.approx((2.0, 2.0))


def test_collect_with_difficult_objects_and_border_detections_left_out_together(detector):
    sd = collect(detector, [_sample(GT)], ignore_border_fp=True)
    both = collect(detector, [_sample(GT, difficult=[True, False])], ignore_border_fp=True)
    assert len(both.scores) == len(sd.scores) - 1 and both.n_gt == 1


def test_a_matched_border_detection_is_kept_right(detector):
    # annotate the nucleus cut by the left edge (x 0-12 in view): its detection is right
    gt = [*GT, [-0.5, 189.5, 12.5, 210.5]]
    sd = collect(detector, [_sample(gt)], ignore_border_fp=True)
    assert sd.n_gt == 3 and int(sd.correct.sum()) == 3


def test_collect_matches_at_the_iou_it_is_given(detector):
    # the first annotation 4 px off its disc: IoU ~0.6, right at 0.5, wrong at 0.7
    gt = [[69.5 + 4, 69.5, 90.5 + 4, 90.5], GT[1]]
    assert int(collect(detector, [_sample(gt)]).correct.sum()) == 2
    assert int(collect(detector, [_sample(gt)], iou=0.7).correct.sum()) == 1


def test_collect_raw_on_a_card_without_calibration(detector):
    keep = detector.card.decoding
    detector.card.decoding = {k: v for k, v in keep.items() if k != "calibration"}
    try:
        sd = collect(detector, [_sample(GT)], raw=True)
        assert int(sd.correct.sum()) == 2
    finally:
        detector.card.decoding = keep


def test_the_calibration_command_fits_writes_and_says_so(tmp_path, capsys):
    from inscope.detector.calibration import main

    model = tmp_path / "m.onnx"
    shutil.copy(DEFAULT_MODEL, model)
    shutil.copy(ModelCard.path_for(DEFAULT_MODEL), ModelCard.path_for(model))
    assert main([str(model), "--frames", "2", "--seed", "950001"]) == 0
    out = capsys.readouterr().out
    card = ModelCard.load(ModelCard.path_for(model))
    cal, fit = card.decoding["calibration"], card.metrics["calibration_fit"]
    assert out.startswith(f"m.onnx: calibration {cal}, threshold "
                          f"{card.decoding['score_threshold']} (best F1 {fit['best_f1']}), ECE "
                          f"{fit['ece_raw']} -> {fit['ece_calibrated']} on the fitting frames; "
                          f"median centre error {fit['centre_error_px']} px, centre shift ")
    assert fit["frames"] == "2 simulated 512x512 frames, seed 950001"
    shift = card.decoding.get("centre_shift_px")
    assert out.rstrip().endswith(str(shift) if shift else "none (under 0.1 px)")


def test_f1_when_precision_and_recall_are_both_low():
    sd = ScoredDetections(np.array([0.9, 0.8, 0.7, 0.6]),
                          np.array([True, False, False, False]), n_gt=4)
    assert best_f1_threshold(sd, grid=[0.55]) == (0.55, pytest.approx(0.25))


def test_ece_has_ten_bins_by_default():
    # 0.905 and 0.95 share the top tenth; in elevenths they would not
    assert expected_calibration_error(np.array([0.905, 0.95]), np.array([1, 0])) == (
        pytest.approx(abs(0.5 - 0.9275)))
