"""The focus lock on fields of cells at several heights: this tree against a git revision.

A confocal-like monolayer whose nuclei sit up to 1.5 µm above and below its middle
(``benchmarks/confocal_stack.py``, written as a Fiji two-channel TIFF and opened as a
slide through the TIFF path, the nuclei in channel 1, a 128 px camera field) gives
fields whose sharpness has a broad, lopsided top: every plane within about 1 µm is
nearly as sharp as the best. On such a top the lock of git 431f9ae ended on either of
two planes about 0.45 µm apart, by whether a dither cycle on its way happened to see a
"shoulder" (one dithered plane as sharp as the centre) and widened the dither: a wider
dither balances the top's lopsidedness at another plane.

This runs ``bench_control``'s focus-lock measure (cells in random order per seed;
starts 2 and 4 µm above and below the field's focus; 90 frames each) with
``control/focus.py`` of the working tree and of ``--rev`` (imported from ``git show``),
on the same slide and seeds, and writes both side by side. Counts and planes only: no
timing.

Three stacks (seeds 5, 6, 7): the fault was found on 5; 6 and 7 are checks the change
was not made on. Run::

    python -m benchmarks.focus_lock_fields --rev 431f9ae [--seeds 1 2 3 4]
        [--stack-seeds 5 6 7]

Writes ``benchmarks/results/focus_lock_fields.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import load_average, module_at, percentiles, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "focus_lock_fields.json"


def run_with(lock_class: type, slides: dict[int, dict[str, Any]], det, seeds: list[int],
             trials: int) -> dict[str, Any]:
    """bench_control's focus-lock measure per slide and seed, with *lock_class* as the
    FocusLock (the measure imports it from ``inscope.control.focus`` when it runs)."""
    import inscope.control.focus as focus
    from benchmarks import bench_control as bc

    here = focus.FocusLock
    focus.FocusLock = lock_class  # type: ignore[misc]
    try:
        runs = {(stack, s): bc.bench_focus_lock(lambda k, o=opts: bc._slide(o, k), det,
                                                trials, s)
                for stack, opts in slides.items() for s in seeds}
    finally:
        focus.FocusLock = here  # type: ignore[misc]

    def summary(keys: list[tuple[int, int]]) -> dict[str, Any]:
        rows = [r for k in keys for r in runs[k]["rows"]]
        diffs = [abs(r["above_minus_below_um"]) for r in rows if "above_minus_below_um" in r]
        return {
            "pairs": len(diffs),
            "pairs_within_0.3um": sum(d <= 0.3 for d in diffs) / len(diffs) if diffs
            else None,
            "above_minus_below_abs_um": percentiles(diffs),
            "abs_error_vs_field_focus_um": percentiles(
                [abs(r["end_minus_field_focus_um"]) for r in rows]),
            "locked_at_end": float(np.mean([r["locked_end"] for r in rows])),
        }

    return {"all": summary(list(runs)),
            "per_stack": {str(stack): {**summary([k for k in runs if k[0] == stack]),
                                       "per_seed": {str(s): summary([(stack, s)])
                                                    ["above_minus_below_abs_um"]
                                                    for s in seeds}}
                          for stack in slides}}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench_control import _detector
    from benchmarks.confocal_stack import write_confocal_tiff

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="the revision to compare with")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--stack-seeds", type=int, nargs="+", default=[5, 6, 7],
                    help="the generated stacks' seeds (5: where the fault was found; 6 "
                         "and 7: checks that no change was made on)")
    ap.add_argument("--trials", type=int, default=6, help="fields per seed")
    ap.add_argument("--any-depth", action="store_true",
                    help="nuclei at any depth of the stack, not a monolayer (several "
                         "sharpness tops per field)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    det = _detector("default")
    res: dict[str, Any] = {"loadavg_start": load_average()}
    with tempfile.TemporaryDirectory(prefix="inscope-fields-") as tmp:
        slides = {}
        for stack in args.stack_seeds:
            tif, labels = write_confocal_tiff(Path(tmp) / f"cells{stack}.tif", seed=stack,
                                              shape=(60, 256, 256),
                                              z_spread_um=None if args.any_depth else 1.5)
            slides[stack] = {"path": str(tif), "channel": 1, "labels": str(labels),
                             "fov": 128}
        old = module_at(args.rev, "control/focus.py", Path(tmp))
        import inscope.control.focus as focus

        for name, cls in (("this tree", focus.FocusLock), (args.rev, old.FocusLock)):
            r = run_with(cls, slides, det, args.seeds, args.trials)
            res[name] = r
            for stack, v in [*r["per_stack"].items(), ("all", r["all"])]:
                d = v["above_minus_below_abs_um"]
                print(f"{name}, stack {stack}: pairs within 0.3 µm "
                      f"{v['pairs_within_0.3um']:.2f} of {v['pairs']}, |above - below| "
                      f"p50 {d['p50']:.2f} max {d['max']:.2f} µm", flush=True)
    res.update({
        "command": f"python -m benchmarks.focus_lock_fields --rev {args.rev} --seeds "
                   + " ".join(map(str, args.seeds)) + " --stack-seeds "
                   + " ".join(map(str, args.stack_seeds))
                   + (" --any-depth" if args.any_depth else ""),
        "slides": "benchmarks/confocal_stack.py, one per stack seed: 60 planes x 0.29 µm, "
                  "256 x 256 x 0.26 µm, nuclei "
                  + ("at any depth" if args.any_depth else "within +/-1.5 µm of the middle")
                  + ", a Fiji "
                  "TIFF (channel 1), fov 128, the slide's default noise",
        "loadavg_end": load_average(),
    })
    write_json(args.out, res, indent=1, default=float)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
