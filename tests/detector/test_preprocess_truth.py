"""Exact, hand-computed truths for :mod:`inscope.detector.preprocess`.

Every frame goes through ``as_image`` and ``normalise`` before the detector sees it, so a
silent change here (a NaN left in, a percentile one sample off, a pad on the wrong side)
shifts every box the service reports. The expected numbers below are worked out by hand
from small arrays, not re-computed with the code under test.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from inscope.acquisition.frame import Frame
from inscope.detector import preprocess as pp
from inscope.detector.signal import noise_sigma

# ---------------------------------------------------------------------------------------
# as_image
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_supported_dtypes_pass_through_without_a_copy(dtype):
    """Camera dtypes (finite) come back as the very same array.

    A copy per frame would cost a full-frame pass; a finite float image must not be
    rewritten by the NaN repair either.
    """
    img = np.arange(12).reshape(3, 4).astype(dtype)
    assert pp.as_image(img) is img


def test_a_frame_is_unwrapped_to_its_pixels():
    """A :class:`Frame` hands over its own pixel array (no copy, no refusal)."""
    pixels = np.arange(6, dtype=np.uint16).reshape(2, 3)
    frame = Frame(pixels=pixels, index=0)
    assert pp.as_image(frame) is pixels


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32,
                                   np.uint64, np.float16])
def test_other_numeric_dtypes_are_cast_to_float32_with_the_same_values(dtype):
    """int/uint/float16 pixels are accepted as float32 holding the same numbers.

    The detector path only handles uint8/uint16/float32/float64; a signed camera or a
    half-precision file must not be refused nor change value.
    """
    vals = np.array([[0, 1, 2], [100, 127, 3]])
    out = pp.as_image(vals.astype(dtype))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vals.astype(np.float32))


def test_bool_masks_are_cast_to_0_and_1():
    """A boolean mask becomes a float32 image of 0.0 and 1.0."""
    out = pp.as_image(np.array([[True, False], [False, True]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 1.0]])


def test_non_arrays_are_refused_with_the_type_and_the_fix():
    """A list is refused, naming what was given and how to wrap it."""
    with pytest.raises(ValueError, match="got list") as err:
        pp.as_image([[1, 2], [3, 4]])
    assert "numpy.asarray" in str(err.value)


@pytest.mark.parametrize("shape", [(8, 8, 3), (8, 8, 4), (5, 6, 3)])
def test_colour_images_are_refused_with_the_channel_hint(shape):
    """(H, W, 3|4) is colour: the message tells how to pick or mix channels.

    Mixing channels silently would feed a one-channel model the wrong picture.
    """
    with pytest.raises(ValueError) as err:
        pp.as_image(np.zeros(shape, np.uint8))
    msg = str(err.value)
    assert "2-D grayscale" in msg and f"got shape {shape}" in msg
    assert "pick one channel (img[..., 1])" in msg and "img.mean(axis=2)" in msg
    assert "stack[i]" not in msg


@pytest.mark.parametrize("shape", [(3, 8, 8), (4, 8, 8), (8, 3, 5), (2, 8, 8, 3), (3,),
                                   (5, 4, 2)])
def test_stacks_and_other_shapes_are_refused_with_the_one_image_hint(shape):
    """Stacks (T, H, W), 4-D and 1-D arrays get the "one 2-D image at a time" hint.

    Only a 3-D array whose *last* axis is 3 or 4 is colour; (3, H, W) is a stack.
    """
    with pytest.raises(ValueError) as err:
        pp.as_image(np.zeros(shape, np.uint16))
    msg = str(err.value)
    assert f"got shape {shape}" in msg
    assert "pass one 2-D image (H, W) at a time" in msg and "stack[i]" in msg
    assert "pick one channel" not in msg


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (1, 1), (0, 4), (4, 0), (0, 0)])
def test_empty_or_single_line_images_are_refused(shape):
    """Anything below 2x2 pixels is degenerate: refused, with the minimum size."""
    with pytest.raises(ValueError, match="empty or degenerate") as err:
        pp.as_image(np.zeros(shape, np.float32))
    assert "at least 2x2" in str(err.value) and str(shape) in str(err.value)


@pytest.mark.parametrize("shape", [(2, 2), (2, 7), (7, 2), (3, 3)])
def test_the_smallest_images_are_accepted(shape):
    """2x2 is the documented minimum, so 2 pixels on a side must pass."""
    img = np.ones(shape, np.uint8)
    assert pp.as_image(img) is img


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.longdouble, object,
                                   "U3"])
def test_unsupported_dtypes_are_refused_with_the_cast_hint(dtype):
    """Complex, long double, object and string pixels are refused, naming the dtype."""
    if np.dtype(dtype) == np.float64:  # platforms where long double is double
        pytest.skip("long double is float64 here")
    img = np.zeros((3, 3), dtype)
    with pytest.raises(ValueError, match="Unsupported pixel dtype") as err:
        pp.as_image(img)
    msg = str(err.value)
    assert str(np.dtype(dtype)) in msg and "img.astype(numpy.float32)" in msg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_are_replaced_by_the_median_of_the_finite_pixels(dtype):
    """Bad pixels (NaN, +inf, -inf) take the median of the good ones, dtype kept.

    Finite pixels 1, 3, 10 have median 3; the input array is left untouched.
    """
    img = np.array([[1.0, np.nan], [np.inf, 3.0], [-np.inf, 10.0]], dtype)
    before = img.copy()
    out = pp.as_image(img)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([[1, 3], [3, 3], [3, 10]], dtype))
    np.testing.assert_array_equal(img, before)  # not repaired in place


def test_nan_repair_uses_the_median_not_the_mean_for_an_even_count():
    """Finite 0, 1, 2, 100: median 1.5 (mean would be 25.75)."""
    img = np.array([[0.0, 1.0, np.nan], [2.0, 100.0, np.nan]], np.float32)
    out = pp.as_image(img)
    np.testing.assert_array_equal(out, [[0, 1, 1.5], [2, 100, 1.5]])
    assert np.isfinite(out).all()


def test_float16_with_nan_is_cast_then_repaired():
    """float16 is cast to float32 first, then its NaN gets the median (here 4)."""
    img = np.array([[2.0, np.nan], [4.0, 8.0]], np.float16)
    out = pp.as_image(img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2, 4], [4, 8]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_an_image_with_no_finite_pixel_is_refused(bad):
    """All NaN/inf: nothing to take a median of, so refuse with where to look."""
    with pytest.raises(ValueError, match="no finite pixel") as err:
        pp.as_image(np.full((3, 3), bad, np.float32))
    assert "check the camera" in str(err.value)


# ---------------------------------------------------------------------------------------
# subsample
# ---------------------------------------------------------------------------------------


def test_subsample_keeps_the_requested_stride_on_small_frames():
    """Small frames use exactly the given stride (1 = every pixel; 0 counts as 1)."""
    img = np.arange(64).reshape(8, 8)
    np.testing.assert_array_equal(pp.subsample(img, 1), img)
    np.testing.assert_array_equal(pp.subsample(img, 0), img)
    np.testing.assert_array_equal(pp.subsample(img, 3), img[::3, ::3])
    np.testing.assert_array_equal(pp.subsample(img, 2.7), img[::2, ::2])  # int(2.7)


def test_subsample_allows_exactly_max_samples():
    """256 x 256 = 65536 samples is within the default budget: stride stays 1."""
    assert pp.subsample(np.zeros((256, 256), np.uint8), 1).shape == (256, 256)


def test_subsample_grows_the_stride_past_max_samples():
    """1 x 65537 is one sample over the budget: stride 2 gives 1 x 32769."""
    assert pp.subsample(np.zeros((1, 65537), np.uint8), 1).shape == (1, 32769)


def test_subsample_stride_grows_one_by_one():
    """1024 x 1024 at stride 1: 2 and 3 are still too many, 4 gives 256 x 256."""
    img = np.arange(1024 * 1024, dtype=np.uint32).reshape(1024, 1024)
    sub = pp.subsample(img, 1)
    assert sub.shape == (256, 256)
    np.testing.assert_array_equal(sub, img[::4, ::4])


@pytest.mark.parametrize(("shape", "want"), [((513, 512), (257, 256)),
                                             ((512, 513), (256, 257))])
def test_subsample_counts_whole_strides(shape, want):
    """The budget counts (h // s) * (w // s): 513 x 512 at stride 2 is 256 * 256, in."""
    assert pp.subsample(np.zeros(shape, np.uint8), 2).shape == want


# ---------------------------------------------------------------------------------------
# percentile_range
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_percentile_range_interpolates_linearly_between_ranks(dtype):
    """Values 0..99 at stride 1: position p/100 * 99, so 1 % -> 0.99, 99.8 % -> 98.802."""
    img = np.arange(100).reshape(10, 10).astype(dtype)
    lo, hi = pp.percentile_range(img, 1.0, 99.8, 1)
    assert lo == pytest.approx(0.99, abs=1e-12)
    assert hi == pytest.approx(98.802, abs=1e-12)
    assert pp.percentile_range(img, 0, 100, 1) == (0.0, 99.0)
    assert pp.percentile_range(img, 50, 50, 1) == (49.5, 49.5)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_percentile_range_with_repeated_values(dtype):
    """Sorted 5, 5, 5, 1000: 50 % (position 1.5) is 5, 90 % (2.7) is 5 + 0.7 * 995."""
    img = np.array([[5, 5], [5, 1000]], dtype)
    lo, hi = pp.percentile_range(img, 50, 90, 1)
    assert lo == 5.0
    assert hi == pytest.approx(701.5, abs=1e-9)
    assert pp.percentile_range(img, 0, 100, 1) == (5.0, 1000.0)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_percentile_range_defaults_are_1_998_and_stride_4(dtype):
    """Defaults: low 1 %, high 99.8 %, stride 4 (the model-card defaults).

    20 x 20 ramp 20r + c at stride 4 keeps 80i + 4j (i, j = 0..4): 25 sorted values.
    1 %: position 0.24 between 0 and 4 -> 0.96. 99.8 %: 23.952 between 332 and 336
    -> 335.808.
    """
    img = (20 * np.arange(20)[:, None] + np.arange(20)[None, :]).astype(dtype)
    lo, hi = pp.percentile_range(img)
    assert lo == pytest.approx(0.96, abs=1e-9)
    assert hi == pytest.approx(335.808, abs=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize(("low", "high", "step"), [(0.5, 99.5, 1), (1.0, 99.8, 3),
                                                   (10, 90, 2), (0, 100, 5)])
def test_percentile_range_equals_numpys_linear_percentile(dtype, low, high, step):
    """Histogram (ints) and partition (floats) paths give numpy's linear percentile
    of the same strided subsample, to the last bit a float64 carries."""
    rng = np.random.default_rng(11)
    top = 255 if dtype == np.uint8 else 4000
    img = rng.integers(0, top, (61, 47)).astype(dtype)
    if dtype in (np.float32, np.float64):
        img = img + rng.random((61, 47)).astype(dtype)
    want = np.percentile(img[::step, ::step].astype(np.float64), [low, high])
    got = pp.percentile_range(img, low, high, step)
    assert got == pytest.approx(tuple(want), rel=1e-12, abs=1e-9)


# ---------------------------------------------------------------------------------------
# normalise
# ---------------------------------------------------------------------------------------


def test_percentile_normalisation_exact_map():
    """Ramp 0..99, low 0 / high 100 at stride 1: lo = 0, hi = 99, so x -> x / 99."""
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    out = pp.normalise(img, {"low": 0, "high": 100, "subsample": 1})
    assert out.dtype == np.float32 and out.shape == (10, 10)
    np.testing.assert_allclose(out, img / 99.0, rtol=0, atol=1e-6)
    assert out[0, 0] == 0.0 and out[9, 9] == pytest.approx(1.0, abs=1e-6)


def test_default_normalisation_is_percentile_1_998_unclipped():
    """No spec: percentile 1 / 99.8 at stride 4, no clipping (values past 0..1 stay).

    Ramp 0..99 at stride 4 keeps 10r + c for r, c in 0, 4, 8: nine values
    0, 4, 8, 40, 44, 48, 80, 84, 88. 1 %: position 0.08 -> 0.32; 99.8 %: 7.984 -> 87.936.
    """
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    out = pp.normalise(img)
    lo, hi = 0.32, 87.936
    np.testing.assert_allclose(out, (img - lo) / (hi - lo), rtol=0, atol=1e-6)
    assert out.min() < 0 and out.max() > 1  # not clipped by default
    np.testing.assert_array_equal(pp.normalise(img, {}), out)


def test_stats_receive_the_stretch_and_the_noise_it_measured():
    """``stats`` gets the values mapped to 0 and 1 (the ramp's 0.32 / 87.936 of the test
    above) and, when the hot-pixel step measured it, the noise sigma: the classical
    detector's noise floor reads them instead of measuring the frame again."""
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    stats: dict[str, float] = {}
    pp.normalise(img, {"hot_pixel_sigma": None, "sparse_sigma": None}, stats=stats)
    assert stats == pytest.approx({"lo": 0.32, "hi": 87.936})  # no step: no noise
    rng = np.random.default_rng(3)
    noisy = rng.normal(100.0, 4.0, (64, 64)).astype(np.float32)
    stats = {}
    pp.normalise(noisy, {"sparse_sigma": None}, stats=stats)
    assert stats["noise"] == noise_sigma(noisy) and 3.0 < stats["noise"] < 5.0
    assert stats["lo"] < 95.0 < 105.0 < stats["hi"]


def test_clip_limits_to_0_1_and_keeps_the_inside():
    """clip=True clamps below 0 to 0, above 1 to 1 and leaves the rest unchanged."""
    img = np.arange(100, dtype=np.uint16).reshape(10, 10)
    spec = {"low": 10, "high": 90, "subsample": 1}
    free = pp.normalise(img, spec)
    clipped = pp.normalise(img, {**spec, "clip": True})
    np.testing.assert_array_equal(clipped, np.clip(free, 0.0, 1.0))
    assert clipped[0, 0] == 0.0 and clipped[9, 9] == 1.0
    assert 0.0 < clipped[5, 0] < 1.0 and clipped[5, 0] == free[5, 0]


def test_flat_percentile_range_only_shifts():
    """lo == hi (a flat frame): no division by zero, the map is x - lo (scale 1).

    8 x 8 frame of 300 with one 310 off the stride-4 grid: the subsample is all 300,
    so the 310 pixel maps to exactly 10 and all others to 0.
    """
    img = np.full((8, 8), 300, np.uint16)
    img[1, 1] = 310
    out = pp.normalise(img)
    want = np.zeros((8, 8), np.float32)
    want[1, 1] = 10.0
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(pp.normalise(np.full((4, 4), 7.5, np.float32)),
                                  np.zeros((4, 4), np.float32))


def test_scale_divides_by_255_by_default_and_by_the_divisor():
    """'scale' without a divisor is x / 255 (8-bit cards); with one, x / divisor."""
    img = np.array([[0, 51], [255, 102]], np.uint8)
    out = pp.normalise(img, {"method": "scale"})
    np.testing.assert_allclose(out, [[0, 0.2], [1, 0.4]], rtol=0, atol=1e-7)
    img16 = np.array([[0, 500], [4000, 1000]], np.uint16)
    out = pp.normalise(img16, {"method": "scale", "divisor": 1000})
    np.testing.assert_allclose(out, [[0, 0.5], [4, 1]], rtol=0, atol=1e-7)
    clipped = pp.normalise(img16, {"method": "scale", "divisor": 1000, "clip": True})
    np.testing.assert_allclose(clipped, [[0, 0.5], [1, 1]], rtol=0, atol=1e-7)


@pytest.mark.parametrize(("dtype", "vals"), [
    (np.uint16, [[0, 1], [65535, 7]]),
    (np.uint8, [[0, 255], [3, 128]]),
    (np.float64, [[-3.5, 0.25], [1e6, 2.0]]),
    (np.float32, [[-1.0, 0.5], [3.0, 1e-3]]),
])
def test_method_none_only_casts(dtype, vals):
    """'none' copies the values into float32 unchanged (no shift, scale, nor clip)."""
    img = np.array(vals, dtype)
    out = pp.normalise(img, {"method": "none"})
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array(vals, np.float32))


def test_method_none_with_clip():
    """'none' plus clip: the cast values clamped to [0, 1]."""
    img = np.array([[-2.0, 0.25], [0.75, 9.0]], np.float64)
    out = pp.normalise(img, {"method": "none", "clip": True})
    np.testing.assert_array_equal(out, np.array([[0, 0.25], [0.75, 1]], np.float32))


@pytest.mark.parametrize("spec", [{"method": "percentile", "subsample": 1},
                                  {"method": "scale", "divisor": 4},
                                  {"method": "none"}])
def test_out_buffer_is_written_and_returned(spec):
    """With out=, the result lands in that buffer (here a padded input's corner)."""
    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    buf = np.full((5, 8), -7.0, np.float32)
    got = pp.normalise(img, spec, out=buf[:3, :4])
    np.testing.assert_allclose(buf[:3, :4], pp.normalise(img, spec), rtol=0, atol=1e-6)
    assert np.shares_memory(got, buf)
    assert np.all(buf[3:] == -7) and np.all(buf[:, 4:] == -7)
    plain = np.empty((3, 4), np.float32)
    assert pp.normalise(img, spec, out=plain) is plain


@pytest.mark.parametrize(("shape", "dtype"), [((4, 3), np.float32), ((3, 4), np.float64),
                                              ((3, 4), np.float16), ((2, 2), np.uint8)])
def test_out_buffer_of_wrong_shape_or_dtype_is_refused(shape, dtype):
    """out must match the image shape AND be float32; either mismatch is refused."""
    img = np.zeros((3, 4), np.uint16)
    with pytest.raises(ValueError, match=r"out must be float32 \(3, 4\)") as err:
        pp.normalise(img, out=np.zeros(shape, dtype))
    assert f"got {np.dtype(dtype)} {shape}" in str(err.value)


@pytest.mark.parametrize("method", ["zscore", "NONE", "Percentile", ""])
def test_unknown_normalisation_method_is_refused(method):
    """A card naming another method is refused, listing the three known ones."""
    with pytest.raises(ValueError, match="Unknown normalisation method") as err:
        pp.normalise(np.zeros((3, 3), np.uint8), {"method": method})
    msg = str(err.value)
    assert repr(method) in msg and "'percentile', 'scale' or 'none'" in msg


# ---------------------------------------------------------------------------------------
# _affine
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32,
                                   np.float32, np.float64])
