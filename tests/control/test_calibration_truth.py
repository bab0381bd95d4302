"""Calibration against the simulator's true affine, and the decomposition by hand.

The expected rotation is the one the simulated camera was mounted with (the config's
``camera_rotation_deg``), never the same decomposition applied to the true matrix: a sign
flipped in the decomposition would agree with itself. Mutation testing:
``python -m benchmarks.mutation --module calibration``.
"""

from __future__ import annotations

import json
import logging
import math

import cv2
import numpy as np
import pytest
from _support import sim_scope

from inscope.acquisition.safety import MoveGuard, SoftLimits
from inscope.control.calibration import (
    Calibration,
    CalibrationError,
    _consensus,
    calibrate,
    measure_shift,
)

PX = 0.65


def _rot(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


@pytest.mark.parametrize("rot,flip", [(30.0, False), (-30.0, False), (30.0, True),
                                      (-30.0, True)])
def test_calibration_recovers_the_simulated_camera_mount(rot, flip, caplog):
    scope = sim_scope(seed=1, camera_rotation_deg=rot, camera_flip_x=flip)
    start = scope.position()
    with caplog.at_level(logging.WARNING, logger="inscope.control.calibration"):
        cal = calibrate(scope, apply=True)
    true = np.asarray(scope.true_affine, float)
    np.testing.assert_allclose(cal.affine, true, atol=0.01)
    assert cal.rotation_deg == pytest.approx(rot, abs=0.5)
    assert cal.flip is flip
    assert cal.pixel_size_um == pytest.approx(PX, rel=0.01)
    assert cal.residual_px < 0.5
    # the reported (nominal) map has no rotation: the disagreement is |R - I| exactly
    assert cal.disagreement == pytest.approx(
        np.linalg.norm(true - PX * np.eye(2)) / np.linalg.norm(PX * np.eye(2)), abs=0.02)
    assert "disagrees with the microscope's" in cal.warning
    assert f"rotation {rot:.1f} deg, flip={flip}; reported 0.65 µm, rotation 0.0 deg, " \
           "flip=False" in cal.warning
    assert [r.message for r in caplog.records] == [cal.warning]
    np.testing.assert_allclose(scope.affine, cal.affine)  # applied
    assert scope.position() == start  # the stage is back where it started
    # 2 step sizes x 6 directions, one image each, plus the reference
    assert cal.n_images == 13 and len(cal.moves) == 12
    assert all(m["used"] is True for m in cal.moves)
    assert cal.microscope == "simulated" and 0 < cal.wall_s < 300
    assert 0 < cal.residual_px < 0.5
    np.testing.assert_allclose(cal.reported_affine, PX * np.eye(2))
    # each recorded image shift is what the true map predicts: d = -A s
    inv = np.linalg.inv(true)
    for m in cal.moves:
        want = -inv @ np.asarray(m["stage_delta_um"])
        assert m["shift_px"] == pytest.approx(want.tolist(), abs=0.5)
        assert 0.02 <= m["response"] <= 1.0


def test_calibration_agrees_with_a_correct_reported_map_without_warning():
    scope = sim_scope(seed=2)
    scope.move_xy(200.0, -150.0)  # stage deltas are measured from wherever it starts
    cal = calibrate(scope, steps_um=[10.0], n=2)
    dirs = {tuple(np.sign(np.round(m["stage_delta_um"], 3)).astype(int)) for m in cal.moves}
    assert dirs == {(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)}
    assert (scope.position().x, scope.position().y) == (200.0, -150.0)
    assert cal.warning == "" and cal.disagreement < 0.05
    assert cal.rotation_deg == pytest.approx(0.0, abs=0.5) and cal.flip is False
    assert cal.n_images == 13  # 1 step x 2 repeats x 6 directions + reference
    steps = [np.hypot(*m["stage_delta_um"]) for m in cal.moves]
    assert sorted({round(s, 1) for s in steps}) == [10.0, 14.1]
    np.testing.assert_allclose(scope.affine, PX * np.eye(2))  # not applied


def test_tolerance_and_minimum_response_are_the_callers():
    scope = sim_scope(seed=2, camera_rotation_deg=30.0)
    cal = calibrate(scope, steps_um=[10.0], tolerance=0.6)  # |R(30) - I| = 0.52
    assert cal.warning == "" and cal.disagreement == pytest.approx(0.52, abs=0.02)
    with pytest.raises(CalibrationError, match=r"Only 0 usable calibration move\(s\) of 6"):
        calibrate(scope, steps_um=[10.0], min_response=1.01)  # no peak is that clean


def test_moves_along_one_axis_only_cannot_determine_the_map():
    lim = SoftLimits(x=(-1500, 1500), y=(-1.0, 1.0), z=(-150, 150))
    scope = sim_scope(seed=2, guard=MoveGuard(lim))
    with pytest.raises(CalibrationError, match="all along one line"):
        calibrate(scope, steps_um=[10.0])
    assert (scope.position().x, scope.position().y) == (0.0, 0.0)


def test_default_steps_are_a_tenth_and_a_fifth_of_the_field():
    scope = sim_scope(seed=2, shape=(200, 300))  # field 200 px high: 130 µm
    cal = calibrate(scope)
    axis = sorted({round(abs(m["stage_delta_um"][0]), 1) for m in cal.moves
                   if abs(m["stage_delta_um"][1]) < 1e-6})
    assert axis == [13.0, 26.0]


def test_moves_refused_by_the_limits_are_recorded_and_skipped():
    lim = SoftLimits(x=(-1500, 15.0), y=(-1500, 1500), z=(-150, 150))
    scope = sim_scope(seed=2, guard=MoveGuard(lim))
    cal = calibrate(scope, steps_um=[10.0, 20.0])
    refused = [m for m in cal.moves if "refused" in m]
    # +x and the +diagonal of the 20 µm step leave the limits
    assert [m["target"] for m in refused] == [[20.0, 0.0], [20.0, 20.0]]
    assert all("x=20.00 is outside the soft limit [-1500, 15]" in m["refused"]
               for m in refused)
    assert cal.n_images == 11
    assert cal.rotation_deg == pytest.approx(0.0, abs=0.5)


def test_two_independent_moves_are_enough():
    # only +x and -y stay inside these limits: two moves, at right angles
    lim = SoftLimits(x=(-1.0, 15.0), y=(-15.0, 1.0), z=(-150, 150))
    scope = sim_scope(seed=2, guard=MoveGuard(lim))
    cal = calibrate(scope, steps_um=[10.0])
    assert cal.n_images == 3 and sum("used" in m for m in cal.moves) == 2
    np.testing.assert_allclose(cal.affine, PX * np.eye(2), atol=0.01)


def test_a_featureless_field_raises_with_the_fix():
    scope = sim_scope(seed=2, shape=(128, 128), signal_photons_per_ms=0.0,
                      background_photons_per_ms=0.0, read_noise_e=0.0)
    with pytest.raises(CalibrationError, match="usable calibration move.*featureless"):
        calibrate(scope, steps_um=[8.0])
    assert (scope.position().x, scope.position().y) == (0.0, 0.0)


@pytest.mark.parametrize("dx,dy", [(5.0, -3.0), (-12.0, 7.0), (0.0, 9.0)])
def test_measure_shift_reports_the_content_shift_with_its_sign(dx, dy):
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.normal(100, 10, (220, 220)).astype(np.float32), (0, 0), 2.0)
    base = big[30:190, 30:190]
    # the content moves by (+dx, +dy): what was at (u, v) is now at (u + dx, v + dy)
    moved = big[30 - int(dy):190 - int(dy), 30 - int(dx):190 - int(dx)]
    s, resp = measure_shift(base, moved)
    assert s == pytest.approx([dx, dy], abs=0.25)
    assert resp > 0.3
    s0, _ = measure_shift(base, moved, highpass_sigma=0)
    assert s0 == pytest.approx([dx, dy], abs=0.25)
    window = cv2.createHanningWindow((160, 160), cv2.CV_32F)
    sw, rw = measure_shift(base, moved, window=window)
    assert sw.tolist() == s.tolist() and rw == resp


