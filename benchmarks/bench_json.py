"""JSON encoders for the per-frame detections message: stdlib ``json`` vs orjson vs msgspec.

Builds the real message (:func:`inscope.schema.detections_message`) of a frame with ~90
boxes, as the demo publishes it, and times encoding it to bytes with each encoder,
alternating blocks of runs so that a busy neighbour on the shared CPU hits all of them
alike. The message builder itself (numpy -> lists, pixel -> stage) is timed apart: it is
the same for every encoder. The service keeps the fastest (``inscope.schema.dumps``).

    python -m benchmarks.bench_json [--boxes 90] [--runs 2000] [--out benchmarks/results/json.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from benchmarks._common import percentiles, write_json


def _message(n: int) -> dict:
    from inscope.acquisition.frame import Frame, StagePosition
    from inscope.detector.base import Detections

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 480, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(10, 30, (n, 2)).astype(np.float32)], 1)
    dets = Detections(boxes, rng.uniform(0.3, 1, n).astype(np.float32),
                      np.zeros(n, np.int32), ("nucleus",))
    frame = Frame(np.zeros((512, 512), np.uint16), 7,
                  stamps={"ready": 1, "dequeued": 2, "detect_start": 3, "detect_end": 4},
                  position=StagePosition(10.0, -5.0, 1.5), pixel_size_um=0.65)
    from inscope import schema

    return schema.detections_message(
        frame, dets, target_id=3,
        control={"status": "centred", "error_um": (0.1, -0.2), "error_norm_um": 0.22},
        focus={"state": "locked", "z_center": 1.5, "sharpness": 9.69})


def _encoders() -> dict:
    from inscope import schema

    enc = {"json": schema._dumps_json}  # stdlib, with the NaN -> null fallback
    try:
        import orjson

        enc["orjson"] = lambda m: orjson.dumps(m, default=schema._default,
                                               option=orjson.OPT_SERIALIZE_NUMPY)
    except ImportError:
        pass
    try:
        import msgspec

        e = msgspec.json.Encoder()
        enc["msgspec"] = e.encode
    except ImportError:
        pass
    return enc


def _pct(v: list[float]) -> dict | None:
    return percentiles(v, digits=4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=90)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/json.json")
    a = ap.parse_args(argv)
    from inscope import schema

    msg = _message(a.boxes)
    enc = _encoders()
    # NaN must leave as null whatever the encoder (strict parsers reject NaN)
    msg_nan = dict(msg, focus={"sharpness": float("nan")})
    nan_ok = {}
    for k, f in enc.items():
        try:
            nan_ok[k] = json.loads(f(msg_nan))["focus"]["sharpness"] is None
        except ValueError:
            nan_ok[k] = False
    times: dict[str, list[float]] = {k: [] for k in enc}
    build: list[float] = []
    block = 50
    for _ in range(max(1, a.runs // block)):
        for k, f in enc.items():
            for _ in range(block):
                t0 = time.perf_counter_ns()
                f(msg)
                times[k].append((time.perf_counter_ns() - t0) / 1e6)
        t0 = time.perf_counter_ns()
        _message(a.boxes)
        build.append((time.perf_counter_ns() - t0) / 1e6)
    res = {k: {"ms": _pct(v), "bytes": len(enc[k](msg)), "nan_as_null": nan_ok[k]}
           for k, v in times.items()}
    winner = min(res, key=lambda k: res[k]["ms"]["p50"])
    report = {
        "benchmark": "json",
        "what": "encode one detections message (ms per message), alternating blocks of "
                f"{block} runs per encoder; message_build_ms includes making the frame",
        "boxes": a.boxes,
        "runs_per_encoder": len(next(iter(times.values()))),
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": res,
        "message_build_ms": _pct(build),
        "fastest": winner,
        "service_uses": schema.ENCODER,
        "note": "measured on a CPU shared with other jobs: compare the encoders side by "
                "side within this run, not with other runs",
    }
    out = write_json(a.out, report)
    for k, r in res.items():
        print(f"{k:8s} p50 {r['ms']['p50']:.4f} p99 {r['ms']['p99']:.4f} ms  "
              f"{r['bytes']} bytes  NaN->null {r['nan_as_null']}")
    print(f"fastest: {winner}; the service uses {schema.ENCODER}; report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
