"""Steerer on the simulated microscope, fed boxes at known stage positions.

Objects are placed at exact stage coordinates (``_support.boxes_at``), so every move the
controller makes is checked against the truth: its size, its target, how many there are.
Mutation testing: ``python -m benchmarks.mutation --module steering``.

Boxes from ``boxes_at`` sit at arbitrary stage positions, not on the simulator's cells, so
there is nothing there to register: the tests of the control law (gain, clip, deadband,
settling, sticky, lead) run with ``refine=False``, where the target position is exactly
the box centre and every number is the truth. The refined path (the default: the target
registered in its pixels, a deadband from its measured jitter, ``centred`` only when
seen, ``not-seen`` otherwise) is tested at the end against the simulator's ground truth,
steering to its real cells.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from _support import boxes_at, frame_at, made_moves, sim_scope, step_len

from inscope.acquisition.frame import StagePosition
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.control.refine import Fix
from inscope.control.steering import (
    CENTERED,
    DISABLED,
    DRY_RUN,
    MOVED,
    NO_POSITION,
    NO_TARGET,
    NOT_SEEN,
    REFUSED,
    SETTLING,
    Steerer,
)
from inscope.detector.base import Detections

PX = 0.65  # the simulator's default pixel size (µm)


def _run(scope, steer: Steerer, cell_um, frames: int = 30) -> list:
    """Steer towards a fixed object at *cell_um* until centred (or *frames* run out)."""
    acts = []
    for _ in range(frames):
        f = scope.snap()
        acts.append(steer.step(f, boxes_at(f, [cell_um])))
        assert acts[-1].frame_index == f.index  # every action names its frame
        if acts[-1].status == CENTERED:
            break
    return acts


def test_max_step_clips_every_move_and_still_arrives():
    scope = sim_scope(seed=1, shape=(256, 256))
    cell = (18.0, -16.0)  # 24.1 µm away
    steer = Steerer(scope, refine=False, max_step_um=5.0, deadband_um=0.5, gain=1.0)
    acts = _run(scope, steer, cell)
    moves = made_moves(scope)
    assert acts[-1].status == CENTERED, [a.status for a in acts]
    assert len(moves) >= 5  # 24.1 µm in steps of at most 5
    assert max(step_len(m) for m in moves) <= 5.0 + 1e-9
    assert step_len(moves[0]) == pytest.approx(5.0)  # a long error moves the full step
    for a in acts:
        if a.move_um is not None:
            assert math.hypot(*a.move_um) <= 5.0 + 1e-9
    # each clipped move points straight at the object
    (x0, y0), (x1, y1) = moves[0]
    assert (x1 - x0, y1 - y0) == pytest.approx(tuple(5.0 * np.array(cell) / np.hypot(*cell)),
                                               abs=0.06)
    p = scope.position()
    assert math.hypot(p.x - cell[0], p.y - cell[1]) <= 0.5 + 0.05


def test_without_a_clip_one_move_centres_with_gain_one():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=0.5)
    acts = _run(scope, steer, (18.0, -16.0))
    assert [a.status for a in acts] == [MOVED, CENTERED]
    assert acts[0].move_um == pytest.approx((18.0, -16.0), abs=0.06)
    assert acts[0].error_um == pytest.approx((18.0, -16.0), abs=0.06)
    assert acts[0].error_norm_um == pytest.approx(math.hypot(18.0, 16.0), abs=0.06)
    assert acts[0].target_um == pytest.approx((18.0, -16.0), abs=0.06)
    assert acts[0].made and not acts[1].made
    assert len(made_moves(scope)) == 1


def test_gain_scales_each_move():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, gain=0.5, deadband_um=0.5)
    f = scope.snap()
    act = steer.step(f, boxes_at(f, [(20.0, 10.0)]))
    assert act.status == MOVED
    assert act.move_um == pytest.approx((10.0, 5.0), abs=0.06)
    ((_, _), (x, y)), = made_moves(scope)
    assert (x, y) == pytest.approx((10.0, 5.0), abs=0.06)


@pytest.mark.parametrize("gain", [0.0, -0.5, 1.51])
def test_gain_outside_its_range_is_refused(gain):
    with pytest.raises(ValueError, match=r"gain must be in \(0, 1.5\]"):
        Steerer(sim_scope(shape=(64, 64)), gain=gain)


def test_gain_at_its_upper_bound_is_allowed():
    assert Steerer(sim_scope(shape=(64, 64)), gain=1.5).gain == 1.5


def test_deadband_is_the_users():
    scope = sim_scope(seed=1, shape=(256, 256))
    f = scope.snap()
    cell = [(3.0, 0.0)]  # 3 µm off centre
    act = Steerer(scope, refine=False, deadband_um=3.5).step(f, boxes_at(f, cell))
    assert act.status == CENTERED and made_moves(scope) == []
    assert act.error_norm_um == pytest.approx(3.0, abs=0.06)
    act = Steerer(scope, refine=False, deadband_um=2.5).step(f, boxes_at(f, cell))
    assert act.status == MOVED and len(made_moves(scope)) == 1
    with pytest.raises(ValueError, match="deadband_um must be >= 0"):
        Steerer(scope, refine=False, deadband_um=-0.1)
    assert Steerer(scope, refine=False, deadband_um=0).deadband_um == 0.0


def test_default_deadband_without_refinement_is_two_pixels():
    scope = sim_scope(seed=1, shape=(256, 256))
    f = scope.snap()
    act = Steerer(scope, refine=False).step(f, boxes_at(f, [(1.9 * PX, 0.0)]))
    assert act.status == CENTERED
    act = Steerer(scope, refine=False).step(f, boxes_at(f, [(2.2 * PX, 0.0)]))
    assert act.status == MOVED


def test_frames_exposed_before_the_move_settled_never_move_again():
    scope = sim_scope(seed=1, shape=(256, 256))
    cell = (12.0, 9.0)
    early = [scope.snap() for _ in range(3)]  # all exposed before any move
    steer = Steerer(scope, refine=False, deadband_um=0.5)
    acts = [steer.step(f, boxes_at(f, [cell])) for f in early]
    assert [a.status for a in acts] == [MOVED, SETTLING, SETTLING]
    assert acts[1].reason == "frame exposed before the last move settled"
    assert acts[1].target_id == acts[0].target_id is not None
    assert len(made_moves(scope)) == 1
    f = scope.snap()  # exposed after the move: centred, still one move
    assert steer.step(f, boxes_at(f, [cell])).status == CENTERED
    assert len(made_moves(scope)) == 1


def test_a_frame_far_from_the_commanded_position_is_settling():
    # the camera stamp is new but the stage still reports the old position
    scope = sim_scope(seed=1, shape=(256, 256))
    cell = (12.0, 9.0)
    f0 = scope.snap()
    steer = Steerer(scope, refine=False, deadband_um=0.5, position_tol_um=1.0, max_settle_frames=2)
    assert steer.step(f0, boxes_at(f0, [cell])).status == MOVED
    lagging = frame_at(f0, StagePosition(10.0, 7.5, f0.position.z), index=1,
                       ready_ns=time.monotonic_ns())  # 2.5 µm short of (12, 9)
    assert steer.step(lagging, boxes_at(lagging, [cell])).status == SETTLING
    near = frame_at(f0, StagePosition(11.4, 8.5, f0.position.z), index=2,
                    ready_ns=time.monotonic_ns())  # 0.78 µm: within the tolerance
    act = steer.step(near, boxes_at(near, [cell]))
    assert act.status == MOVED  # a fresh decision (0.78 µm error > 0.5 deadband)
    assert len(made_moves(scope)) == 2


def test_default_position_tolerance_is_two_pixels():
    scope = sim_scope(seed=1, shape=(256, 256))
    cell = (12.0, 9.0)
    f0 = scope.snap()
    steer = Steerer(scope, refine=False, deadband_um=2.0)
    assert steer.step(f0, boxes_at(f0, [cell])).status == MOVED  # commands (12, 9)
    z = f0.position.z
    off = frame_at(f0, StagePosition(12.0 + 2.1 * PX, 9.0, z), index=1,
                   ready_ns=time.monotonic_ns())
    assert steer.step(off, boxes_at(off, [cell])).status == SETTLING
    on = frame_at(f0, StagePosition(12.0 + 1.9 * PX, 9.0, z), index=2,
                  ready_ns=time.monotonic_ns())
    assert steer.step(on, boxes_at(on, [cell])).status == CENTERED
    assert len(made_moves(scope)) == 1


def test_settle_time_ignores_frames_then_gives_up_after_max_settle_frames():
    scope = sim_scope(seed=1, shape=(256, 256))
    cell = (12.0, 9.0)
    steer = Steerer(scope, refine=False, deadband_um=0.5, settle_s=3600.0, max_settle_frames=3)
    statuses = []
    for _ in range(6):
        f = scope.snap()
        statuses.append(steer.step(f, boxes_at(f, [cell])).status)
    # the stage never settles within an hour: after 3 ignored frames the next is used
    assert statuses == [MOVED, SETTLING, SETTLING, SETTLING, CENTERED, CENTERED]
    assert len(made_moves(scope)) == 1


def test_settle_time_passes():
    # exposure stamps placed on either side of "move + settle_s": no sleeping, no timing
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=0.5, settle_s=10.0, max_settle_frames=100)
    f = scope.snap()
    t0 = time.monotonic_ns()
    assert steer.step(f, boxes_at(f, [(12.0, 9.0)])).status == MOVED
    t1 = time.monotonic_ns()
    assert t1 - t0 < 5e9
    at = StagePosition(12.0, 9.0, f.position.z)  # where the stage was sent
    early = frame_at(f, at, index=1, ready_ns=t1 + int(5e9))  # < move + 10 s
    assert steer.step(early, boxes_at(early, [(12.0, 9.0)])).status == SETTLING
    late = frame_at(f, at, index=2, ready_ns=t1 + int(10e9) + 1)  # >= move + 10 s
    assert steer.step(late, boxes_at(late, [(12.0, 9.0)])).status == CENTERED


def test_refused_and_dry_run_moves_are_reported_never_raised():
    guard = MoveGuard(SoftLimits(x=(-5.0, 5.0), y=(-5.0, 5.0), z=(-150, 150)))
    scope = sim_scope(seed=1, shape=(256, 256), guard=guard)
    f = scope.snap()
    act = Steerer(scope, refine=False, deadband_um=0.5).step(f, boxes_at(f, [(12.0, 0.0)]))
    assert act.status == REFUSED and not act.made and act.frame_index == f.index
    assert "outside the soft limit" in act.reason
    assert act.move_um == pytest.approx((12.0, 0.0), abs=0.06)
    guard.dry_run = True
    act = Steerer(scope, refine=False, deadband_um=0.5).step(f, boxes_at(f, [(3.0, 0.0)]))
    assert (act.status, act.made, act.reason) == (DRY_RUN, False,
                                                  "dry-run: move computed, not made")
    assert act.frame_index == f.index
    assert scope.position().x == 0.0 and made_moves(scope) == []


def test_no_target_no_position_and_disabled():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False)
    f = scope.snap()
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    act = steer.step(f, empty)
    assert act.status == NO_TARGET and act.reason == "no target for policy 'nearest'"
    blind = frame_at(f, None)
    act = steer.step(blind, empty)
    assert (act.status, act.reason) == (NO_POSITION, "frame has no stage position")
    steer.select(None)
    assert steer.enabled is False
    assert steer.step(f, boxes_at(f, [(3.0, 0.0)])).status == DISABLED
    assert steer.target_id is None
    assert [a.status for a in steer.history] == [NO_TARGET, NO_POSITION, DISABLED]
    assert [a.frame_index for a in steer.history] == [f.index, blind.index, f.index]
    assert steer.last.status == DISABLED
    assert made_moves(scope) == []


def test_sticky_target_is_kept_and_select_switches():
    scope = sim_scope(seed=1, shape=(256, 256))
    cells = [(20.0, 0.0), (-6.0, 0.0)]  # nearest to the centre: the second
    steer = Steerer(scope, refine=False, deadband_um=0.5, max_step_um=2.0)
    f = scope.snap()
    first = steer.step(f, boxes_at(f, cells))
    assert first.target_um == pytest.approx((-6.0, 0.0), abs=0.06)
    ids = {round(t.center_um[0]): t.id for t in steer.tracker.tracks}
    steer.select(ids[20])  # a track id: follow the far cell from now on
    for _ in range(4):
        f = scope.snap()
        act = steer.step(f, boxes_at(f, cells))
        if act.status == MOVED:
            assert act.target_id == ids[20]
            assert act.target_um == pytest.approx((20.0, 0.0), abs=0.06)
    steer.select("largest")
    assert steer.enabled and steer.target_id is None and steer.policy.name == "largest"


def test_reset_forgets_a_pending_move():
    scope = sim_scope(seed=1, shape=(256, 256))
    early = [scope.snap() for _ in range(2)]
    steer = Steerer(scope, refine=False, deadband_um=0.5)
    assert steer.step(early[0], boxes_at(early[0], [(12.0, 9.0)])).status == MOVED
    steer.reset()
    assert steer.target_id is None
    act = steer.step(early[1], boxes_at(early[1], [(12.0, 9.0)]))
    assert act.status == MOVED  # no longer waiting for the first move to settle


def test_action_to_dict_has_no_nan():
    scope = sim_scope(seed=1, shape=(64, 64))
    f = scope.snap()
    d = Steerer(scope, refine=False).step(f, Detections(np.zeros((0, 4)), np.zeros(0),
                                          np.zeros(0))).to_dict()
    assert d["error_norm_um"] is None and d["status"] == NO_TARGET
    d = Steerer(scope, refine=False).step(f, boxes_at(f, [(0.5, 0.0)])).to_dict()
    assert d["error_norm_um"] == pytest.approx(0.5, abs=0.06)


def _moving(scope, tracker, xs, y: float = 0.0):
    """Feed *tracker* one frame per x (a cell moving along x); returns the last frame."""
    for x in xs:
        f = scope.snap()
        tracks = tracker.update(f, boxes_at(f, [(x, y)]))
    return f, tracks


def test_lead_frames_aim_ahead_of_a_moving_target():
    from inscope.control.tracking import Tracker

    scope = sim_scope(seed=1, shape=(256, 256))
    tracker = Tracker()
    f, tracks = _moving(scope, tracker, [4.0, 5.0, 6.0, 7.0, 8.0])
    (t,) = tracks
    assert t.velocity_um[0] > 0.5  # it has measured the motion
    act = Steerer(scope, refine=False, tracker=tracker, lead_frames=3.0, deadband_um=0.5).step(
        f, boxes_at(f, [(8.0, 0.0)]), tracks)
    want = np.array([8.0, 0.0]) + 3.0 * np.asarray(t.velocity_um)
    assert act.target_um == pytest.approx(tuple(want), abs=0.06)
    act = Steerer(scope, refine=False, tracker=tracker, deadband_um=0.5).step(
        f, boxes_at(f, [(8.0, 0.0)]), tracks)
    assert act.target_um == pytest.approx((8.0, 0.0), abs=0.06)  # no lead: where seen


def test_a_target_missed_in_this_frame_is_aimed_at_its_track():
    from inscope.control.tracking import Tracker

    scope = sim_scope(seed=1, shape=(256, 256))
    tracker = Tracker(velocity=False)
    f, tracks = _moving(scope, tracker, [6.0, 6.0])
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    f = scope.snap()
    tracks = tracker.update(f, empty)
    (t,) = tracks
    assert t.missed == 1
    steer = Steerer(scope, refine=False, tracker=tracker, deadband_um=0.5)
    steer.select(t.id)  # the user's pick, still followed while it is missed
    act = steer.step(f, empty, tracks)
    assert act.status == MOVED and act.seen == "predicted"
    assert act.target_um == pytest.approx(tuple(t.center_um), abs=1e-9)


def test_without_sticky_the_policy_chooses_again_every_frame():
    scope = sim_scope(seed=1, shape=(256, 256))
    cells = [(20.0, 0.0), (-6.0, 0.0)]
    for sticky, want in ((True, 20.0), (False, -6.0)):
        steer = Steerer(scope, refine=False, sticky=sticky, deadband_um=100.0)
        f = scope.snap()
        steer.step(f, boxes_at(f, cells))
        far = [t.id for t in steer.tracker.tracks if t.center_um[0] > 10][0]
        steer.target_id = far  # e.g. the previous choice
        act = steer.step(f, boxes_at(f, cells))
        assert act.target_um[0] == pytest.approx(want, abs=0.06), sticky


def test_select_by_numpy_integer_and_history_length():
    from inscope.control.targets import TrackId

    scope = sim_scope(seed=1, shape=(64, 64))
    steer = Steerer(scope, refine=False, history=3)
    steer.select(np.int64(5))
    assert steer.policy == TrackId(5) and steer.enabled
    f = scope.snap()
    for _ in range(5):
        steer.step(f, boxes_at(f, [(1.0, 0.0)]))
    assert len(steer.history) == 3
    assert Steerer(scope, refine=False).history.maxlen == 1000


def test_by_default_ten_frames_are_waited_for_then_the_next_is_used():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=0.5, settle_s=3600.0)
    statuses = []
    for _ in range(13):
        f = scope.snap()
        statuses.append(steer.step(f, boxes_at(f, [(12.0, 9.0)])).status)
    assert statuses == [MOVED] + [SETTLING] * 10 + [CENTERED] * 2


def test_the_target_is_kept_by_default():
    scope = sim_scope(seed=1, shape=(256, 256))
    cells = [(20.0, 0.0), (-6.0, 0.0)]
    steer = Steerer(scope, refine=False, deadband_um=100.0)
    f = scope.snap()
    steer.step(f, boxes_at(f, cells))
    steer.target_id = [t.id for t in steer.tracker.tracks if t.center_um[0] > 10][0]
    assert steer.step(f, boxes_at(f, cells)).target_um[0] == pytest.approx(20.0, abs=0.06)


def test_a_stage_error_is_reported_as_failed_and_the_loop_goes_on():
    from inscope.acquisition.errors import DeviceError
    from inscope.acquisition.simulated import SimulatedMicroscope

    class JammedStage(SimulatedMicroscope):
        """The simulator with an XY stage that reports an error on every move (what
        Micro-Manager raises for a stage that has lost its controller)."""

        def _set_xy(self, x: float, y: float) -> None:
            raise DeviceError("XY stage 'XY' did not answer; check its cable")

    scope = JammedStage(sim_scope(seed=1, shape=(256, 256)).config)
    steer = Steerer(scope, refine=False, deadband_um=0.5)
    f = scope.snap()
    act = steer.step(f, boxes_at(f, [(12.0, 9.0)]))
    assert (act.status, act.made, act.frame_index) == ("failed", False, f.index)
    assert act.reason == "XY stage 'XY' did not answer; check its cable"
    assert act.move_um == pytest.approx((12.0, 9.0), abs=0.06)
    f = scope.snap()  # no move was made: the next frame is a fresh decision
    assert steer.step(f, boxes_at(f, [(12.0, 9.0)])).status == "failed"


# -- the refined path (the default), on the simulator's own cells -------------------------


def _truth_dets(frame) -> Detections:
    """Detections = the simulator's ground-truth boxes of *frame* (real cells to register)."""
    b = np.asarray(frame.truth, float).reshape(-1, 4)
    n = len(b)
    return Detections(b, np.full(n, 0.9, np.float32), np.zeros(n, np.int32), ("cell",),
                      frame_index=frame.index)


