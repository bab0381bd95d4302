"""The live loop's control stage, value by value: which frames may drive a move, what
``step`` returns in every mode, how mode and target commands land, the run summary, the
ground-truth centring error, and the commanded (not waited) moves.

Real simulated microscope, real :class:`Frame` and :class:`Detections`; frames built by
hand where a test needs exact time stamps. No detector: the boxes are placed where the
test wants them, so every expectation is exact.
"""

from __future__ import annotations

import math
import time
import types

import numpy as np
import pytest
from _support import boxes_at, sim_scope

from inscope.acquisition.frame import Frame, StagePosition
from inscope.acquisition.safety import MoveGuard, MoveRecord, SoftLimits
from inscope.config import ControlConfig
from inscope.control.focus import depth_of_field_um, sharpness
from inscope.control.targets import ClassName, Largest, NearestToCenter, TrackId
from inscope.control_stage import (
    NO_STEP,
    CommandedMoves,
    ControlStage,
    ControlStep,
    truth_centering_error_um,
)
from inscope.detector.base import Detections
from inscope.enums import Mode, SteerStatus

#: Far beyond any real ``time.monotonic_ns()`` a move could be stamped with in a test:
#: hand-built frames stamped from here on are never older than a move the guard records.
FUTURE_NS = time.monotonic_ns() + 10**15

MOVING_REASON = "exposed during a move"
STALE_REASON = "exposed before the last move was commanded"


def _scope(**kw):
    return sim_scope(seed=1, shape=(64, 64), **kw)


def _frame(index: int = 0, ready_ns: int | None = None, *, moving: bool = False,
           metadata: dict | None = None, shape=(64, 64)) -> Frame:
    """A hand-built frame with an exact exposure stamp."""
    stamps = {"ready": FUTURE_NS + index * 10_000_000 if ready_ns is None else ready_ns}
    return Frame(np.zeros(shape, np.uint16), index, stamps, StagePosition(0.0, 0.0, 0.0), 0.5,
                 metadata=dict(metadata or {}), moving=moving)


def _dets(*centres_px, size: float = 8.0, scores=None) -> Detections:
    c = np.asarray(centres_px, float).reshape(-1, 2)
    boxes = np.concatenate([c - size / 2, c + size / 2], axis=1)
    n = len(c)
    sc = np.full(n, 0.9) if scores is None else np.asarray(scores, float)
    return Detections(boxes, sc, np.zeros(n, np.int32))


class Director:
    """A mission beside steering that records what the stage hands it."""

    def __init__(self, select: int | None = None) -> None:
        self.select = select
        self.steps: list[tuple] = []
        self.records: list[tuple] = []

    def step(self, stage, frame, tracks) -> None:
        self.steps.append((stage, frame, tracks))
        if self.select is not None:
            stage.steerer.select(self.select)

    def status(self) -> dict:
        return {"phase": "test", "steps": len(self.steps)}

    def summary(self) -> dict:
        return {"visited": 3}

    def record(self, stage, frame, steer, focus) -> None:
        self.records.append((stage, frame, steer, focus))


# -- CommandedMoves ---------------------------------------------------------------------
def test_commanded_moves_never_wait_and_keep_relative():
    """The live loop must never block on the stage: every move goes out with wait=False,
    whatever the caller asks, and a relative move stays relative."""
    scope = _scope(xy_settle_ms=500.0, z_settle_ms=500.0, xy_quantum_um=0.0,
                   z_quantum_um=0.0)
    m = CommandedMoves(scope)
    t0 = scope.sim_time_s
    assert m.move_xy(5.0, -3.0, wait=True) is True
    assert scope.sim_time_s == t0, "a commanded move took the caller's time"
    assert scope.moving()
    assert scope.guard.history[-1].target == (5.0, -3.0)
    assert m.move_xy(2.0, 1.0, relative=True, wait=True) is True
    # relative to where the stage is now (on its way to the first target)
    start = scope.guard.history[-1].start
    assert scope.guard.history[-1].target == pytest.approx((start[0] + 2.0, start[1] + 1.0))
    # (the guard's rate limit may take a few ms; a waited move would take 500)
    assert scope.sim_time_s - t0 < 0.1 and scope.moving()
    z0 = scope.position().z
    assert m.move_z(1.5, relative=True, wait=True) is True
    assert scope.guard.history[-1].target == pytest.approx((z0 + 1.5,))
    assert m.move_z(-2.0, wait=True) is True
    assert scope.guard.history[-1].target == (-2.0,)
    assert scope.sim_time_s - t0 < 0.1 and scope.moving()


def test_commanded_relative_moves_start_from_a_settled_stage():
    """A relative move (XY or Z) is measured from where the stage is, an absolute one
    is not: the flag reaches the scope, for both axes."""
    scope = _scope(xy_quantum_um=0.0)
    scope.move_xy(10.0, 20.0)  # waited: the stage is there
    m = CommandedMoves(scope)
    assert m.move_xy(1.0, 2.0, relative=True)
    assert scope.guard.history[-1].target == pytest.approx((11.0, 22.0))
    assert m.move_xy(1.0, 2.0)
    assert scope.guard.history[-1].target == pytest.approx((1.0, 2.0))
    scope.move_z(3.0)  # waited
    assert m.move_z(-1.0, relative=True)
    assert scope.guard.history[-1].target == pytest.approx((2.0,))
    scope.move_z(3.0)
    assert m.move_z(-1.0)
    assert scope.guard.history[-1].target == pytest.approx((-1.0,))


