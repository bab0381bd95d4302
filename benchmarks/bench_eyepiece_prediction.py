"""Boxes on time: how far the eyepiece box is from its moving cell when the display shows
it, with and without prediction.

The simulated microscope with cells moving at a fixed speed in random directions, the
shipped ONNX detector, the tracker, and the eyepiece renderer with a
:class:`inscope.predict.BoxPredictor` (see :func:`run_case` for the clock). For every drawn box
the benchmark takes the cell it belongs to (the nearest true box at exposure) and that
cell's true position when the display shows the box: the moment of drawing plus the
display lag (``display_lag_ms``, assumed true here). Both boxes come from the same draw:
the predicted one, and the detection box it was moved from (what the overlay drew before
prediction). A third figure asks what a display lag set to 0 ms would give (the shift
scaled to the shorter horizon).

Run::

    python -m benchmarks.bench_eyepiece_prediction \\
        --out benchmarks/results/eyepiece_prediction.json

The shared 2-core host makes the processing time noisy; the prediction measures it per
frame.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks._common import percentiles, write_json
from inscope.predict import BoxPredictor, Prediction


class RecordingPredictor(BoxPredictor):
    """A BoxPredictor that keeps what it drew and when (for the benchmark)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.records: list[tuple[object, Prediction, int]] = []

    def predict(self, r, draw_ns: int | None = None) -> Prediction:
        draw_ns = self.clock() if draw_ns is None else draw_ns
        p = super().predict(r, draw_ns)
        self.records.append((r.frame, p, draw_ns))
        return p


def _pct(v) -> dict | None:
    return percentiles(v, count=True)


