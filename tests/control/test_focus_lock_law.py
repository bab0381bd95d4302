"""FocusLock's control law, frame by frame, on frames whose sharpness is known exactly.

The focus drive is the simulator's (every move goes through its guard and is read back);
the frames are made here so that their sharpness (``normvar``: variance / mean) is
exactly ``exp(curve(z))`` at the z the frame reports. Each dither cycle's parabola
vertex, step clip, convergence, hold tolerance, triggers and settling can then be checked
against numbers worked out by hand. The lock on rendered cells with the detector in the
loop is tests/control/test_focus_lock.py. Mutation testing:
``python -m benchmarks.mutation --module focus``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from _support import sim_scope

from inscope.acquisition.errors import DeviceError
from inscope.acquisition.frame import STAMP_READY, Frame, StagePosition
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
from inscope.control.focus import FocusAction, FocusLock, depth_of_field_um, sharpness

#: mean 0, variance exactly 1
_CHECKER = (np.indices((16, 16)).sum(axis=0) % 2) * 2.0 - 1.0
_MEAN = 1.0  # normvar = variance / mean = a² with pixels 1 ± a
D = 0.5  # dither half-amplitude of most tests (µm)
K = 2.0  # curvature of the log-sharpness parabola (per µm²)
DOF = 2.0  # depth of field given to the lock: tolerance K * (DOF / 8)² = 0.125


def parabola(focus: float, k: float = K, peak: float = 3.0) -> Callable[[float], float]:
    return lambda z: peak - k * (z - focus) ** 2


class Lens:
    """Frames at the drive's position (or one given) with log-sharpness ``curve(z)``."""

    def __init__(self, scope: SimulatedMicroscope, curve: Callable[[float], float]):
        self.scope, self.curve = scope, curve
        self.index = 0
        self.t_ns = 10**9

    def frame(self, z: float | None = None, x: float | None = None, y: float | None = None,
              *, value: float | None = None, dt_s: float = 0.1, moving: bool = False,
              at: int | None = None) -> Frame:
        p = self.scope.position()
        z = p.z if z is None else z
        v = self.curve(z) if value is None else value
        img = _MEAN + math.sqrt(math.exp(v) * _MEAN) * _CHECKER
        self.t_ns = self.t_ns + int(dt_s * 1e9) if at is None else at
        f = Frame(img, self.index, {STAMP_READY: self.t_ns},
                  StagePosition(p.x if x is None else x, p.y if y is None else y, z),
                  0.65, moving=moving)
        self.index += 1
        return f


def _scope(**kw) -> SimulatedMicroscope:
    return sim_scope(shape=(32, 32), z_quantum_um=0.0, **kw)


def _lock(scope, **kw) -> FocusLock:
    # (no cold-start sweep: these tests check the dither law from the first frame; the
    # sweep has its own tests below)
    args = dict(dither_um=D, max_step_um=2.0, dof_um=DOF, samples=1, metric="normvar",
                sweep_um=0.0)
    return FocusLock(scope, **{**args, **kw})


def _steps(lock: FocusLock, lens: Lens, n: int, **kw) -> list[FocusAction]:
    return [lock.step(lens.frame(**kw)) for _ in range(n)]


def _locked_at(focus: float, **kw) -> tuple[FocusLock, Lens]:
    """A lock that has acquired *focus* (one cycle) and taken its reference."""
    scope = _scope()
    lens = Lens(scope, parabola(focus))
    lock = _lock(scope, **kw)
    acts = _steps(lock, lens, 3 * lock.samples)
    assert acts[-1].status == "locked" and lock.z_center == pytest.approx(focus, abs=1e-4)
    ref = _steps(lock, lens, lock.samples)
    assert [a.status for a in ref] == ["locked"] * lock.samples
    return lock, lens


# -- one dither cycle --------------------------------------------------------------------
@pytest.mark.parametrize("focus", [0.2, -0.2])
def test_one_cycle_moves_to_the_parabola_vertex_and_locks(focus):
    scope = _scope()
    lens = Lens(scope, parabola(focus))
    lock = _lock(scope)
    a0, a1, a2 = _steps(lock, lens, 3)
    # centre, +d, -d; then the vertex of the parabola through the three log-sharpnesses
    assert (a0.frame_index, a1.frame_index, a2.frame_index) == (0, 1, 2)
    assert [a.status for a in (a0, a1, a2)] == ["acquiring", "acquiring", "locked"]
    assert [a.z_target for a in (a0, a1)] == [D, -D]
    assert a2.z_target == pytest.approx(focus, abs=1e-4)
    assert a2.offset_um == pytest.approx(focus, abs=1e-4)
    assert (a0.offset_um, a1.offset_um) == (0.0, 0.0)
    assert all(a.made for a in (a0, a1, a2)) and lock.moves == 3
    assert [a.z_center for a in (a0, a1)] == [0.0, 0.0]
    assert a2.z_center == pytest.approx(focus, abs=1e-4)
    assert [a.sharpness for a in (a0, a1, a2)] == pytest.approx(
        [lens.curve(0.0), lens.curve(D), lens.curve(-D)], abs=1e-4)
    assert scope.position().z == pytest.approx(focus, abs=1e-4)
    assert lock.locked and lock.state == "locked"
    # the fit's curvature sizes the hold tolerance: K * (DOF / 8)²
    assert lock.tolerance == pytest.approx(K * (DOF / 8) ** 2, rel=1e-3)


def test_a_vertex_beyond_half_the_dither_takes_another_cycle():
    scope = _scope()
    lens = Lens(scope, parabola(0.35))
    lock = _lock(scope)
    acts = _steps(lock, lens, 6)
    assert [a.status for a in acts] == ["acquiring"] * 5 + ["locked"]
    assert acts[2].offset_um == pytest.approx(0.35, abs=1e-4)
    # the second cycle dithers around the new centre and finds nothing left to correct
    assert [a.z_target for a in acts[3:5]] == pytest.approx([0.35 + D, 0.35 - D], abs=1e-4)
    assert acts[5].offset_um == pytest.approx(0.0, abs=1e-4)
    assert lock.z_center == pytest.approx(0.35, abs=1e-4)


@pytest.mark.parametrize("focus,max_step,want", [(1.5, 2.0, 2 * D), (-1.5, 2.0, -2 * D),
                                                 (1.5, 0.7, 0.7), (-1.5, 0.7, -0.7)])
def test_a_vertex_beyond_the_samples_is_a_step_of_two_dithers_at_most(focus, max_step, want):
    scope = _scope()
    lock = _lock(scope, max_step_um=max_step)
    acts = _steps(lock, Lens(scope, parabola(focus)), 3)
    assert acts[2].offset_um == pytest.approx(want)
    assert acts[2].status == "acquiring" and lock.z_center == pytest.approx(want)
    assert scope.position().z == pytest.approx(want)


