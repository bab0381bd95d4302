"""The focus lock while the stage tours a drifting, tilted slide: how far its checks dither.

After every XY move of more than ``check_travel_um`` the lock checks the focus with a
dither cycle (z, z + d, z - d). A check that starts a little off the peak sees one
dithered plane as sharp as the centre and the other falling, exactly as at the edge of a
flat top, and used to widen the dither to 2 d at once: half a depth of field out of focus
on the simulator, frames a person watching the demo sees blur. This scores, against the
simulator's true focal surface, on the demo's simulator (drift, tilt; deterministic, not
real time) with the shipped detector:

* frames dithered wider than d (``|z - z_center| > d + 0.05 µm``);
* |focus error| of every frame after the first 60 (p50 / p90 / p99 / max);
* frames reported ``locked``, and focus moves.

Run (``--label`` names the code; run the script with an older checkout's interpreter for
the 'before' figures)::

    python -m benchmarks.bench_focus_tour --out benchmarks/results/focus_tour.json
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import numpy as np

from benchmarks._common import load_average, percentiles, write_json


def run_seed(seed: int, frames: int, hop_um: float, every: int, det) -> dict[str, Any]:
    from inscope.acquisition.factory import open_microscope
    from inscope.commands import DEMO_SIM
    from inscope.control.focus import FocusLock

    # opened as the demo opens it; started in focus: this is about holding it
    scope = open_microscope("sim", **{**DEMO_SIM, "seed": seed, "start_z_um": 0.0,
                                      "realtime": False})
    lock = FocusLock(scope)
    rng = np.random.default_rng(seed)
    wide = locked = 0
    err: list[float] = []
    for i in range(frames):
        if i > 60 and i % every == 0:
            p = scope.position()
            a = rng.uniform(0, 2 * np.pi)
            scope.move_xy(p.x + hop_um * np.cos(a), p.y + hop_um * np.sin(a))
        f = scope.snap()
        act = lock.step(f, det.detect(f))
        p = f.position
        if i <= 60 or p is None:
            continue
        err.append(abs(p.z - scope.true_focus_z(p.x, p.y)))
        if lock.z_center is not None and abs(p.z - lock.z_center) > lock.dither_um + 0.05:
            wide += 1
        locked += act.status == "locked"
    scope.close()
    return {"seed": seed, "wide_dither_frames": wide, "locked_frames": locked,
            "focus_moves": lock.moves, "dither_um": lock.dither_um,
            "abs_focus_error_um": percentiles(err, digits=3)}


def main(argv: list[str] | None = None) -> int:
    from inscope.detector import load_detector

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/focus_tour.json")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--hop-um", type=float, default=100.0,
                    help="XY move between holds (µm, random direction)")
    ap.add_argument("--every", type=int, default=60, help="frames between moves")
    ap.add_argument("--label", default="after")
    args = ap.parse_args(argv)
    det = load_detector()
    res: dict[str, Any] = {"code": args.label, "host": {
        "machine": platform.machine(), "python": platform.python_version(),
        "loadavg_start": load_average()},
        "setup": {"frames": args.frames, "hop_um": args.hop_um, "every": args.every,
                  "simulator": "inscope.commands.DEMO_SIM, start in focus, not real time"}}
    runs = [run_seed(s, args.frames, args.hop_um, args.every, det)
            for s in range(args.seeds)]
    for r in runs:
        e = r["abs_focus_error_um"] or {}
        print(f"seed {r['seed']}: wide-dither frames {r['wide_dither_frames']}, |focus "
              f"error| p90 {e.get('p90')} max {e.get('max')} µm, locked frames "
              f"{r['locked_frames']}, focus moves {r['focus_moves']}", flush=True)
    res["runs"] = runs
    res["wide_dither_frames_total"] = sum(r["wide_dither_frames"] for r in runs)
    res["host"]["loadavg_end"] = load_average()
    print(f"wrote {write_json(args.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
