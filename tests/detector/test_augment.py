"""Training augmentation moves boxes exactly as it moves the pixels under them.

Boxes use the frame's convention: pixel centres at integer coordinates, so a box drawn
round pixel ``(x, y)`` alone is ``[x - 0.5, y - 0.5, x + 0.5, y + 0.5]``. Each test puts
a bright spot at a known place, augments, and checks that the box still sits on it:
a flip that maps ``x`` to ``crop - x`` (the edge convention) puts every flipped box one
pixel off, which the network then learns as a half-pixel bias.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inscope.detector.train.data import augment  # noqa: E402


def _centroid(img: np.ndarray) -> np.ndarray:
    w = np.clip(img - np.median(img), 0, None)
    yy, xx = np.indices(img.shape)
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


def _spot(shape, xy, sigma=1.5):
    yy, xx = np.indices(shape, dtype=np.float64)
    return 100 + 1000 * np.exp(-((xx - xy[0]) ** 2 + (yy - xy[1]) ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("seed", range(16))
def test_flips_and_transposes_keep_the_box_on_its_spot(seed: int) -> None:
    """All 8 dihedral variants over 16 seeds: the box centre is the spot's centroid."""
    crop = 64
    xy = (20.0, 41.0)  # off the diagonal and off the centre, so every variant differs
    img = _spot((crop, crop), xy).astype(np.float32)
    box = np.array([[xy[0] - 4.5, xy[1] - 4.5, xy[0] + 4.5, xy[1] + 4.5]], np.float32)
    out, b = augment(img, box, np.random.default_rng(seed), crop, photometric=False)
    assert b.shape == (1, 4)
    centre = np.array([(b[0, 0] + b[0, 2]) / 2, (b[0, 1] + b[0, 3]) / 2])
    np.testing.assert_allclose(centre, _centroid(out), atol=0.02)
    np.testing.assert_allclose(b[0, 2:] - b[0, :2], [9.0, 9.0], atol=1e-5)


@pytest.mark.parametrize("f", [0.6, 0.75, 1.33, 1.6])
def test_rescale_keeps_the_box_on_its_spot(f: float) -> None:
    """A rescale (OpenCV's pixel-centre alignment) keeps box and spot together to a
    twentieth of a pixel; the crop is larger than the rescaled frame, so the spot is
    never cut (an edge-convention ``x * f`` is off by ``(f - 1) / 2`` px)."""
    xy = (47.0, 50.0)
    img = _spot((96, 96), xy, sigma=3.0).astype(np.float32)
    box = np.array([[xy[0] - 6.5, xy[1] - 6.5, xy[0] + 6.5, xy[1] + 6.5]], np.float32)
    out, b = augment(img, box, np.random.default_rng(0), 160, scale_range=(f, f),
                     photometric=False)
    assert len(b) == 1
    centre = np.array([(b[0, 0] + b[0, 2]) / 2, (b[0, 1] + b[0, 3]) / 2])
    np.testing.assert_allclose(centre, _centroid(out), atol=0.05)


def test_a_box_cut_by_the_crop_is_clipped_to_the_frames_pixel_extent() -> None:
    """Clipped edges stop at the outer edge of the border pixels, -0.5 and crop - 0.5."""
    img = np.full((80, 80), 100, np.float32)
    box = np.array([[-3.5, 10.5, 6.5, 20.5], [70.5, 60.5, 79.5, 79.5]], np.float32)
    for seed in range(8):
        _, b = augment(img, box, np.random.default_rng(seed), 80, photometric=False)
        assert len(b) == 2
        assert b.min() == pytest.approx(-0.5) and b.max() <= 79.5
