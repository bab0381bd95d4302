"""Should the target's centroid offset be measured once or again over many frames?

:class:`inscope.control.refine.TargetRefiner` places the target at its registered
template position plus a centroid offset (centroid - registered point). The offset can be
kept from the frame the target was acquired in (``max_offsets=1``, the default) or
measured again in each of the next frames, the median replacing the one in use when it
is news (``max_offsets=25``, the earlier default). This script runs ``bench_control``'s
jitter measure with both, on the simulator and on the HeLa slides, for several seeds,
and reports side by side:

* the refined position's jitter under sub-pixel and 1-10 px stage shifts (px RMS per
  cell: median and worst cell; and over every cell and shift);
* its distance from the cell's true centroid in the first and the last shifted frame,
  and for how many targets the last was better / worse than the first by over 0.2 µm
  (what measuring again bought).

Run::

    python -m benchmarks.refiner_offsets --hela /path/hela_ctc_stack.npz \\
        [--seeds 1 2 3] [--out benchmarks/results/refiner_offsets.json]

Without ``--hela`` only the simulator is measured. About 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import load_average, write_json
from benchmarks.bench_control import (
    _detector,
    bench_jitter,
    build_hela_slides,
    hela_makers,
    sim_maker,
)

VARIANTS = {"once (max_offsets=1)": {"max_offsets": 1},
            "again (max_offsets=25)": {"max_offsets": 25}}


def _suites(hela: Path | None, tmp: Path, seed: int) -> list[tuple[str, Any]]:
    suites: list[tuple[str, Any]] = [("sim", sim_maker(0.5))]
    if hela is None:
        return suites
    paths = build_hela_slides(hela, tmp / f"seed{seed}", seed=seed)
    for fov in (256, 512):
        make = hela_makers(paths, fov)
        suites += [(f"hela_2d_fov{fov}", make["2d"]), (f"hela_3d_fov{fov}", make["3d"])]
    return suites


def _line(name: str, r: dict[str, Any]) -> str:
    sub, whole, e = r["refined_subpixel"], r["refined_1-10px"], r["refined_error_um"]
    return (f"{name:40s} jitter sub {sub['p50']:.2f}/{sub['max']:.2f} "
            f"(all {sub['pooled_rms']:.2f}) 1-10px {whole['p50']:.2f}/{whole['max']:.2f} "
            f"(all {whole['pooled_rms']:.2f}) px; error vs truth p90 first "
            f"{e['first_frame']['p90']:.2f} last {e['last_frame']['p90']:.2f} µm, "
            f"better {e['last_better_by_0.2um']} worse {e['last_worse_by_0.2um']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hela", type=Path, default=None, help="hela_ctc_stack.npz")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--cells", type=int, default=20, help="cells per suite and seed")
    ap.add_argument("--out", default="benchmarks/results/refiner_offsets.json")
    args = ap.parse_args(argv)
    det = _detector("default")
    res: dict[str, Any] = {"loadavg_start": load_average(), "cells": args.cells,
                           "seeds": args.seeds, "runs": []}
    totals = {v: {"better": 0, "worse": 0, "targets": 0} for v in VARIANTS}
    tmp = Path(tempfile.mkdtemp(prefix="inscope-offsets-"))
    try:
        for seed in args.seeds:
            for suite, make in _suites(args.hela, tmp, seed):
                for variant, kw in VARIANTS.items():
                    r = bench_jitter(make, det, args.cells, seed, refiner=kw)
                    res["runs"].append({"suite": suite, "seed": seed, "variant": variant,
                                        "jitter": r})
                    e = r["refined_error_um"]
                    t = totals[variant]
                    t["better"] += e["last_better_by_0.2um"]
                    t["worse"] += e["last_worse_by_0.2um"]
                    t["targets"] += (e["first_frame"] or {}).get("n", 0)
                    print(_line(f"{suite} seed {seed} {variant}", r), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["totals"] = totals
    res["loadavg_end"] = load_average()
    for v, t in totals.items():
        print(f"{v}: last frame better than first by > 0.2 µm for {t['better']}, worse for "
              f"{t['worse']} of {t['targets']} targets")
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
