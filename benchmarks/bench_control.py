"""Control benchmark on any backend with ground truth: the simulator or a slide.

Every error is measured against ground truth (the simulator's specimen and focal surface,
or a slide's instance labels), never against the detector's own estimate.

Measures
--------
* jitter: RMS spread (px) of one nucleus' measured position, box centre vs the refined
  (registered) position, under sub-pixel and 1-10 px stage shifts;
* centring: success (``centred`` within 3 moves), moves, images, error against the true
  centroid, and how often ``centred`` was reported while the target was not in view or
  was another cell (must be 0);
* autofocus from a cold start (+/-2, 5, 10 µm): images and error against the true focus;
* focus lock started 2 and 4 µm above and below a field's focus: the plane it ends on
  from either side, frames to ``locked``, moves, error against the field's true focus;
* find-and-image (adaptive z-stacks): recall of the interior cells, cells imaged more
  than once, images per cell for focus, focus error, z-extent error of the cell's
  own-signal range against its true range (thin cells on the simulator and on 2-D slides:
  the focal plane).

Run::

    python -m benchmarks.bench_control --backend sim --out benchmarks/results/control.json
    python -m benchmarks.bench_control --backend slide -o path=cells.npz \\
        -o pixel_size_um=0.645 -o fov=256 --out benchmarks/results/control_slide.json
    python -m benchmarks.bench_control --hela /path/hela_ctc_stack.npz --fov 256 \\
        --out benchmarks/results/control_hela_fov256.json
    python -m benchmarks.bench_control --confocal \\
        --out benchmarks/results/control_confocal.json

``--hela`` builds the slides from the Cell Tracking Challenge HeLa frames (not part of
the repository): a 2-D slide (frame 0 with its labels, synthetic defocus, a tilted focal
plane) and a 3-D slide (each labelled nucleus given an ellipsoidal z extent and
out-of-focus haze). The same script run against an older checkout (on PYTHONPATH) gives
the "before" figures (``code: before`` in the JSON). Prints a summary and writes JSON
with p50 / p90 / p99 / max.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import functools
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import load_average, percentiles, write_json
from inscope.enums import Backend


def _pct(values: list[float]) -> dict[str, float] | None:
    return percentiles([x for x in values if x is not None and not math.isnan(x)],
                       count=True, mean=True)


# -- ground truth, whatever the backend ------------------------------------------------
class Truth:
    """True cells of a simulator or a slide: positions (µm), focus z, z range."""

    def __init__(self, scope) -> None:
        self.scope = scope
        self.sim = hasattr(scope, "specimen")

    def cells(self, region: tuple[float, float, float, float]) -> dict[int, np.ndarray]:
        """{id: (x, y)} of labelled objects whose centre lies in *region*. On the
        simulator a dividing pair's two daughters are two objects (as they are labelled),
        with ids ``4 * cell id + part``."""
        s = self.scope
        if self.sim:
            x0, y0, x1, y1 = region
            grow = 20.0
            ids = s.specimen.cells_in_region(x0 - grow, y0 - grow, x1 + grow, y1 + grow,
                                             s.sim_time_s)
            out = {}
            for i in ids:
                for k in range(len(s.specimen.get(i).part_offsets_um())):
                    xy = self.position(4 * int(i) + k)
                    if x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1:
                        out[4 * int(i) + k] = xy
            return out
        t = s.true_cells()
        x0, y0, x1, y1 = region
        m = ((t.xyz_um[:, 0] >= x0) & (t.xyz_um[:, 0] <= x1) & (t.xyz_um[:, 1] >= y0)
             & (t.xyz_um[:, 1] <= y1))
        return {int(i): t.xyz_um[k, :2].copy() for k, i in enumerate(t.ids) if m[k]}

    def position(self, cid: int) -> np.ndarray:
        s = self.scope
        if self.sim:
            cell, part = divmod(cid, 4)
            off = s.specimen.get(cell).part_offsets_um()[part]
            return np.asarray(s.specimen.position_of(cell, s.sim_time_s), float) + off
        t = s.true_cells()
        return t.xyz_um[list(t.ids).index(cid), :2].copy()

    def focus(self, cid: int) -> float:
        s = self.scope
        xy = self.position(cid)
        if self.sim:
            return float(s.true_focus_z(*xy))
        t = s.true_cells()
        k = list(t.ids).index(cid)
        if s.shape_zyx[0] > 1:
            return float(t.xyz_um[k, 2] + s.focus_offset_um(*xy))
        return float(s.true_focus_z(*xy))

    def z_range(self, cid: int) -> tuple[float, float] | None:
        """The cell's true z range: from 3-D labels; on the simulator its ellipsoid's
        bottom and top (``thickness_ratio``; both the focal plane for thin nuclei); None
        on a 2-D slide (its defocus is synthetic)."""
        s = self.scope
        if not self.sim and s.shape_zyx[0] > 1:
            t = s.true_cells()
            k = list(t.ids).index(cid)
            off = s.focus_offset_um(*t.xyz_um[k, :2])
            return float(t.z_range_um[k, 0] + off), float(t.z_range_um[k, 1] + off)
        if not self.sim:
            return None
        if hasattr(s, "true_z_range"):
            return s.true_z_range(cid // 4)
        z = self.focus(cid)
        return z, z

    def radius(self, cid: int) -> float:
        s = self.scope
        if self.sim:
            return float(max(s.specimen.get(cid // 4).part_half_extent_um()))
        t = s.true_cells()
        b = t.boxes_px[list(t.ids).index(cid)]
        return 0.5 * float(max(b[2] - b[0], b[3] - b[1])) * s.pixel_size_um

    def interior_region(self, margin_um: float) -> tuple[float, float, float, float]:
        """The region whose cells a measure draws from: on a slide the image less
        *margin_um* at each edge, the margin capped at a quarter of the image's shorter
        side (a small image, e.g. one 256x256 confocal field, still has cells to draw)."""
        s = self.scope
        if self.sim:
            p = s.position()
            return (p.x - 200, p.y - 200, p.x + 200, p.y + 200)
        _, h, w = s.shape_zyx
        px = s.pixel_size_um
        margin_um = min(margin_um, 0.25 * (min(h, w) - 1) * px)
        return (margin_um, margin_um, (w - 1) * px - margin_um, (h - 1) * px - margin_um)

    def half_field_um(self) -> float:
        """Half the camera field's shorter side (µm)."""
        s = self.scope
        return 0.5 * s.pixel_size_um * min(s.snap().pixels.shape)


