"""Two or more detector models side by side on frames none of them was chosen on.

Every network retrained so far scored below the shipped one on the 16 tuning frames
(seed 950000) while the held-out frames ranked them differently: those 16 frames are the
ones the shipped network was itself chosen on, so its lead there is partly the luck of
being chosen (winner's curse), and 16 frames move by more than the margins a keep/reject
rule uses. This script scores each model, with its own card decoding, threshold and
calibration, on a larger set of simulated frames drawn from seeds that no training,
tuning, choice or earlier comparison used, in one run:

* accuracy: *--frames* simulated 512² frames (default 64, seed 930000): AP50, mAP50-95,
  P / R at each model's threshold;
* box-centre jitter (:func:`benchmarks.bench_detector.measure_jitter`) on *--jitter-frames*
  simulated 560² frames (default 12, seed 940000);
* with ``--real STACK.npz``: the same on real frames, for the record only;
* with ``--control``: find-and-image on the simulator with each model
  (:func:`benchmarks.bench_control.bench_workflow`, a 400 µm region, seed 930 - not
  bench_control's reported seed 1): interior cells imaged exactly once, and where. A
  detector is for steering a microscope; a rule that judges detections alone can keep a
  network that loses cells there (the model card's 2026-12-05 paragraph).

    python -m benchmarks.compare_models shipped=detector/models/inscope-nuclei.onnx
        other=PATH.onnx [--real STACK.npz] [--control]
        [--out benchmarks/results/compare_models.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks._common import named_model, write_json

#: seeds of the comparison frames; keep them out of every other script's seeds
ACCURACY_SEED = 930000
JITTER_SEED = 940000
#: the simulator's seed for --control (bench_control reports seed 1)
CONTROL_SEED = 930


def control_on_simulator(model: Path, region_um: float = 400.0) -> dict:
    """Find-and-image on the simulator with *model*: the figures a rule can use."""
    from benchmarks.bench_control import _detector, bench_workflow, sim_maker

    r = bench_workflow(sim_maker(0.5), _detector(str(model)), CONTROL_SEED, 1.0, region_um)
    keep = ("interior_true_cells", "recall_interior", "interior_imaged_exactly_once",
            "true_cells_imaged_twice", "skip_reasons", "position_error_um")
    return {k: r[k] for k in keep}


def comparison_frames(frames: int, jitter_frames: int, real: Path | None, *,
                      accuracy_seed: int = ACCURACY_SEED, jitter_seed: int = JITTER_SEED
                      ) -> tuple[list, list, list | None, dict]:
    """The frames a side-by-side scores on: *frames* simulated 512² frames with truth,
    *jitter_frames* simulated 560² images, the *real* stack's samples (or None), and the
    report's header saying which (with the load average at the start)."""
    from inscope.detector.datasets import load_dataset, simulated_samples

    acc = simulated_samples(frames, seed=accuracy_seed)
    jit = [s.image for s in simulated_samples(jitter_frames, seed=jitter_seed,
                                              shape=(560, 560))]
    real_s = load_dataset([real]) if real is not None else None
    head = {"load_average_start": [round(v, 1) for v in os.getloadavg()],
            "accuracy_frames": f"{frames} simulated 512x512 frames, seed {accuracy_seed}",
            "jitter_frames": f"{jitter_frames} simulated 560x560 frames, seed {jitter_seed}",
            "real": real.name if real is not None else None}
    return acc, jit, real_s, head


def compare(models: list[tuple[str, Path]], *, frames: int = 64, jitter_frames: int = 12,
            real: Path | None = None, control: bool = False,
            control_region_um: float = 400.0) -> dict:
    """Score every model on the same frames; returns the report (see the module doc)."""
    from benchmarks.decode_variants import accuracy_and_jitter, cached_detector, summary_line

    acc, jit, real_s, head = comparison_frames(frames, jitter_frames, real)
    out: dict = {**head, "models": {}}
    t0 = time.monotonic()
    for name, path in models:
        det = cached_detector(path)
        op = float(det.card.decoding.get("score_threshold", 0.3))
        r: dict = {"file": path.name, "threshold": op,
                   **accuracy_and_jitter(det, acc, jit, real_s, op)}
        det.close()
        if control:
            r["control_sim"] = control_on_simulator(path, control_region_um)
        out["models"][name] = r
        once = r["control_sim"]["interior_imaged_exactly_once"] if control else None
        print(summary_line(name, r, t0)
              + (f"; find-and-image once {once}" if control else ""), flush=True)
    out["load_average_end"] = [round(v, 1) for v in os.getloadavg()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=named_model, metavar="NAME=MODEL.onnx")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--jitter-frames", type=int, default=12)
    ap.add_argument("--real", type=Path, default=None, help="annotated npz stack")
    ap.add_argument("--control", action="store_true",
                    help="also find-and-image on the simulator with each model (~90 s each)")
    ap.add_argument("--control-region", type=float, default=400.0, help="its region (µm)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compare_models.json"))
    args = ap.parse_args(argv)
    out = compare(args.models, frames=args.frames, jitter_frames=args.jitter_frames,
                  real=args.real, control=args.control,
                  control_region_um=args.control_region)
    print(f"wrote {write_json(args.out, out, indent=1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
