"""Triton: the exported model repository and the remote detector, against a real server.

The exported network (uint16 in, normalisation and padding inside) is checked against the
local detector's own pre-processing in ONNX Runtime. The remote detector is checked
against a real Triton server (KServe v2 over gRPC): PyTriton's bundled ``tritonserver``
serving the exported model, started by :mod:`benchmarks.triton_local` in a virtual
environment built from the system Python (cached in the pytest cache; ~1 min to build
once). Where that server cannot start, those tests skip and say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from benchmarks.triton_local import (
    LocalTritonServer,
    ServerUnavailable,
    free_port,
    group_alive,
    server_python,
)
from inscope.acquisition.frame import Frame
from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
from inscope.cli import main as cli_main
from inscope.detector import STAMP_DETECT_END, STAMP_DETECT_START
from inscope.detector import preprocess as pp
from inscope.detector.onnx_detector import DEFAULT_MODEL, OnnxDetector, load_detector
from inscope.detector.triton_detector import (
    RemoteDetectorUnavailable,
    TritonAddress,
    TritonDetector,
)
from inscope.detector.triton_export import CARD_PARAMETER, INPUT_NAME, export_triton

MODEL = "inscope-nuclei"


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("triton-repo")
    export_triton(d)
    return d


@pytest.fixture(scope="module")
def local() -> OnnxDetector:
    return OnnxDetector(provider="cpu", threads=1)


@pytest.fixture(scope="module")
def wrapped(repo) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(repo / MODEL / "1" / "model.onnx"), so,
                                providers=["CPUExecutionProvider"])


def _local_network_outputs(det: OnnxDetector, img: np.ndarray) -> list[np.ndarray]:
    """What the local detector feeds its session: normalised, zero-padded to 32; without
    the hot-pixel step, which the client takes before it sends a frame (the server's
    graph only stretches; tested against a real server below), and without the sparse
    anchor, which the server's graph does not have (docs/scale-out.md)."""
    h, w = img.shape
    buf = np.zeros((1, 1, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    spec = {**det.card.normalisation, "hot_pixel_sigma": None, "sparse_sigma": None}
    pp.normalise(img, spec, out=buf[0, 0, :h, :w])
    return det.session.run(["heatmap", "size", "offset"], {"image": buf})


def _frames(n: int, seed: int = 3, **cfg) -> list[Frame]:
    scope = SimulatedMicroscope(SimConfig(seed=seed, realtime=False, **cfg))
    try:
        out = []
        for i in range(n):
            scope.move_xy(150.0 * i, -90.0 * i)
            out.append(scope.snap())
        return out
    finally:
        scope.close()


def _cache_dir(config: pytest.Config) -> Path:
    env = os.environ.get("INSCOPE_TRITON_CACHE")
    if env:
        return Path(env)
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    return (Path(cache.mkdir("inscope-triton")) if cache is not None
            else Path(tempfile.gettempdir()) / "inscope-triton")


@pytest.fixture(scope="session")
def triton_python(pytestconfig) -> Path:
    try:
        return server_python(_cache_dir(pytestconfig))
    except ServerUnavailable as e:
        pytest.skip(f"no real Triton server here: {e}")


@pytest.fixture(scope="module")
def server(triton_python, repo):
    srv = LocalTritonServer(triton_python, repo, MODEL, threads=1)
    try:
        srv.start()
    except ServerUnavailable as e:
        pytest.skip(f"no real Triton server here: {e}")
    yield srv
    srv.stop()
    assert not group_alive(srv.pgid), "the server left processes behind"


# -- the exported repository -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(512, 512), (300, 470), (1100, 1030)])
def test_exported_network_gives_the_local_detectors_outputs(wrapped, local, shape):
    # 1100x1030 at stride 4 is over 65536 samples: the percentile stride must grow to 5
    # in the graph as in preprocess.subsample; 300x470 needs padding to 320x480
    rng = np.random.default_rng(sum(shape))
    img = (rng.gamma(2.0, 300.0, size=shape) + 100).astype(np.uint16)
    img[40:80, 60:100] += 3000  # a bright object, so the percentiles differ from noise
    got = wrapped.run(["heatmap", "size", "offset"], {INPUT_NAME: img[None, None]})
    want = _local_network_outputs(local, img)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        # float32 rounding only: the graph shifts then scales, the local detector does
        # x * a + b in one rounding; a wrong percentile or stride is off by far more
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", [
    {"method": "percentile", "low": 2.0, "high": 99.0, "subsample": 2, "clip": True},
    {"method": "scale", "divisor": 4095.0},
    {"method": "none"},
])
@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])
def test_prefix_reproduces_every_normalisation_of_the_card(spec, dtype):
    """The prefix alone (its output is the network input): every card normalisation,
    clipping and padding to the multiple, against preprocess.normalise."""
    from onnx import TensorProto, helper

    from inscope.detector.triton_export import normalisation_prefix

    nodes, inits, vi = normalisation_prefix(spec, 16, 17, dtype, "image")
    out = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, "h", "w"])
    m = helper.make_model(helper.make_graph(nodes, "prefix", [vi], [out], inits),
                          opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    hi = {"uint8": 255, "uint16": 4095, "float32": 3000}[dtype]
    img = rng.integers(0, hi, size=(70, 45)).astype(dtype)
    got = s.run(None, {INPUT_NAME: img[None, None]})[0]
    want = np.zeros((1, 1, 80, 48), np.float32)
    pp.normalise(img, spec, out=want[0, 0, :70, :45])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if spec.get("clip"):
        assert got.min() == 0.0 and got.max() == 1.0


def test_each_image_of_a_batch_is_normalised_on_its_own(wrapped):
    rng = np.random.default_rng(7)
    imgs = np.stack([(rng.gamma(2.0, 100.0 * (i + 1), size=(128, 160)) + 50 * i)
                     .astype(np.uint16) for i in range(3)])[:, None]
    together = wrapped.run(["heatmap"], {INPUT_NAME: imgs})[0]
    for i in range(3):
        alone = wrapped.run(["heatmap"], {INPUT_NAME: imgs[i:i + 1]})[0]
        np.testing.assert_allclose(together[i], alone[0], rtol=0, atol=1e-6)


def test_a_flat_frame_is_not_divided_by_zero(wrapped, local):
    img = np.full((64, 64), 700, np.uint16)  # high == low percentile: scale 1, as locally
    got = wrapped.run(["heatmap"], {INPUT_NAME: img[None, None]})[0]
    want = _local_network_outputs(local, img)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_uint8_export_matches_the_local_detector(tmp_path, local):
    ex = export_triton(tmp_path, input_dtype="uint8", name="nuclei8")
    s = ort.InferenceSession(str(ex.onnx_path), providers=["CPUExecutionProvider"])
    img = _frames(1, bit_depth=8)[0].pixels
    assert img.dtype == np.uint8
    got = s.run(["heatmap", "size"], {INPUT_NAME: img[None, None]})
    want = _local_network_outputs(local, img)[:2]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)  # float32 rounding


