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
    real_estimate = od.measure_objects

    def counting(img):  # instrumentation only: the real estimate still runs
        calls.append(img.shape)
        return real_estimate(img)

    monkeypatch.setattr(od, "measure_objects", counting)
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


def test_nuclei_of_five_pixels_in_a_camera_sized_frame_are_measured_at_full_resolution():
    """A 512 x 512 frame is measured on its half-size copy, where 5 px nuclei blur into
    ~6.4 px blobs: unresolved there, they are measured again at full resolution."""
    est = estimate_object_size_px(_discs(5.0, shape=(512, 512)))
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


# -- small nuclei: measured at full resolution, enlarged only in a field of cells ---------
@pytest.mark.parametrize("shape", [(2048, 2048), (1024, 6144)])
@pytest.mark.parametrize("d", [5.0, 8.0, 12.0, 20.0, 40.0])
def test_small_nuclei_are_measured_on_a_full_resolution_crop_of_a_large_frame(shape, d):
    """On the 1/7-1/8 copy of a large frame 5-20 px nuclei are a pixel or two and
    measured up to several times their size (a 2048 x 2048 frame of 15 px HeLa nuclei
    read 36 px); the frame's middle at full resolution measures them, leaving out the
    nuclei its edge cuts (40 px ones would read small)."""
    est = estimate_object_size_px(_tiled(d, shape))
    assert est is not None and abs(est - d) / d < 0.1, est


def _with_middle(outer: np.ndarray, middle: np.ndarray) -> np.ndarray:
    img = outer.copy()
    h, w = img.shape
    y0, x0 = (h - 512) // 2, (w - 512) // 2
    img[y0:y0 + 512, x0:x0 + 512] = middle[:512, :512]
    return img


def test_the_crop_is_the_frames_middle_and_only_for_unresolved_objects():
    # unresolved 8 px nuclei around a middle of 12 px ones: the middle decides
    img = _with_middle(_tiled(8.0, (2048, 2048)), _discs(12.0, shape=(512, 512)))
    est = estimate_object_size_px(img)
    assert est is not None and abs(est - 12) / 12 < 0.1, est
    # 60 px nuclei are resolved in the copy: a middle of small ones does not decide
    img = _with_middle(_tiled(60.0, (2048, 2048)), _discs(10.0, shape=(512, 512)))
    est = estimate_object_size_px(img)
    assert est is not None and est > 40, est
    # a middle with fewer than CROP_MIN_OBJECTS whole objects keeps the frame's estimate
    from inscope.detector.scale import CROP_MIN_OBJECTS, measure_objects

    few = np.full((512, 512), 300, np.uint16)
    for x in (100, 250, 400):
        cv2.circle(few, (x, 256), 15, 3000, -1)
    img = _with_middle(_tiled(8.0, (2048, 2048)), few)
    m = measure_objects(img)
    assert m is not None and CROP_MIN_OBJECTS > 3 and m.size_px > 30, m


def _estimate(size: float, cover: float = 0.1, contrast: float = 100.0,
              outline: float | None = None):
    from inscope.detector.scale import SizeEstimate

    return SizeEstimate(size_px=size, count=50, cover=cover, contrast=contrast,
                        outline_px=size * 1.2 if outline is None else outline)