def test_gain_scales_the_correction():
    scope = _scope()
    lock = _lock(scope, gain=0.5)
    acts = _steps(lock, Lens(scope, parabola(0.4)), 3)
    assert acts[2].offset_um == pytest.approx(0.2, abs=1e-4)
    assert lock.z_center == pytest.approx(0.2, abs=1e-4)


@pytest.mark.parametrize("far,sign", [(-5.0, 1.0), (5.0, -1.0)])
def test_far_from_focus_a_convex_curve_steps_towards_the_sharper_side(far, sign):
    # log-sharpness rising away from a minimum at *far*: the sharper side is away from it
    scope = _scope()
    lock = _lock(scope, max_step_um=0.7, gain=0.5)
    acts = _steps(lock, Lens(scope, lambda z: 3.0 + 0.2 * (z - far) ** 2), 3)
    assert acts[2].offset_um == pytest.approx(sign * 0.35)
    assert acts[2].status == "acquiring" and not lock.locked


def test_a_flat_field_widens_the_dither_then_is_lost_after_three_cycles():
    scope = _scope()
    lens = Lens(scope, lambda z: 3.0)
    lock = _lock(scope)
    assert lock.max_dither_um == 2 * DOF
    acts = _steps(lock, lens, 18)
    # 0.5 -> 1 -> 2 -> 4 µm (the widest, 2 x DOF), then three flat cycles at 4 µm
    assert [a.z_target for a in acts[:9:3]] == [D, 2 * D, 4 * D]
    assert acts[9].z_target == 4.0
    assert [a.status for a in acts] == ["acquiring"] * 17 + ["lost"]
    assert all(a.offset_um == 0.0 for a in acts) and lock.z_center == 0.0
    # a cycle with a peak in between starts the count again
    scope2 = _scope()
    lens2 = Lens(scope2, lambda z: 3.0)
    lock2 = _lock(scope2)
    _steps(lock2, lens2, 9 + 6)  # widened to the cap, then two flat cycles
    lens2.curve = parabola(30.0, k=0.01)  # a slope, beyond the samples: no convergence
    assert _steps(lock2, lens2, 3)[-1].status == "acquiring"
    lens2.curve = lambda z: 3.0
    assert [a.status for a in _steps(lock2, lens2, 6)] == ["acquiring"] * 6
    assert _steps(lock2, lens2, 3)[-1].status == "lost"


def test_a_flat_top_ends_midway_between_its_flanks_from_either_side():
    """A thick specimen (or cells at several heights): every plane within 3 µm of 1.0 is
    as sharp as the best. Before, the lock stepped towards whichever side noise favoured
    and ended where it happened to stop: 2.6 µm apart from starts above and below."""
    def top(z: float) -> float:
        return 3.0 - 2.0 * max(abs(z - 1.0) - 3.0, 0.0) ** 2 + 0.02 * math.sin(7 * z)

    ends = []
    for start in (3.0, -1.0):
        scope = _scope()
        scope.move_z(start)
        lens = Lens(scope, top)
        lock = _lock(scope)
        _steps(lock, lens, 90)
        assert lock.locked, lock.state
        ends.append(lock.z_center)
    assert abs(ends[0] - ends[1]) <= 0.3, ends
    assert ends[0] == pytest.approx(1.0, abs=0.3) and ends[1] == pytest.approx(1.0, abs=0.3)


def _flat_top(z: float, dip: float = 0.0, half: float = 3.0) -> float:
    """Log-sharpness flat over 1 +/- *half* µm, steep flanks, a dip in the middle (cells
    at two heights) of *dip*."""
    return (3.0 - 2.0 * max(abs(z - 1.0) - half, 0.0) ** 2
            - dip * math.exp(-0.5 * (z - 1.0) ** 2))


def test_the_edge_of_a_flat_top_is_not_taken_for_a_peak():
    # at 4.25 the +d plane is on the flank and the -d plane as sharp as the centre:
    # the parabola's vertex lies a quarter µm away, as it would half a dither from a
    # real peak. A cycle at that vertex with the same dither would show a peak's flanks
    # both falling; here it is flat, and wider dithers show the other flank far away
    scope = _scope()
    scope.move_z(4.25)
    lens = Lens(scope, _flat_top)
    lock = _lock(scope)
    acts = _steps(lock, lens, 6)  # a step onto the edge (3.93), then that shoulder
    assert acts[-1].status == "acquiring" and lock._d == D
    assert acts[-1].z_target == pytest.approx(3.679, abs=0.01)  # to the vertex
    acts = _steps(lock, lens, 3)  # flat there: the dither widens
    assert acts[-1].status == "acquiring" and lock._d == 2 * D
    _steps(lock, lens, 90)
    assert lock.locked and lock.z_center == pytest.approx(1.0, abs=0.3)


@pytest.mark.parametrize("start", [3.5, -1.5])
def test_a_dip_between_two_heights_is_balanced_not_stepped_over(start):
    # two layers of cells 8 µm apart: the middle is less sharp than either (convex
    # there, even at the widest dither); the lock must settle between the layers, not
    # step from one to the other
    scope = _scope()
    scope.move_z(start)
    lens = Lens(scope, lambda z: _flat_top(z, dip=0.3, half=4.0))
    lock = _lock(scope)
    acts = _steps(lock, lens, 120)
    assert lock.locked and lock.z_center == pytest.approx(1.0, abs=0.3), lock.z_center
    # on the sixth cycle, three centres on the widest dither within half of it
    assert [a.status for a in acts].index("locked") == 23 and lock._balanced == 3


def test_a_wide_dithers_balance_point_is_fitted_through_the_centres_near_it():
    # three cycles on a widened dither saw the imbalance g = s(z + d) - s(z - d) at
    # -0.5, +0.3 and 0 µm. Each g is the difference of two noisy measurements: the
    # plane is the root of the least-squares line through all three, not the two
    # nearest opposite ones' interpolation (0.043 µm), and stays inside their bracket
    lock = _lock(_scope())
    lock._d = 2.0
    assert lock._balance(-0.5, 0.10, 0.7) == 0.7  # no bracket yet: the step given
    assert lock._balanced == 1
    assert lock._balance(0.3, -0.06, 0.0) == pytest.approx(-0.3)  # false position
    slope, icpt = np.polyfit([-0.5, 0.3, 0.0], [0.10, -0.06, 0.01], 1)
    assert lock._balance(0.0, 0.01, 0.0) == pytest.approx(-icpt / slope, abs=1e-9)
    assert -icpt / slope == pytest.approx(0.0177, abs=1e-3) and lock._balanced == 3
    # a line whose root lies outside the bracket (a centre low on the far side, as a
    # dip between two layers makes it): the step ends at the bracket's end, 0.2 µm
    lock = _lock(_scope())
    lock._d = 2.0
    lock._balance(-0.5, 0.02, 0.0)
    lock._balance(0.2, -0.01, 0.0)
    slope, icpt = np.polyfit([-0.5, 0.2, 0.0], [0.02, -0.01, 0.05], 1)
    assert slope < 0 and -icpt / slope > 0.7
    assert lock._balance(0.0, 0.05, 0.0) == pytest.approx(0.2)


