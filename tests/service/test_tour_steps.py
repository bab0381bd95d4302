"""The demo's tour, phase by phase: when it leaves each phase, what it records, what it
says and what it sums up, on hand-built tracks and frames with a known clock.

Real parts: the Tour, a ControlStage (its real Steerer, FocusLock and Tracker) on the
unpaced simulated microscope (moves go through its real guard and soft limits), real
Track and Frame objects. The frames are 400 x 400 at 0.5 µm/px (a field of 200 µm)
taken with the stage at (100, 100) µm; the frame's ``sim_time_s`` is the tour's clock.
The hold and follow times are 0.5 and 0.75 s and the frames 1/64 s apart, so that those
times come out exact from the clock's nanoseconds and ``>=`` differs from ``>`` there; the
30 s and 3 s timeouts are checked a frame before and after.
"""

from __future__ import annotations

import numpy as np
import pytest
from _support import disc_frame, disc_track, made_moves, sim_scope

from inscope.acquisition.frame import StagePosition
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.config import ControlConfig
from inscope.control.steering import SteerAction
from inscope.control.targets import TrackId
from inscope.control_stage import ControlStage
from inscope.enums import SteerStatus
from inscope.tour import Tour, TourConfig

CELL = 1  # the cell to visit: 120 px right of the centre (a hop)
TICK = 1 / 64  # s between frames


def _cells(moved_um: float = 0.0):
    """The target cell and a neighbour (id 2) that has moved *moved_um* in x."""
    return [disc_track(CELL, 320, 200), disc_track(2, 80, 200, um=[40.0 + moved_um, 100.0])]


def _cfg(**kw) -> TourConfig:
    return TourConfig(hold_s=0.5, follow_s=0.75, **kw)


def _setup(mode: str = "steer+focus", cfg: TourConfig | None = None, limits=None):
    guard = None if limits is None else MoveGuard(limits)
    scope = sim_scope(guard=guard)
    tour = Tour(cfg or _cfg())
    stage = ControlStage(scope, ControlConfig(mode=mode), director=tour)
    stage.focus.locked = True
    return tour, stage


def _step(tour, stage, t_s: float, tracks, **kw):
    # cell 2 is dimmer: when both are candidates, the tour chooses CELL
    tour.step(stage, disc_frame(tracks, {2: 500}, t_s=t_s, **kw), tracks)
    return tour.phase


def _steer(stage, status: SteerStatus, target: int | None = CELL) -> None:
    """What the steerer reported on the frame before (the tour reads ``steerer.last``)."""
    stage.steerer.history.append(SteerAction(0, status, target_id=target))


def _centred(tour, stage, t_s: float = 0.0):
    """Drive the tour to 'holding' on CELL from time *t_s*, a TICK a frame; the time the
    hold began."""
    tracks = _cells()
    assert _step(tour, stage, t_s, tracks) == "centring"
    for k in range(tour.cfg.centered_frames):
        _steer(stage, SteerStatus.CENTERED)
        _step(tour, stage, t_s + TICK * (k + 1), tracks)
    assert tour.phase == "holding"
    return t_s + TICK * tour.cfg.centered_frames


# -- focusing ----------------------------------------------------------------------------
def test_focusing_keeps_the_steerer_off_until_the_lock_or_the_timeout():
    tour, stage = _setup()
    stage.focus.locked = False
    tracks = _cells()
    assert _step(tour, stage, 0.0, tracks) == "focusing"
    assert stage.steerer.enabled is False
    assert tour.status()["line"] == "finding focus"
    assert _step(tour, stage, 30.0 - TICK, tracks) == "focusing"  # the timeout is 30 s
    # past it, the tour goes on without the lock, and chooses in the same frame
    assert _step(tour, stage, 30.0 + TICK, tracks) == "centring"
    assert tour.target == CELL and stage.steerer.policy == TrackId(CELL)
    assert stage.steerer.enabled is True


