"""A full disk (issue 10, item 7): one line naming the output that stopped and why; that
output is closed and what it wrote stays readable; the loop and the other outputs go on;
the summary is written (or printed when it cannot be); the exit code is non-zero.

Two real ways to fill a disk: a file-size limit (``RLIMIT_FSIZE``: writes beyond it fail
with EFBIG, on any POSIX machine) and, where the test may mount one (root), a real 3 MB
tmpfs (writes fail with ENOSPC). Both run the real ``inscope run`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import tifffile

from inscope.records import read_jsonl

posix_only = pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE is POSIX-only")


def _run(out, extra, preexec=None, frames=300, shape=128):
    cmd = [sys.executable, "-m", "inscope.cli", "run", "--backend", "sim",
           "-o", f"shape=[{shape}, {shape}]", "-o", "seed=1", "-o", "exposure_ms=5",
           "--model", "classical", "--no-zmq", "--no-window", "--no-progress",
           "--frames", str(frames), "--record", str(out / "rec"), "--record-frames",
           "--summary", str(out / "summary.json"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          preexec_fn=preexec)


def _limit_file_size(nbytes):
    def pre():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


@posix_only
def test_file_size_limit_stops_the_records_output_cleanly(tmp_path):
    r = _run(tmp_path, [], preexec=_limit_file_size(3 * 2**20))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    stopped = [ln for ln in r.stderr.splitlines() if "output records stopped" in ln]
    assert len(stopped) == 1, r.stderr
    assert "File too large" in stopped[0] or "file-size limit" in stopped[0], stopped
    # the summary (small) is written and says what happened; the loop went on
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["frames"] == 300
    assert s["outputs"]["records"]["failed"] in stopped[0]
    # what was written stays readable: every whole frame page and every JSONL line
    frames = tifffile.imread(tmp_path / "rec" / "frames.ome.tif")
    assert 50 <= frames.shape[0] < 300 and frames.shape[1:] == (128, 128)
    msgs = read_jsonl(tmp_path / "rec" / "detections.jsonl")
    assert len(msgs) >= frames.shape[0] - 1
    assert [m["seq"] for m in msgs] == list(range(len(msgs)))


@pytest.fixture
def tiny_fs(tmp_path):
    d = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a 3 MB tmpfs needs root on Linux; the RLIMIT_FSIZE test "
                    "covers the same path")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the RLIMIT_FSIZE "
                    "test covers the same path")
    yield d
    subprocess.run(["umount", str(d)], check=False)


def test_full_disk_stops_outputs_prints_the_summary_and_exits_non_zero(tiny_fs):
    import cv2

    r = _run(tiny_fs, ["--video", str(tiny_fs / "overlay.mp4")], frames=200, shape=256)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.count("Failed to write frame") < 5, r.stderr[-2000:]
    stopped = [ln for ln in r.stderr.splitlines() if "stopped:" in ln and "output" in ln]
    # one line per output that stopped, naming it and why
    rec = [ln for ln in stopped if "output records stopped" in ln]
    ov = [ln for ln in stopped if "output overlay stopped" in ln]
    assert len(rec) == 1 and ("No space left" in rec[0] or "disk is full" in rec[0])
    assert len(ov) <= 1 and all("No space left" in ln for ln in ov)
    # the summary could not be written (disk full): it is printed, not lost
    if not (tiny_fs / "summary.json").exists():
        assert "the summary could not be written" in r.stdout + r.stderr
        assert '"frames": 200' in r.stdout
    else:
        assert json.loads((tiny_fs / "summary.json").read_text())["frames"] == 200
    frames = tifffile.imread(tiny_fs / "rec" / "frames.ome.tif")
    assert frames.shape[0] >= 1
    cap = cv2.VideoCapture(str(tiny_fs / "overlay.mp4"))
    ok, _ = cap.read()
    cap.release()
    assert ok, "the video written before the disk filled stays playable"