def run_case(speed_um_s: float, frames: int = 300, display_lag_ms: float = 25.0,
             seed: int = 0, detector=None) -> dict:
    """One run; distances (camera px and µm) between drawn boxes and true cells.

    The simulator runs on its own clock (``realtime=False``), so a busy host cannot make
    it fall behind: each frame's ``ready`` stamp is set to the simulated end of its
    exposure, and the predictor's clock reads that plus the *measured* wall time this host
    took to detect, track and start drawing the frame. Display time = that + the display
    lag. Every frame is processed (no frames dropped, unlike the live loop when it is
    slower than the camera).
    """
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
    from inscope.control.tracking import Tracker
    from inscope.detector.onnx_detector import load_detector
    from inscope.eyepiece import EyepieceRenderer
    from inscope.outputs import Result

    cfg = SimConfig(seed=seed, realtime=False, cell_motion_um_per_s=speed_um_s,
                    dividing_fraction=0.0)
    scope = SimulatedMicroscope(cfg)
    det = detector or load_detector(None)
    tracker = Tracker()
    now = [0]
    pred = RecordingPredictor(display_lag_ms, clock=lambda: now[0])
    renderer = EyepieceRenderer((1280, 720), predictor=pred)
    interval = cfg.interval_ms / 1000
    processing_ms = []
    t0 = time.perf_counter()
    for i in range(frames):
        frame = scope.snap()
        frame.stamps["ready"] = int((frame.metadata["sim_time_s"] + interval) * 1e9)
        w0 = time.perf_counter_ns()
        dets = det.detect(frame)
        tracks = tracker.update(frame, dets)
        r = Result(frame, dets, tracks, seq=i)
        took = time.perf_counter_ns() - w0
        processing_ms.append(took / 1e6)
        now[0] = frame.stamps["ready"] + took
        renderer.render_result(r)
    wall = time.perf_counter() - t0
    px_um = scope.pixel_size_um
    err_pred, err_raw, err_nolag, horizons, shifts = [], [], [], [], []
    for frame, p, draw_ns in pred.records:
        if frame.truth is None or not len(frame.truth) or not len(p.boxes):
            continue
        # simulated time at display (the predictor's clock is the simulated one)
        t_disp = draw_ns * 1e-9 + display_lag_ms * 1e-3
        tb = np.asarray(frame.truth, float)
        tc = np.stack([(tb[:, 0] + tb[:, 2]) / 2, (tb[:, 1] + tb[:, 3]) / 2], 1)
        vis = np.asarray(frame.metadata["truth_visible_fraction"])
        ids = np.asarray(frame.metadata["truth_ids"])
        x0, y0, x1, y1 = (frame.position.x - 600, frame.position.y - 600,
                          frame.position.x + 600, frame.position.y + 600)
        cells = {c.id: c for c in scope.specimen.cells_near(x0, y0, x1, y1, t_disp)}
        raw = p.boxes - np.hstack([p.shift_px, p.shift_px])
        rc = np.stack([(raw[:, 0] + raw[:, 2]) / 2, (raw[:, 1] + raw[:, 3]) / 2], 1)
        pc = rc + p.shift_px
        ratio = (p.horizon_s - display_lag_ms * 1e-3) / p.horizon_s if p.horizon_s else 0
        nc = rc + p.shift_px * ratio
        for i in range(len(rc)):
            if not p.shift_px[i].any() and speed_um_s > 0:
                continue  # no track velocity yet: drawn as detected either way
            d = np.linalg.norm(tc - rc[i], axis=1)
            j = int(np.argmin(d))
            if d[j] > 8 or vis[j] < 0.99 or int(ids[j]) not in cells:
                continue  # no clear cell, or one cut by the field edge (box centre moves)
            true_px = frame.stage_to_pixel(np.array(cells[int(ids[j])].position(t_disp)))[0]
            err_raw.append(float(np.linalg.norm(rc[i] - true_px)))
            err_pred.append(float(np.linalg.norm(pc[i] - true_px)))
            err_nolag.append(float(np.linalg.norm(nc[i] - true_px)))
            shifts.append(float(np.linalg.norm(p.shift_px[i])))
        horizons.append(p.horizon_s * 1e3)
    return {
        "speed_um_s": speed_um_s, "frames": frames, "display_lag_ms": display_lag_ms,
        "pixel_size_um": px_um, "exposure_ms": cfg.exposure_ms, "wall_s": wall,
        "drawn": len(pred.records), "boxes": len(err_raw),
        "processing_ms": _pct(processing_ms),
        "horizon_ms": _pct(horizons),
        "shift_px": _pct(shifts),
        "error_px": {"without_prediction": _pct(err_raw), "with_prediction": _pct(err_pred),
                     "with_prediction_lag_set_0": _pct(err_nolag)},
        "error_um": {"without_prediction": _pct(np.asarray(err_raw) * px_um),
                     "with_prediction": _pct(np.asarray(err_pred) * px_um)},
    }


def main(argv: list[str] | None = None) -> int:
    from inscope.detector.onnx_detector import load_detector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/eyepiece_prediction.json"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--speeds", type=float, nargs="+", default=[0.0, 20.0, 60.0])
    ap.add_argument("--display-lag-ms", type=float, default=25.0)
    args = ap.parse_args(argv)
    det = load_detector(None)
    runs = [run_case(s, args.frames, args.display_lag_ms, detector=det) for s in args.speeds]
    print(f"{'µm/s':>5} {'boxes':>6} {'horizon p50':>11}  {'error px p50/p90/p99/max':>36}")
    for r in runs:
        for k, label in (("without_prediction", "without"), ("with_prediction", "with"),
                         ("with_prediction_lag_set_0", "with, lag set 0")):
            e = r["error_px"][k]
            if e is None:
                continue
            h = r["horizon_ms"]["p50"] if r["horizon_ms"] else float("nan")
            print(f"{r['speed_um_s']:5.0f} {r['boxes']:6d} {h:9.1f}ms  {label:>15} "
                  f"{e['p50']:.2f} / {e['p90']:.2f} / {e['p99']:.2f} / {e['max']:.2f}")
    report = {"benchmark": "eyepiece_prediction", "python": platform.python_version(),
              "cpu_count": __import__("os").cpu_count(),
              "note": "shared CPU: latency figures are noisy", "runs": runs}
    write_json(args.out, report, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
