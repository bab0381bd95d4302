"""Trial: merge two detection boxes that lie on one nucleus (after decoding).

Issue 18 lists elongated and mitotic nuclei split into several boxes; on the HeLa frames
a split nucleus costs a miss and two false positives (the model card's errors table:
144 fragments, 152 mislocated boxes). This scores the shipped network's own boxes with
and without a post-decoding merge, side by side on the same predictions: two boxes at
the card's threshold are replaced by the box round both when they overlap by at least
``overlap`` of the smaller box, the foreground blob joins their centres without a neck
narrower than ``neck`` of its width there (``inscope.control.refine.one_object``, the
rule find-and-image uses for duplicates) and, with ``ridge``, the line between the
centres is nowhere brighter than ``ridge`` times the brighter centre (fluorescence adds
up where two nuclei lie over each other). AP50 over all boxes >= 0.05; precision, recall
and counts at the card's threshold; on the real frames unmatched border boxes left out.
Simulated frames: seed 990000 on (held out from training and every other evaluation).

A trial, not the shipped decoding: the merge is written here in Python (one blob and
distance transform per candidate pair) and its cost is reported as it is.

Run::

    python -m benchmarks.merge_split --real STACK.npz    # ~3 min on 2 cores
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import load_average, percentiles, scoring_setup, write_json

OUT = Path(__file__).parent / "results" / "merge_split.json"
SEED = 990000
#: (overlap, neck, ridge or None) - the first is find-and-image's own duplicate rule
RULES = ((0.3, 0.5, None), (0.3, 0.9, None), (0.3, 0.9, 1.2), (0.4, 0.9, None))


def _ridge(pixels: np.ndarray, p: np.ndarray, q: np.ndarray, ratio: float) -> bool:
    """The middle of the segment p-q brighter (above the frame's background) than
    *ratio* times the brighter of its ends, smoothed over 1.5 px."""
    t = np.linspace(0.0, 1.0, 21)
    pts = p[None] + t[:, None] * (q - p)[None]
    h, w = pixels.shape
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 4, 0)
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 5
    x1, y1 = min(x1, w), min(y1, h)
    crop = cv2.GaussianBlur(np.asarray(pixels[y0:y1, x0:x1], np.float32), (0, 0), 1.5)
    bg = float(np.percentile(pixels[::4, ::4], 5))
    v = cv2.remap(crop, (pts[:, 0] - x0).astype(np.float32)[None],
                  (pts[:, 1] - y0).astype(np.float32)[None], cv2.INTER_LINEAR)[0] - bg
    ends = max(float(v[:3].mean()), float(v[-3:].mean()))
    return ends > 0 and float(v[5:16].max()) > ratio * ends


def merge(pixels: np.ndarray, boxes: np.ndarray, scores: np.ndarray, thr: float,
          overlap: float, neck: float, ridge: float | None
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """*boxes* with pairs on one nucleus merged (both at or above *thr*, the higher
    score kept), and how many merges were made."""
    from inscope.control.refine import one_object

    b, s = boxes.astype(float).copy(), scores.copy()
    alive = np.ones(len(b), bool)
    order = np.argsort(-s)
    merged, changed = 0, True
    while changed:  # a merged box may now overlap a third
        changed = False
        idx = [i for i in order if alive[i] and s[i] >= thr]
        for n, i in enumerate(idx):
            for j in idx[n + 1:]:
                if not (alive[i] and alive[j]):
                    continue
                iw = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
                ih = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
                small = min((b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]),
                            (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]))
                if iw <= 0 or ih <= 0 or iw * ih < overlap * small:
                    continue
                ci, cj = (b[i, :2] + b[i, 2:]) / 2, (b[j, :2] + b[j, 2:]) / 2
                if not one_object(pixels, ci, cj, b[[i, j]], neck_ratio=neck):
                    continue
                if ridge is not None and _ridge(pixels, ci, cj, ridge):
                    continue
                b[i] = np.concatenate([np.minimum(b[i, :2], b[j, :2]),
                                       np.maximum(b[i, 2:], b[j, 2:])])
                alive[j] = False
                merged += 1
                changed = True
    return b[alive].astype(np.float32), s[alive], merged


def main(argv: list[str] | None = None) -> int:
    from inscope.detector.metrics import evaluate
    args, det, thr, sets = scoring_setup(argv, __doc__, OUT, SEED)
    results: dict[str, dict] = {}
    for name, samples, border in sets:
        preds = []
        for smp in samples:
            d = det.detect(smp.image)
            preds.append((d.boxes, d.scores))
        rows = {}
        for rule in (None, *RULES):
            got, merges, ms = preds, 0, []
            if rule is not None:
                got = []
                for smp, (b, s) in zip(samples, preds, strict=True):
                    t0 = time.perf_counter()
                    mb, ms_, k = merge(np.asarray(smp.image), b, s, thr, *rule)
                    ms.append((time.perf_counter() - t0) * 1e3)
                    got.append((mb, ms_))
                    merges += k
            r = evaluate(got, [x.boxes for x in samples], score_threshold=thr,
                         ignore_border_fp=border, shapes=[x.image.shape for x in samples],
                         difficult=[x.difficult for x in samples])
            label = ("no merge" if rule is None else
                     f"overlap {rule[0]}, neck {rule[1]}"
                     + (f", ridge {rule[2]}" if rule[2] is not None else ""))
            rows[label] = {"ap50": round(r.ap50, 4), "map50_95": round(r.map50_95, 4),
                           "precision": round(r.precision, 4), "recall": round(r.recall, 4),
                           "tp": r.tp, "fp": r.fp, "fn": r.fn, "merges": merges,
                           "merge_ms": percentiles(ms, digits=2)}
            print(name, label, rows[label], flush=True)
        results[name] = {"frames": len(samples),
                         "frame_shape": list(samples[0].image.shape), "rules": rows}
    report = {
        "note": __doc__.split("\n\n")[1].replace("\n", " "),
        "score_threshold": thr, "seed": SEED, "results": results,
        "loadavg": load_average(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
