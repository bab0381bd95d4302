"""The simulated slide's objects against what its configuration asks for: the sizes,
shapes, kinds, brightness, placement and motion of the nuclei it generates, the boxes
it labels them with, and the lookups every frame and every scan's truth go through.

Every simulator-scored figure (detector AP, find-and-image recall, z extents) is scored
against these objects, so a box half a nucleus off, a slide bound read from the wrong
axis or a lookup that drops a cell would bias all of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _support import ids_reaching

from inscope.acquisition.simulated.config import SimConfig
from inscope.acquisition.simulated.specimen import (
    KIND_DEBRIS,
    KIND_DIM,
    KIND_MITOTIC,
    KIND_NORMAL,
    KIND_PAIR,
    TILE_UM,
    Cell,
    Specimen,
    _make_id,
    _tile_of_id,
)


def _outline(c: Cell, n: int = 20_000) -> np.ndarray:
    """Points on the envelope of every part of *c* (stage µm, relative to its centre)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ca, sa = math.cos(c.angle), math.sin(c.angle)
    u, v = c.a_um * np.cos(t), c.b_um * np.sin(t)
    pts = np.stack([u * ca - v * sa, u * sa + v * ca], axis=1)
    return np.concatenate([pts + o for o in c.part_offsets_um()])


@pytest.mark.parametrize("a, b, angle", [(6.0, 4.0, 0.0), (6.0, 4.0, 0.7), (9.0, 3.0, 2.1),
                                         (5.0, 5.0, 1.0), (7.0, 2.0, math.pi / 2)])
def test_boxes_hold_the_rotated_ellipse_exactly(a, b, angle):
    c = Cell(1, 0.0, 0.0, a, b, angle, 1.0)
    pts = _outline(c)
    hx, hy = c.part_half_extent_um()
    assert hx == pytest.approx(np.abs(pts[:, 0]).max(), rel=1e-6)
    assert hy == pytest.approx(np.abs(pts[:, 1]).max(), rel=1e-6)
    assert c.half_extent_um() == pytest.approx((hx, hy))


@pytest.mark.parametrize("angle", [0.0, 0.6, 1.9])
def test_a_pairs_daughters_sit_apart_across_the_plate_and_its_box_holds_both(angle):
    c = Cell(1, 0.0, 0.0, 4.0, 2.0, angle, 1.0, kind=KIND_PAIR, pair_sep_um=9.0)
    (ax, ay), (bx, by) = c.part_offsets_um()
    # symmetric about the centre, 9 µm apart, along the short axis (perpendicular to
    # the long one, at angle)
    assert (ax + bx, ay + by) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert math.hypot(bx - ax, by - ay) == pytest.approx(9.0)
    assert (bx - ax) * math.cos(angle) + (by - ay) * math.sin(angle) == pytest.approx(
        0.0, abs=1e-9)
    assert (by - ay) * math.cos(angle) - (bx - ax) * math.sin(angle) == pytest.approx(9.0)
    pts = _outline(c)
    assert c.half_extent_um() == pytest.approx((np.abs(pts[:, 0]).max(),
                                                np.abs(pts[:, 1]).max()), rel=1e-6)
    assert Cell(2, 0, 0, 4.0, 2.0, angle, 1.0).part_offsets_um() == [(0.0, 0.0)]


def _all(spec: Specimen) -> list[Cell]:
    """Every object of the slide, tile by tile (not through the lookups under test)."""
    hw, hh = spec.config.slide_um[0] / 2, spec.config.slide_um[1] / 2
    return [c for tx in range(math.floor(-hw / TILE_UM) - 1, math.floor(hw / TILE_UM) + 2)
            for ty in range(math.floor(-hh / TILE_UM) - 1, math.floor(hh / TILE_UM) + 2)
            for c in spec._tile(tx, ty)]


@pytest.fixture(scope="module")
def slide():
    """4 mm² of the default slide (enough nuclei for its fractions to show)."""
    return Specimen(SimConfig(seed=3, slide_um=(2000.0, 2000.0)))


