"""The slide backend against exact expectations: in-focus frames are the image's own
pixels, the stack's ends, the image's corner, the 2-D defocus blur, each frame's
bookkeeping, instance labels (in the file or a second file) turned into per-plane truth,
and the labelled z-stack made from a 2-D image.

Small hand-made images whose every pixel is known, so a wrong index, a flipped sign or a
dropped clip changes what a frame shows (tests/acquisition/test_slide.py checks the
geometry on linear ramps and the file formats)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tifffile

from inscope.acquisition.errors import MicroscopeUnavailable, MoveRefused
from inscope.acquisition.slide import SlideMicroscope, extrude_to_stack

N = 32  # camera side (px); frame pixel (u, v) shows image pixel (ox + u, oy + v)


def _texture(tmp_path, nz: int = 1, shape=(60, 80), name: str = "tex.npz"):
    """Random planes, each offset by 1000 x its index: no two pixels alike, so a blur,
    a shift or a wrong plane shows."""
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 500, (nz, *shape)).astype(np.float32)
    img += 1000 * np.arange(nz, dtype=np.float32)[:, None, None]
    p = tmp_path / name
    np.savez(p, image=img[0] if nz == 1 else img)
    return p, img


def _window(img: np.ndarray, ox: int, oy: int) -> np.ndarray:
    return img[oy:oy + N, ox:ox + N]


def _at_pixel(s: SlideMicroscope, ox: int, oy: int, z: float | None = None):
    """Move so that frame pixel (0, 0) shows image pixel (ox, oy) and snap."""
    px = s.pixel_size_um
    s.move_xy((ox + N / 2) * px, (oy + N / 2) * px)
    if z is not None:
        s.move_z(z)
    return s.snap()


def test_an_in_focus_frame_is_the_planes_own_pixels(tmp_path):
    p, img = _texture(tmp_path, nz=4)
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.4, fov=N, noise=0,
                        realtime=False)
    for k in range(4):  # every plane, the last one too
        f = _at_pixel(s, 20, 11, z=k * 0.4)
        np.testing.assert_allclose(f.pixels, _window(img[k], 20, 11), atol=1e-3)
        assert f.metadata["plane"] == pytest.approx(k)


def test_beyond_the_stack_the_nearest_end_plane_shows(tmp_path):
    """A tilted focal plane reaches past the stack's first and last planes away from the
    start: the frame shows the end plane there (and its labels), not a wrapped index
    nor an extrapolation."""
    p, img = _texture(tmp_path, nz=3, shape=(60, 400))
    lab = np.zeros((3, 60, 400), np.int32)
    lab[0, 20:30, 370:380] = 1  # object 1 only in the first plane, object 2 in the last
    lab[2, 20:30, 10:20] = 2
    np.savez(tmp_path / "lab.npz", labels=lab)
    s = SlideMicroscope(p, pixel_size_um=1.0, z_step_um=1.0, fov=N, noise=0,
                        tilt=(0.02, 0.0), labels=tmp_path / "lab.npz", realtime=False)
    # 176 px right of the start the focal plane is 3.5 um higher: the bottom plane's z
    # shows what lies 3.5 planes below the stack; 184 px left, 3.7 planes above it
    f = _at_pixel(s, 360, 10, z=0.0)
    assert f.metadata["plane"] < -3
    np.testing.assert_allclose(f.pixels, _window(img[0], 360, 10), atol=1e-3)
    assert f.metadata["truth_ids"] == [1]
    f = _at_pixel(s, 0, 10, z=2.0)  # top plane, 3.7 planes above the stack
    assert f.metadata["plane"] > 5
    np.testing.assert_allclose(f.pixels, _window(img[2], 0, 10), atol=1e-3)
    assert f.metadata["truth_ids"] == [2]


def test_a_field_over_the_image_corner_shows_pixel_0_0_and_background_beyond(tmp_path):
    p, img = _texture(tmp_path)
    s = SlideMicroscope(p, pixel_size_um=0.5, fov=N, noise=0, realtime=False)
    f = _at_pixel(s, -N // 2, -N // 2)  # image pixel (0, 0) at the frame's centre
    h = N // 2
    np.testing.assert_allclose(f.pixels[h:, h:], img[0, :h, :h], atol=1e-3)
    assert np.all(f.pixels[:h, :] == np.float32(s.background))
    assert np.all(f.pixels[:, :h] == np.float32(s.background))
    # the last row and column too
    f = _at_pixel(s, 80 - h, 60 - h)
    np.testing.assert_allclose(f.pixels[:h, :h], img[0, -h:, -h:], atol=1e-3)
    assert np.all(f.pixels[h:, :] == np.float32(s.background))


@pytest.mark.parametrize("dz_um", [0.6, 3.0])
def test_a_2d_image_out_of_focus_is_blurred_by_defocus_times_distance(tmp_path, dz_um):
    """sigma (px) = defocus x |dz| (µm) / pixel size, whatever the z step says."""
    img = np.zeros((81, 81), np.float32)
    img[40, 40] = 1e4
    p = tmp_path / "dot.npz"
    np.savez(p, image=img)
    px = 0.5
    s = SlideMicroscope(p, pixel_size_um=px, z_step_um=2.0, fov=64, noise=0,
                        defocus=0.35, realtime=False)
    z0 = s.position().z
    s.move_xy(40 * px, 40 * px)
    s.move_z(z0 + dz_um)
    f = s.snap().pixels.astype(np.float64)
    sigma = 0.35 * dz_um / px
    cols = np.arange(64) - 32.0
    prof = f.sum(0)
    var = float((prof * cols ** 2).sum() / prof.sum())
    # the variance of a Gaussian of that sigma sampled at whole pixels (below ~1 px it
    # is smaller than sigma^2)
    g = np.exp(-cols ** 2 / (2 * sigma ** 2))
    assert f.sum() == pytest.approx(1e4, rel=1e-3)  # the light is kept
    assert var == pytest.approx(float((g * cols ** 2).sum() / g.sum()), rel=0.05)
    assert f[32, 32] == f.max()  # centred where the dot is


def test_each_frame_says_its_index_stage_position_scale_and_file(tmp_path):
    p, _ = _texture(tmp_path, nz=3)
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.4, fov=N, noise=0,
                        exposure_ms=7.0, realtime=False)
    s.move_xy(21.0, 13.5)
    s.move_z(0.3)
    a, b = s.snap(), s.snap()
    assert b.index == a.index + 1
    assert (b.position.x, b.position.y, b.position.z) == pytest.approx((21.0, 13.5, 0.3))
    assert b.pixel_size_um == 0.5
    assert b.affine is not None
    np.testing.assert_allclose(b.affine, s.affine)
    np.testing.assert_allclose(b.pixel_to_stage([b.center])[0], [21.0, 13.5])
    assert b.metadata["file"] == p.name
    assert b.metadata["exposure_ms"] == 7.0
    assert b.metadata["sim_time_s"] == pytest.approx(a.metadata["sim_time_s"] + 0.007)
    assert b.truth is None  # no labels, no boxes: no ground truth to score on


def test_labels_from_a_second_file_become_the_truth(tmp_path):
    """``-o labels=FILE`` (npz or TIFF): centroids in stage µm (all voxels), z range
    from the first and last labelled planes, boxes with edges at half pixels."""
    p, _ = _texture(tmp_path, nz=5, shape=(60, 80))
    lab = np.zeros((5, 60, 80), np.uint16)
    lab[1:4, 10:20, 30:36] = 7  # planes 1-3, rows 10-19, cols 30-35
    lab[4, 40:44, 5:15] = 2  # plane 4 only
    for name, write in (("lab.npz", lambda q: np.savez(q, labels=lab)),
                        ("lab.tif", lambda q: tifffile.imwrite(q, lab))):
        q = tmp_path / name
        write(q)
        s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.25, fov=N, noise=0,
                            labels=q, realtime=False)
        t = s.true_cells()
        assert t.ids.tolist() == [2, 7]
        np.testing.assert_allclose(t.xyz_um, [[9.5 * 0.5, 41.5 * 0.5, 4 * 0.25],
                                              [32.5 * 0.5, 14.5 * 0.5, 2 * 0.25]])
        np.testing.assert_allclose(t.z_range_um, [[1.0, 1.0], [0.25, 0.75]])
        np.testing.assert_allclose(t.boxes_px, [[4.5, 39.5, 14.5, 43.5],
                                                [29.5, 9.5, 35.5, 19.5]])
        # a frame centred on object 7 in its middle plane: its box, centred
        s.move_xy(*t.xyz_um[1, :2])
        s.move_z(0.5)
        f = s.snap()
        assert f.metadata["truth_ids"] == [7]
        np.testing.assert_allclose(f.truth[0], [13.0, 11.0, 19.0, 21.0], atol=1e-6)
        assert f.metadata["truth_visible_fraction"] == [pytest.approx(1.0)]
        s.move_z(1.0)  # plane 4: only object 2, outside this field
        assert s.snap().metadata["truth_ids"] == []


def test_a_labels_file_that_does_not_fit_gets_one_clear_line(tmp_path):
    p, _ = _texture(tmp_path, nz=2)
    bad = tmp_path / "bad.npz"
    np.savez(bad, labels=np.zeros((2, 30, 80), int))
    with pytest.raises(MicroscopeUnavailable, match="does not match"):
        SlideMicroscope(p, pixel_size_um=0.5, labels=bad, realtime=False)
    with pytest.raises(MicroscopeUnavailable, match="does not exist"):
        SlideMicroscope(p, pixel_size_um=0.5, labels=tmp_path / "none.npz", realtime=False)


def test_boxes_in_the_file_are_truth_at_half_pixel_edges(tmp_path):
    img = np.zeros((60, 80), np.uint16)
    p = tmp_path / "boxes.npz"
    np.savez(p, image=img, boxes=np.array([[10, 20, 16, 30]]))  # x0, y0, x1, y1 (excl.)
    s = SlideMicroscope(p, pixel_size_um=2.0, fov=N, noise=0, realtime=False)
    t = s.true_cells()
    np.testing.assert_allclose(t.boxes_px, [[9.5, 19.5, 15.5, 29.5]])
    np.testing.assert_allclose(t.xyz_um[0, :2], [12.5 * 2.0, 24.5 * 2.0])
    assert np.isnan(t.z_range_um).all()


def test_extrude_to_stack_makes_ellipsoids_whose_labels_are_their_sections():
    lab = np.zeros((60, 60), np.int32)
    yy, xx = np.mgrid[0:60, 0:60]
    lab[(xx - 20) ** 2 + (yy - 30) ** 2 <= 8 ** 2] = 1
    lab[(xx - 45) ** 2 + (yy - 30) ** 2 <= 5 ** 2] = 2
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)
    stack, labs = extrude_to_stack(img, lab, pixel_size_um=0.5, z_step_um=0.5, planes=21,
                                   thickness=0.35, z_spread_um=0.0, haze=0.0)
    assert stack.shape == labs.shape == (21, 60, 60) and stack.dtype == np.uint16
    # half-thickness 0.35 x the equivalent diameter: ~5.6 um and ~3.5 um, about the
    # middle plane (z_spread 0): object 1 spans more planes than object 2
    planes_1 = np.flatnonzero((labs == 1).any(axis=(1, 2)))
    planes_2 = np.flatnonzero((labs == 2).any(axis=(1, 2)))
    assert planes_1[0] + planes_1[-1] == 20 == planes_2[0] + planes_2[-1]
    half_1 = 0.35 * 2 * np.sqrt((lab == 1).sum() / np.pi) * 0.5
    half_2 = 0.35 * 2 * np.sqrt((lab == 2).sum() / np.pi) * 0.5
    assert (planes_1[-1] - 10) * 0.5 == pytest.approx(half_1, abs=0.5)
    assert (planes_2[-1] - 10) * 0.5 == pytest.approx(half_2, abs=0.5)
    # sections shrink towards the poles, and lie inside the 2-D mask
    areas = (labs == 1).sum(axis=(1, 2))
    assert areas[10] == (lab == 1).sum() and areas[planes_1[-1]] < areas[10] / 2
    assert not np.any((labs == 1) & (lab != 1)[None])
    # no haze: a plane is the background plus the sections' own light
    bg = float(np.percentile(img, 10))
    np.testing.assert_array_equal(stack[10][lab == 0], bg)
    np.testing.assert_array_equal(stack[0][(labs[0] == 0)], bg)
    # haze lights the planes beyond a nucleus, less the further away
    hazy, _ = extrude_to_stack(img, lab, pixel_size_um=0.5, planes=21, z_spread_um=0.0,
                               haze=0.5)
    ring = (lab == 0) & ((xx - 20) ** 2 + (yy - 30) ** 2 <= 11 ** 2)
    near, far = hazy[planes_1[-1] + 1][ring].mean(), hazy[20][ring].mean()
    assert bg < far < near


@pytest.mark.parametrize("nz", [1, 4])
def test_default_soft_limits_are_the_image_grown_by_half_a_field_and_the_stack(tmp_path,
                                                                                nz):
    """Every move stays inside the image grown by half a field (the field's centre may
    reach the image's edge pixels) and, for a stack, its planes' z range; a 2-D image
    allows +/- 50 um of defocus around its focus."""
    p, _ = _texture(tmp_path, nz=nz, shape=(60, 80))
    px, dz = 0.5, 0.4
    s = SlideMicroscope(p, pixel_size_um=px, z_step_um=dz, fov=N, noise=0, realtime=False)
    lim = s.guard.limits
    half = N / 2 * px
    assert lim.x == pytest.approx((-half, 79 * px + half))
    assert lim.y == pytest.approx((-half, 59 * px + half))
    assert lim.z == pytest.approx((0.0, (nz - 1) * dz) if nz > 1 else (-50.0, 50.0))
    for x, y in ((-half, -half), (79 * px + half, 59 * px + half)):
        assert s.move_xy(x, y)  # the corners of the allowed range
    p0 = s.position()
    for x, y in ((-half - 0.1, 0.0), (0.0, 59 * px + half + 0.1)):
        with pytest.raises(MoveRefused):
            s.move_xy(x, y)
    assert s.position() == p0


def test_defaults_fov_noise_dtype_sectioning_and_first_frame(tmp_path):
    """What a user gets from ``--backend slide -o path=FILE`` alone: a 512 px camera,
    1 % Gaussian noise, frames in the file's own integer type, optical sections for a
    stack (widefield for a 2-D image), frame 0 first."""
    rng = np.random.default_rng(0)
    for nz, dtype in ((1, np.uint16), (3, np.uint8), (1, np.float32)):
        img = rng.integers(0, 200, (nz, 40, 50)).astype(dtype)
        p = tmp_path / f"d{nz}{np.dtype(dtype).name}.npz"
        np.savez(p, image=img[0] if nz == 1 else img, pixel_size_um=0.5)
        s = SlideMicroscope(p, realtime=False)
        f = s.snap()
        assert f.shape == (512, 512) and f.pixels.dtype == dtype and f.index == 0
        assert s.optical_sectioning is (nz > 1)
        assert s.noise == ("gauss", 0.01)
    s = SlideMicroscope(p, sectioning="confocal", realtime=False)
    assert s.optical_sectioning is True
    img3 = rng.integers(0, 200, (3, 40, 50)).astype(np.uint16)
    np.savez(tmp_path / "w.npz", image=img3)
    s = SlideMicroscope(tmp_path / "w.npz", pixel_size_um=0.5, sectioning="widefield",
                        realtime=False)
    assert s.optical_sectioning is False


def test_background_is_the_images_10th_percentile_and_noise_follows_the_seed(tmp_path):
    img = np.arange(100 * 100, dtype=np.float32).reshape(100, 100) % 100  # 0..99 per row
    p = tmp_path / "bg.npz"
    np.savez(p, image=img)
    s = SlideMicroscope(p, pixel_size_um=1.0, fov=N, noise=0, realtime=False)
    assert s.background == pytest.approx(np.percentile(img, 10))
    assert s.bright == pytest.approx(np.percentile(img, 99.9))
    s.move_xy(-16.0, 50.0)  # the field's left half beyond the image
    f = s.snap().pixels
    assert np.all(f[:, :15] == np.float32(s.background))
    frames = {}
    for seed in (1, 1, 2):
        s = SlideMicroscope(p, pixel_size_um=1.0, fov=N, noise=0.05, seed=seed,
                            realtime=False)
        frames.setdefault(seed, []).append(s.snap().pixels)
    np.testing.assert_array_equal(*frames[1])  # the same seed: the same noise
    assert not np.array_equal(frames[1][0], frames[2][0])
    d = frames[1][0] - frames[2][0]
    assert float(d.std()) == pytest.approx(np.sqrt(2) * 0.05 * (s.bright - s.background),
                                           rel=0.15)


def test_outside_a_noisy_image_is_its_background_mean_not_a_darker_rim(tmp_path):
    """A widefield image's background is noisy (here 200 +/- 40 ADU): its raw 10th
    percentile is 1.3 sigmas below the mean, so the field beyond the image was darker
    than the image's own background, with a sharp edge along the border that the
    detector took for nuclei at the corners. The level is read with the noise averaged
    away: beyond the border the camera sees the image's background mean."""
    rng = np.random.default_rng(3)
    img = (200.0 + rng.normal(0.0, 40.0, (256, 256))).astype(np.float32)
    yy, xx = np.mgrid[0:256, 0:256]
    for cy, cx in ((60, 70), (180, 150), (120, 200)):
        img += 3000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 8.0 ** 2))
    p = tmp_path / "noisy.npz"
    np.savez(p, image=img)
    s = SlideMicroscope(p, pixel_size_um=1.0, fov=64, noise=0, realtime=False)
    assert abs(s.background - 200.0) < 0.3 * 40.0
    s.move_xy(0.0, 0.0)  # the image's corner at the middle of the field
    f = s.snap().pixels
    outside, inside = f[:30, :30], f[34:, 34:]
    assert abs(float(outside.mean()) - float(inside.mean())) < 0.3 * 40.0


