"""Torch dataset: crops + augmentation + CenterNet targets, normalised like the runtime.

Normalisation is :func:`inscope.detector.preprocess.normalise` with the card's spec, the very
function :class:`inscope.detector.onnx_detector.OnnxDetector` calls, so training and inference
cannot diverge. Augmentations act on the raw counts *before* normalisation (gamma,
extra noise, blur) or on geometry (flips, 90-degree rotations, rescaling, cropping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from inscope.detector.preprocess import DEFAULT_NORMALISATION, as_image, normalise

MAX_OBJECTS = 256
STRIDE = 4


def gaussian_sigma(w: float, h: float, stride: int = STRIDE) -> float:
    """Heatmap Gaussian sigma (output cells) for a box: ~1/6 of its size, at least 0.6."""
    return max(0.6, 0.15 * min(w, h) / stride)


def draw_targets(boxes: np.ndarray, out_hw: tuple[int, int], stride: int = STRIDE,
                 num_classes: int = 1, class_ids: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """CenterNet targets for *boxes* (input pixels) on an (h, w) output grid.

    Returns heatmap (C, h, w) with a peak for every object, and for the first
    :data:`MAX_OBJECTS` objects (padded to it): flat cell index, size target (w, h),
    offset target (x, y) in [0, 1), mask.

    Also dense regression maps over the 3 x 3 cells around every centre (TTFNet-style):
    ``reg_size`` (2, h, w), ``reg_offset`` (2, h, w) = centre minus the cell's corner in
    cells, in [-1, 2), and ``reg_weight`` (h, w) = sqrt of the object's Gaussian there
    (1 at the centre cell). A cell shared by two objects belongs to the one whose Gaussian
    is higher there. Why: the heatmap peak of a nucleus may land one cell off the one
    holding its centre (a shift of the image by 1-2 px moves it); when only the centre
    cell learned size and offset, the box then jumped by up to a cell (4 px). Trained on
    the neighbours, every cell near the centre points at the same centre.
    """
    h, w = out_hw
    hm = np.zeros((num_classes, h, w), np.float32)
    reg_size = np.zeros((2, h, w), np.float32)
    reg_off = np.zeros((2, h, w), np.float32)
    reg_w = np.zeros((h, w), np.float32)
    ind = np.zeros(MAX_OBJECTS, np.int64)
    size = np.zeros((MAX_OBJECTS, 2), np.float32)
    off = np.zeros((MAX_OBJECTS, 2), np.float32)
    mask = np.zeros(MAX_OBJECTS, np.float32)
    out: dict[str, np.ndarray] = {
        "heatmap": hm, "ind": ind, "size": size, "offset": off, "mask": mask,
        "reg_size": reg_size, "reg_offset": reg_off, "reg_weight": reg_w}
    # vectorised over objects: a crowded crop holds hundreds of nuclei
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cls = (np.zeros(len(b), np.int64) if class_ids is None
           else np.asarray(class_ids, np.int64).reshape(-1))
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2 / stride, (b[:, 1] + b[:, 3]) / 2 / stride
    ix, iy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
    keep = (bw >= 1) & (bh >= 1) & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    if not keep.any():
        return out
    bw, bh, cx, cy = bw[keep], bh[keep], cx[keep], cy[keep]
    ix, iy, cls = ix[keep], iy[keep], cls[keep]
    s = np.maximum(0.6, 0.15 * np.minimum(bw, bh) / stride)  # = gaussian_sigma
    r = (3 * s).astype(np.int64) + 1
    # every object gets its heatmap peak (a crowded crop must not teach the model to
    # ignore nuclei): a (2R+1)^2 window per object, cut to its own radius, max-merged
    R = int(r.max())
    d = np.arange(-R, R + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    dx, dy = dx.ravel()[None, :], dy.ravel()[None, :]
    jx, jy = ix[:, None] + dx, iy[:, None] + dy
    ok = ((np.abs(dx) <= r[:, None]) & (np.abs(dy) <= r[:, None])
          & (jx >= 0) & (jx < w) & (jy >= 0) & (jy < h))
    g = np.exp(-(dx * dx + dy * dy) / (2 * s[:, None] ** 2)).astype(np.float32)
    flat = (np.broadcast_to(cls[:, None], ok.shape) * (h * w) + jy * w + jx)[ok]
    np.maximum.at(hm.reshape(-1), flat, g[ok])
    # sparse size / offset targets: the first MAX_OBJECTS objects
    n = min(len(cx), MAX_OBJECTS)
    ind[:n] = iy[:n] * w + ix[:n]
    size[:n] = np.stack([bw[:n], bh[:n]], 1)
    off[:n] = np.stack([cx[:n] - ix[:n], cy[:n] - iy[:n]], 1)
    mask[:n] = 1.0
    _draw_neighbourhood(np.stack([ix, iy, cx, cy, s, bw, bh], 1), reg_size, reg_off, reg_w)
    return out


def _draw_neighbourhood(objs: np.ndarray, reg_size: np.ndarray, reg_off: np.ndarray,
                        reg_w: np.ndarray) -> None:
    """Fill the dense 3 x 3 regression maps in place (vectorised: crowded crops hold
    hundreds of nuclei). *objs* rows: centre cell ix, iy, centre cx, cy (cells), sigma,
    box w, h. A cell claimed by several objects goes to the highest Gaussian."""
    h, w = reg_w.shape
    d = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float64)
    ix, iy, cx, cy, s, bw, bh = (objs[:, k][:, None] for k in range(7))
    jx, jy = ix + d[None, :, 0], iy + d[None, :, 1]
    g = np.exp(-(d[None, :, 0] ** 2 + d[None, :, 1] ** 2) / (2 * s * s))
    ok = (jx >= 0) & (jx < w) & (jy >= 0) & (jy < h)
    cell = (jy * w + jx)[ok].astype(np.int64)
    g = g[ok]
    ox, oy = (cx - jx)[ok], (cy - jy)[ok]
    sw, sh = np.broadcast_to(bw, ok.shape)[ok], np.broadcast_to(bh, ok.shape)[ok]
    order = np.lexsort((g, cell))  # by cell, then by Gaussian: the last of a cell wins
    cs = cell[order]
    last = order[np.r_[cs[1:] != cs[:-1], True]]
    c = cell[last]
    reg_size[0].flat[c], reg_size[1].flat[c] = sw[last], sh[last]
    reg_off[0].flat[c], reg_off[1].flat[c] = ox[last], oy[last]
    reg_w.flat[c] = np.sqrt(g[last])


def augment(img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, crop: int,
            scale_range: tuple[float, float] = (1.0, 1.0), photometric: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale, crop (zero-padded if small), flips/rot90 and intensity changes.

    Works on float32 raw counts; boxes are x0, y0, x1, y1 in pixels with pixel centres at
    integer coordinates (pixel ``k`` spans ``[k - 0.5, k + 0.5]``, as in the simulator's
    truth and :class:`inscope.detector.datasets.Sample`), so every geometric step maps
    them as it maps pixel centres: a flip sends ``x`` to ``crop - 1 - x``, a resize by
    ``f`` sends it to ``(x + 0.5) f - 0.5`` (OpenCV's pixel-centre alignment). Boxes cut
    by the crop are kept (clipped) when at least 40 % of them stays in view.
    """
    img = img.astype(np.float32, copy=False)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    lo, hi = scale_range
    if hi > lo or lo != 1.0:
        f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        if abs(f - 1) > 0.02:
            img = cv2.resize(img, None, fx=f, fy=f,
                             interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
            boxes = (boxes + 0.5) * f - 0.5
    H, W = img.shape
    y0 = int(rng.integers(0, max(1, H - crop + 1)))
    x0 = int(rng.integers(0, max(1, W - crop + 1)))
    out = img[y0:y0 + crop, x0:x0 + crop]
    if out.shape != (crop, crop):
        pad_val = float(np.median(img))  # pad with background, not with a black edge
        out = cv2.copyMakeBorder(out, 0, crop - out.shape[0], 0, crop - out.shape[1],
                                 cv2.BORDER_CONSTANT, value=pad_val)
    if len(boxes):
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes -= np.array([x0, y0, x0, y0], np.float32)
        ch, cw = min(crop, H - y0), min(crop, W - x0)
        np.clip(boxes[:, 0::2], -0.5, cw - 0.5, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], -0.5, ch - 0.5, out=boxes[:, 1::2])
        vis = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / np.maximum(area, 1e-6)
        boxes = boxes[vis >= 0.4]
    out = np.ascontiguousarray(out)
    # geometry: flips and 90-degree rotations (8 dihedral variants)
    # (until 2026-12 a flip sent x to crop - x: every flipped crop taught centres one
    # pixel off, and the network learned the mean, half a pixel right and down)
    if rng.random() < 0.5:
        out = out[:, ::-1]
        boxes[:, [0, 2]] = (crop - 1) - boxes[:, [2, 0]]
    if rng.random() < 0.5:
        out = out[::-1, :]
        boxes[:, [1, 3]] = (crop - 1) - boxes[:, [3, 1]]
    if rng.random() < 0.5:
        out = out.T  # transpose = rot90 + flip
        boxes = boxes[:, [1, 0, 3, 2]]
    out = np.ascontiguousarray(out, np.float32)
    if photometric:
        base = float(np.percentile(out[::4, ::4], 1))
        sig: np.ndarray = out - base
        if rng.random() < 0.5:  # gamma on the signal above background
            top = max(float(sig.max()), 1e-6)
            sig = top * np.power(np.clip(sig / top, 0, None), rng.uniform(0.6, 1.6))
        if rng.random() < 0.2:  # extra blur (defocus / worse optics)
            sig = cv2.GaussianBlur(sig, (0, 0), rng.uniform(0.5, 2.0))
        if rng.random() < 0.35:  # low light: extra noise relative to the signal range
            rng_s = float(np.percentile(sig[::4, ::4], 99.5)) + 1e-6
            if rng.random() < 0.5:  # read-noise-like: additive Gaussian, 1-50 % of it
                sd = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5)))) * rng_s
                sig = sig + rng.normal(0, sd, sig.shape).astype(np.float32)
            else:  # shot-noise-like: a bright nucleus collects only 3-300 photons
                k = float(np.exp(rng.uniform(np.log(3.0), np.log(300.0)))) / rng_s
                sig = rng.poisson(np.clip(sig, 0, None) * k).astype(np.float32) / k
        if rng.random() < 0.2:  # uneven illumination / background gradient
            yy, xx = np.mgrid[0:crop, 0:crop].astype(np.float32) / crop
            a = rng.normal(0, 0.15, 2) * float(np.percentile(sig[::4, ::4], 99))
            sig = sig + (a[0] * xx + a[1] * yy).astype(np.float32)
        if rng.random() < 0.25:  # uneven excitation: dim and bright nuclei in one field
            yy, xx = np.mgrid[0:crop, 0:crop].astype(np.float32) / crop
            x0, y0 = rng.uniform(-0.5, 1.5, 2)
            fall = float(rng.uniform(0.3, 2.0))
            field = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) * fall)
            sig = sig * (field / max(float(field.max()), 1e-6)).astype(np.float32)
        out = sig + base
    return out.astype(np.float32), boxes


