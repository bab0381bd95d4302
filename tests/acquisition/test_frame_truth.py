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
