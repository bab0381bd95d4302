"""Pre-processing, peak decoding and tiling geometry, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.detector import preprocess as pp
from inscope.detector.decode import decode_centernet, find_peaks
from inscope.detector.tiling import keep_owned, tile_grid


def test_percentile_normalisation_maps_the_range_to_0_1():
    rng = np.random.default_rng(0)
    img = rng.integers(1000, 5000, (512, 512)).astype(np.uint16)
    x = pp.normalise(img, {"low": 1, "high": 99})
    lo, hi = np.percentile(img, [1, 99])  # full-frame reference
    # the strided estimate is close to the full-frame one
    assert abs(np.percentile(x, 1)) < 0.01 and abs(np.percentile(x, 99) - 1) < 0.01
    assert x.dtype == np.float32 and x.shape == img.shape
    ref = (img.astype(np.float64) - lo) / (hi - lo)
    assert np.abs(x - ref).max() < 0.01
    clipped = pp.normalise(img, {"clip": True})
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert np.allclose(pp.normalise(img, {"method": "scale", "divisor": 5000}), img / 5000)
    with pytest.raises(ValueError, match="Unknown normalisation"):
        pp.normalise(img, {"method": "zscore"})


def test_normalise_into_a_padded_buffer_and_flat_images():
    img = np.arange(60, dtype=np.uint16).reshape(6, 10)
    buf = np.full((8, 16), -7, np.float32)
    pp.normalise(img, out=buf[:6, :10])
    # equal up to the last float32 bit (OpenCV's vector and scalar loops round apart)
    np.testing.assert_allclose(buf[:6, :10], pp.normalise(img), rtol=1e-6, atol=1e-7)
    assert np.all(buf[6:] == -7) and np.all(buf[:, 10:] == -7)
    flat = pp.normalise(np.full((8, 8), 300, np.uint16))
    assert np.all(np.isfinite(flat))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32,
                                   np.float32, np.float64, np.float16])
def test_normalise_is_the_same_affine_map_for_every_pixel_type(dtype):
    """The one-pass (OpenCV) and numpy paths give (x - lo) / (hi - lo) in float32, for
    every pixel type a camera or a file delivers, also into a padded buffer's corner."""
    rng = np.random.default_rng(1)
    img = rng.integers(3, 250, (37, 53)).astype(dtype)
    spec = {"low": 1, "high": 99, "subsample": 1}
    lo, hi = pp.percentile_range(img, 1, 99, 1)
    ref = (img.astype(np.float64) - lo) / (hi - lo)
    buf = np.full((1, 1, 64, 64), -7, np.float32)
    x = pp.normalise(img, spec, out=buf[0, 0, :37, :53])
    assert x.dtype == np.float32
    assert np.abs(buf[0, 0, :37, :53] - ref).max() < 1e-5
    assert np.all(buf[0, 0, 37:] == -7) and np.all(buf[0, 0, :, 53:] == -7)
    scaled = pp.normalise(img, {"method": "scale", "divisor": 200})
    assert np.abs(scaled - img.astype(np.float64) / 200).max() < 1e-5


def test_subsample_bounds_the_work_for_big_frames():
    big = np.zeros((4096, 4096), np.uint8)
    assert pp.subsample(big, 4).size <= 65536
    assert pp.subsample(np.zeros((64, 64)), 4).shape == (16, 16)


def test_pad_resize_and_scale_factor():
    img = np.ones((50, 70), np.float32)
    p = pp.pad_to_multiple(img, 32)
    assert p.shape == (64, 96) and p[:50, :70].all() and not p[50:].any()
    assert pp.pad_to_multiple(p, 32) is p
    assert pp.resize(img, 0.5).shape == (25, 35)
    assert pp.resize(img, 1.0) is img
    assert pp.scale_factor(None, [10, 40]) == 1.0
    assert pp.scale_factor(40, [10, 40]) == pytest.approx(0.5)
    assert pp.scale_factor(10, 20) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        pp.scale_factor(-3, [10, 40])


def test_int_and_half_dtypes_are_cast():
    assert pp.as_image(np.zeros((4, 4), np.int32)).dtype == np.float32
    assert pp.as_image(np.zeros((4, 4), np.float16)).dtype == np.float32
    assert pp.as_image(np.zeros((4, 4), bool)).dtype == np.float32
    u16 = np.zeros((4, 4), np.uint16)
    assert pp.as_image(u16) is u16


def test_peaks_plateaus_threshold_and_limit():
    h = np.zeros((2, 10, 12), np.float32)
    h[0, 2:4, 3:5] = 0.9  # 2x2 plateau: one peak, its first cell
    h[0, 7, 8], h[0, 7, 9] = 0.8, 0.5  # 0.5 is a shoulder, not a peak
    h[0, 0, 0] = 0.7  # corner
    h[0, 5, 0:5] = 0.6  # flat ridge
    h[1, 9, 11] = 0.2  # below threshold
    c, y, x, s = find_peaks(h, 0.3)
    assert list(zip(y.tolist(), x.tolist(), strict=True)) == [(2, 3), (7, 8), (0, 0), (5, 0)]
    assert np.allclose(s, [0.9, 0.8, 0.7, 0.6]) and c.tolist() == [0, 0, 0, 0]
    c, y, x, s = find_peaks(h, 0.1, max_detections=2)
    assert len(s) == 2 and s[0] == pytest.approx(0.9)
    c, *_ = find_peaks(h, 0.1)
    assert 1 in c.tolist()