def test_config_pbtxt_is_a_valid_triton_config(repo):
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse((repo / MODEL / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.name == MODEL and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == 8
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        (INPUT_NAME, "TYPE_UINT16", [1, -1, -1])]
    assert [(o.name, mc.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output] == [
        ("heatmap", "TYPE_FP32", [1, -1, -1]), ("size", "TYPE_FP32", [2, -1, -1]),
        ("offset", "TYPE_FP32", [2, -1, -1])]
    assert not cfg.instance_group  # Triton picks: the GPU where there is one
    card = json.loads(cfg.parameters[CARD_PARAMETER].string_value)
    assert card["classes"] == ["nucleus"] and card["input"]["dtype"] == "uint16"
    assert card["decoding"]["stride"] == 4
    # the ONNX file agrees with its config: same input name/type, batch axis first
    m = onnx.load(str(repo / MODEL / "1" / "model.onnx"))
    (inp,) = m.graph.input
    assert inp.name == INPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT16
    assert [o.name for o in m.graph.output] == ["heatmap", "size", "offset"]
    # on the wire a uint16 frame is half the bytes of the float32 the network runs on
    assert np.dtype(np.uint16).itemsize * 2 == np.dtype(np.float32).itemsize


def test_export_cli_options_and_refusals(tmp_path, capsys):
    assert cli_main(["export-triton", str(tmp_path), "--name", "n2", "--max-batch", "16",
                     "--queue-delay-us", "500", "--instance-kind", "gpu", "--instances",
                     "2"]) == 0
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse((tmp_path / "n2" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.max_batch_size == 16 and cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, mc.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] \
        == [(2, "KIND_GPU")]
    capsys.readouterr()
    # an existing model folder is not overwritten
    assert cli_main(["export-triton", str(tmp_path), "--name", "n2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    # a model without a card is refused with the reason
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(DEFAULT_MODEL.read_bytes())
    assert cli_main(["export-triton", str(tmp_path), "--model", str(bare)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model card" in err


# -- addresses and an unreachable server -----------------------------------------------
def test_triton_addresses_parse_with_their_settings():
    a = TritonAddress.parse("triton://gpu-1:8101/inscope-nuclei?timeout=0.25&fallback=local")
    assert (a.host, a.port, a.model, a.timeout_s, a.fallback) == (
        "gpu-1", 8101, "inscope-nuclei", 0.25, "local")
    d = TritonAddress.parse("triton://10.0.0.5/m")
    assert (d.port, d.timeout_s, d.retry_s, d.fallback) == (8001, 1.0, 2.0, None)
    for bad, words in [("triton://host:8001/", "Bad Triton address"),
                       ("triton://host:99999/m", "Bad port"),
                       ("triton://h/m?timout=1", "Unknown setting"),
                       ("triton://h/m?timeout=-1", "positive"),
                       ("http://h:8001/m", "Not a Triton address")]:
        with pytest.raises(ValueError, match=words):
            TritonAddress.parse(bad)


def test_unreachable_server_is_one_clear_line():
    port = free_port()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(RemoteDetectorUnavailable) as ei:
        load_detector(f"triton://127.0.0.1:{port}/{MODEL}?connect_timeout=1")
    assert time.monotonic() - t < 10
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"127.0.0.1:{port}" in msg and "unreachable" in msg and "fallback=local" in msg


def test_unreachable_server_with_fallback_detects_locally(local):
    port = free_port()
    det = load_detector(f"triton://127.0.0.1:{port}/{MODEL}?connect_timeout=0.5&retry=60"
                        "&fallback=local", provider="cpu", threads=1)
    try:
        assert isinstance(det, TritonDetector) and not det.connected
        frame = _frames(1)[0]
        got = det.detect(frame)
        assert det.last_source == "fallback"
        want = local.detect(frame.pixels)
        assert len(got) == len(want) > 20
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
    finally:
        det.close()


def test_run_command_says_the_server_is_unreachable_in_one_line(capsys):
    port = free_port()
    rc = cli_main(["run", "--backend", "sim", "--frames", "3", "--no-zmq", "--no-window",
                   "--model", f"triton://127.0.0.1:{port}/{MODEL}?connect_timeout=0.5"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and "unreachable" in err and str(port) in err


# -- a real server -----------------------------------------------------------------------
def test_remote_detections_equal_the_local_detector(server, local):
    det = load_detector(server.address)
    try:
        assert det.class_names == ("nucleus",) and det.name == MODEL
        for frame in _frames(3):
            ref = local.detect(frame.pixels.copy())
            got = det.detect(frame)
            assert det.last_source == "triton"
            assert len(got) == len(ref) > 20
            np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
            np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
            np.testing.assert_array_equal(got.class_ids, ref.class_ids)
            # the same stamps as the local detector, on the frame and the detections
            assert got.frame_index == frame.index
            assert set(got.stamps) == set(frame.stamps) >= {STAMP_DETECT_START,
                                                            STAMP_DETECT_END}
            assert frame.stamps["ready"] <= got.stamps[STAMP_DETECT_START] < got.stamps[
                STAMP_DETECT_END]
            assert det.last_timing["run_ms"] > 0
    finally:
        det.close()


def test_the_client_lowers_hot_pixels_as_the_local_detector_does(server, local):
    """The server's graph stretches the frame but has no hot-pixel step: the client
    takes it before sending, so a frame with stuck pixels gives the local boxes."""
    det = load_detector(server.address)
    try:
        frame = _frames(1, seed=5)[0]
        hot = frame.pixels.copy()
        hot[np.random.default_rng(2).random(hot.shape) < 0.002] = 65535
        ref = local.detect(hot.copy())
        got = det.detect(hot)
        assert det.last_source == "triton" and len(got) == len(ref) > 20
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
    finally:
        det.close()


def test_the_live_service_runs_on_the_server(server, tmp_path, capsys):
    summary = tmp_path / "summary.json"
    rc = cli_main(["run", "--backend", "sim", "--frames", "15", "--no-zmq", "--no-window",
                   "--no-progress", "--summary", str(summary), "--model",
                   server.address + "?timeout=5"])
    capsys.readouterr()
    assert rc == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 15 and s["detect_errors"] == 0
    assert s["detections_per_frame"] > 20  # the simulated slide is dense
    assert s["detector"]["name"] == MODEL
    assert s["detector"]["provider"] == f"triton 127.0.0.1:{server.grpc_port}"


def test_remote_detector_takes_8_bit_frames_and_refuses_float(server, local):
    det = load_detector(server.address)
    try:
        f8 = _frames(1, bit_depth=8)[0]
        got = det.detect(f8.pixels)
        want = local.detect(f8.pixels)
        assert len(got) == len(want) > 10
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        with pytest.raises(ValueError, match="--dtype float32"):
            det.detect(f8.pixels.astype(np.float32))
    finally:
        det.close()


def test_remote_rescales_large_objects_like_the_local_detector(server, local):
    # nuclei given as 4x their size: both shrink the frame by the same factor (the remote
    # one before sending, in uint16; the local one after normalising): near-equal boxes
    frame = _frames(1)[0]
    big = np.kron(frame.pixels[:192, :192], np.ones((4, 4), np.uint16))  # 768x768, 4x
    rem = load_detector(server.address, object_size_px=4 * 16.0)
    loc = OnnxDetector(provider="cpu", threads=1, object_size_px=4 * 16.0)
    try:
        got, want = rem.detect(big), loc.detect(big)
        assert rem.last_scale == pytest.approx(loc.last_scale) and rem.last_scale < 0.5
        assert abs(len(got) - len(want)) <= 1 and len(want) >= 5
        c_got, c_want = got.centers, want.centers
        d = np.linalg.norm(c_got[:, None] - c_want[None], axis=2).min(axis=1)
        assert np.mean(d < 4.0) >= 0.9, d  # within 1 px of the shrunk frame
        assert got.boxes.max() > 400  # mapped back to the full-size frame
    finally:
        rem.close()
        loc.close()


def test_a_score_threshold_applies_on_the_client(server):
    frame = _frames(1)[0]
    lo = load_detector(server.address, score_threshold=0.2)
    hi = load_detector(server.address, score_threshold=0.8)
    try:
        a, b = lo.detect(frame.pixels), hi.detect(frame.pixels)
        assert len(a) > len(b) > 0 and b.scores.min() >= 0.8 and a.scores.min() < 0.8
    finally:
        lo.close()
        hi.close()


def test_wrong_model_name_is_one_clear_line(server):
    port = server.grpc_port
    with pytest.raises(RemoteDetectorUnavailable) as ei:
        load_detector(f"triton://127.0.0.1:{port}/no-such-model")
    msg = str(ei.value)
    # PyTriton restricts the repository index, tritonserver lists its models: either way
    assert "\n" not in msg and "no ready model 'no-such-model'" in msg
    assert f"['{MODEL}']" in msg or "did not list its models" in msg


def test_batches_form_and_the_client_reconnects_after_a_restart(triton_python, repo, local,
                                                                tmp_path):
    stats = tmp_path / "stats.json"
    srv = LocalTritonServer(triton_python, repo, MODEL, threads=1, stats_path=stats)
    try:
        srv.start()
    except ServerUnavailable as e:
        pytest.skip(f"no real Triton server here: {e}")
    frames = _frames(4, seed=11)
    want = [local.detect(f.pixels) for f in frames]
    errors: list[BaseException] = []
    try:
        # 4 microscopes at once, each its own client: the server batches their frames,
        # and each still gets the boxes of its own frame
        def microscope(i: int) -> None:
            det = load_detector(srv.address)
            try:
                for _ in range(12):
                    got = det.detect(frames[i].pixels)
                    np.testing.assert_allclose(got.boxes, want[i].boxes, atol=1e-3)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                det.close()

        threads = [threading.Thread(target=microscope, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[0]

        det = load_detector(srv.address + "?timeout=2&retry=0.5")
        fb = load_detector(srv.address + "?timeout=2&retry=0.5&fallback=local",
                           provider="cpu", threads=1)
        assert det.detect(frames[0]).frame_index == frames[0].index
    finally:
        srv.stop()
    assert not group_alive(srv.pgid), "the server left processes behind"
    sizes = {int(k): v for k, v in json.loads(stats.read_text())["batch_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) == 4 * 12 + 1
    assert max(sizes) > 1, f"no batch formed: {sizes}"
    try:
        # server down: one clear error at once (no fallback), or the local detector
        t = time.monotonic()
        with pytest.raises(RemoteDetectorUnavailable, match="unreachable"):
            det.detect(frames[1])
        with pytest.raises(RemoteDetectorUnavailable, match="retrying every 0.5 s"):
            det.detect(frames[1])  # before the next retry: fails fast, no request sent
        assert time.monotonic() - t < 5
        got = fb.detect(frames[1])
        assert fb.last_source == "fallback"
        np.testing.assert_allclose(got.boxes, want[1].boxes, atol=1e-4)
        # the server comes back on the same port: both go back to it by themselves
        srv.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                got = det.detect(frames[2])
                break
            except RemoteDetectorUnavailable:
                time.sleep(0.2)
        assert det.connected and det.last_source == "triton"
        np.testing.assert_allclose(got.boxes, want[2].boxes, atol=1e-3)
        time.sleep(0.6)
        fb.detect(frames[3])
        assert fb.last_source == "triton"
    finally:
        det.close()
        fb.close()
        srv.stop()
    assert not group_alive(srv.pgid)


def test_exported_repository_loads_in_the_bundled_tritonserver(triton_python, repo):
    """The official server with the exported repository, where its ONNX Runtime backend
    exists. PyTriton's wheel bundles tritonserver with its Python backend only."""
    r = subprocess.run([str(triton_python), "-c",
                        "import pathlib, pytriton; "
                        "p = pathlib.Path(pytriton.__file__).parent / 'tritonserver'; "
                        "print(p); print(*sorted(d.name for d in (p / 'backends').iterdir()))"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    root, backends = r.stdout.splitlines()[0], r.stdout.splitlines()[1].split()
    if "onnxruntime" not in backends:
        pytest.skip("PyTriton 0.7.0 bundles tritonserver with only the "
                    f"{', '.join(backends)} backend; the ONNX Runtime backend the exported "
                    "repository is for is not in the wheel (use the tritonserver container)")
    port = free_port()
    proc = subprocess.Popen([f"{root}/bin/tritonserver", f"--model-repository={repo}",
                             f"--backend-directory={root}/backends", f"--grpc-port={port}",
                             f"--http-port={free_port()}", f"--metrics-port={free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        det = None
        deadline = time.monotonic() + 60
        while det is None and time.monotonic() < deadline:
            try:
                det = load_detector(f"triton://127.0.0.1:{port}/{MODEL}")
            except RemoteDetectorUnavailable:
                time.sleep(0.5)
        assert det is not None
        assert len(det.detect(_frames(1)[0])) > 20
        det.close()
    finally:
        proc.terminate()
        proc.wait(30)