def test_a_wide_dithers_step_bracket_and_agreement_count():
    # d = 2 µm: centres within 1 µm of the plane stepped to agree with it
    lock = _lock(_scope())
    lock._d = 2.0
    assert lock._balance(-0.75, 0.08, 0.0) == 0.0 and lock._balanced == 1
    # still no opposite imbalance: the step given (to 0.75), which -0.25 agrees with
    # (1.0 µm away: at the limit) and -0.75 does not
    assert lock._balance(-0.25, 0.05, 1.0) == 1.0 and lock._balanced == 1
    # opposite at 1.5: false position with the nearer opposite centre (-0.25, not
    # -0.75): root 1/3; the others are more than 1 µm from it, so no line is fitted
    assert lock._balance(1.5, -0.10, 0.0) == pytest.approx(1 / 3 - 1.5)
    assert lock._balanced == 1
    # a fitted root below the bracket [-0.2, 0] is held at its lower end
    lock = _lock(_scope())
    lock._d = 2.0
    lock._balance(0.5, -0.02, 0.0)
    lock._balance(-0.2, 0.01, 0.0)
    slope, icpt = np.polyfit([0.5, -0.2, 0.0], [-0.02, 0.01, -0.05], 1)
    assert slope < 0 and -icpt / slope < -0.7
    assert lock._balance(0.0, -0.05, 0.0) == pytest.approx(-0.2)
    assert lock._balanced == 3
    # three centres within 1 µm of the false position (4/3 µm): the fitted root
    lock = _lock(_scope())
    lock._d = 2.0
    lock._balance(1.0, 0.05, 0.0)
    lock._balance(2.0, -0.05, 0.0)
    slope, icpt = np.polyfit([1.0, 2.0, 1.2], [0.05, -0.05, 0.01], 1)
    assert lock._balance(1.2, 0.01, 0.0) == pytest.approx(-icpt / slope - 1.2)
    assert -icpt / slope == pytest.approx(1.436, abs=1e-3) and lock._balanced == 3
    # a line that rises (a centre folded low on one side, as between two layers) is not
    # a balance: the false position, 0.2 µm
    lock = _lock(_scope())
    lock._d = 2.0
    lock._balance(-0.3, -0.2, 0.0)
    lock._balance(0.3, -0.01, 0.0)
    assert lock._balance(0.1, 0.01, 0.0) == pytest.approx(0.1)


def test_a_flat_top_wider_than_the_widest_dither_locks_between_its_tipped_sides():
    # flat over 1 +/- 5 µm, the widest dither 4 µm: near the middle both dithered planes
    # are on the top (flat even at 4 µm). Having seen the top tip one way from one side
    # and the other way from the other, the lock settles between them, not lost
    scope = _scope()
    scope.move_z(4.5)
    lens = Lens(scope, lambda z: _flat_top(z, half=5.0) + 0.02 * math.sin(0.4 * z))
    lock = _lock(scope)
    acts = _steps(lock, lens, 120)
    assert lock.locked and "lost" not in [a.status for a in acts]
    assert abs(lock.z_center - 1.0) <= 1.5, lock.z_center
    # locked on the third cycle, the second on the widest dither: both centres lie
    # within half that dither of the plane, so they agree (WIDE_CENTRES)
    assert [a.status for a in acts].index("locked") == 17 and lock._balanced == 2


def test_samples_frames_are_averaged_per_point():
    scope = _scope()
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope, samples=2)
    acts = _steps(lock, lens, 6)
    # every second frame completes a measurement and moves
    assert [a.made for a in acts] == [False, True] * 3
    assert [a.z_target for a in acts[0::2]] == [None] * 3
    assert [a.z_target for a in acts[1:4:2]] == [D, -D]
    assert acts[5].status == "locked" and lock.z_center == pytest.approx(0.2, abs=1e-4)
    # the reference is the mean of two frames; their spread is the noise: 4 x std
    _steps(lock, lens, 1, value=lens.curve(0.2) - 0.2)
    assert lock._ref is None
    _steps(lock, lens, 1, value=lens.curve(0.2))
    assert lock._ref == pytest.approx(lens.curve(0.2) - 0.1, abs=1e-4)
    assert lock.tolerance == pytest.approx(4 * 0.1, abs=1e-4)


# -- holding ------------------------------------------------------------------------------
def test_holding_ignores_a_drop_within_the_tolerance_and_corrects_a_larger_one():
    lock, lens = _locked_at(0.2)
    zc = lock.z_center
    moves = lock.moves
    # a drop of K * 0.2² = 0.08 < 0.125: hold still
    lens.curve = parabola(0.4)
    acts = _steps(lock, lens, 5)
    assert [a.status for a in acts] == ["locked"] * 5 and lock.moves == moves
    assert all(not a.made and a.z_target is None for a in acts)
    # K * 0.3² = 0.18 > 0.125: a correcting cycle starts at once (samples=1)
    lens.curve = parabola(zc + 0.3)
    a = lock.step(lens.frame())
    assert a.status == "correcting" and a.made and a.z_target == pytest.approx(zc + D)
    assert lock.state == "correcting" and not lock.locked
    # 0.3 > d / 2: one more cycle confirms it (a trigger at DOF / 8 = d / 2 always does)
    rest = _steps(lock, lens, 5)
    assert [a.status for a in rest[1::3]] == ["correcting", "locked"]
    assert lock.z_center == pytest.approx(zc + 0.3, abs=1e-4)


def test_with_two_samples_a_correction_needs_two_low_frames_in_a_row():
    lock, lens = _locked_at(0.2, samples=2)
    ref = lens.curve(0.2)
    low, ok = ref - 0.5, ref
    acts = [lock.step(lens.frame(value=v)) for v in (low, ok, low, ok)]
    assert [a.status for a in acts] == ["locked"] * 4 and not any(a.made for a in acts)
    acts = [lock.step(lens.frame(value=v)) for v in (low, low)]
    assert [a.status for a in acts] == ["locked", "correcting"]


