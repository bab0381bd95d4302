"""Score calibration: make a detection score mean the same probability on every image.

A CenterNet heatmap peak is trained as a focal-loss target, not as a probability: a
score of 0.4 may be right 90 % of the time on one kind of image and 60 % on another, and
true nuclei that score near the threshold flicker in and out as the image shifts. Platt
scaling (``sigmoid(a * logit(s) + b)``; temperature scaling is the special case
``b = 0``) fitted on simulated frames the model never saw turns the raw peak value into
"probability that this box matches a real nucleus at IoU 0.5"; the card's
``decoding.calibration`` holds (a, b) and :func:`inscope.detector.decode.decode_centernet`
applies it. The mapping is monotonic: rankings, and so AP, do not change.

    python -m inscope.detector.calibration MODEL.onnx [--frames 16] [--seed 950000]

fits (a, b) on simulated frames (seeds >= 950000: apart from the evaluation frames at
900000), sets the card's default threshold to the best-F1 calibrated score on the same
frames, and writes both into the card. It also measures where the network puts box
centres: the median error of the correct detections at that threshold, and when it is
0.1 px or more on either axis, stores it as ``decoding.centre_shift_px`` for decoding to
take off (a geometric calibration beside the score one).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inscope.detector.metrics import match, touches_border

#: simulated frames for fitting the calibration: apart from the evaluation frames (900000)
CALIBRATION_SEED = 950000
#: detections below this raw / calibrated score are not collected (as for AP)
MIN_SCORE = 0.05
#: a measured centre error at least this large (px, either axis) goes into the card
SHIFT_MIN_PX = 0.1


@dataclass
class ScoredDetections:
    """Every detection's score and whether it matched an annotated object (IoU >= 0.5).

    Unmatched detections that match a *difficult* object, or (with ``ignore_border_fp``)
    touch the image border, are left out: they are neither right nor wrong.
    ``centre_error`` holds, for each correct detection in order, its box centre minus
    its object's (x, y, px).
    """

    scores: np.ndarray
    correct: np.ndarray
    n_gt: int
    centre_error: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def collect(detector, samples: Sequence, *, ignore_border_fp: bool = False,
            raw: bool = False, iou: float = 0.5) -> ScoredDetections:
    """Run *detector* (an :class:`~inscope.detector.onnx_detector.OnnxDetector`) on
    *samples* and label each detection >= :data:`MIN_SCORE` right or wrong.

    With *raw*, the card's calibration and centre shift are switched off for the run (to
    fit new ones).
    """
    keep_thr, keep_dec = detector.score_threshold, detector.card.decoding
    dec = dict(keep_dec)
    if raw:
        dec.pop("calibration", None)
        dec.pop("centre_shift_px", None)
    detector.card.decoding = dec
    detector.score_threshold = MIN_SCORE
    scores, correct, errors, n_gt = [], [], [], 0
    try:
        for s in samples:
            d = detector.detect(s.image)
            gt = np.asarray(s.boxes, np.float32).reshape(-1, 4)
            diff = (np.zeros(len(gt), bool) if s.difficult is None
                    else np.asarray(s.difficult, bool))
            m = match(d.boxes, d.scores, gt, iou)
            ok = m >= 0
            drop = np.zeros(len(m), bool)
            drop[ok] = diff[m[ok]]
            if ignore_border_fp:
                drop |= ~ok & touches_border(d.boxes, s.image.shape)
            scores.append(d.scores[~drop])
            correct.append(ok[~drop])
            hit = ok & ~drop
            errors.append(_centres(d.boxes[hit]) - _centres(gt[m[hit]]))
            n_gt += int((~diff).sum())
    finally:
        detector.score_threshold, detector.card.decoding = keep_thr, keep_dec
    return ScoredDetections(np.concatenate(scores) if scores else np.zeros(0),
                            np.concatenate(correct) if correct else np.zeros(0, bool), n_gt,
                            np.concatenate(errors) if errors else np.zeros((0, 2)))


def _centres(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)


def centre_shift(sd: ScoredDetections, threshold: float) -> tuple[float, float]:
    """Median centre error (x, y) px of the correct detections scoring >= *threshold*.

    A network can place every centre a fraction of a pixel off the same way (a training
    set whose boxes and pixels disagree by half a pixel teaches exactly that); the median
    over many nuclei measures it without the pull of the few badly placed ones.
    """
    ok = sd.scores[sd.correct] >= threshold
    e = sd.centre_error[ok]
    if not len(e):
        return (0.0, 0.0)
    return (float(np.median(e[:, 0])), float(np.median(e[:, 1])))


def fit_platt(scores: np.ndarray, correct: np.ndarray, iters: int = 100) -> tuple[float,
                                                                                   float]:
    """(a, b) maximising the likelihood of ``correct`` under ``sigmoid(a*logit(s)+b)``.

    Newton's method on the two-parameter logistic regression (converges in a few
    iterations; a tiny ridge keeps it finite when the classes separate perfectly).
    """
    from inscope.detector.decode import _logit

    z = _logit(np.asarray(scores, np.float64))
    y = np.asarray(correct, np.float64)
    if len(z) < 2 or y.min() == y.max():
        raise ValueError("Calibration needs both right and wrong detections; score more "
                         "frames (or frames with harder objects).")
    X = np.stack([z, np.ones_like(z)], 1)
    w = np.array([1.0, 0.0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        g = X.T @ (p - y) + 1e-6 * w
        Hm = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        step = np.linalg.solve(Hm, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray, bins: int = 10
                               ) -> float:
    """ECE: |accuracy - mean score| per equal-width score bin, weighted by bin count."""
    s = np.asarray(scores, np.float64)
    c = np.asarray(correct, np.float64)
    if not len(s):
        return float("nan")
    idx = np.minimum((s * bins).astype(int), bins - 1)
    ece = 0.0
    for k in range(bins):
        m = idx == k
        if m.any():
            ece += m.mean() * abs(c[m].mean() - s[m].mean())
    return float(ece)


def best_f1_threshold(sd: ScoredDetections, grid=None) -> tuple[float, float]:
    """(threshold, F1) with the highest F1 over *grid* (default 0.05 ... 0.95)."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else grid
    best = (0.5, -1.0)
    for t in grid:
        k = sd.scores >= t
        tp = int(sd.correct[k].sum())
        fp = int(k.sum()) - tp
        p = tp / max(tp + fp, 1)
        r = tp / max(sd.n_gt, 1)
        f1 = 2 * p * r / max(p + r, 1e-12)
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def calibrate_model(model: str | Path, frames: int = 16, seed: int = CALIBRATION_SEED,
                    write: bool = True) -> dict:
    """Fit the calibration and the default threshold of *model* and store them in its card.

    Returns what was written (``decoding.calibration`` and ``score_threshold``, plus the
    ECE before / after on the fitting frames, recorded under ``metrics.calibration``).
    """
    from inscope.detector.card import ModelCard
    from inscope.detector.datasets import simulated_samples
    from inscope.detector.onnx_detector import OnnxDetector

    model = Path(model)
    samples = simulated_samples(frames, seed)
    det = OnnxDetector(model, provider="cpu")
    try:
        raw = collect(det, samples, raw=True)
        a, b = fit_platt(raw.scores, raw.correct)
        cal = {"method": "platt", "a": round(a, 4), "b": round(b, 4)}
        from inscope.detector.decode import calibrate_scores

        fitted = copy.copy(raw)
        fitted.scores = calibrate_scores(raw.scores, cal).astype(np.float64)
        thr, f1 = best_f1_threshold(fitted)
        shift = centre_shift(fitted, thr)
    finally:
        det.close()
    rec = {"calibration": cal, "score_threshold": thr,
           "fit": {"frames": f"{frames} simulated 512x512 frames, seed {seed}",
                   "detections": int(len(raw.scores)),
                   "ece_raw": round(expected_calibration_error(raw.scores, raw.correct), 4),
                   "ece_calibrated": round(expected_calibration_error(fitted.scores,
                                                                      fitted.correct), 4),
                   "best_f1": round(f1, 4),
                   "centre_error_px": [round(v, 3) for v in shift]}}
    # a shift under a tenth of a pixel is within what 16 frames measure: not applied
    rec["centre_shift_px"] = ([round(v, 3) for v in shift]
                              if max(abs(v) for v in shift) > SHIFT_MIN_PX else None)
    if write:
        path = ModelCard.path_for(model)
        card = ModelCard.load(path)
        card.decoding["calibration"] = cal
        card.decoding["score_threshold"] = thr
        if rec["centre_shift_px"] is None:
            card.decoding.pop("centre_shift_px", None)
        else:
            card.decoding["centre_shift_px"] = rec["centre_shift_px"]
        card.metrics["calibration_fit"] = rec["fit"]
        card.save(path)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    args = ap.parse_args(argv)
    rec = calibrate_model(args.model, args.frames, args.seed)
    print(f"{args.model.name}: calibration {rec['calibration']}, threshold "
          f"{rec['score_threshold']} (best F1 {rec['fit']['best_f1']}), ECE "
          f"{rec['fit']['ece_raw']} -> {rec['fit']['ece_calibrated']} on the fitting frames; "
          f"median centre error {rec['fit']['centre_error_px']} px, centre shift "
          f"{rec['centre_shift_px'] or 'none (under 0.1 px)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