# -- scopes ----------------------------------------------------------------------------
def _scratch(prefix: str) -> Path:
    """A scratch folder for the slides this run generates, removed when the process
    exits (a HeLa 3-D slide is ~190 MB; left behind, a day of runs filled the disk)."""
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, d, True)
    return Path(d)


def _sim(seed: int, **kw):
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    return SimulatedMicroscope(SimConfig(seed=seed, realtime=False, **kw))


#: The simulator every bench_control suite runs: a tilted focal surface, thick nuclei at
#: their sub-pixel positions (``thickness`` = half-thickness / short semi-axis).
SIM_TILT = (0.01, -0.005)


def sim_maker(thickness: float) -> Callable[[int], Any]:
    """``make(seed)`` for the benchmark's simulator."""
    def make(seed: int):
        return _sim(seed, tilt=SIM_TILT, thickness_ratio=thickness, subpixel=True)

    return make


def hela_makers(paths: dict[str, Path], fov: int) -> dict[str, Callable[[int], Any]]:
    """``make(seed)`` for the 2-D and 3-D HeLa slides of :func:`build_hela_slides`
    (*paths*), with a camera of *fov* pixels and fresh camera noise per frame."""
    def h2(seed: int):
        return _slide({"path": str(paths["2d"]), "fov": fov, "noise": 0.02,
                       "tilt": list(SIM_TILT)}, seed)

    def h3(seed: int):
        return _slide({"path": str(paths["3d"]), "fov": fov, "noise": 0.02}, seed)

    return {"2d": h2, "3d": h3}


def _slide(options: dict[str, Any], seed: int = 0):
    from inscope.acquisition.factory import open_microscope

    opts = {"realtime": False, "seed": seed, **options}
    return open_microscope("slide", **opts)


def _detector(name: str, mirror_views: int = 1):
    from inscope.control.cli import load_detector_for

    return load_detector_for(None if name == "default" else name, mirror_views)


def _new_code() -> bool:
    """True when the control code has the refinement (False: run against an older tree
    for the 'before' figures, see ``--label``)."""
    import inspect

    from inscope.control.steering import Steerer

    return "refine" in inspect.signature(Steerer).parameters


def _cell_files(tmp: Path, rows: list[dict]) -> dict[str, dict]:
    """The OME-TIFF description of every imaged cell (works for old and new files)."""
    import tifffile

    out = {}
    for r in rows:
        if r["status"] != "imaged" or not r.get("file"):
            continue
        with tifffile.TiffFile(tmp / r["file"]) as tf:
            xml = tf.ome_metadata or ""
        i, j = xml.find("<Description>"), xml.find("</Description>")
        if i < 0:
            continue
        import html

        out[r["file"]] = json.loads(html.unescape(xml[i + 13:j]))
    return out