class DetectionDataset(Dataset):
    """Images (any size/dtype) + boxes -> normalised crops and CenterNet targets.

    Single class: every box is a "nucleus" (multi-class data trains as one class).

    Parameters
    ----------
    images, boxes
        Sequences of 2-D arrays and (k, 4) box arrays (input pixels).
    crop
        Square crop side (a multiple of 32).
    length
        Nominal epoch length (samples are drawn at random, with replacement).
    scale_range
        Random rescale range (e.g. (0.6, 1.6) for few real images; 1 for the sim pool,
        whose sizes are already wide).
    normalisation
        The card's normalisation spec (default: the runtime default).
    """

    def __init__(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], *,
                 crop: int = 256, length: int | None = None,
                 scale_range: tuple[float, float] = (1.0, 1.0), augment: bool = True,
                 normalisation: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        if crop % 32:
            raise ValueError(f"crop must be a multiple of 32; got {crop}.")
        if len(images) != len(boxes) or not len(images):
            raise ValueError(f"Need as many box arrays as images (and at least one); got "
                             f"{len(images)} images, {len(boxes)} box arrays.")
        self.images = images
        self.boxes = boxes
        self.crop = crop
        self.length = int(length or len(images))
        self.scale_range = scale_range
        self.augment = augment
        self.norm = {**DEFAULT_NORMALISATION, **(normalisation or {})}
        self.seed = seed
        self._calls = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self._calls += 1
        rng = np.random.default_rng([self.seed, i, self._calls])
        j = int(rng.integers(len(self.images)))
        img = as_image(np.asarray(self.images[j]))
        b = np.asarray(self.boxes[j], np.float32).reshape(-1, 4)
        if self.augment:
            x, bb = augment(img, b, rng, self.crop, self.scale_range)
        else:
            x, bb = augment(img, b, np.random.default_rng(0), self.crop, photometric=False)
        x = normalise(x, self.norm)
        t = draw_targets(bb, (self.crop // STRIDE, self.crop // STRIDE), STRIDE)
        out = {"image": torch.from_numpy(x[None])}
        out.update({k: torch.from_numpy(v) for k, v in t.items()})
        return out
