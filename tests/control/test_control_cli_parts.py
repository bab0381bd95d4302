"""calibrate / scan's way in, from the command line as parsed: the scan's argument checks
at their limits, and what each backend is opened with (the simulated microscope, a slide,
the headless Micro-Manager core; a dry run that makes no move). Real parsers, real
microscopes; the ``mm`` backend needs the Java GUI and is not opened here."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.cli import build_parser
from inscope.control.cli import _scan_arg_error, limits_from_args, open_from_args

REGION = ["--region", "0", "0", "100", "100"]


def _scan(*extra: str):
    return build_parser().parse_args(["scan", *REGION, *extra])


# -- the scan's argument checks at their limits -------------------------------------------
@pytest.mark.parametrize(("region", "ok"), [
    ((0, 0, 1, 1), True), ((0, 0, 0, 1), False), ((0, 0, 1, 0), False),
    ((5, 0, 1, 1), False), ((0, 5, 1, 1), False),
])
def test_the_region_needs_x1_above_x0_and_y1_above_y0(region, ok):
    args = build_parser().parse_args(["scan", "--region", *map(str, region)])
    err = _scan_arg_error(args)
    assert (err is None) == ok, err
    if not ok:
        assert err.startswith("--region X0 Y0 X1 Y1 needs x1 > x0 and y1 > y0")


@pytest.mark.parametrize(("flag", "value", "ok"), [
    ("--overlap", "0", True), ("--overlap", "0.89", True), ("--overlap", "0.9", False),
    ("--overlap", "-0.01", False),
    ("--score-threshold", "0", True), ("--score-threshold", "1", True),
    ("--score-threshold", "1.01", False),
])
def test_overlap_and_threshold_at_their_limits(flag, value, ok):
    err = _scan_arg_error(_scan(flag, value))
    assert (err is None) == ok, err
    if not ok:
        assert err.startswith(f"{flag} ")


def test_a_shared_server_or_classical_model_is_not_looked_for_as_a_file():
    for model in ("triton://127.0.0.1:8001/inscope-nuclei", "CLASSICAL"):
        assert _scan_arg_error(_scan("--model", model)) is None
    assert _scan_arg_error(_scan("--model", "no-such.onnx")).startswith(
        "--model no-such.onnx: no such file")


# -- what a command opens ---------------------------------------------------------------------
def test_the_simulator_is_opened_with_its_seed_on_the_simulated_clock():
    scope = open_from_args(_scan("--seed", "7"))
    try:
        assert scope.config.seed == 7 and scope.config.realtime is False
        assert not scope.guard.dry_run
    finally:
        scope.close()


def test_a_dry_run_opens_a_microscope_that_records_moves_and_makes_none():
    scope = open_from_args(_scan(), dry_run=True)
    try:
        p = scope.position()
        assert scope.guard.dry_run and not scope.move_xy(p.x + 10.0, p.y)
        assert scope.position() == p
    finally:
        scope.close()


def test_a_slide_is_opened_with_exposure_seed_and_options_on_the_simulated_clock(tmp_path):
    path = tmp_path / "cells.npz"
    np.savez(path, image=np.random.default_rng(0).integers(0, 100, (64, 64)).astype(
        np.uint16))
    args = _scan("--backend", "slide", "-o", f"path={path}", "-o", "pixel_size_um=0.5",
                 "-o", "fov=32", "--exposure-ms", "7", "--seed", "5",
                 "--limits", "-50", "50", "-40", "40", "-5", "5")
    scope = open_from_args(args)
    try:
        assert scope.realtime is False and scope.exposure_ms == 7.0
        assert scope.pixel_size_um == 0.5 and scope.fov == 32
        assert tuple(scope.guard.limits.x) == (-50.0, 50.0)
        assert tuple(scope.guard.limits.z) == (-5.0, 5.0)
        # the seed is the camera noise's: the same seed, the same first frame
        again = open_from_args(args)
        try:
            assert np.array_equal(scope.snap().pixels, again.snap().pixels)
        finally:
            again.close()
    finally:
        scope.close()
    # an option given with -o wins over the command's own default
    scope = open_from_args(_scan("--backend", "slide", "-o", f"path={path}", "-o",
                                 "pixel_size_um=0.5", "-o", "realtime=true"))
    try:
        assert scope.realtime is True
    finally:
        scope.close()


def test_the_headless_core_gets_the_demo_config_the_adapters_and_the_exposure():
    import mm_test_adapters

    args = build_parser().parse_args(
        ["calibrate", "--backend", "headless", "--mm-dir",
         str(mm_test_adapters.device_adapter_path()), "--exposure-ms", "7"])
    scope = open_from_args(args)
    try:
        core = scope.core
        assert core.getExposure() == pytest.approx(7.0)
        assert core.getCameraDevice() == "Camera"  # the demo config's camera
    finally:
        scope.close()


def test_limits_are_the_six_numbers_per_axis_or_none():
    args = _scan("--limits", "-1", "1", "-2", "2", "-3", "3")
    assert limits_from_args(args) == {"x": [-1.0, 1.0], "y": [-2.0, 2.0], "z": [-3.0, 3.0]}
    assert limits_from_args(_scan()) is None


def test_the_headless_core_loads_the_config_it_is_given_not_the_demo_one(tmp_path):
    import mm_test_adapters

    from inscope.acquisition.errors import MicroscopeUnavailable

    args = build_parser().parse_args(
        ["calibrate", "--backend", "headless", "--mm-dir",
         str(mm_test_adapters.device_adapter_path()),
         "--mm-config", str(tmp_path / "my-rig.cfg")])
    with pytest.raises(MicroscopeUnavailable, match="my-rig.cfg"):
        open_from_args(args)
