"""The simulated stage's kinematics and focal surface, on their own: where the stage is
during and after a move, when it reads busy, which exposures a move smears, and the
seqlock a camera in another process reads the state through.

The closed-loop tests steer on these numbers; a move that lands early or a busy flag
that drops a moment too soon would let a frame exposed mid-move pass as still.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from _support import light_centroid

from inscope.acquisition.frame import STAMP_READY
from inscope.acquisition.simulated import motion
from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.microscope import make_frame, true_focus
from inscope.acquisition.simulated.render import GroundTruth


def test_a_new_stage_is_at_rest_where_it_was_put():
    s = motion.new_state(3.0, -4.0, 7.5)
    assert s.shape == (motion.SIZE,) and s.dtype == np.float64 and s[motion.SEQ] == 0
    for t in (-1e9, 0.0, 12.0, 1e9):
        assert motion.position(s, t) == (3.0, -4.0, 7.5)
        assert motion.busy(s, t) == (False, False)
    assert not motion.moving_during(s, -1e9, 1e9)


def test_a_move_goes_linearly_from_where_the_stage_is_and_ends_on_time():
    s = motion.new_state(0.0, 0.0, 1.0)
    motion.command(s, "xy", (10.0, -20.0), 2.0, 0.1)
    assert s[motion.SEQ] == 2  # two bumps: a whole write
    assert motion.position(s, 1.99) == (0.0, 0.0, 1.0)
    assert motion.position(s, 2.0) == pytest.approx((0.0, 0.0, 1.0))
    assert motion.position(s, 2.025) == pytest.approx((2.5, -5.0, 1.0))
    assert motion.position(s, 2.05) == pytest.approx((5.0, -10.0, 1.0))
    assert motion.position(s, 2.1) == (10.0, -20.0, 1.0)
    assert motion.position(s, 50.0) == (10.0, -20.0, 1.0)
    assert motion.busy(s, 1.999) == (False, False)
    assert motion.busy(s, 2.0) == (True, False)
    assert motion.busy(s, 2.0999) == (True, False)
    assert motion.busy(s, 2.1) == (False, False)
    # a second move, commanded mid-way, starts from where the stage then is
    motion.command(s, "xy", (0.0, 0.0), 2.05, 0.1)
    assert motion.position(s, 2.05) == pytest.approx((5.0, -10.0, 1.0))
    assert motion.position(s, 2.1) == pytest.approx((2.5, -5.0, 1.0))
    assert motion.position(s, 2.15) == (0.0, 0.0, 1.0)
    # z moves on its own, xy stays
    motion.command(s, "z", 3.0, 5.0, 0.02)
    assert motion.position(s, 5.01) == pytest.approx((0.0, 0.0, 2.0))
    assert motion.busy(s, 5.01) == (False, True)
    assert motion.position(s, 5.02) == (0.0, 0.0, 3.0)
    assert motion.busy(s, 5.02) == (False, False)
    motion.command(s, "z", -1.0, 6.0, 0.02)
    motion.command(s, "z", 0.0, 6.01, 0.02)  # from -> halfway to -1: 1.0
    assert motion.position(s, 6.01)[2] == pytest.approx(1.0)
    assert motion.position(s, 6.02)[2] == pytest.approx(0.5)


def test_a_move_without_settle_time_is_there_at_once_and_never_busy():
    s = motion.new_state(0.0, 0.0, 0.0)
    motion.command(s, "xy", (4.0, 5.0), 1.0, 0.0)
    motion.command(s, "z", 2.0, 1.0, 0.0)
    assert motion.position(s, 1.0) == (4.0, 5.0, 2.0)
    assert motion.busy(s, 1.0) == (False, False)


def test_positions_are_read_back_quantised():
    s = motion.new_state(0.0, 0.0, 0.0)
    motion.command(s, "xy", (1.2345, -0.0271), 0.0, 0.0)
    motion.command(s, "z", 0.3333, 0.0, 0.0)
    x, y, z = motion.position(s, 1.0, xy_quantum=0.05, z_quantum=0.01)
    assert (x, y, z) == pytest.approx((1.25, -0.05, 0.33))
    assert motion.position(s, 1.0) == pytest.approx((1.2345, -0.0271, 0.3333))
    x, y, z = motion.position(s, 1.0, xy_quantum=0.1, z_quantum=0.0)
    assert (x, y, z) == pytest.approx((1.2, 0.0, 0.3333))


@pytest.mark.parametrize("window, moving", [
    ((0.0, 0.99), False),   # ends before the move
    ((0.0, 1.0), True),     # ends as it starts
    ((1.05, 1.06), True),   # inside it
    ((1.099, 1.2), True),   # begins just before it ends
    ((1.1, 1.2), False),    # begins as it ends: settled
    ((0.5, 2.0), True),     # spans it
])
def test_an_exposure_is_moving_if_any_axis_moved_during_it(window, moving):
    for axis, target in (("xy", (5.0, 5.0)), ("z", 5.0)):
        s = motion.new_state(0.0, 0.0, 0.0)
        motion.command(s, axis, target, 1.0, 0.1)
        assert motion.moving_during(s, *window) is moving, (axis, window)


def test_a_reader_waits_out_a_write_in_progress():
    s = motion.new_state(1.0, 2.0, 3.0)
    s[motion.SEQ] += 1  # a writer in another process is mid-update
    got = []
    reader = threading.Thread(target=lambda: got.append(motion.read(s)))
    reader.start()
    time.sleep(0.05)
    assert got == []  # still retrying
    s[motion.XY0] = s[motion.XY1] = (7.0, 8.0)
    s[motion.SEQ] += 1
    reader.join(2.0)
    assert len(got) == 1 and tuple(got[0][motion.XY1]) == (7.0, 8.0)
    assert got[0] is not s  # a copy
    assert motion.read(s)[motion.SEQ] == 2


def test_the_focal_surface_tilts_and_drifts():
    cfg = SimConfig(focus_z0_um=5.0, tilt=(0.01, -0.02), drift_um_per_s=0.1)
    assert true_focus(cfg, 0.0, 0.0, 0.0) == pytest.approx(5.0)
    assert true_focus(cfg, 100.0, 0.0, 0.0) == pytest.approx(6.0)
    assert true_focus(cfg, 0.0, 100.0, 0.0) == pytest.approx(3.0)
    assert true_focus(cfg, 0.0, 0.0, 30.0) == pytest.approx(8.0)
    assert true_focus(cfg, -50.0, 25.0, 10.0) == pytest.approx(5.0 - 0.5 - 0.5 + 1.0)


def test_a_frame_carries_its_exposure_its_truth_and_its_place():
    cfg = SimConfig(binning=2, exposure_ms=12.0)
    gt = GroundTruth(np.array([[1, 2, 3, 4]], np.float32), np.array([7]),
                     np.array([0.5], np.float32), np.zeros((1, 2)), np.ones((1, 2)))
    a = np.array([[1.3, 0.0], [0.0, 1.3]])
    f = make_frame(cfg, np.zeros((4, 4), np.uint16), 9, 123, (1.0, 2.0, 3.0), 4.5, -0.25,
                   gt, a, True)
    assert f.index == 9 and f.stamps[STAMP_READY] == 123
    assert (f.position.x, f.position.y, f.position.z) == (1.0, 2.0, 3.0)
    assert f.pixel_size_um == pytest.approx(cfg.binned_pixel_um)
    assert f.moving is True and f.truth.tolist() == [[1, 2, 3, 4]]
    np.testing.assert_array_equal(f.affine, a)
    md = f.metadata
    assert md["exposure_ms"] == 12.0 and md["binning"] == 2 and md["sim_time_s"] == 4.5
    assert md["defocus_um"] == -0.25 and md["truth_ids"] == [7]
    assert md["truth_visible_fraction"] == [0.5] and md["camera"] == "simulated"
    assert not make_frame(cfg, np.zeros((4, 4), np.uint16), 0, 0, (0, 0, 0), 0.0, 0.0,
                          gt, a, 0).moving
    assert math.isfinite(f.metadata["sim_time_s"])


# -- the simulated microscope: its geometry, stage and frames ------------------------------
from inscope.acquisition.errors import MoveRefused  # noqa: E402
from inscope.acquisition.simulated.microscope import SimulatedMicroscope  # noqa: E402
from inscope.acquisition.simulated.specimen import Cell, Specimen  # noqa: E402

_STILL = dict(seed=0, realtime=False, read_noise_e=0.0, background_photons_per_ms=0.0,
              texture=0.0, subpixel=True, xy_quantum_um=0.0, z_quantum_um=0.0)


@pytest.mark.parametrize("rotation, flip, want", [
    # the image content moves by -A^-1 (d, 0) for a stage move d along x: against the
    # stage unrotated; along +y with the camera turned +90 degrees; with it, mirrored
    (0.0, False, (-1.0, 0.0)),
    (90.0, False, (0.0, 1.0)),
    (-90.0, False, (0.0, -1.0)),
    (0.0, True, (1.0, 0.0)),
    (90.0, True, (0.0, 1.0)),
])
def test_the_camera_turns_and_mirrors_the_stage_moves_as_configured(rotation, flip, want):
    cfg = SimConfig(**_STILL, camera_rotation_deg=rotation, camera_flip_x=flip)
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(
        [Cell(1, 0.0, 0.0, 6.0, 5.0, 0.3, 1.0)], cfg))
    a = light_centroid(s.snap().pixels.astype(float) - cfg.offset)
    s.move_xy(6.5, 0.0)  # 10 pixels of 0.65 µm
    b = light_centroid(s.snap().pixels.astype(float) - cfg.offset)
    np.testing.assert_allclose((b - a) / 10.0, want, atol=0.01)
    p = cfg.pixel_size_um
    th = np.radians(rotation)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    np.testing.assert_allclose(s.true_affine, p * rot @ np.diag([-1.0 if flip else 1.0, 1.0]),
                               atol=1e-12)


def test_the_slide_and_the_focus_range_bound_every_move():
    cfg = SimConfig(**_STILL, slide_um=(2000.0, 600.0), z_limits_um=(-40.0, 60.0))
    s = SimulatedMicroscope(cfg)
    assert s.move_xy(900.0, 0.0) and s.position().x == pytest.approx(900.0)
    s.move_xy(0.0, 0.0)
    for x, y in [(1100.0, 0.0), (-1100.0, 0.0), (0.0, 400.0), (0.0, -400.0)]:
        with pytest.raises(MoveRefused):
            s.move_xy(x, y)
    assert s.move_xy(0.0, 280.0)
    s.move_xy(0.0, 0.0)
    assert s.move_z(55.0)
    for z in (61.0, -41.0):
        with pytest.raises(MoveRefused):
            s.move_z(z)
    lim = s.limits
    assert lim.x == (-1000.0, 1000.0) and lim.y == (-300.0, 300.0) and lim.z == (-40.0, 60.0)


def test_the_stage_starts_where_asked_and_frames_count_from_zero():
    cfg = SimConfig(**_STILL, start_xy_um=(12.0, -7.0), start_z_um=3.5, focus_z0_um=1.0)
    s = SimulatedMicroscope(cfg)
    p = s.position()
    assert (p.x, p.y, p.z) == (12.0, -7.0, 3.5)
    f0, f1 = s.snap(), s.snap()
    assert (f0.index, f1.index) == (0, 1)
    # defocus is the stage above the focal surface: 3.5 - 1.0
    assert f0.metadata["defocus_um"] == pytest.approx(2.5)
    s.move_z(1.0)
    assert s.snap().metadata["defocus_um"] == pytest.approx(0.0)
    s.move_z(-0.5)
    assert s.snap().metadata["defocus_um"] == pytest.approx(-1.5)
    # without start_z_um the stage starts in focus
    assert SimulatedMicroscope(SimConfig(**_STILL, focus_z0_um=4.0)).position().z == 4.0


@pytest.mark.parametrize("axis", ["xy", "z"])
def test_a_move_not_waited_for_reads_busy_and_smears_the_frames_exposed_during_it(axis):
    cfg = SimConfig(**_STILL, xy_settle_ms=25.0, z_settle_ms=25.0, exposure_ms=10.0)
    s = SimulatedMicroscope(cfg)
    if axis == "xy":
        s.move_xy(20.0, 0.0, wait=False)
    else:
        s.move_z(2.0, wait=False)
    assert s.moving()
    frames = [s.snap() for _ in range(4)]  # exposed at 0, 10, 20, 30 ms of the move
    assert [f.moving for f in frames] == [True, True, True, False]
    assert not s.moving()
    p = s.position()
    assert (p.x, p.z) == ((20.0, 0.0) if axis == "xy" else (0.0, 2.0))
    # a move waited for takes its settle time on the simulated clock
    t0 = s.sim_time_s
    s.move_z(5.0) if axis == "z" else s.move_xy(0.0, 0.0)
    assert s.sim_time_s - t0 == pytest.approx(0.025, abs=1e-9)
    assert not s.snap().moving
    s.advance(-1.0)  # no time runs backwards
    assert s.sim_time_s == pytest.approx(t0 + 0.025 + cfg.interval_ms / 1000)


def test_commanded_positions_are_quantised_like_the_devices():
    cfg = SimConfig(**{**_STILL, "xy_quantum_um": 0.05, "z_quantum_um": 0.01})
    s = SimulatedMicroscope(cfg)
    s.move_xy(1.2345, -0.0271)
    s.move_z(0.3333)
    p = s.position()
    assert (p.x, p.y, p.z) == pytest.approx((1.25, -0.05, 0.33))


def test_true_focus_and_z_range_follow_the_tilted_drifting_surface():
    cfg = SimConfig(**_STILL, focus_z0_um=2.0, tilt=(0.01, 0.02), drift_um_per_s=0.5,
                    thickness_ratio=0.5)
    s = SimulatedMicroscope(cfg, specimen=Specimen.from_cells(
        [Cell(4, 100.0, 50.0, 8.0, 6.0, 0.0, 1.0)], cfg))
    assert s.true_focus_z(100.0, 50.0, 2.0) == pytest.approx(2.0 + 1.0 + 1.0 + 1.0)
    s.move_xy(-50.0, 100.0)
    t = s.sim_time_s
    assert s.true_focus_z() == pytest.approx(2.0 - 0.5 + 2.0 + 0.5 * t)
    assert s.true_focus_z(x_um=0.0) == pytest.approx(2.0 + 2.0 + 0.5 * t)
    lo, hi = s.true_z_range(4, 2.0)
    assert (lo, hi) == pytest.approx((5.0 - 3.0, 5.0 + 3.0))
