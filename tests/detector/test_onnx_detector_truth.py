"""The ONNX detector around its network (``inscope.detector.onnx_detector``) on known
values: which frames it tiles and with what overlap, the threshold and the box cap on
both paths, how often it re-measures the object size of a stream, how an "auto" card
normalises 8-bit and deeper frames, and the timing it reports per call.

Real parts: the shipped model in ONNX Runtime (CPU), real Frames.
"""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest

import inscope.detector.onnx_detector as od
from inscope.acquisition.frame import Frame, StagePosition
from inscope.detector.base import STAMP_DETECT_END, STAMP_DETECT_START
from inscope.detector.onnx_detector import AUTO_SCALE_EVERY, DEFAULT_MODEL, OnnxDetector


@pytest.fixture(scope="module")
def shipped():
    d = OnnxDetector(DEFAULT_MODEL, provider="cpu")
    yield d
    d.close()


@pytest.fixture()
def det(shipped):
    """The shipped detector with its settings and card restored after each test."""
    keep = (shipped.tile, shipped.overlap, shipped.score_threshold,
            copy.deepcopy(shipped.card.scale), copy.deepcopy(shipped.card.decoding),
            copy.deepcopy(shipped.card.normalisation), copy.deepcopy(shipped.card.input),
            shipped.auto_scale)
    yield shipped
    (shipped.tile, shipped.overlap, shipped.score_threshold, shipped.card.scale,
     shipped.card.decoding, shipped.card.normalisation, shipped.card.input,
     shipped.auto_scale) = keep


