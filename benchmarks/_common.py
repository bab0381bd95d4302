"""What every benchmark does at its end, defined once.

Each script in ``benchmarks/`` reports latencies as p50 / p90 / p99 / max (the project's
rule: never a mean alone), says how loaded the shared machine was, and writes one JSON
report under ``benchmarks/results/``. These helpers keep the form of those figures the
same across scripts, so two result files can be read side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

#: Top-level folder of the repository -> where it lives in the installed package
#: (pyproject.toml's ``[tool.setuptools.package-dir]``), for scripts that lay out or
#: import a tree as it installs (``mutation``, ``ab_bench``).
PACKAGE_DIRS = {"inscope": "inscope", "acquisition": "inscope/acquisition",
                "detector": "inscope/detector", "control": "inscope/control"}


def module_at(rev: str, path: str, folder: Path) -> ModuleType:
    """The module at *path* (e.g. ``control/focus.py``) as it was at git *rev*, written
    into *folder* and imported as its own module (``<stem>_at_rev``), for a benchmark
    that runs this tree's code and a revision's side by side in one process. Its own
    imports are absolute, so they resolve to this tree's package."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    name = f"{Path(path).stem}_at_rev"
    file = folder / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # (dataclasses look their module up there)
    spec.loader.exec_module(mod)
    return mod


def percentiles(values: Iterable[float], *, digits: int | None = None, count: bool = False,
                mean: bool = False) -> dict[str, float] | None:
    """p50, p90, p99 and max of *values* (None when there are none).

    Parameters
    ----------
    values : iterable of float
        The samples, e.g. per-frame times in ms.
    digits : int, optional
        Round every figure to this many decimals (results files stay readable).
    count : bool
        Also give ``n``, the number of samples (first key).
    mean : bool
        Also give ``mean`` (last key), beside the percentiles, never instead of them.
    """
    v = np.asarray(list(values), float)
    if not v.size:
        return None
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    r: Callable[[float], float] = ((lambda x: round(float(x), digits)) if digits is not None
                                   else float)
    out: dict[str, float] = {"n": int(v.size)} if count else {}
    out |= {"p50": r(p50), "p90": r(p90), "p99": r(p99), "max": r(v.max())}
    if mean:
        out["mean"] = r(v.mean())
    return out


def alternating_blocks(calls: Mapping[str, Callable[[], object]], blocks: int = 10,
                       per_block: int = 10,
                       before: Callable[[str], object] | None = None) -> dict[str, dict]:
    """Time each of *calls* side by side: the arms take turns in blocks of *per_block*
    calls, *blocks* times each, so the shared machine's load falls on all of them alike.

    *before* (untimed) is called with an arm's name before each of its blocks, e.g. to
    switch a module setting the arm is about. Returns each arm's :func:`percentiles` of
    its calls in ms (3 decimals).
    """
    ms: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(blocks):
        for name, call in calls.items():
            if before is not None:
                before(name)
            for _ in range(per_block):
                t0 = time.perf_counter()
                call()
                ms[name].append((time.perf_counter() - t0) * 1e3)
    return {name: percentiles(v, digits=3) for name, v in ms.items()}


def load_average(digits: int = 2) -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None on Windows, which has none): figures
    taken on a shared machine are recorded beside the load they were taken under."""
    try:
        return [round(x, digits) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def write_per_size(path: str | Path, doc: str, rows: Mapping[str, Any]) -> Path:
    """Write a side-by-side benchmark's *rows* (one per camera frame size) to *path*,
    with what it measures (the second paragraph of its module *doc*) and the load it ran
    under; say where. Returns the path."""
    out = write_json(path, {"what": doc.split("\n\n")[1].replace("\n", " "),
                            "per_frame_size": dict(rows), "loadavg": load_average()})
    print(f"wrote {path}")
    return out


def rss_mb() -> float | None:
    """Resident set size of this process in MiB (Linux /proc; psutil elsewhere; None
    when neither is available)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import psutil  # optional: Windows / macOS

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def write_json(path: str | Path, report: Any, *, indent: int = 2,
               default: Callable[[Any], Any] | None = None) -> Path:
    """Write *report* as JSON to *path* (its folder is created), ending in a newline;
    returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent, default=default) + "\n")
    return path


def named_file(form: str) -> Callable[[str], tuple[str, Path]]:
    """An argparse ``type=`` for ``NAME=FILE`` arguments (*form*, e.g.
    ``NAME=MODEL.onnx``): ``(name, path)``; a missing ``=``, name or file is refused at
    parsing, naming the form."""
    def parse(arg: str) -> tuple[str, Path]:
        name, sep, path = arg.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"{arg!r}: give {form}")
        if not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"{path}: no such file (give {form})")
        return name, Path(path)

    return parse


#: ``NAME=MODEL.onnx`` (compare_models, bench_detector --side-by-side).
named_model = named_file("NAME=MODEL.onnx")


def scoring_sets(frames: int, seed: int, real: Path | None
                 ) -> list[tuple[str, list, bool]]:
    """What a detector benchmark scores on: *frames* simulated held-out frames from
    *seed* (objects less than a quarter in view difficult) and, with *real*, every frame
    of that annotated file; ``(name, samples, ignore_border_fp)`` each (unmatched boxes at
    a real frame's border are left out: its border nuclei are unlabelled)."""
    from inscope.detector.datasets import load_dataset, simulated_samples

    sets = [("simulated", list(simulated_samples(frames, seed=seed)), False)]
    if real is not None:
        sets.append((real.name, list(load_dataset(real)), True))
    return sets


def scoring_setup(argv: list[str] | None, doc: str, out: Path, seed: int):
    """What a benchmark scoring the shipped detector on :func:`scoring_sets` starts with:
    its arguments (``--frames`` simulated frames, ``--real`` annotated stack, ``--out``
    report, default *out*), the detector collecting every box down to 0.05 (for AP), the
    card's operating threshold and the sets. ``(args, detector, threshold, sets)``."""
    from inscope.detector.onnx_detector import OnnxDetector

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8, help="simulated frames")
    ap.add_argument("--real", type=Path, default=None, help="annotated npz stack")
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args(argv)
    det = OnnxDetector(provider="cpu", warmup=False, score_threshold=0.05)
    thr = float(det.card.decoding.get("score_threshold", 0.3))
    return args, det, thr, scoring_sets(args.frames, seed, args.real)
