"""The live pipeline on Micro-Manager's DemoCamera (real MMCore), with real ZMQ sockets.

Everything binds to 127.0.0.1 on ephemeral ports so parallel test runs do not clash.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from _support.sockets import drain, req_socket, sub_socket, wait_connected

from inscope import schema
from inscope.config import ControlConfig
from inscope.overlay import OverlayOutput
from inscope.pipeline import Pipeline
from inscope.zmq_api import CommandServer, PubOutput, request


def test_democamera_one_message_per_processed_frame(mm_scope, detector):
    pub = PubOutput(port=0)
    pub.open()
    sub = sub_socket(pub.address, rcvhwm=10_000)
    try:
        wait_connected(pub._sock, sub)
        p = Pipeline(mm_scope, detector, control=ControlConfig(mode="track"),
                     outputs=[pub], frames=40)
        s = p.run()
        msgs = [m for m in drain(sub) if m[0] == schema.TOPIC_DETECTIONS]
    finally:
        sub.close()
    assert s["frames"] == 40 == p.processed
    assert s["stop_reason"] == "frames"
    assert len(msgs) == p.processed, "exactly one detections message per processed frame"
    decoded = [json.loads(m[1]) for m in msgs]
    indices = [d["frame_index"] for d in decoded]
    assert [d["seq"] for d in decoded] == list(range(40))
    assert indices == sorted(indices) and len(set(indices)) == 40
    assert indices[-1] == p.last_result.frame.index
    d = decoded[-1]
    assert d["schema"] == schema.SCHEMA_DETECTIONS
    assert d["shape"] == list(p.last_result.frame.pixels.shape)
    assert d["n"] == len(d["detections"]) > 0, "DemoCamera beads should be detected"
    st = d["stamps_ns"]
    # published on detection: control (its own thread) is not between them
    assert st["ready"] <= st["dequeued"] <= st["detect_start"] <= st["detect_end"] \
        <= st["published"]
    assert set(d["stage_um"]) == {"x", "y", "z"}
    det = d["detections"][0]
    x0, y0, x1, y1 = det["box_px"]
    assert x0 < x1 and y0 < y1 and 0 <= det["score"] <= 1
    # stage coordinates of the box centre follow the frame's own map
    f = p.last_result.frame
    expect = f.pixel_to_stage(np.array([det["center_px"]]))[0]
    np.testing.assert_allclose(det["center_um"], expect, atol=1e-2)
    assert any(x["track_id"] is not None for x in d["detections"])
    # summary fields are sane
    assert s["acquired"] >= s["frames"]
    cam = s["dropped_camera_slot"]
    # only the camera slot drops frames: control reads the newest published detections
    # and skips (counts) what it had no time for, but every frame is still published
    assert s["dropped"] == cam and s["control_skipped"] >= 0
    # every acquired frame was processed, paused, failed detection, dropped stale from
    # the camera slot, or was still unread in a one-frame slot when the run stopped
    unread = (s["acquired"] - s["frames"] - s["paused_frames"] - s["detect_errors"]
              - s["dropped"])
    assert 0 <= unread <= 2, s
    assert s["paused_frames"] == s["detect_errors"] == 0
    lat = s["latency_ms"]["ready_to_published"]
    assert lat["n"] == 40 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert s["detector"]["name"] == "classical"


def test_stalled_subscriber_never_blocks_the_loop(mm_scope, detector, tmp_path):
    """A subscriber that connects and never reads: the loop processes every frame it
    would without it; in lossless mode (nodrop) the publisher counts drops instead of
    blocking."""
    pub = PubOutput(port=0, sndhwm=1, nodrop=True)
    pub.open()
    stalled = sub_socket(pub.address, rcvhwm=1, rcvbuf=4096)
    try:
        wait_connected(pub._sock, stalled)
        # overlay frames (~0.8 MB each) through the same PUB fill any socket buffer fast
        ov = OverlayOutput(publisher=pub, window=False)
        p = Pipeline(mm_scope, detector, outputs=[pub, ov], frames=60)
        s = p.run()
    finally:
        stalled.close()
    assert s["frames"] == 60 and s["stop_reason"] == "frames"
    z = s["outputs"]["zmq-pub"]
    assert z["zmq_dropped"] > 0, "the stalled subscriber's messages must be dropped"
    assert z["handled"] + z["dropped"] >= 60
    assert s["outputs"]["overlay"]["handled"] > 0


def test_rep_commands_and_bad_input(mm_scope, detector, tmp_path):
    p = Pipeline(mm_scope, detector, control=ControlConfig(mode="track"),
                 snapshot_dir=tmp_path / "snaps")
    p.start()
    srv = CommandServer(p.command, port=0).start()
    addr = srv.address
    try:
        deadline = time.monotonic() + 10
        while p.processed < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = request(addr, {"cmd": "status"})
        assert st["ok"] and st["state"] == "running" and st["processed"] >= 5
        assert st["mode"] == "track"

        assert request(addr, {"cmd": "pause"}) == {"ok": True, "paused": True}
        # let a frame already in flight finish (it was dequeued before the pause)
        deadline = time.monotonic() + 5
        n_prev = -1
        while p.processed != n_prev and time.monotonic() < deadline:
            n_prev = p.processed
            time.sleep(0.2)
        n0, paused0 = p.processed, p.paused_frames
        time.sleep(0.4)
        st = request(addr, {"cmd": "status"})
        assert st["state"] == "paused"
        assert p.processed == n0, "paused: no frame is processed"
        assert p.paused_frames > paused0, "paused: frames still arrive and are counted"
        assert request(addr, {"cmd": "resume"})["ok"]
        deadline = time.monotonic() + 10
        while p.processed <= n0 + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.processed > n0 + 3, "resume restarts processing"

        # bad input: one clear error each, never a hang
        s = req_socket(addr, timeout_ms=3000)
        s.send(b"this is not json")
        rep = json.loads(s.recv())
        s.close()
        assert rep["ok"] is False and "JSON" in rep["error"]
        for bad, word in (({"cmd": "fly"}, "unknown command"),
                          ({"nocmd": 1}, "cmd"),
                          ({"cmd": "set_mode", "mode": "warp"}, "mode"),
                          ({"cmd": "set_threshold", "score": "high"}, "score"),
                          ({"cmd": "set_threshold", "score": 7}, "[0, 1]"),
                          ({"cmd": "set_target", "target": "bogus"}, "policy"),
                          ({"cmd": "set_target"}, "target")):
            rep = request(addr, bad)
            assert rep["ok"] is False, bad
            assert word in rep["error"], (bad, rep)

        assert request(addr, {"cmd": "set_mode", "mode": "off"})["mode"] == "off"
        assert p.mode == "off"
        assert request(addr, {"cmd": "set_threshold", "score": 0.5})["score_threshold"] == 0.5
        assert request(addr, {"cmd": "set_target", "target": "largest"})["target"] == "largest"
        snap = request(addr, {"cmd": "snapshot"})
        assert snap["ok"], snap
        for path in snap["paths"].values():
            assert Path(path).is_file() and Path(path).stat().st_size > 0
        n1 = p.processed
        deadline = time.monotonic() + 10
        while p.processed <= n1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert p.processed > n1, "the loop keeps running after bad commands"
        assert request(addr, {"cmd": "stop"})["ok"]
        assert p.wait(10)
        assert p.stop_reason == "stop command"
    finally:
        srv.stop()
        p.stop()
    assert p.summary()["stop_reason"] == "stop command"
