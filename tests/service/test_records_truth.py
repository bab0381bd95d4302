"""What a run's records hold, value by value: the CSV rows, the JSONL lines, the batching
that bounds what a crash loses, and the frames' OME-TIFF (pixel size, every plane's stage
position and time, provenance) before and after it is closed.

Real files written by the records output (csv, json, tifffile) into a temporary folder;
results built by hand so every value is known.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile

from inscope.acquisition.frame import Frame, StagePosition
from inscope.control.tracking import Track
from inscope.detector.base import Detections
from inscope.outputs import Result
from inscope.records import (
    CSV_COLUMNS,
    PLACEHOLDER_DESCRIPTION,
    RecordsOutput,
    read_jsonl,
)

MS = 1_000_000
T0 = 9_000_000 * MS
PROV = {"inscope_version": "9.9", "start_utc": "2026-12-06T01:02:03+00:00",
        "detector": {"name": "inscope-nuclei", "model_sha256": "abc123", "provider": "cpu"},
        "microscope": {"name": "sim", "pixel_size_um": 0.5, "channel": "DAPI"}}


def _result(i: int, position=True, target: int | None = 7, shape=(40, 60)) -> Result:
    f = Frame(np.full(shape, 100 + i, np.uint16), i, {"ready": T0 + i * 50 * MS},
              StagePosition(10.0 * i, -5.0, 2.5) if position else None, 0.5)
    boxes = np.array([[10, 10, 20, 30], [40, 5, 50, 15]], np.float32)
    d = Detections(boxes, np.array([0.91234, 0.5]), np.array([0, 1]), ("nucleus", "mitotic"),
                   i)
    tracks = [Track(7, boxes[0].astype(float), np.zeros(2), np.ones(2))]
    return Result(f, d, tracks=tracks, target_id=target, seq=100 + i)


def _run(out: RecordsOutput, results) -> RecordsOutput:
    out.open()
    for r in results:
        out.handle(r)
    out.close()
    return out


def test_the_csv_has_one_row_per_detection_with_every_value(tmp_path):
    out = _run(RecordsOutput(tmp_path / "run", "csv"), [_result(0), _result(1, position=False,
                                                                              target=None)])
    with open(out.detections_path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 4
    r0 = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert r0 == {"frame_index": "0", "seq": "100", "t_ready_ns": str(T0), "stage_x_um": "0.0",
                  "stage_y_um": "-5.0", "stage_z_um": "2.5", "x0": "10.0", "y0": "10.0",
                  "x1": "20.0", "y1": "30.0",
                  # centre (15, 20) px; frame centre (30, 20); 0.5 µm/px: x 0 - 7.5
                  "center_x_um": "-7.5", "center_y_um": "-5.0", "score": "0.9123",
                  "class": "nucleus", "track_id": "7", "is_target": "1"}
    r1 = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert (r1["class"], r1["track_id"], r1["is_target"], r1["score"]) == ("mitotic", "", "0",
                                                                          "0.5")
    r2 = dict(zip(CSV_COLUMNS, rows[3], strict=True))  # no position: stage fields empty
    assert r2["frame_index"] == "1" and r2["seq"] == "101"
    assert (r2["stage_x_um"], r2["stage_y_um"], r2["center_x_um"]) == ("", "", "")
    assert r2["is_target"] == "0" and r2["track_id"] == "7"  # tracked, no target this frame
    assert out.stats()["detections"].endswith("detections.csv") and out.rows == 2


def test_the_jsonl_holds_the_zmq_message_of_every_frame(tmp_path):
    rs = [_result(i) for i in range(3)]
    out = _run(RecordsOutput(tmp_path / "run"), rs)
    assert out.detections_path.name == "detections.jsonl"
    lines = out.detections_path.read_bytes().splitlines()
    assert lines == [r.message()[1] for r in rs]
    msgs = read_jsonl(out.detections_path)
    assert [m["frame_index"] for m in msgs] == [0, 1, 2]
    # a crash mid-line: the complete lines are read, the torn one is left out
    with open(out.detections_path, "ab") as f:
        f.write(b'{"frame_index": 3, "detec')
    assert [m["frame_index"] for m in read_jsonl(out.detections_path)] == [0, 1, 2]


def test_detections_reach_the_disk_in_batches_and_at_close(tmp_path):
    out = RecordsOutput(tmp_path / "run", batch=3, flush_s=3600.0)
    out.open()
    out.handle(_result(0))
    out.handle(_result(1))
    assert out.detections_path.read_text() == "" and out.flushes == 0
    out.handle(_result(2))
    assert len(out.detections_path.read_text().splitlines()) == 3 and out.flushes == 1
    out.handle(_result(3))
    out.close()
    assert len(out.detections_path.read_text().splitlines()) == 4 and out.flushes == 2
    out.close()  # twice is fine
    every = RecordsOutput(tmp_path / "run2", flush_s=0.0)
    every.open()
    every.handle(_result(0))
    assert len(every.detections_path.read_text().splitlines()) == 1
    every.close()
    assert RecordsOutput(tmp_path / "r3", batch=0).batch == 1


def test_the_frames_become_an_ome_tiff_with_positions_times_and_provenance(tmp_path):
    out = RecordsOutput(tmp_path / "run", frames=True, fps=20.0)
    out.provenance = PROV
    out.open()
    assert json.loads((tmp_path / "run" / "provenance.json").read_text()) == PROV
    for i in range(3):
        out.handle(_result(i))
    # while the run lasts: a plain stack, every frame readable, a placeholder description
    with tifffile.TiffFile(out.frames_path) as tf:
        assert len(tf.pages) == 3 and tf.pages[0].description == PLACEHOLDER_DESCRIPTION
    assert out.stats()["frames_written"] == 3
    out.close()
    with tifffile.TiffFile(out.frames_path) as tf:
        stack = tf.asarray()
        xml = tf.ome_metadata
        res = tf.pages[0].tags["XResolution"].value
        unit = tf.pages[0].tags["ResolutionUnit"].value
    assert stack.shape == (3, 40, 60) and stack.dtype == np.uint16
    assert [int(p[0, 0]) for p in stack] == [100, 101, 102]
    assert res[0] / res[1] == pytest.approx(1e4 / 0.5) and int(unit) == 3  # per cm
    root = ET.fromstring(xml)
    ns = {"o": root.tag.split("}")[0].strip("{")}
    px = root.find(".//o:Pixels", ns)
    assert float(px.get("PhysicalSizeX")) == 0.5 and float(px.get("PhysicalSizeY")) == 0.5
    assert float(px.get("TimeIncrement")) == pytest.approx(0.05)
    assert px.get("SizeT") == "3" and px.get("SizeX") == "60" and px.get("SizeY") == "40"
    planes = px.findall("o:Plane", ns)
    assert [float(p.get("PositionX")) for p in planes] == [0.0, 10.0, 20.0]
    assert [float(p.get("PositionY")) for p in planes] == [-5.0] * 3
    assert [float(p.get("PositionZ")) for p in planes] == [2.5] * 3
    assert [float(p.get("DeltaT")) for p in planes] == pytest.approx([0.0, 0.05, 0.1])
    assert root.find(".//o:Channel", ns).get("Name") == "DAPI"
    image = root.find(".//o:Image", ns)
    assert image.find("o:AcquisitionDate", ns).text == "2026-12-06T01:02:03"
    assert "inscope 9.9 run, model inscope-nuclei sha256 abc123" in \
        image.find("o:Description", ns).text
    ann = {m.get("K"): m.text for m in root.iter(f"{{{ns['o']}}}M")}
    assert ann["model_sha256"] == "abc123" and ann["provider"] == "cpu"
    assert ann["microscope"] == "sim" and ann["inscope_version"] == "9.9"
    assert ann["model"] == "inscope-nuclei" and ann["start_utc"] == PROV["start_utc"]
    assert ann["pixel_size_um"] == "0.5" and ann["channel"] == "DAPI"
    assert "mm_config" not in ann  # not known: left out, not written as None
    assert xml.startswith("<?xml") and tf_is_big(out.frames_path)


def tf_is_big(path) -> bool:
    with tifffile.TiffFile(path) as tf:
        return tf.is_bigtiff and tf.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK


def test_every_provenance_field_reaches_the_ome_annotations(tmp_path):
    prov = {**PROV, "start_monotonic_ns": 123456789, "calibration": "affine 0.5",
            "microscope": {"name": "mm", "mm_config": "MMConfig_demo.cfg",
                           "channel_group": "Channel", "camera": "Camera-1",
                           "pixel_size_um": 0.65},
            "where": tmp_path / "µm data"}  # not JSON by itself: written as text
    out = RecordsOutput(tmp_path / "a" / "b" / "run", frames=True)
    out.provenance = prov
    _run(out, [_result(0)])
    saved = json.loads((tmp_path / "a" / "b" / "run" / "provenance.json").read_text("utf-8"))
    assert saved["where"] == str(tmp_path / "µm data")
    with tifffile.TiffFile(out.frames_path) as tf:
        root = ET.fromstring(tf.ome_metadata)
    ns = root.tag.split("}")[0].strip("{")
    ann = {m.get("K"): m.text for m in root.iter(f"{{{ns}}}M")}
    assert ann["start_monotonic_ns"] == "123456789" and ann["calibration"] == "affine 0.5"
    assert ann["mm_config"] == "MMConfig_demo.cfg" and ann["channel_group"] == "Channel"
    assert ann["microscope"] == "mm" and ann["pixel_size_um"] == "0.65"
    # no channel named: the camera names the OME channel
    assert root.find(f".//{{{ns}}}Channel").get("Name") == "Camera-1"
    assert out.stats()["frames"] == str(out.frames_path)
    # a second run into the same folder is fine
    _run(RecordsOutput(tmp_path / "a" / "b" / "run"), [_result(1)])


def test_a_flush_leaves_nothing_behind_and_counts_the_next_batch_afresh(tmp_path):
    out = RecordsOutput(tmp_path / "run", batch=3, flush_s=3600.0)
    out.open()
    for i in range(5):
        out.handle(_result(i))
    assert out.flushes == 1  # frames 3 and 4 wait for a third
    out.close()
    assert [m["frame_index"] for m in read_jsonl(out.detections_path)] == [0, 1, 2, 3, 4]
    csv_out = RecordsOutput(tmp_path / "csv", "csv", batch=2, flush_s=3600.0)
    csv_out.open()
    r = _result(0)
    r.detections.class_names = ("noyau µ", "mitotic")
    for _ in range(3):
        csv_out.handle(r)
    csv_out.close()
    with open(csv_out.detections_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 6 and rows[1][CSV_COLUMNS.index("class")] == "noyau µ"


def test_frames_without_a_position_record_zeros_and_a_size_change_is_refused(tmp_path):
    out = RecordsOutput(tmp_path / "run", frames=True)
    out.open()
    out.handle(_result(0, position=False))
    with pytest.raises(ValueError, match=r"frame 1 is \(20, 60\) uint16 but the recording "
                                         r"holds \(40, 60\) uint16"):
        out.handle(_result(1, shape=(20, 60)))
    out.close()
    with tifffile.TiffFile(out.frames_path) as tf:
        root = ET.fromstring(tf.ome_metadata)
    ns = {"o": root.tag.split("}")[0].strip("{")}
    (plane,) = root.findall(".//o:Plane", ns)
    assert float(plane.get("PositionX")) == 0.0 and float(plane.get("DeltaT")) == 0.0
    assert root.find(".//o:Channel", ns).get("Name") == "camera"


def test_a_run_without_frames_writes_no_tiff_and_a_bad_format_is_refused(tmp_path):
    out = _run(RecordsOutput(tmp_path / "run"), [_result(0)])
    assert out.frames_path is None and not list((tmp_path / "run").glob("*.tif"))
    assert out.stats()["frames"] is None and out.stats()["frames_written"] == 0
    assert not (tmp_path / "run" / "provenance.json").exists()
    with pytest.raises(ValueError, match="records format must be one of"):
        RecordsOutput(tmp_path / "x", "xlsx")
