"""Assemble a running service from a :class:`~inscope.config.Config`.

Shared by ``inscope run``, ``inscope demo`` and notebooks: open the microscope, load the
detector, build the outputs, the pipeline and the REP server, run with a live progress
line, and write the summary. Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed)
stop cleanly: every output is drained and closed, the video finalised, the summary
written.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inscope.config import Config
from inscope.outputs import STAMP_PUBLISHED, Output
from inscope.pipeline import Pipeline
from inscope.stats import format_ms, ns_to_ms

if TYPE_CHECKING:
    from inscope.acquisition.microscope import Microscope
    from inscope.control_stage import Director
    from inscope.curve import Authenticator
    from inscope.detector.base import Detector
    from inscope.zmq_api import CommandServer, PubOutput

log = logging.getLogger(__name__)


def load_detector_for(cfg: Config, *, fallback: bool = True,
                      say: Callable[[str], object] = print) -> Detector:
    """The configured detector; with no model given and no shipped model, the classical
    detector (with one clear line) when *fallback* is True."""
    from inscope.detector.onnx_detector import load_detector_or_classical

    d = cfg.detector
    kw: dict[str, Any] = {}
    if d.score_threshold is not None:
        kw["score_threshold"] = d.score_threshold
    return load_detector_or_classical(d.model, say=say, fallback=fallback,
                                      provider=d.provider, threads=d.threads,
                                      spinning=d.spinning, mirror_views=d.mirror_views,
                                      enlarge_below_px=d.enlarge_below_px, **kw)


def open_scope(cfg: Config) -> Microscope:
    from inscope.acquisition.factory import open_microscope

    m = cfg.microscope
    cal = None
    if m.calibration:  # read before opening: a bad file must not leave a scope open
        from inscope.control.calibration import Calibration

        cal = Calibration.load(m.calibration)
    scope = open_microscope(m.backend, limits=m.limits, dry_run=m.dry_run, **m.options)
    if cal is not None:
        try:
            cal.apply(scope, source=m.calibration)
        except ValueError:
            scope.close()  # the map belongs to another objective: nothing is left open
            raise
        log.info("calibration %s: %.4g µm/pixel, rotation %.1f deg, flip %s", m.calibration,
                 cal.pixel_size_um, cal.rotation_deg, cal.flip)
    return scope


@dataclass
class Service:
    """A configured, not yet started service (see :func:`build_service`)."""

    config: Config
    scope: Microscope
    detector: Detector
    pipeline: Pipeline
    outputs: list[Output] = field(default_factory=list)
    publisher: PubOutput | None = None
    server: CommandServer | None = None
    notes: list[str] = field(default_factory=list)
    authenticator: Authenticator | None = None  # when CURVE is on
    provenance: dict[str, Any] | None = None  # set when the run starts
    #: the ZMQ context of a CURVE service's sockets (its own: the authenticator governs
    #: every socket of a context), ended on close; None: the process's shared context
    context: Any = None

    def close(self) -> None:
        """Stop the pipeline, then close the command server, the authenticator, the
        service's own ZMQ context, the detector and the microscope (last), each even if
        one before it fails: a part that fails to close is logged by name, so a stuck
        server cannot leave the microscope open."""
        _close_parts(self.server, self.authenticator, None, self.context, self.detector,
                     self.scope, pipeline=self.pipeline, why="")
        self.context = None


def build_service(cfg: Config, *, say: Callable[[str], object] = print,
                  port_fallback: bool = False, director: Director | None = None) -> Service:
    """Open everything *cfg* describes. ``port_fallback``: if a ZMQ port is taken, bind
    an ephemeral one instead (and say so) rather than failing (used by the demo).
    ``director``: a mission for the control stage (the demo's tour).

    The configuration is checked first (:func:`inscope.config.validate`: a wrong value
    is one :class:`~inscope.config.ConfigError` naming the key, before any hardware is
    touched). A build that fails later, or is interrupted (Ctrl-C), closes whatever it
    had opened - the microscope, the detector, sockets, the CURVE authenticator and its
    context - so the same process can build again (a notebook, a GUI that restarts the
    service; a real microscope may hold a serial port the next build needs).
    """
    from inscope.config import validate
    from inscope.eyepiece import EyepieceCalibration, EyepieceRenderer
    from inscope.overlay import OverlayOutput
    from inscope.records import RecordsOutput
    from inscope.zmq_api import CommandServer, PubOutput

    validate(cfg, "config")
    o = cfg.outputs
    notes: list[str] = []
    eyepiece = None
    if o.eyepiece.enabled:
        cal = EyepieceCalibration.load(o.eyepiece.calibration) if o.eyepiece.calibration \
            else None
        from inscope.predict import DEFAULT_DISPLAY_LAG_MS, BoxPredictor

        lag = o.eyepiece.display_lag_ms
        if lag is None:
            lag = cal.display_lag_ms if cal is not None and cal.display_lag_ms is not None \
                else DEFAULT_DISPLAY_LAG_MS
        eyepiece = EyepieceRenderer(
            (o.eyepiece.display_size[0], o.eyepiece.display_size[1]), cal,
            predictor=BoxPredictor(lag, enabled=o.eyepiece.predict))
    scope = open_scope(cfg)
    detector: Detector | None = None
    pub: PubOutput | None = None
    server: CommandServer | None = None
    auth: Authenticator | None = None
    ctx: Any = None
    try:
        detector = load_detector_for(cfg, say=say)
        outputs: list[Output] = []
        curve = None
        if o.zmq.enabled and o.zmq.curve_server_key is not None:
            import zmq

            from inscope.curve import Authenticator, CurveServerKeys

            assert o.zmq.curve_allowed_clients is not None  # a pair (checked by the config)
            curve = CurveServerKeys.load(o.zmq.curve_server_key, o.zmq.curve_allowed_clients)
            ctx = zmq.Context()  # the authenticator governs this context's sockets only
            auth = Authenticator(ctx, curve)
        if o.zmq.enabled:
            pub = PubOutput(o.zmq.bind, o.zmq.pub_port, sndhwm=o.zmq.sndhwm,
                            nodrop=o.zmq.nodrop, context=ctx, curve=curve)
            outputs.append(pub)
        from inscope.overlay import display_available

        window = o.window if o.window is not None else display_available()
        if o.window is None and not window:
            say("note: no display available (DISPLAY unset or OpenCV without GUI): no "
                "overlay window" + (f"; the overlay goes to {o.video}" if o.video else ""))
        overlay = None
        if o.video or window or (pub is not None and o.zmq.overlay) or eyepiece:
            overlay = OverlayOutput(
                video=o.video, video_fps=o.video_fps, display_fps=o.display_fps,
                window=window, publisher=pub if o.zmq.overlay else None, eyepiece=eyepiece,
                mode=cfg.control.mode)
            outputs.append(overlay)
        if o.records.dir:
            outputs.append(RecordsOutput(o.records.dir, o.records.format, o.records.frames,
                                         fps=getattr(scope, "fps", None)))
        pipeline = Pipeline(scope, detector, control=cfg.control, outputs=outputs,
                            score_threshold=cfg.detector.score_threshold,
                            frames=cfg.run.frames, seconds=cfg.run.seconds,
                            snapshot_dir=o.snapshot_dir,
                            snapshot_max_per_s=o.snapshot_max_per_s, director=director)
        if overlay is not None:
            overlay.quit_requested.connect(pipeline.request_stop)
        if o.zmq.enabled:
            server = CommandServer(pipeline.command, o.zmq.bind, o.zmq.rep_port,
                                   context=ctx, curve=curve)
            server.failed.connect(pipeline.hold_stage)
        # Bind sockets now so a port clash is reported before anything runs.
        if pub is not None:
            _open_with_fallback(pub, "PUB", port_fallback, say)
        if server is not None:
            _start_with_fallback(server, port_fallback, say)
    except BaseException:
        _close_parts(server, auth, pub, ctx, detector, scope)
        raise
    return Service(cfg, scope, detector, pipeline, outputs, pub, server, notes, auth,
                   context=ctx)


def _close_parts(server: CommandServer | None, auth: Authenticator | None,
                 pub: PubOutput | None, ctx: Any, detector: Detector | None,
                 scope: Microscope, *, pipeline: Pipeline | None = None,
                 why: str = "after a failed build") -> None:
    """Close a service's parts in order: the pipeline (which stops its outputs, the
    publisher among them), or the publisher of a build that failed before it started;
    the command server, the authenticator, the context, the detector, the microscope
    last. A part that fails to close is logged by name (*why* says when) and the rest
    are still closed: neither the caller's own error (a failed build's) nor the run's
    summary is masked, and the microscope is always closed."""
    closers: list[tuple[object, Callable[[], object]]] = []
    if pipeline is not None:
        closers.append((pipeline, pipeline.stop))
    if server is not None:
        closers.append((server, server.stop))
    if auth is not None:
        closers.append((auth, auth.stop))
    if pub is not None:
        closers.append((pub, pub.close))
    closers.append(("the ZMQ context", lambda: _end_context(ctx)))
    if detector is not None:
        closers.append((detector, detector.close))
    closers.append((scope, scope.close))
    for part, close in closers:
        try:
            close()
        except Exception as e:  # noqa: BLE001 - must not mask the caller's error
            log.warning("closing %s%s: %s", part, f" {why}" if why else "", e)


def _end_context(ctx: Any) -> None:
    """End a service's own ZMQ context: its I/O thread would otherwise outlive the
    service in a long-lived process (a notebook building services in turn). Its sockets
    are closed by then; linger 0 so one left open cannot hang the close."""
    if ctx is not None and not ctx.closed:
        ctx.destroy(linger=0)


def _open_with_fallback(pub: PubOutput, what: str, fallback: bool,
                        say: Callable[[str], object]) -> None:
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


def _start_with_fallback(server: CommandServer, fallback: bool,
                         say: Callable[[str], object]) -> None:
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
                say: Callable[[str], object] = print) -> dict:
    """Run until the configured end, Ctrl-C, SIGTERM, SIGHUP or a ``stop`` command;
    returns the summary (also written to *summary_path* as JSON)."""
    p = svc.pipeline
    old_term = old_hup = None
    hung_up = threading.Event()

    def on_hangup(*_: object) -> None:
        hung_up.set()  # the terminal is gone: a progress line written to it would fail
        p.request_stop("hung up (SIGHUP: the terminal closed)")

    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM,
                                 lambda *_: p.request_stop("terminated (SIGTERM)"))
        hup = getattr(signal, "SIGHUP", None)  # none on Windows
        if hup is not None and signal.getsignal(hup) is signal.SIG_DFL:
            # a closed terminal or a dropped SSH session killed the run mid-write: the
            # video unplayable, no summary, the frames not made an OME-TIFF (nohup's
            # SIG_IGN is left alone)
            old_hup = signal.signal(hup, on_hangup)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # started as a shell's background job (SIGINT ignored): a service that moves
            # a stage must still stop cleanly on `kill -INT`, as it does on Ctrl-C
            signal.signal(signal.SIGINT, signal.default_int_handler)
    tty = progress and sys.stdout.isatty()
    last_print = 0.0
    from inscope.provenance import run_provenance

    svc.provenance = run_provenance(svc.scope, svc.detector,
                                    calibration=svc.config.microscope.calibration)
    for o in svc.outputs:
        if hasattr(o, "provenance"):
            o.provenance = svc.provenance
    try:
        p.start()
        if svc.publisher is not None:
            say(f"detections on {svc.publisher.address} (ZMQ PUB, topic 'detections')"
                + (f"; commands on {svc.server.address} (ZMQ REP)" if svc.server else ""))
        try:
            while not p.wait(0.5):
                srv = svc.server
                if srv is not None and not srv.alive and p.stage_held is None:
                    # the REP thread is gone without telling us: nobody can send `stop`
                    why = srv.failure or "its thread ended"
                    p.hold_stage(f"the ZMQ command server stopped ({why})")
                if progress and not hung_up.is_set():
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
        if progress and tty and not hung_up.is_set():
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
            if old_hup is not None:
                signal.signal(signal.SIGHUP, old_hup)
    summary = p.summary()
    summary["provenance"] = svc.provenance
    if summary_path:
        try:
            write_summary(summary, summary_path)
        except OSError as e:
            # e.g. the disk is full: the summary must not be lost, so it goes to stdout
            summary["summary_write_error"] = f"{e.strerror or e} ({summary_path})"
            say(f"error: the summary could not be written to {summary_path} "
                f"({e.strerror or e}); here it is:")
            print(json.dumps(summary, indent=2, default=str), flush=True)
    return summary


def failed_outputs(summary: dict) -> dict[str, str]:
    """``{output name: why it stopped}`` for every output that stopped during the run."""
    return {k: o["failed"] for k, o in summary.get("outputs", {}).items() if o.get("failed")}


def write_summary(summary: dict, path: str | Path) -> Path:
    """Write the summary JSON atomically: a failed write leaves no empty or half file.

    A path that exists and is not a regular file (``/dev/stdout``, a named pipe a script
    reads from) is written to directly: renaming the temporary file over it would
    replace the device or pipe itself (and, run as root, ``/dev/stdout`` for everyone).
    """
    path = Path(path)
    text = json.dumps(summary, indent=2, default=str) + "\n"
    if path.exists() and not path.is_file() and not path.is_dir():
        with path.open("w", encoding="utf-8") as f:
            f.write(text)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def format_summary(s: dict) -> str:
    """Human-readable summary for the terminal."""
    lat = s["latency_ms"]
    c = s.get("control", {})
    all4 = ("p50", "p90", "p99", "max")
    # where the frames' truth came from: a slide's is its file's labels
    truth = ("the slide's labels" if s.get("microscope") == "slide"
             else "simulator's ground truth")
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
        f"({c.get('focus', {}).get('moves_made', 0)} focus moves)",
    ]
    if c.get("final_centring_error_um") is not None:
        ft = c.get("final_target") or {}
        status = str(ft.get("status") or "unknown")
        doing = {"centred": "centred", "moved": "being centred (moved on the last step)",
                 "settling": "being centred (waiting for the stage to settle)",
                 "moving": "being centred (the stage is moving)"}.get(status, status)
        lines.append(f"last frame: target track {ft.get('track_id')} {doing}, "
                     f"{c['final_centring_error_um']} µm from the image center "
                     f"({truth})")
    tour = c.get("tour")
    if tour:
        fe, ce = tour.get("focus_error_um_after_lock") or {}, tour.get(
            "centring_error_um_while_holding") or {}
        fl = tour.get("focus_error_um_while_locked") or {}
        lines.append(
            f"tour: {tour['cells_visited']} cells visited (centring error while holding "
            f"p50 {ce.get('p50')} / max {ce.get('max')} µm), {len(tour['followed'])} moving "
            f"cell(s) followed, {tour.get('fields_travelled', 0)} field(s) travelled to "
            f"when every cell in view was visited; focus first locked at "
            f"{tour['focus_first_locked_s']} s, "
            f"focus error after that p50 {fe.get('p50')} / p90 {fe.get('p90')} / max "
            f"{fe.get('max')} µm, on the frames it held locked p50 {fl.get('p50')} / p90 "
            f"{fl.get('p90')} / max {fl.get('max')} µm (the rest are its checks' "
            f"dithered frames; {truth})")
    for name, o in s.get("outputs", {}).items():
        extra = ""
        if o.get("video"):
            extra = f" -> {o['video']} ({o.get('video_frames')} frames)"
        elif o.get("address"):
            extra = f" -> {o['address']} (sent {o.get('sent')}, zmq drops {o.get('zmq_dropped')})"
        elif o.get("detections"):
            extra = f" -> {o['detections']}"
        stopped = f"; STOPPED: {o['failed']}" if o.get("failed") else ""
        lines.append(f"output {name}: handled {o['handled']}, dropped {o['dropped']}, "
                     f"errors {o['errors']}{extra}{stopped}")
    return "\n".join(lines)
