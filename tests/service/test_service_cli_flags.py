"""One meaning per flag, across every subcommand and the TOML.

* ``--mm-config`` is the Micro-Manager .cfg wherever a microscope is opened (``--config``
  stays the TOML in ``run``); ``--score-threshold`` / ``score_threshold`` the score
  threshold; ``--exposure-ms`` / ``exposure_ms`` the camera exposure. The old spellings
  still parse, as hidden aliases that log a deprecation line.
* No flag name carries two meanings (same name: same dest, type and arity everywhere).
* Every ``--flag`` an error message or hint names exists in the subcommands that message
  can reach: collected from the source, checked against the real parsers.
* Every option with a default shows it in ``--help``.
* ``run``'s flags and the TOML keys are one table (:data:`FLAG_TO_TOML`): each flag and its
  key set the same value, so they cannot drift.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import tomllib
from pathlib import Path

import pytest

from inscope.cli import DeprecatedAlias, build_parser, main
from inscope.commands import config_from_args
from inscope.config import Config, config_from_dict

ROOT = Path(__file__).resolve().parents[2]


# -- the parsers ---------------------------------------------------------------------
def _walk(p: argparse.ArgumentParser, name: str = ""):
    yield name, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for n, sp in a.choices.items():
                yield from _walk(sp, f"{name} {n}".strip())


PARSERS = dict(_walk(build_parser()))


def _visible(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS]


def _options(cmd: str) -> set[str]:
    return {s for a in _visible(PARSERS[cmd]) for s in a.option_strings}


def _backends(cmd: str) -> set[str]:
    a = next((a for a in PARSERS[cmd]._actions if a.dest == "backend"), None)
    return set(a.choices or ()) if a is not None else set()


def _with_backend(*names: str) -> tuple[str, ...]:
    """The subcommands whose --backend can open any of *names*."""
    return tuple(c for c in PARSERS if c and _backends(c) & set(names))


# -- one name per meaning ------------------------------------------------------------
#: old spelling -> (new spelling, subcommands where the old one still parses, a value)
DEPRECATED = {
    "--score": ("--score-threshold", ("run", "demo"), "0.3"),
    "--min-score": ("--score-threshold", ("scan",), "0.3"),
    "--config": ("--mm-config", ("stream", "calibrate", "scan", "calibrate-eyepiece"),
                 "my.cfg"),
    "--exposure": ("--exposure-ms", ("stream", "calibrate", "scan", "calibrate-eyepiece",
                                     "bench"), "7"),
    "--steps": ("--steps-um", ("calibrate",), "5"),
    "--display": ("--display-size", ("calibrate-eyepiece",), "1024x768"),
    "--pixel-size": ("--pixel-size-um", ("calibrate-eyepiece",), "0.5"),
}
#: eval's AP floor was also spelled --min-score: a different meaning, a different name now
EVAL_FLOOR = ("--min-score", "--ap-score-floor")

_REQUIRED = {"scan": ["--region", "0", "0", "1", "1"]}


def _cases():
    for old, (new, cmds, value) in DEPRECATED.items():
        for cmd in cmds:
            yield cmd, old, new, value
    yield "eval", *EVAL_FLOOR, "0.1"


@pytest.mark.parametrize(("cmd", "old", "new", "value"), list(_cases()))
def test_old_spelling_parses_logs_a_line_and_is_hidden(cmd, old, new, value, caplog):
    extra = _REQUIRED.get(cmd, [])
    with caplog.at_level(logging.WARNING, logger="inscope"):
        got = build_parser().parse_args([cmd, *extra, old, value])
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert lines == [f"{old} is deprecated; use {new} (same meaning). The old spelling "
                     "will be removed in a later release."]
    want = build_parser().parse_args([cmd, *extra, new, value])
    assert vars(got) == vars(want)
    help_text = PARSERS[cmd].format_help()
    assert re.search(rf"(?<![\w-]){re.escape(new)}(?![\w-])", help_text)
    assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", help_text), \
        f"{old} shows in `inscope {cmd} --help`"


def test_new_spellings_log_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="inscope"):
        build_parser().parse_args(["stream", "--mm-config", "a.cfg", "--exposure-ms", "3"])
        build_parser().parse_args(["run", "--score-threshold", "0.3"])
    assert not caplog.records


def test_old_spellings_are_only_hidden_aliases():
    """No visible option uses a retired spelling (``--config`` stays run's TOML file;
    ``--steps`` stays train's optimiser steps), and every alias is hidden."""
    kept = {"run": {"--config"}, "train": {"--steps"}}
    for cmd, p in PARSERS.items():
        shown = _options(cmd) if cmd else set()
        retired = set(DEPRECATED) - kept.get(cmd, set())
        assert not shown & retired, (cmd, shown & retired)
        for a in p._actions:
            if isinstance(a, DeprecatedAlias):
                assert a.help == argparse.SUPPRESS and a.default == argparse.SUPPRESS


def test_one_meaning_per_flag_name():
    """A flag spelled the same in two subcommands stores the same thing: same dest,
    type and arity (str and Path count as one type: both are a path)."""
    seen: dict[str, tuple] = {}
    for cmd in PARSERS:
        for a in _visible(PARSERS[cmd]) if cmd else []:
            t = {None: "str", str: "str", Path: "str"}.get(a.type, a.type)
            arity = a.nargs if not isinstance(a, argparse._AppendAction) else "append"
            sig = (a.dest, t, arity if arity != "append" else None)
            for s in a.option_strings:
                if s in ("-h", "--help"):
                    continue
                first = seen.setdefault(s, (cmd, sig))
                assert first[1] == sig, f"{s}: {first[0]} {first[1]} vs {cmd} {sig}"


@pytest.mark.parametrize("cmd", _with_backend("headless"))
def test_every_command_that_opens_micromanager_has_mm_config_and_mm_dir(cmd):
    assert {"--mm-config", "--mm-dir"} <= _options(cmd)


def test_run_mm_config_and_toml_config_are_different_flags(tmp_path):
    args = build_parser().parse_args(["run", "--backend", "headless", "--mm-config", "a.cfg",
                                      "--mm-dir", str(tmp_path), "--score-threshold", "0.4"])
    cfg = config_from_args(args)
    assert cfg.microscope.options == {"mm_config": "a.cfg", "mm_dir": str(tmp_path)}
    assert cfg.detector.score_threshold == 0.4


# -- hints name only flags that exist ------------------------------------------------
#: where a module's messages are read: each flag one names must exist in ALL of these
#: subcommands (shared library code: the user may have come from any of them) ...
HINTS_ALL: dict[str, tuple[str, ...]] = {
    "acquisition/cli.py": ("stream",),
    "acquisition/micromanager.py": _with_backend("headless", "mm"),
    "acquisition/replay.py": _with_backend("replay"),
    "acquisition/factory.py:--file": _with_backend("replay"),
    "acquisition/factory.py:--mm-config": _with_backend("headless"),
    "acquisition/safety.py": ("run", "demo", "calibrate", "scan"),
    "control/calibration.py": ("calibrate",),
    "inscope/config.py": ("run",),
    "inscope/curve.py": ("run", "demo"),
    "inscope/overlay.py": ("run",),
    "inscope/service.py": ("run", "demo"),
    "inscope/bench.py": ("bench",),
    "inscope/eyepiece.py": ("calibrate-eyepiece",),
    "inscope/eyepiece_fit.py": ("calibrate-eyepiece",),
    "inscope/eyepiece_cli.py": ("calibrate-eyepiece",),
    # (load_detector_or_classical's note: the service's and scan's default detector)
    "detector/onnx_detector.py:--model": ("run", "demo", "bench", "scan"),
    "detector/eval_cli.py": ("eval",),
    "detector/train/cli.py": ("train",),
    "detector/train/export.py": ("train",),
    "detector/triton_cli.py": ("export-triton",),
    "detector/triton_export.py": ("export-triton",),
}
#: ... or in ANY of these (a command module whose messages each belong to one of them)
HINTS_ANY: dict[str, tuple[str, ...]] = {
    "inscope/commands.py": ("run", "demo", "bench"),
    "control/cli.py": ("calibrate", "scan", "calibrate-eyepiece"),
}
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
_NAMED_CMD = re.compile(r"inscope ([a-z][a-z-]+)")


def _message_strings(tree: ast.Module):
    """String constants that can reach a user as a message: not help/description texts,
    not docstrings, not option names being defined."""
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            for kw in n.keywords:
                if kw.arg in ("help", "description", "metavar"):
                    skip.update(id(m) for m in ast.walk(kw.value))
            if name in ("add_argument", "add_parser", "deprecated_alias"):
                for a in n.args:
                    skip.update(id(m) for m in ast.walk(a))
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "help"
                                             for t in n.targets):
            skip.update(id(m) for m in ast.walk(n.value))
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values)
            if not any(id(v) in skip for v in n.values):
                yield n.lineno, text
            skip.update(id(v) for v in n.values)
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip:
            yield n.lineno, n.value