def test_a_scheduled_check_runs_after_check_every_s_and_not_before():
    scope = _scope()
    lens = Lens(scope, parabola(0.0))
    lock = _lock(scope, check_every_s=1.0)
    t0 = lens.t_ns + 10**8  # the first frame's stamp starts the clock
    _steps(lock, lens, 4)
    assert lock.locked
    a = lock.step(lens.frame(at=t0 + 10**9))  # exactly check_every_s later: not yet
    assert a.status == "locked" and not a.made
    a = lock.step(lens.frame(at=t0 + 10**9 + 1))
    assert a.status == "checking" and a.made and a.z_target == pytest.approx(D)
    # without a duty cycle, no check however long it holds
    lock2, lens2 = _locked_at(0.0)
    assert lock2.step(lens2.frame(dt_s=3600.0)).status == "locked"


def test_xy_travel_beyond_check_travel_um_starts_a_check():
    lock, lens = _locked_at(0.0, check_travel_um=50.0, xy_tol_um=1.0)
    acts = [lock.step(lens.frame(x=x)) for x in (25.0, 50.0)]  # 50 µm: not beyond
    assert [a.status for a in acts] == ["locked", "locked"]
    a = lock.step(lens.frame(x=52.0))
    assert a.status == "checking" and a.made and a.z_target == pytest.approx(D)
    # None: never
    lock2, lens2 = _locked_at(0.0, check_travel_um=None)
    assert lock2.step(lens2.frame(x=5000.0)).status == "locked"


def test_an_xy_move_renews_the_reference_and_a_small_one_does_not():
    lock, lens = _locked_at(0.0, xy_tol_um=1.0)
    ref = lens.curve(0.0)
    # within the tolerance (exactly 1 µm): the same scene, a blurred frame counts as low
    a = lock.step(lens.frame(x=1.0, value=ref - 1.0))
    assert a.status == "correcting"
    lock, lens = _locked_at(0.0, xy_tol_um=1.0)
    # beyond it: a new scene, whose (lower) sharpness becomes the new reference
    acts = [lock.step(lens.frame(x=1.5, value=ref - 1.0)) for _ in range(3)]
    assert [a.status for a in acts] == ["locked"] * 3 and lock.moves == 3
    assert lock._ref == pytest.approx(ref - 1.0, abs=1e-4)


def test_an_xy_move_during_a_cycle_restarts_it():
    scope = _scope()
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope)
    a0 = lock.step(lens.frame())
    assert a0.z_target == D
    # the +d frame shows another scene: a new cycle, whose centre is measured back at
    # the centre (before, the dithered plane was taken for it)
    a1 = lock.step(lens.frame(x=5.0))
    assert a1.z_target == 0.0 and a1.status == "acquiring" and a1.made
    assert a1.reason == "back to the centre plane before the cycle"
    assert lock.z_center == 0.0
    a2 = lock.step(lens.frame(x=5.0))
    assert a2.z_target == pytest.approx(D) and a2.sharpness == pytest.approx(lens.curve(0.0))


# -- frames that are not used -------------------------------------------------------------
def test_frames_before_the_focus_move_settled_are_skipped_then_accepted():
    scope = _scope()
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope, z_tol_um=0.25, max_settle_frames=2)
    lock.step(lens.frame())  # moves to +d = 0.5
    lag = [lock.step(lens.frame(z=0.0)) for _ in range(2)]  # the drive still reads 0
    assert [a.status for a in lag] == ["settling", "settling"]
    assert all(a.reason == "frame exposed before the focus move finished" for a in lag)
    assert all(not a.made and a.z_center == 0.0 for a in lag)
    # the third one is accepted (max_settle_frames): measured as the +d point
    a = lock.step(lens.frame(z=0.0))
    assert a.status == "acquiring" and a.z_target == -D
    # exactly z_tol_um away counts as settled
    a = lock.step(lens.frame(z=-D + 0.25))
    assert a.status != "settling" and a.made


def test_moving_disabled_and_positionless_frames_are_reported_and_ignored():
    scope = _scope()
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope)
    a = lock.step(lens.frame(moving=True))
    assert (a.status, a.reason, a.made) == ("moving", "exposed during a move", False)
    assert math.isnan(a.z_center) and lock.z_center is None
    f = lens.frame()
    nopos = lock.step(Frame(f.pixels, f.index, dict(f.stamps)))
    assert nopos.status == "no-position" and lock.z_center is None
    lock.enabled = False
    assert lock.step(lens.frame()).status == "disabled"
    lock.enabled = True
    a = lock.step(lens.frame())
    assert a.status == "acquiring" and lock.z_center == 0.0
    a = lock.step(lens.frame(moving=True))
    assert a.status == "moving" and a.z_center == 0.0
    assert [h.status for h in lock.history] == ["moving", "no-position", "disabled",
                                                "acquiring", "moving"]


def test_history_keeps_the_last_frames():
    lock = _lock(_scope())
    lock.enabled = False
    f = Frame(np.zeros((4, 4)), 0)
    for _ in range(1000):
        lock.step(f)
    assert len(lock.history) == 1000
    lock.step(f)
    assert len(lock.history) == 501


# -- moves that are not made -----------------------------------------------------------------
def test_refused_and_dry_run_moves_restart_the_measurement():
    lim = SoftLimits(x=(-1500, 1500), y=(-1500, 1500), z=(-150.0, 0.3))
    scope = _scope(guard=MoveGuard(lim))
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope)
    acts = _steps(lock, lens, 3)
    # +d is outside the limit: refused, and the next frame measures the centre again
    assert [a.status for a in acts] == ["refused"] * 3
    assert [a.z_target for a in acts] == [D] * 3
    assert all(not a.made and "outside the soft limit" in a.reason for a in acts)
    assert lock.moves == 0 and scope.position().z == 0.0
    dry = _scope(guard=MoveGuard(SoftLimits(x=(-1500, 1500), y=(-1500, 1500),
                                            z=(-150.0, 150.0)), dry_run=True))
    lock = _lock(dry)
    a = lock.step(Lens(dry, parabola(0.2)).frame())
    assert (a.status, a.made, a.reason) == ("dry-run", False,
                                            "dry-run: move computed, not made")


class _JammedDrive(SimulatedMicroscope):
    """The simulator with a focus drive that reports an error while ``jammed``."""

    jammed = False

    def _set_z(self, z: float) -> None:
        if self.jammed:
            raise DeviceError("Z drive jammed")
        super()._set_z(z)


def test_a_failed_final_move_keeps_the_estimate_and_takes_a_new_reference():
    scope = _JammedDrive(SimConfig(realtime=False, shape=(32, 32), z_quantum_um=0.0))
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope)
    _steps(lock, lens, 2)
    scope.jammed = True
    a = lock.step(lens.frame())
    assert (a.status, a.made, a.reason) == ("failed", False, "Z drive jammed")
    assert a.z_target == pytest.approx(0.2, abs=1e-4) and lock.state == "locked"
    assert lock.moves == 2
    scope.jammed = False
    a = lock.step(lens.frame())  # the drive is still at -d: this is the new reference
    assert a.status == "locked" and lock._ref == pytest.approx(lens.curve(-D), abs=1e-4)


