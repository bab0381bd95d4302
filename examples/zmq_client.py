"""Follow a running inscope: print each frame's detections, then pause it and resume it.

    inscope demo &                    # or: inscope run ...
    python examples/zmq_client.py     # or with the addresses inscope printed at start:
    python examples/zmq_client.py tcp://127.0.0.1:5556 tcp://127.0.0.1:5557
"""

import json
import sys

import zmq

pub, rep = sys.argv[1:3] if len(sys.argv) > 2 else ("tcp://127.0.0.1:5556",
                                                    "tcp://127.0.0.1:5557")
ctx = zmq.Context.instance()
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.RCVTIMEO, 5000)  # ms: say so, rather than wait for ever
sub.connect(pub)
sub.setsockopt(zmq.SUBSCRIBE, b"detections")
for _ in range(20):
    try:
        topic, data = sub.recv_multipart()
    except zmq.Again:
        sys.exit(f"nothing from {pub} in 5 s: is inscope running (inscope demo)?")
    msg = json.loads(data)
    best = max(msg["detections"], key=lambda d: d["score"], default=None)
    print(msg["frame_index"], msg["n"], "cells; best at stage µm:",
          best and best["center_um"], "target", msg["target_id"])

req = ctx.socket(zmq.REQ)
req.setsockopt(zmq.RCVTIMEO, 5000)
req.setsockopt(zmq.LINGER, 0)
req.connect(rep)
for cmd in ({"cmd": "pause"}, {"cmd": "status"}, {"cmd": "resume"}):
    req.send_json(cmd)
    try:
        print(cmd["cmd"], "->", req.recv_json())
    except zmq.Again:
        sys.exit(f"no reply from {rep} in 5 s: is inscope's command port there?")