def test_enlargement_brings_small_objects_up_to_the_cards_size():
    from inscope.detector.scale import MAX_ENLARGE, MIN_ENLARGE, MIN_TRUSTED_PX

    rng, below = (7.0, 72.0), 14.0
    assert auto_scale_factor(_estimate(7.0), rng, below) == pytest.approx(2.0)
    assert auto_scale_factor(7.0, rng, below) == pytest.approx(2.0)  # a bare size: trusted
    assert auto_scale_factor(_estimate(10.0), rng, below) == pytest.approx(1.4)
    # not enlarged: without the card's key, from 14 px up, or by less than MIN_ENLARGE
    assert auto_scale_factor(_estimate(7.0), rng) == 1.0
    assert auto_scale_factor(_estimate(14.0), rng, below) == 1.0
    assert auto_scale_factor(_estimate(30.0), rng, below) == 1.0
    just = below / MIN_ENLARGE
    assert auto_scale_factor(_estimate(just + 0.1), rng, below) == 1.0
    assert auto_scale_factor(_estimate(just - 0.1), rng, below) > MIN_ENLARGE
    # at most MAX_ENLARGE; estimates under MIN_TRUSTED_PX are specks
    assert auto_scale_factor(_estimate(MIN_TRUSTED_PX), rng, below) == MAX_ENLARGE
    assert auto_scale_factor(_estimate(MIN_TRUSTED_PX - 0.1), rng, below) == 1.0
    # shrinking is unchanged by the key
    assert auto_scale_factor(_estimate(150.0), rng, below) == pytest.approx(
        math.sqrt(7 * 72) / 150)


def test_enlargement_never_makes_a_frame_larger_than_4096_squared():
    from inscope.detector.scale import MAX_ENLARGED_PIXELS

    rng, below = (7.0, 72.0), 14.0
    assert auto_scale_factor(_estimate(5.0), rng, below, (2048, 2048)) == pytest.approx(2.0)
    f = auto_scale_factor(_estimate(5.0), rng, below, (1024, 6144))
    assert f == pytest.approx(math.sqrt(MAX_ENLARGED_PIXELS / (1024 * 6144)))
    assert auto_scale_factor(_estimate(5.0), rng, below, (4096, 4096)) == 1.0
    assert auto_scale_factor(_estimate(5.0), rng, below, (512, 512)) == pytest.approx(2.8)


def test_only_a_field_of_cells_is_enlarged():
    """An empty field's debris and noise measure a few pixels too: enlarging on them bred
    false boxes (benchmarks/small_nuclei.py). Too little cover or too little contrast:
    no enlargement."""
    from inscope.detector.scale import MIN_CONTRAST, MIN_COVER

    rng, below = (7.0, 72.0), 14.0
    assert auto_scale_factor(_estimate(7.0, cover=MIN_COVER), rng, below) == 2.0
    assert auto_scale_factor(_estimate(7.0, cover=MIN_COVER * 0.9), rng, below) == 1.0
    assert auto_scale_factor(_estimate(7.0, contrast=MIN_CONTRAST), rng, below) == 2.0
    assert auto_scale_factor(_estimate(7.0, contrast=MIN_CONTRAST * 0.9), rng, below) == 1.0


def test_a_crop_measures_only_the_objects_its_edge_does_not_cut():
    from inscope.detector.scale import _measure

    img = np.full((300, 300), 300, np.uint16)
    for x, y in ((100, 100), (200, 100), (100, 200)):
        cv2.circle(img, (x, y), 15, 3000, -1)
    for x, y in ((0, 50), (0, 250), (299, 150), (150, 0), (150, 299), (50, 299)):
        cv2.circle(img, (x, y), 15, 3000, -1)  # halves, cut by the edge
    whole = _measure(img, 1, whole_only=True)
    assert whole is not None and whole.count == 3 and abs(whole.size_px - 31) < 3, whole
    every = _measure(img, 1)
    assert every is not None and every.count == 9 and every.size_px < 25, every


def test_contrast_is_the_objects_height_in_noise_sigmas_whatever_the_units():
    from inscope.detector.scale import measure_objects

    r = np.random.default_rng(5)
    img = np.full((256, 256), 1000.0)
    for y in range(20, 256, 40):
        for x in range(20, 256, 40):
            cv2.circle(img, (x, y), 8, 1600.0, -1)  # 600 above the background
    img += r.normal(0, 10, img.shape)  # noise sigma 10: contrast ~60
    m = measure_objects(img.astype(np.float32))
    assert m is not None and 50 < m.contrast < 65, m
    unit = measure_objects(((img - 900) / 1000).astype(np.float32))  # [0, 1]-ish floats
    assert unit is not None and unit.contrast == pytest.approx(m.contrast, rel=0.01)


