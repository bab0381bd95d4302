"""The slide backend: geometry (sub-pixel shifts, z interpolation), labels as ground
truth, noise and background, guarded moves, files and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from inscope.acquisition.errors import MicroscopeUnavailable, MoveRefused
from inscope.acquisition.factory import open_microscope
from inscope.acquisition.slide import SlideMicroscope


def _ramp_npz(tmp_path, nz=1, a=3.0, b=-2.0):
    """I = 1000 + a x + b y (+ 100 z per plane): bilinear resampling is exact on it."""
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    planes = [1000 + a * xx + b * yy + 100 * k for k in range(nz)]
    p = tmp_path / "ramp.npz"
    np.savez(p, image=np.stack(planes).astype(np.float32))
    return p


def test_field_is_centred_on_pixel_x_over_p(tmp_path):
    img = np.zeros((200, 300), np.uint16)
    img[150, 200] = 1000
    p = tmp_path / "dot.npz"
    np.savez(p, image=img)
    s = SlideMicroscope(p, pixel_size_um=0.5, fov=64, noise=0, realtime=False)
    s.move_xy(200 * 0.5, 150 * 0.5)
    f = s.snap()
    v, u = np.unravel_index(int(np.argmax(f.pixels)), f.shape)
    assert (u, v) == (32, 32) == tuple(int(c) for c in f.center)
    # and the frame's own map sends that pixel back to the stage position of the dot
    np.testing.assert_allclose(f.pixel_to_stage([[u, v]])[0], [100.0, 75.0])


@pytest.mark.parametrize("d_px", [(3.0, -5.0), (0.37, 0.81), (-12.25, 7.5)])
def test_move_of_d_um_shifts_the_image_by_d_over_p_pixels(tmp_path, d_px):
    px = 0.65
    s = SlideMicroscope(_ramp_npz(tmp_path), pixel_size_um=px, fov=48, noise=0,
                        realtime=False)
    p = s.position()
    a = s.snap().pixels.astype(np.float64)
    assert s.move_xy(p.x + d_px[0] * px, p.y + d_px[1] * px)
    b = s.snap().pixels.astype(np.float64)
    # the view moved by d px over the ramp: every pixel changes by a dx + b dy exactly
    np.testing.assert_allclose(b - a, 3.0 * d_px[0] - 2.0 * d_px[1], atol=1e-3)


def test_starts_at_image_centre_and_middle_plane(tmp_path):
    s = SlideMicroscope(_ramp_npz(tmp_path, nz=5), pixel_size_um=1.0, z_step_um=0.4,
                        fov=32, noise=0, realtime=False)
    p = s.position()
    assert (p.x, p.y, p.z) == pytest.approx((199.5, 149.5, 0.8))
    f = s.snap()
    assert f.metadata["plane"] == pytest.approx(2.0)
    # centre pixel shows image pixel (199.5, 149.5) of plane 2
    assert f.pixels[16, 16] == pytest.approx(1000 + 3 * 199.5 - 2 * 149.5 + 200, abs=1e-3)


@pytest.mark.parametrize("z,expect", [(0.0, 0.0), (0.5, 125.0), (1.3, 325.0), (1.6, 400.0)])
def test_z_interpolates_between_planes(tmp_path, z, expect):
    s = SlideMicroscope(_ramp_npz(tmp_path, nz=5), pixel_size_um=1.0, z_step_um=0.4,
                        fov=32, noise=0, realtime=False)
    s.move_xy(100.0, 100.0)
    s.move_z(z)
    f = s.snap()
    base = 1000 + 3 * 100 - 2 * 100
    assert f.pixels[16, 16] - base == pytest.approx(expect, abs=1e-3)


def test_z_outside_the_stack_is_refused_and_nothing_moves(tmp_path):
    s = SlideMicroscope(_ramp_npz(tmp_path, nz=3), pixel_size_um=1.0, fov=32, noise=0,
                        realtime=False)
    z0 = s.position().z
    with pytest.raises(MoveRefused, match="soft limit"):
        s.move_z(5.0)
    assert s.position().z == z0
    with pytest.raises(MoveRefused):
        s.move_xy(1e5, 0)


def test_labels_follow_the_field_and_truth_is_in_stage_um(nuclei_slide):
    s = open_microscope("slide", path=str(nuclei_slide), fov=128, noise=0.02,
                        realtime=False)
    t = s.true_cells()
    assert len(t.ids) > 40
    k = t.nearest([200.0, 150.0])
    cid, xy = int(t.ids[k]), t.xyz_um[k, :2]
    for d_px in ((0.0, 0.0), (4.3, -2.6), (-20.0, 11.0)):
        s.move_xy(xy[0] - d_px[0] * 0.65, xy[1] - d_px[1] * 0.65)
        f = s.snap()
        j = f.metadata["truth_ids"].index(cid)
        c = np.asarray(f.metadata["truth_centroids_px"][j])
        # the cell sits d px from the centre, where the frame's own map says it is
        np.testing.assert_allclose(c, np.asarray(f.center) + d_px, atol=1e-6)
        np.testing.assert_allclose(f.pixel_to_stage(c)[0], xy, atol=1e-6)
        box = f.truth[j]
        assert box[0] < c[0] < box[2] and box[1] < c[1] < box[3]
        # the box covers the labelled pixels: they are brighter than the background
        x0, y0, x1, y1 = (int(round(v)) for v in (box[0] + 0.5, box[1] + 0.5, box[2] - 0.5,
                                                  box[3] - 0.5))
        assert f.pixels[y0:y1, x0:x1].mean() > s.background + 0.2 * (s.bright - s.background)


def test_3d_labels_give_the_cells_z_range(nuclei_stack):
    s = open_microscope("slide", path=str(nuclei_stack), fov=128, noise=0, realtime=False)
    t = s.true_cells()
    k = t.nearest([160.0, 130.0])
    lo, hi = t.z_range_um[k]
    assert 0 <= lo < t.xyz_um[k, 2] < hi <= 20.0
    s.move_xy(*t.xyz_um[k, :2])
    for z, inside in ((t.xyz_um[k, 2], True), (hi + 2.0, False)):
        if z > 20.0:
            continue
        s.move_z(z)
        f = s.snap()
        assert (int(t.ids[k]) in f.metadata["truth_ids"]) == inside


def test_outside_the_image_is_background_with_fresh_noise(tmp_path):
    p = _ramp_npz(tmp_path)
    s = SlideMicroscope(p, pixel_size_um=1.0, fov=32, noise=0.05, realtime=False)
    s.move_xy(-10.0, -10.0)  # field centre 10 px outside the corner
    a = s.snap().pixels
    b = s.snap().pixels
    out = a[:8, :8]
    assert abs(float(out.mean()) - s.background) < 0.02 * (s.bright - s.background)
    assert float(out.std()) == pytest.approx(0.05 * (s.bright - s.background), rel=0.3)
    assert not np.array_equal(a, b)  # fresh camera noise in every frame


def test_shot_noise_and_defocus_of_a_2d_image(nuclei_slide):
    s = open_microscope("slide", path=str(nuclei_slide), fov=96, noise=0, realtime=False)
    t = s.true_cells()
    s.move_xy(*t.xyz_um[t.nearest([200, 150]), :2])
    sharp = s.snap().pixels.astype(float)
    s.move_z(6.0)  # 2-D image: defocus 0.35 µm/µm -> 2.1 µm blur sigma
    blurred = s.snap().pixels.astype(float)
    assert (np.diff(blurred, axis=1) ** 2).mean() < 0.6 * (np.diff(sharp, axis=1) ** 2).mean()
    assert blurred.sum() == pytest.approx(sharp.sum(), rel=0.05)  # light is kept
    s2 = open_microscope("slide", path=str(nuclei_slide), fov=96, noise="shot:200",
                         realtime=False)
    s2.move_xy(*t.xyz_um[t.nearest([200, 150]), :2])
    a, b = (s2.snap().pixels.astype(float) for _ in range(2))
    d = a - b
    bright = sharp > s.background + 0.5 * (s.bright - s.background)
    dark = sharp < s.background + 0.02 * (s.bright - s.background)
    assert d[bright].std() > 3 * max(d[dark].std(), 1.0)  # Poisson: grows with signal


def test_tiff_and_ome_tiff_with_their_pixel_size(tmp_path):
    stack = np.random.default_rng(0).integers(100, 200, (4, 60, 70)).astype(np.uint16)
    p = tmp_path / "s.ome.tif"
    tifffile.imwrite(p, stack, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.26,
                                                   "PhysicalSizeY": 0.26,
                                                   "PhysicalSizeZ": 0.29})
    s = open_microscope("slide", path=str(p), fov=32, noise=0, realtime=False)
    assert s.pixel_size_um == pytest.approx(0.26)
    assert s.z_step_um == pytest.approx(0.29)
    assert s.shape_zyx == (4, 60, 70)
    assert s.snap().pixels.dtype == np.uint16
    plain = tmp_path / "p.tif"
    tifffile.imwrite(plain, stack[0])
    s2 = open_microscope("slide", path=str(plain), pixel_size_um=1.0, fov=32,
                         realtime=False)
    assert s2.shape_zyx == (1, 60, 70)


def test_imagej_hyperstack_with_channels_and_its_calibration(tmp_path):
    """A Fiji hyperstack (Z, C, Y, X) in µm: the channel asked for, its pixel size from
    the resolution tag and its z step from ``spacing``; uncalibrated (ImageJ's 1 pixel
    per pixel) it asks for the pixel size; the same array saved without axes names is
    refused rather than read with the channels as planes."""
    rng = np.random.default_rng(1)
    zcyx = rng.integers(100, 200, (5, 2, 40, 50)).astype(np.uint16)
    zcyx[:, 1] += 1000  # the nuclei channel
    p = tmp_path / "hyper.tif"
    tifffile.imwrite(p, zcyx, imagej=True, resolution=(1 / 0.26, 1 / 0.26),
                     metadata={"axes": "ZCYX", "spacing": 0.29, "unit": "micron"})
    s = open_microscope("slide", path=str(p), channel=1, fov=32, noise=0, realtime=False)
    assert s.pixel_size_um == pytest.approx(0.26, rel=1e-5)
    assert s.z_step_um == pytest.approx(0.29)
    assert s.shape_zyx == (5, 40, 50)
    assert s._stack.min() >= 1100  # channel 1, every plane
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, zcyx, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(MicroscopeUnavailable, match="pixel_size_um=P"):
        open_microscope("slide", path=str(raw), channel=1, realtime=False)
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, zcyx)
    with pytest.raises(MicroscopeUnavailable, match="which axis is z cannot be told.*ZCYX"):
        open_microscope("slide", path=str(bare), pixel_size_um=0.26, realtime=False)


@pytest.mark.parametrize("opts,words", [
    ({"path": "missing.npz", "pixel_size_um": 1}, "does not exist"),
    ({"path": "{bad_npz}", "pixel_size_um": 1}, "no 'image' array"),
    ({"path": "{plain}"}, "pixel_size_um"),
    ({"path": "{plain}", "pixel_size_um": 1, "noise": "pink"}, "noise="),
    ({"path": "{plain}", "pixel_size_um": -1}, "pixel_size_um=-1"),
    ({"path": "{plain}", "pixel_size_um": 1, "fov": 3}, "fov=3"),
    ({"path": "{plain}", "pixel_size_um": 1, "zoom": 2}, "Unknown option"),
    ({"path": "{mismatch}", "pixel_size_um": 1}, "does not match"),
    ({"path": "{text}", "pixel_size_um": 1}, "unknown type"),
    ({"pixel_size_um": 1}, "path=FILE"),
])
def test_bad_files_and_options_get_one_clear_line(tmp_path, opts, words):
    files = {"bad_npz": tmp_path / "bad.npz", "plain": tmp_path / "plain.npz",
             "mismatch": tmp_path / "mm.npz", "text": tmp_path / "x.txt"}
    np.savez(files["bad_npz"], pixels=np.zeros((4, 4)))
    np.savez(files["plain"], image=np.ones((40, 40), np.uint16))
    np.savez(files["mismatch"], image=np.ones((40, 40)), labels=np.ones((30, 40), int))
    files["text"].write_text("hello")
    o = {k: (str(v).format(**files) if k == "path" else v) for k, v in opts.items()}
    with pytest.raises(MicroscopeUnavailable) as e:
        open_microscope("slide", **o)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "inscope", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_stream_and_bad_file_on_the_slide_backend(nuclei_slide, tmp_path):
    r = _cli("stream", "--backend", "slide", "-o", f"path={nuclei_slide}", "-o", "fov=64",
             "-o", "realtime=false", "--frames", "5")
    assert r.returncode == 0, r.stderr
    assert "slide: 5 frames" in r.stdout
    r = _cli("stream", "--backend", "slide", "-o", f"path={tmp_path / 'nope.npz'}",
             "-o", "pixel_size_um=0.5", "--frames", "2")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0], r.stderr