def test_affine_opencv_dtypes_in_place(dtype):
    """OpenCV pixel types: out = img * a + b in float32, written into a row-strided view.

    Values, a = 0.5 and b = -2 are exact in float32, so the result is exact.
    """
    img = np.array([[0, 1, 2], [50, 100, 126]], dtype)
    buf = np.full((4, 5), 9.0, np.float32)
    out = buf[:2, :3]
    pp._affine(img, 0.5, -2.0, out)
    np.testing.assert_array_equal(out, [[-2, -1.5, -1], [23, 48, 61]])
    assert np.all(buf[2:] == 9) and np.all(buf[:, 3:] == 9)


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint64, np.float16])
def test_affine_non_opencv_dtypes(dtype):
    """Other pixel types take the numpy path and give the same exact map."""
    img = np.array([[0, 1, 2], [50, 100, 126]], dtype)
    out = np.empty((2, 3), np.float32)
    pp._affine(img, 0.5, -2.0, out)
    np.testing.assert_array_equal(out, [[-2, -1.5, -1], [23, 48, 61]])


def test_affine_bool_takes_the_numpy_path():
    """bool is not an OpenCV arithmetic type: numpy maps True/False to a + b / b."""
    img = np.array([[True, False], [False, True]])
    out = np.empty((2, 2), np.float32)
    pp._affine(img, 2.0, 1.0, out)
    np.testing.assert_array_equal(out, [[3, 1], [1, 3]])