def test_from_affine_decomposes_rotation_flip_and_pixel_size():
    cal = Calibration.from_affine(2.0 * _rot(30.0))
    assert (cal.pixel_size_um, cal.flip) == (pytest.approx(2.0), False)
    assert cal.rotation_deg == pytest.approx(30.0)
    cal = Calibration.from_affine(0.5 * _rot(-30.0) @ np.diag([-1.0, 1.0]), residual_px=0.2)
    assert (cal.pixel_size_um, cal.flip, cal.residual_px) == (pytest.approx(0.5), True, 0.2)
    assert cal.rotation_deg == pytest.approx(-30.0)
    assert Calibration.from_affine(_rot(150.0)).rotation_deg == pytest.approx(150.0)
    assert Calibration.from_affine(np.diag([1.0, -1.0])).rotation_deg == pytest.approx(180.0)
    assert Calibration.from_affine(np.eye(2)).warning == ""


def test_disagreement_and_warning_against_the_reported_map():
    rep = np.eye(2)
    cal = Calibration.from_affine(1.06 * np.eye(2), reported=rep)  # default tolerance 5 %
    assert cal.warning and cal.residual_px == 0.0
    assert Calibration.from_affine(1.04 * np.eye(2), reported=rep).warning == ""
    at = Calibration.from_affine(_rot(10.0), reported=rep).disagreement
    assert Calibration.from_affine(_rot(10.0), reported=rep, tolerance=at).warning == ""
    assert Calibration.from_affine(np.zeros((2, 2))).flip is False
    cal = Calibration.from_affine(1.04 * np.eye(2), reported=rep, tolerance=0.05)
    assert cal.disagreement == pytest.approx(0.04) and cal.warning == ""
    cal = Calibration.from_affine(1.06 * np.eye(2), reported=rep, tolerance=0.05)
    assert cal.disagreement == pytest.approx(0.06)
    assert cal.warning.startswith("Measured pixel-to-stage map disagrees with the "
                                  "microscope's by 6%: measured pixel size 1.06 µm")
    assert "Fix Micro-Manager's pixel size calibration" in cal.warning
    np.testing.assert_allclose(cal.reported_affine, rep)
    cal = Calibration.from_affine(-np.eye(2), reported=np.eye(2), tolerance=2.5)
    assert cal.disagreement == pytest.approx(2.0) and cal.warning == ""


