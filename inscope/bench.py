"""``inscope bench``: latency of the whole loop, per stage, for every configuration.

Runs the real pipeline (acquisition thread, detect thread, control thread, ZMQ PUB
output on an ephemeral 127.0.0.1 port) on the simulated microscope and on Micro-Manager's
DemoCamera (pycromanager headless), for each model and each provider that really runs,
and reports side by side:

- per-stage latency p50/p90/p99/max: ready->dequeued (camera slot wait),
  detect (pre-processing + inference + decoding), detect_end->control_end (tracking,
  steering), ->published (fan-out), published->sent (JSON + ZMQ send, output thread),
  ready->move_commanded;
- end-to-end ready->published and ready->sent;
- pipeline overhead = (ready->published) - detect, the loop's own cost;
- throughput against the camera frame rate, and drops;
- CPU time per thread (detect, control, each output, the camera, ONNX Runtime's pool)
  and per process (the loop, the simulated camera process) over the measured frames.

``--backend demo`` runs the demo's configuration (:func:`inscope.commands.demo_config`:
the simulator starting off target and out of focus with drift, steer+focus with the
tour, every output: ZMQ, overlay video at the display rate, records).

Writes JSON (``--out``) and, with matplotlib (the ``plots`` extra), a latency CDF and a
per-stage timeline as PNG next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from inscope.config import ControlConfig
from inscope.enums import Backend, Mode, Stamp
from inscope.pipeline import STAGES, Pipeline
from inscope.stats import ns_to_ms

#: Stages drawn in the timeline plot, in order (label, start, end).
TIMELINE = (
    ("camera slot wait", Stamp.READY, Stamp.DEQUEUED),
    ("to detector", Stamp.DEQUEUED, Stamp.DETECT_START),
    ("detect", Stamp.DETECT_START, Stamp.DETECT_END),
    ("to control", Stamp.DETECT_END, Stamp.CONTROL_START),
    ("control", Stamp.CONTROL_START, Stamp.CONTROL_END),
    ("fan-out", Stamp.CONTROL_END, Stamp.PUBLISHED),
    ("JSON + send", Stamp.PUBLISHED, Stamp.SENT),
)


def _open(backend: str, exposure_ms: float, say, options: dict | None = None,
          mm: dict | None = None):
    from inscope.acquisition.factory import open_microscope

    options = dict(options or {})  # -o KEY=VALUE: the user's, over the defaults below
    if backend == "slide":
        slide_opts = {"exposure_ms": exposure_ms, **options}
        return open_microscope("slide", **slide_opts)  # a bad file or option: one clear error
    if backend == "sim":
        try:
            from inscope.acquisition.simulated import SimConfig
        except ImportError as e:
            say(f"skip sim: the simulated microscope is not available ({e}).")
            return None
        names = {f.name for f in dataclasses.fields(SimConfig)}
        opts: dict[str, Any] = {}
        if "exposure_ms" in names:
            opts["exposure_ms"] = exposure_ms
        if "seed" in names:
            opts["seed"] = 0
        return open_microscope("sim", **{**opts, **options})
    mm = {k: v for k, v in (mm or {}).items() if v}
    if mm or options:  # the user's own Micro-Manager or settings: errors are errors
        return open_microscope("headless", **{"exposure_ms": exposure_ms, **mm, **options})
    try:
        return open_microscope("headless", exposure_ms=exposure_ms,
                               camera_properties={"Mode": "Fluorescent Beads",
                                                  "PixelType": "16bit"})
    except Exception as e:  # noqa: BLE001 - any missing piece: skip with the reason
        say(f"skip headless: pycromanager headless DemoCamera is not available ({e}); "
            "pip install pycromanager pymmcore mm-test-adapters.")
        return None


def _detectors(models: list[str], providers: list[str] | None, say,
               spinning: bool | str | None = None, mirror_views: int = 1,
               enlarge_below_px: float | None = None):
    """Yield (label, detector) for each model x provider that really runs (ONNX models
    with *mirror_views* and *enlarge_below_px*; the classical baseline as it is)."""
    from inscope.detector.onnx_detector import load_detector

    for m in models:
        if m == "classical":
            yield "classical", load_detector("classical")
            continue
        path = None if m == "default" else m
        provs = providers or ["tensorrt", "cuda", "cpu"]
        seen = set()
        for prov in provs:
            try:
                det = load_detector(path, provider=prov, spinning=spinning,
                                    mirror_views=mirror_views,
                                    enlarge_below_px=enlarge_below_px)
            except FileNotFoundError as e:
                say(f"skip model {m}: {e}")
                break
            except Exception as e:  # noqa: BLE001 - provider cannot run here
                say(f"skip model {m} on {prov}: {str(e).splitlines()[0][:160]}")
                continue
            if det.provider in seen:
                det.close()
                continue
            seen.add(det.provider)
            yield m, det


def _spinning(det) -> str | None:
    """What the detector's ONNX Runtime session's idle threads really do ("off", "run",
    "on"; None: no ONNX Runtime session)."""
    from inscope.detector.providers import session_spinning

    session = getattr(det, "session", None)
    return None if session is None else str(session_spinning(session))


def _measure(p: Pipeline, scope, warmup_frames: int = 5) -> tuple[dict, dict]:
    """Run *p* to its end; CPU usage over the frames after *warmup_frames*."""
    from inscope import cputime

    def others():
        cam = getattr(scope, "camera_process", None)
        return {"simulated camera process": getattr(cam, "pid", None)}

    snaps: list = []
    user_cb = p.on_result
    shape: list[int] = []

    def on_result(r) -> None:
        if not shape:  # the frame size the latencies are for
            shape.extend(int(v) for v in r.frame.shape[:2])
        # the last frame's snapshot is taken in the detect thread, while every thread of
        # the loop is still alive (once the run ends they are gone from /proc)
        if p.max_frames is not None and p.processed >= p.max_frames and len(snaps) == 1:
            snaps.append(cputime.snapshot(others()))
        if user_cb is not None:
            user_cb(r)

    p.on_result = on_result
    p.start()
    try:
        t = time.monotonic()
        while p.processed < warmup_frames and p.running and time.monotonic() - t < 60:
            time.sleep(0.01)
        snaps.append(cputime.snapshot(others()))
        p.wait()
    except KeyboardInterrupt:
        p.request_stop("interrupted (Ctrl-C)")
        raise
    finally:
        p.stop()
    if len(snaps) == 1:
        snaps.append(cputime.snapshot(others()))
    a, b = snaps[0], snaps[1]
    summary = p.summary()
    summary["frame_shape"] = shape or None  # [height, width] of the frames detected
    return summary, cputime.usage(a, b)


def run_config(scope, detector, frames: int, mode: str = Mode.STEER,
               warmup: int = 15, outputs=None, director=None,
               control: ControlConfig | None = None) -> tuple[dict, list[dict]]:
    """One configuration: a short warm-up run, then *frames* measured frames."""
    from inscope.zmq_api import PubOutput

    Pipeline(scope, detector, control=ControlConfig(mode=Mode.OFF),
             outputs=[PubOutput(port=0)], frames=warmup).run()
    outs = outputs if outputs is not None else [PubOutput(port=0)]
    ctl = control or ControlConfig(mode=mode)
    p = Pipeline(scope, detector, control=ctl, outputs=outs, frames=frames,
                 director=director)
    s, cpu = _measure(p, scope)
    return _result(s, cpu), [dict(r) for r in p.records]


def run_demo(frames: int, models: list[str], say,
             spinnings: tuple[str, ...] = (),
             mirror_views: int = 1, enlarge_below_px: float | None = None
             ) -> list[tuple[dict, list[dict]]]:
    """The demo's configuration (all outputs, steer+focus, the tour) for each model (and
    each ONNX Runtime spinning mode in *spinnings*, ``"off"``/``"run"``/``"on"``; empty:
    the demo's own), ONNX models with *mirror_views* and *enlarge_below_px*."""
    import tempfile

    from inscope.commands import demo_config
    from inscope.service import build_service
    from inscope.tour import Tour

    out = []
    for m, spin in [(m, s) for s in (spinnings or (None,)) for m in models]:
        with tempfile.TemporaryDirectory(prefix="inscope-bench-demo-") as tmp:
            cfg = demo_config(tmp)
            cfg.detector.model = None if m == "default" else m
            if spin is not None:
                cfg.detector.spinning = spin
            if m != "classical":
                cfg.detector.mirror_views = mirror_views
                cfg.detector.enlarge_below_px = enlarge_below_px
            cfg.outputs.zmq.pub_port = cfg.outputs.zmq.rep_port = 0
            cfg.outputs.window = False
            svc = build_service(cfg, say=say, director=Tour())
            try:
                say(f"bench demo | {svc.detector.name} on "
                    f"{getattr(svc.detector, 'provider', '?')}: "
                    f"{frames} frames ...")
                p = svc.pipeline
                p.max_frames = frames
                spinning = _spinning(svc.detector)
                s, cpu = _measure(p, svc.scope)
            finally:
                svc.close()
            recs = [dict(r) for r in p.records]
            for o in s["outputs"].values():  # the temporary folder is gone: no paths
                for key in ("video", "detections", "frames"):
                    o.pop(key, None)
            res = _result(s, cpu)
            res["model"] = m
            if spinning is not None:
                res["detector"]["spinning"] = spinning
            _add_scale(res, svc.detector)  # (closing keeps last_scale)
            res["microscope"] = "demo: " + res["microscope"]
            out.append((res, recs))
    return out