# -- long corrections ---------------------------------------------------------------------
def test_a_correction_that_does_not_converge_holds_after_max_cycles():
    lock, lens = _locked_at(0.2, max_cycles=3)
    lens.curve = parabola(5.0, k=0.2)  # far: every cycle is a step of 2 d
    acts = _steps(lock, lens, 9)
    assert [a.status for a in acts[2::3]] == ["correcting", "correcting", "locked"]
    assert lock.z_center == pytest.approx(0.2 + 3 * 2 * D, abs=1e-4)


def test_acquiring_is_not_cut_short_by_max_cycles():
    scope = _scope()
    lens = Lens(scope, parabola(5.0, k=0.2))
    lock = _lock(scope, max_cycles=3)
    acts = _steps(lock, lens, 24)
    ends = [a.status for a in acts[2::3]]
    # four steps of 2 d, the vertex, then a dither twice as wide (at 5 µm a curvature of
    # 0.2 / µm² drops 0.05 over d: a flat top) whose vertex converges once a second
    # cycle at it agrees (a wide dither's vertex alone is not trusted)
    assert ends == ["acquiring"] * 7 + ["locked"]
    assert lock.z_center == pytest.approx(5.0, abs=1e-4)


# -- configuration ------------------------------------------------------------------------
def test_arguments_are_checked_with_the_fix():
    scope = _scope()
    for kw, msg in [({"dither_um": 0.0}, "dither_um must be > 0"),
                    ({"max_step_um": 0.0}, "max_step_um must be > 0"),
                    ({"samples": 0}, "samples must be >= 1"),
                    ({"dof_um": 0.0}, "dof_um must be > 0"),
                    ({"flat_drop": 0.0}, "flat_drop must be > 0"),
                    ({"flat_drop": -0.1}, "flat_drop must be > 0")]:
        with pytest.raises(ValueError, match=msg):
            _lock(scope, **kw)
    lock = FocusLock(scope, dither_um=1e-3, max_step_um=1e-3, samples=1, dof_um=1e-3)
    assert (lock.dither_um, lock.max_step_um, lock.samples) == (1e-3, 1e-3, 1)
    # the widest dither: twice the DOF, or as given, never below the dither itself
    assert _lock(scope).max_dither_um == 2 * DOF
    assert _lock(scope, max_dither_um=3.0).max_dither_um == 3.0
    assert _lock(scope, max_dither_um=0.1).max_dither_um == D
    assert FocusLock(scope, dof_um=1.0, flat_drop=1e-3).flat_drop == 1e-3


def test_a_widened_dither_that_reaches_a_soft_limit_narrows_and_stays_inside():
    lim = SoftLimits(x=(-1500, 1500), y=(-1500, 1500), z=(-150.0, 1.5))
    scope = _scope(guard=MoveGuard(lim))
    lock = _lock(scope)
    acts = _steps(lock, Lens(scope, lambda z: 3.0), 30)
    # 0.5 -> 1 -> 2: +2 µm is refused, the dither falls back to 1 µm and stays there
    refused = [a for a in acts if a.status == "refused"]
    assert len(refused) == 1 and refused[0].z_target == 2.0
    assert lock._d == 1.0 and lock._d_cap == 1.0
    assert max(a.z_target for a in acts if a.z_target is not None) == 2.0
    assert acts[-1].status == "lost" and all(a.made for a in acts[-6:-1] if a.z_target)


def test_the_depth_of_field_sizes_the_dither_and_the_step():
    scope = _scope()
    lock = FocusLock(scope, dof_um=1.6)
    assert (lock.dof_um, lock.dof_source) == (1.6, "config")
    assert (lock.dither_um, lock.max_step_um) == (0.4, 1.6)
    lock = FocusLock(scope, na=1.2, wavelength_um=0.6, immersion_index=1.33)
    want = depth_of_field_um(1.2, 0.6, 1.33, 0.65)
    assert want == pytest.approx(0.6 * 1.33 / 1.44 + 1.33 * 0.65 / 1.2)
    assert (lock.dof_um, lock.dof_source) == (pytest.approx(want), "config")
    lock = FocusLock(_scope(na=0.8, wavelength_um=0.6, immersion_index=1.0))
    assert lock.dof_um == pytest.approx(0.6 / 0.64 + 0.65 / 0.8)
    assert lock.dof_source == "microscope"
    lock = FocusLock(_scope(na=0.0))
    assert lock.dof_um == 2.0
    assert lock.dof_source == "default (set control.objective_na or control.focus_dof_um)"
    lock = FocusLock(scope, 0.3, 0.9, dof_um=2.0, gain=0.7, metric="brenner", samples=3,
                     trigger_dof=0.2, check_every_s=5.0, check_travel_um=80.0,
                     xy_tol_um=2.5, z_tol_um=0.1, max_settle_frames=4, max_cycles=6)
    assert (lock.dither_um, lock.max_step_um, lock.gain, lock.metric, lock.samples,
            lock.trigger_dof, lock.check_every_s, lock.check_travel_um, lock.xy_tol_um,
            lock.z_tol_um, lock.max_settle_frames, lock.max_cycles) == (
        0.3, 0.9, 0.7, "brenner", 3, 0.2, 5.0, 80.0, 2.5, 0.1, 4, 6)
    assert lock.enabled and lock.history == [] and lock.moves == 0
    assert lock.state == "acquiring" and not lock.locked and lock.z_center is None


def test_trigger_dof_sets_the_tolerance():
    lock, lens = _locked_at(0.0, trigger_dof=0.25)
    assert lock.tolerance == pytest.approx(K * (0.25 * DOF) ** 2, rel=1e-3)
    lock.reset()
    assert lock.z_center is None and lock.state == "acquiring" and not lock.locked
    assert lock.tolerance == 0.01  # nothing measured: the floor


def test_focus_action_to_dict_writes_nan_as_null():
    d = FocusAction(3, "settling", reason="r").to_dict()
    assert d == {"frame_index": 3, "status": "settling", "z_center": None,
                 "z_target": None, "sharpness": None, "offset_um": 0.0, "made": False,
                 "reason": "r"}
    assert FocusAction(1, "locked", 2.5, 3.0, 1.5).to_dict()["z_center"] == 2.5


