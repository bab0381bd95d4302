"""Model outputs -> boxes: CenterNet-style peak decoding and Ultralytics YOLO decoding.

Both decoders work on whole arrays (no Python loop over pixels or boxes) and return boxes
in the *network input's* pixel grid; the caller maps them back to the frame.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

# (at import, not in suppress_overlaps: the first frame with two boxes would pay ~0.3-0.6 s
# for importing scipy.spatial - the detector's warm-up frame is blank and has none - and
# a live loop would publish its first detections that late)
from scipy.spatial import cKDTree

CENTERNET_DEFAULTS: dict[str, Any] = {
    "stride": 4, "heatmap": "heatmap", "size": "size", "offset": None,
    "score_threshold": 0.3, "peak_kernel": 3, "max_detections": 500, "activation": None,
    "centre_vote": False, "vote_agree": 0.75, "vote_sigma": None, "merge_iou": None,
    "calibration": None, "centre_shift_px": None,
}


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def calibrate_scores(scores: np.ndarray, calibration: Mapping[str, Any] | None
                     ) -> np.ndarray:
    """Map raw heatmap peak scores to calibrated probabilities of being a true object.

    *calibration* is the card's ``decoding.calibration``: ``{"method": "platt", "a": a,
    "b": b}`` gives ``sigmoid(a * logit(s) + b)`` (temperature scaling is ``b = 0``,
    ``a = 1/T``); None leaves the scores as they are. Monotonic, so the ranking (and AP)
    does not change; only what a score *means* does.
    """
    if not calibration:
        return np.asarray(scores, np.float32)
    method = calibration.get("method", "platt")
    if method != "platt":
        raise ValueError(f"Unknown score calibration {method!r} in the card's decoding; "
                         "use 'platt' (a, b) or remove 'calibration'.")
    z = float(calibration["a"]) * _logit(scores) + float(calibration.get("b", 0.0))
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def raw_threshold(threshold: float, calibration: Mapping[str, Any] | None) -> float:
    """The raw heatmap value whose calibrated score is *threshold* (inverse map)."""
    if not calibration:
        return float(threshold)
    a, b = float(calibration["a"]), float(calibration.get("b", 0.0))
    z = (float(_logit(threshold)) - b) / a
    return float(1.0 / (1.0 + np.exp(-z)))
ULTRALYTICS_DEFAULTS: dict[str, Any] = {
    "score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 300,
}


@functools.lru_cache(maxsize=8)
def _kernels(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full k x k kernel and the 'earlier in raster order' half of it (anchor centre)."""
    r = k // 2
    full = np.ones((k, k), np.uint8)
    earlier = np.zeros((k, k), np.uint8)
    earlier[:r, :] = 1  # rows above the anchor ...
    earlier[r, :r] = 1  # ... and cells left of it in its own row
    return full, earlier