def test_the_slide_holds_what_its_configuration_asks_for(slide):
    cfg = slide.config
    cells = _all(slide)
    nuclei = [c for c in cells if c.kind != KIND_DEBRIS]
    debris = [c for c in cells if c.kind == KIND_DEBRIS]
    area = cfg.slide_um[0] * cfg.slide_um[1] / 1e6
    # Poisson counts per tile (a few nuclei are not placed: no room after 8 tries)
    assert len(nuclei) / area == pytest.approx(cfg.density_per_mm2, rel=0.08)
    assert len(nuclei) / area <= cfg.density_per_mm2 * 1.04
    assert len(debris) / area == pytest.approx(cfg.debris_per_mm2, rel=0.12)
    kinds = np.array([c.kind for c in nuclei])
    assert (kinds == KIND_DIM).mean() == pytest.approx(cfg.dim_fraction, abs=0.025)
    dividing = np.isin(kinds, (KIND_MITOTIC, KIND_PAIR)).mean()
    assert dividing == pytest.approx(cfg.dividing_fraction, abs=0.02)
    assert (kinds == KIND_PAIR).sum() == pytest.approx((kinds == KIND_MITOTIC).sum(), rel=0.4)
    # interphase nuclei: diameter (of the circle of the same area) and elongation as asked
    normal = [c for c in nuclei if c.kind in (KIND_NORMAL, KIND_DIM)]
    d = np.array([2 * math.sqrt(c.a_um * c.b_um) for c in normal])
    el = np.array([c.a_um / c.b_um for c in normal])
    lo, hi = cfg.nucleus_diameter_um
    assert d.min() >= lo - 1e-9 and d.max() <= hi + 1e-9
    assert np.median(d) == pytest.approx((lo + hi) / 2, rel=0.05)
    assert el.min() >= cfg.elongation[0] - 1e-9 and el.max() <= cfg.elongation[1] + 1e-9
    assert np.median(el) == pytest.approx(sum(cfg.elongation) / 2, rel=0.05)
    # brightness: lognormal (median 1, spread brightness_cv), dim ones at 0.15-0.35 of it
    bn = np.array([c.brightness for c in nuclei if c.kind == KIND_NORMAL])
    assert np.median(bn) == pytest.approx(1.0, rel=0.06)
    assert np.std(np.log(bn)) == pytest.approx(cfg.brightness_cv, rel=0.1)
    bd = np.array([c.brightness for c in nuclei if c.kind == KIND_DIM])
    assert np.median(bd) == pytest.approx(0.25, rel=0.2)
    # dividing cells: condensed (smaller, brighter); a pair's daughters 1.3-2.5 x their
    # width apart
    div = [c for c in nuclei if c.kind in (KIND_MITOTIC, KIND_PAIR)]
    assert np.median([c.brightness for c in div]) > 1.8
    assert np.median([2 * math.sqrt(c.a_um * c.b_um) for c in div]) < 0.75 * np.median(d)
    for c in nuclei:
        if c.kind == KIND_PAIR:
            assert 1.3 * 2 * c.b_um <= c.pair_sep_um <= 2.5 * 2 * c.b_um
        else:
            assert c.pair_sep_um == 0.0
    # debris: small, never labelled
    r = np.array([c.a_um for c in debris])
    assert r.min() >= cfg.debris_radius_um[0] and r.max() <= cfg.debris_radius_um[1]
    assert not any(c.labelled for c in debris) and all(c.labelled for c in nuclei)
    # nothing moves unless asked
    assert all(c.vx_um_s == 0 and c.vy_um_s == 0 for c in cells)


def test_nuclei_sit_on_the_slide_in_their_tile_and_never_on_top_of_each_other():
    cfg = SimConfig(seed=4, slide_um=(1400.0, 700.0))  # not square: each axis its own bound
    spec = Specimen(cfg)
    nuclei = [c for c in _all(spec) if c.labelled]
    hh = 350.0
    for c in nuclei:
        # ids name their tile, and the tile holds the centre
        tx, ty = _tile_of_id(c.id)
        assert tx * TILE_UM <= c.x_um < (tx + 1) * TILE_UM
        assert ty * TILE_UM <= c.y_um < (ty + 1) * TILE_UM
    # the slide's nuclei cover both axes up to their own bound (not the other's)
    xs, ys = np.array([c.x_um for c in nuclei]), np.array([c.y_um for c in nuclei])
    assert xs.max() > 600 and xs.min() < -600 and np.abs(ys).max() < hh
    # placement keeps centres apart: more than 0.8 x the sum of the short semi-axes
    pos = np.stack([xs, ys], axis=1)
    short = np.array([min(c.a_um, c.b_um) for c in nuclei])
    dist = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    same_tile = np.array([[_tile_of_id(a.id) == _tile_of_id(b.id) for b in nuclei]
                          for a in nuclei])
    too_close = (dist <= 0.8 * (short[:, None] + short[None, :])) & same_tile
    assert not too_close.any()