def test_save_load_roundtrip_keeps_every_field(tmp_path):
    cal = Calibration.from_affine(0.5 * _rot(-30.0) @ np.diag([-1.0, 1.0]), residual_px=0.3,
                                  reported=0.5 * np.eye(2), moves=[{"used": True}],
                                  n_images=13, wall_s=1.5, microscope="sim")
    path = cal.save(tmp_path / "new" / "sub" / "cal.json")  # folders are made
    text = path.read_text()
    assert text.startswith('{\n  "affine": [') and text.endswith("}\n")  # readable
    d = json.loads(text)
    assert d["flip"] is True and d["rotation_deg"] == pytest.approx(-30.0)
    assert d["pixel_size_um"] == pytest.approx(0.5) and d["residual_px"] == 0.3
    back = Calibration.load(path)
    np.testing.assert_allclose(back.affine, cal.affine)
    np.testing.assert_allclose(back.reported_affine, cal.reported_affine)
    for k in ("pixel_size_um", "rotation_deg", "flip", "residual_px", "disagreement",
              "warning", "moves", "n_images", "wall_s", "microscope"):
        assert getattr(back, k) == getattr(cal, k), k
    plain = Calibration.from_affine(np.eye(2))
    back = Calibration.load(plain.save(tmp_path / "plain.json"))
    assert back.reported_affine is None and back.n_images == 0 and back.microscope == ""
    # a hand-written file with the affine only: everything else at its default
    (tmp_path / "min.json").write_text('{"affine": [[0, 1], [1, 0]]}')
    back = Calibration.load(tmp_path / "min.json")
    assert back.affine.dtype == float and back.flip is True
    assert (back.residual_px, back.disagreement, back.warning, back.moves, back.n_images,
            back.wall_s, back.microscope, back.reported_affine) == (
        0.0, 0.0, "", [], 0, 0.0, "", None)
    assert type(back.disagreement) is float and type(back.wall_s) is float


