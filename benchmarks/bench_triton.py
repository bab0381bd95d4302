"""Many microscopes, one inference server: Triton vs a local detector per microscope.

For 1, 2, 4 and 8 simulated microscopes (one process each, started with ``spawn``), two
cases run one after the other on the same frames:

``triton``
    every microscope sends its frames to ONE Triton server (PyTriton's ``tritonserver``,
    see :mod:`benchmarks.triton_local`, serving the model exported by ``inscope
    export-triton``: uint16 in, normalisation inside, dynamic batching, 0.5 ms queue delay)
    through :class:`inscope.detector.triton_detector.TritonDetector`;
``local``
    every microscope runs its own :class:`~inscope.detector.onnx_detector.OnnxDetector`.

Each microscope is closed-loop, like the service's detector thread behind its newest-frame
slot when the camera is faster than the detector: it sends its next frame as soon as the
previous one's detections are back (frames are pre-rendered by the simulator, so rendering
is not measured). Measured per case: total throughput (frames/s), per-frame latency
(``detect_start`` -> ``detect_end`` stamps: for Triton the whole round trip) p50 / p90 /
p99 / max, the batch sizes the server formed, and CPU per process (cores busy: CPU
seconds over wall seconds) for the microscopes and for the server's whole process group.
ONNX Runtime gets one intra-op thread everywhere (server and local), so the two cases
use the CPU alike.

    python -m benchmarks.bench_triton [--microscopes 1 2 4 8] [--seconds 8]
        [--out benchmarks/results/triton.json]

Needs the system Python to build the server's environment (once, cached in
``--cache``); on a shared 2-core CPU, figures are noisy and 8 microscopes oversubscribe
it: compare the two cases within one run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import load_average, percentiles, write_json

FRAME_SHAPE = (512, 512)
N_FRAMES = 8  # distinct pre-rendered frames per microscope, cycled


def _pct(values) -> dict[str, float]:
    return percentiles(values, digits=3) or {}


def render_frames(seed: int, n: int = N_FRAMES) -> list[np.ndarray]:
    """*n* uint16 512x512 frames of the simulated microscope at different positions."""
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=seed, realtime=False, shape=FRAME_SHAPE))
    try:
        out = []
        for i in range(n):
            scope.move_xy(130.0 * i, -70.0 * i)
            out.append(scope.snap().pixels.copy())
        return out
    finally:
        scope.close()


def microscope(model: str, seed: int, start_at: float, seconds: float, warmup: int,
               results) -> None:
    """One simulated microscope: detect closed-loop from *start_at* for *seconds*."""
    from inscope.acquisition.frame import Frame
    from inscope.detector.onnx_detector import load_detector

    frames = render_frames(seed)
    det = (load_detector(model) if model.startswith("triton://")
           else load_detector(None, provider="cpu", threads=1, warmup=False))
    for i in range(warmup):
        det.detect(frames[i % len(frames)])
    lat, rtt, n = [], [], 0
    while time.time() < start_at:
        time.sleep(0.001)
    c0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        f = Frame(frames[n % len(frames)], index=n, stamps={"ready": time.monotonic_ns()})
        d = det.detect(f)
        lat.append((d.stamps["detect_end"] - d.stamps["detect_start"]) / 1e6)
        rtt.append(det.last_timing.get("run_ms", 0.0))
        n += 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    det.close()
    results.put({"frames": n, "wall_s": wall, "cpu_s": cpu, "latency_ms": lat,
                 "run_ms": rtt})


def run_case(model: str, n: int, seconds: float, warmup: int, ctx, sample=None) -> dict:
    """Run *n* microscopes on *model* (``triton://...`` or ``local``); *sample()* is
    called at the start and at the end of the measured window (server counters)."""
    q = ctx.Queue()
    start_at = time.time() + 12.0 + 1.5 * n  # after every process has loaded and warmed up
    procs = [ctx.Process(target=microscope, args=(model, 100 + i, start_at, seconds, warmup,
                                                  q)) for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at - time.time()))
    first = sample() if sample else None
    t0 = time.time()
    time.sleep(seconds)
    last = sample() if sample else None
    window = time.time() - t0
    res = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    lat = [x for r in res for x in r["latency_ms"]]
    frames = sum(r["frames"] for r in res)
    wall = max(r["wall_s"] for r in res)
    return {
        "microscopes": n,
        "frames": frames,
        "throughput_fps": round(frames / wall, 1),
        "per_microscope_fps": round(frames / wall / n, 1),
        "latency_ms": _pct(lat),
        "request_ms": _pct([x for r in res for x in r["run_ms"]]),
        "cpu_per_microscope": [round(r["cpu_s"] / r["wall_s"], 3) for r in res],
        "wall_s": round(wall, 2),
        "server_samples": (first, last, window) if sample else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--microscopes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time per case")
    ap.add_argument("--warmup", type=int, default=5, help="frames per microscope before")
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "inscope-triton",
                    help="where the server's environment is built and kept")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/triton.json"))
    ap.add_argument("--table", type=Path, default=None, metavar="JSON",
                    help="only print the Markdown table of a results file (docs/scale-out.md)")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0

    import onnxruntime

    from benchmarks.triton_local import server_python

    ctx = mp.get_context("spawn")
    load0 = load_average(1)
    py = server_python(args.cache)
    with tempfile.TemporaryDirectory(prefix="inscope-bench-triton-") as tmp:
        return _run_all(args, ctx, py, Path(tmp), load0, onnxruntime.__version__)


def _run_all(args: argparse.Namespace, ctx, py: Path, work: Path, load0, ort_version: str
             ) -> int:
    from benchmarks.triton_local import LocalTritonServer
    from inscope.detector.triton_export import export_triton

    ex = export_triton(work / "repo")
    cases = []
    for n in args.microscopes:
        stats = work / f"stats-{n}.json"
        with LocalTritonServer(py, work / "repo", ex.name, threads=1,
                               stats_path=stats) as srv:
            res = run_case(srv.address, n, args.seconds, args.warmup, ctx,
                           sample=lambda srv=srv: (srv.batch_sizes(), srv.cpu_seconds()))
        # the server's batches and CPU over the measured window only
        (b0, c0), (b1, c1), window = res.pop("server_samples")
        batches = {k: b1[k] - b0.get(k, 0) for k in sorted(b1) if b1[k] - b0.get(k, 0)}
        res.update(case="triton", batch_sizes=batches,
                   mean_batch=round(sum(k * v for k, v in batches.items())
                                    / max(1, sum(batches.values())), 2),
                   cpu_server=round((c1 - c0) / window, 3))
        cases.append(res)
        _print(res)
        loc = run_case("local", n, args.seconds, args.warmup, ctx)
        loc.pop("server_samples")
        loc.update(case="local", request_ms={})
        cases.append(loc)
        _print(loc)
    out = {
        "meta": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpu_count": os.cpu_count(), "onnxruntime": ort_version,
                 "frame": f"{FRAME_SHAPE[0]}x{FRAME_SHAPE[1]} uint16 (simulated microscope)",
                 "model": ex.name, "server": "PyTriton 0.7.0 tritonserver (Python backend, "
                 "ONNX Runtime CPU, 1 intra-op thread, dynamic batching max 8, 0.5 ms delay)",
                 "local": "OnnxDetector, CPU, 1 intra-op thread, per microscope process",
                 "seconds_per_case": args.seconds, "closed_loop": True,
                 "load_average_1_5_15_min": {"start": load0, "end": load_average(1)},
                 "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "note": "shared, noisy 2-core CPU: server and microscopes compete for the "
                 "same cores; compare cases within this run"},
        "cases": cases,
    }
    write_json(args.out, out, indent=1)
    print(markdown_table(out))
    print(f"wrote {args.out}")
    return 0


def markdown_table(results: dict) -> str:
    """The cases of a results file as the Markdown table quoted in docs/scale-out.md."""
    lines = ["| microscopes | detector | frames/s total | per microscope | latency ms p50 / "
             "p90 / p99 / max | CPU per microscope (cores) | server CPU (cores) | batch "
             "sizes formed (size: count) |", "|" + "---|" * 8]
    for r in results["cases"]:
        lat = r["latency_ms"]
        tri = r["case"] == "triton"
        server = f"{r['cpu_server']:.2f}" if tri else "-"
        batches = (", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
                   + f" (mean {r['mean_batch']})") if tri else "-"
        lines.append(
            f"| {r['microscopes']} | {'one Triton server' if tri else 'local, each'} | "
            f"{r['throughput_fps']:.0f} | {r['per_microscope_fps']:.0f} | {lat['p50']:.1f} / "
            f"{lat['p90']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f} | "
            f"{np.mean(r['cpu_per_microscope']):.2f} | {server} | {batches} |")
    return "\n".join(lines)


def _print(r: dict) -> None:
    lat = r["latency_ms"]
    print(f"{r['case']:7s} x{r['microscopes']}: {r['throughput_fps']:7.1f} fps total, "
          f"latency p50 {lat['p50']:.1f} p90 {lat['p90']:.1f} p99 {lat['p99']:.1f} max "
          f"{lat['max']:.1f} ms, cpu/microscope {np.mean(r['cpu_per_microscope']):.2f}"
          + (f", server cpu {r['cpu_server']:.2f}, batches {r['batch_sizes']}"
             if r["case"] == "triton" else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