def test_commanded_moves_return_what_the_scope_returns():
    """A dry-run guard makes no move: the control stage must hear False, not True."""
    guard = MoveGuard(SoftLimits(x=(-100, 100), y=(-100, 100), z=(-50, 50)), dry_run=True)
    scope = _scope(guard=guard)
    m = CommandedMoves(scope)
    assert m.move_xy(1.0, 1.0) is False
    assert m.move_z(1.0) is False


def test_commanded_moves_delegate_everything_else():
    """Position, guard, pixel size: the wrapped scope's own."""
    scope = _scope()
    m = CommandedMoves(scope)
    assert m.guard is scope.guard
    assert m.position() == scope.position()
    assert m.pixel_size_um == scope.pixel_size_um
    assert m.config is scope.config
    with pytest.raises(AttributeError):
        m.no_such_attribute  # noqa: B018


# -- construction -----------------------------------------------------------------------
def test_the_stage_is_built_from_its_config():
    """Every ControlConfig value reaches the steerer and the focus lock it configures."""
    scope = _scope()
    cfg = ControlConfig(mode="track", target="class", target_class="mitotic",
                        deadband_um=0.7, max_step_um=33.0, gain=0.6, settle_s=0.02,
                        focus_step_um=1.25, focus_dof_um=4.0, focus_dither_um=0.3,
                        focus_check_s=2.5)
    stage = ControlStage(scope, cfg)
    assert stage.config is cfg and stage.scope is scope
    assert stage.mode is Mode.TRACK
    assert isinstance(stage.moves, CommandedMoves) and stage.moves._scope is scope
    st = stage.steerer
    assert st.scope is stage.moves and st.tracker is stage.tracker
    assert (st.gain, st.deadband_um, st.max_step_um, st.settle_s) == (0.6, 0.7, 33.0, 0.02)
    assert st.policy == ClassName("mitotic")
    fl = stage.focus
    assert fl.scope is stage.moves
    assert (fl.dither_um, fl.max_step_um, fl.dof_um, fl.check_every_s) == (0.3, 1.25, 4.0,
                                                                           2.5)
    assert fl.dof_source == "config"
    assert stage.director is None
    stage.close()


def test_the_objective_sizes_the_depth_of_field():
    """NA, wavelength and immersion index go to the focus lock (dither = dof / 4)."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(objective_na=0.5, wavelength_um=0.6,
                                              immersion_index=1.33))
    dof = depth_of_field_um(0.5, 0.6, 1.33, scope.pixel_size_um)
    assert stage.focus.dof_um == pytest.approx(dof)
    assert stage.focus.dither_um == pytest.approx(dof / 4)
    assert stage.focus.max_step_um == pytest.approx(dof)
    other = ControlStage(scope, ControlConfig(objective_na=0.5))
    assert other.focus.dof_um == pytest.approx(
        depth_of_field_um(0.5, 0.52, 1.0, scope.pixel_size_um))
    assert other.focus.dof_um != pytest.approx(dof)
    stage.close()
    other.close()


def test_a_default_stage_is_off_and_empty():
    """No config: the documented defaults, nothing counted, nothing remembered."""
    scope = _scope()
    stage = ControlStage(scope)
    assert stage.config == ControlConfig()
    assert stage.mode is Mode.OFF
    assert stage.target_policy == "nearest"
    assert stage.steerer.policy == NearestToCenter()
    assert stage.last_frame is None and stage.last_tracks == []
    assert stage.last_steer is None and stage.last_focus is None
    assert stage.focus_moves == 0 and stage.frames_moving == 0
    assert stage.frames_before_move == 0
    assert stage.centered_targets == set()
    assert stage.steer_status == {} and stage.focus_status == {}
    assert stage._last_move_ns == 0 and stage._wait_from is None
    stage.close()


def test_a_config_track_id_target():
    """``target = 7`` in the config steers to track 7."""
    stage = ControlStage(_scope(), ControlConfig(target=7))
    assert stage.steerer.policy == TrackId(7)
    assert stage.target_policy == "id"
    stage.close()


# -- the guard's moves ------------------------------------------------------------------
def test_moves_the_guard_makes_mark_older_frames_stale_until_closed():
    """The stage listens to the guard: any made move (its own or anyone's) makes every
    frame exposed before it unusable; after close it no longer listens."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="steer"))
    assert stage._on_move in scope.guard.moved
    old = scope.snap()
    assert stage.usable(old) is None
    scope.move_xy(5.0, 0.0)
    assert stage._last_move_ns == scope.guard.history[-1].t_ns
    assert stage.usable(old) is SteerStatus.SETTLING
    new = scope.snap()
    assert stage.usable(new) is None
    stage.close()
    assert stage._on_move not in scope.guard.moved
    before = stage._last_move_ns
    scope.move_xy(0.0, 0.0)
    assert stage._last_move_ns == before


def test_only_made_moves_count_and_the_newest_wins():
    """A dry-run (not made) move leaves the frames usable; an older record never moves
    the mark back."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="steer"))
    sig = scope.guard.moved
    sig.emit(MoveRecord(500, "xy", (0.0, 0.0), (1.0, 0.0), made=False, reason="dry-run"))
    assert stage._last_move_ns == 0
    sig.emit(MoveRecord(500, "xy", (0.0, 0.0), (1.0, 0.0), made=True))
    assert stage._last_move_ns == 500
    sig.emit(MoveRecord(300, "z", (0.0,), (1.0,), made=True))
    assert stage._last_move_ns == 500
    sig.emit(MoveRecord(900, "z", (0.0,), (1.0,), made=True))
    assert stage._last_move_ns == 900
    stage.close()


def test_a_scope_without_a_guard():
    """A backend without a guard: nothing to listen to, and close still works."""
    scope = types.SimpleNamespace(pixel_size_um=0.5)
    stage = ControlStage(scope, ControlConfig(mode="track", focus_dof_um=2.0))
    assert stage._guard is None
    stage.close()


# -- usable frames ----------------------------------------------------------------------
def test_usable_frames():
    """Moving frames and frames exposed before the newest move are never used to decide;
    the exposure end (when the camera gives it) is what counts, else the ready stamp."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer"))
    assert stage.usable(_frame(ready_ns=0)) is None, "nothing moved yet"
    stage._on_move(MoveRecord(1000, "xy", (0.0, 0.0), (1.0, 0.0), made=True))
    assert stage.usable(_frame(ready_ns=999)) is SteerStatus.SETTLING
    assert stage.usable(_frame(ready_ns=1000)) is None, "exposed as the move left"
    assert stage.usable(_frame(ready_ns=1001)) is None
    assert stage.usable(_frame(ready_ns=5000, moving=True)) is SteerStatus.MOVING
    assert stage.usable(_frame(ready_ns=1, moving=True)) is SteerStatus.MOVING
    # the exposure's end, not the read-out, decides
    assert stage.usable(_frame(ready_ns=5000, metadata={"exposure_end_ns": 999})) \
        is SteerStatus.SETTLING
    assert stage.usable(_frame(ready_ns=5, metadata={"exposure_end_ns": 1000})) is None
    assert stage.usable(_frame(ready_ns=999, metadata={"camera": "x"})) \
        is SteerStatus.SETTLING
    assert stage.usable(_frame(ready_ns=1000, metadata={"camera": "x"})) is None
    # no stamp at all: exposed at 0, before any move
    f = _frame(ready_ns=5000)
    del f.stamps["ready"]
    assert stage.usable(f) is SteerStatus.SETTLING
    stage._last_move_ns = 0
    assert stage.usable(f) is None
    stage._last_move_ns = 1
    assert stage.usable(f) is SteerStatus.SETTLING
    stage.close()


