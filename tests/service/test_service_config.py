"""Config files and flags: one tree, strict validation, errors that name file and key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inscope.commands import config_from_args
from inscope.config import Config, ConfigError, config_from_dict, load_config
from inscope.control.steering import SteerSettings


def _write(tmp_path, text: str):
    p = tmp_path / "scope.toml"
    p.write_text(text)
    return p


def test_full_config_loads(tmp_path):
    p = _write(tmp_path, """
[microscope]
backend = "headless"
dry_run = true
[microscope.options]
exposure_ms = 10
[microscope.limits]
x = [-100, 100]
y = [-100, 100]
z = [-10, 10]

[detector]
model = "classical"
score_threshold = 0.3
threads = 2
spinning = false

[control]
mode = "steer+focus"
target = 7
deadband_um = 2

[outputs]
video = "runs/x/overlay.avi"
window = false
[outputs.zmq]
pub_port = 6000
rep_port = 6001
[outputs.records]
dir = "runs/x"
format = "csv"
frames = true
[outputs.eyepiece]
enabled = true
display_size = [800, 600]

[run]
frames = 10
""")
    cfg = load_config(p)
    assert cfg.microscope.backend == "headless" and cfg.microscope.dry_run
    assert cfg.microscope.options == {"exposure_ms": 10}
    assert cfg.microscope.limits == {"x": [-100, 100], "y": [-100, 100], "z": [-10, 10]}
    assert cfg.detector.model == "classical" and cfg.detector.provider == "auto"
    assert cfg.detector.score_threshold == 0.3 and cfg.detector.threads == 2
    assert cfg.detector.spinning is False
    assert cfg.control.mode == "steer+focus" and cfg.control.target == 7
    # an integer in the file where a number is expected: the value, as a float
    assert cfg.control.deadband_um == 2.0 and type(cfg.control.deadband_um) is float
    # the steering defaults kept (the controller's own, as from Python)
    assert (cfg.control.gain, cfg.control.max_step_um) == (SteerSettings.gain,
                                                           SteerSettings.max_step_um)
    # (relative paths are relative to the TOML file's folder)
    assert cfg.outputs.video == str(tmp_path / "runs/x/overlay.avi")
    assert cfg.outputs.window is False
    assert (cfg.outputs.zmq.pub_port, cfg.outputs.zmq.rep_port) == (6000, 6001)
    assert cfg.outputs.zmq.bind == "127.0.0.1" and cfg.outputs.zmq.enabled is True
    assert (cfg.outputs.records.dir, cfg.outputs.records.format,
            cfg.outputs.records.frames) == (str(tmp_path / "runs/x"), "csv", True)
    assert cfg.outputs.eyepiece.enabled is True
    assert cfg.outputs.eyepiece.display_size == [800, 600]
    assert cfg.run.frames == 10 and cfg.run.seconds is None


@pytest.mark.parametrize("text, words", [
    ("[control]\nmdoe = 'steer'\n", ["scope.toml", "control.mdoe", "Did you mean 'mode'"]),
    ("[outputz]\nvideo = 'a.mp4'\n", ["scope.toml", "outputz", "Did you mean 'outputs'"]),
    ("[outputs.zmq]\npub_port = 'fast'\n", ["scope.toml", "outputs.zmq.pub_port",
                                           "integer"]),
    ("[run]\nframes = 2.5\n", ["run.frames", "integer"]),
    ("[detector]\nscore_threshold = 'high'\n", ["detector.score_threshold", "number"]),
    ("[control]\nmode = 'warp'\n", ["control.mode", "steer+focus"]),
    ("[microscope]\nbackend = 'magic'\n", ["microscope.backend", "headless"]),
    ("[detector]\nscore_threshold = 1.5\n", ["detector.score_threshold", "[0, 1]"]),
    ("[microscope.limits]\nx = [5, 1]\n", ["microscope.limits", "low < high"]),
    ("[outputs.records]\nformat = 'xml'\n", ["outputs.records.format", "jsonl"]),
    ("[detector]\nspinning = 'fast'\n", ["detector.spinning", "'fast'", "'off'", "'run'",
                                         "'on'"]),
    ("[detector]\nspinning = 1\n", ["detector.spinning", "true/false or string"]),
    ("[detector]\nmirror_views = 3\n", ["detector.mirror_views", "3", "1, 2, 4"]),
    ("[detector]\nmirror_views = 'two'\n", ["detector.mirror_views", "integer"]),
    ("[detector]\nenlarge_below_px = 1\n", ["detector.enlarge_below_px", "1"]),
    ("[detector]\nenlarge_below_px = 'big'\n", ["detector.enlarge_below_px", "'big'"]),
    ("[control\nmode = 1\n", ["not valid TOML"]),
])
def test_bad_config_names_file_and_key(tmp_path, text, words):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("value, mode", [("run", "run"), ("Run", "run"), ("off", "off"),
                                         ("on", "on")])
def test_spinning_modes_in_a_config_file(tmp_path, value, mode):
    from inscope.enums import Spinning

    cfg = load_config(_write(tmp_path, f"[detector]\nspinning = '{value}'\n"))
    assert cfg.detector.spinning is Spinning(mode)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.toml")


def test_flags_override_the_file(tmp_path):
    from inscope.cli import build_parser

    p = _write(tmp_path, "[control]\nmode = 'track'\n[outputs.zmq]\npub_port = 7000\n")
    args = build_parser().parse_args(
        ["run", "--config", str(p), "--mode", "steer", "--backend", "replay", "--file",
         "a.tif", "-o", "fps=0", "--no-zmq", "--frames", "5", "--target", "3"])
    cfg = config_from_args(args, load_config(p))
    assert cfg.control.mode == "steer" and cfg.control.target == 3
    assert cfg.microscope.backend == "replay"
    assert cfg.microscope.options == {"path": "a.tif", "fps": 0}
    assert cfg.outputs.zmq.enabled is False and cfg.outputs.zmq.pub_port == 7000
    assert cfg.run.frames == 5
    # unset flags keep defaults
    assert config_from_args(build_parser().parse_args(["run"])) == Config()


def test_cli_reports_bad_config_and_exits_2(tmp_path):
    p = _write(tmp_path, "[detector]\nmodle = 'x'\n")
    r = subprocess.run([sys.executable, "-m", "inscope", "run", "--config", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "detector.modle" in r.stderr and "Did you mean 'model'" in r.stderr


def test_same_ports_rejected():
    with pytest.raises(ConfigError, match="different ports"):
        config_from_dict({"outputs": {"zmq": {"pub_port": 5000, "rep_port": 5000}}})