def _truth_centre(scope, frame, box) -> np.ndarray:
    """Stage position (µm) that centres the ground-truth cell whose box is *box*."""
    gt = scope.ground_truth()
    c = frame.pixel_to_stage(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]))[0]
    return gt.centers_um[int(np.argmin(np.hypot(*(gt.centers_um - c).T)))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refined_steering_clips_each_move_and_centres_the_real_cell(seed):
    scope = sim_scope(seed=seed, shape=(256, 256), moving_fraction=0.0)
    steer = Steerer(scope, max_step_um=5.0)  # refine=True, deadband from jitter
    acts = []
    for _ in range(20):
        f = scope.snap()
        acts.append(steer.step(f, _truth_dets(f)))
        if acts[-1].status == CENTERED:
            break
    statuses = [a.status for a in acts]
    assert statuses[-1] == CENTERED, statuses
    assert set(statuses[:-1]) <= {MOVED, SETTLING}, statuses
    moves = made_moves(scope)
    assert 1 <= len(moves) <= 8, statuses
    assert max(step_len(m) for m in moves) <= 5.0 + 1e-9
    assert all(a.seen == "registered" for a in acts if a.status in (MOVED, CENTERED))
    last = acts[-1]
    # the deadband comes from the measured jitter: within [0.25, 2] px of the frame
    assert 0.25 * PX - 1e-9 <= last.deadband_um <= 2.0 * PX + 1e-9
    assert last.error_norm_um <= last.deadband_um
    # and the stage really sits on the cell (ground truth, not the controller's belief)
    f = scope.snap()
    track = next(t for t in steer.tracker.tracks if t.id == last.target_id)
    want = _truth_centre(scope, f, track.box)
    p = scope.position()
    assert math.hypot(p.x - want[0], p.y - want[1]) <= last.deadband_um + 0.5


def test_refined_target_that_is_not_seen_is_never_reported_centred():
    scope = sim_scope(seed=2, shape=(256, 256), moving_fraction=0.0)
    steer = Steerer(scope)
    for _ in range(10):
        f = scope.snap()
        act = steer.step(f, _truth_dets(f))
        if act.status == CENTERED:
            break
    assert act.status == CENTERED
    n = len(made_moves(scope))
    f = scope.snap()
    blank = frame_at(f, f.position, index=f.index)
    blank.pixels = np.zeros_like(f.pixels)  # the target is gone from the image
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    act = steer.step(blank, empty)
    assert act.status == NOT_SEEN and act.target_id is not None, act
    assert act.frame_index == blank.index, act
    # (within the deadband of its track's prediction or not, depending on how far the
    # refined centroid sits from the box centre: either way, not seen and no move)
    assert act.reason in ("the registered target was not seen in this frame; no move on "
                          "its track's prediction", "within the deadband of the "
                          "prediction, but the target was not seen in this frame")
    assert len(made_moves(scope)) == n  # and no move on a guess
    # the track runs out of predictions: the target stays the registered one, unseen
    tid = act.target_id
    for _ in range(steer.tracker.max_missed + 2):
        act = steer.step(blank, empty)
    assert (act.status, act.target_id, act.frame_index) == (NOT_SEEN, tid, blank.index)
    assert act.reason == "target neither detected nor registered here"
    assert len(made_moves(scope)) == n


def test_a_frame_exposed_while_the_stage_moved_is_settling():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=0.5)
    f = scope.snap()
    f.moving = True
    act = steer.step(f, boxes_at(f, [(12.0, 9.0)]))
    assert act.status == SETTLING and made_moves(scope) == []
    assert (act.frame_index, act.target_id) == (f.index, steer.target_id)
    f.moving = False
    assert steer.step(f, boxes_at(f, [(12.0, 9.0)])).status == MOVED