def test_a_packed_field_is_enlarged_up_to_the_ranges_centre():
    """Touching nuclei are separated best near the size the model was trained around:
    a packed field (cover >= PACKED_COVER) aims at the range's centre, not at 14 px."""
    from inscope.detector.scale import PACKED_COVER

    rng, below, centre = (7.0, 72.0), 14.0, math.sqrt(7 * 72)
    packed = _estimate(18.0, cover=PACKED_COVER)
    assert packed.packed and not _estimate(18.0, cover=PACKED_COVER * 0.9).packed
    assert auto_scale_factor(packed, rng, below) == pytest.approx(centre / 18)
    assert auto_scale_factor(_estimate(18.0, cover=PACKED_COVER * 0.9), rng, below) == 1.0
    assert auto_scale_factor(_estimate(10.0, cover=0.3), rng, below) == pytest.approx(
        centre / 10)
    assert auto_scale_factor(18.0, rng, below) == 1.0  # a bare size says nothing of cover
    # a packed field of faint specks is no field of cells, and packing changes no shrink
    assert not _estimate(10.0, cover=0.3, contrast=1.0).packed
    assert auto_scale_factor(_estimate(10.0, cover=0.3, contrast=1.0), rng, below) == 1.0
    assert auto_scale_factor(_estimate(150.0, cover=0.3), rng, below) == pytest.approx(
        centre / 150)
    # without the card's key nothing is enlarged, packed or not
    assert auto_scale_factor(packed, rng) == 1.0


def test_the_smallest_enlargement_is_made():
    from inscope.detector.scale import MIN_ENLARGE

    assert MIN_ENLARGE == 1.2
    assert auto_scale_factor(_estimate(10.0), (7.0, 72.0), 12.0) == MIN_ENLARGE