def test_load_names_the_problem_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="create one with `inscope calibrate"):
        Calibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        Calibration.load(bad)
    for text in ('{"pixel_size_um": 1}', '{"affine": [1, 2, 3]}', '{"affine": "x"}'):
        bad.write_text(text)
        with pytest.raises(ValueError, match="has no valid 2x2 'affine'"):
            Calibration.load(bad)
    for a in ([[0, 0], [0, 0]], [[1, 2], [2, 4]], [[1, 0], [0, float("nan")]]):
        bad.write_text(json.dumps({"affine": a}).replace("NaN", "NaN"))
        with pytest.raises(ValueError, match="singular or non-finite"):
            Calibration.load(bad)


# -- small fields: a shift measured wrongly never bends the map ------------------------------
@pytest.mark.parametrize("n,rot,seed", [(256, 0.0, 1), (256, 0.0, 2), (256, 30.0, 1),
                                        (192, 30.0, 3), (128, 0.0, 2)])
def test_small_fields_calibrate_to_the_true_map(n, rot, seed):
    # On 128-256 px fields of a few cells the 20 % diagonal moves keep little in common
    # under the window: phase correlation then returns a noise peak at a random shift.
    # These cases returned maps 15-60 % wrong (with only a warning) before.
    scope = sim_scope(seed=seed, shape=(n, n), camera_rotation_deg=rot)
    cal = calibrate(scope)
    np.testing.assert_allclose(cal.affine, scope.true_affine, atol=0.01)
    assert cal.rotation_deg == pytest.approx(rot, abs=1.0) and cal.residual_px < 0.5
    inv = np.linalg.inv(np.asarray(scope.true_affine))
    for m in cal.moves:  # what was used is right; what was wrong was not used
        err = np.hypot(*(np.asarray(m["shift_px"]) + inv @ m["stage_delta_um"]))
        assert (err < 1.0) == m["used"], m
        assert m.get("outlier", False) == (m["used"] is False and m["response"] >= 0.1)


def test_noise_peaks_below_the_default_response_are_not_used():
    scope = sim_scope(seed=1, shape=(256, 256))
    cal = calibrate(scope)
    unused = [m for m in cal.moves if not m["used"]]
    # the two 20 % diagonal moves: responses of noise, well below a real peak's
    assert [np.round(m["stage_delta_um"], 1).tolist() for m in unused] == [[33.3, 33.3],
                                                                          [-33.3, -33.3]]
    assert all(m["response"] < 0.1 and "outlier" not in m for m in unused)
    assert min(m["response"] for m in cal.moves if m["used"]) > 0.4
    # the old threshold 0.02 lets one of them in (0.027): the consensus of the others
    # leaves it out (before, it bent the map by 60 %)
    cal = calibrate(sim_scope(seed=1, shape=(256, 256)), min_response=0.02)
    np.testing.assert_allclose(cal.affine, PX * np.eye(2), atol=0.01)
    (out,) = [m for m in cal.moves if m.get("outlier")]
    assert out["used"] is False and 0.02 <= out["response"] < 0.1
    assert [m["used"] for m in cal.moves].count(False) == 2


def test_too_few_moves_that_agree_are_refused_with_the_fix():
    scope = sim_scope(seed=1, shape=(128, 128), camera_rotation_deg=30.0)
    with pytest.raises(CalibrationError) as e:
        calibrate(scope)
    msg = str(e.value)
    assert msg.startswith("Only 2 of 3 measured moves fit one pixel-to-stage map")
    assert "larger camera field" in msg and "smaller steps_um" in msg and "\n" not in msg
    assert (scope.position().x, scope.position().y) == (0.0, 0.0)