def test_tiff_layouts_rgb_time_series_channels_and_unnamed_axes(tmp_path):
    """What lands in a user's folder: an RGB snapshot (the mean of its samples), a time
    series (the first time point is the slide), a channel stack (the channel asked
    for), a plain 3-D TIFF (its planes), and a 4-D array without axis names (refused)."""
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    s = SlideMicroscope(tmp_path / "rgb.tif", pixel_size_um=1.0, fov=N, realtime=False)
    np.testing.assert_allclose(s._stack[0], rgb.mean(axis=2), atol=0.5)  # rounded
    rgba = np.dstack([rgb, np.full((40, 50), 255, np.uint8)])  # alpha is not a colour
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=[2])
    s = SlideMicroscope(tmp_path / "rgba.tif", pixel_size_um=1.0, fov=N, realtime=False)
    np.testing.assert_allclose(s._stack[0], rgb.mean(axis=2), atol=0.5)
    tzyx = rng.integers(0, 100, (3, 4, 40, 50)).astype(np.uint16)
    tzyx += (1000 * np.arange(3, dtype=np.uint16))[:, None, None, None]
    tifffile.imwrite(tmp_path / "t.ome.tif", tzyx, ome=True, metadata={"axes": "TZYX"})
    s = SlideMicroscope(tmp_path / "t.ome.tif", pixel_size_um=1.0, fov=N, realtime=False)
    assert s.shape_zyx == (4, 40, 50)
    np.testing.assert_array_equal(s._stack, tzyx[0])
    tyx = tzyx[:, 0]
    tifffile.imwrite(tmp_path / "tyx.ome.tif", tyx, ome=True, metadata={"axes": "TYX"})
    s = SlideMicroscope(tmp_path / "tyx.ome.tif", pixel_size_um=1.0, fov=N, realtime=False)
    assert s.shape_zyx == (1, 40, 50)
    np.testing.assert_array_equal(s._stack[0], tyx[0])
    czyx = rng.integers(0, 100, (2, 4, 40, 50)).astype(np.uint16)
    czyx[1] += 5000
    tifffile.imwrite(tmp_path / "c.ome.tif", czyx, ome=True, metadata={"axes": "CZYX"})
    s = SlideMicroscope(tmp_path / "c.ome.tif", pixel_size_um=1.0, channel=1, fov=N,
                        realtime=False)
    np.testing.assert_array_equal(s._stack, czyx[1])
    with pytest.raises(MicroscopeUnavailable, match=r"2 channels, channel=2 .*channel=0\.\.1"):
        SlideMicroscope(tmp_path / "c.ome.tif", pixel_size_um=1.0, channel=2, realtime=False)
    # no axis names, but grey pages: its planes
    tifffile.imwrite(tmp_path / "plain3d.tif", tzyx[0], photometric="minisblack")
    s = SlideMicroscope(tmp_path / "plain3d.tif", pixel_size_um=1.0, fov=N, realtime=False)
    np.testing.assert_array_equal(s._stack, tzyx[0])
    # a plain 4-plane uint16 array: tifffile stores it as one RGBA image; refused, not
    # averaged into one plane
    tifffile.imwrite(tmp_path / "rgba16.tif", tzyx[0])
    with pytest.raises(MicroscopeUnavailable, match="may be z planes or colours.*'ZYX'"):
        SlideMicroscope(tmp_path / "rgba16.tif", pixel_size_um=1.0, realtime=False)
    tifffile.imwrite(tmp_path / "plain4d.tif", np.zeros((3, 5, 40, 50), np.uint16))
    with pytest.raises(MicroscopeUnavailable, match="which axis is z"):
        SlideMicroscope(tmp_path / "plain4d.tif", pixel_size_um=1.0, realtime=False)


