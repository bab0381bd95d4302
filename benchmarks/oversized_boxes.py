"""How many annotated nuclei a model misses by boxing them too large, and how faint they are.

The model card's errors table counts *mislocated* misses on the HeLa frames: an annotated
nucleus that a box overlaps by IoU 0.1-0.5 but none matches. A look at them showed two
kinds: a nucleus split into two boxes, and a faint nucleus under one box far larger than
it. This counts the second kind for each model given (one box over the nucleus with IoU
0.1-0.5 and at least *--area* times its area, at the model's own threshold) and how bright
those nuclei are: the median of their annotated box above the frame's background (5th
percentile) as a fraction of the same for the nuclei the model matched. And how large they
are in the image: the blob at half their brightness (90th percentile of the annotated
box above the background, the frame smoothed over 1.5 px) that holds the annotation's
centre, beside the annotated and the predicted box (median width and height, px) - the
annotations are the challenge's automatic segmentation, which may cut a faint nucleus
short.

Run::

    python -m benchmarks.oversized_boxes --real STACK.npz [name=MODEL.onnx ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import named_model, write_json

OUT = Path(__file__).parent / "results" / "oversized_boxes.json"


def _brightness(img: np.ndarray, box: np.ndarray, bg: float) -> float:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = img[max(y0, 0):max(y1, 0) + 1, max(x0, 0):max(x1, 0) + 1]
    return float(np.median(crop)) - bg if crop.size else 0.0


def _half_max_blob(img: np.ndarray, gt: np.ndarray, around: np.ndarray, bg: float
                   ) -> tuple[int, int] | None:
    """Width and height (px) of the blob of *img* (smoothed) above half the annotated
    nucleus' brightness that holds its box's centre, searched in *around* padded by 6 px."""
    x0, y0, x1, y1 = (int(round(v)) for v in around)
    a, c = max(x0 - 6, 0), max(y0 - 6, 0)
    crop = img[c:y1 + 7, a:x1 + 7]
    gx0, gy0, gx1, gy1 = (int(round(v)) for v in gt)
    peak = float(np.percentile(img[max(gy0, 0):gy1 + 1, max(gx0, 0):gx1 + 1], 90)) - bg
    if peak <= 0 or not crop.size:
        return None
    n, lab, st, _ = cv2.connectedComponentsWithStats((crop - bg > 0.5 * peak).astype(np.uint8))
    cy = min(max((gy0 + gy1) // 2 - c, 0), lab.shape[0] - 1)
    cx = min(max((gx0 + gx1) // 2 - a, 0), lab.shape[1] - 1)
    k = int(lab[cy, cx])
    return (int(st[k, 2]), int(st[k, 3])) if k else None


def count(model: Path | None, samples, area: float) -> dict:
    """Oversized-box misses of *model* on *samples* (see the module notes)."""
    from inscope.detector.metrics import iou_matrix, match
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(model, provider="cpu", warmup=False)
    thr = float(det.card.decoding.get("score_threshold", 0.3))
    n, faint, matched_b, sizes, matched_sizes = 0, [], [], [], []
    for s in samples:
        d = det.detect(s.image)
        b, gt = d.boxes, np.asarray(s.boxes, np.float32).reshape(-1, 4)
        m = match(b, d.scores, gt, 0.5)
        hit = np.zeros(len(gt), bool)
        hit[m[m >= 0]] = True
        iou = iou_matrix(b, gt)
        img = np.asarray(s.image, np.float32)
        bg = float(np.percentile(img[::4, ::4], 5))
        smooth = cv2.GaussianBlur(img, (0, 0), 1.5)
        g_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
        b_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        for i, j in enumerate(m):
            if j < 0:
                continue
            matched_b.append(_brightness(img, gt[j], bg))
            blob = _half_max_blob(smooth, gt[j], b[i], bg)
            if blob is not None:
                matched_sizes.append((gt[j, 2] - gt[j, 0], gt[j, 3] - gt[j, 1],
                                      b[i, 2] - b[i, 0], b[i, 3] - b[i, 1], *blob))
        for j in np.flatnonzero(~hit):
            near = np.flatnonzero((iou[:, j] > 0.1) & (iou[:, j] < 0.5))
            if len(near) == 1 and b_area[near[0]] >= area * g_area[j]:
                n += 1
                faint.append(_brightness(img, gt[j], bg))
                blob = _half_max_blob(smooth, gt[j], b[near[0]], bg)
                if blob is not None:
                    bx = b[near[0]]
                    sizes.append((gt[j, 2] - gt[j, 0], gt[j, 3] - gt[j, 1],
                                  bx[2] - bx[0], bx[3] - bx[1], *blob))
    det.close()
    ref = float(np.median(matched_b)) if matched_b else float("nan")
    def medians(rows: list) -> dict:
        z = np.asarray(rows, float).reshape(-1, 6)
        med = np.median(z, axis=0).round(1).tolist() if len(z) else [None] * 6
        return {"annotated": med[0:2], "predicted": med[2:4], "half_max_blob": med[4:6],
                "measured": len(z)}

    return {"threshold": thr, "oversized_box_misses": n,
            "median_width_height_px": medians(sizes),
            "matched_nuclei_median_width_height_px": medians(matched_sizes),
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
