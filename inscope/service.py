"""Assemble a running service from a :class:`~inscope.config.Config`.

Shared by ``inscope run``, ``inscope demo`` and notebooks: open the microscope, load the
detector, build the outputs, the pipeline and the REP server, run with a live progress
line, and write the summary. Ctrl-C (SIGINT) and SIGTERM stop cleanly: every output is
drained and closed, the video finalised, the summary written.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inscope.config import Config
from inscope.outputs import STAMP_PUBLISHED, Output
from inscope.pipeline import Pipeline
from inscope.stats import format_ms, ns_to_ms

log = logging.getLogger("inscope")


def load_detector_for(cfg: Config, *, fallback: bool = True, say=print):
    """The configured detector; with no model given and no shipped model, the classical
    detector (with one clear line) when *fallback* is True."""
    from inscope.detector.onnx_detector import load_detector

    d = cfg.detector
    kw: dict[str, Any] = {}
    if d.score_threshold is not None:
        kw["score_threshold"] = d.score_threshold
    try:
        return load_detector(d.model, provider=d.provider, threads=d.threads,
                             spinning=d.spinning, **kw)
    except FileNotFoundError as e:
        if d.model is not None or not fallback:
            raise
        say(f"note: the shipped detector model is missing ({e}); using the classical "
            "OpenCV detector instead (--model classical).")
        return load_detector("classical", **kw)


def open_scope(cfg: Config):
    from inscope.acquisition.factory import open_microscope

    m = cfg.microscope
    return open_microscope(m.backend, limits=m.limits, dry_run=m.dry_run, **m.options)


@dataclass
class Service:
    """A configured, not yet started service (see :func:`build_service`)."""

    config: Config
    scope: Any
    detector: Any
    pipeline: Pipeline
    outputs: list[Output] = field(default_factory=list)
    publisher: Any = None
    server: Any = None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.pipeline.stop()
        if self.server is not None:
            self.server.stop()
        for obj in (self.detector, self.scope):
            try:
                obj.close()
            except Exception as e:  # noqa: BLE001 - closing must not mask the summary
                log.warning("closing %s: %s", obj, e)


def build_service(cfg: Config, *, say=print, port_fallback: bool = False,
                  director=None) -> Service:
    """Open everything *cfg* describes. ``port_fallback``: if a ZMQ port is taken, bind
    an ephemeral one instead (and say so) rather than failing (used by the demo).
    ``director``: a mission for the control stage (the demo's tour)."""
    from inscope.eyepiece import EyepieceCalibration, EyepieceRenderer
    from inscope.overlay import OverlayOutput
    from inscope.records import RecordsOutput
    from inscope.zmq_api import CommandServer, PubOutput

    o = cfg.outputs
    notes: list[str] = []
    eyepiece = None
    if o.eyepiece.enabled:
        cal = EyepieceCalibration.load(o.eyepiece.calibration) if o.eyepiece.calibration \
            else None
        eyepiece = EyepieceRenderer(tuple(o.eyepiece.display_size), cal)
    scope = open_scope(cfg)
    try:
        detector = load_detector_for(cfg, say=say)
    except BaseException:
        scope.close()
        raise
    outputs: list[Output] = []
    pub = server = None
    if o.zmq.enabled:
        pub = PubOutput(o.zmq.bind, o.zmq.pub_port, sndhwm=o.zmq.sndhwm,
                        nodrop=o.zmq.nodrop)
        outputs.append(pub)
    pipeline_holder: list[Pipeline] = []

    def on_quit() -> None:
        if pipeline_holder:
            pipeline_holder[0].request_stop("window closed (q)")

    from inscope.overlay import display_available

    window = o.window if o.window is not None else display_available()
    if o.window is None and not window:
        say("note: no display available (DISPLAY unset or OpenCV without GUI): no overlay "
            "window" + (f"; the overlay goes to {o.video}" if o.video else ""))
    if o.video or window or (pub is not None and o.zmq.overlay) or eyepiece:
        outputs.append(OverlayOutput(
            video=o.video, video_fps=o.video_fps, display_fps=o.display_fps, window=window,
            publisher=pub if o.zmq.overlay else None, eyepiece=eyepiece,
            mode=cfg.control.mode, on_quit=on_quit))
    if o.records.dir:
        outputs.append(RecordsOutput(o.records.dir, o.records.format, o.records.frames,
                                     fps=getattr(scope, "fps", None)))
    pipeline = Pipeline(scope, detector, control=cfg.control, outputs=outputs,
                        score_threshold=cfg.detector.score_threshold, frames=cfg.run.frames,
                        seconds=cfg.run.seconds, snapshot_dir=o.snapshot_dir,
                        director=director)
    pipeline_holder.append(pipeline)
    if o.zmq.enabled:
        server = CommandServer(pipeline.command, o.zmq.bind, o.zmq.rep_port)
    svc = Service(cfg, scope, detector, pipeline, outputs, pub, server, notes)
    # Bind sockets now so a port clash is reported before anything runs.
    try:
        if pub is not None:
            _open_with_fallback(pub, "PUB", port_fallback, say)
        if server is not None:
            _start_with_fallback(server, port_fallback, say)
    except BaseException:
        if server is not None:
            server.stop()
        detector.close()
        scope.close()
        raise
    return svc


def _open_with_fallback(pub, what: str, fallback: bool, say) -> None:
    try:
        pub.open()
    except OSError as e:
        if not fallback:
            raise
        wanted = pub.port
        pub.port = 0
        pub.open()
        say(f"note: ZMQ {what} port {wanted} is busy ({str(e).split(':')[0]}); "
            f"publishing on {pub.address} instead.")


def _start_with_fallback(server, fallback: bool, say) -> None:
    try:
        server.start()
    except OSError:
        if not fallback:
            raise
        wanted = server.port
        server.port = 0
        server.start()
        say(f"note: ZMQ REP port {wanted} is busy; commands on {server.address} instead.")


def progress_line(p: Pipeline) -> str:
    recs = list(p.records)[-300:]
    lat = ns_to_ms([s[STAMP_PUBLISHED] - s["ready"] for s in recs if STAMP_PUBLISHED in s])
    r = p.last_result
    target = f"#{r.target_id}" if r is not None and r.target_id is not None else "-"
    focus = (r.focus or {}).get("state", "-") if r is not None else "-"
    state = " PAUSED" if p.paused else ""
    return (f"frames {p.processed:5d}  {p.fps:5.1f} fps  dropped {p.dropped:4d}  latency "
            f"{format_ms(lat)}  target {target:>4}  focus {focus:<8}{state}")


def run_service(svc: Service, *, progress: bool = True, summary_path: str | None = None,
                say=print) -> dict:
    """Run until the configured end, Ctrl-C, SIGTERM or a ``stop`` command; returns the
    summary (also written to *summary_path* as JSON)."""
    p = svc.pipeline
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM,
                                 lambda *_: p.request_stop("terminated (SIGTERM)"))
    tty = progress and sys.stdout.isatty()
    last_print = 0.0
    try:
        p.start()
        if svc.publisher is not None:
            say(f"detections on {svc.publisher.address} (ZMQ PUB, topic 'detections')"
                + (f"; commands on {svc.server.address} (ZMQ REP)" if svc.server else ""))
        try:
            while not p.wait(0.5):
                if progress:
                    now = time.monotonic()
                    if tty:
                        print("\r" + progress_line(p), end="", flush=True)
                    elif now - last_print >= 5.0:  # logs/pipes: a line every 5 s
                        print(progress_line(p), flush=True)
                        last_print = now
        except KeyboardInterrupt:
            p.request_stop("interrupted (Ctrl-C)")
            if progress:
                print()
            say("stopping: flushing outputs ...")
        if progress and tty:
            print("\r" + progress_line(p))
    finally:
        # a second Ctrl-C while flushing must not lose the records: ignore it meanwhile
        old_int = None
        if threading.current_thread() is threading.main_thread():
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            svc.close()
        finally:
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
    summary = p.summary()
    if summary_path:
        write_summary(summary, summary_path)
    return summary


