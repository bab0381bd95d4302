"""Automatic object scale: the estimate on drawn discs, the resize rule, and the shipped
model finding nuclei far larger than it was trained on (real ONNX Runtime session)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

import inscope.detector.onnx_detector as od
from inscope.detector.metrics import evaluate
from inscope.detector.scale import UPPER_MARGIN, auto_scale_factor, estimate_object_size_px


def _discs(diameter: float, shape=(1024, 1024), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full(shape, 300.0, np.float32)
    step = int(diameter * 2.2)
    for y in range(step // 2, shape[0] - step // 2, step):
        for x in range(step // 2, shape[1] - step // 2, step):
            cv2.circle(img, (x, y), int(round(diameter / 2)), float(rng.uniform(2000, 4000)), -1)
    img += rng.normal(0, 30, shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("d", [12.0, 40.0, 120.0])
def test_estimate_matches_drawn_discs(d):
    est = estimate_object_size_px(_discs(d))
    assert est is not None and abs(est - d) / d < 0.2


def _tiled(diameter: float, shape: tuple[int, int]) -> np.ndarray:
    """A frame of any size tiled from one drawn field (drawing 500,000 discs is slow)."""
    if max(shape) <= 2048:
        return _discs(diameter, shape=shape)
    base = _discs(diameter, shape=(1024, 1024) if diameter < 50 else (2048, 2048))
    reps = (-(-shape[0] // base.shape[0]), -(-shape[1] // base.shape[1]))
    return np.ascontiguousarray(np.tile(base, reps)[:shape[0], :shape[1]])


@pytest.mark.parametrize("shape", [(512, 512), (2048, 2048), (2048, 3072), (1024, 6144)])
@pytest.mark.parametrize("d", [30.0, 70.0, 100.0])
def test_large_nuclei_are_measured_within_a_tenth_at_any_frame_size(shape, d):
    est = estimate_object_size_px(_tiled(d, shape))
    assert est is not None and abs(est - d) / d < 0.1, est


@pytest.mark.parametrize("shape", [(256, 256), (512, 512), (2048, 2048), (2048, 3072),
                                   (1024, 6144)])
@pytest.mark.parametrize("d", [5.0, 8.0, 12.0, 20.0])
def test_small_nuclei_never_get_a_frame_shrunk_however_large_the_frame(shape, d):
    """A large frame is measured on a small copy, where small nuclei are unresolved: the
    estimate may be several times their size, never a size that shrinks the frame."""
    rng = (7.0, 72.0)
    img = _tiled(d, shape)
    assert auto_scale_factor(estimate_object_size_px(img), rng) == 1.0
    # nor with hot pixels (0.5 % of the frame at the top of the range)
    hot = img.copy()
    r = np.random.default_rng(1)
    n = hot.size // 200
    hot[r.integers(0, shape[0], n), r.integers(0, shape[1], n)] = 65000
    assert auto_scale_factor(estimate_object_size_px(hot), rng) == 1.0


def test_estimate_needs_objects():
    assert estimate_object_size_px(np.full((256, 256), 100, np.uint16)) is None
    with pytest.raises(ValueError, match="2-D"):
        estimate_object_size_px(np.zeros((4, 4, 3)))


def test_resize_only_for_objects_above_the_trained_range():
    rng = (7.0, 72.0)
    assert auto_scale_factor(None, rng) == 1.0
    assert auto_scale_factor(30.0, rng) == 1.0
    assert auto_scale_factor(3.0, rng) == 1.0  # small estimates are not trusted
    assert auto_scale_factor(UPPER_MARGIN * 72.0, rng) == 1.0
    assert auto_scale_factor(150.0, rng) == pytest.approx(math.sqrt(7 * 72) / 150)
    assert auto_scale_factor(150.0, None) == 1.0


def test_shipped_model_finds_nuclei_far_above_its_range(monkeypatch):
    import inscope.acquisition.simulated as sim
    # 0.1 µm pixels: nuclei of 10-20 µm are 100-200 px, the model was trained on 7-72 px
    scope = sim.SimulatedMicroscope(sim.SimConfig(seed=4, pixel_size_um=0.1, shape=(1024, 1024),
                                                  density_per_mm2=1500, realtime=False))
    frames = []
    for x in (0.0, 300.0, -300.0):
        scope.move_xy(x, 0.0)
        frames.append(scope.snap())
    scope.close()
    results = {}
    calls = []
    real_estimate = od.estimate_object_size_px

    def counting(img):  # instrumentation only: the real estimate still runs
        calls.append(img.shape)
        return real_estimate(img)

    monkeypatch.setattr(od, "estimate_object_size_px", counting)
    for auto in (False, True):
        det = od.OnnxDetector(provider="cpu", threads=2, score_threshold=0.05,
                              auto_scale=auto, warmup=False)
        preds = [(d.boxes, d.scores) for d in map(det.detect, frames)]
        results[auto] = evaluate(preds, [f.truth for f in frames]).ap50
        if auto:
            assert det.last_scale < 0.5
    assert results[True] > 0.8 and results[False] < 0.5, results
    # a stream of Frames of one shape and pixel size is measured once, not per frame
    assert len(calls) == 1
    # bare arrays are measured every call (they may come from different microscopes)
    det.detect(frames[0].pixels)
    det.detect(frames[1].pixels)
    assert len(calls) == 3


def test_three_nuclei_are_enough_and_a_small_frame_is_measured_at_full_resolution():
    img = np.full((200, 200), 300, np.uint16)
    for x in (40, 100, 160):
        cv2.circle(img, (x, 100), 15, 3000, -1)
    est = estimate_object_size_px(img)
    assert est is not None and abs(est - 31) / 31 < 0.1, est
    img[:, 130:] = 300  # two left
    assert estimate_object_size_px(img) is None
    # 8 px nuclei in a 256 px frame: measured on the frame itself, within a tenth
    est = estimate_object_size_px(_discs(8.0, shape=(256, 256)))
    assert est is not None and abs(est - 8) / 8 < 0.1, est


def test_nuclei_of_five_pixels_are_measured_on_the_frame_itself():
    """A frame no larger than the copy is not downsampled: halving it would merge the
    blur of 5 px nuclei into ~6.4 px blobs."""
    est = estimate_object_size_px(_discs(5.0, shape=(256, 256)))
    assert est is not None and abs(est - 5) / 5 < 0.1, est


def test_dead_pixel_blocks_do_not_count_as_objects():
    """Dim nuclei on a camera offset, and blocks of dead pixels (read 0): far below the
    stretch's low percentile. They must stay dark, not read as bright specks (an
    absolute value of the stretch would make them the most common 'object')."""
    img = np.full((512, 512), 2000.0, np.float32)
    for x in (60, 160, 260, 360, 460):
        cv2.circle(img, (x, 256), 10, 2600.0, -1)
    img += np.random.default_rng(0).normal(0, 30, img.shape)
    img = img.astype(np.uint16)
    clean = estimate_object_size_px(img)
    assert clean is not None and abs(clean - 21) / 21 < 0.1, clean
    for k in range(10):
        y, x = 40 + 45 * k, 30 + 47 * k
        img[y:y + 5, x:x + 5] = 0
    assert estimate_object_size_px(img) == pytest.approx(clean)


@pytest.mark.parametrize(("shape", "d"), [((320, 320), 30.0), ((1024, 1024), 30.0),
                                          ((1024, 1024), 70.0), ((2048, 3072), 70.0)])
def test_hot_pixels_do_not_hide_large_nuclei(shape, d):
    """0.1 % hot pixels (an uncorrected sCMOS frame; cosmic-ray hits look the same):
    after the blur each is a speck, and specks outnumbering the nuclei once made 70 px
    nuclei measure about the specks' size, so a frame that needed shrinking never was."""
    img = _tiled(d, shape)
    r = np.random.default_rng(1)
    n = img.size // 1000
    img[r.integers(0, shape[0], n), r.integers(0, shape[1], n)] = 65000
    est = estimate_object_size_px(img)
    assert est is not None and abs(est - d) / d < 0.1, est


