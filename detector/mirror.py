"""Mirror views: the network's outputs averaged over mirror images of one frame.

Test-time augmentation for CenterNet-style models. The frame is run as it is and
mirrored left-right (2 views), and also up-down and both ways (4 views), in one batch;
each view's output maps are mirrored back and averaged before decoding. A nucleus then
gets one box from two or four looks that see it with different pixel phases and
neighbourhoods, so its centre and size steady and its box fits tighter (issue 18's
jitter and mAP50-95; figures in the model card, *Mirror views*), for 2x or 4x the
network's time: a choice for work where accuracy matters more than latency (scans,
evaluation), and for GPUs, where the network is a small part of ``detect()`` (the
card's *GPU*; mirror views there are not measured yet).

Why the offsets need more than a mirror: an output cell ``i`` of a map ``Wc`` cells
wide covers the input pixels ``[s i, s i + s)`` (stride ``s``), and the offset is the
object's centre in cells from the cell's corner, ``cx = (i + ox) s`` with pixel centres
at integers. Mirroring an input ``W = Wc s`` pixels wide maps pixel ``x`` to
``W - 1 - x`` and cell ``i`` to ``Wc - 1 - i`` exactly, so the mirrored view's offset
``ox'`` reads back as ``(s - 1) / s - ox'``. This needs the input's width and height to
be whole multiples of the stride, which the runtime's padding (to a multiple of 32)
gives.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: (mirror left-right, mirror up-down) of each view, in batch order
MIRRORS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True),
                                          (True, True))
#: the numbers of views that can be asked for
ALLOWED_VIEWS = (1, 2, 4)


def check_views(views: object) -> int:
    """*views* as an int in :data:`ALLOWED_VIEWS`, else a ValueError that says which."""
    try:
        n = int(views)  # type: ignore[call-overload]
        ok = n == views and n in ALLOWED_VIEWS
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"mirror_views must be 1 (off), 2 (the frame and its left-right mirror) or 4 "
            f"(also up-down and both); got {views!r}.")
    return n


def _flip(a: np.ndarray, lr: bool, ud: bool) -> np.ndarray:
    if lr:
        a = a[..., ::-1]
    if ud:
        a = a[..., ::-1, :]
    return a


def mirrored_batch(x: np.ndarray, views: int, out: np.ndarray | None = None) -> np.ndarray:
    """The batch ``(views, C, H, W)`` of *x* ``(1, C, H, W)`` and its mirror images, in
    the order of :data:`MIRRORS`; written into *out* when given (same shape)."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"mirror views take one image (1, C, H, W); got {x.shape}.")
    if out is None:
        out = np.empty((views, *x.shape[1:]), x.dtype)
    for k, (lr, ud) in enumerate(MIRRORS[:views]):
        out[k] = _flip(x[0], lr, ud)
    return out


def average_views(outputs: Mapping[str, np.ndarray], views: int, stride: float,
                  offset: str | None = None) -> dict[str, np.ndarray]:
    """Each output ``(views, C, h, w)`` mirrored back and averaged to ``(C, h, w)``.

    Parameters
    ----------
    outputs
        Output name -> the batch's maps, views in the order of :data:`MIRRORS`.
    views
        How many views the batch holds.
    stride
        Input pixels per output cell, for the offsets.
    offset
        Name of the offset output (x, y in cells from the cell's corner), whose mirrored
        components read back as ``(stride - 1) / stride - o`` (see the module doc); other
        outputs (heatmap, size) are only mirrored back.
    """
    back = (float(stride) - 1.0) / float(stride)
    res: dict[str, np.ndarray] = {}
    for name, a in outputs.items():
        if a.shape[0] != views:
            raise ValueError(f"output {name!r} holds {a.shape[0]} views, expected {views}.")
        acc = a[0].astype(np.float32, copy=True)
        for k, (lr, ud) in enumerate(MIRRORS[1:views], start=1):
            v = _flip(a[k], lr, ud)
            if name == offset:
                v = v.copy()
                if lr:
                    v[0] = back - v[0]
                if ud:
                    v[1] = back - v[1]
            acc += v
        acc /= views
        res[name] = acc
    return res
