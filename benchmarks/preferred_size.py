"""Accuracy for time: the nucleus size the shipped network is most accurate at, and what
enlarging frames to it (``OnnxDetector(enlarge_below_px=...)``, ``--enlarge-below-px``)
gains and costs.

The card's own ``scale.enlarge_below_px`` (14 px) enlarges only what the network starts
losing (:mod:`benchmarks.small_nuclei`). Its boxes are still a little better on larger
nuclei: at stride 4 a 21 px nucleus spans 5 output cells, and a box a pixel or two off
falls under IoU 0.5 sooner. This measures how much, and what it costs:

* ``tuning`` (where the suggested size, :data:`SUGGESTED_PX`, was read; generated frames
  only): AP50 and mAP50-95 on simulated 512 x 512 frames (seed 1010000, as
  small_nuclei's tuning) of nuclei k times the default size (k = 1, 1.35, 1.8: ~21, 29,
  38 px), each resized by fixed factors 1-2;
* ``check`` (frames no choice used: seed 1020000): simulated frames at k = 1 and 1.35,
  and packed fields at k = 1, with the card's enlargement and with
  ``enlarge_below_px`` = :data:`SUGGESTED_PX`, side by side: AP50, mAP50-95, P / R at the
  card's threshold, the factor applied, and ``detect()`` ms p50 / p90 / p99 / max, the
  two detectors timed frame by frame in alternation;
* ``real`` (``--real STACK``, for the record only: nothing was chosen on it): the same
  two detectors on the annotated real frames (their unmatched border boxes left out).

Run::

    python -m benchmarks.preferred_size --real STACK.npz     # ~6 min on 2 cores
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks._common import load_average, percentiles, write_json
from benchmarks.small_nuclei import (
    CHECK_SEED,
    PACKED,
    TUNE_SEED,
    _detector,
    _score,
    _sim,
    card_threshold_and_scale,
    scale_parser,
)

OUT = Path(__file__).parent / "results" / "preferred_size.json"
#: nuclei k times the default simulated size (~21 px)
TUNE_SCALES = (1.0, 1.35, 1.8)
FORCED = (1.0, 1.25, 1.5, 1.75, 2.0)
#: the enlargement target suggested in the model card: the middle of the sizes (29-43
#: px) where the tuning frames score highest
SUGGESTED_PX = 36.0


def _box_px(samples) -> float:
    b = np.concatenate([s.boxes for s in samples])
    return round(float(np.median(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))), 1)


def tuning(model: Path | None, frames: int, op: float) -> dict:
    """AP50 / mAP50-95 at fixed resize factors, per nucleus size."""
    det = _detector(model, enlarge=False)
    centre = float(np.sqrt(np.prod(det.card.scale["object_size_px"])))
    det.close()
    out: dict = {}
    for k in TUNE_SCALES:
        ss = _sim(k, frames, TUNE_SEED)
        row: dict = {"box_size_p50_px": _box_px(ss), "at_factor": {}}
        for f in FORCED:
            d = _detector(model, enlarge=False, object_size_px=centre / f)
            r = _score(d, ss, op, False)
            d.close()
            row["at_factor"][f"{f:g}"] = {"ap50": r["ap50"], "map50_95": r["map50_95"]}
        out[f"{k:g}"] = row
        print(f"tuning k {k:g}: {row}", flush=True)
    return {"by_scale": out,
            "frames": f"{frames} simulated 512x512 frames per k, seed {TUNE_SEED}; factor f: "
                      "object_size_px = the card's centre / f"}


def side_by_side(model: Path | None, samples, op: float, border: bool) -> dict:
    """The card's enlargement against ``enlarge_below_px`` = SUGGESTED_PX on *samples*:
    accuracy, and ``detect()`` timed in alternation, frame by frame."""
    dets = {"card": _detector(model, enlarge=True),
            f"enlarge_below_px {SUGGESTED_PX:g}": _detector(model, enlarge=True,
                                                            enlarge_below_px=SUGGESTED_PX)}
    row = {"box_size_p50_px": _box_px(samples)}
    for name, d in dets.items():
        r = _score(d, samples, op, border)
        r.pop("detect_ms")
        row[name] = r
    ms: dict[str, list[float]] = {name: [] for name in dets}
    for _ in range(3):
        for s in samples:
            for name, d in dets.items():
                t = time.perf_counter()
                d.detect(s.image)
                ms[name].append((time.perf_counter() - t) * 1e3)
    for name, d in dets.items():
        row[name]["detect_ms"] = percentiles(ms[name], digits=2)
        d.close()
    return row


def main(argv: list[str] | None = None) -> int:
    a = scale_parser(__doc__, OUT).parse_args(argv)
    op, card_scale = card_threshold_and_scale(a.model)
    report: dict = {
        "note": ("AP50 over boxes >= 0.05, P / R at the card's threshold; 'card': the "
                 "card's automatic scale (enlarge_below_px from the card), beside "
                 f"enlarge_below_px {SUGGESTED_PX:g}. detect() ms: 2 threads, the two "
                 "detectors alternating frame by frame, 3 passes."),
        "model": str(a.model or "shipped"), "card_scale": card_scale,
        "score_threshold": op, "suggested_px": SUGGESTED_PX,
        "loadavg_start": load_average()}
    report["tuning"] = tuning(a.model, a.frames, op)
    check = {}
    for name, ss in ((f"simulated {k:g}x", _sim(k, a.frames, CHECK_SEED)) for k in (1.0, 1.35)):
        check[name] = side_by_side(a.model, ss, op, False)
        print(f"check {name}: {check[name]}", flush=True)
    check["simulated 1x, packed"] = side_by_side(
        a.model, _sim(1.0, a.frames, CHECK_SEED, **PACKED), op, False)
    print(f"check packed: {check['simulated 1x, packed']}", flush=True)
    report["check"] = {"frames": f"{a.frames} simulated 512x512 frames per row, seed "
                                 f"{CHECK_SEED} (packed: {PACKED})", **check}
    if a.real is not None:
        from inscope.detector.datasets import load_dataset

        report["real"] = {"data": a.real.name,
                          **side_by_side(a.model, list(load_dataset(a.real)), op, True)}
        print(f"real: {report['real']}", flush=True)
    report["loadavg_end"] = load_average()
    write_json(a.out, report)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
