"""Side by side: the live loop's target figures before and after the rework (issue 11).

Reads the outputs of runs made one after the other on the same machine and writes one
JSON with the figures the targets name:

- ``inscope bench --backend headless --model default --frames 600 --mode steer`` (real
  MMCore + DemoCamera + shipped CNN, 10 ms exposure = 100 frames/s), before and after;
- ``inscope demo`` (300 frames) before and after, and ``inscope bench --backend demo``
  after (the demo configuration with CPU time per thread and process);
- ``inscope demo --seconds 600`` before and after (the 10-minute run).

"Before" is the code at the commit named in ``--before-commit``, run from a second
checkout with its own environment. Usage::

    python -m benchmarks.collect_live_loop --before-commit 0f913ac \\
        --bench-before B/bench.json --bench-after A/bench.json \\
        --demo-before DB/summary.json --demo-after DA/summary.json \\
        --demo600-before D6B/summary.json --demo600-after D6A/summary.json \\
        --out benchmarks/results/live_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def _load(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


def _pick(lat: dict, key: str) -> dict | None:
    v = lat.get(key)
    return None if v is None else {k: v.get(k) for k in ("n", "p50", "p90", "p99", "max")}


def _from_bench(r: dict) -> dict:
    lat = r["latency_ms"]
    acq = r["acquired"] or 0
    return {
        "microscope": r["microscope"], "detector": r["detector"]["name"],
        "mode": r.get("mode"), "frames": r["frames"], "acquired": acq,
        "dropped": r["dropped"],
        "processed_fraction": round(1 - r["dropped"] / acq, 4) if acq else None,
        "fps": r["fps"], "camera_fps": r["camera_fps"],
        "ready_to_published_ms": _pick(lat, "ready_to_published"),
        "detect_ms": _pick(lat, "detect"),
        "overhead_ms": _pick(lat, "overhead_ready_to_published_minus_detect"),
        "ready_to_move_commanded_ms": _pick(lat, "ready_to_move_commanded"),
        "cpu": r.get("cpu"),
    }


def _from_summary(s: dict) -> dict:
    out = _from_bench({**s, "mode": s["control"].get("mode")})
    c = s["control"]
    out["control"] = {k: c.get(k) for k in ("moves_made", "targets_centred",
                                             "final_centring_error_um", "focus")}
    tour = c.get("tour")
    if tour:
        out["tour"] = {k: v for k, v in tour.items() if k != "timeline"}
    # counts only: no paths or addresses of the machine the runs were made on
    out["outputs"] = {name: {k: v for k, v in o.items()
                             if k not in ("video", "detections", "frames", "address")}
                      for name, o in (s.get("outputs") or {}).items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-commit", required=True)
    for k in ("bench", "demo", "demo600"):
        ap.add_argument(f"--{k}-before")
        ap.add_argument(f"--{k}-after")
    ap.add_argument("--out", default="benchmarks/results/live_loop.json")
    a = ap.parse_args(argv)
    rep: dict = {
        "what": "live-loop target figures before/after (issue 11), runs made one after "
                "the other on one machine",
        "before_commit": a.before_commit,
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "2 cores shared with other jobs (load average ~15-20 during these runs): "
                "every figure, the detector's own time included, is several times what a "
                "quiet machine gives; compare before and after, not with the targets' "
                "absolute numbers",
        "targets": {
            "mmcore_democamera_cnn_100fps": "processed >= 99 %, ready->published p99 <= "
                                            "10 ms, overhead p99 <= 1 ms",
            "demo": "processed >= 95 %, ready->published p99 <= 15 ms, ready->move "
                    "commanded p99 <= 20 ms",
            "demo_10_min": "ready->published p99 within 20 % of the 300-frame figure",
        },
    }
    for k in ("bench", "demo", "demo600"):
        for when in ("before", "after"):
            d = _load(getattr(a, f"{k}_{when}"))
            if d is None:
                continue
            if k == "bench":
                rep[f"{k}_{when}"] = [_from_bench(r) for r in d["results"]]
            else:
                rep[f"{k}_{when}"] = _from_summary(d)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=2) + "\n")
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
