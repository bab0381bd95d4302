"""``examples/zmq_client.py``, the client the docs hand to users, run as written in its
own process against a real service (simulated microscope, real ZMQ sockets on
127.0.0.1), and with nothing to talk to."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

from inscope.config import Config, with_overrides

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "zmq_client.py"


def test_the_docs_show_the_example_as_it_is():
    code = EXAMPLE.read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "zmq.md").read_text(encoding="utf-8")
    block = re.search(r"examples/zmq_client\.py\)\:\n\n```python\n(.*?)```", doc, re.S)
    assert block is not None
    assert block.group(1) == code[code.index("import json"):]


def test_the_example_follows_pauses_and_resumes_a_running_service():
    from inscope.service import build_service, run_service

    cfg = Config()
    cfg = with_overrides(cfg, "microscope", backend="sim",
                         options={"shape": [96, 96], "exposure_ms": 10.0, "seed": 2})
    cfg = with_overrides(cfg, "detector", model="classical")
    cfg = with_overrides(cfg, "outputs", window=False)
    cfg = with_overrides(cfg, "outputs.zmq", pub_port=0, rep_port=0)
    cfg = with_overrides(cfg, "run", seconds=120.0, progress=False)
    svc = build_service(cfg, say=lambda *_: None)
    got: dict = {}

    def client() -> None:
        try:
            got["run"] = subprocess.run(
                [sys.executable, str(EXAMPLE), svc.publisher.address, svc.server.address],
                capture_output=True, text=True, timeout=60)
        finally:
            svc.pipeline.request_stop("example done")

    t = threading.Thread(target=client)
    t.start()
    summary = run_service(svc, progress=False, say=lambda *_: None)
    t.join(10)
    r = got["run"]
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    frames = [ln for ln in lines if "cells; best at stage µm:" in ln]
    assert len(frames) == 20
    idx = [int(ln.split()[0]) for ln in frames]
    assert idx == sorted(idx) and len(set(idx)) == 20
    assert any(ln.startswith("pause -> ") and "'paused': True" in ln for ln in lines)
    assert any(ln.startswith("status -> ") and "'processed'" in ln for ln in lines)
    assert any(ln.startswith("resume -> ") and "'paused': False" in ln for ln in lines)
    assert summary["stop_reason"] == "example done"


def test_the_example_says_when_nothing_is_running():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pub = f"tcp://127.0.0.1:{port}"
    r = subprocess.run([sys.executable, str(EXAMPLE), pub, "tcp://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"nothing from {pub} in 5 s: is inscope running "
                                "(inscope demo)?")