def test_imagej_calibration_only_in_micrometres(tmp_path):
    img = np.zeros((2, 40, 50), np.uint16)
    # (ImageJ writes the micro sign escaped, as tifffile must: its metadata is ASCII)
    for unit, want in (("micron", 0.25), ("\\u00B5m", 0.25), ("um", 0.25),
                       ("mm", None), ("pixel", None)):
        p = tmp_path / "ij.tif"
        tifffile.imwrite(p, img, imagej=True, resolution=(4.0, 4.0),
                         metadata={"axes": "ZYX", "unit": unit, "spacing": 0.5})
        if want is None:  # not micrometres: asks for the pixel size
            with pytest.raises(MicroscopeUnavailable, match="pixel_size_um=P"):
                SlideMicroscope(p, realtime=False)
            continue
        s = SlideMicroscope(p, realtime=False)
        assert s.pixel_size_um == pytest.approx(want)
        assert s.z_step_um == pytest.approx(0.5)


@pytest.mark.parametrize("case", ["pickled", "scale", "boxes", "shape", "labels_npz"])
def test_a_bad_npz_gets_one_line_naming_the_file(tmp_path, case):
    p = tmp_path / f"{case}.npz"
    img = np.zeros((40, 50), np.uint16)
    labels = None
    if case == "pickled":
        np.savez(p, image=np.array([{"a": 1}], dtype=object))
    elif case == "scale":
        np.savez(p, image=img, pixel_size_um=np.array([0.5, 0.5]))
    elif case == "boxes":
        np.savez(p, image=img, boxes=np.arange(5.0))
    elif case == "shape":
        np.savez(p, image=np.zeros((1, 50)))
    else:
        np.savez(p, image=img)
        labels = tmp_path / "lab.npz"
        np.savez(labels, labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MicroscopeUnavailable) as e:
        SlideMicroscope(p, pixel_size_um=0.5, labels=labels, realtime=False)
    msg = str(e.value)
    assert (labels or p).name in msg and "\n" not in msg


