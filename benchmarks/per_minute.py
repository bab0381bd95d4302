"""Minute by minute: does a long run of the loop stay as fast as its start?

A p99 over ten minutes hides a trend: a cost that grows with the time run (a list that
only grows, a lookup over ever more of the slide) shows as p99 rising and frames
processed falling from one minute to the next, where a noisy machine shows no trend.
Reads the records an ``inscope demo`` / ``inscope run`` wrote (``detections.jsonl``:
every processed frame with its time stamps)::

    python -m benchmarks.per_minute before=RUN1/detections.jsonl \\
        after=RUN2/detections.jsonl --out benchmarks/results/demo600_per_minute.json

``collect_live_loop`` adds the same breakdown to its 10-minute runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks._common import named_file, percentiles


def _stamps(path: str | Path) -> tuple[list[int], list[float]]:
    """Each processed frame's ``ready`` stamp (ns) and ready->published latency (ms)."""
    ready: list[int] = []
    lat: list[float] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                s = json.loads(line).get("stamps_ns") or {}
            except json.JSONDecodeError:
                continue  # a run stopped mid-line
            if "ready" in s and "published" in s:
                ready.append(s["ready"])
                lat.append((s["published"] - s["ready"]) / 1e6)
    return ready, lat


def per_minute(path: str | Path) -> list[dict]:
    """For each minute of the run (from its first processed frame): frames processed and
    ready->published latency percentiles (ms), from a ``detections.jsonl``."""
    return _minutes(*_stamps(path))


def _minutes(ready: list[int], lat: list[float]) -> list[dict]:
    """:func:`per_minute` of stamps already read."""
    if not ready:
        return []
    t = (np.asarray(ready, np.int64) - min(ready)) / 60e9
    minute = t.astype(int)
    lat_a = np.asarray(lat)
    out = []
    for m in range(int(minute.max()) + 1):
        sel = lat_a[minute == m]
        out.append({"minute": m, "frames_processed": int(sel.size),
                    "ready_to_published_ms": percentiles(sel, digits=2)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=DETECTIONS.jsonl",
                    type=named_file("NAME=DETECTIONS.jsonl, e.g. "
                                    "before=runs/demo/detections.jsonl"),
                    help="a label and the run's detections.jsonl")
    ap.add_argument("--out", help="JSON report path")
    ap.add_argument("--what", default="", help="what the runs were (saved in the report)")
    a = ap.parse_args(argv)
    rep: dict = {"what": a.what} if a.what else {}
    for name, path in a.runs:
        ready, lat = _stamps(path)  # read once: a 10-minute run holds ~60,000 lines
        minutes = _minutes(ready, lat)
        whole = percentiles(lat, digits=2, count=True)
        rep[name] = {"whole_run_ready_to_published_ms": whole, "minutes": minutes}
        print(f"{name}: whole run {whole}")
        for r in minutes:
            lat = r["ready_to_published_ms"] or {}
            print(f"  minute {r['minute']:3d}: {r['frames_processed']:6d} frames, "
                  f"ready->published p50 {lat.get('p50')} p99 {lat.get('p99')} ms")
    if a.out:
        Path(a.out).write_text(json.dumps(rep, indent=2) + "\n")
        print(f"report: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
