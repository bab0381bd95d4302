"""A second run never loses or mixes an earlier run's data, and a video path the writer
cannot take is refused before the run starts (exploratory testing: ``run --record DIR``
twice silently replaced the records, video and summary; ``--video x.gif`` ran without
a video and exited 0). Real CLI (``inscope.cli.main``) on the simulated microscope."""

from __future__ import annotations

import json

import pytest
from _support import one_error_line

from inscope.cli import main
from inscope.config import ConfigError, load_config

RUN = ["run", "--backend", "sim", "--model", "classical", "--no-zmq", "--no-window",
       "--no-progress", "--frames", "3"]
DEMO = ["demo", "--model", "classical", "--no-zmq", "--no-window", "--no-progress",
        "--frames", "3"]


def test_a_second_run_into_the_same_records_folder_is_refused(tmp_path, capsys):
    rec = tmp_path / "rec"
    assert main([*RUN, "--record", str(rec), "--record-frames"]) == 0
    before = {p.name: p.read_bytes() for p in rec.iterdir()}
    assert {"detections.jsonl", "frames.ome.tif", "provenance.json"} <= set(before)
    capsys.readouterr()
    # the other format too: it would leave two runs' records under one provenance.json
    for fmt in ("jsonl", "csv"):
        assert main([*RUN, "--record", str(rec), "--record-format", fmt]) == 2
        err, out = one_error_line(capsys)
        assert "--record" in err and str(rec) in err and "detections.jsonl" in err, err
        assert "new folder" in err and "frames" not in out, "refused before the run"
    assert {p.name: p.read_bytes() for p in rec.iterdir()} == before


@pytest.mark.parametrize("flag, name", [("--video", "overlay.mp4"),
                                        ("--summary", "summary.json")])
def test_an_existing_video_or_summary_is_not_replaced(tmp_path, capsys, flag, name):
    f = tmp_path / name
    f.write_bytes(b"an earlier run's")
    assert main([*RUN, flag, str(f)]) == 2
    err, out = one_error_line(capsys)
    assert flag in err and "already exists" in err and "new file name" in err, err
    assert "frames" not in out and f.read_bytes() == b"an earlier run's"


def test_the_demo_runs_twice_into_its_folder_but_never_over_a_real_run(tmp_path, capsys):
    out = tmp_path / "demo"
    for _ in range(2):  # `make demo` twice: the simulator makes the same outputs again
        assert main([*DEMO, "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["frames"] == 3
    capsys.readouterr()
    real = tmp_path / "live"
    real.mkdir()
    (real / "detections.jsonl").write_text("{}\n")
    (real / "provenance.json").write_text(json.dumps({"microscope": {"name": "mm"}}))
    assert main([*DEMO, "--out", str(real)]) == 2
    err, out_text = one_error_line(capsys)
    assert f"--out {real}" in err and "new folder" in err, err
    assert (real / "detections.jsonl").read_text() == "{}\n"
    assert not (real / "summary.json").exists()


@pytest.mark.parametrize("video", ["x.gif", "x.mkv"])
def test_an_unsupported_video_is_refused_before_the_run(tmp_path, capsys, video):
    assert main([*RUN, "--video", str(tmp_path / video)]) == 2
    err, out = one_error_line(capsys)
    assert "--video" in err and ".mp4 or .avi" in err and video in err, err
    assert "frames" not in out, "the run must not start"


def test_the_video_key_of_the_toml_gets_the_same_check(tmp_path, capsys):
    toml = tmp_path / "scope.toml"
    toml.write_text('[outputs]\nvideo = "runs/x.gif"\n')
    with pytest.raises(ConfigError, match=r"scope.toml: outputs.video .*x.gif' must end in "
                                          r".mp4 or .avi"):
        load_config(toml)
    toml.write_text('[outputs]\nvideo = "runs/x.AVI"\n')
    assert load_config(toml).outputs.video.endswith("x.AVI")
    # and a run from it names the file, not the command line
    toml.write_text('[outputs]\nvideo = "x.gif"\n')
    assert main(["run", "--config", str(toml), "--frames", "2", "--no-window",
                 "--no-zmq"]) == 2
    err, _ = one_error_line(capsys)
    assert "scope.toml: outputs.video" in err and "command line" not in err
