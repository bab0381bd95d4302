"""Accuracy of a detector model: simulated held-out frames, real annotated frames, few-shot.

Reproduces the "How well it works" figures of the model card in one run:

* simulated held-out frames (seed 900000+, never used in training): AP50 with objects less
  than a quarter in view flagged difficult (ignored, as VOC does), and with every object
  counted;
* optionally a real annotated stack (npz ``images`` + ``boxes`` + ``frame``, such as the
  Cell Tracking Challenge HeLa frames; not shipped): AP50 on all frames and on the frames
  from ``--split`` on, with unmatched predictions touching the border not counted as FP
  (border nuclei are unlabelled there);
* with ``--finetune`` (needs the [train] extra): fine-tunes the model on the frames before
  ``--split`` and scores it on the rest: what inscope does with ten annotated images.

    python -m benchmarks.eval_model [--model M] [--real STACK.npz] [--split 10]
        [--finetune] [--update-card] [--out benchmarks/results/model_eval.json]

``--update-card`` writes the figures into the model's JSON card (``metrics``).

Beyond AP it reproduces the card's other figures: score calibration (expected calibration
error of the scores as the model emits them, on the simulated frames and on the real
ones; P/R at the card's default threshold), automatic scale handling (simulated frames
with 100-200 px nuclei; real frames upscaled 3x / 4x; with and without it), robustness of
the real frames 10-15 to recording changes (8 bit, saturation, illumination gradient,
blur, gamma, added noise), box-centre jitter under sub-pixel and 1-10 px shifts
(:func:`benchmarks.bench_detector.measure_jitter`), a full 2048 x 2048 frame of small
nuclei (the real frames at half size, tiled 4 x 4) against one tile, and a figure of
typical errors on the real frames (``--figure``) and a count of them by kind
(:func:`error_breakdown`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import write_json


def _split_stack(path: Path, split: int, out_dir: Path) -> tuple[Path, Path]:
    """Write frames [0, split) and [split, T) of an npz stack as two npz stacks."""
    with np.load(path, allow_pickle=False) as z:
        images, boxes, frame = z["images"], z["boxes"], z["frame"].astype(np.int64)
    parts = []
    for name, lo, hi in (("train", 0, split), ("test", split, len(images))):
        m = (frame >= lo) & (frame < hi)
        p = out_dir / f"{path.stem}_{name}_{lo}-{hi - 1}.npz"
        np.savez(p, images=images[lo:hi], boxes=boxes[m], frame=frame[m] - lo)
        parts.append(p)
    return parts[0], parts[1]


# -- the card's other figures ----------------------------------------------------------
def calibration_figures(model: Path, samples, ignore_border_fp: bool) -> dict:
    """ECE (10 bins) of the scores the model emits, and how many detections it counts."""
    from inscope.detector.calibration import collect, expected_calibration_error
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(model, provider="cpu")
    try:
        sd = collect(det, samples, ignore_border_fp=ignore_border_fp)
    finally:
        det.close()
    return {"ece": round(expected_calibration_error(sd.scores, sd.correct), 4),
            "detections": int(len(sd.scores)),
            "calibrated": bool(det.card.decoding.get("calibration"))}


def _frames(samples) -> list:
    from inscope.detector.datasets import Sample

    return [Sample(s.image, s.boxes, None, s.name) for s in samples]


def _transformed(samples, fn) -> list:
    from inscope.detector.datasets import Sample

    return [Sample(fn(np.asarray(s.image, np.float32), i), s.boxes, None, s.name)
            for i, s in enumerate(samples)]


def robustness_figures(model: Path, real, op: float) -> dict:
    """AP50 on the real frames under recording changes (border FP ignored).

    The signal is measured per frame as p99.5 - p1 (the nuclei above the background);
    noise is Gaussian with that fraction of it as standard deviation.
    """
    import cv2

    from inscope.detector.train.cli import evaluate_model

    def sig(x):
        lo, hi = np.percentile(x[::4, ::4], [1, 99.5])
        return float(lo), float(hi - lo)

    def to8(x, sat=0.0):
        lo, rng = sig(x)
        top = np.percentile(x, 100 - sat) if sat else lo + rng * 1.05
        return np.clip((x - lo) / (top - lo) * 255, 0, 255).astype(np.uint8)

    def gradient(x, _i):
        lo, _ = sig(x)
        ramp = np.linspace(1.0, 3.0, x.shape[1], dtype=np.float32)[None, :]
        return lo + (x - lo) * ramp

    def gamma(x, _i):
        lo, rng = sig(x)
        return lo + rng * np.power(np.clip((x - lo) / rng, 0, None), 0.5)

    def noise(frac):
        def f(x, i):
            _, rng = sig(x)
            return x + np.random.default_rng(i).normal(0, frac * rng, x.shape).astype(
                np.float32)
        return f

    def upscale(k):
        def f(x, _i):
            return cv2.resize(x, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
        return f

    cases = {"as recorded": lambda x, i: x, "8 bit": lambda x, i: to8(x),
             "8 bit, 5 % saturated": lambda x, i: to8(x, 5.0),
             "3x illumination gradient": gradient,
             "extra blur sigma 2 px": lambda x, i: cv2.GaussianBlur(x, (0, 0), 2.0),
             "gamma 0.5": gamma}
    for frac in (0.125, 0.25, 0.5, 0.75):
        cases[f"noise {frac:g} of the signal"] = noise(frac)
    out = {}
    for name, fn in cases.items():
        out[name] = evaluate_model(model, _transformed(real, fn), ignore_border_fp=True,
                                   operating_threshold=op)["ap50"]
        print(f"  robustness {name}: AP50 {out[name]:.3f}")
    from inscope.detector.datasets import Sample

    for k in (3, 4):  # nuclei ~29 px -> ~87 / ~116 px: the automatic scale at work
        # pixel centres at integers: OpenCV's resize maps x to (x + 0.5) k - 0.5
        up = [Sample(upscale(k)(np.asarray(s.image, np.float32), 0),
                     (s.boxes + 0.5) * k - 0.5, None, s.name) for s in real]
        out[f"upscaled {k}x, auto scale"] = evaluate_model(
            model, up, ignore_border_fp=True, operating_threshold=op)["ap50"]
        out[f"upscaled {k}x, no auto scale"] = evaluate_model(
            model, up, ignore_border_fp=True, operating_threshold=op,
            auto_scale=False)["ap50"]
        print(f"  upscaled {k}x: AP50 {out[f'upscaled {k}x, auto scale']:.3f} with auto "
              f"scale, {out[f'upscaled {k}x, no auto scale']:.3f} without")
    return out


def sim_large_nuclei(model: Path, frames: int, op: float) -> dict:
    """Simulated 1024 x 1024 frames whose nuclei are 100-200 px (0.1 um/px), with / without
    auto scale."""
    from inscope.detector.datasets import simulated_samples
    from inscope.detector.train.cli import evaluate_model

    big = simulated_samples(frames, pixel_size_um=0.1, shape=(1024, 1024))
    return {"frames": f"{frames} simulated 1024x1024 frames at 0.1 um/px (nuclei 100-200 px)",
            "auto_scale": evaluate_model(model, big, operating_threshold=op)["ap50"],
            "no_auto_scale": evaluate_model(model, big, operating_threshold=op,
                                            auto_scale=False)["ap50"]}


def card_large_frame(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The model card's 2048 x 2048 frame of small nuclei from one real frame: at half
    size (nuclei ~15 px), a 512 x 512 window (its middle 256 rows and their mirror, so
    the tiles meet seamlessly) tiled 4 x 4. ``(window, frame, y0, x0)``: *y0*, *x0* place
    the window's 256 rows in the half-size image."""
    import cv2

    img = cv2.resize(np.asarray(image, np.float32), None, fx=0.5, fy=0.5,
                     interpolation=cv2.INTER_AREA)
    y0, x0 = (img.shape[0] - 256) // 2, (img.shape[1] - 512) // 2
    win = img[y0:y0 + 256, x0:x0 + 512]
    win = np.concatenate([win, win[::-1]], 0)  # 512 x 512 (mirrored: seamless)
    return win, np.tile(win, (4, 4)), y0, x0


