"""GPU benchmark: which ONNX Runtime providers run here, and the shipped model's latency
on each at 512x512 and 2048x2048, with IO binding (input and outputs bound to the device,
so the timing is the network, not host<->device copies ORT would add per call).

    python -m benchmarks.bench_gpu [--sizes 512 2048] [--repeats 200] [--model PATH]
        [--out benchmarks/results/gpu.json]

Run it on the GPU machine after ``pip install 'inscope[gpu]'`` (add ``[tensorrt]`` for
TensorRT). For each provider (TensorRT, CUDA, CPU for reference) it records whether a
session really runs there (only a created session's ``get_providers()`` says so:
onnxruntime-gpu lists CUDA and TensorRT even with no GPU), the reason when not, and, when
it runs: p50 / p90 / p99 / max of ``run_with_iobinding`` plus the device-to-host copy of
the outputs (what inscope's decoder needs), and the first-run time (TensorRT builds its
engine then; later starts reuse :func:`inscope.detector.providers.trt_cache_dir`).
Under ``"new_shape"`` (CUDA): the first run at 512x512 of a session warmed up at 256x256
(what the live loop's first frame costs after the detector's warm-up), with cuDNN's
convolution-algorithm search ``EXHAUSTIVE`` (ONNX Runtime's default) and ``HEURISTIC``
(inscope's, :func:`inscope.detector.providers.cuda_options`), fresh sessions alternated.
Then, under ``"detect"``, what the live loop pays per frame on each provider that runs:
the whole ``OnnxDetector.detect`` (pre-processing on the CPU, host-to-device copy, the
network, decoding), the providers interleaved frame by frame on the same frames.

On a machine with no GPU it still runs and says so: ``"gpu": "no GPU"`` and CPU figures.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import percentiles, write_json

DEVICE = {"tensorrt": "cuda", "cuda": "cuda", "cpu": "cpu"}


def _pct(values) -> dict[str, float] | None:
    return percentiles(values, digits=3)


def gpu_name() -> str:
    """The GPU as ``nvidia-smi`` names it, or ``"no GPU"``."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "no GPU"
    name = out.stdout.strip().splitlines()
    return name[0] if out.returncode == 0 and name else "no GPU"


def bench_provider(model: Path, provider: str, sizes: list[int], repeats: int,
                   threads: int | None) -> dict:
    import onnxruntime as ort

    from inscope.detector.providers import LAST_CHOICE, create_session

    try:
        sess, used = create_session(model, provider, threads=threads)
    except Exception as e:  # noqa: BLE001 - the reason is the result
        return {"runs": False, "reason": str(e)}
    dev = DEVICE[used]
    res: dict = {"runs": True, "session_providers": sess.get_providers(),
                 "note": LAST_CHOICE.get("note", ""), "sizes": {}}
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(0)
    for s in sizes:
        x = rng.random((1, 1, s, s), dtype=np.float32)
        xv = ort.OrtValue.ortvalue_from_numpy(x, dev, 0)
        io = sess.io_binding()
        io.bind_ortvalue_input(in_name, xv)
        for n in out_names:
            io.bind_output(n, dev)
        t0 = time.perf_counter()
        sess.run_with_iobinding(io)
        first_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(5):
            sess.run_with_iobinding(io)
        run_ms, fetch_ms = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            io.synchronize_inputs()
            sess.run_with_iobinding(io)
            io.synchronize_outputs()
            t1 = time.perf_counter()
            io.copy_outputs_to_cpu()
            t2 = time.perf_counter()
            run_ms.append((t1 - t0) * 1e3)
            fetch_ms.append((t2 - t0) * 1e3)
        res["sizes"][str(s)] = {"first_run_ms": round(first_ms, 2), "run_ms": _pct(run_ms),
                                "run_and_fetch_ms": _pct(fetch_ms), "repeats": repeats}
    return res


def bench_new_shape(model: Path, rounds: int = 3) -> dict:
    """First 512x512 run after a 256x256 one, per cuDNN algorithm search (ms)."""
    import onnxruntime as ort

    out: dict[str, list[float]] = {"EXHAUSTIVE": [], "HEURISTIC": []}
    rng = np.random.default_rng(0)
    small = rng.random((1, 1, 256, 256), dtype=np.float32)
    big = rng.random((1, 1, 512, 512), dtype=np.float32)
    for _ in range(rounds):
        for algo in out:
            sess = ort.InferenceSession(
                str(model), providers=[("CUDAExecutionProvider",
                                        {"cudnn_conv_algo_search": algo}),
                                       "CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            sess.run(None, {name: small})
            t0 = time.perf_counter()
            sess.run(None, {name: big})
            out[algo].append(round((time.perf_counter() - t0) * 1e3, 1))
            del sess
    for algo, v in out.items():
        print(f"   first 512x512 run after 256x256, cuDNN {algo}: {v} ms")
    return {"first_run_512_after_256_ms": out, "rounds": rounds}


def bench_detect(model: Path, providers: list[str], sizes: list[int], repeats: int,
                 threads: int | None) -> dict:
    """The whole detector per frame on each provider (ms percentiles of total, pre,
    run, post), as ``benchmarks.bench_detector`` times it."""
    from benchmarks.bench_detector import bench_latency
    from inscope.detector.onnx_detector import load_detector

    dets = {p: load_detector(model, provider=p, threads=threads) for p in providers}
    res = bench_latency(dets, sizes, repeats, sim=None)
    for p, by_size in res.items():
        for s, v in by_size.items():
            q = v["total_ms"]
            print(f"   detect {p} {s}x{s}: p50 {q['p50']:.2f}  p99 {q['p99']:.2f} ms "
                  f"(session.run p50 {v['run_ms']['p50']:.2f})")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    ap.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    ap.add_argument("--providers", nargs="+", default=["tensorrt", "cuda", "cpu"])
    ap.add_argument("--detect-repeats", type=int, default=100,
                    help="frames per size for the whole-detector timing (0: skip it)")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from inscope.detector.onnx_detector import default_model_path
    from inscope.detector.providers import preload_gpu_libraries

    model = Path(args.model) if args.model else default_model_path()
    gpu = gpu_name()
    report = {
        "benchmark": "bench_gpu",
        "gpu": gpu,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers_listed": ort.get_available_providers(),
        "gpu_libraries": preload_gpu_libraries() or "loaded (or not needed)",
        "model": model.name,
        "io_binding": True,
        "results": {},
    }
    for p in args.providers:
        print(f"-- {p}", flush=True)
        report["results"][p] = r = bench_provider(model, p, args.sizes, args.repeats,
                                                  args.threads)
        if not r["runs"]:
            print(f"   does not run here: {r['reason']}")
            continue
        for s, v in r["sizes"].items():
            q = v["run_ms"]
            print(f"   {s}x{s}: p50 {q['p50']:.2f}  p90 {q['p90']:.2f}  p99 {q['p99']:.2f}  "
                  f"max {q['max']:.2f} ms  (first run {v['first_run_ms']:.0f} ms)")
    ran = [p for p in args.providers if report["results"][p]["runs"]]
    if "cuda" in ran:
        report["new_shape"] = bench_new_shape(model)
    if ran and args.detect_repeats > 0:
        report["detect"] = bench_detect(model, ran, args.sizes, args.detect_repeats,
                                        args.threads)
    if gpu == "no GPU":
        print("no GPU on this machine: CPU figures only (run this on the GPU machine)")
    out = write_json(args.out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