def test_each_axis_of_the_slide_bounds_its_own_nuclei():
    for size in [(1200.0, 400.0), (400.0, 1200.0)]:
        cells = [c for c in _all(Specimen(SimConfig(seed=5, slide_um=size))) if c.labelled]
        xs = np.array([c.x_um for c in cells])
        ys = np.array([c.y_um for c in cells])
        for v, half in ((xs, size[0] / 2), (ys, size[1] / 2)):
            d = np.array([2 * min(c.a_um, c.b_um) for c in cells])
            assert (np.abs(v) <= half - d).all()
            assert np.abs(v).max() > half - 60.0


def test_clusters_put_nuclei_against_a_neighbour():
    def touching(frac):
        cfg = SimConfig(seed=6, slide_um=(1000.0, 1000.0), cluster_fraction=frac)
        cells = [c for c in _all(Specimen(cfg)) if c.labelled]
        pos = np.array([(c.x_um, c.y_um) for c in cells])
        big = np.array([max(c.a_um, c.b_um) for c in cells])
        dist = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(dist, np.inf)
        return float((dist <= (big[:, None] + big[None, :]) * 1.0001).any(axis=1).mean())

    none, some, most = touching(0.0), touching(0.25), touching(0.8)
    assert none + 0.05 < some and some + 0.15 < most


def test_moving_cells_move_at_the_configured_speed_and_only_the_asked_fraction():
    cfg = SimConfig(seed=7, slide_um=(1000.0, 1000.0), cell_motion_um_per_s=2.0,
                    moving_fraction=0.4)
    cells = [c for c in _all(Specimen(cfg)) if c.labelled]
    speed = np.array([math.hypot(c.vx_um_s, c.vy_um_s) for c in cells])
    moving = speed > 0
    assert moving.mean() == pytest.approx(0.4, abs=0.06)
    np.testing.assert_allclose(speed[moving], 2.0)
    heading = np.array([math.atan2(c.vy_um_s, c.vx_um_s) for c in np.array(cells)[moving]])
    assert abs(np.mean(np.cos(heading))) < 0.15 and abs(np.mean(np.sin(heading))) < 0.15
    c = np.array(cells)[moving][0]
    assert c.position(3.0) == pytest.approx((c.x_um + 3 * c.vx_um_s, c.y_um + 3 * c.vy_um_s))


def test_a_seed_is_a_slide():
    a = _all(Specimen(SimConfig(seed=8, slide_um=(600.0, 600.0))))
    b = _all(Specimen(SimConfig(seed=8, slide_um=(600.0, 600.0))))
    c = _all(Specimen(SimConfig(seed=9, slide_um=(600.0, 600.0))))
    assert [(x.id, x.x_um, x.a_um, x.texture_seed) for x in a] == \
        [(x.id, x.x_um, x.a_um, x.texture_seed) for x in b]
    assert [x.x_um for x in a[:20]] != [x.x_um for x in c[:20]]


