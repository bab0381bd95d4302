"""How many annotated nuclei a model misses by boxing them too large, and how faint they are.

The model card's errors table counts *mislocated* misses on the HeLa frames: an annotated
nucleus that a box overlaps by IoU 0.1-0.5 but none matches. A look at them showed two
kinds: a nucleus split into two boxes, and a faint nucleus under one box far larger than
it. This counts the second kind for each model given (one box over the nucleus with IoU
0.1-0.5 and at least *--area* times its area, at the model's own threshold) and how bright
those nuclei are: the median of their annotated box above the frame's background (5th
percentile) as a fraction of the same for the nuclei the model matched.

Run::

    python -m benchmarks.oversized_boxes --real STACK.npz [name=MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks._common import named_model, write_json

OUT = Path(__file__).parent / "results" / "oversized_boxes.json"


def _brightness(img: np.ndarray, box: np.ndarray, bg: float) -> float:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = img[max(y0, 0):max(y1, 0) + 1, max(x0, 0):max(x1, 0) + 1]
    return float(np.median(crop)) - bg if crop.size else 0.0


def count(model: Path | None, samples, area: float) -> dict:
    """Oversized-box misses of *model* on *samples* (see the module notes)."""
    from inscope.detector.metrics import iou_matrix, match
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(model, provider="cpu", warmup=False)
    thr = float(det.card.decoding.get("score_threshold", 0.3))
    n, faint, matched_b = 0, [], []
    for s in samples:
        d = det.detect(s.image)
        b, gt = d.boxes, np.asarray(s.boxes, np.float32).reshape(-1, 4)
        m = match(b, d.scores, gt, 0.5)
        hit = np.zeros(len(gt), bool)
        hit[m[m >= 0]] = True
        iou = iou_matrix(b, gt)
        img = np.asarray(s.image, np.float32)
        bg = float(np.percentile(img[::4, ::4], 5))
        g_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
        b_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        for j in np.flatnonzero(hit):
            matched_b.append(_brightness(img, gt[j], bg))
        for j in np.flatnonzero(~hit):
            near = np.flatnonzero((iou[:, j] > 0.1) & (iou[:, j] < 0.5))
            if len(near) == 1 and b_area[near[0]] >= area * g_area[j]:
                n += 1
                faint.append(_brightness(img, gt[j], bg))
    det.close()
    ref = float(np.median(matched_b)) if matched_b else float("nan")
    return {"threshold": thr, "oversized_box_misses": n,
            "their_brightness_vs_matched_median": (
                [round(float(q) / ref, 3) for q in np.percentile(faint, [10, 50, 90])]
                if faint and ref > 0 else None)}


def main(argv: list[str] | None = None) -> int:
    from inscope.detector.datasets import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=named_model,
                    help="name=MODEL.onnx (default: the shipped model)")
    ap.add_argument("--real", type=Path, required=True, help="annotated npz stack")
    ap.add_argument("--area", type=float, default=2.0,
                    help="a box at least this many times the nucleus' area is oversized")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    samples = list(load_dataset(args.real))
    models = args.models or [("shipped", None)]
    rows = {}
    for name, path in models:
        rows[name] = count(path, samples, args.area)
        print(name, rows[name], flush=True)
    write_json(args.out, {"note": __doc__.split("\n\n")[1].replace("\n", " "),
                          "real": args.real.name, "frames": len(samples), "area": args.area,
                          "models": {k: {"file": None if p is None else Path(p).name, **rows[k]}
                                     for k, p in models}})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