def test_any_pixel_type_measures_the_same():
    """Camera types are measured as they come, a user's int32 or boolean array (which
    OpenCV's resize refuses) as float32: the same objects, the same size."""
    img = _discs(20.0, shape=(512, 512))
    est = estimate_object_size_px(img)
    assert est is not None and abs(est - 20) / 20 < 0.1
    for dtype in (np.int32, np.float64, np.float32, np.int16):
        assert estimate_object_size_px(img.astype(dtype)) == pytest.approx(est, rel=0.02)
    mask = estimate_object_size_px(img > 1000)  # a boolean mask of the discs
    assert mask is not None and abs(mask - 20) / 20 < 0.1


def test_hot_pixels_are_lowered_to_their_neighbours_also_on_the_edge():
    from inscope.detector.signal import without_hot_pixels

    img = np.random.default_rng(3).integers(90, 110, (8, 9)).astype(np.uint16)
    img[2:4, 5:7] = 3000  # a 2 x 2 bright object: kept whole
    for y, x in ((0, 0), (0, 4), (7, 8), (5, 0), (5, 2)):  # corners, edges, inside
        img[y, x] = 65000
    out = without_hot_pixels(img)
    for y, x in ((0, 0), (0, 4), (7, 8), (5, 0), (5, 2)):
        ys, xs = slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2)
        win = img[ys, xs].astype(int)
        assert out[y, x] == np.sort(win.ravel())[-2]  # the brightest neighbour
    # every pixel that is not brighter than all its neighbours is unchanged
    pad = np.pad(img.astype(int), 1, constant_values=-1)
    nb = np.max([pad[1 + dy:9 + dy, 1 + dx:10 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if dy or dx], axis=0)
    assert np.array_equal(out[img <= nb], img[img <= nb])
    assert np.array_equal(out[img > nb], nb[img > nb])
    assert (out[2:4, 5:7] == 3000).all()
