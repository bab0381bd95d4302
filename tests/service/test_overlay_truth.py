"""What the AR overlay and the eyepiece image show, pixel by pixel and word by word.

The overlay is what a microscopist looks at: a box drawn a pixel off, the target in the
wrong colour, a status that says "centred" when the stage is moving, or an eyepiece box
on the wrong side of a mirrored light path are all wrong answers. Real OpenCV drawing on
known frames; the words are the functions the renderer draws. The video file is written
by OpenCV's real writer; no window is opened (no display here).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from _support.sockets import drain, sub_socket, wait_connected

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Track
from inscope.detector.base import Detections
from inscope.eyepiece import (
    EyepieceCalibration,
    EyepieceRenderer,
    describe,
    fit_camera_to_display,
    invert_affine,
)
from inscope.outputs import STAMP_PUBLISHED, Result
from inscope.overlay import (
    CYAN,
    GREEN,
    MAGENTA,
    YELLOW,
    OverlayOutput,
    OverlayRenderer,
    OverlayStyle,
    header_line,
    status_line,
    to_display,
)
from inscope.zmq_api import PubOutput

MS = 1_000_000
BOXES = np.array([[20, 40, 50, 70], [100, 30, 140, 60], [60, 100, 90, 130]], np.float32)


def _track(tid: int, box) -> Track:
    return Track(tid, np.asarray(box, float), np.zeros(2), np.ones(2))


def _result(boxes=BOXES, target: int | None = 7, control=None, focus=None, moving=False,
            index=3, truth=None, ready_ns: int | None = None) -> Result:
    yy, xx = np.mgrid[0:160, 0:200]
    pixels = (1000 + 10 * (xx + yy)).astype(np.uint16)  # a ramp: grey, not black
    f = Frame(pixels, index, position=StagePosition(0, 0, 0), pixel_size_um=0.5,
              moving=moving, truth=truth)
    if ready_ns is not None:
        f.stamps["ready"] = ready_ns
    n = len(boxes)
    d = Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                   np.linspace(0.9, 0.5, n), np.zeros(n, int), ("cell",), index)
    # track 7 owns the second box, track 9 the first; the third has none
    tracks = [_track(9, boxes[0]), _track(7, boxes[1])] if n >= 2 else []
    return Result(f, d, tracks=tracks, target_id=target, control=control, focus=focus)


def _is(img: np.ndarray, y: int, x: int, bgr, tol: int = 40) -> bool:
    return int(np.abs(img[y, x].astype(int) - np.array(bgr)).sum()) < tol


# -- the frame image -------------------------------------------------------------------
def test_boxes_are_drawn_on_their_pixels_the_target_thicker_and_in_its_colour():
    img = OverlayRenderer(OverlayStyle(labels=False, crosshair=False, status_bar=False)
                          ).render(_result())
    assert img.shape == (160, 200, 3) and img.dtype == np.uint8
    # box 0 (track 9): green, one pixel wide, on its own rows and columns
    assert _is(img, 40, 35, GREEN) and _is(img, 70, 35, GREEN)
    assert _is(img, 55, 20, GREEN) and _is(img, 55, 50, GREEN)
    assert not _is(img, 41, 35, GREEN) and not _is(img, 55, 21, GREEN)
    assert not _is(img, 39, 35, GREEN) and not _is(img, 55, 19, GREEN)
    # box 1 is the target (track 7): yellow, two pixels wide
    assert _is(img, 30, 120, YELLOW) and _is(img, 60, 120, YELLOW)
    assert _is(img, 45, 100, YELLOW) and _is(img, 45, 140, YELLOW)
    assert sum(_is(img, y, 120, YELLOW) for y in range(27, 34)) >= 2
    assert not _is(img, 30, 120, GREEN)
    # box 2 (no track): green
    assert _is(img, 100, 75, GREEN) and _is(img, 115, 60, GREEN)
    # inside every box the frame shows through (grey: all three channels equal)
    for x0, y0, x1, y1 in BOXES.astype(int):
        px = img[(y0 + y1) // 2, (x0 + x1) // 2]
        assert px[0] == px[1] == px[2]


def test_without_a_target_every_box_is_green():
    img = OverlayRenderer(OverlayStyle(labels=False, crosshair=False, status_bar=False)
                          ).render(_result(target=None))
    assert _is(img, 30, 120, GREEN) and not (img == np.array(YELLOW, np.uint8)).all(-1).any()
    # a target id no detection carries highlights nothing either
    img = OverlayRenderer(OverlayStyle(labels=False, crosshair=False, status_bar=False)
                          ).render(_result(target=42))
    assert _is(img, 30, 120, GREEN)


def test_the_crosshair_marks_the_field_centre_and_a_line_leads_to_the_target():
    img = OverlayRenderer(OverlayStyle(labels=False, status_bar=False)).render(_result())
    cy, cx = 80, 100
    assert img[cy, cx, 2] == 255  # magenta and the target line (yellow) both have red
    for d in (4, 6):
        assert _is(img, cy, cx + d, MAGENTA) and _is(img, cy, cx - d, MAGENTA)
        assert _is(img, cy + d, cx, MAGENTA) and _is(img, cy - d, cx, MAGENTA)
    # the line from the centre to the target box's centre (120, 45), all along it
    for f in (0.35, 0.5, 0.65, 0.8, 0.95):
        x, y = cx + f * (120 - cx), cy + f * (45 - cy)
        near = img[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].reshape(-1, 3)
        assert (np.abs(near.astype(int) - np.array(YELLOW)).sum(1) < 120).any(), f
    mx, my = (cx + 120) // 2, (cy + 45) // 2
    off = OverlayRenderer(OverlayStyle(labels=False, status_bar=False, crosshair=False)
                          ).render(_result())
    assert not _is(off, cy, cx + 6, MAGENTA) and not _is(off, my, mx, YELLOW, tol=120)


def _label_pixels(img: np.ndarray, box, color) -> int:
    """Pixels of *color*'s hue in the band above *box* (the frame itself is grey)."""
    x0, y0 = int(box[0]), int(box[1])
    band = img[max(y0 - 14, 0):y0 - 1, x0:x0 + 60].reshape(-1, 3).astype(int)
    hue = np.array(color) - min(color)
    coloured = band - band.min(1, keepdims=True)
    return int(((coloured * hue).sum(1) > 0.3 * (hue * hue).sum()).sum())


