"""Detection metrics against values computed by hand on tiny cases (2-5 boxes).

``inscope.detector.metrics`` is the yardstick of every detector: a slip in IoU, matching
or AP reports a wrong accuracy for every model. Each expected number below is worked
out in the comment next to it, never by calling the module a second way. Mutation
testing: ``python -m benchmarks.mutation --module metrics``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from inscope.detector.metrics import (
    COCO_IOUS,
    average_precision,
    evaluate,
    iou_matrix,
    match,
    pr_curve,
    touches_border,
)

BOX = np.array([[0, 0, 10, 10]], np.float64)  # 10 x 10, area 100
COCO_KEYS = {f"{t:.2f}" for t in COCO_IOUS}


# --------------------------------------------------------------------------- IoU


def test_iou_touching_contained_disjoint_and_partial():
    """IoU of known overlaps: touching and separated boxes score exactly 0.

    Touching edges have zero overlap width; separated boxes a negative one, which must
    be clipped to 0 before it multiplies the other side's (positive) overlap.
    """
    b = np.array([
        [10, 0, 20, 10],   # touches the right edge, full overlap in y -> 0
        [0, 10, 10, 20],   # touches the bottom edge, full overlap in x -> 0
        [20, 0, 30, 10],   # 10 px gap in x, full overlap in y -> 0 (not -100/300)
        [0, 20, 10, 30],   # 10 px gap in y, full overlap in x -> 0
        [2, 2, 4, 4],      # contained: 4 / 100
        [5, 0, 15, 10],    # half overlap: 50 / (100 + 100 - 50) = 1/3
        [0, 0, 10, 10],    # identical -> 1
    ], np.float64)
    m = iou_matrix(BOX, b)
    assert m.shape == (1, 7)
    assert m.dtype == np.float64
    assert m[0].tolist() == pytest.approx([0, 0, 0, 0, 0.04, 1 / 3, 1.0])
    # symmetric
    assert iou_matrix(b, BOX)[:, 0].tolist() == pytest.approx(m[0].tolist())


def test_iou_zero_area_and_sub_pixel_boxes():
    """Degenerate boxes give IoU 0 without warnings; sub-pixel boxes keep their ratio.

    Two zero-area boxes have union 0: the guarded division must return 0 (not 1, not
    NaN) and stay silent. Boxes smaller than a pixel (union < 1) are still divided by
    their true union.
    """
    pts = np.array([[5, 5, 5, 5], [0, 0, 0, 0]], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 RuntimeWarning would fail here
        m = iou_matrix(pts, pts)
    assert m.dtype == np.float64
    assert m.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    tiny = np.array([[0, 0, 0.5, 0.5]])                       # area 0.25
    half = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.25]])    # 0.25, 0.125
    # identical -> 0.25/0.25 = 1 ; contained half -> 0.125/0.25 = 0.5
    assert iou_matrix(tiny, half)[0].tolist() == pytest.approx([1.0, 0.5])


def test_iou_integer_boxes_do_not_overflow():
    """uint16 pixel boxes (a compact annotation dtype) give the float IoU.

    300 x 300 = 90000 overflows uint16 and 150 - 400 wraps around: the inputs must be
    converted to float before any arithmetic.
    """
    a = np.array([[0, 0, 300, 300]], np.uint16)
    b = np.array([[0, 0, 300, 300], [150, 0, 450, 300], [400, 0, 500, 300]], np.uint16)
    # identical -> 1 ; half overlap 45000 / (90000 + 90000 - 45000) = 1/3 ; apart -> 0
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert iou_matrix(b, a)[:, 0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_iou_empty_sets():
    """No boxes on either side gives an empty (N, M) matrix, not an error."""
    assert iou_matrix(np.zeros((0, 4)), BOX).shape == (0, 1)
    assert iou_matrix(BOX, np.zeros((0, 4))).shape == (1, 0)
    assert iou_matrix([], []).shape == (0, 0)


# ---------------------------------------------------------------------- matching


def test_match_is_greedy_by_score_not_by_iou():
    """The higher score takes the box even if a lower-scored prediction fits better.

    VOC / COCO rank by confidence; matching by IoU would flatter a badly calibrated
    detector. Also checks the default IoU threshold (0.5): IoU 0.8 matches.
    """
    loose = [0, 0, 10, 8]   # IoU 80 / 100 = 0.8
    exact = [0, 0, 10, 10]  # IoU 1
    pred = np.array([loose, exact], np.float64)
    assert match(pred, np.array([0.9, 0.6]), BOX).tolist() == [0, -1]
    assert match(pred, np.array([0.6, 0.9]), BOX).tolist() == [-1, 0]
    # a single loose prediction matches at the default threshold, not at 0.85
    assert match(pred[:1], np.array([0.9]), BOX).tolist() == [0]
    assert match(pred[:1], np.array([0.9]), BOX, 0.85).tolist() == [-1]


def test_match_takes_the_best_free_box_then_the_next():
    """Each prediction takes the free box it overlaps most; a taken box is skipped.

    gt A = [0,0,10,10], B = [0,5,10,15].
    p0 (0.9) = [0,2,10,12]: IoU A 80/120 = 2/3, B 70/130 = 0.538 -> A (the better).
    p1 (0.8) = A: IoU A 1 (taken), B 50/150 = 1/3 -> nothing at 0.5, B at 0.3.
    p2 (0.7) = [0,4,10,14]: IoU A 60/140 = 0.43, B 90/110 = 0.82 -> B if still free.
    """
    gt = np.array([[0, 0, 10, 10], [0, 5, 10, 15]], np.float64)
    pred = np.array([[0, 2, 10, 12], [0, 0, 10, 10], [0, 4, 10, 14]], np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    assert match(pred, scores, gt, 0.5).tolist() == [0, -1, 1]
    # at 0.3 p1 settles for B, so p2 finds both taken
    assert match(pred, scores, gt, 0.3).tolist() == [0, 1, -1]


def test_match_threshold_is_inclusive():
    """An IoU exactly at the threshold matches (VOC/COCO use >=).

    [0,0,10,10] in [0,0,10,20]: 100 / 200 = 0.5 exactly.
    """
    gt = np.array([[0, 0, 10, 20]], np.float64)
    assert match(BOX, np.array([0.5]), gt, 0.5).tolist() == [0]
    assert match(BOX, np.array([0.5]), gt, 0.51).tolist() == [-1]


def test_match_ties_keep_the_input_order():
    """Equal scores are ranked in input order (stable sort), so results are repeatable.

    Two copies of each box with equal scores: the first copy takes the box, the second
    is the duplicate, whatever the sort algorithm of the platform would do.
    """
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    pred = gt[[0, 0, 1, 1]]
    scores = np.array([0.5, 0.5, 0.9, 0.9])
    assert match(pred, scores, gt).tolist() == [0, -1, 1, -1]


def test_match_uses_a_given_iou_matrix():
    """A precomputed IoU matrix is used as given (evaluate passes its own).

    The boxes are disjoint, but the matrix says 0.7: the matrix wins. And identical
    boxes with a matrix of 0 do not match.
    """
    far = np.array([[100, 100, 110, 110]], np.float64)
    assert match(far, np.array([0.9]), BOX, 0.5, np.array([[0.7]])).tolist() == [0]
    assert match(BOX, np.array([0.9]), BOX, 0.5, np.array([[0.0]])).tolist() == [-1]


def test_match_with_no_ground_truth_or_no_predictions():
    """No ground truth: every prediction is unmatched (-1); no predictions: empty."""
    pred = np.array([[0, 0, 10, 10], [5, 5, 9, 9]], np.float64)
    out = match(pred, np.array([0.9, 0.8]), np.zeros((0, 4)))
    assert out.tolist() == [-1, -1] and out.dtype == np.int64
    assert match(np.zeros((0, 4)), np.zeros(0), BOX).tolist() == []


# -------------------------------------------------------------------- the border


def test_touches_border_at_exactly_the_margin():
    """A box within *margin* (inclusive) of any of the four edges touches the border.

    Image 100 high, 200 wide, margin 2: the limits are x0 <= 2, y0 <= 2, x1 >= 198,
    y1 >= 98; half a pixel inside them does not touch. Each box tests one edge only.
    """
    boxes = np.array([
        [2, 50, 20, 60], [2.5, 50, 20, 60],          # left
        [50, 2, 60, 20], [50, 2.5, 60, 20],          # top
        [180, 50, 198, 60], [180, 50, 197.5, 60],    # right
        [50, 80, 60, 98], [50, 80, 60, 97.5],        # bottom
    ], np.float64)
    want = [True, False] * 4
    assert touches_border(boxes, (100, 200)).tolist() == want
    # an image's shape (H, W, channels) works too
    assert touches_border(boxes, (100, 200, 3)).tolist() == want
    # a wider margin takes in the half-pixel boxes
    assert touches_border(boxes, (100, 200), margin=2.5).tolist() == [True] * 8


# ------------------------------------------------------------------------ AP


def test_ap_all_point_on_a_known_curve():
    """VOC all-point AP of a hand-made ranking with a precision dip.

    Ranked TP, FP, FP, TP, TP over 4 objects (one never found):
    precision 1, 1/2, 1/3, 2/4, 3/5 at recall 1/4, 1/4, 1/4, 2/4, 3/4.
    Envelope: 1 up to recall 1/4, then max(1/2, 3/5) = 3/5 up to 3/4, 0 beyond.
    AP = 1/4 * 1 + 1/4 * 3/5 + 1/4 * 3/5 = 0.55.
    The flags come as 0/1 integers and the predictions unsorted.
    """
    tp = np.array([1, 0, 0, 1, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert average_precision(tp, scores, 4) == pytest.approx(0.55)
    perm = np.array([3, 0, 4, 2, 1])
    assert average_precision(tp[perm], scores[perm], 4) == pytest.approx(0.55)


def test_ap_edge_cases():
    """Leading FP, all FP, no predictions and no objects each have a fixed AP.

    FP then TP over one object: precision 1/2 at recall 1 -> AP 0.5. All FP: 0.
    Nothing predicted: 0. Nothing to find: NaN (undefined, not 0 or 1).
    """
    assert average_precision(np.array([False, True]), np.array([0.9, 0.8]), 1) == 0.5
    assert average_precision(np.array([False, False]), np.array([0.9, 0.8]), 2) == 0.0
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0
    assert np.isnan(average_precision(np.array([True]), np.array([0.9]), 0))
    # all found, in order -> 1
    assert average_precision(np.ones(3, bool), np.array([0.3, 0.2, 0.1]), 3) == 1.0


def test_ap_ties_keep_the_input_order():
    """Tied scores are ranked in input order, so AP is the same on every machine.

    tp F, T, T, T with scores .5, .5, .9, .9 over 3 objects ranks T, T, F, T:
    precision 1, 1, 2/3, 3/4 at recall 1/3, 2/3, 2/3, 1 -> AP 2/3 + 1/3 * 3/4 = 11/12.
    """
    tp = np.array([False, True, True, True])
    scores = np.array([0.5, 0.5, 0.9, 0.9])
    assert average_precision(tp, scores, 3) == pytest.approx(11 / 12)


def test_pr_curve_by_hand():
    """Recall, precision and thresholds along the ranking, sorted by descending score.

    tp T, F, T with scores .2, .9, .5 over 4 objects ranks F (.9), T (.5), T (.2):
    recall 0, 1/4, 2/4 ; precision 0, 1/2, 2/3.
    """
    tp = np.array([True, False, True])
    scores = np.array([0.2, 0.9, 0.5])
    rec, prec, thr = pr_curve(tp, scores, 4)
    assert rec.tolist() == pytest.approx([0, 0.25, 0.5])
    assert prec.tolist() == pytest.approx([0, 0.5, 2 / 3])
    assert thr.tolist() == [0.9, 0.5, 0.2]
    # one object: recall is the TP count
    assert pr_curve(tp, scores, 1)[0].tolist() == [0, 1, 2]
    # no objects: recall divides by 1, not by 0
    assert pr_curve(tp, scores, 0)[0].tolist() == [0, 1, 2]
    # ties in input order: T, T, F, T over 3 objects
    rec, prec, _ = pr_curve(np.array([False, True, True, True]),
                            np.array([0.5, 0.5, 0.9, 0.9]), 3)
    assert rec.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1])
    assert prec.tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4])


# ------------------------------------------------------------------- evaluate


def test_map_is_the_mean_over_ten_thresholds_with_inclusive_boundaries():
    """AP at each COCO threshold and their mean, with IoUs exactly on thresholds.

    A = [0,0,10,10] predicted by [0,0,10,8] (IoU 0.8, score .9), B = [20,0,30,10] by
    [20,0,30,6] (IoU 0.6, score .8). t <= 0.60: both TP -> AP 1 (3 thresholds);
    0.65..0.80: only A -> precision 1 at recall 1/2, then an FP -> AP 1/2 (4);
    0.85..0.95: none -> 0 (3). mAP = (3 + 4/2) / 10 = 0.5.
    """
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float64)
    pred = np.array([[0, 0, 10, 8], [20, 0, 30, 6]], np.float64)
    r = evaluate([(pred, np.array([0.9, 0.8]))], [gt])
    want = {"0.50": 1, "0.55": 1, "0.60": 1, "0.65": 0.5, "0.70": 0.5, "0.75": 0.5,
            "0.80": 0.5, "0.85": 0, "0.90": 0, "0.95": 0}
    assert r.ap_at == pytest.approx(want)
    assert r.map50_95 == pytest.approx(0.5)
    assert r.ap50 == 1.0
    # the per-image AP is the one at IoU 0.5, not at another threshold
    assert r.per_image[0].ap50 == 1.0
    # at an operating IoU of 0.7 the loose box is an FP and B is missed
    r = evaluate([(pred, np.array([0.9, 0.8]))], [gt], iou_threshold=0.7)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    assert set(r.ap_at) == COCO_KEYS and r.ap50 == 1.0
    assert r.iou_threshold == 0.7


def test_an_extra_operating_iou_is_evaluated_too():
    """An operating IoU outside the COCO list gets its own AP; mAP stays on COCO's ten.

    IoU of [0,0,10,4] with [0,0,10,10] = 40/100 = 0.4: TP at 0.3, FP at 0.5.
    """
    pred = np.array([[0, 0, 10, 4]], np.float64)
    r = evaluate([(pred, np.array([0.9]))], [BOX], iou_threshold=0.3)
    assert set(r.ap_at) == COCO_KEYS | {"0.30"}
    assert r.ap_at["0.30"] == 1.0 and r.ap50 == 0.0 and r.map50_95 == 0.0
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)
    assert r.iou_threshold == 0.3


def test_operating_point_precision_recall_f1():
    """P, R and F1 at the operating point from counts, with every per-image field.

    Two objects, one TP and one FP: P = R = 1/2 (TP = FP = FN = 1), F1 = 1/2.
    One TP, no FP, two objects: P = 1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    """
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    pred = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], np.float64)
    r = evaluate([(pred, np.array([0.9, 0.8]))], [gt], names=["one"])
    assert (r.tp, r.fp, r.fn, r.ignored) == (1, 1, 1, 0)
    assert (r.precision, r.recall, r.f1) == pytest.approx((0.5, 0.5, 0.5))
    im = r.per_image[0]
    assert (im.name, im.n_gt, im.n_pred, im.tp, im.fp, im.fn, im.ignored) == \
        ("one", 2, 2, 1, 1, 1, 0)
    assert (im.precision, im.recall, im.f1) == pytest.approx((0.5, 0.5, 0.5))
    # TP ranked first, then the FP: precision 1 at recall 1/2 -> AP 1/2
    assert im.ap50 == pytest.approx(0.5)
    r = evaluate([(pred[:1], np.array([0.9]))], [gt])
    assert (r.precision, r.recall, r.f1) == pytest.approx((1.0, 0.5, 2 / 3))
    assert r.per_image[0].f1 == pytest.approx(2 / 3)


def test_score_threshold_is_inclusive_and_only_moves_the_counts():
    """A prediction scored exactly at the operating threshold is counted.

    TP at 0.5, FP at 0.3, threshold 0.5: TP 1, FP 0, n_pred 1. AP still uses both
    (TP ranked first -> 1).
    """
    pred = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    r = evaluate([(pred, np.array([0.5, 0.3]))], [BOX], score_threshold=0.5)
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)
    assert r.per_image[0].n_pred == 1
    assert r.ap50 == 1.0 and r.score_threshold == 0.5


def test_image_without_ground_truth():
    """An image with predictions but no objects: all FP, recall 0, AP undefined (NaN).

    Recall has no denominator (TP + FN = 0); the module reports 0, not 1 and not an
    error.
    """
    pred = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    r = evaluate([(pred, np.array([0.9, 0.8]))], [np.zeros((0, 4))])
    assert (r.tp, r.fp, r.fn, r.n_gt) == (0, 2, 0, 0)
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    assert np.isnan(r.ap50) and np.isnan(r.map50_95)
    assert np.isnan(r.per_image[0].ap50)
    assert r.per_image[0].recall == 0.0


def test_no_images_at_all():
    """An empty data set gives NaN AP, zero counts and an empty PR curve, not a crash."""
    r = evaluate([], [])
    assert r.n_images == 0 and r.n_gt == 0 and r.per_image == []
    assert (r.tp, r.fp, r.fn, r.ignored) == (0, 0, 0, 0)
    assert np.isnan(r.ap50) and np.isnan(r.map50_95)
    assert set(r.ap_at) == COCO_KEYS
    assert r.pr == {"recall": [], "precision": [], "score": []}


def test_pooled_pr_curve_and_to_dict():
    """The pooled PR curve at IoU 0.5 is in the result, and to_dict drops it by default.

    Two images, one object each: image 0 has an FP (.9) and a TP (.6); image 1 a TP
    (.8). Pooled ranking FP, TP, TP over 2 objects: recall 0, 1/2, 1; precision 0,
    1/2, 2/3 -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    """
    far = [100, 100, 110, 110]
    preds = [(np.array([far, [0, 0, 10, 10]], np.float64), np.array([0.9, 0.6])),
             (BOX.copy(), np.array([0.8]))]
    r = evaluate(preds, [BOX, BOX])
    assert r.pr["recall"] == pytest.approx([0, 0.5, 1])
    assert r.pr["precision"] == pytest.approx([0, 0.5, 2 / 3])
    assert r.pr["score"] == [0.9, 0.8, 0.6]
    assert set(r.pr) == {"recall", "precision", "score"}
    assert r.ap50 == pytest.approx(2 / 3)
    d = r.to_dict()
    assert "pr" not in d
    assert d["ap50"] == pytest.approx(2 / 3) and d["per_image"][1]["tp"] == 1
    assert r.to_dict(curves=True)["pr"] == r.pr
    assert "pr" in r.__dict__  # to_dict must not remove it from the result itself


def test_scores_as_a_column_and_as_uint8():
    """Scores shaped (N, 1) are flattened; uint8 confidences rank 0 last.

    A TP scored high and an FP scored low over one object give AP 1 and precision 1/2
    at threshold 0. A quantized detector's uint8 score 0 must not wrap to the top under
    negation (which would put the FP first and give AP 1/2).
    """
    pred = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    r = evaluate([(pred, np.array([[0.9], [0.1]]))], [BOX])
    assert r.ap50 == 1.0 and (r.tp, r.fp) == (1, 1)
    r = evaluate([(pred, np.array([200, 0], np.uint8))], [BOX])
    assert r.ap50 == 1.0 and (r.tp, r.fp) == (1, 1)


# --------------------------------------------------------------- border / difficult


def test_border_tp_on_the_first_object_is_kept():
    """With ignore_border_fp, a border box that *matches* is still a TP.

    Ground truth 0 touches the left border. Predictions: a border FP (.9, dropped), the
    TP on object 0 at the border (.8), the TP on object 1 (.7). Kept: TP, TP over two
    objects -> AP 1, TP 2, FP 0, ignored 1.
    """
    gt = np.array([[0, 10, 10, 20], [50, 50, 60, 60]], np.float64)
    pred = np.array([[0, 40, 8, 48], [0, 10, 10, 20], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.9, 0.8, 0.7])
    r = evaluate([(pred, scores)], [gt], ignore_border_fp=True, shapes=[(100, 100)])
    assert (r.tp, r.fp, r.fn, r.ignored) == (2, 0, 0, 1)
    assert r.ap50 == 1.0 and r.map50_95 == 1.0
    assert r.per_image[0].ignored == 1
    assert r.ignore_border_fp is True
    # without the option the border FP ranks first: precision 1/2, 2/3 -> AP 2/3
    r = evaluate([(pred, scores)], [gt])
    assert (r.tp, r.fp, r.ignored) == (2, 1, 0) and r.ap50 == pytest.approx(2 / 3)
    assert r.ignore_border_fp is False


def test_border_margin_default_and_custom():
    """The border margin defaults to 2 px (inclusive) and a custom one is honoured.

    An unmatched box starting at x0 = 2 is dropped, at x0 = 2.5 it is an FP; with
    border_margin = 5 a box starting at x0 = 4 is dropped too.
    """
    shape = [(100, 100)]
    for x0, margin, ignored in [(2.0, None, 1), (2.5, None, 0), (4.0, 5.0, 1),
                                (4.0, None, 0)]:
        pred = np.array([[x0, 40, 20, 50]], np.float64)
        kw = {} if margin is None else {"border_margin": margin}
        r = evaluate([(pred, np.array([0.9]))], [BOX + 60], ignore_border_fp=True,
                     shapes=shape, **kw)
        assert (r.ignored, r.fp) == (ignored, 1 - ignored), (x0, margin)


def test_border_option_needs_shapes():
    """ignore_border_fp without shapes is refused, naming the argument to pass."""
    with pytest.raises(ValueError, match=r"^ignore_border_fp needs the image shapes "
                                         r"\(shapes=\[\(H, W\), \.\.\.\]\)\.$"):
        evaluate([(BOX, np.array([0.9]))], [BOX], ignore_border_fp=True)


def test_difficult_counted_over_all_images_and_checked():
    """Difficult boxes are counted over every image; malformed flags are refused.

    Image 0: one ordinary and one difficult object, both predicted; image 1: one
    ordinary object, predicted. TP 2, ignored 1, n_gt 2, n_difficult 1. Flags given as
    an (M, 1) column or as 0/1 integers work the same.
    """
    gt0 = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
    preds = [(gt0.copy(), np.array([0.9, 0.8])), (BOX.copy(), np.array([0.7]))]
    r = evaluate(preds, [gt0, BOX], difficult=[np.array([[False], [True]]),
                                               np.array([False])])
    assert (r.tp, r.fp, r.fn, r.ignored) == (2, 0, 0, 1)
    assert (r.n_gt, r.n_difficult) == (2, 1)
    assert r.ap50 == 1.0
    # 0/1 integer flags (as parsed from VOC's <difficult>0</difficult>) mean the same
    r = evaluate(preds, [gt0, BOX], difficult=[np.array([0, 1]), np.array([0])])
    assert (r.tp, r.fp, r.fn, r.ignored, r.n_gt, r.n_difficult) == (2, 0, 0, 1, 2, 1)
    with pytest.raises(ValueError, match="one 'difficult' array per image: 1 for 2"):
        evaluate(preds, [gt0, BOX], difficult=[np.array([False, True])])


# ------------------------------------------------------------------- the summary


def test_summary_line():
    """The one-line summary, word for word, with and without the ignored counts."""
    r = evaluate([(BOX.copy(), np.array([0.9]))], [BOX])
    assert r.summary() == ("AP50 1.000  mAP50-95 1.000  P 1.000  R 1.000  F1 1.000  "
                           "TP 1  FP 0  FN 0  [1 images, 1 objects, score >= 0, IoU 0.5]")
    r = evaluate([(BOX.copy(), np.array([0.9]))], [BOX + 20], ignore_border_fp=True,
                 shapes=[(100, 100)])
    assert r.summary() == ("AP50 0.000  mAP50-95 0.000  P 0.000  R 0.000  F1 0.000  "
                           "TP 0  FP 0  FN 1  (predictions ignored: 1)  "
                           "[1 images, 1 objects, score >= 0, IoU 0.5]")
    r = evaluate([(BOX.copy(), np.array([0.9]))], [np.concatenate([BOX, BOX + 20])],
                 difficult=[np.array([False, True])], score_threshold=0.25)
    assert r.summary() == ("AP50 1.000  mAP50-95 1.000  P 1.000  R 1.000  F1 1.000  "
                           "TP 1  FP 0  FN 0  (predictions ignored: 0)  "
                           "[1 images, 1 objects + 1 difficult (ignored), "
                           "score >= 0.25, IoU 0.5]")


def test_a_prediction_an_ordinary_box_took_does_not_use_up_a_difficult_one():
    """p0 (0.9) overlaps the ordinary box A and the difficult box H and is matched to A;
    p1 (0.8) lies on H alone and must be dropped, not counted as a false positive. It
    was a false positive while p0 also 'took' H, and right only with the scores the other
    way round: the outcome depended on score order."""
    gt = np.array([[0, 0, 10, 10], [0, 5, 10, 15]], float)
    preds = np.array([[0, 2, 10, 12], [0, 6, 10, 16]], float)
    for scores in ([0.9, 0.8], [0.8, 0.9]):
        r = evaluate([(preds, np.array(scores))], [gt], difficult=[np.array([False, True])])
        assert (r.tp, r.fp, r.fn, r.ignored) == (1, 0, 0, 1)
        assert r.precision == 1.0 and r.ap50 == 1.0


def test_every_prediction_on_a_difficult_box_is_dropped_not_only_the_first():
    """Two boxes on one difficult object are both excused (VOC devkit, COCO crowd): the
    second is not a duplicate false positive, and AP50 stays 1."""
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    preds = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [50, 50, 60, 61]], float)
    r = evaluate([(preds, np.array([0.7, 0.9, 0.8]))], [gt],
                 difficult=[np.array([False, True])])
    assert (r.tp, r.fp, r.fn, r.ignored) == (1, 0, 0, 2)
    assert r.ap50 == 1.0
    # an unmatched prediction off the difficult box still counts against the model
    far = np.array([[0, 0, 10, 10], [80, 80, 90, 90]], float)
    r = evaluate([(far, np.array([0.7, 0.9]))], [gt], difficult=[np.array([False, True])])
    assert (r.tp, r.fp, r.ignored) == (1, 1, 0)


def test_a_prediction_overlapping_a_difficult_box_by_exactly_the_threshold_is_dropped():
    """IoU 0.5 exactly with a difficult box (a box twice its height) counts as on it,
    the same inclusive rule as matching an ordinary box."""
    gt = np.array([[0, 0, 10, 10]], float)
    r = evaluate([(np.array([[0, 0, 10, 20]], float), np.array([0.9]))], [gt],
                 difficult=[np.array([True])])
    assert (r.tp, r.fp, r.ignored) == (0, 0, 1)
