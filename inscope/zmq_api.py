"""ZMQ interface: PUB of per-frame detections (and overlay frames), REP for commands.

PUB (default ``tcp://127.0.0.1:5556``)
    ``[b"detections", JSON]`` once per processed frame, and optionally
    ``[b"overlay", JSON header, raw pixels]``. Sends use ``NOBLOCK`` with a small
    ``SNDHWM``: a send never blocks the loop. With ``nodrop=True`` (default) the socket
    is an XPUB with ``XPUB_NODROP``, so a subscriber at its high-water mark makes the send
    fail with ``EAGAIN`` and we *count* the drop (the message is then skipped for every
    subscriber: ZMQ cannot skip one peer). With ``nodrop=False`` it is a plain PUB: ZMQ
    silently drops for the slow subscriber only and the others are unaffected, but the
    publisher cannot count those drops. Either way every message carries ``seq``, so a
    client sees its own gaps.
REP (default ``tcp://127.0.0.1:5557``)
    JSON ``{"cmd": ..., ...}`` -> JSON ``{"ok": true, ...}`` or ``{"ok": false,
    "error": ...}``. Runs in its own thread and polls with a timeout so it stops cleanly.

Both sockets bind to 127.0.0.1 unless configured otherwise: the microscope PC should not
accept stage commands from the network by accident. Schemas: ``docs/zmq.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq

from inscope import schema
from inscope.outputs import STAMP_SENT, Output, Result

log = logging.getLogger("inscope")


def _bind(sock: zmq.Socket, bind: str, port: int, what: str) -> int:
    try:
        if port == 0:
            return sock.bind_to_random_port(f"tcp://{bind}")
        sock.bind(f"tcp://{bind}:{port}")
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
        Count drops (XPUB_NODROP; see the module docstring for the trade-off).
    queue_size
        Results waiting for this thread (oldest dropped when full).
    """

    name = "zmq-pub"

    def __init__(self, bind: str = "127.0.0.1", port: int = 5556, *, sndhwm: int = 100,
                 queue_size: int = 64, nodrop: bool = True,
                 context: zmq.Context | None = None) -> None:
        super().__init__(queue_size)
        self.bind, self.port, self.sndhwm, self.nodrop = bind, port, sndhwm, nodrop
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self.sent = 0
        self.sent_overlay = 0
        self.zmq_dropped = 0  # messages ZMQ refused (a subscriber at its HWM)

    @property
    def address(self) -> str:
        return f"tcp://{self.bind}:{self.port}"

    def open(self) -> None:
        """Bind (idempotent: a service binds early to report a port clash at once)."""
        if self._sock is not None:
            return
        s = self._ctx.socket(zmq.XPUB if self.nodrop else zmq.PUB)
        if self.nodrop:
            s.setsockopt(zmq.XPUB_NODROP, 1)
        s.setsockopt(zmq.SNDHWM, self.sndhwm)
        s.setsockopt(zmq.LINGER, 200)
        self.port = _bind(s, self.bind, self.port, "PUB")
        self._sock = s

    def submit_overlay(self, frame_index: int, image, stamps: dict[str, int],
                       kind: str = "overlay") -> bool:
        """Queue a rendered image for ``[b"overlay", header, pixels]`` (*kind* goes in the
        header: ``"overlay"`` or ``"eyepiece"``)."""
        return self._queue.put((kind, frame_index, image, stamps))

    def handle(self, item) -> None:
        sock = self._sock
        if isinstance(item, Result):
            msg = schema.detections_message(
                item.frame, item.detections, tracks=item.tracks, target_id=item.target_id,
                control=item.control, focus=item.focus, extra={"seq": item.seq})
            data = schema.dumps(msg)
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
                "sent_overlay": self.sent_overlay, "zmq_dropped": self.zmq_dropped}


class CommandServer:
    """REP socket that turns JSON requests into calls of *handler* (a dict -> dict).

    Any request gets exactly one reply, so a REQ client never hangs: non-JSON, non-object
    requests and handler exceptions all become ``{"ok": false, "error": ...}``.
    """

    def __init__(self, handler: Callable[[dict], dict], bind: str = "127.0.0.1",
                 port: int = 5557, *, poll_ms: int = 100,
                 context: zmq.Context | None = None) -> None:
        self.handler = handler
        self.bind, self.port, self.poll_ms = bind, port, poll_ms
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests = 0
        self.errors = 0

    @property
    def address(self) -> str:
        return f"tcp://{self.bind}:{self.port}"

    def start(self) -> CommandServer:
        s = self._ctx.socket(zmq.REP)
        s.setsockopt(zmq.LINGER, 200)
        self.port = _bind(s, self.bind, self.port, "REP")
        self._sock = s
        self._thread = threading.Thread(target=self._run, name="inscope-rep", daemon=True)
        self._thread.start()
        return self

    def reply_for(self, raw: bytes) -> dict:
        """The reply to one raw request (public so it can be tested without sockets)."""
        try:
            req = schema.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return schema.error(
                f"request is not valid JSON ({e}); send e.g. {{\"cmd\": \"status\"}}.")
        if not isinstance(req, dict) or "cmd" not in req:
            return schema.error(
                "request must be a JSON object with a \"cmd\" field, e.g. "
                f"{{\"cmd\": \"status\"}}; commands: {', '.join(schema.COMMANDS)}.")
        try:
            rep = self.handler(req)
        except Exception as e:  # noqa: BLE001 - a bad command must not kill the server
            log.warning("command %r failed: %s", req.get("cmd"), e)
            rep = schema.error(f"command {req.get('cmd')!r} failed: {type(e).__name__}: {e}")
        return rep

    def _run(self) -> None:
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not dict(poller.poll(self.poll_ms)):
                continue
            raw = sock.recv()
            self.requests += 1
            rep = self.reply_for(raw)
            if not rep.get("ok"):
                self.errors += 1
            try:
                sock.send(schema.dumps(rep))
            except (zmq.ZMQError, ValueError, TypeError) as e:
                sock.send(schema.dumps(schema.error(f"reply could not be encoded: {e}")))
        sock.close()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def request(address: str, cmd: dict, timeout_ms: int = 3000,
            context: zmq.Context | None = None) -> dict:
    """Send one command to a running inscope and return its reply (a small REQ client)."""
    ctx = context or zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(address)
    try:
        s.send(schema.dumps(cmd))
        return schema.loads(s.recv())
    except zmq.Again:
        raise TimeoutError(f"no reply from {address} within {timeout_ms} ms; is inscope "
                           "running with its REP socket on that address?") from None
    finally:
        s.close()