def test_depth_of_field_defaults_and_the_checks_with_the_fix():
    # 0.52 µm light in air, no camera term: λ n / NA²
    assert depth_of_field_um(0.5) == pytest.approx(0.52 / 0.25)
    assert depth_of_field_um(0.5, pixel_size_um=0.65) == pytest.approx(2.08 + 1.3)
    for na, wl, n in [(0.0, 0.52, 1.0), (0.5, 0.0, 1.0), (0.5, 0.52, 0.9)]:
        with pytest.raises(ValueError) as e:
            depth_of_field_um(na, wl, n)
        assert str(e.value) == (f"depth of field needs NA > 0, wavelength > 0 and "
                                f"refractive index >= 1; got NA={na}, wavelength={wl} µm, "
                                f"n={n}.")
    with pytest.raises(ValueError) as e:
        depth_of_field_um(1.0, 0.52, 1.0)  # NA equal to the medium's index: impossible
    assert str(e.value) == ("NA 1.0 cannot reach the immersion index 1.0; check the "
                            "objective's NA and the medium (air 1.0, water 1.33, oil 1.515).")
    assert depth_of_field_um(0.95, 0.52, 1.0) == pytest.approx(0.52 / 0.95 ** 2)


def test_a_creeping_stage_renews_the_reference_once_it_has_moved_xy_tol():
    lock, lens = _locked_at(0.0, xy_tol_um=1.0)
    ref = lens.curve(0.0)
    # 0.6 µm per frame: the first step is within the tolerance, the second adds up to 1.2
    a = lock.step(lens.frame(x=0.6))
    assert (a.status, a.frame_index) == ("locked", lens.index - 1)
    a = lock.step(lens.frame(x=1.2, value=ref - 1.0))  # a new scene: its own reference
    assert a.status == "locked" and lock._ref == pytest.approx(ref - 1.0, abs=1e-4)


def test_every_action_carries_its_frame_centre_and_sharpness():
    scope = _scope()
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope, samples=2)
    a = lock.step(lens.frame())  # half a measurement: nothing moves yet
    assert (a.frame_index, a.status, a.z_center, a.made) == (0, "acquiring", 0.0, False)
    assert a.sharpness == pytest.approx(lens.curve(0.0), abs=1e-4)
    _steps(lock, lens, 5)
    assert lock.locked is True
    for _ in range(3):  # taking the reference (2 frames), then holding
        f = lens.frame(value=lens.curve(0.2) - 0.05)
        a = lock.step(f)
        assert (a.frame_index, a.status, a.made, a.z_target) == (f.index, "locked", False,
                                                                  None)
        assert a.z_center == pytest.approx(0.2, abs=1e-4)
        assert a.sharpness == pytest.approx(lens.curve(0.2) - 0.05, abs=1e-4)
    lens.curve = parabola(1.0)
    lock.step(lens.frame())
    a = lock.step(lens.frame())  # the second low frame starts a correction
    assert a.status == "correcting" and lock.locked is False


def test_noise_is_the_spread_of_a_measurement_and_decays():
    scope = _scope()
    lens = Lens(scope, parabola(0.0))
    lock = _lock(scope, samples=2, dof_um=0.4)  # curvature term 2 * (0.05)² = 0.005: noise
    v = lens.curve(0.0)
    lock.step(lens.frame(value=v - 0.1))
    lock.step(lens.frame(value=v + 0.1))  # centre: spread 0.1
    assert lock._noise == pytest.approx(0.1, abs=1e-4)
    _steps(lock, lens, 2)  # +d: no spread, the noise decays by 0.9
    assert lock._noise == pytest.approx(0.09, abs=1e-4)
    _steps(lock, lens, 2)  # -d: locked
    assert lock.locked and lock._noise == pytest.approx(0.081, abs=1e-4)
    _steps(lock, lens, 2)  # the reference: no spread, halves it
    assert lock._noise == pytest.approx(0.0405, abs=1e-4)
    assert lock.tolerance == pytest.approx(4 * 0.0405, abs=1e-3)


def test_frames_without_an_exposure_stamp_count_as_exposed_at_zero():
    scope = _scope()
    lens = Lens(scope, parabola(0.0))
    lock = _lock(scope, check_every_s=1.0)
    f = lens.frame()
    del f.stamps[STAMP_READY]
    lock.step(f)  # the acquisition starts the duty-cycle clock at 0
    _steps(lock, lens, 3)
    assert lock.locked
    g = lens.frame()
    del g.stamps[STAMP_READY]
    assert lock.step(g).status == "locked"  # exposed "at 0": no check due
    assert lock.step(lens.frame()).status == "checking"  # seconds after 0


def test_the_defaults():
    lock = FocusLock(_scope(na=0.0), na=0.5)  # light and medium from the defaults
    assert lock.dof_um == pytest.approx(depth_of_field_um(0.5, 0.52, 1.0, 0.65))
    assert (lock.gain, lock.metric, lock.samples, lock.trigger_dof, lock.check_every_s,
            lock.check_travel_um, lock.xy_tol_um, lock.z_tol_um, lock.max_settle_frames,
            lock.max_cycles) == (1.0, "brenner", 2, 0.125, None, 50.0, 1.0, 0.05, 10, 3)


def test_unused_frames_name_their_frame():
    scope = _scope()
    lens = Lens(scope, parabola(0.2))
    lock = _lock(scope, z_tol_um=0.25)
    f = lens.frame(moving=True)
    assert lock.step(f).frame_index == f.index
    g = lens.frame()
    assert lock.step(Frame(g.pixels, 7, dict(g.stamps))).frame_index == 7
    lock.step(lens.frame())  # moves to +d
    f = lens.frame(z=0.0)
    a = lock.step(f)
    assert (a.status, a.frame_index) == ("settling", f.index)
    lock.enabled = False
    f = lens.frame()
    assert lock.step(f).frame_index == f.index


def test_a_refused_move_reports_the_measurement_it_was_for():
    lim = SoftLimits(x=(-1500, 1500), y=(-1500, 1500), z=(-150.0, 0.3))
    scope = _scope(guard=MoveGuard(lim))
    lens = Lens(scope, parabola(0.2))
    a = _lock(scope).step(lens.frame())
    assert (a.frame_index, a.z_center, a.z_target, a.offset_um) == (0, 0.0, D, 0.0)
    assert a.sharpness == pytest.approx(lens.curve(0.0), abs=1e-4)


def test_the_lock_measures_inside_the_detected_boxes():
    from inscope.detector.base import Detections

    scope = _scope()
    lens = Lens(scope, parabola(0.0))
    lock = _lock(scope)
    f = lens.frame()
    f.pixels[:8] = 1.0  # the top half flat: only the bottom half is sharp
    box = np.array([[2.0, 9.0, 14.0, 15.0]])  # (with its 25 % pad: rows 7-16)
    dets = Detections(box, np.ones(1, np.float32), np.zeros(1, np.int32), ("cell",))
    a = lock.step(f, dets)
    assert a.sharpness == pytest.approx(math.log(sharpness(f.pixels, box, "normvar")))
    assert a.sharpness > math.log(sharpness(f.pixels, None, "normvar")) + 0.3
    none = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    g = lens.frame()
    g.pixels[:8] = 1.0
    # every frame of a cycle is scored on the crops fixed at its centre
    assert lock.step(g, none).sharpness == pytest.approx(
        math.log(sharpness(g.pixels, box, "normvar")))
    lock.step(lens.frame(), none)  # the cycle ends: the next one takes fresh crops
    h = lens.frame()
    h.pixels[:8] = 1.0
    assert lock.step(h, none).sharpness == pytest.approx(
        math.log(sharpness(h.pixels, None, "normvar")))