def _add_scale(res: dict, det) -> None:
    """The factor the detector resized the last frames by (its automatic scale: 1 for
    most; small nuclei are enlarged, at the factor's square in time), the enlargement
    size given (None: the card's) and its mirror views (1: the frame alone)."""
    res["detector"]["scale"] = round(float(getattr(det, "last_scale", 1.0)), 3)
    res["detector"]["enlarge_below_px"] = getattr(det, "enlarge_below_px", None)
    res["detector"]["mirror_views"] = int(getattr(det, "mirror_views", 1))


def _result(s: dict, cpu: dict) -> dict:
    """One configuration's report from its run summary and CPU usage."""
    pub = s["outputs"].get("zmq-pub", {})
    res = {
        "microscope": s["microscope"], "frame_shape": s.get("frame_shape"),
        "detector": s["detector"], "mode": s["control"].get("mode"), "frames": s["frames"],
        "acquired": s["acquired"], "dropped": s["dropped"],
        "drop_fraction": round(s["dropped"] / s["acquired"], 4) if s["acquired"] else None,
        "processed_fraction": round(1 - s["dropped"] / s["acquired"], 4)
        if s["acquired"] else None,
        "camera_fps": s["camera_fps"], "fps": s["fps"],
        "throughput_vs_camera": round(s["fps"] / s["camera_fps"], 3) if s["camera_fps"]
        else None,
        "detections_per_frame": s["detections_per_frame"],
        "latency_ms": s["latency_ms"],
        "overhead_ms": s["latency_ms"]["overhead_ready_to_published_minus_detect"],
        "loop_overhead_ms": s["latency_ms"]["loop_overhead_minus_detect_and_control"],
        "handoff_ms": s["latency_ms"][
            "handoffs_dequeued_to_published_minus_detect_and_control"],
        "zmq": {"sent": pub.get("sent"), "zmq_dropped": pub.get("zmq_dropped"),
                "queue_dropped": pub.get("dropped")},
        "outputs": s["outputs"], "control_steps": s["control_steps"],
        "control_skipped": s["control_skipped"], "moves": s["control"].get("guard"),
        "cpu": cpu,
    }
    if "tour" in s["control"]:
        t = dict(s["control"]["tour"])
        t.pop("timeline", None)
        res["tour"] = t
        res["focus"] = s["control"]["focus"]
    return res


