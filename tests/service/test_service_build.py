"""Building a service and closing it in a long-lived process (a notebook, a GUI that
restarts the service): what one service held must be free for the next.

Real ZMQ sockets on 127.0.0.1, the simulated microscope, the classical detector.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import zmq

from inscope.config import Config, with_overrides


def _config(pub_port: int, rep_port: int, **zmq_options) -> Config:
    cfg = Config()
    cfg = with_overrides(cfg, "microscope", backend="sim",
                         options={"shape": [64, 64], "exposure_ms": 10.0, "seed": 1})
    cfg = with_overrides(cfg, "detector", model="classical")
    cfg = with_overrides(cfg, "outputs", window=False)
    cfg = with_overrides(cfg, "outputs.zmq", pub_port=pub_port, rep_port=rep_port,
                         **zmq_options)
    return with_overrides(cfg, "run", progress=False)


def _free_port() -> int:
    """A port nobody listens on (a plain socket, whose close is immediate: a ZMQ
    socket's close finishes later, in its I/O thread, and may still hold the port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_build_that_fails_on_the_command_port_frees_the_detections_port():
    """The command port is taken (another service): the build fails with the port's
    error, and the detections port it had bound is free again, so the same
    configuration starts once the command port is free."""
    from inscope.service import build_service

    squatter = zmq.Context.instance().socket(zmq.REP)
    squatter.bind("tcp://127.0.0.1:0")
    rep_port = int(squatter.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    pub_port = _free_port()
    cfg = _config(pub_port, rep_port)
    try:
        # kept, as a notebook keeps the last error (sys.last_value): its traceback holds
        # the failed build's objects, so nothing may wait for garbage collection
        with pytest.raises(OSError, match="REP socket") as failed:
            build_service(cfg, say=lambda *_: None)
    finally:
        squatter.close(0)
    # ZMQ lets a closed socket's port go in its I/O thread, a moment later: retry for up
    # to 5 s, as a user would (before the fix the port stayed bound for good)
    deadline = time.monotonic() + 5.0
    while True:
        try:
            svc = build_service(cfg, say=lambda *_: None)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert failed.value is not None
    try:
        assert svc.publisher.address == f"tcp://127.0.0.1:{pub_port}"
        assert svc.server.address == f"tcp://127.0.0.1:{rep_port}"
    finally:
        svc.close()


def test_a_curve_service_ends_its_own_zmq_context_on_close(tmp_path):
    from inscope.curve import init_keys
    from inscope.service import build_service

    init_keys(tmp_path / "keys")
    cfg = _config(0, 0, curve_server_key=str(tmp_path / "keys" / "server.key_secret"),
                  curve_allowed_clients=str(tmp_path / "keys" / "allowed_clients"))
    svc = build_service(cfg, say=lambda *_: None)
    ctx = svc.context
    assert ctx is not None and ctx is not zmq.Context.instance() and not ctx.closed
    svc.close()
    assert ctx.closed  # its I/O thread is gone with it
    svc.close()  # closing twice is harmless


def test_a_plain_service_leaves_the_shared_context_alone():
    from inscope.service import build_service

    svc = build_service(_config(0, 0), say=lambda *_: None)
    assert svc.context is None
    svc.close()
    assert not zmq.Context.instance().closed


class _Opened:
    """Records the microscope a build opens and how often it is closed: the real
    ``open_scope`` runs (a spy on the call, not a stand-in for the microscope)."""

    def __init__(self, monkeypatch) -> None:
        import inscope.service as service

        self.scopes: list = []
        self.closed = 0
        real = service.open_scope

        def spy(cfg):
            scope = real(cfg)
            close = scope.close

            def counted_close():
                self.closed += 1
                close()

            scope.close = counted_close
            self.scopes.append(scope)
            return scope

        monkeypatch.setattr(service, "open_scope", spy)


def test_a_wrong_value_handed_to_build_service_is_one_config_error_before_the_microscope_opens(
        monkeypatch):
    """A notebook builds its Config in code (``with_overrides`` checks names, not values):
    a value no run could use is refused as the command line refuses it, naming the key,
    and no hardware is touched."""
    from inscope.config import ConfigError
    from inscope.service import build_service

    opened = _Opened(monkeypatch)
    cfg = with_overrides(_config(0, 0), "outputs", snapshot_max_per_s=0)
    with pytest.raises(ConfigError, match=r"outputs\.snapshot_max_per_s"):
        build_service(cfg, say=lambda *_: None)
    assert opened.scopes == []
    cfg = with_overrides(_config(0, 0), "control", mode="steering")
    with pytest.raises(ConfigError, match=r"control\.mode"):
        build_service(cfg, say=lambda *_: None)
    assert opened.scopes == []


def test_ctrl_c_during_a_curve_build_closes_the_microscope_detector_and_authenticator(
        tmp_path, monkeypatch):
    """Ctrl-C while the build prints its note (the microscope, the detector, the CURVE
    authenticator and its context are open by then): all of them are closed and no
    thread of the build is left running, so the next build in the same process works."""
    import threading

    from inscope.curve import init_keys
    from inscope.service import build_service

    init_keys(tmp_path / "keys")
    cfg = _config(0, 0, curve_server_key=str(tmp_path / "keys" / "server.key_secret"),
                  curve_allowed_clients=str(tmp_path / "keys" / "allowed_clients"))
    # window unset and no display: the build says so (with_overrides skips a None)
    cfg = dataclasses.replace(cfg, outputs=dataclasses.replace(cfg.outputs, window=None))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    opened = _Opened(monkeypatch)
    import inscope.service as service

    contexts: list = []
    real_end = service._end_context

    def seen_end(ctx):  # the build's own context, to see that it was ended
        contexts.append(ctx)
        real_end(ctx)

    monkeypatch.setattr(service, "_end_context", seen_end)
    before = set(threading.enumerate())

    def ctrl_c(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_service(cfg, say=ctrl_c)
    assert len(opened.scopes) == 1 and opened.closed == 1
    assert len(contexts) == 1 and contexts[0] is not None and contexts[0].closed
    deadline = time.monotonic() + 5.0
    while (left := [t for t in set(threading.enumerate()) - before if t.is_alive()]) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
    svc = build_service(cfg, say=lambda *_: None)  # and the same build works again
    svc.close()
