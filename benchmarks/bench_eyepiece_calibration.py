"""Eyepiece calibration test matrix: how far the fitted display -> camera map is from the
true one, over every orientation a back-projection path can have.

Cases: the 8 orientations (rotations 0/90/180/270°, each with a few degrees of hand
alignment, times mirrored or not), display -> camera scales 0.2-1.5, offsets, optics blur,
camera noise, and a partly hidden pattern. Each camera image is made by
:func:`inscope.eyepiece_fit.render_camera_view` from the pattern that
``inscope calibrate-eyepiece --pattern-out`` writes, and fitted by the same function the
CLI and the live mode use (:func:`inscope.eyepiece.calibration_from_image`). A case passes
when the fitted map is within 1 camera pixel of the true one everywhere in the camera field
that the display covers, or when the calibration refuses.

Run::

    python -m benchmarks.bench_eyepiece_calibration \
        --out benchmarks/results/eyepiece_calibration.json
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks._common import percentiles, write_json
from inscope.eyepiece import calibration_from_image
from inscope.eyepiece_fit import (
    CalibrationError,
    CharucoPattern,
    display_to_camera_map,
    field_error,
    render_camera_view,
)

DISPLAY = (1280, 720)
CAMERA = (512, 512)
#: The pattern a user makes for a display magnified in the camera (the refusal message for
#: the default pattern at scale 1.5 asks for more squares).
FINE_SQUARES = (26, 14)


@dataclass
class Case:
    rotation_deg: float
    mirrored: bool
    scale: float
    offset_px: tuple[float, float]
    blur_px: float
    noise: float
    hide: tuple[int, int, int, int] | None = None
    squares: tuple[int, int] | None = None  # None: the default pattern

    @property
    def orientation(self) -> str:
        return f"{'mirror+' if self.mirrored else ''}rot{round(self.rotation_deg / 90) * 90 % 360}"


def matrix(seed: int = 0, scales=(0.2, 0.35, 0.5, 0.75, 1.0, 1.5)) -> list[Case]:
    """Every orientation at every scale, with random offset, alignment, blur and noise."""
    rng = np.random.default_rng(seed)
    cases = []
    for scale, rot, mirrored in itertools.product(scales, (0, 90, 180, 270), (False, True)):
        cases.append(Case(rot + float(rng.uniform(-5, 5)), mirrored, scale,
                          (float(rng.uniform(-40, 40)), float(rng.uniform(-40, 40))),
                          float(rng.uniform(0.0, 1.2)), float(rng.uniform(20, 300)),
                          squares=FINE_SQUARES if scale > 1.0 else None))
    return cases


def hidden_cases(seed: int = 1) -> list[Case]:
    """Part of the pattern hidden: a quarter, a half, all but a strip of one to three rows
    or columns of squares, all but a corner of the field."""
    rng = np.random.default_rng(seed)
    h, w = CAMERA
    hides = [(0, 0, w // 2, h // 2), (0, 0, w // 2, h), (0, 0, w, h // 2),
             (0, 0, w, int(h * 0.6)), (0, 0, w, int(h * 0.66)), (0, 0, int(w * 0.72), h),
             (0, 0, int(w * 0.8), h), (0, 0, w, int(h * 0.85))]
    out = []
    for i, hide in enumerate(hides):
        for mirrored in (False, True):
            out.append(Case(90.0 * i + float(rng.uniform(-5, 5)), mirrored, 0.35,
                            (float(rng.uniform(-20, 20)), float(rng.uniform(-20, 20))),
                            0.6, 100.0, hide))
    return out


def run_case(case: Case, seed: int = 0) -> dict:
    """Fit one synthetic camera image; the true error of the fitted map, or the refusal."""
    pattern = CharucoPattern.for_display(DISPLAY, case.squares)
    truth = display_to_camera_map(DISPLAY, CAMERA, case.scale, case.rotation_deg,
                                  case.mirrored, case.offset_px)
    cam = render_camera_view(pattern.image(), truth, CAMERA, blur_px=case.blur_px,
                             noise=case.noise, hide=case.hide,
                             rng=np.random.default_rng(seed))
    t0 = time.perf_counter()
    row = {**asdict(case), "orientation": case.orientation,
           "squares": list(pattern.squares)}
    try:
        cal = calibration_from_image(cam, pattern, pixel_size_um=0.65)
    except CalibrationError as e:
        row.update(refused=True, reason=str(e), seconds=time.perf_counter() - t0)
        return row
    row.update(refused=False, seconds=time.perf_counter() - t0,
               true_error_px=field_error(cal.display_to_camera, truth, DISPLAY, CAMERA),
               expected_error_px=cal.expected_error_px, rms_px=cal.rms_px,
               corners=cal.points, mirrored_found=cal.mirrored)
    return row


def _pct(v: list[float]) -> dict | None:
    return percentiles(v, count=True)


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if not r["refused"]]
    by_scale = {}
    for s in sorted({r["scale"] for r in rows}):
        rs = [r for r in rows if r["scale"] == s]
        by_scale[str(s)] = {"cases": len(rs), "refused": sum(r["refused"] for r in rs),
                            "true_error_px": _pct([r["true_error_px"] for r in rs
                                                   if not r["refused"]])}
    return {"cases": len(rows), "accepted": len(ok), "refused": len(rows) - len(ok),
            "within_1px_or_refused": sum(r["refused"] or r["true_error_px"] <= 1.0
                                         for r in rows),
            "mirror_found_right": sum(r["mirrored_found"] == r["mirrored"] for r in ok),
            "true_error_px": _pct([r["true_error_px"] for r in ok]),
            "expected_error_px": _pct([r["expected_error_px"] for r in ok]),
            "expected_ge_true": sum(r["expected_error_px"] >= r["true_error_px"] for r in ok),
            "by_scale": by_scale}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/eyepiece_calibration.json"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = [run_case(c, args.seed + i) for i, c in enumerate(matrix(args.seed))]
    hidden = [run_case(c, args.seed + 100 + i) for i, c in enumerate(hidden_cases())]
    report = {"benchmark": "eyepiece_calibration", "display": list(DISPLAY),
              "camera": list(CAMERA), "python": platform.python_version(),
              "matrix": summarize(rows), "hidden": summarize(hidden),
              "cases": rows + hidden}
    print(f"{'scale':>6} {'orientation':>12} {'blur':>5} {'noise':>6}  result")
    for r in rows + hidden:
        res = (f"refused: {r['reason'][:70]}" if r["refused"] else
               f"true {r['true_error_px']:.3f} px, expected {r['expected_error_px']:.3f} px")
        hid = " hidden" if r["hide"] else ""
        print(f"{r['scale']:6.2f} {r['orientation']:>12} {r['blur_px']:5.2f} "
              f"{r['noise']:6.0f}  {res}{hid}")
    for name in ("matrix", "hidden"):
        s = report[name]
        print(f"{name}: {s['accepted']}/{s['cases']} accepted, within 1 px or refused: "
              f"{s['within_1px_or_refused']}/{s['cases']}, true error {s['true_error_px']}")
    write_json(args.out, report, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