def large_frame_figures(model: Path, real, op: float, runs: int = 20) -> dict:
    """A 2048 x 2048 frame of small nuclei: the real frames at half size (nuclei ~15 px,
    a 512 x 512 window tiled 4 x 4, ~1,500+ nuclei) against that one window.

    Recall / AP50 on the whole frame against the single window says whether a big frame
    loses nuclei (a fixed cap on the number of boxes did); detect() latency is measured
    on the whole frame (2 threads).
    """
    import time

    from inscope.detector.datasets import Sample
    from inscope.detector.onnx_detector import OnnxDetector
    from inscope.detector.train.cli import evaluate_model

    s = real[0]
    win, big, y0, x0 = card_large_frame(s.image)
    b = (np.asarray(s.boxes, np.float32) + 0.5) * 0.5 - 0.5  # pixel centres at integers
    cx, cy = (b[:, 0] + b[:, 2]) / 2 - x0, (b[:, 1] + b[:, 3]) / 2 - y0
    inb = b[(cx >= 0) & (cx < 512) & (cy >= 0) & (cy < 256)] - [x0, y0, x0, y0]
    inb = np.clip(inb, -0.5, [511.5, 255.5, 511.5, 255.5])
    mir = inb[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 511, 0, 511]  # row y -> 511 - y
    wb = np.concatenate([inb, mir])
    bb = np.concatenate([wb + [512 * i, 512 * j, 512 * i, 512 * j]
                         for j in range(4) for i in range(4)])
    one = evaluate_model(model, [Sample(win, wb, None, "window")], ignore_border_fp=True,
                         operating_threshold=op)
    full = evaluate_model(model, [Sample(big, bb, None, "tiled")], ignore_border_fp=True,
                          operating_threshold=op)
    det = OnnxDetector(model, provider="cpu", threads=2)
    det.detect(big)
    ts, n = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        n = len(det.detect(big))
        ts.append((time.perf_counter() - t) * 1e3)
    run = [det.last_timing["run_ms"]]
    det.close()
    p = np.percentile(ts, [50, 90, 99])
    return {"frame": "2048x2048: real frame 0 at half size (nuclei ~15 px), a 512x512 "
                     "window (256 rows + their mirror) tiled 4x4",
            "objects": int(len(bb)), "boxes_returned": int(n),
            "window_ap50": one["ap50"], "window_recall": one["recall"],
            "frame_ap50": full["ap50"], "frame_recall": full["recall"],
            "detect_ms": {"p50": round(float(p[0]), 2), "p90": round(float(p[1]), 2),
                          "p99": round(float(p[2]), 2), "max": round(float(max(ts)), 2)},
            "session_run_ms_last": round(float(run[0]), 2)}