def test_replay_refuses_a_plain_few_frame_recording_stored_as_rgba(tmp_path):
    """The replay backend reads TIFFs the same way: a 3-frame uint16 recording saved
    plainly is one RGB image to tifffile; refused with the fix, not one grey frame."""
    from inscope.acquisition.replay import ReplayMicroscope

    frames = np.random.default_rng(0).integers(0, 100, (3, 40, 50)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rec.tif", frames)
    with pytest.raises(MicroscopeUnavailable, match="may be time points.*'TYX'"):
        ReplayMicroscope(tmp_path / "rec.tif")
    tifffile.imwrite(tmp_path / "rec_axes.tif", frames, metadata={"axes": "TYX"})
    r = ReplayMicroscope(tmp_path / "rec_axes.tif")
    assert len(r._stack) == 3
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    ReplayMicroscope(tmp_path / "rgb.tif")  # an 8-bit colour picture is still read


def test_truth_at_the_field_edges_is_clipped_with_its_visible_fraction(tmp_path):
    """Objects cut by the field's edge are truth with their box clipped to the frame
    (pixel edges at -0.5 and N - 0.5) and the fraction in view; objects beyond any edge
    are not."""
    img = np.zeros((200, 200), np.uint16)
    lab = np.zeros((200, 200), np.int32)
    c = 100  # the field's centre pixel; the frame spans image pixels 84 .. 115
    lab[c - 5:c + 5, c - 16 - 5:c - 16 + 5] = 1  # half beyond the left edge
    lab[c - 16 - 5:c - 16 + 5, c - 5:c + 5] = 2  # half beyond the top
    lab[c - 5:c + 5, c + 16 - 5:c + 16 + 5] = 3  # half beyond the right
    lab[c + 16 - 5:c + 16 + 5, c - 5:c + 5] = 4  # half beyond the bottom
    # just beyond each edge: their box edge touches the frame's (-0.5 or N - 0.5)
    lab[c + 8:c + 14, 74:84] = 5  # left (last column 83, the frame's first is 84)
    lab[74:84, c + 8:c + 14] = 6  # top
    lab[c + 8:c + 14, 116:126] = 7  # right (the frame's last column is 115)
    lab[116:126, c + 8:c + 14] = 8  # bottom
    p = tmp_path / "edges.npz"
    np.savez(p, image=img, labels=lab)
    s = SlideMicroscope(p, pixel_size_um=1.0, fov=N, noise=0, realtime=False)
    s.move_xy(c, c)  # frame pixel (16, 16) shows image pixel (100, 100)
    f = s.snap()
    assert f.metadata["truth_ids"] == [1, 2, 3, 4]
    h = N / 2
    np.testing.assert_allclose(f.truth, [[-0.5, h - 5.5, 4.5, h + 4.5],
                                         [h - 5.5, -0.5, h + 4.5, 4.5],
                                         [N - 5.5, h - 5.5, N - 0.5, h + 4.5],
                                         [h - 5.5, N - 5.5, h + 4.5, N - 0.5]])
    assert f.metadata["truth_visible_fraction"] == pytest.approx([0.5] * 4)


def test_2d_labels_on_a_stack_are_truth_in_every_plane_at_the_middle_z(tmp_path):
    p, _ = _texture(tmp_path, nz=5, shape=(60, 80))
    lab = np.zeros((60, 80), np.int32)
    lab[25:35, 35:45] = 3
    np.savez(tmp_path / "l2.npz", labels=lab)
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.5, fov=N, noise=0,
                        labels=tmp_path / "l2.npz", realtime=False)
    t = s.true_cells()
    np.testing.assert_allclose(t.xyz_um, [[39.5 * 0.5, 29.5 * 0.5, 2 * 0.5]])
    assert np.isnan(t.z_range_um).all()
    s.move_xy(*t.xyz_um[0, :2])
    for z in (0.0, 1.0, 2.0):
        s.move_z(z)
        assert s.snap().metadata["truth_ids"] == [3]


