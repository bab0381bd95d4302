"""napari live view, headless: napari's real layer model (``ViewerModel``: Image and Shapes
layers, text, features) under a Qt application on the offscreen platform.

A full ``napari.Viewer`` needs an OpenGL context for its vispy canvas, which Qt's
offscreen platform does not give on a machine without a display (vispy fails in
``glGetParameter``); the view code is the same for both (it only touches
``viewer.layers`` / ``add_image`` / ``add_shapes``).

Sources are real: the simulated microscope and the classical detector through inscope's
own Pipeline (in-process), and a real ZMQ PUB socket on 127.0.0.1 (another process's
stream) — the same PubOutput ``inscope run`` uses.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from inscope.napari_view import (  # noqa: E402
    BOXES_LAYER,
    IMAGE_LAYER,
    TARGET_COLOR,
    NapariLiveView,
    NapariOutput,
    Update,
    ZmqSource,
    box_label,
)


@pytest.fixture(scope="module")
def qapp():
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    assert app.platformName() == os.environ["QT_QPA_PLATFORM"]
    return app


@pytest.fixture
def viewer(qapp):
    from napari.components import ViewerModel

    return ViewerModel()


def _msg(target=None):
    return {
        "frame_index": 7, "shape": [64, 80], "target_id": target, "n": 2,
        "detections": [
            {"box_px": [10.0, 5.0, 30.0, 25.0], "score": 0.9, "class": "cell",
             "track_id": 4},
            {"box_px": [40.0, 30.0, 60.0, 50.0], "score": 0.5, "class": "cell",
             "track_id": None},
        ],
    }


def test_labels_name_class_track_score_and_target():
    d = {"class": "cell", "track_id": 4, "score": 0.934}
    assert box_label(d, None) == "cell #4 0.93"
    assert box_label(d, 4) == "TARGET cell #4 0.93"
    assert box_label({"class": "cell", "track_id": None, "score": 0.5}, 4) == "cell 0.50"


def test_boxes_become_rectangles_in_row_column_order(viewer):
    view = NapariLiveView(viewer)
    img = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    view.show(Update(img, _msg(target=4)))
    layer = viewer.layers[BOXES_LAYER]
    assert layer.nshapes == 2 and set(layer.shape_type) == {"rectangle"}
    np.testing.assert_allclose(layer.data[0], [[5, 10], [5, 30], [25, 30], [25, 10]])
    assert list(layer.features["label"]) == ["TARGET cell #4 0.90", "cell 0.50"]
    assert list(layer.text.values) == ["TARGET cell #4 0.90", "cell 0.50"]
    np.testing.assert_allclose(layer.edge_color[0], TARGET_COLOR)
    assert not np.allclose(layer.edge_color[1], TARGET_COLOR)
    np.testing.assert_array_equal(viewer.layers[IMAGE_LAYER].data, img)
    assert [ly.name for ly in viewer.layers] == [IMAGE_LAYER, BOXES_LAYER]
    # the next frame replaces the boxes (no pile-up), fewer boxes, no target
    msg = _msg()
    msg["detections"] = msg["detections"][1:]
    view.show(Update(None, msg))
    assert layer.nshapes == 1 and list(layer.text.values) == ["cell 0.50"]
    np.testing.assert_allclose(layer.data[0], [[30, 40], [30, 60], [50, 60], [50, 40]])
    view.show(Update(None, {**msg, "detections": []}))
    assert layer.nshapes == 0


def test_in_process_pipeline_feeds_the_view_through_a_qt_timer(viewer, qapp):
    from inscope.acquisition.factory import open_microscope
    from inscope.config import ControlConfig
    from inscope.detector import load_detector
    from inscope.pipeline import Pipeline

    out = NapariOutput()
    scope = open_microscope("sim", seed=3)
    try:
        p = Pipeline(scope, load_detector("classical"), control=ControlConfig(mode="track"),
                     outputs=[out], frames=15)
        p.run()
    finally:
        scope.close()
    view = NapariLiveView(viewer)
    timer = view.follow(out, interval_ms=5)
    t0 = time.monotonic()
    while view.shown == 0 and time.monotonic() - t0 < 5:
        qapp.processEvents()
        time.sleep(0.005)
    view.stop()
    assert not timer.isActive() and view.shown == 1
    last = p.last_result
    assert view.frame_index == last.frame.index
    np.testing.assert_array_equal(viewer.layers[IMAGE_LAYER].data, last.frame.pixels)
    layer = viewer.layers[BOXES_LAYER]
    assert layer.nshapes == len(last.detections) > 0
    b = last.detections.boxes[0]
    np.testing.assert_allclose(layer.data[0][0], [b[1], b[0]], atol=0.01)
    # track ids from the tracker are shown
    assert any("#" in s for s in layer.text.values)


def test_zmq_stream_of_another_process(viewer):
    import zmq

    from inscope.acquisition.factory import open_microscope
    from inscope.config import ControlConfig
    from inscope.detector import load_detector
    from inscope.overlay import OverlayOutput
    from inscope.pipeline import Pipeline
    from inscope.zmq_api import PubOutput

    pub = PubOutput(port=0, nodrop=True)  # XPUB: lets the test see the subscription
    pub.open()
    src = ZmqSource(pub.address)
    try:
        # subscription handshake: wait until the PUB side sees the subscriber
        probe = pub._sock
        probe.setsockopt(zmq.RCVTIMEO, 2000)
        for _ in range(2):  # one subscription message per topic
            probe.recv()
        scope = open_microscope("sim", seed=5)
        try:
            # overlay frames published as with --zmq-overlay
            # (a display rate above the camera's: every frame is rendered, none skipped)
            ov = OverlayOutput(window=False, publisher=pub, display_fps=1000.0)
            p = Pipeline(scope, load_detector("classical"),
                         control=ControlConfig(mode="track"), outputs=[pub, ov], frames=10)
            p.run()
        finally:
            scope.close()
        last = p.last_result
        view = NapariLiveView(viewer)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            view.update_from(src)
            if view.frame_index == last.frame.index and IMAGE_LAYER in viewer.layers \
                    and viewer.layers[IMAGE_LAYER].data.ndim == 3:
                break
            time.sleep(0.01)
    finally:
        src.close()
        pub.close()
    assert view.frame_index == last.frame.index and src.received == 10
    layer = viewer.layers[BOXES_LAYER]
    assert layer.nshapes == len(last.detections) > 0
    img = viewer.layers[IMAGE_LAYER].data
    assert img.shape == (*last.frame.pixels.shape, 3)  # the rendered overlay, as RGB
    assert viewer.layers[IMAGE_LAYER].rgb
    # the overlay draws the boxes: the pixel under a box edge is coloured, not gray
    # (halves round up, as the overlay draws them: the classical boxes' corners are x.5)
    x0, y0 = (int(math.floor(v + 0.5)) for v in last.detections.boxes[0][:2])
    r, g, b = (int(v) for v in img[y0, x0])
    assert max(r, g, b) - min(r, g, b) > 50


def test_opencv_qt_plugin_path_does_not_shadow_napari_qt(monkeypatch):
    """cv2 points Qt at its own plugins on import; napari's Qt must not load them."""
    import inscope.napari_view as nv

    monkeypatch.setenv("QT_QPA_PLATFORM_PLUGIN_PATH", "/x/site-packages/cv2/qt/plugins")
    monkeypatch.setenv("QT_QPA_FONTDIR", "/x/site-packages/cv2/qt/fonts")
    nv._unshadow_qt_plugins()
    assert "QT_QPA_PLATFORM_PLUGIN_PATH" not in os.environ
    assert "QT_QPA_FONTDIR" not in os.environ
    monkeypatch.setenv("QT_QPA_PLATFORM_PLUGIN_PATH", "/opt/qt/plugins")  # the user's own
    nv._unshadow_qt_plugins()
    assert os.environ["QT_QPA_PLATFORM_PLUGIN_PATH"] == "/opt/qt/plugins"


