"""Backend options as a user types them (``-o KEY=VALUE``) or writes them in a TOML
config: numbers, booleans and lists are read as such, but a file or folder keeps its
name even when it looks like a number or a date (acquisitions are often saved in
folders named ``2024-01-05`` or ``20240105``)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from _support.recordings import write_ndtiff

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.factory import PATH_OPTIONS, open_microscope, parse_options


def test_values_are_read_as_toml_but_file_names_and_dates_stay_as_written():
    opts = parse_options(["fov=256", "pixel_size_um=0.65", "realtime=false",
                          "tilt=[0.01, 0]", "noise=shot:100", "path=2024-01-05",
                          "labels=20240105", "mm_dir=1.5", "mm_config=2024",
                          "config=true", "note=2024-01-05", "at=12:30:00",
                          'path2="quoted name.tif"', " seed = 7 "])
    assert opts["fov"] == 256 and opts["pixel_size_um"] == 0.65
    assert opts["realtime"] is False and opts["tilt"] == [0.01, 0]
    assert opts["noise"] == "shot:100" and opts["seed"] == 7
    assert opts["path"] == "2024-01-05" and opts["labels"] == "20240105"
    assert opts["mm_dir"] == "1.5" and opts["mm_config"] == "2024" and opts["config"] == "true"
    assert opts["note"] == "2024-01-05" and opts["at"] == "12:30:00"  # no date objects
    assert opts["path2"] == "quoted name.tif"
    assert {"path", "labels", "mm_dir", "mm_config"} <= PATH_OPTIONS
    for bad in ("fov", "=3", "  =x"):
        with pytest.raises(MicroscopeUnavailable, match="must be KEY=VALUE"):
            parse_options([bad])
    assert parse_options(None) == {} and parse_options([]) == {}


def test_a_slide_in_a_folder_named_like_a_date_opens(tmp_path, monkeypatch):
    """From the command line (``-o path=2024-01-05``) and from a TOML config whose
    unquoted ``path = 2024-01-05`` TOML reads as a date: both name the folder."""
    rng = np.random.default_rng(0)
    stack = rng.integers(100, 1000, (1, 1, 48, 64)).astype(np.uint16)
    written = write_ndtiff(tmp_path / "w", stack)
    (dataset,) = [p for p in written.iterdir() if p.is_dir()]
    dataset.rename(tmp_path / "2024-01-05")
    monkeypatch.chdir(tmp_path)
    for opts in (parse_options(["path=2024-01-05", "fov=32", "realtime=false"]),
                 {"path": datetime.date(2024, 1, 5), "fov": 32, "realtime": False}):
        scope = open_microscope("slide", **opts)
        try:
            assert scope.snap().pixels.shape == (32, 32)
            assert scope.path.name == "2024-01-05"
        finally:
            scope.close()
    # a file named like a number: the slide says what it cannot read, not a TypeError
    (tmp_path / "20240105").write_bytes(b"not an image")
    with pytest.raises(MicroscopeUnavailable, match="'20240105': has an unknown type"):
        open_microscope("slide", path=20240105)
