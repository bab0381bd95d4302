"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.detector.metrics import (
    average_precision,
    evaluate,
    iou_matrix,
    match,
    touches_border,
)

GT = np.array([[10, 10, 20, 20], [30, 30, 50, 50], [60, 10, 70, 30]], np.float32)


def test_iou_matrix_hand_values():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 0, 0]], np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0, 0] == 1.0 and m[0, 1] == 0.0 and m[0, 2] == 0.0
    assert m[1, 0] == pytest.approx(25 / 175)
    assert m[1, 1] == pytest.approx(25 / 175)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_perfect_predictions():
    r = evaluate([(GT, np.array([0.9, 0.8, 0.7]))], [GT])
    assert r.ap50 == 1.0 and r.map50_95 == 1.0
    assert (r.tp, r.fp, r.fn) == (3, 0, 0)
    assert r.precision == r.recall == r.f1 == 1.0


def test_no_predictions():
    r = evaluate([(np.zeros((0, 4)), np.zeros(0))], [GT])
    assert r.ap50 == 0.0 and (r.tp, r.fp, r.fn) == (0, 0, 3)
    assert r.precision == 0.0 and r.recall == 0.0 and r.f1 == 0.0


def test_one_false_positive_ranked_first_and_last():
    fp = np.array([[80, 80, 90, 90]], np.float32)
    boxes = np.concatenate([GT, fp])
    # FP scored lowest: PR curve reaches recall 1 at precision 1 -> AP 1
    r = evaluate([(boxes, np.array([0.9, 0.8, 0.7, 0.1]))], [GT])
    assert r.ap50 == pytest.approx(1.0)
    assert (r.tp, r.fp, r.fn) == (3, 1, 0)
    assert r.precision == pytest.approx(0.75) and r.f1 == pytest.approx(6 / 7)
    # FP scored highest: precisions 0, 1/2, 2/3, 3/4 at recalls 0, 1/3, 2/3, 1 ->
    # envelope 3/4 everywhere -> AP = 0.75
    r = evaluate([(boxes, np.array([0.5, 0.4, 0.3, 0.9]))], [GT])
    assert r.ap50 == pytest.approx(0.75)
    # operating threshold drops the FP from the counts, not from AP
    r = evaluate([(boxes, np.array([0.5, 0.4, 0.3, 0.2]))], [GT], score_threshold=0.25)
    assert (r.tp, r.fp) == (3, 0)


def test_duplicates_are_false_positives():
    boxes = np.concatenate([GT[:1], GT[:1] + 1, GT[1:]])
    scores = np.array([0.9, 0.95, 0.8, 0.7])
    assigned = match(boxes, scores, GT, 0.5)
    # the higher-scored duplicate takes the box; the other one is left unmatched
    assert assigned.tolist() == [-1, 0, 1, 2]
    r = evaluate([(boxes, scores)], [GT])
    assert (r.tp, r.fp, r.fn) == (3, 1, 0)


def test_ap_of_a_known_pr_curve():
    # ranked: TP, FP, TP, FP, FP, TP with 4 GT objects
    tp = np.array([1, 0, 1, 0, 0, 1], bool)
    scores = np.linspace(1, 0.5, 6)
    # precisions 1, .5, .667, .5, .4, .5 ; recalls .25,.25,.5,.5,.5,.75
    # envelope: r .25 -> 1, r .5 -> .667, r .75 -> .5 ; AP = .25*1 + .25*2/3 + .25*.5
    assert average_precision(tp, scores, 4) == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.125)
    assert np.isnan(average_precision(tp, scores, 0))


def test_map_over_iou_thresholds():
    # every prediction shifted so IoU with its GT is exactly 0.6
    gt = np.array([[0, 0, 10, 10]], np.float32)
    pred = np.array([[0, 0, 10, 7.5]], np.float32)  # IoU 75/100 = 0.75
    r = evaluate([(pred, [1.0])], [gt])
    # AP is 1 at thresholds 0.50..0.75 (6 of 10), 0 above
    assert r.map50_95 == pytest.approx(0.6)
    assert r.ap_at["0.75"] == 1.0 and r.ap_at["0.80"] == 0.0


def test_ignore_border_fp():
    gt = np.array([[40, 40, 60, 60]], np.float32)
    pred = np.array([[40, 40, 60, 60], [0, 30, 15, 45], [80, 80, 95, 95],
                     [185, 50, 200, 70]], np.float32)
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    shape = (100, 200)
    assert touches_border(pred, shape).tolist() == [False, True, False, True]
    r = evaluate([(pred, scores)], [gt])
    assert (r.tp, r.fp) == (1, 3) and r.ap50 == pytest.approx(0.25)
    r = evaluate([(pred, scores)], [gt], ignore_border_fp=True, shapes=[shape])
    # border FPs dropped; the interior FP (0.8) still ranks above the TP: AP 1/2
    assert (r.tp, r.fp, r.ignored) == (1, 1, 2) and r.ap50 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes"):
        evaluate([(pred, scores)], [gt], ignore_border_fp=True)


def test_difficult_objects_are_neither_demanded_nor_punished():
    # GT: two ordinary objects and one difficult (VOC <difficult>1</difficult>)
    gt = np.array([[10, 10, 20, 20], [30, 30, 50, 50], [60, 10, 70, 30]], np.float32)
    hard = np.array([False, False, True])
    # a prediction on the difficult box ranks first, then an FP, then one TP; GT[1] missed
    pred = np.array([[60, 10, 70, 30], [80, 80, 90, 90], [10, 10, 20, 20]], np.float32)
    scores = np.array([0.9, 0.8, 0.7])
    r = evaluate([(pred, scores)], [gt])
    # all counted: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    assert (r.tp, r.fp, r.fn, r.n_gt) == (2, 1, 1, 3)
    assert r.ap50 == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    r = evaluate([(pred, scores)], [gt], difficult=[hard])
    # difficult ignored: FP, TP over 2 objects -> precision 1/2 at recall 1/2
    assert (r.tp, r.fp, r.fn, r.ignored, r.n_gt, r.n_difficult) == (1, 1, 1, 1, 2, 1)
    assert r.ap50 == pytest.approx(0.25)
    assert "1 difficult" in r.summary()
    # an ordinary box still takes the prediction first when both overlap it
    both = np.array([[10, 10, 20, 20], [10, 10, 20, 21]], np.float32)
    r = evaluate([(both[:1], np.array([0.9]))], [both], difficult=[np.array([True, False])])
    assert (r.tp, r.fp, r.ignored) == (1, 0, 0)
    with pytest.raises(ValueError, match="difficult"):
        evaluate([(pred, scores)], [gt], difficult=[hard[:2]])


def test_pooled_over_images_and_per_image():
    preds = [(GT, [0.9, 0.8, 0.7]), (np.zeros((0, 4)), [])]
    r = evaluate(preds, [GT, GT[:2]], names=["a", "b"])
    assert r.n_images == 2 and r.n_gt == 5
    assert (r.tp, r.fn) == (3, 2)
    assert r.per_image[0].ap50 == 1.0 and r.per_image[1].ap50 == 0.0
    assert r.per_image[1].name == "b"
    assert r.ap50 == pytest.approx(0.6)
    assert "AP50 0.600" in r.summary()
    with pytest.raises(ValueError, match="one prediction set per image"):
        evaluate(preds, [GT])