def test_the_boxes_carry_track_score_and_target_as_features(viewer):
    view = NapariLiveView(viewer)
    view.show(Update(None, _msg(target=4)))
    f = viewer.layers[BOXES_LAYER].features
    assert f["track_id"].tolist()[0] == 4.0 and np.isnan(f["track_id"].tolist()[1])
    assert f["score"].tolist() == [0.9, 0.5]
    assert f["target"].tolist() == [True, False]
    # no image yet: a blank frame of the camera's size lies under the boxes
    img = viewer.layers[IMAGE_LAYER].data
    assert img.shape == (64, 80) and img.dtype == np.uint8 and not img.any()


def test_the_image_layer_is_reused_for_a_like_frame_and_replaced_for_another(viewer):
    view = NapariLiveView(viewer)
    a = np.full((64, 80), 3, np.uint16)
    view.show(Update(a, _msg()))
    layer = viewer.layers[IMAGE_LAYER]
    b = np.full((64, 80), 9, np.uint16)
    view.show(Update(b, _msg()))
    assert viewer.layers[IMAGE_LAYER] is layer  # same size and type: the data swapped
    np.testing.assert_array_equal(layer.data, b)
    view.show(Update(None, _msg()))  # no new image: the last one stays
    np.testing.assert_array_equal(viewer.layers[IMAGE_LAYER].data, b)
    for new in (np.zeros((32, 40), np.uint16), np.zeros((32, 40), np.uint8),
                np.zeros((32, 40, 3), np.uint8)):
        view.show(Update(new, _msg()))
        now = viewer.layers[IMAGE_LAYER]
        assert now.data.shape == new.shape and now.data.dtype == new.dtype
        assert now.rgb == (new.ndim == 3)
        # replaced, and still under the boxes
        assert [ly.name for ly in viewer.layers] == [IMAGE_LAYER, BOXES_LAYER]
    assert view.shown == 6