# -- step, per mode ---------------------------------------------------------------------
def test_off_does_nothing():
    """Mode off: the shared empty step, no tracking, nothing counted."""
    stage = ControlStage(_scope(), ControlConfig(mode="off"))
    f = _frame()
    assert stage.step(f, _dets((20, 20))) is NO_STEP
    assert stage.step(_frame(1, moving=True), _dets((20, 20))) is NO_STEP
    assert NO_STEP == ControlStep([], None, None, None)
    assert stage.tracker.tracks == []
    assert stage.frames_moving == 0 and stage.last_frame is None
    stage.close()


def test_track_mode_tracks_and_never_steers_or_focuses():
    """Mode track: tracks (copies, left alone by later frames), no steering, no focus."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="track"))
    f1 = _frame(0)
    s1 = stage.step(f1, _dets((20, 20), (40, 30)))
    assert isinstance(s1, ControlStep)
    assert (s1.target_id, s1.steer, s1.focus) == (None, None, None)
    assert sorted(t.id for t in s1.tracks) == [1, 2]
    live = {t.id: t for t in stage.tracker.tracks}
    assert all(t is not live[t.id] for t in s1.tracks), "published tracks are copies"
    before = {t.id: t.box.copy() for t in s1.tracks}
    assert stage.last_frame is f1 and stage.last_tracks is s1.tracks
    f2 = _frame(1)
    s2 = stage.step(f2, _dets((21, 20), (41, 30)))
    for t in s1.tracks:
        assert np.array_equal(t.box, before[t.id]), "a published step's track moved"
    assert {t.id: tuple(t.box) for t in s2.tracks} == {1: (17, 16, 25, 24),
                                                        2: (37, 26, 45, 34)}
    assert stage.last_frame is f2 and stage.last_tracks is s2.tracks
    assert len(scope.guard.history) == 0
    assert stage.steer_status == {} and stage.focus_status == {}
    stage.close()


def test_track_mode_on_unusable_frames_still_tracks_and_counts():
    """A moving or stale frame in track mode: tracks, counted, nothing published for
    steering or focus, and the stage's last frame stays the last usable one."""
    stage = ControlStage(_scope(), ControlConfig(mode="track"))
    good = _frame(0)
    stage.step(good, _dets((20, 20)))
    s = stage.step(_frame(1, moving=True), _dets((22, 20)))
    assert (s.steer, s.focus, s.target_id) == (None, None, None)
    assert [tuple(t.box) for t in s.tracks] == [(18, 16, 26, 24)]
    assert s.tracks[0] is not stage.tracker.tracks[0]
    assert (stage.frames_moving, stage.frames_before_move) == (1, 0)
    stage._on_move(MoveRecord(FUTURE_NS + 10**12, "xy", (0, 0), (1, 0), made=True))
    s = stage.step(_frame(2), _dets((24, 20)))
    assert (s.steer, s.focus) == (None, None)
    assert [tuple(t.box) for t in s.tracks] == [(20, 16, 28, 24)]
    assert (stage.frames_moving, stage.frames_before_move) == (1, 1)
    assert stage.last_frame is good
    assert stage.steer_status == {} and stage.focus_status == {}
    stage.close()


