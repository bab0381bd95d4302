"""Find-and-image when things go wrong (issue 10, items 6 and 9): a dead camera stops
the scan after a few cells with the reason in the summary; SIGTERM leaves a final
``stopped`` summary with counts; ordinary mistakes get one line and a non-zero exit.

Real simulated microscope and classical detector; the CLI runs as a real subprocess
where a signal is involved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import inscope.acquisition.simulated as sim
from inscope.acquisition.errors import DeviceError
from inscope.cli import main
from inscope.control.workflow import FindAndImage, ZStackSpec


class DyingCamera(sim.SimulatedMicroscope):
    """The simulator, with a camera that can be unplugged (every snap then fails)."""

    dead = False
    moves_after_death = 0

    def snap(self):
        if self.dead:
            raise DeviceError("camera DemoCam: device not responding (unplugged?)")
        return super().snap()

    def move_xy(self, x, y, **kw):
        if self.dead:
            self.moves_after_death += 1
        return super().move_xy(x, y, **kw)


class CameraDiesAfterScan(FindAndImage):
    def _merge(self, cands):
        cells = super()._merge(cands)
        self.scope.dead = True  # the cable is pulled between scan and visits
        return cells


def test_dead_camera_stops_after_three_failed_cells(tmp_path):
    from inscope.detector.classical import ClassicalDetector

    scope = DyingCamera(sim.SimConfig(seed=0, realtime=False, shape=(256, 256)))
    p = scope.position()
    wf = CameraDiesAfterScan(scope, ClassicalDetector(object_size_um=13.0),
                             region=(p.x - 200, p.y - 200, p.x + 200, p.y + 200),
                             out_dir=tmp_path, z_stack=ZStackSpec((-1, 1), 1.0),
                             autofocus=False)
    with pytest.raises(DeviceError, match="3 consecutive cells failed"):
        wf.run()
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["cells_found"] > 5, "enough cells that carrying on would be visible"
    assert s["status"] == "failed"
    assert "device not responding" in s["stop_reason"] and "not visited" in s["stop_reason"]
    assert s["skipped"] == {"failed": 3} and s["cells_imaged"] == 0
    assert scope.moves_after_death == 3, "the stage stops visiting cells"


def _scan_cmd(out, *extra):
    return [sys.executable, "-m", "inscope.cli", "scan", "--backend", "sim", "--seed", "0",
            "--region", "-400", "-400", "400", "400", "--model", "classical",
            "--out", str(out), *extra]


@pytest.mark.skipif(os.name != "posix", reason="sends SIGTERM with os.kill (POSIX)")
def test_sigterm_leaves_a_stopped_summary_with_counts(tmp_path):
    proc = subprocess.Popen(_scan_cmd(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("cell") and "imaged" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped: terminated (SIGTERM)" in err
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "stopped" and s["stop_reason"] == "terminated (SIGTERM)"
    assert s["cells_imaged"] >= 1 and s["cells_found"] > s["cells_imaged"]
    rows = (tmp_path / "cells.csv").read_text().splitlines()
    assert len(rows) - 1 == s["cells_imaged"] + s["cells_skipped"]


@pytest.mark.parametrize("args, word", [
    (["--overlap", "1"], "--overlap 1"),
    (["--overlap", "nan"], "--overlap"),
    (["--model", "missing.onnx"], "no such file"),
    (["--out", "/dev/null"], "not a folder"),
    (["--score-threshold", "2"], "--score-threshold"),
])
def test_scan_mistakes_get_one_line(tmp_path, capsys, args, word):
    cmd = _scan_cmd(tmp_path / "out")[3:]
    if "--out" in args:
        cmd = cmd[:-2]
    rc = main([*cmd, *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and word in err, err
    assert not (tmp_path / "out").exists()


def test_scan_infinite_region_gets_one_line(tmp_path, capsys):
    rc = main(["scan", "--backend", "sim", "--region", "0", "0", "inf", "inf",
               "--model", "classical", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "finite" in err


def test_huge_dry_run_region_is_capped_with_a_message(tmp_path, capsys):
    rc = main(["scan", "--backend", "sim", "--region", "0", "0", "1e9", "1e9",
               "--model", "classical", "--dry-run", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "fields" in err and "at most 100000" in err
