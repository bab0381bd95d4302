"""The run report (Pipeline.summary) and the live status against what the run did, to
the digit: a recording played losslessly (every frame once), the simulator steering
with its guard, a frame the detector cannot read, and a pipeline never started.

Real parts only: the replay and simulated microscopes, the classical (OpenCV) detector,
a real output. Written against mutation survivors (benchmarks/results/mutation.json,
inscope/pipeline.py): summary() was read by people and scripts but no test held its
numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from inscope.acquisition.factory import open_microscope
from inscope.config import ControlConfig
from inscope.outputs import Output
from inscope.pipeline import COMBOS, Pipeline

N = 12


class Counting(Output):
    """Counts what it is handed (a real Output: its own queue and thread)."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[int] = []

    def handle(self, item) -> None:
        self.frames.append(item.frame.index)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """N frames 64 x 96 with 2 or 3 bright squares (the third from frame 4 on); frame 7
    is all NaN (a float recording with a dead frame: the detector refuses it)."""
    rng = np.random.default_rng(0)
    frames = rng.normal(500, 20, (N, 64, 96)).astype(np.float32)
    for i in range(N):
        for x, y in ((20, 20), (60, 30)) + (((40, 48),) if i >= 4 else ()):
            frames[i, y - 5:y + 5, x - 5:x + 5] = 8000
    frames[7] = np.nan
    path = tmp_path_factory.mktemp("rec") / "rec.tif"
    tifffile.imwrite(path, frames)
    return path


