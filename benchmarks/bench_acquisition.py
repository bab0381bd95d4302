"""Acquisition benchmark: frame rate and frame-ready-to-consumer latency per backend.

Streams N frames from the simulated backend and from pycromanager's headless core with the
DemoCamera (at two exposures) in one run, side by side. Latency is the consumer's
``time.monotonic_ns()`` at ``get()`` minus the frame's ``"ready"`` stamp: the cost of the
newest-frame hand-off between the acquisition thread and its consumer, not the exposure.

    python -m benchmarks.bench_acquisition [--frames N] [--out benchmarks/results/acquisition.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import percentiles, write_json


def _pct(values: list[float]) -> dict[str, float]:
    return percentiles(values) or {}


def measure(scope, n_frames: int, warmup: int = 5, timeout_s: float = 60.0) -> dict:
    """Stream *n_frames* (after *warmup*) and return rate, drops and latency figures."""
    lat_ms: list[float] = []
    first = last = None
    with scope.stream() as frames:
        for _ in range(warmup):
            if frames.get(timeout=10) is None:
                raise RuntimeError(f"{scope.name}: no frames during warm-up")
        produced0, dropped0 = frames.produced, frames.dropped
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        while len(lat_ms) < n_frames and time.perf_counter() < deadline:
            f = frames.get(timeout=10)
            now = time.monotonic_ns()
            if f is None:
                break
            lat_ms.append((now - f.stamps["ready"]) / 1e6)
            first = f.index if first is None else first
            last = f.index
        elapsed = time.perf_counter() - t0
        produced, dropped = frames.produced - produced0, frames.dropped - dropped0
        shape = list(f.shape) if f is not None else None
    n = len(lat_ms)
    return {
        "backend": scope.name,
        "frames": n,
        "shape": shape,
        "seconds": elapsed,
        "consumer_fps": n / elapsed if elapsed > 0 else 0.0,
        "producer_fps": produced / elapsed if elapsed > 0 else 0.0,
        "dropped_in_slot": dropped,
        "camera_index_gaps": (last - first + 1 - n) if n else 0,
        "ready_to_consumer_ms": _pct(lat_ms),
    }


def measure_snap(scope, n: int) -> dict[str, float]:
    """Wall time of ``snap()`` (exposure + readout + copy + Frame), ms."""
    scope.snap()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        scope.snap()
        times.append((time.perf_counter() - t) * 1e3)
    return _pct(times)


def _replay():
    """A 64-frame 512x512 uint16 OME-TIFF written to a temporary folder, played flat out."""
    import tempfile

    import tifffile

    from inscope.acquisition.replay import ReplayMicroscope

    path = Path(tempfile.mkdtemp(prefix="inscope-bench-")) / "replay.ome.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 4096, (64, 512, 512), dtype=np.uint16),
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.5})
    return ReplayMicroscope(path, fps=0, loop=True)


def _cases(n_frames: int) -> list[tuple[str, object]]:
    cases: list[tuple[str, object]] = []

    def sim(**options):
        def make():
            from inscope.acquisition.factory import open_microscope

            return open_microscope("sim", **options)
        return make

    def headless(exposure_ms: float):
        def make():
            from inscope.acquisition.micromanager import MicroManagerMicroscope

            return MicroManagerMicroscope.headless(
                camera_properties={"Mode": "Fluorescent Beads"}, exposure_ms=exposure_ms)
        return make

    cases.append(("sim 512x512, 10 ms exposure (realtime)", sim()))
    cases.append(("sim 512x512, realtime=False (render-bound)", sim(realtime=False)))
    cases.append(("headless DemoCamera 512x512, 10 ms exposure", headless(10.0)))
    cases.append(("headless DemoCamera 512x512, 1 ms exposure", headless(1.0)))
    cases.append(("replay OME-TIFF 512x512 uint16, fps=0 (lossless)", _replay))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="frames per backend (default 300)")
    ap.add_argument("--out", default="benchmarks/results/acquisition.json",
                    help="where to write the JSON results")
    args = ap.parse_args(argv)

    results = []
    for label, make in _cases(args.frames):
        try:
            scope = make()
        except Exception as e:  # noqa: BLE001 - report the backend as unavailable
            print(f"{label}: unavailable ({type(e).__name__}: {e})", file=sys.stderr)
            results.append({"case": label, "error": f"{type(e).__name__}: {e}"})
            continue
        with scope:
            r = measure(scope, args.frames)
            r["snap_ms"] = measure_snap(scope, max(10, args.frames // 10))
        r["case"] = label
        results.append(r)

    hdr = (f"{'case':50s} {'frames':>6s} {'fps':>8s} {'cam fps':>8s} {'drops':>6s} "
           f"{'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if "error" in r:
            print(f"{r['case']:50s} unavailable: {r['error'][:60]}")
            continue
        lat = r["ready_to_consumer_ms"]
        print(f"{r['case']:50s} {r['frames']:6d} {r['consumer_fps']:8.1f} "
              f"{r['producer_fps']:8.1f} {r['dropped_in_slot']:6d} {lat['p50']:8.3f} "
              f"{lat['p90']:8.3f} {lat['p99']:8.3f} {lat['max']:8.3f}")

    print()
    print(f"{'case':50s} {'snap p50 ms':>12s} {'p90':>8s} {'p99':>8s} {'max':>8s}")
    for r in results:
        if "error" not in r:
            sn = r["snap_ms"]
            print(f"{r['case']:50s} {sn['p50']:12.3f} {sn['p90']:8.3f} {sn['p99']:8.3f} "
                  f"{sn['max']:8.3f}")

    doc = {
        "benchmark": "acquisition",
        "what": "consumer frame rate, producer (camera) frame rate, frames dropped in the "
                "newest-frame slot, and latency from the frame's 'ready' stamp to the "
                "consumer's get() (ms)",
        "frames_per_case": args.frames,
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    out = write_json(args.out, doc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
