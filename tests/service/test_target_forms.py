"""Every documented target form means the same from the CLI, the TOML config and ZMQ.

One parser (:func:`inscope.enums.parse_target`) reads ``--target``, ``[control] target``
and ``set_target``; these tests drive each path end to end (argparse, a TOML file, a real
REQ/REP round trip on 127.0.0.1) and check the policy the steerer ends up with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import sim_scope

from inscope.cli import build_parser, main
from inscope.commands import config_from_args
from inscope.config import ConfigError, ControlConfig, load_config
from inscope.control.targets import ClassName, HighestScore, Largest, NearestToCenter, TrackId
from inscope.control_stage import ControlStage
from inscope.enums import TargetKind, parse_target
from inscope.pipeline import Pipeline
from inscope.zmq_api import CommandServer, request

#: (spec as typed, its canonical form, the policy it selects): every form the docs give
#: (docs/service.md, docs/zmq.md, ``--help``) and the aliases the parser reads.
FORMS = [
    ("nearest", "nearest", NearestToCenter()),
    ("largest", "largest", Largest()),
    ("score", "score", HighestScore()),
    ("class:mitotic", "class:mitotic", ClassName("mitotic")),
    ("7", 7, TrackId(7)),
    ("id:7", 7, TrackId(7)),
    (" Largest ", "largest", Largest()),
    ("center", "nearest", NearestToCenter()),
    ("centre", "nearest", NearestToCenter()),
    ("area", "largest", Largest()),
    ("confidence", "score", HighestScore()),
]
BAD = ["biggest", "class", "class:", "id:x", "track", ""]


def _policy(control: ControlConfig):
    stage = ControlStage(sim_scope(seed=1, shape=(64, 64)), control)
    try:
        return stage.steerer.policy
    finally:
        stage.close()


@pytest.mark.parametrize("spec,canonical,policy", FORMS)
def test_parser(spec, canonical, policy):
    assert parse_target(spec) == canonical
    assert type(parse_target(spec)) is type(canonical)  # plain str / int on the wire


def test_parser_class_with_its_name_beside_it_and_bad_specs():
    assert parse_target("class", "mitotic") == "class:mitotic"
    assert parse_target(7) == 7
    for bad in BAD:
        with pytest.raises(ValueError, match="target"):
            parse_target(bad)
    for bad in (True, 2.5, None, [7], -1):
        with pytest.raises(ValueError):
            parse_target(bad)


@pytest.mark.parametrize("spec,canonical,policy", FORMS)
def test_cli(spec, canonical, policy):
    args = build_parser().parse_args(["run", "--target", spec])
    cfg = config_from_args(args)
    assert _policy(cfg.control) == policy


@pytest.mark.parametrize("spec,canonical,policy", FORMS)
def test_toml(spec, canonical, policy, tmp_path):
    f = tmp_path / "scope.toml"
    f.write_text(f"[control]\nmode = \"track\"\ntarget = {json.dumps(spec)}\n")
    assert _policy(load_config(f).control) == policy


def test_toml_class_with_target_class_and_a_bare_integer(tmp_path):
    f = tmp_path / "scope.toml"
    f.write_text('[control]\ntarget = "class"\ntarget_class = "mitotic"\n')
    assert _policy(load_config(f).control) == ClassName("mitotic")
    f.write_text("[control]\ntarget = 7\n")
    assert _policy(load_config(f).control) == TrackId(7)


@pytest.mark.parametrize("bad", BAD)
def test_bad_specs_are_refused_alike_by_cli_and_toml(bad, tmp_path):
    with pytest.raises(ConfigError, match="control.target"):
        config_from_args(build_parser().parse_args(["run", "--target", bad]))
    f = tmp_path / "scope.toml"
    f.write_text(f"[control]\ntarget = {json.dumps(bad)}\n")
    with pytest.raises(ConfigError, match="control.target"):
        load_config(f)


def test_inscope_run_target_class(tmp_path, capsys, caplog):
    """The issue's failing command: ``inscope run --target class:mitotic``. It runs (a
    class policy is a target like any); with a detector that has no such class (the
    classical baseline's one class is ``cell``) it says so once, at the start."""
    summary = tmp_path / "summary.json"
    with caplog.at_level("WARNING"):
        rc = main(["run", "--backend", "sim", "-o", "realtime=false", "--model",
                   "classical", "--mode", "steer", "--target", "class:mitotic", "--frames",
                   "3", "--no-zmq", "--no-window", "--no-progress", "--summary",
                   str(summary)])
    assert rc == 0, capsys.readouterr().err
    assert json.loads(summary.read_text())["control"]["target_policy"] == TargetKind.CLASS
    said = [r.getMessage() for r in caplog.records if "no class" in r.getMessage()]
    assert said == ["the detector has no class 'mitotic'; its classes: cell. The target "
                    "steers to nothing until a set_target."], said


def test_zmq_set_target(detector):
    p = Pipeline(sim_scope(seed=1), detector, control=ControlConfig(mode="track")).start()
    srv = CommandServer(p.command, port=0).start()
    try:
        # (a class the detector has: another one is refused, test_pipeline_summary_truth)
        name = detector.class_names[0]
        forms: list = [(s.replace("mitotic", name), c.replace("mitotic", name),
                        ClassName(name) if isinstance(pol, ClassName) else pol)
                       if isinstance(s, str) and "mitotic" in s else (s, c, pol)
                       for s, c, pol in FORMS]
        forms += [(7, 7, TrackId(7)), ({"target": "class", "class": name},
                                       f"class:{name}", ClassName(name))]
        for spec, canonical, policy in forms:
            req = {"cmd": "set_target", **(spec if isinstance(spec, dict) else
                                           {"target": spec})}
            rep = request(srv.address, req)
            assert rep == {"ok": True, "target": canonical}, (spec, rep)
            assert p.control.steerer.policy == policy, spec
        for bad in BAD:
            rep = request(srv.address, {"cmd": "set_target", "target": bad})
            assert rep["ok"] is False and "target" in rep["error"], (bad, rep)
            assert p.control.steerer.policy == ClassName(name), "a bad spec changes nothing"
    finally:
        srv.stop()
        p.stop()


def test_docs_list_the_same_forms():
    """The forms tested above are the ones the docs and ``--help`` give."""
    root = Path(__file__).parents[2]
    zmq_doc = (root / "docs" / "zmq.md").read_text()
    service_doc = (root / "docs" / "service.md").read_text()
    help_text = next(a.help for a in build_parser()._subparsers._group_actions[0]
                     .choices["run"]._actions if "--target" in a.option_strings)
    for kind in TargetKind:
        assert f'"{kind}' in zmq_doc, kind
        assert kind in service_doc, kind
        assert kind in help_text, kind
    typed = {s for s, _, _ in FORMS}
    assert {"nearest", "largest", "score", "class:mitotic", "7"} <= typed