def test_affine_on_a_wide_stack_takes_the_numpy_path():
    """Only 2-D arrays go to OpenCV: a (T, H, W) stack of 1024-wide frames would read
    as 1024 channels there (over OpenCV's limit); numpy maps it exactly."""
    stack = np.arange(4 * 8 * 1024, dtype=np.uint16).reshape(4, 8, 1024)
    out = np.empty(stack.shape, np.float32)
    pp._affine(stack, 0.5, 1.0, out)
    np.testing.assert_array_equal(out, stack.astype(np.float64) * 0.5 + 1.0)


def test_scale_normalises_a_bool_mask():
    """normalise('scale', divisor 1) on a bool mask gives exact 0.0 / 1.0."""
    img = np.array([[True, False, True], [False, False, True]])
    out = pp.normalise(img, {"method": "scale", "divisor": 1})
    np.testing.assert_array_equal(out, img.astype(np.float32))


# ---------------------------------------------------------------------------------------
# resize
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.0, 1.0005, 0.9995, 1])
def test_resize_within_a_thousandth_of_1_is_a_no_op(factor):
    """Factors within 1e-3 of 1 return the very same array (no resample blur)."""
    img = np.ones((50, 70), np.float32)
    assert pp.resize(img, factor) is img


def test_resize_just_past_the_no_op_band_resamples():
    """1.002 is outside the band: a new array, even if the rounded size is unchanged."""
    img = np.ones((50, 70), np.float32)
    out = pp.resize(img, 1.002)
    assert out is not img and out.shape == (50, 70)