def test_focusing_ends_at_once_when_locked_or_when_the_mode_does_not_focus():
    tour, stage = _setup()
    assert _step(tour, stage, 0.0, _cells()) == "centring"
    tour, stage = _setup(mode="steer")
    stage.focus.locked = False  # no focus lock runs in this mode: nothing to wait for
    assert _step(tour, stage, 0.0, _cells()) == "centring"


# -- choosing and travelling on ------------------------------------------------------------
def test_with_nothing_to_choose_the_stage_travels_on_after_a_while():
    tour, stage = _setup()
    here = stage.scope.position()
    assert _step(tour, stage, 0.0, []) == "choosing"
    assert stage.steerer.enabled is False
    assert tour.status()["line"] == "every cell here visited: travelling on"
    _step(tour, stage, 0.49, [])
    assert tour.travels == 0 and stage.scope.position().x == here.x
    _step(tour, stage, 0.5, [])  # travel_after_s = 0.5
    assert tour.travels == 1
    # 0.75 of the 200 µm field, from where the frame was taken, first along +x
    p = stage.scope.position()
    assert (p.x, p.y) == pytest.approx((250.0, 100.0))
    assert tour.status()["line"] == "choosing cell 1"  # the wait starts over
    _step(tour, stage, 0.875, [])
    assert tour.travels == 1
    _step(tour, stage, 1.375, [])
    assert tour.travels == 2


def test_a_cell_to_choose_ends_the_wait_to_travel():
    tour, stage = _setup()
    _step(tour, stage, 0.0, [])
    assert _step(tour, stage, 0.3, _cells()) == "centring"
    assert _step(tour, stage, 0.4, []) == "choosing"  # the target lost
    assert tour.status()["line"] == "choosing cell 1"
    _step(tour, stage, 0.6, [])
    _step(tour, stage, 1.05, [])  # 0.45 s idle: the wait began at 0.6, not at 0.0
    assert tour.travels == 0


def test_travel_goes_away_from_the_visited_cells_turning_45_degrees_off_the_limits():
    # visited cells below (y 0) the stage (100, 100): away is +y; y is limited to 300 µm
    # and the target must keep half a field (100 µm) inside: +y (250), +y-x at 135
    # degrees (206) and +y+x at 45 degrees (206) are refused; then -x at 180 degrees
    limits = SoftLimits(x=(-1000.0, 1000.0), y=(-1000.0, 300.0))
    tour, stage = _setup(limits=limits)
    tour._visited_xy = np.array([[90.0, 0.0], [110.0, 0.0]])
    frame = disc_frame([], t_s=0.0)
    assert tour._travel(stage, frame, limits) is True
    p = stage.scope.position()
    assert (p.x, p.y) == pytest.approx((-50.0, 100.0))
    # without the limit it goes straight away from them
    tour, stage = _setup()
    tour._visited_xy = np.array([[90.0, 0.0], [110.0, 0.0]])
    assert tour._travel(stage, frame, stage.scope.limits) is True
    p = stage.scope.position()
    assert (p.x, p.y) == pytest.approx((100.0, 250.0))


def test_travel_with_every_direction_refused_or_no_position_moves_nothing():
    limits = SoftLimits(x=(0.0, 200.0), y=(0.0, 200.0))  # no room for a 150 µm hop
    tour, stage = _setup(limits=limits)
    here = stage.scope.position()
    assert tour._travel(stage, disc_frame([], t_s=0.0), limits) is False
    assert tour.travels == 0 and stage.scope.position() == here
    frame = disc_frame([], t_s=0.0)
    frame.position = None
    assert tour._travel(stage, frame, None) is False