def _table(results: list[dict]) -> str:
    head = (f"{'microscope':<30} {'detector':<30} {'fps/cam':>11} {'drop':>5} "
            f"{'detect p50/p99':>15} {'e2e p50/p99/max':>20} {'overhead p50/p99':>17} "
            f"{'loop ovh p50/p99':>17} {'hand-offs p50/p99':>17} {'->move p50':>10}")
    rows = [head, "-" * len(head)]
    for r in results:
        L = r["latency_ms"]
        d, e, o, m = (L["detect"], L["ready_to_published"], r["overhead_ms"],
                      L["ready_to_move_commanded"])
        lo, ho = r["loop_overhead_ms"], r["handoff_ms"]

        def f(x):
            return "-" if x is None else f"{x:.2f}"

        det = f"{r['detector']['name']}/{r['detector']['provider']}"
        spin = r["detector"].get("spinning")
        if spin is not None:  # records before the "run" mode hold true/false
            det += {True: "/spin", False: "/sleep", "on": "/spin", "off": "/sleep",
                    "run": "/spin-in-run"}.get(spin, f"/{spin}")
        if r["detector"].get("mirror_views", 1) != 1:
            det += f"/x{r['detector']['mirror_views']}"
        if r["detector"].get("enlarge_below_px") is not None:
            det += f"/<{r['detector']['enlarge_below_px']:g}px"
        rows.append(
            f"{r['microscope'][:30]:<30} {det[:30]:<30} "
            f"{r['fps']:5.1f}/{r['camera_fps']:5.1f} {r['dropped']:5d} "
            f"{f(d['p50']):>7}/{f(d['p99']):<7} {f(e['p50']):>6}/{f(e['p99'])}/{f(e['max']):<6} "
            f"{f(o['p50']):>8}/{f(o['p99']):<8} {f(lo['p50']):>8}/{f(lo['p99']):<8} "
            f"{f(ho['p50']):>8}/{f(ho['p99']):<8} "
            f"{f(m['p50']):>10}")
    for r in results:  # a resize changes the detect time by its square: say so
        k = r["detector"].get("scale", 1.0)
        given = r["detector"].get("enlarge_below_px")
        why = (f"under the enlargement size given, {given:g} px" if given is not None
               and k > 1 else "outside the sizes it detects well")
        if abs(k - 1.0) > 1e-3:
            rows.append(f"note: {r['detector']['name']} on {r['microscope'][:30]} ran on "
                        f"frames {'enlarged' if k > 1 else 'shrunk'} {k:.2f}x (automatic "
                        f"scale: the objects measured {why})")
    return "\n".join(rows)


