"""A run whose terminal closes (SIGHUP: a dropped SSH session, a closed terminal window)
ends like one stopped with Ctrl-C: the video finalised, the records whole, the frames an
OME-TIFF, the summary written. Before, SIGHUP's default action killed the process mid-run:
an mp4 without its index (no frame readable), no summary, a plain TIFF."""

from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest
import tifffile

from inscope.config import Config, with_overrides
from inscope.records import read_jsonl

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")


def test_a_closed_terminal_stops_the_run_cleanly_and_keeps_every_output(tmp_path):
    from inscope.service import build_service, run_service

    stack = np.random.default_rng(0).integers(100, 200, (6, 64, 96)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", stack, photometric="minisblack")
    cfg = Config()
    cfg = with_overrides(cfg, "microscope", backend="replay",
                         options={"path": str(tmp_path / "in.tif"), "fps": 30.0,
                                  "loop": True, "pixel_size_um": 1.0})
    cfg = with_overrides(cfg, "detector", model="classical")
    cfg = with_overrides(cfg, "outputs", window=False, video=str(tmp_path / "v.mp4"))
    cfg = with_overrides(cfg, "outputs.zmq", enabled=False)
    cfg = with_overrides(cfg, "outputs.records", dir=str(tmp_path / "rec"), frames=True)
    cfg = with_overrides(cfg, "run", seconds=60.0, progress=False)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    svc = build_service(cfg, say=lambda *_: None)

    def hang_up(r) -> None:
        if r.seq != 10:
            return
        if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # would kill the tests
            svc.pipeline.request_stop("SIGHUP not handled")
        else:
            os.kill(os.getpid(), signal.SIGHUP)

    svc.pipeline.on_result = hang_up
    summary = run_service(svc, progress=False, say=lambda *_: None,
                          summary_path=str(tmp_path / "s.json"))
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # given back after the run
    assert summary["stop_reason"] == "hung up (SIGHUP: the terminal closed)"
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == summary["frames"]
    msgs = read_jsonl(tmp_path / "rec" / "detections.jsonl")
    assert [m["seq"] for m in msgs] == list(range(summary["frames"]))
    with tifffile.TiffFile(tmp_path / "rec" / "frames.ome.tif") as t:
        assert t.is_ome and len(t.pages) == summary["frames"]
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == summary["outputs"]["overlay"]["video_frames"] > 0
