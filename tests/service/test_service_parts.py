"""The pieces a service is assembled from, each against what it must pass on.

The configured detector (threads, spinning and threshold reach the real ONNX Runtime
session; the classical fallback only for a missing shipped model), the microscope
(limits, dry run and a calibration file reach it), a busy port's fallback, the end of a
service's own ZMQ context, a close that fails, a summary with sections missing, and the
live progress line. Real ONNX Runtime sessions, the simulated microscope, real ZMQ
sockets on 127.0.0.1.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import zmq
from _support.parts import Part

from inscope.config import Config, with_overrides
from inscope.service import (
    Service,
    _end_context,
    build_service,
    format_summary,
    load_detector_for,
    open_scope,
    progress_line,
)


def _sim(**options) -> Config:
    cfg = with_overrides(Config(), "microscope", backend="sim",
                         options={"shape": [64, 64], "seed": 1, **options})
    cfg = with_overrides(cfg, "outputs", window=False)
    return with_overrides(cfg, "outputs.zmq", pub_port=0, rep_port=0)


# -- the detector ------------------------------------------------------------------------
def test_threads_spinning_and_threshold_reach_the_onnx_runtime_session():
    cfg = with_overrides(_sim(), "detector", threads=1, spinning=True, score_threshold=0.7)
    det = load_detector_for(cfg, say=pytest.fail)
    try:
        so = det.session.get_session_options()
        assert so.intra_op_num_threads == 1
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert det.score_threshold == 0.7
    finally:
        det.close()
    det = load_detector_for(_sim(), say=pytest.fail)  # unset: the card's threshold
    try:
        assert det.score_threshold is None
    finally:
        det.close()


@pytest.mark.parametrize("flag,given,key,default", [
    ("--mirror-views", 4, "mirror_views", 1),
    ("--enlarge-below-px", 36.0, "enlarge_below_px", None)])
def test_a_detector_option_reaches_the_detector_from_the_command_line(
        flag, given, key, default):
    from inscope.cli import build_parser
    from inscope.commands import config_from_args

    for argv, want in ((["run", "--backend", "sim"], default),
                       (["run", "--backend", "sim", flag, str(given)], given)):
        cfg = config_from_args(build_parser().parse_args(argv))
        assert getattr(cfg.detector, key) == want
        det = load_detector_for(cfg, say=pytest.fail)
        try:
            assert getattr(det, key) == want
        finally:
            det.close()


@pytest.mark.parametrize("key,value,words", [
    ("mirror_views", 2, "'classical' cannot use it"),
    ("enlarge_below_px", 30.0, "'classical' cannot use it"),
    # beyond the largest size the model was trained on: refused when it loads
    ("enlarge_below_px", 100.0, "at most 72 px, the largest size")])
def test_a_detector_option_the_detector_cannot_use_is_refused(key, value, words):
    model = "classical" if "classical" in words else None
    cfg = with_overrides(_sim(), "detector", model=model, **{key: value})
    with pytest.raises(ValueError, match=words):
        load_detector_for(cfg, say=pytest.fail)


def test_mirror_views_other_than_1_2_4_are_refused_by_the_parser():
    from inscope.cli import build_parser

    with pytest.raises(SystemExit):  # argparse: "invalid choice: 3"
        build_parser().parse_args(["run", "--mirror-views", "3"])


def test_a_missing_shipped_model_falls_back_to_the_classical_detector_with_a_note(
        monkeypatch, tmp_path):
    import inscope.detector.onnx_detector as onnx_detector
    from inscope.detector.classical import ClassicalDetector

    missing = tmp_path / "not-shipped.onnx"
    monkeypatch.setattr(onnx_detector, "DEFAULT_MODEL", missing)
    said: list[str] = []
    cfg = with_overrides(_sim(), "detector", score_threshold=0.3)
    det = load_detector_for(cfg, say=said.append)
    assert isinstance(det, ClassicalDetector) and det.score_threshold == 0.3
    assert said == [f"note: the shipped detector model is missing (ONNX model {missing} not "
                    "found. Pass the path of an .onnx file, train one with 'inscope train', "
                    "or use the no-learning baseline (model='classical').); using the "
                    "classical OpenCV detector instead (--model PATH for another model; "
                    "--model classical for this one without this note)."]
    with pytest.raises(FileNotFoundError):  # a caller that wants no fallback
        load_detector_for(cfg, fallback=False, say=pytest.fail)


def test_a_model_the_user_named_that_is_missing_is_an_error_never_replaced(tmp_path):
    cfg = with_overrides(_sim(), "detector", model=str(tmp_path / "mine.onnx"))
    with pytest.raises(FileNotFoundError, match="mine.onnx"):
        load_detector_for(cfg, say=pytest.fail)


# -- the microscope ----------------------------------------------------------------------
def test_limits_dry_run_and_a_calibration_file_reach_the_microscope(tmp_path, caplog):
    from inscope.control.calibration import Calibration

    a = np.array([[0.0, -0.4], [0.4, 0.0]])  # 0.4 µm/px, rotated 90 degrees
    cal = Calibration.from_affine(a)
    cal.save(tmp_path / "cal.json")
    limits = {"x": [-100.0, 100.0], "y": [-50.0, 50.0], "z": [-20.0, 20.0]}
    cfg = with_overrides(_sim(), "microscope", limits=limits, dry_run=True,
                         calibration=str(tmp_path / "cal.json"))
    with caplog.at_level(logging.INFO, logger="inscope.service"):
        scope = open_scope(cfg)
    try:
        assert scope.guard.dry_run
        assert tuple(scope.guard.limits.x) == (-100.0, 100.0)
        assert tuple(scope.guard.limits.y) == (-50.0, 50.0)
        assert np.allclose(scope.affine, a)
        p = scope.position()
        assert not scope.move_xy(p.x + 5.0, p.y)  # dry run: recorded, not made
        assert scope.position() == p
    finally:
        scope.close()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "inscope.service"]
    assert line == (f"calibration {tmp_path / 'cal.json'}: 0.4 µm/pixel, rotation "
                    f"{cal.rotation_deg:.1f} deg, flip {cal.flip}")


# -- ports and contexts --------------------------------------------------------------------
@pytest.mark.parametrize("which", ["PUB", "REP"])
def test_a_busy_port_with_fallback_binds_another_and_says_both(which):
    squatter = zmq.Context.instance().socket(zmq.REP)
    busy = squatter.bind_to_random_port("tcp://127.0.0.1")
    key = "pub_port" if which == "PUB" else "rep_port"
    cfg = with_overrides(_sim(), "outputs.zmq", **{key: busy})
    said: list[str] = []
    try:
        svc = build_service(cfg, say=said.append, port_fallback=True)
    finally:
        squatter.close(0)
    try:
        part = svc.publisher if which == "PUB" else svc.server
        assert part.port not in (0, 1, busy)
        if which == "PUB":
            assert said[-1] == (f"note: ZMQ PUB port {busy} is busy (Cannot bind the ZMQ PUB "
                                f"socket to tcp); publishing on {part.address} instead.")
        else:
            assert said[-1] == (f"note: ZMQ REP port {busy} is busy; commands on "
                                f"{part.address} instead.")
    finally:
        svc.close()


def test_ending_a_context_does_not_wait_for_messages_nobody_will_take():
    """A socket left open with a message queued for a peer that never came: the end
    of the service's context must not wait for it (ZMQ's default linger is for ever)."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect("tcp://127.0.0.1:9")  # nobody there
    push.send(b"queued", zmq.NOBLOCK)
    t = threading.Thread(target=_end_context, args=(ctx,), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and ctx.closed
    _end_context(ctx)  # an ended context again, or none: nothing happens
    _end_context(None)


# -- closing -------------------------------------------------------------------------------
def test_a_part_that_fails_to_close_is_logged_by_name_and_the_rest_still_close(caplog):
    from inscope.acquisition.factory import open_microscope
    from inscope.pipeline import Pipeline

    scope = open_microscope("sim", shape=[64, 64])
    closed: list[bool] = []
    real_close = scope.close
    scope.close = lambda: (closed.append(True), real_close())
    det = Part("<stubborn detector>", fails="still busy")
    svc = Service(_sim(), scope, det, Pipeline(scope, det))
    with caplog.at_level(logging.WARNING, logger="inscope.service"):
        svc.close()
    assert [r.getMessage() for r in caplog.records] == [
        "closing <stubborn detector>: still busy"]
    assert closed == [True]


def test_a_server_that_fails_to_stop_does_not_leave_the_microscope_open(caplog):
    """Before, Service.close let the server's error through and never reached the
    detector or the microscope (a real one holds its serial port until closed)."""
    from inscope.acquisition.factory import open_microscope
    from inscope.detector.classical import ClassicalDetector
    from inscope.pipeline import Pipeline

    scope = open_microscope("sim", shape=[64, 64])
    closed: list[str] = []
    real_close = scope.close
    scope.close = lambda: (closed.append("scope"), real_close())
    det = ClassicalDetector()
    det.close = lambda: closed.append("detector")
    pipeline = Pipeline(scope, det)
    svc = Service(_sim(), scope, det, pipeline,
                  server=Part("<stuck server>", fails="socket still in use"))
    with caplog.at_level(logging.WARNING, logger="inscope.service"):
        svc.close()
    assert [r.getMessage() for r in caplog.records] == [
        "closing <stuck server>: socket still in use"]
    assert closed == ["detector", "scope"] and pipeline._stopped


def test_close_stops_the_server_and_the_authenticator_and_ends_its_context_once(caplog):
    """A CURVE service's authenticator (its own thread) is stopped with the service,
    after the command server; its ZMQ context is ended, and a second close (a `with`
    block after an explicit close) finds nothing left to end and warns of nothing."""
    from inscope.acquisition.factory import open_microscope
    from inscope.detector.classical import ClassicalDetector
    from inscope.pipeline import Pipeline

    calls: list[str] = []
    scope = open_microscope("sim", shape=[64, 64])
    det = ClassicalDetector()
    ctx = zmq.Context()
    svc = Service(_sim(), scope, det, Pipeline(scope, det),
                  server=Part("server", calls),
                  authenticator=Part("authenticator", calls), context=ctx)
    with caplog.at_level(logging.WARNING, logger="inscope.service"):
        svc.close()
        assert calls == ["server.stop", "authenticator.stop"]
        assert ctx.closed and svc.context is None
        svc.close()
    assert caplog.records == []


# -- the printed summary and the progress line -----------------------------------------------
def test_a_summary_without_control_or_outputs_sections_still_prints():
    lat = {k: {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "n": 0} for k in (
        "ready_to_published", "detect", "overhead_ready_to_published_minus_detect",
        "ready_to_move_commanded")}
    s = {"frames": 0, "duration_s": 0.0, "fps": 0.0, "camera_fps": 0.0, "dropped": 0,
         "stop_reason": "stop command", "detector": {"name": "d", "provider": "cpu"},
         "detections_per_frame": 0.0, "latency_ms": lat}
    lines = format_summary(s).split("\n")
    assert len(lines) == 7
    assert lines[-1] == ("control None: XY moves made 0, refused 0, dry-run 0, targets "
                         "centred 0; focus None (0 focus moves)")


def _pipeline():
    from inscope.acquisition.factory import open_microscope
    from inscope.detector.classical import ClassicalDetector
    from inscope.pipeline import Pipeline

    scope = open_microscope("sim", shape=[64, 64])
    return Pipeline(scope, ClassicalDetector()), scope


def test_the_progress_line_before_any_frame():
    p, scope = _pipeline()
    try:
        assert progress_line(p) == ("frames     0    0.0 fps  dropped    0  latency p50 - / "
                                    "p99 - ms  target    -  focus -       ")
    finally:
        scope.close()


def test_the_progress_line_reads_the_newest_300_published_frames_target_and_focus():
    from inscope.acquisition.frame import Frame
    from inscope.detector.base import Detections
    from inscope.outputs import STAMP_PUBLISHED, Result

    p, scope = _pipeline()
    try:
        ms = 1_000_000
        # the oldest of 301 was published after 1 s; the newest 300 are 2 ms each, except
        # the newest, 8 ms, and one never published
        p.records.extend([{"ready": 0, STAMP_PUBLISHED: 1000 * ms}]
                         + [{"ready": 10 * ms, STAMP_PUBLISHED: 12 * ms}] * 298
                         + [{"ready": 20 * ms}, {"ready": 30 * ms, STAMP_PUBLISHED: 38 * ms}])
        p.processed, p._fps = 301, 97.25
        frame = Frame(np.zeros((4, 4), np.uint16), index=7)
        r = Result(frame, Detections.empty(), seq=7)
        r.target_id, r.focus = 12, {"state": "locked"}
        p.last_result = r
        line = progress_line(p)
        lat = np.percentile([2.0] * 298 + [8.0], [50, 99])
        assert line == (f"frames   301   97.2 fps  dropped    0  latency p50 {lat[0]:.2f} / "
                        f"p99 {lat[1]:.2f} ms  target  #12  focus locked  ")
        r.target_id, r.focus = None, None
        p.pause()
        assert progress_line(p).endswith("target    -  focus -        PAUSED")
        p.records.clear()
        p.records.extend([{"ready": 0}] * 300 + [{"ready": 0, STAMP_PUBLISHED: 5 * ms}])
        assert "latency p50 5.00 / p99 5.00 ms" in progress_line(p)
        p.records.extend([{"ready": 0}] * 300)  # published only before the newest 300
        assert "latency p50 - / p99 - ms" in progress_line(p)
    finally:
        scope.close()
