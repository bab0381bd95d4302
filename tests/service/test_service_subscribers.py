"""One stalled subscriber does not starve the others (issue 10, item 8).

Real PUB output thread and real SUB sockets on 127.0.0.1. A subscriber that connects and
never reads fills its queue and the kernel buffers within a few hundred messages; after
that, with the old default (XPUB_NODROP) every send failed for everybody.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq
from _support.sockets import sub_socket

from inscope.acquisition.frame import Frame
from inscope.detector.base import Detections
from inscope.outputs import Result
from inscope.zmq_api import PubOutput

N = 1500


def _result(i: int, pad: int) -> Result:
    # 50 boxes make a ~5 KB message, so the stalled peer's buffers fill quickly
    boxes = np.tile(np.array([[1, 2, 30, 40]], np.float32), (pad, 1))
    dets = Detections(boxes, np.full(pad, 0.9, np.float32), np.zeros(pad, np.int64))
    frame = Frame(np.zeros((8, 8), np.uint16), index=i, stamps={"ready": time.monotonic_ns()})
    return Result(frame, dets, seq=i)


def _run(pub: PubOutput) -> tuple[int, int]:
    pub.open()
    pub._sock.setsockopt(zmq.SNDBUF, 8192)  # small kernel buffers: the stall bites sooner
    stalled = sub_socket(pub.address, rcvhwm=1, rcvbuf=4096)
    reader = sub_socket(pub.address, rcvhwm=100_000, rcvbuf=4096)
    got = [0]
    halt = threading.Event()

    def read():
        while not halt.is_set():
            if reader.poll(100):
                reader.recv_multipart()
                got[0] += 1

    t = threading.Thread(target=read, daemon=True)
    t.start()
    time.sleep(0.5)  # both connections up
    pub.start()
    try:
        for i in range(N):
            pub.submit(_result(i, 50))
            time.sleep(0.002)  # a camera's pace, not a flood: the reader keeps up
        deadline = time.monotonic() + 10
        while pub.handled + pub.dropped < N and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        halt.set()
        t.join(2)
        pub.stop()
        stalled.close()
        reader.close()
    return got[0], pub.zmq_dropped


def test_default_a_stalled_subscriber_loses_only_its_own_messages():
    got, _ = _run(PubOutput(port=0, sndhwm=10))
    assert got >= 0.9 * N, f"the reading subscriber got {got} of {N}"


def test_lossless_option_counts_what_it_could_not_send():
    """nodrop=True is for one trusted consumer: with a second, stalled one the reader
    starves (documented trade-off) and every refused send is counted."""
    got, zmq_dropped = _run(PubOutput(port=0, sndhwm=10, nodrop=True))
    assert zmq_dropped > 0
    assert got + zmq_dropped <= N