def test_labels_sit_above_their_box_and_only_the_target_keeps_one_in_a_crowd():
    base = OverlayStyle(crosshair=False, status_bar=False)
    img = OverlayRenderer(base).render(_result())
    assert _label_pixels(img, BOXES[0], GREEN) > 10
    assert _label_pixels(img, BOXES[1], YELLOW) > 10
    # above the box, not inside it: the rows under the top edge show the frame
    for x0, y0, x1, _ in (BOXES[0], BOXES[2]):
        inside = img[int(y0) + 2:int(y0) + 8, int(x0) + 2:int(x1) - 1].reshape(-1, 3)
        assert (inside.max(1) - inside.min(1)).max() < 30, "a label drawn inside its box"
    # a box at the top of the frame keeps its label in view (baseline at row 10)
    top = OverlayRenderer(base).render(_result(boxes=np.array([[20, 2, 60, 40],
                                                               [100, 50, 130, 80]])))
    band = top[0:11, 20:80].reshape(-1, 3).astype(int)
    assert ((band.max(1) - band.min(1)) > 60).sum() > 10
    crowd = OverlayStyle(crosshair=False, status_bar=False, max_labels=2)
    img = OverlayRenderer(crowd).render(_result())
    assert _label_pixels(img, BOXES[0], GREEN) == 0
    assert _label_pixels(img, BOXES[1], YELLOW) > 10
    none = OverlayStyle(crosshair=False, status_bar=False, labels=False)
    img = OverlayRenderer(none).render(_result())
    assert _label_pixels(img, BOXES[0], GREEN) == 0 and _label_pixels(img, BOXES[1], YELLOW) == 0


def test_ground_truth_is_drawn_only_when_asked_for():
    truth = np.array([[150, 110, 190, 150]], np.float32)
    red = (0, 0, 255)
    plain = OverlayStyle(labels=False, crosshair=False, status_bar=False)
    img = OverlayRenderer(plain).render(_result(truth=truth))
    np.testing.assert_array_equal(img, OverlayRenderer(plain).render(_result()))
    img = OverlayRenderer(OverlayStyle(labels=False, crosshair=False, status_bar=False,
                                       truth_color=red)).render(_result(truth=truth))
    assert _is(img, 110, 170, red) and _is(img, 150, 170, red) and _is(img, 130, 150, red)


def test_the_bars_are_black_with_text_and_the_status_bar_only_when_there_is_a_status():
    ren = OverlayRenderer(OverlayStyle(labels=False, crosshair=False))
    quiet = ren.render(_result())
    top = quiet[:16]
    assert (top.max(-1) == 0).mean() > 0.6 and top.max() == 255  # black, white text
    assert (quiet[-16:].max(-1) == 0).mean() < 0.1, "no status: the frame shows at the bottom"
    busy = ren.render(_result(control={"status": "moved", "target_id": 7,
                                       "error_norm_um": 2.0}))
    bottom = busy[-16:].reshape(-1, 3).astype(int)
    assert (bottom.max(1) == 0).mean() > 0.6
    assert (np.abs(bottom - np.array(CYAN)).sum(1) < 60).sum() > 10  # cyan words
    # the top bar is rows 0-16, the status bar the last 16 rows, both the full width
    black_rows = (busy.max(-1) == 0).mean(1)
    assert black_rows[16] > 0.6 and black_rows[17] < 0.1
    assert black_rows[-16] > 0.6 and black_rows[-17] < 0.1
    assert busy[0:17, 0].max() == 0 and busy[-16:, 0].max() == 0
    assert (busy[0].max(-1) == 0).all()
    bare = OverlayRenderer(OverlayStyle(labels=False, crosshair=False, status_bar=False)
                           ).render(_result(control={"status": "moved"}))
    assert (bare[:16].max(-1) == 0).mean() < 0.1 and (bare[-16:].max(-1) == 0).mean() < 0.1


