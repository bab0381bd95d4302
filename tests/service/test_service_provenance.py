"""Provenance of a run on the real MMCore + DemoCamera (the session's headless core) with
the shipped ONNX model: summary.json, provenance.json beside the records, and the recorded
OME-TIFF (channel name, resolution tags in µm, map annotation)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import pytest
import tifffile

import inscope
from inscope.cli import main
from inscope.control.workflow import CSV_FIELDS, CellRecord
from inscope.detector.onnx_detector import default_model_path
from inscope.records import read_jsonl


def test_run_records_carry_provenance(tmp_path, mm_scope):
    rec, summ = tmp_path / "rec", tmp_path / "summary.json"
    t_wall, t_mono = dt.datetime.now(dt.UTC), time.monotonic_ns()
    rc = main(["run", "--backend", "headless", "--frames", "3", "--no-zmq", "--no-window",
               "--record", str(rec), "--record-frames", "--summary", str(summ),
               "--no-progress", "--provider", "cpu", "--mirror-views", "2",
               "--enlarge-below-px", "30"])
    assert rc == 0
    prov = json.loads(summ.read_text())["provenance"]
    assert prov == json.loads((rec / "provenance.json").read_text())
    assert prov["inscope_version"] == inscope.__version__
    start = dt.datetime.fromisoformat(prov["start_utc"])
    assert start.tzinfo is not None and abs((start - t_wall).total_seconds()) < 60
    first = read_jsonl(rec / "detections.jsonl")[0]
    assert t_mono <= prov["start_monotonic_ns"] <= first["stamps_ns"]["ready"]
    sha = hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    assert prov["detector"]["model_sha256"] == sha
    assert prov["detector"]["mirror_views"] == 2  # the boxes depend on it
    assert prov["detector"]["enlarge_below_px"] == 30.0  # ... and on this
    m = prov["microscope"]
    assert m["mm_config"].endswith("MMConfig_demo.cfg")
    assert m["pixel_size_um"] == pytest.approx(1.0) and m["pixel_size_configured"]
    core = mm_scope.core
    assert m["channel_group"] == core.get_channel_group()
    assert m["channel"] == core.get_current_config(core.get_channel_group())
    assert "75" in m["mm_api_version"]

    with tifffile.TiffFile(rec / "frames.ome.tif") as tf:
        page = tf.pages[0]
        xres = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert xres[0] / xres[1] == pytest.approx(1e4 / 1.0)  # 1 µm/pixel as pixels/cm
        assert page.tags["Software"].value == "inscope"
        ome = tf.ome_metadata
    assert f'Name="{m["channel"]}"' in ome
    assert sha in ome and prov["start_utc"].replace("+00:00", "") in ome
    assert 'PhysicalSizeX="1.0"' in ome


def test_cells_csv_box_columns_are_split_with_units():
    assert CSV_FIELDS[4:8] == ["box_x0_px", "box_y0_px", "box_x1_px", "box_y1_px"]
    row = CellRecord(3, 10.0, 20.0, box=(1.0, 2.25, 30.5, 40.0)).row()
    assert [row[k] for k in CSV_FIELDS[4:8]] == ["1.0", "2.2", "30.5", "40.0"]
    assert set(row) == set(CSV_FIELDS)
