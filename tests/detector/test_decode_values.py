"""Decoders checked with hand-made model outputs whose right answer is known exactly.

Mutation testing: ``python -m benchmarks.mutation --module decode``.
"""

from __future__ import annotations

import numpy as np
import pytest

from inscope.detector.decode import decode_centernet, decode_ultralytics, find_peaks, nms


def _yolo(rows, nc: int = 1) -> np.ndarray:
    """(4 + nc, N) output from rows of (cx, cy, w, h, score of class 0..nc-1)."""
    out = np.zeros((4 + nc, 50), np.float32)  # unused anchors score 0
    for i, r in enumerate(rows):
        out[:len(r), i] = r
    return out


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


# Two 20x20 boxes shifted by 5 px: IoU = 300 / 500 = 0.6
PAIR = [(100, 100, 20, 20, 0.9), (105, 100, 20, 20, 0.8)]


def test_ultralytics_nms_runs_at_the_iou_threshold_not_the_score_threshold():
    assert _iou([90, 90, 110, 110], [95, 90, 115, 110]) == pytest.approx(0.6)
    b, s, _ = decode_ultralytics(_yolo(PAIR), {"iou_threshold": 0.45,
                                               "score_threshold": 0.25})
    assert s.tolist() == pytest.approx([0.9])  # IoU 0.6 > 0.45: the weaker box goes
    b, s, _ = decode_ultralytics(_yolo(PAIR), {"iou_threshold": 0.7,
                                               "score_threshold": 0.25})
    assert s.tolist() == pytest.approx([0.9, 0.8])  # IoU 0.6 < 0.7: both stay
    # boxes shifted by 12 px: IoU 0.25 < the default 0.45, both stay
    far = [(100, 100, 20, 20, 0.9), (112, 100, 20, 20, 0.8)]
    b, s, _ = decode_ultralytics(_yolo(far), {"score_threshold": 0.2})
    assert len(b) == 2


def test_ultralytics_boxes_scores_classes_in_input_pixels():
    rows = [(50, 40, 10, 20, 0.1, 0.7), (200, 120, 30, 8, 0.95, 0.2)]
    b, s, c = decode_ultralytics(_yolo(rows, nc=2))
    # sorted by score; corners from centre and size; the best class and its score
    np.testing.assert_allclose(b, [[185, 116, 215, 124], [45, 30, 55, 50]])
    np.testing.assert_allclose(s, [0.95, 0.7])
    assert c.tolist() == [0, 1]
    assert (b.dtype, s.dtype, c.dtype) == (np.float32, np.float32, np.int32)
    # the same output as (N, 4 + nc): the longer axis is the anchors
    b2, s2, c2 = decode_ultralytics(_yolo(rows, nc=2).T)
    np.testing.assert_array_equal(b2, b)
    np.testing.assert_array_equal(c2, c)


def test_ultralytics_overlapping_boxes_of_different_classes_both_stay():
    rows = [(100, 100, 20, 20, 0.9, 0.0), (101, 100, 20, 20, 0.0, 0.8)]
    b, s, c = decode_ultralytics(_yolo(rows, nc=2))
    assert c.tolist() == [0, 1] and len(b) == 2


def test_ultralytics_score_threshold_is_inclusive_and_overridable():
    rows = [(10, 10, 4, 4, 0.25), (40, 10, 4, 4, 0.2499), (80, 10, 4, 4, 0.6)]
    _, s, _ = decode_ultralytics(_yolo(rows))  # default threshold 0.25
    np.testing.assert_allclose(s, [0.6, 0.25])
    _, s, _ = decode_ultralytics(_yolo(rows), {"score_threshold": 0.1}, score_threshold=0.5)
    np.testing.assert_allclose(s, [0.6])  # the argument wins over the card
    _, s, _ = decode_ultralytics(_yolo(rows), {"score_threshold": 0.1})
    assert len(s) == 3
    b, s, c = decode_ultralytics(_yolo(rows), score_threshold=0.9)
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,)
    assert (b.dtype, s.dtype, c.dtype) == (np.float32, np.float32, np.int32)


def test_ultralytics_max_detections():
    rows = [(10 + 30 * i, 10, 4, 4, 0.5 + 0.01 * i) for i in range(10)]
    _, s, _ = decode_ultralytics(_yolo(rows), {"max_detections": 3})
    np.testing.assert_allclose(s, [0.59, 0.58, 0.57])


def test_ultralytics_bad_shapes():
    with pytest.raises(ValueError, match=r"must be 2-D after the batch axis; got \(1, 5, 50\)"):
        decode_ultralytics(np.zeros((1, 5, 50), np.float32))
    with pytest.raises(ValueError, match="no class columns"):
        decode_ultralytics(np.zeros((4, 100), np.float32))


