"""``--calibration`` wherever a microscope is opened (run, demo, bench, the TOML key) and
the explicit write-back of the affine into Micro-Manager, on the real MMCore + DemoCamera
(the session's headless core) and the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inscope.cli import main
from inscope.config import load_config
from inscope.control.calibration import Calibration, write_to_micromanager

#: 90 degrees rotated, mirrored, 1.5 µm/pixel: unlike anything a backend reports itself.
AFFINE = np.array([[0.0, 1.5], [1.5, 0.0]])


@pytest.fixture
def cal_file(tmp_path):
    return Calibration.from_affine(AFFINE).save(tmp_path / "cal.json")


def _records_affine(folder) -> np.ndarray:
    line = (folder / "detections.jsonl").read_text().splitlines()[0]
    return np.array(json.loads(line)["affine_um_per_px"])


def test_run_headless_applies_the_calibration(tmp_path, cal_file, mm_scope):
    rec = tmp_path / "rec"
    rc = main(["run", "--backend", "headless", "--calibration", str(cal_file),
               "--frames", "3", "--no-zmq", "--no-window", "--model", "classical",
               "--record", str(rec), "--no-progress"])
    assert rc == 0
    np.testing.assert_allclose(_records_affine(rec), AFFINE)
    # without it, the same run uses the core's own map (1 µm/pixel at 10X)
    rec2 = tmp_path / "rec2"
    assert main(["run", "--backend", "headless", "--frames", "3", "--no-zmq",
                 "--no-window", "--model", "classical", "--record", str(rec2),
                 "--no-progress"]) == 0
    np.testing.assert_allclose(_records_affine(rec2), np.eye(2))


def test_demo_and_toml_key(tmp_path, cal_file):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--frames", "3", "--calibration", str(cal_file),
               "--no-zmq", "--no-window", "--model", "classical", "--no-progress"])
    assert rc == 0
    np.testing.assert_allclose(_records_affine(out), AFFINE)
    toml = tmp_path / "scope.toml"
    toml.write_text(f'[microscope]\nbackend = "sim"\ncalibration = "{cal_file.as_posix()}"\n'
                    f'[outputs.records]\ndir = "{(tmp_path / "t").as_posix()}"\n'
                    '[outputs.zmq]\nenabled = false\n')
    assert load_config(toml).microscope.calibration == cal_file.as_posix()
    assert main(["run", "--config", str(toml), "--frames", "3", "--no-window",
                 "--model", "classical", "--no-progress"]) == 0
    np.testing.assert_allclose(_records_affine(tmp_path / "t"), AFFINE)


def test_bad_calibration_file_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    rc = main(["demo", "--out", str(tmp_path / "d"), "--frames", "3", "--calibration",
               str(missing), "--no-zmq", "--no-window", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "nope.json not found" in err and "inscope calibrate" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"affine": [[1, 2], [2, 4]]}')
    rc = main(["bench", "--calibration", str(bad), "--frames", "3", "--backend", "sim",
               "--no-plots", "--out", str(tmp_path / "b.json")])
    assert rc == 2 and "singular" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_bench_accepts_calibration(tmp_path, cal_file):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--calibration", str(cal_file), "--frames", "5", "--backend", "sim",
               "--model", "classical", "--provider", "cpu", "--no-plots", "--out", str(out)])
    assert rc == 0 and out.exists()


def test_write_back_into_micromanager(mm_scope):
    core = mm_scope.core
    res_id = core.get_current_pixel_size_config()
    old_px = float(core.get_pixel_size_um())
    old_aff = [float(v) for v in core.get_pixel_size_affine()]
    cal = Calibration.from_affine(AFFINE)
    try:
        assert write_to_micromanager(cal, mm_scope) == res_id
        assert [float(v) for v in core.get_pixel_size_affine()] == pytest.approx(
            [0.0, 1.5, 0.0, 1.5, 0.0, 0.0])
        assert float(core.get_pixel_size_um()) == pytest.approx(1.5)
        # the microscope now reads the map from Micro-Manager itself
        np.testing.assert_allclose(mm_scope.affine, AFFINE)
        np.testing.assert_allclose(mm_scope.snap().affine, AFFINE)
    finally:
        core.set_pixel_size_um(res_id, old_px)
        core.set_pixel_size_affine(res_id, old_aff)
    np.testing.assert_allclose(mm_scope.affine, np.eye(2) * old_px)


def test_write_back_needs_micromanager():
    from inscope.acquisition.factory import open_microscope

    with open_microscope("sim") as scope, \
            pytest.raises(ValueError, match="not a Micro-Manager microscope"):
        write_to_micromanager(Calibration.from_affine(AFFINE), scope)


def test_a_calibration_from_another_objective_is_refused_before_anything_moves(
        tmp_path, capsys):
    from _support import sim_scope

    # measured at 6.5 µm/pixel (a 1x objective) while the microscope reported that
    ten_x = Calibration.from_affine(np.eye(2) * 6.5, reported=np.eye(2) * 6.5)
    scope = sim_scope(seed=1)  # reports 0.65 µm/pixel
    before = np.array(scope.affine)
    with pytest.raises(ValueError, match=r"reported 6\.5 µm/pixel, but it now reports "
                                         r"0\.65 µm/pixel \(0\.10x\).*inscope calibrate"):
        ten_x.apply(scope)
    np.testing.assert_allclose(scope.affine, before)  # not applied
    # the command line: one line, exit 1, nothing recorded
    path = ten_x.save(tmp_path / "cal_1x.json")
    rc = main(["demo", "--out", str(tmp_path / "d"), "--frames", "3", "--calibration",
               str(path), "--no-zmq", "--no-window", "--model", "classical", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "cal_1x.json was measured while the microscope reported" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "detections.jsonl").exists()


def test_a_calibration_that_corrects_a_wrong_pixel_size_still_applies(caplog):
    from _support import sim_scope

    scope = sim_scope(seed=1)  # reports 0.65 µm/pixel; say the truth is 0.5, rotated
    true = 0.5 * np.array([[0.0, -1.0], [1.0, 0.0]])
    Calibration.from_affine(true, reported=np.eye(2) * 0.65).apply(scope)
    np.testing.assert_allclose(scope.affine, true)
    # within 10 % of what was reported then: the same objective
    scope2 = sim_scope(seed=1)
    Calibration.from_affine(true, reported=np.eye(2) * 0.70).apply(scope2)
    np.testing.assert_allclose(scope2.affine, true)
    with pytest.raises(ValueError, match="another objective"):
        Calibration.from_affine(true, reported=np.eye(2) * 0.73).apply(sim_scope(seed=1))
    with pytest.raises(ValueError, match="another objective"):
        Calibration.from_affine(true, reported=np.eye(2) * 0.58).apply(sim_scope(seed=1))


def test_a_file_that_does_not_say_what_was_reported_warns_and_applies(caplog):
    from _support import sim_scope

    scope = sim_scope(seed=1)
    with caplog.at_level("WARNING", logger="inscope.control.calibration"):
        Calibration.from_affine(AFFINE).apply(scope, source="old.json")
    np.testing.assert_allclose(scope.affine, AFFINE)
    assert any("old.json measures 1.5 µm/pixel where the microscope reports 0.65" in
               r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="inscope.control.calibration"):
        Calibration.from_affine(np.eye(2) * 0.66).apply(sim_scope(seed=1))
    assert not caplog.records  # the same pixel size: nothing to say

    class NoPixelSize:  # a Micro-Manager core with no pixel-size configuration
        affine = np.zeros((2, 2))

    odd = NoPixelSize()
    Calibration.from_affine(np.eye(2) * 6.5, reported=np.eye(2) * 6.5).apply(odd)
    np.testing.assert_allclose(odd.affine, np.eye(2) * 6.5)


def test_calibrating_a_real_stage_without_limits_names_the_missing_limits(mm_scope, caplog):
    """Every move refused for one reason (no soft limits on a real stage): the error is
    that reason, not a guess at a featureless field, and the stage, never moved, is not
    sent back to the start (which would be refused too)."""
    from inscope.acquisition import MoveGuard
    from inscope.control.calibration import CalibrationError, calibrate

    mm_scope.guard = MoveGuard(limits=None, require_limits=True)
    with pytest.raises(CalibrationError) as e:
        calibrate(mm_scope, steps_um=[20.0])
    msg = str(e.value)
    assert msg.startswith("All 6 calibration moves were refused by the soft limits, "
                          "nothing was measured: ")
    assert "no soft limits are configured" in msg and "featureless" not in msg
    assert not [r for r in caplog.records if "could not return" in r.getMessage()]
    assert all(not r.made for r in mm_scope.guard.history)
    assert len(mm_scope.guard.history) == 6


def test_calibrate_refuses_a_stage_outside_its_limits_before_anything_moves(
        mm_scope, tmp_path, capsys):
    """The demo stage at (0, 0) with --limits 100 200 100 200: the moves out and back
    cannot start there (one diagonal move used to carry the stage into the limits and
    leave it there); one line, nothing moved, no file."""
    out = tmp_path / "cal.json"
    rc = main(["calibrate", "--backend", "headless", "--limits", "100", "200", "100",
               "200", "-10", "10", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and not out.exists()
    assert err[-1] == ("error: The stage is at (0.00, 0.00) µm, outside the soft limits "
                       "x [100, 200], y [100, 200]: calibration moves out from there and "
                       "back; move the stage inside them first (e.g. Micro-Manager's stage "
                       "control), or widen the limits. Nothing moved.")
    assert float(mm_scope.core.get_x_position()) == pytest.approx(0.0, abs=0.01)