# -- jitter ----------------------------------------------------------------------------
def bench_jitter(make_scope, det, cells: int, seed: int,
                 refiner: dict[str, Any] | None = None) -> dict[str, Any]:
    """Spread of one cell's measured position while the stage shifts under it, and how
    far the refined position is from the cell's true centroid in the first and the last
    of those frames (*refiner*: TargetRefiner options, e.g. ``{"max_offsets": 25}``)."""
    from inscope.control.refine import TargetRefiner

    scope = make_scope(seed)
    truth = Truth(scope)
    rng = np.random.default_rng(seed)
    cand = list(truth.cells(truth.interior_region(60.0)).items())
    rng.shuffle(cand)
    px = scope.pixel_size_um
    out: dict[str, list[float]] = {f"{m}_{k}": [] for m in ("box", "refined")
                                    for k in ("subpixel", "1-10px")}
    # squared distances from each cell's own mean, every (cell, shift) pair together:
    # the jitter as one RMS over all of them (as the model card's box-centre jitter)
    sq: dict[str, list[float]] = {k: [] for k in out}
    err_first: list[float] = []  # refined position - true centroid (µm), first frame
    err_last: list[float] = []  # ... and last frame
    misses = 0
    n = 0
    for cid, xy in cand:
        if n >= cells:
            break
        if hasattr(scope, "true_focus_z"):
            scope.move_z(truth.focus(cid))
        scope.move_xy(*xy)
        f = scope.snap()
        d = det.detect(f)
        if not len(d):
            continue
        c = f.pixel_to_stage(d.centers)
        j = int(np.argmin(np.hypot(*(c - xy).T)))
        if np.hypot(*(c[j] - xy)) > truth.radius(cid):
            continue
        n += 1
        for kind in ("subpixel", "1-10px"):
            ref = TargetRefiner(**(refiner or {}))
            # the frame's other boxes, as the Steerer gives them (code before the
            # touching-neighbour split has no such argument)
            ref.acquire(f, d.boxes[j], **_others(np.delete(d.boxes, j, 0)))
            pos: dict[str, list[np.ndarray]] = {"box": [], "refined": []}
            for _ in range(10):
                if kind == "subpixel":
                    sh = rng.uniform(-1, 1, 2)
                else:
                    a = rng.uniform(0, 2 * np.pi)
                    sh = rng.uniform(1, 10) * np.array([np.cos(a), np.sin(a)])
                scope.move_xy(xy[0] + sh[0] * px, xy[1] + sh[1] * px)
                g = scope.snap()
                dd = det.detect(g)
                box, rest = None, dd.boxes
                if len(dd):
                    cc = g.pixel_to_stage(dd.centers)
                    k = int(np.argmin(np.hypot(*(cc - xy).T)))
                    if np.hypot(*(cc[k] - xy)) < truth.radius(cid):
                        pos["box"].append(cc[k])
                        box, rest = dd.boxes[k], np.delete(dd.boxes, k, 0)
                    else:
                        misses += 1
                fix = ref.locate(g, None, box, **_others(rest))
                if fix is not None:
                    pos["refined"].append(fix.xy_um)
            if pos["refined"]:
                true_xy = truth.position(cid)
                err_first.append(float(np.hypot(*(pos["refined"][0] - true_xy))))
                err_last.append(float(np.hypot(*(pos["refined"][-1] - true_xy))))
            for m, v in pos.items():
                a = np.asarray(v)
                if len(a) >= 3:
                    d2 = ((a - a.mean(0)) ** 2).sum(1) / px ** 2
                    out[f"{m}_{kind}"].append(float(np.sqrt(d2.mean())))
                    sq[f"{m}_{kind}"].extend(d2.tolist())
    scope.close()
    res: dict[str, Any] = {k: _pct(v) for k, v in out.items()}
    for k, v in sq.items():
        if v and res[k] is not None:
            res[k]["pooled_rms"] = float(np.sqrt(np.mean(v)))
    change = np.subtract(err_last, err_first)
    res["refined_error_um"] = {
        "first_frame": _pct(err_first), "last_frame": _pct(err_last),
        "last_better_by_0.2um": int((change < -0.2).sum()),
        "last_worse_by_0.2um": int((change > 0.2).sum())}
    res["cells"] = n
    res["box_misses"] = misses
    res["unit"] = "px RMS about the cell's mean measured position"
    return res


