"""Client sockets for tests that talk to the service over real ZMQ on 127.0.0.1.

One definition of the REQ and SUB sockets the service tests open (timeouts, LINGER 0 so a
failed test never hangs on close, optional CURVE client keys), and of the two waits they
need: until a SUB is really connected, and until a SUB has nothing more to read.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import zmq


def _curve(s: zmq.Socket, keys: Path | None, client: str) -> None:
    if keys is not None:
        from inscope.curve import apply_client

        apply_client(s, keys / "clients" / f"{client}.key_secret", keys / "server.key")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (the OS closes a plain socket at once,
    unlike ZMQ, which frees a closed socket's port a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def req_socket(address: str, *, timeout_ms: int = 5000, send_timeout_ms: int | None = None,
               keys: Path | None = None, client: str = "client") -> zmq.Socket:
    """A REQ socket connected to *address*; a reply that does not come raises
    ``zmq.Again`` after *timeout_ms* instead of hanging the test. With *keys* (the folder
    of ``inscope keys init``) it authenticates as *client*."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    if send_timeout_ms is not None:
        s.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
    s.setsockopt(zmq.LINGER, 0)
    _curve(s, keys, client)
    s.connect(address)
    return s


def sub_socket(address: str, *, topic: bytes = b"", rcvhwm: int | None = None,
               rcvbuf: int | None = None, keys: Path | None = None,
               client: str = "client") -> zmq.Socket:
    """A SUB socket connected to *address*, subscribed to *topic* (all by default)."""
    s = zmq.Context.instance().socket(zmq.SUB)
    if rcvhwm is not None:
        s.setsockopt(zmq.RCVHWM, rcvhwm)
    if rcvbuf is not None:
        s.setsockopt(zmq.RCVBUF, rcvbuf)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, topic)
    _curve(s, keys, client)
    s.connect(address)
    return s


def wait_connected(pub_sock: zmq.Socket, sub: zmq.Socket, timeout_s: float = 5.0) -> None:
    """PUB drops messages until the SUB's connection is up: send hellos on *pub_sock*
    until *sub* reads one, then discard them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub_sock.send_multipart([b"hello", b"{}"])
        if sub.poll(50):
            while sub.poll(0):
                sub.recv_multipart()
            return
    raise AssertionError("SUB never connected to PUB")


def drain(sub: zmq.Socket, timeout_ms: int = 500) -> list[list[bytes]]:
    """Every message *sub* receives until none comes for a while (the first wait is
    *timeout_ms*, later ones 200 ms)."""
    msgs = []
    while sub.poll(timeout_ms):
        msgs.append(sub.recv_multipart())
        timeout_ms = 200
    return msgs