def test_rate_latency_and_mode_are_written_into_the_top_bar():
    ren = OverlayRenderer(OverlayStyle(labels=False, crosshair=False))
    r = _result()
    plain = ren.render(r)
    for kw in ({"fps": 29.9}, {"latency_ms": 4.2}, {"mode": "track"}):
        img = ren.render(r, **kw)
        assert not np.array_equal(img[:17], plain[:17]), kw
        np.testing.assert_array_equal(img[17:], plain[17:])


# -- the words -------------------------------------------------------------------------
def test_the_header_says_frame_detections_rate_latency_mode_target_and_focus():
    r = _result(focus={"state": "locked"})
    assert header_line(r) == "#3  3 det  target #7  focus locked"
    assert header_line(r, 29.96, 4.24, "track") == \
        "#3  3 det  30.0 fps  4.2 ms  track  target #7  focus locked"
    bare = _result(target=None, boxes=BOXES[:1])
    assert header_line(bare, None, None, "") == "#3  1 det"
    assert header_line(_result(target=None, focus={"z_center": 1.0})) == "#3  3 det  focus ?"


@pytest.mark.parametrize(("control", "want"), [
    ({"status": "moved", "target_id": 7, "error_norm_um": 2.345}, "stage moving to #7 (2.3 um)"),
    ({"status": "centred", "target_id": 7, "error_norm_um": 0.31}, "centred on #7 (0.3 um)"),
    ({"status": "dry-run", "target_id": 4, "error_norm_um": 5.0}, "dry-run move to #4"),
    ({"status": "moving", "target_id": 7, "error_norm_um": 2.0}, "stage moving"),
    ({"status": "settling", "target_id": 7}, "stage settling"),
    ({"status": "no-target"}, "looking for a target"),
    ({"status": "refused", "target_id": 7, "error_norm_um": 9.0}, "move refused"),
    ({"status": "waiting-focus"}, "stage waits for the focus check"),
    ({"status": "centred"}, "centred on"),
    ({"status": "something-new"}, "something-new"),
    ({"tour": {"line": "tour: cell 2 of 5"}, "status": "moved", "target_id": 1},
     "tour: cell 2 of 5 | stage moving to #1"),
    ({"tour": {"phase": "scanning"}}, "scanning"),
    ({}, ""),
])
def test_the_status_line_says_what_the_stage_is_doing(control, want):
    assert status_line(_result(control=control)) == want


@pytest.mark.parametrize(("focus", "want"), [
    ({"state": "locked", "z_center": 1.234}, "focus locked z=+1.23 um"),
    ({"state": "acquiring", "z_center": -0.5}, "finding focus z=-0.50 um"),
    ({"state": "correcting"}, "focus drifted: correcting"),
    ({"state": "checking", "z_center": None}, "checking focus"),
    ({"state": "moving"}, "focus: frame skipped (moving)"),
    ({"state": "settling"}, "focus settling"),
    ({"state": "lost"}, "focus lost"),
    ({"state": "paused"}, "focus paused"),
    ({"z_center": 3.0}, ""),
])
def test_the_status_line_says_what_the_focus_is_doing(focus, want):
    assert status_line(_result(focus=focus)) == want


def test_a_frame_taken_while_moving_is_flagged_after_the_rest():
    r = _result(control={"status": "moving"}, focus={"state": "settling"}, moving=True)
    assert status_line(r) == "stage moving | focus settling | [frame taken while moving]"
    assert status_line(_result(moving=True)) == "[frame taken while moving]"


# -- the stretch -----------------------------------------------------------------------
def test_to_display_maps_the_percentiles_to_black_and_white():
    ramp = np.tile(np.arange(1000, dtype=np.float32), (40, 1))  # 0..999 in every row
    out = to_display(ramp, low=10.0, high=90.0, subsample=1)
    lo, hi = np.percentile(ramp, (10.0, 90.0))
    assert out[0, int(lo) - 5] == 0 and out[0, int(hi) + 5] == 255
    mid = int((lo + hi) / 2)
    assert abs(int(out[0, mid]) - 128) <= 2
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # monotonic


def test_dead_pixels_stay_black_in_the_overlay_and_the_calibration_image():
    from inscope.eyepiece_fit import to_uint8

    rng = np.random.default_rng(2)
    img = rng.normal(1000, 20, (64, 64)).clip(0).astype(np.uint16)
    img[20:40, 20:40] += 3000
    dead = (5, 7), (50, 3), (33, 60)
    for y, x in dead:
        img[y, x] = 0
    for out in (to_display(img), to_uint8(img)):
        assert all(out[y, x] == 0 for y, x in dead)
        assert out[30, 30] >= 200


