"""Overlay drawing, video files, eyepiece mapping (its calibration:
test_eyepiece_calibration.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.detector.base import Detections
from inscope.eyepiece import EyepieceCalibration, EyepieceRenderer
from inscope.outputs import Result
from inscope.overlay import OverlayRenderer, VideoSink, to_display


def _result(pixels=None) -> Result:
    if pixels is None:
        pixels = np.full((120, 160), 1000, np.uint16)
        pixels[40:60, 50:80] = 30000
    f = Frame(pixels, 3, position=StagePosition(0, 0, 0), pixel_size_um=0.5)
    d = Detections(np.array([[50, 40, 80, 60]], np.float32), np.array([0.9]),
                   np.array([0]), ("cell",), 3)
    return Result(f, d)


def test_to_display_stretches_16bit_robustly():
    rng = np.random.default_rng(1)
    img = rng.normal(2000, 50, (256, 256)).astype(np.uint16)
    img[0, 0] = 65535  # one hot pixel must not squash the contrast
    out = to_display(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert out[1:, 1:].std() > 30, "the noise floor is stretched over the 8-bit range"
    f = to_display(rng.random((64, 64)).astype(np.float32))
    assert f.dtype == np.uint8 and f.max() > 200


def test_overlay_draws_box_where_the_detection_is():
    img = OverlayRenderer().render(_result(), fps=30.0, latency_ms=4.2, mode="track")
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    box_color = np.array([80, 220, 80])
    on_edge = img[40, 55:75]  # top edge of the box
    assert (np.abs(on_edge.astype(int) - box_color).sum(1) < 60).mean() > 0.8
    assert img[0:16].max() > 200  # status bar text


@pytest.mark.parametrize("name", ["ov.mp4", "ov.avi"])
def test_video_sink_writes_a_readable_file(tmp_path, name):
    sink = VideoSink(tmp_path / name, fps=10)
    r = _result()
    ren = OverlayRenderer()
    for _ in range(12):
        sink.write(ren.render(r))
    sink.close()
    cap = cv2.VideoCapture(str(sink.path))
    assert cap.isOpened()
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        assert frame.shape[:2] == (120, 160)
    cap.release()
    assert n == 12


def test_video_sink_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=".mp4 or .avi"):
        VideoSink(tmp_path / "x.gif").write(np.zeros((8, 8, 3), np.uint8))


def test_eyepiece_maps_box_corners_through_the_affine():
    # display = camera * 2 + (10, 20)
    cam_to_disp = np.array([[2.0, 0, 10], [0, 2.0, 20]])
    cal = EyepieceCalibration(cv2.invertAffineTransform(cam_to_disp), (400, 300))
    ren = EyepieceRenderer((400, 300), cal)
    quads = ren.map_boxes(np.array([[10, 10, 30, 20]]), (120, 160))
    np.testing.assert_allclose(quads[0], [[30, 40], [70, 40], [70, 60], [30, 60]])
    img = ren.render(np.array([[10, 10, 30, 20]]), (120, 160), target=0)
    assert img.shape == (300, 400, 3)
    assert img[40, 50].max() > 0 and img[50, 50].max() == 0, "edge drawn, inside black"
    assert img[:, :25].max() == 0, "black everywhere else"