def test_a_map_the_shifts_do_not_fit_is_refused_not_returned():
    scope = sim_scope(seed=2)
    cal = calibrate(scope, steps_um=[10.0])
    size = np.sqrt(np.mean([np.sum(np.square(m["shift_px"])) for m in cal.moves]))
    misfit = cal.residual_px / size
    assert 0 < misfit < 0.05  # the default limit
    with pytest.raises(CalibrationError, match=r"do not fit one pixel-to-stage map \(RMS "
                       rf"misfit .* px, .*% of the {size:.1f} px shifts; limit 0\.1%\), so the "
                       r"map would be wrong: calibrate on a field with more structure"):
        calibrate(sim_scope(seed=2), steps_um=[10.0], max_misfit=0.001)
    cal = calibrate(sim_scope(seed=2), steps_um=[10.0], max_misfit=misfit * 1.01)
    assert cal.residual_px == pytest.approx(misfit * size)


def _moves_and_shifts(affine: np.ndarray, seed: int = 0):
    """Twelve stage moves (µm) and the image shifts (px) they cause, ``s = -A^-1 d``,
    with 0.2 px of measurement noise."""
    steps = [(10, 0), (0, 10), (-10, 0), (0, -10), (20, 0), (0, 20), (-20, 0), (0, -20),
             (14, 14), (-14, 14), (14, -14), (-14, -14)]
    D = np.array(steps, float)
    S = -(D @ np.linalg.inv(affine).T)
    return D, S + np.random.default_rng(seed).normal(0, 0.2, S.shape)


def test_consensus_keeps_the_moves_one_map_explains_and_drops_the_rest():
    D, S = _moves_and_shifts(_rot(20) * 0.5)
    bad = [1, 3, 7]
    S[3] += (12.0, -9.0)  # a wrong phase-correlation peak
    S[7] *= 0.5  # half the shift: a move cut short
    # 1.5 px off on a 20 px shift: beyond the 1 px floor (5 % of 20 px is 1 px)
    S[1] += 1.5 * S[1] / np.linalg.norm(S[1]) @ _rot(90)
    got = _consensus(D, S)
    assert got.tolist() == [k not in bad for k in range(len(D))]
    # the tolerance grows with the shift: 5 % of a 79 px shift is 4 px
    D2, S2 = _moves_and_shifts(_rot(-35) * 0.25, seed=1)
    S2[8] += 2.0 * S2[8] / np.linalg.norm(S2[8]) @ _rot(90)
    assert _consensus(D2, S2).all()


def test_consensus_of_shifts_along_one_line_keeps_every_move():
    """Parallel shifts determine no map: nothing is dropped, and calibrate() then says
    the shifts are all along one line."""
    D = np.array([(10, 0), (20, 0), (-10, 0), (-20, 0)], float)
    S = -D / 0.5
    got = _consensus(D, S)
    assert got.dtype == bool and got.tolist() == [True] * 4


@pytest.mark.parametrize("kw, what", [({"steps_um": [0.0]}, "steps_um"),
                                      ({"steps_um": [10.0, -5.0]}, "steps_um"),
                                      ({"steps_um": []}, "steps_um"),
                                      ({"n": 0}, "repeats")])
def test_steps_and_repeats_that_measure_nothing_are_refused_before_any_move(kw, what):
    # (a zero step was reported as "the field may be featureless"; 0 repeats ran)
    scope = sim_scope(seed=1)
    start = scope.position()
    asked: list = []
    scope.guard.moved.connect(asked.append)  # every move decision, made or refused
    with pytest.raises(ValueError, match=what):
        calibrate(scope, **kw)
    assert scope.position() == start and asked == []


def test_the_calibrate_command_names_the_option(capsys):
    from inscope.cli import main

    assert main(["calibrate", "--backend", "sim", "--steps-um", "0"]) == 2
    assert "--steps-um" in capsys.readouterr().err
    assert main(["calibrate", "--backend", "sim", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
