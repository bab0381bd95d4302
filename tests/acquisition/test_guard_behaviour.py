"""The move guard, pinned by behaviour: every bug here lets a stage go where it must not.

Each test is aimed at a bug that once passed the whole suite (diagonal steps measured on
one axis, soft limits made exclusive) or that mutation testing found unguarded
(``python -m benchmarks.mutation --module safety``).
"""

from __future__ import annotations

import math
import time

import pytest

from inscope.acquisition.errors import MoveRefused
from inscope.acquisition.safety import MoveGuard, SoftLimits

LIMITS = SoftLimits(x=(-100.0, 100.0), y=(-50.0, 50.0), z=(0.0, 20.0),
                    max_step_xy_um=61.0, max_step_z_um=5.0, max_rate_hz=1e6)
NM = 1e-3  # one nanometre in µm


def _guard(**kw) -> MoveGuard:
    kw.setdefault("limits", LIMITS)
    return MoveGuard(**kw)


def _move(g: MoveGuard, axis: str, start, target) -> bool:
    moved = []
    made = g.run(axis, start, target, lambda: moved.append(target))
    assert moved == ([target] if made else [])
    return made


def _refused(g: MoveGuard, axis: str, start, target) -> str:
    with pytest.raises(MoveRefused) as e:
        g.run(axis, start, target, lambda: pytest.fail(f"moved to {target}"))
    rec = g.history[-1]
    assert (rec.axis, rec.made, rec.reason) == (axis, False, str(e.value))
    assert rec.start == tuple(map(float, start)) and rec.target == tuple(map(float, target))
    return str(e.value)


def test_diagonal_step_is_measured_as_the_diagonal():
    g = _guard()
    # |dx| = |dy| = 45 µm, each within 61 µm, but the move is 63.6 µm long
    msg = _refused(g, "xy", (0.0, 0.0), (45.0, 45.0))
    assert "Refused XY move of 63.6 µm (from (0.00, 0.00) to (45.00, 45.00)): larger " \
           "than max_step_xy_um=61. Nothing moved; move in smaller steps" in msg
    msg = _refused(g, "xy", (10.0, -10.0), (-35.0, 35.0))  # both axes negative-going
    assert "63.6 µm" in msg
    msg = _refused(g, "xy", (-20.0, -20.0), (25.0, 25.0))  # a start off the origin
    assert "63.6 µm" in msg
    # a 3-4-5 diagonal exactly at the max step is allowed, 1 nm more is not
    g = _guard(limits=SoftLimits(max_step_xy_um=60.0, max_rate_hz=1e6), require_limits=False)
    assert _move(g, "xy", (0.0, 0.0), (36.0, 48.0))
    assert _move(g, "xy", (36.0, 48.0), (0.0, 0.0))
    _refused(g, "xy", (0.0, 0.0), (36.0, 48.0 + 2 * NM))


@pytest.mark.parametrize("axis,index,low,high", [("x", 0, -100.0, 100.0),
                                                 ("y", 1, -50.0, 50.0)])
def test_a_move_exactly_onto_an_xy_limit_is_allowed_one_nm_beyond_is_not(axis, index,
                                                                          low, high):
    g = _guard(limits=SoftLimits(x=LIMITS.x, y=LIMITS.y, max_step_xy_um=1000.0,
                                 max_rate_hz=1e6))
    for edge, beyond in ((low, low - NM), (high, high + NM)):
        target = [0.0, 0.0]
        target[index] = edge
        assert _move(g, "xy", (0.0, 0.0), tuple(target))
        target[index] = beyond
        msg = _refused(g, "xy", (0.0, 0.0), tuple(target))
        assert (f"{axis}={beyond:.2f} is outside the soft limit [{low:g}, {high:g}]. "
                "Nothing moved; widen [limits] in the config if the slide really extends "
                "there.") in msg
        assert msg.startswith("Refused XY move to (")


def test_a_move_exactly_onto_a_z_limit_is_allowed_one_nm_beyond_is_not():
    g = _guard()
    assert _move(g, "z", (3.0,), (0.0,))
    assert _move(g, "z", (17.0,), (20.0,))
    msg = _refused(g, "z", (3.0,), (-NM,))
    assert msg == ("Refused Z move to -0.00 µm: outside the soft limit [0, 20]. Nothing "
                   "moved; this limit protects the objective and the sample.")
    assert "outside the soft limit [0, 20]" in _refused(g, "z", (17.0,), (20.0 + NM,))


def test_z_step_exactly_at_the_max_is_allowed_in_both_directions():
    g = _guard()
    assert _move(g, "z", (10.0,), (15.0,))
    assert _move(g, "z", (15.0,), (10.0,))
    msg = _refused(g, "z", (10.0,), (15.0 + NM,))
    assert msg == ("Refused Z move of 5.00 µm: larger than max_step_z_um=5. Nothing moved.")
    msg = _refused(g, "z", (12.0,), (6.0,))  # downwards: the size, not the signed step
    assert msg.startswith("Refused Z move of 6.00 µm:")


def test_non_finite_targets_are_refused_on_every_axis():
    g = _guard()
    for target in [(math.nan, 0.0), (0.0, math.inf), (-math.inf, 1.0)]:
        msg = _refused(g, "xy", (0.0, 0.0), target)
        assert msg.endswith("target is not a finite number (a NaN from upstream?). "
                            "Nothing moved.")
    assert "not a finite number" in _refused(g, "z", (0.0,), (math.nan,))
    # even with no limits at all (simulated hardware)
    assert "not a finite number" in _refused(MoveGuard(None, require_limits=False), "z",
                                             (0.0,), (math.inf,))