def test_steer_focus_on_a_moving_frame_publishes_why_and_moves_nothing():
    """Exact steering and focus records of a frame exposed during a move."""
    scope = _scope()
    director = Director()
    stage = ControlStage(scope, ControlConfig(mode="steer+focus"), director=director)
    stage.steerer.target_id = 4
    stage.focus.z_center = 1.5
    f = _frame(7, moving=True)
    s = stage.step(f, _dets((20, 20)))
    assert s.target_id == 4
    assert s.steer == {"frame_index": 7, "status": "moving", "target_id": 4,
                       "reason": MOVING_REASON, "made": False,
                       "tour": {"phase": "test", "steps": 0}}
    assert s.focus == {"frame_index": 7, "status": "moving", "state": "moving",
                       "z_center": 1.5, "locked": False, "reason": MOVING_REASON,
                       "made": False}
    assert s.steer["status"] is SteerStatus.MOVING
    assert len(s.tracks) == 1
    assert stage.steer_status == {"moving": 1} and stage.focus_status == {"moving": 1}
    assert (stage.frames_moving, stage.frames_before_move) == (1, 0)
    assert director.steps == [], "the director runs on usable frames only"
    assert director.records == [(stage, f, s.steer, s.focus)]
    assert len(scope.guard.history) == 0
    assert stage.last_frame is None and stage.last_steer is None
    assert stage.last_focus is None
    stage.close()


def test_steer_focus_on_a_stale_frame():
    """Exact records of a frame exposed before the newest move was commanded."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="steer+focus"))
    stage.focus.locked = True
    stage._on_move(MoveRecord(FUTURE_NS + 10**12, "xy", (0, 0), (1, 0), made=True))
    s = stage.step(_frame(3), _dets((20, 20)))
    assert s.steer == {"frame_index": 3, "status": "settling", "target_id": None,
                       "reason": STALE_REASON, "made": False}
    assert s.focus == {"frame_index": 3, "status": "settling", "state": "settling",
                       "z_center": None, "locked": True, "reason": STALE_REASON,
                       "made": False}
    assert stage.steer_status == {"settling": 1} and stage.focus_status == {"settling": 1}
    assert (stage.frames_moving, stage.frames_before_move) == (0, 1)
    assert len(scope.guard.history) == 0
    stage.close()


def test_steer_only_and_focus_only_on_unusable_frames():
    """Steer mode publishes no focus record, focus mode no steering record."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer"))
    s = stage.step(_frame(0, moving=True), _dets((20, 20)))
    assert s.steer is not None and s.focus is None
    assert stage.focus_status == {}
    stage.set_mode("focus")
    s = stage.step(_frame(1, moving=True), _dets((20, 20)))
    assert s.steer is None and s.focus is not None
    assert stage.steer_status == {"moving": 1} and stage.focus_status == {"moving": 1}
    stage.close()


def test_steer_mode_moves_to_the_target_without_waiting():
    """A usable frame in steer mode: the steerer's action, published and counted, the
    move commanded and not waited for."""
    scope = _scope(xy_settle_ms=500.0)
    stage = ControlStage(scope, ControlConfig(mode="steer", max_step_um=250.0))
    f = scope.snap()
    p = f.position
    t0 = scope.sim_time_s
    s = stage.step(f, boxes_at(f, [(p.x + 10.0, p.y)]))
    assert s.steer is not None and s.focus is None
    assert s.steer["status"] == "moved" and s.steer["made"] is True
    assert s.target_id == s.steer["target_id"] == 1
    assert s.steer["move_um"][0] == pytest.approx(10.0, abs=1.0)
    assert stage.steerer.history[-1].to_dict() == s.steer
    assert stage.last_steer is s.steer
    assert stage.steer_status == {"moved": 1}
    assert scope.sim_time_s == t0 and scope.moving()
    assert stage.centered_targets == set()
    assert stage.last_frame is f and [t.id for t in stage.last_tracks] == [1]
    sm = stage.summary()
    assert sm["moves_made"] == 1 and sm["last_error_um"] == s.steer["error_norm_um"]
    stage.close()


def test_a_centred_target_is_counted_once():
    """A target within the deadband is centred; the same target again is still one."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="steer", deadband_um=2.0))
    for _ in range(2):
        f = scope.snap()
        p = f.position
        s = stage.step(f, boxes_at(f, [(p.x, p.y)]))
        assert s.steer["status"] == "centred", s.steer
        assert s.target_id == 1
    assert stage.centered_targets == {1}
    assert stage.steer_status == {"centred": 2}
    assert stage.summary()["targets_centred"] == 1
    assert len(scope.guard.history) == 0
    stage.close()


def test_no_target_is_not_centred():
    """No detections: no target, nothing centred, the status counted."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="steer"))
    s = stage.step(scope.snap(), Detections.empty())
    assert s.steer["status"] == "no-target" and s.target_id is None
    assert s.tracks == []
    assert stage.steer_status == {"no-target": 1}
    assert stage.centered_targets == set()
    stage.close()