def test_hot_pixels_do_not_darken_the_display():
    """0.5 % of the pixels stuck at full scale: the stretch's top percentile lay on them
    and the cells were shown at a tenth of white; now as in the clean frame, and the
    hot pixels themselves still white."""
    rng = np.random.default_rng(4)
    img = rng.normal(1000, 20, (128, 128)).clip(0).astype(np.uint16)
    img[40:90, 30:100] += 3000
    clean = to_display(img)
    hot = img.copy()
    where = rng.random(img.shape) < 0.005
    hot[where] = 65535
    out = to_display(hot)
    assert out[60, 60] >= 200 and abs(int(out[60, 60]) - int(clean[60, 60])) <= 3
    assert (out[where] == 255).all()
    from inscope.eyepiece_fit import to_uint8  # the eyepiece calibration's image

    assert to_uint8(hot)[60, 60] >= 200 and to_uint8(img)[60, 60] >= 200


def test_to_display_survives_nan_and_passes_8_bit_through_when_asked():
    img = np.full((32, 32), np.nan, np.float32)
    img[8:24, 8:24] = 5.0
    img[0, 0] = 1.0
    out = to_display(img)
    assert out.dtype == np.uint8 and out[16, 16] == 255
    u8 = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
    assert to_display(u8, subsample=0) is u8


# -- the overlay output: display rate, video time, latency -----------------------------
def test_results_faster_than_the_display_rate_are_skipped_not_queued():
    ov = OverlayOutput(display_fps=10.0)  # a tick every 100 ms
    readies = [0, 30, 60, 99, 100, 150, 230, 260, 500]
    for t in readies:
        ov.submit(_result(ready_ns=t * MS))
    # accepted: 0, 100 (its tick), 230 (tick 200 had passed; the next is 300, on the
    # grid), 500 (ticks missed: the next is half a period on, 550)
    assert ov.skipped == len(readies) - 4
    assert ov.stats()["skipped"] == ov.skipped


def test_a_late_result_never_makes_the_display_run_behind():
    ov = OverlayOutput(display_fps=10.0)
    ov.submit(_result(ready_ns=0))
    ov.submit(_result(ready_ns=1000 * MS))  # a second later: accepted
    ov.submit(_result(ready_ns=1010 * MS))  # 10 ms after it: too soon, skipped
    ov.submit(_result(ready_ns=1049 * MS))
    ov.submit(_result(ready_ns=1051 * MS))  # half a period after the late one: accepted
    assert ov.skipped == 2