@pytest.mark.parametrize("case,words", [
    ("float_labels", "labels are not integers"),
    ("labels_planes", "does not match"),
    ("bad_boxes", "boxes must be (N, 4)"),
    ("nan", "NaN or infinite"),
    ("text_image", "is not numeric"),
])
def test_bad_labels_boxes_and_pixels_get_one_line(tmp_path, case, words):
    p = tmp_path / f"{case}.npz"
    img = np.zeros((3, 40, 50), np.float32)
    if case == "float_labels":
        np.savez(p, image=img, labels=np.full((40, 50), 1.5))
    elif case == "labels_planes":
        np.savez(p, image=img, labels=np.ones((2, 40, 50), int))
    elif case == "bad_boxes":
        np.savez(p, image=img, boxes=np.array([[10, 10, 20, 30], [5, 5, 5, 9]]))
    elif case == "nan":
        img[1, 2, 3] = np.nan
        np.savez(p, image=img)
    else:
        np.savez(p, image=np.full((40, 50), "a"))
    with pytest.raises(MicroscopeUnavailable) as e:
        SlideMicroscope(p, pixel_size_um=0.5, realtime=False)
    assert words in str(e.value) and p.name in str(e.value)


def test_whole_number_float_labels_and_2d_labels_on_a_stack_are_taken(tmp_path):
    img = np.zeros((3, 40, 50), np.uint16)
    lab = np.zeros((40, 50))
    lab[10:20, 10:20] = 2.0  # float, but whole numbers: instance ids
    np.savez(tmp_path / "ok.npz", image=img, labels=lab)
    s = SlideMicroscope(tmp_path / "ok.npz", pixel_size_um=0.5, realtime=False)
    assert s.true_cells().ids.tolist() == [2]


