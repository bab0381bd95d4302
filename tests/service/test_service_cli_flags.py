"""One meaning per flag: ``--mm-config`` is the Micro-Manager .cfg in every subcommand
(``--config`` stays the TOML in ``run``), one score-threshold name, hints that name only
flags the subcommand has, defaults shown in every ``--help``."""

from __future__ import annotations

import argparse

import pytest

from inscope.cli import build_parser, main
from inscope.commands import config_from_args


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


@pytest.mark.parametrize("cmd", ["stream", "scan", "calibrate", "calibrate-eyepiece"])
def test_mm_config_names_the_micromanager_file(cmd):
    extra = ["--region", "0", "0", "1", "1"] if cmd == "scan" else []
    args = build_parser().parse_args([cmd, "--mm-config", "my.cfg", *extra])
    assert args.config == "my.cfg"
    assert "--mm-config" in _options(_sub(cmd)) and "--mm-dir" in _options(_sub(cmd))


def test_run_mm_config_and_toml_config_are_different_flags(tmp_path):
    args = build_parser().parse_args(["run", "--backend", "headless", "--mm-config", "a.cfg",
                                      "--mm-dir", str(tmp_path), "--score-threshold", "0.4"])
    cfg = config_from_args(args)
    assert cfg.microscope.options == {"config": "a.cfg", "mm_dir": str(tmp_path)}
    assert cfg.detector.score_threshold == 0.4
    old = config_from_args(build_parser().parse_args(["run", "--score", "0.3"]))
    assert old.detector.score_threshold == 0.3


def test_missing_mm_config_hint_names_flags_that_run_has(tmp_path, capsys):
    import mm_test_adapters

    rc = main(["run", "--backend", "headless", "--mm-config", str(tmp_path / "nope.cfg"),
               "--mm-dir", str(mm_test_adapters.device_adapter_path()), "--frames", "1",
               "--no-zmq", "--no-window", "--model", "classical", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "nope.cfg" in err
    named = {w.strip(".,()") for w in err.split() if w.startswith("--")}
    assert named and named <= _options(_sub("run")), named


@pytest.mark.parametrize("cmd", ["run", "demo", "bench", "stream", "scan", "calibrate",
                                 "calibrate-eyepiece", "eval", "train"])
def test_help_shows_defaults(cmd):
    text = _sub(cmd).format_help()
    assert "(default" in text or "default:" in text
    if cmd == "stream":
        assert "(default: 4827)" in text
    if cmd == "scan":
        assert "--score-threshold" in text and "(default: 0.0)" in text
