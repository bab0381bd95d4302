"""The command server answers every request and never leaves a moving stage unstoppable
(issue 10, item 1).

Real ZMQ sockets on 127.0.0.1, a real pipeline on the simulated microscope (steering and
focus lock make real, guarded moves) with the real classical detector. The fuzz stream
comes from a seeded generator (no extra dependency), so a failure replays exactly.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time

import pytest
from _support.sockets import req_socket

from inscope.acquisition.factory import open_microscope
from inscope.config import Config, ControlConfig, with_overrides
from inscope.pipeline import Pipeline
from inscope.schema import COMMANDS
from inscope.zmq_api import MAX_REQUEST_BYTES, CommandServer, request

N_FUZZ = 5000


def _echo_server(**kw) -> CommandServer:
    return CommandServer(lambda req: {"ok": True, "cmd": req["cmd"]}, port=0, **kw).start()


def test_multipart_request_gets_one_error_and_the_server_goes_on():
    srv = _echo_server()
    try:
        s = req_socket(srv.address)
        s.send_multipart([b'{"cmd": "status"}', b"second frame", b"third"])
        rep = json.loads(s.recv())
        assert rep["ok"] is False and "3 message frames" in rep["error"]
        s.close()
        assert request(srv.address, {"cmd": "status"}) == {"ok": True, "cmd": "status"}
        assert srv.alive
    finally:
        srv.stop()


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000,
                                 ("[" * 5000 + "]" * 5000).encode(),
                                 ('{"cmd": ' + "[" * 990 + "]" * 990 + "}").encode()])
def test_deep_nesting_gets_one_error_and_the_server_goes_on(raw):
    srv = _echo_server()
    try:
        s = req_socket(srv.address)
        s.send(raw)
        rep = json.loads(s.recv())
        s.close()
        assert rep["ok"] is False and rep["error"]
        assert len(rep["error"]) < 600  # one line, not the request echoed back
        assert request(srv.address, {"cmd": "status"})["ok"]
    finally:
        srv.stop()


def test_oversized_request_is_read_and_refused():
    srv = _echo_server()
    try:
        s = req_socket(srv.address)
        s.send(b'{"cmd": "status", "pad": "' + b"x" * (MAX_REQUEST_BYTES + 10) + b'"}')
        rep = json.loads(s.recv())
        s.close()
        assert rep["ok"] is False and "limit" in rep["error"]
        assert request(srv.address, {"cmd": "status"})["ok"]
    finally:
        srv.stop()


# -- the fuzz stream -------------------------------------------------------------------
def _rand_json(rng: random.Random, depth: int = 0):
    k = rng.randrange(9 if depth < 4 else 6)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.choice([0, -1, 7, 2**70, -(2**63), 1e308, -1e-300, 0.5])
    if k == 3:
        return rng.choice(["", "status", "nearest", "class", "../../etc", "/tmp/x",
                           "C:\\\\Windows", "\u00e9\u4e2d\U0001f600", "x" * 300, "NaN"])
    if k == 4:
        return rng.uniform(-1e6, 1e6)
    if k == 5:
        return rng.choice([math.nan, math.inf, -math.inf, 1.0])
    if k == 6:
        return [_rand_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["cmd", "mode", "target", "class", "score", "value", "dir", "id",
                        "x"]): _rand_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN/Infinity tokens on purpose


COMMANDS_BUT_STOP = [c for c in COMMANDS if c != "stop"]


def _request(rng: random.Random) -> tuple[str, list[bytes]]:
    """One generated request: (category, message frames)."""
    k = rng.randrange(100)
    if k < 15:
        return "random-bytes", [rng.randbytes(rng.randrange(0, 300))]
    if k < 25:
        n = rng.randrange(2, 6)
        return "multipart", [rng.choice([b"", rng.randbytes(20), _dumps({"cmd": "status"})])
                             for _ in range(n)]
    if k < 33:
        d = rng.choice([10, 500, 995, 3000, 100_000])
        style = rng.randrange(4)
        if style == 0:
            raw = b"[" * d
        elif style == 1:
            raw = b'{"a":' * d
        elif style == 2:
            raw = b"[" * d + b"]" * d
        else:
            raw = b'{"cmd":' + b"[" * min(d, 995) + b"]" * min(d, 995) + b"}"
        return "deep-nesting", [raw]
    if k < 35:
        size = rng.choice([MAX_REQUEST_BYTES - 100, MAX_REQUEST_BYTES + 1, 3 * 2**20])
        pad = "x" * size
        return "huge", [_dumps({"cmd": "status", "pad": pad})]
    if k < 70:
        # a known command with random, mostly wrong, argument types
        req = {"cmd": rng.choice(COMMANDS_BUT_STOP)}
        for key in rng.sample(["mode", "target", "class", "score", "value", "dir", "id"],
                              rng.randrange(0, 4)):
            req[key] = _rand_json(rng, 1)
        return "wrong-types", [_dumps(req)]
    if k < 85:
        return "random-json", [_dumps(_rand_json(rng))]
    if k < 92:
        bad = rng.choice([b'{"cmd": "status"', b'{"cmd": NaN}', b'{"cmd": Infinity}',
                          b"\xff\xfe\xfd", b'{"cmd": "st\xe9tus"}', b"", b"null",
                          b'{"cmd": "status"}\x00garbage', b'{"cmd": 1e999}'])
        return "malformed", [bad]
    return "wrong-cmd", [_dumps({"cmd": _rand_json(rng)})]


def test_fuzzed_requests_all_answered_then_status_and_stop(detector, tmp_path):
    scope = open_microscope("sim", shape=(128, 128), exposure_ms=10.0, seed=5)
    p = Pipeline(scope, detector, control=ControlConfig(mode="steer+focus"),
                 snapshot_dir=tmp_path / "snaps")
    p.start()
    srv = CommandServer(p.command, port=0).start()
    rng = random.Random(20260412)
    counts: dict[str, int] = {}
    answered = 0
    s = req_socket(srv.address)
    try:
        for _ in range(N_FUZZ):
            cat, frames = _request(rng)
            counts[cat] = counts.get(cat, 0) + 1
            s.send_multipart(frames)
            rep = json.loads(s.recv())  # raises zmq.Again if the server stopped answering
            assert isinstance(rep, dict) and isinstance(rep.get("ok"), bool), (cat, rep)
            if not rep["ok"]:
                assert isinstance(rep["error"], str) and 0 < len(rep["error"]) < 2000
            answered += 1
        assert answered == N_FUZZ
        assert srv.alive and srv.requests == N_FUZZ
        assert set(counts) == {"random-bytes", "multipart", "deep-nesting", "huge",
                               "wrong-types", "random-json", "malformed", "wrong-cmd"}
        print(f"fuzz: {answered} requests answered: {counts}")
        # snapshots stayed inside the run's folder and were rate-limited
        outside = [q for q in tmp_path.rglob("*") if q.is_file()
                   and tmp_path / "snaps" not in q.parents]
        assert not outside
        st = request(srv.address, {"cmd": "status"})
        assert st["ok"] and st["state"] in ("running", "paused")
        assert request(srv.address, {"cmd": "stop"}) == {"ok": True, "stopping": True}
        assert p.wait(10) and p.stop_reason == "stop command"
    finally:
        s.close()
        srv.stop()
        p.stop()
        scope.close()


# -- if the thread dies anyway ---------------------------------------------------------
def test_dead_command_thread_stops_the_stage_moving_and_says_so(tmp_path, caplog):
    """A bug kills the REP thread: the service makes no more moves and says why."""
    from inscope.service import build_service, run_service

    cfg = Config()
    cfg = with_overrides(cfg, "microscope", backend="sim",
                         options={"shape": [128, 128], "exposure_ms": 10.0, "seed": 3})
    cfg = with_overrides(cfg, "detector", model="classical")
    cfg = with_overrides(cfg, "control", mode="steer+focus")
    cfg = with_overrides(cfg, "outputs", window=False, snapshot_dir=str(tmp_path))
    cfg = with_overrides(cfg, "outputs.zmq", pub_port=0, rep_port=0)
    cfg = with_overrides(cfg, "run", seconds=60.0, progress=False)
    svc = build_service(cfg, say=lambda *_: None)
    guard = svc.scope.guard

    def bug(frames):
        raise SystemExit("simulated bug in the reply code")

    svc.server._reply_bytes = bug  # the thread now dies on the next request
    moves: dict[str, int] = {}

    def operator():
        p = svc.pipeline
        while p.processed < 20:
            time.sleep(0.05)
        moves["before"] = sum(m.made for m in guard.history)
        with pytest.raises(TimeoutError):
            request(svc.server.address, {"cmd": "status"}, timeout_ms=1000)
        time.sleep(0.5)  # let a step in flight finish
        moves["held"] = sum(m.made for m in guard.history)
        n = p.processed
        time.sleep(1.5)
        moves["later"] = sum(m.made for m in guard.history)
        moves["frames_meanwhile"] = p.processed - n
        p.request_stop("test done")

    t = threading.Thread(target=operator)
    with caplog.at_level("ERROR", logger="inscope"):
        t.start()
        summary = run_service(svc, progress=False, say=lambda *_: None)
        t.join(10)
    assert moves["before"] > 0, "the loop was moving the stage/focus"
    assert moves["later"] == moves["held"], "no move after the command server died"
    assert moves["frames_meanwhile"] > 0, "detection goes on"
    assert "command server stopped" in summary["stage_held"]
    assert summary["control"]["mode"] == "track"
    assert any("no more stage or focus moves" in r.getMessage() for r in caplog.records)