@pytest.mark.parametrize(("shape", "factor", "want"), [
    ((50, 70), 0.5, (25, 35)),
    ((50, 70), 1 / 3, (17, 23)),
    ((50, 70), 2.0, (100, 140)),
    ((10, 20), 0.04, (1, 1)),   # 0.4 -> 0 and 0.8 -> 1 rows/cols: never below 1
    ((10, 200), 0.04, (1, 8)),
    ((8, 10, 3), 0.5, (4, 5, 3)),  # channels kept, only H and W scaled
])
def test_resize_output_size_is_rounded_and_at_least_one(shape, factor, want):
    """Output (H, W) is round(H * f), round(W * f), clamped to >= 1 pixel."""
    assert pp.resize(np.ones(shape, np.float32), factor).shape == want


def test_resize_down_averages_areas():
    """Shrinking 8x8 by 4 averages each 4x4 block: a lone 16 becomes 16 / 16 = 1.

    (Bilinear would sample between pixels 1 and 2 and miss it: 0.)
    """
    img = np.zeros((8, 8), np.float32)
    img[0, 0] = 16.0
    out = pp.resize(img, 0.25)
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 0.0]], rtol=0, atol=1e-6)


def test_resize_up_interpolates_bilinearly():
    """Growing [0, 4, 8] by 2 with pixel-centre sampling: 0, 1, 3, 5, 7, 8.

    By 1.5, [0, 4, 8, 12] gives 0, 2, 4 2/3, 7 1/3, 10, 12 (source x = (x + .5)/1.5 - .5).
    """
    row = np.array([[0, 4, 8]], np.float32).repeat(2, 0)
    out = pp.resize(row, 2.0)
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out, np.tile([0, 1, 3, 5, 7, 8], (4, 1)), atol=1e-5)
    row = np.array([[0, 4, 8, 12]], np.float32).repeat(2, 0)
    out = pp.resize(row, 1.5)
    assert out.shape == (3, 6)
    np.testing.assert_allclose(out, np.tile([0, 2, 14 / 3, 22 / 3, 10, 12], (3, 1)),
                               atol=1e-5)


