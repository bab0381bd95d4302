"""Empty and sparse fields: does the detector find nuclei that are not there?

The shipped model was trained on crops of 6-50 % nuclei cover; the percentile stretch of
its input maps whatever a frame holds to the range of a nucleus, so a field with no
nuclei - noise and a few specks of debris - is stretched until they look like cells.
This scores the same network side by side with the box check of
:mod:`inscope.detector.signal` off and at several ``min_signal_sigma`` values, on
simulated 512 x 512 frames (0.65 um/px, the simulator's default debris, 300 specks per
mm^2) from empty to packed, and on dim packed frames (few photons), where the check could
cost real nuclei:

* ``recall_inside``: nuclei wholly inside the frame matched at IoU 0.5 by a box at the
  card's threshold;
* ``false_per_frame``: boxes at the threshold that match no nucleus (debris is never
  labelled), per frame;
* ``ap50``: AP50 over all boxes >= 0.05, objects less than a quarter in view ignored.

Rule (the card's value comes from it): among the values tried, the one with the fewest
false boxes on empty fields that loses no more than 0.005 recall in any condition
against the check off. A first run tried 0.5, 1 and 2 under a looser rule (recall pooled
over all conditions): every value lost 2-46 % of the nuclei of the dim frames (their
dimmest nuclei have box medians under one noise sigma above the background), so none
qualified; 0 and 0.25 were added, and the rule made per condition when 0.25 passed the
pooled rule while losing 0.011 on the dimmest frames. Seeds 960000 on: held out from
training (< 100000) and from every other evaluation.

Run::

    python -m benchmarks.sparse_fields            # ~1 min on 2 cores
    python -m benchmarks.sparse_fields --model OTHER.onnx --out OTHER.json
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from benchmarks._common import load_average, percentiles, write_json

OUT = Path("benchmarks/results/sparse_fields.json")
SEED = 960000
#: (label, nuclei per mm^2, SimConfig overrides)
CONDITIONS: tuple[tuple[str, float, dict], ...] = (
    ("empty", 0.0, {}),
    ("10 per mm2", 10.0, {}),
    ("30 per mm2", 30.0, {}),
    ("100 per mm2", 100.0, {}),
    ("700 per mm2 (default)", 700.0, {}),
    # packed wall to wall: where the background estimate could land on dim nuclei
    ("4000 per mm2, packed", 4000.0, {"cluster_fraction": 0.6}),
    ("700 per mm2, dim (5 photons/ms)", 700.0, {"signal_photons_per_ms": 5.0}),
    ("700 per mm2, very dim (2 photons/ms)", 700.0, {"signal_photons_per_ms": 2.0}),
)
VALUES: tuple[float | None, ...] = (None, 0.0, 0.25, 0.5, 1.0, 2.0)


def frames(density: float, extra: dict, n: int, seed: int):
    """*n* simulated frames (pixels, truth boxes, difficult flags)."""
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
    from inscope.detector.datasets import MIN_VISIBLE_FRACTION

    out = []
    for i in range(n):
        scope = SimulatedMicroscope(SimConfig(seed=seed + i, realtime=False,
                                              camera_process=False,
                                              density_per_mm2=density, **extra))
        f = scope.snap()
        scope.close()
        t = np.asarray(f.truth, float).reshape(-1, 4)
        h, w = f.pixels.shape
        vis = f.metadata.get("truth_visible_fraction")
        hard = (np.asarray(vis, float) < MIN_VISIBLE_FRACTION if vis is not None
                else np.zeros(len(t), bool))
        inside = (t[:, 0] > 0) & (t[:, 1] > 0) & (t[:, 2] < w - 1) & (t[:, 3] < h - 1)
        out.append((f.pixels, t, hard, inside))
    return out


def score(det, data, thr: float) -> dict:
    from inscope.detector.metrics import evaluate, iou_matrix

    found = n_inside = false = 0
    preds, truths, hards = [], [], []
    for pixels, t, hard, inside in data:
        d = det.detect(pixels)
        preds.append((d.boxes, d.scores))
        truths.append(t)
        hards.append(hard)
        b = d.boxes[d.scores >= thr]
        iou = iou_matrix(t, b) if len(t) and len(b) else np.zeros((len(t), len(b)))
        hit = iou.max(1) >= 0.5 if iou.size else np.zeros(len(t), bool)
        matched = iou.max(0) >= 0.5 if iou.size else np.zeros(len(b), bool)
        found += int((hit & inside).sum())
        n_inside += int(inside.sum())
        false += int((~matched).sum())
    r = evaluate(preds, truths, difficult=hards) if sum(len(t) for t in truths) else None
    return {"nuclei_inside": n_inside,
            "recall_inside": round(found / n_inside, 4) if n_inside else None,
            "false_per_frame": round(false / len(data), 3),
            "ap50": round(r.ap50, 4) if r is not None else None}


def timing(repeats: int = 30) -> dict:
    """has_signal's cost on a packed frame's boxes, 512^2 and 2048^2 (tiled)."""
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
    from inscope.detector.onnx_detector import OnnxDetector
    from inscope.detector.signal import has_signal

    scope = SimulatedMicroscope(SimConfig(seed=SEED - 1, realtime=False, camera_process=False))
    img = scope.snap().pixels
    scope.close()
    det = OnnxDetector(provider="cpu", warmup=False, score_threshold=0.05)
    out = {}
    for reps in (1, 4):
        x = np.tile(img, (reps, reps))
        boxes = det.detect(x).boxes
        ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            has_signal(x, boxes, 1.0)
            ms.append((time.perf_counter() - t0) * 1e3)
        out[f"{x.shape[0]}x{x.shape[1]}"] = {"boxes": len(boxes), **percentiles(ms, digits=3)}
    return out


def main(argv: list[str] | None = None) -> int:
    from inscope.detector.onnx_detector import OnnxDetector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24, help="frames per condition")
    ap.add_argument("--model", type=Path, default=None,
                    help="an ONNX model with its card (default: the shipped one)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    det = OnnxDetector(args.model, provider="cpu", warmup=False, score_threshold=0.05)
    card = det.card
    shipped = card.decoding.get("min_signal_sigma")
    thr = float(card.decoding.get("score_threshold", 0.3))
    base = copy.deepcopy(card.decoding)
    rows: dict[str, dict] = {}
    for c, (label, density, extra) in enumerate(CONDITIONS):
        data = frames(density, extra, args.frames, SEED + 1000 * c)
        rows[label] = {}
        for k in VALUES:
            card.decoding = {**base, "min_signal_sigma": k}
            if k is None:
                card.decoding.pop("min_signal_sigma")
            rows[label][str(k)] = score(det, data, thr)
        print(label, {k: (v["recall_inside"], v["false_per_frame"])
                      for k, v in rows[label].items()}, flush=True)
    card.decoding = base

    def pooled(k: str) -> float:
        num = sum(rows[lab][k]["recall_inside"] * rows[lab][k]["nuclei_inside"]
                  for lab in rows if rows[lab][k]["nuclei_inside"])
        den = sum(rows[lab][k]["nuclei_inside"] for lab in rows)
        return num / den

    def loss(k: str) -> float:  # the largest recall lost in any condition
        return max(rows[lab]["None"]["recall_inside"] - rows[lab][k]["recall_inside"]
                   for lab in rows if rows[lab][k]["nuclei_inside"])

    ok = [str(k) for k in VALUES if k is not None and loss(str(k)) <= 0.005]
    best = min(ok, key=lambda k: (rows["empty"][k]["false_per_frame"], float(k)), default=None)
    report = {
        "note": __doc__.split("\n\n")[1].replace("\n", " "),
        "model": det.card.name, "model_sha256": det.card.sha256,
        "frames_per_condition": args.frames, "seed": SEED, "score_threshold": thr,
        "shipped_min_signal_sigma": shipped,
        "conditions": rows,
        "pooled_recall_inside": {str(k): round(pooled(str(k)), 4) for k in VALUES},
        "largest_recall_loss": {str(k): round(loss(str(k)), 4) for k in VALUES if k is not None},
        "rule": "fewest false boxes on empty fields, no condition losing more than 0.005 "
                "recall against the check off",
        "chosen": best,
        "has_signal_ms": timing(),
        "loadavg": load_average(),
    }
    write_json(args.out, report)
    print(f"chosen min_signal_sigma {best} (shipped {shipped}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
