"""A virtual fluorescence slide: nuclei (and debris) generated lazily, tile by tile.

A slide many fields of view wide would hold tens of thousands of nuclei; generating them
all up front makes every `SimulatedMicroscope()` slow. Instead each 200 µm tile is generated
on first use from ``(seed, tile)`` alone, so the specimen is the same whatever order the
stage visits it in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from inscope.acquisition.simulated.config import SimConfig

TILE_UM = 200.0

KIND_NORMAL, KIND_DIM, KIND_MITOTIC, KIND_PAIR, KIND_DEBRIS = range(5)


@dataclass(slots=True)
class Cell:
    """One object on the slide, in stage µm at time 0.

    ``a_um``/``b_um`` are semi-axes, ``angle`` radians in stage axes. A ``KIND_PAIR`` is two
    condensed daughter chromatin masses ``pair_sep_um`` apart along ``angle``; each daughter
    is labelled as its own object (as in mask-derived annotations such as the Cell Tracking
    Challenge's), both under the cell's id. Debris is never labelled.
    """

    id: int
    x_um: float
    y_um: float
    a_um: float
    b_um: float
    angle: float
    brightness: float  # relative peak brightness (1 = typical nucleus)
    kind: int = KIND_NORMAL
    vx_um_s: float = 0.0
    vy_um_s: float = 0.0
    pair_sep_um: float = 0.0
    texture_seed: int = 0

    @property
    def labelled(self) -> bool:
        return self.kind != KIND_DEBRIS

    def position(self, t_s: float) -> tuple[float, float]:
        return (self.x_um + self.vx_um_s * t_s, self.y_um + self.vy_um_s * t_s)

    def half_extent_um(self) -> tuple[float, float]:
        """Half width/height (stage axes) of the axis-aligned box around the object (both
        daughters of a pair)."""
        hx, hy = self.part_half_extent_um()
        ox, oy = self.part_offsets_um()[-1]
        return (hx + abs(ox), hy + abs(oy))

    def part_half_extent_um(self) -> tuple[float, float]:
        """Half width/height (stage axes) of one ellipse (one daughter of a pair)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (math.hypot(self.a_um * c, self.b_um * s), math.hypot(self.a_um * s, self.b_um * c))

    def part_offsets_um(self) -> list[tuple[float, float]]:
        """Centre offsets (stage axes) of the labelled parts: one, or a pair's two daughters,
        which separate across the plate (along the short axis)."""
        if self.kind != KIND_PAIR:
            return [(0.0, 0.0)]
        h = self.pair_sep_um / 2
        dx, dy = -math.sin(self.angle) * h, math.cos(self.angle) * h
        return [(-dx, -dy), (dx, dy)]


@dataclass
class Specimen:
    """The slide's objects, generated per tile on demand (or given as a fixed list)."""

    config: SimConfig
    fixed: list[Cell] | None = None
    _tiles: dict[tuple[int, int], list[Cell]] = field(default_factory=dict, repr=False)
    _geom: dict[int, tuple[list[Cell], np.ndarray]] = field(default_factory=dict,
                                                             repr=False)
    #: per tile, its cells that stay put; and the moving cells of every tile in
    #: ``_moving_range`` (tx0, tx1, ty0, ty1), in one list
    _still_of: dict[tuple[int, int], list[Cell]] = field(default_factory=dict, repr=False)
    _moving: list[Cell] = field(default_factory=list, repr=False)
    _moving_range: tuple[int, int, int, int] | None = field(default=None, repr=False)

    @classmethod
    def from_cells(cls, cells: list[Cell], config: SimConfig | None = None) -> Specimen:
        """A specimen of exactly these objects (for tests with known positions)."""
        return cls(config or SimConfig(), fixed=list(cells))

    @classmethod
    def grid(cls, config: SimConfig, extent_um: float, spacing_um: float = 34.0,
             seed: int = 0) -> Specimen:
        """Nuclei on a jittered square grid over ``[-extent_um, extent_um]``, never touching.

        A layout where every nucleus is separable, so a scan or workflow that misses or
        doubles one is at fault, not the detector (used by tests and bench_control).
        """
        rng = np.random.default_rng(seed)
        cells: list[Cell] = []
        axis = np.arange(-extent_um, extent_um + 1e-9, spacing_um)
        for gx in axis:
            for gy in axis:
                d = rng.uniform(10.0, 16.0)
                cells.append(Cell(len(cells) + 1, float(gx + rng.uniform(-5, 5)),
                                  float(gy + rng.uniform(-5, 5)), d / 2,
                                  d / 2 * rng.uniform(0.75, 1.0), rng.uniform(0, np.pi),
                                  rng.uniform(0.8, 1.3),
                                  texture_seed=int(rng.integers(1 << 30))))
        return cls.from_cells(cells, config)

    # -- lookup ------------------------------------------------------------------------
    def _max_speed(self) -> float:
        if self.fixed is not None:
            return max((math.hypot(c.vx_um_s, c.vy_um_s) for c in self.fixed), default=0.0)
        return self.config.cell_motion_um_per_s

    def cells_near(self, x0: float, y0: float, x1: float, y1: float, t_s: float = 0.0
                   ) -> list[Cell]:
        """Objects (debris included) whose extent may reach the rectangle at time *t_s*,
        in id order.

        Cells that stay put are looked up in the tiles around the rectangle. A moving
        cell may have come from anywhere within its reach (speed x *t_s*), so the
        moving cells of every tile within that reach (clipped to the slide) are kept in
        one list and tested at once: the query's cost stays flat however long the
        microscope runs. (Scanning every tile within the reach cost more each minute,
        as the reach's area grows with time squared: by the end of a 10-minute demo
        thousands of tiles per frame, in the camera process and again for the ground
        truth.)
        """
        if self.fixed is not None:
            return self._hits([self.fixed], x0, y0, x1, y1, t_s)
        pad = self.config.nucleus_diameter_um[1] * 1.5
        out = self._hits(self._still(self._tile_keys(x0, y0, x1, y1, pad)),
                         x0, y0, x1, y1, t_s)
        speed = self._max_speed()
        if speed > 0:  # (moving cells may be anywhere within their reach)
            reach = speed * t_s
            moving = self._moving_within(self._tile_keys(x0, y0, x1, y1, pad + reach))
            out += self._hits([moving], x0, y0, x1, y1, t_s)
            out.sort(key=lambda c: c.id)  # tile order, then order in the tile
        return out

    def _tile_keys(self, x0: float, y0: float, x1: float, y1: float, margin: float
                   ) -> tuple[int, int, int, int]:
        """Inclusive tile range ``(tx0, tx1, ty0, ty1)`` of the rectangle grown by
        *margin*, clipped to the slide (tiles beyond it are empty)."""
        hw, hh = self.config.slide_um[0] / 2, self.config.slide_um[1] / 2
        lo_x, hi_x = math.floor(-hw / TILE_UM), math.floor(hw / TILE_UM)
        lo_y, hi_y = math.floor(-hh / TILE_UM), math.floor(hh / TILE_UM)
        return (max(math.floor((x0 - margin) / TILE_UM), lo_x),
                min(math.floor((x1 + margin) / TILE_UM), hi_x),
                max(math.floor((y0 - margin) / TILE_UM), lo_y),
                min(math.floor((y1 + margin) / TILE_UM), hi_y))

    def _still(self, keys: tuple[int, int, int, int]) -> list[list[Cell]]:
        """The cells that stay put in tiles *keys*, a list per tile (tile order)."""
        tx0, tx1, ty0, ty1 = keys
        out: list[list[Cell]] = []
        for tx in range(tx0, tx1 + 1):
            for ty in range(ty0, ty1 + 1):
                key = (tx, ty)
                got = self._still_of.get(key)
                if got is None:
                    got = self._still_of[key] = [c for c in self._tile(tx, ty)
                                                 if not (c.vx_um_s or c.vy_um_s)]
                out.append(got)
        return out

    def _moving_within(self, keys: tuple[int, int, int, int]) -> list[Cell]:
        """The moving cells of every tile in *keys* (and of the tiles indexed before):
        one list, grown only when the range grows."""
        tx0, tx1, ty0, ty1 = keys
        have = self._moving_range
        if have is not None and (have[0] <= tx0 and tx1 <= have[1] and have[2] <= ty0
                                 and ty1 <= have[3]):
            return self._moving
        if have is not None:
            tx0, tx1 = min(tx0, have[0]), max(tx1, have[1])
            ty0, ty1 = min(ty0, have[2]), max(ty1, have[3])
        new = [c for tx in range(tx0, tx1 + 1) for ty in range(ty0, ty1 + 1)
               if have is None or not (have[0] <= tx <= have[1] and have[2] <= ty <= have[3])
               for c in self._tile(tx, ty) if c.vx_um_s or c.vy_um_s]
        self._moving_range = (tx0, tx1, ty0, ty1)
        # a new list: its geometry (cached per list) is built once per growth
        self._moving = self._moving + new
        return self._moving

    def _hits(self, groups: list[list[Cell]], x0: float, y0: float, x1: float, y1: float,
              t_s: float) -> list[Cell]:
        """The cells of *groups* whose box at *t_s* reaches the rectangle: one
        vectorised test per group."""
        out: list[Cell] = []
        for cells in groups:
            if not cells:
                continue
            g = self._geometry(cells)
            x = g[:, 0] + g[:, 2] * t_s
            y = g[:, 1] + g[:, 3] * t_s
            hit = ((x + g[:, 4] >= x0) & (x - g[:, 4] <= x1)
                   & (y + g[:, 5] >= y0) & (y - g[:, 5] <= y1))
            out.extend(cells[i] for i in np.flatnonzero(hit))
        return out

    def _geometry(self, cells: list[Cell]) -> np.ndarray:
        """(N, 6) x, y, vx, vy, half width, half height (µm) of *cells* at time 0, cached
        per list (the lists looked up are never changed once made)."""
        key = id(cells)
        got = self._geom.get(key)
        if got is None or got[0] is not cells or len(got[1]) != len(cells):
            if len(self._geom) > 4096:
                self._geom.clear()
            arr = np.array([(c.x_um, c.y_um, c.vx_um_s, c.vy_um_s, *c.half_extent_um())
                            for c in cells], float).reshape(-1, 6)
            got = self._geom[key] = (cells, arr)
        return got[1]

    def cells_in_region(self, x0: float, y0: float, x1: float, y1: float,
                        t_s: float = 0.0) -> list[int]:
        """Ids of labelled objects whose centre lies inside the rectangle (what a scan of
        that region must find)."""
        return [c.id for c in self.cells_near(x0, y0, x1, y1, t_s) if c.labelled
                and x0 <= c.position(t_s)[0] <= x1 and y0 <= c.position(t_s)[1] <= y1]

    def get(self, cell_id: int) -> Cell:
        if self.fixed is not None:
            for c in self.fixed:
                if c.id == cell_id:
                    return c
        else:
            tile = _tile_of_id(cell_id)
            for c in self._tile(*tile):
                if c.id == cell_id:
                    return c
        raise KeyError(f"No object with id {cell_id} on this slide.")

    def position_of(self, cell_id: int, t_s: float = 0.0) -> tuple[float, float]:
        return self.get(cell_id).position(t_s)

    # -- generation --------------------------------------------------------------------
    def _tile(self, tx: int, ty: int) -> list[Cell]:
        key = (tx, ty)
        if key not in self._tiles:
            self._tiles[key] = self._generate(tx, ty)
        return self._tiles[key]

    def _generate(self, tx: int, ty: int) -> list[Cell]:
        cfg = self.config
        half_w, half_h = cfg.slide_um[0] / 2, cfg.slide_um[1] / 2
        x0, y0 = tx * TILE_UM, ty * TILE_UM
        if x0 >= half_w or y0 >= half_h or x0 + TILE_UM <= -half_w or y0 + TILE_UM <= -half_h:
            return []  # off the slide
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, tx & 0xFFFF, ty & 0xFFFF, 7])
        area_mm2 = (TILE_UM / 1000) ** 2
        n = rng.poisson(cfg.density_per_mm2 * area_mm2)
        d_lo, d_hi = cfg.nucleus_diameter_um
        cells: list[Cell] = []
        for i in range(n):
            d = rng.uniform(d_lo, d_hi)
            el = rng.uniform(*cfg.elongation)
            a, b = d / 2 * math.sqrt(el), d / 2 / math.sqrt(el)
            angle = rng.uniform(0, math.pi)
            bright = float(rng.lognormal(0.0, cfg.brightness_cv))
            kind, sep = KIND_NORMAL, 0.0
            u = rng.random()
            if u < cfg.dim_fraction:
                kind, bright = KIND_DIM, bright * rng.uniform(*cfg.dim_brightness)
            elif u < cfg.dim_fraction + cfg.dividing_fraction:
                # condensed chromatin: smaller, brighter; half of them already two daughters.
                # Never shrunk to debris size: a metaphase plate is still ~half a nucleus.
                a, b = a * rng.uniform(0.55, 0.8), b * rng.uniform(0.4, 0.65)
                bright *= rng.uniform(1.8, 3.0)
                if rng.random() < 0.5:
                    kind, sep = KIND_PAIR, rng.uniform(1.3, 2.5) * 2 * b
                else:
                    kind = KIND_MITOTIC
            # place: touching a neighbour (cluster) or uniformly, avoiding big overlaps
            for _try in range(8):
                if cells and rng.random() < cfg.cluster_fraction:
                    nb = cells[int(rng.integers(len(cells)))]
                    phi = rng.uniform(0, 2 * math.pi)
                    r = (max(nb.a_um, nb.b_um) + max(a, b)) * rng.uniform(0.85, 1.0)
                    x, y = nb.x_um + r * math.cos(phi), nb.y_um + r * math.sin(phi)
                else:
                    x, y = x0 + rng.uniform(0, TILE_UM), y0 + rng.uniform(0, TILE_UM)
                if not (x0 <= x < x0 + TILE_UM and y0 <= y < y0 + TILE_UM):
                    continue
                if abs(x) > half_w - d or abs(y) > half_h - d:
                    continue
                if all(math.hypot(x - c.x_um, y - c.y_um)
                       > 0.8 * (min(a, b) + min(c.a_um, c.b_um)) for c in cells):
                    break
            else:
                continue
            speed = cfg.cell_motion_um_per_s
            heading = rng.uniform(0, 2 * math.pi)
            if speed and cfg.moving_fraction < 1.0 and rng.random() >= cfg.moving_fraction:
                speed = 0.0  # only some cells move (one extra draw, only when asked)
            cells.append(Cell(_make_id(tx, ty, i), x, y, a, b, angle, bright, kind,
                              speed * math.cos(heading), speed * math.sin(heading), sep,
                              int(rng.integers(1 << 31))))
        n_debris = rng.poisson(cfg.debris_per_mm2 * area_mm2)
        for j in range(n_debris):
            r = rng.uniform(*cfg.debris_radius_um)
            x, y = x0 + rng.uniform(0, TILE_UM), y0 + rng.uniform(0, TILE_UM)
            cells.append(Cell(_make_id(tx, ty, 5000 + j), x, y, r, r * rng.uniform(0.6, 1),
                              rng.uniform(0, math.pi), float(rng.uniform(0.8, 4.0)),
                              KIND_DEBRIS, texture_seed=int(rng.integers(1 << 31))))
        return cells


def _make_id(tx: int, ty: int, i: int) -> int:
    # ids stay small, positive and unique per (tile, index) on slides up to ±200 tiles wide
    return ((tx + 256) * 512 + (ty + 256)) * 10_000 + i


def _tile_of_id(cell_id: int) -> tuple[int, int]:
    t = cell_id // 10_000
    return (t // 512 - 256, t % 512 - 256)
