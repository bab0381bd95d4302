"""One definition per vocabulary: the docs' lists, the CLI's choices, the config's checks
and the code all come from :mod:`inscope.enums`.

Three checks: every value the docs list is a member (and is accepted where it is set:
CLI, TOML, ZMQ); every CLI ``choices`` list is built from the enum members (no second,
hand-typed list); and no module spells two or more values of one enum in a literal list
of strings (the sign of a copy that can drift).
"""

from __future__ import annotations

import argparse
import ast
import re
from enum import StrEnum
from pathlib import Path

import pytest

from inscope import enums
from inscope.cli import build_parser
from inscope.config import ConfigError, config_from_dict
from inscope.enums import Backend, FocusStatus, Mode, RecordFormat, Stamp, SteerStatus

ROOT = Path(__file__).parents[1]
ENUMS = [v for v in vars(enums).values()
         if isinstance(v, type) and issubclass(v, StrEnum) and v not in (StrEnum, enums.Name)]


def _doc(name: str) -> str:
    """A file of docs/, read when a test needs it (not at import: the mutation runs
    collect these tests in a folder without docs/)."""
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def _toml_comment_list(key: str) -> set[str]:
    """``key = "..."   # a | b (note) | c`` in docs/service.md -> {"a", "b", "c"}."""
    m = re.search(rf"^{key} = .*?#(.*)$", _doc("service.md"), re.M)
    assert m, f"docs/service.md lists no values for {key}"
    return {re.sub(r"\(.*?\)", "", v).strip() for v in m.group(1).split("|")}


def _row(first_cell: str) -> str:
    """The docs/zmq.md table row whose first cell starts with *first_cell*."""
    for line in _doc("zmq.md").splitlines():
        if line.startswith(f"| {first_cell}"):
            return line
    raise AssertionError(f"docs/zmq.md has no row {first_cell!r}")


