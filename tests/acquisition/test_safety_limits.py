"""Soft limits that limit (issue 10, item 3): finite, non-empty, ordered ranges; an axis
without a range on a real stage refuses; the dry-run advice is true; the DemoCamera
default limits are logged.

Real MoveGuard; the DemoCamera test runs the real MMCore with the demo adapters."""

from __future__ import annotations

import math

import pytest

from inscope.acquisition.errors import MoveRefused
from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.config import ConfigError, config_from_dict

INF = math.inf


@pytest.mark.parametrize("rng, word", [((-INF, INF), "not finite"), ((0, INF), "not finite"),
                                       ((math.nan, 5), "not finite"), ((5, 5), "empty"),
                                       ((10, -10), "reversed")])
def test_non_finite_empty_or_reversed_ranges_are_refused(rng, word):
    with pytest.raises(ValueError, match=word) as e:
        SoftLimits(x=(-100, 100), y=(-100, 100), z=rng)
    assert "'z'" in str(e.value)


def test_config_with_infinite_limits_gets_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"microscope": {"backend": "headless", "limits": {
            "x": [-INF, INF], "y": [-INF, INF], "z": [-INF, INF]}}}, "scope.toml")
    msg = str(e.value)
    assert "\n" not in msg and "scope.toml" in msg and "not finite" in msg
    # the fix and why: the stage's real travel, since an infinite range limits nothing
    assert "x = [-5000, 5000]" in msg and msg.endswith("limits nothing).")


def _moves(guard: MoveGuard):
    made = []
    return made, lambda target: (lambda: made.append(target))


def test_real_stage_axis_without_a_range_refuses():
    """x/y limited, z not: on a real stage move_z(150) then move_z(300) must not pass."""
    g = MoveGuard(SoftLimits(x=(-100, 100), y=(-100, 100), max_rate_hz=1e6),
                  require_limits=True)
    made, mover = _moves(g)
    for z0, z1 in ((0.0, 150.0), (150.0, 300.0)):
        with pytest.raises(MoveRefused, match="no soft limit for z"):
            g.run("z", (z0,), (z1,), mover(z1))
    assert made == []
    assert g.run("xy", (0.0, 0.0), (10.0, 10.0), mover((10, 10)))  # x, y are limited
    # a simulated stage (require_limits=False) keeps "no range = unlimited"
    sim = MoveGuard(SoftLimits(x=(-100, 100), y=(-100, 100), max_rate_hz=1e6),
                    require_limits=False)
    assert sim.run("z", (0.0,), (150.0,), mover(150))


def test_refusal_advice_to_use_dry_run_is_true():
    g = MoveGuard(limits=None, require_limits=True)
    made, mover = _moves(g)
    with pytest.raises(MoveRefused, match="--dry-run") as e:
        g.run("z", (0.0,), (150.0,), mover(150))
    assert "Nothing moved" in str(e.value) or made == []
    dry = MoveGuard(limits=None, require_limits=True, dry_run=True)
    # what the advice promises: dry-run computes and records the move, makes none
    assert dry.run("z", (0.0,), (150.0,), mover(150)) is False
    assert dry.history[-1].reason == "dry-run" and not dry.history[-1].made
    assert made == []
    with pytest.raises(MoveRefused, match="not a finite"):  # NaN still refused
        dry.run("z", (0.0,), (math.nan,), mover(0))


@pytest.mark.parametrize("rate", [1e-6, 0.5, 0.0, INF, math.nan, 1e7])
def test_max_rate_hz_must_be_in_range(rate):
    with pytest.raises(ValueError, match="max_rate_hz"):
        SoftLimits(max_rate_hz=rate)


def test_democamera_default_limits_are_logged(mm_core, caplog):
    from inscope.acquisition.micromanager import DEFAULT_CONFIG, MicroManagerMicroscope

    with caplog.at_level("INFO", logger="inscope"):
        scope = MicroManagerMicroscope.headless(
            None, DEFAULT_CONFIG, camera_properties={"PixelType": "16bit", "Binning": "1",
                                                     "Mode": "Fluorescent Beads"})
    try:
        lines = [r.getMessage() for r in caplog.records if "demo limits" in r.getMessage()]
        assert len(lines) == 1
        assert "[-50000, 50000]" in lines[0] and "10000" in lines[0]
        assert "the stages (XY, Z) are Micro-Manager demo devices" in lines[0]
        assert scope.limits.x == (-50_000.0, 50_000.0)
    finally:
        scope.close()


def test_allows_xy_checks_each_limited_axis_with_a_margin():
    lim = SoftLimits(x=(-100.0, 100.0), y=None, z=(0.0, 50.0))
    assert lim.allows_xy(99.0, 1e6)  # y unlimited
    assert not lim.allows_xy(101.0, 0.0)
    assert lim.allows_xy(95.0, 0.0, margin=5.0)
    assert not lim.allows_xy(95.1, 0.0, margin=5.0)
    assert not lim.allows_xy(-95.1, 0.0, margin=5.0)
