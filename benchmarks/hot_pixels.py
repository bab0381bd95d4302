"""The detector on frames with hot pixels: the hot-pixel step of the normalisation off and on.

An uncorrected sCMOS sensor has hot pixels (stuck bright, the same ones in every frame),
a long exposure collects cosmic-ray hits; both are single pixels of up to full scale.
The percentile stretch puts its top percentile on them once they are more than 0.2 % of
the frame, and the network takes them for signal. :func:`inscope.detector.preprocess.
normalise` lowers every pixel more than ``hot_pixel_sigma`` (the card's normalisation;
default 8) camera-noise sigma above all its neighbours first. This scores the shipped
network with the step off and on, side by side on the same frames:

* simulated 512 x 512 frames (``detector.datasets.simulated_samples``, seeds 980000 on),
  a fraction of their pixels set to 65,535 at random (0 to 1 %);
* with ``--real STACK.npz``, the annotated real frames the same way (unmatched boxes
  touching the border not counted, as in ``eval_model``);

AP50 over all boxes >= 0.05, recall and unmatched boxes per frame at the card's
threshold; and what the step costs in ``normalise`` (512 x 512 and 2048 x 2048 uint16,
alternating blocks).

Run::

    python -m benchmarks.hot_pixels [--real STACK.npz]     # ~2 min on 2 cores
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._common import alternating_blocks, load_average, scoring_setup, write_json

OUT = Path("benchmarks/results/hot_pixels.json")
SEED = 980000
FRACTIONS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2)


def sim_frames(n: int) -> list:
    """*n* simulated frames as samples (objects less than a quarter in view difficult)."""
    from inscope.detector.datasets import simulated_samples

    return list(simulated_samples(n, seed=SEED))


def score(det, samples, frac: float, thr: float, border: bool) -> dict:
    """AP50 and, at *thr*, precision, recall and unmatched boxes per frame, with *frac*
    of every frame's pixels set to the type's maximum (the same pixels for both arms)."""
    from inscope.detector.metrics import evaluate

    preds = []
    for k, s in enumerate(samples):
        x = np.array(s.image, copy=True)
        top = np.iinfo(x.dtype).max if x.dtype.kind in "ui" else float(x.max()) * 4
        x[np.random.default_rng(k).random(x.shape) < frac] = top
        d = det.detect(x)
        preds.append((d.boxes, d.scores))
    r = evaluate(preds, [s.boxes for s in samples], score_threshold=thr,
                 ignore_border_fp=border, shapes=[s.image.shape for s in samples],
                 difficult=[s.difficult for s in samples])
    return {"ap50": round(r.ap50, 4), "precision": round(r.precision, 4),
            "recall": round(r.recall, 4), "false_per_frame": round(r.fp / len(samples), 2)}


def cost() -> dict:
    from inscope.detector.preprocess import normalise

    s = sim_frames(1)[0].image
    out = {}
    for reps in (1, 4):
        img = np.tile(s, (reps, reps))
        out[f"{img.shape[0]}x{img.shape[1]}"] = alternating_blocks({
            "step off": lambda img=img: normalise(img, {"hot_pixel_sigma": None}),
            "step on": lambda img=img: normalise(img, {"hot_pixel_sigma": 8.0})})
    return out


def main(argv: list[str] | None = None) -> int:
    args, det, thr, sets = scoring_setup(argv, __doc__, OUT, SEED)
    base = dict(det.card.normalisation)
    rows: dict[str, dict] = {}
    try:
        for name, frames, border in sets:
            rows[name] = {}
            for frac in FRACTIONS:
                row = {}
                for label, sigma in (("step off", None), ("step on", base.get(
                        "hot_pixel_sigma", 8.0))):
                    det.card.normalisation = {**base, "hot_pixel_sigma": sigma}
                    row[label] = score(det, frames, frac, thr, border)
                rows[name][f"{frac:.2%} hot"] = row
                print(name, f"{frac:.2%}", {k: (v["ap50"], v["recall"], v["false_per_frame"])
                                            for k, v in row.items()}, flush=True)
    finally:
        det.card.normalisation = base
    report = {
        "note": __doc__.split("\n\n")[1].replace("\n", " "),
        "score_threshold": thr, "seed": SEED, "frames": {k: len(f) for k, f, _ in sets},
        "hot_pixel_value": "the type's maximum (65,535 for uint16)",
        "results": rows,
        "normalise_ms": cost(),
        "loadavg": load_average(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