def test_the_director_runs_before_steering_with_the_live_tracks():
    """The director sees the tracker's live tracks and may choose the target before the
    steerer decides; its status goes into the published steering."""
    scope = _scope()
    director = Director(select=2)
    stage = ControlStage(scope, ControlConfig(mode="steer", deadband_um=100.0),
                         director=director)
    f = scope.snap()
    p = f.position
    s = stage.step(f, boxes_at(f, [(p.x, p.y), (p.x + 5.0, p.y + 5.0)]))
    assert s.target_id == 2 and s.steer["target_id"] == 2
    assert s.steer["tour"] == {"phase": "test", "steps": 1}
    assert len(director.steps) == 1
    d_stage, d_frame, d_tracks = director.steps[0]
    assert d_stage is stage and d_frame is f
    assert [t.id for t in d_tracks] == [1, 2]
    assert all(t is stage.tracker.get(t.id) for t in d_tracks), "live, not copies"
    assert director.records == [(stage, f, s.steer, None)]
    assert stage.summary()["tour"] == {"visited": 3}
    stage.close()


def test_focus_mode_steps_the_lock_and_counts_its_moves():
    """Focus mode on a usable frame: the lock's action with its state and lock flag;
    its moves are commanded without waiting and counted."""
    scope = _scope(z_settle_ms=500.0)
    stage = ControlStage(scope, ControlConfig(mode="focus"))
    t0 = scope.sim_time_s
    f = scope.snap()
    s = stage.step(f, boxes_at(f, [(f.position.x, f.position.y)]))
    assert s.steer is None and s.focus is not None
    assert s.focus["status"] == "acquiring" and s.focus["made"] is True
    assert s.focus["state"] == stage.focus.state == "acquiring"
    assert s.focus["locked"] is False
    assert s.focus["frame_index"] == f.index
    assert stage.last_focus is s.focus
    assert stage.focus_moves == 1 and stage.focus_status == {"acquiring": 1}
    assert scope.guard.history[-1].axis == "z" and scope.moving()
    assert scope.sim_time_s == pytest.approx(t0 + 0.01)
    # the next frame is exposed during the focus move: ignored, nothing more made
    f2 = scope.snap()
    assert f2.moving
    s2 = stage.step(f2, boxes_at(f2, [(f2.position.x, f2.position.y)]))
    assert s2.focus["status"] == "moving"
    assert stage.focus_moves == 1
    sm = stage.summary()["focus"]
    assert sm["moves_made"] == 1 and sm["state"] == "acquiring"
    assert sm["z_center_um"] == s.focus["z_center"]
    stage.close()


def test_a_focus_move_not_made_reports_its_outcome_as_the_state():
    """A dry-run guard: the focus record's state says ``dry-run`` (the lock's own state
    is not what happened), and no focus move is counted."""
    guard = MoveGuard(SoftLimits(x=(-500, 500), y=(-500, 500), z=(-50, 50)), dry_run=True)
    scope = _scope(guard=guard)
    stage = ControlStage(scope, ControlConfig(mode="steer+focus", deadband_um=0.01))
    f = scope.snap()
    p = f.position
    s = stage.step(f, boxes_at(f, [(p.x + 10.0, p.y)]))
    assert s.focus["status"] == "dry-run" and s.focus["state"] == "dry-run"
    assert s.focus["made"] is False
    assert stage.focus.state == "acquiring"
    assert stage.focus_moves == 0 and stage.focus_status == {"dry-run": 1}
    assert s.steer["status"] == "dry-run"
    sm = stage.summary()
    assert sm["moves_dry_run"] == 1 and sm["moves_made"] == 0
    assert sm["focus"]["state"] == "dry-run"
    stage.close()


def test_steering_waits_for_a_focus_cycle_at_most_a_quarter_second():
    """In steer+focus, while the lock's dither cycle runs the stage waits (a few frames)
    instead of voiding it; from 0.25 s of frame time on it steers anyway. Focus alone
    never publishes a steering record."""
    scope = _scope()
    director = Director()
    stage = ControlStage(scope, ControlConfig(mode="steer+focus"), director=director)
    base = FUTURE_NS
    d = _dets((32, 32))
    s = stage.step(_frame(0, base), d)  # the lock starts: no cycle was running yet
    assert s.steer["status"] != "waiting-focus"
    assert len(director.steps) == 1
    assert stage.focus.cycling
    s = stage.step(_frame(1, base + 100_000_000), d)
    assert s.steer == {"frame_index": 1, "status": "waiting-focus", "target_id": 1,
                       "made": False, "reason": "the focus lock is measuring",
                       "tour": {"phase": "test", "steps": 1}}
    assert s.target_id == 1
    assert s.focus is not None
    assert stage._wait_from == base + 100_000_000
    s = stage.step(_frame(2, base + 349_000_000), d)
    assert s.steer["status"] == "waiting-focus"
    assert stage.steer_status["waiting-focus"] == 2
    assert len(director.steps) == 1, "no director step while waiting"
    last_steer = stage.last_steer
    s = stage.step(_frame(3, base + 350_000_000), d)  # exactly 0.25 s of waiting
    assert s.steer["status"] != "waiting-focus"
    assert len(director.steps) == 2
    assert stage.last_steer is s.steer and s.steer is not last_steer
    # no cycle: the wait is forgotten, the next cycle waits from its own start
    stage.set_mode("steer")
    s = stage.step(_frame(4, base + 400_000_000), d)
    assert stage._wait_from is None
    stage.set_mode("steer+focus")
    stage.step(_frame(5, base + 500_000_000), d)  # the lock starts again
    s = stage.step(_frame(6, base + 600_000_000), d)
    assert s.steer["status"] == "waiting-focus"
    assert stage._wait_from == base + 600_000_000
    stage.close()


