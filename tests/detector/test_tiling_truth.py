"""Tiling a frame too large for one pass: every object found once, whole, by the tile that
owns its centre.

The promise of :mod:`inscope.detector.tiling` checked on many grids: tiles cover the
frame and overlap by at least what was asked; the owned parts partition it, borders
included; and a box no larger than the overlap is kept by exactly one tile, which holds
all of it. Pure numpy on known geometry.
"""

from __future__ import annotations

import numpy as np
import pytest

from inscope.detector.tiling import keep_owned, tile_grid

GRIDS = [(300, 500, 128, 40, 1), (1000, 333, 256, 64, 1), (2048, 2048, 512, 80, 32),
         (700, 1100, 512, 72, 32), (77, 400, 64, 10, 4), (10, 10, 2, 1, 1),
         (129, 129, 128, 0, 1), (95, 250, 33, 7, 3)]


def _axis(tiles, lo: str, hi: str) -> list[tuple[int, int]]:
    return sorted({(getattr(t, lo), getattr(t, hi)) for t in tiles})


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "align"), GRIDS)
def test_tiles_cover_the_frame_keep_the_overlap_and_start_on_the_grid(h, w, tile, overlap,
                                                                      align):
    tiles = tile_grid(h, w, tile, overlap, align)
    for length, (lo, hi) in ((h, ("y0", "y1")), (w, ("x0", "x1"))):
        spans = _axis(tiles, lo, hi)
        assert spans[0][0] == 0 and spans[-1][1] == length  # from border to border
        for a, b in spans:
            assert 0 < b - a <= tile and b <= length
            assert a % align == 0
        for (a0, a1), (b0, _) in zip(spans[:-1], spans[1:], strict=True):
            assert b0 > a0
            assert a1 - b0 >= overlap  # the overlap asked for, despite the alignment
        # spread evenly: steps differ by at most the alignment (no tiny last tile)
        steps = np.diff([a for a, _ in spans])
        if len(steps):
            assert steps.max() - steps.min() <= align
    assert len(tiles) == len(_axis(tiles, "y0", "y1")) * len(_axis(tiles, "x0", "x1"))


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "align"), GRIDS)
def test_every_position_is_owned_by_exactly_one_tile_even_on_a_boundary(h, w, tile, overlap,
                                                                       align):
    tiles = tile_grid(h, w, tile, overlap, align)

    def positions(length: int, ends: list[float]) -> np.ndarray:
        # every ownership boundary, a quarter pixel either side of it, and a comb of
        # pixel centres and half-pixel positions across the frame
        e = np.array([v for v in ends if np.isfinite(v)])
        comb = np.arange(0, length, 0.5 if length <= 1100 else 3.5)
        return np.unique(np.concatenate([comb, e, e - 0.25, e + 0.25, [-0.5, length - 0.5]]))

    ys = positions(h, [t.own_y0 for t in tiles] + [t.own_y1 for t in tiles])
    xs = positions(w, [t.own_x0 for t in tiles] + [t.own_x1 for t in tiles])
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    owners = np.zeros(len(pts), int)
    for t in tiles:
        owners += keep_owned(t, np.concatenate([pts, pts], 1))  # zero-size boxes
    assert np.all(owners == 1)


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "align"),
                         [g for g in GRIDS if g[3] >= 8])
def test_a_box_up_to_the_overlap_is_kept_once_by_a_tile_that_holds_all_of_it(h, w, tile,
                                                                             overlap, align):
    rng = np.random.default_rng(h * w + tile)
    n = 4000
    # boxes of every aspect (width and height drawn apart), anywhere in the frame
    bw = rng.uniform(1.0, overlap, n)
    bh = rng.uniform(1.0, overlap, n)
    x0 = rng.uniform(-0.5, w - 0.5 - bw)
    y0 = rng.uniform(-0.5, h - 0.5 - bh)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1)
    tiles = tile_grid(h, w, tile, overlap, align)
    kept_by = np.full(n, -1)
    for i, t in enumerate(tiles):
        k = keep_owned(t, boxes)
        assert np.all(kept_by[k] == -1), "a box kept by two tiles"
        kept_by[k] = i
        # a tile spans pixels y0..y1-1, so positions -0.5 + y0 .. y1 - 0.5
        b = boxes[k]
        assert np.all(b[:, 0] >= t.x0 - 0.5) and np.all(b[:, 2] <= t.x1 - 0.5)
        assert np.all(b[:, 1] >= t.y0 - 0.5) and np.all(b[:, 3] <= t.y1 - 0.5)
    assert np.all(kept_by >= 0), "a box no tile kept"


def test_keep_owned_reads_the_centre_of_each_box() -> None:
    # one tile owning x in [100, 200), y in [50, 80): boxes placed by hand
    (t,) = [t for t in tile_grid(130, 400, 128, 40) if t.x0 > 0 and t.y0 == 0][:1]
    x_in = (t.own_x0 + t.own_x1) / 2
    boxes = np.array([
        [x_in - 30, 5, x_in + 30, 9],        # wide, flat: centre inside
        [x_in - 2, 0, x_in + 60, 4],         # centre right of the left edge of the box
        [t.own_x0 - 1.0, 0, t.own_x0 + 0.5, 2],  # centre just left of the owned part
        [t.own_x1 - 0.5, 0, t.own_x1 + 0.5, 2],  # centre exactly on the right end: not owned
        [t.own_x0 - 0.5, 0, t.own_x0 + 0.5, 2],  # centre exactly on the left end: owned
    ])
    want = [True, (x_in - 2 + x_in + 60) / 2 < t.own_x1, False, False, True]
    np.testing.assert_array_equal(keep_owned(t, boxes), want)
    # the same boxes transposed test the y axis of a tile owning a band of rows
    (u,) = [u for u in tile_grid(400, 130, 128, 40) if u.y0 > 0 and u.x0 == 0][:1]
    y_in = (u.own_y0 + u.own_y1) / 2
    tb = np.array([[5, y_in - 30, 9, y_in + 30], [0, u.own_y1 - 0.5, 2, u.own_y1 + 0.5],
                   [0, u.own_y0 - 0.5, 2, u.own_y0 + 0.5], [0, u.own_y0 - 1.0, 2, u.own_y0]])
    np.testing.assert_array_equal(keep_owned(u, tb), [True, False, True, False])


def test_a_frame_no_larger_than_a_tile_is_one_tile_that_owns_everything() -> None:
    for h, w in ((128, 128), (128, 50), (1, 128)):
        (t,) = tile_grid(h, w, 128, 40)
        assert (t.y0, t.x0, t.y1, t.x1) == (0, 0, h, w)
        assert (t.own_y0, t.own_x0, t.own_y1, t.own_x1) == (-np.inf, -np.inf, np.inf, np.inf)
    assert len(tile_grid(129, 128, 128, 40)) == 2


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (-4, 0), (64, -1), (64, 64), (64, 65)])
def test_a_grid_that_cannot_advance_is_refused(tile, overlap):
    with pytest.raises(ValueError, match="0 <= overlap < tile"):
        tile_grid(300, 300, tile, overlap)


def test_the_smallest_grids_are_allowed() -> None:
    # no overlap, and tiles of one pixel: unusual but well defined
    assert len(tile_grid(300, 300, 100, 0)) == 9
    assert len(tile_grid(3, 2, 1, 0)) == 6