def test_nms_keeps_by_score_and_is_class_wise():
    boxes = np.array([[0, 0, 20, 20], [5, 0, 25, 20], [100, 100, 110, 110]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 2]
    assert nms(boxes, scores, 0.65).tolist() == [1, 2, 0]
    assert nms(boxes, scores, 0.45, np.array([0, 1, 0])).tolist() == [1, 2, 0]
    assert nms(boxes, scores, 0.45, np.array([2, 2, 2])).tolist() == [1, 2]
    # negative coordinates: the class offset must still separate classes
    neg = boxes - 500
    assert nms(neg, scores, 0.45, np.array([0, 1, 0])).tolist() == [1, 2, 0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_find_peaks_threshold_is_inclusive_and_kernel_sets_the_neighbourhood():
    h = np.zeros((1, 12, 12), np.float32)
    h[0, 5, 3], h[0, 5, 5] = 0.8, 0.6  # two apart
    h[0, 10, 10] = 0.3
    c, y, x, s = find_peaks(h, 0.3)  # 3x3: all three are peaks, 0.3 included
    assert list(zip(y.tolist(), x.tolist(), strict=True)) == [(5, 3), (5, 5), (10, 10)]
    _, y, x, _ = find_peaks(h, 0.3, kernel=5)  # 5x5: the 0.6 is within 2 of the 0.8
    assert list(zip(y.tolist(), x.tolist(), strict=True)) == [(5, 3), (10, 10)]
    _, y, x, _ = find_peaks(h, 0.3, kernel=4)  # even kernels round up to odd (5)
    assert len(y) == 2
    h[0, 5, 4] = 0.7  # kernel 1: every cell at or above the threshold
    _, y, x, _ = find_peaks(h, 0.3, kernel=1)
    assert len(y) == 4
    c, y, x, s = find_peaks(h, 0.95)
    assert len(c) == len(y) == len(x) == len(s) == 0
    assert (c.dtype, s.dtype) == (np.int32, np.float32)


def test_find_peaks_plateau_gives_its_first_cell_in_raster_order():
    h = np.zeros((1, 8, 8), np.float32)
    h[0, 3:6, 2:5] = 0.5
    _, y, x, _ = find_peaks(h, 0.3)
    assert (y.tolist(), x.tolist()) == ([3], [2])
    h = np.zeros((1, 8, 8), np.float32)
    h[0, 0, 0:3] = 0.5  # a plateau on the image edge
    _, y, x, _ = find_peaks(h, 0.3)
    assert (y.tolist(), x.tolist()) == ([0], [0])


def test_find_peaks_per_class_sorted_and_limited():
    h = np.zeros((2, 8, 8), np.float32)
    h[0, 1, 1], h[1, 1, 1], h[1, 6, 6] = 0.5, 0.9, 0.7
    c, y, x, s = find_peaks(h, 0.3)
    assert c.tolist() == [1, 1, 0] and np.allclose(s, [0.9, 0.7, 0.5])
    c, _, _, s = find_peaks(h, 0.3, max_detections=1)
    assert c.tolist() == [1] and np.allclose(s, [0.9])


def test_centernet_geometry_defaults_and_clipped_sizes():
    h = np.zeros((1, 8, 8), np.float32)
    h[0, 3, 5], h[0, 6, 1] = 0.9, 0.4
    size = np.zeros((2, 8, 8), np.float32)
    size[:, 3, 5] = (12, 6)
    size[:, 6, 1] = (-3, 4)  # a negative width from the network is a point, not a flip
    b, s, c = decode_centernet({"heatmap": h, "size": size})  # stride 4, threshold 0.3
    # no offset output: the centre of the cell's 4 x 4 pixels, (4 x + 1.5, 4 y + 1.5)
    np.testing.assert_allclose(b, [[15.5, 10.5, 27.5, 16.5], [5.5, 23.5, 5.5, 27.5]])
    np.testing.assert_allclose(s, [0.9, 0.4])
    assert (b.dtype, s.dtype, c.dtype) == (np.float32, np.float32, np.int32)
    b, s, _ = decode_centernet({"heatmap": h, "size": size}, {"score_threshold": 0.5})
    assert len(b) == 1
    b, _, _ = decode_centernet({"heatmap": h, "size": size}, {"stride": 2.0})
    np.testing.assert_allclose(b[0], [4.5, 3.5, 16.5, 9.5])  # centre (10.5, 6.5)
    b, _, _ = decode_centernet({"heatmap": h, "size": size}, {"max_detections": 1})
    assert len(b) == 1
    b, _, _ = decode_centernet({"heatmap": h, "size": size}, {"activation": "none"})
    assert len(b) == 2
    # an offset named in the card but missing from the outputs: cell centres
    b, _, _ = decode_centernet({"heatmap": h, "size": size}, {"offset": "off"})
    np.testing.assert_allclose(b[0], [15.5, 10.5, 27.5, 16.5])
    # a card's measured centre shift is taken off every box, sizes unchanged
    b, _, _ = decode_centernet({"heatmap": h, "size": size},
                               {"centre_shift_px": [0.5, -0.25]})
    np.testing.assert_allclose(b, [[15.0, 10.75, 27.0, 16.75], [5.0, 23.75, 5.0, 27.75]])


def test_centernet_logits_threshold_in_logit_space():
    logit = np.full((1, 6, 6), -9.0, np.float32)
    logit[0, 2, 2] = 0.0  # p = 0.5
    logit[0, 4, 4] = -0.5  # p = 0.378
    size = np.full((2, 6, 6), 2.0, np.float32)
    spec = {"activation": "sigmoid"}
    _, s, _ = decode_centernet({"heatmap": logit, "size": size}, spec, 0.4)
    np.testing.assert_allclose(s, [0.5])
    _, s, _ = decode_centernet({"heatmap": logit, "size": size}, spec, 0.3)
    np.testing.assert_allclose(s, [0.5, 1 / (1 + np.exp(0.5))], rtol=1e-6)
    _, s, _ = decode_centernet({"heatmap": logit, "size": size}, spec, 0.0)  # clamped to 1e-7:
    assert len(s) == 3  # the flat -9 background (p = 1.2e-4) gives its first cell
    _, s, _ = decode_centernet({"heatmap": logit, "size": size}, spec, 1.0)
    assert len(s) == 0
    with pytest.raises(ValueError, match="Unknown heatmap activation 'relu'"):
        decode_centernet({"heatmap": logit, "size": size}, {"activation": "relu"})