def _jitter(steer: Steerer, step_um: float, n: int = 11) -> None:
    """Give *steer*'s refiner *n* fixes alternating by *step_um* along x: jitter
    about step_um / sqrt(2) µm RMS (successive differences over sqrt(2); the last ten
    fixes give nine differences, whose mean is removed: ~1 % below that)."""
    steer.refiner.fixes = [Fix(np.array([(i % 2) * step_um, 0.0]), np.zeros(2), 1.0,
                               "registered", i) for i in range(n)]


def test_default_deadband_is_three_times_the_measured_jitter_clamped():
    scope = sim_scope(seed=1, shape=(256, 256))
    f = scope.snap()
    steer = Steerer(scope)
    assert steer.deadband_for(f) == pytest.approx(1.0 * PX)  # nothing measured yet
    _jitter(steer, 0.5 * PX * math.sqrt(2))  # 0.5 px RMS
    assert steer.deadband_for(f) == pytest.approx(1.5 * PX, rel=0.02)
    _jitter(steer, 0.01 * PX * math.sqrt(2))  # steadier than the floor
    assert steer.deadband_for(f) == pytest.approx(0.25 * PX, rel=1e-6)
    _jitter(steer, 3.0 * PX * math.sqrt(2))  # noisier than the ceiling
    assert steer.deadband_for(f) == pytest.approx(2.0 * PX, rel=1e-6)
    user = Steerer(scope, deadband_um=0.3)  # the user's deadband wins over the jitter
    _jitter(user, 0.5 * PX * math.sqrt(2))
    assert user.deadband_for(f) == 0.3