# ---------------------------------------------------------------------------------------
# pad_to_multiple
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "want"), [((50, 70), (64, 96)), ((64, 70), (64, 96)),
                                             ((50, 64), (64, 64)), ((1, 33), (32, 64))])
def test_pad_only_at_bottom_and_right(shape, want):
    """Padding goes below and to the right, so pixel (y, x) keeps its coordinates.

    Also when only one side needs it (64 x 70 -> 64 x 96).
    """
    img = np.arange(1, shape[0] * shape[1] + 1, dtype=np.float32).reshape(shape)
    p = pp.pad_to_multiple(img, 32)
    assert p.shape == want and p.dtype == np.float32
    np.testing.assert_array_equal(p[:shape[0], :shape[1]], img)
    assert not p[shape[0]:].any() and not p[:, shape[1]:].any()


def test_pad_uses_the_given_value():
    """value= fills the border (e.g. the normalised background level)."""
    img = np.zeros((5, 7), np.float32)
    p = pp.pad_to_multiple(img, 4, value=5.0)
    assert p.shape == (8, 8)
    assert np.all(p[5:] == 5.0) and np.all(p[:, 7:] == 5.0) and not p[:5, :7].any()
    u = pp.pad_to_multiple(np.ones((3, 3), np.uint16), 2, value=9)
    np.testing.assert_array_equal(u, [[1, 1, 1, 9], [1, 1, 1, 9], [1, 1, 1, 9],
                                      [9, 9, 9, 9]])
    assert u.dtype == np.uint16