def test_decode_centernet_geometry():
    h = np.zeros((1, 8, 8), np.float32)
    h[0, 3, 5] = 0.9
    size = np.zeros((2, 8, 8), np.float32)
    size[:, 3, 5] = (12, 6)
    b, s, c = decode_centernet({"heatmap": h, "size": size}, {"stride": 4})
    # the centre of the cell's pixels 20-23, 12-15: ((5 + 0.5) * 4 - 0.5, ...) = (21.5, 13.5)
    assert np.allclose(b, [[15.5, 10.5, 27.5, 16.5]]) and s[0] == pytest.approx(0.9)
    off = np.zeros((2, 8, 8), np.float32)
    off[:, 3, 5] = (0.25, 0.75)
    b, _, _ = decode_centernet({"hm": h, "wh": size, "off": off},
                               {"stride": 4, "heatmap": "hm", "size": "wh", "offset": "off"})
    assert np.allclose(b, [[15, 12, 27, 18]])
    b, s, c = decode_centernet({"heatmap": h, "size": size}, {"stride": 4}, 0.95)
    assert b.shape == (0, 4) and len(s) == len(c) == 0


def test_tile_grid_covers_and_owns_every_pixel_once():
    tiles = tile_grid(300, 500, 128, 40)
    cover = np.zeros((300, 500), int)
    ys, xs = np.mgrid[0:300, 0:500]
    pts = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    owners = np.zeros(len(pts), int)
    for t in tiles:
        assert t.y1 - t.y0 <= 128 and t.x1 - t.x0 <= 128
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        boxes = np.concatenate([pts - 0.1, pts + 0.1], 1)
        owners += keep_owned(t, boxes)
        # what a tile owns lies at least overlap/2 inside it (or at the frame border)
        if t.x0 > 0:
            assert t.own_x0 - t.x0 >= 20
        if t.x1 < 500:
            assert t.x1 - t.own_x1 >= 20
    assert cover.min() >= 1 and np.all(owners == 1)
    assert len(tile_grid(100, 100, 128, 40)) == 1
    with pytest.raises(ValueError, match="overlap < tile"):
        tile_grid(300, 300, 64, 64)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 9), (300, 517), (1100, 700)])
def test_fast_percentiles_equal_numpys_on_the_subsample(dtype, shape):
    rng = np.random.default_rng(7)
    top = 250 if dtype == np.uint8 else 60000
    img = (rng.gamma(2.0, 0.1, shape) * top).clip(0, top).astype(dtype)
    got = pp.percentile_range(img, 1.0, 99.8, 4)
    want = np.percentile(pp.subsample(img, 4), [1.0, 99.8])
    assert np.allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("length", [300, 333, 1000, 2048])
def test_aligned_tiles_start_on_the_grid_and_keep_the_overlap(length):
    tiles = tile_grid(length, length, 128, 32, align=32)
    xs = sorted({(t.x0, t.x1) for t in tiles})
    assert all(x0 % 32 == 0 for x0, _ in xs)
    assert xs[-1][1] == length  # reaches the border
    for (_a0, a1), (b0, _) in zip(xs[:-1], xs[1:], strict=True):
        assert a1 - b0 >= 32  # overlap kept despite rounding


def test_logit_heatmaps_decode_like_sigmoided_ones():
    rng = np.random.default_rng(3)
    logits = rng.normal(-4, 2, (1, 32, 32)).astype(np.float32)
    size = np.full((2, 32, 32), 10, np.float32)
    prob = 1 / (1 + np.exp(-logits))
    b1, s1, _ = decode_centernet({"heatmap": prob, "size": size}, {"score_threshold": 0.2})
    b2, s2, _ = decode_centernet({"heatmap": logits, "size": size},
                                 {"score_threshold": 0.2, "activation": "sigmoid"})
    assert len(b1) > 0 and np.array_equal(b1, b2) and np.allclose(s1, s2, atol=1e-6)
    with pytest.raises(ValueError, match="activation"):
        decode_centernet({"heatmap": prob, "size": size}, {"activation": "relu"})


@pytest.mark.parametrize("factor", [0.5, 0.6, 1.6, 2.0, 3.0])
def test_unscale_boxes_puts_a_box_back_on_its_spot(factor):
    """A box centred on a spot in the resized frame maps back onto the spot (pixel
    centres at integers; dividing by the factor alone misses by (1/f - 1)/2 px)."""
    yy, xx = np.indices((60, 70), dtype=np.float64)
    x, y = 31.0, 24.0
    img = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0 ** 2)).astype(np.float32)
    small = pp.resize(img, factor)
    wy, wx = np.indices(small.shape)
    cx, cy = (small * wx).sum() / small.sum(), (small * wy).sum() / small.sum()
    boxes = np.array([[cx - 5, cy - 5, cx + 5, cy + 5]], np.float32)
    pp.unscale_boxes(boxes, factor, img.shape)
    np.testing.assert_allclose([(boxes[0, 0] + boxes[0, 2]) / 2,
                                (boxes[0, 1] + boxes[0, 3]) / 2], [x, y], atol=0.03)
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 10 / (round(70 * factor) / 70),
                               rtol=1e-5)
    same = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    pp.unscale_boxes(same, 1.0, img.shape)
    assert same.tolist() == [[1.0, 2.0, 3.0, 4.0]]