_NDTIFF_WRITER = """
import json, sys
import numpy as np
from ndstorage import NDTiffDataset
folder, name, summary, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
z = np.load(spec)
nd = NDTiffDataset(dataset_path=folder, name=name, writable=True, summary_metadata=summary)
for k, coords in enumerate(json.loads(str(z["coords"]))):
    nd.put_image(coords, z["images"][k], json.loads(str(z["meta"]))[k])
nd.finish()
nd.close()
"""


def _write_ndtiff(folder, name: str, summary: dict, coords: list[dict],
                  images: list[np.ndarray], meta: list[dict] | None = None):
    """An NDTiff dataset written by ndstorage (pycro-manager's writer), in a child
    process: its writer threads must not live on in the test process (mutation testing
    forks it, and a fork taken while another thread holds a lock can hang)."""
    import json
    import subprocess
    import sys

    spec = folder / f"{name}.spec.npz"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(spec, images=np.stack(images), coords=json.dumps(coords),
             meta=json.dumps(meta or [{} for _ in coords]))
    subprocess.run([sys.executable, "-c", _NDTIFF_WRITER, str(folder), name,
                    json.dumps(summary), str(spec)], check=True, capture_output=True,
                   timeout=120)
    return next(folder.glob(f"{name}_*"))


def test_ndtiff_channels_and_a_top_down_stack(tmp_path):
    """NDTiff folders as ndstorage (pycro-manager's writer) writes them: the channel asked
    for; the z step from the summary, or else from the images' own z (pycro-manager
    records ZPosition_um_Intended per image and no step), a stack acquired top down
    turned to rising z; a channel that is not there gets one line."""
    coords = [{"channel": name, "z": z} for name in ("DAPI", "FITC") for z in range(3)]
    images = [np.full((40, 50), 100 * c + z, np.uint16) for c in range(2) for z in range(3)]
    two = _write_ndtiff(tmp_path / "syn", "two", {"PixelSize_um": 0.25, "z-step_um": 0.3},
                        coords, images)
    import threading

    before = set(threading.enumerate())
    for channel in (0, 1):
        s = SlideMicroscope(two, channel=channel, fov=32, noise=0, realtime=False)
        assert s._stack[:, 0, 0].tolist() == [100 * channel + z for z in range(3)]
        # read in this thread: no reader pool left behind for a later fork to inherit
        assert set(threading.enumerate()) <= before
        assert (s.pixel_size_um, s.z_step_um) == pytest.approx((0.25, 0.3))
    with pytest.raises(MicroscopeUnavailable, match=r"2 channels, channel=2 .*0\.\.1"):
        SlideMicroscope(two, channel=2, realtime=False)
    # no step in the summary, planes acquired top down: the step from the images' own
    # z, the planes in rising z
    down = _write_ndtiff(tmp_path / "syn", "down", {"PixelSize_um": 0.25},
                         [{"z": z} for z in range(3)],
                         [np.full((40, 50), z, np.uint16) for z in range(3)],
                         [{"ZPosition_um_Intended": 0.9 - 0.3 * z} for z in range(3)])
    s = SlideMicroscope(down, fov=32, realtime=False)
    assert s._stack[:, 0, 0].tolist() == [2, 1, 0]
    assert s.z_step_um == pytest.approx(0.3)


