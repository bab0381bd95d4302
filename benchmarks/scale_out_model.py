"""Expected figures for one GPU Triton server on 10 GbE serving many microscopes.

No GPU or 10 GbE link is available where inscope is developed, so this is a model, not a
measurement: every figure comes from the arithmetic below, the stated assumptions (each a
flag) and committed measurements (``benchmarks/results/detector.json``: the local CPU
detector's latency and its decoding cost; the model's compute and memory traffic are
counted from the exported ONNX graph itself). It writes
``benchmarks/results/scale_out_model.json`` and prints the tables quoted in
docs/scale-out.md.

Remote latency of one frame (idle server)::

    client cast + serialise  (frame bytes / memory copy rate)
    + wire in                (frame bytes / link goodput)
    + gRPC overhead          (both directions, assumed)
    + batcher queue delay    (the config's max_queue_delay: a lone request waits it)
    + GPU batch time         (fixed per batch + per frame max(FLOPs / rate, bytes / BW))
    (busy server: no queue delay, but up to one full batch ahead of it + its own full batch)
    + wire out               (output bytes / link goodput)
    + client decode          (measured locally: the same decode_centernet)

    python -m benchmarks.scale_out_model [--link-gbps 10] [--queue-delay-us 500] ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks._common import write_json
from benchmarks.model_cost import graph_cost
from inscope.detector.triton_cli import add_batcher_arguments

SIZES = (512, 1024, 2048)
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--link-gbps", type=float, default=10.0, help="Ethernet line rate")
    ap.add_argument("--goodput", type=float, default=0.949,
                    help="TCP payload / line rate (1500-byte MTU: 1448 of 1538 bytes)")
    ap.add_argument("--grpc-overhead-ms", type=float, default=0.25,
                    help="assumed gRPC + HTTP/2 + server bookkeeping per request, both ways")
    ap.add_argument("--copy-gbs", type=float, default=5.0,
                    help="client memory-copy rate for cast + protobuf serialisation, GB/s")
    ap.add_argument("--gpu-tflops", type=float, default=20.0,
                    help="assumed sustained FP32 rate on small convolutions (A100-class: "
                    "19.5 peak FP32, ~156 TF32)")
    ap.add_argument("--gpu-gbs", type=float, default=1000.0,
                    help="assumed sustained memory bandwidth, GB/s (A100 peak ~1,500-2,000)")
    ap.add_argument("--batch-overhead-ms", type=float, default=0.3,
                    help="assumed fixed cost of one batch: kernel launches, H2D/D2H setup")
    add_batcher_arguments(ap)  # export-triton's flags and defaults
    ap.add_argument("--camera-fps", type=float, default=100.0,
                    help="frame rate of each microscope for the 'microscopes per server' row")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale_out_model.json")
    args = ap.parse_args(argv)

    from inscope.detector.onnx_detector import DEFAULT_MODEL

    det = json.loads((RESULTS / "detector.json").read_text())["latency"]
    local = det["inscope-nuclei[cpu]"]
    bigger = det.get("reference-cnn[cpu] (random)", {})
    # A size detector.json did not time keeps its arithmetic (wire, GPU) and goes without
    # the measured columns (None), rather than borrowing another run's figures.
    missing = [str(n) for n in SIZES if str(n) not in local]
    if missing:
        print(f"scale_out_model: benchmarks/results/detector.json has no "
              f"{', '.join(missing)} px measurement of inscope-nuclei: those rows have no "
              "local CPU or decode figures (python -m benchmarks.bench_detector, whose "
              "default sizes include them, fills them in)", file=sys.stderr)
    goodput = args.link_gbps * 1e9 * args.goodput / 8  # bytes/s
    rows = []
    for size in SIZES:
        cost = graph_cost(DEFAULT_MODEL, size)
        frame_u16 = size * size * 2
        frame_f32 = size * size * 4
        s4 = size // 4
        out_bytes = (1 + 2 + 2) * s4 * s4 * 4  # heatmap, size, offset at stride 4, float32
        wire_in = frame_u16 / goodput * 1e3
        wire_in_f32 = frame_f32 / goodput * 1e3
        wire_out = out_bytes / goodput * 1e3
        per_frame_gpu = max(2 * cost["gmac"] * 1e9 / (args.gpu_tflops * 1e12),
                            cost["activation_mb"] * 1e6 / (args.gpu_gbs * 1e9)) * 1e3

        def gpu_batch(b: int, per=per_frame_gpu) -> float:
            return args.batch_overhead_ms + b * per

        client = frame_u16 / (args.copy_gbs * 1e9) * 1e3
        measured = local.get(str(size))
        decode = float(measured["post_ms"]["p50"]) if measured else math.nan
        fixed = client + wire_in + args.grpc_overhead_ms + wire_out + decode
        remote = fixed + args.queue_delay_us / 1e3 + gpu_batch(1)
        # busy: the frame waits for a full batch to finish, then runs in the next full one
        busy = fixed + 2 * gpu_batch(args.max_batch)
        link_fps = goodput / (frame_u16 + out_bytes)
        # if peaks were decoded on the server: up to max_detections boxes of 6 float32
        link_fps_boxes = goodput / (frame_u16 + 1000 * 6 * 4)
        gpu_fps = {b: b / gpu_batch(b) * 1e3 for b in (1, 2, 4, args.max_batch)}
        server_fps = min(link_fps, gpu_fps[args.max_batch])
        local_ms = float(measured["total_ms"]["p50"]) if measured else math.nan
        big_ms = float(bigger.get(str(size), {}).get("total_ms", {}).get("p50", np.nan))
        rows.append({
            "frame": f"{size}x{size}",
            "frame_mb_uint16": round(frame_u16 / 1e6, 3),
            "wire_in_ms_uint16": round(wire_in, 3),
            "wire_in_ms_float32": round(wire_in_f32, 3),
            "wire_out_ms": round(wire_out, 3),
            "model_gmac": round(cost["gmac"], 3),
            "model_activation_mb": round(cost["activation_mb"], 1),
            "gpu_ms_per_frame": round(per_frame_gpu, 3),
            "gpu_ms_batch": {str(b): round(gpu_batch(b), 3) for b in gpu_fps},
            "gpu_fps_batch": {str(b): round(v) for b, v in gpu_fps.items()},
            "link_fps": round(link_fps),
            "link_fps_if_decoded_on_server": round(link_fps_boxes),
            "server_fps": round(server_fps),
            "bound_by": "link" if link_fps < gpu_fps[args.max_batch] else "gpu",
            "microscopes_at_camera_fps": math.floor(server_fps / args.camera_fps),
            "remote_latency_ms_idle": _opt(remote),
            "remote_latency_ms_busy": _opt(busy),
            "local_cpu_ms_p50_shipped": _opt(local_ms),
            "local_cpu_ms_p50_reference_cnn": (round(big_ms, 2) if not math.isnan(big_ms)
                                               else None),
            # a local detector slower than this gains latency by going remote
            "crossover_local_ms": _opt(remote),
        })
    out = {
        "assumptions": {k: v for k, v in vars(args).items() if k != "out"},
        "measured_inputs": "benchmarks/results/detector.json (local CPU p50 total and "
                           "decode post_ms of inscope-nuclei and reference-cnn); model cost "
                           "counted from detector/models/inscope-nuclei.onnx",
        "rows": rows,
    }
    write_json(args.out, out, indent=1)
    print(_table(rows, args.camera_fps))
    print(f"wrote {args.out.name}")
    return 0


def _opt(x: float, digits: int = 2) -> float | None:
    """*x* rounded, or None where it rests on a measurement that was not made."""
    return None if math.isnan(x) else round(x, digits)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "not measured" if x is None else f"{x:.{digits}f}"


def _table(rows: list[dict], fps: float) -> str:
    head = ("| frame | uint16 MB | wire in ms (uint16 / float32) | wire out ms | GPU ms batch "
            "1 / 8 | server fps (bound) | microscopes at "
            f"{fps:g} fps | remote ms, idle / busy | local CPU ms p50 (shipped / reference CNN) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        b = r["gpu_ms_batch"]
        lines.append(
            f"| {r['frame']} | {r['frame_mb_uint16']:.2f} | {r['wire_in_ms_uint16']:.2f} / "
            f"{r['wire_in_ms_float32']:.2f} | {r['wire_out_ms']:.2f} | {b['1']:.2f} / "
            f"{b[max(b, key=int)]:.2f} | {r['server_fps']} ({r['bound_by']}) | "
            f"{r['microscopes_at_camera_fps']} | {_fmt(r['remote_latency_ms_idle'])} / "
            f"{_fmt(r['remote_latency_ms_busy'])} | "
            f"{_fmt(r['local_cpu_ms_p50_shipped'], 1)} / "
            f"{_fmt(r['local_cpu_ms_p50_reference_cnn'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
