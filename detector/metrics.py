"""Detection metrics: IoU, greedy matching, AP50 (VOC all-point), mAP 0.5:0.95, P/R/F1.

AP follows the PASCAL VOC 2010+ definition used by Waithe et al. (2020): predictions of all
images are pooled and sorted by score, the precision envelope is made monotone and
integrated over every recall step ("all-point interpolation"). mAP 0.5:0.95 averages that
AP over the COCO IoU thresholds 0.50, 0.55, ..., 0.95 (COCO itself samples 101 recall
points; the all-point integral differs from it by well under 0.01 on these data).

Matching is class-agnostic (nuclei are one class); pass one class's boxes at a time for
per-class figures.

*Difficult* ground truth (VOC's ``<difficult>``, COCO's ``iscrowd``) is neither demanded
nor punished: it is left out of the object count, and a prediction that no ordinary box
took but that overlaps a difficult one by the IoU threshold is dropped rather than counted
as a false positive. As in the VOC devkit and for COCO's crowd regions, a difficult box
excuses every such prediction (a second box on it is not a duplicate), and a prediction
an ordinary box took never uses it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

COCO_IOUS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in *a* (N, 4) with every box in *b* (M, 4) -> (N, M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = aa[:, None] + ab[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou_threshold: float = 0.5,
          iou: np.ndarray | None = None) -> np.ndarray:
    """Greedy matching by descending score (VOC/COCO rule).

    Each prediction, best score first, takes the still-free ground-truth box it overlaps
    most, if that IoU >= *iou_threshold*. A second prediction on an already taken box is a
    false positive (duplicate).

    Returns
    -------
    (N,) int array: index of the matched ground-truth box per prediction, -1 if none.
    """
    n = len(pred)
    out = np.full(n, -1, np.int64)
    if n == 0 or len(gt) == 0:
        return out
    m = iou_matrix(pred, gt) if iou is None else iou
    taken = np.zeros(len(gt), bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):  # loop over boxes, not pixels
        row = np.where(taken, -1.0, m[i])
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            out[i] = j
            taken[j] = True
    return out


def touches_border(boxes: np.ndarray, shape: tuple[int, int], margin: float = 2.0
                   ) -> np.ndarray:
    """Mask of boxes within *margin* pixels of the image border (shape = (H, W))."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = shape[:2]
    return ((b[:, 0] <= margin) | (b[:, 1] <= margin) | (b[:, 2] >= w - margin)
            | (b[:, 3] >= h - margin))


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """VOC all-point interpolated AP from pooled predictions.

    Parameters
    ----------
    tp
        (N,) bool, whether each prediction is a true positive.
    scores
        (N,) their scores (sorted here, descending).
    n_gt
        Number of ground-truth objects (denominator of recall).
    """
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    t = np.asarray(tp, bool)[order]
    ctp = np.cumsum(t)
    cfp = np.cumsum(~t)
    rec = ctp / n_gt
    prec = ctp / np.maximum(ctp + cfp, 1)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def pr_curve(tp: np.ndarray, scores: np.ndarray, n_gt: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision and score thresholds along the ranked predictions."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    t = np.asarray(tp, bool)[order]
    ctp = np.cumsum(t)
    rec = ctp / max(n_gt, 1)
    prec = ctp / np.arange(1, len(t) + 1)
    return rec, prec, np.asarray(scores)[order]


@dataclass
class ImageResult:
    """Per-image figures at the operating threshold and the evaluation IoU."""

    name: str
    n_gt: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    ignored: int
    precision: float
    recall: float
    f1: float
    ap50: float


@dataclass
class EvalResult:
    """Pooled figures over all images; ``per_image`` holds each image's own."""

    ap50: float
    map50_95: float
    ap_at: dict[str, float]
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    ignored: int
    n_images: int
    n_gt: int
    iou_threshold: float
    score_threshold: float
    ignore_border_fp: bool
    n_difficult: int = 0
    per_image: list[ImageResult] = field(default_factory=list)
    pr: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not curves:
            d.pop("pr")
        return d

    def summary(self) -> str:
        return (f"AP50 {self.ap50:.3f}  mAP50-95 {self.map50_95:.3f}  "
                f"P {self.precision:.3f}  R {self.recall:.3f}  F1 {self.f1:.3f}  "
                f"TP {self.tp}  FP {self.fp}  FN {self.fn}"
                + (f"  (predictions ignored: {self.ignored})"
                   if self.ignore_border_fp or self.n_difficult else "")
                + f"  [{self.n_images} images, {self.n_gt} objects"
                + (f" + {self.n_difficult} difficult (ignored)" if self.n_difficult else "")
                + f", score >= "
                  f"{self.score_threshold:g}, IoU {self.iou_threshold:g}]")


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _on_difficult(iou_hard: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Which predictions overlap some difficult box by *iou_threshold* (rows of the
    predictions x difficult-boxes IoU matrix; none without difficult boxes)."""
    if iou_hard.shape[1] == 0:
        return np.zeros(len(iou_hard), bool)
    return iou_hard.max(axis=1) >= iou_threshold


def evaluate(preds: Sequence[tuple[np.ndarray, np.ndarray]], gts: Sequence[np.ndarray], *,
             iou_threshold: float = 0.5, score_threshold: float = 0.0,
             ignore_border_fp: bool = False, shapes: Sequence[tuple[int, int]] | None = None,
             border_margin: float = 2.0, names: Sequence[str] | None = None,
             difficult: Sequence[np.ndarray] | None = None) -> EvalResult:
    """Score predictions against ground truth over a set of images.

    Parameters
    ----------
    preds
        Per image, ``(boxes (N, 4), scores (N,))``: *all* predictions (a low detector
        threshold gives a complete PR curve for AP); ``score_threshold`` sets the
        operating point for precision / recall / F1 / counts only.
    gts
        Per image, ground-truth boxes (M, 4).
    ignore_border_fp
        Unmatched predictions whose box touches the border (within *border_margin*
        pixels) are dropped, not counted as FP: for data whose border objects are
        unlabelled. Needs *shapes* ((H, W) per image).
    difficult
        Per image, (M,) bool flags of ground truth to ignore (see the module docstring);
        ``None``: every box counts.
    """
    if len(preds) != len(gts):
        raise ValueError(f"Need one prediction set per image: {len(preds)} predictions, "
                         f"{len(gts)} ground truths.")
    if ignore_border_fp and shapes is None:
        raise ValueError("ignore_border_fp needs the image shapes (shapes=[(H, W), ...]).")
    if difficult is not None and len(difficult) != len(gts):
        raise ValueError(f"Need one 'difficult' array per image: {len(difficult)} for "
                         f"{len(gts)} images.")
    names = list(names) if names is not None else [f"image{i}" for i in range(len(gts))]
    ious = [0.5, *[t for t in COCO_IOUS if t != 0.5]]
    if iou_threshold not in ious:
        ious.append(float(iou_threshold))
    # pooled (tp flags, scores) per IoU threshold
    pooled: dict[float, tuple[list, list]] = {t: ([], []) for t in ious}
    per_image: list[ImageResult] = []
    n_gt_total = 0
    n_hard_total = 0
    tot = np.zeros(4, np.int64)  # tp fp fn ignored at (iou_threshold, score_threshold)
    for k, ((pb, ps), gb) in enumerate(zip(preds, gts, strict=True)):
        pb = np.asarray(pb, np.float64).reshape(-1, 4)
        ps = np.asarray(ps, np.float64).reshape(-1)
        gb = np.asarray(gb, np.float64).reshape(-1, 4)
        hard = (np.zeros(len(gb), bool) if difficult is None
                else np.asarray(difficult[k], bool).reshape(-1))
        if len(hard) != len(gb):
            raise ValueError(f"{names[k]}: {len(gb)} boxes but {len(hard)} 'difficult' flags.")
        gb, hb = gb[~hard], gb[hard]
        n_gt_total += len(gb)
        n_hard_total += len(hb)
        if ignore_border_fp:
            assert shapes is not None  # checked above: ignore_border_fp needs shapes
            border = touches_border(pb, shapes[k], border_margin)
        else:
            border = np.zeros(len(pb), bool)
        m = iou_matrix(pb, gb)
        mh = iou_matrix(pb, hb)
        img_ap = float("nan")
        for t in ious:
            assigned = match(pb, ps, gb, t, m)
            # unmatched predictions on difficult objects are dropped, not false positives
            on_hard = _on_difficult(mh, t) & (assigned < 0)
            ignore = border | on_hard
            keep = (assigned >= 0) | ~ignore
            pooled[t][0].append(assigned[keep] >= 0)
            pooled[t][1].append(ps[keep])
            if t == 0.5:
                img_ap = average_precision(assigned[keep] >= 0, ps[keep], len(gb))
            if t == iou_threshold:
                op = ps >= score_threshold
                a_op = match(pb[op], ps[op], gb, t, m[op])
                h_op = _on_difficult(mh[op], t) & (a_op < 0)
                tp = int((a_op >= 0).sum())
                ign = int(((a_op < 0) & (border[op] | h_op)).sum())
                fp = int(op.sum()) - tp - ign
                fn = len(gb) - tp
                p, r, f = _prf(tp, fp, fn)
                tot += (tp, fp, fn, ign)
                res = (tp, fp, fn, ign, p, r, f, int(op.sum()))
        tp, fp, fn, ign, p, r, f, npred = res
        per_image.append(ImageResult(names[k], len(gb), npred, tp, fp, fn, ign, p, r, f,
                                     img_ap))
    ap_at = {}
    for t in ious:
        tps = np.concatenate(pooled[t][0]) if pooled[t][0] else np.zeros(0, bool)
        scs = np.concatenate(pooled[t][1]) if pooled[t][1] else np.zeros(0)
        ap_at[f"{t:.2f}"] = average_precision(tps, scs, n_gt_total)
    tps = np.concatenate(pooled[0.5][0]) if pooled[0.5][0] else np.zeros(0, bool)
    scs = np.concatenate(pooled[0.5][1]) if pooled[0.5][1] else np.zeros(0)
    rec, prec, thr = pr_curve(tps, scs, n_gt_total)
    tp, fp, fn, ign = (int(v) for v in tot)
    p, r, f = _prf(tp, fp, fn)
    return EvalResult(
        ap50=ap_at["0.50"],
        map50_95=float(np.mean([ap_at[f"{t:.2f}"] for t in COCO_IOUS])),
        ap_at=ap_at, precision=p, recall=r, f1=f, tp=tp, fp=fp, fn=fn, ignored=ign,
        n_images=len(gts), n_gt=n_gt_total, iou_threshold=float(iou_threshold),
        score_threshold=float(score_threshold), ignore_border_fp=ignore_border_fp,
        n_difficult=n_hard_total, per_image=per_image,
        pr={"recall": rec.tolist(), "precision": prec.tolist(), "score": thr.tolist()})