class _Recording(OverlayRenderer):
    """The real renderer, remembering what it was asked to draw (rate, latency)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float | None, float | None, str | None]] = []

    def render(self, r, *, fps=None, latency_ms=None, mode=None):
        self.calls.append((fps, latency_ms, mode))
        return super().render(r, fps=fps, latency_ms=latency_ms, mode=mode)


def test_the_rate_is_smoothed_and_the_latency_is_ready_to_published(tmp_path):
    ov = OverlayOutput(mode="track")
    ov.renderer = rec = _Recording()
    t0 = 5_000_000 * MS  # ready stamps are monotonic_ns: large, never 0
    for t, pub in ((0, 3.0), (100, 4.5), (150, None)):
        r = _result(ready_ns=t0 + t * MS)
        if pub is not None:
            r.frame.stamps[STAMP_PUBLISHED] = t0 + int((t + pub) * MS)
        ov.handle(r)
    (f0, l0, m0), (f1, l1, _), (f2, l2, _) = rec.calls
    assert f0 is None and l0 == pytest.approx(3.0) and m0 == "track"
    assert f1 == pytest.approx(10.0) and l1 == pytest.approx(4.5)
    assert f2 == pytest.approx(0.9 * 10.0 + 0.1 * 20.0) and l2 is None
    assert ov.last_image is not None and ov.last_image.shape == (160, 200, 3)


def test_the_video_holds_one_frame_per_tick_of_run_time(tmp_path):
    ov = OverlayOutput(video=tmp_path / "run.avi", video_fps=10.0)
    t0 = 5_000_000 * MS
    for t in (0, 100, 101, 450):  # ticks 0, 1, 1, 4: 2 and 3 repeat the one before
        ov.handle(_result(ready_ns=t0 + t * MS))
    assert ov.stats()["video_frames"] == 5
    ov.handle(_result(ready_ns=t0 + 60_000 * MS))  # a minute's stall: at most 2 s repeated
    assert ov.stats()["video_frames"] == 5 + 20
    ov.close()
    cap = cv2.VideoCapture(str(ov.video.path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 25
    st = ov.stats()
    assert st["video_fps"] == 10.0 and st["video"].endswith("run.avi") and st["window"] is False


def test_the_display_rate_must_be_positive():
    for bad in (0.0, -5.0, math.nan):
        with pytest.raises(ValueError, match="display_fps"):
            OverlayOutput(display_fps=bad)
    assert OverlayOutput().stats()["video"] is None


# -- the eyepiece ----------------------------------------------------------------------
def test_an_uncalibrated_eyepiece_fits_the_camera_frame_centred_on_the_display():
    m = fit_camera_to_display((100, 200), (400, 300))  # camera h 100 w 200
    np.testing.assert_allclose(m, [[2.0, 0, 0.0], [0, 2.0, 50.0]])
    m = fit_camera_to_display((300, 100), (400, 300))  # tall camera: height limits
    np.testing.assert_allclose(m, [[1.0, 0, 150.0], [0, 1.0, 0.0]])
    ren = EyepieceRenderer((400, 300))
    quad = ren.map_boxes(np.array([[0, 0, 200, 100]]), (100, 200))[0]
    np.testing.assert_allclose(quad, [[0, 50], [400, 50], [400, 250], [0, 250]])


def test_eyepiece_boxes_follow_a_mirrored_rotated_light_path():
    # display = R(90°) * mirror(x) * camera * 1.5 + (400, 20)
    a = 1.5 * np.array([[0.0, -1.0], [1.0, 0.0]]) @ np.diag([-1.0, 1.0])
    cam_to_disp = np.hstack([a, [[400.0], [20.0]]])
    cal = EyepieceCalibration(invert_affine(cam_to_disp), (640, 480))
    assert cal.mirrored
    ren = EyepieceRenderer((640, 480), cal)
    quad = ren.map_boxes(np.array([[10, 20, 30, 60]]), (200, 200))[0]
    for (cx, cy), (dx, dy) in zip([(10, 20), (30, 20), (30, 60), (10, 60)], quad, strict=True):
        want = cam_to_disp @ [cx, cy, 1.0]
        assert (dx, dy) == pytest.approx(tuple(want), abs=1e-6)


def test_the_eyepiece_image_is_black_but_for_the_boxes_the_target_thicker():
    ren = EyepieceRenderer((200, 160), EyepieceCalibration(np.eye(3)[:2], (200, 160)),
                           color=(0, 255, 0), target_color=(0, 0, 255), thickness=1)
    img = ren.render(BOXES, (160, 200), target=1)
    assert img.shape == (160, 200, 3)
    assert img[40, 35, 1] > 150 and img[40, 35, 2] == 0  # box 0: green
    assert img[30, 120, 2] > 150 and img[30, 120, 1] == 0  # box 1 (target): red
    assert (img[26:35, 120, 2] > 128).sum() == 3, "the target a pixel wider"
    assert (img[36:45, 35, 1] > 128).sum() == 1, "the others one pixel wide"
    mask = img.max(-1) > 0
    assert mask.mean() < 0.05 and not mask[0:20].any()  # black everywhere else
    r = _result()
    np.testing.assert_array_equal(ren.render_result(r), img)  # track 7 is box 1
    np.testing.assert_array_equal(ren.render_result(_result(target=None)),
                                  ren.render(BOXES, (160, 200), None))


def test_describe_reads_mirror_rotation_scale_offset_and_error_back():
    a = 2.0 * np.array([[math.cos(math.radians(30)), -math.sin(math.radians(30))],
                        [math.sin(math.radians(30)), math.cos(math.radians(30))]])
    plain = EyepieceCalibration(np.hstack([a, [[12.5], [-3.25]]]), (640, 480), None, 0.21, 48,
                                0.34, 0.5)
    assert describe(plain) == ("not mirrored, rotated 30.0°, 2.000 camera px per display "
                               "px, offset (12.5, -3.2) px; 48 corners, residual 0.21 px "
                               "RMS; expected overlay error 0.34 camera px = 0.17 µm")
    mir = EyepieceCalibration(np.hstack([a @ np.diag([-1.0, 1.0]), [[0.0], [0.0]]]),
                              (640, 480), None, 0.1, 10, 0.2)
    text = describe(mir)
    assert text.startswith("mirrored, rotated 30.0°, 2.000 camera px per display px")
    assert text.endswith("expected overlay error 0.20 camera px")


def test_a_saved_calibration_loads_back_whole(tmp_path):
    cal = EyepieceCalibration(np.array([[0.5, 0.1, 3.0], [-0.1, 0.5, 7.0]]), (800, 600),
                              (512, 640), 0.12, 41, 0.33, None,
                              {"display_lag_ms": 41.5, "pattern": {"squares": [8, 6]}})
    cal.save(tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["expected_error_um"] is None and d["display_lag_ms"] == 41.5
    back = EyepieceCalibration.load(tmp_path / "c.json")
    np.testing.assert_array_equal(back.display_to_camera, cal.display_to_camera)
    assert back.display_size == (800, 600) and back.camera_shape == (512, 640)
    assert (back.rms_px, back.points, back.expected_error_px) == (0.12, 41, 0.33)
    assert back.pixel_size_um is None and back.expected_error_um is None
    assert back.display_lag_ms == 41.5
    assert back.extra == {"display_lag_ms": 41.5, "pattern": {"squares": [8, 6]}}
    assert not back.mirrored
    # a 3x3 homogeneous matrix and a file without the optional fields load too
    (tmp_path / "h.json").write_text(json.dumps({
        "display_to_camera": [[1, 0, 2], [0, 1, 3], [0, 0, 1]], "display_size": [64, 48]}))
    h = EyepieceCalibration.load(tmp_path / "h.json")
    np.testing.assert_array_equal(h.display_to_camera, [[1, 0, 2], [0, 1, 3]])
    assert h.camera_shape is None and h.points == 0 and math.isnan(h.rms_px)
    assert h.display_lag_ms is None and h.extra == {}


@pytest.mark.parametrize(("content", "match"), [
    ({"display_size": [64, 48]}, "display_to_camera"),
    ({"display_to_camera": [[1, 0, 0]], "display_size": [64, 48]}, "2x3"),
    ({"display_to_camera": [[1, 0, 0], [0, 1, 0]]}, "display_size"),
    ({"display_to_camera": [[1, 0, 0], [0, 1, 0]], "display_size": [64, 48],
      "points": "many"}, "not valid"),
])
def test_a_broken_calibration_file_gets_one_clear_error(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match) as e:
        EyepieceCalibration.load(p)
    assert str(p) in str(e.value) and "display_to_camera (2x3) and display_size" in str(e.value)
    with pytest.raises(FileNotFoundError, match="run the calibration"):
        EyepieceCalibration.load(tmp_path / "missing.json")


def test_the_overlay_and_the_eyepiece_image_stream_to_a_subscriber():
    """[b"overlay", header, pixels] for the rendered frame and for the eyepiece image,
    over a real ZMQ PUB socket on 127.0.0.1."""
    pub = PubOutput(port=0)
    pub.open()
    eye = EyepieceRenderer((200, 160), EyepieceCalibration(np.eye(3)[:2], (200, 160)))
    ov = OverlayOutput(publisher=pub, eyepiece=eye, window=False)
    sub = sub_socket(pub.address, rcvhwm=100)
    try:
        wait_connected(pub._sock, sub)
        pub.start()
        r = _result(index=12, ready_ns=5_000_000 * MS)
        ov.handle(r)
        pub.stop()
        msgs = drain(sub, 1000)
    finally:
        sub.close()
    assert [m[0] for m in msgs] == [b"overlay", b"overlay"]
    heads = [json.loads(m[1]) for m in msgs]
    assert [h["kind"] for h in heads] == ["overlay", "eyepiece"]
    assert all(h["frame_index"] == 12 and h["stamps_ns"]["ready"] == 5_000_000 * MS
               for h in heads)
    got = [np.frombuffer(m[2], np.uint8).reshape(h["shape"]) for m, h in zip(msgs, heads,
                                                                             strict=True)]
    np.testing.assert_array_equal(got[0], ov.last_image)
    np.testing.assert_array_equal(got[1], eye.render_result(r))
    assert got[1].shape == (160, 200, 3) and got[1][40, 35].max() > 0


def test_a_calibration_records_the_camera_shape_and_the_fit_it_came_from():
    from inscope.eyepiece import calibrate, calibration_from_image
    from inscope.eyepiece_fit import (
        CalibrationError,
        CharucoPattern,
        display_to_camera_map,
        render_camera_view,
    )

    display, camera = (1280, 720), (480, 640)  # a camera wider than tall: (h, w)
    pattern = CharucoPattern.for_display(display)
    truth = display_to_camera_map(display, camera, 0.45, 300.0, False, (4.0, -6.0))
    cam = render_camera_view(pattern.image(), truth, camera, blur_px=0.7, noise=60)
    cal = calibration_from_image(cam, pattern, pixel_size_um=0.65)
    assert cal.camera_shape == (480, 640) and cal.display_size == display
    assert cal.pixel_size_um == 0.65 and not cal.mirrored
    x = cal.extra
    assert x["mirrored"] is False and x["rotation_deg"] == pytest.approx(300.0, abs=0.2)
    assert x["scale"] == pytest.approx(0.45, rel=0.01)
    assert x["corners_found"] >= cal.points > 0
    assert 0 <= x["fit_error_px"] and x["max_residual_px"] >= cal.rms_px
    assert x["pattern"] == pattern.to_dict()
    # the rotation reads back in [0, 360): 300°, not -60°
    assert "rotated 300.0°" in describe(cal)
    # a refusal names the error in µm as well when the pixel size is known
    with pytest.raises(CalibrationError, match=r"camera px \(\d+\.\d\d µm\) exceeds"):
        calibration_from_image(cam, pattern, pixel_size_um=0.65,
                               max_error_px=cal.expected_error_px * 0.5)
    # the live path passes the pixel size and the limit on
    live = calibrate(lambda img: None, lambda: cam, display, pattern, pixel_size_um=0.3)
    assert live.pixel_size_um == 0.3
    with pytest.raises(CalibrationError, match="exceeds"):
        calibrate(lambda img: None, lambda: cam, display, pattern,
                  max_error_px=cal.expected_error_px * 0.5)


def test_eyepiece_quadrilaterals_are_closed_and_the_image_is_8_bit():
    ren = EyepieceRenderer((200, 160), EyepieceCalibration(np.eye(3)[:2], (200, 160)),
                           color=(0, 255, 0), thickness=1)
    img = ren.render(BOXES[:1], (160, 200))
    assert img.dtype == np.uint8
    # all four sides of box (20, 40, 50, 70): the left one closes the polygon
    for y, x in ((40, 35), (55, 50), (70, 35), (55, 20)):
        assert img[y, x, 1] > 150, (y, x)


def test_without_a_display_no_window_is_opened_and_one_line_says_why(monkeypatch, caplog):
    import logging

    from inscope.overlay import display_available

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False
    said = {}
    for window in (None, True, False):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="inscope.overlay"):
            ov = OverlayOutput(window=window)
            ov.open()
        assert ov.window is False and ov.stats()["window"] is False
        said[window] = [(r.levelno, r.getMessage()) for r in caplog.records
                        if r.name == "inscope.overlay"]
    # only if there is one: an info line; asked for: a warning; not wanted: nothing
    assert [lvl for lvl, _ in said[None]] == [logging.INFO]
    assert "not showing the overlay window" in said[None][0][1]
    assert [lvl for lvl, _ in said[True]] == [logging.WARNING]
    assert "an overlay window was asked for" in said[True][0][1]
    assert "DISPLAY unset" in said[True][0][1]
    assert said[False] == []


@pytest.mark.parametrize("fps", [0.0, 0.05, 241.0, math.inf, math.nan])
def test_a_video_rate_outside_what_a_player_takes_is_refused(tmp_path, fps):
    from inscope.overlay import VideoSink

    with pytest.raises(ValueError, match=r"\[0.1, 240\]"):
        VideoSink(tmp_path / "v.avi", fps)


def test_a_video_goes_into_new_folders_and_upper_case_suffixes_are_fine(tmp_path):
    from inscope.overlay import VideoSink

    for fps in (0.1, 240.0):
        sink = VideoSink(tmp_path / "runs" / "day 1" / f"ov{fps}.AVI", fps)
        frame = np.full((24, 32, 3), 128, np.uint8)
        sink.write(frame)
        sink.write(frame)
        sink.close()
        sink.close()  # twice is fine
        assert sink.frames == 2 and sink.path.exists() and sink.path.stat().st_size > 0
        cap = cv2.VideoCapture(str(sink.path))
        assert cap.isOpened() and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps, rel=0.01)
        cap.release()


def test_a_result_exactly_on_a_display_tick_is_drawn_and_a_skip_is_not_a_drop():
    ov = OverlayOutput(display_fps=10.0)
    assert ov.submit(_result(ready_ns=0)) is True
    assert ov.submit(_result(ready_ns=100 * MS)) is True   # on the tick: drawn
    assert ov.submit(_result(ready_ns=199 * MS)) is True   # skipped: still True (not lost)
    # on the next tick: drawn; nothing drains the queue here, so the oldest of the two
    # waiting goes (False: "dropped"), as a display that fell behind drops old frames
    assert ov.submit(_result(ready_ns=200 * MS)) is False
    assert ov.skipped == 1


def test_the_video_starts_at_the_first_frame_offered_not_the_first_drawn(tmp_path):
    t0 = 5_000_000 * MS
    ov = OverlayOutput(video=tmp_path / "v.avi", video_fps=10.0, display_fps=10.0)
    ov.submit(_result(ready_ns=t0))  # offered (then dropped before drawing, say)
    ov.handle(_result(ready_ns=t0 + 250 * MS))  # the first drawn: tick 2
    assert ov.stats()["video_frames"] == 3  # ticks 0, 1 and 2 hold it
    ov.close()


def test_the_same_ready_stamp_twice_leaves_the_rate_alone():
    ov = OverlayOutput()
    ov.renderer = rec = _Recording()
    t0 = 5_000_000 * MS
    for t in (t0, t0 + 100 * MS, t0 + 100 * MS):
        ov.handle(_result(ready_ns=t))
    assert rec.calls[1][0] == pytest.approx(10.0) and rec.calls[2][0] == pytest.approx(10.0)


def test_the_output_passes_its_style_video_rate_and_display_rate_on(tmp_path):
    ov = OverlayOutput(video=tmp_path / "v.avi", video_fps=12.5, display_fps=0.5,
                       style=OverlayStyle(crosshair=False))
    assert ov.renderer.style.crosshair is False and ov.video.fps == 12.5
    st = ov.stats()
    assert st["display_fps"] == 0.5 and st["video_fps"] == 12.5 and st["video_frames"] == 0
    plain = OverlayOutput(display_fps=24.0).stats()
    assert plain["video_fps"] is None and plain["video_frames"] == 0
    assert OverlayOutput(display_fps=24.0, video=tmp_path / "w.avi").video_fps == 24.0


def test_a_video_stops_with_a_clear_error_before_the_disk_is_full(tmp_path):
    import errno

    from inscope.overlay import VideoSink

    sink = VideoSink(tmp_path / "v.avi", 10.0)
    frame = np.zeros((24, 32, 3), np.uint8)
    sink.write(frame)
    sink.MIN_FREE_BYTES = 1 << 62  # more than any disk: as if it were full
    with pytest.raises(OSError) as e:
        sink.write(frame)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(sink.path)
    assert "bytes free, the video stops here and is finalised" in str(e.value)
    assert sink.frames == 1
    sink.close()


def test_to_display_stretches_8_bit_frames_too_and_survives_infinities():
    u8 = (100 + np.arange(64 * 64) % 11).astype(np.uint8).reshape(64, 64)
    for sub in (4, 1):
        out = to_display(u8, subsample=sub)
        assert out.min() == 0 and out.max() == 255, sub
    img = np.full((64, 64), 10.0, np.float32)
    img[16:48, 16:48] = 50.0
    img[:, :2] = np.inf  # a broken column: 3 % of the frame
    out = to_display(img)
    assert out.dtype == np.uint8 and out[32, 32] == 255 and out[5, 20] == 0
    assert (out[:, :2] == 255).all()  # +inf white
    img[:, :2] = -np.inf
    assert (to_display(img)[:, :2] == 0).all()
    blank = to_display(np.full((8, 8), np.nan, np.float32))
    assert blank.dtype == np.uint8 and blank.shape == (8, 8) and not blank.any()


def test_the_output_thread_draws_what_is_submitted(tmp_path):
    ov = OverlayOutput(video=tmp_path / "v.avi", video_fps=10.0, display_fps=10.0,
                       window=False)
    ov.start()
    try:
        assert ov.submit(_result(ready_ns=5_000_000 * MS)) is True
    finally:
        ov.stop()
    assert ov.last_image is not None and ov.last_image.shape == (160, 200, 3)
    assert ov.stats()["video_frames"] == 1


def test_the_overlay_draws_30_frames_a_second_unless_told_and_names_its_quit_signal():
    ov = OverlayOutput()
    assert ov.display_fps == 30.0 and ov.stats()["display_fps"] == 30.0  # module docstring
    ov.submit(_result(ready_ns=0))
    ov.submit(_result(ready_ns=33 * MS))  # inside the 33.3 ms period: skipped
    ov.submit(_result(ready_ns=34 * MS))
    assert ov.skipped == 1
    # a failing listener's log line names the signal
    assert ov.quit_requested.name == "quit_requested"
    got = []
    ov.quit_requested.connect(got.append)
    ov.quit_requested.emit("window closed (q)")
    assert got == ["window closed (q)"]


class _Solid(OverlayRenderer):
    """Draws each result as one flat grey, its frame index * 40: which frame a video
    frame holds reads back from any pixel, through the codec's loss."""

    def render(self, r, *, fps=None, latency_ms=None, mode=None):
        return np.full((32, 48, 3), 40 * r.frame.index, np.uint8)


