"""Before / after table of the control benchmark (``bench_control`` JSON files).

Run::

    python -m benchmarks.control_summary > benchmarks/results/control_summary.md

Pairs every ``benchmarks/results/control*.json`` with its ``*_before.json`` (the same
script, on the same simulator and slides, run with the control package of the code before
the change: ``--label before`` with that package first on PYTHONPATH) and prints one
markdown table per setting with the issue's targets beside the figures, and the load
average of the shared machine while each ran.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

ROWS = [
    # label, path into the suite's result, format, target
    ("centring settled in <= 3 moves", ("centring", "settled_within_3_moves"), "{:.3f}",
     ">= 0.98"),
    ("centring error p50 (µm)", ("centring", "error_um_when_centred", "p50"), "{:.2f}",
     "<= 0.5"),
    ("centring error p90 (µm)", ("centring", "error_um_when_centred", "p90"), "{:.2f}",
     "<= 1.0"),
    ("centring error max (µm)", ("centring", "error_um_when_centred", "max"), "{:.2f}", ""),
    ("'centred' while target not seen / wrong cell", ("centring", "false_centred"), "{}",
     "0"),
    ("centring moves p50 / max", ("centring", "moves"), "mm", ""),
    ("jitter, box centre, 1-10 px shifts (px RMS p50)", ("jitter", "box_1-10px", "p50"),
     "{:.2f}", ""),
    ("jitter, refined, sub-pixel shifts (px RMS per cell: p50 / worst cell)",
     ("jitter", "refined_subpixel"), "pm", "<= 0.3"),
    ("jitter, refined, 1-10 px shifts (px RMS per cell: p50 / worst cell)",
     ("jitter", "refined_1-10px"), "pm", "<= 0.3"),
    ("jitter, refined, sub-pixel shifts (px RMS over every cell and shift)",
     ("jitter", "refined_subpixel", "pooled_rms"), "{:.2f}", "<= 0.3"),
    ("jitter, refined, 1-10 px shifts (px RMS over every cell and shift)",
     ("jitter", "refined_1-10px", "pooled_rms"), "{:.2f}", "<= 0.3"),
    ("cold autofocus from +/-10 µm: images max", ("autofocus_cold", "offset_pm10um",
                                                  "images", "max"), "{:.0f}", "<= 8"),
    ("cold autofocus from +/-10 µm: |error| p50 (µm)",
     ("autofocus_cold", "offset_pm10um", "abs_error_um", "p50"), "{:.2f}", ""),
    ("cold autofocus from +/-2 µm: |error| p50 / max (µm)",
     ("autofocus_cold", "offset_pm2um", "abs_error_um"), "pm", ""),
    ("focus lock: end plane, started above vs below, |difference| p50 / max (µm)",
     ("focus_lock", "above_minus_below_abs_um"), "pm", "<= 0.3"),
    ("focus lock: pairs ending within 0.3 µm", ("focus_lock", "pairs_within_0.3um"),
     "{:.2f}", "1.00"),
    ("focus lock: frames to 'locked' p50 / max; never locked",
     ("focus_lock",), "lockframes", ""),
    ("focus lock: |end - field focus| p50 / max (µm)",
     ("focus_lock", "abs_error_vs_field_focus_um"), "pm", ""),
    ("find-and-image: interior cells imaged exactly once",
     ("find_and_image", "interior_imaged_exactly_once"), "{:.3f}", ">= 0.98"),
    ("find-and-image: recall of interior cells", ("find_and_image", "recall_interior"),
     "{:.3f}", ""),
    ("find-and-image: true cells imaged twice", ("find_and_image", "true_cells_imaged_twice"),
     "{}", "0"),
    ("find-and-image: skipped without a reason",
     ("find_and_image", "skipped_without_reason"), "{}", "0"),
    ("focus images per cell after the first 5 (p50 / max)",
     ("find_and_image", "focus_images_after_first_5"), "mm", "<= 5"),
    ("cell z error p50 / p90 (µm)", ("find_and_image", "focus_abs_error_um"), "p59", ""),
    ("z-extent error, worse end, p50 / p90 (µm)",
     ("find_and_image", "z_extent_max_end_error_um"), "p59", "<= 1"),
    ("z extent ends at this fraction of the peak of the cell's per-plane signal",
     ("find_and_image", "z_extent_signal_frac"), "frac", ""),
    ("z extent not measured: cell too dim (signal under the noise floor)",
     ("find_and_image", "z_extent_unknown_too_dim"), "{}", ""),
    ("images per find-and-image run", ("find_and_image", "images"), "{}", ""),
]


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return None
        d = d[k]
    return d


def _fmt(v, f: str) -> str:
    if v is None:
        return "-"
    if f == "mm":
        return f"{v['p50']:.0f} / {v['max']:.0f}"
    if f == "pm":
        return f"{v['p50']:.2f} / {v['max']:.2f}"
    if f == "lockframes":
        first = v.get("first_locked_frame") or {}
        return (f"{first.get('p50', math.nan):.0f} / {first.get('max', math.nan):.0f}; "
                f"{v.get('never_locked', '-')}")
    if f == "frac":  # [fraction, where it came from(, signal: before it, sharpness)]
        return f"{v[0]:g} of its {v[2] if len(v) > 2 else 'sharpness'} ({v[1]})"
    if f == "p59":
        return f"{v['p50']:.2f} / {v['p90']:.2f}"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f.format(v)


def _load(d: dict | None) -> str:
    h = (d or {}).get("host", {})
    if "loadavg_start" not in h:
        return "-"
    a, b = h["loadavg_start"][0], h.get("loadavg_end", [math.nan])[0]
    return f"{a:.1f} -> {b:.1f} ({h.get('cpus', '?')} CPUs)"


def table(after: dict, before: dict | None, name: str) -> str:
    a, b = after.get(name, {}), (before or {}).get(name, {})
    lines = [f"### {name}", "", "| figure | before | after | target |", "|---|---|---|---|"]
    lines.append(f"| code | {(before or {}).get('code', '-')} | {after.get('code', '-')} | |")
    lines.append(f"| load average (1 min) at start -> end | {_load(before)} | "
                 f"{_load(after)} | |")
    for label, path, f, target in ROWS:
        lines.append(f"| {label} | {_fmt(_get(b, path), f) if before else '-'} | "
                     f"{_fmt(_get(a, path), f)} | {target} |")
    notes = []
    for side, d in (("before", b), ("after", a)):
        for key, v in d.items():
            up = v.get("updated") if isinstance(v, dict) else None
            if up:
                notes.append(f"{side}: `{key}` re-run alone on {up['date']} ({up['code']}; "
                             f"load {up['loadavg'][0]:.1f} -> {up['loadavg'][1]:.1f})")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    out = ["# Control benchmark: before / after", "",
           "Generated by `python -m benchmarks.control_summary` from the JSON files in this "
           "folder (`bench_control`; 'before' = the same script, simulator and slides, "
           "with the control package of the code before the change). Shared 2-core CPU "
           "(load average in each table): times are noisy; counts and errors are not. "
           "Where a simulator JSON records `sim_config`, its nuclei are thick "
           "(`--sim-thickness 0.5`: ellipsoids, half-thickness 0.5 x the short "
           "semi-axis) and placed at their sub-pixel position, so z extents and centroids "
           "are scored against a consistent truth; without it, the earlier thin, "
           "pixel-snapped simulator. A before file whose `code` says 'previous run' was "
           "not re-run (the figures committed with the code it names). A measure re-run alone "
           "(`bench_control --only M --update`) is listed under its table with its code, "
           "date and load.",
           ""]
    for p in sorted(RESULTS.glob("control*.json")):
        if p.stem.endswith("_before"):
            continue
        after = json.loads(p.read_text())
        bp = p.with_name(p.stem + "_before.json")
        before = json.loads(bp.read_text()) if bp.exists() else None
        out.append(f"## {p.name}" + (f" (before: {bp.name})" if before else ""))
        out.append("")
        for name in ("sim", "hela_2d", "hela_3d", "confocal", "slide"):
            if name in after:
                out.append(table(after, before, name))
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
