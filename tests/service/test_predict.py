"""Boxes on time: the eyepiece box is drawn where its moving cell is at display time.

Unit checks with known stamps and a rotated/mirrored pixel <-> stage affine, then the
simulator with moving cells, the shipped detector and the real tracker (ground truth
decides)."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.detector.base import Detections
from inscope.eyepiece import EyepieceRenderer
from inscope.outputs import Result
from inscope.predict import BoxPredictor, exposure_mid_ns

MS = 1_000_000


class _Track:
    def __init__(self, tid: int, box) -> None:
        self.id, self.box = tid, np.asarray(box, float)


def _result(i: int, x_px: float, affine, exposure_ms: float = 10.0) -> Result:
    """Frame i, exposed 0..10 ms after i*20 ms (ready at its end), one 20 px box at x_px."""
    f = Frame(np.zeros((200, 300), np.uint16), i, {"ready": (i * 20 + 10) * MS},
              StagePosition(100.0, -50.0, 0.0), 0.5, affine,
              {"exposure_ms": exposure_ms})
    box = np.array([[x_px - 10, 90, x_px + 10, 110]], np.float32)
    d = Detections(box, np.array([0.9]), np.array([0]), ("cell",), i)
    return Result(f, d, [_Track(7, box[0])], seq=i)


def test_exposure_middle_is_ready_minus_half_the_exposure():
    r = _result(3, 50, None, exposure_ms=8.0)
    assert exposure_mid_ns(r.frame) == (3 * 20 + 10) * MS - 4 * MS
    r.frame.stamps["exposure_mid"] = 123
    assert exposure_mid_ns(r.frame) == 123


@pytest.mark.parametrize("affine", [np.eye(2) * 0.5, np.array([[0.0, -0.5], [0.5, 0.0]]),
                                    np.diag([-0.5, 0.5])],
                         ids=["plain", "rotated", "mirrored"])
def test_box_moves_by_velocity_times_exposure_to_display_time(affine):
    """A cell moving +2 px per 20 ms frame (100 px/s in the image): drawn 40 ms after its
    exposure ended with a 25 ms display lag, the horizon is 5 + 40 + 25 = 70 ms -> 7 px
    ahead, in image pixels whatever the camera's rotation or mirror."""
    clock = [0]
    p = BoxPredictor(display_lag_ms=25.0, clock=lambda: clock[0])
    for i in range(6):
        r = _result(i, 50 + 2 * i, affine)
        clock[0] = r.frame.stamps["ready"] + 40 * MS
        pred = p.predict(r)
    assert pred.horizon_s == pytest.approx(0.070)
    np.testing.assert_allclose(pred.shift_px[0], [7.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(pred.boxes[0], [57, 90, 77, 110], atol=1e-5)  # box at 60


def test_prediction_off_draws_boxes_where_detected_and_young_tracks_wait():
    clock = [0]
    on = BoxPredictor(25.0, clock=lambda: clock[0])
    off = BoxPredictor(25.0, enabled=False, clock=lambda: clock[0])
    shifts_on, shifts_off = [], []
    for i in range(5):
        r = _result(i, 50 + 2 * i, None)
        clock[0] = r.frame.stamps["ready"]
        shifts_on.append(on.predict(r).shift_px[0, 0])
        shifts_off.append(off.predict(r).shift_px[0, 0])
    assert shifts_off == [0.0] * 5
    assert shifts_on[:3] == [0.0] * 3, "fewer than min_points positions: not moved yet"
    assert shifts_on[4] == pytest.approx(100 * 0.030)  # 5 + 0 + 25 ms at 100 px/s


def test_an_implausible_jump_is_not_drawn_and_the_horizon_is_capped():
    clock = [0]
    p = BoxPredictor(25.0, clock=lambda: clock[0], max_horizon_ms=100.0)
    for i in range(5):  # 30 px per frame = 1500 px/s: over one box per horizon
        r = _result(i, 30 + 30 * i, None)
        clock[0] = r.frame.stamps["ready"]
        pred = p.predict(r)
    assert not pred.shift_px.any()
    clock[0] += 10_000 * MS  # the display stalled: never predict 10 s ahead
    assert p.horizon_s(r.frame) == pytest.approx(0.100)


def test_eyepiece_renderer_draws_the_predicted_box():
    clock = [0]
    ren = EyepieceRenderer((300, 200), predictor=BoxPredictor(25.0, clock=lambda: clock[0]))
    for i in range(6):
        r = _result(i, 50 + 4 * i, None)
        clock[0] = r.frame.stamps["ready"]
        img = ren.render_result(r)
    # identity map (camera 300x200 onto a 300x200 display); box at x 60..80 detected,
    # horizon 30 ms at 200 px/s -> drawn at 66..86
    np.testing.assert_allclose(ren.last_prediction.boxes[0], [66, 90, 86, 110], atol=1e-4)
    assert img[100, 86].max() > 0 and img[100, 60].max() == 0


def test_on_the_simulator_prediction_brings_boxes_to_moving_cells():
    """Cells at 60 µm/s, 0.65 µm pixels; the real detector and tracker on the simulated
    clock (benchmarks/bench_eyepiece_prediction.py, short run)."""
    from benchmarks.bench_eyepiece_prediction import run_case

    moving = run_case(60.0, frames=40, display_lag_ms=25.0)
    e = moving["error_px"]
    assert moving["boxes"] > 200
    assert e["with_prediction"]["p50"] < 0.5 * e["without_prediction"]["p50"], e
    still = run_case(0.0, frames=25, display_lag_ms=25.0)["error_px"]
    assert still["with_prediction"]["p90"] < still["without_prediction"]["p90"] + 0.3, still


def test_setting_and_flag_turn_prediction_off_and_set_the_lag(tmp_path):
    """[outputs.eyepiece] predict / display_lag_ms and --[no-]eyepiece-predict /
    --display-lag-ms reach the renderer the service builds."""
    from inscope.cli import build_parser
    from inscope.commands import config_from_args
    from inscope.config import ConfigError, config_from_dict, load_config
    from inscope.service import build_service

    p = tmp_path / "scope.toml"
    p.write_text("[outputs.eyepiece]\nenabled = true\npredict = false\n"
                 "display_lag_ms = 40\n")
    cfg = load_config(p)
    assert cfg.outputs.eyepiece.predict is False and cfg.outputs.eyepiece.display_lag_ms == 40
    args = build_parser().parse_args(["run", "--config", str(p), "--eyepiece-predict",
                                      "--display-lag-ms", "12.5", "--no-zmq", "--no-window",
                                      "--backend", "sim"])
    cfg = config_from_args(args, cfg)
    assert cfg.outputs.eyepiece.predict is True and cfg.outputs.eyepiece.display_lag_ms == 12.5
    svc = build_service(cfg, say=lambda *_: None)
    try:
        (overlay,) = [o for o in svc.outputs if getattr(o, "eyepiece", None) is not None]
        pred = overlay.eyepiece.predictor
        assert pred.enabled is True and pred.display_lag_ms == 12.5
    finally:
        svc.close()
    off = config_from_args(build_parser().parse_args(["run", "--no-eyepiece-predict"]))
    assert off.outputs.eyepiece.predict is False
    with pytest.raises(ConfigError, match="display_lag_ms"):
        config_from_dict({"outputs": {"eyepiece": {"display_lag_ms": -5}}})


class _DisplayAndCamera:
    """A display that lights up *lag_ms* after ``show`` and a camera that integrates it
    over 10 ms exposures, on a virtual clock. A stand-in: no display, projector and camera
    looking at it can run here; the measuring code under test is the real one."""

    def __init__(self, lag_ms: float, exposure_ms: float = 10.0) -> None:
        self.now = 0
        self.lag, self.exp = int(lag_ms * MS), int(exposure_ms * MS)
        self.events: list[tuple[int, float]] = [(0, 0.0)]  # (time light changes, level)

    def show(self, img) -> None:
        self.events.append((self.now + self.lag, float(img.mean() > 0)))

    def _light(self, t: int) -> float:
        return [v for te, v in self.events if te <= t][-1]

    def snap(self) -> Frame:
        t0, self.now = self.now, self.now + self.exp
        lit = np.mean([self._light(t0 + k * self.exp // 20) for k in range(20)])
        pixels = np.full((32, 32), 100 + 1000 * lit, np.float32)
        return Frame(pixels, 0, {"ready": self.now}, metadata={"exposure_ms": 10.0})


@pytest.mark.parametrize("lag_ms", [0.0, 7.0, 23.0, 61.0])
def test_display_lag_is_measured_to_within_a_millisecond(lag_ms):
    from inscope.eyepiece import measure_display_lag_ms

    rig = _DisplayAndCamera(lag_ms)
    got = measure_display_lag_ms(rig.show, rig.snap, np.full((8, 8), 255, np.uint8),
                                 clock=lambda: rig.now)
    assert got == pytest.approx(lag_ms, abs=1.0)  # the lit share of the first lit frame


def test_display_lag_measurement_says_when_the_camera_sees_nothing():
    from inscope.eyepiece import measure_display_lag_ms

    rig = _DisplayAndCamera(10.0)
    rig.show = lambda img: None  # the display never changes
    with pytest.raises(RuntimeError, match="does not see the display change"):
        measure_display_lag_ms(rig.show, rig.snap, np.full((8, 8), 255, np.uint8),
                               clock=lambda: rig.now)


def test_service_uses_the_measured_lag_unless_configured(tmp_path):
    from inscope.config import config_from_dict
    from inscope.eyepiece import EyepieceCalibration
    from inscope.service import build_service

    cal = EyepieceCalibration(np.array([[1.0, 0, 0], [0, 1, 0]]), (640, 480),
                              extra={"display_lag_ms": 37.5})
    cal.save(tmp_path / "eye.json")
    assert EyepieceCalibration.load(tmp_path / "eye.json").display_lag_ms == 37.5
    for lag, want in ((None, 37.5), (12.0, 12.0)):
        eye = {"enabled": True, "display_size": [640, 480],
               "calibration": str(tmp_path / "eye.json")}
        if lag is not None:
            eye["display_lag_ms"] = lag
        cfg = config_from_dict({"microscope": {"backend": "sim"}, "outputs": {
            "window": False, "zmq": {"enabled": False}, "eyepiece": eye}})
        svc = build_service(cfg, say=lambda *_: None)
        try:
            (ov,) = [o for o in svc.outputs if getattr(o, "eyepiece", None) is not None]
            assert ov.eyepiece.predictor.display_lag_ms == want
        finally:
            svc.close()


def test_display_lag_reads_zero_as_zero_and_switches_as_often_as_asked():
    from inscope.eyepiece import measure_display_lag_ms

    rig = _DisplayAndCamera(0.0)
    shows = []
    show = rig.show

    def counting(img):
        shows.append(img.max())
        show(img)

    got = measure_display_lag_ms(counting, rig.snap, np.full((8, 8), 255, np.uint8),
                                 repeats=1, clock=lambda: rig.now)
    assert got == pytest.approx(0.0, abs=0.3)
    # the two levels (pattern, black), then per switch black and the pattern
    assert shows == [255, 0, 0, 255]
    shows.clear()
    measure_display_lag_ms(counting, rig.snap, np.full((8, 8), 255, np.uint8), repeats=3,
                           clock=lambda: rig.now)
    assert len(shows) == 2 + 2 * 3


def test_display_lag_gives_up_when_the_display_stops_lighting():
    from inscope.eyepiece import measure_display_lag_ms

    rig = _DisplayAndCamera(5.0)
    calls = []

    def fails_after_the_levels(img):
        calls.append(img.max())
        if len(calls) <= 2:  # the pattern and black levels are measured, then it freezes
            rig.show(img)

    with pytest.raises(RuntimeError, match="did not light up in the camera within 0.5 s"):
        measure_display_lag_ms(fails_after_the_levels, rig.snap,
                               np.full((8, 8), 255, np.uint8), timeout_s=0.5,
                               clock=lambda: rig.now)


def test_display_lag_without_an_exposure_time_counts_from_the_frame():
    """A camera that reports no exposure: the lag is read to the frame, not within it."""
    from inscope.eyepiece import measure_display_lag_ms

    rig = _DisplayAndCamera(23.0)
    snap = rig.snap

    def bare():
        f = snap()
        f.metadata = {}
        return f

    got = measure_display_lag_ms(rig.show, bare, np.full((8, 8), 255, np.uint8),
                                 clock=lambda: rig.now)
    assert 23.0 <= got <= 23.0 + 10.0 + 1e-6  # within one 10 ms exposure, never before