@pytest.mark.parametrize("multiple", [1, 0, -4])
def test_pad_to_multiple_of_one_or_less_is_a_no_op(multiple):
    """Every size is a multiple of 1 (0 and negatives count as 1): same array back."""
    img = np.ones((5, 7), np.float32)
    assert pp.pad_to_multiple(img, multiple) is img


def test_pad_already_a_multiple_is_a_no_op():
    """A frame already on the grid is returned as is (no copy)."""
    img = np.ones((64, 96), np.float32)
    assert pp.pad_to_multiple(img, 32) is img


def test_pad_channels_last_image_pads_only_h_and_w():
    """(H, W, C) pads its two first axes and keeps C."""
    img = np.ones((5, 7, 3), np.uint8)
    p = pp.pad_to_multiple(img, 4)
    assert p.shape == (8, 8, 3)
    assert p[:5, :7].all() and not p[5:].any() and not p[:, 7:].any()


# ---------------------------------------------------------------------------------------
# scale_factor
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "rng", "want"), [
    (40, [10, 40], 0.5),       # centre sqrt(10 * 40) = 20
    (20, [10, 40], 1.0),
    (10, (10, 40), 2.0),
    (0.5, [10, 40], 40.0),     # sub-pixel sizes are legal
    (1, [10, 40], 20.0),
    (5, [40, 10], 4.0),        # order of the range does not matter
    (8, 16, 2.0),              # one number: that size
    (8, [16], 2.0),
    (9, [4, 9, 36], 4 / 3),    # centre of the extremes: sqrt(4 * 36) = 12
])
def test_scale_factor_targets_the_geometric_centre(size, rng, want):
    """factor = sqrt(lo * hi) / size: brings objects to the middle of the trained range."""
    assert pp.scale_factor(size, rng) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("size", "rng"), [(None, [10, 40]), (15, None), (15, []),
                                           (15, ()), (None, None)])
