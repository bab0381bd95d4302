"""``open_microscope``: each backend gets the options, soft limits and dry run it was
given, and a wrong backend, option or value is one clear error naming what is allowed.

Real backends (the simulator, a recorded TIFF, a slide npz); the Micro-Manager ones are
in test_micromanager.py (they start the real MMCore).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.factory import (
    BACKENDS,
    add_option_argument,
    open_microscope,
    parse_options,
)
from inscope.acquisition.safety import SoftLimits

LIMITS = {"x": [-40.0, 40.0], "y": [-30.0, 30.0], "z": [-5.0, 5.0]}


@pytest.fixture
def recording(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "rec.tif"
    tifffile.imwrite(path, rng.integers(100, 900, (3, 24, 32)).astype(np.uint16),
                     metadata={"axes": "TYX"})
    return path


def _opened(scope):
    try:
        return scope.snap().pixels.shape, scope.limits, scope.guard.dry_run
    finally:
        scope.close()


def test_the_simulator_gets_its_options_with_and_without_limits():
    shape, _, dry = _opened(open_microscope("sim", shape=[48, 40], seed=2))
    assert shape == (48, 40) and dry is False
    shape, lim, dry = _opened(open_microscope("sim", limits=LIMITS, dry_run=True,
                                              shape=[36, 44], seed=2))
    assert shape == (36, 44) and dry is True
    assert (lim.x, lim.y, lim.z) == ((-40.0, 40.0), (-30.0, 30.0), (-5.0, 5.0))


def test_limits_given_as_softlimits_are_used_as_they_are():
    lim = SoftLimits.from_dict(LIMITS)
    scope = open_microscope("sim", limits=lim, shape=[32, 32])
    try:
        assert scope.limits == lim
        with pytest.raises(Exception, match="limit"):
            scope.move_xy(100.0, 0.0)  # beyond x: refused, the stage stays
        assert scope.position().x == pytest.approx(0.0)
    finally:
        scope.close()


def test_limits_of_a_wrong_type_name_what_they_may_be():
    with pytest.raises(TypeError) as e:
        open_microscope("sim", limits=[-5, 5])
    assert str(e.value) == ("limits must be SoftLimits, a mapping or None; got list.")


def test_a_recording_gets_its_options_limits_and_dry_run(recording):
    scope = open_microscope("replay", path=str(recording), pixel_size_um=0.5, fps=0,
                            limits=LIMITS, dry_run=True)
    try:
        assert scope.limits.x == (-40.0, 40.0) and scope.guard.dry_run
        f = scope.snap()
        assert f.pixels.shape == (24, 32) and f.pixel_size_um == pytest.approx(0.5)
    finally:
        scope.close()
    for given in ({}, {"path": None}, {"path": ""}):  # "" is no file, not the working folder
        with pytest.raises(TypeError) as e:
            open_microscope("replay", **given)
        assert str(e.value) == "The replay backend needs path=<file> (CLI: --file PATH)."


@pytest.mark.parametrize("option", ["channel", "pixel_size_um", "fps", "loop"])
def test_each_replay_option_is_accepted(recording, option):
    value = {"channel": 0, "pixel_size_um": 0.5, "fps": 0, "loop": True}[option]
    extra = {} if option == "pixel_size_um" else {"pixel_size_um": 0.5}
    _opened(open_microscope("replay", path=str(recording), **{option: value}, **extra))


def test_unknown_options_name_the_backend_and_what_it_allows(recording):
    with pytest.raises(TypeError) as e:
        open_microscope("replay", path=str(recording), zoom=2)
    assert str(e.value) == ("Unknown option(s) ['zoom'] for backend 'replay'; allowed: "
                            "['channel', 'fps', 'loop', 'path', 'pixel_size_um'].")
    with pytest.raises(TypeError, match=r"^Unknown option\(s\) \['zoom'\] for backend 'sim'"):
        open_microscope("sim", zoom=2)


def test_a_slide_gets_its_limits_and_dry_run(nuclei_slide):
    scope = open_microscope("slide", path=str(nuclei_slide), fov=64, realtime=False,
                            limits=LIMITS, dry_run=True)
    try:
        assert scope.limits.x == (-40.0, 40.0) and scope.guard.dry_run
        assert scope.snap().pixels.shape == (64, 64)
    finally:
        scope.close()
    for path in (None, ""):
        with pytest.raises(MicroscopeUnavailable, match="The slide backend needs a file"):
            open_microscope("slide", path=path, pixel_size_um=1)


def test_an_unknown_backend_lists_every_backend():
    with pytest.raises(ValueError) as e:
        open_microscope("confocal")
    msg = str(e.value)
    assert msg.startswith("Unknown microscope backend 'confocal'; choose one of: ")
    for name in BACKENDS:
        assert f"{name} (" in msg
    # names are read as written by a user: case and spaces do not matter
    _opened(open_microscope(" SIM ", shape=[16, 16]))


def test_the_option_flag_repeats_in_both_spellings():
    p = argparse.ArgumentParser()
    add_option_argument(p)
    assert p.parse_args([]).option == []
    args = p.parse_args(["-o", "fov=64", "--option", "noise=0.02", "-o", "seed=3"])
    assert args.option == ["fov=64", "noise=0.02", "seed=3"]
    assert parse_options(args.option) == {"fov": 64, "noise": 0.02, "seed": 3}


def test_a_value_may_hold_an_equals_sign():
    assert parse_options(["path=run=3/cells.npz", "note=a=b"]) == {
        "path": "run=3/cells.npz", "note": "a=b"}


# -- the Micro-Manager GUI backend, as far as it goes without the GUI -----------------------
def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # free again once closed: nobody listens there


def test_the_gui_backend_tries_the_port_it_was_given():
    """No Micro-Manager GUI here: the error must name the port asked for (the options
    reach the connection) and how to start the server."""
    port = _closed_port()
    with pytest.raises(MicroscopeUnavailable) as e:
        open_microscope("mm", port=port, timeout_ms=500, limits=LIMITS, exposure_ms=5.0,
                        camera_properties={}, position_refresh_s=0.1, poll_s=0.01,
                        attach_running=True, sectioning="confocal")
    assert str(e.value).startswith(f"No Micro-Manager pycro-manager server on "
                                   f"127.0.0.1:{port}: start Micro-Manager")


def test_the_gui_backend_checks_its_options_before_connecting():
    with pytest.raises(TypeError) as e:
        open_microscope("mm", port=_closed_port(), mm_config="demo.cfg")
    assert str(e.value) == (
        "Unknown option(s) ['mm_config'] for backend 'mm'; allowed: ['attach_running', "
        "'camera_properties', 'exposure_ms', 'poll_s', 'port', 'position_refresh_s', "
        "'sectioning', 'timeout_ms'].")
    with pytest.raises(MicroscopeUnavailable, match="'sectioned'.*or 'widefield'"):
        open_microscope("mm", port=_closed_port(), sectioning="phase contrast")


def test_the_headless_backend_checks_its_options_before_starting_a_core():
    with pytest.raises(TypeError) as e:
        open_microscope("headless", port=4827, timeout_ms=10)
    assert str(e.value) == (
        "Unknown option(s) ['port', 'timeout_ms'] for backend 'headless'; allowed: "
        "['attach_running', 'camera_properties', 'config', 'exposure_ms', 'mm_config', "
        "'mm_dir', 'poll_s', 'position_refresh_s', 'sectioning'].")


@pytest.mark.parametrize("argv", [
    ["stream", "--backend", "sim", "--frames", "1"],
    ["run", "--backend", "sim", "--frames", "1", "--no-zmq", "--no-progress"],
    ["calibrate", "--backend", "sim"],
    ["scan", "--backend", "sim", "--region", "0", "0", "50", "50"],
])
def test_every_command_that_opens_a_microscope_reports_a_mistyped_option_in_one_line(
        argv, tmp_path, capsys):
    """A typo in ``-o`` is the user's, not a crash: one line naming the option and what
    the backend takes (calibrate, scan and stream printed a TypeError traceback)."""
    from inscope.cli import main

    out = ["--out", str(tmp_path / "out")] if argv[0] in ("calibrate", "scan") else []
    assert main([*argv, *out, "-o", "zoom=2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown option(s) ['zoom'] for backend 'sim'; allowed: [")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_option_error_is_both_a_type_error_and_an_acquisition_error():
    from inscope.acquisition import AcquisitionError, BackendOptionError

    with pytest.raises(BackendOptionError) as e:
        open_microscope("sim", zoom=2)
    assert isinstance(e.value, TypeError) and isinstance(e.value, AcquisitionError)