def test_focus_only_never_waits_or_steers():
    """Focus mode with a cycle running: no steering record, no wait."""
    stage = ControlStage(_scope(), ControlConfig(mode="focus"))
    d = _dets((32, 32))
    for i in range(3):
        s = stage.step(_frame(i), d)
        assert s.steer is None and s.focus is not None
        assert s.target_id is None
    assert stage.focus.cycling
    assert stage._wait_from is None
    assert stage.steer_status == {}
    stage.close()


def test_a_frame_without_a_ready_stamp_waits_from_zero():
    """The wait is measured on the frames' ready stamps (0 when absent)."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer+focus"))
    stage.step(_frame(0), _dets((32, 32)))
    f = _frame(1, metadata={"exposure_end_ns": FUTURE_NS + 10**9})
    del f.stamps["ready"]
    assert stage.usable(f) is None
    stage.step(f, _dets((32, 32)))
    assert stage._wait_from == 0
    stage.close()


# -- commands ---------------------------------------------------------------------------
def test_set_mode_resets_only_what_stops():
    """Leaving steering forgets the target; leaving focusing forgets the lock; a mode that
    keeps either keeps its state."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer+focus"))

    def arm():
        stage.steerer.target_id = 5
        stage.focus.z_center = 2.0

    def kept():
        return stage.steerer.target_id == 5, stage.focus.z_center == 2.0

    arm()
    stage.set_mode("steer+focus")
    assert kept() == (True, True) and stage.mode is Mode.STEER_FOCUS
    stage.set_mode("steer")
    assert kept() == (True, False) and stage.mode is Mode.STEER
    arm()
    stage.set_mode("focus")
    assert kept() == (False, True) and stage.mode is Mode.FOCUS
    arm()
    stage.set_mode("track")
    assert kept() == (True, False) and stage.mode is Mode.TRACK
    arm()
    stage.set_mode("off")
    assert kept() == (True, True) and stage.mode is Mode.OFF
    stage.set_mode("steer+focus")
    assert kept() == (True, True)
    stage.set_mode("off")
    assert kept() == (False, False)
    arm()
    stage.set_mode("track")
    assert kept() == (True, True)
    stage.close()


def test_set_mode_refuses_unknown_modes_and_keeps_the_mode():
    """A bad mode is a ValueError naming the modes; nothing changes."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer"))
    stage.steerer.target_id = 5
    for bad in ("steering", "", "STEER", None, 3):
        with pytest.raises(ValueError, match="unknown control mode"):
            stage.set_mode(bad)
    assert stage.mode is Mode.STEER and stage.steerer.target_id == 5
    with pytest.raises(ValueError):
        ControlStage(_scope(), ControlConfig(mode="fly"))
    stage.close()


@pytest.mark.parametrize("spec,cls,canonical,policy,name", [
    ("largest", None, "largest", Largest(), "largest"),
    ("centre", None, "nearest", NearestToCenter(), "nearest"),
    ("class", "mitotic", "class:mitotic", ClassName("mitotic"), "class"),
    ("class:dead", None, "class:dead", ClassName("dead"), "class"),
    (7, None, 7, TrackId(7), "id"),
    ("id:12", None, 12, TrackId(12), "id"),
])
def test_set_target_forms(spec, cls, canonical, policy, name):
    """Every target form lands on the steerer as its policy; the reply is canonical."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer"))
    stage.steerer.target_id = 3
    out = stage.set_target(spec, cls)
    assert out == canonical and type(out) is type(canonical)
    assert stage.steerer.policy == policy
    assert stage.steerer.target_id is None, "a new target is chosen afresh"
    assert stage.target_policy == name
    assert stage.summary()["target_policy"] == name
    stage.close()


def test_set_target_refuses_bad_specs_and_keeps_the_target():
    """A bad spec is a ValueError and the current target stays."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer", target="largest"))
    stage.steerer.target_id = 3
    for bad in ("biggest", "class", "id:x", -1, True, 2.5):
        with pytest.raises(ValueError):
            stage.set_target(bad)
    assert stage.steerer.policy == Largest() and stage.steerer.target_id == 3
    stage.close()


def test_target_policy_of_a_policy_without_a_name():
    """A policy object without a name is shown as its string."""
    stage = ControlStage(_scope())

    class Odd:
        def __str__(self):
            return "odd-policy"

    stage.steerer.policy = Odd()
    assert stage.target_policy == "odd-policy"
    stage.close()


# -- summary ----------------------------------------------------------------------------
def test_summary_of_a_fresh_stage():
    """Every key of the run summary, before any frame."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="track", focus_dof_um=3.14159,
                                              focus_dither_um=0.12345))
    assert stage.summary() == {
        "mode": "track", "target_policy": "nearest", "steer": {}, "moves_made": 0,
        "moves_refused": 0, "moves_dry_run": 0, "targets_centred": 0,
        "last_error_um": None, "frames_ignored_moving": 0,
        "frames_ignored_before_move": 0,
        "focus": {"status": {}, "moves_made": 0, "state": None, "locked": False,
                  "z_center_um": None, "depth_of_field_um": 3.142,
                  "depth_of_field_from": "config", "dither_um": 0.123},
    }
    assert "tour" not in stage.summary()
    stage.close()


