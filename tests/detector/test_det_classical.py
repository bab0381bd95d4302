"""The classical baseline on generated scenes."""

from __future__ import annotations

import numpy as np
import pytest
from _support.onnx_models import blob_scene, grid_centres

from inscope.acquisition.frame import Frame
from inscope.detector import STAMP_DETECT_END, Detector
from inscope.detector.classical import ClassicalDetector
from inscope.detector.metrics import evaluate


def truth(centres, side):
    c = np.asarray(centres, np.float32)
    return np.concatenate([c - side / 2, c + side / 2], axis=1)


@pytest.mark.parametrize("threshold", ["otsu", "sigma"])
def test_finds_separate_blobs(threshold):
    shape = (200, 260)
    centres = grid_centres(shape, spacing=44, jitter=5, seed=4)
    img = blob_scene(shape, centres, sigma=4.0)
    det = ClassicalDetector(threshold=threshold, object_size_px=16)
    assert isinstance(det, Detector)
    d = det.detect(Frame(img, index=3))
    # one box per blob, centred on it (box sizes depend on the threshold rule)
    dist = np.linalg.norm(d.centers[:, None] - centres[None], axis=2)
    assert len(d) == len(centres)
    assert np.all(dist.min(axis=0) < 1.5) and np.all(dist.min(axis=1) < 1.5)
    if threshold == "otsu":  # Otsu cuts near half height: boxes about 3.5 sigma wide
        r = evaluate([(d.boxes, d.scores)], [truth(centres, 14)], iou_threshold=0.5)
        assert r.tp == len(centres) and r.fp == 0
    assert d.frame_index == 3 and STAMP_DETECT_END in d.stamps
    assert np.all(np.diff(d.scores) <= 0) and np.all((d.scores >= 0) & (d.scores <= 1))


def test_brighter_blobs_score_higher():
    shape = (96, 160)
    img = blob_scene(shape, [(40, 48)], amplitude=800, sigma=4)
    img = img + blob_scene(shape, [(120, 48)], amplitude=3000, sigma=4, background=0,
                           noise=0)
    # (Otsu would put its level between the two and keep only the bright one)
    d = ClassicalDetector(threshold="sigma", object_size_px=16).detect(img)
    assert len(d) == 2
    assert d.centers[0, 0] > 100  # the bright one first


def test_area_limits_drop_specks_and_empty_frames_give_nothing():
    shape = (128, 128)
    img = blob_scene(shape, [(64, 64)], sigma=4)
    img[10, 10] = 60000  # one hot pixel
    d = ClassicalDetector(object_size_px=16).detect(img)
    assert len(d) == 1
    flat = np.full(shape, 100, np.uint16)
    assert len(ClassicalDetector().detect(flat)) == 0


def test_bad_options_and_input():
    with pytest.raises(ValueError, match="otsu"):
        ClassicalDetector(threshold="magic")
    with pytest.raises(ValueError, match="2-D"):
        ClassicalDetector().detect(np.zeros((4, 64, 64), np.uint16))


def test_box_is_centred_on_the_objects_pixels():
    """A bright block on rows 20-35, columns 10-29: its box centre is the block's pixel
    centroid (19.5, 27.5), the convention of frames and truth (boundingRect's whole-pixel
    ``[x, x + w)`` would put it half a pixel right and down)."""
    img = np.full((64, 48), 100, np.uint16)
    img[20:36, 10:30] = 3000
    d = ClassicalDetector(threshold="otsu").detect(Frame(img, index=0))
    assert len(d) == 1
    np.testing.assert_allclose(d.centers[0], [19.5, 27.5], atol=1e-4)
