"""The last step of every detector: boxes clipped to the frame's pixel extent.

Pixel centres are at integer coordinates everywhere (frames, training boxes, the
simulator's truth, the control code), so a W x H frame spans [-0.5, W - 0.5] x
[-0.5, H - 0.5]. Real numpy on known boxes, and the shipped ONNX model on a nucleus cut
by the frame's edge."""

from __future__ import annotations

import cv2
import numpy as np

from inscope.detector.base import begin_detect


def test_boxes_are_clipped_to_the_frames_pixel_extent_and_empty_ones_dropped():
    call = begin_detect(np.zeros((40, 60), np.uint16))
    boxes = np.array([[-3.0, -2.0, 10.0, 12.0],     # over the top-left corner
                      [50.0, 30.0, 64.0, 45.0],     # over the bottom-right corner
                      [-9.0, 5.0, -0.5, 9.0],       # wholly left of the frame: dropped
                      [10.0, 41.0, 20.0, 50.0],     # wholly below: dropped
                      [5.0, 5.0, 15.0, 15.0]])      # inside: unchanged
    det = call.finish(boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.zeros(5, np.int32),
                      ("nucleus",))
    np.testing.assert_array_equal(det.boxes, [[-0.5, -0.5, 10, 12], [50, 30, 59.5, 39.5],
                                              [5, 5, 15, 15]])
    np.testing.assert_allclose(det.scores, [0.9, 0.8, 0.5], rtol=1e-6)
    assert det.stamps["detect_end"] >= det.stamps["detect_start"]


def test_a_nucleus_cut_by_the_edge_keeps_its_border_pixel():
    from inscope.detector.onnx_detector import load_detector

    img = np.full((128, 128), 200.0, np.float32)
    cv2.circle(img, (2, 64), 9, 3000.0, -1)    # cut by the left edge
    cv2.circle(img, (125, 30), 9, 3000.0, -1)  # cut by the right edge
    cv2.circle(img, (64, 64), 9, 3000.0, -1)   # whole
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + np.random.default_rng(0).normal(0, 20, img.shape)
    det = load_detector(None, provider="cpu", threads=1).detect(img.astype(np.uint16))
    assert len(det) == 3
    left = det.boxes[np.argmin(det.boxes[:, 0])]
    right = det.boxes[np.argmax(det.boxes[:, 2])]
    # the box reaches into the border pixel (clipping at 0 / 128 cut it off, or let it
    # run half a pixel past the frame) and never past the frame's extent
    assert -0.5 <= left[0] < 0.0
    assert 127.0 < right[2] <= 127.5