def _ticked(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_+-]+)`", text))


def test_documented_modes_and_backends_are_exactly_the_enums():
    assert _toml_comment_list("mode") == set(Mode)
    assert _toml_comment_list("backend") == set(Backend)
    set_mode = _row('`{"cmd": "set_mode"')
    assert set(re.findall(r'"([a-z+]+)"', set_mode.split('"mode":')[1])) == set(Mode)
    service_md = _doc("service.md")
    assert 'format = "csv"' in service_md and "detections.jsonl" in service_md
    assert {"csv", "jsonl"} == set(RecordFormat)


def test_documented_statuses_and_stamps_are_members():
    control = _row("`control`").split("`status`:")[1].split(")")[0]
    assert _ticked(control) <= set(SteerStatus) and len(_ticked(control)) >= 10
    focus = _row("`focus`").split("`state`:")[1].split(";")[0]
    assert _ticked(focus) <= set(FocusStatus) and len(_ticked(focus)) >= 8
    stamps = _ticked(_row("`stamps_ns`").split("|")[2])
    assert stamps <= set(Stamp) and len(stamps) >= 8


@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_is_accepted_by_cli_and_toml(mode):
    assert build_parser().parse_args(["run", "--mode", mode]).mode == mode
    assert config_from_dict({"control": {"mode": str(mode)}}).control.mode == mode


@pytest.mark.parametrize("backend", list(Backend))
def test_every_backend_is_accepted_by_cli_and_toml(backend):
    assert build_parser().parse_args(["run", "--backend", backend]).backend == backend
    assert build_parser().parse_args(["stream", "--backend", backend]).backend == backend
    cfg = config_from_dict({"microscope": {"backend": str(backend)}})
    assert cfg.microscope.backend == backend


def test_every_record_format_is_accepted_and_others_refused():
    for f in RecordFormat:
        assert config_from_dict({"outputs": {"records": {"format": str(f)}}})
        assert build_parser().parse_args(["run", "--record-format", f]).record_format == f
    with pytest.raises(ConfigError, match="use one of jsonl, csv"):
        config_from_dict({"outputs": {"records": {"format": "xml"}}})


def _actions(parser: argparse.ArgumentParser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                for inner_name, act in _actions(sub):
                    yield f"{name} {inner_name}", act
        else:
            yield "/".join(a.option_strings) or a.dest, a


def test_cli_choices_come_from_the_enums():
    seen = set()
    for where, act in _actions(build_parser()):
        if not act.choices:
            continue
        for enum in ENUMS:
            values = {m.value for m in enum}
            mine = [c for c in act.choices if c in values]
            if len(mine) < 2:  # e.g. --spinning on/off: another vocabulary
                continue
            # a member, not a string typed again: the list was built from the enum
            assert all(isinstance(c, enum) for c in mine), (where, enum.__name__, mine)
            seen.add((where, enum.__name__))
    assert {("run --mode", "Mode"), ("run --backend", "Backend"),
            ("run --record-format", "RecordFormat"), ("demo --mode", "Mode"),
            ("stream --backend", "Backend"), ("bench --mode", "Mode")} <= seen


def test_no_module_spells_an_enum_again():
    """A literal tuple/list/set of two or more values of one enum outside
    inscope/enums.py is a second list (TargetKind's values are plain words, e.g. CSV
    column names, so it is left out)."""
    checked = [e for e in ENUMS if e is not enums.TargetKind]
    copies = []
    for folder in ("inscope", "acquisition", "control", "detector"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "enums.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Tuple | ast.List | ast.Set) or not node.elts:
                    continue
                if not all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                           for e in node.elts):
                    continue
                words = {e.value for e in node.elts}
                for enum in checked:
                    hit = words & {m.value for m in enum}
                    if len(hit) >= 2:
                        copies.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                                      f"{enum.__name__} {sorted(hit)}")
    assert not copies, "use the enum instead: " + "; ".join(copies)


def test_members_are_their_wire_strings():
    """JSON, f-strings and comparisons see the value: the wire format is unchanged."""
    from inscope.schema import dumps

    assert dumps({"status": SteerStatus.CENTERED, SteerStatus.MOVED: 1}) == \
        b'{"status":"centred","moved":1}'
    assert f"{Mode.STEER_FOCUS}" == "steer+focus" == Mode.STEER_FOCUS
    assert [m for m in Mode if m.steers] == [Mode.STEER, Mode.STEER_FOCUS]
    assert [m for m in Mode if m.focuses] == [Mode.FOCUS, Mode.STEER_FOCUS]
    assert not Mode.TRACK.moves and not Mode.OFF.moves


def test_cli_errors_quote_plain_values(capsys):
    """argparse quotes choices with repr(): members repr as their value."""
    assert repr(Mode.OFF) == "'off'" and f"{Backend.SIM!r}" == "'sim'"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--mode", "warp"])
    assert "(choose from 'off', 'track', 'steer', 'focus', 'steer+focus')" in \
        capsys.readouterr().err


# -- the parsers, word by word ------------------------------------------------------------
HELP = ("use nearest, largest, score, class:<name> (e.g. class:mitotic) or an integer "
        "track id (e.g. 7)")


def test_a_mode_is_one_of_its_words_exactly():
    for m in Mode:
        assert Mode.parse(str(m)) is m
    for bad in ("STEER", "steer ", 1, None):
        with pytest.raises(ValueError) as e:
            Mode.parse(bad)
        assert str(e.value) == (f"unknown control mode {bad!r}; use one of off, track, "
                                "steer, focus, steer+focus.")


def test_focus_states_are_the_statuses_that_are_not_events():
    events = {FocusStatus.REFUSED, FocusStatus.FAILED, FocusStatus.DRY_RUN,
              FocusStatus.DISABLED, FocusStatus.NO_POSITION}
    for s in FocusStatus:
        assert FocusStatus.is_state(s) is (s not in events)


@pytest.mark.parametrize("spec,want", [
    (0, 0), (7, 7), ("12", 12), (" 3 ", 3), ("id:7", 7), ("track: 4", 4),
    (" Nearest ", "nearest"), ("CENTRE", "nearest"), ("center", "nearest"),
    ("size", "largest"), ("area", "largest"), ("highest", "score"),
    ("confidence", "score"), ("class:mitotic", "class:mitotic"),
    ("Class: dividing ", "class:dividing"),
])
def test_target_forms(spec, want):
    got = enums.parse_target(spec)
    assert got == want and type(got) is type(want)


def test_class_takes_its_name_from_beside_it():
    assert enums.parse_target("class", " mitotic ") == "class:mitotic"
    assert enums.parse_target("class:own", "other") == "class:own"  # the spec's wins


@pytest.mark.parametrize("spec,message", [
    (True, f"target True is not a target; {HELP}."),
    (2.5, f"target 2.5 is not a target; {HELP}."),
    (-1, "track id -1 is negative; track ids are >= 0."),
    ("nearest:3", f"unknown target policy 'nearest:3'; {HELP}."),
    ("centre:1", f"unknown target policy 'centre:1'; {HELP}."),
    ("fastest", f"unknown target policy 'fastest'; {HELP}."),
    ("id:x", "target 'id:x' needs a track id: give the integer (e.g. 7) or 'id:7'."),
    ("class", "target 'class' needs a class name: 'class:mitotic' (CLI, TOML, set_target), "
              "or target 'class' with [control] target_class = \"mitotic\" or set_target's "
              "\"class\": \"mitotic\"."),
])
def test_bad_targets_are_one_line_naming_the_forms(spec, message):
    with pytest.raises(ValueError) as e:
        enums.parse_target(spec)
    assert str(e.value) == message