# -- settling at its edges -------------------------------------------------------------------
def test_settle_time_ends_exactly_settle_s_after_the_move():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=0.5, settle_s=10.0, max_settle_frames=100)
    f = scope.snap()
    assert steer.step(f, boxes_at(f, [(12.0, 9.0)])).status == MOVED
    end = steer._last_move_ns + 10 * 10**9  # the move's stamp + settle_s
    at = StagePosition(12.0, 9.0, f.position.z)
    before = frame_at(f, at, index=1, ready_ns=end - 1)
    assert steer.step(before, boxes_at(before, [(12.0, 9.0)])).status == SETTLING
    on = frame_at(f, at, index=2, ready_ns=end)
    assert steer.step(on, boxes_at(on, [(12.0, 9.0)])).status == CENTERED


def test_a_frame_without_an_exposure_stamp_after_a_move_is_settling():
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=0.5)
    f = scope.snap()
    assert steer.step(f, boxes_at(f, [(12.0, 9.0)])).status == MOVED
    g = frame_at(f, StagePosition(12.0, 9.0, f.position.z), index=1)
    del g.stamps["ready"]  # when was it exposed? not known: never after the move
    assert steer.step(g, boxes_at(g, [(12.0, 9.0)])).status == SETTLING


@pytest.mark.parametrize("tol,off,want", [(1.0, 1.15, SETTLING), (3.0, 2.0, CENTERED)])
def test_the_users_position_tolerance_is_used_not_two_pixels(tol, off, want):
    # two pixels are 1.3 µm: each case is decided the other way by the default
    scope = sim_scope(seed=1, shape=(256, 256))
    steer = Steerer(scope, refine=False, deadband_um=3.0, position_tol_um=tol)
    f = scope.snap()
    assert steer.step(f, boxes_at(f, [(12.0, 9.0)])).status == MOVED
    g = frame_at(f, StagePosition(12.0 + off, 9.0, f.position.z), index=1,
                 ready_ns=time.monotonic_ns())
    assert steer.step(g, boxes_at(g, [(12.0, 9.0)])).status == want