def test_scale_factor_without_size_or_range_is_1(size, rng):
    """No object size or no range on the card: no rescale (exactly 1.0)."""
    assert pp.scale_factor(size, rng) == 1.0


@pytest.mark.parametrize("size", [0, 0.0, -3, -0.5])
def test_scale_factor_refuses_non_positive_sizes(size):
    """Zero or negative object sizes are refused (not a ZeroDivisionError)."""
    with pytest.raises(ValueError, match="object_size_px must be positive") as err:
        pp.scale_factor(size, [10, 40])
    assert f"got {size}" in str(err.value)


def test_scale_factor_is_a_plain_float():
    """The factor is a Python float (it goes into JSON and logs)."""
    f = pp.scale_factor(20, [10, 40])
    assert type(f) is float and math.isclose(f, 1.0)


@pytest.mark.parametrize("make_out", [
    lambda: np.zeros((10, 6), np.float32).T,            # transposed (Fortran order)
    lambda: np.zeros((6, 20), np.float32)[:, ::2],      # every other column
    lambda: np.zeros((6, 10), np.float32)[::-1],        # flipped rows
], ids=["transposed", "column-strided", "flipped"])
def test_normalise_writes_into_any_out_layout(make_out):
    """OpenCV cannot write into these layouts (it raised cv2.error); the result is
    copied in instead, the same values as into a plain array."""
    img = np.arange(60, dtype=np.uint16).reshape(6, 10)
    out = make_out()
    got = pp.normalise(img, {"method": "scale", "divisor": 2}, out=out)
    assert got is out
    np.testing.assert_array_equal(out, img.astype(np.float32) / 2)


def _nuclei_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(500, 10, (128, 160))
    yy, xx = np.mgrid[:128, :160]
    for cy, cx in rng.uniform(12, 116, (12, 2)):
        img += 2000 * (((yy - cy) ** 2 + (xx - cx) ** 2) <= 36)
    return img.clip(0, 65535).astype(np.uint16)