def test_each_frame_shows_in_the_video_from_its_own_time_not_a_camera_period_early(tmp_path):
    # a 2 frames/s camera into a 10 frames/s video: frame 1 (ready at 0.5 s) must start at
    # video frame 5; it filled ticks 1-5, so it showed at 0.1 s and frame 0 for one tick
    ov = OverlayOutput(video=tmp_path / "slow.avi", video_fps=10.0, display_fps=10.0)
    ov.renderer = _Solid()
    t0 = 5_000_000 * MS
    for i, t in enumerate((0, 500, 1000, 1520)):
        ov.handle(_result(ready_ns=t0 + t * MS, index=i + 1))
    ov.close()
    cap = cv2.VideoCapture(str(ov.video.path))
    shown = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        shown.append(round(float(img.mean()) / 40))
    cap.release()
    assert shown == [1] * 5 + [2] * 5 + [3] * 5 + [4]
    assert ov.stats()["video_frames"] == 16


@pytest.mark.parametrize("name", ["odd.mp4", "odd.avi"])
def test_a_video_of_an_odd_sized_frame_keeps_its_last_column_and_row(tmp_path, name):
    # a 517 x 333 camera: the encoders take even sizes and cropped the frame to 516 x 332
    from inscope.overlay import VideoSink

    img = np.zeros((333, 517, 3), np.uint8)
    img[:, 516] = 255  # the last column white, the last row grey
    img[332, :516] = 128
    sink = VideoSink(tmp_path / name, 10.0)
    for _ in range(3):
        sink.write(img)
    sink.close()
    cap = cv2.VideoCapture(str(sink.path))
    ok, got = cap.read()
    cap.release()
    assert ok and got.shape[:2] == (334, 518)  # one black column and row added
    assert got[20:300, 516].mean() > 200 and got[20:300, 510:514].mean() < 40
    assert abs(float(got[332, 20:480].mean()) - 128) < 30 and got[328:330, 20:480].mean() < 40
    assert sink.frames == 3


def test_a_box_on_pixel_edges_keeps_its_drawn_size_as_its_cell_moves():
    # boxes at x.5 (round pixels, as the classical detector gives them): rounded half to
    # even, a 25 px box was drawn 26 and 24 px wide on alternate pixels, pulsing
    style = OverlayStyle(labels=False, crosshair=False, status_bar=False)
    drawn = []
    for x0 in (72.5, 73.5, 74.5, 75.5):
        box = [[x0, 20.5, x0 + 25, 45.5]]
        img = OverlayRenderer(style).render(_result(boxes=box, target=None))
        cols = [x for x in range(200) if _is(img, 33, x, GREEN, tol=60)]
        drawn.append((min(cols), max(cols)))
    assert [b - a for a, b in drawn] == [25] * 4
    assert [a for a, _ in drawn] == [73, 74, 75, 76]
