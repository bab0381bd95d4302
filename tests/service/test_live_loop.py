"""The live loop in real time: detections leave without waiting for the stage, moves are
commanded and not waited for, frames exposed during a move are flagged and never used by
control; the overlay renders at a display rate and the video plays in real time; records
are written in batches. Real simulator, real shipped detector, real video files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from inscope.acquisition.frame import Frame
from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
from inscope.config import ControlConfig
from inscope.control_stage import ControlStage
from inscope.detector import load_detector
from inscope.detector.base import Detections
from inscope.outputs import Result
from inscope.overlay import OverlayOutput
from inscope.pipeline import Pipeline
from inscope.records import RecordsOutput


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def _offline(**kw) -> SimulatedMicroscope:
    return SimulatedMicroscope(SimConfig(realtime=False, **kw))


# -- the simulator's timing model ---------------------------------------------------------
def test_sim_moves_are_commanded_and_frames_during_them_are_flagged():
    s = _offline(seed=0, xy_settle_ms=40.0, xy_quantum_um=0.0, exposure_ms=10.0)
    t0 = s.sim_time_s
    assert s.move_xy(40.0, 0.0, wait=False)
    assert s.sim_time_s == t0, "a commanded move must not take the caller's time"
    assert s.moving()
    f1, f2 = s.snap(), s.snap()  # exposed at 0-10 ms and 10-20 ms of a 40 ms move
    assert f1.moving and f2.moving
    assert f1.position.x == pytest.approx(0.0) and f2.position.x == pytest.approx(10.0)
    for _ in range(3):
        s.snap()
    assert not s.moving()
    f = s.snap()
    assert not f.moving and f.position.x == pytest.approx(40.0)
    # a waited move takes its settle time and leaves nothing pending
    s.move_xy(0.0, 0.0)
    assert s.sim_time_s - (t0 + 0.06) == pytest.approx(0.04) and not s.moving()


def test_mm_moves_are_commanded_and_polled(mm_scope):
    import time

    assert mm_scope.move_xy(25.0, -10.0, wait=False)
    t = time.monotonic()
    while mm_scope.moving() and time.monotonic() - t < 10:
        time.sleep(0.01)
    assert not mm_scope.moving()
    p = mm_scope.position()
    assert (p.x, p.y) == pytest.approx((25.0, -10.0), abs=0.05)
    assert mm_scope.guard.history[-1].made


# -- control ignores moving frames -------------------------------------------------------
def test_control_never_decides_on_a_frame_taken_during_a_move(detector):
    scope = _offline(seed=3, xy_settle_ms=50.0)
    stage = ControlStage(scope, ControlConfig(mode="steer+focus"))
    f = scope.snap()
    stage.step(f, detector.detect(f))
    p = scope.position()
    scope.move_xy(p.x + 20.0, p.y, wait=False)
    n = len(scope.guard.history)
    f = scope.snap()
    assert f.moving
    step = stage.step(f, detector.detect(f))
    steer, focus = step.steer, step.focus
    assert steer is not None and focus is not None
    assert steer["status"] == "moving" and focus["status"] == "moving"
    assert len(step.tracks) > 5, "the tracker still follows the cells"
    assert len(scope.guard.history) == n, "no move may be decided on a moving frame"
    assert stage.frames_moving == 1
    # a frame exposed before the newest move was commanded is ignored too
    for _ in range(5):
        scope.snap()  # the move ends
    old = scope.snap()
    assert not old.moving
    scope.move_xy(p.x, p.y)  # waited: done before the old frame is looked at
    n = len(scope.guard.history)
    step = stage.step(old, detector.detect(old))
    steer, focus = step.steer, step.focus
    assert steer is not None and focus is not None
    assert steer["status"] == "settling" and focus["status"] == "settling"
    assert len(scope.guard.history) == n
    stage.close()


def test_a_steps_tracks_stay_as_they_were_when_the_next_frame_is_tracked(detector):
    """The publisher, the recorder and the eyepiece read a step's tracks on their own
    threads while control tracks the next frame: they must see this frame's boxes."""
    scope = _offline(seed=3)
    stage = ControlStage(scope, ControlConfig(mode="track"))
    f1 = scope.snap()
    first = stage.step(f1, detector.detect(f1))
    before = {t.id: t.box.copy() for t in first.tracks}
    assert len(before) > 5
    p = scope.position()
    scope.move_xy(p.x + 15.0, p.y - 10.0)  # every box moves by ~(-23, +15) px
    f2 = scope.snap()
    second = stage.step(f2, detector.detect(f2))
    moved = {t.id: t.box for t in second.tracks if t.id in before}
    assert len(moved) > 5 and all(np.abs(moved[i] - before[i]).max() > 5 for i in moved)
    for t in first.tracks:
        assert np.array_equal(t.box, before[t.id]), "a published step's track moved"
    stage.close()