def test_hot_pixels_are_lowered_before_the_stretch():
    """0.3 % of the pixels stuck at 65,535 (an uncorrected sCMOS frame): without the step
    the stretch's 99.8th percentile lies on them and every nucleus comes out near 0.03;
    with it the frame is stretched as the clean one, and each hot pixel is at most 8
    noise sigma above its brightest neighbour."""
    from inscope.detector.signal import noise_sigma

    clean = _nuclei_frame()
    hot = clean.copy()
    where = np.random.default_rng(1).random(clean.shape) < 0.003
    hot[where] = 65535
    want = pp.normalise(clean)
    got = pp.normalise(hot)
    np.testing.assert_allclose(got[~where], want[~where], atol=2e-3)
    sigma = noise_sigma(hot)
    assert 8 <= sigma <= 12  # the camera noise, not the hot pixels
    lo, hi = pp.percentile_range(clean, 1.0, 99.8, 4)  # the stretch is the clean one's
    ring = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)
    paired = where & (cv2.dilate(where.astype(np.uint8), ring) > 0)  # a hot neighbour
    assert 0 < paired.sum() < 0.1 * where.sum()  # two adjacent hot pixels stay (documented)
    assert got[where & ~paired].max() <= (clean.max() + 8 * sigma + 1 - lo) / (hi - lo)
    off = pp.normalise(hot, {"hot_pixel_sigma": None})
    assert np.median(off[clean > 1500]) < 0.1  # what it was before
    assert np.median(got[clean > 1500]) > 5 * np.median(off[clean > 1500])


def test_camera_noise_and_nuclei_pass_the_hot_pixel_step_unchanged():
    clean = _nuclei_frame(2)
    np.testing.assert_array_equal(pp.normalise(clean),
                                  pp.normalise(clean, {"hot_pixel_sigma": 0}))
    assert pp.without_hot_pixels(clean, 8.0) is not clean  # a cleaned copy ...
    np.testing.assert_array_equal(pp.without_hot_pixels(clean, 8.0), clean)  # ... alike
    flat = np.full((16, 16), 7, np.uint16)  # no noise to measure: left as it is
    flat[3, 3] = 9000
    assert pp.without_hot_pixels(flat, 8.0) is flat


def test_hot_pixel_pairs_are_lowered_only_when_the_card_asks():
    clean = _nuclei_frame(3)
    hot = clean.copy()
    hot[5, 5] = hot[5, 6] = 65535  # two side by side: each the other's brightest neighbour
    assert pp.without_hot_pixels(hot, 8.0)[5, 5] == 65535  # the default: kept
    got = pp.without_hot_pixels(hot, 8.0, pairs=True)
    assert got[5, 5] < 700 and got[5, 6] < 700
    np.testing.assert_array_equal(np.delete(got.ravel(), [5 * 160 + 5, 5 * 160 + 6]),
                                  np.delete(clean.ravel(), [5 * 160 + 5, 5 * 160 + 6]))
    a = pp.normalise(hot, {"hot_pixel_pairs": True})
    b = pp.normalise(hot)
    assert a[5, 5] < 0.5 < b[5, 5]


def test_method_none_leaves_every_pixel_even_a_hot_one():
    """``{"method": "none"}`` only casts: no hot-pixel step (which needs a noise measure
    and would lower the lone bright pixel) runs before it."""
    img = np.random.default_rng(5).normal(100, 3, (16, 16)).astype(np.uint16)  # noise > 0
    img[8, 8] = 60000
    assert pp.hot_pixel_step(img, {})[8, 8] < 1000  # the step would lower it
    out = pp.normalise(img, {"method": "none"})
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_unscale_boxes_on_an_image_shrunk_to_one_pixel():
    """A 10 x 10 image at factor 0.1 becomes 1 x 1 (OpenCV's smallest): the true ratio is
    1 / 10 on each axis, so the one pixel's centre (0) maps back to 4.5."""
    boxes = np.array([[0.0, 0.0, 0.0, 0.0]])
    pp.unscale_boxes(boxes, 0.1, (10, 10))
    np.testing.assert_allclose(boxes, [[4.5, 4.5, 4.5, 4.5]])
    boxes = np.array([[0.0, 0.0, 0.0, 0.0]])
    pp.unscale_boxes(boxes, 0.04, (10, 50))  # 50 x 10 -> 2 x 1 (x: round(2.0), y: 1)
    np.testing.assert_allclose(boxes, [[12.0, 4.5, 12.0, 4.5]])
