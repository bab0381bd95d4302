"""Where box jitter comes from, and which decoding the card ships: decode variants side by side.

The network's outputs do not depend on how they are decoded, so each distinct input is
run once (cached by its bytes) and every variant decodes the same outputs. Per variant:

* simulated *tuning* frames (16 frames 512², seed 950000: the calibration frames, neither
  training nor evaluation frames): AP50, mAP50-95, P / R at the card's threshold;
* box-centre jitter (:func:`benchmarks.bench_detector.measure_jitter`) on simulated
  560² frames (seed 970000), where the network sees the kind of image it was trained on;
* decoding time alone (p50 of 30 calls of :func:`~inscope.detector.decode.decode_centernet`
  on the network outputs of one 512² tuning frame and of a 2048² frame made of 16 of
  them, ~1,000 nuclei), in the same run for every variant;
* with ``--real STACK.npz``: the same on the real frames (AP over all frames, border FP
  ignored; jitter on frames 10-19), for the record only -- the choice uses simulated
  frames alone (rule below), never the real ones.

Rule for the card's default: the lowest simulated jitter whose simulated AP50 stays
within 0.001 of the previous decoding's.

    python -m benchmarks.decode_variants [--real STACK.npz]
        [--out benchmarks/results/decode_variants.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

#: name -> decoding overrides (on top of the card's); the first is the previous default
VARIANTS: dict[str, dict] = {
    "previous: 3x3 vote (hard agreement 0.75 cell), no NMS":
        {"centre_vote": 1, "vote_sigma": None, "merge_iou": None},
    "no vote (peak cell's own offset and size)":
        {"centre_vote": False, "vote_sigma": None, "merge_iou": None},
    "3x3 vote + NMS 0.5": {"centre_vote": 1, "vote_sigma": None, "merge_iou": 0.5},
    "5x5 vote, hard agreement 0.75": {"centre_vote": 2, "vote_sigma": None,
                                      "merge_iou": None},
    "5x5 vote, soft agreement sigma 0.5 + NMS 0.5":
        {"centre_vote": 2, "vote_sigma": 0.5, "merge_iou": 0.5},
    "5x5 vote, soft agreement sigma 0.75 + NMS 0.5":
        {"centre_vote": 2, "vote_sigma": 0.75, "merge_iou": 0.5},
    "5x5 vote, soft agreement sigma 1.0 + NMS 0.5":
        {"centre_vote": 2, "vote_sigma": 1.0, "merge_iou": 0.5},
    "5x5 peak kernel (3x3 vote)": {"centre_vote": 1, "vote_sigma": None,
                                   "merge_iou": None, "peak_kernel": 5},
}


def cached_detector(model: Path | None):
    """An OnnxDetector whose ``session.run`` results are reused for identical inputs."""
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(model, provider="cpu", threads=2)
    cache: dict[str, dict] = {}
    run = det._run

    def cached(x: np.ndarray) -> dict:
        key = hashlib.sha1(x.tobytes()).hexdigest() + str(x.shape)
        if key not in cache:
            cache[key] = run(x)
        return cache[key]

    det._run = cached
    return det


def score(det, samples, op: float, ignore_border_fp: bool) -> dict:
    from inscope.detector.metrics import evaluate

    det.score_threshold = 0.05
    preds = [(d.boxes, d.scores) for d in (det.detect(s.image) for s in samples)]
    r = evaluate(preds, [s.boxes for s in samples], score_threshold=op,
                 ignore_border_fp=ignore_border_fp, shapes=[s.image.shape for s in samples],
                 difficult=None if ignore_border_fp else [s.difficult for s in samples])
    return {"ap50": round(r.ap50, 4), "map50_95": round(r.map50_95, 4),
            "precision": round(r.precision, 4), "recall": round(r.recall, 4)}


def accuracy_and_jitter(det, sim: list, sim_jitter: list[np.ndarray], real: list | None,
                        op: float) -> dict:
    """AP on simulated frames (every object counted but the difficult), centre jitter on
    simulated frames, and with *real* the same on real frames (border FP ignored, jitter
    on frames 10-19), all at the threshold *op*."""
    from benchmarks.bench_detector import measure_jitter

    r: dict = {"sim": score(det, sim, op, False)}
    det.score_threshold = op
    r["sim_jitter"] = measure_jitter(det, sim_jitter)
    if real is not None:
        r["real"] = score(det, real, op, True)
        det.score_threshold = op
        r["real_jitter"] = measure_jitter(det, [s.image for s in real[10:]])
    return r


def summary_line(name: str, r: dict, t0: float) -> str:
    """One progress line for a result of :func:`accuracy_and_jitter`."""
    real = (f"; real AP50 {r['real']['ap50']:.4f} mAP {r['real']['map50_95']:.4f}, "
            f"jitter {r['real_jitter']['centre_rms_px']}" if "real" in r else "")
    return (f"{name}: sim AP50 {r['sim']['ap50']:.4f} mAP {r['sim']['map50_95']:.4f}, "
            f"sim jitter {r['sim_jitter']['centre_rms_px']}{real}"
            f"  ({time.monotonic() - t0:.0f} s)")


def decode_ms(det, frames: list[np.ndarray], spec: dict, repeats: int = 30) -> list[float]:
    """p50 (ms) of decoding alone, per frame, at the card's threshold."""
    from inscope.detector.decode import decode_centernet

    out = []
    for f in frames:
        x = np.zeros((1, 1, *f.shape), np.float32)
        det._normalise(f, out=x[0, 0])
        o = det._run(x)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            decode_centernet(o, spec, det.score_threshold)
            ts.append((time.perf_counter() - t) * 1e3)
        out.append(round(float(np.median(ts)), 3))
    return out