# -- centring ------------------------------------------------------------------------------
def test_centring_needs_the_target_centred_on_frames_in_a_row():
    tour, stage = _setup()
    tracks = _cells()
    assert _step(tour, stage, 0.0, tracks) == "centring"
    assert tour.status() == {"phase": "centring", "visited": 0, "target": CELL,
                             "line": f"centring cell 1 (#{CELL})"}
    _steer(stage, SteerStatus.CENTERED)
    _step(tour, stage, 0.1, tracks)
    _steer(stage, SteerStatus.CENTERED, target=2)  # another cell centred: not ours
    _step(tour, stage, 0.2, tracks)
    _steer(stage, SteerStatus.CENTERED)
    _step(tour, stage, 0.3, tracks)
    assert tour.phase == "centring"
    _steer(stage, SteerStatus.MOVED)  # a correction between: the count starts over
    _step(tour, stage, 0.4, tracks)
    for t in (0.5, 0.6):
        _steer(stage, SteerStatus.CENTERED)
        assert _step(tour, stage, t, tracks) == "centring"
    _steer(stage, SteerStatus.CENTERED)
    assert _step(tour, stage, 0.7, tracks) == "holding"
    assert tour.status()["line"] == f"holding cell 1 (#{CELL})"
    # where every seen cell was when the hold began
    assert set(tour._hold_start) == {1, 2}
    np.testing.assert_allclose(tour._hold_start[2], [40.0, 100.0])


def test_centring_gives_up_when_the_target_is_lost_or_after_the_timeout():
    tour, stage = _setup()
    tracks = _cells()
    _step(tour, stage, 0.0, tracks)
    assert _step(tour, stage, 0.1, tracks[1:]) == "choosing"  # the target's track is gone
    tour, stage = _setup()
    _step(tour, stage, 0.0, tracks)
    assert _step(tour, stage, 3.0 - TICK, tracks) == "centring"  # center_timeout_s = 3
    assert _step(tour, stage, 3.0 + TICK, tracks) == "choosing"


def test_a_missed_cell_is_not_where_the_hold_starts():
    tour, stage = _setup()
    tracks = [disc_track(CELL, 320, 200), disc_track(2, 80, 200, missed=1)]
    _step(tour, stage, 0.0, tracks)
    for t in (0.1, 0.2, 0.3):
        _steer(stage, SteerStatus.CENTERED)
        _step(tour, stage, t, tracks)
    assert tour.phase == "holding" and set(tour._hold_start) == {CELL}


# -- holding and following -----------------------------------------------------------------
def test_holding_lasts_hold_s_with_focus_locked_then_records_the_visit():
    tour, stage = _setup()
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5 - TICK, _cells()) == "holding"  # hold_s = 0.5
    stage.focus.locked = False
    assert _step(tour, stage, t0 + 0.5, _cells()) == "holding"  # focus not locked
    stage.focus.locked = True
    assert _step(tour, stage, t0 + 0.5, _cells()) == "choosing"
    assert tour.visited == [{"track_id": CELL, "t_s": round(t0 + 0.5, 3),
                             "stage_um": [160.0, 100.0], "truth_centring_error_um": None}]
    np.testing.assert_allclose(tour._visited_xy, [[160.0, 100.0]])
    assert tour.status()["line"] == "choosing cell 2"
    assert tour.status()["visited"] == 1


def test_after_every_cells_visits_the_cell_that_moved_most_is_followed():
    tour, stage = _setup(cfg=_cfg(cells=1))
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5, _cells(moved_um=2.5)) == "following"
    assert tour.target == 2 and stage.steerer.policy == TrackId(2)
    assert tour.followed == [{"track_id": 2, "t_s": round(t0 + 0.5, 3),
                              "moved_um_during_hold": 2.5}]
    assert tour.status()["line"] == "following moving cell #2"
    assert len(tour.visited) == 1  # the visit is recorded first


@pytest.mark.parametrize("moved_um", [1.9, 0.0])
def test_a_cell_that_moved_less_than_mover_min_um_is_not_followed(moved_um):
    tour, stage = _setup(cfg=_cfg(cells=1))
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5, _cells(moved_um=moved_um)) == "choosing"
    assert tour.followed == []


def test_a_mover_of_exactly_mover_min_um_is_followed():
    tour, stage = _setup(cfg=_cfg(cells=1))
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5, _cells(moved_um=2.0)) == "following"


