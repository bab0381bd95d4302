"""``inscope train``: train or fine-tune a detector and export ONNX + model card.

``register`` imports neither torch nor the training code, so ``inscope --help`` works
without the ``[train]`` extra; the command itself says how to install it when torch is
missing.

Reproduce the shipped default model with ONE command::

    inscope train --synthetic 3000 --preset default --out detector/models/inscope-nuclei.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: name -> training settings; --steps / --batch / --lr / --synthetic override them.
PRESETS: dict[str, dict] = {
    # the shipped model: 4800 pre-rendered crops, <= 45 min of training on 2 CPU cores
    "default": {"synthetic": 4800, "steps": 6000, "batch": 16, "lr": 3e-3,
                "time_limit_s": 2700.0, "eval_sim": 8},
    # smoke tests and quick experiments: seconds to a minute
    "fast": {"synthetic": 96, "steps": 60, "batch": 8, "lr": 3e-3, "time_limit_s": None,
             "eval_sim": 0},
    # fine-tuning an existing model on a few annotated images
    "finetune": {"synthetic": 0, "steps": 300, "batch": 8, "lr": 1e-3,
                 "time_limit_s": None, "eval_sim": 0},
}
MISSING_TORCH = ("'inscope train' needs PyTorch, which is an optional extra: "
                 "pip install 'inscope[train]'")


def register(subparsers: argparse._SubParsersAction) -> None:
    from inscope.detector.datasets import FORMATS

    p = subparsers.add_parser(
        "train", help="train / fine-tune a detector (synthetic and/or annotated data) "
        "and export ONNX + model card",
        description="Train the CenterNet-style nucleus detector on simulated crops, on "
        "annotated images (npz, instance masks, YOLO, Pascal VOC, COCO) or both, or fine-tune "
        "an existing model; export ONNX (dynamic size) + model card (with sha256), a loss plot "
        "and a log. Needs the [train] extra (PyTorch).")
    p.add_argument("data", nargs="*", help="annotated dataset file(s) or folder(s)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="dataset format (default: auto-detect)")
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="use N pre-rendered simulated crops (default: the preset's when no "
                   "DATA is given, else 0)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="training settings (default: 'default', or 'finetune' with --init "
                   "/ --finetune)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--init", type=Path, default=None, metavar="MODEL",
                   help="start from this model (.onnx exported by inscope, or a .pt "
                   "state_dict)")
    g.add_argument("--finetune", action="store_true",
                   help="start from the shipped default model")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps")
    p.add_argument("--epochs", type=float, default=None,
                   help="alternative to --steps: passes over the data (real images count "
                   "once each; synthetic crops once each)")
    p.add_argument("--batch", type=int, default=None, help="batch size")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (training order, "
                   "augmentation, pool seed = seed + 1)")
    p.add_argument("--pool-seed", type=int, default=None,
                   help="synthetic pool seed (default: --seed + 1); lets a continued run "
                   "draw new samples from the same cached pool")
    p.add_argument("--sparse-fraction", type=float, default=0.0, metavar="F",
                   help="make this fraction of the simulated microscopes sparse: 0-2 "
                   "nuclei per crop among a dense field's debris, many crops empty "
                   "(default 0, the shipped recipe; see the model card)")
    p.add_argument("--dim-low", type=float, default=None, metavar="L",
                   help="the faintest dim nuclei of the simulated pool, as a fraction of a "
                   "typical nucleus' brightness: each simulated microscope draws its floor "
                   "between L and 0.15 (default: 0.15 for all, the shipped recipe)")
    p.add_argument("--widths", default="12,24", metavar="C1,C2",
                   help="channels of the network at 1/2 and 1/4 resolution (default 12,24; "
                   "--init MODEL.onnx keeps the model's own, a .pt state_dict needs the "
                   "widths it was trained with)")
    p.add_argument("--teacher", type=Path, default=None, metavar="MODEL.onnx",
                   help="distil: also train the network to reproduce this trained model's "
                   "outputs (heatmap, size, offset) on every batch, e.g. a narrower "
                   "network (--widths) from the shipped one")
    p.add_argument("--distil-weight", type=float, default=1.0, metavar="W",
                   help="weight of the distillation loss next to the loss on the boxes "
                   "(default 1; only with --teacher)")
    p.add_argument("--crop", type=int, default=256, help="training crop size (multiple of 32)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="finish the schedule after S seconds (default: the preset's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", type=Path, default=Path("runs/train/model.onnx"),
                   help="output .onnx (card .json, loss plot .loss.png and log beside it)")
    p.add_argument("--name", default=None, help="model name in the card (default: file stem)")
    p.add_argument("--val", nargs="*", default=None, metavar="DATA",
                   help="annotated data to score the result on (AP50, written to the card)")
    p.add_argument("--ignore-border-fp", action="store_true",
                   help="in --val scoring, unmatched boxes touching the border are not FP")
    p.add_argument("--eval-sim", type=int, default=None, metavar="N",
                   help="score on N simulated held-out frames (seed 900000+)")
    p.add_argument("--cache", type=Path, default=None,
                   help="synthetic pool cache dir (default: $INSCOPE_CACHE or "
                   "~/.cache/inscope)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering the pool")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-antialias", dest="antialias", action="store_false",
                   help="a new model without the anti-aliasing blurs and bilinear "
                   "upsampling (the pre-2026-12 architecture; --init models keep theirs)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print(MISSING_TORCH, file=sys.stderr)
        return 1
    try:
        run_training(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"inscope train: {e}", file=sys.stderr)
        return 2
    return 0


def _model_ref(path: Path) -> dict[str, str]:
    """A network the card names by file name and content, not by where it lay.

    A path would tie the card to one machine's folders (and a copy elsewhere, or a later
    file at the same path, would not be the network that was used); the hash identifies
    it anywhere.
    """
    from inscope.detector.card import sha256_file

    return {"file": path.name, "sha256": sha256_file(path)}


def run_training(args: argparse.Namespace) -> dict:
    """Everything ``inscope train`` does; returns the card as a dict."""
    import torch

    from inscope.detector.card import sha256_file
    from inscope.detector.train.data import DetectionDataset
    from inscope.detector.train.export import (
        default_card,
        export_onnx,
        measure_latency,
        model_from_onnx,
    )
    from inscope.detector.train.model import (
        TinyCenterNet,
        count_parameters,
        widen_offset_head,
    )
    from inscope.detector.train.synth import POOL_VERSION, PoolSpec, load_or_render_pool
    from inscope.detector.train.trainer import TrainConfig, train

    t_start = time.monotonic()
    init = args.init
    if args.finetune:
        from inscope.detector.onnx_detector import default_model_path

        init = default_model_path()
    preset_name = args.preset or ("finetune" if init is not None else "default")
    preset = dict(PRESETS[preset_name])
    n_syn = args.synthetic if args.synthetic is not None else (
        preset["synthetic"] if not args.data else 0)
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must end in .onnx; got {out}.")
    # checked before any data is loaded or rendered (minutes for a new pool)
    teacher_path = getattr(args, "teacher", None)
    if teacher_path is not None:
        teacher_path = Path(teacher_path)
        if teacher_path.suffix != ".onnx" or not teacher_path.is_file():
            raise FileNotFoundError(f"--teacher {teacher_path}: not an existing .onnx file; "
                                    "pass a model exported by 'inscope train', e.g. "
                                    "detector/models/inscope-nuclei.onnx.")

    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    sources: list[str] = []
    n_real = 0
    if args.data:
        from inscope.detector.datasets import load_dataset

        samples = load_dataset([Path(d) for d in args.data], args.format, split="train")
        real_i = [s.image for s in samples]
        # difficult objects (VOC flag, COCO crowd) are not taught as positives
        real_b = [s.boxes if s.difficult is None else s.boxes[~s.difficult]
                  for s in samples]
        n_real = len(samples)
        sources.append(f"{n_real} annotated images from {[str(d) for d in args.data]}")
    pool_spec = None
    if n_syn:
        pool_seed = args.pool_seed if getattr(args, "pool_seed", None) is not None \
            else int(args.seed) + 1
        pool_spec = PoolSpec(n=int(n_syn), seed=int(pool_seed),
                             sparse_fraction=float(args.sparse_fraction),
                             dim_low=getattr(args, "dim_low", None))
        imgs, bxs = load_or_render_pool(pool_spec, args.cache, workers=args.workers)
        images.extend(list(imgs))
        boxes.extend(bxs)
        sources.append(f"{n_syn} simulated {pool_spec.size}px crops (pool seed "
                       f"{pool_spec.seed}, object size {list(pool_spec.object_size_px)} px, "
                       f"pool version {POOL_VERSION}"
                       + (f", {pool_spec.sparse_fraction:g} of the groups sparse"
                          if pool_spec.sparse_fraction else "")
                       + (f", dim nuclei down to {pool_spec.dim_low:g} of a typical one"
                          if pool_spec.dim_low is not None else "") + ")")
    if n_real:
        # few real images next to thousands of crops: repeat them so about a third of
        # the samples are real (or all of them without synthetic data)
        rep = 1 if not images else max(1, len(images) // (2 * n_real))
        images.extend(real_i * rep)
        boxes.extend(real_b * rep)
    if not images:
        raise ValueError("Nothing to train on: give annotated DATA and/or --synthetic N.")

    steps = args.steps or preset["steps"]
    batch = args.batch or preset["batch"]
    if args.epochs:
        steps = max(1, int(round(args.epochs * (n_real + n_syn) / batch)))
    cfg = TrainConfig(steps=int(steps), batch=int(batch), lr=args.lr or preset["lr"],
                      seed=int(args.seed), threads=args.threads,
                      time_limit_s=args.time_limit if args.time_limit is not None
                      else preset["time_limit_s"], freeze_bn=init is not None,
                      distil_weight=float(getattr(args, "distil_weight", 1.0)))
    scale = (0.6, 1.6) if n_real and not n_syn else ((0.8, 1.25) if n_real else (1.0, 1.0))
    ds = DetectionDataset(images, boxes, crop=args.crop, length=10 ** 9, seed=args.seed,
                          scale_range=scale)
    torch.manual_seed(args.seed)
    if init is not None:
        init = Path(init)
        if not init.exists():
            raise FileNotFoundError(f"--init model {init} not found; pass an .onnx exported "
                                    "by 'inscope train' or a .pt state_dict.")
        if init.suffix == ".pt":
            model = TinyCenterNet(antialias=getattr(args, "antialias", True),
                                  widths=_widths(args))
            model.load_state_dict(torch.load(init, map_location="cpu"))
        else:
            model = model_from_onnx(init)
        # older exports learned size / offset at the centre cell only: widen the offset
        # head so the 3 x 3 neighbourhood recipe (data.draw_targets) applies to them too
        widen_offset_head(model)
    else:
        model = TinyCenterNet(antialias=getattr(args, "antialias", True),
                              widths=_widths(args))
    teacher = model_from_onnx(teacher_path) if teacher_path is not None else None
    print(f"training TinyCenterNet ({count_parameters(model)} parameters) on "
          f"{'; '.join(sources)}; {cfg.steps} steps x batch {cfg.batch}"
          + (f", time limit {cfg.time_limit_s:.0f}s" if cfg.time_limit_s else "")
          + (f", from {init}" if init else "")
          + (f", distilled from {teacher_path}" if teacher is not None else ""),
          file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log.txt")
    with open(log_path, "w") as lf:
        res = train(model, ds, cfg, log_file=lf, teacher=teacher)

    card = default_card(name=args.name or out.stem,
                        object_size_px=pool_spec.object_size_px if pool_spec else
                        _size_range(boxes))
    card.training = {
        "data": sources, "architecture": "TinyCenterNet (detector/train/model.py)"
        + (", anti-aliased" if model.antialias else "")
        + f", widths {model.widths[0]},{model.widths[1]} at 1/2, 1/4",
        "parameters": count_parameters(model), "steps": res.steps, "batch": cfg.batch,
        "lr": cfg.lr, "seed": args.seed, "crop": args.crop,
        "init": _model_ref(Path(init)) if init else None,
        "teacher": _model_ref(teacher_path) if teacher_path is not None else None,
        "distil_weight": cfg.distil_weight if teacher is not None else None,
        "train_seconds": round(res.seconds, 1),
        "threads": torch.get_num_threads(),
        "command": "inscope train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"]
        else None,
        "normalisation_note": "inscope.detector.preprocess.normalise (percentile 1-99.8 on a "
        "stride-4 subsample, no clip) applied to each training crop after augmentation",
        "final_loss_ema": round(res.history[-1]["loss_ema"], 4) if res.history else None,
    }
    export_onnx(model, out, card)
    _plot_loss(res.history, out.with_suffix(".loss.png"))

    # scoring: sets the card's operating threshold (best F1) when there is held-out data
    metrics: dict = {}
    n_sim = args.eval_sim if args.eval_sim is not None else preset["eval_sim"]
    if n_sim:
        from inscope.detector.datasets import simulated_samples

        sim = simulated_samples(int(n_sim))
        metrics["sim_heldout"] = evaluate_model(out, sim)
    if args.val:
        from inscope.detector.datasets import load_dataset

        val = load_dataset([Path(d) for d in args.val], args.format)
        metrics["val"] = evaluate_model(out, val, ignore_border_fp=args.ignore_border_fp)
        metrics["val"]["data"] = [str(v) for v in args.val]
    tune = metrics.get("sim_heldout") or metrics.get("val")
    if tune and tune.get("best_threshold") is not None:
        card.decoding["score_threshold"] = tune["best_threshold"]
    card.metrics = metrics
    if not args.no_latency:
        card.latency = measure_latency(out)
    card.training["total_seconds"] = round(time.monotonic() - t_start, 1)
    card.sha256 = sha256_file(out)
    card.save(out.with_suffix(".json"))
    parts = [f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB), card "
             f"{out.with_suffix('.json')}, loss plot, log",
             *(f"{k} AP50 {v['ap50']:.3f}" for k, v in metrics.items())]
    if card.latency:
        parts.append(f"CPU p50 {card.latency['p50_ms']} ms at 512x512")
    print("; ".join(parts), file=sys.stderr)
    return json.loads(out.with_suffix(".json").read_text())


def _widths(args: argparse.Namespace) -> tuple[int, int]:
    """``--widths C1,C2`` as two positive ints, or one clear error."""
    text = str(getattr(args, "widths", "12,24"))
    try:
        c1, c2 = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--widths takes two channel counts, e.g. 16,16; got {text!r}.") \
            from None
    if c1 < 1 or c2 < 1:
        raise ValueError(f"--widths must be positive channel counts; got {text!r}.")
    return c1, c2


def _size_range(boxes: list[np.ndarray]) -> tuple[float, float]:
    b = np.concatenate([np.asarray(x, np.float32).reshape(-1, 4) for x in boxes])
    if not len(b):
        return (8.0, 64.0)
    d = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    return (float(np.percentile(d, 2)), float(np.percentile(d, 98)))


def evaluate_model(model_path: Path, samples, ignore_border_fp: bool = False,
                   thresholds=(0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6),
                   count_difficult: bool = False, operating_threshold: float | None = None,
                   auto_scale: bool = True) -> dict:
    """AP50 (pooled and per image) of an exported model, and the best-F1 threshold.

    Precision / recall / F1 are given at *operating_threshold* (e.g. the card's), or, when
    None, at the best-F1 threshold found on these very samples (optimistic: use it to
    *set* a threshold, not to report one). Difficult objects (see :mod:`inscope.detector.metrics`)
    are ignored unless *count_difficult*.
    """
    from inscope.detector.metrics import evaluate
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(model_path, provider="cpu", score_threshold=0.05,
                       auto_scale=auto_scale)
    preds = []
    for s in samples:
        d = det.detect(s.image)
        preds.append((d.boxes, d.scores))
    gts = [s.boxes for s in samples]
    shapes = [s.image.shape for s in samples]
    difficult = None if count_difficult else [s.difficult for s in samples]
    best = (-1.0, None)
    for t in thresholds:
        r = evaluate(preds, gts, score_threshold=t, ignore_border_fp=ignore_border_fp,
                     shapes=shapes, difficult=difficult)
        if r.f1 > best[0]:
            best = (r.f1, t)
    op = operating_threshold if operating_threshold is not None else (best[1] or 0.3)
    r = evaluate(preds, gts, score_threshold=op, ignore_border_fp=ignore_border_fp,
                 shapes=shapes, difficult=difficult)
    per = [float(i.ap50) for i in r.per_image]
    det.close()
    return {"ap50": round(float(r.ap50), 4), "map50_95": round(float(r.map50_95), 4),
            "precision": round(float(r.precision), 4), "recall": round(float(r.recall), 4),
            "f1": round(float(r.f1), 4), "score_threshold": op, "best_threshold": best[1],
            "n_images": r.n_images, "n_gt": r.n_gt, "n_difficult": r.n_difficult,
            "per_image_ap50": {"mean": round(float(np.nanmean(per)), 4),
                               "min": round(float(np.nanmin(per)), 4),
                               "max": round(float(np.nanmax(per)), 4)}}


def _plot_loss(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not history:
        return
    s = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in ("loss_ema", "hm", "size", "offset"):
        ax.plot(s, [h[k] for h in history], label=k)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
