"""Ultralytics YOLOv8 / YOLO11 exports: signature recognition, letterbox, class-wise NMS."""

from __future__ import annotations

import numpy as np
import pytest
from _support.onnx_models import build_ultralytics

from inscope.detector.decode import decode_ultralytics, nms
from inscope.detector.metrics import iou_matrix
from inscope.detector.onnx_detector import OnnxDetector

H, W = 320, 480  # frame; letterboxed into 640x640: r = 4/3, 427 rows, top pad 106
R = min(640 / H, 640 / W)
NH, NW = round(H * R), round(W * R)
TOP = (640 - NH) // 2

# frame boxes, class, score
ROWS = [
    ([100, 50, 140, 90], 0, 0.90),   # A
    ([102, 52, 142, 92], 0, 0.80),   # duplicate of A, same class: suppressed
    ([100, 50, 140, 90], 1, 0.70),   # A's place, other class: kept (class-wise NMS)
    ([300, 200, 360, 260], 1, 0.60),  # C
    ([10, 10, 30, 30], 0, 0.10),     # below the 0.25 threshold
]


def yolo_tensor(n_anchors: int = 12) -> np.ndarray:
    pred = np.zeros((4 + 2, n_anchors), np.float32)
    pred[2:4] = 5.0
    for j, (b, c, s) in enumerate(ROWS):
        # frame boxes put pixel centres at integers; YOLO's continuous coordinates count
        # pixel k as [k, k + 1), and the resize scales them by NW / W and NH / H
        x0, y0, x1, y1 = ((np.asarray(b, float) + 0.5) * [NW / W, NH / H, NW / W, NH / H]
                          + [0, TOP, 0, TOP])
        pred[:4, j] = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        pred[4 + c, j] = s
    return pred


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    p = build_ultralytics(tmp_path_factory.mktemp("y") / "yolo11n.onnx", yolo_tensor(),
                          {0: "nucleus", 1: "mitosis"})
    return OnnxDetector(p, provider="cpu")


def test_recognised_without_card(yolo):
    assert yolo.format == "ultralytics"
    assert yolo.class_names == ("nucleus", "mitosis")
    assert yolo._fixed_hw == (640, 640)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_letterbox_mapping_and_classwise_nms(yolo, dtype):
    img = np.random.default_rng(0).integers(0, 200, (H, W)).astype(dtype)
    d = yolo.detect(img)
    want = np.array([ROWS[0][0], ROWS[2][0], ROWS[3][0]], np.float32)
    assert len(d) == 3
    np.testing.assert_allclose(d.boxes, want, atol=1e-3)
    assert np.allclose(d.scores, [0.9, 0.7, 0.6])
    assert d.names() == ["nucleus", "mitosis", "mitosis"]


def test_transposed_output_and_no_names(tmp_path):
    p = build_ultralytics(tmp_path / "t.onnx", yolo_tensor().T.copy(), {0: "a", 1: "b"})
    d = OnnxDetector(p, provider="cpu").detect(np.zeros((H, W), np.uint8))
    assert len(d) == 3
    p2 = build_ultralytics(tmp_path / "n.onnx", yolo_tensor())
    det = OnnxDetector(p2, provider="cpu")
    assert det.class_names == ("class0", "class1")


def test_score_threshold_override(yolo, tmp_path):
    p = yolo.model_path
    low = OnnxDetector(p, provider="cpu", score_threshold=0.05)
    assert len(low.detect(np.zeros((H, W), np.uint8))) == 4


def test_nms_matches_a_plain_reference():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    keep = nms(boxes, scores, 0.5)
    # reference: plain greedy NMS written out
    order = np.argsort(-scores)
    ref: list[int] = []
    for i in order:
        if all(iou_matrix(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= 0.5 for j in ref):
            ref.append(int(i))
    assert keep.tolist() == ref


def test_decode_rejects_a_classless_output():
    with pytest.raises(ValueError, match="no class columns"):
        decode_ultralytics(np.zeros((4, 100), np.float32))