def test_summary_counts():
    """Moves made / refused (refused + failed) / dry-run, the targets centred, the
    frames ignored, the last steering error and the focus state come from the counters."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer+focus"))
    stage.steer_status.update({SteerStatus.MOVED: 4, SteerStatus.REFUSED: 2,
                               SteerStatus.FAILED: 3, SteerStatus.DRY_RUN: 5,
                               SteerStatus.CENTERED: 7})
    stage.focus_status.update({"locked": 6, "acquiring": 2})
    stage.centered_targets.update({1, 4})
    stage.frames_moving, stage.frames_before_move, stage.focus_moves = 8, 9, 10
    stage.last_steer = {"error_norm_um": 1.25}
    stage.last_focus = {"state": "locked", "z_center": 2.5}
    stage.focus.locked = True
    s = stage.summary()
    assert s["mode"] == "steer+focus"
    assert s["steer"] == {"moved": 4, "refused": 2, "failed": 3, "dry-run": 5,
                          "centred": 7}
    assert (s["moves_made"], s["moves_refused"], s["moves_dry_run"]) == (4, 5, 5)
    assert s["targets_centred"] == 2 and s["last_error_um"] == 1.25
    assert (s["frames_ignored_moving"], s["frames_ignored_before_move"]) == (8, 9)
    assert s["focus"]["status"] == {"locked": 6, "acquiring": 2}
    assert s["focus"]["moves_made"] == 10 and s["focus"]["state"] == "locked"
    assert s["focus"]["locked"] is True and s["focus"]["z_center_um"] == 2.5
    stage.close()


def test_summary_of_refused_moves_from_a_real_run():
    """A target beyond the soft limits: the steering move is refused and counted."""
    scope = _scope()
    p = scope.position()
    scope.guard.limits = SoftLimits(x=(p.x - 1.0, p.x + 1.0), y=(p.y - 1.0, p.y + 1.0),
                                    z=scope.guard.limits.z)
    stage = ControlStage(scope, ControlConfig(mode="steer", max_step_um=250.0))
    f = scope.snap()
    s = stage.step(f, boxes_at(f, [(p.x + 12.0, p.y)]))
    assert s.steer["status"] == "refused" and s.steer["made"] is False
    sm = stage.summary()
    assert (sm["moves_made"], sm["moves_refused"]) == (0, 1)
    assert sm["last_error_um"] == pytest.approx(12.0, abs=1.0)
    stage.close()


# -- ground truth -----------------------------------------------------------------------
def _truth_frame(truth, affine=((0.5, 0.1), (0.0, 0.25))) -> Frame:
    f = Frame(np.zeros((80, 100), np.uint16), 0, {"ready": 1},
              StagePosition(0.0, 0.0, 0.0), 0.5, np.asarray(affine, float))
    f.truth = None if truth is None else np.asarray(truth, np.float32)
    return f


TRUTH = [[10, 10, 20, 30], [90, 0, 96, 4], [60, 50, 70, 54]]  # centres (15,20) (93,2) (65,52)


def test_truth_centering_error_uses_the_nearest_true_cell_and_the_affine():
    """The error is the distance (µm, through the frame's affine) from the image centre
    to the true cell nearest the target box, not to the box itself."""
    f = _truth_frame(TRUTH)
    # target near the third cell: its centre (65, 52) is (15, 12) px from (50, 40)
    got = truth_centering_error_um(f, np.array([62.0, 48.0, 66.0, 56.0]))
    assert got == pytest.approx(math.hypot(0.5 * 15 + 0.1 * 12, 0.25 * 12))
    # near the first: (15, 20) is (-35, -20) px off
    got = truth_centering_error_um(f, np.array([[12.0, 14.0, 22.0, 30.0]]))
    assert got == pytest.approx(math.hypot(0.5 * -35 + 0.1 * -20, 0.25 * -20))
    # near the second: (93, 2) is (43, -38) px off
    got = truth_centering_error_um(f, [88.0, 0.0, 94.0, 8.0])
    assert got == pytest.approx(math.hypot(0.5 * 43 + 0.1 * -38, 0.25 * -38))
    # one true cell: that one, however far
    one = _truth_frame([[50, 40, 60, 44]], affine=((2.0, 0.0), (0.0, 2.0)))
    assert truth_centering_error_um(one, [0, 0, 2, 2]) == pytest.approx(
        math.hypot(10.0, 4.0))


def test_truth_centering_error_without_truth_is_none():
    """No frame, no truth, no target, no true cell, or a non-finite answer: None."""
    box = np.array([0.0, 0.0, 4.0, 4.0])
    assert truth_centering_error_um(None, box) is None
    assert truth_centering_error_um(_truth_frame(None), box) is None
    assert truth_centering_error_um(_truth_frame(TRUTH), None) is None
    assert truth_centering_error_um(_truth_frame(np.zeros((0, 4))), box) is None
    inf = _truth_frame([[np.inf, 0, np.inf, 4]])
    assert truth_centering_error_um(inf, box) is None
    assert isinstance(truth_centering_error_um(_truth_frame(TRUTH), box), float)
    # a target box of NaNs names no cell (it gave the distance to the first one)
    assert truth_centering_error_um(_truth_frame(TRUTH), np.full(4, np.nan)) is None


def test_truth_centering_picks_the_true_cell_by_both_centre_coordinates():
    """Two true cells side by side, then one above the other: the target box's centre,
    x and y, decides which one stands for the real cell."""
    side = _truth_frame([[56, 36, 64, 44], [86, 36, 94, 44]], affine=((1, 0), (0, 1)))
    assert truth_centering_error_um(side, [84, 36, 92, 44]) == pytest.approx(40.0)
    above = _truth_frame([[46, 26, 54, 34], [46, 66, 54, 74]], affine=((1, 0), (0, 1)))
    assert truth_centering_error_um(above, [46, 64, 54, 72]) == pytest.approx(30.0)


# -- more of step -------------------------------------------------------------------------
def test_every_ignored_frame_is_counted():
    """Counters add up over frames; they are not flags."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer+focus"))
    for i in range(3):
        stage.step(_frame(i, moving=True), _dets((20, 20)))
    stage._on_move(MoveRecord(FUTURE_NS + 10**12, "xy", (0, 0), (1, 0), made=True))
    for i in range(3, 5):
        stage.step(_frame(i), _dets((20, 20)))
    assert (stage.frames_moving, stage.frames_before_move) == (3, 2)
    assert stage.steer_status == {"moving": 3, "settling": 2}
    assert stage.focus_status == {"moving": 3, "settling": 2}
    s = stage.summary()
    assert (s["frames_ignored_moving"], s["frames_ignored_before_move"]) == (3, 2)
    stage.close()