def test_no_limits_on_real_hardware_refuses_and_says_how_to_fix():
    g = MoveGuard(limits=None, require_limits=True)
    msg = _refused(g, "xy", (0.0, 0.0), (1.0, 2.0))
    assert msg == ("Refused xy move to (1.00, 2.00): no soft limits are configured for "
                   "this real stage. Set [microscope.limits] x, y and z (µm) in the config, "
                   "or run with --dry-run to only compute moves (dry-run makes none, so it "
                   "needs no limits).")
    assert "Refused z move to (1.00)" in _refused(g, "z", (0.0,), (1.0,))
    # the refusals are recorded under the axis they were for
    assert [(r.axis, r.made) for r in g.history] == [("xy", False), ("z", False)]


def test_without_limits_the_default_steps_still_apply():
    free = MoveGuard(limits=None, require_limits=False)
    assert _move(free, "xy", (0.0, 0.0), (3000.0, 4000.0))  # 5000 µm: the default max
    _refused(free, "xy", (0.0, 0.0), (3000.0, 4000.0 + NM))
    assert _move(free, "z", (0.0,), (200.0,))
    _refused(free, "z", (0.0,), (200.0 + NM,))


def test_records_say_what_was_made_and_when():
    g = _guard()
    t0 = time.monotonic_ns()
    _move(g, "xy", (1.0, 2.0), (3.0, 4.0))
    rec = g.history[-1]
    assert (rec.axis, rec.start, rec.target, rec.made, rec.reason) == (
        "xy", (1.0, 2.0), (3.0, 4.0), True, "")
    assert t0 <= rec.t_ns <= time.monotonic_ns()
    _move(g, "z", (1,), (2,))
    assert g.history[-1].start == (1.0,) and type(g.history[-1].start[0]) is float


def test_dry_run_checks_and_records_but_never_moves():
    g = _guard(dry_run=True)
    assert g.run("z", (1.0,), (2.0,), lambda: pytest.fail("moved")) is False
    rec = g.history[-1]
    assert (rec.axis, rec.start, rec.target, rec.made, rec.reason) == (
        "z", (1.0,), (2.0,), False, "dry-run")
    _refused(g, "xy", (0.0, 0.0), (45.0, 45.0))  # still checked


def test_rate_limit_waits_exactly_the_remaining_interval():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    g = MoveGuard(SoftLimits(max_rate_hz=10.0), require_limits=False,
                  clock=lambda: now[0], sleep=sleep)
    g.run("z", (0,), (1,), lambda: None)
    now[0] += 0.1  # exactly one interval later: no wait at all
    g.run("z", (1,), (2,), lambda: None)
    assert slept == []
    now[0] += 0.03
    g.run("z", (2,), (3,), lambda: None)
    assert slept == [pytest.approx(0.07)]
    g.run("xy", (0, 0), (1, 1), lambda: None)  # XY and Z share the rate
    assert slept == [pytest.approx(0.07), pytest.approx(0.1)]


def test_listeners_see_refusals_too_and_a_broken_one_is_logged(caplog):
    seen = []
    g = _guard()
    g.moved.connect(lambda r: 1 / 0)
    g.moved.connect(seen.append)
    with caplog.at_level("ERROR", logger="inscope.events"):
        _move(g, "xy", (0.0, 0.0), (1.0, 2.0))
    assert any("'moved' failed" in r.getMessage() and r.exc_info for r in caplog.records)
    _refused(g, "xy", (0.0, 0.0), (45.0, 45.0))
    assert [(r.target, r.made) for r in seen] == [((1.0, 2.0), True),
                                                  ((45.0, 45.0), False)]


@pytest.mark.parametrize("bad", [(5.0, 1.0), (3.0, 3.0), (1.0, 2.0, 3.0)])
def test_soft_limit_ranges_must_be_low_below_high(bad):
    for axis in "xyz":
        with pytest.raises(ValueError, match=f"Soft limit '{axis}' .*\\[low, high\\]"):
            SoftLimits(**{axis: bad})


@pytest.mark.parametrize("name", ["max_step_xy_um", "max_step_z_um", "max_rate_hz"])
def test_steps_and_rate_must_be_positive_and_finite(name):
    # True is an int to Python, but a config's "max_step_xy_um = true" is a typo, not 1 µm
    for bad in (0.0, -1.0, math.inf, math.nan, True, "5"):
        with pytest.raises(ValueError, match=f"Soft limit '{name}' must be a finite positive"):
            SoftLimits(**{name: bad})
    small = 1.0 if name == "max_rate_hz" else 0.5  # the rate has a floor (no stalled control)
    assert getattr(SoftLimits(**{name: small}), name) == small  # small but valid is fine


def test_soft_limits_from_a_config_mapping():
    lim = SoftLimits.from_dict({"x": [-5, 5], "y": [0, 2], "z": [1, 3],
                                "max_step_xy_um": 7, "max_rate_hz": 4.0})
    assert (lim.x, lim.y, lim.z) == ((-5.0, 5.0), (0.0, 2.0), (1.0, 3.0))
    assert all(type(v) is float for v in lim.x + lim.y + lim.z)
    assert (lim.max_step_xy_um, lim.max_step_z_um, lim.max_rate_hz) == (7, 200.0, 4.0)
    assert SoftLimits.from_dict({"x": None}).x is None
    with pytest.raises(ValueError, match=r"Unknown soft-limit setting\(s\) \['xx'\]; "
                                         r"allowed: \['max_rate_hz', "):
        SoftLimits.from_dict({"xx": [0, 1]})
