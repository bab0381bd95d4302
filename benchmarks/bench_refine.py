"""What the target refiner's steady centroid costs per control step, by camera size.

``control.refine.steady_centroid`` measures a target's centroid on the frame as it is and
smoothed at four scales. Until stop 51 it blurred the whole frame at each scale (and
converted it to float32 first), a cost that grew with the camera while it only reads the
box's crop; it now blurs the window the crop reads. This times both, side by side on the
same boxes, and records how far their centroids differ (float rounding only).

"whole frame" below is that earlier computation, replayed here with the same
``soft_centroid``; "window" is ``steady_centroid`` as it is.

    python -m benchmarks.bench_refine [--sizes 512 1024 2048] [--boxes 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import percentiles, write_per_size

OUT = Path(__file__).parent / "results" / "refine_window.json"


def whole_frame(pixels: np.ndarray, box: np.ndarray, others: np.ndarray):
    """The steady centroid as computed before: every scale blurs the whole frame."""
    from inscope.control.refine import FLIP_PX, STEADY_SCALES, soft_centroid

    img = np.asarray(pixels, np.float32)
    each = [soft_centroid(img if s <= 0 else cv2.GaussianBlur(img, (0, 0), s), box, 0.3,
                          others) for s in STEADY_SCALES]
    got = [(c[0][0], c[0][1], c[1]) for c in each if c is not None]
    if 2 * len(got) <= len(STEADY_SCALES):
        return None
    m = np.median(np.asarray(got, float), axis=0)
    raw = each[0]
    if raw is not None and math.hypot(*(raw[0] - m[:2])) <= FLIP_PX:
        return raw
    return m[:2].copy(), float(m[2])


def main(argv: list[str] | None = None) -> int:
    from inscope.acquisition.simulated import SimulatedMicroscope
    from inscope.control.refine import steady_centroid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows = {}
    for size in args.sizes:
        scope = SimulatedMicroscope(seed=1, shape=(size, size), realtime=False)
        frame = scope.snap()
        boxes = np.asarray(frame.truth, float)
        pick = boxes[np.linspace(0, len(boxes) - 1, min(args.boxes, len(boxes))).astype(int)]
        t: dict[str, list[float]] = {"whole frame": [], "window": []}
        diff = 0.0
        for _ in range(args.rounds):  # alternating, so both see the same machine load
            for b in pick:
                t0 = time.perf_counter()
                a = whole_frame(frame.pixels, b, boxes)
                t1 = time.perf_counter()
                w = steady_centroid(frame.pixels, b, others=boxes)
                t2 = time.perf_counter()
                t["whole frame"].append((t1 - t0) * 1e3)
                t["window"].append((t2 - t1) * 1e3)
                if (a is None) != (w is None):
                    raise SystemExit(f"{size}: box {b} found by one computation only")
                if a is not None and w is not None:
                    diff = max(diff, float(np.max(np.abs(a[0] - w[0]))))
        scope.close()
        rows[str(size)] = {"objects_in_frame": len(boxes), "boxes_timed": len(pick),
                           "ms": {k: percentiles(v, digits=3, count=True)
                                  for k, v in t.items()},
                           "max_centroid_difference_px": diff}
        print(size, rows[str(size)], flush=True)
    write_per_size(args.out, __doc__, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
