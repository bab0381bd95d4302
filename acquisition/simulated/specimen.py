"""The virtual slide: nuclei (labelled) and debris (unlabelled), generated lazily per tile.

Cells are generated per ``TILE_UM`` square tile from a generator seeded by (seed, tile), so
construction is free, any field is reproducible whatever order it is visited in, and only
tiles near the field of view are ever created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from acquisition.simulated.config import SimConfig

TILE_UM = 200.0
_PER_TILE = 4096  # ids: tile_key * _PER_TILE + k


@dataclass(frozen=True, slots=True)
class Cell:
    """One object on the slide; ``kind`` is "interphase", "mitotic", "dividing" or "debris".

    A "dividing" cell is a pair of condensed chromatin blobs separated by ``sep_um`` along
    ``angle``; it is ONE labelled object, as the Cell Tracking Challenge annotates it.
    """

    id: int
    x_um: float
    y_um: float
    a_um: float  # semi-axis along angle
    b_um: float  # semi-axis across
    angle: float = 0.0  # radians, in stage coordinates
    brightness: float = 1.0
    kind: str = "interphase"
    seed: int = 0
    z_offset_um: float = 0.0
    sep_um: float = 0.0
    motion: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # speed, dir, phase, range

    @property
    def labelled(self) -> bool:
        return self.kind != "debris"

    @property
    def radius_um(self) -> float:
        """Radius of a circle that surely contains the object."""
        return max(self.a_um, self.b_um) * 1.25 + self.sep_um / 2.0

    def position(self, t_s: float) -> tuple[float, float]:
        speed, direction, phase, rng = self.motion
        if speed <= 0.0 or t_s == 0.0:
            return (self.x_um, self.y_um)
        # Bounded wander: starts at (x, y) with the given speed, never leaves +-range.
        u = rng * math.sin(speed * t_s / rng)
        v = 0.5 * rng * (math.sin(0.7 * speed * t_s / rng + phase) - math.sin(phase))
        c, s = math.cos(direction), math.sin(direction)
        return (self.x_um + c * u - s * v, self.y_um + s * u + c * v)

    @classmethod
    def simple(cls, id: int, x_um: float, y_um: float, diameter_um: float = 12.0,
               brightness: float = 1.0, **kw) -> Cell:
        """A round interphase nucleus at a known position (for tests and demos)."""
        r = diameter_um / 2.0
        return cls(id=id, x_um=x_um, y_um=y_um, a_um=r, b_um=r, brightness=brightness,
                   seed=kw.pop("seed", id), **kw)


class Specimen:
    """Cells on a slide centred on stage (0, 0).

    Use :meth:`from_cells` for a fixed list (e.g. one cell at a known position).
    """

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self._fixed: list[Cell] | None = None
        self._tiles: dict[tuple[int, int], list[Cell]] = {}
        w, h = cfg.slide_um
        self.x_range = (-w / 2.0, w / 2.0)
        self.y_range = (-h / 2.0, h / 2.0)
        self._ntx = max(1, math.ceil(w / TILE_UM))
        self._nty = max(1, math.ceil(h / TILE_UM))
        self.max_radius_um = cfg.diameter_um[1] * 1.6 + 5.0
        self.motion_margin_um = (cfg.cell_motion_range_um * 1.5
                                 if cfg.cell_motion_um_per_s > 0 else 0.0)

    @classmethod
    def from_cells(cls, cells, cfg: SimConfig | None = None) -> Specimen:
        spec = cls(cfg or SimConfig())
        spec._fixed = list(cells)
        spec._by_id = {c.id: c for c in spec._fixed}
        spec.max_radius_um = max([c.radius_um for c in spec._fixed] + [1.0]) + 2.0
        spec.motion_margin_um = max([c.motion[3] * 1.5 for c in spec._fixed] + [0.0])
        return spec

    # -- lookup ----------------------------------------------------------------------------
    def objects_near(self, x0: float, y0: float, x1: float, y1: float) -> list[Cell]:
        """All objects (cells and debris) whose *home* centre may matter for a region."""
        m = self.max_radius_um + self.motion_margin_um
        x0, y0, x1, y1 = x0 - m, y0 - m, x1 + m, y1 + m
        if self._fixed is not None:
            return [c for c in self._fixed if x0 <= c.x_um <= x1 and y0 <= c.y_um <= y1]
        tx0 = max(0, int((x0 - self.x_range[0]) // TILE_UM))
        tx1 = min(self._ntx - 1, int((x1 - self.x_range[0]) // TILE_UM))
        ty0 = max(0, int((y0 - self.y_range[0]) // TILE_UM))
        ty1 = min(self._nty - 1, int((y1 - self.y_range[0]) // TILE_UM))
        out: list[Cell] = []
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                out.extend(self._tile(tx, ty))
        return out

    def cells_in_region(self, x0_um: float, y0_um: float, x1_um: float, y1_um: float,
                        t_s: float = 0.0) -> list[int]:
        """Ids of labelled cells whose centre lies inside the stage region at time *t_s*."""
        xa, xb = sorted((x0_um, x1_um))
        ya, yb = sorted((y0_um, y1_um))
        ids = []
        for c in self.objects_near(xa, ya, xb, yb):
            if not c.labelled:
                continue
            x, y = c.position(t_s)
            if xa <= x <= xb and ya <= y <= yb:
                ids.append(c.id)
        return sorted(ids)

    def cell(self, id: int) -> Cell:
        if self._fixed is not None:
            try:
                return self._by_id[id]
            except KeyError:
                raise KeyError(f"No cell with id {id} in this specimen.") from None
        key, k = divmod(abs(id), _PER_TILE)
        ty, tx = divmod(key, self._ntx)
        for c in self._tile(tx, ty) if ty < self._nty else []:
            if c.id == id:
                return c
        raise KeyError(f"No cell with id {id} on this slide.")

    def position_of(self, id: int, t_s: float = 0.0) -> tuple[float, float]:
        """Stage position (µm) that centres object *id* at sim time *t_s*."""
        return self.cell(id).position(t_s)

    # -- generation ------------------------------------------------------------------------
    def _tile(self, tx: int, ty: int) -> list[Cell]:
        cells = self._tiles.get((tx, ty))
        if cells is None:
            cells = self._tiles[(tx, ty)] = self._generate(tx, ty)
        return cells

    def _generate(self, tx: int, ty: int) -> list[Cell]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, tx, ty, 7])
        x0 = self.x_range[0] + tx * TILE_UM
        y0 = self.y_range[0] + ty * TILE_UM
        x1 = min(x0 + TILE_UM, self.x_range[1])
        y1 = min(y0 + TILE_UM, self.y_range[1])
        area_mm2 = (x1 - x0) * (y1 - y0) / 1e6
        base = (ty * self._ntx + tx) * _PER_TILE
        cells: list[Cell] = []
        placed: list[tuple[float, float, float]] = []
        n = rng.poisson(cfg.density_per_mm2 * area_mm2)
        k = 0

        def free(x: float, y: float, r: float, slack: float = 0.9) -> bool:
            return all((x - px) ** 2 + (y - py) ** 2 > (slack * (r + pr)) ** 2
                       for px, py, pr in placed)

        def make(x: float, y: float, kind: str | None = None) -> Cell | None:
            nonlocal k
            d = rng.uniform(*cfg.diameter_um)
            el = rng.uniform(*cfg.elongation)
            a, b = d / 2.0 * math.sqrt(el), d / 2.0 / math.sqrt(el)
            if kind is None:
                kind = "dividing" if rng.random() < cfg.dividing_fraction else "interphase"
            bright = float(rng.lognormal(0.0, cfg.brightness_cv))
            sep = 0.0
            if kind == "dividing":
                sep = rng.uniform(1.0, 1.8) * d / 2.0
                a, b = a * 0.45, b * 0.35
                bright *= rng.uniform(1.8, 2.8)
            elif rng.random() < cfg.dim_fraction:
                bright = rng.uniform(*cfg.dim_brightness)
            motion = (0.0, 0.0, 0.0, 1.0)
            if cfg.cell_motion_um_per_s > 0:
                motion = (cfg.cell_motion_um_per_s * rng.uniform(0.5, 1.5),
                          rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi),
                          cfg.cell_motion_range_um)
            c = Cell(id=base + k, x_um=x, y_um=y, a_um=a, b_um=b,
                     angle=float(rng.uniform(0, math.pi)), brightness=bright, kind=kind,
                     seed=int(rng.integers(2**31)),
                     z_offset_um=float(rng.normal(0, cfg.cell_z_spread_um)),
                     sep_um=sep, motion=motion)
            k += 1
            return c

        for _ in range(n):
            if k >= _PER_TILE // 2:
                break
            for _try in range(10):
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
                c = make(x, y)
                if free(x, y, c.radius_um * 0.8):
                    break
            else:
                continue
            cells.append(c)
            placed.append((c.x_um, c.y_um, c.radius_um * 0.8))
            if rng.random() < cfg.cluster_fraction:  # touching neighbours
                for _j in range(int(rng.integers(1, 3))):
                    nb = make(0.0, 0.0, "interphase")
                    ang = rng.uniform(0, 2 * math.pi)
                    dist = (c.radius_um + nb.radius_um) / 1.25 * rng.uniform(0.85, 1.0)
                    nx, ny = c.x_um + dist * math.cos(ang), c.y_um + dist * math.sin(ang)
                    if not (self.x_range[0] < nx < self.x_range[1]
                            and self.y_range[0] < ny < self.y_range[1]):
                        continue
                    nb = Cell(**{**_asdict(nb), "x_um": nx, "y_um": ny})
                    if free(nx, ny, nb.radius_um * 0.8, slack=0.7):
                        cells.append(nb)
                        placed.append((nx, ny, nb.radius_um * 0.8))
        nd = rng.poisson(cfg.debris_per_mm2 * area_mm2)
        for j in range(min(nd, _PER_TILE // 2 - 1)):
            r = rng.uniform(0.4, 1.5)
            cells.append(Cell(id=base + _PER_TILE // 2 + j, x_um=rng.uniform(x0, x1),
                              y_um=rng.uniform(y0, y1), a_um=r, b_um=r * rng.uniform(0.6, 1),
                              angle=rng.uniform(0, math.pi),
                              brightness=float(rng.uniform(0.5, 4.0)), kind="debris",
                              seed=int(rng.integers(2**31))))
        return cells


def _asdict(c: Cell) -> dict:
    return {f: getattr(c, f) for f in Cell.__slots__}
