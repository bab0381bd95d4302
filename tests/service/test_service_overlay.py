"""Overlay drawing, video files, eyepiece mapping and its calibration routine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.detector.base import Detections
from inscope.eyepiece import (
    EyepieceCalibration,
    EyepieceRenderer,
    calibrate,
    dot_pattern,
    find_dots,
)
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


@pytest.mark.parametrize("grid", [(7, 5), (5, 4)])
def test_calibration_recovers_a_known_affine(grid):
    display = (800, 600)
    truth = np.array([[0.55, 0.06, 35.0], [-0.05, 0.58, 22.0]])  # display -> camera
    rng = np.random.default_rng(0)

    def capture():
        pattern, _ = dot_pattern(display, grid)
        cam = cv2.warpAffine(pattern, truth, (512, 400))
        cam = cv2.GaussianBlur(cam, (0, 0), 1.2).astype(np.float32) * 100 + 500
        return (cam + rng.normal(0, 30, cam.shape)).clip(0, 65535).astype(np.uint16)

    shown = []
    cal = calibrate(shown.append, capture, display, grid)
    assert len(shown) == 1 and shown[0].shape == (600, 800)
    np.testing.assert_allclose(cal.display_to_camera[:, :2], truth[:, :2], atol=0.01)
    np.testing.assert_allclose(cal.display_to_camera[:, 2], truth[:, 2], atol=1.0)
    assert cal.rms_px < 0.5
    # a point maps back within a pixel
    p = np.array([[[400.0, 300.0]]])
    back = cv2.transform(cv2.transform(p, cal.display_to_camera), cal.camera_to_display)
    np.testing.assert_allclose(back, p, atol=1e-6)


def test_calibration_save_load(tmp_path):
    cal = EyepieceCalibration(np.array([[1.0, 0, 2], [0, 1, 3]]), (640, 480), (100, 120),
                              0.1, 35)
    cal.save(tmp_path / "cal.json")
    back = EyepieceCalibration.load(tmp_path / "cal.json")
    np.testing.assert_allclose(back.display_to_camera, cal.display_to_camera)
    assert back.display_size == (640, 480)


def test_find_dots_fails_clearly_without_a_pattern():
    with pytest.raises(ValueError, match="calibration dots"):
        find_dots(np.zeros((200, 200), np.uint16), (7, 5))


def test_calibrate_eyepiece_cli_offline_steps(tmp_path, capsys):
    """Step 1 writes the pattern, step 2 fits it from a camera image (the live mode needs a
    display and a projector, which cannot run here; it calls the same calibrate())."""
    import tifffile

    from inscope.cli import main

    pat = tmp_path / "pattern.png"
    assert main(["calibrate-eyepiece", "--pattern-out", str(pat), "--display", "800x600"]) == 0
    shown = cv2.imread(str(pat), cv2.IMREAD_UNCHANGED)
    assert shown.shape == (600, 800) and shown.max() == 255
    truth = np.array([[0.55, 0.06, 35.0], [-0.05, 0.58, 22.0]])  # display -> camera
    cam = cv2.GaussianBlur(cv2.warpAffine(shown, truth, (512, 400)), (0, 0), 1.2)
    cam = (cam.astype(np.float32) * 100 + 500).astype(np.uint16)
    tifffile.imwrite(tmp_path / "camera.tif", cam)
    out = tmp_path / "cal" / "eyepiece.json"
    assert main(["calibrate-eyepiece", "--from-image", str(tmp_path / "camera.tif"),
                 "--display", "800x600", "--out", str(out)]) == 0
    assert "RMS" in capsys.readouterr().out
    cal = EyepieceCalibration.load(out)
    np.testing.assert_allclose(cal.display_to_camera[:, :2], truth[:, :2], atol=0.01)
    np.testing.assert_allclose(cal.display_to_camera[:, 2], truth[:, 2], atol=1.0)
    assert cal.display_size == (800, 600)
    # a camera image without the pattern: a clear error, nothing written
    tifffile.imwrite(tmp_path / "dark.tif", np.full((400, 512), 500, np.uint16))
    out2 = tmp_path / "none.json"
    assert main(["calibrate-eyepiece", "--from-image", str(tmp_path / "dark.tif"),
                 "--out", str(out2)]) == 2
    assert "dot grid is visible" in capsys.readouterr().err and not out2.exists()
