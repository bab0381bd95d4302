"""Pipeline behaviour on a replayed recording: broken and slow outputs, thresholds, the
overlay/eyepiece ZMQ stream. Real replay backend, real classical detector, real sockets."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import tifffile
from _support.sockets import sub_socket

from inscope.acquisition.factory import open_microscope
from inscope.eyepiece import EyepieceRenderer
from inscope.outputs import Output
from inscope.overlay import OverlayOutput
from inscope.pipeline import Pipeline
from inscope.zmq_api import PubOutput

N = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """N frames (64x96 uint16) with 3 bright square 'cells' each, slowly drifting."""
    rng = np.random.default_rng(0)
    frames = rng.normal(500, 20, (N, 64, 96)).clip(0).astype(np.uint16)
    for i in range(N):
        for x, y in ((20, 20), (60, 30), (40, 48)):
            frames[i, y - 5 + i % 3:y + 5 + i % 3, x - 5:x + 5] = 8000
    path = tmp_path_factory.mktemp("rec") / "stack.tif"
    tifffile.imwrite(path, frames)
    return path


def _replay(path, fps=100):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pixel size in the file: 1 µm/px is fine here
        return open_microscope("replay", path=str(path), fps=fps)


class Broken(Output):
    name = "broken"

    def handle(self, item) -> None:
        raise RuntimeError("disk full")


class Slow(Output):
    name = "slow"
    queue_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def handle(self, item) -> None:
        self.release.wait(5)  # stalls until the run is over


def test_broken_and_stalled_outputs_do_not_stop_the_loop(stack, detector):
    scope = _replay(stack)
    broken, slow = Broken(), Slow()
    p = Pipeline(scope, detector, outputs=[broken, slow])
    p.start()
    assert p.wait(30)
    slow.release.set()
    p.stop()
    s = p.summary()
    scope.close()
    assert s["stop_reason"] == "stream ended"
    assert s["frames"] + s["dropped"] == N and s["frames"] >= N // 2
    assert s["outputs"]["broken"]["errors"] == s["frames"]
    assert "disk full" in s["outputs"]["broken"]["last_error"]
    # the stalled output dropped what did not fit in its queue, for itself only
    assert s["outputs"]["slow"]["dropped"] >= s["frames"] - 3
    assert s["outputs"]["slow"]["handled"] + s["outputs"]["slow"]["dropped"] == s["frames"]


def test_threshold_filters_boxes(stack, detector):
    scope = _replay(stack)
    seen = []
    p = Pipeline(scope, detector, score_threshold=1.0, on_result=seen.append, frames=5)
    p.run()
    scope.close()
    assert len(seen) == 5
    assert all(len(r.detections) == 0 or r.detections.scores.min() >= 1.0 for r in seen)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        p.set_threshold(2)


def test_overlay_and_eyepiece_frames_on_zmq(stack, detector):
    pub = PubOutput(port=0)
    pub.open()
    sub = sub_socket(pub.address, topic=b"overlay")
    time.sleep(0.3)  # let the subscription reach the publisher
    ov = OverlayOutput(publisher=pub, window=False,
                       eyepiece=EyepieceRenderer((160, 120)))
    scope = _replay(stack, fps=30)
    p = Pipeline(scope, detector, outputs=[pub, ov], frames=10)
    p.run()
    scope.close()
    got = {}
    while sub.poll(500):
        topic, header, pixels = sub.recv_multipart()
        h = json.loads(header)
        assert topic == b"overlay" and h["schema"] == "inscope.overlay/1"
        img = np.frombuffer(pixels, h["dtype"]).reshape(h["shape"])
        got.setdefault(h["kind"], []).append((h, img))
    sub.close()
    assert set(got) == {"overlay", "eyepiece"}
    h, img = got["overlay"][-1]
    assert img.shape == (64, 96, 3) and "ready" in h["stamps_ns"]
    h, eye = got["eyepiece"][-1]
    assert eye.shape == (120, 160, 3)
    assert eye.max() > 0 and (eye.sum(2) == 0).mean() > 0.8, "boxes only, on black"


class _Recording:
    """The real classical detector, recording the frames it is given, standing in for a
    GPU provider (none runs on the test machines): only its ``provider`` name differs."""

    def __init__(self, provider: str) -> None:
        from inscope.detector.classical import ClassicalDetector

        self.inner = ClassicalDetector()
        self.provider = provider
        self.shapes: list[tuple[int, ...]] = []
        self.name = "recording"

    def detect(self, frame):
        self.shapes.append(tuple(np.asarray(frame.pixels).shape))
        return self.inner.detect(frame)


@pytest.mark.parametrize("provider, backend, warmed", [
    ("cuda", "sim", True), ("tensorrt", "sim", True), ("cpu", "sim", False),
    ("triton:grpc://gpu-box:8001", "sim", True), ("cuda", "replay", False)])
def test_a_gpu_detector_is_warmed_on_a_frame_of_the_streams_size(stack, provider, backend,
                                                                  warmed):
    """GPU sessions prepare kernels per input shape on their first run: the pipeline
    gives a GPU detector one snapped frame of the stream's size before streaming, so the
    first streamed frame is not late. A CPU detector gets no extra frame, and a recording
    none (its snap would take a frame from the stream)."""
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    det = _Recording(provider)
    scope = (SimulatedMicroscope(SimConfig(shape=(64, 96), realtime=False))
             if backend == "sim" else _replay(stack))
    try:
        s = Pipeline(scope, det, frames=5).run()
    finally:
        scope.close()
    assert s["frames"] >= 1
    assert len(det.shapes) == s["frames"] + int(warmed)
    assert set(det.shapes) == {(64, 96)}