# -- centring --------------------------------------------------------------------------
def bench_centring(make_scope, det, trials: int, seed: int) -> dict[str, Any]:
    from inscope.control.steering import CENTERED, MOVED, SETTLING, Steerer
    from inscope.control.targets import TrackId

    rng = np.random.default_rng(seed)
    rows = []
    scope = make_scope(seed)
    truth = Truth(scope)
    # start 5-40 µm off the cell, scaled down on a small field (the cell must be in
    # view at the start: the largest offset is at most 0.6 x half the field)
    scale = min(1.0, 0.6 * truth.half_field_um() / 40.0)
    offsets = [o * scale for o in (5.0, 10.0, 20.0, 40.0)]
    cand = list(truth.cells(truth.interior_region(80.0)).items())
    rng.shuffle(cand)
    for cid, _xy in cand[:trials]:
        for off in offsets:
            true_xy = truth.position(cid)
            if hasattr(scope, "true_focus_z"):
                scope.move_z(truth.focus(cid))
            ang = rng.uniform(0, 2 * np.pi)
            scope.move_xy(true_xy[0] - off * np.cos(ang), true_xy[1] - off * np.sin(ang))
            steer = Steerer(scope)  # the defaults, as a user gets them
            t0 = time.perf_counter()
            images = moves = 0
            chosen = False
            status, false_centred = "", False
            for _ in range(10):
                f = scope.snap()
                images += 1
                dd = det.detect(f)
                tracks = steer.tracker.update(f, dd)
                if not chosen:
                    vis = [t for t in tracks if t.missed == 0]
                    if not vis:
                        status = "not-found"
                        break
                    t = min(vis, key=lambda t: float(np.hypot(*(t.center_um - true_xy))))
                    if np.hypot(*(t.center_um - true_xy)) > truth.radius(cid):
                        status = "not-found"
                        break
                    steer.select(TrackId(t.id))
                    chosen = True
                act = steer.step(f, dd, tracks)
                status = act.status
                moves += act.status == MOVED
                if act.status == CENTERED:
                    # evidence check against truth: the centred target is this cell
                    tgt = np.asarray(act.target_um, float)
                    true_now = truth.position(cid)
                    in_view = np.all(np.abs(f.stage_to_pixel(true_now)[0]
                                            - np.asarray(f.center)) < np.asarray(f.center))
                    false_centred = bool(np.hypot(*(tgt - true_now)) > truth.radius(cid)
                                         or not in_view)
                    break
                if act.status not in (MOVED, SETTLING, "not-seen"):
                    break
            p = scope.position()
            true_now = truth.position(cid)
            rows.append({"cell": cid, "offset_um": off, "images": images, "moves": moves,
                         "status": status, "wall_s": time.perf_counter() - t0,
                         "false_centred": false_centred,
                         "settled_within_3_moves": status == CENTERED and moves <= 3,
                         "error_um": float(np.hypot(p.x - true_now[0], p.y - true_now[1]))})
    scope.close()
    ok = [r for r in rows if r["status"] == CENTERED]
    return {
        "trials": len(rows), "offsets_um": offsets,
        "settled_within_3_moves": (sum(r["settled_within_3_moves"] for r in rows)
                                   / len(rows) if rows else None),
        "centred_fraction": len(ok) / len(rows) if rows else None,
        "false_centred": sum(r["false_centred"] for r in rows),
        "not_found": sum(r["status"] == "not-found" for r in rows),
        "error_um_when_centred": _pct([r["error_um"] for r in ok]),
        "error_um_all": _pct([r["error_um"] for r in rows]),
        "moves": _pct([r["moves"] for r in rows]),
        "images": _pct([r["images"] for r in rows]),
        "wall_s": _pct([r["wall_s"] for r in rows]),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in
                     sorted({r["status"] for r in rows})},
        "rows": rows,
    }


def _cells_in_random_order(make_scope, seed: int, salt: int, margin_um: float):
    """A fresh scope, its truth, and its interior cells ``[(id, xy), ...]`` shuffled by
    ``seed + salt`` (each measure draws its own cells)."""
    rng = np.random.default_rng(seed + salt)
    scope = make_scope(seed)
    truth = Truth(scope)
    cand = list(truth.cells(truth.interior_region(margin_um)).items())
    rng.shuffle(cand)
    return scope, truth, cand


# -- autofocus -------------------------------------------------------------------------
def bench_autofocus(make_scope, det, trials: int, seed: int) -> dict[str, Any]:
    from inscope.control.focus import autofocus

    scope, truth, cand = _cells_in_random_order(make_scope, seed, 7, 80.0)
    rows = []
    for cid, xy in cand[:trials]:
        scope.move_xy(*xy)
        zt = truth.focus(cid)
        f = None
        for off in (-10.0, -5.0, -2.0, 2.0, 5.0, 10.0):
            try:
                scope.move_z(zt + off)
            except Exception:  # noqa: BLE001 - beyond a stack's range: skip the offset
                continue
            if f is None:  # the cell's box (from an in-focus look)
                scope.move_z(zt)
                f = scope.snap()
                d = det.detect(f)
                c = f.pixel_to_stage(d.centers) if len(d) else np.zeros((0, 2))
                if not len(d) or np.hypot(*(c - xy).T).min() > truth.radius(cid):
                    break
                box = d.boxes[int(np.argmin(np.hypot(*(c - xy).T)))]
                scope.move_z(zt + off)
            r = autofocus(scope, None, boxes=box[None, :])
            rows.append({"cell": cid, "offset_um": off, "images": r.images,
                         "wall_s": r.wall_s, "error_um": r.z_final - zt, "ok": r.ok})
    scope.close()
    out: dict[str, Any] = {"rows": rows}
    for mag in (2.0, 5.0, 10.0):
        r = [x for x in rows if abs(x["offset_um"]) == mag]
        out[f"offset_pm{mag:g}um"] = {"images": _pct([x["images"] for x in r]),
                                      "abs_error_um": _pct([abs(x["error_um"]) for x in r])}
    return out