def test_the_texture_of_large_nuclei_is_not_a_field_of_small_ones():
    """Large textured nuclei (confocal-like sections: bright patches on a dimmer body),
    packed: Otsu's threshold finds the patches, a few pixels each, and a field of them
    measured like small packed nuclei - enlarged 2.7x, the real nuclei split
    (bench_control --confocal). Their outlines give them away."""
    from inscope.detector.scale import MAX_OUTLINE_RATIO, measure_objects

    r = np.random.default_rng(3)
    img = np.full((512, 512), 300.0)
    for y in range(24, 512, 44):
        for x in range(24, 512, 44):
            cv2.circle(img, (x, y), 20, 650.0, -1)
            for _ in range(5):
                dx, dy = r.uniform(-13, 13, 2)
                cv2.circle(img, (int(x + dx), int(y + dy)), 3, float(r.uniform(2500, 3500)),
                           -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + r.normal(0, 30, img.shape)
    m = measure_objects(img.astype(np.float32))
    assert m is not None and m.size_px < 14, m  # the patches
    assert 20 < m.outline_px < 48, m  # the nuclei (41 px) and the rims around patches
    assert m.outline_px > MAX_OUTLINE_RATIO * m.size_px and not m.field_of_objects
    assert auto_scale_factor(m, (7.0, 72.0), 14.0) == 1.0
    # an estimate whose outlines could not be measured is not trusted either
    assert not _estimate(7.0, outline=math.nan).field_of_objects
    assert not _estimate(7.0, outline=7.0 * MAX_OUTLINE_RATIO * 1.01).field_of_objects
    assert _estimate(7.0, outline=7.0 * MAX_OUTLINE_RATIO).field_of_objects


def test_cover_and_contrast_are_measured():
    from inscope.detector.scale import MIN_CONTRAST, measure_objects

    img = _discs(8.0, shape=(256, 256))  # spaced 2.2 diameters: ~13 % cover
    m = measure_objects(img)
    assert m is not None and m.field_of_objects
    assert 0.08 < m.cover < 0.25, m.cover
    assert m.contrast > 30, m.contrast  # discs 2000-4000 above a background of noise 30
    # the same discs barely above the noise: not a field to enlarge on
    faint = np.full((256, 256), 300.0) + np.random.default_rng(0).normal(0, 30, (256, 256))
    faint += (img.astype(float) - 300.0).clip(0, None) / 3000 * 60
    m = measure_objects(faint.astype(np.float32))
    assert m is not None and m.contrast < MIN_CONTRAST and not m.field_of_objects, m
    # specks of debris in an empty field: bright, but too little cover
    r = np.random.default_rng(1)
    sparse = np.full((512, 512), 300.0) + r.normal(0, 30, (512, 512))
    for x, y in r.integers(10, 502, (60, 2)):
        cv2.circle(sparse, (int(x), int(y)), 3, 3000.0, -1)
    m = measure_objects(sparse.astype(np.float32))
    assert m is not None and m.contrast > MIN_CONTRAST and m.cover < 0.02, m
    assert not m.field_of_objects
    # three specks: the stretch is the noise's, and noise stands out from nothing
    few = np.full((512, 512), 300.0) + r.normal(0, 30, (512, 512))
    for x in (100, 250, 400):
        cv2.circle(few, (x, 256), 3, 3000.0, -1)
    m = measure_objects(few.astype(np.float32))
    assert m is not None and m.contrast < MIN_CONTRAST and not m.field_of_objects, m


def test_a_packed_field_of_small_nuclei_is_a_field_of_objects():
    """Nuclei packed wall to wall, of uneven brightness: the gaps and the dim ones are
    the 'background', so the bright ones stand only ~10 sigmas out of it; still a field
    of cells (the enlargement helps packed small nuclei most)."""
    from inscope.detector.scale import MIN_CONTRAST, MIN_COVER, measure_objects

    r = np.random.default_rng(2)
    img = np.full((512, 512), 300.0)
    for y in range(5, 512, 9):
        for x in range(5 + (y // 9 % 2) * 4, 512, 9):
            cv2.circle(img, (x, y), 4, float(r.uniform(600, 3000)), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + r.normal(0, 30, img.shape)
    m = measure_objects(img.astype(np.float32))
    assert m is not None and m.cover > MIN_COVER and m.contrast > MIN_CONTRAST, m
    assert m.field_of_objects and m.packed and m.size_px < 11.7, m


def _small_nuclei_frames(k: float, n: int = 3):
    import inscope.acquisition.simulated as sim

    scope = sim.SimulatedMicroscope(sim.SimConfig(seed=11, pixel_size_um=0.65 / k,
                                                  realtime=False))
    frames = []
    for x in (0.0, 400.0, -400.0)[:n]:
        scope.move_xy(x, 0.0)
        frames.append(scope.snap())
    scope.close()
    return frames


def test_shipped_model_finds_more_small_nuclei_in_an_enlarged_frame(caplog):
    """Simulated nuclei of ~5.5 px (pixels 4x the default): the shipped network finds
    few at their own scale and most in the frame enlarged by its card's rule; an empty
    field is left at its scale (real ONNX Runtime session)."""
    caplog.set_level("INFO", logger="inscope.detector.onnx_detector")
    frames = _small_nuclei_frames(0.25)
    results, scales = {}, {}
    for auto in (False, True):
        det = od.OnnxDetector(provider="cpu", threads=2, score_threshold=0.05,
                              auto_scale=auto, warmup=False)
        preds = []
        for f in frames:
            d = det.detect(f.pixels)
            preds.append((d.boxes, d.scores))
            scales[auto] = det.last_scale
        results[auto] = evaluate(preds, [f.truth for f in frames]).ap50
        det.close()
    assert scales[False] == 1.0 and scales[True] > 1.5, scales
    assert results[True] > results[False] + 0.2, results
    # the user is told once, with the way out
    said = [r.getMessage() for r in caplog.records if "auto scale" in r.getMessage()]
    assert len(said) == 1 and "enlarged" in said[0] and "object_size_px" in said[0], said
    import inscope.acquisition.simulated as sim

    scope = sim.SimulatedMicroscope(sim.SimConfig(seed=12, density_per_mm2=0.0,
                                                  realtime=False))
    empty = scope.snap()
    scope.close()
    det = od.OnnxDetector(provider="cpu", threads=2, warmup=False)
    det.detect(empty.pixels)
    assert det.last_scale == 1.0
    det.close()


def test_a_streams_factor_switches_only_beyond_a_band_round_each_boundary():
    """A stream's previous factor: a size that wanders round a boundary (camera noise
    moves one field's estimate by ~4 %) must not flip the resize, and every box, each
    time the stream measures."""
    from inscope.detector.scale import HYSTERESIS, MIN_ENLARGE

    rng, below = (7.0, 72.0), 14.0
    edge = below / MIN_ENLARGE  # 11.67 px: enlarged (1.2x) below it, not above
    up = edge * (1 + HYSTERESIS)
    down = edge / (1 + HYSTERESIS)
    # no previous factor: the boundary itself (the first measurement)
    assert auto_scale_factor(_estimate(edge - 0.2), rng, below) > 1.0
    # not enlarged: enlarging takes an estimate HYSTERESIS below the boundary
    assert auto_scale_factor(_estimate(edge - 0.2), rng, below, previous=1.0) == 1.0
    assert auto_scale_factor(_estimate(down + 0.05), rng, below, previous=1.0) == 1.0
    assert auto_scale_factor(_estimate(down - 0.05), rng, below, previous=1.0) \
        == pytest.approx(below / (down - 0.05))
    # enlarged: it stays enlarged up to HYSTERESIS above the boundary, at the new factor
    # once it differs from the one in use by more than HYSTERESIS, else at the old one
    assert auto_scale_factor(_estimate(edge + 0.2), rng, below, previous=1.2) == 1.2
    assert auto_scale_factor(_estimate(up - 0.05), rng, below, previous=1.5) \
        == pytest.approx(below / (up - 0.05))
    assert auto_scale_factor(_estimate(up + 0.05), rng, below, previous=1.2) == 1.0
    assert auto_scale_factor(_estimate(7.0), rng, below, previous=1.9) == 1.9
    assert auto_scale_factor(_estimate(7.0), rng, below, previous=1.7) == pytest.approx(2.0)
    # an estimate that cannot be trusted (debris, an empty field) keeps an enlargement
    debris = _estimate(7.0, cover=0.001)
    assert auto_scale_factor(debris, rng, below) == 1.0
    assert auto_scale_factor(debris, rng, below, previous=1.4) == 1.4
    assert auto_scale_factor(debris, rng, below, previous=1.0) == 1.0
    assert auto_scale_factor(debris, rng, below, previous=0.4) == 1.0  # not a shrink
    # a new factor within HYSTERESIS of 2.0 (14 / 7.2 = 1.94) keeps 2.0
    assert auto_scale_factor(_estimate(7.2), rng, below, previous=2.0) == 2.0
    # shrinking: past UPPER_MARGIN x 72 px by HYSTERESIS, and back below it by as much
    big = UPPER_MARGIN * 72.0
    centre = math.sqrt(7 * 72)
    assert auto_scale_factor(_estimate(big + 1), rng, below) == pytest.approx(centre
                                                                             / (big + 1))
    assert auto_scale_factor(_estimate(big + 1), rng, below, previous=1.0) == 1.0
    assert auto_scale_factor(_estimate(big * 1.12), rng, below, previous=1.0) \
        == pytest.approx(centre / (big * 1.12))
    assert auto_scale_factor(_estimate(big - 1), rng, below, previous=0.4) == 0.4
    assert auto_scale_factor(_estimate(big * 0.88), rng, below, previous=0.4) == 1.0


def test_a_given_enlargement_size_replaces_the_cards_and_the_boxes_stay_in_the_frame(
        caplog):
    """``enlarge_below_px`` (accuracy for time): discs of ~25 px are left as they are with
    the card's 14 px, enlarged up to 36 px with 36 (the factor the estimate gives), and
    their boxes still come back in the frame's own pixels; the card is not changed."""
    img = _discs(25.0, shape=(512, 512), seed=3)
    card_det = od.OnnxDetector(provider="cpu", threads=2, warmup=False)
    big_det = od.OnnxDetector(provider="cpu", threads=2, warmup=False, enlarge_below_px=36)
    assert big_det.enlarge_below_px == 36.0
    with caplog.at_level("INFO", logger="inscope.detector.onnx_detector"):
        a, b = card_det.detect(img), big_det.detect(img)
    assert card_det.last_scale == 1.0
    said = [r.getMessage() for r in caplog.records if "auto scale" in r.getMessage()]
    assert len(said) == 1 and "under the enlargement size given (36 px)" in said[0]
    k = big_det.last_scale
    assert (f"objects measure {od.measure_objects(img).size_px:.1f} px, under" in said[0]
            and f"enlarged {k:.2f}x for the detector ({k * k:.1f}x the time)" in said[0])
    est = od.measure_objects(img)
    assert est is not None and est.size_px < 36 / 1.2
    assert big_det.last_scale == pytest.approx(36.0 / est.size_px)
    assert big_det.card.scale["enlarge_below_px"] == card_det.card.scale["enlarge_below_px"]
    # the same discs, boxes in the frame's pixels: centres within a pixel of each other
    assert len(a.boxes) == len(b.boxes) > 20
    ca = (a.boxes[:, :2] + a.boxes[:, 2:]) / 2
    cb = (b.boxes[:, :2] + b.boxes[:, 2:]) / 2
    nearest = np.min(np.linalg.norm(ca[:, None] - cb[None], axis=2), axis=1)
    assert np.max(nearest) < 1.0, nearest
    # a bare size without an estimate (auto_scale off) is not enlarged by it
    off = od.OnnxDetector(provider="cpu", threads=2, warmup=False, enlarge_below_px=36,
                          auto_scale=False)
    off.detect(img)
    assert off.last_scale == 1.0


@pytest.mark.parametrize("px", [0, 1, 1.0, 72.5, 1e9, -36, "36px", True, math.nan, math.inf])
def test_an_enlargement_size_the_model_cannot_use_is_one_line_with_its_range(px):
    with pytest.raises(ValueError) as e:
        od.OnnxDetector(provider="cpu", warmup=False, enlarge_below_px=px)
    msg = str(e.value)
    assert "\n" not in msg and f"enlarge_below_px={px!r}" in msg
    assert "above 1 and at most 72 px, the largest size inscope-nuclei.onnx was trained on" \
        in msg and "leave it unset" in msg


@pytest.mark.parametrize("px", [1.01, 14, 36.0, 72])
def test_an_enlargement_size_inside_the_trained_sizes_is_taken(px):
    assert od.OnnxDetector(provider="cpu", warmup=False,
                           enlarge_below_px=px).enlarge_below_px == float(px)


def test_the_classical_and_triton_detectors_refuse_an_enlargement_size_and_drop_none():
    for model in ("classical", "triton://127.0.0.1:1/m"):
        with pytest.raises(ValueError, match=f"{model!r} cannot use it"):
            od.load_detector(model, enlarge_below_px=30)
    assert od.load_detector("classical", enlarge_below_px=None).name == "classical"


def test_an_enlargement_size_for_a_model_whose_card_gives_no_sizes(tmp_path):
    """A card without ``scale.object_size_px`` bounds the size only below: any size above
    1 px is taken, and a bad one's line has no upper bound to name."""
    from _support.onnx_models import build_centernet

    path = build_centernet(tmp_path / "m.onnx", card_overrides={"scale": {"object_size_px": None}})
    assert od.OnnxDetector(path, provider="cpu", warmup=False,
                           enlarge_below_px=500).enlarge_below_px == 500.0
    with pytest.raises(ValueError) as e:
        od.OnnxDetector(path, provider="cpu", warmup=False, enlarge_below_px=1)
    assert str(e.value) == ("enlarge_below_px=1 is not a size the frames can be enlarged "
                            "to: give a number of pixels above 1, or leave it unset for the "
                            "model card's own.")
