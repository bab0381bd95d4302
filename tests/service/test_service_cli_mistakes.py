"""Ordinary command-line mistakes (issue 10, item 6): one clear line, a non-zero exit
code, nothing overwritten, and the check happens before the run (not after it, losing
its summary). Real CLI (``inscope.cli.main``) on the simulated microscope."""

from __future__ import annotations

import json

import pytest
from _support import one_error_line

from inscope.cli import main

RUN = ["run", "--backend", "sim", "--model", "classical", "--no-zmq", "--no-window",
       "--no-progress", "--frames", "5"]


def test_demo_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main(["demo", "--out", str(f), "--no-window", "--frames", "5"]) == 2
    err, _ = one_error_line(capsys)
    assert "is a file" in err and f.read_text() == "keep me"


def test_record_into_a_file(tmp_path, capsys):
    f = tmp_path / "rec"
    f.write_text("keep me")
    assert main([*RUN, "--record", str(f)]) == 2
    err, _ = one_error_line(capsys)
    assert "--record" in err and "is a file" in err and f.read_text() == "keep me"
    assert err.startswith("error: command line: "), err  # where the value came from


def test_summary_into_a_folder_is_refused_before_the_run(tmp_path, capsys):
    assert main([*RUN, "--summary", str(tmp_path)]) == 2
    err, out = one_error_line(capsys)
    assert "--summary" in err and "is a folder" in err
    assert "frames" not in out, "the run must not start"


def test_video_under_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main([*RUN, "--video", str(f / "overlay.mp4")]) == 2
    err, _ = one_error_line(capsys)
    assert "is a file" in err


def test_config_is_a_folder(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path)]) == 2
    err, _ = one_error_line(capsys)
    assert "is a folder" in err


def test_config_not_utf8(tmp_path, capsys):
    p = tmp_path / "scope.toml"
    p.write_bytes(b'[detector]\nmodel = "caf\xe9"\n')
    assert main(["run", "--config", str(p)]) == 2
    err, _ = one_error_line(capsys)
    assert "UTF-8" in err


@pytest.mark.parametrize("cmd", ["run", "demo"])
def test_provider_cuda_without_cuda(tmp_path, capsys, cmd):
    from inscope.detector.onnx_detector import load_detector

    try:
        d = load_detector(None, provider="cuda")
    except RuntimeError:
        pass
    else:
        d.close()
        pytest.skip("CUDA works on this machine: nothing to refuse")
    capsys.readouterr()
    argv = ([*RUN[:3], "--no-zmq", "--no-window", "--no-progress", "--frames", "5"]
            if cmd == "run" else ["demo", "--out", str(tmp_path / "d"), "--no-window",
                                  "--no-progress", "--frames", "5"])
    assert main([*argv, "--provider", "cuda"]) == 1
    err, _ = one_error_line(capsys)
    assert "cuda" in err.lower() and "provider" in err.lower()


def test_demo_seconds_alone_sets_the_length(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--seconds", "0.5", "--no-window",
               "--no-progress", "--model", "classical", "--no-zmq"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    (header,) = [ln for ln in cap.out.splitlines() if ln.startswith("inscope demo:")]
    assert "0.5 s" in header and "frames" not in header, header
    s = json.loads((out / "summary.json").read_text())
    assert s["stop_reason"] == "seconds"


@pytest.mark.parametrize("argv,shown", [
    (["eval", "--data", "cells.npz"], "inscope eval"),  # eval takes its data as is
    (["run", "--frame", "5", "--nonsense"], "inscope run"),
    (["keys", "init", "k", "--bogus"], "inscope keys"),
])
def test_an_unknown_flag_is_shown_with_its_subcommands_usage(argv, shown, capsys):
    """argparse reports an unknown flag with the top-level usage (``inscope [-h]
    [--version] COMMAND ...``), which tells a user nothing about the flags the
    subcommand does take."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {shown} ")
    assert f"{shown}: error: unrecognized arguments: " in err
    assert "--nonsense" in err or "--data" in err or "--bogus" in err


def test_an_unknown_flag_before_any_subcommand_shows_the_top_usage(capsys):
    with pytest.raises(SystemExit):
        main(["--bogus"])
    assert capsys.readouterr().err.startswith("usage: inscope [-h]")