# -- focus lock ------------------------------------------------------------------------
def bench_focus_lock(make_scope, det, trials: int, seed: int, frames: int = 90
                     ) -> dict[str, Any]:
    """The focus lock started above and below the focus of the same field: the plane it
    ends on from each side (the issue's target: the same plane within +/-0.3 µm), whether
    it locked, how many frames and moves that took, and its distance from the field's true
    focus (the median over the labelled cells in view; on the simulator the focal surface
    at the field's centre)."""
    from inscope.control.focus import FocusLock

    scope, truth, cand = _cells_in_random_order(make_scope, seed, 11, 60.0)
    rows = []
    for cid, xy in cand[:trials]:
        scope.move_xy(*xy)
        half = 0.5 * scope.pixel_size_um * min(scope.snap().pixels.shape)
        near = truth.cells((xy[0] - half, xy[1] - half, xy[0] + half, xy[1] + half))
        z_field = float(np.median([truth.focus(k) for k in near])) if near else \
            truth.focus(cid)
        for mag in (2.0, 4.0):
            ends = {}
            for sign in (1.0, -1.0):
                try:
                    scope.move_z(z_field + sign * mag)
                except Exception:  # noqa: BLE001 - beyond a stack's range: skip the start
                    continue
                lock = FocusLock(scope)
                status = []
                for _ in range(frames):
                    f = scope.snap()
                    status.append(lock.step(f, det.detect(f)).status)
                first = status.index("locked") if "locked" in status else None
                zc = lock.z_center if lock.z_center is not None else math.nan
                ends[sign] = zc
                rows.append({"cell": cid, "start_um": sign * mag, "locked_end": lock.locked,
                             "first_locked_frame": first, "moves": lock.moves,
                             "end_minus_field_focus_um": zc - z_field,
                             "dither_um": lock.dither_um, "dof_um": lock.dof_um,
                             "dof_source": lock.dof_source})
            if len(ends) == 2:
                rows[-1]["above_minus_below_um"] = ends[1.0] - ends[-1.0]
    scope.close()
    diffs = [abs(r["above_minus_below_um"]) for r in rows if "above_minus_below_um" in r]
    firsts = [r["first_locked_frame"] for r in rows if r["first_locked_frame"] is not None]
    return {"rows": rows, "frames": frames,
            "above_minus_below_abs_um": _pct(diffs),
            "pairs_within_0.3um": (sum(d <= 0.3 for d in diffs) / len(diffs)) if diffs
            else None,
            "locked_at_end": (sum(r["locked_end"] for r in rows) / len(rows)) if rows
            else None,
            "first_locked_frame": _pct([float(x) for x in firsts]),
            "never_locked": sum(r["first_locked_frame"] is None for r in rows),
            "abs_error_vs_field_focus_um": _pct([abs(r["end_minus_field_focus_um"])
                                                 for r in rows])}


def _others(boxes: np.ndarray) -> dict[str, Any]:
    """``{"others": boxes}`` for a TargetRefiner that takes the frame's other boxes,
    ``{}`` for older code (the 'before' figures)."""
    return {"others": boxes} if _refiner_takes_others() else {}


@functools.cache
def _refiner_takes_others() -> bool:
    """Whether this code's TargetRefiner takes the frame's other boxes (asked once, not
    on every frame of the jitter measure)."""
    import inspect

    from inscope.control.refine import TargetRefiner

    return "others" in inspect.signature(TargetRefiner.acquire).parameters


