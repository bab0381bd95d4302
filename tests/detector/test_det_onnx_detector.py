"""OnnxDetector on real ONNX Runtime sessions of small models built in the test."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _support.onnx_models import BOX, blob_scene, build_centernet, grid_centres

from inscope.acquisition.frame import Frame
from inscope.detector import STAMP_DETECT_END, STAMP_DETECT_START, Detector
from inscope.detector.card import ModelCard
from inscope.detector.classical import ClassicalDetector
from inscope.detector.metrics import evaluate
from inscope.detector.onnx_detector import DEFAULT_MODEL, OnnxDetector, load_detector
from inscope.detector.providers import short_name


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_centernet(tmp_path_factory.mktemp("m") / "standin.onnx")


@pytest.fixture(scope="module")
def det(model):
    d = OnnxDetector(model, provider="cpu", threads=1)
    yield d
    d.close()


def truth_boxes(centres, side=BOX):
    c = np.asarray(centres, np.float32)
    return np.concatenate([c - side / 2, c + side / 2], axis=1)


def test_finds_every_blob_at_the_right_place(det):
    shape = (250, 330)  # not a multiple of 32: padded internally
    centres = grid_centres(shape)
    img = blob_scene(shape, centres)
    d = det.detect(img)
    assert isinstance(det, Detector)
    assert len(d) == len(centres)
    # blob centres sit on 4-px cell centres, so decoding is exact up to float error
    got = d.centers[np.lexsort((d.centers[:, 0], d.centers[:, 1]))]
    want = centres[np.lexsort((centres[:, 0], centres[:, 1]))]
    assert np.abs(got - want).max() < 1e-3
    assert np.allclose(d.boxes[:, 2] - d.boxes[:, 0], BOX)
    assert d.class_names == ("cell",) and np.all(d.class_ids == 0)
    assert np.all((d.scores > 0) & (d.scores <= 1))
    assert np.all(np.diff(d.scores) <= 0), "sorted by score"


def test_a_smaller_frame_after_a_larger_one_sees_zero_padding(model):
    """The padded network input is kept between frames: a 250 x 330 frame after a
    256 x 352 one (the same padded size) must not see the larger frame's pixels in its
    padding, or objects that are not there appear at its edge."""
    d = OnnxDetector(model, provider="cpu", threads=1)
    small = (250, 330)
    centres = grid_centres(small)
    img = blob_scene(small, centres)
    first = d.detect(img)
    # bright objects just outside the small frame's bottom and right edges
    edge = np.array([[337.0, 120.0], [160.0, 252.0], [337.0, 252.0]], np.float32)
    d.detect(blob_scene((256, 352), np.concatenate([centres, edge]), seed=5))
    again = d.detect(img)
    d.close()
    assert len(again) == len(first)
    np.testing.assert_allclose(again.boxes, first.boxes, atol=1e-5)
    np.testing.assert_allclose(again.scores, first.scores, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_every_supported_dtype_gives_the_same_boxes(det, dtype):
    shape = (192, 224)
    centres = grid_centres(shape, jitter=6, seed=3)
    ref = blob_scene(shape, centres, dtype=np.float64, seed=1)
    img = (ref / ref.max() * 250).astype(dtype) if dtype == np.uint8 else ref.astype(dtype)
    d = det.detect(img)
    r = evaluate([(d.boxes, d.scores)], [truth_boxes(centres)])
    assert r.tp == len(centres) and r.fp == 0


def test_frame_stamps_index_and_timing(det):
    shape = (128, 128)
    f = Frame(blob_scene(shape, grid_centres(shape)), index=41)
    d = det.detect(f)
    assert d.frame_index == 41
    for k in (STAMP_DETECT_START, STAMP_DETECT_END):
        assert k in f.stamps and k in d.stamps
    assert f.stamps["ready"] <= f.stamps[STAMP_DETECT_START] <= f.stamps[STAMP_DETECT_END]
    assert set(det.last_timing) >= {"pre_ms", "run_ms", "post_ms", "total_ms"}
    assert det.detect(np.zeros((64, 64), np.uint16)).frame_index == -1


def test_a_few_nan_pixels_are_tolerated(det):
    shape = (128, 160)
    centres = grid_centres(shape)
    img = blob_scene(shape, centres, dtype=np.float32)
    img[5, 7] = np.nan
    img[100, 3] = np.inf
    assert len(det.detect(img)) == len(centres)


@pytest.mark.parametrize("bad, words", [
    (np.full((64, 64), np.nan, np.float32), "no finite pixel"),
    (np.zeros((0, 64), np.uint16), "empty"),
    (np.zeros((64, 64, 3), np.uint8), "img[..., 1]"),
    (np.zeros((2, 64, 64), np.uint16), "stack[i]"),
    (np.zeros((1, 1, 64, 64), np.float32), "2-D"),
    ([[1, 2], [3, 4]], "numpy.asarray"),
    (np.zeros((64, 64), np.complex64), "dtype"),
])
def test_bad_input_says_what_and_how_to_fix(det, bad, words):
    with pytest.raises(ValueError, match=None) as e:
        det.detect(bad)
    assert words in str(e.value)


def test_offset_head_is_used(tmp_path):
    d = OnnxDetector(build_centernet(tmp_path / "o.onnx", offset=True), provider="cpu")
    assert d.card.decoding["offset"] == "offset"
    shape = (128, 128)
    centres = grid_centres(shape)
    got = d.detect(blob_scene(shape, centres))
    assert len(got) == len(centres)
    assert np.abs(np.sort(got.centers[:, 0]) - np.sort(centres[:, 0])).max() < 1e-3


def test_rescales_to_the_trained_object_size(model):
    # blobs twice the trained size; the detector shrinks the frame by the card's range
    shape = (320, 384)
    centres = grid_centres(shape, spacing=80, margin=48)
    img = blob_scene(shape, centres, sigma=6.0)
    d = OnnxDetector(model, provider="cpu", object_size_px=32)
    got = d.detect(img)
    assert len(got) == len(centres)
    factor = np.sqrt(12 * 20) / 32
    assert np.allclose(got.boxes[:, 2] - got.boxes[:, 0], BOX / factor, rtol=0.02)
    r = evaluate([(got.boxes, got.scores)], [truth_boxes(centres, BOX / factor)],
                 iou_threshold=0.5)
    assert r.tp == len(centres)
    # the same from µm and the frame's pixel size
    d2 = OnnxDetector(model, provider="cpu", object_size_um=16.0)
    got2 = d2.detect(Frame(img, 0, pixel_size_um=0.5))
    assert np.allclose(np.sort(got2.boxes, axis=0), np.sort(got.boxes, axis=0))


def test_tiles_find_a_cell_on_the_seam_once(model):
    shape = (256, 256)
    det = OnnxDetector(model, provider="cpu", tile=128, overlap=32)
    tiles = det._tiles(*shape)
    assert len(tiles) > 1
    # put cells right on the ownership seams and on the raw tile edges
    seams = sorted({t.own_x1 for t in tiles if np.isfinite(t.own_x1)}
                   | {float(t.x0) for t in tiles if t.x0 > 0})
    centres = np.array([[s, y] for s in seams for y in (40.0, 130.0, 210.0)])
    centres = (centres // 4) * 4 + 1.5
    img = blob_scene(shape, centres)
    got = det.detect(img)
    whole = OnnxDetector(model, provider="cpu", tile=False).detect(img)
    assert len(whole) == len(centres)
    assert len(got) == len(centres), "each seam cell exactly once"
    d = np.linalg.norm(got.centers[:, None] - centres[None], axis=2)
    assert np.all(d.min(axis=0) < 1e-3)


def test_large_frame_whole_and_tiled_agree(model):
    shape = (1024, 1024)
    centres = grid_centres(shape, spacing=64, jitter=8, seed=5)
    img = blob_scene(shape, centres, seed=2)
    whole = OnnxDetector(model, provider="cpu", warmup=False).detect(img)
    tiled = OnnxDetector(model, provider="cpu", tile=True, warmup=False).detect(img)
    assert len(whole) == len(tiled) == len(centres)
    a = whole.boxes[np.lexsort(whole.boxes.T[::-1])]
    b = tiled.boxes[np.lexsort(tiled.boxes.T[::-1])]
    assert np.allclose(a, b, atol=1e-3)


def test_provider_choice_is_real_and_logged_once(model, caplog, capfd):
    with caplog.at_level(logging.INFO, logger="inscope.detector"):
        d = OnnxDetector(model, provider="auto")
    assert d.provider in ("tensorrt", "cuda", "cpu")
    assert short_name(d.session.get_providers()[0]) == d.provider
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("inscope.detector.")]
    assert len(lines) == 1 and d.provider.upper() in lines[0]
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "Failed to load library" not in out + err
    if d.provider == "cpu":  # no GPU here: asking for CUDA explicitly must say so
        with pytest.raises(RuntimeError, match="cannot run on this machine") as e:
            OnnxDetector(model, provider="cuda")
        assert "\x1b" not in str(e.value) and "onnxruntime_src" not in str(e.value)
    with pytest.raises(ValueError, match="Unknown provider"):
        OnnxDetector(model, provider="gpu-please")


@pytest.mark.parametrize("cores", [2, 4, 16, 64])
def test_threads_sleep_by_default_on_any_machine(model, monkeypatch, cores):
    # spinning threads take the cores the camera, control and output threads need: the
    # loop's p99 was worse spinning on 2 cores and on 16 (default_spinning's docstring)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    d = OnnxDetector(model, provider="cpu", threads=2)
    opts = d.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    d.close()


@pytest.mark.parametrize("spinning, spin, stop", [
    (True, "1", "0"), (False, "0", "0"), ("on", "1", "0"), ("off", "0", "0"),
    ("run", "1", "1"), ("RUN", "1", "1"), (None, "0", "0")])
def test_thread_spinning_is_set_on_the_session(model, spinning, spin, stop):
    # "run": the threads spin between a run's operators and stop when it returns
    # (ONNX Runtime's force_spinning_stop); True/False are the older "on"/"off"
    from inscope.detector.providers import session_spinning

    d = OnnxDetector(model, provider="cpu", threads=2, spinning=spinning)
    opts = d.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == spin
    assert opts.get_session_config_entry("session.force_spinning_stop") == stop
    want = {("1", "0"): "on", ("0", "0"): "off", ("1", "1"): "run"}[spin, stop]
    assert session_spinning(d.session) == want
    assert len(d.detect(np.zeros((64, 64), np.uint16)).boxes) == 0
    d.close()


@pytest.mark.parametrize("bad", ["fast", "", "1", 2])
def test_an_unknown_spinning_mode_is_one_line_naming_the_modes(model, bad):
    with pytest.raises(ValueError) as e:
        OnnxDetector(model, provider="cpu", threads=2, spinning=bad)
    msg = str(e.value)
    assert "\n" not in msg and repr(bad) in msg
    assert all(f"'{m}'" in msg for m in ("off", "run", "on"))


def test_provider_failure_reason_is_one_plain_sentence():
    from inscope.detector.providers import failure_reason

    # what onnxruntime-gpu 1.2x prints on a machine without CUDA libraries
    cuda = ("\x1b[1;31m2026-11-22 06:32:42.457 [E:onnxruntime:Default, provider_bridge_ort.cc"
            ":2458 operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort"
            ".cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() "
            "[ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/libonnxruntime_"
            "providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file:"
            " No such file or directory\n\x1b[m\n\x1b[0;93m2026-11-22 06:32:42.457 [W:"
            "onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProvider"
            "FactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and "
            "CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements "
            "page (https://onnxruntime.ai/docs/), make sure they're in the PATH\x1b[m")
    assert failure_reason(cuda) == ("libcublasLt.so.13: cannot open shared object file: No "
                                    "such file or directory; Require cuDNN 9.* and CUDA 13.*")
    trt = ("*************** EP Error ***************\nEP Error /onnxruntime_src/x.cc:729 void "
           "f() Please install TensorRT libraries as mentioned in the GPU requirements page, "
           "make sure they're in the PATH\n when using ['TensorrtExecutionProvider']\n"
           "Falling back to ['CPUExecutionProvider'] and retrying.\n****")
    assert failure_reason(trt) == ("Please install TensorRT libraries as mentioned in the GPU "
                                   "requirements page")
    assert failure_reason("") == "no message"


def test_model_without_card_or_known_signature_is_refused(tmp_path):
    p = build_centernet(tmp_path / "nocard.onnx", card=False)
    with pytest.raises(ValueError) as e:
        OnnxDetector(p, provider="cpu")
    msg = str(e.value)
    assert "image" in msg and "heatmap" in msg and "nocard.json" in msg
    # an inscope model copied without its card is told so, not "not a known format"
    assert "looks like an inscope CenterNet model" in msg and "is missing" in msg
    assert "\n" not in msg


def test_card_that_does_not_match_the_model_is_refused(tmp_path):
    p = build_centernet(tmp_path / "m.onnx", heatmap_name="hm")
    card = ModelCard.load(ModelCard.path_for(p))
    card.decoding["heatmap"] = "heatmap"
    card.save(ModelCard.path_for(p))
    with pytest.raises(ValueError, match="does not match its card") as e:
        OnnxDetector(p, provider="cpu")
    assert "'hm'" in str(e.value) or "hm[" in str(e.value)


def test_card_of_another_file_is_refused(tmp_path):
    p = build_centernet(tmp_path / "m.onnx")
    card = ModelCard.load(ModelCard.path_for(p))
    card.sha256 = "0" * 64
    card.save(ModelCard.path_for(p))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        OnnxDetector(p, provider="cpu")


@pytest.mark.parametrize(("section", "key", "value", "said"), [
    ("decoding", "stride", "four", "decoding.stride is 'four'; give a number"),
    ("decoding", "score_threshold", True, "decoding.score_threshold is True"),
    ("normalisation", "high", [99.8], "normalisation.high is [99.8]"),
    ("scale", "object_size_px", [7, "72"], "scale.object_size_px is [7, '72']"),
    ("scale", "object_size_px", 20, "scale.object_size_px is 20"),
    ("decoding", None, "stride 4", "'decoding' is 'stride 4'"),
])
def test_a_card_setting_of_the_wrong_type_is_one_line_naming_card_and_key(
        tmp_path, section, key, value, said):
    """Read only when the first frame was decoded, a string there ended in "could not
    convert string to float: 'four'", naming neither the card nor the key."""
    p = build_centernet(tmp_path / "m.onnx")
    path = ModelCard.path_for(p)
    card = ModelCard.load(path)
    if key is None:
        setattr(card, section, value)
    else:
        getattr(card, section)[key] = value
    card.save(path)
    with pytest.raises(ValueError) as e:
        OnnxDetector(p, provider="cpu")
    msg = str(e.value)
    assert str(path) in msg and said in msg and "\n" not in msg, msg