def _send(sock, topic: bytes, *parts: bytes) -> None:
    sock.send_multipart([topic, *parts])


def _detections(frame_index: int) -> bytes:
    import json

    return json.dumps({**_msg(), "frame_index": frame_index}).encode()


def _overlay(frame_index: int, image: np.ndarray) -> list[bytes]:
    import json

    head = {"frame_index": frame_index, "shape": list(image.shape),
            "dtype": str(image.dtype)}
    return [json.dumps(head).encode(), image.tobytes()]


def test_a_zmq_source_pairs_each_overlay_with_its_own_frames_detections(qapp):
    """Overlay frames and detections arrive on one socket in either order: an overlay is
    shown only under the detections of the same camera frame, and in RGB (OpenCV
    renders BGR)."""
    import zmq

    from inscope.napari_view import TOPIC_DETECTIONS, TOPIC_OVERLAY

    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    src = ZmqSource(f"tcp://127.0.0.1:{port}")

    def poll_until(pred, sent):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            sent()
            u = src.poll()
            if pred(u):
                return u
            time.sleep(0.02)
        raise AssertionError("nothing arrived")

    try:
        bgr = np.zeros((64, 80, 3), np.uint8)
        bgr[..., 0] = 255  # blue in OpenCV's order
        # detections of frame 3 first (the subscription takes a moment: resend)
        u = poll_until(lambda u: u is not None,
                       lambda: _send(pub, TOPIC_DETECTIONS, _detections(3)))
        assert u.image is None and u.message["frame_index"] == 3
        quiet = time.monotonic()
        while time.monotonic() - quiet < 0.3:  # the resent copies, until none for 0.3 s
            if src.poll() is not None:
                quiet = time.monotonic()
            time.sleep(0.01)
        assert src.poll() is None  # nothing new: nothing to show
        # ... then its overlay: shown under the detections already received
        _send(pub, TOPIC_OVERLAY, *_overlay(3, bgr))
        u = poll_until(lambda u: u is not None, lambda: None)
        assert u.message["frame_index"] == 3
        assert u.image.shape == (64, 80, 3) and u.image[0, 0].tolist() == [0, 0, 255]
        # an overlay of another frame is not put under frame 4's boxes
        _send(pub, TOPIC_OVERLAY, *_overlay(2, bgr))
        _send(pub, TOPIC_DETECTIONS, _detections(4))
        u = poll_until(lambda u: u is not None, lambda: None)
        assert u.message["frame_index"] == 4 and u.image is None
        # the overlay first, then its detections: paired; a gray overlay stays gray
        gray = np.full((64, 80), 7, np.uint8)
        _send(pub, TOPIC_OVERLAY, *_overlay(5, gray))
        _send(pub, TOPIC_DETECTIONS, _detections(5))
        u = poll_until(lambda u: u is not None, lambda: None)
        assert u.message["frame_index"] == 5
        np.testing.assert_array_equal(u.image, gray)
        # several detections between polls: only the newest is shown
        for i in (6, 7, 8):
            _send(pub, TOPIC_DETECTIONS, _detections(i))
        time.sleep(0.2)
        assert src.poll().message["frame_index"] == 8
    finally:
        src.close()
        pub.close(0)


class _Queued:
    """A Source (the protocol the view polls) handing out given updates in turn."""

    def __init__(self, *updates):
        self.updates = list(updates)

    def poll(self):
        return self.updates.pop(0) if self.updates else None


def test_update_from_says_whether_it_showed_something(viewer):
    view = NapariLiveView(viewer)
    src = _Queued(None, Update(None, _msg()))
    assert view.update_from(src) is False and view.shown == 0
    assert view.update_from(src) is True and view.shown == 1
    assert view.frame_index == 7
