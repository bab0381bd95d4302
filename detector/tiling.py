"""Split large frames into overlapping tiles and merge the tiles' boxes exactly once.

Merging uses the *keep-by-centre* rule: every tile owns the part of the frame that is
nearer to it than to its neighbours (its own area minus half the overlap on each inner
side); a box is kept only from the tile that owns its centre. With an overlap at least as
large as the largest object, an object whose centre a tile owns lies wholly inside that
tile, so each object is found once, uncut, and no NMS across tiles is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: where it is read from (``y0:y1, x0:x1``) and which centres it owns."""

    y0: int
    x0: int
    y1: int
    x1: int
    own_y0: float
    own_x0: float
    own_y1: float
    own_x1: float


def _starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    if length <= tile:
        return [0]
    # with alignment the frame is taken as padded up to a multiple of align (the last
    # tile may reach past the border; its crop is padded like a whole frame would be)
    span = -(-length // align) * align - tile
    step = max(1, tile - overlap - (align - 1))  # rounding may eat up to align-1
    n = int(np.ceil(span / step)) + 1
    # spread the tiles evenly so the last one ends at the border (no tiny last tile),
    # each start on the align grid so every tile sees the frame's own cell grid
    starts = [round(i * span / (n - 1) / align) * align for i in range(n)]
    starts[-1] = -(-span // align) * align
    return starts


def _owned(starts: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    """Boundaries half-way through each overlap; the outer ones are +-inf."""
    bounds = [-np.inf]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        bounds.append((b + min(a + tile, length)) / 2.0)  # middle of the overlap
    bounds.append(np.inf)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def tile_grid(height: int, width: int, tile: int, overlap: int, align: int = 1
              ) -> list[Tile]:
    """Tiles of at most ``tile`` x ``tile`` pixels, overlapping by at least ``overlap``.

    ``align`` puts every tile start on a multiple of it (the model's stride or input
    multiple), so a tile's output cells coincide with the whole frame's: a tiled run then
    gives the same boxes as a whole-frame run, not boxes shifted by part of a cell.

    Raises
    ------
    ValueError
        When ``overlap >= tile`` (the grid would never advance).
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(
            f"Tiling needs 0 <= overlap < tile; got tile={tile}, overlap={overlap}. Set "
            "the overlap to about the largest object size and the tile several times it.")
    align = max(1, int(align))
    ys, xs = _starts(height, tile, overlap, align), _starts(width, tile, overlap, align)
    oy, ox = _owned(ys, tile, height), _owned(xs, tile, width)
    return [Tile(y, x, min(y + tile, height), min(x + tile, width), a, c, b, d)
            for y, (a, b) in zip(ys, oy, strict=True)
            for x, (c, d) in zip(xs, ox, strict=True)]


def keep_owned(t: Tile, boxes: np.ndarray) -> np.ndarray:
    """Mask of *boxes* (already in frame coordinates) whose centre tile *t* owns."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx >= t.own_x0) & (cx < t.own_x1) & (cy >= t.own_y0) & (cy < t.own_y1)
