"""The whole live loop (``inscope bench``) with control off and with steering, in one run.

docs/service.md's latency table is this script's output: ``--table`` renders it from the
committed ``benchmarks/results/loop.json``, so the figures there can always be traced to
a run and regenerated.

Run::

    python -m benchmarks.loop [--frames 300] [--out benchmarks/results/loop.json]
    python -m benchmarks.loop --table            # print the Markdown table of the JSON

The JSON keeps both ``inscope bench`` reports as they are, plus the machine's load
average before and after: on a shared machine the tails follow the load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import load_average, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loop.json"
MODES = ("off", "steer")


def measure(frames: int) -> dict[str, Any]:
    """Run ``inscope bench`` once per control mode; return both reports."""
    out: dict[str, Any] = {"command": f"python -m benchmarks.loop --frames {frames}",
                           "load_average_before": load_average(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            path = Path(tmp) / f"{mode}.json"
            cmd = [sys.executable, "-m", "inscope", "bench", "--frames", str(frames),
                   "--mode", mode, "--no-plots", "--out", str(path)]
            print(" ".join(["inscope", *cmd[3:-1]]), "...", flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
            out["runs"][mode] = json.loads(path.read_text())
    out["load_average_after"] = load_average()
    return out


def _f(v: float | None, nd: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if abs(v) < 10 else f"{v:.1f}"


def _pct(d: dict | None, *keys: str) -> str:
    if not d or not d.get("n"):
        return "-"
    return " / ".join(_f(d.get(k)) for k in keys)


def table(report: dict[str, Any]) -> str:
    """The Markdown table of docs/service.md, one row per configuration and mode."""
    head = ("| microscope | detector | control | fps / camera | drops | detect p50 / p99 "
            "| ready->published p50 / p90 / p99 / max | overhead p50 / p99 "
            "| hand-offs p50 / p99 | ready->move p50 |")
    rows = [head, "|" + "---|" * 10]
    for mode in MODES:
        run = report["runs"].get(mode)
        if run is None:
            continue
        for r in run["results"]:
            lat = r["latency_ms"]
            scope = "simulated" if r["microscope"] == "simulated" else "DemoCamera"
            move = lat.get("ready_to_move_commanded")
            rows.append(
                f"| {scope} | {r['detector']['name']} | {mode} "
                f"| {r['fps']:.1f} / {r['camera_fps']:.1f} | {r['dropped']} "
                f"| {_pct(lat.get('detect'), 'p50', 'p99')} "
                f"| {_pct(lat.get('ready_to_published'), 'p50', 'p90', 'p99', 'max')} "
                f"| {_pct(r.get('overhead_ms'), 'p50', 'p99')} "
                f"| {_pct(r.get('handoff_ms'), 'p50', 'p99')} "
                f"| {_f(move['p50']) if move and move.get('n') else '-'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="frames per configuration")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table", action="store_true",
                    help="only print the Markdown table of --out")
    a = ap.parse_args(argv)
    if not a.table:
        report = measure(a.frames)
        write_json(a.out, report, indent=1)
    report = json.loads(a.out.read_text())
    print(f"load average before / after: {report['load_average_before']} / "
          f"{report['load_average_after']}")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