def _nuclei(h=600, w=600, n=40, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 100, np.float32)
    for _ in range(n):
        cx, cy = rng.uniform(20, w - 20), rng.uniform(20, h - 20)
        cv2.circle(img, (int(cx), int(cy)), int(rng.uniform(6, 11)),
                   float(rng.uniform(300, 1500)), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    return img + rng.normal(0, 10, img.shape).astype(np.float32)


# -- tiling ------------------------------------------------------------------------------------
def _tiles(det, h, w):
    """The (h, w, tile, overlap, align) the detector asks the tiling for (None: whole).

    Read from the call itself: the grid of a frame changes with the overlap only where the
    tile count does, so comparing grids would not see most overlaps.
    """
    seen = []
    real = od.tile_grid

    def spy(h_, w_, size, overlap, align=1):
        seen.append((h_, w_, size, overlap, align))
        return real(h_, w_, size, overlap, align=align)

    od.tile_grid = spy
    try:
        t = det._tiles(h, w)
    finally:
        od.tile_grid = real
    return None if t is None else seen[-1]


def test_frames_up_to_tile_above_run_whole_larger_ones_in_tiles(det):
    # the card: nuclei up to 72 px, stride 4: tiles of 512 overlap by 72 + 2 x 4 = 80
    assert _tiles(det, 2560, 100) is None
    assert _tiles(det, 100, 2560) is None
    assert _tiles(det, 2561, 100) == (2561, 100, 512, 80, 32)
    assert _tiles(det, 100, 2561) == (100, 2561, 512, 80, 32)
    det.card.scale = {**det.card.scale, "tile_above": 1000, "tile": 256}
    assert _tiles(det, 1000, 1000) is None
    assert _tiles(det, 1001, 300) == (1001, 300, 256, 80, 32)


def test_tiling_can_be_forced_or_refused_and_sized(det):
    det.tile = True
    assert _tiles(det, 600, 600) == (600, 600, 512, 80, 32)
    det.tile = False
    assert _tiles(det, 5000, 5000) is None
    det.tile = 300  # tile size in model pixels, down to a multiple of 32
    assert _tiles(det, 600, 600) == (600, 600, 288, 80, 32)
    det.card.input = {**det.card.input, "multiple": 16}
    assert _tiles(det, 600, 600) == (600, 600, 288, 80, 16)
    det.card.input = {k: v for k, v in det.card.input.items() if k != "multiple"}
    assert _tiles(det, 600, 600) == (600, 600, 288, 80, 32)  # the default multiple


def test_the_overlap_comes_from_the_settings_the_card_or_the_object_size(det):
    det.tile = True
    det.overlap = 40
    assert _tiles(det, 600, 600)[3] == 40
    det.overlap = 2000  # never the whole tile
    assert _tiles(det, 600, 600)[3] == 511
    det.overlap = None
    det.card.scale = {**det.card.scale, "overlap": 24}
    assert _tiles(det, 600, 600)[3] == 24
    det.card.scale = {"object_size_px": [5.0, 30.2]}
    assert _tiles(det, 600, 600)[3] == 31 + 8
    det.card.decoding = {**det.card.decoding, "stride": 8}
    assert _tiles(det, 600, 600)[3] == 31 + 16
    det.card.decoding = {k: v for k, v in det.card.decoding.items() if k != "stride"}
    assert _tiles(det, 600, 600)[3] == 31 + 8  # the default stride, 4
    det.card.scale = {}  # no object size: 64 px
    assert _tiles(det, 600, 600)[3] == 64 + 8
    assert _tiles(det, 600, 600)[2] == 512  # the default tile


# -- threshold and cap on both paths -------------------------------------------------------------
@pytest.mark.parametrize("tile", [None, True])
def test_the_threshold_and_the_box_cap_hold_whole_or_tiled(det, tile):
    det.tile = tile
    img = _nuclei()
    det.score_threshold = 0.05
    every = det.detect(img)
    assert len(every) > 10 and every.scores.min() < 0.9
    det.score_threshold = 0.9
    high = det.detect(img)
    assert len(high) and high.scores.min() >= 0.9
    assert len(high) == int((every.scores >= 0.9).sum())
    det.score_threshold = 0.05
    det.card.decoding = {**det.card.decoding, "max_detections": 5}
    top = det.detect(img)
    assert len(top) == 5
    np.testing.assert_allclose(np.sort(top.scores)[::-1], np.sort(every.scores)[::-1][:5],
                               atol=1e-6)


# -- the object size of a stream ----------------------------------------------------------------
def test_a_streams_object_size_is_measured_once_every_auto_scale_every_frames(det,
                                                                               monkeypatch):
    calls = []
    real = od.measure_objects

    def counting(img):
        calls.append(img.shape)
        return real(img)

    monkeypatch.setattr(od, "measure_objects", counting)
    det._scale_cache = None
    img = _nuclei(256, 256, n=8)
    frame = Frame(img, 0, position=StagePosition(0, 0, 0), pixel_size_um=0.65)
    for _ in range(AUTO_SCALE_EVERY + 1):
        det.detect(frame)
    assert len(calls) == 2  # the first frame and the one after AUTO_SCALE_EVERY
    calls.clear()
    det.detect(Frame(img, 1, position=StagePosition(0, 0, 0), pixel_size_um=0.5))
    det.detect(Frame(img[:128], 2, position=StagePosition(0, 0, 0), pixel_size_um=0.5))
    assert len(calls) == 2  # another pixel size, another shape: measured again
    calls.clear()
    for _ in range(3):  # bare arrays carry no stream: every call
        det.detect(img)
    assert len(calls) == 3


def test_a_size_that_wanders_round_the_enlargement_boundary_keeps_the_streams_factor(
        det, monkeypatch):
    """Nuclei of ~12 px measure either side of the 11.7 px boundary from one
    measurement to the next (camera noise, focus). Before, each of the stream's
    measurements every AUTO_SCALE_EVERY frames flipped the 1.2x enlargement on or off,
    and every box with it; a new field of view (another pixel size) starts afresh."""
    from inscope.detector.scale import MIN_ENLARGE, SizeEstimate

    edge = det.card.scale["enlarge_below_px"] / MIN_ENLARGE
    sizes = iter([edge - 0.3, edge + 0.3, edge - 0.2, edge + 0.2, edge + 0.3])

    def wandering(img):
        return SizeEstimate(size_px=next(sizes), count=40, cover=0.1, contrast=50.0,
                            outline_px=12.0)

    monkeypatch.setattr(od, "measure_objects", wandering)
    det._scale_cache = None
    img = _nuclei(256, 256, n=8)
    scales = []
    for i in range(3 * AUTO_SCALE_EVERY + 1):
        det.detect(Frame(img, i, position=StagePosition(0, 0, 0), pixel_size_um=0.65))
        scales.append(det.last_scale)
    assert scales[0] == pytest.approx(det.card.scale["enlarge_below_px"] / (edge - 0.3))
    assert len(set(scales)) == 1, sorted(set(scales))  # four measurements, one factor
    det.detect(Frame(img, 0, position=StagePosition(0, 0, 0), pixel_size_um=0.5))
    assert det.last_scale == 1.0  # edge + 0.3, measured afresh: not enlarged


def test_without_automatic_scale_the_frame_is_not_rescaled(det):
    det.auto_scale = False
    det.detect(_nuclei(256, 256, n=8))
    assert det.last_scale == 1.0


# -- an "auto" card's normalisation --------------------------------------------------------------
@pytest.mark.parametrize("norm", [{"method": "auto"}, None, {}])
def test_auto_normalisation_divides_8_bit_and_stretches_deeper_frames(det, norm):
    det.card.normalisation = norm
    img8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_allclose(det._normalise(img8), img8 / 255.0, atol=1e-7)
    img16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 200 + 1000)
    out = det._normalise(img16)
    assert out.min() == 0.0 and out.max() == 1.0  # percentiles to [0, 1], clipped
    assert out[8, 8] == pytest.approx((img16[8, 8] - np.percentile(img16[::4, ::4], 1))
                                      / np.ptp(np.percentile(img16[::4, ::4], [1, 99.8])),
                                      abs=0.02)


