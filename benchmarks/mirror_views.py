"""The shipped model with 1, 2 and 4 mirror views, side by side in one run.

``OnnxDetector(mirror_views=N)`` averages the network's outputs over the frame and its
mirror images (:mod:`inscope.detector.mirror`). This script measures what that buys and
costs, the same network and card for every N:

* accuracy on *--frames* simulated 512² frames (seed 960000): AP50, mAP50-95, P / R at
  the card's threshold (the threshold and calibration were fitted on one view);
* box-centre jitter (:func:`benchmarks.bench_detector.measure_jitter`) on
  *--jitter-frames* simulated 560² frames (seed 961000);
* expected calibration error of the scores on the accuracy frames;
* mirror consistency: how far the boxes of a mirrored frame, mirrored back, lie from
  the frame's own (the first 8 accuracy frames);
* with ``--real STACK.npz``: the same on real frames (border FP ignored, jitter on frames
  10 on), for the record: nothing here was chosen on them;
* latency of the whole ``detect()`` at 512² and 2048² (one pass), the detectors in
  alternating blocks of 10 calls (this VM is noisy: only a side-by-side is compared).

No setting is chosen by this script: mirror views are an option (default 1), and the
figures say what each N gives.

    python -m benchmarks.mirror_views [--real STACK.npz] [--frames 32]
        [--jitter-frames 8] [--out benchmarks/results/mirror_views.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks._common import percentiles, write_json

#: seeds of this script's simulated frames (no training, tuning or choice used them)
ACCURACY_SEED = 960000
JITTER_SEED = 961000
VIEWS = (1, 2, 4)


def _ece(det, samples, ignore_border_fp: bool) -> float:
    from inscope.detector.calibration import collect, expected_calibration_error

    sd = collect(det, samples, ignore_border_fp=ignore_border_fp)
    return round(expected_calibration_error(sd.scores, sd.correct), 4)


def mirror_consistency(det, images: list) -> dict:
    """How far the boxes of a mirrored frame, mirrored back, lie from the frame's own
    (px, any box edge, each box to its nearest; left-right and up-down mirrors pooled):
    zero for a detector that commutes with the mirror, as averaging a set of views
    closed under it makes it (up to the normalisation's stride-4 sample)."""
    import numpy as np

    det.score_threshold = None
    d = []
    for img in images:
        h, w = img.shape
        base = det.detect(img).boxes
        for lr, ud in ((True, False), (False, True)):
            b = det.detect(np.ascontiguousarray(img[::-1 if ud else 1, ::-1 if lr else 1]))
            b = b.boxes.copy()
            if lr:
                b[:, [0, 2]] = w - 1 - b[:, [2, 0]]
            if ud:
                b[:, [1, 3]] = h - 1 - b[:, [3, 1]]
            if len(base) and len(b):
                d.append(np.abs(base[:, None, :] - b[None, :, :]).max(-1).min(1))
    return percentiles(np.concatenate(d), digits=3) or {}


def latency(dets: dict[int, object], sizes=(512, 2048), blocks: int = 10,
            block: int = 10) -> dict:
    """``detect()`` ms per size and number of views, in alternating blocks of *block*
    calls on the same simulated frame (the first call of each block not timed)."""
    from inscope.detector.datasets import simulated_samples

    out: dict = {}
    for size in sizes:
        img = simulated_samples(1, seed=ACCURACY_SEED + size,
                                shape=(size, size))[0].image
        ts: dict[int, list[float]] = {v: [] for v in dets}
        for _ in range(blocks):
            for v, det in dets.items():
                det.detect(img)
                for _ in range(block):
                    t = time.perf_counter()
                    det.detect(img)
                    ts[v].append((time.perf_counter() - t) * 1e3)
        out[str(size)] = {f"views_{v}": percentiles(t, digits=2) for v, t in ts.items()}
        base = out[str(size)]["views_1"]["p50"]
        for v in dets:
            if v != 1:
                out[str(size)][f"views_{v}_over_1_p50"] = round(
                    out[str(size)][f"views_{v}"]["p50"] / base, 2)
    out["_how"] = (f"whole detect() of one simulated frame per size, {blocks} alternating "
                   f"blocks of {block} calls per detector, 2 intra-op threads, CPU")
    return out


def run(frames: int, jitter_frames: int, real: Path | None) -> dict:
    from benchmarks.compare_models import comparison_frames
    from benchmarks.decode_variants import accuracy_and_jitter
    from inscope.detector.onnx_detector import OnnxDetector

    acc, jit, real_s, head = comparison_frames(frames, jitter_frames, real,
                                               accuracy_seed=ACCURACY_SEED,
                                               jitter_seed=JITTER_SEED)
    out: dict = {**head, "views": {}}
    t0 = time.monotonic()
    dets = {v: OnnxDetector(provider="cpu", threads=2, mirror_views=v) for v in VIEWS}
    for v, det in dets.items():
        op = float(det.card.decoding.get("score_threshold", 0.3))
        r: dict = {"threshold": op, **accuracy_and_jitter(det, acc, jit, real_s, op)}
        r["sim_ece"] = _ece(det, acc, False)
        r["sim_mirror_consistency_px"] = mirror_consistency(det, [s.image for s in acc[:8]])
        if real_s is not None:
            r["real_ece"] = _ece(det, real_s, True)
        out["views"][str(v)] = r
        line = (f"{v} view(s): sim AP50 {r['sim']['ap50']:.4f} mAP {r['sim']['map50_95']:.4f}"
                f" jitter {r['sim_jitter']['centre_rms_px']} ECE {r['sim_ece']}")
        if real_s is not None:
            line += (f"; real AP50 {r['real']['ap50']:.4f} mAP {r['real']['map50_95']:.4f}"
                     f" jitter {r['real_jitter']['centre_rms_px']} ECE {r['real_ece']}")
        print(f"{line}  ({time.monotonic() - t0:.0f} s)", flush=True)
    out["latency_ms"] = latency(dets)
    print({k: v for k, v in out["latency_ms"].items() if k != "_how"}, flush=True)
    for det in dets.values():
        det.close()
    out["load_average_end"] = [round(v, 1) for v in os.getloadavg()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--jitter-frames", type=int, default=8)
    ap.add_argument("--real", type=Path, default=None, help="annotated npz stack")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mirror_views.json"))
    args = ap.parse_args(argv)
    report = run(args.frames, args.jitter_frames, args.real)
    report["command"] = ("python -m benchmarks.mirror_views --frames "
                         f"{args.frames} --jitter-frames {args.jitter_frames}"
                         + (f" --real {args.real.name}" if args.real else ""))
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