def _hints():
    for pkg in ("acquisition", "control", "detector", "inscope"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
                if "tritonserver" in text:  # Triton's own flags, not inscope's
                    continue
                for flag in _FLAG.findall(text):
                    yield rel, line, flag, text


def test_hints_are_collected():
    found = {(rel, flag) for rel, _, flag, _ in _hints()}
    # the hints of the original report are among them: the collector sees messages
    assert ("acquisition/micromanager.py", "--mm-dir") in found
    assert ("acquisition/micromanager.py", "--mm-config") in found
    assert ("control/cli.py", "--score-threshold") in found
    assert len(found) > 30


def test_every_flag_a_message_names_exists_where_the_message_is_read():
    wrong = []
    for rel, line, flag, text in _hints():
        named = [c for c in _NAMED_CMD.findall(text) if c in PARSERS]
        if any(flag in _options(c) for c in named):
            continue  # "... with `inscope calibrate --out FILE`": that command's flag
        cmds = HINTS_ALL.get(f"{rel}:{flag}", HINTS_ALL.get(rel))
        if cmds is not None:
            missing = [c for c in cmds if flag not in _options(c)]
            if missing:
                wrong.append(f"{rel}:{line} names {flag}, which {missing} lack(s)")
        elif rel in HINTS_ANY:
            if not any(flag in _options(c) for c in HINTS_ANY[rel]):
                wrong.append(f"{rel}:{line} names {flag}, which none of "
                             f"{HINTS_ANY[rel]} has")
        else:
            wrong.append(f"{rel}:{line} names {flag}: add {rel} to HINTS_ALL/HINTS_ANY "
                         "with the subcommands its messages reach")
    assert not wrong, "\n".join(wrong)


def _flags_in(err: str) -> set[str]:
    return set(_FLAG.findall(err))


@pytest.mark.parametrize(("argv", "rc"), [
    (["run", "--backend", "headless", "--mm-config", "{tmp}/nope.cfg", "--frames", "1",
      "--no-zmq", "--no-window", "--model", "classical", "--no-progress"], 1),
    (["stream", "--backend", "headless", "--mm-config", "{tmp}/nope.cfg", "--frames", "1"], 1),
    (["calibrate", "--backend", "headless", "--mm-config", "{tmp}/nope.cfg"], 1),
    (["scan", "--backend", "headless", "--mm-config", "{tmp}/nope.cfg", "--region", "0", "0",
      "10", "10", "--model", "classical", "--out", "{tmp}/scan"], 1),
    (["bench", "--backend", "headless", "--mm-config", "{tmp}/nope.cfg", "--frames", "2",
      "--model", "classical", "--no-plots", "--out", "{tmp}/b.json"], 1),
    (["run", "--backend", "replay", "--file", "{tmp}/nope.tif", "--frames", "1", "--no-zmq",
      "--no-window", "--model", "classical", "--no-progress"], 1),
    (["stream", "--backend", "replay", "--file", "{tmp}/nope.tif"], 1),
    (["scan", "--region", "0", "0", "10", "10", "--score-threshold", "2"], 2),
])
def test_real_error_hints_name_flags_of_that_command(argv, rc, tmp_path, capsys):
    import mm_test_adapters  # noqa: F401  (a test dependency: never a skip)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == rc
    err = capsys.readouterr().err
    named = _flags_in(err)
    assert named, err  # every one of these errors says what to pass
    assert named <= _options(argv[0]), (argv[0], named - _options(argv[0]), err)


# -- defaults in every --help --------------------------------------------------------
def _shows_default(a: argparse.Action, text: str) -> bool:
    d = a.default
    forms = {str(d)}
    if isinstance(d, float):
        forms |= {f"{d:g}"}
    if isinstance(d, tuple) and all(isinstance(v, int) for v in d) and len(d) == 2:
        forms |= {f"{d[0]}x{d[1]}", f"{d[0]},{d[1]}"}
    return "default" in text and any(f in text for f in forms)


def _defaulted():
    for cmd, p in PARSERS.items():
        for a in _visible(p):
            d = a.default
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if d is None or d is False or d == [] or d is argparse.SUPPRESS:
                continue
            yield cmd or "inscope", p, a


@pytest.mark.parametrize(("cmd", "p", "a"), list(_defaulted()),
                         ids=lambda v: v if isinstance(v, str) else v.option_strings[0]
                         if isinstance(v, argparse.Action) else "")
def test_every_option_with_a_default_shows_it_in_help(cmd, p, a):
    # the option's entry exactly as `--help` renders it (the parser's own formatter)
    entry = " ".join(p.formatter_class(prog=p.prog)._format_action(a).split())
    assert _shows_default(a, entry), (cmd, entry)


def test_defaults_are_listed_at_all():
    assert len(list(_defaulted())) > 30


# -- run's flags and the TOML: one table ---------------------------------------------
#: run flag -> (TOML key, a CLI value, the value it sets). A flag without a TOML key is in
#: CLI_ONLY; a TOML-only key is fine (not everything deserves a flag).
FLAG_TO_TOML: dict[str, tuple[str, list[str], object]] = {
    "--backend": ("microscope.backend", ["slide"], "slide"),
    "--file": ("microscope.options.path", ["f.tif"], "f.tif"),
    "--mm-config": ("microscope.options.mm_config", ["a.cfg"], "a.cfg"),
    "--mm-dir": ("microscope.options.mm_dir", ["mmdir"], "mmdir"),
    "--exposure-ms": ("microscope.options.exposure_ms", ["7.5"], 7.5),
    "--dry-run": ("microscope.dry_run", [], True),
    "--calibration": ("microscope.calibration", ["cal.json"], "cal.json"),
    "--model": ("detector.model", ["classical"], "classical"),
    "--provider": ("detector.provider", ["cpu"], "cpu"),
    "--threads": ("detector.threads", ["3"], 3),
    "--score-threshold": ("detector.score_threshold", ["0.45"], 0.45),
    "--mirror-views": ("detector.mirror_views", ["2"], 2),
    "--enlarge-below-px": ("detector.enlarge_below_px", ["36"], 36.0),
    "--mode": ("control.mode", ["track"], "track"),
    "--target": ("control.target", ["largest"], "largest"),
    "--video": ("outputs.video", ["{tmp}/o.mp4"], "{tmp}/o.mp4"),
    "--window": ("outputs.window", [], True),
    "--no-window": ("outputs.window", [], False),
    "--zmq": ("outputs.zmq.enabled", [], True),
    "--no-zmq": ("outputs.zmq.enabled", [], False),
    "--bind": ("outputs.zmq.bind", ["0.0.0.0"], "0.0.0.0"),
    "--pub-port": ("outputs.zmq.pub_port", ["6001"], 6001),
    "--rep-port": ("outputs.zmq.rep_port", ["6002"], 6002),
    "--zmq-overlay": ("outputs.zmq.overlay", [], True),
    "--curve-keys": ("outputs.zmq.curve_server_key", ["keys"], "keys/server.key_secret"),
    "--record": ("outputs.records.dir", ["{tmp}/rec"], "{tmp}/rec"),
    "--record-format": ("outputs.records.format", ["csv"], "csv"),
    "--record-frames": ("outputs.records.frames", [], True),
    "--eyepiece": ("outputs.eyepiece.enabled", [], True),
    "--eyepiece-calibration": ("outputs.eyepiece.calibration", ["e.json"], "e.json"),
    "--eyepiece-predict": ("outputs.eyepiece.predict", [], True),
    "--no-eyepiece-predict": ("outputs.eyepiece.predict", [], False),
    "--display-lag-ms": ("outputs.eyepiece.display_lag_ms", ["12.5"], 12.5),
    "--frames": ("run.frames", ["9"], 9),
    "--seconds": ("run.seconds", ["2.5"], 2.5),
    "--summary": ("run.summary", ["{tmp}/s.json"], "{tmp}/s.json"),
    "--no-progress": ("run.progress", [], False),
}
#: run flags with no TOML key: the file itself, logging, and -o (every microscope.options key)
CLI_ONLY = {"--config", "-v", "--verbose", "-o", "--option", "-h", "--help"}


def test_every_run_flag_is_in_the_table():
    flags = _options("run")
    assert flags - CLI_ONLY == set(FLAG_TO_TOML), (
        "run flags missing from FLAG_TO_TOML: "
        f"{sorted(flags - CLI_ONLY - set(FLAG_TO_TOML))}; table entries run lacks: "
        f"{sorted(set(FLAG_TO_TOML) - flags)}")


def test_demo_flags_mean_what_run_flags_mean():
    """demo takes a subset of run's flags (plus its --out and --seed), same dests."""
    run = {s: a.dest for a in _visible(PARSERS["run"]) for s in a.option_strings}
    for a in _visible(PARSERS["demo"]):
        for s in a.option_strings:
            if s not in ("--out", "--seed"):
                assert run.get(s) == a.dest, s


def _get(cfg: Config, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _nested(dotted: str, value) -> dict:
    d: dict = {}
    cur = d
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


@pytest.mark.parametrize("flag", sorted(FLAG_TO_TOML))
def test_flag_and_toml_key_set_the_same_value(flag, tmp_path):
    key, cli, want = FLAG_TO_TOML[flag]
    cli = [v.replace("{tmp}", str(tmp_path)) for v in cli]
    if isinstance(want, str):
        want = want.replace("{tmp}", str(tmp_path))
    default = _get(Config(), key) if not key.startswith("microscope.options.") else None
    if flag not in ("--zmq", "--eyepiece-predict"):  # their --no- twins bite for them
        assert default != want, f"{flag}: pick a value other than the default for the test"
    extra = ["--curve-keys", "keys"] if flag == "--bind" else []
    from_flag = config_from_args(build_parser().parse_args(["run", flag, *cli, *extra]))
    assert _get(from_flag, key) == want
    if flag == "--curve-keys":  # one flag, two keys: the folder's two files
        assert from_flag.outputs.zmq.curve_allowed_clients == "keys/allowed_clients"
        return
    toml = _nested(key, want)
    if flag == "--bind":
        toml["outputs"]["zmq"].update(curve_server_key="k", curve_allowed_clients="c")
    assert _get(config_from_dict(toml, "test"), key) == want


def test_docs_toml_example_is_a_valid_config():
    """docs/service.md's full TOML example uses only keys that exist."""
    text = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        d = tomllib.loads(block)
        cfg = config_from_dict(d, "docs/service.md")
        opts = d.get("microscope", {}).get("options", {})
        assert "config" not in opts, "the Micro-Manager .cfg is [microscope.options] mm_config"
        assert cfg is not None