@pytest.mark.parametrize("opts,ok", [
    ({"fov": 16}, True), ({"fov": 8192}, True), ({"fov": 15}, False), ({"fov": 8193}, False),
    ({"noise": "shot:300"}, True), ({"noise": "gauss:0.02"}, True), ({"noise": "off"}, True),
    ({"noise": "shot:0"}, False), ({"noise": -0.1}, False), ({"noise": "poisson:3"}, False),
    ({"noise": "nan"}, False),
    ({"defocus": 0}, True), ({"defocus": 100}, True), ({"defocus": -0.1}, False),
    ({"defocus": 101}, False), ({"exposure_ms": 0.01}, True), ({"exposure_ms": 0.0}, False),
    ({"xy_settle_ms": 0}, True), ({"xy_settle_ms": -1}, False),
    ({"z_settle_ms": 0}, True), ({"z_settle_ms": -1}, False),
    ({"tilt": "(0.01, -0.02)"}, True), ({"tilt": "0.01,0"}, True), ({"tilt": [0.01]}, False),
    ({"tilt": "steep"}, False), ({"realtime": "false"}, True), ({"realtime": "no"}, True),
    ({"realtime": "flase"}, False), ({"seed": 7}, True), ({"seed": -1}, False),
    ({"channel": -1}, False), ({"z_step_um": 0.0}, False), ({"z_step_um": "x"}, False),
    ({"pixel_size_um": 1e7}, False), ({"sectioning": "confocal"}, True),
    ({"sectioning": "deep"}, False),
])
def test_each_option_is_checked_with_one_line_naming_it(tmp_path, opts, ok):
    p, _ = _texture(tmp_path)
    base = {"pixel_size_um": 0.5, "realtime": False, **opts}
    if ok:
        s = SlideMicroscope(p, **base)
        name, v = next(iter(opts.items()))
        if name == "tilt":
            assert s.tilt == pytest.approx((0.01, -0.02) if "(" in v else (0.01, 0.0))
        if name == "realtime":
            assert s.realtime is False
        if name == "noise":
            assert s.noise == {"shot:300": ("shot", 300.0), "gauss:0.02": ("gauss", 0.02),
                               "off": ("gauss", 0.0)}[v]
        return
    with pytest.raises(MicroscopeUnavailable) as e:
        SlideMicroscope(p, **base)
    name = next(iter(opts))
    assert f"{name}=" in str(e.value) and "\n" not in str(e.value)


def test_stream_gives_frames_in_order_on_the_simulated_clock(tmp_path):
    p, img = _texture(tmp_path, nz=2)
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.4, fov=N, noise=0,
                        exposure_ms=5.0, realtime=False)
    f0 = _at_pixel(s, 10, 12, z=0.0)
    with s.stream() as st:
        got = list(itertools.islice(st, 4))
    # (not realtime: the camera runs ahead and the stream keeps the newest frames)
    idx = np.array([f.index for f in got])
    assert idx[0] > f0.index and np.all(np.diff(idx) > 0)
    times = np.array([f.metadata["sim_time_s"] for f in got])
    np.testing.assert_allclose(np.diff(times), 0.005 * np.diff(idx))
    np.testing.assert_allclose(got[-1].pixels, _window(img[0], 10, 12), atol=1e-3)


def test_true_focus_z_is_the_middle_plane_on_the_tilted_focal_plane(tmp_path):
    p, _ = _texture(tmp_path, nz=5, shape=(60, 80))
    s = SlideMicroscope(p, pixel_size_um=0.5, z_step_um=0.4, fov=N, noise=0,
                        tilt=(0.01, -0.02), realtime=False)
    x0, y0 = s.position().x, s.position().y
    assert s.true_focus_z() == pytest.approx(0.8)
    assert s.true_focus_z(x0 + 10.0, y0 + 5.0) == pytest.approx(0.8 + 0.1 - 0.1)
    assert s.true_focus_z(x0 + 10.0, y0) == pytest.approx(0.9)
    s.move_xy(x0, y0 + 5.0)
    assert s.true_focus_z() == pytest.approx(0.7)  # at the stage's own position


