"""Exact truths of the ZMQ command server, the detections publisher and ``request()``.

The REP server is what carries ``stop`` to a service that moves a microscope stage, so
every request must get exactly one reply whatever it holds, each failure must be counted
and named with its fix, and a dying server thread must say so through ``failed``. The
PUB side must never block the loop and must count exactly what it sent and dropped.

Real ZMQ sockets on 127.0.0.1 with ephemeral ports; ``reply_for`` / ``_reply_bytes``
directly where no socket is needed. Faults that real sockets cannot produce on demand (a
spurious ``EAGAIN`` after a poll, a failed reply send, a failed re-bind) are injected by a
``zmq.Socket`` subclass on a private context (:func:`_spy_context`), which also records
the socket options and closes the code under test makes.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import zmq
from _support.sockets import drain, free_port, req_socket, sub_socket, wait_connected

from inscope import schema
from inscope.acquisition.frame import Frame
from inscope.detector.base import Detections
from inscope.outputs import STAMP_SENT, Result
from inscope.zmq_api import MAX_REQUEST_BYTES, CommandServer, PubOutput, _host, _short, request

LOGGER = "inscope.zmq_api"
#: the command server's socket type (a ROUTER: it may answer a slow command out of order)
SERVER = zmq.ROUTER
EXAMPLE = '{"cmd": "status"}'
COMMAND_LIST = ", ".join(schema.COMMANDS)


# -- helpers -----------------------------------------------------------------------------
def _echo(req: dict) -> dict:
    return {"ok": True, "cmd": req["cmd"]}


def _cut(text: str, n: int) -> str:
    """What ``_short`` must make of a value whose repr is *text* (written out here, not
    by calling ``_short``, so a broken ``_short`` cannot agree with itself)."""
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def _result(i: int, n_boxes: int = 2) -> Result:
    boxes = np.tile(np.array([[1, 2, 30, 40]], np.float32), (n_boxes, 1))
    dets = Detections(boxes, np.full(n_boxes, 0.9, np.float32), np.zeros(n_boxes, np.int64))
    frame = Frame(np.zeros((8, 8), np.uint16), index=100 + i,
                  stamps={"ready": time.monotonic_ns()})
    return Result(frame, dets, seq=i)


def _spy_context(**faults):
    """A private context whose sockets record ``setsockopt``/``close`` and can fail on
    demand. *faults*: ``recv_again`` (REP recv_multipart raises Again this many times),
    ``send_error`` (REP send raises EFSM this many times), ``busy_rebinds`` (this many
    REP binds after the first fail with EADDRINUSE, as while the closed socket still
    holds its port), ``rebind_fails`` (every REP bind after the first fails so)."""
    record: list[tuple] = []
    state = {"recv_again": 0, "send_error": 0, "busy_rebinds": 0, "rebind_fails": False,
             "rep_binds": 0, **faults}

    class SpySocket(zmq.Socket):
        def setsockopt(self, opt, value):
            record.append((self.type, "set", opt, value))
            return super().setsockopt(opt, value)

        def close(self, linger=None):
            if not self.closed:
                record.append((self.type, "close", linger))
            return super().close(linger)

        def bind(self, addr):
            if self.type == SERVER:
                state["rep_binds"] += 1
                if state["rebind_fails"] and state["rep_binds"] > 1:
                    raise zmq.ZMQError(zmq.EADDRINUSE)
                if state["rep_binds"] > 1 and state["busy_rebinds"] > 0:
                    # the port still held by the socket just closed (ZMQ frees it in
                    # its I/O thread, a moment later)
                    state["busy_rebinds"] -= 1
                    raise zmq.ZMQError(zmq.EADDRINUSE)
            return super().bind(addr)

        def recv_multipart(self, *a, **kw):
            if self.type == SERVER and state["recv_again"] > 0:
                state["recv_again"] -= 1
                raise zmq.Again()
            return super().recv_multipart(*a, **kw)

        def send(self, data, *a, **kw):
            if self.type == SERVER and state["send_error"] > 0:
                state["send_error"] -= 1
                raise zmq.ZMQError(zmq.EFSM)
            return super().send(data, *a, **kw)

        def send_multipart(self, frames, *a, **kw):
            if self.type == SERVER and state["send_error"] > 0:
                state["send_error"] -= 1
                raise zmq.ZMQError(zmq.EFSM)
            return super().send_multipart(frames, *a, **kw)

    class SpyContext(zmq.Context):
        _socket_class = SpySocket
        spy_record = record
        spy_state = state

    return SpyContext()


def _died(srv: CommandServer) -> tuple[threading.Event, list[str]]:
    got: list[str] = []
    ev = threading.Event()

    def on_failed(reason: str) -> None:
        got.append(reason)
        ev.set()

    srv.failed.connect(on_failed)
    return ev, got


def _bad(rep: dict) -> str:
    """The error text of an error reply, after checking the reply is exactly that."""
    assert set(rep) == {"ok", "error"} and rep["ok"] is False, rep
    assert isinstance(rep["error"], str) and "\n" not in rep["error"]
    return rep["error"]


# -- _short ------------------------------------------------------------------------------
def test_short_keeps_80_characters_and_says_how_long_the_rest_was():
    """Error replies quote what the client sent; the quote must stay one short line."""
    assert _short("abc") == "'abc'"
    assert _short(None) == "None"
    exact = "x" * 78  # repr is 80 characters: kept whole
    assert _short(exact) == repr(exact)
    one_more = "x" * 79  # repr is 81 characters: cut
    assert _short(one_more) == "'" + "x" * 79 + "... (81 characters)"
    assert _short(list(range(100)), 10) == "[0, 1, 2, ... (390 characters)"
    assert _short("ab", 4) == "'ab'" and _short("abc", 4) == "'abc... (5 characters)"


def test_short_survives_a_value_too_deep_to_repr():
    """A hostile, deeply nested request must not crash the error path."""
    deep: list = []
    for _ in range(200_000):
        deep = [deep]
    assert "too deeply nested" in _short(deep).lower()


# -- reply_for: each bad input, one clear error ----------------------------------------
def test_oversized_request_is_refused_above_the_limit_not_at_it():
    """The size limit is inclusive: a request of exactly max_request_bytes is served."""
    srv = CommandServer(_echo, port=0, max_request_bytes=40)
    at_limit = b'{"cmd": "status", "pad": "' + b"x" * 12 + b'"}'
    assert len(at_limit) == 40
    assert srv.reply_for(at_limit) == {"ok": True, "cmd": "status"}
    over = at_limit[:-2] + b'x"}'
    err = _bad(srv.reply_for(over))
    assert "41 bytes" in err and "limit is 40 bytes" in err and EXAMPLE in err
    assert srv.max_request_bytes == 40
    assert CommandServer(_echo, port=0).max_request_bytes == MAX_REQUEST_BYTES == 1 << 20


@pytest.mark.parametrize(("raw", "decoder_says"), [
    (b"not json", "Expecting value: line 1 column 1 (char 0)"),
    (b"{}x", "Extra data: line 1 column 3 (char 2)"),
    # a decoder message whose repr is longer than 80 characters is quoted whole (the
    # limit is 120 here)
    (b'{"cmd": "' + b"a" * 991 + b'\xe9tus"}',
     "'utf-8' codec can't decode byte 0xe9 in position 1000: invalid continuation byte"),
])
def test_non_json_request_names_the_decoder_error_and_the_fix(raw, decoder_says):
    """A client that sends garbage must learn what the parser said and what to send."""
    err = _bad(CommandServer(_echo, port=0).reply_for(raw))
    assert "not valid JSON" in err
    assert f"({decoder_says!r})" in err
    assert EXAMPLE in err and len(err) < 300


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000])
def test_too_deep_request_is_refused_with_the_fix(raw):
    """Nesting that blows the parser's recursion limit is an error reply, not a crash."""
    err = _bad(CommandServer(_echo, port=0).reply_for(raw))
    assert "nested too deeply" in err and EXAMPLE in err