def error_figure(model: Path, sample, op: float, path: Path) -> dict:
    """A small PNG of typical errors on one real frame: truth green, predictions red,
    misses (unmatched truth) yellow, false positives (unmatched inside boxes) magenta."""
    import cv2

    from inscope.detector.metrics import match, touches_border
    from inscope.detector.onnx_detector import OnnxDetector
    from inscope.detector.plots import to_display

    det = OnnxDetector(model, provider="cpu", score_threshold=op)
    d = det.detect(sample.image)
    det.close()
    gt = np.asarray(sample.boxes, np.float32)
    m = match(d.boxes, d.scores, gt)
    fp = (m < 0) & ~touches_border(d.boxes, sample.image.shape)
    missed = np.setdiff1d(np.arange(len(gt)), m[m >= 0])
    canvas = cv2.cvtColor(to_display(sample.image), cv2.COLOR_GRAY2BGR) if \
        to_display(sample.image).ndim == 2 else to_display(sample.image)

    def rect(b, col, t=1):
        x0, y0, x1, y1 = np.round(b).astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), col, t)

    for b in gt:
        rect(b, (0, 200, 0))
    for b in d.boxes:
        rect(b, (0, 0, 255))
    for j in missed:
        rect(gt[j], (0, 255, 255), 2)
    for b in d.boxes[fp]:
        rect(b, (255, 0, 255), 2)
    cv2.putText(canvas, f"{sample.name}: truth green, prediction red, missed yellow, "
                f"false positive magenta (score >= {op:g})", (6, 16),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    small = cv2.resize(canvas, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    try:  # a 64-colour palette keeps the committed PNG small (~1/3 of the size)
        from PIL import Image

        Image.fromarray(small[:, :, ::-1]).quantize(64).save(path, optimize=True)
    except ImportError:
        cv2.imwrite(str(path), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return {"figure": path.as_posix(), "frame": sample.name, "missed": int(len(missed)),
            "false_positives": int(fp.sum()), "truth": int(len(gt)),
            "predictions": int(len(d.boxes))}


def error_breakdown(model: Path, samples, op: float) -> dict:
    """What the errors on the real frames are, at the card's threshold (border FP ignored).

    False positives: *fragment* (over half of the box lies inside a matched annotated
    nucleus: a split or a second box on it), *merge* (the box holds the centres of 2+
    annotated nuclei), *mislocated* (IoU 0.1-0.5 with an unmatched annotated nucleus:
    the box is off or the wrong size), *nothing annotated near* (an unannotated faint
    nucleus, debris or a spurious box). Misses: *merged* (a predicted box overlapping it
    also holds another nucleus' centre), *mislocated* (a box overlaps it by IoU 0.1-0.5),
    *no box* (dim or small nuclei not found).
    """
    from inscope.detector.metrics import iou_matrix, match, touches_border
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(model, provider="cpu", score_threshold=op)
    fp = dict.fromkeys(("fragment", "merge", "mislocated", "nothing annotated near"), 0)
    fn = dict.fromkeys(("merged", "mislocated", "no box"), 0)
    fp_scores = []
    n_gt = 0
    for s in samples:
        d = det.detect(s.image)
        b, gt = d.boxes, np.asarray(s.boxes, np.float32).reshape(-1, 4)
        n_gt += len(gt)
        m = match(b, d.scores, gt, 0.5)
        hit = np.zeros(len(gt), bool)
        hit[m[m >= 0]] = True
        iou = iou_matrix(b, gt)
        gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
        holds = ((gcx[None] > b[:, :1]) & (gcx[None] < b[:, 2:3]) & (gcy[None] > b[:, 1:2])
                 & (gcy[None] < b[:, 3:4]))  # (pred, gt): the box holds that centre
        iw = np.clip(np.minimum(b[:, None, 2], gt[None, :, 2])
                     - np.maximum(b[:, None, 0], gt[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(b[:, None, 3], gt[None, :, 3])
                     - np.maximum(b[:, None, 1], gt[None, :, 1]), 0, None)
        inside = iw * ih / np.maximum(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, None],
                                      1e-9)
        for i in np.flatnonzero((m < 0) & ~touches_border(b, s.image.shape)):
            fp_scores.append(float(d.scores[i]))
            if holds[i].sum() >= 2:
                fp["merge"] += 1
            elif (inside[i] > 0.5)[hit].any():
                fp["fragment"] += 1
            elif ((iou[i] > 0.1) & ~hit).any():
                fp["mislocated"] += 1
            else:
                fp["nothing annotated near"] += 1
        for j in np.flatnonzero(~hit):
            near = np.flatnonzero(iou[:, j] > 0.1)
            if not len(near):
                fn["no box"] += 1
            elif (holds[near].sum(1) >= 2).any():
                fn["merged"] += 1
            else:
                fn["mislocated"] += 1
    det.close()
    return {"threshold": op, "annotated": n_gt, "false_positives": fp, "misses": fn,
            "false_positive_score_quartiles": [round(float(q), 3) for q in
                                               np.percentile(fp_scores, [25, 50, 75])]
            if fp_scores else None}


def main(argv: list[str] | None = None) -> int:
    from inscope.detector.datasets import load_dataset, simulated_samples
    from inscope.detector.onnx_detector import default_model_path
    from inscope.detector.train.cli import evaluate_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--sim-frames", type=int, default=8)
    ap.add_argument("--real", type=Path, default=None, help="annotated npz stack")
    ap.add_argument("--split", type=int, default=10)
    ap.add_argument("--finetune", action="store_true")
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--update-card", action="store_true")
    ap.add_argument("--figure", type=Path, default=None,
                    help="write the typical-errors PNG (real frame --split) here")
    ap.add_argument("--quick", action="store_true",
                    help="AP and calibration only (no robustness, jitter, large frame)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/model_eval.json"))
    args = ap.parse_args(argv)
    model = args.model or default_model_path()

    from inscope.detector.card import ModelCard

    card_path = Path(model).with_suffix(".json")
    op = float(ModelCard.load(card_path).decoding.get("score_threshold", 0.3))
    try:
        shown = Path(model).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = Path(model).name  # no absolute paths in committed results
    out: dict = {"model": shown, "note": f"P/R/F1 at the card's threshold {op}"}
    sim = simulated_samples(args.sim_frames)
    r = evaluate_model(model, sim, operating_threshold=op)
    r["all_objects"] = evaluate_model(model, sim, count_difficult=True,
                                      operating_threshold=op)
    r["frames"] = (f"{args.sim_frames} simulated 512x512 frames (default SimConfig, "
                   "0.65 um/px), seed 900000; difficult = less than 25% of the box in view")
    out["sim_heldout"] = r
    print(f"sim held-out: AP50 {r['ap50']:.3f} ({r['n_difficult']} difficult ignored), "
          f"all objects counted {r['all_objects']['ap50']:.3f}")
    out["calibration"] = {"sim_heldout": calibration_figures(model, sim, False)}
    print(f"sim held-out: ECE {out['calibration']['sim_heldout']['ece']:.3f}")
    if not args.quick:
        out["auto_scale_sim"] = sim_large_nuclei(model, args.sim_frames, op)
        print(f"sim 100-200 px nuclei: AP50 {out['auto_scale_sim']['auto_scale']:.3f} auto "
              f"scale, {out['auto_scale_sim']['no_auto_scale']:.3f} without")
    if args.real:
        with tempfile.TemporaryDirectory() as tmp:
            tr, te = _split_stack(args.real, args.split, Path(tmp))
            real: dict = {"data": args.real.name, "ignore_border_fp": True}
            for key, data in (("frames_all", [args.real]), (f"frames_{args.split}_on", [te])):
                real[key] = evaluate_model(model, load_dataset(data), ignore_border_fp=True,
                                           operating_threshold=op)
                print(f"real {key}: AP50 {real[key]['ap50']:.3f}, mAP50-95 "
                      f"{real[key]['map50_95']:.3f}, P {real[key]['precision']:.3f} R "
                      f"{real[key]['recall']:.3f} at {op}")
            frames = load_dataset([args.real])
            real["errors_frames_all"] = error_breakdown(model, frames, op)
            print(f"real errors: {real['errors_frames_all']}")
            out["calibration"]["real"] = calibration_figures(model, frames, True)
            print(f"real: ECE {out['calibration']['real']['ece']:.3f}")
            if not args.quick:
                from benchmarks.bench_detector import measure_jitter
                from inscope.detector.onnx_detector import OnnxDetector

                det = OnnxDetector(model, provider="cpu")
                real["jitter"] = {
                    "frames": f"{args.split}-{len(frames) - 1}",
                    **measure_jitter(det, [s.image for s in frames[args.split:]])}
                det.close()
                print(f"real jitter: {real['jitter']}")
                real["robustness_frames_10_15"] = robustness_figures(
                    model, frames[10:16], op)
                real["large_frame"] = large_frame_figures(model, frames, op)
                print(f"2048x2048: {real['large_frame']}")
            if args.figure:
                real["error_figure"] = error_figure(model, frames[args.split], op,
                                                    args.figure)
            if args.finetune:
                ft = Path(tmp) / "ft.onnx"
                cmd = [sys.executable, "-m", "inscope", "train", str(tr), "--init", str(model),
                       "--steps", str(args.finetune_steps), "--batch", "8", "--threads", "2",
                       "--no-latency", "--out", str(ft)]
                subprocess.run(cmd, check=True)
                f = evaluate_model(ft, load_dataset([te]), ignore_border_fp=True,
                                   operating_threshold=op)
                real["few_shot"] = {
                    "train": f"frames 0-{args.split - 1}", "test": f"frames {args.split}-",
                    "command": "inscope train FRAMES_0-9.npz --init MODEL --steps "
                               f"{args.finetune_steps} --batch 8 --threads 2",
                    **f}
                print(f"few-shot fine-tuned on {args.split} frames: AP50 {f['ap50']:.3f} on "
                      "the rest")
        out["real"] = real
    write_json(args.out, out, indent=1)
    print(f"wrote {args.out}")
    if args.update_card:
        card = ModelCard.load(card_path)
        card.metrics = {**card.metrics, **{k: v for k, v in out.items() if k != "model"}}
        card.save(card_path)
        print(f"updated {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
