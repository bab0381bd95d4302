"""``inscope eval``: score a detector on annotated data or simulated held-out frames.

Examples
--------
::

    inscope eval data/hela.npz --ignore-border-fp --plots runs/eval
    inscope eval --model classical data/voc/ --json runs/eval/classical.json
    inscope eval --sim 20 --seed 900001

AP is computed from *all* predictions down to a low floor (``--ap-score-floor``), so the PR
curve is complete; ``--score-threshold`` is only the operating point for precision,
recall, F1 and the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Decoding floor used to collect predictions for the PR curve / AP.
MIN_SCORE = 0.05


def register(subparsers: argparse._SubParsersAction) -> None:
    from inscope.cli import deprecated_alias
    from inscope.detector.datasets import FORMATS

    p = subparsers.add_parser(
        "eval", help="score a detector (AP50, mAP50-95, P/R/F1) on annotated data",
        description="Score a detector on annotated images (npz, instance masks, YOLO, Pascal "
        "VOC, COCO) or on simulated held-out frames; print the figures, optionally write JSON "
        "and plots.")
    p.add_argument("data", nargs="*", help="dataset file(s) or folder(s)")
    p.add_argument("--model", default=None,
                   help="ONNX model path, or 'classical' (default: the shipped model)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="dataset format (default: auto-detect)")
    p.add_argument("--sim", type=int, default=0, metavar="N",
                   help="evaluate on N simulated held-out frames instead of files")
    p.add_argument("--seed", type=int, default=900000,
                   help="seed of the simulated frames (>= 900000: never used in training)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write all figures (and per-image ones) to this JSON file")
    p.add_argument("--plots", type=Path, default=None, metavar="DIR",
                   help="write a PR curve and prediction-vs-truth pictures (PNG) here")
    p.add_argument("--ignore-border-fp", action="store_true",
                   help="do not count unmatched predictions touching the border as FP "
                   "(for data whose border objects are unlabelled)")
    p.add_argument("--count-difficult", action="store_true",
                   help="score 'difficult' objects (VOC <difficult>, COCO iscrowd, simulated "
                   "objects less than a quarter in view) like all others instead of "
                   "ignoring them")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for P/R/F1 (default 0.5)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="operating threshold for P/R/F1/counts (default: the model card's)")
    a = p.add_argument("--ap-score-floor", type=float, default=MIN_SCORE,
                       help=f"lowest score collected for the PR curve and AP (default "
                            f"{MIN_SCORE}); not the operating threshold (--score-threshold)")
    deprecated_alias(p, "--min-score", a)
    p.add_argument("--object-size-px", type=float, default=None,
                   help="typical object diameter in pixels (rescales to the model's range)")
    p.add_argument("--provider", default="auto",
                   choices=["auto", "tensorrt", "cuda", "cpu"],
                   help="ONNX Runtime provider")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--mirror-views", type=int, default=1, choices=(1, 2, 4),
                   help="average the network over each image and its mirror images (1, "
                        "2, 4): steadier, tighter boxes for 2x / 4x its time")
    p.add_argument("--enlarge-below-px", type=float, default=None, metavar="PX",
                   help="enlarge images whose objects measure under PX pixels up to PX "
                        "(default: the model card's; the shipped model's is 14 px): "
                        "accuracy for time, e.g. 36")
    p.add_argument("--max-plots", type=int, default=4,
                   help="prediction pictures to draw (default 4)")
    p.set_defaults(func=run_eval)


def evaluate_detector(detector: Any, samples: list, *, iou: float = 0.5,
                      score_threshold: float = 0.0, ignore_border_fp: bool = False,
                      count_difficult: bool = False, scales: list[float] | None = None):
    """Run *detector* on every sample and score it; *scales*, when given, gets the
    factor each image was resized by for the detector (its ``last_scale``; 1 if none).

    Returns
    -------
    (EvalResult, predictions [(boxes, scores)] per sample, detect times in ms)
    """
    from inscope.acquisition.frame import Frame
    from inscope.detector.metrics import evaluate

    preds, times = [], []
    for i, s in enumerate(samples):
        x = (Frame(s.image, i, pixel_size_um=s.pixel_size_um) if s.pixel_size_um
             else s.image)
        t = time.perf_counter()
        d = detector.detect(x)
        times.append((time.perf_counter() - t) * 1e3)
        preds.append((d.boxes, d.scores))
        if scales is not None:
            scales.append(float(getattr(detector, "last_scale", 1.0)))
    res = evaluate(preds, [s.boxes for s in samples], iou_threshold=iou,
                   score_threshold=score_threshold, ignore_border_fp=ignore_border_fp,
                   shapes=[s.image.shape for s in samples], names=[s.name for s in samples],
                   difficult=None if count_difficult else [s.difficult for s in samples])
    return res, preds, times


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is strict (AP of an image without objects is NaN)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _load_samples(args: argparse.Namespace) -> list:
    from inscope.detector.datasets import load_dataset, simulated_samples

    if args.sim and args.data:
        raise ValueError("Give dataset paths or --sim N, not both.")
    if args.sim:
        if args.seed < 900000:
            print(f"warning: seed {args.seed} < 900000 may overlap training frames",
                  file=sys.stderr)
        return simulated_samples(args.sim, args.seed)
    if not args.data:
        raise ValueError("Nothing to evaluate: give dataset file(s)/folder(s) or --sim N.")
    return load_dataset(args.data, args.format)


def run_eval(args: argparse.Namespace) -> int:
    from inscope.detector.onnx_detector import load_detector
    from inscope.detector.plots import overlay_plot, pr_plot

    try:
        samples = _load_samples(args)
        is_classical = isinstance(args.model, str) and args.model.lower() == "classical"
        kw: dict[str, Any] = {"object_size_px": args.object_size_px,
                              "mirror_views": args.mirror_views,
                              "enlarge_below_px": args.enlarge_below_px}
        if not is_classical:
            kw["score_threshold"] = args.ap_score_floor
        det = load_detector(args.model, provider=args.provider, threads=args.threads, **kw)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"inscope eval: {e}", file=sys.stderr)
        return 2
    if not args.sim and sum(len(s.boxes) for s in samples) == 0:
        det.close()
        print(f"inscope eval: the {len(samples)} image(s) in {', '.join(map(str, args.data))} "
              "have no labels (0 boxes), so AP cannot be measured; give annotated data (YOLO "
              "labels/<name>.txt beside images/, a data.yaml, VOC .xml, COCO .json or an npz "
              "with boxes).", file=sys.stderr)
        return 2
    card = getattr(det, "card", None)
    op = args.score_threshold
    if op is None:
        op = float(card.decoding.get("score_threshold", 0.3)) if card is not None else 0.0
    scales: list[float] = []
    res, preds, times = evaluate_detector(det, samples, iou=args.iou, score_threshold=op,
                                          ignore_border_fp=args.ignore_border_fp,
                                          count_difficult=args.count_difficult,
                                          scales=scales)
    name = getattr(det, "name", "detector")
    views = int(getattr(det, "mirror_views", 1))
    print(f"{name} on {len(samples)} image(s) [{getattr(det, 'provider', '?')}]"
          + (f", {views} mirror views" if views != 1 else ""))
    print(f"{'image':<32} {'gt':>5} {'pred':>5} {'TP':>5} {'FP':>5} {'FN':>5} "
          f"{'P':>6} {'R':>6} {'AP50':>6}")
    for r in res.per_image:
        print(f"{r.name[:32]:<32} {r.n_gt:>5} {r.n_pred:>5} {r.tp:>5} {r.fp:>5} {r.fn:>5} "
              f"{r.precision:>6.3f} {r.recall:>6.3f} {r.ap50:>6.3f}")
    ap_img = np.array([r.ap50 for r in res.per_image], float)
    ap_img = ap_img[np.isfinite(ap_img)]
    if len(ap_img) > 1:
        print(f"per-image AP50: mean {ap_img.mean():.3f}, min {ap_img.min():.3f}, "
              f"max {ap_img.max():.3f}")
    print(res.summary())
    t = np.asarray(times)
    print(f"detect time per image: p50 {np.percentile(t, 50):.1f} ms, "
          f"max {t.max():.1f} ms (session warmed up before the first)")
    resized = [f for f in scales if abs(f - 1.0) > 1e-3]
    if resized:
        how = "enlarged" if np.median(resized) > 1 else "shrunk"
        given = getattr(det, "enlarge_below_px", None)
        why = (f"under the enlargement size given ({given:g} px)"
               if given is not None and how == "enlarged"
               else "outside the sizes it detects well")
        print(f"auto scale: {len(resized)} of {len(scales)} image(s) {how} for the model "
              f"(factor p50 {np.median(resized):.2f}): their objects measured {why}; "
              "--object-size-px sets the scale instead")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"model": str(getattr(det, "model_path", name)), "detector": name,
               "provider": getattr(det, "provider", None), "mirror_views": views,
               "enlarge_below_px": getattr(det, "enlarge_below_px", None),
               "data": [str(p) for p in args.data] if not args.sim
               else {"sim": args.sim, "seed": args.seed},
               "detect_ms": {"p50": float(np.percentile(t, 50)),
                             "p90": float(np.percentile(t, 90)),
                             "max": float(t.max())},
               "scale_factors": scales,
               **res.to_dict(curves=True)}
        args.json.write_text(json.dumps(_finite(out), indent=1, default=float) + "\n")
        print(f"wrote {args.json}")
    if args.plots:
        pr_plot({name: res}, args.plots / "pr_curve.png")
        for i, (s, (b, sc)) in enumerate(zip(samples, preds, strict=True)):
            if i >= args.max_plots:
                break
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in s.name)
            overlay_plot(s.image, s.boxes, b, sc, args.plots / f"pred_{i:03d}_{safe}.png",
                         score_threshold=op, title=s.name)
        print(f"wrote plots to {args.plots}")
    det.close()
    return 0
