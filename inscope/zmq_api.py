"""ZMQ interface: PUB of per-frame detections (and overlay frames), REP for commands.

PUB (default ``tcp://127.0.0.1:5556``)
    ``[b"detections", JSON]`` once per processed frame, and optionally
    ``[b"overlay", JSON header, raw pixels]``. Sends use ``NOBLOCK`` with a small
    ``SNDHWM``: a send never blocks the loop. By default (``nodrop=False``) it is a plain
    PUB: ZMQ drops for a slow subscriber only, and every other subscriber gets every
    message; the publisher cannot count those per-peer drops, but every message carries
    ``seq`` so each client sees its own gaps. ``nodrop=True`` is for ONE trusted consumer
    that must see everything it can: an XPUB with ``XPUB_NODROP``, where a subscriber at
    its high-water mark makes the send fail with ``EAGAIN`` and we *count* the drop —
    but the message is then skipped for every subscriber (ZMQ cannot skip one peer), so
    a second, stalled subscriber would starve the first.
REP (default ``tcp://127.0.0.1:5557``)
    JSON ``{"cmd": ..., ...}`` -> JSON ``{"ok": true, ...}`` or ``{"ok": false,
    "error": ...}``. Runs in its own thread and polls with a timeout so it stops cleanly.
    Every request gets exactly one reply, whatever it holds (any bytes, any number of
    frames, any nesting, any size); if the thread dies anyway, its ``failed`` signal tells the
    service, which stops moving the stage.

Both sockets bind to 127.0.0.1 unless configured otherwise: the microscope PC should not
accept stage commands from the network by accident. Any other address needs CURVE keys
(:mod:`inscope.curve`). Schemas: ``docs/zmq.md``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from inscope import schema
from inscope.curve import CurveServerKeys, apply_client
from inscope.events import Signal
from inscope.outputs import STAMP_SENT, Output, Result

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: Requests larger than this get an error reply (they are still read, so REQ never hangs).
MAX_REQUEST_BYTES = 1 << 20


def _host(bind: str) -> str:
    """*bind* as the host part of a ZMQ tcp endpoint: an IPv6 address in brackets
    (``::1`` -> ``[::1]``), anything else as it is."""
    b = bind.strip()
    return f"[{b}]" if ":" in b and not b.startswith("[") else b


def _bind(sock: zmq.Socket, bind: str, port: int, what: str) -> int:
    host = _host(bind)
    if host.startswith("["):
        sock.setsockopt(zmq.IPV6, 1)  # (off by default: an IPv6 bind failed "No such device")
    try:
        if port == 0:
            return sock.bind_to_random_port(f"tcp://{host}")
        sock.bind(f"tcp://{host}:{port}")
        return port
    except zmq.ZMQError as e:
        sock.close(0)
        raise OSError(
            f"Cannot bind the ZMQ {what} socket to tcp://{bind}:{port}: {e}. Another "
            f"inscope (or program) may hold the port; stop it or choose another port "
            f"(--{what.lower()}-port / [outputs.zmq] {what.lower()}_port), or 0 for any."
        ) from None


class PubOutput(Output):
    """Publishes detections (and overlay frames handed in by the overlay output).

    Parameters
    ----------
    bind, port
        Address to bind; ``port=0`` picks a free port (read it from :attr:`port`).
    sndhwm
        Messages ZMQ queues per subscriber before dropping for it.
    nodrop
        Lossless for one trusted subscriber, drops counted (XPUB_NODROP; see the module
        docstring: one stalled subscriber then starves all). Default False: a slow
        subscriber loses only its own messages.
    queue_size
        Results waiting for this thread (oldest dropped when full).
    curve
        CURVE server keys: only clients in the allowed list may subscribe (the caller
        runs the :class:`inscope.curve.Authenticator` on the same context).
    """

    name = "zmq-pub"

    def __init__(self, bind: str = "127.0.0.1", port: int = 5556, *, sndhwm: int = 100,
                 queue_size: int = 64, nodrop: bool = False,
                 context: zmq.Context | None = None,
                 curve: CurveServerKeys | None = None) -> None:
        super().__init__(queue_size)
        self.bind, self.port, self.sndhwm, self.nodrop = bind, port, sndhwm, nodrop
        self.curve = curve
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self.sent = 0
        self.sent_overlay = 0
        self.zmq_dropped = 0  # messages ZMQ refused (a subscriber at its HWM)

    @property
    def address(self) -> str:
        return f"tcp://{_host(self.bind)}:{self.port}"

    def open(self) -> None:
        """Bind (idempotent: a service binds early to report a port clash at once)."""
        if self._sock is not None:
            return
        s = self._ctx.socket(zmq.XPUB if self.nodrop else zmq.PUB)
        if self.nodrop:
            s.setsockopt(zmq.XPUB_NODROP, 1)
        s.setsockopt(zmq.SNDHWM, self.sndhwm)
        s.setsockopt(zmq.LINGER, 200)
        if self.curve is not None:
            self.curve.apply(s)
        self.port = _bind(s, self.bind, self.port, "PUB")
        self._sock = s

    def submit_overlay(self, frame_index: int, image: np.ndarray, stamps: dict[str, int],
                       kind: str = "overlay") -> bool:
        """Queue a rendered image for ``[b"overlay", header, pixels]`` (*kind* goes in the
        header: ``"overlay"`` or ``"eyepiece"``)."""
        return self._queue.put((kind, frame_index, image, stamps))

    def handle(self, item: Any) -> None:
        sock = self._sock
        assert sock is not None, "open() binds before the output runs"
        if isinstance(item, Result):
            _, data = item.message()
            try:
                sock.send_multipart([schema.TOPIC_DETECTIONS, data], flags=zmq.NOBLOCK)
                item.stamps[STAMP_SENT] = time.monotonic_ns()
                self.sent += 1
            except zmq.Again:
                self.zmq_dropped += 1
        else:
            kind, index, image, stamps = item
            header = schema.dumps(schema.overlay_header(index, image, stamps, kind))
            try:
                sock.send_multipart([schema.TOPIC_OVERLAY, header, memoryview(image)],
                                    flags=zmq.NOBLOCK, copy=False)
                self.sent_overlay += 1
            except zmq.Again:
                self.zmq_dropped += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stats(self) -> dict:
        return {**super().stats(), "address": self.address, "sent": self.sent,
                "sent_overlay": self.sent_overlay, "zmq_dropped": self.zmq_dropped,
                "nodrop": self.nodrop, "curve": self.curve is not None}


def _short(v: object, n: int = 80) -> str:
    """``repr(v)`` cut to *n* characters; safe for any JSON value, however deep."""
    try:
        r = repr(v)
    except RecursionError:
        return "<too deeply nested>"
    return r if len(r) <= n else r[:n] + f"... ({len(r)} characters)"


_ENCODE_FAILED = b'{"ok":false,"error":"the reply could not be encoded as JSON"}'

#: Commands whose work can take long - a snapshot of a 4096 x 4096 frame took ~1.5 s,
#: most of it the overlay's PNG - handled off the server thread, one at a time, so that
#: a ``stop`` sent meanwhile (by any client) is answered at once: it waited 1.9 s behind
#: such a snapshot (exploratory testing).
SLOW_COMMANDS = frozenset({"snapshot"})


class CommandServer:
    """The command socket: turns JSON requests into calls of *handler* (a dict -> dict).

    Any request gets exactly one reply, so a REQ client never hangs: non-JSON, non-object,
    multipart, too deep, too large requests and handler exceptions all become ``{"ok":
    false, "error": ...}``, and the server goes on serving. If the thread dies anyway (a
    bug), :attr:`failed` is emitted with the reason: the service then stops moving the
    stage, since ``stop`` could no longer reach it.

    The socket is a ROUTER, which REQ clients talk to exactly as to a REP socket. Unlike
    REP it may answer out of order, so :data:`SLOW_COMMANDS` run on a worker thread while
    the server thread goes on answering: a ``stop`` never waits behind a snapshot.

    Parameters
    ----------
    handler
        ``dict -> dict``, e.g. :meth:`inscope.pipeline.Pipeline.command`.
    bind, port
        Address; ``port=0`` picks a free port.
    max_request_bytes
        Larger requests get an error reply.
    curve
        CURVE server keys (only allowed clients get replies).

    Attributes
    ----------
    failed
        Emitted once (from the server thread) with the reason if the thread ends other
        than by :meth:`stop` (:class:`inscope.events.Signal`).
    rebind_patience_s
        How long a socket reset keeps trying to bind its port again (seconds).
    """

    rebind_patience_s: float = 2.0

    def __init__(self, handler: Callable[[dict], dict], bind: str = "127.0.0.1",
                 port: int = 5557, *, poll_ms: int = 100,
                 context: zmq.Context | None = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES,
                 curve: CurveServerKeys | None = None) -> None:
        self.handler = handler
        self.bind, self.port, self.poll_ms = bind, port, poll_ms
        self.max_request_bytes = int(max_request_bytes)
        self.curve = curve
        self.failed: Signal[str] = Signal("failed")
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests = 0
        self.errors = 0
        self.failure: str | None = None
        # slow commands: one worker thread; its replies go back through this queue and
        # are sent by the server thread (a ZMQ socket belongs to one thread)
        self._slow: queue.SimpleQueue[tuple[list[bytes], bytes] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[list[bytes], bytes]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._pending = 0

    @property
    def address(self) -> str:
        return f"tcp://{_host(self.bind)}:{self.port}"

    @property
    def alive(self) -> bool:
        """True while the server thread runs (False after a failure or :meth:`stop`)."""
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    def _socket(self) -> zmq.Socket:
        s = self._ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 200)
        if self.curve is not None:
            self.curve.apply(s)
        self.port = _bind(s, self.bind, self.port, "REP")
        return s

    def start(self) -> CommandServer:
        self._sock = self._socket()
        self._worker = threading.Thread(target=self._work, name="inscope-rep-slow",
                                        daemon=True)
        self._worker.start()
        self._thread = threading.Thread(target=self._run, name="inscope-rep", daemon=True)
        self._thread.start()
        return self

    def _work(self) -> None:
        """The worker thread: slow commands, one at a time, in the order they came."""
        while True:
            job = self._slow.get()
            if job is None:
                return
            envelope, body = job
            self._done.put((envelope, self._reply_bytes([body])))

    @staticmethod
    def _is_slow(frames: list[bytes]) -> bool:
        """Whether a one-frame request names a :data:`SLOW_COMMANDS` command (a cheap
        look; the worker parses and checks it fully)."""
        if len(frames) != 1 or len(frames[0]) > 4096:
            return False
        try:
            req = schema.loads(frames[0].rstrip(b"\0"))
            cmd = req.get("cmd") if isinstance(req, dict) else None
            # (a str only: `{"cmd": {}} in a set` raised, and killed the server thread)
            return isinstance(cmd, str) and cmd in SLOW_COMMANDS
        except Exception:  # noqa: BLE001 - anything odd is answered at once, inline
            return False

    def reply_for(self, raw: bytes) -> dict:
        """The reply to one raw request (public so it can be tested without sockets)."""
        if len(raw) > self.max_request_bytes:
            return schema.error(
                f"request is {len(raw)} bytes; the limit is {self.max_request_bytes} "
                "bytes. Send a small JSON object, e.g. {\"cmd\": \"status\"}.")
        # A C client sends its string with the terminating NUL (``zmq_send(s, buf,
        # strlen(buf) + 1, 0)``, common in C, LabVIEW and MATLAB bindings): the JSON ends
        # before it, so a trailing NUL is not part of the request.
        raw = raw.rstrip(b"\0")
        try:
            req = schema.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return schema.error(
                f"request is not valid JSON ({_short(str(e), 120)}); send e.g. "
                "{\"cmd\": \"status\"}.")
        except RecursionError:
            return schema.error("request is nested too deeply to parse; send a flat JSON "
                                "object, e.g. {\"cmd\": \"status\"}.")
        if not isinstance(req, dict) or "cmd" not in req:
            return schema.error(
                "request must be a JSON object with a \"cmd\" field, e.g. "
                f"{{\"cmd\": \"status\"}}; commands: {', '.join(schema.COMMANDS)}.")
        cmd = req.get("cmd")
        if not isinstance(cmd, str):
            return schema.error(f"\"cmd\" must be a string, one of "
                                f"{', '.join(schema.COMMANDS)}; got {_short(cmd)}.")
        try:
            rep = self.handler(req)
        except Exception as e:  # noqa: BLE001 - a bad command must not kill the server
            log.warning("command %s failed: %s", _short(cmd), _short(e, 200))
            rep = schema.error(f"command {_short(cmd)} failed: {type(e).__name__}: "
                               f"{_short(str(e), 300)}")
        if not isinstance(rep, dict):
            rep = schema.error(f"command {_short(cmd)} returned no reply.")
        return rep

    def _reply_bytes(self, frames: list[bytes]) -> bytes:
        """One encoded reply for any received message; never raises."""
        counted = False
        try:
            if len(frames) != 1:
                size = sum(len(f) for f in frames)
                rep = schema.error(f"request has {len(frames)} message frames ({size} bytes);"
                                   " send one frame holding a JSON object, e.g. "
                                   "{\"cmd\": \"status\"}.")
            else:
                rep = self.reply_for(frames[0])
            counted = not rep.get("ok")
            if counted:
                self.errors += 1
            return schema.dumps(rep)
        except Exception as e:  # noqa: BLE001 - e.g. a reply that cannot be encoded
            if not counted:  # (an error reply that failed to encode counts once)
                self.errors += 1
            log.warning("command reply failed: %s", _short(e, 200))
            return _ENCODE_FAILED

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # noqa: BLE001 - report, never die silently
            self.failure = f"{type(e).__name__}: {_short(str(e), 200)}"
            log.error("the ZMQ command server stopped: %s", self.failure)
            self.failed.emit(f"the ZMQ command server stopped ({self.failure})")
        finally:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None

    def _serve(self) -> None:
        assert self._sock is not None, "start() binds before serving"
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            # (while a slow command runs, look for its reply often)
            ready = dict(poller.poll(5 if self._pending else self.poll_ms))
            while not self._done.empty():
                envelope, data = self._done.get()
                self._pending -= 1
                self._send(poller, envelope, data)
            if not ready:
                continue
            sock = self._sock
            assert sock is not None
            try:
                frames = sock.recv_multipart()
            except zmq.Again:
                continue
            # a REQ client's message arrives as [identity, b"", frames...]: the envelope
            # (everything up to the empty delimiter) goes back with the reply
            cut = frames.index(b"") + 1 if b"" in frames else 1
            envelope, body = frames[:cut], frames[cut:]
            self.requests += 1
            if self._is_slow(body):
                self._pending += 1
                self._slow.put((envelope, body[0]))
                continue
            self._send(poller, envelope, self._reply_bytes(body))

    def _send(self, poller: zmq.Poller, envelope: list[bytes], data: bytes) -> None:
        """Send one reply; on a socket error start afresh on the same port (registered
        with *poller* in the old one's place) rather than leave the service unreachable."""
        sock = self._sock
        assert sock is not None
        try:
            sock.send_multipart([*envelope, data])
        except zmq.ZMQError as e:
            log.warning("command server socket reset after a failed reply: %s", e)
            poller.unregister(sock)
            sock.close(0)
            self._sock = None
            self._sock = self._rebind()
            poller.register(self._sock, zmq.POLLIN)

    def _rebind(self) -> zmq.Socket:
        """A fresh REP socket on the same port after a reset. ZMQ releases a closed
        socket's port in its I/O thread, a moment later: binding again at once failed
        with "Address already in use" now and then (3 in 50), which killed the server,
        so the bind is retried for up to ``rebind_patience_s`` (unless stopping)."""
        deadline = time.monotonic() + self.rebind_patience_s
        while True:
            try:
                return self._socket()
            except OSError:
                if time.monotonic() >= deadline or self._stop.is_set():
                    raise
                time.sleep(0.02)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._slow.put(None)  # the worker ends after the command it may be running
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def request(address: str, cmd: dict, timeout_ms: int = 3000,
            context: zmq.Context | None = None, *,
            client_key: str | Path | None = None,
            server_key: str | Path | None = None) -> dict:
    """Send one command to a running inscope and return its reply (a small REQ client).

    With CURVE, give the client's ``.key_secret`` file and the service's ``server.key``.
    """
    ctx = context or zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    if address.startswith("tcp://["):
        s.setsockopt(zmq.IPV6, 1)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.setsockopt(zmq.SNDTIMEO, timeout_ms)  # no connection (e.g. refused by CURVE)
    try:
        if client_key is not None or server_key is not None:
            if client_key is None or server_key is None:
                raise ValueError("CURVE needs both client_key (the client's .key_secret) "
                                 "and server_key (the service's server.key).")
            apply_client(s, client_key, server_key)  # (a bad key file: closed below too)
        s.connect(address)
        s.send(schema.dumps(cmd))
        return schema.loads(s.recv())
    except zmq.Again:
        raise TimeoutError(f"no reply from {address} within {timeout_ms} ms; is inscope "
                           "running with its REP socket on that address?") from None
    finally:
        s.close()
