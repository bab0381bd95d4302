"""Decoding time of a frame with thousands of nuclei: this tree against a git revision.

At 2048 x 2048 the network's outputs hold thousands of peaks (the model card's frame:
HeLa frame 0 at half size, a 512 x 512 window tiled 4 x 4, ~3,000), and decoding them
(peaks, centre vote, duplicate suppression) runs on the CPU whatever provider runs the
network: on the H200 it was a third of the
whole ``detect()`` (post 6.4 of 18.9 ms p50, ``benchmarks/results/gpu.json``). This
bench decodes the same network outputs with ``detector/decode.py`` of the working tree
and of ``--rev`` (imported from ``git show``), alternating blocks of 10 runs so both see
the same machine, and checks that both give the same boxes.

Run::

    python -m benchmarks.bench_decode --rev HEAD~1 [--data STACK.npz] [--repeats 300]

Without ``--data`` the frame is the simulator's, 2048 x 2048 at the default density
(fewer nuclei than the HeLa tiling). Writes ``benchmarks/results/decode_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import load_average, module_at, percentiles, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "decode_speed.json"


def hela_2048(stack: Path) -> np.ndarray:
    """The model card's 2048 x 2048 frame (:func:`benchmarks.eval_model.card_large_frame`)
    from the stack's first frame."""
    from benchmarks.eval_model import card_large_frame

    return card_large_frame(np.load(stack)["images"][0])[1]


def sim_2048(seed: int) -> np.ndarray:
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=seed, shape=(2048, 2048), realtime=False))
    try:
        return scope.snap().pixels
    finally:
        scope.close()


def network_outputs(frame: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any], float]:
    """The shipped network's outputs for *frame* (one pass), its card's decoding and
    threshold."""
    from inscope.detector.onnx_detector import load_detector

    det = load_detector(None, provider="cpu", threads=2)
    h, w = frame.shape
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    buf = np.zeros((1, 1, hp, wp), np.float32)
    det._normalise(frame, out=buf[0, 0, :h, :w])
    out = det._run(buf)
    dec = dict(det.card.decoding)
    return out, dec, float(dec["score_threshold"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the revision to compare with")
    ap.add_argument("--data", type=Path, default=None,
                    help="HeLa stack (npz with 'images'): its card frame instead of the "
                         "simulator's")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from inscope.detector import decode as here

    frame = hela_2048(args.data) if args.data else sim_2048(args.seed)
    out, dec, thr = network_outputs(frame)
    with tempfile.TemporaryDirectory() as tmp:
        old = module_at(args.rev, "detector/decode.py", Path(tmp))
        impls = {"this tree": here.decode_centernet, args.rev: old.decode_centernet}
        got = {k: f(out, dec, thr) for k, f in impls.items()}
        times: dict[str, list[float]] = {k: [] for k in impls}
        block = 10
        for _ in range(-(-args.repeats // block)):
            for k, f in impls.items():  # alternating blocks: both see the same minutes
                for _ in range(block):
                    t = time.perf_counter()
                    f(out, dec, thr)
                    times[k].append((time.perf_counter() - t) * 1e3)
    (b0, s0, _), (b1, s1, _) = got.values()
    same_n = len(b0) == len(b1)
    report = {
        "benchmark": "bench_decode",
        "frame": ("HeLa frame 0 at half size, a 512 x 512 window (256 rows + their "
                  "mirror) tiled 4 x 4: the model card's" if args.data
                  else f"simulator seed {args.seed}, 2048 x 2048"),
        "shape": list(frame.shape),
        "boxes": {k: len(v[0]) for k, v in got.items()},
        "same_boxes": bool(same_n and np.array_equal(s0, s1)),
        "max_box_difference_px": float(np.abs(b0 - b1).max()) if same_n and len(b0) else None,
        "decode_ms": {k: percentiles(v) for k, v in times.items()},
        "repeats": args.repeats, "block": block, "threads": "numpy (one)",
        "load_average": load_average(),
        # (the data file by name only: no path of this machine in the record)
        "command": f"python -m benchmarks.bench_decode --rev {args.rev} --repeats "
                   f"{args.repeats}" + (f" --data {args.data.name}" if args.data else
                                        f" --seed {args.seed}"),
    }
    for k, v in report["decode_ms"].items():
        print(f"{k:>12}: decode p50 {v['p50']:.2f}  p90 {v['p90']:.2f}  p99 {v['p99']:.2f}  "
              f"max {v['max']:.2f} ms  ({report['boxes'][k]} boxes)")
    print(f"same boxes: {report['same_boxes']} (largest difference "
          f"{report['max_box_difference_px']} px)")
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