# -- find-and-image --------------------------------------------------------------------
def bench_workflow(make_scope, det, seed: int, z_step: float,
                   region_um: float | None = None,
                   signal_frac: float | None = None,
                   signal: str | None = None) -> dict[str, Any]:
    from inscope.control.workflow import FindAndImage, ZStackSpec

    scope = make_scope(seed)
    truth = Truth(scope)
    if region_um is not None:
        p = scope.position()
        h = region_um / 2
        region = (p.x - h, p.y - h, p.x + h, p.y + h)
    else:
        region = truth.interior_region(20.0)
    # interior cells: centre inside the region and at least a cell radius from its edge
    # (a cell cut by the region's edge may or may not be in, both are right)
    cells = truth.cells(region)
    interior = {i: xy for i, xy in cells.items()
                if min(xy[0] - region[0], region[2] - xy[0], xy[1] - region[1],
                       region[3] - xy[1]) > truth.radius(i)}
    with tempfile.TemporaryDirectory() as tmp:
        # (signal_frac only when given: older code, run for the 'before' figures, has
        # a float default and no None)
        given: dict[str, Any] = {} if signal_frac is None else {"signal_frac": signal_frac}
        if signal is not None:
            given["signal"] = signal
        spec = ZStackSpec((-z_step, z_step), z_step, adaptive=True, max_extent_um=15.0,
                          **given)
        wf = FindAndImage(scope, det, region=region, out_dir=tmp, z_stack=spec)
        s = wf.run()
        with open(Path(tmp) / "cells.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        descs = _cell_files(Path(tmp), rows)
    hits: dict[int, int] = {}
    focus_err, focus_imgs, ext_err, ext_iou = [], [], [], []
    ext_unknown = 0
    pos_err = []
    all_true = truth.cells((region[0] - 50, region[1] - 50, region[2] + 50, region[3] + 50))
    for r in rows:
        if r["status"] != "imaged" or not all_true:
            continue
        xy = np.array([float(r["x_um"]), float(r["y_um"])])
        i = min(all_true, key=lambda k: float(np.hypot(*(all_true[k] - xy))))
        if np.hypot(*(all_true[i] - xy)) > truth.radius(i):
            continue
        hits[i] = hits.get(i, 0) + 1
        pos_err.append(float(np.hypot(*(all_true[i] - xy))))
        focus_err.append(abs(float(r["z_um"]) - truth.focus(i)))
        desc = descs.get(r["file"], {})
        focus_imgs.append(int((desc.get("autofocus") or {}).get("images", 0)))
        zr = truth.z_range(i)
        # the cell's z extent: measured from its signal (new), or the acquired range
        # (before: planes were added while a box was detected); a cell too dim to
        # measure has no extent and a note saying so: counted, not scored
        if desc.get("z_extent_note") and desc.get("z_extent_um") is None:
            ext_unknown += int(zr is not None)
            continue
        ext = desc.get("z_extent_um") or ([min(desc["z_um"]), max(desc["z_um"])]
                                          if desc.get("z_um") else None)
        if ext and zr is not None:
            lo, hi = zr
            zl, zh = float(ext[0]), float(ext[1])
            ext_err.append(max(abs(zl - lo), abs(zh - hi)))
            inter = max(0.0, min(zh, hi) - max(zl, lo))
            union = max(zh, hi) - min(zl, lo)
            ext_iou.append(inter / union if union > 0 else 1.0)
    found = [i for i in interior if hits.get(i, 0) >= 1]
    once = [i for i in interior if hits.get(i, 0) == 1]
    reasons: dict[str, int] = {}
    for r in rows:
        if r["status"] != "imaged":
            key = f"{r['status']}: {r['reason'][:60]}" if r["reason"] else r["status"]
            reasons[key] = reasons.get(key, 0) + 1
    no_reason = sum(1 for r in rows if r["status"] not in ("imaged",) and not r["reason"])
    scope.close()
    sim_min = (s.sim_s or math.nan) / 60.0
    return {
        "region_um": [float(v) for v in region], "interior_true_cells": len(interior),
        "fields": s.fields, "cells_found": s.cells_found, "cells_imaged": s.cells_imaged,
        "recall_interior": len(found) / len(interior) if interior else None,
        "interior_imaged_exactly_once": len(once) / len(interior) if interior else None,
        "true_cells_imaged_twice": sum(v > 1 for v in hits.values()),
        "skipped": s.skipped, "skip_reasons": reasons, "skipped_without_reason": no_reason,
        "position_error_um": _pct(pos_err),
        "focus_images_per_cell": _pct(focus_imgs),
        "focus_images_after_first_5": _pct(focus_imgs[5:]),
        "focus_abs_error_um": _pct(focus_err),
        "z_extent_max_end_error_um": _pct(ext_err),
        "z_extent_iou": _pct(ext_iou),
        "z_extent_unknown_too_dim": ext_unknown,
        # [fraction, where it came from, the per-plane signal] (code before the choice
        # of signal: sharpness)
        "z_extent_signal_frac": [getattr(wf, "signal_frac", spec.signal_frac),
                                 getattr(wf, "signal_frac_source",
                                         "fixed (code before the choice by sectioning)"),
                                 getattr(wf, "signal", "sharpness")],
        "images": s.images, "wall_s": s.wall_s, "sim_s": s.sim_s,
        "cells_per_sim_minute": s.cells_imaged / sim_min if sim_min > 0 else None,
    }


# -- HeLa slides -----------------------------------------------------------------------
def build_hela_slides(src: Path, out_dir: Path, frame: int = 0, seed: int = 0
                      ) -> dict[str, Path]:
    """A 2-D slide (the frame and its labels) and a 3-D slide made from it.

    3-D: every labelled nucleus gets an ellipsoidal z extent (half-thickness 0.35 x its
    equivalent diameter, centre +/-2 µm at random) sampled every 0.5 µm; out-of-focus
    light of each nucleus (haze) spreads as a wide blur well beyond its extent, so a
    detector still finds boxes there - what real widefield/confocal stacks do.
    """
    from inscope.acquisition.slide import extrude_to_stack

    d = np.load(src, allow_pickle=False)
    px, dz = 0.645, 0.5
    out_dir.mkdir(parents=True, exist_ok=True)
    p2 = out_dir / "hela_2d.npz"
    lab = d["labels"][frame].astype(np.int32)
    np.savez(p2, image=d["images"][frame], labels=lab, pixel_size_um=px)
    stack, labs = extrude_to_stack(d["images"][frame], lab, px, dz, seed=seed)
    p3 = out_dir / "hela_3d.npz"
    np.savez(p3, image=stack, labels=labs, pixel_size_um=px, z_step_um=dz)
    return {"2d": p2, "3d": p3}


MEASURES = ("jitter", "centring", "autofocus_cold", "focus_lock", "find_and_image")


def run_suite(make_scope, det, args, z_step: float, region_um: float | None = None
              ) -> dict[str, Any]:
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    only = set(args.only or MEASURES)
    if "jitter" in only and _new_code():
        res["jitter"] = bench_jitter(make_scope, det, args.jitter_cells, args.seed)
    if "centring" in only:
        res["centring"] = bench_centring(make_scope, det, args.trials, args.seed)
    if "autofocus_cold" in only:
        res["autofocus_cold"] = bench_autofocus(make_scope, det, max(2, args.trials // 4),
                                                args.seed)
    if "focus_lock" in only:
        res["focus_lock"] = bench_focus_lock(make_scope, det, max(2, args.trials // 2),
                                             args.seed)
    if "find_and_image" in only:
        res["find_and_image"] = bench_workflow(make_scope, det, args.seed, z_step,
                                               region_um, args.z_signal_frac,
                                               args.z_signal)
    res["bench_wall_s"] = time.perf_counter() - t0
    return res


def _n(v: Any, fmt: str = ".3f") -> str:
    """A figure for the summary line; '-' where a measure had nothing to measure
    (e.g. no cell far enough from a small image's edge)."""
    return "-" if v is None else format(v, fmt)


def _summary_line(name: str, r: dict[str, Any]) -> str:
    parts = [f"{name}:"]
    c = r.get("centring")
    if c:
        e = c["error_um_when_centred"] or {}
        parts[0] += (f" centring {_n(c['settled_within_3_moves'])} settled<=3 moves, "
                     f"error p50 {e.get('p50', math.nan):.2f} p90 "
                     f"{e.get('p90', math.nan):.2f} µm, false centred {c['false_centred']}")
    fl = r.get("focus_lock")
    if fl:
        d = fl["above_minus_below_abs_um"] or {}
        parts.append(f"focus lock above vs below |diff| p50 {d.get('p50', math.nan):.2f} "
                     f"max {d.get('max', math.nan):.2f} µm, locked at end "
                     f"{_n(fl['locked_at_end'], '.2f')}, never locked {fl['never_locked']}")
    j = r.get("jitter")
    if j and j.get("refined_1-10px"):
        parts.append(f"jitter px box {j['box_1-10px']['p50']:.2f} -> refined "
                     f"{j['refined_1-10px']['p50']:.2f} (p90 {j['refined_1-10px']['p90']:.2f})")
    w = r.get("find_and_image")
    if w:
        fi = w["focus_images_after_first_5"] or {}
        ze = w["z_extent_max_end_error_um"] or {}
        parts.append(f"find-and-image recall {_n(w['recall_interior'])}, once "
                     f"{_n(w['interior_imaged_exactly_once'])}, twice "
                     f"{w['true_cells_imaged_twice']}, focus images p50 "
                     f"{fi.get('p50', math.nan):.1f} max {fi.get('max', math.nan):.0f}, "
                     f"z-extent err p50 {ze.get('p50', math.nan):.2f} p90 "
                     f"{ze.get('p90', math.nan):.2f} µm")
    return "\n  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from inscope.acquisition.factory import add_option_argument, parse_options

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/control.json")
    ap.add_argument("--detector", default="default",
                    help="'default' (shipped model), 'classical' or an ONNX path")
    ap.add_argument("--mirror-views", type=int, default=1, choices=(1, 2, 4),
                    help="the detector averaged over each frame and its mirror images "
                         "(inscope.detector.mirror; scan --mirror-views)")
    ap.add_argument("--backend", default=Backend.SIM, choices=[Backend.SIM, Backend.SLIDE])
    add_option_argument(ap, "-o path=cells.npz -o pixel_size_um=0.65 (slide)")
    ap.add_argument("--hela", default=None,
                    help="hela_ctc_stack.npz: build 2-D and 3-D HeLa slides and run on both")
    ap.add_argument("--confocal", action="store_true",
                    help="run on a generated confocal-like z-stack of packed thick nuclei "
                         "(benchmarks/confocal_stack.py, seeded by --seed)")
    ap.add_argument("--fov", type=int, default=256,
                    help="slide camera size (--hela, --confocal)")
    ap.add_argument("--z-signal-frac", type=float, default=None,
                    help="find-and-image: where a cell's z extent ends, as a fraction of "
                         "its peak signal (default: by the microscope's optical "
                         "sectioning, see ZStackSpec)")
    ap.add_argument("--z-signal", choices=("sharpness", "intensity", "auto"), default=None,
                    help="find-and-image: the per-plane signal a cell's z extent is read "
                         "from (default: by the microscope's optical sectioning)")
    ap.add_argument("--trials", type=int, default=12, help="cells for centring")
    ap.add_argument("--jitter-cells", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--z-step", type=float, default=1.0)
    ap.add_argument("--sim-thickness", type=float, default=0.5,
                    help="simulator nuclei half-thickness / short semi-axis (0: thin, "
                         "the focal plane is their true z range)")
    ap.add_argument("--region", type=float, default=400.0,
                    help="simulator find-and-image region side (µm)")
    ap.add_argument("--label", default=None,
                    help="what code this is (default: 'after' with the refinement, else "
                         "'before'); run the script against an older checkout on "
                         "PYTHONPATH for the before figures")
    ap.add_argument("--only", nargs="+", choices=MEASURES, default=None,
                    help="run these measures only (default: all)")
    ap.add_argument("--update", action="store_true",
                    help="with --only: replace those measures in an existing --out file "
                         "and keep the rest (each replaced one records its code and date)")
    args = ap.parse_args(argv)
    det = _detector(args.detector, args.mirror_views)
    res: dict[str, Any] = {
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count(), "loadavg_start": load_average()},
        "detector": args.detector, "mirror_views": args.mirror_views,
        "note": "shared 2-core CPU: wall times are noisy",
    }
    suites: list[tuple[str, Any, float, float | None]] = []
    if args.hela:
        tmp = _scratch("inscope-hela-")
        paths = build_hela_slides(Path(args.hela), tmp, seed=args.seed)
        res["slides"] = {"source": Path(args.hela).name, "fov": args.fov,
                         "2d": "frame 0 + labels, defocus 0.35 µm/µm, tilt (0.01, -0.005)",
                         "3d": "frame 0 nuclei as ellipsoids, 41 planes x 0.5 µm, haze"}
        hela = hela_makers(paths, args.fov)
        suites = [("hela_2d", hela["2d"], args.z_step, None),
                  ("hela_3d", hela["3d"], 0.5, None)]
    elif args.confocal:
        from benchmarks.confocal_stack import write_confocal_slide

        tmp = _scratch("inscope-confocal-")
        path = write_confocal_slide(tmp / "confocal.npz", seed=args.seed)
        res["slides"] = {"confocal": "benchmarks/confocal_stack.py, seed "
                                     f"{args.seed}: 60 planes x 0.29 µm, 512x512 x 0.26 µm, "
                                     "packed thick nuclei in a monolayer",
                         "fov": args.fov}

        def confocal(seed: int):
            return _slide({"path": str(path), "fov": args.fov, "noise": 0.02}, seed)

        suites = [("confocal", confocal, 0.29, None)]
    elif args.backend == "slide":
        opts = parse_options(args.option)

        def slide(seed: int):
            return _slide(opts, seed)

        dz = float(opts.get("z_step_um", args.z_step))
        suites = [("slide", slide, dz, None)]
    else:
        suites = [("sim", sim_maker(args.sim_thickness), args.z_step, args.region)]
        res["sim_config"] = {"tilt": list(SIM_TILT), "thickness_ratio": args.sim_thickness,
                             "subpixel": True}
    label = args.label or ("after" if _new_code() else "before")
    res["code"] = label
    for name, make, dz, region in suites:
        r = run_suite(make, det, args, dz, region)
        res[name] = r
        print(_summary_line(f"{name} ({label})", r), flush=True)
    res["host"]["loadavg_end"] = load_average()
    if args.update and args.only and Path(args.out).exists():
        # a partial re-run: the other measures, and the run's own header, stay as they were
        old = json.loads(Path(args.out).read_text())
        stamp = {"code": label, "date": time.strftime("%Y-%m-%d"),
                 "loadavg": [res["host"]["loadavg_start"][0],
                             res["host"]["loadavg_end"][0]]}
        for name, *_ in suites:
            for key in args.only:
                if key in res[name]:
                    old.setdefault(name, {})[key] = {**res[name][key], "updated": stamp}
        res = old
    out = write_json(args.out, res, indent=1, default=float)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
