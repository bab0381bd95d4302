"""The eyepiece's box prediction on cells of known motion: every axis, several cells,
untracked boxes beside tracked ones, and the cases where nothing may be predicted.

Frames and detections are built by hand (the real :class:`Frame` pixel -> stage affine and
the real track matching); the velocities and horizons are known, so are the answers.
"""

from __future__ import annotations

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Track
from inscope.detector.base import Detections
from inscope.outputs import Result
from inscope.predict import BoxPredictor, exposure_mid_ns

MS = 1_000_000
T0 = 7_000_000 * MS  # monotonic clocks are large


def _frame(i: int, exposure_ms: float | None = 10.0, position=True) -> Frame:
    meta = {} if exposure_ms is None else {"exposure_ms": exposure_ms}
    return Frame(np.zeros((200, 300), np.uint16), i, {"ready": T0 + (i * 20 + 10) * MS},
                 StagePosition(0.0, 0.0, 0.0) if position else None, 0.5, None, meta)


def _result(i: int, boxes, ids, position=True) -> Result:
    """Frame *i* (exposed i*20 .. i*20+10 ms) with *boxes*; ids[k] is box k's track (None:
    untracked)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    d = Detections(b, np.full(len(b), 0.9), np.zeros(len(b), int), ("cell",), i)
    tracks = [Track(t, b[k].astype(float), np.zeros(2), np.ones(2))
              for k, t in enumerate(ids) if t is not None]
    return Result(_frame(i, position=position), d, tracks)


def _moving(i: int, vx_px: float, vy_px: float, x0=50.0, y0=80.0, w=20.0, h=12.0):
    """A w x h box moving (vx, vy) px per 20 ms frame."""
    x, y = x0 + vx_px * i, y0 + vy_px * i
    return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]


def _run(p: BoxPredictor, frames: int, make, draw_after_ms: float = 40.0):
    clock = [0]
    p.clock = lambda: clock[0]
    pred = None
    for i in range(frames):
        r = make(i)
        clock[0] = r.frame.stamps["ready"] + int(draw_after_ms * MS)
        pred = p.predict(r)
    return pred


def test_a_cell_moving_on_both_axes_is_drawn_ahead_on_both():
    # +2 px and -3 px per 20 ms: 100 and -150 px/s; horizon 5 + 40 + 25 = 70 ms
    pred = _run(BoxPredictor(25.0), 6, lambda i: _result(i, [_moving(i, 2.0, -3.0)], [7]))
    np.testing.assert_allclose(pred.shift_px[0], [7.0, -10.5], atol=1e-6)
    np.testing.assert_allclose(pred.boxes[0], np.add(_moving(5, 2.0, -3.0), [7, -10.5] * 2),
                               atol=1e-4)


def test_each_tracked_cell_gets_its_own_shift_and_untracked_boxes_none():
    def make(i):
        return _result(i, [[0, 0, 10, 10],  # untracked, first
                           _moving(i, 2.0, 0.0, x0=60),
                           _moving(i, 0.0, 1.0, x0=200, y0=40),
                           [250, 150, 262, 160]],  # untracked, still
                       [None, 7, 9, None])
    pred = _run(BoxPredictor(25.0), 6, make)
    np.testing.assert_allclose(pred.shift_px, [[0, 0], [7.0, 0], [0, 3.5], [0, 0]], atol=1e-6)
    assert pred.boxes.shape == (4, 4)


def test_a_young_track_first_in_line_does_not_stop_the_others():
    def make(i):
        boxes = [_moving(i, 2.0, 0.0, x0=60)]
        ids = [7]
        if i >= 4:  # a new cell, tracked from frame 4: too few positions to predict
            boxes.insert(0, _moving(i, -2.0, 0.0, x0=250))
            ids.insert(0, 11)
        return _result(i, boxes, ids)
    pred = _run(BoxPredictor(25.0), 6, make)
    np.testing.assert_allclose(pred.shift_px, [[0, 0], [7.0, 0]], atol=1e-6)


def test_the_shift_is_limited_by_the_box_size_on_both_axes():
    # 100 px/s, horizon 70 ms: a 7 px shift. A box 4 px wide but 12 px tall has a mean
    # size of 8 px: the shift is trusted; 4 x 6 (mean 5 px) it is not
    tall = _run(BoxPredictor(25.0), 6, lambda i: _result(i, [_moving(i, 2.0, 0.0, w=4, h=12)],
                                                         [7]))
    assert tall.shift_px[0, 0] == pytest.approx(7.0)
    small = _run(BoxPredictor(25.0), 6, lambda i: _result(i, [_moving(i, 2.0, 0.0, w=4, h=6)],
                                                          [7]))
    assert not small.shift_px.any()
    # exactly one box size is still trusted (7 px shift, 7 px mean size)
    edge = _run(BoxPredictor(25.0), 6, lambda i: _result(i, [_moving(i, 2.0, 0.0, w=4, h=10)],
                                                         [7]))
    assert edge.shift_px[0, 0] == pytest.approx(7.0)
    wide = _run(BoxPredictor(25.0, max_shift_boxes=2.0), 6,
                lambda i: _result(i, [_moving(i, 2.0, 0.0, w=4, h=6)], [7]))
    assert wide.shift_px[0, 0] == pytest.approx(7.0)


def test_the_fewest_positions_needed_is_honoured_down_to_two():
    def make(i):
        return _result(i, [_moving(i, 2.0, 0.0)], [7])
    two = _run(BoxPredictor(25.0, min_points=2), 2, make)
    assert two.shift_px[0, 0] == pytest.approx(7.0)
    assert not _run(BoxPredictor(25.0, min_points=3), 2, make).shift_px.any()
    assert BoxPredictor(min_points=1).min_points == 2  # one point has no velocity


def test_the_fit_forgets_positions_older_than_its_window():
    # the cell moves +2 px per frame for 10 frames, then stops: with a 100 ms window the
    # fit sees only the stopped positions after 6 more frames; with 1 s it still sees motion
    def make(i):
        return _result(i, [_moving(min(i, 10), 2.0, 0.0)], [7])
    short = _run(BoxPredictor(25.0, window_s=0.1), 17, make)
    assert short.shift_px[0, 0] == pytest.approx(0.0, abs=1e-9)
    long = _run(BoxPredictor(25.0, window_s=1.0), 17, make)
    assert long.shift_px[0, 0] > 1.0


def test_a_result_seen_twice_or_late_does_not_bend_the_velocity():
    # a cell jittering about a +2 px/frame line: a point counted twice would pull the fit
    jitter = [0.0, 0.6, -0.4, 0.5, -0.7, 0.3]
    rs = [_result(i, [_moving(i, 2.0, 0.0, x0=50 + jitter[i])], [7]) for i in range(6)]
    once, twice = BoxPredictor(25.0), BoxPredictor(25.0)
    for p, repeat in ((once, False), (twice, True)):
        clock = [0]
        p.clock = lambda c=clock: c[0]
        for i, r in enumerate(rs):
            clock[0] = r.frame.stamps["ready"] + 40 * MS
            p.predict(r)
            if repeat and i == 4:
                p.predict(rs[1])  # late: an old result offered again
                p.predict(r)      # and this one twice
    assert twice.velocity_um_s(7) == pytest.approx(once.velocity_um_s(7), abs=1e-12)
    assert once.velocity_um_s(7)[0] == pytest.approx(50.0, abs=8.0)  # ~100 px/s x 0.5 µm/px


def test_a_frame_offered_again_with_a_new_track_still_records_the_new_one():
    # frame 1 first shows one tracked cell; offered again (same exposure) the tracker has
    # picked up a second: its position is recorded although the first one's is not again
    p = BoxPredictor(25.0, min_points=2)
    clock = [T0]
    p.clock = lambda: clock[0]
    a = [_moving(1, 2.0, 0.0, x0=60)]
    p.predict(_result(1, a, [7]))
    p.predict(_result(1, a + [_moving(1, 0.0, 2.0, x0=200, y0=40)], [7, 9]))
    clock[0] = T0 + 100 * MS
    pred = p.predict(_result(2, [_moving(2, 2.0, 0.0, x0=60), _moving(2, 0.0, 2.0, x0=200,
                                                                       y0=40)], [7, 9]))
    assert pred.shift_px[1, 1] > 0 and pred.shift_px[0, 0] > 0


def test_nothing_is_predicted_without_tracks_a_position_or_boxes():
    p = BoxPredictor(25.0, clock=lambda: T0 + 50 * MS)
    r = _result(0, [_moving(0, 2.0, 0.0)], [])
    pred = p.predict(r)
    np.testing.assert_array_equal(pred.boxes, np.asarray(r.detections.boxes, float))
    np.testing.assert_array_equal(pred.shift_px, np.zeros((1, 2)))
    assert pred.horizon_s == pytest.approx(0.045 + 0.025)
    nopos = p.predict(_result(0, [_moving(0, 2.0, 0.0)], [7], position=False))
    assert nopos.boxes.shape == (1, 4) and not nopos.shift_px.any()
    empty = p.predict(_result(0, np.zeros((0, 4)), []))
    assert empty.boxes.shape == (0, 4) and empty.shift_px.shape == (0, 2)
    # prediction off: the boxes as detected, with the horizon still reported
    off = BoxPredictor(25.0, enabled=False, clock=lambda: T0 + 50 * MS)
    r = _result(0, [_moving(0, 2.0, 0.0)], [7])
    got = off.predict(r)
    np.testing.assert_array_equal(got.boxes, np.asarray(r.detections.boxes, float))
    assert not got.shift_px.any() and got.horizon_s == pytest.approx(0.070)


def test_the_horizon_runs_from_the_exposure_middle_to_the_given_draw_time():
    p = BoxPredictor(10.0, clock=lambda: 0)  # a clock that would give a negative horizon
    f = _frame(2)  # exposed 40..50 ms: middle 45 ms
    assert p.horizon_s(f, draw_ns=T0 + 60 * MS) == pytest.approx(0.015 + 0.010)
    assert p.horizon_s(f) == 0.0  # never negative
    assert BoxPredictor(0.0).horizon_s(f, T0 + 45 * MS) == 0.0  # no lag: allowed
    # a stalled display: capped at max_horizon_ms (default 250 ms)
    assert BoxPredictor(25.0).horizon_s(f, T0 + 10_000 * MS) == pytest.approx(0.250)
    # predict passes its draw time on
    r = _result(2, [_moving(2, 2.0, 0.0)], [7])
    assert p.predict(r, draw_ns=T0 + 60 * MS).horizon_s == pytest.approx(0.025)


def test_a_frame_without_its_exposure_is_taken_as_exposed_when_ready():
    f = _frame(3, exposure_ms=None)
    assert exposure_mid_ns(f) == f.stamps["ready"]
    f.metadata["exposure_ms"] = None
    assert exposure_mid_ns(f) == f.stamps["ready"]
    assert exposure_mid_ns(_frame(3, exposure_ms=6.0)) == f.stamps["ready"] - 3 * MS


@pytest.mark.parametrize("lag", [-1.0, -0.001, float("nan")])
def test_a_negative_display_lag_is_refused(lag):
    with pytest.raises(ValueError, match="display_lag_ms must be >= 0"):
        BoxPredictor(lag)
