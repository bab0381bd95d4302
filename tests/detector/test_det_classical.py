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


# -- the parts, against references computed here -----------------------------------------
def _blocks(shape=(96, 128), blocks=(), bg=100, noise=0.0, seed=0):
    """A flat background with solid rectangles ``(y0, y1, x0, x1, level)``."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, float(bg)) + rng.normal(0.0, noise, shape)
    for y0, y1, x0, x1, level in blocks:
        img[y0:y1, x0:x1] = level
    return np.clip(img, 0, 65535).astype(np.uint16)


def test_scores_are_box_means_of_the_blurred_8_bit_image():
    """Score = mean of the normalised, 8-bit, blurred image inside the box / 255,
    computed here with numpy over the box's pixels (the detector uses an integral
    image)."""
    import cv2

    from inscope.detector import preprocess as pp

    img = _blocks(blocks=[(10, 30, 10, 40, 3000), (50, 80, 60, 75, 1500),
                          (20, 26, 90, 120, 2200)], noise=20.0)
    det = ClassicalDetector(blur_sigma=1.0)
    d = det.detect(img)
    assert len(d) == 3
    x = pp.normalise(img, {"method": "percentile", "low": 1.0, "high": 99.8,
                           "subsample": 4, "clip": True})
    blur = cv2.GaussianBlur(cv2.convertScaleAbs(x, alpha=255.0), (0, 0), 1.0)
    for box, score in zip(d.boxes, d.scores, strict=True):
        x0, y0, x1, y1 = (int(round(v + 0.5)) for v in box)  # back to whole pixels
        want = blur[y0:y1, x0:x1].astype(np.float64).mean() / 255.0
        assert score == pytest.approx(want, abs=1e-5)
    assert list(d.scores) == sorted(d.scores, reverse=True)
    assert 0.0 <= d.scores.min() and d.scores.max() <= 1.0
    # a score floor keeps the boxes at or above it, and is kept as given
    floor = float(d.scores[1])
    kept = ClassicalDetector(blur_sigma=1.0, score_threshold=floor).detect(img)
    assert len(kept) == 2 and kept.scores.min() == pytest.approx(floor)


def test_component_areas_decide_what_is_kept():
    """A 3x3 speck (9 pixels, the default smallest) is kept, a 2x2 one is not; a
    component over a quarter of the frame is background, not a cell; min_area and
    max_area override."""
    img = _blocks(blocks=[(10, 13, 10, 13, 3000), (10, 12, 40, 42, 3000),
                          (40, 60, 40, 60, 3000)])
    sharp = {"blur_sigma": 0.3}
    boxes = ClassicalDetector(**sharp).detect(img).boxes
    sizes = sorted(int(round(b[2] - b[0])) for b in boxes)
    assert sizes == [3, 20]
    assert len(ClassicalDetector(min_area=30, **sharp).detect(img)) == 1
    assert len(ClassicalDetector(max_area=100, **sharp).detect(img)) == 1
    big = _blocks(shape=(64, 64), blocks=[(0, 40, 0, 40, 3000)])  # 1600 px > 4096 / 4
    assert len(ClassicalDetector(**sharp).detect(big)) == 0
    assert len(ClassicalDetector(max_area=2000, **sharp).detect(big)) == 1


def test_an_expected_object_size_sets_the_area_window():
    """With object_size_px (or object_size_um and the frame's pixel size) components
    from 0.1x to 10x the disc of that diameter are kept."""
    img = _blocks(blocks=[(10, 15, 10, 15, 3000), (40, 60, 40, 60, 3000)])  # 25 and 400 px
    sharp = {"blur_sigma": 0.3}
    # a 20 px nucleus: disc 314 px, kept from 31 to 3142: the 5x5 speck goes
    assert len(ClassicalDetector(object_size_px=20, **sharp).detect(img)) == 1
    # a 6 px nucleus: disc 28 px, kept up to 283: the 20x20 block goes
    assert len(ClassicalDetector(object_size_px=6, **sharp).detect(img)) == 1
    # the same in µm, through the frame's pixel size
    det = ClassicalDetector(object_size_um=10.0, **sharp)

    def side(d):
        (box,) = d.boxes
        return int(round(box[2] - box[0]))

    assert side(det.detect(Frame(img, index=0, pixel_size_um=0.5))) == 20  # 20 px cells
    assert side(det.detect(Frame(img, index=0, pixel_size_um=2.0))) == 5  # 5 px cells


def test_sigma_threshold_follows_k():
    img = _blocks(blocks=[(20, 40, 20, 40, 400)], noise=30.0, seed=2)
    assert len(ClassicalDetector(threshold="sigma").detect(img)) >= 1  # default k = 3
    assert ClassicalDetector().k == 3.0
    assert len(ClassicalDetector(threshold="sigma", k=1000.0).detect(img)) == 0


def test_timing_parts_add_up_in_milliseconds():
    det = ClassicalDetector()
    assert det.provider == "opencv" and det.last_timing == {}
    det.detect(_blocks(blocks=[(10, 30, 10, 30, 3000)]))
    t = det.last_timing
    assert set(t) == {"pre_ms", "run_ms", "post_ms", "total_ms"} and t["post_ms"] == 0.0
    assert 0.0 <= t["pre_ms"] < 1000 and 0.0 <= t["run_ms"] < 1000
    assert t["total_ms"] == pytest.approx(t["pre_ms"] + t["run_ms"], abs=1e-6)


def _noise_field(n_nuclei: int, seed: int = 5, side: int = 512) -> tuple[np.ndarray, list]:
    """A camera field of noise (200 +- 30 counts) with *n_nuclei* bright blurred discs."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    img = np.zeros((side, side))
    centres = [tuple(c) for c in rng.uniform(40, side - 40, (n_nuclei, 2))]
    for cx, cy in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 2800
    img = cv2.GaussianBlur(img, (0, 0), 1.5) + rng.normal(200, 30, (side, side))
    return np.clip(img, 0, 65535).astype(np.uint16), centres


@pytest.mark.parametrize("n", [0, 1, 2])
def test_a_field_of_noise_or_of_a_lone_nucleus_gives_no_noise_boxes(n):
    # Otsu's two classes in such a field are the noise's own halves: before the noise
    # floor and the box check, 300 boxes of noise with none, 428 with one nucleus
    img, centres = _noise_field(n)
    d = ClassicalDetector().detect(img)
    assert len(d) == n
    for cx, cy in centres:
        assert np.min(np.hypot(d.centers[:, 0] - cx, d.centers[:, 1] - cy)) < 1.5
    # the floor is an option: without it, the noise comes back
    if n < 2:
        assert len(ClassicalDetector(min_signal_sigma=None).detect(img)) > 50


def test_the_noise_floor_keeps_dense_fields_as_they_were():
    shape = (200, 260)
    centres = grid_centres(shape, spacing=44, jitter=5, seed=4)
    img = blob_scene(shape, centres, sigma=4.0)
    with_floor = ClassicalDetector(object_size_px=16).detect(img)
    without = ClassicalDetector(object_size_px=16, min_signal_sigma=None).detect(img)
    np.testing.assert_array_equal(with_floor.boxes, without.boxes)