def _replay(path, fps: float = 0, loop: bool = False):
    """The recording as a microscope: lossless (fps 0: every frame once) by default."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pixel size in the file: 1 µm/px is fine here
        return open_microscope("replay", path=str(path), fps=fps, loop=loop)


def test_the_report_of_a_recording_played_frame_by_frame(recording, detector):
    out = Counting()
    got = []
    p = Pipeline(_replay(recording), detector, outputs=[out], on_result=got.append,
                 keep_stamps=5)
    assert p.mode == "off" and p.status()["mode"] == "off"
    s = p.run()
    # every frame but the dead one was detected and published, in order
    assert [r.frame.index for r in got] == [i for i in range(N) if i != 7]
    assert s["frames"] == N - 1 == p.processed and out.frames == [r.frame.index for r in got]
    assert s["acquired"] == N and s["dropped"] == s["dropped_camera_slot"] == 0
    assert s["detect_errors"] == 1 == p.detect_errors and "NaN" in p.last_detect_error
    assert s["control_errors"] == 0 and s["paused_frames"] == 0
    assert s["control_steps"] == 0 and s["control_skipped"] == 0  # control off
    assert s["stop_reason"] == "stream ended"
    n_boxes = sum(len(r.detections) for r in got)
    assert n_boxes == 2 * 4 + 3 * 7  # 2 squares on frames 0-3, 3 on the 7 others
    assert s["detections_per_frame"] == round(n_boxes / (N - 1), 2)
    dur = (p.t_end_ns - p.t_start_ns) * 1e-9
    assert s["duration_s"] == round(dur, 3) and 0 < dur < 60
    assert s["fps"] == round(p.stamp_stats.fps, 2) > 0
    # the camera's frames over the same span (first to last published frame's ready):
    # frame numbers 0 .. N-1 in it, one of them not published (the dead one)
    ss = p.stamp_stats
    span = (ss.last_ready - ss.first_ready) * 1e-9
    assert s["camera_fps"] == round((N - 1) / span, 2)
    assert s["fps"] == round((N - 2) / span, 2) < s["camera_fps"]
    assert s["detector"] == {"name": detector.name, "provider": detector.provider,
                             "threads": getattr(detector, "threads", None)}
    assert s["microscope"] == "replay:rec.tif"
    assert s["outputs"] == {"counting": out.stats()} and out.stats()["handled"] == N - 1
    assert s["control"]["mode"] == "off" and s["control"]["final_centring_error_um"] is None
    assert "error" not in s and "stage_held" not in s
    # every published frame is in the latency figures, and nothing else is
    lat = s["latency_ms"]
    assert lat["ready_to_published"]["n"] == N - 1 and lat["detect"]["n"] == N - 1
    assert set(COMBOS) <= set(lat)  # the loop's overhead beyond the detector, too
    # the per-frame stamps kept are a ring of the newest keep_stamps
    assert len(p.records) == 5 and p.records[-1] is got[-1].frame.stamps
    assert "control" not in lat or lat["control"] is None or lat["control"].get("n", 0) == 0
    st = p.status()
    assert st["state"] == "stopped" and st["processed"] == N - 1 and st["acquired"] == N
    assert st["last_frame_index"] == got[-1].frame.index
    assert st["last_detections"] == len(got[-1].detections) == 3
    assert st["outputs"] == {"counting": {"handled": N - 1, "dropped": 0}}
    assert st["microscope"] == "replay:rec.tif" and st["stage_held"] is None


def test_a_pipeline_never_started_reports_nothing_happened(recording, detector):
    p = Pipeline(_replay(recording), detector)
    s = p.summary()
    assert (s["frames"], s["acquired"], s["dropped"], s["duration_s"], s["camera_fps"],
            s["detections_per_frame"], s["stop_reason"]) == (0, 0, 0, 0.0, 0.0, 0.0, None)
    assert s["control"] == {"mode": "off", "final_centring_error_um": None,
                            "guard": {"moves_made": 0, "moves_not_made": 0}}
    assert s["detector"]["name"] == detector.name and s["microscope"] == "replay:rec.tif"
    st = p.status()
    assert st["state"] == "stopped" and st["acquired"] == 0 and st["target_policy"] is None
    assert st["last_frame_index"] is None and st["last_detections"] == 0
    p.scope.close()


def test_the_report_of_a_steering_run_counts_the_guards_moves(detector):
    """The simulator steering on a 64 px square target: the guard's moves made and not
    made (dry run off: all made), control steps, the final target and its true error."""
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=3, realtime=False, camera_process=False,
                                          shape=(256, 256)))
    p = Pipeline(scope, detector, control=ControlConfig(mode="steer"), frames=40)
    s = p.run()
    scope.close()
    guard = scope.guard
    made = sum(1 for m in guard.history if m.made)
    assert s["control"]["guard"] == {"moves_made": made,
                                     "moves_not_made": len(guard.history) - made}
    assert made >= 1
    assert s["control_steps"] == p.control_steps >= 1
    assert s["control_steps"] + s["control_skipped"] <= s["frames"] == 40
    assert s["stop_reason"] == "frames"
    last = p.control.last_steer
    assert s["control"]["final_target"] == {"track_id": last.get("target_id"),
                                            "status": last.get("status")}
    err = s["control"]["final_centring_error_um"]
    assert err is None or (isinstance(err, float) and err == round(err, 3) and err >= 0)


def test_a_held_stage_is_in_the_report_and_refuses_moving_modes(recording, detector,
                                                                tmp_path, caplog):
    p = Pipeline(_replay(recording), detector, control=ControlConfig(mode="steer"),
                 snapshot_dir=tmp_path)
    assert p.command({"cmd": "snapshot"}) == {
        "ok": False, "error": "snapshot: no frame processed yet; wait for the first frame "
                              "(or resume if paused) and try again."}
    p.start()
    try:
        with caplog.at_level("ERROR", logger="inscope.pipeline"):
            p.hold_stage("command channel lost")
        # one line for the operator: why, what stops, what goes on, how to end the run
        assert [r.getMessage() for r in caplog.records if r.name == "inscope.pipeline"] == [
            "command channel lost: no more stage or focus moves in this run (control mode "
            "'track'; detection and outputs go on; Ctrl-C or SIGTERM stops the run)."]
        assert p.mode == "track" and p.stage_held == "command channel lost"
        p.hold_stage("a second reason")  # the first reason stays
        assert p.stage_held == "command channel lost"
        with pytest.raises(RuntimeError, match="moves are stopped for this run"):
            p.set_mode("steer")
        p.set_mode("off")  # a mode that makes no move is still allowed
        assert p.status()["stage_held"] == "command channel lost"
    finally:
        p.stop()
    assert p.summary()["stage_held"] == "command channel lost"


def test_a_run_of_so_many_seconds_ends_then_and_says_so(recording, detector):
    """seconds=0.8 on a looping recording: wait() returns True at about 0.8 s, whatever
    timeout it was given beyond that; the report says "seconds"."""
    scope = _replay(recording, fps=50, loop=True)
    p = Pipeline(scope, detector, seconds=0.8)
    p.start()
    try:
        assert p.wait(timeout=30.0) is True
        assert p.stop_reason == "seconds"
        ran = (p.t_end_ns - p.t_start_ns) * 1e-9
        assert 0.8 <= ran < 3.0, ran  # not 0.8 s too early, nor the timeout's 30 s
    finally:
        p.stop()
    s = p.summary()
    assert s["stop_reason"] == "seconds" and s["frames"] >= 5


def test_wait_with_a_timeout_returns_false_while_the_run_goes_on(recording, detector):
    import time

    scope = _replay(recording, fps=50, loop=True)
    p = Pipeline(scope, detector)
    p.start()
    try:
        t0 = time.monotonic()
        assert p.wait(timeout=0.3) is False
        waited = time.monotonic() - t0
        assert 0.3 <= waited < 1.0, waited  # its own timeout, not the 0.5 s poll's multiple
        assert p.running and p.stop_reason is None
        p.request_stop("enough")
        assert p.wait(timeout=5.0) is True and p.stop_reason == "enough"
        assert not p.running
    finally:
        p.stop()


def test_start_and_stop_leave_nothing_behind(detector):
    """While running: two named daemon threads (a crashed caller does not hang the
    interpreter), the guard's listener, Python's switch interval at 0.5 ms; after stop:
    the listener gone, the interval restored, a second stop a no-op."""
    import sys
    import threading

    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=1, realtime=False, camera_process=False,
                                          shape=(128, 128)))
    before = sys.getswitchinterval()
    listeners = len(scope.guard.moved)
    p = Pipeline(scope, detector, control=ControlConfig(mode="steer"))
    p.start()
    try:
        names = {t.name: t.daemon for t in threading.enumerate()}
        assert names.get("inscope-detect") is True and names.get("inscope-control") is True
        assert p._on_move in scope.guard.moved
        assert len(scope.guard.moved) > listeners  # (the control stage listens too)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert p.start() is p  # started once
    finally:
        p.stop()
    assert len(scope.guard.moved) == listeners and p._on_move not in scope.guard.moved
    assert sys.getswitchinterval() == pytest.approx(before)
    assert not any(t.name in ("inscope-detect", "inscope-control") and t.is_alive()
                   for t in threading.enumerate())
    end = p.t_end_ns
    assert end > p.t_start_ns and p.stop_reason == "stopped"
    p.stop()  # idempotent: nothing changes
    assert p.t_end_ns == end and sys.getswitchinterval() == pytest.approx(before)
    p2 = Pipeline(scope, detector, switch_interval=None)
    p2.request_stop()
    assert p2.stop_reason == "stop requested"
    scope.close()


def test_the_live_status_is_the_whole_state_to_the_digit(recording, detector):
    got = []
    p = Pipeline(_replay(recording), detector, outputs=[Counting()], score_threshold=0.3,
                 on_result=got.append)
    p.run()
    st = p.status()
    assert p.fps > 0
    assert st == {
        "state": "stopped", "processed": N - 1, "acquired": N, "dropped": 0,
        "paused_frames": 0, "fps": round(p.fps, 2), "mode": "off",
        "target_policy": p.control.target_policy, "target_id": got[-1].target_id,
        "score_threshold": 0.3, "last_frame_index": got[-1].frame.index,
        "last_detections": 3,
        "detector": {"name": detector.name, "provider": detector.provider},
        "microscope": "replay:rec.tif",
        "outputs": {"counting": {"handled": N - 1, "dropped": 0}}, "stage_held": None}
    assert st["target_policy"] == "nearest"


def test_every_command_answers_with_its_result_or_one_clear_error(recording, detector):
    """The command API the ZMQ REP server calls (tests/service/test_service_zmq.py goes
    through the sockets): each reply whole, the documented aliases (``id`` for
    ``target``, ``value`` for ``score``, ``class`` beside ``target: class``)."""
    from inscope import schema
    from inscope.enums import Mode

    scope = _replay(recording, fps=20, loop=True)
    p = Pipeline(scope, detector)
    p.start()
    try:
        assert p.command({"cmd": "pause"}) == {"ok": True, "paused": True} and p.paused
        assert p.command({"cmd": "resume"}) == {"ok": True, "paused": False}
        assert not p.paused
        assert p.command({"cmd": "set_mode", "mode": "track"}) == {"ok": True,
                                                                    "mode": "track"}
        for bad in (3, None, "warp"):
            r = p.command({"cmd": "set_mode", "mode": bad})
            assert r == {"ok": False, "error": "set_mode needs \"mode\": one of "
                         f"{', '.join(Mode)}; got {bad!r}."}
        assert p.mode == "track"
        assert p.command({"cmd": "set_target", "id": 4}) == {"ok": True, "target": 4}
        name = detector.class_names[0]
        assert p.command({"cmd": "set_target", "target": "class", "class": name}) == {
            "ok": True, "target": f"class:{name}"}
        assert p.command({"cmd": "set_target", "target": "largest"}) == {
            "ok": True, "target": "largest"}
        # a class the detector does not have would steer to nothing, for good
        r = p.command({"cmd": "set_target", "target": "class:nosuch"})
        assert r == {"ok": False, "error": "set_target: the detector has no class "
                     f"'nosuch'; its classes: {', '.join(detector.class_names)}."}
        assert p.command({"cmd": "status"})["target_policy"] == "largest"
        for bad in (None, True, 2.5, [1], {"a": 1}):
            r = p.command({"cmd": "set_target", "target": bad})
            assert r["ok"] is False and r["error"].startswith(
                "set_target needs \"target\": a policy (nearest, largest, score, "
                "class:<name>, or class with \"class\": <name>) or an integer track id; "
                f"got {bad!r}.")
        r = p.command({"cmd": "set_target", "target": "tallest"})
        assert r["ok"] is False and r["error"].startswith("set_target: ")
        assert p.command({"cmd": "set_threshold", "value": 0.25}) == {
            "ok": True, "score_threshold": 0.25}
        assert p.score_threshold == 0.25
        for bad in (True, "0.5", None):
            assert p.command({"cmd": "set_threshold", "score": bad}) == {
                "ok": False, "error": "set_threshold needs \"score\": a number in [0, 1]; "
                                      f"got {bad!r}."}
        r = p.command({"cmd": "set_threshold", "score": 1.5})
        assert r == {"ok": False, "error": "set_threshold: score threshold must be in "
                                           "[0, 1]; got 1.5."}
        assert p.command({"cmd": "warp"}) == {
            "ok": False, "error": f"unknown command 'warp'; use one of "
                                  f"{', '.join(schema.COMMANDS)}."}
        assert p.command({"cmd": "status"})["state"] == "running"
        assert p.command({"cmd": "stop"}) == {"ok": True, "stopping": True}
        assert p.wait(timeout=5.0) and p.stop_reason == "stop command"
    finally:
        p.stop()


def test_the_onnx_detectors_own_split_is_in_the_latencies(recording):
    """pre-processing, session.run and decoding of every frame, beside the loop's stages
    (its total is the loop's detect stage, not repeated); the detector's threads."""
    from inscope.detector.onnx_detector import OnnxDetector

    det = OnnxDetector(provider="cpu", threads=2, warmup=False)
    p = Pipeline(_replay(recording), det)
    s = p.run()
    lat = s["latency_ms"]
    for part in ("pre", "run", "post"):
        assert lat[f"detector_{part}"]["n"] == N - 1, part
    assert "detector_total" not in lat
    assert sum(lat[f"detector_{k}"]["p50"] for k in ("pre", "run", "post")) <= (
        lat["detect"]["max"] * 1.5)
    assert s["detector"] == {"name": det.name, "provider": "cpu", "threads": 2}


def test_a_detector_that_fails_on_every_frame_stops_the_loop_with_why(tmp_path, detector):
    """A dead camera's recording played in a loop: the (real) detector refuses every
    frame. The loop used to run on, publishing nothing, never reaching its frame count;
    now it stops with an error once every frame has failed for detect_failure_stop_s
    (and DETECT_FAILURES_MIN frames), saying so and keeping the counts."""
    from inscope.pipeline import DETECT_FAILURES_MIN, DetectorFailing

    path = tmp_path / "dead.tif"
    tifffile.imwrite(path, np.full((4, 48, 64), np.nan, np.float32), metadata={"axes": "TYX"})
    # (seconds: a loop that no longer stops ends there and fails, rather than hanging)
    p = Pipeline(_replay(path, loop=True), detector, frames=5, seconds=20)
    p.detect_failure_stop_s = 0.3
    s = p.run()
    assert isinstance(p.error, DetectorFailing)
    assert s["stop_reason"].startswith("error: DetectorFailing: the detector failed on "
                                       "every frame for ")
    assert "frames in a row; the last: ValueError: The image has no finite pixel" in str(
        p.error)
    # the frames are at fault here, not the model (the advice named the model)
    assert str(p.error).endswith("so the loop stopped: check the camera or the file the "
                                 "frames come from")
    assert s["frames"] == 0 and s["detect_errors"] >= DETECT_FAILURES_MIN
    dur = (p.t_end_ns - p.t_start_ns) * 1e-9
    assert 0.3 <= dur < 30


def test_a_gap_between_frames_is_said_once_and_its_end_too(recording, detector, caplog):
    """A camera that delivers a frame every 0.6 s (a slow trigger, a stall) with the
    warning set at 0.2 s: each gap is said once, naming the camera, and so is the next
    frame; the loop waits and ends at its frame count as usual. A camera on time says
    nothing."""
    p = Pipeline(_replay(recording, fps=1 / 0.6), detector, frames=3)
    p.frame_gap_warn_s = 0.2
    with caplog.at_level("WARNING", logger="inscope.pipeline"):
        s = p.run()
    assert s["frames"] == 3 and p.error is None
    said = [r.getMessage() for r in caplog.records if r.name == "inscope.pipeline"]
    gaps = [m for m in said if m.startswith("no frame from replay:rec.tif for ")]
    back = [m for m in said if m.startswith("frames again from replay:rec.tif after ")]
    assert 2 <= len(gaps) <= 4 and len(back) >= 2, said
    assert all(m.endswith("s; still waiting: check the camera (its trigger mode, a "
                          "sequence stopped elsewhere)") for m in gaps)
    caplog.clear()
    q = Pipeline(_replay(recording, fps=50), detector, frames=3)
    with caplog.at_level("WARNING", logger="inscope.pipeline"):
        q.run()
    assert not [r for r in caplog.records if "frame" in r.getMessage()
                and r.name == "inscope.pipeline"]


def test_failures_between_good_frames_never_add_up_to_a_stop(tmp_path, detector):
    """Every other frame dead, looped past the failure window many times over: each good
    frame starts the count again, so the loop ends at its frame count, not with an
    error."""
    frames = np.random.default_rng(6).normal(500, 20, (4, 48, 64)).astype(np.float32)
    frames[:, 10:20, 10:20] = 6000
    frames[1] = frames[3] = np.nan
    path = tmp_path / "every_other.tif"
    tifffile.imwrite(path, frames, metadata={"axes": "TYX"})
    p = Pipeline(_replay(path, loop=True), detector, frames=300)
    p.detect_failure_stop_s = 0.0  # (only the count of failures in a row holds it)
    s = p.run()
    assert p.error is None and s["stop_reason"] == "frames"
    assert s["frames"] == 300 and s["detect_errors"] >= 299


def test_every_frame_is_accounted_for_paused_failed_or_published(tmp_path, detector):
    """A lossless recording with two dead frames: each frame is published, counted as a
    detector error (the first one logged, the last one kept) or counted as paused."""
    frames = np.random.default_rng(5).normal(500, 20, (8, 48, 64)).astype(np.float32)
    frames[:, 10:20, 10:20] = 6000
    frames[2] = frames[5] = np.nan
    path = tmp_path / "two_dead.tif"
    tifffile.imwrite(path, frames)
    p = Pipeline(_replay(path), detector)
    s = p.run()
    assert s["detect_errors"] == 2 and s["frames"] == 6 == p.detected
    assert p.last_detect_error == ("ValueError: The image has no finite pixel (all "
                                   "NaN/inf); check the camera or the file it came from.")
    # paused from the start: every frame is dropped as paused, none detected
    q = Pipeline(_replay(path), detector)
    q.pause()
    s = q.run()
    assert s["paused_frames"] == 8 and s["frames"] == 0 and s["detect_errors"] == 0
    assert q.paused and q.status()["paused_frames"] == 8


def test_a_box_scoring_exactly_the_threshold_is_kept(recording, detector):
    got = []
    Pipeline(_replay(recording), detector, on_result=got.append).run()
    scores = np.concatenate([r.detections.scores for r in got])
    thr = float(np.sort(np.unique(scores))[1])  # the second-lowest score seen
    kept = []
    Pipeline(_replay(recording), detector, score_threshold=thr, on_result=kept.append).run()
    n = sum(len(r.detections) for r in kept)
    assert n == int((scores >= thr).sum()) and 0 < n < len(scores)
    assert all((r.detections.scores >= thr).all() for r in kept)


def test_a_camera_that_fails_mid_run_ends_it_and_says_why(tmp_path, detector, caplog):
    """A folder recording whose third frame is unreadable: the stream's error reaches
    the loop, which stops with it as the reason, in the report and the log."""
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((32, 48), 100 + i, np.uint16))
    (folder / "f2.png").write_bytes(b"truncated")
    p = Pipeline(_replay(folder), detector)
    with caplog.at_level("ERROR", logger="inscope.pipeline"):
        s = p.run()
    why = f"Cannot read {str(folder / 'f2.png')!r} as a picture; check the file or " \
          "convert it to TIFF."
    assert s["stop_reason"] == f"error: MicroscopeUnavailable: {why}"
    assert s["error"] == f"MicroscopeUnavailable: {why}"
    assert s["frames"] == 2
    assert f"acquisition/detection stopped: {why}" in caplog.text


class FailingMission:
    """A user's mission (the Director protocol) with a bug: it raises on its third call.
    The loop must carry on detecting and publishing, count it and say why."""

    def __init__(self) -> None:
        self.calls = 0

    def step(self, stage, frame, tracks) -> None:
        self.calls += 1
        if self.calls >= 3:
            raise KeyError("cell 7")

    def status(self) -> dict:
        return {"calls": self.calls}

    def summary(self) -> dict:
        return {"calls": self.calls}


def test_a_failing_control_step_is_counted_published_and_logged_once(detector, caplog):
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=2, realtime=False, camera_process=False,
                                          shape=(128, 128)))
    got = []
    mission = FailingMission()
    p = Pipeline(scope, detector, control=ControlConfig(mode="steer"), seconds=30.0,
                 director=mission)

    def collect(r) -> None:  # (the mission runs on usable frames only: wait for 6 calls)
        got.append(r)
        if mission.calls >= 6 and len(got) >= 30:
            p.request_stop("enough")

    p.on_result = collect
    with caplog.at_level("WARNING", logger="inscope.pipeline"):
        s = p.run()
    scope.close()
    fails = mission.calls - 2
    assert fails >= 4 and s["control_errors"] == p.control_errors == fails
    assert s["frames"] >= 30 and s["stop_reason"] == "enough"  # the loop went on
    warned = [r.getMessage() for r in caplog.records if "control failed" in r.getMessage()]
    assert len(warned) == 1  # the first failure only; the rest are counted
    head, _, tail = warned[0].partition(": ")
    assert head.startswith("control failed on frame ") and tail == ("'cell 7' (the loop "
                                                                     "goes on)")
    # control runs beside publication: its state reaches the results after that frame
    first = next(r for r in got if r.control and r.control.get("status") == "error")
    assert 0 < int(head.rsplit(" ", 1)[1]) < first.frame.index
    errors = [r.control for r in got if r.control and r.control.get("status") == "error"]
    assert errors and all(e == {"status": "error", "reason": "KeyError: 'cell 7'"}
                          for e in errors)
    assert s["control_steps"] == p.control_steps >= mission.calls


def test_results_carry_the_control_state_and_the_live_frame_rate(detector):
    """Published results carry the newest control step (target, steering, focus); the
    live frame rate is the running average (0.9 / 0.1) of the camera's rate between
    published frames, from their ready stamps."""
    from inscope.acquisition.frame import STAMP_READY
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=3, realtime=False, camera_process=False,
                                          shape=(256, 256)))
    got = []
    p = Pipeline(scope, detector, control=ControlConfig(mode="steer+focus"), frames=40,
                 on_result=got.append)
    p.run()
    scope.close()
    steered = [r for r in got if r.control is not None]
    assert steered, "no published result carried a steering action"
    assert all(r.target_id == r.control.get("target_id") for r in steered)
    assert any(r.target_id is not None for r in steered)
    assert any(r.focus is not None for r in got)
    fps = 0.0
    last = 0
    for r in got:
        ready = r.frame.stamps[STAMP_READY]
        if last and ready > last:
            inst = 1e9 / (ready - last)
            fps = inst if not fps else 0.9 * fps + 0.1 * inst
        last = ready
    assert p.fps == pytest.approx(fps) and fps > 0


def test_thresholds_and_modes_set_live(recording):
    """The detector's own threshold is lowered with the pipeline's (so lower scores get
    through), never raised; 0 and 1 are thresholds, -0.1 is not; a mode change reaches
    the control stage and the pipeline's own copy of the config, not the caller's;
    set_target needs a started pipeline."""
    from inscope.detector import load_detector

    det = load_detector("classical")
    det.score_threshold = 0.5
    config = ControlConfig(mode="track")
    p = Pipeline(_replay(recording), det, control=config, score_threshold=0.6)
    with pytest.raises(RuntimeError, match="the pipeline is not started; start it before "
                                           "set_target."):
        p.set_target("largest")
    p.start()
    try:
        assert det.score_threshold == 0.5  # 0.6 is above it: the detector keeps its own
        p.set_threshold(0.3)
        assert det.score_threshold == 0.3 and p.score_threshold == 0.3
        p.set_threshold(0.45)
        assert det.score_threshold == 0.3 and p.score_threshold == 0.45
        for edge in (0.0, 1.0):
            assert p.command({"cmd": "set_threshold", "score": edge}) == {
                "ok": True, "score_threshold": edge}
        assert det.score_threshold == 0.0
        assert p.command({"cmd": "set_threshold", "score": -0.1})["ok"] is False
        p.set_mode("steer")
        assert p.mode == "steer" and p.control_config.mode == "steer"
        assert p.control.mode == "steer" and config.mode == "track"
        assert p.set_target("class", "cell") == "class:cell"  # the classical one's class
    finally:
        p.stop()
    fresh = load_detector("classical")
    fresh.score_threshold = None
    Pipeline(_replay(recording), fresh, score_threshold=0.2).start().stop()
    assert fresh.score_threshold == 0.2  # no threshold of its own: it takes the loop's


def test_switching_control_off_publishes_no_stale_control_state(detector):
    from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope

    scope = SimulatedMicroscope(SimConfig(seed=3, realtime=False, camera_process=False,
                                          shape=(256, 256)))
    after: list = []
    p = Pipeline(scope, detector, control=ControlConfig(mode="steer"), seconds=30.0)

    def collect(r) -> None:
        if p.mode == "off":
            after.append(r)
            if len(after) >= 10:
                p.request_stop("enough")
        elif r.control is not None and r.seq >= 10:
            p.set_mode("off")  # from the detect thread, as a command would

    p.on_result = collect
    p.run()
    scope.close()
    assert len(after) >= 10 and all(r.control is None and r.target_id is None
                                    for r in after[1:])


def test_ctrl_c_stops_the_run_cleanly_and_says_so(recording, detector):
    import os
    import signal
    import threading

    scope = _replay(recording, fps=20, loop=True)
    # (seconds: where SIGINT does not reach the run - a harness with its own handler,
    # as mutmut's - the looped replay ends there and the test fails rather than hangs)
    p = Pipeline(scope, detector, seconds=30)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    s = p.run()  # KeyboardInterrupt in wait(): a clean stop, the report returned
    assert s["stop_reason"] == "interrupted (Ctrl-C)" and s["frames"] >= 1
    assert not p.running


def test_a_detector_whose_session_fails_is_named_as_the_fault(recording):
    """The other half of the advice: frames that are fine and a detector that fails on
    each (a lost GPU session, a Triton server gone: neither can be made to fail here, so
    the real ONNX detector's session is replaced by one that raises as ONNX Runtime
    does)."""
    from inscope.detector.onnx_detector import OnnxDetector
    from inscope.pipeline import DetectorFailing

    class LostSession:
        def run(self, *a, **kw):
            raise RuntimeError("CUDA failure 999: unknown error")

    det = OnnxDetector(provider="cpu", warmup=False)
    det.session = LostSession()
    p = Pipeline(_replay(recording, loop=True), det, frames=5, seconds=20)
    p.detect_failure_stop_s = 0.3
    p.run()
    assert isinstance(p.error, DetectorFailing)
    assert str(p.error).endswith("so the loop stopped: check the model, its provider or "
                                 "its server (the classical detector needs none of them)")