# -- timing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [None, True])
def test_the_reported_timing_adds_up_to_the_call_in_ms(det, tile):
    det.tile = tile
    f = Frame(_nuclei(), 0, position=StagePosition(0, 0, 0), pixel_size_um=0.65)
    d = det.detect(f)
    tm = det.last_timing
    total = (d.stamps[STAMP_DETECT_END] - d.stamps[STAMP_DETECT_START]) / 1e6
    assert tm["total_ms"] == pytest.approx(total)
    parts = [tm["pre_ms"], tm["run_ms"], tm["post_ms"]]
    assert all(math.isfinite(p) and 0 < p <= total for p in parts), tm
    assert sum(parts) <= total + 1e-3
    # and they cover it: only the call's own bookkeeping lies between them (a part that
    # counted one tile of four, or lost the object-size estimate, falls short)
    assert sum(parts) >= 0.75 * total, tm
    assert 0.001 < total < 60_000  # milliseconds, not ns or s


# -- load_detector: which detector, with which settings ------------------------------------------
def test_load_detector_builds_the_shipped_model_with_the_settings_given():
    d = od.load_detector(None, provider="cpu", threads=1, score_threshold=0.7, tile=False,
                         auto_scale=False)
    try:
        assert isinstance(d, OnnxDetector) and d.model_path == DEFAULT_MODEL
        assert d.provider == "cpu" and d.threads == 1
        assert d.score_threshold == 0.7 and d.tile is False and d.auto_scale is False
    finally:
        d.close()


def test_load_detector_classical_takes_the_settings_it_uses_and_ignores_the_rest():
    from inscope.detector.classical import ClassicalDetector

    for name in ("classical", "Classical"):
        d = od.load_detector(name, score_threshold=0.3, object_size_px=12.0,
                             object_size_um=None, tile=True, overlap=5)
        assert isinstance(d, ClassicalDetector)
        assert d.score_threshold == 0.3 and d.object_size_px == 12.0
    d = od.load_detector("classical", object_size_um=6.5)
    assert d.object_size_um == 6.5