def test_lookups_find_exactly_the_cells_whose_box_reaches_the_rectangle():
    # slow cells (0.8 µm/s, 48 µm in a minute); long nuclei, whose boxes reach far
    # beyond the tile of their centre
    cfg = SimConfig(seed=10, slide_um=(1000.0, 1000.0), cell_motion_um_per_s=0.8,
                    nucleus_diameter_um=(20.0, 40.0), elongation=(1.0, 3.0))
    spec = Specimen(cfg)
    every = _all(spec)
    assert len({c.id for c in every}) == len(every)
    rng = np.random.default_rng(0)
    n_found = 0
    for t in (0.0, 60.0):
        for _ in range(40):
            x0, y0 = rng.uniform(-520, 400, 2)
            x1, y1 = x0 + rng.uniform(1, 150), y0 + rng.uniform(1, 150)
            got = [c.id for c in spec.cells_near(x0, y0, x1, y1, t)]
            assert got == ids_reaching(every, x0, y0, x1, y1, t)
            n_found += len(got)
            inside = [c.id for c in every if c.labelled
                      and x0 <= c.position(t)[0] <= x1 and y0 <= c.position(t)[1] <= y1]
            assert sorted(spec.cells_in_region(x0, y0, x1, y1, t)) == sorted(inside)
    assert n_found > 200
    # the default time is 0
    assert [c.id for c in spec.cells_near(-100, -100, 100, 100)] == \
        [c.id for c in spec.cells_near(-100, -100, 100, 100, 0.0)]
    assert sorted(spec.cells_in_region(-100, -100, 100, 100)) == \
        sorted(spec.cells_in_region(-100, -100, 100, 100, 0.0))


def test_any_cell_is_found_by_its_id_and_a_wrong_id_is_refused():
    spec = Specimen(SimConfig(seed=11, slide_um=(800.0, 800.0), cell_motion_um_per_s=1.0))
    for c in _all(spec)[::37]:
        assert spec.get(c.id) is c
        assert spec.position_of(c.id, 5.0) == c.position(5.0)
        assert spec.position_of(c.id) == (c.x_um, c.y_um)
    for tx, ty, i in [(0, 0, 0), (-3, 2, 17), (200, -200, 9999)]:
        assert _tile_of_id(_make_id(tx, ty, i)) == (tx, ty)
    with pytest.raises(KeyError, match="No object with id 12345"):
        spec.get(12345)
    fixed = Specimen.from_cells([Cell(5, 1.0, 2.0, 3.0, 2.0, 0.0, 1.0)])
    assert fixed.get(5).x_um == 1.0 and fixed.config == SimConfig()
    with pytest.raises(KeyError, match="id 6"):
        fixed.get(6)


def test_the_grid_slide_is_a_jittered_grid_of_separate_nuclei():
    cfg = SimConfig(seed=12)
    spec = Specimen.grid(cfg, extent_um=170.0, spacing_um=34.0, seed=3)
    assert spec.config is cfg
    cells = spec.fixed
    assert cells is not None
    nodes = np.arange(-170.0, 170.0 + 1e-9, 34.0)
    assert len(nodes) == 11 and len(cells) == 121
    assert [c.id for c in cells] == list(range(1, 122))
    pos = np.array([(c.x_um, c.y_um) for c in cells])
    grid = np.array([(gx, gy) for gx in nodes for gy in nodes])
    assert np.abs(pos - grid).max() <= 5.0 and np.abs(pos - grid).max() > 4.0
    a = np.array([c.a_um for c in cells])
    ratio = np.array([c.b_um / c.a_um for c in cells])
    assert a.min() >= 5.0 and a.max() <= 8.0 and a.max() - a.min() > 2.0
    assert ratio.min() >= 0.75 and ratio.max() <= 1.0
    bright = np.array([c.brightness for c in cells])
    assert bright.min() >= 0.8 and bright.max() <= 1.3
    assert len({c.texture_seed for c in cells}) == 121
    assert {c.kind for c in cells} == {KIND_NORMAL}
    # never touching: no two boxes overlap
    ext = np.array([c.half_extent_um() for c in cells])
    gap_x = np.abs(pos[:, None, 0] - pos[None, :, 0]) - (ext[:, None, 0] + ext[None, :, 0])
    gap_y = np.abs(pos[:, None, 1] - pos[None, :, 1]) - (ext[:, None, 1] + ext[None, :, 1])
    overlap = (gap_x < 0) & (gap_y < 0)
    np.fill_diagonal(overlap, False)
    assert not overlap.any()
    # the seed is the layout
    again = Specimen.grid(cfg, 170.0, 34.0, seed=3).fixed
    other = Specimen.grid(cfg, 170.0, 34.0, seed=4).fixed
    assert [c.x_um for c in again] == [c.x_um for c in cells]
    assert [c.x_um for c in other] != [c.x_um for c in cells]