def test_a_fast_cell_is_registered_where_its_track_says_not_where_it_was():
    """The refiner searches for the target around the track's position in this frame,
    not around its last fix: a cell that moves 30 px between frames (three times the
    search window) stays registered, and registered where it truly is. Searching
    around the last fix, it is lost to registration every frame and steering falls back
    to the bare detection."""
    import inscope.acquisition.simulated as sim
    from inscope.acquisition.simulated.specimen import Cell, Specimen
    from inscope.control.targets import TrackId
    from inscope.control.tracking import Tracker
    from inscope.detector import load_detector

    guard = MoveGuard(limits=SoftLimits(x=(-1e4, 1e4), y=(-1e4, 1e4), z=(-100, 100)),
                      dry_run=True)  # the stage stays put: the cell crosses the field
    cfg = sim.SimConfig(seed=8, realtime=False, debris_per_mm2=0.0)
    cells = [Cell(1, -90.0, 10.0, 7.0, 6.0, 0.3, 1.0, vx_um_s=200.0),
             Cell(2, 40.0, 80.0, 6.0, 6.0, 0.0, 1.0),
             Cell(3, -45.0, -70.0, 7.0, 5.0, 1.0, 1.1)]
    scope = sim.SimulatedMicroscope(cfg, specimen=Specimen.from_cells(cells, cfg),
                                    guard=guard)
    det = load_detector(None, provider="cpu")  # the shipped model, on the simulator
    # a tracker gate wide enough for the motion: the tracker, not the refiner, must know
    # where the cell went
    steer = Steerer(scope, tracker=Tracker(gate_um=30.0), lead_frames=0.0)
    seen, errs = [], []
    for i in range(8):
        f = scope.snap()
        d = det.detect(f)
        tracks = steer.tracker.update(f, d)
        if i == 0:
            steer.select(TrackId(min(tracks, key=lambda t: t.center_um[0]).id))
        act = steer.step(f, d, tracks)
        seen.append(act.seen)
        # where the cell was mid-exposure (it moves 2 µm while the frame is exposed)
        t_mid = f.metadata["sim_time_s"] + f.metadata["exposure_ms"] / 2000
        true_xy = np.asarray(scope.specimen.position_of(1, t_mid))
        if act.target_um is not None:
            errs.append(float(np.hypot(*(np.asarray(act.target_um) - true_xy))))
        scope.advance(0.1)  # 20 µm (31 px) of motion between frames
    assert seen[0] == "registered"  # acquired on the first frame
    assert seen[1:] == ["registered"] * 7, seen
    assert max(errs) < 1.5, errs