@pytest.mark.parametrize("raw", [b'{"x": 1}', b"[1, 2]", b'"status"', b"5", b"null",
                                 b'{"Cmd": "status"}'])
def test_request_without_a_cmd_field_lists_the_commands(raw):
    """No "cmd" (or not an object): the reply says so and lists every command."""
    err = _bad(CommandServer(_echo, port=0).reply_for(raw))
    assert 'JSON object with a "cmd" field' in err
    assert f"commands: {COMMAND_LIST}." in err
    assert "must be a string" not in err


@pytest.mark.parametrize(("cmd", "shown"), [
    (5, "got 5."), (None, "got None."), (["stop"], "got ['stop']."),
    (["x" * 100], "got " + _cut(repr(["x" * 100]), 80) + "."),
])
def test_non_string_cmd_is_refused_showing_what_came(cmd, shown):
    """A non-string cmd never reaches the handler; the reply shows the value, cut."""
    called = []
    srv = CommandServer(lambda r: called.append(r) or {"ok": True}, port=0)
    err = _bad(srv.reply_for(json.dumps({"cmd": cmd}).encode()))
    assert '"cmd" must be a string' in err
    assert COMMAND_LIST in err
    assert err.endswith(shown), err
    assert called == []


def test_handler_exception_becomes_an_error_reply_naming_command_type_and_message(caplog):
    """A command that raises must not kill the server: the client gets the command, the
    exception type and its message (cut to 300), the log gets one warning line."""
    exc = ValueError("v" * 400)

    def handler(req):
        raise exc

    srv = CommandServer(handler, port=0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        err = _bad(srv.reply_for(b'{"cmd": "boom"}'))
    assert "'boom'" in err and "ValueError" in err and "failed" in err
    assert err.endswith(_cut(repr(str(exc)), 300)), err
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    msg = warnings[0].getMessage()
    assert "command 'boom' failed" in msg
    assert msg.endswith(_cut(repr(exc), 200)), msg


@pytest.mark.parametrize("returned", [None, ["ok"], "ok", True])
def test_handler_returning_no_dict_becomes_an_error_reply(returned):
    """A handler bug that returns nothing must still give the client a reply."""
    srv = CommandServer(lambda r: returned, port=0)
    err = _bad(srv.reply_for(b'{"cmd": "status"}'))
    assert "'status'" in err and "returned no reply" in err


def test_a_valid_request_reaches_the_handler_unchanged():
    """The handler sees the decoded request dict and its reply passes through as is."""
    seen = []

    def handler(req):
        seen.append(req)
        return {"ok": True, "n": 1}

    srv = CommandServer(handler, port=0)
    assert srv.reply_for(b'{"cmd": "set_mode", "mode": "off"}') == {"ok": True, "n": 1}
    assert seen == [{"cmd": "set_mode", "mode": "off"}]


# -- _reply_bytes: one encoded reply, errors counted ------------------------------------
def test_reply_bytes_counts_every_error_reply_and_only_those():
    """``errors`` is what an operator reads to see clients sending garbage: every error
    reply counts one, a successful reply none."""
    srv = CommandServer(lambda r: {"ok": r["cmd"] == "good"}, port=0)
    assert srv.errors == 0 and srv.requests == 0
    assert json.loads(srv._reply_bytes([b'{"cmd": "good"}'])) == {"ok": True}
    assert srv.errors == 0
    assert json.loads(srv._reply_bytes([b"junk"]))["ok"] is False
    assert srv.errors == 1
    assert json.loads(srv._reply_bytes([b'{"cmd": "bad"}'])) == {"ok": False}
    assert srv.errors == 2
    assert json.loads(srv._reply_bytes([b'{"cmd": "good"}'])) == {"ok": True}
    assert srv.errors == 2
    # a reply without "ok" is not a success
    srv.handler = lambda r: {"state": "running"}
    assert json.loads(srv._reply_bytes([b'{"cmd": "status"}'])) == {"state": "running"}
    assert srv.errors == 3


@pytest.mark.parametrize(("frames", "n", "size"), [
    ([b'{"cmd": "status"}', b"x"], 2, 18),
    ([b"a", b"bc", b""], 3, 3),
    ([], 0, 0),
])
def test_multipart_request_is_one_error_naming_frames_and_bytes(frames, n, size):
    """A multi-frame (or empty) message is answered, not passed on, and counted."""
    called = []
    srv = CommandServer(lambda r: called.append(r) or {"ok": True}, port=0)
    err = _bad(json.loads(srv._reply_bytes(frames)))
    assert f"request has {n} message frames ({size} bytes)" in err
    assert "one frame" in err and EXAMPLE in err
    assert srv.errors == 1 and called == []


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("w" * 300)


def test_unencodable_reply_becomes_the_fixed_error_and_is_counted(caplog):
    """A handler reply that cannot be encoded still gives the client valid JSON."""
    srv = CommandServer(lambda r: {"ok": True, "thing": _Unprintable()}, port=0)
    srv._reply_bytes([b"junk"])  # one error first: the count must add, not reset
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = srv._reply_bytes([b'{"cmd": "status"}'])
    assert out == b'{"ok":false,"error":"the reply could not be encoded as JSON"}'
    assert json.loads(out)["ok"] is False
    assert srv.errors == 2
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(msgs) == 1
    assert msgs[0].startswith("command reply failed")
    assert msgs[0].endswith(_cut(repr(ValueError("w" * 300)), 200)), msgs[0]


# -- the live server ------------------------------------------------------------------------
def test_every_request_over_the_socket_gets_one_reply_and_is_counted():
    """Good, garbage, multi-frame, oversized and handler-bug requests on one REQ socket:
    each gets its own reply in turn, and the counters add up exactly."""

    def handler(req):
        return None if req["cmd"] == "none" else {"ok": True, "cmd": req["cmd"]}

    srv = CommandServer(handler, port=0, max_request_bytes=64).start()
    s = req_socket(srv.address, timeout_ms=2000)
    try:
        def ask(*frames: bytes) -> dict:
            s.send_multipart(list(frames))
            return json.loads(s.recv())

        assert ask(b'{"cmd": "status"}') == {"ok": True, "cmd": "status"}
        assert "not valid JSON" in _bad(ask(b"nope"))
        assert "2 message frames (17 bytes)" in _bad(ask(b'{"cmd":"status"}', b"x"))
        assert "limit is 64 bytes" in _bad(ask(b'{"cmd": "status", "pad": "' + b"x" * 60
                                             + b'"}'))
        assert "returned no reply" in _bad(ask(b'{"cmd": "none"}'))
        assert ask(b'{"cmd": "stop"}') == {"ok": True, "cmd": "stop"}
        assert srv.requests == 6 and srv.errors == 4
        assert srv.alive and srv.failure is None
    finally:
        s.close()
        srv.stop()


def test_server_defaults_and_its_thread():
    """Documented defaults (REP on 127.0.0.1:5557) and a named daemon thread: the
    service process can always exit even if stop() is never called."""
    srv = CommandServer(_echo)
    assert srv.port == 5557 and srv.address == "tcp://127.0.0.1:5557"
    assert srv.poll_ms == 100
    assert srv.requests == 0 and srv.errors == 0 and srv.failure is None
    assert srv.failed.name == "failed" and len(srv.failed) == 0
    assert srv.alive is False
    srv.stop()  # never started: a no-op
    assert srv.alive is False

    srv = CommandServer(_echo, port=0).start()
    try:
        assert srv.port != 0 and srv.address == f"tcp://127.0.0.1:{srv.port}"
        assert srv._thread.name == "inscope-rep" and srv._thread.daemon is True
        # (the slow commands' worker: named for the bench's CPU per thread, and a daemon)
        assert srv._worker is not None
        assert srv._worker.name == "inscope-rep-slow" and srv._worker.daemon is True
        assert srv.alive
    finally:
        srv.stop()


def test_stop_returns_only_once_the_thread_has_ended():
    """stop() joins the thread (ended within one poll), and no failure is reported."""
    srv = CommandServer(_echo, port=0, poll_ms=20).start()
    ev, got = _died(srv)
    assert request(srv.address, {"cmd": "status"}, timeout_ms=2000)["ok"]
    t0 = time.monotonic()
    srv.stop(timeout=0.5)
    assert not srv._thread.is_alive(), "stop() must wait for the thread"
    assert time.monotonic() - t0 < 0.5
    assert srv.alive is False and srv.failure is None
    assert not ev.is_set() and got == []
    assert srv._sock is None  # closed by the thread on its way out


def test_stop_with_the_default_poll_ends_within_a_poll():
    """With the default poll (100 ms) the idle thread notices stop() promptly."""
    srv = CommandServer(_echo, port=0).start()
    t0 = time.monotonic()
    srv.stop(timeout=0.6)
    assert not srv._thread.is_alive() and time.monotonic() - t0 < 0.6


def test_stop_from_a_command_in_the_server_thread_does_not_deadlock():
    """A "stop" handler may stop the server from its own thread: the client still gets
    its reply, and the thread then ends."""
    holder: list[CommandServer] = []

    def handler(req):
        holder[0].stop()
        return {"ok": True, "stopping": True}

    srv = CommandServer(handler, port=0, poll_ms=20).start()
    holder.append(srv)
    assert request(srv.address, {"cmd": "stop"}, timeout_ms=2000) == {
        "ok": True, "stopping": True}
    srv._thread.join(2)
    assert not srv._thread.is_alive() and srv.failure is None


def test_stop_gives_up_after_its_timeout_and_the_request_in_flight_is_answered():
    """A handler stuck in a slow command cannot make stop() hang the service; the
    request in flight still gets its reply when the handler returns."""
    entered, release = threading.Event(), threading.Event()

    def handler(req):
        entered.set()
        release.wait(2.0)
        return {"ok": True, "slow": True}

    srv = CommandServer(handler, port=0, poll_ms=20).start()
    s = req_socket(srv.address, timeout_ms=3000)
    try:
        s.send(b'{"cmd": "status"}')
        assert entered.wait(2.0)
        t0 = time.monotonic()
        srv.stop(timeout=0.2)
        assert time.monotonic() - t0 < 1.0, "stop() waited past its timeout"
        assert srv._thread.is_alive()
        release.set()
        assert json.loads(s.recv()) == {"ok": True, "slow": True}
        srv._thread.join(2)
        assert not srv._thread.is_alive()
    finally:
        release.set()
        s.close()
        srv.stop()


def test_dead_server_thread_reports_through_failed_and_frees_its_socket(caplog):
    """The safety net: if the serving loop dies, ``failed`` fires once with the reason
    (the service then holds the stage), ``failure`` says what happened, the thread logs
    an error, and the socket is closed at once."""
    ctx = _spy_context()
    srv = CommandServer(_echo, port=0, poll_ms=20, context=ctx).start()
    ev, got = _died(srv)
    why = "boom " * 60

    def bug(frames):
        raise RuntimeError(why)

    srv._reply_bytes = bug
    s = req_socket(srv.address, timeout_ms=300)
    try:
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            s.send(b'{"cmd": "status"}')
            assert ev.wait(2.0), "failed was not emitted"
            srv._thread.join(2)
        with pytest.raises(zmq.Again):
            s.recv()  # no reply can come from a dead server
    finally:
        s.close()
    assert not srv._thread.is_alive() and srv.alive is False
    assert srv.failure == "RuntimeError: " + _cut(repr(why), 200)
    assert len(got) == 1
    assert "command server stopped" in got[0] and srv.failure in got[0]
    errors = [r.getMessage() for r in caplog.records
              if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "command server stopped" in errors[0] and errors[0].endswith(srv.failure)
    assert srv._sock is None
    assert (SERVER, "set", zmq.LINGER, 200) in ctx.spy_record
    assert [e for e in ctx.spy_record if e[:2] == (SERVER, "close")] == [(SERVER, "close", 0)]
    srv.stop()
    ctx.destroy(linger=0)


def test_serving_without_start_is_reported_not_raised():
    """Even a programming error (serving before binding) ends in ``failed``."""
    srv = CommandServer(_echo, port=0)
    ev, got = _died(srv)
    srv._run()
    assert ev.is_set() and len(got) == 1
    assert srv.failure.startswith("AssertionError: ") and "start()" in srv.failure
    assert srv._sock is None


def test_a_spurious_eagain_after_poll_is_skipped_and_the_request_still_answered():
    """recv may raise EAGAIN after poll said readable; the server must go on (not end
    its loop silently) and answer the request on the next round."""
    ctx = _spy_context(recv_again=2)
    srv = CommandServer(_echo, port=0, poll_ms=20, context=ctx).start()
    try:
        assert request(srv.address, {"cmd": "status"}, timeout_ms=2000) == {
            "ok": True, "cmd": "status"}
        assert ctx.spy_state["recv_again"] == 0
        assert srv.requests == 1 and srv.alive
    finally:
        srv.stop()
        ctx.destroy(linger=0)


def test_a_failed_reply_send_resets_the_socket_on_the_same_port(caplog):
    """If a reply cannot be sent the REP socket is replaced on the same port: the lost
    request's client times out, the next client is served, a warning says why. The new
    bind is retried while the old socket still holds the port (it failed 3 in 50 resets
    with "Address already in use", which killed the server)."""
    ctx = _spy_context(send_error=1, busy_rebinds=3)
    srv = CommandServer(_echo, port=0, poll_ms=20, context=ctx).start()
    port = srv.port
    s = req_socket(srv.address, timeout_ms=300)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            s.send(b'{"cmd": "status"}')
            with pytest.raises(zmq.Again):
                s.recv()
            assert request(srv.address, {"cmd": "pause"}, timeout_ms=3000) == {
                "ok": True, "cmd": "pause"}
        assert srv.port == port and srv.alive and srv.failure is None
        assert srv.requests == 2
        warns = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert len(warns) == 1
        assert "socket reset" in warns[0]
        assert warns[0].endswith(str(zmq.ZMQError(zmq.EFSM)))
        closes = [e for e in ctx.spy_record if e[:2] == (SERVER, "close")]
        # the broken one at once, then each socket whose bind found the port busy
        assert closes == [(SERVER, "close", 0)] * 4
        assert ctx.spy_state["rep_binds"] >= 5  # the first, 3 busy, then bound
        # and it keeps serving on the new socket
        assert request(srv.address, {"cmd": "resume"}, timeout_ms=2000)["ok"]
    finally:
        s.close()
        srv.stop()
        ctx.destroy(linger=0)


def test_a_reset_that_cannot_rebind_reports_failure_naming_the_port():
    """If the port cannot be bound again after a reset, the server must not vanish
    silently: ``failed`` fires with the bind error, and no half-made socket is left."""
    ctx = _spy_context(send_error=1, rebind_fails=True)
    srv = CommandServer(_echo, port=0, poll_ms=20, context=ctx)
    srv.rebind_patience_s = 0.2
    srv.start()
    ev, got = _died(srv)
    s = req_socket(srv.address, timeout_ms=300)
    try:
        s.send(b'{"cmd": "status"}')
        assert ev.wait(2.0)
        srv._thread.join(2)
    finally:
        s.close()
    assert srv.failure.startswith("OSError: ")
    assert f"tcp://127.0.0.1:{srv.port}" in srv.failure
    assert srv._sock is None and not srv.alive
    srv.stop()
    ctx.destroy(linger=0)


# -- bind errors -------------------------------------------------------------------------
def test_rep_port_clash_names_the_address_and_the_fix():
    """A second service on the same port must fail at start with the address and the
    option to change, not serve nothing."""
    holder = zmq.Context.instance().socket(zmq.REP)
    holder.setsockopt(zmq.LINGER, 0)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    ctx = _spy_context()
    try:
        with pytest.raises(OSError) as e:
            CommandServer(_echo, port=port, context=ctx).start()
    finally:
        holder.close()
    msg = str(e.value)
    assert f"ZMQ REP socket to tcp://127.0.0.1:{port}" in msg
    assert "--rep-port" in msg and "[outputs.zmq] rep_port" in msg and "0 for any" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__
    # the socket that could not bind is closed at once
    assert [r for r in ctx.spy_record if r[1] == "close"] == [(SERVER, "close", 0)]
    ctx.destroy(linger=0)


def test_pub_port_clash_names_the_address_and_the_fix():
    """Same for the publisher."""
    holder = zmq.Context.instance().socket(zmq.PUB)
    holder.setsockopt(zmq.LINGER, 0)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    pub = PubOutput(port=port)
    try:
        with pytest.raises(OSError) as e:
            pub.open()
    finally:
        holder.close()
    msg = str(e.value)
    assert f"ZMQ PUB socket to tcp://127.0.0.1:{port}" in msg
    assert "--pub-port" in msg and "[outputs.zmq] pub_port" in msg and "0 for any" in msg
    assert pub._sock is None


def test_explicit_ports_bind_and_serve():
    """A configured (non-zero) port is bound as given, for both sockets."""
    port = free_port()
    srv = CommandServer(_echo, port=port).start()
    try:
        assert srv.port == port
        assert request(f"tcp://127.0.0.1:{port}", {"cmd": "status"}, timeout_ms=2000)["ok"]
    finally:
        srv.stop()
    pport = free_port()
    pub = PubOutput(port=pport)
    pub.open()
    sub = sub_socket(f"tcp://127.0.0.1:{pport}")
    try:
        assert pub.port == pport
        wait_connected(pub._sock, sub)
    finally:
        sub.close()
        pub.close()


# -- request() -----------------------------------------------------------------------------
def test_request_times_out_with_the_address_when_nobody_answers():
    """No server: the client gets a TimeoutError naming the address and the wait, not
    a hang."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        request(addr, {"cmd": "status"}, timeout_ms=150)
    assert time.monotonic() - t0 < 1.0
    msg = str(e.value)
    assert f"no reply from {addr} within 150 ms" in msg and "REP socket" in msg


@pytest.mark.parametrize("which", ["client_key", "server_key"])
def test_request_with_half_the_curve_keys_is_refused(which, tmp_path):
    """One CURVE key without the other is a mistake to name, not a plain connection."""
    with pytest.raises(ValueError) as e:
        request("tcp://127.0.0.1:1", {"cmd": "status"}, timeout_ms=100,
                **{which: tmp_path / "k"})
    msg = str(e.value)
    assert "both" in msg and "client_key" in msg and "server_key" in msg


def test_request_socket_settings_and_default_timeout():
    """The client never lingers on exit and waits 3 s by default, on send and receive."""
    srv = CommandServer(_echo, port=0).start()
    ctx = _spy_context()
    try:
        assert request(srv.address, {"cmd": "status"}, context=ctx) == {
            "ok": True, "cmd": "status"}
    finally:
        srv.stop()
    req = [r for r in ctx.spy_record if r[0] == zmq.REQ]
    assert (zmq.REQ, "set", zmq.LINGER, 0) in req
    assert (zmq.REQ, "set", zmq.RCVTIMEO, 3000) in req
    assert (zmq.REQ, "set", zmq.SNDTIMEO, 3000) in req
    assert req[-1][1] == "close"
    ctx.destroy(linger=0)


# -- the publisher ---------------------------------------------------------------------------
def test_publisher_defaults_and_stats_before_anything_is_sent():
    """Documented defaults (PUB on 127.0.0.1:5556, SNDHWM 100, queue 64) and a stats
    dict with every field at zero."""
    pub = PubOutput()
    assert pub.port == 5556 and pub.address == "tcp://127.0.0.1:5556"
    assert pub.sndhwm == 100 and pub.nodrop is False
    assert pub.stats() == {
        "handled": 0, "dropped": 0, "errors": 0, "last_error": None, "failed": None,
        "discarded": 0, "address": "tcp://127.0.0.1:5556", "sent": 0, "sent_overlay": 0,
        "zmq_dropped": 0, "nodrop": False, "curve": False}
    for i in range(64):
        assert pub.submit(i)
    assert pub.dropped == 0
    assert pub.submit(64) is False and pub.dropped == 1  # 64 waiting: the oldest goes
    pub.close()  # never opened: nothing to close
    assert pub._sock is None


def test_publisher_sends_detections_and_overlay_frames_a_subscriber_can_read():
    """What a subscriber receives: [b"detections", JSON] per result (the shared message
    bytes) and [b"overlay", header, pixels]; the counters and the sent stamp follow."""
    pub = PubOutput(port=0, sndhwm=50)
    pub.open()
    assert pub._sock.type == zmq.PUB
    assert pub._sock.getsockopt(zmq.SNDHWM) == 50
    assert pub._sock.getsockopt(zmq.LINGER) == 200
    first = pub._sock
    pub.open()  # idempotent: same socket, same port
    assert pub._sock is first
    sub = sub_socket(pub.address, rcvhwm=1000)
    results = [_result(i) for i in range(3)]
    img = np.arange(24, dtype=np.uint16).reshape(4, 6)
    eye = np.full((2, 3, 3), 7, np.uint8)
    try:
        wait_connected(pub._sock, sub)
        t0 = time.monotonic_ns()
        pub.start()
        for r in results:
            pub.submit(r)
        pub.submit_overlay(5, img, {"ready": 11})
        pub.submit_overlay(6, eye, {"ready": 12}, kind="eyepiece")
        pub.stop()
        t1 = time.monotonic_ns()
        msgs = drain(sub, 1000)
    finally:
        sub.close()
    assert pub._sock is None
    assert [m[0] for m in msgs] == [b"detections"] * 3 + [b"overlay"] * 2
    for m, r in zip(msgs[:3], results, strict=True):
        assert len(m) == 2 and m[1] == r.message()[1]
        d = json.loads(m[1])
        assert d["seq"] == r.seq and d["frame_index"] == r.index
        assert d["schema"] == schema.SCHEMA_DETECTIONS
        assert isinstance(r.stamps[STAMP_SENT], int) and t0 <= r.stamps[STAMP_SENT] <= t1
    for m, (index, image, kind, ready) in zip(
            msgs[3:], [(5, img, "overlay", 11), (6, eye, "eyepiece", 12)], strict=True):
        assert len(m) == 3
        assert json.loads(m[1]) == {
            "schema": schema.SCHEMA_OVERLAY, "frame_index": index, "kind": kind,
            "shape": list(image.shape), "dtype": str(image.dtype),
            "stamps_ns": {"ready": ready}}
        assert m[2] == image.tobytes()
    st = pub.stats()
    assert (st["sent"], st["sent_overlay"], st["zmq_dropped"], st["handled"]) == (3, 2, 0, 5)
    assert st["errors"] == 0 and st["last_error"] is None


def _stalled(pub: PubOutput) -> zmq.Socket:
    pub.open()
    pub._sock.setsockopt(zmq.SNDBUF, 8192)
    sub = sub_socket(pub.address, rcvhwm=1, rcvbuf=4096)
    wait_connected(pub._sock, sub)
    return sub


def _step(pub: PubOutput, item) -> str:
    """handle(item) and check exactly one counter moved by exactly one."""
    before = (pub.sent, pub.sent_overlay, pub.zmq_dropped)
    pub.handle(item)
    after = (pub.sent, pub.sent_overlay, pub.zmq_dropped)
    moved = [a - b for a, b in zip(after, before, strict=True)]
    assert sorted(moved) == [0, 0, 1], (before, after)
    return ("sent", "sent_overlay", "zmq_dropped")[moved.index(1)]


def test_nodrop_counts_each_refused_send_and_never_blocks():
    """nodrop (XPUB_NODROP): a subscriber at its HWM makes sends fail; each failure is
    counted once, for detections and overlays alike, and a dropped result gets no
    sent stamp."""
    pub = PubOutput(port=0, sndhwm=1, nodrop=True)
    sub = _stalled(pub)
    try:
        assert pub._sock.type == zmq.XPUB
        big = np.zeros((1024, 1024), np.uint8)
        overlay_drops = 0
        for i in range(400):
            if _step(pub, ("overlay", i, big, {})) == "zmq_dropped":
                overlay_drops += 1
                if overlay_drops == 2:
                    break
        assert overlay_drops == 2, "the stalled subscriber never filled up"
        result_drops = 0
        for i in range(50):
            r = _result(i)
            outcome = _step(pub, r)
            assert (STAMP_SENT in r.stamps) == (outcome == "sent")
            if outcome == "zmq_dropped":
                result_drops += 1
                if result_drops == 2:
                    break
        assert result_drops == 2
        st = pub.stats()
        assert st["zmq_dropped"] == 4 and st["nodrop"] is True
    finally:
        sub.close()
        pub.close()


def test_default_pub_never_fails_a_send_for_a_stalled_subscriber():
    """Plain PUB (the default): ZMQ drops for the slow peer only; every send succeeds."""
    pub = PubOutput(port=0, sndhwm=1)
    sub = _stalled(pub)
    try:
        assert pub._sock.type == zmq.PUB
        big = np.zeros((1024, 1024), np.uint8)
        for i in range(30):
            assert _step(pub, ("overlay", i, big, {})) == "sent_overlay"
        for i in range(5):
            assert _step(pub, _result(i)) == "sent"
        assert (pub.sent, pub.sent_overlay, pub.zmq_dropped) == (5, 30, 0)
    finally:
        sub.close()
        pub.close()


def test_an_error_reply_that_cannot_be_encoded_counts_once():
    """One bad request is one error, also when its error reply fails to encode."""
    srv = CommandServer(lambda r: {"ok": False, "error": "x", "thing": _Unprintable()},
                        port=0)
    out = srv._reply_bytes([b'{"cmd": "status"}'])
    assert json.loads(out)["ok"] is False
    assert srv.errors == 1



def test_a_c_string_request_with_its_terminating_nul_is_served():
    """A C client sends ``strlen(buf) + 1`` bytes (the string and its NUL): the request
    is the JSON before the NUL, over a real REQ socket. NUL bytes inside the JSON are
    still refused."""
    seen: list[dict] = []

    def handler(req: dict) -> dict:
        seen.append(req)
        return {"ok": True, "cmd": req["cmd"]}

    srv = CommandServer(handler, port=0, poll_ms=20).start()
    try:
        with req_socket(srv.address) as req:
            req.send(b'{"cmd": "stop"}\x00')
            assert json.loads(req.recv()) == {"ok": True, "cmd": "stop"}
            req.send(b'{"cmd": "status"}\x00\x00')
            assert json.loads(req.recv()) == {"ok": True, "cmd": "status"}
            req.send(b'{"cmd": "st\x00op"}')
            assert "not valid JSON" in json.loads(req.recv())["error"]
    finally:
        srv.stop()
    assert seen == [{"cmd": "stop"}, {"cmd": "status"}]
    assert srv.errors == 1


def test_stop_is_answered_at_once_while_a_snapshot_is_being_written():
    """A snapshot of a 4096 x 4096 frame took ~1.5 s (the overlay's PNG), and a ``stop``
    from another client waited behind it. Slow commands now run off the server thread:
    ``stop`` and ``status`` are answered meanwhile, and the snapshot's own client gets its
    reply when it is done; two snapshots run one after the other, each answered once."""
    started = threading.Event()
    order: list[str] = []

    def handler(req: dict) -> dict:
        if req["cmd"] == "snapshot":
            started.set()
            time.sleep(1.0)
            order.append(f"snapshot {req.get('dir')}")
        else:
            order.append(req["cmd"])
        return {"ok": True, "cmd": req["cmd"], "dir": req.get("dir")}

    srv = CommandServer(handler, port=0, poll_ms=20).start()
    a = req_socket(srv.address, timeout_ms=5000)
    b = req_socket(srv.address, timeout_ms=5000)
    try:
        a.send(b'{"cmd": "snapshot", "dir": "one"}')
        b.send(b'{"cmd": "snapshot", "dir": "two"}')
        assert started.wait(2.0)
        t0 = time.monotonic()
        assert request(srv.address, {"cmd": "stop"}, timeout_ms=2000) == {
            "ok": True, "cmd": "stop", "dir": None}
        assert request(srv.address, {"cmd": "status"}, timeout_ms=2000)["ok"]
        assert time.monotonic() - t0 < 0.5  # not after the snapshots
        assert json.loads(a.recv()) == {"ok": True, "cmd": "snapshot", "dir": "one"}
        assert json.loads(b.recv()) == {"ok": True, "cmd": "snapshot", "dir": "two"}
        # (the two clients' snapshots in whichever order their connections delivered)
        assert order[:2] == ["stop", "status"]
        assert sorted(order[2:]) == ["snapshot one", "snapshot two"]
        assert srv.requests == 4 and srv.errors == 0
        # a bad slow request is answered, as any bad request is
        a.send(b'{"cmd": "snapshot", "dir": ' + b"[" * 5000 + b"}")
        assert json.loads(a.recv())["ok"] is False
    finally:
        a.close()
        b.close()
        srv.stop()


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_bind_address_serves():
    """``--bind ::1`` failed with "No such device" and advice about a port another
    program holds: ZMQ sockets need IPv6 switched on, and the endpoint in brackets."""
    srv = CommandServer(_echo, bind="::1", port=0, poll_ms=20).start()
    pub = PubOutput(bind="::1", port=0)
    try:
        assert srv.address.startswith("tcp://[::1]:")
        assert request(srv.address, {"cmd": "status"}, timeout_ms=2000) == {
            "ok": True, "cmd": "status"}
        pub.open()
        assert pub.address.startswith("tcp://[::1]:") and pub.port > 0
    finally:
        srv.stop()
        pub.close()


def test_a_request_that_is_not_utf8_is_named_so():
    srv = CommandServer(_echo, port=0, poll_ms=20)
    rep = srv.reply_for(b'\xff\xfe{\x00"\x00c\x00')  # UTF-16 with its byte-order mark
    assert rep["ok"] is False and "utf-8" in rep["error"] and "utf-16" not in rep["error"]


@pytest.mark.parametrize("cmd", [b'{"cmd": {}}', b'{"cmd": []}', b'{"cmd": ["snapshot"]}',
                                 b'{"cmd": null}', b'[{"cmd": "snapshot"}]'])
def test_a_command_of_any_type_is_answered_and_the_server_lives(cmd):
    # (the look for a slow command once tested `{} in a set`: TypeError, the server
    # thread died, found by test_service_fuzz)
    srv = CommandServer(_echo, port=0, poll_ms=20).start()
    s = req_socket(srv.address, timeout_ms=2000)
    try:
        s.send(cmd)
        assert json.loads(s.recv())["ok"] is False
        assert request(srv.address, {"cmd": "stop"}, timeout_ms=2000)["ok"]
        assert srv.alive and srv.failure is None
    finally:
        s.close()
        srv.stop()


def _snapshot_of(n: int) -> bytes:
    """A snapshot request padded with spaces to *n* bytes."""
    head = b'{"cmd": "snapshot"'
    return head + b" " * (n - len(head) - 1) + b"}"


@pytest.mark.parametrize(("frames", "slow"), [
    ([b'{"cmd": "snapshot"}'], True),
    ([b'{"cmd": "snapshot", "dir": "a"}\0'], True),  # a C client's terminating NUL
    ([_snapshot_of(4096)], True),  # the largest looked at
    ([_snapshot_of(4097)], False),  # past it: answered inline
    ([b'{"cmd": "snapshot"}', b"more"], False),  # several frames: the inline error
    ([], False),
    ([b'{"cmd": "status"}'], False),
    ([b"not json"], False),
    ([b'{"cmd": {}}'], False),
    ([b'["snapshot"]'], False),
])
def test_only_a_small_one_frame_snapshot_request_goes_to_the_worker(frames, slow):
    """The server thread's cheap look (it never raises: an odd request is answered at
    once, inline, with its error)."""
    assert len(_snapshot_of(4096)) == 4096
    assert CommandServer._is_slow(frames) is slow


def test_a_slow_reply_goes_out_at_once_and_nothing_stays_pending():
    """While a slow command runs the server looks for its reply every 5 ms, not every
    ``poll_ms`` (here 3 s): the snapshot's client is not kept waiting by the poll; once
    every reply is out nothing is pending (the poll is back to ``poll_ms``)."""
    def handler(req: dict) -> dict:
        if req["cmd"] == "snapshot":
            time.sleep(0.1)
        return {"ok": True, "cmd": req["cmd"]}

    srv = CommandServer(handler, port=0, poll_ms=3000).start()
    a = req_socket(srv.address, timeout_ms=5000)
    b = req_socket(srv.address, timeout_ms=5000)
    try:
        for _ in range(3):
            t0 = time.monotonic()
            assert request(srv.address, {"cmd": "snapshot"}, timeout_ms=5000)["ok"]
            assert time.monotonic() - t0 < 1.5  # the poll's 3 s would show
            assert srv._pending == 0
        # two at once: the second is still pending when the first is answered
        t0 = time.monotonic()
        a.send(b'{"cmd": "snapshot"}')
        b.send(b'{"cmd": "snapshot"}')
        assert json.loads(a.recv())["ok"] and json.loads(b.recv())["ok"]
        assert time.monotonic() - t0 < 1.5
        assert srv._pending == 0
    finally:
        a.close()
        b.close()
        srv.stop()


def test_dealer_clients_with_and_without_the_empty_frame_and_their_own_ids():
    """docs/zmq.md: a DEALER client sends ``[b"", request]`` or just ``request`` and gets
    the same frames back before the reply; its own id frame comes back too."""
    srv = CommandServer(_echo, port=0, poll_ms=20).start()
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.RCVTIMEO, 3000)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(srv.address)
    try:
        d.send_multipart([b"", b'{"cmd": "status"}'])
        assert d.recv_multipart() == [b"", schema.dumps({"ok": True, "cmd": "status"})]
        d.send(b'{"cmd": "pause"}')
        assert d.recv_multipart() == [schema.dumps({"ok": True, "cmd": "pause"})]
        d.send_multipart([b"id-7", b"", b'{"cmd": "resume"}'])
        assert d.recv_multipart() == [b"id-7", b"",
                                      schema.dumps({"ok": True, "cmd": "resume"})]
        assert srv.alive and srv.errors == 0
    finally:
        d.close()
        srv.stop()


@pytest.mark.parametrize(("bind", "host"), [
    ("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]"),
    (" ::1 ", "[::1]"), ("localhost", "localhost"), ("*", "*")])
def test_ipv6_addresses_are_bracketed_once(bind, host):
    assert _host(bind) == host