def find_peaks(heatmap: np.ndarray, threshold: float, kernel: int = 3,
               max_detections: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
    """Local maxima of a (C, h, w) heatmap at or above *threshold*.

    A cell is a peak when it equals the max of its ``kernel x kernel`` neighbourhood
    (cv2.dilate: ~0.05 ms on 128x128) and is strictly greater than the neighbours that
    come before it in raster order (a second dilate with a half kernel). So a flat top of
    equal values (a saturated sigmoid) gives one detection, not several, in linear time.

    Returns
    -------
    class ids, ys, xs, scores of the peaks, sorted by descending score, at most
    *max_detections*.
    """
    hm = np.ascontiguousarray(heatmap, dtype=np.float32)
    k = max(1, int(kernel)) | 1  # odd
    full, earlier = _kernels(k)
    cs, ys, xs = [], [], []
    for c in range(hm.shape[0]):  # loop over classes only (1 for nuclei)
        h = hm[c]
        cand = h >= threshold
        if not cand.any():
            continue
        peak = cand & (h >= cv2.dilate(h, full))
        if k > 1:
            peak &= h > cv2.dilate(h, earlier, borderType=cv2.BORDER_CONSTANT,
                                   borderValue=-np.inf)
        # flat index + divmod: ~10x faster than 2-D np.nonzero on a 128x128 mask
        y, x = np.divmod(np.flatnonzero(peak), h.shape[1])
        cs.append(np.full(len(y), c, np.int32))
        ys.append(y)
        xs.append(x)
    if not cs:
        z = np.zeros(0, np.int64)
        return z.astype(np.int32), z, z, np.zeros(0, np.float32)
    cls, y, x = np.concatenate(cs), np.concatenate(ys), np.concatenate(xs)
    s = hm[cls, y, x]
    order = np.argsort(-s, kind="stable")[: int(max_detections)]
    return cls[order], y[order], x[order], s[order]


def decode_centernet(outputs: Mapping[str, np.ndarray], spec: Mapping[str, Any] | None
                     = None, score_threshold: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's CenterNet-style outputs into boxes.

    Parameters
    ----------
    outputs
        Output name -> array with the batch axis removed: heatmap (C, h, w) in [0, 1]
        (already sigmoid-ed; or logits with ``spec["activation"] = "sigmoid"``), size
        (2, h, w) = box width, height in input pixels, optional offset (2, h, w) = x, y
        sub-cell position in output cells.
    spec
        The card's ``decoding`` dict (see :data:`CENTERNET_DEFAULTS`).
    score_threshold
        Overrides ``spec["score_threshold"]``.

    Notes
    -----
    The object centre in input pixels (pixel centres at integer coordinates, the
    convention of the training boxes) is ``(ix + ox) * stride`` where ``(ox, oy)`` is the
    offset output when the model has one (standard CenterNet: ``c / stride -
    floor(c / stride)``, in [0, 1)), and the centre of the cell's pixels,
    ``(ix + 0.5) * stride - 0.5``, when it has none. A card's ``centre_shift_px`` (dx, dy),
    the network's median centre error measured by :mod:`inscope.detector.calibration`, is
    subtracted. Boxes are ``centre -/+ size / 2``.
    """
    spec = {**CENTERNET_DEFAULTS, **(spec or {})}
    thr = float(spec["score_threshold"] if score_threshold is None else score_threshold)
    # the threshold is in calibrated units; peaks are found on the raw heatmap
    thr = raw_threshold(thr, spec.get("calibration"))
    stride = float(spec["stride"])
    hm = outputs[spec["heatmap"]]
    size = outputs[spec["size"]]
    act = spec.get("activation")
    if act == "sigmoid":
        # logits: peaks do not change under a monotonic map, so threshold in logit space
        # and apply the sigmoid to the few peak scores only
        t = min(max(thr, 1e-7), 1 - 1e-7)
        c, y, x, s = find_peaks(hm, float(np.log(t / (1 - t))), spec["peak_kernel"],
                                spec["max_detections"])
        s = 1.0 / (1.0 + np.exp(-s))
    elif act in (None, "none"):
        c, y, x, s = find_peaks(hm, thr, spec["peak_kernel"], spec["max_detections"])
    else:
        raise ValueError(f"Unknown heatmap activation {act!r} in the card's decoding; use "
                         "'sigmoid' (the model outputs logits) or null (already sigmoid-ed).")
    if len(s) == 0:
        return np.zeros((0, 4), np.float32), s.astype(np.float32), c
    off_name = spec.get("offset")
    off = outputs[off_name] if off_name and off_name in outputs else None
    if off is not None and spec.get("centre_vote"):
        r = spec["centre_vote"]
        cx, cy, w, h = _centre_vote(hm, size, off, c, y, x, act == "sigmoid", stride,
                                    agree_cells=float(spec["vote_agree"]),
                                    radius=1 if r is True else int(r),
                                    sigma=float(spec["vote_sigma"] or 0.0))
    else:
        if off is not None:
            ox, oy = off[0, y, x], off[1, y, x]
            cx, cy = (x + ox) * stride, (y + oy) * stride
        else:  # the centre of the cell's stride x stride pixels
            cx, cy = (x + 0.5) * stride - 0.5, (y + 0.5) * stride - 0.5
        w = np.maximum(size[0, y, x], 0.0)
        h = np.maximum(size[1, y, x], 0.0)
    if spec.get("calibration"):
        s = calibrate_scores(s, spec["calibration"])
    if spec.get("centre_shift_px"):
        sx, sy = spec["centre_shift_px"]
        cx, cy = cx - np.float32(sx), cy - np.float32(sy)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes, s, c = boxes.astype(np.float32), s.astype(np.float32), c.astype(np.int32)
    if spec.get("merge_iou"):
        keep = suppress_overlaps(boxes, s, float(spec["merge_iou"]), c)
        boxes, s, c = boxes[keep], s[keep], c[keep]
    return boxes, s, c


def _centre_vote(hm: np.ndarray, size: np.ndarray, off: np.ndarray, c: np.ndarray,
                 y: np.ndarray, x: np.ndarray, logits: bool, stride: float = 4.0,
                 agree_cells: float = 0.75, radius: int = 1, sigma: float = 0.0,
                 iterations: int = 2):
    """Box centre and size averaged over the (2 radius + 1)^2 cells around each peak.

    For models trained with the 3 x 3 neighbourhood regression (card
    ``decoding.centre_vote``; offsets reach (-1.25, 2.25)), every cell next to a peak
    predicts the same object's centre and size. Averaging them, weighted by their heatmap
    value, steadies the box when a shift of the image moves the peak to the next cell or
    changes the peak cell's own estimate (measured: box-centre jitter on HeLa, see the
    model card). Neighbours whose centre lies more than *agree_cells* from the peak cell's
    own estimate belong to another nucleus and are left out. Vectorised over peaks.

    With *sigma* (cells) the agreement is soft: starting from that mean, *iterations*
    mean-shift steps weight each cell by its heatmap value times
    ``exp(-d^2 / (2 sigma^2))``, d = distance of the cell's centre estimate from the
    current mean. A wider window (radius 2) then averages more cells, which steadies
    the centre further (sub-cell shifts move the peak cell's own estimate most), while
    cells pointing at a neighbour nucleus fade out smoothly instead of at a hard edge.
    """
    # Written for thousands of peaks (a 2048 x 2048 frame of confluent nuclei: ~3,000
    # peaks x 25 cells): the cells are gathered with flat indices, and the arithmetic is
    # float32 on positions relative to each peak cell (|value| < 4 cells, so float32
    # keeps ~1e-6 cell; absolute positions up to 512 cells would keep only ~1e-4).
    # The whole decoding of the model card's 2048 x 2048 frame (2,964 peaks): 9.8 -> 5.9
    # ms p50, the same boxes (benchmarks/bench_decode.py, results/decode_speed.json).
    C, H, W = hm.shape
    d = np.arange(-radius, radius + 1, dtype=np.int32)
    k = len(d) ** 2
    dy, dx = np.repeat(d, len(d)), np.tile(d, len(d))  # raster order: the peak is k // 2
    y32, x32 = y.astype(np.int32), x.astype(np.int32)
    ny, nx = y32[:, None] + dy, x32[:, None] + dx
    jy, jx = np.clip(ny, 0, H - 1), np.clip(nx, 0, W - 1)
    flat = jy * W + jx
    # one class: a plain take (4x faster than 2-D fancy indexing)
    heat = hm.reshape(-1).take(flat if C == 1 else c.astype(np.int64)[:, None] * (H * W)
                               + flat).astype(np.float32, copy=False)
    if logits:
        heat = 1.0 / (1.0 + np.exp(-heat))
    near = (y32 < radius) | (y32 >= H - radius) | (x32 < radius) | (x32 >= W - radius)
    if near.any():
        # cells clipped at the border repeat a real one: count each cell once
        b = near.nonzero()[0]
        heat[b] *= (ny[b] >= 0) & (ny[b] < H) & (nx[b] >= 0) & (nx[b] < W)
    o = off.reshape(off.shape[0], -1)
    # each cell's centre estimate, in cells from the peak cell
    rx = o[0].take(flat) + (jx - x32[:, None]).astype(np.float32)
    ry = o[1].take(flat) + (jy - y32[:, None]).astype(np.float32)
    own_x, own_y = rx[:, k // 2:k // 2 + 1], ry[:, k // 2:k // 2 + 1]  # the peak cell
    wgt = heat * ((np.abs(rx - own_x) <= agree_cells) & (np.abs(ry - own_y) <= agree_cells))

    def mean(wg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.einsum("ij->i", wg)  # (~4x faster than wg.sum(1) on (n, 25))
        return np.einsum("ij,ij->i", wg, rx) / t, np.einsum("ij,ij->i", wg, ry) / t, t

    mx, my, tot = mean(wgt)
    if sigma > 0:
        g = np.float32(-0.5 / sigma ** 2)
        for _ in range(iterations):
            e = rx - mx[:, None]
            e *= e
            f = ry - my[:, None]
            f *= f
            e += f
            e *= g
            wgt = np.exp(e, out=e)
            wgt *= heat
            mx, my, tot = mean(wgt)
    cx = (x + mx.astype(np.float64)) * stride
    cy = (y + my.astype(np.float64)) * stride
    sz = size.reshape(size.shape[0], -1)
    w = np.einsum("ij,ij->i", wgt, np.maximum(sz[0].take(flat), 0.0)) / tot
    h = np.einsum("ij,ij->i", wgt, np.maximum(sz[1].take(flat), 0.0)) / tot
    return cx, cy, w, h


# ---------------------------------------------------------------------------- NMS
def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                      class_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices (by descending score) kept by greedy NMS, computed on nearby pairs only.

    Peak decoding gives one box per heatmap peak, but a large or textured nucleus can
    raise a second peak whose box covers the same nucleus: a duplicate that counts as a
    false positive and, when the two swap rank under a small image shift, makes the box
    jump. Same result as :func:`nms` (a box goes when a higher-scoring *kept* box of
    its class overlaps it by IoU >= *iou_threshold*), but only pairs of boxes that can
    overlap are compared (a k-d tree on the centres), so the cost grows with the boxes,
    not their square: a 2048 x 2048 frame holds thousands. The greedy order is resolved
    by fixed-point iteration (one pass per level of a suppression chain, ~2).
    """
    n = len(boxes)
    order = np.argsort(-np.asarray(scores), kind="stable")
    if n < 2:
        return order.astype(np.int64)
    b = np.asarray(boxes, np.float64)
    wh = np.maximum(b[:, 2:] - b[:, :2], 0.0)
    # boxes overlap only if their centres are closer than the widest box on both axes
    pairs = cKDTree((b[:, :2] + b[:, 2:]) / 2).query_pairs(
        float(wh.max()), p=np.inf, output_type="ndarray")
    if not len(pairs):
        return order.astype(np.int64)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    i, j = pairs[:, 0], pairs[:, 1]
    hi = np.where(rank[i] < rank[j], i, j)
    lo = i + j - hi
    iw = np.minimum(b[hi, 2], b[lo, 2]) - np.maximum(b[hi, 0], b[lo, 0])
    ih = np.minimum(b[hi, 3], b[lo, 3]) - np.maximum(b[hi, 1], b[lo, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = wh[hi].prod(1) + wh[lo].prod(1) - inter
    hit = inter >= iou_threshold * np.where(union > 0, union, np.inf)
    if class_ids is not None:
        cl = np.asarray(class_ids)
        hit &= cl[hi] == cl[lo]
    hi, lo = hi[hit], lo[hit]
    keep = np.ones(n, bool)
    for _ in range(n):  # a box's status is settled once every higher one's is
        new = np.ones(n, bool)
        new[lo[keep[hi]]] = False
        if np.array_equal(new, keep):
            break
        keep = new
    return order[keep[order]].astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        class_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices of boxes kept by (class-wise) non-maximum suppression, by score.

    Uses OpenCV's ``cv2.dnn.NMSBoxes`` (C++): measured ~10x faster than a vectorised
    numpy NMS on 300 candidates (0.56 vs 5.5 ms) and ~1.6x on 3000 mostly-disjoint ones
    (53 vs 87 ms; NMS is quadratic in the survivors, so filter by score first).
    Class-wise NMS offsets each class's boxes by a large constant so boxes of different
    classes never overlap (the Ultralytics trick).
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    b = np.asarray(boxes, np.float32)
    if class_ids is not None and len(class_ids) and np.any(class_ids != class_ids[0]):
        span = float(np.abs(b).max()) + 1.0
        b = b + (np.asarray(class_ids, np.float32) * 2 * span)[:, None]
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    # OpenCV's stubs declare Sequence arguments, but NMSBoxes takes numpy arrays
    kept = cv2.dnn.NMSBoxes(xywh, np.asarray(scores, np.float32), 0.0,  # type: ignore[arg-type]
                            float(iou_threshold))
    keep = np.asarray(kept, np.int64).reshape(-1)
    return keep[np.argsort(-np.asarray(scores)[keep], kind="stable")]


def decode_ultralytics(output: np.ndarray, spec: Mapping[str, Any] | None = None,
                       score_threshold: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a YOLOv8 / YOLO11 detection head: (4 + nc, N) or (N, 4 + nc), no batch.

    Rows 0-3 are cx, cy, w, h in input pixels, the rest per-class scores (already
    sigmoid-ed, no objectness). Returns boxes x0, y0, x1, y1 in input pixels after
    class-wise NMS.
    """
    spec = {**ULTRALYTICS_DEFAULTS, **(spec or {})}
    thr = float(spec["score_threshold"] if score_threshold is None else score_threshold)
    out = np.asarray(output, np.float32)
    if out.ndim != 2:
        raise ValueError(f"Ultralytics output must be 2-D after the batch axis; got "
                         f"{out.shape}.")
    # exports emit (4 + nc, N) with N (anchors, 8400 at 640) >> 4 + nc
    pred = out.T if out.shape[0] < out.shape[1] else out
    cls_scores = pred[:, 4:]
    if cls_scores.shape[1] == 0:
        raise ValueError("Ultralytics output has no class columns (need 4 + nc rows).")
    cls = cls_scores.argmax(axis=1)
    score = cls_scores[np.arange(len(cls)), cls]
    m = score >= thr
    if not m.any():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    p, score, cls = pred[m], score[m], cls[m].astype(np.int32)
    cx, cy, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep = nms(boxes, score, spec["iou_threshold"], cls)[: int(spec["max_detections"])]
    return boxes[keep].astype(np.float32), score[keep].astype(np.float32), cls[keep]
