"""Autofocus with hot pixels and cosmic-ray hits, and what the hot-pixel step costs.

Every sharpness measure squares or sums differences of neighbouring pixels, so one pixel
of tens of thousands of counts over a background of hundreds outweighs a field's own
sharpness. :func:`inscope.control.focus.sharpness` lowers any pixel more than
``HOT_PIXEL_SIGMA`` camera-noise sigma above all eight of its neighbours to that much
before measuring. This runs the same autofocus with the step off
(``HOT_PIXEL_SIGMA = None``) and on, side by side, on the simulator (256 x 256 fields,
seeds 970000 on, start 3 um above the true focus, a sweep of +-10 um), with:

* ``cosmic``: one-pixel hits at full scale at random places, *n* per frame on average
  (``SimConfig.cosmic_rays_per_frame``, Poisson);
* ``hot``: 0.1 % of the pixels stuck at full scale, the same pixels in every frame (an
  uncorrected sCMOS sensor; ``SimConfig.hot_pixel_fraction``), which flattens the
  sweep's curve instead;

and times :func:`sharpness` (Brenner) with the step off and on, in alternating blocks,
on a simulated 512 x 512 frame with its 90-odd nuclei as boxes (crop by crop and the
integral image) and the same frame tiled to 2048 x 2048.

Run::

    python -m benchmarks.focus_hot_pixels          # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks._common import alternating_blocks, load_average, percentiles, write_json

OUT = Path("benchmarks/results/focus_hot_pixels.json")
SEED = 970000


def autofocus_errors(condition: str, n: int, fields: int) -> dict:
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
    from inscope.control import focus

    out = {}
    for label, sigma in (("step off", None), ("step on", focus.HOT_PIXEL_SIGMA)):
        saved = focus.HOT_PIXEL_SIGMA
        focus.HOT_PIXEL_SIGMA = sigma
        errs = []
        try:
            for i in range(fields):
                seed = SEED + i
                defects = ({"cosmic_rays_per_frame": float(n)} if condition == "cosmic"
                           else {"hot_pixel_fraction": n / 1000.0})
                scope = SimulatedMicroscope(SimConfig(seed=seed, realtime=False,
                                                      shape=(256, 256), **defects))
                try:
                    p = scope.position()
                    zf = scope.true_focus_z(p.x, p.y)
                    scope.move_z(zf + 3.0)
                    focus.autofocus(scope, search_um=10.0)
                    errs.append(abs(scope.position().z - zf))
                finally:
                    scope.close()
        finally:
            focus.HOT_PIXEL_SIGMA = saved
        out[label] = {"abs_error_um": percentiles(errs, digits=3),
                      "within_0p3_um": sum(e <= 0.3 for e in errs), "fields": fields}
    return out


def timing() -> dict:
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
    from inscope.control import focus

    scope = SimulatedMicroscope(SimConfig(seed=SEED - 1, realtime=False, camera_process=False))
    f = scope.snap()
    scope.close()
    img, t = f.pixels, np.asarray(f.truth, float).reshape(-1, 4)
    saved = focus.HOT_PIXEL_SIGMA
    out = {}
    for reps in (1, 4):
        x = np.tile(img, (reps, reps))
        b = np.concatenate([t + [i * 512, j * 512, i * 512, j * 512]
                            for i in range(reps) for j in range(reps)])
        for nb in sorted({3, len(b)}):
            sigma = {"step off": None, "step on": saved}
            try:
                out[f"{x.shape[0]}x{x.shape[1]}, {nb} boxes"] = alternating_blocks(
                    dict.fromkeys(sigma, lambda x=x, boxes=b[:nb]: focus.sharpness(x, boxes)),
                    before=lambda arm, s=sigma: setattr(focus, "HOT_PIXEL_SIGMA", s[arm]))
            finally:
                focus.HOT_PIXEL_SIGMA = saved
    return out


def main(argv: list[str] | None = None) -> int:
    from inscope.control import focus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=8, help="simulated fields per condition")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows = {}
    for condition, n in (("cosmic", 0), ("cosmic", 1), ("cosmic", 3), ("cosmic", 10),
                         ("hot", 1)):
        label = (f"{n} cosmic-ray hits per frame (mean)" if condition == "cosmic"
                 else f"{n / 10:g} % hot pixels")
        rows[label] = autofocus_errors(condition, n, args.fields)
        print(label, {k: (v["within_0p3_um"], v["abs_error_um"]["max"])
                      for k, v in rows[label].items()}, flush=True)
    report = {
        "note": __doc__.split("\n\n")[1].replace("\n", " "),
        "hot_pixel_sigma": focus.HOT_PIXEL_SIGMA, "seed": SEED,
        "autofocus": rows,
        "sharpness_ms": timing(),
        "loadavg": load_average(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
