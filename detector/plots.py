"""Pictures for evaluations: precision-recall curve, predictions over ground truth.

Matplotlib draws them when it is installed (the ``plots`` extra); otherwise OpenCV does,
so ``inscope eval --plots`` works on a bare install too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from inscope.detector.metrics import EvalResult

TRUTH_BGR = (80, 220, 80)  # green
PRED_BGR = (60, 60, 255)  # red
IGNORED_BGR = (200, 160, 60)  # blue-ish: unmatched on the border when ignored


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pr_plot(results: dict[str, EvalResult], path: str | Path) -> Path:
    """Precision-recall curves (IoU 0.5) of one or more detectors into a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _have_matplotlib():
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
        for name, r in results.items():
            ax.plot(r.pr.get("recall", []), r.pr.get("precision", []),
                    label=f"{name} (AP50 {r.ap50:.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01),
               title="precision-recall, IoU 0.5")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path
    size = 480
    canvas = np.full((size, size, 3), 255, np.uint8)
    cv2.rectangle(canvas, (40, 20), (size - 20, size - 40), (0, 0, 0), 1)
    colours = [(200, 80, 30), (30, 120, 220), (60, 160, 60), (160, 60, 160)]
    for k, (name, r) in enumerate(results.items()):
        rec = np.asarray(r.pr.get("recall", []))
        pre = np.asarray(r.pr.get("precision", []))
        if len(rec) < 2:
            continue
        pts = np.stack([40 + rec * (size - 60), size - 40 - pre * (size - 60)], 1)
        cv2.polylines(canvas, [pts.astype(np.int32)], False, colours[k % 4], 2)
        cv2.putText(canvas, f"{name} AP50 {r.ap50:.3f}", (50, size - 60 - 18 * k),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colours[k % 4], 1, cv2.LINE_AA)
    cv2.putText(canvas, "recall", (size // 2 - 20, size - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "precision", (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)
    return path


def to_display(image: np.ndarray) -> np.ndarray:
    """8-bit BGR view of a 2-D image, stretched between its 1st and 99.8th percentiles."""
    from inscope.detector.preprocess import normalise

    x = normalise(image, {"method": "percentile", "clip": True})
    return cv2.cvtColor(cv2.convertScaleAbs(x, alpha=255.0), cv2.COLOR_GRAY2BGR)


def overlay_plot(image: np.ndarray, truth: np.ndarray, boxes: np.ndarray,
                 scores: Sequence[float], path: str | Path, *, score_threshold: float = 0.0,
                 title: str = "") -> Path:
    """Ground truth (green) and predictions at the operating threshold (red) on *image*.

    Drawn with OpenCV at the image's own resolution (an upscaled copy for small images) so
    one-pixel box errors stay visible; matplotlib adds nothing here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = to_display(image)
    k = max(1, int(np.ceil(512 / max(image.shape))))
    if k > 1:
        canvas = cv2.resize(canvas, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    for b in np.asarray(truth).reshape(-1, 4):
        x0, y0, x1, y1 = (b * k).round().astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), TRUTH_BGR, 1)
    sc = np.asarray(scores, float).reshape(-1)
    for b, s in zip(np.asarray(boxes).reshape(-1, 4), sc, strict=True):
        if s < score_threshold:
            continue
        x0, y0, x1, y1 = (b * k).round().astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), PRED_BGR, 1)
    label = f"{title}  truth (green) vs prediction (red)" if title else \
        "truth (green) vs prediction (red)"
    cv2.putText(canvas, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)
    return path
