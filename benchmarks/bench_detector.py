"""Detector benchmark: latency per input size and provider, plus accuracy, side by side.

Runs the shipped ONNX model (on every execution provider that really runs here) and the
classical baseline on the *same* frames in one process, interleaving the detectors frame
by frame so a noisy, shared machine penalises them alike. For each detector and size it
reports p50 / p90 / p99 / max of the whole ``detect()`` call and, separately, of
pre-processing, ``session.run`` and decoding (``last_timing``); pre + post is the price
of everything that is not the network. Accuracy (AP50 VOC, mAP50-95, P/R/F1) is measured
on simulated held-out frames and, when given, on an annotated file (``--data`` or the
``INSCOPE_EVAL_DATA`` environment variable; never required).

    python -m benchmarks.bench_detector [--sizes 256 512 1024 2048] [--repeats N]
        [--threads 2] [--model PATH] [--data FILE] [--sim-frames 8]
        [--out benchmarks/results/detector.json] [--no-reference]

A random-weight plain-convolution CNN with about the shipped model's parameter count
("reference-cnn", latency only) is measured too, so the network's cost is known even
where no trained model is shipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import named_model, percentiles, write_json
from inscope.enums import Spinning


def _pct(values) -> dict[str, float]:
    return percentiles(values) or {}


# -- frames ----------------------------------------------------------------------------
def synthetic_scene(size: int, seed: int, diameter: float = 24.0) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """A uint16 field of elliptical 'nuclei' (textured, varied brightness) with boxes.

    Used when the simulated microscope is not installed; rendered with OpenCV.
    """
    import cv2

    rng = np.random.default_rng(seed)
    n = int(size * size / (diameter * 3.2) ** 2)
    img = np.zeros((size, size), np.float32)
    boxes = []
    for _ in range(n):
        cx, cy = rng.uniform(diameter, size - diameter, 2)
        a, b = diameter / 2 * rng.uniform(0.7, 1.3, 2)
        ang = rng.uniform(0, 180)
        cv2.ellipse(img, (int(cx * 16), int(cy * 16)), (int(a * 16), int(b * 16)), ang, 0,
                    360, float(rng.uniform(0.3, 1.0)), -1, cv2.LINE_AA, 4)
        pts = cv2.ellipse2Poly((int(cx), int(cy)), (int(a), int(b)), int(ang), 0, 360, 10)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        boxes.append([x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5])  # pixel centres at integers
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img = 300 + 3000 * img + rng.normal(0, 30, img.shape)
    return np.clip(img, 0, 65535).astype(np.uint16), np.asarray(boxes, np.float32)


def frames_for(size: int, k: int, sim: list | None) -> list[np.ndarray]:
    """*k* frames of size x size: simulated frames tiled/cropped to size, or synthetic."""
    out = []
    for i in range(k):
        if sim:
            base = sim[i % len(sim)].image
            reps = (int(np.ceil(size / base.shape[0])), int(np.ceil(size / base.shape[1])))
            out.append(np.ascontiguousarray(np.tile(base, reps)[:size, :size]))
        else:
            out.append(synthetic_scene(size, 1000 + i)[0])
    return out


# -- detectors -------------------------------------------------------------------------
def build_reference_cnn(folder: Path) -> Path:
    """A random-weight CenterNet-sized CNN (88,039 parameters, 0.77 GMAC at 512x512:
    ``python -m benchmarks.model_cost``).

    Latency reference only (its boxes mean nothing): it has the shape of the shipped
    model class (3x3 convs 16-32-32-32-64-64 with strides 2, 2, 2, a 2x upsample, a
    64->32 conv, 1x1 heatmap/size heads), so its ``session.run`` time is what a trained
    model of that size costs here. Built with onnx.helper (the ``test`` extra).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from inscope.detector.card import ModelCard, sha256_file

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, act=True) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k)))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not act:
            return f"{name}_c"
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))
        return name

    x = conv("image", 1, 16, 3, 2, "c1")
    x = conv(x, 16, 32, 3, 2, "c2")
    x = conv(x, 32, 32, 3, 1, "c3")
    x = conv(x, 32, 64, 3, 2, "c4")
    x = conv(x, 64, 64, 3, 1, "c5")
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"))
    nodes.append(helper.make_node("Resize", [x, "", "up_scales"], ["up"], mode="nearest"))
    x = conv("up", 64, 32, 3, 1, "c6")
    hm = conv(x, 32, 1, 1, 1, "hm", act=False)
    nodes.append(helper.make_node("Sigmoid", [hm], ["heatmap"]))
    sz = conv(x, 32, 2, 1, 1, "sz", act=False)
    nodes.append(helper.make_node("Relu", [sz], ["size"]))
    graph = helper.make_graph(
        nodes, "reference_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 1, "h", "w"]),
         helper.make_tensor_value_info("size", TensorProto.FLOAT, ["N", 2, "h", "w"])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "reference-cnn.onnx"
    onnx.save(model, str(path))
    n_params = int(sum(np.prod(i.dims) for i in inits))
    ModelCard(name="reference-cnn", format="inscope-centernet", classes=["cell"],
              input={"name": "image", "channels": 1, "size": None, "multiple": 32,
                     "layout": "NCHW"},
              scale={"object_size_px": [16, 48]},
              decoding={"stride": 4, "score_threshold": 0.5, "max_detections": 500},
              training={"note": f"random weights, {n_params} parameters: latency only"},
              sha256=sha256_file(path)).save(ModelCard.path_for(path))
    return path


def build_detectors(model: Path | None, threads: int | None, providers: list[str]):
    from inscope.detector.classical import ClassicalDetector
    from inscope.detector.onnx_detector import OnnxDetector, default_model_path
    from inscope.detector.providers import create_session

    dets: dict[str, object] = {}
    path = model or default_model_path()
    notes = []
    if path.exists():
        for prov in providers:
            try:
                if prov != "cpu":  # only providers that really run
                    create_session(path, prov, threads)
                d = OnnxDetector(path, provider=prov, threads=threads)
            except (RuntimeError, ValueError) as e:
                notes.append(f"{prov}: {e}")
                continue
            dets[f"{d.name}[{d.provider}]"] = d
    else:
        notes.append(f"model {path} not found: only the classical baseline is measured")
    dets["classical"] = ClassicalDetector()
    return dets, notes


def add_reference(dets: dict, threads: int | None, folder: Path, notes: list[str]) -> str:
    """Add the random-weight reference CNN (CPU); returns its key ('' if unavailable)."""
    from inscope.detector.onnx_detector import OnnxDetector

    try:
        d = OnnxDetector(build_reference_cnn(folder), provider="cpu", threads=threads)
    except ImportError as e:
        notes.append(f"reference CNN skipped ({e}; it needs the onnx package)")
        return ""
    key = "reference-cnn[cpu] (random)"
    dets[key] = d
    return key


def bench_latency(dets: dict, sizes: list[int], repeats: int, sim, warmup: int = 3) -> dict:
    from inscope.acquisition.frame import Frame

    res: dict = {name: {} for name in dets}
    for size in sizes:
        # Frames of one stream (same shape and pixel size), as the live loop passes them:
        # the ONNX detector then measures the object size once, not on every frame
        frames = [Frame(f, i, pixel_size_um=0.65) for i, f in enumerate(frames_for(size, 4, sim))]
        rec = {name: {"total": [], "pre": [], "run": [], "post": []} for name in dets}
        for d in dets.values():
            for i in range(warmup):
                d.detect(frames[i % len(frames)])
        for r in range(repeats):
            f = frames[r % len(frames)]
            for name, d in dets.items():  # interleaved: same frame, back to back
                t = time.perf_counter()
                d.detect(f)
                total = (time.perf_counter() - t) * 1e3
                tm = getattr(d, "last_timing", {})
                rec[name]["total"].append(total)
                for k in ("pre", "run", "post"):
                    rec[name][k].append(tm.get(f"{k}_ms", np.nan))
        for name in dets:
            r = rec[name]
            overhead = np.asarray(r["total"]) - np.asarray(r["run"])
            res[name][str(size)] = {
                "total_ms": _pct(r["total"]), "pre_ms": _pct(r["pre"]),
                "run_ms": _pct(r["run"]), "post_ms": _pct(r["post"]),
                "not_run_ms": _pct(overhead)}
    return res


def bench_accuracy(dets: dict, samples: list, ignore_border_fp: bool) -> dict:
    from inscope.detector.eval_cli import evaluate_detector

    out = {}
    for name, d in dets.items():
        card = getattr(d, "card", None)
        op = float(card.decoding.get("score_threshold", 0.3)) if card is not None else 0.0
        keep = getattr(d, "score_threshold", None)
        if card is not None:
            d.score_threshold = 0.05  # collect the whole PR curve
        try:
            r, _, _ = evaluate_detector(d, samples, score_threshold=op,
                                        ignore_border_fp=ignore_border_fp)
        finally:
            if card is not None:
                d.score_threshold = keep
        ap_img = np.array([x.ap50 for x in r.per_image], float)
        out[name] = {"ap50": r.ap50, "map50_95": r.map50_95, "precision": r.precision,
                     "recall": r.recall, "f1": r.f1, "tp": r.tp, "fp": r.fp, "fn": r.fn,
                     "score_threshold": op,
                     "per_image_ap50": _pct(ap_img[np.isfinite(ap_img)])}
    return out


# -- the network alone against YOLO11n -------------------------------------------------
def build_yolo11n(folder: Path, imgsz: int = 512) -> Path:
    """YOLO11n (Ultralytics ``yolo11n.yaml``, 1 class, random weights) as ONNX.

    Built from the architecture file that ships inside the ``ultralytics`` package (the
    optional ``yolo`` extra), so nothing is downloaded; the weights do not change the
    cost of ``session.run``. Exported like ``model.export(format="onnx")``: opset 17,
    BatchNorm fused, output (1, 5, N).
    """
    import warnings

    import torch
    from ultralytics.nn.tasks import DetectionModel

    m = DetectionModel("yolo11n.yaml", nc=1, verbose=False).eval()
    for mod in m.modules():
        if hasattr(mod, "export"):
            mod.export = True
        if hasattr(mod, "format"):
            mod.format = "onnx"
    m = m.fuse(verbose=False)
    path = folder / "yolo11n.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 3, imgsz, imgsz),), str(path),
                          input_names=["images"], output_names=["output0"],
                          opset_version=17, dynamo=False)
    return path


