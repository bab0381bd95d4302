"""``inscope bench`` on this working tree and on an older revision, alternated, side by side.

A shared 2-core VM changes speed by tens of percent from one hour to the next, so a change
to the loop is judged only against the code before it run in the same minutes: this
script checks out *REV* into a temporary git worktree, makes it importable as
``inscope`` (the same package-dir mapping as ``pyproject.toml``: ``acquisition/`` ->
``inscope.acquisition`` ...), and runs ``inscope bench`` with the same arguments on each
tree in turn (new, old, new, old, ...). The simulated camera's process inherits the
interpreter's path, so it renders with its own tree's code too.

Run::

    python -m benchmarks.ab_bench --rev 258452a --rounds 2 -- --backend demo --frames 300
    python -m benchmarks.ab_bench --rev HEAD~3 -- --backend headless --mode steer

Prints one line per run and writes ``benchmarks/results/ab_bench.json`` (each run's
``inscope bench`` report, the revisions and the machine's load).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import PACKAGE_DIRS, load_average, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ab_bench.json"

#: Run ``inscope`` from the tree whose import shim is argv[1]: the shim goes first on the
#: path, so it wins over the editable install of the working tree.
_RUNNER = """
import runpy, sys
shim = sys.argv.pop(1)
sys.path.insert(0, shim)
import inscope
assert inscope.__file__.startswith(shim), inscope.__file__
sys.argv[0] = "inscope"
runpy.run_module("inscope", run_name="__main__", alter_sys=True)
"""


def _shim(tree: Path, into: Path) -> Path:
    """A folder where ``import inscope`` finds *tree*'s code, laid out as it installs."""
    pkg = into / "inscope"
    pkg.mkdir(parents=True)
    for top, dest in PACKAGE_DIRS.items():
        if dest == "inscope":  # the package's own folder: its files, beside the links
            for f in (tree / top).iterdir():
                (pkg / f.name).symlink_to(f)
        else:
            (into / dest).symlink_to(tree / top)
    return into


def _line(label: str, r: dict[str, Any]) -> str:
    lat = r.get("latency_ms", {})

    def p(key: str, q: str) -> float:
        return float((lat.get(key) or {}).get(q) or float("nan"))

    procs = {k: round(v["percent_of_one_core"]) for k, v in
             (r.get("cpu") or {}).get("processes", {}).items()}
    return (f"{label:<4} fps {r['fps']:.1f} of {r['camera_fps']:.1f} camera, dropped "
            f"{r['dropped']}, detect p50 {p('detect', 'p50'):.1f} ms, ready->published "
            f"p50/p99 {p('ready_to_published', 'p50'):.1f}/"
            f"{p('ready_to_published', 'p99'):.1f} ms, control p50 "
            f"{p('control', 'p50'):.1f} ms, CPU % {procs}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the older revision (git rev)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each tree (alternated)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("bench_args", nargs=argparse.REMAINDER,
                    help="after '--': the arguments of inscope bench")
    args = ap.parse_args(argv)
    bench = [a for a in args.bench_args if a != "--"]
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    given = argv if argv is not None else sys.argv[1:]
    report: dict[str, Any] = {"command": "python -m benchmarks.ab_bench " + " ".join(given),
                              "new": f"working tree at {head}", "old": rev,
                              "load_average_before": load_average(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="inscope-ab-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            shims = {"new": _shim(ROOT, Path(tmp) / "shim-new"),
                     "old": _shim(old, Path(tmp) / "shim-old")}
            for k in range(args.rounds):
                for label in ("new", "old"):
                    out = Path(tmp) / f"{label}-{k}.json"
                    cmd = [sys.executable, "-c", _RUNNER, str(shims[label]), "bench",
                           *bench, "--no-plots", "--out", str(out)]
                    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
                    for r in json.loads(out.read_text())["results"]:
                        report["runs"].append({"tree": label, "round": k, "result": r})
                        print(_line(label, r), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           check=False, capture_output=True)
    report["load_average_after"] = load_average()
    print(f"wrote {write_json(args.out, report, indent=1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