@pytest.mark.parametrize("focus", [1.5, -1.5])
def test_gain_above_one_is_still_clipped_to_max_step(focus):
    scope = _scope()
    lock = _lock(scope, gain=1.5, max_step_um=1.2)
    acts = _steps(lock, Lens(scope, parabola(focus)), 3)
    assert acts[2].offset_um == pytest.approx(math.copysign(1.2, focus))


def test_a_move_along_y_renews_the_reference_too():
    scope = _scope()
    lens = Lens(scope, parabola(0.0))
    lock = _lock(scope, xy_tol_um=1.0)
    for _ in range(4):
        lock.step(lens.frame(y=5.0))
    assert lock.locked
    ref = lens.curve(0.0)
    # 0.5 µm along y: the same scene, so a blurred frame is low
    assert lock.step(lens.frame(y=5.5, value=ref - 1.0)).status == "correcting"
    # 1.5 µm along y: a new scene, whose sharpness is the new reference
    scope2 = _scope()
    lock2 = _lock(scope2, xy_tol_um=1.0)
    lens2 = Lens(scope2, parabola(0.0))
    for _ in range(4):
        lock2.step(lens2.frame(y=5.0))
    assert lock2.step(lens2.frame(y=6.5, value=ref - 1.0)).status == "locked"


def test_a_check_that_does_not_converge_holds_after_max_cycles():
    # a check (the stage went 60 µm) on a new scene whose focus is far away
    lock, lens = _locked_at(0.2, max_cycles=3, check_travel_um=50.0)
    lens.curve = parabola(5.0, k=0.2)
    acts = _steps(lock, lens, 9, x=60.0)
    assert [a.status for a in acts[2::3]] == ["checking", "checking", "locked"]
    assert lock.z_center == pytest.approx(0.2 + 3 * 2 * D, abs=1e-4)


def test_a_correction_on_a_flat_field_is_lost_not_held():
    lock, lens = _locked_at(0.2, max_cycles=3)
    lens.curve = lambda z: 1.0  # the cells are gone: flat, and far below the reference
    acts = _steps(lock, lens, 18)
    # three cycles widen the dither to 4 µm, three more find nothing there
    assert [a.status for a in acts[2::3]] == ["correcting"] * 5 + ["lost"]


def test_a_convex_cycle_also_restarts_the_count_of_flat_ones():
    scope = _scope()
    lens = Lens(scope, lambda z: 3.0)
    lock = _lock(scope)
    _steps(lock, lens, 6)  # two flat cycles
    lens.curve = lambda z: 3.0 + 0.2 * (z + 5.0) ** 2  # convex: a step to the sharper side
    assert _steps(lock, lens, 3)[-1].status == "acquiring"
    lens.curve = lambda z: 3.0
    assert [a.status for a in _steps(lock, lens, 6)] == ["acquiring"] * 6


def test_a_peak_half_a_dither_away_locks_without_a_wider_dither():
    # a peak 0.2 µm from the start: one dithered plane about as sharp as the centre, the
    # other falling (a shoulder, as at the edge of a flat top). One more cycle at the
    # vertex with the same dither shows both flanks falling: locked, and no frame was
    # ever dithered wider than d
    scope = _scope()
    lens = Lens(scope, parabola(0.2, k=0.5))
    lock = _lock(scope)
    acts = _steps(lock, lens, 3)
    assert acts[-1].status == "acquiring" and lock._shoulders == 1
    assert acts[-1].z_target == pytest.approx(0.2, abs=0.01)
    acts += _steps(lock, lens, 4)
    assert lock.locked and lock.z_center == pytest.approx(0.2, abs=0.01)
    zs = [a.z_target for a in acts if a.z_target is not None]
    assert max(zs) <= 0.2 + D + 1e-6 and min(zs) >= -D - 1e-6, zs
    assert lock._d == D


def test_two_shoulders_in_a_row_are_confirmed_on_a_wider_dither():
    # a sharpness that stays a shoulder wherever the lock centres (as sharp half a
    # dither below, falling above): the second one in a row widens the dither
    scope = _scope()
    scope_centre = [0.0]
    lens = Lens(scope, lambda z: 3.0 - 0.5 * max(z - scope_centre[0], 0.0) ** 2
                - 0.02 * max(scope_centre[0] - z, 0.0) ** 2)
    lock = _lock(scope)
    _steps(lock, lens, 3)
    assert lock._shoulders == 1 and lock._d == D
    scope_centre[0] = lock.z_center  # the shoulder moves with it
    _steps(lock, lens, 3)
    assert lock._shoulders == 2 and lock._d == 2 * D


# -- the cold start's sweep ------------------------------------------------------------------
def _sweeping_lock(scope, **kw) -> FocusLock:
    return _lock(scope, sweep_um=2.0, sweep_step_um=1.0, **kw)


def test_a_cold_start_sweeps_then_dithers_from_the_sharpest_plane():
    """Planes z0 - 2 .. z0 + 2 every 1 µm (each its `samples` frames, at the plane the
    drive reports), then dither cycles from the middle of the sweep's top, which for one
    parabolic peak is its vertex region: here the peak at 1.2."""
    scope = _scope()
    lens = Lens(scope, parabola(1.2))
    lock = _sweeping_lock(scope)
    first = lock.step(lens.frame())  # at z0 = 0: go to the first plane
    assert (first.status, first.z_target, first.made) == ("acquiring", -2.0, True)
    acts = _steps(lock, lens, 5)
    assert [a.z_target for a in acts] == [-1.0, 0.0, 1.0, 2.0, pytest.approx(1.2, abs=0.25)]
    assert lock._swept_middle is not None  # both flanks fell within the sweep
    _steps(lock, lens, 30)
    assert lock.locked and lock.z_center == pytest.approx(1.2, abs=0.05)


def test_the_sweep_extends_past_an_end_that_is_still_on_the_top():
    """The peak at 4 µm, beyond a +/-2 µm sweep from 0: planes are added one at a time
    past the upper end while it is the sharpest, until the flank falls."""
    scope = _scope()
    lens = Lens(scope, parabola(4.0))
    lock = _sweeping_lock(scope)
    acts = _steps(lock, lens, 9)
    assert [a.z_target for a in acts[:8]] == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert acts[8].z_target == pytest.approx(4.0, abs=0.3)
    _steps(lock, lens, 30)
    assert lock.locked and lock.z_center == pytest.approx(4.0, abs=0.05)


