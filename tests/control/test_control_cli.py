"""``inscope calibrate`` / ``inscope scan`` end to end on the headless demo core."""

from __future__ import annotations

import csv
import json

import numpy as np

from inscope.cli import main
from inscope.control.calibration import Calibration


def test_calibrate_then_scan_with_calibration(mm_scope, tmp_path, capsys):
    cal_path = tmp_path / "cal.json"
    assert main(["calibrate", "--backend", "headless", "--out", str(cal_path)]) == 0
    cal = Calibration.load(cal_path)
    assert abs(cal.pixel_size_um - 1.0) < 0.01 and not cal.flip
    assert "pixel size" in capsys.readouterr().out

    out = tmp_path / "scan"
    rc = main(["scan", "--backend", "headless", "--region", "0", "0", "60", "60",
               "--model", "classical", "--out", str(out), "--calibration", str(cal_path),
               "--z-range", "-1", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    imaged = [r for r in rows if r["status"] == "imaged"]
    assert summary["status"] == "done" and summary["cells_imaged"] == len(imaged) > 0
    for r in imaged:
        x, y = float(r["x_um"]), float(r["y_um"])
        assert 0 <= x <= 60 and 0 <= y <= 60
        assert (out / r["file"]).exists()
    # each cell's OME-TIFF says where its numbers came from, and its pixel size in µm
    import tifffile

    from inscope import __version__

    with tifffile.TiffFile(out / imaged[0]["file"]) as tf:
        desc = json.loads(tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]["Description"])
        page = tf.pages[0]
        xres = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
    prov = desc["provenance"]
    assert prov["inscope_version"] == __version__ and prov["start_utc"]
    assert prov["detector"]["name"] == "classical"
    assert abs(1e4 * xres[1] / xres[0] - 1.0) < 0.01  # 1 µm/pixel at the 10X objective
    xy = np.array([[float(r["x_um"]), float(r["y_um"])] for r in imaged])
    if len(xy) > 1:  # no bead twice
        d = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
        assert d[np.triu_indices(len(xy), 1)].min() > 3.0


def test_scan_bad_region_and_dry_run_calibrate(mm_scope, tmp_path, capsys):
    assert main(["calibrate", "--backend", "headless", "--dry-run"]) == 2
    assert "move the stage" in capsys.readouterr().err
    assert main(["scan", "--backend", "headless", "--region", "10", "0", "0", "5",
                 "--model", "classical", "--out", str(tmp_path / "s")]) == 2
    assert "x1 > x0" in capsys.readouterr().err


def test_calibrate_and_scan_take_soft_limits_from_the_command_line(capsys):
    """A real stage refuses every move without soft limits, and calibrate and scan move
    it: --limits gives them (before, only `inscope run`'s TOML could)."""
    from inscope.cli import build_parser
    from inscope.control.cli import open_from_args

    args = build_parser().parse_args(
        ["scan", "--backend", "sim", "--region", "0", "0", "10", "10",
         "--limits", "-100", "100", "-200", "50", "-30", "40"])
    with open_from_args(args) as scope:
        lim = scope.guard.limits
        assert (lim.x, lim.y, lim.z) == ((-100.0, 100.0), (-200.0, 50.0), (-30.0, 40.0))
    # every calibration move leaves a 2 µm box: all refused, and the error says so
    assert main(["calibrate", "--backend", "sim", "--limits", "-1", "1", "-1", "1",
                 "-10", "10"]) == 1
    assert "refused by the soft limits" in capsys.readouterr().err
    assert main(["calibrate", "--backend", "sim", "--limits", "5", "1", "-1", "1",
                 "-10", "10"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'x'" in err and "reversed" in err


def test_scan_and_calibrate_fall_back_to_the_classical_detector_only_without_a_model(
        monkeypatch, tmp_path, capsys):
    """A build that ships no model file: the default becomes the classical detector,
    with a note; a model the user named that is missing is an error, never replaced."""
    import pytest

    import inscope.detector.onnx_detector as onnx_detector
    from inscope.control.cli import load_detector_for
    from inscope.detector.classical import ClassicalDetector
    from inscope.detector.onnx_detector import OnnxDetector

    assert isinstance(load_detector_for(None), OnnxDetector)  # the shipped model
    assert capsys.readouterr().err == ""
    assert isinstance(load_detector_for("Classical"), ClassicalDetector)
    monkeypatch.setattr(onnx_detector, "DEFAULT_MODEL", tmp_path / "not-shipped.onnx")
    assert isinstance(load_detector_for(None), ClassicalDetector)
    missing = tmp_path / "not-shipped.onnx"
    assert capsys.readouterr().err == (
        f"note: the shipped detector model is missing (ONNX model {missing} not found. "
        "Pass the path of an .onnx file, train one with 'inscope train', or use the "
        "no-learning baseline (model='classical').); using the classical OpenCV detector "
        "instead (--model PATH for another model; --model classical for this one without "
        "this note).\n")
    with pytest.raises(FileNotFoundError):
        load_detector_for(str(tmp_path / "mine.onnx"))
    monkeypatch.undo()
    det = load_detector_for(None, 2)  # scan --mirror-views 2
    assert isinstance(det, OnnxDetector) and det.mirror_views == 2
    det = load_detector_for(None, 1, 36.0)  # scan --enlarge-below-px 36
    assert isinstance(det, OnnxDetector) and det.enlarge_below_px == 36.0
    # scan passes its --enlarge-below-px to the detector: past the model's trained sizes,
    # one line naming the bound, before anything is imaged
    assert main(["scan", "--backend", "sim", "--region", "0", "0", "50", "50",
                 "--enlarge-below-px", "100", "--out", str(tmp_path / "scan")]) == 2
    err = capsys.readouterr().err
    assert "cannot load the detector: enlarge_below_px=100.0" in err and "72 px" in err