def test_load_detector_triton_passes_its_settings_and_the_local_fallback():
    # nothing listens on port 9: the shipped model answers locally, built with the
    # provider, threads and settings given
    d = od.load_detector("TRITON://127.0.0.1:9/nuclei?fallback=local&connect_timeout=0.2",
                         provider="cpu", threads=1, score_threshold=0.6, object_size_px=20.0,
                         object_size_um=None, auto_scale=False, spinning=False, tile=True)
    try:
        from inscope.detector.triton_detector import TritonDetector

        assert isinstance(d, TritonDetector)
        assert d.score_threshold == 0.6 and d.object_size_px == 20.0 and d.auto_scale is False
        fb = d.fallback
        assert isinstance(fb, OnnxDetector) and fb.provider == "cpu" and fb.threads == 1
        assert fb.score_threshold == 0.6 and fb.object_size_px == 20.0
    finally:
        d.close()


# -- a card read from an Ultralytics export's signature -----------------------------------------
def _yolo(path, rows, cols, names=None, size=320, description=None):
    from _support.onnx_models import build_ultralytics

    p = build_ultralytics(path, np.zeros((rows, cols), np.float32), names, size=size)
    if description is not None:
        import onnx

        m = onnx.load(str(p))
        d = m.metadata_props.add()
        d.key, d.value = "description", description
        onnx.save(m, str(p))
    return p


def _card(p):
    d = OnnxDetector(p, provider="cpu", warmup=False)
    try:
        return d.card
    finally:
        d.close()


def test_a_card_from_an_exports_signature_names_input_classes_and_normalisation(tmp_path):
    card = _card(_yolo(tmp_path / "yolo11n.onnx", 6, 50, {0: "cell", 1: "debris"}))
    assert card.format == "ultralytics" and card.classes == ["cell", "debris"]
    assert card.input == {"name": "images", "channels": 3, "size": [320, 320],
                          "multiple": 32, "layout": "NCHW"}
    assert card.normalisation == {"method": "auto"} and card.decoding == {}
    assert card.name == "yolo11n"
    card = _card(_yolo(tmp_path / "m.onnx", 6, 50, description="Ultralytics YOLO11n model"))
    assert card.name == "Ultralytics" and card.classes == ["class0", "class1"]


def test_the_class_count_comes_from_whichever_output_axis_holds_it(tmp_path):
    # (1, 4 + nc, N) as exported; (1, N, 4 + nc) transposed; boxes only (4 rows) is not it
    assert _card(_yolo(tmp_path / "a.onnx", 7, 50)).classes == ["class0", "class1", "class2"]
    assert _card(_yolo(tmp_path / "b.onnx", 1200, 5)).classes == ["class0"]
    assert _card(_yolo(tmp_path / "c.onnx", 5, 1000)).classes == ["class0"]
    assert _card(_yolo(tmp_path / "f.onnx", 1000, 5)).classes == ["class0"]  # 1000: N
    # names that fit neither axis still give the classes
    assert _card(_yolo(tmp_path / "d.onnx", 9, 50, {0: "a", 1: "b"})).classes == ["a", "b"]
    with pytest.raises(ValueError, match="signature is not a known format"):
        _card(_yolo(tmp_path / "e.onnx", 4, 1200))


# -- what a new detector holds and says ---------------------------------------------------------
def test_a_new_detector_starts_unscaled_untimed_with_its_settings():
    d = OnnxDetector(DEFAULT_MODEL, provider="cpu", overlap=17, warmup=False)
    try:
        assert d.last_scale == 1.0 and d.last_timing == {} and d.overlap == 17
        assert d.auto_scale is True and d.name == "inscope-nuclei"
        assert d.class_names == tuple(d.card.classes)
    finally:
        d.close()


def test_a_card_without_a_name_or_classes_falls_back_to_the_file_and_object(tmp_path):
    from _support.onnx_models import build_centernet

    p = build_centernet(tmp_path / "blobs.onnx", card_overrides={"name": "", "classes": []})
    d = OnnxDetector(p, provider="cpu", warmup=False)
    try:
        assert d.name == "blobs" and d.class_names == ("object",)
    finally:
        d.close()