def test_control_moves_are_commanded_without_waiting(detector):
    scope = _offline(seed=3, xy_settle_ms=500.0)
    stage = ControlStage(scope, ControlConfig(mode="steer", max_step_um=250.0))
    t0 = scope.sim_time_s
    made = False
    for _ in range(3):
        f = scope.snap()
        steer = stage.step(f, detector.detect(f)).steer
        made = made or (steer is not None and steer["made"])
    assert made, "the nearest cell should need a move"
    # three frames of 10 ms passed, not the 500 ms the stage takes
    assert scope.sim_time_s - t0 == pytest.approx(0.03)
    assert scope.moving()


def test_a_focus_move_leaves_before_the_boxes_are_tracked(detector):
    """The focus lock needs no tracks, so its move is commanded before the tracker's work
    on every box (~90 on the demo's field: 1-6 ms of the control thread's time on two
    busy cores); the tracks and the steering still see the same frame."""
    scope = _offline(seed=3)
    scope.move_z(scope.position().z + 3.0)  # out of focus: the lock sweeps at once
    stage = ControlStage(scope, ControlConfig(mode="steer+focus"))
    z_moves_when_tracked: list[int] = []
    update = stage.tracker.update

    def spy(frame, dets):  # a spy on the real tracker: records when it ran, then runs it
        z_moves_when_tracked.append(sum(m.axis == "z" for m in scope.guard.history))
        return update(frame, dets)

    stage.tracker.update = spy  # type: ignore[method-assign]
    made = 0
    for _ in range(4):
        f = scope.snap()
        before = sum(m.axis == "z" for m in scope.guard.history)
        step = stage.step(f, detector.detect(f))
        assert step.focus is not None
        if step.focus["made"]:
            made += 1
            assert z_moves_when_tracked[-1] == before + 1, \
                "the focus move must be commanded before the boxes are tracked"
        assert len(step.tracks) > 5
    assert made >= 1, "an out-of-focus start must move the focus"
    stage.close()


def test_publication_never_waits_for_a_move(detector):
    # a stage that takes 1.5 s per move: a loop that waited would publish nothing meanwhile
    scope = SimulatedMicroscope(seed=3, exposure_ms=20.0, xy_settle_ms=1500.0,
                                camera_process=False)
    seen: list[Result] = []
    p = Pipeline(scope, detector, seconds=5.0, on_result=seen.append,
                 control=ControlConfig(mode="steer", max_step_um=250.0))
    s = p.run()
    moves = [m for m in scope.guard.history if m.made]
    assert moves, s["control"]
    m = moves[0]
    during = [r for r in seen if m.t_ns < r.stamps["published"] < m.t_ns + 1.2e9]
    assert len(during) >= 3, f"{len(during)} frames published during a 1.5 s move"
    moving = {r.frame.index for r in seen if r.frame.moving}
    assert moving & {r.frame.index for r in during}, "frames during the move are flagged"
    # no move was decided on a moving frame
    for act in p.control.steerer.history:
        if act.made:
            assert act.frame_index not in moving
    assert s["control"]["frames_ignored_moving"] >= 1
    assert s["latency_ms"]["ready_to_move_commanded"]["n"] >= 1
    scope.close()


# -- outputs ------------------------------------------------------------------------------
def _result(i: int, t_ns: int) -> Result:
    f = Frame(np.full((48, 64), 100 + i, np.uint16), i, stamps={"ready": t_ns,
                                                              "published": t_ns + 1000})
    d = Detections(np.array([[4, 4, 20, 20]], np.float32), np.array([0.9], np.float32),
                   np.zeros(1, np.int32))
    return Result(f, d, seq=i)


def test_overlay_renders_at_the_display_rate_and_the_video_plays_in_real_time(tmp_path):
    out = OverlayOutput(video=tmp_path / "o.mp4", display_fps=25.0, window=False)
    out.start()
    t0 = 1_000_000_000
    n, step = 200, 10_000_000  # 200 frames at 100 frames/s: 2 s
    for i in range(n):
        out.submit(_result(i, t0 + i * step))
    out.stop()
    accepted = out.handled + out.dropped
    assert 45 <= accepted <= 55, accepted  # ~25 of every 100
    assert out.skipped == n - accepted
    cap = cv2.VideoCapture(str(out.video.path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert fps == pytest.approx(25.0)
    # 2 s of run = 2 s of video, whatever the overlay thread kept up with
    assert count / fps == pytest.approx(2.0, abs=0.1)


def test_records_are_written_in_batches_and_all_kept(tmp_path):
    rec = RecordsOutput(tmp_path, batch=10, flush_s=60.0)
    rec.open()
    for i in range(25):
        rec.handle(_result(i, 1000 + i))
    assert rec.flushes == 2
    assert len((tmp_path / "detections.jsonl").read_text().splitlines()) == 20
    rec.close()
    lines = (tmp_path / "detections.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(25))