def test_the_cell_that_moved_most_is_the_one_followed():
    tour, stage = _setup(cfg=_cfg(cells=1))
    t0 = _centred(tour, stage)
    tracks = [*_cells(moved_um=2.5), disc_track(3, 200, 80, um=[100.0 + 4.0, 40.0])]
    tour._hold_start[3] = np.array([100.0, 40.0])
    assert _step(tour, stage, t0 + 0.5, tracks) == "following"
    assert tour.target == 3 and tour.followed[-1]["moved_um_during_hold"] == 4.0


def test_no_mover_is_followed_before_the_cells_are_visited_or_outside_the_limits():
    tour, stage = _setup(cfg=_cfg(cells=2))
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5, _cells(moved_um=5.0)) == "choosing"  # 1 of 2
    # a mover whose centring would leave the soft limits is not followed: cell 2 moved
    # to x 35 µm, and with its radius (6 µm) it needs x >= 39
    limits = SoftLimits(x=(39.0, 1000.0), y=(-1000.0, 1000.0))
    tour, stage = _setup(cfg=_cfg(cells=1), limits=limits)
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5, _cells(moved_um=-5.0)) == "choosing"
    tour, stage = _setup(cfg=_cfg(cells=1), limits=limits)
    t0 = _centred(tour, stage)
    assert _step(tour, stage, t0 + 0.5, _cells(moved_um=5.0)) == "following"  # x 45


def test_following_ends_after_follow_s_and_records_how_long():
    tour, stage = _setup(cfg=_cfg(cells=1))
    t1 = _centred(tour, stage) + 0.5
    _step(tour, stage, t1, _cells(moved_um=3.0))
    assert _step(tour, stage, t1 + 0.75 - TICK, _cells(moved_um=3.0)) == "following"
    assert _step(tour, stage, t1 + 0.75, _cells(moved_um=3.0)) == "choosing"  # follow_s
    assert tour.followed[-1]["followed_s"] == 0.75
    assert "truth_centring_error_um" in tour.followed[-1]  # None: no truth in frames
    assert tour._moved == {}


def test_following_ends_when_the_mover_is_lost_or_its_move_refused():
    tour, stage = _setup(cfg=_cfg(cells=1))
    t1 = _centred(tour, stage) + 0.5
    _step(tour, stage, t1, _cells(moved_um=3.0))
    assert _step(tour, stage, t1 + 0.125, _cells()[:1]) == "choosing"  # cell 2 gone
    assert tour.followed[-1]["followed_s"] == 0.125
    assert "truth_centring_error_um" not in tour.followed[-1]
    tour, stage = _setup(cfg=_cfg(cells=1))
    t1 = _centred(tour, stage) + 0.5
    _step(tour, stage, t1, _cells(moved_um=3.0))
    _steer(stage, SteerStatus.REFUSED, target=2)
    assert _step(tour, stage, t1 + 0.1, _cells(moved_um=3.0)) == "choosing"


# -- the timeline and the summary --------------------------------------------------------
def _record(tour, stage, t_s, **kw):
    focus = kw.pop("focus", None)
    tour.record(stage, disc_frame([], t_s=t_s, **kw), None, focus)


def test_the_timeline_takes_a_point_every_timeline_every_s():
    tour, stage = _setup()
    for t in (0.0, 0.01, 0.019, 0.02, 0.03, 0.045):
        _record(tour, stage, t)
    assert [p["t_s"] for p in tour.timeline] == [0.0, 0.02, 0.045]


def test_a_timeline_point_says_where_what_and_how_far_off():
    tour, stage = _setup()
    _record(tour, stage, 0.0, index=7, position=StagePosition(1.234, -5.678, 2.3456),
            metadata={"defocus_um": -0.12345}, moving=True,
            focus={"state": "locked", "made": True})
    assert tour.timeline[-1] == {"t_s": 0.0, "frame": 7, "phase": "focusing",
                                 "moving": True, "stage_um": [1.23, -5.68, 2.346],
                                 "focus_error_um": -0.123, "focus": "locked",
                                 "focus_moved": True}
    _record(tour, stage, 0.02, focus={"state": "tracking", "made": False})
    p = tour.timeline[-1]
    assert p["focus"] == "tracking" and "focus_moved" not in p and "target" not in p
    assert "focus_error_um" not in p and p["moving"] is False