def test_steering_tracks_each_frame_once():
    """The steerer steers on the step's own tracking: the tracker sees each frame once
    (a second update of the same frame would count every hit twice)."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer", deadband_um=100.0))
    stage.step(_frame(0), _dets((32, 32), (20, 20)))
    assert [t.hits for t in stage.tracker.tracks] == [1, 1]
    stage.step(_frame(1), _dets((32, 32), (20, 20)))
    assert [t.hits for t in stage.tracker.tracks] == [2, 2]
    assert [t.age for t in stage.tracker.tracks] == [2, 2]
    stage.close()


def test_the_director_records_both_steering_and_focus():
    """The director's record hook gets the step's steering and focus records."""
    director = Director()
    stage = ControlStage(_scope(), ControlConfig(mode="focus"), director=director)
    f = _frame(0)
    s = stage.step(f, _dets((32, 32)))
    assert s.focus is not None
    assert director.records == [(stage, f, None, s.focus)]
    stage.close()


def test_the_focus_lock_measures_inside_the_detected_boxes():
    """The lock scores sharpness on the frame's detections (the cells), not the whole
    frame: the step hands it the detections."""
    rng = np.random.default_rng(0)
    px = rng.integers(0, 4000, (64, 64)).astype(np.uint16)
    px[20:44, 20:44] = 1000 + (np.arange(24) * 10).astype(np.uint16)[None, :]
    stage = ControlStage(_scope(), ControlConfig(mode="focus"))
    stage.focus.sweep_um = 0.0  # straight into a dither cycle: its centre is measured
    f = Frame(px, 0, {"ready": FUTURE_NS}, StagePosition(0.0, 0.0, 0.0), 0.5)
    d = _dets((32, 32), size=20.0)
    s = stage.step(f, d)
    inside = math.log(sharpness(px, d.boxes, "brenner"))
    whole = math.log(sharpness(px, None, "brenner"))
    assert abs(inside - whole) > 0.5
    assert s.focus["sharpness"] == pytest.approx(inside)
    stage.close()


def test_a_focus_record_names_the_lock_state_while_it_settles():
    """While the lock waits for its own move, the record's status says ``settling`` and
    its state stays the lock's (``acquiring``)."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="focus"))
    s = stage.step(_frame(0), _dets((32, 32)))
    assert s.focus["made"] is True
    target_z = scope.guard.history[-1].target[0]
    assert target_z != 0.0
    s = stage.step(_frame(1), _dets((32, 32)))  # still reports z = 0: not there yet
    assert s.focus["status"] == "settling"
    assert s.focus["state"] == "acquiring"
    assert stage.focus_status == {"acquiring": 1, "settling": 1}
    stage.close()


def test_every_focus_move_is_counted():
    """Focus moves add up (and every focus status is counted, not flagged)."""
    scope = _scope()
    stage = ControlStage(scope, ControlConfig(mode="focus"))
    n = 0
    for i in range(12):
        z = scope.guard.history[-1].target[0] if scope.guard.history else 0.0
        f = Frame(np.zeros((64, 64), np.uint16), i, {"ready": FUTURE_NS + i},
                  StagePosition(0.0, 0.0, z), 0.5)
        stage.step(f, _dets((32, 32)))
        n += 1
    made = sum(r.made for r in scope.guard.history if r.axis == "z")
    assert made >= 3
    assert stage.focus_moves == made
    assert sum(stage.focus_status.values()) == n
    assert max(stage.focus_status.values()) >= 2
    stage.close()


def test_usable_reads_frames_without_metadata_or_a_moving_flag():
    """A frame-like object with no metadata (None) or no ``moving`` attribute is judged
    on its ready stamp."""
    stage = ControlStage(_scope(), ControlConfig(mode="steer"))
    stage._on_move(MoveRecord(1000, "xy", (0.0, 0.0), (1.0, 0.0), made=True))
    f = _frame(ready_ns=2000)
    f.metadata = None
    assert stage.usable(f) is None
    f.stamps["ready"] = 10
    assert stage.usable(f) is SteerStatus.SETTLING
    bare = types.SimpleNamespace(metadata={}, stamps={"ready": 2000})
    assert stage.usable(bare) is None
    bare.stamps["ready"] = 10
    assert stage.usable(bare) is SteerStatus.SETTLING
    stage.close()