def _cpu_lines(results: list[dict]) -> str:
    """CPU time per process and per busiest thread, as % of one core, per configuration."""
    lines = ["", "CPU (% of one core over the measured frames)"]
    for r in results:
        cpu = r.get("cpu") or {}
        procs = ", ".join(f"{k} {v['percent_of_one_core']:.0f}%"
                          for k, v in cpu.get("processes", {}).items())
        top = sorted(cpu.get("threads", {}).items(),
                     key=lambda kv: -kv[1]["percent_of_one_core"])[:6]
        thr = ", ".join(f"{k} {v['percent_of_one_core']:.0f}%" for k, v in top)
        lines.append(f"{r['microscope'][:30]:<30} {r['detector']['name']}: {procs}")
        if thr:
            lines.append(f"{'':<30}   threads: {thr}")
    return "\n".join(lines)


def plot(results: list[dict], raw: list[list[dict]], out_dir: Path, say) -> list[str]:
    """Latency CDF and per-stage timeline PNGs; skipped (one line) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("plots skipped: matplotlib is not installed (pip install 'inscope[plots]').")
        return []
    paths = []
    labels = [f"{r['microscope'].split(':')[0]} | {r['detector']['name']}/"
              f"{r['detector']['provider']}" for r in results]
    fig, ax = plt.subplots(figsize=(8, 5))
    for lab, recs in zip(labels, raw, strict=True):
        v = np.sort([(s["published"] - s["ready"]) / 1e6 for s in recs if "published" in s])
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=lab)
    ax.set_xlabel("latency ready -> published (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("inscope end-to-end latency (CDF)")
    paths.append(_save(fig, out_dir / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.5 * len(results)))
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
    for i, recs in enumerate(raw):
        left = 0.0
        for j, (name, a, b) in enumerate(TIMELINE):
            spans = [(s[b] - s[a]) / 1e6 for s in recs if a in s and b in s]
            w = float(np.median(spans)) if spans else 0.0
            ax.barh(i, w, left=left, color=colors[j % 10], label=name if i == 0 else None)
            left += w
    ax.set_yticks(range(len(results)), labels, fontsize=7)
    ax.set_xlabel("median time per stage (ms), from frame ready")
    ax.legend(fontsize=7, ncol=7, loc="upper center", bbox_to_anchor=(0.5, -0.35),
              frameon=False)
    ax.set_title("inscope per-stage timeline (p50)")
    paths.append(_save(fig, out_dir / "stage_timeline.png"))
    return paths


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(args: argparse.Namespace) -> int:
    import onnxruntime

    say = print
    cal = None
    if getattr(args, "calibration", None):  # checked before anything runs
        from inscope.control.calibration import Calibration

        try:
            cal = Calibration.load(args.calibration)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    backends = args.backend or [Backend.SIM, Backend.HEADLESS]
    models = args.model or ["default", "classical"]
    # ONNX Runtime's idle threads sleeping (off), spinning inside a run (run) or also
    # between runs (on), side by side when several are given; default (None): what the
    # service does on this machine
    spinnings: list[str | None] = list(args.spinning or [None])
    out = Path(args.out)
    if out.is_dir() or out.suffix.lower() != ".json":
        out = out / "bench.json"  # a folder was given: the report goes inside it
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    raw: list[list[dict]] = []
    from inscope.acquisition.errors import AcquisitionError
    from inscope.acquisition.factory import parse_options

    try:
        options = parse_options(getattr(args, "option", None))
    except AcquisitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if options and "demo" in backends:
        say("note: --backend demo runs the demo's own configuration; the -o options go to "
            "the other backends only.")
    for b in backends:
        if b == "demo":
            for res, recs in run_demo(args.frames, models, say, tuple(args.spinning or ()),
                                      getattr(args, "mirror_views", 1),
                                      getattr(args, "enlarge_below_px", None)):
                results.append(res)
                raw.append(recs)
            continue
        try:
            mm = {"mm_config": getattr(args, "mm_config", None),
                  "mm_dir": getattr(args, "mm_dir", None)}
            scope = _open(b, args.exposure_ms, say, options, mm)
        except AcquisitionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if scope is not None and cal is not None:
            try:
                cal.apply(scope, source=args.calibration)
            except ValueError as e:
                scope.close()
                print(f"error: {e}", file=sys.stderr)
                return 2
        if scope is None:
            continue
        try:
            for spin in spinnings:
                for label, det in _detectors(models, args.provider, say, spin,
                                             getattr(args, "mirror_views", 1),
                                             getattr(args, "enlarge_below_px", None)):
                    say(f"bench {scope.name} | {det.name} on {det.provider}, spinning "
                        f"{spin or 'default'}: {args.frames} frames ...")
                    spinning = _spinning(det)  # read before close() drops the session
                    try:
                        res, recs = run_config(scope, det, args.frames, args.mode)
                    finally:
                        det.close()
                    res["model"] = label
                    if spinning is not None:
                        res["detector"]["spinning"] = spinning
                    _add_scale(res, det)
                    results.append(res)
                    raw.append(recs)
        finally:
            scope.close()
    if not results:
        say("nothing was benchmarked (see the skip lines above).")
        return 1
    report = {
        "what": "inscope bench: whole-loop latency per stage (ms)",
        "stages": [list(s) for s in STAGES],
        "frames_per_config": args.frames,
        "control_mode": args.mode,
        "exposure_ms": args.exposure_ms,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(),
                 "python": platform.python_version(),
                 "onnxruntime": onnxruntime.__version__,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_table(results))
    print(_cpu_lines(results))
    print(f"\nreport: {out}")
    if not args.no_plots:
        for p in plot(results, raw, out.parent, say):
            print(f"plot: {p}")
    return 0


def overhead(recs: list[dict]) -> dict:
    """Overhead percentiles (ms) of raw stamp records (for other benchmarks)."""
    return ns_to_ms([(s["published"] - s["ready"]) - (s["detect_end"] - s["detect_start"])
                     for s in recs if "published" in s and "detect_end" in s])