def test_the_detector_says_what_it_runs_on(caplog):
    import logging

    from inscope.detector.providers import LAST_CHOICE

    with caplog.at_level(logging.INFO, logger=od.__name__):
        d = OnnxDetector(DEFAULT_MODEL, provider="cpu", threads=2, warmup=False)
    try:
        line = next(r.getMessage() for r in caplog.records if r.name == od.__name__
                    and r.getMessage().startswith("detector "))
        assert line.startswith("detector inscope-nuclei (inscope-centernet) runs on ONNX "
                               "Runtime CPU provider, 2 threads")
        note = LAST_CHOICE.get("note", "")
        why = note.partition(" (")[2].rstrip(")")
        assert d.provider_note == note
        assert line.endswith(f" ({why})" if why else "2 threads")
    finally:
        d.close()


# -- a card checked against its model ------------------------------------------------------------
def _centernet(tmp_path, name="m.onnx", drop=(), offset=False, **overrides):
    """A stand-in CenterNet with its card, the card's *drop* keys ("input.name",
    "decoding.heatmap", ...) removed so that their defaults apply."""
    import json

    from _support.onnx_models import build_centernet

    from inscope.detector.card import ModelCard

    p = build_centernet(tmp_path / name, offset=offset, card_overrides=overrides)
    cp = ModelCard.path_for(p)
    card = json.loads(cp.read_text())
    for key in drop:
        part, _, field = key.partition(".")
        card[part].pop(field, None)
    cp.write_text(json.dumps(card))
    return p


def _loads(p):
    OnnxDetector(p, provider="cpu", warmup=False).close()


def test_a_card_that_leaves_out_the_usual_names_takes_the_defaults(tmp_path):
    _loads(_centernet(tmp_path, drop=("input.name", "decoding.heatmap", "decoding.size",
                                      "decoding.offset")))


@pytest.mark.parametrize("overrides", [
    {"input": {"name": "img"}},                  # no such input
    {"decoding": {"heatmap": "hm"}},             # no such output
    {"decoding": {"size": "wh"}},
    {"decoding": {"offset": "offset"}},          # the model has no offset output
])
def test_a_card_that_names_what_the_model_lacks_is_refused(tmp_path, overrides):
    with pytest.raises(ValueError, match="does not match its card"):
        _loads(_centernet(tmp_path, **overrides))


def test_an_offset_output_the_card_names_is_accepted(tmp_path):
    _loads(_centernet(tmp_path, offset=True, decoding={"offset": "offset"}))


def test_an_ultralytics_card_needs_one_input_and_one_three_axis_output(tmp_path):
    import json

    from inscope.detector.card import ModelCard

    y = _yolo(tmp_path / "y.onnx", 6, 50)
    card = {"name": "y", "format": "ultralytics", "classes": ["a", "b"],
            "input": {"name": "images", "channels": 3, "size": [320, 320], "multiple": 32,
                      "layout": "NCHW"}, "normalisation": {"method": "auto"}, "decoding": {}}
    ModelCard.path_for(y).write_text(json.dumps(card))
    _loads(y)
    c = _centernet(tmp_path, name="c.onnx")  # two 4-axis outputs
    ModelCard.path_for(c).write_text(json.dumps({**card, "name": "c"}))
    with pytest.raises(ValueError, match="format 'ultralytics'"):
        _loads(c)