def test_ndtiff_z_step_from_uneven_or_missing_plane_positions(tmp_path, caplog):
    """Unevenly spaced planes: their median step, and a warning saying so; planes with
    no z of their own and no step in the summary: the documented default (1 um)."""
    uneven = _write_ndtiff(tmp_path / "syn", "uneven", {"PixelSize_um": 0.25},
                           [{"z": z} for z in range(4)],
                           [np.full((40, 50), z, np.uint16) for z in range(4)],
                           [{"ZPosition_um_Intended": v} for v in (0.0, 0.3, 0.7, 1.0)])
    with caplog.at_level("WARNING", logger="inscope.acquisition.slide"):
        s = SlideMicroscope(uneven, fov=32, realtime=False)
    assert s.z_step_um == pytest.approx(0.3)
    assert s._stack[:, 0, 0].tolist() == [0, 1, 2, 3]
    assert "not evenly spaced" in caplog.text and "0.7" in caplog.text
    bare = _write_ndtiff(tmp_path / "syn", "bare", {"PixelSize_um": 0.25},
                         [{"z": z} for z in range(3)],
                         [np.full((40, 50), z, np.uint16) for z in range(3)])
    s = SlideMicroscope(bare, fov=32, realtime=False)
    assert s.z_step_um == 1.0 and s._stack[:, 0, 0].tolist() == [0, 1, 2]


def test_extrude_to_stack_touching_nuclei_spread_haze_and_types():
    """Two nuclei that touch: each one's sections shrink towards its own centre (the
    shared border counts as an edge); centres spread by the seeded +/- z_spread; haze
    falls off with the distance from the nucleus in z (Gaussian, 2 half-thicknesses) and
    spreads haze_sigma_um around it; values are clipped to the type, float stays float."""
    lab = np.zeros((60, 90), np.int32)
    yy, xx = np.mgrid[0:60, 0:90]
    lab[(xx - 30) ** 2 + (yy - 30) ** 2 <= 12 ** 2] = 1
    lab[((xx - 54) ** 2 + (yy - 30) ** 2 <= 12 ** 2) & (lab == 0)] = 2  # touching 1
    assert np.any((lab[:, :-1] == 1) & (lab[:, 1:] == 2))
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)
    stack, labs = extrude_to_stack(img, lab, pixel_size_um=0.5, z_step_um=0.25, planes=81,
                                   z_spread_um=0.0, haze=0.0)
    for i in (1, 2):
        cy, cx = np.argwhere(lab == i).mean(axis=0)
        planes = np.flatnonzero((labs == i).any(axis=(1, 2)))
        near_pole = planes[-1] - 2  # a small section near the top
        sec = np.argwhere(labs[near_pole] == i)
        assert len(sec) < (lab == i).sum() / 3
        np.testing.assert_allclose(sec.mean(axis=0), [cy, cx], atol=1.0)
    # seeded z centres within +/- z_spread of the middle plane
    _, a = extrude_to_stack(img, lab, pixel_size_um=0.5, z_step_um=0.25, planes=81,
                            z_spread_um=2.0, seed=3)
    _, b = extrude_to_stack(img, lab, pixel_size_um=0.5, z_step_um=0.25, planes=81,
                            z_spread_um=2.0, seed=3)
    _, c = extrude_to_stack(img, lab, pixel_size_um=0.5, z_step_um=0.25, planes=81,
                            z_spread_um=2.0, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    mids = []
    for labs_ in (a, c):
        for i in (1, 2):
            planes = np.flatnonzero((labs_ == i).any(axis=(1, 2)))
            mids.append((planes[0] + planes[-1]) / 2 * 0.25 - 40 * 0.25)
    assert all(abs(m) <= 2.0 + 0.25 for m in mids) and max(mids) - min(mids) > 0.2
    # haze: a Gaussian in z of 2 half-thicknesses, blurred by haze_sigma_um in x, y
    hazy, hl = extrude_to_stack(img, lab, pixel_size_um=0.5, z_step_um=0.25, planes=81,
                                z_spread_um=0.0, haze=0.5, haze_sigma_um=2.0)
    half = 0.35 * 2 * np.sqrt((lab == 1).sum() / np.pi) * 0.5  # um
    ring = (lab == 0) & (np.hypot(xx - 30, yy - 30) <= 14) & (xx < 40)  # beside nucleus 1
    far = (np.hypot(xx - 30, yy - 30) >= 12 + 6 * 4) & (xx < 8)  # > 6 sigma away
    bg = 100.0
    def haze_at(dz_um):
        k = int(round(40 + dz_um / 0.25))
        return float(hazy[k][ring].mean()) - bg
    r = haze_at(half) / haze_at(2 * half)  # u = 1 and u = 2 above the centre
    assert r == pytest.approx(np.exp(-0.5 * 0.25) / np.exp(-0.5 * 1.0), rel=0.05)
    assert np.all(hazy[40][far] == bg)  # haze_sigma 2 um = 4 px: nothing 6 sigma out
    d = np.hypot(xx - 30, yy - 30)
    out = (d >= 12 + 6) & (d <= 12 + 8) & (xx < 24)  # 1.5-2 sigma out: still lit
    assert hazy[40][out].mean() > bg + 5
    # clipped to the type; float stays float
    bright = np.where(lab > 0, 65000, 100).astype(np.uint16)
    st, _ = extrude_to_stack(bright, lab, pixel_size_um=0.5, planes=21, haze=0.5)
    assert st.dtype == np.uint16 and st.max() == 65535 and st.min() >= 100
    fl, _ = extrude_to_stack(bright.astype(np.float32) * 10, lab, pixel_size_um=0.5,
                             planes=21, haze=0.5)
    assert fl.dtype == np.float32 and fl.max() > 65535
