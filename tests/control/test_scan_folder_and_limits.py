"""``inscope scan`` never mixes two scans in one folder, and plans only what the stage
may reach (exploratory testing: a second scan into the same ``--out`` appended its rows
to ``cells.csv`` while replacing the OME-TIFFs, so the table named two cells per file; a
region wholly outside the soft limits logged one warning per field and ended ``done``
with 0 cells, exit 0). Real CLI on the slide backend over the shared nuclei slide."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from inscope.acquisition.factory import open_microscope
from inscope.cli import main
from inscope.control.workflow import FindAndImage


def _scan(slide, out, *region, extra=()):
    return ["scan", "--backend", "slide", "-o", f"path={slide}", "-o", "fov=256",
            "--region", *map(str, region), "--model", "classical", "--z-range", "0", "0",
            "--no-autofocus", "--out", str(out), *extra]


def _rows(out):
    with open(out / "cells.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _one_error(capsys) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in cap.err + cap.out
    return err


def test_a_second_scan_into_the_same_folder_is_refused(nuclei_slide, tmp_path, capsys):
    out = tmp_path / "scan"
    assert main(_scan(nuclei_slide, out, 100, 80, 220, 180)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len([n for n in before if n.startswith("cell_")]) >= 2
    capsys.readouterr()
    # another region, so a mix would show: other cells under the same file names
    assert main(_scan(nuclei_slide, out, 250, 150, 400, 300)) == 2
    err = _one_error(capsys)
    assert f"--out {out}" in err and "earlier scan" in err and "new folder" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_scan_replaces_a_dry_runs_plan(nuclei_slide, tmp_path, capsys):
    out = tmp_path / "scan"
    assert main(_scan(nuclei_slide, out, 100, 80, 220, 180, extra=["--dry-run"])) == 0
    assert {r["status"] for r in _rows(out)} == {"planned"}
    assert main(_scan(nuclei_slide, out, 100, 80, 220, 180)) == 0
    rows = _rows(out)
    assert rows and "planned" not in {r["status"] for r in rows}  # one table, the scan's
    assert json.loads((out / "summary.json").read_text())["status"] == "done"


def test_a_region_outside_the_soft_limits_is_refused_before_anything_moves(
        nuclei_slide, tmp_path, capsys, caplog):
    out = tmp_path / "scan"
    with caplog.at_level(logging.WARNING):
        assert main(_scan(nuclei_slide, out, 5000, 5000, 6000, 6000)) == 2
    err = _one_error(capsys)
    assert "5000 5000 6000 6000" in err and "outside the stage's soft limits" in err, err
    assert "x [" in err and "y [" in err, "both the region and the limits are given"
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]
    assert not out.exists()
    # and in Python: refused when the workflow is made, the stage where it was
    s = open_microscope("slide", path=str(nuclei_slide), fov=256, realtime=False)
    try:
        p = s.position()
        with pytest.raises(ValueError, match="outside the stage's soft limits"):
            FindAndImage(s, None, region=(5000.0, 5000.0, 6000.0, 6000.0), out_dir=out)
        assert s.position() == p
    finally:
        s.close()


def test_a_region_partly_outside_scans_its_part_inside_and_says_so_once(
        nuclei_slide, tmp_path, caplog):
    out = tmp_path / "scan"
    with caplog.at_level(logging.WARNING):
        assert main(_scan(nuclei_slide, out, 300, 200, 700, 500)) == 0
    said = [r.getMessage() for r in caplog.records if "soft limit" in r.getMessage()]
    assert len(said) == 1 and "left out" in said[0], said
    assert "x [" in said[0] and "y [" in said[0], "the limits are named"
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "done" and s["fields_outside_limits"] > 0
    assert s["cells_imaged"] >= 5, s  # the part on the slide is scanned
    assert not [r for r in caplog.records if "skipped: Refused" in r.getMessage()]