def test_the_sweep_ends_the_same_from_above_and_below_on_a_plateau_with_a_ripple():
    """Cells at several heights: a top 6 µm wide whose ripple has peaks 1.6 µm apart.
    A dither cycle alone climbs the ripple peak nearest its start (ends 1.6 µm apart
    from starts 2.5 µm above and below); the sweep sees both flanks and starts, and
    ends, in the top's middle from either side."""
    def rippled(z: float) -> float:
        return 3.0 - 2.0 * max(abs(z) - 3.0, 0.0) ** 2 + 0.15 * math.cos(2 * math.pi * z / 1.6)

    ends: dict[float, list[float]] = {0.0: [], 4.0: []}
    for sweep in ends:
        for start in (2.5, -2.5):
            scope = _scope()
            scope.move_z(start)
            lens = Lens(scope, rippled)
            lock = _lock(scope, sweep_um=sweep, sweep_step_um=1.0)
            _steps(lock, lens, 90)
            ends[sweep].append(lock.z_center)
    assert abs(ends[4.0][0] - ends[4.0][1]) <= 0.3, ends
    assert abs(np.mean(ends[4.0])) <= 0.5, ends
    assert abs(ends[0.0][0] - ends[0.0][1]) > 1.0, ends  # what the sweep is for


def test_the_sweep_stays_inside_the_soft_limits_and_is_skipped_in_dry_run():
    lim = SoftLimits(x=(-1500, 1500), y=(-1500, 1500), z=(-0.5, 150.0))
    scope = _scope(guard=MoveGuard(lim))
    lens = Lens(scope, parabola(0.3))
    lock = _sweeping_lock(scope)
    acts = _steps(lock, lens, 3)
    # planes 0, 1, 2 (-2 and -1 are beyond -0.5): 0 is measured where the drive is, then
    # the moves to 1 and 2, then to the top's middle (no step past the limit)
    assert [a.z_target for a in acts[:2]] == [1.0, 2.0]
    assert all(a.made for a in acts) and -0.5 <= acts[2].z_target < 0.5
    dry = _scope(guard=MoveGuard(SoftLimits(x=(-1500, 1500), y=(-1500, 1500),
                                            z=(-150.0, 150.0)), dry_run=True))
    lock = _sweeping_lock(dry)
    a = lock.step(Lens(dry, parabola(0.2)).frame())
    assert (a.status, a.made) == ("dry-run", False) and not lock._plan


def test_a_lopsided_top_ends_on_one_plane_from_any_start():
    """Cells a little above and below one another: a broad top that falls slowly on one
    side and fast on the other (as on a slide of a confocal monolayer). A dither of 1 µm
    balances it about 0.45 µm on the slow side of the peak; one of 2 µm balances it
    further out. Before, a cycle that happened to see a shoulder on the way (one
    dithered plane as sharp as the centre) widened the dither at once, so starts 2.5 µm
    above and below ended 0.42 µm from starts 2 µm away. The sweep saw this top from
    flank to flank and its middle is within the dither's reach: a shoulder there is the
    top's lopsidedness, not its edge, and takes one more cycle at the same dither."""
    def lopsided(z: float) -> float:
        return 3.0 - (0.06 if z > 0 else 0.4) * z * z

    ends, dithers = [], []
    for start in (2.0, -2.0, 2.5, -2.5, 1.7, -1.7):
        scope = _scope()
        scope.move_z(start)
        lock = _lock(scope, sweep_um=4.0, sweep_step_um=1.0)
        _steps(lock, Lens(scope, lopsided), 90)
        assert lock.locked, (start, lock.state)
        ends.append(lock.z_center)
        dithers.append(lock._d)
    assert max(ends) - min(ends) <= 0.1, ends
    assert 0.0 < np.mean(ends) <= 0.6, ends  # on the slow side, by the 1 µm balance
    assert dithers == [2 * D] * len(ends), dithers


@pytest.mark.parametrize(("middle", "widened"), [(None, True), (0.47 + 0.95, False),
                                                 (0.47 + 1.05, True)])
def test_a_wide_dithers_shoulder_widens_unless_the_swept_middle_is_in_reach(middle,
                                                                           widened):
    # the lopsided top from 1 µm: flat at d = 0.5, so a 1 µm dither; its third cycle
    # (centre 0.59) is a shoulder whose vertex is 0.47. With no swept middle (no sweep,
    # or a top the sweep did not bound), or one more than d = 1 µm from that vertex,
    # it may be a top's edge: the dither widens at once. Within 1 µm: one more cycle
    def lopsided(z: float) -> float:
        return 3.0 - (0.06 if z > 0 else 0.4) * z * z

    scope = _scope()
    scope.move_z(1.0)
    lens = Lens(scope, lopsided)
    lock = _lock(scope)
    lock.step(lens.frame())
    lock._swept_middle = middle  # as a sweep would have left it
    _steps(lock, lens, 89)
    assert [round(z, 2) for z, _, _ in lock._seen][:3] == [1.0, 0.0, 0.59]
    assert lock.locked and (lock._d == 4 * D) is widened
    assert lock.z_center == pytest.approx(0.89 if widened else 0.46, abs=0.02)


def test_an_xy_move_during_the_sweep_starts_it_again_and_a_flat_sweep_stays_put():
    scope = _scope()
    lens = Lens(scope, lambda z: 3.0)  # featureless
    lock = _sweeping_lock(scope)
    _steps(lock, lens, 3)
    assert lock._plan[0] == 0.0  # three planes left of five
    lock.step(lens.frame(x=50.0))  # the scene changed mid-sweep
    assert lock._plan == [-2.0, -1.0, 0.0, 1.0, 2.0] and lock._swept == []
    acts = _steps(lock, lens, 5, x=50.0)
    # five planes, no extension past ends of a featureless sweep, back to the start plane
    assert [a.z_target for a in acts] == [-1.0, 0.0, 1.0, 2.0, 0.0]
    assert lock._swept_middle is None
    with pytest.raises(ValueError, match="sweep_um must be >= 0"):
        FocusLock(scope, sweep_um=-1.0)
    with pytest.raises(ValueError, match="sweep_step_um must be > 0"):
        FocusLock(scope, sweep_step_um=0.0)
    auto = FocusLock(scope, dof_um=3.0)
    assert (auto.sweep_um, auto.sweep_step_um) == (6.0, 1.5)
    assert FocusLock(scope, dof_um=0.5).sweep_um == 4.0