def test_a_timeline_point_gives_the_targets_centring_error_against_the_truth():
    tour, stage = _setup()
    tracks = _cells()
    frame = disc_frame(tracks, t_s=0.0)
    from _support import boxes_at

    stage.tracker.min_hits = 1
    stage.tracker.update(frame, boxes_at(frame, [[160.0, 100.0]], size_px=24.0))
    tour.target = stage.tracker.tracks[0].id
    # the real cell is 4 px (2 µm) right of the box the tracker holds
    truth = np.array([[324.0 - 12, 188.0, 324.0 + 12, 212.0]])
    _record(tour, stage, 0.0, truth=truth)
    assert tour.timeline[-1]["target"] == tour.target
    # the image centre is pixel (200, 200); the cell 124 px right: 62 µm
    assert tour.timeline[-1]["centring_error_um"] == pytest.approx(62.0)


def test_the_timeline_is_halved_when_it_grows_past_200000_points():
    tour, stage = _setup()
    tour.timeline = [{"t_s": i} for i in range(199_999)]
    _record(tour, stage, 0.0)
    assert len(tour.timeline) == 200_000  # at the cap, not past it
    _record(tour, stage, 0.02)
    assert len(tour.timeline) == 100_001 and tour.timeline[0] == {"t_s": 100_000}


def _point(t, *, moving=False, dz=None, focus=None, moved=False, phase="holding", ce=None):
    p = {"t_s": t, "moving": moving, "phase": phase}
    if dz is not None:
        p["focus_error_um"] = dz
    if focus is not None:
        p["focus"] = focus
    if moved:
        p["focus_moved"] = True
    if ce is not None:
        p["centring_error_um"] = ce
    return p


def test_the_summary_splits_focus_error_before_after_and_while_locked():
    tour, _ = _setup()
    tour.timeline = [
        _point(0.0, dz=-4.0, focus="searching"),
        _point(0.1, dz=9.0, moving=True),  # exposed during a move: not counted
        _point(0.2, dz=2.0, focus="locked"),  # first locked
        _point(0.3, dz=-1.0, focus="checking"),
        _point(0.4, dz=0.5, focus="locked", moved=True),  # it moved on this frame
        _point(0.5, dz=0.25, focus="locked"),
    ]
    s = tour.summary()
    assert s["focus_first_locked_s"] == 0.2
    a = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    assert s["focus_error_um_all"] == {"p50": 1.0, "p90": pytest.approx(
        float(np.percentile(a, 90)), abs=1e-3), "max": 4.0}
    assert s["focus_error_um_after_lock"]["max"] == 2.0
    assert s["focus_error_um_after_lock"]["p50"] == pytest.approx(0.75)
    assert s["focus_error_um_while_locked"] == {"p50": pytest.approx(1.125),
                                                "p90": pytest.approx(1.825),
                                                "max": 2.0}


def test_the_summary_without_focus_or_lock_says_none():
    tour, _ = _setup()
    tour.timeline = [_point(0.0, focus="searching"), _point(0.1, dz=1.0)]
    s = tour.summary()
    assert s["focus_first_locked_s"] is None
    assert s["focus_error_um_all"] == {"p50": 1.0, "p90": 1.0, "max": 1.0}
    assert s["focus_error_um_after_lock"] is None
    assert s["focus_error_um_while_locked"] is None
    assert s["centring_error_um_while_holding"] is None


def test_the_summary_gives_centring_error_while_holding_and_a_thinned_timeline():
    tour, _ = _setup()
    tour.timeline = [_point(i * 0.02, phase="holding" if i % 2 else "centring",
                            ce=float(i), moving=i == 9) for i in range(10)]
    s = tour.summary()
    # holding, still: points 1, 3, 5, 7 (9 was exposed during a move)
    assert s["centring_error_um_while_holding"] == {"p50": 4.0, "p90": pytest.approx(6.4),
                                                    "max": 7.0}
    assert len(s["timeline"]) == 10
    tour.timeline = [_point(i * 0.02) for i in range(900)]
    assert [p["t_s"] for p in tour.summary()["timeline"]] == [
        p["t_s"] for p in tour.timeline[::3]]


