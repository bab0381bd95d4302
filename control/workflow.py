"""Find-and-image: scan a region, find every cell once, visit each and image it in 3D.

The workflow a microscopist would otherwise do by hand: tile the region with overlapping
fields, detect cells in each, put them all on one map in stage micrometres (a cell seen in
two overlapping fields is one cell; a cell cut by a field's edge is re-centred, not lost
and not counted twice), then visit each cell: centre it, autofocus, take a z-stack and
save it as OME-TIFF with its stage position, pixel size and boxes in the metadata.

Everything is written as it happens (one OME-TIFF per cell, ``cells.csv`` appended and
flushed per cell, ``summary.json`` rewritten per cell and in a ``finally``), so a run that
is stopped with Ctrl-C or fails half-way keeps everything it already acquired.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from inscope.acquisition.errors import DeviceError, MoveRefused
from inscope.acquisition.frame import Frame
from inscope.acquisition.microscope import Microscope
from inscope.acquisition.safety import shown_range
from inscope.control.focus import (
    FLAT_SWEEP,
    FocusResult,
    _safe_move_z,
    _sim_time,
    _top_middle,
    autofocus,
    brenner_noise_floor,
    clean_crop,
    hot_pixel_margin,
    sharpness,
)
from inscope.control.focus_surface import FocusSurface
from inscope.control.steering import (
    CENTERED,
    DRY_RUN,
    FAILED,
    MOVED,
    NO_TARGET,
    NOT_SEEN,
    REFUSED,
    SETTLING,
    Steerer,
)
from inscope.control.targets import TrackId
from inscope.control.tracking import Tracker
from inscope.detector.base import Detections, Detector
from inscope.enums import AutofocusIssue

log = logging.getLogger(__name__)

__all__ = ["CellRecord", "FindAndImage", "ZStackSpec", "plan_fields", "scan_plane"]

#: Most fields one scan may plan (a bigger region is refused before any memory is used).
MAX_FIELDS = 100_000
#: A cell whose sharpness varies by less than this ratio over its focus sweep has no
#: focus signal of its own (dim, smooth): the focus surface's prediction is kept.
WEAK_PEAK = 1.10
#: A sweep whose sharpest image is at its end, with the image next to it at least this
#: fraction as sharp, ended on a sharpness plateau (a thick nucleus, in focus over
#: several µm): that end is in focus, and the adaptive stack finds the cell's extent.
PLATEAU = 0.95
#: A focus surface through at least this many cells predicts the next cell's focus well
#: enough that a short sweep around the prediction whose sharpest image is at its end, but
#: less than EDGE_RISE times as sharp as the predicted plane, is read as the haze or a
#: neighbour reaching into the sweep's end, not as a focus several residuals off the
#: surface: the prediction is kept (a full search walked to that haze on the HeLa slides
#: of bench_control, 1.6 µm and more from the cell's focus, for 7-8 more images).
SURFACE_TRUSTED = 5
EDGE_RISE = 1.2
#: Fraction of its peak signal at which a cell's z extent ends, by how the planes were
#: recorded (``ZStackSpec.signal_frac`` None picks one from the microscope's
#: ``optical_sectioning``). Widefield: every plane also holds the blur of the rest, the
#: sharpness of a thin section fades over the depth of field, and the profile of a thick
#: nucleus ends where it is still bright (0.6; the simulator's widefield nuclei). An
#: optical section holds the in-focus cross-section only, which shrinks towards the
#: nucleus' poles and whose oblique edge there looks soft: its signal falls to a small
#: fraction of the peak by the true bottom and top, and 0.6 reads a thick nucleus as
#: little more than half its height (bench_control's confocal-like stack and HeLa 3-D
#: slide).
SIGNAL_FRAC_WIDEFIELD = 0.6
SIGNAL_FRAC_SECTIONED = 0.15
#: The per-plane signals a z extent can be read from (``ZStackSpec.signal``). Sharpness
#: ignores out-of-focus light (haze: smooth). Intensity - the cell's mean over its
#: footprint above the plane's background - is, in an optical section, how much of the
#: cell that plane cuts, and falls to about a fifth of its peak at the true bottom and
#: top, where sharpness varies more between nuclei (the oblique edge near the poles
#: looks soft); but haze keeps it up beyond the cell. ``auto`` (the default for optical
#: sections) uses intensity where the planes beyond the cell turn out dark, else
#: sharpness. bench_control, z-extent error p90: confocal-like stack, sharpness 1.44,
#: intensity 0.45 µm; HeLa 3-D slide (haze half the cell's light), sharpness 0.48,
#: intensity 5.95 µm; auto in docs/service.md.
SIGNAL_MEASURES = ("sharpness", "intensity", "auto")
SIGNAL_FRAC_INTENSITY = 0.2
#: The scan's plane is the middle of the first field's sharpness top: the planes whose
#: log-sharpness is within this of the sharpest (the FocusLock's top, ~18 % below the
#: peak). A layer of cells at several heights, or of thick nuclei, is sharp over a
#: plateau several µm wide, and its peak is a ripple on it: on the HeLa 3-D slide of
#: bench_control the autofocus peak sat 6 µm above the cells' mean height, on the top
#: edge of the layer, where the haze split and merged boxes and three interior cells
#: were never seen (find-and-image 0.963).
SCAN_TOP_DROP = 0.2
#: ``signal="auto"`` (the default for optical sections) measures both, goes on up to
#: this far (µm) past the end of the cell's sharpness while its intensity is still
#: above :data:`SIGNAL_FRAC_INTENSITY` of its peak, and reads the extent from the
#: intensity when it falls below that at both ends inside the stack (planes beyond the
#: cell are dark), else from the sharpness (out-of-focus light there).
AUTO_EXTRA_UM = 1.5

CSV_FIELDS = ["id", "x_um", "y_um", "z_um", "box_x0_px", "box_y0_px", "box_x1_px",
              "box_y1_px", "score", "status", "file", "seconds", "sim_seconds", "n_planes",
              "reason", "stage_x_um", "stage_y_um", "z_lo_um", "z_hi_um", "focus_images"]


#: The most planes one cell's stack may plan (:class:`ZStackSpec`): far above any real
#: stack (a 10 µm nucleus at 0.1 µm steps is 101), far below a typo's (1e-4 µm steps).
MAX_PLANES = 1000


@dataclass
class ZStackSpec:
    """Which planes to image around a cell's focus.

    Fixed: ``range_um = (below, above)`` relative to focus, every ``step_um``.
    Adaptive (``adaptive=True``): start at focus and extend up, then down, one step at a
    time while the cell's own signal lasts (within ``max_extent_um`` each way, at least
    ``range_um``), so thick cells get full stacks and thin ones stay short.

    The cell's signal in a plane (``signal``) is its sharpness (Brenner) over its own
    pixels minus the camera-noise floor of that frame (the default), or its mean
    intensity there above the frame's background (``"intensity"``: optical sections
    with little out-of-focus light, see :data:`SIGNAL_MEASURES`). The cell's z extent
    is where that signal is at least ``signal_frac`` of its peak (crossings
    interpolated between planes); a stack goes two planes past each end (one noisy
    plane does not end it). ``signal_frac`` None (the default) takes it from the
    microscope: :data:`SIGNAL_FRAC_SECTIONED` (0.15) for optically sectioned planes
    (confocal, light sheet; a slide of a z-stack), :data:`SIGNAL_FRAC_WIDEFIELD` (0.6)
    for widefield; :data:`SIGNAL_FRAC_INTENSITY` (0.2) for intensity. Whether a box is
    still detected does not decide it: detectors
    keep finding out-of-focus haze microns beyond a nucleus. A cell whose peak
    sharpness stays under ``min_snr`` times the noise floor (too dim to measure) gets
    no extent (NaN; its file says why).
    """

    range_um: tuple[float, float] = (-2.0, 2.0)
    step_um: float = 1.0
    adaptive: bool = False
    max_extent_um: float = 15.0
    signal_frac: float | None = None
    min_snr: float = 1.0
    signal: str | None = None

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.range_um)
        if self.signal is not None and self.signal not in SIGNAL_MEASURES:
            raise ValueError(f"ZStackSpec.signal is one of {', '.join(SIGNAL_MEASURES)} "
                             f"(intensity for optical sections with little out-of-focus "
                             f"light, auto to choose per cell; None: auto for optical "
                             f"sections, sharpness for widefield); got {self.signal!r}.")
        if self.signal_frac is not None and not 0 < self.signal_frac < 1:
            raise ValueError(f"ZStackSpec needs 0 < signal_frac < 1 (the fraction of its "
                             f"peak signal where a cell's z extent ends: about 0.6 for "
                             f"widefield, 0.15 for confocal; None picks by the "
                             f"microscope); got {self.signal_frac}.")
        if not self.min_snr >= 0:
            raise ValueError(f"ZStackSpec needs min_snr >= 0 (the peak signal over the "
                             f"noise floor below which a cell gets no z extent; 0 always "
                             f"measures one); got {self.min_snr}.")
        if not (self.step_um > 0 and lo <= 0 <= hi):
            raise ValueError(
                f"ZStackSpec needs step_um > 0 and range_um = (below <= 0, above >= 0) "
                f"relative to focus; got range_um={self.range_um}, step_um={self.step_um}.")
        span = 2 * self.max_extent_um if self.adaptive else hi - lo
        planes = int(span / self.step_um + 1e-9) + 1
        if planes > MAX_PLANES:
            # (a step of 1e-4 µm planned 40,001 planes per cell: exploratory testing)
            other = "a smaller max_extent_um" if self.adaptive else "a smaller range_um"
            raise ValueError(
                f"ZStackSpec plans up to {planes:,} planes per cell ({span:g} µm every "
                f"{self.step_um:g} µm); at most {MAX_PLANES:,}: give a larger step_um "
                f"(the objective's Nyquist step is ~0.1-0.3 µm) or {other}.")
        self.range_um = (lo, hi)

    def fixed_offsets(self) -> list[float]:
        lo, hi = self.range_um
        n_lo = int(math.floor(-lo / self.step_um + 1e-9))
        n_hi = int(math.floor(hi / self.step_um + 1e-9))
        return [k * self.step_um for k in range(-n_lo, n_hi + 1)]


@dataclass
class CellRecord:
    """One found cell and what became of it (a row of ``cells.csv``)."""

    id: int
    x_um: float
    y_um: float
    z_um: float = math.nan
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    size_um: tuple[float, float] = (0.0, 0.0)
    score: float = 0.0
    status: str = "pending"  # imaged, skipped-*, failed, planned
    file: str = ""
    seconds: float = 0.0
    sim_seconds: float = math.nan
    n_planes: int = 0
    reason: str = ""
    partial: bool = False
    field_index: int = -1
    stage_x_um: float = math.nan
    stage_y_um: float = math.nan
    z_lo_um: float = math.nan
    z_hi_um: float = math.nan
    focus_images: int = 0
    #: the plane the scan saw the cell in (not a column of cells.csv)
    scan_z_um: float = math.nan
    #: the stage (x, y) of the scan's frame that showed the cell, None when its box
    #: there was near the field's edge (not a column either)
    scan_view_um: tuple[float, float] | None = None

    def row(self) -> dict[str, Any]:
        def num(v: float) -> str:
            return "" if math.isnan(v) else f"{v:.3f}"

        return {"id": self.id, "x_um": f"{self.x_um:.3f}", "y_um": f"{self.y_um:.3f}",
                "z_um": "" if math.isnan(self.z_um) else f"{self.z_um:.3f}",
                **{f"box_{k}_px": f"{v:.1f}"
                   for k, v in zip(("x0", "y0", "x1", "y1"), self.box, strict=True)},
                "score": f"{self.score:.3f}",
                "status": self.status, "file": self.file, "seconds": f"{self.seconds:.3f}",
                "sim_seconds": "" if math.isnan(self.sim_seconds)
                else f"{self.sim_seconds:.3f}", "n_planes": self.n_planes,
                "reason": self.reason, "stage_x_um": num(self.stage_x_um),
                "stage_y_um": num(self.stage_y_um), "z_lo_um": num(self.z_lo_um),
                "z_hi_um": num(self.z_hi_um), "focus_images": self.focus_images}


def earlier_scan(out_dir: str | Path) -> list[str]:
    """The files of an earlier scan in *out_dir* that a new one would write over or mix
    with (empty: none, or only an earlier ``--dry-run``'s plan, which holds no image).

    A second scan into the same folder would append its rows to ``cells.csv`` while
    replacing the ``cell_NNNN.ome.tif`` files and ``summary.json``: the table would then
    name two cells per file, one of them no longer there.
    """
    d = Path(out_dir)
    if not d.is_dir():
        return []
    images = sorted(f.name for f in d.glob("cell_*.ome.tif"))
    found = [n for n in ("cells.csv", "summary.json") if (d / n).exists()] + images
    if found and not images:
        try:
            plan = json.loads((d / "summary.json").read_text()).get("status") == "dry-run"
        except (OSError, ValueError, AttributeError):
            plan = False
        if plan:
            return []
    return found


def _field_um(affine: np.ndarray, shape: tuple[int, int]) -> float:
    """Side (µm) of the largest axis-aligned square inside the (possibly rotated) field."""
    a = np.asarray(affine, float)
    px = math.sqrt(abs(np.linalg.det(a)))
    m = a @ np.diag([-1.0, 1.0]) if np.linalg.det(a) < 0 else a
    th = math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1])
    return min(shape) * px / (abs(math.cos(th)) + abs(math.sin(th)))


def plan_fields(region: Sequence[float], field_um: float, overlap_um: float
                ) -> list[tuple[float, float]]:
    """Field centres (serpentine order) covering *region* with margin and overlap.

    The grid covers the region grown by ``overlap_um / 2`` on every side, so a cell whose
    centre is inside the region but whose body pokes out is still seen whole in a field.
    """
    x0, y0, x1, y1 = (float(v) for v in region)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"Region must be four finite numbers x0 y0 x1 y1 (µm); got "
                         f"{tuple(region)}.")
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"Region must be x0 y0 x1 y1 with x1 > x0 and y1 > y0 (µm); got "
                         f"{tuple(region)}.")
    if overlap_um >= field_um:
        raise ValueError(f"Overlap ({overlap_um:.1f} µm) must be smaller than the field "
                         f"({field_um:.1f} µm); lower overlap.")
    step = field_um - overlap_um
    m = overlap_um / 2.0

    def axis(lo: float, hi: float) -> list[float]:
        lo, hi = lo - m, hi + m
        span = hi - lo
        if span <= field_um:
            return [(lo + hi) / 2.0]
        n = int(math.ceil((span - field_um) / step)) + 1
        first, last = lo + field_um / 2.0, hi - field_um / 2.0
        return [first + (last - first) * k / (n - 1) for k in range(n)]

    def count(lo: float, hi: float) -> int:
        span = hi - lo + 2 * m
        return 1 if span <= field_um else int(math.ceil((span - field_um) / step)) + 1

    n = count(x0, x1) * count(y0, y1)
    if n > MAX_FIELDS:
        raise ValueError(f"Region {tuple(region)} needs {n} fields of {field_um:.1f} µm; "
                         f"a scan plans at most {MAX_FIELDS}. Scan a smaller region (or "
                         "several).")
    xs, ys = axis(x0, x1), axis(y0, y1)
    out: list[tuple[float, float]] = []
    for j, y in enumerate(ys):
        row = xs if j % 2 == 0 else xs[::-1]
        out.extend((x, y) for x in row)
    return out


def signal_for(spec: ZStackSpec, scope: Any) -> tuple[str, float, str]:
    """``(signal, signal_frac, source)``: the measure and fraction a cell's z extent is
    read with - the spec's own, else the defaults for how *scope* records its planes
    (``optical_sectioning``) - and where the fraction came from."""
    sectioned = bool(getattr(scope, "optical_sectioning", False))
    signal = spec.signal or ("auto" if sectioned else "sharpness")
    if spec.signal_frac is not None:
        return signal, float(spec.signal_frac), "given"
    if signal == "intensity":
        return signal, SIGNAL_FRAC_INTENSITY, "intensity"
    if sectioned:  # (auto: the sharpness fraction; the intensity one is fixed)
        return signal, SIGNAL_FRAC_SECTIONED, "optically sectioned planes (confocal-like)"
    return signal, SIGNAL_FRAC_WIDEFIELD, "widefield planes"


def scan_plane(r: FocusResult, drop: float = SCAN_TOP_DROP) -> float | None:
    """The plane to scan a field in, from its autofocus sweep *r*: the middle of the
    sweep's sharpness top (see :data:`SCAN_TOP_DROP`), or None to stay where the
    autofocus ended (not ok, too few planes, or a top open on one side).

    Why not the autofocus' answer: it is the sharpest plane, right for one thin layer,
    but for cells at several heights the sharpest plane is wherever the most edges
    happen to line up, and the scan must see every cell of the layer. For one thin
    layer the top is one peak and its middle is that peak.
    """
    if not r.ok or len(r.samples) < 3:
        return None
    z = np.array([a for a, _ in r.samples], float)
    v = np.log(np.maximum(np.array([b for _, b in r.samples], float), 1e-12))
    mid, bounded = _top_middle(z, v, drop)
    return mid if bounded else None


def _xy_ranges(scope: Any) -> list[tuple[str, tuple[float, float]]]:
    """The stage's x and y soft-limit ranges that are set, as ``(axis, (lo, hi))``."""
    lim = getattr(scope, "limits", None)
    return [(a, r) for a in "xy" if (r := getattr(lim, a, None)) is not None]


def _shown(ranges: list[tuple[str, tuple[float, float]]]) -> str:
    """*ranges* as a message shows them: ``x [lo, hi], y [lo, hi]``."""
    return ", ".join(f"{a} {shown_range(r)}" for a, r in ranges)


def _box4(b: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    """A detection box (x0, y0, x1, y1) as four floats."""
    x0, y0, x1, y1 = (float(v) for v in b)
    return (x0, y0, x1, y1)


def _weak(profile: list[tuple[float, float]], floors: Sequence[float],
          min_snr: float) -> str | None:
    """Why the cell's signal is too weak for an extent (None when it is not): its peak
    under *min_snr* times the median noise floor of its planes."""
    if not profile or not floors:
        return None
    peak = max(v for _, v in profile)
    floor = float(np.median(floors))
    if peak < min_snr * floor:
        return (f"signal too weak for a z extent: peak sharpness {peak:.3g} above the "
                f"noise, under {min_snr:g} x the noise floor {floor:.3g}")
    return None


def _rise_over(zs: Sequence[float], vals: np.ndarray, z: float) -> float:
    """How many times sharper a sweep's sharpest image is than its image nearest *z*
    (inf when that one has no sharpness at all)."""
    at = float(vals[int(np.argmin(np.abs(np.asarray(zs, float) - z)))])
    return float(vals.max()) / at if at > 0 else math.inf


def _extent(profile: list[tuple[float, float]], frac: float) -> tuple[float, float]:
    """Where a per-plane signal is at least *frac* of its peak, around the peak, with the
    crossings interpolated linearly between planes (sub-step extent). One plane below
    the threshold between planes above it (noise) does not end it. A profile without
    signal (all zero) has no extent: NaN."""
    if not profile:
        return (math.nan, math.nan)
    z = np.array([p[0] for p in profile], float)
    v = np.array([p[1] for p in profile], float)
    i = int(np.argmax(v))
    if v[i] <= 0:
        return (math.nan, math.nan)
    thr = frac * v[i]
    lo = hi = i
    while lo > 0:
        if v[lo - 1] >= thr:
            lo -= 1
        elif lo > 1 and v[lo - 2] >= thr:
            lo -= 2  # across a one-plane dip
        else:
            break
    while hi < len(v) - 1:
        if v[hi + 1] >= thr:
            hi += 1
        elif hi < len(v) - 2 and v[hi + 2] >= thr:
            hi += 2
        else:
            break

    def cross(a: int, b: int) -> float:  # a inside, b outside
        if v[a] == v[b]:
            return float(z[a])
        return float(z[a] + (z[b] - z[a]) * (v[a] - thr) / (v[a] - v[b]))

    z_lo = cross(lo, lo - 1) if lo > 0 else float(z[lo])
    z_hi = cross(hi, hi + 1) if hi < len(v) - 1 else float(z[hi])
    return (z_lo, z_hi)


@dataclass
class _Centred:
    frame: Frame
    box: np.ndarray
    xy_um: np.ndarray
    score: float
    note: str


@dataclass
class _Candidate:
    xy: np.ndarray
    size_um: np.ndarray
    score: float
    partial: bool
    field_index: int
    box: np.ndarray
    z_um: float = math.nan  # the plane the scan saw it in
    # the stage (x, y) of the scan's frame, for a box clear of its edge (else None)
    view_xy: tuple[float, float] | None = None
    # a box cut by the field's edge: column j is the stage vector (µm) of one pixel
    # along image axis j (x, y) towards the cut edge, zero where that axis is not cut
    # (or cut on both sides); None for a whole box
    outward: np.ndarray | None = None


def _cut_sides(box: Sequence[float] | np.ndarray, shape: tuple[int, int],
               edge_px: float) -> np.ndarray:
    """Which sides of a field cut *box* (x0, y0, x1, y1 px): ``[[left, top], [right,
    bottom]]``, a side where the box reaches within *edge_px* of the field's first or
    last pixel centre (the frame spans [-0.5, w - 0.5]; the same distance on every side).
    The box of a cut cell can end a pixel or two short of the frame's extent: on the
    simulator and a confocal slide such boxes ended 1.5-1.7 px short of the right and
    bottom edges, and read as whole they were visited as cells and given up as lost
    (the test was 1 px tighter there than on the left and top)."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0 <= edge_px, y0 <= edge_px],
                     [x1 >= w - 1 - edge_px, y1 >= h - 1 - edge_px]])


def _complete_cut_boxes(cands: list[_Candidate]) -> list[_Candidate]:
    """The candidates, each box cut by its field's edge with its centre moved to where
    the cell's centre lies if it is as large as the scan's typical whole box (the median
    size of the boxes no edge cuts, per image axis), and its size along the cut axis
    that size; the others as they are.

    A box cut by the edge holds only the part of a cell inside the field, and its centre
    lies short of the cell's by half the part cut off. For a sliver - the rim or halo of
    a cell seen whole in the next field - that is most of the cell's radius: on a HeLa
    slide a 2-3 px sliver at a field's bottom edge sat 9 µm from the centre of a cell
    already imaged, so it was neither merged with that cell nor found again where the
    scan put it, and was reported lost. A cut box at least the typical size (a large
    cell) keeps its centre: how far it reaches is unknown. Its size along the cut axis
    becomes the typical one as well: the merge asks whether the centres lie within half
    the larger size, and the copy of a small cell seen whole in the next field, moved
    out by more than its own half size, must still fall within it. Nothing moves
    without whole boxes to take the typical size from.
    """
    whole = [c.box for c in cands if not c.partial]
    if not whole:
        return list(cands)
    wb = np.asarray(whole, float)
    typical = np.median(np.stack([wb[:, 2] - wb[:, 0], wb[:, 3] - wb[:, 1]], axis=1), axis=0)
    out = []
    for c in cands:
        if c.partial and c.outward is not None:
            seen = np.array([c.box[2] - c.box[0], c.box[3] - c.box[1]], float)
            along = np.any(c.outward != 0.0, axis=0)  # the image axes cut on one side
            full = np.where(along, np.maximum(seen, typical), seen)
            c = replace(c, xy=c.xy + c.outward @ (0.5 * (full - seen)),
                        size_um=c.size_um * full / np.maximum(seen, 1e-6))
        out.append(c)
    return out


@dataclass
class WorkflowSummary:
    """What :meth:`FindAndImage.run` did; also written as ``summary.json``."""

    status: str = "running"  # running, done, stopped, failed, dry-run
    stop_reason: str = ""  # why a run ended early (Ctrl-C, SIGTERM, device failures)
    region: list[float] | None = None
    fields: int = 0
    #: fields of the region that lie outside the stage's soft limits, left out (the
    #: part of the region inside them is scanned)
    fields_outside_limits: int = 0
    cells_found: int = 0
    cells_imaged: int = 0
    cells_skipped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds_per_cell: list[float] = field(default_factory=list)
    sim_seconds_per_cell: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    sim_s: float | None = None
    scan_wall_s: float = 0.0
    scan_sim_s: float | None = None
    images: int = 0
    error: str = ""
    planned_fields: list[list[float]] = field(default_factory=list)
    out_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FindAndImage:
    """Scan a region (or a list of fields), find cells, centre + focus + z-stack each once.

    Parameters
    ----------
    scope
        The microscope (moves go through its guard).
    detector
        Any :class:`~inscope.detector.base.Detector`.
    region
        ``(x0, y0, x1, y1)`` stage µm; cells whose centre lies inside are imaged. A
        region wholly outside the stage's xy soft limits raises ``ValueError`` here; of
        one reaching past them, the part inside them is scanned.
    positions
        Alternatively, explicit field centres ``[(x, y), ...]`` (every detected cell
        counts).
    out_dir
        Where the OME-TIFFs, ``cells.csv`` and ``summary.json`` go: a new folder, or one
        holding only an earlier dry run's plan (:meth:`run` raises ``FileExistsError``
        before anything moves when it holds an earlier scan, see :func:`earlier_scan`).
    overlap
        Overlap of neighbouring fields, as a fraction of the field (default 0.25). It
        should exceed a cell diameter so every cell is wholly inside some field.
    z_stack
        :class:`ZStackSpec`.
    autofocus
        Autofocus on every cell before its z-stack (and once before the scan).
    dry_run
        Plan only: take one image at the current position, write the field plan and
        the cells seen there; move nothing.
    min_score
        Detections below this score are ignored.
    dedup_radius_um
        Two detections closer than this are one cell. Default: half the smaller box.
    on_cell
        Called with each finished :class:`CellRecord` (progress bars, tests).
    max_cells
        Stop after imaging this many cells.
    max_device_failures
        Stop (status ``failed``, the reason in the summary) after this many consecutive
        cells failed with a device error: a dead camera must not send the stage round
        every remaining cell.
    centre_tol_um
        Steering deadband while centring a cell; None: from the measured jitter of the
        cell's registered position (see :class:`~inscope.control.steering.Steerer`).
    lost_after
        Settled frames in a row in which the cell is neither detected (also at half the
        score threshold, near where it should be) nor registered before it is given up
        as ``skipped-lost`` (with the reason).

    Focus: the first cells get a full autofocus; after that each cell's focus is
    predicted from a :class:`~inscope.control.focus_surface.FocusSurface` through the
    cells already focused and refined by a 3-image sweep and a pair (5 images).
    """

    #: Box overlap (of the smaller box) from which two centred cells joined by one blob
    #: are one nucleus (see :meth:`_duplicate_of`).
    dup_overlap: float = 0.25
    #: Two centred cells whose boxes overlap less are one nucleus only when the blob
    #: joins their centres without narrowing below this fraction of their width.
    dup_same_body: float = 0.9

    def __init__(self, scope: Microscope, detector: Detector,
                 region: Sequence[float] | None = None,
                 positions: Sequence[Sequence[float]] | None = None,
                 out_dir: str | Path = "runs/scan", overlap: float = 0.25,
                 z_stack: ZStackSpec | None = None, autofocus: bool = True,
                 dry_run: bool = False, min_score: float = 0.0,
                 dedup_radius_um: float | None = None, focus_search_um: float = 5.0,
                 scan_focus_search_um: float = 12.0, centre_iters: int = 4,
                 centre_tol_um: float | None = None, edge_px: float = 2.0,
                 on_cell: Callable[[CellRecord], None] | None = None,
                 max_cells: int | None = None, max_device_failures: int = 3,
                 lost_after: int = 3, provenance: dict[str, Any] | None = None) -> None:
        if (region is None) == (positions is None):
            raise ValueError("Give exactly one of region=(x0, y0, x1, y1) or "
                             "positions=[(x, y), ...].")
        if not 0 <= overlap < 0.9:
            raise ValueError(f"overlap is a fraction of the field in [0, 0.9); got {overlap}.")
        self.scope = scope
        self.detector = detector
        #: where the run's numbers came from (versions, model sha256, start time, scope);
        #: written into every cell's OME-TIFF description
        self.provenance = provenance
        self.region = None if region is None else tuple(float(v) for v in region)
        #: the part of the region the stage may reach (refused now when there is none:
        #: every field would be refused, one warning each, and the scan end empty)
        self.reachable = None if self.region is None else self._reachable_part(scope)
        self.positions = None if positions is None else [tuple(map(float, p))
                                                          for p in positions]
        self.out_dir = Path(out_dir)
        self.overlap = float(overlap)
        self.z_stack = z_stack or ZStackSpec()
        #: the per-plane signal a cell's z extent is read from, the fraction of its
        #: peak where the extent ends, and why that fraction
        self.signal, self.signal_frac, self.signal_frac_source = signal_for(
            self.z_stack, scope)
        self.autofocus = autofocus
        self.dry_run = dry_run
        self.min_score = float(min_score)
        self.dedup_radius_um = dedup_radius_um
        self.focus_search_um = float(focus_search_um)
        self.scan_focus_search_um = float(scan_focus_search_um)
        self.centre_iters = int(centre_iters)
        self.centre_tol_um = None if centre_tol_um is None else float(centre_tol_um)
        self.lost_after = int(lost_after)
        self.surface = FocusSurface()
        self.reacquired = 0  # frames where the cell needed the half-threshold pass
        self.edge_px = float(edge_px)
        self.on_cell = on_cell
        self.max_cells = max_cells
        self.max_device_failures = max(1, int(max_device_failures))
        self.cells: list[CellRecord] = []
        self.summary = WorkflowSummary(region=None if self.region is None
                                       else list(self.region), out_dir=str(self.out_dir))
        self._images = 0
        self._csv_file: TextIO | None = None
        self._csv: csv.DictWriter | None = None

    # -- small helpers -----------------------------------------------------------------
    def _snap(self) -> Frame:
        self._images += 1
        return self.scope.snap()

    def _detect(self, frame: Frame) -> Detections:
        det = self.detector.detect(frame)
        if self.min_score > 0 and len(det):
            det = det.select(det.scores >= self.min_score)
        return det

    def _in_region(self, xy: np.ndarray, grow: float = 0.0) -> bool:
        if self.region is None:
            return True
        x0, y0, x1, y1 = self.region
        return x0 - grow <= xy[0] <= x1 + grow and y0 - grow <= xy[1] <= y1 + grow

    def _reachable_part(self, scope: Microscope) -> tuple[float, ...]:
        """The region cut to the stage's xy soft limits (the region itself without any).

        Raises
        ------
        ValueError
            When the region lies wholly outside them, naming both.
        """
        assert self.region is not None
        ranges = _xy_ranges(scope)
        x0, y0, x1, y1 = self.region
        if not ranges or not all(math.isfinite(v) for v in self.region):
            return self.region  # (plan_fields says what is wrong with a bad region)
        lo, hi = {"x": x0, "y": y0}, {"x": x1, "y": y1}
        if any(hi[a] <= r[0] or lo[a] >= r[1] for a, r in ranges):
            raise ValueError(f"Region {x0:g} {y0:g} {x1:g} {y1:g} (x0 y0 x1 y1, µm) lies "
                             f"outside the stage's soft limits {_shown(ranges)} µm; give a "
                             "region inside them (nothing moved).")
        for a, r in ranges:
            lo[a], hi[a] = max(lo[a], r[0]), min(hi[a], r[1])
        return (lo["x"], lo["y"], hi["x"], hi["y"])

    def _fields(self, frame: Frame) -> Sequence[tuple[float, ...]]:
        if self.positions is not None:
            return list(self.positions)
        f_um = _field_um(frame.affine, frame.shape)
        fields = plan_fields(self.region, f_um, self.overlap * f_um)  # type: ignore[arg-type]
        lim = getattr(self.scope, "limits", None)
        out = 0 if self.reachable == self.region else \
            sum(not lim.allows_xy(x, y) for x, y in fields)  # type: ignore[union-attr]
        if not out:
            return fields
        # A region reaching past the soft limits: its part inside them is planned on its
        # own, so its edge there is covered by fields the stage can reach (the fields of
        # the whole region beyond the limits would each be refused, with a warning).
        self.summary.fields_outside_limits = out
        inside = plan_fields(self.reachable, f_um, self.overlap * f_um)  # type: ignore[arg-type]
        log.warning("the region reaches outside the stage's soft limits %s µm: %d of its %d "
                    "fields lie outside them and are left out; its part inside them is "
                    "covered by %d fields", _shown(_xy_ranges(self.scope)), out,
                    len(fields), len(inside))
        return inside

    # -- output ------------------------------------------------------------------------
    def _open_outputs(self) -> None:
        earlier = earlier_scan(self.out_dir)
        if earlier:
            shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
            raise FileExistsError(f"{self.out_dir} already holds an earlier scan ({shown}); "
                                  "give a new folder: nothing is overwritten.")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # a new table (an earlier dry run's plan, if any, is replaced)
        self._csv_file = open(self.out_dir / "cells.csv", "w",  # noqa: SIM115 - closed in run()
                              newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS)
        self._csv.writeheader()
        self._csv_file.flush()

    def _write_cell(self, rec: CellRecord) -> None:
        assert self._csv is not None and self._csv_file is not None
        self._csv.writerow(rec.row())
        self._csv_file.flush()
        s = self.summary
        if rec.status == "imaged":
            s.cells_imaged += 1
            s.seconds_per_cell.append(round(rec.seconds, 4))
            if not math.isnan(rec.sim_seconds):
                s.sim_seconds_per_cell.append(round(rec.sim_seconds, 4))
        else:
            s.cells_skipped += 1
            s.skipped[rec.status] = s.skipped.get(rec.status, 0) + 1
        self._write_summary()
        if self.on_cell is not None:
            self.on_cell(rec)

    def _write_summary(self) -> None:
        s = self.summary
        s.wall_s = time.perf_counter() - self._t0
        sim = _sim_time(self.scope)
        s.sim_s = None if math.isnan(sim) else sim - self._sim0
        s.images = self._images
        tmp = self.out_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(s.to_dict(), indent=2) + "\n")
        tmp.replace(self.out_dir / "summary.json")

    # -- the run -----------------------------------------------------------------------
    def run(self) -> WorkflowSummary:
        """Scan, then visit every cell; returns (and writes) the summary.

        KeyboardInterrupt and errors propagate after the summary is written with status
        ``interrupted`` / ``failed``; everything saved so far stays on disk.
        """
        self._t0 = time.perf_counter()
        self._sim0 = _sim_time(self.scope)
        self._open_outputs()
        try:
            if self.dry_run:
                self._dry_run()
                self.summary.status = "dry-run"
                return self.summary
            cands = self._scan()
            cells = self._merge(cands)
            self.summary.cells_found = len(cells)
            self._write_summary()
            self._visit_all(cells)
            self.summary.status = "done"
            return self.summary
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM turned into one by the CLI
            self.summary.status = "stopped"
            self.summary.stop_reason = str(e) or "interrupted (Ctrl-C)"
            raise
        except BaseException as e:
            self.summary.status = "failed"
            self.summary.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            try:
                self._write_summary()
            finally:
                if self._csv_file is not None:
                    self._csv_file.close()
                    self._csv_file = None

    def _dry_run(self) -> None:
        frame = self._snap()
        fields = self._fields(frame)
        self.summary.fields = len(fields)
        self.summary.planned_fields = [list(p) for p in fields]
        det = self._detect(frame)
        for k, (c, b) in enumerate(zip(frame.pixel_to_stage(det.centers) if len(det)
                                       else [], det.boxes, strict=False)):
            rec = CellRecord(id=k + 1, x_um=float(c[0]), y_um=float(c[1]),
                             box=_box4(b), score=float(det.scores[k]),
                             status="planned", reason="dry-run: nothing moved")
            self.cells.append(rec)
            self._csv.writerow(rec.row())  # type: ignore[union-attr]
        self._csv_file.flush()  # type: ignore[union-attr]
        self.summary.cells_found = len(self.cells)

    def _scan(self) -> list[_Candidate]:
        t0, sim0 = time.perf_counter(), _sim_time(self.scope)
        first = self._snap()
        fields = self._fields(first)
        self.summary.fields = len(fields)
        self.summary.planned_fields = [list(p) for p in fields]
        cands: list[_Candidate] = []
        for i, (x, y) in enumerate(fields):
            try:
                self.scope.move_xy(x, y)
            except MoveRefused as e:
                log.warning("field %d at (%.1f, %.1f) skipped: %s", i, x, y, e)
                continue
            if i == 0 and self.autofocus:
                r = autofocus(self.scope, self.detector, search_um=self.scan_focus_search_um)
                self._images += r.images
                z_layer = scan_plane(r)
                if z_layer is not None and z_layer != r.z_final:
                    _safe_move_z(self.scope, z_layer)
            frame = self._snap()
            det = self._detect(frame)
            if not len(det):
                continue
            pos = frame.position
            scan_z = pos.z if pos is not None else math.nan
            view = (pos.x, pos.y) if pos is not None else None
            h, w = frame.shape
            scale = frame.scale_um
            centers = frame.pixel_to_stage(det.centers)
            for k in range(len(det)):
                b = det.boxes[k]
                cut = _cut_sides(b, (h, w), self.edge_px)
                partial = bool(cut.any())
                size = np.array([b[2] - b[0], b[3] - b[1]], float) * scale
                # the view is kept to show the detector again (see _centre) only where
                # the box lies clear of the field's edge by half its size: a box at the
                # edge may hold part of an object, or a sliver of blur the detector
                # boxes there and not whole (a speck of debris of the simulator, 0.93)
                half = 0.5 * float(max(b[2] - b[0], b[3] - b[1]))
                clear = bool(b[0] > half and b[1] > half and b[2] < w - 1 - half
                             and b[3] < h - 1 - half)
                outward = None
                if partial:
                    outward = frame.affine * (cut[1].astype(float) - cut[0])[None, :]
                cands.append(_Candidate(centers[k], size, float(det.scores[k]), partial, i,
                                        b.astype(float), scan_z, view if clear else None,
                                        outward))
        self.summary.scan_wall_s = time.perf_counter() - t0
        sim = _sim_time(self.scope)
        self.summary.scan_sim_s = None if math.isnan(sim) else sim - sim0
        return cands

    def _merge(self, cands: list[_Candidate]) -> list[CellRecord]:
        """One record per physical cell: whole views first, then cut-off ones (their
        centres first moved to where a cell of the typical size would lie,
        :func:`_complete_cut_boxes`)."""
        order = sorted(_complete_cut_boxes(cands), key=lambda c: (c.partial, -c.score))
        kept: list[_Candidate] = []
        for c in order:
            dup = False
            for k in kept:
                d = np.abs(c.xy - k.xy)
                if self.dedup_radius_um is not None:
                    near = math.hypot(*d) < self.dedup_radius_um
                elif c.partial or k.partial:
                    # A cut box's centre is biased towards the field: it is the same cell
                    # if it falls inside the other's box.
                    half = np.maximum(k.size_um, c.size_um) / 2.0
                    near = bool(np.all(d <= half))
                else:
                    near = math.hypot(*d) < 0.5 * float(min(c.size_um.min(), k.size_um.min()))
                if near:
                    dup = True
                    break
            if not dup:
                kept.append(c)
        # Region filter: whole cells by their centre; cut ones later, once re-centred.
        cells = []
        for c in kept:
            grow = float(c.size_um.max()) / 2.0 if c.partial else 0.0
            if not self._in_region(c.xy, grow):
                continue
            cells.append(c)
        # Visit order: nearest neighbour from the current position (short stage paths).
        p = self.scope.position()
        cur = np.array([p.x, p.y])
        todo = cells[:]
        out: list[CellRecord] = []
        while todo:
            j = int(np.argmin([np.hypot(*(c.xy - cur)) for c in todo]))
            c = todo.pop(j)
            cur = c.xy
            out.append(CellRecord(id=len(out) + 1, x_um=float(c.xy[0]), y_um=float(c.xy[1]),
                                  box=_box4(c.box),
                                  size_um=(float(c.size_um[0]), float(c.size_um[1])),
                                  score=c.score, partial=c.partial, field_index=c.field_index,
                                  scan_z_um=c.z_um, scan_view_um=c.view_xy))
        return out

    def _visit_all(self, cells: list[CellRecord]) -> None:
        imaged: list[CellRecord] = []
        failures = 0
        for rec in cells:
            if self.max_cells is not None and len(imaged) >= self.max_cells:
                rec.status, rec.reason = "skipped-limit", f"max_cells={self.max_cells}"
                self.cells.append(rec)
                self._write_cell(rec)
                continue
            self._visit(rec, imaged)
            self.cells.append(rec)
            if rec.status == "imaged":
                imaged.append(rec)
            self._write_cell(rec)
            failures = failures + 1 if rec.status == "failed" else 0
            if failures >= self.max_device_failures:
                self.summary.stop_reason = (
                    f"{failures} consecutive cells failed with a device error (last: "
                    f"{rec.reason}); stopped with {len(cells) - len(self.cells)} cells not "
                    "visited. Check the camera and stage, then scan again.")
                raise DeviceError(self.summary.stop_reason)

    def _visit(self, rec: CellRecord, imaged: list[CellRecord]) -> None:
        t0, sim0 = time.perf_counter(), _sim_time(self.scope)
        try:
            self._visit_inner(rec, imaged)
        except MoveRefused as e:
            rec.status, rec.reason = "skipped-refused", str(e)
        except DeviceError as e:
            rec.status, rec.reason = "failed", str(e)
        rec.seconds = time.perf_counter() - t0
        sim = _sim_time(self.scope)
        rec.sim_seconds = sim - sim0 if not math.isnan(sim) else math.nan

    def _detect_lowered(self, frame: Frame) -> Detections:
        """Detections at half the usual score threshold (re-acquiring a blinking cell);
        empty when the detector has no threshold to lower."""
        det = self.detector
        if not hasattr(det, "score_threshold"):
            return Detections.empty()
        old = det.score_threshold
        base = old
        if base is None:
            card = getattr(det, "card", None)
            base = (getattr(card, "decoding", {}) or {}).get("score_threshold", 0.3)
        try:
            det.score_threshold = 0.5 * float(base)
            out = det.detect(frame)
        finally:
            det.score_threshold = old
        if self.min_score > 0 and len(out):
            out = out.select(out.scores >= 0.5 * self.min_score)
        return out

    def _detect_near(self, frame: Frame, expect_um: np.ndarray, gate: float
                     ) -> tuple[Detections, bool]:
        """Detections of *frame*; when none lies within *gate* of *expect_um*, those of a
        second pass at half the threshold near it are added. Returns (detections,
        whether the second pass was needed)."""
        det = self._detect(frame)

        def near(d: Detections) -> np.ndarray:
            if not len(d):
                return np.zeros(0, bool)
            c = frame.pixel_to_stage(d.centers)
            return np.hypot(*(c - expect_um).T) <= gate

        if near(det).any():
            return det, False
        low = self._detect_lowered(frame)
        m = near(low)
        if not m.any():
            return det, True
        low = low.select(m)
        if not len(det):
            return low, True
        return Detections(np.concatenate([det.boxes, low.boxes]),
                          np.concatenate([det.scores, low.scores]),
                          np.concatenate([det.class_ids, low.class_ids]),
                          class_names=det.class_names, frame_index=det.frame_index,
                          stamps=det.stamps), True

    def _centre(self, rec: CellRecord) -> _Centred | str:
        """Move to the cell and centre it. A :class:`_Centred` (the last frame, the
        cell's box there, its measured position), or the reason it was not."""
        self.scope.move_xy(rec.x_um, rec.y_um)
        # the plane the scan saw it in, to go back to if it is not seen in this one,
        # and then the scan's view of it (kept by the scan only for a box clear of the
        # field's edge)
        back_to_z = None if math.isnan(rec.scan_z_um) else rec.scan_z_um
        view = rec.scan_view_um
        gate = max(rec.size_um) if rec.partial else 0.5 * max(rec.size_um)
        gate = max(gate, 1.0)
        tracker = Tracker(gate_um=gate, max_missed=self.lost_after + 1, velocity=False)
        steer = Steerer(self.scope, tracker=tracker, deadband_um=self.centre_tol_um)
        expect = np.array([rec.x_um, rec.y_um])
        chosen = False
        unseen = 0
        moves = 0
        last_seen: _Centred | None = None

        def to_scan_plane() -> bool:
            """Once, move to the plane the scan saw the cell in, when the focus is
            elsewhere; whether it moved. The last cell's focus may lie microns away, and
            in an optical section (confocal, a slide of a z-stack) a nucleus out of the
            plane is not there to detect (the confocal benchmark gave such a cell up as
            lost), or, at the edge of its z extent, flickers in and out after it was
            seen (a cell of the HeLa 3-D slide whose bottom lay at the last focus)."""
            nonlocal back_to_z
            if (back_to_z is None or abs(self.scope.position().z - back_to_z) <= 1e-6
                    or not _safe_move_z(self.scope, back_to_z)):
                return False
            back_to_z = None
            return True

        def to_scan_view() -> bool:
            """Once, when the plane did not help (or was this one), show the detector
            the cell where it found it: the stage at the scan's frame (the focus is in
            the scan's plane already, or cannot go there: :func:`to_scan_plane` runs
            first and nothing else here moves it); whether it moved. What a detector
            finds depends on where in the field a cell lies: of two touching daughter
            nuclei of the simulator (seed 1), the one the scan boxed at 0.99 was found at
            some places in the field and not at its centre, at any threshold (given up
            as lost). Centring then steers it to the centre, where it is followed by
            registration."""
            nonlocal view, chosen
            if view is None:
                return False
            p, (vx, vy) = self.scope.position(), view
            view = None
            if math.hypot(p.x - vx, p.y - vy) <= gate:  # the cell was near the centre
                return False
            try:
                self.scope.move_xy(vx, vy)
            except MoveRefused:
                return False
            steer.reset()  # (a move the steerer did not make) and choose the cell anew
            chosen = False
            return True

        def look_again() -> bool:
            return to_scan_plane() or to_scan_view()

        # (frames for the moves, for the cell to be lost, and for one more look in the
        # scan's plane and one in its view)
        for _ in range(self.centre_iters + 3 * (self.lost_after + 1) + 1):
            frame = self._snap()
            det, lowered = self._detect_near(frame, expect, gate)
            self.reacquired += lowered
            tracks = tracker.update(frame, det)
            if not chosen:
                # The cell is the detection closest to where we expect it (the centre).
                vis = [t for t in tracks if t.missed == 0]
                best = min(vis, key=lambda t: float(np.hypot(*(t.center_um - expect))),
                           default=None)
                if best is None or np.hypot(*(best.center_um - expect)) > gate:
                    unseen += 1
                    if unseen > self.lost_after and look_again():
                        unseen = 0
                        continue
                    if unseen > self.lost_after:
                        return (f"not detected within {gate:.1f} µm of where the scan saw "
                                f"it in {unseen} frames (also at half the score threshold)")
                    continue
                steer.select(TrackId(best.id))
                chosen = True
            act = steer.step(frame, det, tracks)
            if act.target_um is not None:
                expect = np.asarray(act.target_um, float)
            if act.status in (CENTERED, MOVED) and act.seen in ("registered", "detected"):
                unseen = 0
                last_seen = self._centred_view(frame, det, tracker, steer, act)
            if act.status == CENTERED:
                assert last_seen is not None
                return last_seen
            if act.status in (NOT_SEEN, NO_TARGET) or (
                    act.status == MOVED and act.seen == "predicted"):
                unseen += 1
                if unseen > self.lost_after and look_again():
                    unseen = 0
                    continue
                if unseen > self.lost_after:
                    return (f"lost while centring: neither detected (also at half the "
                            f"score threshold) nor registered in {unseen} settled frames "
                            f"after {moves} moves")
            moves += act.status == MOVED
            if act.status in (REFUSED, FAILED, DRY_RUN):
                raise MoveRefused(act.reason or act.status)
            if act.status not in (MOVED, SETTLING, NOT_SEEN, NO_TARGET, CENTERED):
                raise MoveRefused(act.reason or act.status)
        # Out of frames: image it where it was last seen, if it was, and say so.
        if last_seen is None:
            return f"never seen while centring ({moves} moves)"
        last_seen.note = (f"centring did not settle in {moves} moves; imaged at its last "
                          "measured position")
        frame = self._snap()
        shift = (frame.stage_to_pixel(last_seen.xy_um)[0]
                 - last_seen.frame.stage_to_pixel(last_seen.xy_um)[0])
        last_seen.box = last_seen.box + np.tile(shift, 2)  # the box in the new frame
        last_seen.frame = frame
        return last_seen

    def _centred_view(self, frame: Frame, det: Detections, tracker: Tracker,
                      steer: Steerer, act) -> _Centred:
        tr = tracker.get(act.target_id) if act.target_id is not None else None
        xy_um = np.asarray(act.target_um, float)
        c_px = frame.stage_to_pixel(xy_um)[0]
        score = 0.0
        if tr is not None:
            w, h = tr.box[2] - tr.box[0], tr.box[3] - tr.box[1]
            score = tr.score
        else:
            w = h = 10.0 / max(frame.scale_um, 1e-9)
        box = np.array([c_px[0] - w / 2, c_px[1] - h / 2, c_px[0] + w / 2, c_px[1] + h / 2])
        if tr is not None and tr.missed == 0 and len(det):
            k = int(np.argmin(np.hypot(*(det.centers - tr.center_px).T)))
            box = det.boxes[k].astype(float)
            score = float(det.scores[k])
        return _Centred(frame, box, xy_um, score, "")

    def _focus(self, rec: CellRecord, box: np.ndarray) -> FocusResult:
        """Autofocus on the cell: predicted from the focus surface and refined in a short
        sweep once the surface has points; a full search before that."""
        pred = self.surface.predict(rec.x_um, rec.y_um)
        if pred is None or len(self.surface) < 2:
            return autofocus(self.scope, None, search_um=self.focus_search_um,
                             boxes=box[None, :])
        resid = self.surface.uncertainty_um(rec.x_um, rec.y_um)
        search = self.focus_search_um / 2 if resid is None else float(
            np.clip(2.5 * resid, 1.0, self.focus_search_um))
        # three images at +/- search, one step (= search) more if the peak is at an end
        center, search = self._inside_z_limits(pred, search, reach=2.0)
        got = autofocus(self.scope, None, search_um=search, coarse=3, refine=2,
                        refine_rounds=1, max_extend=1, boxes=box[None, :], center=center,
                        max_images=5, widen_flat=2.0)
        if got.ok:
            return got
        zs = [z for z, _ in got.samples]
        vals = np.array([v for _, v in got.samples], float)
        # the two rules below judge a sweep that ran (no refused move, >= 3 images)
        judged = len(vals) >= 3 and AutofocusIssue.REFUSED not in got.issues
        edge_or_flat = {AutofocusIssue.EDGE, AutofocusIssue.FLAT}
        # the sweep around the prediction flat (autofocus then widened it, and the wide
        # planes found no top in it): the cell has no focus of its own near the
        # prediction; the wide planes' end, read as a plateau below, took a thin HeLa
        # cell 5 µm off its focus (2-D slide, fov 512) and the surface with it
        coarse = vals[:3]
        flat_near = (len(vals) > 3
                     and float(coarse.max()) <= FLAT_SWEEP * float(coarse.min()))
        if judged and edge_or_flat.intersection(got.issues) and (
                flat_near or float(vals.max()) < WEAK_PEAK * float(vals.min())):
            # No focus signal of its own (a dim or smooth nucleus: its sharpness varies by
            # less than the noise over the sweep): the surface through the cells already
            # focused is better evidence than the noise maximum a full search would find.
            if not _safe_move_z(self.scope, pred):
                return got
            return dataclasses.replace(
                got, z_final=self.scope.position().z, z_best_estimate=pred, ok=True,
                issues=(), message=(
                    f"flat (< {100 * (FLAT_SWEEP - 1):.0f} %) around the prediction, no top "
                    f"within {min(zs):.2f}-{max(zs):.2f} µm: focus from the surface"
                    if flat_near
                    else f"no sharpness peak of its own (< {WEAK_PEAK - 1:.0%} over "
                    f"{min(zs):.2f}-{max(zs):.2f} µm): focus from the surface"))
        if judged and AutofocusIssue.EDGE in got.issues:
            order = np.argsort(zs)
            z_sorted, v_sorted = np.asarray(zs, float)[order], vals[order]
            i = int(np.argmax(v_sorted))
            # the values walking towards the sharpest end, and each step's rise
            walk = v_sorted if i == len(v_sorted) - 1 else v_sorted[::-1]
            rises = np.diff(walk)
            on_plateau = (
                i in (0, len(v_sorted) - 1)
                and walk[-2] >= PLATEAU * walk[-1]  # the last two about as sharp
                and walk[-1] >= WEAK_PEAK * walk[0]  # after a real flank ...
                and rises[:-1].max() >= 3.0 * max(rises[-1], 0.0))  # ... that levelled off
            if on_plateau:
                # Sharper towards an end, but the last two images are about as sharp
                # after a clear rise: the sweep climbed onto a plateau (a thick nucleus,
                # sharp over several µm), and its end is in focus. A full search would
                # only walk the plateau; the stack's extent then gives the cell's z. (A
                # slow, steady rise is out-of-focus haze of a cell further on: searched.)
                z_end = float(z_sorted[i])
                if _safe_move_z(self.scope, z_end):
                    return dataclasses.replace(
                        got, z_final=self.scope.position().z, z_best_estimate=z_end,
                        ok=True, issues=(), message=f"on a sharpness plateau (the last two images "
                        f"within {1 - PLATEAU:.0%}): focus at its sharpest image, "
                        f"{z_end:.2f} µm")
        if judged and AutofocusIssue.EDGE in got.issues and len(self.surface) >= SURFACE_TRUSTED:
            rise = _rise_over(zs, vals, pred)
            if rise < EDGE_RISE and _safe_move_z(self.scope, pred):
                return dataclasses.replace(
                    got, z_final=self.scope.position().z, z_best_estimate=pred, ok=True,
                    issues=(), message=f"sharpest at the sweep's end but only {rise - 1:.0%} "
                    f"above the predicted plane (a cell's focus rises far more): focus from "
                    f"the surface through {len(self.surface)} cells")
        # The prediction led nowhere (no peak in the short sweep, or moves refused): a
        # stack around a wrong plane images nothing of the cell, so search afresh around
        # the surface's median plane (a few more images for this cell).
        log.info("cell at (%.1f, %.1f): predicted focus %.2f µm failed (%s); full search",
                 rec.x_um, rec.y_um, pred, got.message)
        mid = self.surface.median_z()
        # five images over +/- search, up to three half-search steps more
        center, search = self._inside_z_limits(pred if mid is None else mid,
                                               self.focus_search_um, reach=2.5)
        again = autofocus(self.scope, None, search_um=search, boxes=box[None, :],
                          center=center)
        return dataclasses.replace(again, images=got.images + again.images,
                                   wall_s=got.wall_s + again.wall_s,
                                   sim_s=got.sim_s + again.sim_s)

    def _inside_z_limits(self, center: float, search: float, reach: float = 1.0
                         ) -> tuple[float, float]:
        """A focus sweep ``center +/- search`` moved (and narrowed if it must be) so that
        it lies within the stage's z soft limits even when it is extended to ``reach``
        times *search* (an autofocus whose peak sits at an end takes a step further): a
        sweep that reaches past them has its moves refused and ends without a focus."""
        lim = getattr(getattr(self.scope, "guard", None), "limits", None)
        z = None if lim is None else lim.z
        if z is None:
            return center, search
        lo, hi = float(z[0]), float(z[1])
        search = min(search, 0.45 * (hi - lo) / reach)
        far = reach * search
        return float(np.clip(center, lo + far, hi - far)), search

    def _visit_inner(self, rec: CellRecord, imaged: list[CellRecord]) -> None:
        got = self._centre(rec)
        if isinstance(got, str):
            rec.status, rec.reason = "skipped-lost", got
            return
        frame, box = got.frame, got.box
        c_um = got.xy_um
        scale = frame.scale_um
        rec.x_um, rec.y_um = float(c_um[0]), float(c_um[1])
        rec.box = _box4(box)
        rec.size_um = (float(box[2] - box[0]) * scale, float(box[3] - box[1]) * scale)
        rec.score = got.score
        rec.partial = False
        rec.reason = got.note
        if not self._in_region(c_um):
            rec.status, rec.reason = "skipped-outside", "centre lies outside the region"
            return
        dup = self._duplicate_of(rec, frame, box, imaged)
        if dup is not None:
            rec.status, rec.reason = "skipped-duplicate", dup
            return
        focus: FocusResult | None = None
        if self.autofocus:
            focus = self._focus(rec, box)
            self._images += focus.images
            rec.focus_images = focus.images
            if focus.ok:
                self.surface.add(rec.x_um, rec.y_um, focus.z_final)
        p = self.scope.position()
        z0 = p.z
        rec.z_um = float(z0)
        rec.stage_x_um, rec.stage_y_um = float(p.x), float(p.y)
        stack, zs, boxes, profile, extent, why, used = self._zstack(z0, box)
        try:
            self.scope.move_z(z0)
        except MoveRefused:
            pass
        rec.n_planes = len(stack)
        rec.z_lo_um, rec.z_hi_um = extent
        if not math.isnan(extent[0]):
            # a thick cell's z is the middle of its extent (its sharpest plane may be
            # near a pole); thin cells: the two agree
            rec.z_um = 0.5 * (extent[0] + extent[1])
        rec.file = self._save(rec, stack, zs, boxes, focus, frame, profile, extent, why,
                              used)
        rec.status = "imaged"

    def _duplicate_of(self, rec: CellRecord, frame: Frame, box: np.ndarray,
                      imaged: Sequence[CellRecord]) -> str | None:
        """Why *rec*, centred in *frame* with *box*, is a cell already imaged (None if
        it is not).

        The same cell: its centre within half its size of an imaged cell's; or the two
        boxes overlap by at least :attr:`dup_overlap` of the smaller one and the
        nucleus joins the two centres without a neck (:func:`~inscope.control.refine.
        one_object`). The second rule catches one elongated or kidney-shaped nucleus
        whose two ends the detector boxed as two cells (each end, centred, is boxed on
        its own again); it needs both tests since touching neighbours often share a
        blob (HeLa: 7 of 18 touching pairs) but their boxes mostly overlap little (their
        label boxes at most 0.23 of the smaller), while the detector's boxes of a
        nucleus' two ends overlapped 0.3-0.5. Boxes that overlap less (the detector
        boxed the two ends tightly) still mark one nucleus when the blob joins the two
        centres without narrowing (:attr:`dup_same_body`, 0.9 of the width): on the
        HeLa slides of ``benchmarks/bench_control.py`` such ends did not narrow, while
        two touching nuclei pressed into one blob narrowed well below that. Not
        perfect: two touching nuclei pressed into one blob with large detector boxes
        pass the overlap test (1 cell in ~110 on a HeLa slide,
        ``benchmarks/results/control_hela_fov256.json``).
        """
        from inscope.control.refine import NECK_RATIO, one_object

        r = 0.5 * min(rec.size_um)
        here = frame.stage_to_pixel(np.array([rec.x_um, rec.y_um]))[0]
        b = np.asarray(box, float)
        for o in imaged:
            d = math.hypot(o.x_um - rec.x_um, o.y_um - rec.y_um)
            if d < r:
                return f"same cell as #{o.id}"
            if d > max(*rec.size_um, *o.size_um) or math.isnan(o.stage_x_um):
                continue
            # o's box as it lies in this frame: a stage offset shifts the image rigidly
            shift = (frame.stage_to_pixel(np.array([o.stage_x_um, o.stage_y_um]))[0]
                     - np.asarray(frame.center, float))
            ob = np.asarray(o.box, float) + np.tile(shift, 2)
            iw = min(b[2], ob[2]) - max(b[0], ob[0])
            ih = min(b[3], ob[3]) - max(b[1], ob[1])
            small = min((b[2] - b[0]) * (b[3] - b[1]), (ob[2] - ob[0]) * (ob[3] - ob[1]))
            overlap = iw > 0 and ih > 0 and iw * ih >= self.dup_overlap * small
            there = frame.stage_to_pixel(np.array([o.x_um, o.y_um]))[0]
            # boxes that overlap little need a blob that does not narrow at all
            ratio = NECK_RATIO if overlap else self.dup_same_body
            if one_object(frame.pixels, here, there, np.stack([b, ob]), neck_ratio=ratio):
                how = ("the boxes overlap and one blob joins the two centres" if overlap
                       else "one blob joins the two centres without narrowing")
                return f"same nucleus as #{o.id}: {how}"
        return None

    def cell_region(self, pixels: np.ndarray, box: np.ndarray
                    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """The cell's own pixels in *pixels* (its soft mask grown by 2 px so its edges
        count): a (rows, cols) window and a boolean mask inside it. Neighbours that share
        the box - dense slides - are left out, so their planes do not stretch the cell's
        z range."""
        import cv2

        from inscope.control.refine import soft_mask

        m = soft_mask(pixels, box, pad=0.1)
        if m is None:
            return None
        wgt, (a, c) = m
        core = cv2.dilate((wgt > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        h, w = pixels.shape
        r0, c0 = max(c, 0), max(a, 0)
        r1, c1 = min(c + core.shape[0], h), min(a + core.shape[1], w)
        if r1 - r0 < 3 or c1 - c0 < 4:
            return None
        return (slice(r0, r1), slice(c0, c1)), core[r0 - c:r1 - c, c0 - a:c1 - a]

    def cell_signal(self, pixels: np.ndarray, box: np.ndarray,
                    region: tuple[tuple[slice, slice], np.ndarray] | None = None,
                    floor: float | None = None) -> float:
        """The cell's own signal in one plane: its sharpness (Brenner: mean squared
        2-pixel difference) above the frame's noise floor (*floor*, measured here when
        not given), over the cell's pixels (*region*) or else its box; hot pixels and
        cosmic-ray hits lowered first, as :func:`~inscope.control.focus.sharpness` does."""
        if floor is None:
            floor = brenner_noise_floor(pixels)
        if region is None:
            return max(sharpness(pixels, np.asarray(box, float)[None, :], "brenner",
                                 pad=0.1) - floor, 0.0)
        (rs, cs), mask = region
        crop = clean_crop(pixels, rs, cs, hot_pixel_margin(pixels))
        d = crop[:, 2:] - crop[:, :-2]
        m = mask[:, 1:-1]
        if not m.any():
            return 0.0
        return max(float(np.mean(d[m] ** 2)) - floor, 0.0)

    def cell_intensity(self, pixels: np.ndarray, box: np.ndarray,
                       region: tuple[tuple[slice, slice], np.ndarray] | None = None
                       ) -> float:
        """The cell's mean intensity over its pixels (*region*, else its box) above the
        frame's background (its 5th percentile, on a stride-4 subsample: the dim space
        between cells, also in a packed field), at least 0."""
        bg = float(np.percentile(pixels[::4, ::4], 5))
        if region is None:
            x0, y0, x1, y1 = (int(round(v)) for v in _box4(box))
            h, w = pixels.shape
            crop = pixels[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
            vals = np.asarray(crop, np.float32).ravel()
        else:
            (rs, cs), mask = region
            vals = np.asarray(pixels[rs, cs], np.float32)[mask]
        if not vals.size:
            return 0.0
        return max(float(vals.mean()) - bg, 0.0)

    def _zstack(self, z0: float, box: np.ndarray):
        """Planes around *z0*: ``(planes, zs, boxes, profile, (z_lo, z_hi), why, used)``;
        the profile is ``[(z, signal), ...]`` and the extent where the signal is at
        least its fraction of its peak (NaN for a fixed stack, and for a cell too dim to
        measure: *why* then says so); *used* says which signal and fraction gave it
        (and, with ``auto``, both profiles)."""
        spec = self.z_stack
        auto = self.signal == "auto"
        with_intensity = self.signal in ("intensity", "auto")
        # z -> (pixels, box, sharpness, intensity)
        planes: dict[float, tuple[np.ndarray, list[float], float, float]] = {}
        region: list = []
        floors: list[float] = []  # each plane's camera-noise floor (Brenner)
        cut: set[float] = set()  # the ends (+1 up, -1 down) the z limits stopped

        def take(z: float) -> tuple[float, float] | None:
            try:
                self.scope.move_z(z)
            except MoveRefused:
                return None
            f = self._snap()
            zz = f.position.z if f.position is not None else z
            if not region:  # the cell's pixels, from its in-focus plane (taken first)
                region.append(self.cell_region(f.pixels, box))
            floors.append(brenner_noise_floor(f.pixels))
            sharp = self.cell_signal(f.pixels, box, region[0], floors[-1])
            inten = self.cell_intensity(f.pixels, box, region[0]) if with_intensity else 0.0
            planes[zz] = (f.pixels, [float(v) for v in box], sharp, inten)
            return (inten if self.signal == "intensity" else sharp), inten

        if not spec.adaptive:
            offs = spec.fixed_offsets()
            for o in sorted(offs, key=lambda o: (o != 0.0, o)):  # focus plane first
                take(z0 + o)
        else:
            lo, hi = spec.range_um
            peak, peak_i = take(z0) or (0.0, 0.0)
            for sign, need in ((1.0, hi), (-1.0, -lo)):
                o = spec.step_um
                below = 0  # planes in a row under the threshold: two end it
                past = 0.0  # (auto) how far past the end of the sharpness
                while o <= spec.max_extent_um + 1e-9:
                    got = take(z0 + sign * o)
                    if got is None:
                        cut.add(sign)
                        break
                    sig, inten = got
                    peak, peak_i = max(peak, sig), max(peak_i, inten)
                    # (no signal at all - a cell too dim to measure - ends it too)
                    below = below + 1 if sig <= self.signal_frac * peak else 0
                    dark = inten <= SIGNAL_FRAC_INTENSITY * peak_i
                    if o >= need - 1e-9 and below >= 2:
                        # (auto, past the sharpness: one dark plane is enough)
                        if not auto or dark or past >= AUTO_EXTRA_UM - 1e-9:
                            break
                        past += spec.step_um
                    o += spec.step_um
        zs = sorted(planes)
        use_i = self.signal == "intensity"
        profile = [(float(z), planes[z][3] if use_i else planes[z][2]) for z in zs]
        used: dict[str, Any] = {"signal": "intensity" if use_i else "sharpness",
                                "signal_frac": self.signal_frac,
                                "signal_frac_source": self.signal_frac_source}
        extent = (math.nan, math.nan)
        # A cell whose sharpness never rises above the camera noise's own has a profile
        # of noise, and an extent read from it is a guess (the tail of the z-extent
        # error on the HeLa 3-D slides of bench_control): none is reported.
        why = (_weak([(z, planes[z][2]) for z in zs], floors, spec.min_snr)
               if spec.adaptive else None)
        if spec.adaptive and why is None:
            extent = _extent(profile, self.signal_frac)
            if auto:
                prof_i = [(float(z), float(planes[z][3])) for z in zs]
                ext_i = _extent(prof_i, SIGNAL_FRAC_INTENSITY)
                # dark at an end: the intensity fell below its fraction inside the stack
                # there; an end the z limits cut counts when the other end went dark
                # (the cell reaches past the limit; the sharpness cannot see further)
                dark_lo, dark_hi = ext_i[0] > zs[0] + 1e-9, ext_i[1] < zs[-1] - 1e-9
                dark_both = ((dark_lo or -1.0 in cut) and (dark_hi or 1.0 in cut)
                             and (dark_lo or dark_hi))
                used = {"signal": "intensity" if dark_both else "sharpness",
                        "signal_frac": SIGNAL_FRAC_INTENSITY if dark_both
                        else self.signal_frac,
                        "signal_frac_source": "auto: the planes beyond the cell are "
                        + ("dark, so its intensity" if dark_both else
                           "not dark (out-of-focus light), so its sharpness"),
                        "profiles": {"sharpness": profile, "intensity": prof_i}}
                if dark_both:
                    profile, extent = prof_i, ext_i
        return ([planes[z][0] for z in zs], zs, [planes[z][1] for z in zs], profile,
                extent, why, used)

    def _save(self, rec: CellRecord, stack: list[np.ndarray], zs: list[float],
              boxes: list[list[float]], focus: FocusResult | None, frame: Frame,
              profile: list[tuple[float, float]] | None = None,
              extent: tuple[float, float] = (math.nan, math.nan),
              extent_why: str | None = None, used: dict[str, Any] | None = None) -> str:
        """Write the cell's stack as OME-TIFF; *used* is :meth:`_zstack`'s account of
        the signal its extent was read from."""
        import tifffile

        name = f"cell_{rec.id:04d}.ome.tif"
        path = self.out_dir / name
        data = np.stack(stack)
        px = frame.scale_um
        dz = float(np.median(np.diff(zs))) if len(zs) > 1 else self.z_stack.step_um
        desc = {
            "inscope": "find-and-image", "cell_id": rec.id,
            "stage_um": [rec.x_um, rec.y_um, rec.z_um], "affine_um_per_px": frame.affine
            .tolist(), "box_px": list(rec.box), "boxes_per_plane_px": boxes,
            "z_um": zs, "score": rec.score,
            "stage_position_um": [rec.stage_x_um, rec.stage_y_um, rec.z_um],
            "signal_profile": [[z, v] for z, v in (profile or [])],
            **(used or {}),  # signal, signal_frac, signal_frac_source(, profiles)
            "z_extent_um": None if math.isnan(extent[0]) else [extent[0], extent[1]],
            "z_extent_note": extent_why,
            "autofocus": None if focus is None else focus.to_dict(),
            "detector": getattr(self.detector, "name", type(self.detector).__name__),
            "provenance": self.provenance,
        }
        n = len(zs)
        tmp = path.with_name(path.name + ".part")
        ppcm = 1e4 / px  # TIFF resolution tags (pixels per cm: TIFF has no µm unit)
        tifffile.imwrite(
            tmp, data, ome=True, photometric="minisblack",
            resolution=(ppcm, ppcm), resolutionunit="CENTIMETER",
            metadata={
                "axes": "ZYX", "Name": f"cell {rec.id}",
                "PhysicalSizeX": px, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": px, "PhysicalSizeYUnit": "µm",
                "PhysicalSizeZ": abs(dz), "PhysicalSizeZUnit": "µm",
                "Plane": {"PositionX": [rec.x_um] * n, "PositionXUnit": ["µm"] * n,
                          "PositionY": [rec.y_um] * n, "PositionYUnit": ["µm"] * n,
                          "PositionZ": [float(z) for z in zs], "PositionZUnit": ["µm"] * n},
                "Description": json.dumps(desc),
            })
        tmp.replace(path)  # a file that exists is complete
        return name
