"""The slide microscope while it runs: truth at the edges of the field, camera noise and
its clipping, the simulated clock (settle and exposure times) and real-time pacing.

Written against survivors of mutation testing (benchmarks/results/mutation.json) where a
changed constant or sign would give a benchmark wrong ground truth (a nucleus half a
pixel in view dropped), wrong noise (a bias, a wrapped 16-bit value) or a wrong clock.
Real slides from npz files; timing tests assert lower bounds only (a slow machine makes
them pass later, not fail).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from inscope.acquisition.slide import SlideMicroscope

N = 32  # camera side (px)


def _square_slide(tmp_path: Path) -> Path:
    """A 60 x 80 image, background 100, one labelled 10 x 10 square (columns and rows
    10..19, value 1100): its box in image pixels is (9.5, 9.5, 19.5, 19.5)."""
    img = np.full((60, 80), 100, np.uint16)
    lab = np.zeros((60, 80), np.int32)
    img[10:20, 10:20] = 1100
    lab[10:20, 10:20] = 1
    p = tmp_path / "square.npz"
    np.savez(p, image=img, labels=lab)
    return p


def _scope(p: Path, **kw) -> SlideMicroscope:
    kw = {"pixel_size_um": 1.0, "fov": N, "noise": 0, "realtime": False} | kw
    return SlideMicroscope(p, **kw)


# -- truth at the edges of the field ------------------------------------------------------
# frame pixel 0 sits at image coordinate x / P - N / 2; pixel k covers [k - 0.5, k + 0.5]
@pytest.mark.parametrize("axis,edge", [("x", "right"), ("x", "left"), ("y", "bottom"),
                                       ("y", "top")])
def test_a_box_half_a_pixel_in_view_is_truth_with_its_visible_fraction(
        tmp_path: Path, axis: str, edge: str) -> None:
    s = _scope(_square_slide(tmp_path))
    # the square's far edge (19.5) at frame coordinate 0.0: half of frame pixel 0 shows
    # it; or its near edge (9.5) at N - 1: half of the last pixel shows it
    o = 19.5 if edge in ("right", "bottom") else 9.5 - (N - 1)
    pos = o + N / 2
    x, y = (pos, 14.5) if axis == "x" else (14.5, pos)
    assert s.move_xy(x, y)
    f = s.snap()
    assert f.truth is not None and f.truth.shape == (1, 4)
    assert f.metadata["truth_ids"] == [1]
    assert f.metadata["truth_visible_fraction"][0] == pytest.approx(0.05)
    k = 0 if axis == "x" else 1
    lo, hi = f.truth[0, k], f.truth[0, k + 2]
    if edge in ("right", "bottom"):
        assert (lo, hi) == pytest.approx((-0.5, 0.0))
    else:
        assert (lo, hi) == pytest.approx((N - 1.0, N - 0.5))


@pytest.mark.parametrize("shift", [-0.6, 0.6])
def test_a_box_outside_the_field_is_not_truth(tmp_path: Path, shift: float) -> None:
    s = _scope(_square_slide(tmp_path))
    # its far edge 0.6 px left of frame pixel 0's centre, or its near edge 0.6 px right
    # of the last pixel's centre (0.1 px beyond the field): nothing of it shows
    x = (19.5 + 0.6 + N / 2) if shift < 0 else (9.5 - (N - 0.5) - 0.1 + N / 2)
    assert s.move_xy(x, 14.5)
    f = s.snap()
    assert f.truth is not None
    assert f.truth.shape == (0, 4) and f.truth.dtype == np.float32
    assert f.metadata["truth_ids"] == []


def test_truth_centroid_and_nearest_object_in_stage_coordinates(tmp_path: Path) -> None:
    img = np.full((60, 80), 100, np.uint16)
    lab = np.zeros((60, 80), np.int32)
    lab[5:9, 50:54] = 1  # centroid (51.5, 6.5) px
    lab[40:44, 10:14] = 2  # centroid (11.5, 41.5) px
    img[lab > 0] = 900
    p = tmp_path / "two.npz"
    np.savez(p, image=img, labels=lab)
    s = _scope(p, pixel_size_um=0.5)
    t = s.true_cells()
    np.testing.assert_allclose(t.xyz_um[:, :2], [[25.75, 3.25], [5.75, 20.75]])
    # nearer to object 1 in x and y both, or only by distance: each picks the nearest
    assert t.nearest(np.array([24.0, 5.0])) == 0
    assert t.nearest(np.array([6.0, 19.0])) == 1
    assert t.nearest(np.array([20.0, 18.0, 99.0])) == 1  # z is ignored
    assert t.nearest(np.array([16.0, 4.0])) == 0


# -- camera noise ---------------------------------------------------------------------------
def _flat(tmp_path: Path, value: float, dtype=np.float32, bright: float | None = None,
          name: str = "flat.npz") -> Path:
    img = np.full((64, 64), value, dtype)
    if bright is not None:
        img[:, 32:] = bright  # half the image bright (background = the dark half)
    p = tmp_path / name
    np.savez(p, image=img)
    return p


def test_gaussian_noise_has_zero_mean_and_the_asked_spread(tmp_path: Path) -> None:
    # range = bright - background = 1000 ADU; noise 0.002 of it: sigma 2 ADU
    s = _scope(_flat(tmp_path, 100.0, bright=1100.0), noise="gauss:0.002", fov=64)
    p = s.position()
    clean = s.render(p.x, p.y, p.z).astype(np.float64)
    diffs = np.stack([s.snap().pixels.astype(np.float64) - clean for _ in range(8)])
    # 8 x 4096 samples: the mean is known to ~0.01 ADU, the spread to ~1 %
    assert abs(diffs.mean()) < 0.1
    assert diffs.std() == pytest.approx(2.0, rel=0.05)


def test_shot_noise_keeps_the_mean_and_leaves_the_background_exact(tmp_path: Path) -> None:
    s = _scope(_flat(tmp_path, 100.0, bright=1100.0), noise="shot:100", fov=64)
    p = s.position()
    clean = s.render(p.x, p.y, p.z).astype(np.float64)
    frames = np.stack([s.snap().pixels.astype(np.float64) for _ in range(8)])
    dark = clean <= 100.0 + 1e-3
    bright = clean >= 1100.0 - 1e-3
    assert dark.sum() > 500 and bright.sum() > 500
    # no photons above the background: the background comes out exactly
    np.testing.assert_array_equal(frames[:, dark], 100.0)
    # 100 photons per 1000 ADU of signal: mean kept (to ~0.3 %), spread sqrt(100) photons
    sig = frames[:, bright] - 100.0
    assert sig.mean() == pytest.approx(1000.0, rel=0.01)
    assert sig.std() == pytest.approx(1000.0 / np.sqrt(100.0), rel=0.1)


def test_noise_on_16_bit_frames_clips_at_0_and_65535_never_wraps(tmp_path: Path) -> None:
    # dark half at 0, bright half at 65535: strong noise pushes half of each beyond the
    # type's range; values must clip there, not wrap round to the other end
    s = _scope(_flat(tmp_path, 0, np.uint16, bright=65535), noise="gauss:0.05", fov=64)
    f = s.snap()
    assert f.pixels.dtype == np.uint16
    # (rows 2..61: the frame samples the image half a pixel off its grid, so its first
    # row mixes the image with the background outside it)
    px = f.pixels.astype(np.int64)[2:-2]
    dark, bright = px[:, :24], px[:, 40:]
    # sigma = 0.05 x 65535 = 3277 ADU: 7 sigma = 22900
    assert dark.min() == 0 and dark.max() < 23000
    assert bright.max() == 65535 and bright.min() > 65535 - 23000
    # about half of each side lands on the limit
    assert 0.3 < (dark == 0).mean() < 0.7 and 0.3 < (bright == 65535).mean() < 0.7


# -- the simulated clock ------------------------------------------------------------------
def test_moves_and_exposures_advance_the_simulated_clock_by_their_times(
        tmp_path: Path) -> None:
    s = _scope(_square_slide(tmp_path), xy_settle_ms=20.0, z_settle_ms=7.0,
               exposure_ms=12.0)
    t0 = s.sim_time_s
    p = s.position()
    assert s.move_xy(p.x + 3.0, p.y)
    assert s.sim_time_s - t0 == pytest.approx(0.020, abs=1e-12)
    assert s.move_z(p.z + 0.5)
    assert s.sim_time_s - t0 == pytest.approx(0.027, abs=1e-12)
    f = s.snap()
    assert f.metadata["sim_time_s"] == pytest.approx(0.027, abs=1e-12)  # exposure start
    assert s.sim_time_s - t0 == pytest.approx(0.039, abs=1e-12)


def test_a_move_not_waited_for_settles_on_the_clock_and_its_frames_are_flagged_moving(
        tmp_path: Path) -> None:
    """As a motorised stage behind Micro-Manager: the move is commanded at once (no time
    passes), ``moving()`` holds for the settle time, the frames exposed meanwhile are
    flagged ``moving`` and the first exposed after it is not. Both axes."""
    s = _scope(_square_slide(tmp_path), xy_settle_ms=25.0, z_settle_ms=15.0,
               exposure_ms=10.0)
    assert not s.moving() and not s.snap().moving
    p = s.position()
    t0 = s.sim_time_s
    assert s.move_xy(p.x + 3.0, p.y, wait=False)
    assert s.sim_time_s == t0  # commanded, not waited for
    assert s.position().x == p.x + 3.0
    assert s.moving()
    flags = [s.snap().moving for _ in range(4)]  # exposures start at +0, 10, 20, 30 ms
    assert flags == [True, True, True, False]
    assert not s.moving()
    t1 = s.sim_time_s
    assert s.move_z(p.z + 0.5, wait=False)
    assert s.sim_time_s == t1 and s.moving()
    assert [s.snap().moving for _ in range(3)] == [True, True, False]
    assert not s.moving()


def test_a_waited_move_passes_its_settle_time_and_leaves_no_frame_moving(
        tmp_path: Path) -> None:
    s = _scope(_square_slide(tmp_path), xy_settle_ms=25.0, exposure_ms=10.0)
    p = s.position()
    t0 = s.sim_time_s
    assert s.move_xy(p.x + 3.0, p.y)
    assert s.sim_time_s - t0 == pytest.approx(0.025, abs=1e-12)
    assert not s.moving() and not s.snap().moving


def test_a_realtime_move_not_waited_for_returns_while_the_stage_settles(
        tmp_path: Path) -> None:
    """A live loop's control thread commands the move and goes on: it is still settling
    when the call returns (a settle time far longer than any call here), and a waited
    move after it waits out its own settle time."""
    s = _scope(_square_slide(tmp_path), realtime=True, xy_settle_ms=1000.0)
    p = s.position()
    assert s.move_xy(p.x + 3.0, p.y, wait=False)
    assert s.moving()
    assert s.snap().moving
    t0 = time.monotonic()
    assert s.move_xy(p.x, p.y)
    assert time.monotonic() - t0 >= 0.95  # a new move: its own full settle time
    assert not s.moving()


def test_advance_adds_any_positive_time_and_ignores_the_rest(tmp_path: Path) -> None:
    s = _scope(_square_slide(tmp_path))
    t0 = s.sim_time_s
    s.advance(0.5)
    s.advance(0.25)
    assert s.sim_time_s - t0 == pytest.approx(0.75, abs=1e-12)
    s.advance(-1.0)
    s.advance(0.0)
    assert s.sim_time_s - t0 == pytest.approx(0.75, abs=1e-12)


def test_realtime_snap_takes_at_least_its_exposure(tmp_path: Path) -> None:
    s = _scope(_square_slide(tmp_path), realtime=True, exposure_ms=40.0)
    t0 = time.monotonic()
    s.snap()
    assert time.monotonic() - t0 >= 0.039


def test_realtime_stream_delivers_one_frame_per_exposure(tmp_path: Path) -> None:
    s = _scope(_square_slide(tmp_path), realtime=True, exposure_ms=25.0)
    with s.stream() as frames:
        got = [frames.get(timeout=5) for _ in range(6)]
    assert all(f is not None for f in got)
    ready = np.array([f.stamps["ready"] for f in got], np.float64) / 1e9
    # a camera delivers at the end of each exposure: not faster than one per exposure on
    # the whole (one frame late by a few ms is followed by one on the old schedule; a
    # slow machine may deliver later, which is not checked here)
    assert ready[-1] - ready[0] >= 5 * 0.025 * 0.95
    assert np.median(np.diff(ready)) >= 0.024
    assert [f.index for f in got] == sorted({f.index for f in got})


def test_a_plane_without_labelled_objects_has_empty_truth(tmp_path: Path) -> None:
    """3-D labels: the truth of a frame is the objects of the plane it shows, and a plane
    with none has none (not a box of zeros)."""
    img = np.full((3, 60, 80), 100, np.uint16)
    lab = np.zeros((3, 60, 80), np.int32)
    img[1:, 10:20, 10:20] = 1100
    lab[1:, 10:20, 10:20] = 1
    p = tmp_path / "stack.npz"
    np.savez(p, image=img, labels=lab)
    s = _scope(p, z_step_um=1.0)
    pos = s.position()
    assert s.move_xy(14.5, 14.5) and s.move_z(0.0)
    f = s.snap()
    assert f.truth is not None and f.truth.shape == (0, 4) and f.truth.dtype == np.float32
    assert f.metadata["truth_ids"] == []
    assert s.move_z(pos.z)  # the middle plane holds the object
    f = s.snap()
    assert f.truth is not None and f.truth.shape == (1, 4)
    assert f.metadata["truth_ids"] == [1]