# -- an Ultralytics export: the letterbox back to the frame ----------------------------------
@pytest.mark.parametrize("shape, want", [
    ((100, 200), [89.5, 39.5, 109.5, 59.5]),   # wide: bands above and below (top 80)
    ((200, 100), [39.5, 89.5, 59.5, 109.5]),   # tall: bands left and right (left 80)
    ((640, 640), [287.5, 287.5, 351.5, 351.5]),  # larger than the input: shrunk by 2
])
def test_an_ultralytics_box_maps_from_the_letterbox_to_the_frame(tmp_path, shape, want):
    # the stand-in always answers one box centred at (160, 160), 32 x 32, of the 320 x 320
    # letterboxed input; pixel centres at integers in the frame
    pred = np.zeros((5, 50), np.float32)
    pred[:, 0] = [160, 160, 32, 32, 0.9]
    d = OnnxDetector(_yolo_pred(tmp_path / "y.onnx", pred), provider="cpu",
                     score_threshold=0.5, warmup=False)
    try:
        got = d.detect(np.zeros(shape, np.float32))
        assert len(got) == 1
        np.testing.assert_allclose(got.boxes[0], want, atol=1e-3)
        tm = d.last_timing
        total = (got.stamps[STAMP_DETECT_END] - got.stamps[STAMP_DETECT_START]) / 1e6
        assert tm["total_ms"] == pytest.approx(total)
        parts = [tm["pre_ms"], tm["run_ms"], tm["post_ms"]]
        assert all(0 < p <= total for p in parts) and sum(parts) <= total + 1e-3
    finally:
        d.close()


def _yolo_pred(path, pred):
    from _support.onnx_models import build_ultralytics

    return build_ultralytics(path, pred, {0: "cell"}, size=320)


def test_hot_pixels_neither_become_nuclei_nor_hide_them(shipped_detector):
    """0.1 % of a simulated frame's pixels stuck at full scale (an uncorrected sCMOS):
    without the normalisation's hot-pixel step the network found 60 false boxes per
    frame and lost a fifth of the nuclei (benchmarks/hot_pixels.py); with it the boxes
    are those of the clean frame. The card says the step (``hot_pixel_sigma``)."""
    from inscope.detector.datasets import simulated_samples
    from inscope.detector.metrics import iou_matrix

    det = shipped_detector
    assert det.card.normalisation["hot_pixel_sigma"] == 8.0
    s = simulated_samples(1, seed=981000)[0]
    hot = s.image.copy()
    hot[np.random.default_rng(0).random(hot.shape) < 0.001] = 65535
    clean, dirty = det.detect(s.image), det.detect(hot)
    thr = det.card.decoding["score_threshold"]
    a, b = clean.boxes[clean.scores >= thr], dirty.boxes[dirty.scores >= thr]
    assert len(a) > 50
    iou = iou_matrix(a, b)
    assert (iou.max(1) >= 0.9).mean() >= 0.97  # the clean frame's boxes, in place
    assert abs(len(b) - len(a)) <= 2
    base = dict(det.card.normalisation)
    try:  # what it was before the step: the test bites
        det.card.normalisation = {**base, "hot_pixel_sigma": None}
        off = det.detect(hot)
        assert abs(int((off.scores >= thr).sum()) - len(a)) > 10
    finally:
        det.card.normalisation = base


# -- the network input kept between frames ------------------------------------------------------
@pytest.mark.parametrize(("first", "then"), [((510, 512), (484, 512)), ((512, 510), (512, 484)),
                                             ((484, 512), (510, 512))])
def test_a_frame_after_another_of_the_same_padded_size_sees_none_of_it(det, first, then):
    """The zero-padded input is kept between frames; a frame a few rows or columns
    smaller than the one before pads to the same input (both to 512, the model's
    multiple of 32), and must find zeros - not the
    last frame's nuclei - where it has no pixels: the same boxes as a detector that saw
    only it."""
    det.tile = False
    det.auto_scale = False
    big = _nuclei(*first, n=60, seed=3)
    small = _nuclei(*then, n=40, seed=4)
    det.detect(big)
    after = det.detect(small)
    fresh = OnnxDetector(DEFAULT_MODEL, provider="cpu", auto_scale=False, tile=False)
    try:
        alone = fresh.detect(small)
    finally:
        fresh.close()
    assert len(after) == len(alone) > 10
    np.testing.assert_allclose(after.boxes, alone.boxes, atol=1e-4)
