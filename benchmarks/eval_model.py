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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


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
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/model_eval.json"))
    args = ap.parse_args(argv)
    model = args.model or default_model_path()

    from inscope.detector.card import ModelCard

    card_path = Path(model).with_suffix(".json")
    op = float(ModelCard.load(card_path).decoding.get("score_threshold", 0.3))
    out: dict = {"model": str(model), "note": f"P/R/F1 at the card's threshold {op}"}
    sim = simulated_samples(args.sim_frames)
    r = evaluate_model(model, sim, operating_threshold=op)
    r["all_objects"] = evaluate_model(model, sim, count_difficult=True,
                                      operating_threshold=op)
    r["frames"] = (f"{args.sim_frames} simulated 512x512 frames (default SimConfig, "
                   "0.65 um/px), seed 900000; difficult = less than 25% of the box in view")
    out["sim_heldout"] = r
    print(f"sim held-out: AP50 {r['ap50']:.3f} ({r['n_difficult']} difficult ignored), "
          f"all objects counted {r['all_objects']['ap50']:.3f}")
    if args.real:
        with tempfile.TemporaryDirectory() as tmp:
            tr, te = _split_stack(args.real, args.split, Path(tmp))
            real: dict = {"data": args.real.name, "ignore_border_fp": True}
            for key, data in (("frames_all", [args.real]), (f"frames_{args.split}_on", [te])):
                real[key] = evaluate_model(model, load_dataset(data), ignore_border_fp=True,
                                           operating_threshold=op)
                print(f"real {key}: AP50 {real[key]['ap50']:.3f}")
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.update_card:
        card = ModelCard.load(card_path)
        card.metrics = {k: v for k, v in out.items() if k != "model"}
        card.save(card_path)
        print(f"updated {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