def session_run_side_by_side(models: dict[str, Path], hw: int = 512, threads: int = 2,
                             blocks: int = 30, block: int = 10,
                             spinning: str | Sequence[str] = "off") -> dict:
    """``session.run`` latency (ms) of several ONNX models, measured in alternating blocks.

    Running *block* calls of one model, then *block* of the next, ... lets each thread
    pool settle, whereas interleaving single calls of two pools slows both. With
    *spinning* (ORT's default) the idle pool of one session still spins for a while
    after its block and competes with the next session's threads on a 2-core machine,
    so by default the comparison runs with spinning off in every session, as issue 18
    measured it (``--spinning on`` shows the difference). ``"run"`` spins only inside a
    run and stops when it returns, so it does not compete with the next block. Several
    modes (a sequence) time every model in each, keyed ``name@mode``, with the ratio of
    each mode to the first (``name@run_over_name@off_p50``). Sessions are made with the
    service's own options (:func:`inscope.detector.providers.session_options`). Inputs:
    random (1, C, hw, hw) float32 with each model's own channel count.
    """
    import onnxruntime as ort

    from inscope.detector.providers import session_options, spinning_mode

    modes = [spinning_mode(m) for m in ([spinning] if isinstance(spinning, str)
                                        else spinning)]
    sess, feeds = {}, {}
    for mode in modes:
        for model, path in models.items():
            name = model if len(modes) == 1 else f"{model}@{mode}"
            s = ort.InferenceSession(str(path), session_options(threads, mode),
                                     providers=["CPUExecutionProvider"])
            inp = s.get_inputs()[0]
            ch = inp.shape[1] if isinstance(inp.shape[1], int) else 1
            feeds[name] = {inp.name: np.random.default_rng(0).random((1, ch, hw, hw),
                                                                     dtype=np.float32)}
            sess[name] = s
            for _ in range(block):
                s.run(None, feeds[name])
    ts: dict[str, list[float]] = {n: [] for n in sess}
    for _ in range(blocks):
        for name, s in sess.items():
            s.run(None, feeds[name])  # first call after the other pool ran: not timed
            for _ in range(block):
                t = time.perf_counter()
                s.run(None, feeds[name])
                ts[name].append((time.perf_counter() - t) * 1e3)
    out = {n: percentiles(t, digits=3) or {} for n, t in ts.items()}
    for model in models if len(modes) > 1 else ():
        first = f"{model}@{modes[0]}"
        for mode in modes[1:]:
            out[f"{model}@{mode}_over_{first}_p50"] = round(
                out[f"{model}@{mode}"]["p50"] / out[first]["p50"], 3)
    out["_how"] = (f"{blocks} alternating blocks of {block} runs each, {hw}x{hw}, "
                   f"{threads} intra-op threads, spinning {' / '.join(modes)}")
    return out


