"""What the tracker's matching costs per control step, by how many cells are in view.

``control.tracking.Tracker.update`` matches every track to every detection. Until stop
51 it solved one Hungarian assignment over the whole tracks x detections cost matrix
(pairs beyond their gate priced out); beyond 20,000 pairs it now finds the pairs within
reach with a KD-tree and solves each connected group of them on its own
(``gated_assignment``: the same pairs; up to 20,000, the whole matrix as before). This
times ``Tracker.update`` both ways, side by side on the same frames of the
simulator (a field of N nuclei, the stage moving a little between frames), and checks
that both give every frame the same track ids.

    python -m benchmarks.bench_tracking [--sizes 512 1024 2048 3072] [--frames 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks._common import percentiles, write_per_size

OUT = Path(__file__).parent / "results" / "tracking_groups.json"


def whole_matrix(a: np.ndarray, b: np.ndarray, gates: np.ndarray):
    """The matching as solved before: one assignment over the whole cost matrix."""
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    c = np.where(cost <= gates[:, None], cost, 1e9)
    rows, cols = linear_sum_assignment(c)
    keep = c[rows, cols] < 1e9
    return rows[keep], cols[keep]


def main(argv: list[str] | None = None) -> int:
    import inscope.control.tracking as tracking
    from inscope.acquisition.simulated import SimulatedMicroscope
    from inscope.control.tracking import Tracker
    from inscope.detector.base import Detections

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 3072])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    grouped = tracking.gated_assignment
    rows = {}
    for size in args.sizes:
        scope = SimulatedMicroscope(seed=1, shape=(size, size), realtime=False)
        rng = np.random.default_rng(0)
        frames = []
        for _ in range(args.frames):
            p = scope.position()
            scope.move_xy(p.x + rng.normal(0, 1.0), p.y + rng.normal(0, 1.0))
            f = scope.snap()
            b = np.asarray(f.truth, np.float32) + rng.normal(0, 0.5, (len(f.truth), 4))
            keep = rng.random(len(b)) > 0.03  # a few missed detections
            frames.append((f, Detections(b[keep].astype(np.float32),
                                         np.full(int(keep.sum()), 0.9, np.float32),
                                         np.zeros(int(keep.sum()), np.int64))))
        scope.close()
        t: dict[str, list[float]] = {"whole matrix": [], "groups": []}
        ids: dict[str, list[list[int]]] = {"whole matrix": [], "groups": []}
        for name, fn in (("whole matrix", whole_matrix), ("groups", grouped)) * 2:
            tracking.gated_assignment = fn
            try:
                tr = Tracker()
                seen = []
                for f, d in frames:
                    t0 = time.perf_counter()
                    live = tr.update(f, d)
                    t[name].append((time.perf_counter() - t0) * 1e3)
                    seen.append(sorted(x.id for x in live if x.missed == 0))
                ids[name] = seen
            finally:
                tracking.gated_assignment = grouped
        if ids["whole matrix"] != ids["groups"]:
            raise SystemExit(f"{size}: the two matchings gave different track ids")
        rows[str(size)] = {"nuclei_per_frame": int(np.mean([len(d) for _, d in frames])),
                           "update_ms": {k: percentiles(v, digits=3, count=True)
                                         for k, v in t.items()},
                           "same_track_ids": True}
        print(size, rows[str(size)], flush=True)
    write_per_size(args.out, __doc__, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
