"""Find-and-image's arithmetic on known values (``inscope.control.workflow``): the z-stack
spec and its planes, a cell's row of cells.csv, the field grid of a scan, the field side
under a rotated camera, which signal and fraction read a z extent, the scan's plane, a
cell's z extent from its per-plane profile, and how the scan's detections become one
record per cell in visiting order.

Real parts: the simulated microscope and the classical detector behind FindAndImage
(``_merge`` asks the scope where the stage is); the rest are plain functions on numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _support import sim_scope

from inscope.control.focus import FocusResult
from inscope.control.workflow import (
    CSV_FIELDS,
    MAX_FIELDS,
    SIGNAL_FRAC_INTENSITY,
    SIGNAL_FRAC_SECTIONED,
    SIGNAL_FRAC_WIDEFIELD,
    CellRecord,
    FindAndImage,
    ZStackSpec,
    _Candidate,
    _complete_cut_boxes,
    _cut_sides,
    _extent,
    _field_um,
    _rise_over,
    _weak,
    plan_fields,
    scan_plane,
    signal_for,
)
from inscope.detector.classical import ClassicalDetector


# -- ZStackSpec ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, words", [
    ({"signal": "contrast"}, "signal is one of sharpness, intensity, auto"),
    ({"signal_frac": 0.0}, "0 < signal_frac < 1"),
    ({"signal_frac": 1.0}, "0 < signal_frac < 1"),
    ({"min_snr": -0.1}, "min_snr >= 0"),
    ({"min_snr": math.nan}, "min_snr >= 0"),
    ({"step_um": 0.0}, "step_um > 0"),
    ({"range_um": (0.5, 2.0)}, "below <= 0"),
    ({"range_um": (-2.0, -0.5)}, "above >= 0"),
])
def test_a_bad_z_stack_spec_says_what_is_wrong(kw, words):
    with pytest.raises(ValueError, match=words):
        ZStackSpec(**kw)


def test_a_z_stack_spec_at_its_limits_is_accepted():
    s = ZStackSpec(range_um=(0, 0), signal_frac=0.01, min_snr=0.0)
    assert s.range_um == (0.0, 0.0) and isinstance(s.range_um[0], float)
    assert s.fixed_offsets() == [0.0]
    for sig in ("sharpness", "intensity", "auto"):
        assert ZStackSpec(signal=sig).signal == sig


def test_fixed_planes_step_out_from_focus_and_stay_inside_the_range():
    assert ZStackSpec().fixed_offsets() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert ZStackSpec(range_um=(-1.5, 2.2), step_um=0.5).fixed_offsets() == [
        -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    # 0.9 / 0.3 is 2.9999999999999996 in floating point: still three steps each way
    offs = ZStackSpec(range_um=(-0.9, 0.9), step_um=0.3).fixed_offsets()
    np.testing.assert_allclose(offs, [-0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9])
    assert ZStackSpec(range_um=(-0.5, 0.0), step_um=1.0).fixed_offsets() == [0.0]


# -- cells.csv -----------------------------------------------------------------------------
def test_a_cells_row_has_every_column_with_its_precision_and_blanks_for_unknowns():
    rec = CellRecord(id=3, x_um=1.23456, y_um=-7.0, z_um=2.5, box=(1.04, 2.06, 30.0, 41.55),
                     score=0.98765, status="imaged", file="cell_0003.ome.tif",
                     seconds=1.23456, sim_seconds=0.5, n_planes=9, reason="",
                     stage_x_um=1.0, stage_y_um=-7.25, z_lo_um=-1.0, z_hi_um=4.0,
                     focus_images=5)
    row = rec.row()
    assert list(row) == CSV_FIELDS
    assert row == {"id": 3, "x_um": "1.235", "y_um": "-7.000", "z_um": "2.500",
                   "box_x0_px": "1.0", "box_y0_px": "2.1", "box_x1_px": "30.0",
                   "box_y1_px": "41.5", "score": "0.988", "status": "imaged",
                   "file": "cell_0003.ome.tif", "seconds": "1.235", "sim_seconds": "0.500",
                   "n_planes": 9, "reason": "", "stage_x_um": "1.000",
                   "stage_y_um": "-7.250", "z_lo_um": "-1.000", "z_hi_um": "4.000",
                   "focus_images": 5}
    blank = CellRecord(id=1, x_um=0.0, y_um=0.0).row()
    for k in ("z_um", "sim_seconds", "stage_x_um", "stage_y_um", "z_lo_um", "z_hi_um"):
        assert blank[k] == "", k
    assert blank["status"] == "pending" and blank["n_planes"] == 0


# -- the field and its grid ---------------------------------------------------------------------
def _rot(deg: float, px: float = 0.5, mirror: bool = False) -> np.ndarray:
    t = math.radians(deg)
    a = px * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return a @ np.diag([-1.0, 1.0]) if mirror else a


@pytest.mark.parametrize("deg, side", [(0, 200.0), (90, 200.0), (180, 200.0),
                                       (45, 200.0 / math.sqrt(2)),
                                       (30, 200.0 / (math.cos(math.pi / 6) + 0.5))])
@pytest.mark.parametrize("mirror", [False, True])
def test_the_square_inside_a_rotated_field(deg, side, mirror):
    # a 400 x 600 camera at 0.5 µm/px: the short side is 200 µm; turned by 45 degrees the
    # largest axis-aligned square inside it is 200 / sqrt(2); a mirrored camera the same
    assert _field_um(_rot(deg, mirror=mirror), (400, 600)) == pytest.approx(side)


def test_the_grid_covers_the_region_grown_by_half_the_overlap_in_serpentine_order():
    # region 0-100 µm, fields of 50 µm overlapping by 10: the grown region is -5..105,
    # three fields a side, centred 20, 50, 80 (the outer ones flush with its edges)
    f = plan_fields((0, 0, 100, 100), 50.0, 10.0)
    xs = [20.0, 50.0, 80.0]
    want = ([(x, 20.0) for x in xs] + [(x, 50.0) for x in xs[::-1]]
            + [(x, 80.0) for x in xs])
    np.testing.assert_allclose(f, want)
    # each neighbour pair overlaps by at least the overlap
    assert 50.0 - (xs[1] - xs[0]) >= 10.0


def test_the_grid_of_an_uneven_region_spreads_its_fields_evenly():
    f = plan_fields((10, -30, 131, 5), 40.0, 8.0)
    xs = sorted({x for x, _ in f})
    ys = sorted({y for _, y in f})
    # x: 6..135 (129 µm) needs ceil(89 / 32) + 1 = 4 fields; y: -34..9 (43) needs 2
    assert len(xs) == 4 and len(ys) == 2 and len(f) == 8
    assert xs[0] == pytest.approx(26.0) and xs[-1] == pytest.approx(115.0)
    assert np.diff(xs) == pytest.approx([(115.0 - 26.0) / 3] * 3)
    assert ys == pytest.approx([-14.0, -11.0])
    # every point of the grown region lies in some field
    g = np.mgrid[6:135:1.0, -34:9:1.0].reshape(2, -1).T
    c = np.asarray(f)
    inside = (np.abs(g[:, None, :] - c[None, :, :]) <= 20.0 + 1e-9).all(axis=2).any(axis=1)
    assert inside.all()


def test_a_region_smaller_than_a_field_is_one_field_at_its_centre():
    assert plan_fields((0, 0, 10, 20), 100.0, 25.0) == [(5.0, 10.0)]
    # exactly a field once grown (region 90 + overlap 10 = 100): still one
    assert plan_fields((0, 0, 90, 90), 100.0, 10.0) == [(45.0, 45.0)]
    assert len(plan_fields((0, 0, 90.5, 90), 100.0, 10.0)) == 2


@pytest.mark.parametrize("region, field_um, overlap_um, words", [
    ((0, 0, math.nan, 10), 50.0, 5.0, "four finite numbers"),
    ((0, 0, math.inf, 10), 50.0, 5.0, "four finite numbers"),
    ((10, 0, 10, 10), 50.0, 5.0, "x1 > x0 and y1 > y0"),
    ((0, 10, 10, 0), 50.0, 5.0, "x1 > x0 and y1 > y0"),
    ((0, 0, 10, 10), 50.0, 50.0, "smaller than the field"),
])
def test_a_region_that_cannot_be_planned_says_why(region, field_um, overlap_um, words):
    with pytest.raises(ValueError, match=words):
        plan_fields(region, field_um, overlap_um)


def test_a_region_of_too_many_fields_is_refused_before_planning():
    side = 10.0 * (math.isqrt(MAX_FIELDS) + 1)  # (sqrt(MAX) + 1)^2 fields of 10 µm
    with pytest.raises(ValueError, match=f"at most {MAX_FIELDS}"):
        plan_fields((0, 0, side, side), 10.0, 0.0)
    n = math.isqrt(MAX_FIELDS)
    assert len(plan_fields((0, 0, 10.0 * n, 10.0 * (MAX_FIELDS // n)), 10.0, 0.0)) == (
        n * (MAX_FIELDS // n))


# -- which signal reads a z extent ---------------------------------------------------------
class _Scope:
    def __init__(self, sectioned):
        self.optical_sectioning = sectioned


@pytest.mark.parametrize("sectioned, spec, want", [
    (False, ZStackSpec(), ("sharpness", SIGNAL_FRAC_WIDEFIELD, "widefield planes")),
    (True, ZStackSpec(), ("auto", SIGNAL_FRAC_SECTIONED,
                          "optically sectioned planes (confocal-like)")),
    (True, ZStackSpec(signal="sharpness"), ("sharpness", SIGNAL_FRAC_SECTIONED,
                                            "optically sectioned planes (confocal-like)")),
    (False, ZStackSpec(signal="intensity"), ("intensity", SIGNAL_FRAC_INTENSITY,
                                             "intensity")),
    (True, ZStackSpec(signal="intensity"), ("intensity", SIGNAL_FRAC_INTENSITY,
                                            "intensity")),
    (True, ZStackSpec(signal_frac=0.3), ("auto", 0.3, "given")),
    (False, ZStackSpec(signal="intensity", signal_frac=0.4), ("intensity", 0.4, "given")),
])
def test_the_signal_and_fraction_follow_the_spec_then_the_microscope(sectioned, spec, want):
    assert signal_for(spec, _Scope(sectioned)) == want


def test_a_microscope_that_does_not_say_is_read_as_widefield():
    assert signal_for(ZStackSpec(), object())[0:2] == ("sharpness", SIGNAL_FRAC_WIDEFIELD)


# -- the scan's plane ------------------------------------------------------------------------
def _sweep(zs, vals, ok=True) -> FocusResult:
    return FocusResult(0.0, 0.0, 0.0, len(zs), 0.0, samples=list(zip(zs, vals, strict=True)),
                       ok=ok)


def test_the_scan_plane_is_the_middle_of_the_sweeps_top():
    # one sharp peak at 2: its middle is the peak (log-sharpness symmetric about it)
    zs = [-4.0, -2.0, 0.0, 2.0, 4.0, 6.0]
    assert scan_plane(_sweep(zs, [1.0, 2.0, 5.0, 10.0, 5.0, 2.0])) == pytest.approx(2.0)
    # a plateau from 0 to 4 (cells at several heights) with its peak at 4: the middle
    v = [1.0, 1.0, 9.5, 9.0, 10.0, 1.0]
    assert scan_plane(_sweep(zs, v)) == pytest.approx(2.0, abs=0.2)
    # the planes come in any order
    assert scan_plane(_sweep(zs[::-1], v[::-1])) == pytest.approx(scan_plane(_sweep(zs, v)))


def test_no_scan_plane_from_a_failed_short_or_one_sided_sweep():
    zs = [-2.0, 0.0, 2.0, 4.0]
    assert scan_plane(_sweep(zs, [1.0, 5.0, 10.0, 5.0], ok=False)) is None
    assert scan_plane(_sweep(zs[:2], [1.0, 5.0])) is None
    assert scan_plane(_sweep(zs[:3], [1.0, 5.0, 1.0])) == pytest.approx(0.0)
    # still rising at the end: the top is open on one side
    assert scan_plane(_sweep(zs, [1.0, 2.0, 4.0, 8.0])) is None
    assert scan_plane(_sweep(zs, [8.0, 4.0, 2.0, 1.0])) is None


# -- a cell's z extent -----------------------------------------------------------------------
def _tri(zs, peak_z, half_width, peak=10.0):
    return [(z, max(0.0, peak * (1 - abs(z - peak_z) / half_width))) for z in zs]


def test_the_extent_ends_where_the_signal_crosses_its_fraction_between_planes():
    zs = np.arange(-6.0, 6.5, 1.0)
    # a triangle peaking between planes, at 0.5, and reaching 0 at +-4 um from it: the
    # planes at 0 and 1 hold the sampled peak, 8.75; 60 % of that, 5.25, is 1.9 um from
    # 0.5 on each side (linear between planes, so the interpolation is exact)
    lo, hi = _extent(_tri(zs, 0.5, 4.0), 0.6)
    assert (lo, hi) == pytest.approx((0.5 - 1.9, 0.5 + 1.9))
    lo, hi = _extent(_tri(zs, 0.5, 4.0), 0.25)  # 2.1875: 3.125 um from 0.5
    assert (lo, hi) == pytest.approx((0.5 - 3.125, 0.5 + 3.125))


def test_one_plane_under_the_fraction_does_not_end_the_extent_two_do():
    zs = [float(z) for z in range(9)]
    v = [0.0, 1.0, 8.0, 2.0, 10.0, 9.0, 1.0, 9.0, 0.0]
    # up: 5 is in, 6 under, 7 in again (bridged), 8 out; down: 3 under, 2 in, 1 out
    lo, hi = _extent(list(zip(zs, v, strict=True)), 0.5)
    assert lo == pytest.approx(2 - (8.0 - 5.0) / (8.0 - 1.0))
    assert hi == pytest.approx(7 + (9.0 - 5.0) / 9.0)
    v2 = [0.0, 1.0, 8.0, 2.0, 10.0, 9.0, 1.0, 1.0, 9.0]  # a two-plane dip ends it
    lo2, hi2 = _extent(list(zip(zs, v2, strict=True)), 0.5)
    assert lo2 == pytest.approx(lo) and hi2 == pytest.approx(5 + 4.0 / 8.0)


def test_an_extent_open_at_the_stacks_end_stops_at_its_last_plane():
    zs = [0.0, 1.0, 2.0, 3.0]
    assert _extent(list(zip(zs, [10.0, 9.0, 8.0, 1.0], strict=True)), 0.5) == (
        pytest.approx(0.0), pytest.approx(2 + 3.0 / 7.0))
    assert _extent(list(zip(zs, [1.0, 8.0, 9.0, 10.0], strict=True)), 0.5) == (
        pytest.approx(1 - 3.0 / 7.0), pytest.approx(3.0))
    assert _extent([(2.0, 5.0)], 0.5) == (2.0, 2.0)


def test_no_extent_without_signal():
    for prof in ([], [(0.0, 0.0), (1.0, 0.0)], [(0.0, -1.0), (1.0, -2.0)]):
        lo, hi = _extent(prof, 0.5)
        assert math.isnan(lo) and math.isnan(hi)


def test_the_extent_is_the_peaks_own_not_a_second_blob_beyond_a_gap():
    zs = [float(z) for z in range(10)]
    v = [0.0, 6.0, 6.0, 0.0, 0.0, 0.0, 7.0, 10.0, 7.0, 0.0]
    lo, hi = _extent(list(zip(zs, v, strict=True)), 0.5)
    assert lo == pytest.approx(6 - 2.0 / 7.0) and hi == pytest.approx(8 + 2.0 / 7.0)


def test_a_signal_under_min_snr_times_the_noise_floor_is_too_weak():
    prof = [(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)]
    assert _weak(prof, [1.0, 2.0, 100.0], 1.0) is None  # 3 >= 1 x median 2
    msg = _weak(prof, [1.0, 2.0, 100.0], 2.0)  # 3 < 2 x 2
    assert msg is not None and "peak sharpness 3" in msg and "2 x the noise floor 2" in msg
    assert _weak(prof, [1.5, 1.5], 2.0) is None  # exactly at it: measured
    assert _weak([], [1.0], 1.0) is None and _weak(prof, [], 1.0) is None


def test_how_much_sharper_the_sweeps_best_image_is_than_the_one_nearest_a_plane():
    zs = [0.0, 1.0, 2.0, 3.0]
    vals = np.array([2.0, 4.0, 8.0, 0.0])
    assert _rise_over(zs, vals, 0.9) == pytest.approx(2.0)   # nearest is z 1 (4)
    assert _rise_over(zs, vals, 0.4) == pytest.approx(4.0)   # nearest is z 0 (2)
    assert _rise_over(zs, vals, 2.2) == pytest.approx(1.0)
    assert _rise_over(zs, vals, 3.0) == math.inf             # no sharpness there


# -- one record per cell -------------------------------------------------------------------
@pytest.fixture()
def finder(tmp_path):
    scope = sim_scope()
    f = FindAndImage(scope, ClassicalDetector(), region=(-50.0, -50.0, 50.0, 50.0),
                     out_dir=tmp_path)
    yield f
    scope.close()


def _cand(x, y, *, size=10.0, score=0.9, partial=False, field=0):
    return _Candidate(np.array([x, y], float), np.array([size, size], float), score,
                      partial, field, np.array([0.0, 0.0, 20.0, 20.0]))


def test_one_record_per_cell_the_best_whole_view_kept(finder):
    recs = finder._merge([_cand(10.0, 0.0, score=0.7), _cand(12.0, 1.0, score=0.95),
                          _cand(30.0, 0.0, score=0.8)])
    assert [(r.x_um, r.y_um, r.score) for r in recs] == [(12.0, 1.0, 0.95),
                                                         (30.0, 0.0, 0.8)]
    # closer than half the smaller cell (5 µm) is the same cell; 5 µm apart is not
    assert len(finder._merge([_cand(0.0, 0.0), _cand(4.9, 0.0)])) == 1
    assert len(finder._merge([_cand(0.0, 0.0), _cand(5.0, 0.0)])) == 2
    assert len(finder._merge([_cand(0.0, 0.0), _cand(5.0, 0.0, size=30.0)])) == 2


def test_a_cut_off_view_gives_way_to_a_whole_one_and_matches_within_the_box(finder):
    whole, cut = _cand(20.0, 0.0, score=0.6), _cand(24.0, 4.0, score=0.99, partial=True)
    recs = finder._merge([cut, whole])
    assert len(recs) == 1 and recs[0].score == 0.6 and not recs[0].partial
    # a cut box's centre is biased: same cell anywhere inside the other's half size
    assert len(finder._merge([whole, _cand(25.0, 5.0, partial=True)])) == 1
    assert len(finder._merge([whole, _cand(25.1, 0.0, partial=True)])) == 2
    # with a cut-off one bigger, its half size counts
    assert len(finder._merge([whole, _cand(27.0, 0.0, size=14.0, partial=True)])) == 1


def _cut(xy, box, outward, score=0.9):
    """A box cut by its field's edge, as the scan makes it (*outward*: the stage vector
    of one pixel towards the cut edge per image axis, as columns)."""
    b = np.asarray(box, float)
    return _Candidate(np.asarray(xy, float), np.array([b[2] - b[0], b[3] - b[1]]) * 0.645,
                      score, True, 1, b, outward=np.asarray(outward, float))


def _whole_px(w, h):
    return _Candidate(np.zeros(2), np.array([w, h]) * 0.645, 0.9, False, 0,
                      np.array([10.0, 10.0, 10.0 + w, 10.0 + h]))


def test_a_cut_box_centre_moves_out_to_a_typical_cells_centre():
    a = np.array([[0.0, -0.5], [0.5, 0.0]])  # a camera turned 90 degrees, 0.5 um pixels
    wholes = [_whole_px(30.0, 20.0), _whole_px(32.0, 22.0), _whole_px(28.0, 18.0)]
    # cut at the bottom (image +y): 4 px of a typical 20 px seen, the centre 8 px further
    bottom = _cut([10.0, 10.0], [100.0, 124.0, 110.0, 128.0], a * [0.0, 1.0])
    # cut at the left (image -x): 12 of 30 px seen, 9 px further left
    left = _cut([0.0, 0.0], [-0.5, 50.0, 11.5, 70.0], a * [-1.0, 0.0])
    # bigger than typical along the cut axis: how far it reaches is unknown, kept
    big = _cut([5.0, 5.0], [-0.5, 50.0, 40.0, 60.0], a * [-1.0, 0.0])
    # cut on both sides of x (wider than the field) and at the top: moves along image y
    # only (6.5 of 20 px seen)
    both = _cut([1.0, 1.0], [-0.5, -0.5, 127.5, 6.0], a * [0.0, -1.0])
    got = _complete_cut_boxes([*wholes, bottom, left, big, both])
    assert got[3].xy == pytest.approx([10.0 - 0.5 * 8.0, 10.0])  # +y px -> -x stage
    assert got[4].xy == pytest.approx([0.0, -0.5 * 9.0])  # -x px -> -y stage
    assert got[5].xy == pytest.approx([5.0, 5.0])
    assert got[6].xy == pytest.approx([1.0 + 0.5 * 6.75, 1.0])  # -y px -> +x stage
    assert all(g is w for g, w in zip(got[:3], wholes, strict=True))
    # sizes: the typical size along the cut axis, as seen along the other
    assert got[3].size_um == pytest.approx(np.array([10.0, 20.0]) * 0.645)
    assert got[4].size_um == pytest.approx(np.array([30.0, 20.0]) * 0.645)
    assert got[5].size_um == pytest.approx(np.array([40.5, 10.0]) * 0.645)
    assert got[6].size_um == pytest.approx(np.array([128.0, 20.0]) * 0.645)
    # the scan's own candidates are left as they were (merging twice gives one answer)
    assert bottom.xy.tolist() == [10.0, 10.0]


def test_cut_boxes_stay_where_no_whole_box_gives_a_typical_size():
    c = _cut([3.0, 4.0], [100.0, 124.0, 110.0, 128.0], [[0.0, 0.0], [0.0, 0.645]])
    assert _complete_cut_boxes([c])[0].xy.tolist() == [3.0, 4.0]


def test_a_small_cells_copy_at_the_edge_still_merges_with_it_seen_whole(finder):
    # a cell of 10 px (typical 30 px) whose box ends at the field's edge in one field and
    # lies inside the next: its cut copy moves out 10 px, beyond the cell's own half
    # size, and still merges (the cut copy takes the typical size)
    cands = [_whole_px(30.0, 30.0), _whole_px(30.0, 30.0), _whole_px(30.0, 30.0)]
    for k, c in enumerate(cands):
        c.xy = np.array([-40.0 + 20.0 * k, -40.0])
    small = _Candidate(np.array([20.0, 20.0]), np.array([10.0, 10.0]) * 0.645, 0.9, False,
                       1, np.array([50.0, 50.0, 60.0, 60.0]))
    copy = _cut([20.0, 20.0], [117.5, 40.0, 127.5, 50.0], [[0.645, 0.0], [0.0, 0.0]])
    recs = finder._merge([*cands, small, copy])
    assert sorted((r.x_um, r.y_um) for r in recs if r.x_um == 20.0) == [(20.0, 20.0)]
    assert len(recs) == 4


def test_a_box_is_cut_within_the_same_distance_of_each_side_of_the_field():
    """A 100 x 128 px field (pixel centres 0-99, 0-127): a box is cut where it reaches
    within 2 px of the first or last pixel centre, the same on every side."""
    def cut(box):
        return _cut_sides(np.array(box, float), (128, 100), 2.0).tolist()

    assert cut((2.0, 40.0, 20.0, 60.0)) == [[True, False], [False, False]]
    assert cut((2.1, 40.0, 20.0, 60.0)) == [[False, False], [False, False]]
    assert cut((80.0, 40.0, 97.0, 60.0)) == [[False, False], [True, False]]
    assert cut((80.0, 40.0, 96.9, 60.0)) == [[False, False], [False, False]]
    assert cut((40.0, 2.0, 60.0, 20.0)) == [[False, True], [False, False]]
    assert cut((40.0, 100.0, 60.0, 125.0)) == [[False, False], [False, True]]
    assert cut((40.0, 100.0, 60.0, 124.9)) == [[False, False], [False, False]]
    # a box ending 1.7 px short of the frame's extent (the confocal slide's case)
    assert cut((80.0, 40.0, 97.8, 60.0))[1][0]
    assert cut((-0.5, -0.5, 99.5, 127.5)) == [[True, True], [True, True]]


def test_a_sliver_at_a_fields_edge_merges_with_the_cell_seen_whole(finder):
    # the scan's boxes of one nucleus on a HeLa slide (bench_control, fov 256, 0.645 um
    # pixels): whole in one field, and its 2-3 px rim at the bottom edge of two fields
    # above, 9.4 um from its centre (beyond the whole box's half height): the first
    # rim became a record of its own, given up as lost after its visit
    finder.region = (200.0, 300.0, 330.0, 420.0)
    whole = _Candidate(np.array([266.21, 363.74]), np.array([15.73, 17.72]), 0.99, False,
                       21, np.array([63.54, 106.2, 87.92, 133.68]))
    down = [[0.0, 0.0], [0.0, 0.645]]
    rims = [_cut([267.24, 354.35], [239.65, 252.31, 252.99, 255.11], down, score=0.885),
            _cut([267.66, 354.27], [69.05, 252.4, 86.89, 254.79], down, score=0.769)]
    for _ in range(2):  # the same answer when merged again
        recs = finder._merge([whole, *rims])
        assert [(r.x_um, r.y_um, r.partial) for r in recs] == [(266.21, 363.74, False)]


def test_a_given_dedup_radius_decides_alone(finder):
    finder.dedup_radius_um = 8.0
    assert len(finder._merge([_cand(0.0, 0.0), _cand(7.9, 0.0)])) == 1
    assert len(finder._merge([_cand(0.0, 0.0), _cand(8.0, 0.0)])) == 2
    assert len(finder._merge([_cand(0.0, 0.0, partial=True), _cand(0.0, 8.5)])) == 2


def test_cells_outside_the_region_are_dropped_cut_ones_by_their_reach(finder):
    recs = finder._merge([_cand(49.0, 0.0), _cand(51.0, 20.0),
                          _cand(54.0, -20.0, partial=True), _cand(56.0, 40.0, partial=True)])
    # whole: by its centre; cut (size 10): its centre may lie 5 µm out
    assert sorted((r.x_um, r.partial) for r in recs) == [(49.0, False), (54.0, True)]


def test_cells_are_visited_nearest_first_from_where_the_stage_is(finder):
    finder.scope.move_xy(40.0, 40.0)
    recs = finder._merge([_cand(-40.0, -40.0, score=0.99), _cand(0.0, 0.0, score=0.5),
                          _cand(35.0, 30.0, score=0.6), _cand(-40.0, 30.0, score=0.7)])
    assert [(r.x_um, r.y_um) for r in recs] == [(35.0, 30.0), (0.0, 0.0), (-40.0, 30.0),
                                                (-40.0, -40.0)]
    assert [r.id for r in recs] == [1, 2, 3, 4]
    r = recs[0]
    assert r.box == (0.0, 0.0, 20.0, 20.0) and r.size_um == (10.0, 10.0)
    assert r.field_index == 0 and r.status == "pending"


# -- the z extent at its edges ---------------------------------------------------------------
def _prof(v):
    return [(float(i), float(x)) for i, x in enumerate(v)]


def test_the_extent_runs_to_a_stacks_first_or_last_plane_when_still_above_it():
    # the peak at a stack's first plane, the last plane bright again: the extent does not
    # wrap around to it
    assert _extent(_prof([10, 9, 1, 0, 8]), 0.5) == (0.0, pytest.approx(1 + 4.0 / 8.0))
    # the peak on the second plane with the first still above the fraction
    assert _extent(_prof([8, 10, 1, 0]), 0.5) == (0.0, pytest.approx(1 + 5.0 / 9.0))
    # ... and on the last but one with the last above it
    assert _extent(_prof([0, 1, 10, 8]), 0.5) == (pytest.approx(2 - 5.0 / 9.0), 3.0)


def test_a_dip_next_to_the_stacks_end_is_bridged_to_it():
    assert _extent(_prof([8, 2, 10, 1, 0]), 0.5)[0] == 0.0
    assert _extent(_prof([0, 1, 10, 2, 8]), 0.5)[1] == 4.0


def test_a_dip_far_from_the_ends_is_bridged_by_two_planes():
    # the peak at 6, a dip at 5, back above at 4 and 3, out at 2
    lo, _ = _extent(_prof([0, 0, 1, 9, 9, 2, 10, 0, 0]), 0.5)
    assert lo == pytest.approx(3 - 4.0 / 8.0)


def test_a_plane_exactly_at_the_fraction_counts_as_inside_across_a_dip():
    # thr 5: plane 1 is exactly at it, beyond the dip at 2
    lo, hi = _extent(_prof([0, 5, 2, 10, 2, 5, 0]), 0.5)
    assert (lo, hi) == (pytest.approx(1.0), pytest.approx(5.0))


def test_a_weak_but_positive_profile_has_an_extent():
    lo, hi = _extent(_prof([0.0, 0.2, 0.5, 0.2, 0.0]), 0.5)
    assert (lo, hi) == (pytest.approx(2 - 0.5 / 0.6), pytest.approx(2 + 0.5 / 0.6))


def test_a_sweep_of_values_under_one_rises_as_much():
    zs = [0.0, 1.0, 2.0]
    assert _rise_over(zs, np.array([0.2, 0.4, 0.8]), 0.0) == pytest.approx(4.0)


def test_the_scan_plane_does_not_depend_on_the_sharpness_scale():
    zs = [-4.0, -2.0, 0.0, 2.0, 4.0, 6.0]
    v = np.array([1.0, 1.0, 9.5, 9.0, 10.0, 1.0])
    assert scan_plane(_sweep(zs, v * 1e-3)) == pytest.approx(scan_plane(_sweep(zs, v)))


# -- the region, its refusal and its cells ---------------------------------------------------
def test_a_region_of_zero_height_is_refused():
    with pytest.raises(ValueError, match="y1 > y0"):
        plan_fields((0, 10, 10, 10), 50.0, 5.0)


def test_the_field_count_is_refused_only_past_the_most_a_scan_plans(monkeypatch):
    import inscope.control.workflow as wf

    monkeypatch.setattr(wf, "MAX_FIELDS", 10)
    # fields of 10 µm overlapping by 2 (step 8, the region grown by 1 each side); x: one
    # column (0.5-8.5 grown to 10 µm); y grown to 81.2 µm: ceil(71.2 / 8) + 1 = 10 rows
    assert len(plan_fields((0.5, 3.0, 8.5, 82.2), 10.0, 2.0)) == 10
    # grown to 82.8 µm: ceil(72.8 / 8) + 1 = 11 rows: refused
    with pytest.raises(ValueError, match="needs 11 fields"):
        plan_fields((0.5, 3.0, 8.5, 83.8), 10.0, 2.0)


def test_the_region_holds_its_edges_on_every_side_and_cut_cells_by_their_reach(finder):
    for xy, grow, inside in (((-50.0, 0.0), 0.0, True), ((50.0, 0.0), 0.0, True),
                             ((0.0, -50.0), 0.0, True), ((0.0, 50.0), 0.0, True),
                             ((-50.1, 0.0), 0.0, False), ((50.1, 0.0), 0.0, False),
                             ((0.0, -50.1), 0.0, False), ((0.0, 50.1), 0.0, False),
                             ((-54.0, 0.0), 4.0, True), ((0.0, -54.0), 4.0, True),
                             ((0.0, 54.0), 4.0, True), ((0.0, 54.1), 4.0, False),
                             ((0.0, -54.1), 4.0, False)):
        assert bool(finder._in_region(np.array(xy), grow)) is inside, (xy, grow)
    assert finder._in_region(np.array([50.0, 50.0]))  # default: not grown
    assert not finder._in_region(np.array([50.5, 0.0]))


def test_without_a_region_every_cell_counts(tmp_path):
    scope = sim_scope()
    f = FindAndImage(scope, ClassicalDetector(), positions=[(0.0, 0.0)], out_dir=tmp_path)
    assert f._in_region(np.array([1e6, -1e6]))
    scope.close()


def test_a_record_keeps_its_scans_size_plane_and_view(finder):
    c = _cand(0.0, 0.0)
    c.size_um = np.array([12.0, 7.0])
    c.z_um, c.view_xy = 3.25, (1.0, 2.0)
    (r,) = finder._merge([c])
    assert r.size_um == (12.0, 7.0) and r.scan_z_um == 3.25 and r.scan_view_um == (1.0, 2.0)