def test_the_summary_says_what_was_visited_followed_and_travelled():
    tour, stage = _setup(cfg=_cfg(cells=1))
    t0 = _centred(tour, stage)
    _step(tour, stage, t0 + 0.5, _cells(moved_um=3.0))
    tour.travels = 2
    s = tour.summary()
    assert s["phase"] == "following" and s["cells_visited"] == 1
    assert s["fields_travelled"] == 2
    assert s["visited"] == tour.visited and s["followed"] == tour.followed
    assert s["timeline"] == []


# -- the clock ---------------------------------------------------------------------------
def test_the_clock_counts_from_the_first_frame_whatever_the_simulators_time():
    tour, stage = _setup()
    stage.focus.locked = False
    assert _step(tour, stage, 100.0, _cells()) == "focusing"  # 0 s into the tour
    assert _step(tour, stage, 130.0 - TICK, _cells()) == "focusing"
    assert _step(tour, stage, 130.0 + TICK, _cells()) == "centring"


def test_without_a_simulator_clock_the_ready_stamps_are_the_clock():
    tour, stage = _setup()
    stage.focus.locked = False
    for ready_s, phase in ((5.0, "focusing"), (34.9, "focusing"), (35.1, "centring")):
        f = disc_frame(_cells(), {2: 500})
        f.stamps["ready"] = int(ready_s * 1e9)
        tour.step(stage, f, _cells())
        assert tour.phase == phase, ready_s


# -- travelling: which way ---------------------------------------------------------------
def _travel_to(tour, stage, limits="scope", travels=0):
    tour.travels = travels
    lim = stage.scope.limits if limits == "scope" else limits
    moved = tour._travel(stage, disc_frame([], t_s=0.0), lim)
    made = made_moves(stage.scope)  # the commanded target (the stage rounds to its step)
    return moved, tuple(round(v, 2) for v in made[-1][1]) if made else None


def test_with_the_visits_centred_here_travel_takes_a_direction_of_its_own():
    tour, stage = _setup()
    tour._visited_xy = np.array([[90.0, 100.0], [110.0, 100.0]])  # their mean is here
    got = _travel_to(tour, stage, travels=1)
    want = (round(100 + 150 * np.cos(2.4), 2), round(100 + 150 * np.sin(2.4), 2))
    assert got == (True, want)
    tour, stage = _setup()
    tour._visited_xy = np.array([[99.5, 100.0]])  # half a µm away still says which way
    assert _travel_to(tour, stage, travels=1) == (True, (250.0, 100.0))


def test_travel_turns_45_degrees_at_a_time_alternating_sides():
    # away is +y (the visits are below); +y leaves the limits with half a field to spare
    s = 150 / np.sqrt(2)
    limits = SoftLimits(x=(-1000.0, 1000.0), y=(-1000.0, 320.0))
    tour, stage = _setup()
    tour._visited_xy = np.array([[100.0, 0.0]])
    assert _travel_to(tour, stage, limits) == (True, (round(100 - s, 2), round(100 + s, 2)))
    # with x kept above 100 as well, the first turn (to 135 degrees) is out too: 45
    limits = SoftLimits(x=(0.0, 1000.0), y=(-1000.0, 320.0))
    tour, stage = _setup()
    tour._visited_xy = np.array([[100.0, 0.0]])
    assert _travel_to(tour, stage, limits) == (True, (round(100 + s, 2), round(100 + s, 2)))


def test_a_direction_the_guard_refuses_is_skipped_for_the_next():
    # the tour is given no limits; the stage's own guard refuses x > 200 (+x, 45 and
    # -45 degrees): the fourth direction, +90 degrees, is taken
    tour, stage = _setup(limits=SoftLimits(x=(-1000.0, 200.0), y=(-1000.0, 1000.0)))
    assert _travel_to(tour, stage, None) == (True, (100.0, 250.0))
    assert tour.travels == 1