def test_a_card_without_decoding_loads_with_one_warning(tmp_path, caplog):
    """A hand-written or trimmed card without 'decoding' runs on the plain defaults,
    which lose a trained model's offset range, centre vote and calibration: said once."""
    p = build_centernet(tmp_path / "m.onnx")
    path = ModelCard.path_for(p)
    card = ModelCard.load(path)
    card.decoding = {}
    card.save(path)
    with caplog.at_level(logging.WARNING):
        OnnxDetector(p, provider="cpu")
    said = [r.getMessage() for r in caplog.records if "no 'decoding'" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        OnnxDetector(build_centernet(tmp_path / "full.onnx"), provider="cpu")
    assert not [r for r in caplog.records if "no 'decoding'" in r.getMessage()]


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="classical"):
        OnnxDetector(tmp_path / "nope.onnx")


def test_load_detector(model):
    assert isinstance(load_detector("classical", object_size_px=20), ClassicalDetector)
    d = load_detector(model, provider="cpu", threads=1, score_threshold=0.5)
    assert isinstance(d, OnnxDetector) and d.score_threshold == 0.5


def test_shipped_default_model():
    """The shipped model (it ships inside the package) finds every blob of a known grid,
    each once, centred, and the blobs outscore anything else it reports."""
    assert DEFAULT_MODEL.exists(), f"shipped model missing: {DEFAULT_MODEL}"
    d = OnnxDetector(provider="cpu")
    assert d.format == "inscope-centernet"
    shape = (256, 256)
    rng_size = d.card.scale.get("object_size_px", [16, 32])
    size = float(np.sqrt(np.min(rng_size) * np.max(rng_size)))
    centres = grid_centres(shape, spacing=int(2.5 * size) // 4 * 4, margin=int(size))
    img = blob_scene(shape, centres, sigma=size / 4)
    got = d.detect(img)
    n = len(centres)
    assert n >= 9 and len(got) >= n
    top = got.select(np.argsort(-got.scores)[:n])
    c = np.stack([(top.boxes[:, 0] + top.boxes[:, 2]) / 2,
                  (top.boxes[:, 1] + top.boxes[:, 3]) / 2], axis=1)
    dist = np.hypot(*(c[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    # the n best boxes sit on the n blobs, one each, within 1.5 px of the true centre
    assert sorted(dist.argmin(1).tolist()) == list(range(n)), dist.min(1)
    assert dist.min(1).max() < 1.5, dist.min(1)
    # box size follows the blob (a Gaussian of sigma s spans ~4 s = size)
    w = top.boxes[:, 2] - top.boxes[:, 0]
    assert np.all((w > 0.4 * size) & (w < 1.6 * size)), w
    with pytest.raises(FileNotFoundError, match="inscope train"):
        OnnxDetector(DEFAULT_MODEL.with_name("no-such-model.onnx"))


@pytest.mark.parametrize("shape", [(96, 100), (128, 160), (200, 300), (130, 90)])
def test_a_graph_fixed_to_one_input_size_gets_exactly_that_size(tmp_path, shape):
    """An export whose ONNX input is fixed at 1 x 1 x 128 x 160 (no size in the card:
    read from the graph): ONNX Runtime refuses any other shape, so every frame - smaller,
    equal, larger, taller than wide - goes in as 128 x 160, tiled and zero-padded at the
    bottom and right, and every blob comes back once, where it is."""
    import onnxruntime as ort

    p = build_centernet(tmp_path / "fixed.onnx", input_hw=(128, 160),
                        card_overrides={"scale": {"overlap": 32}})
    with pytest.raises(Exception, match="(?i)dimension"):  # the graph really is fixed
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
            None, {"image": np.zeros((1, 1, 96, 128), np.float32)})
    det = OnnxDetector(p, provider="cpu")
    assert det._fixed_hw == (128, 160)
    centres = grid_centres(shape, spacing=36, margin=20)
    got = det.detect(blob_scene(shape, centres))
    assert len(got) == len(centres)
    d = np.linalg.norm(got.centers[:, None] - centres[None], axis=2)
    assert np.all(d.min(axis=0) < 1e-3)


@pytest.mark.parametrize("shape", [(132, 156), (100, 120), (200, 300)])
def test_a_graph_fixed_to_a_size_that_is_no_multiple_of_32_runs(tmp_path, shape):
    """An export fixed at 1 x 1 x 132 x 156 (multiples of the stride, not of the card's
    padding multiple 32): a frame of exactly that size goes in as it is (it was padded
    to 160 x 160, which ONNX Runtime refused), smaller and larger ones tiled up to it."""
    p = build_centernet(tmp_path / "fixed.onnx", input_hw=(132, 156),
                        card_overrides={"scale": {"overlap": 32}})
    det = OnnxDetector(p, provider="cpu")
    centres = grid_centres(shape, spacing=36, margin=20)
    got = det.detect(blob_scene(shape, centres))
    assert len(got) == len(centres)
    d = np.linalg.norm(got.centers[:, None] - centres[None], axis=2)
    assert np.all(d.min(axis=0) < 1e-3)


def test_fixed_input_size_model_is_tiled_and_padded(tmp_path):
    # the card pins the input to 128x128: frames of any size go through 128x128 tiles
    p = build_centernet(tmp_path / "fixed.onnx",
                        card_overrides={"input": {"size": [128, 128]},
                                        "scale": {"overlap": 32}})
    det = OnnxDetector(p, provider="cpu")
    assert det._fixed_hw == (128, 128)
    for shape in [(96, 100), (200, 300)]:
        centres = grid_centres(shape, spacing=36, margin=20)
        got = det.detect(blob_scene(shape, centres))
        assert len(got) == len(centres)
        d = np.linalg.norm(got.centers[:, None] - centres[None], axis=2)
        assert np.all(d.min(axis=0) < 1e-3)


def test_the_first_frame_after_the_warm_up_imports_nothing():
    """The live loop's first frame must not wait for an import. The warm-up frame is
    blank - no boxes - so a module imported only on a path that boxes take was paid by
    the first real frame: scipy's k-d tree in the overlap suppression, 0.3-0.6 s here,
    and the first detections published that late. Run in a fresh interpreter, where
    nothing else has imported it yet."""
    code = textwrap.dedent("""
        import sys
        import cv2
        import numpy as np
        from inscope.detector.onnx_detector import OnnxDetector
        img = np.full((512, 512), 300, np.uint16)
        for y in range(20, 500, 30):  # touching pairs too: boxes that overlap
            for x in range(20, 500, 30):
                cv2.circle(img, (x, y), 10 + (x // 30) % 3 * 2, 3000, -1)
        det = OnnxDetector(provider="cpu", threads=1)
        before = set(sys.modules)
        n = len(det.detect(img).boxes)
        print(n, sorted(set(sys.modules) - before))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    n, new = r.stdout.strip().split(" ", 1)
    assert int(n) > 100 and new == "[]", r.stdout
