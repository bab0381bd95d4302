"""TOML config files as users write them: a byte-order mark, relative paths, a wrong
type where a path or a soft limit goes - each read, or refused in one line naming the
file and the key.

Every case here once failed without naming its key (``could not convert string to
float: 'w'``, ``expected str, bytes or os.PathLike object, not list``), refused a file
Windows Notepad saved, opened files relative to wherever ``inscope run`` was started, or
blamed the command line for a path the TOML file set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inscope.cli import build_parser
from inscope.commands import config_from_args
from inscope.config import ConfigError, load_config


def _write(p: Path, text: str, bom: bool = False) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    return msg


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    p = _write(tmp_path / "bom.toml", "[run]\nframes = 3\n", bom=True)
    assert load_config(p).run.frames == 3


def test_a_soft_limit_that_is_not_low_high_names_its_key(tmp_path):
    msg = _error(_write(tmp_path / "s.toml", '[microscope.limits]\nx = "wide"\n'))
    assert "[microscope.limits] is wrong: x = 'wide'" in msg
    assert "[low, high]" in msg and "x = [-5000, 5000]" in msg
    msg = _error(_write(tmp_path / "t.toml", "[microscope.limits]\nz = [1, 2, 3]\n"))
    assert "z = [1, 2, 3]" in msg


@pytest.mark.parametrize("value", ['["cells.npz"]', "true", "{a = 1}"])
def test_a_path_option_that_is_not_text_names_its_key(tmp_path, value):
    p = _write(tmp_path / "p.toml",
               f'[microscope]\nbackend = "slide"\n[microscope.options]\npath = {value}\n')
    msg = _error(p)
    assert "key 'microscope.options.path'" in msg and "as a string" in msg


def test_relative_paths_are_relative_to_the_toml_files_folder(tmp_path):
    d = tmp_path / "configs"
    p = _write(d / "scope.toml", """
[microscope]
backend = "slide"
calibration = "cal.json"
[microscope.options]
path = "data/cells.npz"
labels = "data/labels.tif"
mm_dir = 2024-01-05
[detector]
model = "models/m.onnx"
[outputs]
video = "out/v.mp4"
snapshot_dir = "snaps"
[outputs.records]
dir = "rec"
[outputs.zmq]
curve_server_key = "keys/server.key_secret"
curve_allowed_clients = "keys/allowed"
[outputs.eyepiece]
calibration = "eye.json"
[run]
summary = "out/s.json"
""")
    cfg = load_config(p)
    m, o = cfg.microscope, cfg.outputs
    got = [m.calibration, m.options["path"], m.options["labels"], m.options["mm_dir"],
           cfg.detector.model, o.video, o.snapshot_dir, o.records.dir,
           o.zmq.curve_server_key, o.zmq.curve_allowed_clients, o.eyepiece.calibration,
           cfg.run.summary]
    want = ["cal.json", "data/cells.npz", "data/labels.tif", "2024-01-05", "models/m.onnx",
            "out/v.mp4", "snaps", "rec", "keys/server.key_secret", "keys/allowed",
            "eye.json", "out/s.json"]
    assert got == [str(d / w) for w in want]


def test_absolute_paths_models_by_name_and_defaults_are_kept(tmp_path):
    absolute = (tmp_path / "elsewhere" / "cells.npz").as_posix()
    p = _write(tmp_path / "c" / "a.toml",
               f'[microscope.options]\npath = "{absolute}"\n[detector]\nmodel = "classical"\n')
    cfg = load_config(p)
    assert cfg.microscope.options["path"] == absolute
    assert cfg.detector.model == "classical"
    assert cfg.outputs.snapshot_dir == "runs/snapshots"  # a default: not from the file
    p = _write(tmp_path / "c" / "t.toml", '[detector]\nmodel = "triton://host:8001/m"\n')
    assert load_config(p).detector.model == "triton://host:8001/m"


def test_a_bad_output_path_from_the_toml_names_the_toml_file(tmp_path):
    (tmp_path / "a_file").write_text("x")
    p = _write(tmp_path / "scope.toml", '[outputs]\nvideo = "a_file/v.mp4"\n')
    args = build_parser().parse_args(["run"])
    with pytest.raises(ConfigError) as e:
        config_from_args(args, load_config(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}: outputs.video (--video) = "), msg
    assert "command line" not in msg
    # the same mistake made with the flag is the command line's
    args = build_parser().parse_args(["run", "--video", str(tmp_path / "a_file" / "w.mp4")])
    with pytest.raises(ConfigError, match="^command line: outputs.video"):
        config_from_args(args, load_config(_write(tmp_path / "ok.toml", "[run]\n")))
    # and a flag that replaces the file's path is named as the flag
    args = build_parser().parse_args(["run", "--video", str(tmp_path / "a_file" / "w.mp4")])
    with pytest.raises(ConfigError, match="^command line: outputs.video"):
        config_from_args(args, load_config(p))
