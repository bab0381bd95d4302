"""The training loop: AdamW + one-cycle schedule, plain-text progress, loss history."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from inscope.detector.train.loss import centernet_loss, distil_loss


@dataclass
class TrainConfig:
    """Optimisation settings (the presets live in :mod:`inscope.detector.train.cli`)."""

    steps: int = 3000
    batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    time_limit_s: float | None = None  # stop early (cleanly) after this long
    log_every: int = 10
    # Keep BatchNorm on its running statistics. For fine-tuning a model rebuilt from an
    # ONNX export (BN folded into the convolutions, BN set to identity), batch statistics
    # would change what the network computes at step 0 and throw away what it learned.
    freeze_bn: bool = False
    #: weight of :func:`~inscope.detector.train.loss.distil_loss` when ``train`` is given a
    #: teacher network (added to the loss on the boxes)
    distil_weight: float = 1.0


@dataclass
class TrainResult:
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def _progress(step: int, total: int, loss: float, t0: float, out=sys.stderr) -> None:
    # a live bar on a terminal; in a log file (CI, nohup) one line per 5 % instead
    tty = out.isatty() if hasattr(out, "isatty") else False
    if not tty and step % max(1, total // 20) and step != total:
        return
    el = time.monotonic() - t0
    eta = el / max(step, 1) * (total - step)
    w = 24
    done = int(w * step / total)
    start, end = ("\r", " ") if tty else ("", "\n")
    out.write(f"{start}[{'#' * done}{'.' * (w - done)}] {step}/{total} loss {loss:.3f} "
              f"{el:.0f}s elapsed, ETA {eta:.0f}s{end}")
    out.flush()


def _lr(peak: float, frac: float, warmup: float = 0.05) -> float:
    if frac < warmup:
        return peak * (0.1 + 0.9 * frac / warmup)
    t = (frac - warmup) / (1 - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model: torch.nn.Module, dataset: Dataset, cfg: TrainConfig,
          progress: bool = True, log_file=None,
          teacher: torch.nn.Module | None = None) -> TrainResult:
    """Train *model* in place for ``cfg.steps`` optimiser steps on *dataset*.

    The dataset draws random samples itself, so the loader is re-created whenever it runs
    out; workers are not used (crops are cheap next to the step on 2 CPU cores).

    With a *teacher* (a trained network, kept frozen in eval mode), the loss adds
    ``cfg.distil_weight`` times :func:`~inscope.detector.train.loss.distil_loss` of the
    student's outputs against the teacher's on the same batch.
    """
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for g in opt.param_groups:
        g["lr"] = _lr(cfg.lr, 0.0)
    model.train()
    if cfg.freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    off_range = getattr(model, "offset_range", (0.0, 1.0))
    t_off_range = getattr(teacher, "offset_range", (0.0, 1.0))
    hist: list[dict[str, float]] = []
    t0 = time.monotonic()
    step = 0
    ema = math.nan
    loader = DataLoader(dataset, batch_size=cfg.batch, shuffle=False, drop_last=True,
                        num_workers=0)
    frac = 0.0
    while frac < 1.0:
        for batch in loader:
            out = model(batch["image"])
            loss, parts = centernet_loss(out, batch, offset_range=off_range)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(batch["image"])
                kd, kd_parts = distil_loss(out, t_out, batch["heatmap"].eq(1).sum(),
                                           off_range, t_off_range)
                loss = loss + cfg.distil_weight * kd
                parts = {**parts, **kd_parts}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            # warm-up then cosine decay over the run's progress, measured in steps or in
            # time (whichever is further), so a time-limited run still ends annealed
            frac = step / cfg.steps
            if cfg.time_limit_s:
                frac = max(frac, (time.monotonic() - t0) / cfg.time_limit_s)
            lr = _lr(cfg.lr, min(frac, 1.0))
            for g in opt.param_groups:
                g["lr"] = lr
            lv = float(loss.detach())
            ema = lv if math.isnan(ema) else 0.95 * ema + 0.05 * lv
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": lv, "loss_ema": ema, **parts,
                       "lr": lr, "time_s": time.monotonic() - t0}
                hist.append(rec)
                if log_file is not None:
                    log_file.write(f"{rec}\n")
                    log_file.flush()
            if progress:
                _progress(step, cfg.steps, ema, t0)
            if frac >= 1.0:
                if progress and step < cfg.steps:
                    sys.stderr.write(f"\ntime limit {cfg.time_limit_s:.0f}s: schedule "
                                     f"completed at step {step}\n")
                break
    if progress:
        sys.stderr.write("\n")
    model.eval()
    return TrainResult(step, time.monotonic() - t0, hist)
