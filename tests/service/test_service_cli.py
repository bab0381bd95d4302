"""The CLI end to end, in subprocesses: ``inscope demo`` on the simulated microscope,
Ctrl-C (SIGINT) stops cleanly with a summary and a playable video, ``inscope run`` on the
DemoCamera, and the pipeline's boxes land on the simulator's ground-truth cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def _env() -> dict:
    env = dict(os.environ)
    env.pop("DISPLAY", None)  # never open windows from tests
    env.pop("WAYLAND_DISPLAY", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.ndim == 3 and frame.mean() > 1, "a real image, not a black frame"
        n += 1
    cap.release()
    return n


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_demo_writes_summary_video_and_records(tmp_path):
    # without the simulator the demo runs on the DemoCamera (and says so)
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "inscope", "demo", "--frames", "60", "--out", str(out),
         "--pub-port", "0", "--rep-port", "0", "--no-progress"],
        capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 60 and s["stop_reason"] == "frames"
    assert s["fps"] > 0 and s["dropped"] >= 0
    for key in ("ready_to_published", "ready_to_move_commanded"):
        assert set(s["latency_ms"][key]) >= {"p50", "p90", "p99", "max"}
    lat = s["latency_ms"]["ready_to_published"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert s["detector"]["name"] and s["detector"]["provider"]
    c = s["control"]
    assert c["mode"] == "steer+focus"
    # the demo finds focus first, then tours the cells: the guard records those moves
    assert c["guard"]["moves_made"] > 0, "the loop acts on the simulated cells"
    assert c["focus"]["state"] is not None
    video = Path(s["outputs"]["overlay"]["video"])
    assert video.parent == out and video.exists()
    assert _video_frames(video) == s["outputs"]["overlay"]["video_frames"] > 0
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert len(lines) == 60
    assert s["outputs"]["zmq-pub"]["handled"] == 60, "every frame went to the publisher"
    first = json.loads(lines[0])
    assert first["schema"] == "inscope.detections/1" and first["n"] > 0
    assert "frames 60" in r.stdout  # the printed summary
    # the final error names its target and what the loop was doing with it (a tour that
    # has just chosen a distant cell is not a failure to centre)
    ft = c["final_target"]
    assert ft["status"]
    if c["final_centring_error_um"] is not None:
        assert ft["track_id"] is not None
        assert f"last frame: target track {ft['track_id']} " in r.stdout
        assert "final centring error" not in r.stdout


def test_sigint_stops_cleanly_with_summary_and_video(tmp_path):
    out = tmp_path / "run"
    cmd = ["demo", "--frames", "100000", "--out", str(out)]
    # Started as a shell's background job would be (SIGINT ignored, which Python keeps
    # in the child): the service must still stop cleanly on SIGINT, so the test behaves
    # the same under `pytest &` as in the foreground.
    p = subprocess.Popen([sys.executable, "-m", "inscope", *cmd, "--pub-port", "0",
                          "--rep-port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=_env(),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        rec = out / "detections.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if rec.exists() and len(rec.read_text().splitlines()) >= 20:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run produced no records in time: " + p.stdout.read())
        p.send_signal(signal.SIGINT)
        output, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, output
    s = json.loads((out / "summary.json").read_text())
    assert s["stop_reason"] == "interrupted (Ctrl-C)"
    assert s["frames"] >= 20
    # nothing handed to the outputs is lost: every processed frame is recorded
    assert len(rec.read_text().splitlines()) == s["frames"] == \
        s["outputs"]["records"]["handled"]
    n = _video_frames(out / "overlay.mp4")
    assert n == s["outputs"]["overlay"]["video_frames"] > 0
    assert "interrupted" in output


def test_boxes_sit_on_ground_truth_cells():
    from inscope.acquisition.factory import open_microscope
    from inscope.config import ControlConfig
    from inscope.detector.onnx_detector import load_detector
    from inscope.pipeline import Pipeline

    det = load_detector(None, provider="cpu")  # the shipped model; missing is a failure
    scope = open_microscope("sim")
    results = []
    try:
        Pipeline(scope, det, control=ControlConfig(mode="steer"), frames=20,
                 on_result=results.append).run()
    finally:
        scope.close()
    assert len(results) == 20
    matched = total = 0
    ious = []
    for r in results:
        truth = np.asarray(r.frame.truth, np.float32).reshape(-1, 4)
        assert len(truth) and len(r.detections), "cells in view and found"
        best = _iou(r.detections.boxes, truth).max(1)
        assert best.max() >= 0.7, f"frame {r.frame.index}: no box sits on a true cell"
        matched += int((best >= 0.5).sum())
        total += len(best)
        ious.extend(best[best >= 0.5])
    # The shipped model puts 0.99 of its boxes on labelled cells here, median IoU 0.86;
    # the classical baseline (it also boxes unlabelled debris and merges touching nuclei)
    # 0.79 and 0.79, so a quiet switch to it fails. Random boxes would score ~0.
    assert matched / total > 0.9, f"only {matched}/{total} boxes sit on a true cell"
    assert np.median(ious) > 0.8, "matched boxes fit their cells tightly"
