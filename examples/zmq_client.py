"""Follow a running inscope: print each frame's detections, then pause it and resume it.

    inscope demo &            # or: inscope run ...
    python examples/zmq_client.py
"""

import json

import zmq

ctx = zmq.Context.instance()
sub = ctx.socket(zmq.SUB)
sub.connect("tcp://127.0.0.1:5556")
sub.setsockopt(zmq.SUBSCRIBE, b"detections")
for _ in range(20):
    topic, data = sub.recv_multipart()
    msg = json.loads(data)
    best = max(msg["detections"], key=lambda d: d["score"], default=None)
    print(msg["frame_index"], msg["n"], "cells; best at stage µm:",
          best and best["center_um"], "target", msg["target_id"])

req = ctx.socket(zmq.REQ)
req.connect("tcp://127.0.0.1:5557")
for cmd in ({"cmd": "pause"}, {"cmd": "status"}, {"cmd": "resume"}):
    req.send_json(cmd)
    print(cmd["cmd"], "->", req.recv_json())