def test_a_dry_run_travels_nowhere():
    scope = sim_scope(guard=MoveGuard(SoftLimits(x=(-1e3, 1e3), y=(-1e3, 1e3)),
                                      dry_run=True))
    tour = Tour(_cfg())
    stage = ControlStage(scope, ControlConfig(mode="steer"), director=tour)
    assert tour._travel(stage, disc_frame([], t_s=0.0), scope.limits) is False
    assert tour.travels == 0


# -- what the records say, to the digit -----------------------------------------------------
def test_a_visit_and_a_follow_are_recorded_with_their_precision_and_the_truth():
    tour, stage = _setup(cfg=_cfg(cells=1))
    cells = [disc_track(CELL, 320, 200, um=[160.1234, 99.9876]),
             disc_track(2, 80, 200, um=[40.0, 100.0])]
    t0 = _step(tour, stage, 0.0, cells) and 0.0
    for k in range(3):
        _steer(stage, SteerStatus.CENTERED)
        _step(tour, stage, t0 + TICK * (k + 1), cells)
    t1 = 3 * TICK + 0.5
    moved = [cells[0], disc_track(2, 80, 200, um=[42.3456, 100.0])]
    assert _step(tour, stage, t1, moved) == "following"
    assert tour.visited[-1]["stage_um"] == [160.12, 99.99]
    assert tour.followed[-1]["moved_um_during_hold"] == 2.35
    # the real cell (truth) 3.877 px left of the followed box's centre (80, 200)
    truth = np.array([[76.123 - 12, 188.0, 76.123 + 12, 212.0]])
    assert _step(tour, stage, t1 + 0.1234, [cells[0]], truth=truth) == "choosing"
    assert tour.followed[-1]["followed_s"] == 0.123
    assert "truth_centring_error_um" not in tour.followed[-1]  # its track was lost
    tour, stage = _setup(cfg=_cfg(cells=1))
    t1 = _centred(tour, stage) + 0.5
    _step(tour, stage, t1, _cells(moved_um=3.0))
    _step(tour, stage, t1 + 0.75, _cells(moved_um=3.0), truth=truth)
    # 123.877 px from the image centre at 0.5 µm/px: 61.9385 µm, kept to the nm
    assert tour.followed[-1]["truth_centring_error_um"] in (61.938, 61.939)


def test_a_timeline_point_without_the_targets_track_has_no_centring_error():
    tour, stage = _setup()
    tour.target = 99  # not a track the tracker holds
    _record(tour, stage, 0.12345)
    p = tour.timeline[-1]
    assert p["target"] == 99 and "centring_error_um" not in p
    assert p["t_s"] == 0.0  # the first point is the clock's start
    _record(tour, stage, 0.12345 + 0.12345)
    assert tour.timeline[-1]["t_s"] == 0.123


def test_a_missed_targets_timeline_point_has_no_centring_error():
    tour, stage = _setup()
    frame = disc_frame([], t_s=0.0)
    from _support import boxes_at

    stage.tracker.min_hits = 1
    stage.tracker.update(frame, boxes_at(frame, [[160.0, 100.0]], size_px=24.0))
    tour.target = stage.tracker.tracks[0].id
    stage.tracker.update(frame, boxes_at(frame, []))  # missed in the next frame
    truth = np.array([[308.0, 188.0, 332.0, 212.0]])
    _record(tour, stage, 0.0, truth=truth)
    assert "centring_error_um" not in tour.timeline[-1]


def test_summary_percentiles_are_rounded_to_the_nm():
    tour, _ = _setup()
    tour.timeline = [_point(0.0, dz=1.23456)]
    assert tour.summary()["focus_error_um_all"] == {"p50": 1.235, "p90": 1.235, "max": 1.235}


def test_a_frame_with_neither_clock_is_time_zero():
    tour, stage = _setup()
    stage.focus.locked = False
    f = disc_frame(_cells(), {2: 500})
    f.stamps.pop("ready", None)
    tour.step(stage, f, _cells())
    tour.step(stage, f, _cells())
    assert tour.phase == "focusing" and tour._now(f) == 0.0