def main(argv: list[str] | None = None) -> int:
    from inscope.detector.datasets import load_dataset, simulated_samples

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--real", type=Path, default=None, help="annotated npz stack")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/decode_variants.json"))
    args = ap.parse_args(argv)
    det = cached_detector(args.model)
    base = dict(det.card.decoding)
    op = float(base.get("score_threshold", 0.3))
    tune = simulated_samples(16, seed=950000)
    sim_jit = [s.image for s in simulated_samples(6, seed=970000, shape=(560, 560))]
    real = load_dataset([args.real]) if args.real else None
    timing = [np.asarray(tune[0].image, np.float32),
              np.vstack([np.hstack([np.asarray(tune[4 * i + j].image, np.float32)
                                    for j in range(4)]) for i in range(4)])]
    out: dict = {"model": det.card.name, "threshold": op, "load_average_start":
                 [round(v, 1) for v in os.getloadavg()],
                 "tuning_frames": "16 simulated 512x512 frames, seed 950000",
                 "sim_jitter_frames": "6 simulated 560x560 frames, seed 970000",
                 "real": args.real.name if args.real else None, "variants": {}}
    t0 = time.monotonic()
    for name, over in VARIANTS.items():
        det.card.decoding = {**base, **over}
        r: dict = {"decoding": over, **accuracy_and_jitter(det, tune, sim_jit, real, op)}
        r["decode_ms_p50"] = dict(zip(("512x512", "2048x2048"),
                                      decode_ms(det, timing, det.card.decoding),
                                      strict=True))
        out["variants"][name] = r
        print(summary_line(name, r, t0), flush=True)
    det.card.decoding = base
    det.close()
    v = out["variants"]
    first = next(iter(v.values()))["sim"]["ap50"]
    ok = {k: r for k, r in v.items() if r["sim"]["ap50"] >= first - 0.001}
    out["chosen_by_rule"] = min(ok, key=lambda k: ok[k]["sim_jitter"]["centre_rms_px"])
    out["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    print(f"rule (lowest simulated jitter, simulated AP50 within 0.001): "
          f"{out['chosen_by_rule']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