def write_summary(summary: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


def format_summary(s: dict) -> str:
    """Human-readable summary for the terminal."""
    lat = s["latency_ms"]
    c = s.get("control", {})
    all4 = ("p50", "p90", "p99", "max")
    lines = [
        f"frames {s['frames']} in {s['duration_s']:.1f} s ({s['fps']:.1f} fps processed, "
        f"camera {s['camera_fps']:.1f} fps), dropped {s['dropped']}, stop: {s['stop_reason']}",
        f"detector {s['detector']['name']} on {s['detector']['provider']}; "
        f"{s['detections_per_frame']} detections/frame",
        f"latency ready->published {format_ms(lat['ready_to_published'], all4)}",
        f"        detect          {format_ms(lat['detect'], all4)}",
        f"        overhead        "
        f"{format_ms(lat['overhead_ready_to_published_minus_detect'], ('p50', 'p99'))}",
        f"        ready->move     {format_ms(lat['ready_to_move_commanded'], ('p50', 'p99'))}"
        f" (n={lat['ready_to_move_commanded']['n']})",
        f"control {c.get('mode')}: XY moves made {c.get('moves_made', 0)}, refused "
        f"{c.get('moves_refused', 0)}, dry-run {c.get('moves_dry_run', 0)}, targets centred "
        f"{c.get('targets_centred', 0)}; focus {c.get('focus', {}).get('state')} "
        f"({c.get('focus', {}).get('moves_made', 0)} focus moves); final centring error "
        f"{c.get('final_centring_error_um')} µm",
    ]
    tour = c.get("tour")
    if tour:
        fe, ce = tour.get("focus_error_um_after_lock") or {}, tour.get(
            "centring_error_um_while_holding") or {}
        lines.append(
            f"tour: {tour['cells_visited']} cells visited (centring error while holding "
            f"p50 {ce.get('p50')} / max {ce.get('max')} µm), {len(tour['followed'])} moving "
            f"cell(s) followed; focus first locked at {tour['focus_first_locked_s']} s, "
            f"focus error after that p50 {fe.get('p50')} / p90 {fe.get('p90')} / max "
            f"{fe.get('max')} µm (simulator's ground truth)")
    for name, o in s.get("outputs", {}).items():
        extra = ""
        if o.get("video"):
            extra = f" -> {o['video']} ({o.get('video_frames')} frames)"
        elif o.get("address"):
            extra = f" -> {o['address']} (sent {o.get('sent')}, zmq drops {o.get('zmq_dropped')})"
        elif o.get("detections"):
            extra = f" -> {o['detections']}"
        lines.append(f"output {name}: handled {o['handled']}, dropped {o['dropped']}, "
                     f"errors {o['errors']}{extra}")
    return "\n".join(lines)
