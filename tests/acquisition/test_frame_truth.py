"""The Frame every stage passes along: its stamps, its checks and its pixel <-> stage map
on a rotated, mirrored, anisotropic affine (values worked out by hand)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inscope.acquisition.frame import Frame, StagePosition, from_file_boxes


def test_a_frame_is_stamped_ready_when_built_unless_the_backend_did():
    t0 = time.monotonic_ns()
    f = Frame(np.zeros((4, 6), np.uint16), 0)
    assert isinstance(f.stamps["ready"], int) and t0 <= f.stamps["ready"] <= time.monotonic_ns()
    g = Frame(np.zeros((4, 6), np.uint16), 1, {"ready": 42})
    assert g.stamps["ready"] == 42
    t = g.stamp("detect_start")
    assert g.stamps["detect_start"] == t and t >= t0


@pytest.mark.parametrize(("pixels", "shows"), [
    (np.zeros((3, 4, 5)), "(3, 4, 5)"), (np.zeros(7), "(7,)"), ([[1, 2], [3, 4]], "list"),
    (None, "NoneType"),
])
def test_a_frame_that_is_not_one_2d_image_says_what_it_got(pixels, shows):
    with pytest.raises(ValueError, match="2-D numpy array") as e:
        Frame(pixels, 0)
    assert shows in str(e.value) and "one Frame per channel" in str(e.value)


def test_pixels_map_to_the_stage_and_back_through_any_affine():
    # 0.5 µm/px along x, 0.25 along y, rotated 90° and mirrored: A = [[0, -0.25], [-0.5, 0]]
    a = np.array([[0.0, -0.25], [-0.5, 0.0]])
    f = Frame(np.zeros((100, 200), np.uint16), 0, position=StagePosition(1000.0, -20.0, 5.0),
              affine=a.tolist())
    assert f.affine.shape == (2, 2) and f.affine.dtype == float
    assert f.center == (100.0, 50.0)
    px = np.array([[100.0, 50.0], [110.0, 50.0], [100.0, 58.0], [0.0, 0.0]])
    want = np.array([[1000.0, -20.0], [1000.0, -25.0], [998.0, -20.0],
                     [1000.0 + 12.5, -20.0 + 50.0]])
    np.testing.assert_allclose(f.pixel_to_stage(px), want)
    np.testing.assert_allclose(f.stage_to_pixel(want), px)
    np.testing.assert_allclose(f.pixel_to_stage([110, 50]), [[1000.0, -25.0]])  # one point
    assert f.scale_um == pytest.approx(np.sqrt(0.125))
    plain = Frame(np.zeros((10, 10), np.uint16), 0, pixel_size_um=0.65)
    np.testing.assert_array_equal(plain.affine, np.eye(2) * 0.65)


def test_without_a_stage_position_neither_map_guesses():
    f = Frame(np.zeros((10, 10), np.uint16), 0)
    with pytest.raises(ValueError, match="no stage position"):
        f.pixel_to_stage([[1, 1]])
    with pytest.raises(ValueError, match="no stage position"):
        f.stage_to_pixel([[1, 1]])


def test_file_boxes_move_half_a_pixel_back_whatever_their_number():
    got = from_file_boxes([[0, 0, 10, 10], [5, 6, 7, 8], [1, 2, 3, 4]])
    np.testing.assert_array_equal(got, [[-0.5, -0.5, 9.5, 9.5], [4.5, 5.5, 6.5, 7.5],
                                        [0.5, 1.5, 2.5, 3.5]])
    assert got.dtype == np.float32
    assert from_file_boxes(np.zeros((0, 4))).shape == (0, 4)


def test_colour_to_grey_is_the_mean_of_the_colours_whatever_their_order():
    """One rule for every colour input: a blue (DAPI) or red dye keeps a third of its
    range - luminance would keep a ninth of a blue one's - alpha is ignored, the type
    is kept (integers rounded), and RGB and BGR give the same grey."""
    from inscope.acquisition.frame import colour_to_grey

    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (0, 0, 255)  # blue
    rgb[0, 1] = (255, 0, 0)  # red
    rgb[0, 2] = (1, 2, 2)  # 5 / 3 = 1.67
    rgb[1] = (255, 255, 255)
    g = colour_to_grey(rgb)
    assert g.dtype == np.uint8 and g.shape == (2, 3)
    np.testing.assert_array_equal(g, [[85, 85, 2], [255, 255, 255]])
    np.testing.assert_array_equal(colour_to_grey(rgb[..., ::-1]), g)
    rgba = np.dstack([rgb, np.full((2, 3), 255, np.uint8)]).astype(np.uint16) * 200
    np.testing.assert_array_equal(colour_to_grey(rgba), np.round(rgb.mean(2) * 200))
    assert colour_to_grey(rgba).dtype == np.uint16
    f = colour_to_grey(rgb.astype(np.float32))
    assert f.dtype == np.float32 and f[0, 2] == pytest.approx(5 / 3)
    stack = np.stack([rgb, rgb // 3])  # (T, Y, X, 3): every plane alike
    np.testing.assert_array_equal(colour_to_grey(stack), np.stack([g, colour_to_grey(rgb // 3)]))
    assert colour_to_grey(rgb.astype(np.int32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"needs \(\.\.\., 3\) or \(\.\.\., 4\) colour samples; "
                                         r"got shape \(2, 3\)"):
        colour_to_grey(g)