# -- localisation stability ------------------------------------------------------------
#: shifts (dx, dy) in pixels: sub-pixel ones (spline-interpolated) and 1-10 px (exact)
JITTER_SHIFTS: tuple[tuple[float, float], ...] = (
    (0.25, 0.0), (0.5, 0.5), (0.0, 0.75), (0.33, 0.67),
    *((float(k), 0.0) for k in range(1, 11)), *((0.0, float(k)) for k in range(1, 11)),
    *((float(k), float(k)) for k in (1, 2, 3, 5, 7, 10)))


def measure_jitter(det, images: list[np.ndarray], crop: int = 512,
                   shifts=JITTER_SHIFTS, margin: float = 12.0) -> dict:
    """Box-centre jitter of the same nucleus when the image moves by *shifts*.

    For each image, a *crop* x *crop* window is detected at its base position and at
    every shift (sub-pixel shifts by cubic-spline interpolation of the whole frame, whole
    pixels by moving the window, so those are exact). Boxes are mapped back to the
    frame; each base detection at the detector's threshold, at least *margin* px inside
    every window, is followed through the shifts (nearest centre within a quarter of its
    size). Jitter = RMS distance of its centres from their own mean (px); "lost" = the
    fraction of (nucleus, shift) pairs in which it was not detected at all (score
    flicker around the threshold). Sizes jitter likewise (RMS of w, h about their mean).
    Also split up: RMS over the sub-pixel shifts alone and the rest (whole-pixel shifts
    and the base position),
    and the median of the nuclei's own RMS (whether a few nuclei or all of them move).
    """
    from scipy import ndimage

    shifts = [(0.0, 0.0), *shifts]
    devs, size_devs, sub, per_nucleus = [], [], [], []
    n_pairs = n_lost = 0
    max_dx = int(np.ceil(max(max(abs(a), abs(b)) for a, b in shifts)))
    for img in images:
        f = np.asarray(img, np.float32)
        H, W = f.shape
        y0, x0 = (H - crop - max_dx) // 2, (W - crop - max_dx) // 2
        if y0 < 0 or x0 < 0:
            raise ValueError(f"Jitter needs frames of at least {crop + max_dx} px a side; "
                             f"got {f.shape}.")
        per_shift = []
        for dx, dy in shifts:
            ix, iy = int(np.floor(dx)), int(np.floor(dy))
            fx, fy = dx - ix, dy - iy
            src = f
            if fx or fy:  # content at p appears at p - (fx, fy)
                src = ndimage.shift(f, (-fy, -fx), order=3, mode="nearest")
            win = src[y0 + iy:y0 + iy + crop, x0 + ix:x0 + ix + crop]
            d = det.detect(np.ascontiguousarray(win))
            b = d.boxes.astype(np.float64) + [x0 + dx, y0 + dy, x0 + dx, y0 + dy]
            per_shift.append(b)
        base = per_shift[0]
        lo_x, hi_x = x0 + max_dx + margin, x0 + crop - margin
        lo_y, hi_y = y0 + max_dx + margin, y0 + crop - margin
        inside = ((base[:, 0] >= lo_x) & (base[:, 2] <= hi_x) & (base[:, 1] >= lo_y)
                  & (base[:, 3] <= hi_y))
        for b0 in base[inside]:
            c0 = (b0[:2] + b0[2:]) / 2
            s0 = b0[2:] - b0[:2]
            cs, ss, fr = [c0], [s0], [False]
            for (dx, dy), b in zip(shifts[1:], per_shift[1:], strict=True):
                n_pairs += 1
                if not len(b):
                    n_lost += 1
                    continue
                c = (b[:, :2] + b[:, 2:]) / 2
                dist = np.hypot(*(c - c0).T)
                j = int(dist.argmin())
                if dist[j] > 0.25 * float(s0.min()):
                    n_lost += 1
                    continue
                cs.append(c[j])
                ss.append(b[j, 2:] - b[j, :2])
                fr.append(bool(dx % 1 or dy % 1))
            cs, ss = np.asarray(cs), np.asarray(ss)
            dev = np.hypot(*(cs - cs.mean(0)).T)
            devs.extend(dev)
            sub.extend(fr)
            per_nucleus.append(float(np.sqrt(np.mean(dev ** 2))))
            size_devs.extend(np.abs(ss - ss.mean(0)).ravel())
    d = np.asarray(devs)
    sub = np.asarray(sub, bool)

    def rms(v):
        return round(float(np.sqrt(np.mean(v ** 2))), 3) if len(v) else None

    return {"nuclei": int(len(d) and n_pairs // max(1, len(shifts) - 1)),
            "shifts": len(shifts) - 1, "pairs": int(n_pairs),
            "centre_rms_px": round(float(np.sqrt(np.mean(d ** 2))), 3) if len(d) else None,
            "centre_p99_px": round(float(np.percentile(d, 99)), 3) if len(d) else None,
            "centre_max_px": round(float(d.max()), 3) if len(d) else None,
            "size_rms_px": round(float(np.sqrt(np.mean(np.square(size_devs)))), 3)
            if size_devs else None,
            "lost_fraction": round(n_lost / max(n_pairs, 1), 4),
            "centre_rms_subpixel_shifts_px": rms(d[sub]),
            "centre_rms_whole_pixel_shifts_px": rms(d[~sub]),
            "median_nucleus_rms_px": round(float(np.median(per_nucleus)), 3)
            if per_nucleus else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: one per core)")
    p.add_argument("--providers", nargs="+", default=["tensorrt", "cuda", "cpu"],
                   help="providers to try; those that cannot run here are skipped")
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--data", type=Path, default=os.environ.get("INSCOPE_EVAL_DATA"),
                   help="annotated file for accuracy (env INSCOPE_EVAL_DATA); optional")
    p.add_argument("--sim-frames", type=int, default=8,
                   help="simulated held-out frames for accuracy (seed 900000; 0: none, "
                   "latency only)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/detector.json"))
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="leave out the random-weight reference CNN (latency only)")
    p.add_argument("--no-yolo", dest="yolo", action="store_false",
                   help="leave out the session.run comparison with YOLO11n (random "
                   "weights; needs the optional 'yolo' extra, skipped without it)")
    p.add_argument("--side-by-side", nargs="+", default=[], type=named_model,
                   metavar="NAME=MODEL.onnx",
                   help="more ONNX models timed in the session.run blocks beside the "
                   "model (e.g. previous=old.onnx: a before/after in one run)")
    p.add_argument("--spinning", action="append", choices=list(Spinning), default=None,
                   help="intra-op threads in the session.run side-by-side blocks: sleep "
                   "(off, the default: an idle spinning pool slows the other session), "
                   "spin while a run is in progress (run) or also after it (on); "
                   "repeatable: every model in each mode, side by side")
    p.add_argument("--jitter-frames", default="10:20", metavar="A:B",
                   help="frames of --data (an npz stack) for the box-centre jitter")
    args = p.parse_args(argv)

    import onnxruntime as ort

    from inscope.detector.datasets import HELD_OUT_SEED, load_dataset, simulated_samples

    dets, notes = build_detectors(args.model, args.threads, args.providers)
    tmp = tempfile.TemporaryDirectory()
    ref_key = add_reference(dets, args.threads, Path(tmp.name), notes) if args.reference \
        else ""
    for n in notes:
        print("note:", n)
    sim = None
    try:
        sim = simulated_samples(args.sim_frames, HELD_OUT_SEED)
        frames_from = "simulated microscope (seed 900000), tiled/cropped to each size"
    except Exception as e:  # noqa: BLE001 - the simulator is optional here
        print(f"note: simulated frames unavailable ({e}); using synthetic scenes")
        frames_from = "synthetic elliptical nuclei (benchmarks.bench_detector)"

    print(f"latency: {len(dets)} detectors x sizes {args.sizes} x {args.repeats} repeats, "
          "interleaved ...", flush=True)
    lat = bench_latency(dets, args.sizes, args.repeats, sim)

    acc: dict = {}
    scored = {k: d for k, d in dets.items() if k != ref_key}
    if sim:
        acc["simulated_held_out"] = bench_accuracy(scored, sim, ignore_border_fp=False)
    elif args.sim_frames:  # 0: latency only (an AP of no frames is not a number)
        syn = []
        from inscope.detector.datasets import Sample

        for i in range(args.sim_frames):
            img, b = synthetic_scene(512, 5000 + i)
            syn.append(Sample(img, b, None, f"synthetic{i}"))
        acc["synthetic"] = bench_accuracy(scored, syn, ignore_border_fp=False)
    if args.data:
        if Path(args.data).exists():
            acc[Path(args.data).name] = bench_accuracy(scored, load_dataset(args.data),
                                                       ignore_border_fp=True)
        else:
            print(f"note: --data {args.data} not found; skipped")

    # box-centre jitter under image shifts, on the real frames when given
    jitter: dict = {}
    model_keys = [k for k, d in dets.items() if k not in (ref_key, "classical")
                  and getattr(d, "provider", "") == "cpu"]
    if args.data and Path(args.data).exists() and str(args.data).endswith(".npz"):
        a, b = (int(v) for v in args.jitter_frames.split(":"))
        with np.load(args.data, allow_pickle=False) as z:
            jframes = list(z["images"][a:b])
        for k in model_keys:
            jitter[k] = {"data": f"{Path(args.data).name} frames {a}-{b - 1}",
                         **measure_jitter(dets[k], jframes)}
            print(f"jitter {k}: {jitter[k]}")

    # session.run alone, the shipped model against YOLO11n, alternating blocks
    side: dict = {}
    others: dict[str, Path] = dict(args.side_by_side)
    if args.yolo and model_keys:
        try:
            others["yolo11n"] = build_yolo11n(Path(tmp.name))
        except ImportError as e:
            notes.append(f"YOLO11n comparison skipped ({e}; pip install 'inscope[yolo]')")
    modes = args.spinning or ["off"]
    if (others or len(modes) > 1) and model_keys:
        side = session_run_side_by_side(
            {"model": dets[model_keys[0]].model_path, **others}, threads=args.threads or 2,
            spinning=modes)
        for name in others if len(modes) == 1 else ():
            side[f"{name}_over_model_p50"] = round(side[name]["p50"] / side["model"]["p50"],
                                                   2)
        if "yolo11n" in others and len(modes) == 1:  # the name earlier results used
            side["speedup_p50"] = side["yolo11n_over_model_p50"]
        print("session.run 512x512: " + "; ".join(
            f"{n} {v}" for n, v in side.items() if isinstance(v, dict)))

    # -- table -------------------------------------------------------------------------
    print(f"\n{'detector':<28} {'size':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} "
          f"{'run p50':>8} {'pre p50':>8} {'post p50':>8}   (ms)")
    for name, by_size in lat.items():
        for size, r in by_size.items():
            t = r["total_ms"]
            print(f"{name:<28} {size:>5} {t['p50']:>7.2f} {t['p90']:>7.2f} {t['p99']:>7.2f} "
                  f"{t['max']:>7.2f} {r['run_ms']['p50']:>8.2f} {r['pre_ms']['p50']:>8.2f} "
                  f"{r['post_ms']['p50']:>8.2f}")
    for where, by_det in acc.items():
        print(f"\naccuracy on {where}:")
        for name, a in by_det.items():
            print(f"  {name:<28} AP50 {a['ap50']:.3f}  mAP50-95 {a['map50_95']:.3f}  "
                  f"P {a['precision']:.3f}  R {a['recall']:.3f}  F1 {a['f1']:.3f} "
                  f"(score >= {a['score_threshold']:g})")

    meta = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__, "threads": args.threads,
        "available_providers": ort.get_available_providers(),
        "providers_running": sorted({getattr(d, "provider", "?") for d in dets.values()}),
        "frames": frames_from, "repeats": args.repeats, "notes": notes,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(args.out, {"meta": meta, "latency": lat, "accuracy": acc, "jitter": jitter,
                          "session_run_vs_yolo11n": side}, indent=1)
    print(f"\nwrote {args.out}")
    for d in dets.values():
        d.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
