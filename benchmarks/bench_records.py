"""Frame recording benchmark: can ``--record-frames`` keep up with the camera?

Appends N frames (512x512 uint16 by default, random pixels so nothing compresses) to
:class:`inscope.records.OmeTiffAppender` in a temporary folder, the way the records
output does (one page per frame, flushed), and reports the per-frame append time
(p50/p90/p99/max), the sustained frames per second, the close (OME-XML) time and the
file's overhead beyond the pixels, at two lengths to show it is linear. 100 fps at
512x512 needs an append well under 10 ms.

    python -m benchmarks.bench_records [--frames 1000] [--out benchmarks/results/records.json]

The disk and the shared CPU make the figures noisy: read p50 and p99 together.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import percentiles, write_json


def run(n: int, shape: tuple[int, int], folder: Path) -> dict:
    from inscope.acquisition.frame import Frame, StagePosition
    from inscope.records import OmeTiffAppender

    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4096, shape, dtype=np.uint16) for _ in range(8)]
    path = folder / f"bench_{n}.ome.tif"
    w = OmeTiffAppender(path, pixel_size_um=0.65, fps=100)
    times = np.empty(n)
    t_all = time.perf_counter()
    for i in range(n):
        f = Frame(pool[i % len(pool)], index=i, stamps={"ready": time.monotonic_ns()},
                  position=StagePosition(0.1 * i, 0.0, 0.0), pixel_size_um=0.65)
        t0 = time.perf_counter()
        w.append(f)
        times[i] = time.perf_counter() - t0
    wall = time.perf_counter() - t_all
    t0 = time.perf_counter()
    w.close()
    close_s = time.perf_counter() - t0
    size = path.stat().st_size
    pixels = n * pool[0].nbytes
    path.unlink()
    ms = times * 1e3
    return {
        "frames": n, "shape": list(shape),
        "append_ms": percentiles(ms, digits=3),
        "sustained_fps": round(n / wall, 1),
        "close_s": round(close_s, 4),
        "file_mb": round(size / 2**20, 2),
        "overhead_bytes_per_frame": round((size - pixels) / n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512, help="frame side in pixels")
    ap.add_argument("--out", default="benchmarks/results/records.json")
    args = ap.parse_args(argv)
    if args.frames < 10 or args.size < 16:
        ap.error("--frames >= 10 and --size >= 16")
    shape = (args.size, args.size)
    with tempfile.TemporaryDirectory(prefix="inscope-bench-rec-") as d:
        short = run(max(10, args.frames // 10), shape, Path(d))
        full = run(args.frames, shape, Path(d))
    res = {"benchmark": "records", "machine": {"platform": platform.platform(),
                                               "python": sys.version.split()[0],
                                               "cpus": os.cpu_count()},
           "runs": [short, full]}
    out = write_json(args.out, res)
    for r in res["runs"]:
        print(f"{r['frames']:6d} frames {r['shape']}: append p50 {r['append_ms']['p50']} / "
              f"p99 {r['append_ms']['p99']} / max {r['append_ms']['max']} ms, "
              f"{r['sustained_fps']} fps, close {r['close_s']} s, overhead "
              f"{r['overhead_bytes_per_frame']} B/frame")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
