"""CenterNet losses: penalty-reduced focal loss on the heatmap, L1 on log-size and offset."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from inscope.detector.train.model import SIZE_SCALE, offset_from_logit


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
               beta: float = 4.0) -> torch.Tensor:
    """CenterNet focal loss (Law & Deng 2018), normalised by the number of objects.

    Computed from logits with ``logsigmoid`` for numerical stability.
    """
    pos = target.eq(1).float()
    neg = 1.0 - pos
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_1p = F.logsigmoid(-logits)
    pos_loss = -((1 - p) ** alpha) * log_p * pos
    neg_loss = -((1 - target) ** beta) * (p ** alpha) * log_1p * neg
    n = pos.sum().clamp(min=1.0)
    return (pos_loss.sum() + neg_loss.sum()) / n


def _gather(feat: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) features at flat indices (N, K) -> (N, K, C)."""
    n, c = feat.shape[:2]
    f = feat.view(n, c, -1).permute(0, 2, 1)
    return f.gather(1, ind.unsqueeze(-1).expand(-1, -1, c))


def centernet_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   batch: dict[str, torch.Tensor], size_weight: float = 1.0,
                   offset_weight: float = 1.0,
                   offset_range: tuple[float, float] = (0.0, 1.0)
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for model outputs ``(heatmap logits, log size, offset
    logits)`` and the batch targets from :func:`inscope.detector.train.data.draw_targets`.

    With *offset_range* wider than (0, 1) (the model's ``offset_range``), size and offset
    are learned on the dense 3 x 3 neighbourhood maps (``reg_*``) instead of the centre
    cells alone."""
    hm, log_size, off_logit = outputs
    l_hm = focal_loss(hm, batch["heatmap"])
    if tuple(offset_range) != (0.0, 1.0) and "reg_weight" in batch:
        wgt = batch["reg_weight"].unsqueeze(1)  # (N, 1, h, w)
        n = wgt.sum().clamp(min=1.0)
        s_true = torch.log(batch["reg_size"].clamp(min=1.0) / SIZE_SCALE)
        l_size = (F.l1_loss(log_size, s_true, reduction="none") * wgt).sum() / (2 * n)
        o_pred = offset_from_logit(off_logit, offset_range)
        l_off = (F.l1_loss(o_pred, batch["reg_offset"], reduction="none") * wgt).sum() / (2 * n)
        total = l_hm + size_weight * l_size + offset_weight * l_off
        return total, {"hm": float(l_hm.detach()), "size": float(l_size.detach()),
                       "offset": float(l_off.detach())}
    mask = batch["mask"].unsqueeze(-1)
    n = mask.sum().clamp(min=1.0)
    s_pred = _gather(log_size, batch["ind"])
    s_true = torch.log(batch["size"].clamp(min=1.0) / SIZE_SCALE)
    l_size = (F.l1_loss(s_pred, s_true, reduction="none") * mask).sum() / (2 * n)
    o_pred = torch.sigmoid(_gather(off_logit, batch["ind"]))
    l_off = (F.l1_loss(o_pred, batch["offset"], reduction="none") * mask).sum() / (2 * n)
    total = l_hm + size_weight * l_size + offset_weight * l_off
    return total, {"hm": float(l_hm.detach()), "size": float(l_size.detach()),
                   "offset": float(l_off.detach())}


def distil_loss(student: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                n_objects: torch.Tensor,
                student_offset_range: tuple[float, float],
                teacher_offset_range: tuple[float, float],
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Knowledge-distillation loss: the student's outputs against a teacher network's.

    Why: a narrower network trained on the boxes alone loses accuracy and steadiness
    (the 16,16 network of stop 33); the teacher's dense outputs say, at every cell, how
    sure it is and where it points, which the sparse box targets do not.

    * heatmap: binary KL divergence of the student's probabilities from the teacher's
      at every cell, normalised by the number of objects (as the focal loss is);
    * size and offset: L1 between student and teacher (log size; offset in cells),
      weighted by the teacher's heatmap probability, so the cells the decoder's vote
      reads (around each peak) count and the background does not.

    Both outputs are raw network outputs ``(heatmap logits, log size, offset logits)``;
    each offset is decoded with its own network's range.
    """
    s_hm, s_size, s_off = student
    t_hm, t_size, t_off = (t.detach() for t in teacher)
    t_p = torch.sigmoid(t_hm)
    n = n_objects.clamp(min=1.0)
    # KL(t || s) = BCE(s, t) - H(t); the entropy term only makes the value read as 0
    # at a perfect match (no gradient)
    bce = F.binary_cross_entropy_with_logits(s_hm, t_p, reduction="sum")
    ent = F.binary_cross_entropy_with_logits(t_hm, t_p, reduction="sum")
    l_hm = (bce - ent) / n
    w = t_p.amax(dim=1, keepdim=True)  # (N, 1, h, w)
    wn = w.sum().clamp(min=1e-6)
    l_size = (F.l1_loss(s_size, t_size, reduction="none") * w).sum() / (2 * wn)

    l_off = (F.l1_loss(offset_from_logit(s_off, student_offset_range),
                       offset_from_logit(t_off, teacher_offset_range), reduction="none")
             * w).sum() / (2 * wn)
    total = l_hm + l_size + l_off
    return total, {"kd_hm": float(l_hm.detach()), "kd_size": float(l_size.detach()),
                   "kd_offset": float(l_off.detach())}
