"""Every numeric setting is finite and in range (issue 10, item 5): values that used to
pass validation and then hang or spin get one line naming the key, the value and the
allowed range, from a TOML file and from the command line."""

from __future__ import annotations

import pytest

from inscope.cli import main
from inscope.config import ConfigError, load_config

CASES = [
    ("[outputs]\nvideo_fps = inf", "outputs.video_fps", "inf", "[0.1, 240]"),
    ("[outputs]\nvideo_fps = 0.0", "outputs.video_fps", "0.0", "[0.1, 240]"),
    ("[microscope.limits]\nmax_rate_hz = 1e-6", "max_rate_hz", "1e-06", "[1, 1e+06]"),
    ("[control]\nsettle_s = inf", "control.settle_s", "inf", "[0, 60]"),
    ("[control]\ndeadband_um = nan", "control.deadband_um", "nan", "[0, 1000]"),
    ("[control]\ngain = nan", "control.gain", "nan", "(0, 1.5]"),
    ("[control]\nmax_step_um = inf", "control.max_step_um", "inf", "(0, 10000]"),
    ("[control]\nfocus_step_um = -1.0", "control.focus_step_um", "-1.0", "(0, 100]"),
    ("[detector]\nscore_threshold = nan", "detector.score_threshold", "nan", "[0, 1]"),
    ("[detector]\nthreads = 100000", "detector.threads", "100000", "[1, 256]"),
    ("[outputs.zmq]\nsndhwm = 0", "outputs.zmq.sndhwm", "0", "[1, 1e+06]"),
    ("[outputs]\nsnapshot_max_per_s = 0.0", "outputs.snapshot_max_per_s", "0.0", "(0, 100]"),
    ("[run]\nseconds = inf", "run.seconds", "inf", "(0, 1e+07]"),
    ("[run]\nframes = 0", "run.frames", "0", "[1, 1e+12]"),
    ("[microscope.options]\nexposure_ms = inf", "microscope.options.exposure_ms", "inf",
     "finite"),
    ("[outputs.eyepiece]\ndisplay_size = [100000, 10]", "outputs.eyepiece.display_size",
     "100000", "[16, 16384]"),
]


@pytest.mark.parametrize("text, key, value, allowed", CASES)
def test_bad_number_gets_one_line_with_key_value_and_range(tmp_path, text, key, value,
                                                           allowed):
    p = tmp_path / "scope.toml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg
    for word in (str(p), key, value, allowed):
        assert word in msg, (word, msg)


@pytest.mark.parametrize("argv, key", [
    (["--seconds", "inf"], "run.seconds"),
    (["--seconds", "nan"], "run.seconds"),
    (["--score-threshold", "nan"], "detector.score_threshold"),
    (["--threads", "0"], "detector.threads"),
])
def test_bad_number_on_the_command_line(tmp_path, capsys, argv, key):
    rc = main(["run", "--no-progress", "--no-zmq", "--summary", str(tmp_path / "s.json"),
               *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and key in err, err
    assert not (tmp_path / "s.json").exists()
