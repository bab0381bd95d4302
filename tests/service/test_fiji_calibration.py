"""Fiji shows our TIFFs in µm: the recorded OME-TIFF and the scan's per-cell OME-TIFFs.

Fiji cannot run here, so the files are read back with tifffile (tags and values) and the
calibration is computed the way Fiji computes it, from its source:

* **Bio-Formats** (what Fiji uses for a ``*.ome.tif`` when Bio-Formats is installed,
  ``ij/io/Opener.java``: ``name.contains(".ome.tif")`` -> Bio-Formats): the OME-XML
  ``Pixels`` ``PhysicalSizeX/Y/Z`` with their ``...Unit`` (µm when absent, the OME
  schema's default).
* **ImageJ's own TIFF opener** (plain ImageJ, or the file renamed to ``.tif``):
  ``ij/io/TiffDecoder.java`` reads XResolution / YResolution as pixels per unit and
  ResolutionUnit 3 as ``cm`` (2 as ``inch``; 1 as no unit); an ImageJ-style description
  (``ImageJ=...`` with ``unit=``) overrides the unit; then ``FileOpener.setCalibration``
  converts cm to µm when the pixel is at most 0.001 cm (0.0001 cm for ImageJ-written
  files) with ``Prefs.convertToMicrons`` (true by default, ``ij/Prefs.java``). A non-ImageJ
  description gives no z spacing to this opener (it stays 1).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from inscope.acquisition.frame import Frame, StagePosition
from inscope.cli import main
from inscope.records import OmeTiffAppender


def imagej_plain_calibration(path) -> tuple[float, float, str]:
    """(pixel width, pixel height, unit) as ImageJ's TIFF opener computes them; the unit
    as ``Calibration.setUnit`` keeps it ("um" shows as "µm", none as "pixel")."""
    with tifffile.TiffFile(path) as tf:
        tags = tf.pages[0].tags
        pw = ph = 1.0
        unit = None
        if "XResolution" in tags:
            num, den = tags["XResolution"].value
            if den and num:
                pw = den / num
        if "YResolution" in tags:
            num, den = tags["YResolution"].value
            if den and num:
                ph = den / num
        if "ResolutionUnit" in tags:
            ru = int(tags["ResolutionUnit"].value)
            if ru == 1:
                unit = " "
            elif ru == 2:
                if pw == 1 / 72:
                    pw = ph = 1.0
                else:
                    unit = "inch"
            elif ru == 3:
                unit = "cm"
        desc = tags["ImageDescription"].value if "ImageDescription" in tags else ""
    imagej = desc.startswith("ImageJ")
    if imagej:
        props = dict(line.split("=", 1) for line in desc.splitlines() if "=" in line)
        ds_unit = props.get("unit", "")
        if unit == "cm" and ds_unit == "um":
            pw, ph = pw * 1e4, ph * 1e4
        unit = ds_unit
    if pw > 0 and unit is not None:
        if unit == "cm" and pw <= (0.0001 if imagej else 0.001):
            pw, ph, unit = pw * 1e4, ph * 1e4, "um"
        return pw, ph, {"": "pixel", "um": "µm"}.get(unit, unit)
    return 1.0, 1.0, "pixel"


def bioformats_calibration(path) -> dict[str, tuple[float, str]]:
    """{"X": (size, unit), "Y": ..., "Z": ...} from the OME-XML, as Bio-Formats reads it."""
    with tifffile.TiffFile(path) as tf:
        assert tf.is_ome, f"{path} is not an OME-TIFF"
        pixels = tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]["Pixels"]
    return {a: (float(pixels[f"PhysicalSize{a}"]), pixels.get(f"PhysicalSize{a}Unit", "µm"))
            for a in "XYZ" if f"PhysicalSize{a}" in pixels}


# -- the emulation itself bites ------------------------------------------------------
def test_the_emulation_reads_what_imagej_and_tifffile_agree_on(tmp_path):
    a = np.zeros((8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "none.tif", a)  # tifffile: 1 pixel per "no unit"
    assert imagej_plain_calibration(tmp_path / "none.tif") == (1.0, 1.0, " ")
    # what tifffile writes for ImageJ (imagej=True): pixels per µm and unit=um
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"unit": "um"})
    pw, ph, unit = imagej_plain_calibration(tmp_path / "ij.tif")
    assert (pw, ph, unit) == (pytest.approx(0.4), pytest.approx(0.4), "µm")
    # pixels per inch stay inches; a 20 µm pixel in cm is above the µm threshold
    tifffile.imwrite(tmp_path / "inch.tif", a, resolution=(300, 300), resolutionunit="INCH")
    assert imagej_plain_calibration(tmp_path / "inch.tif")[2] == "inch"
    tifffile.imwrite(tmp_path / "big.tif", a, resolution=(500, 500),
                     resolutionunit="CENTIMETER")
    assert imagej_plain_calibration(tmp_path / "big.tif") == (0.002, 0.002, "cm")


# -- the files inscope writes --------------------------------------------------------
@pytest.mark.parametrize("pixel_um", [0.1083, 0.325, 0.65, 6.5])
def test_recorded_ome_tiff_shows_um_in_fiji(tmp_path, pixel_um):
    path = tmp_path / "frames.ome.tif"
    w = OmeTiffAppender(path, pixel_size_um=pixel_um, fps=50, channel="GFP")
    for i in range(3):
        w.append(Frame(np.full((32, 48), i, np.uint16), index=i, stamps={"ready": i * 10**7},
                       position=StagePosition(1.0 * i, 2.0, 3.0), pixel_size_um=pixel_um))
    w.close()
    pw, ph, unit = imagej_plain_calibration(path)
    assert unit == "µm"
    assert pw == pytest.approx(pixel_um, rel=1e-6) and ph == pytest.approx(pixel_um, rel=1e-6)
    bf = bioformats_calibration(path)
    assert bf["X"] == (pytest.approx(pixel_um), "µm") and bf["Y"][0] == pytest.approx(pixel_um)
    with tifffile.TiffFile(path) as tf:  # every page, not only the first, carries the tags
        for page in tf.pages:
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = page.tags["XResolution"].value
            assert den / num * 1e4 == pytest.approx(pixel_um, rel=1e-6)


def test_recording_without_a_pixel_size_claims_none(tmp_path):
    path = tmp_path / "frames.ome.tif"
    w = OmeTiffAppender(path)
    w.append(Frame(np.zeros((16, 16), np.uint16), index=0, stamps={"ready": 0}))
    w.close()
    assert imagej_plain_calibration(path)[2] not in ("µm", "cm")  # no claim of a size
    assert "X" not in bioformats_calibration(path)


def test_scan_cell_ome_tiffs_show_um_in_fiji(tmp_path):
    out = tmp_path / "scan"
    rc = main(["scan", "--backend", "sim", "--seed", "0", "-o", "pixel_size_um=0.325",
               "--region", "-150", "-150", "150", "150", "--model", "classical",
               "--max-cells", "1", "--z-range", "-1", "1", "--z-step", "0.5",
               "--no-autofocus", "--out", str(out)])
    assert rc == 0
    with open(out / "cells.csv", newline="") as fh:
        imaged = [r for r in csv.DictReader(fh) if r["status"] == "imaged"]
    assert imaged
    path = out / imaged[0]["file"]
    assert path.name.endswith(".ome.tif")  # so Fiji routes it to Bio-Formats
    pw, ph, unit = imagej_plain_calibration(path)
    assert unit == "µm" and pw == pytest.approx(0.325, rel=1e-6) == ph
    bf = bioformats_calibration(path)
    assert bf["X"] == (pytest.approx(0.325), "µm") and bf["Y"] == (pytest.approx(0.325), "µm")
    assert bf["Z"] == (pytest.approx(0.5), "µm")
