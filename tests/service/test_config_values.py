"""Config validation at its edges: each range is checked on both sides of its bound.

Mutation testing: ``python -m benchmarks.mutation --module config``.
"""

from __future__ import annotations

import pytest

from inscope.config import (
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    validate,
    with_overrides,
)
from inscope.control.steering import SteerSettings


def _bad(d: dict, *words: str) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(d, "scope.toml")
    msg = str(e.value)
    assert msg.startswith("scope.toml: "), msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("gain,ok", [(0.0, False), (-0.1, False), (1e-6, True), (1.5, True),
                                     (1.5001, False)])
def test_control_gain_range(gain, ok):
    d = {"control": {"gain": gain}}
    if ok:
        assert config_from_dict(d).control.gain == gain
    else:
        assert _bad(d) == (f"scope.toml: key 'control.gain' = {gain!r} is not allowed; use "
                           "a finite number in (0, 1.5] (1.0 with a calibrated affine, "
                           "0.5-0.8 when unsure).")


@pytest.mark.parametrize("section,key", [("run", "frames"), ("detector", "threads"),
                                         ("outputs.zmq", "pub_port"),
                                         ("outputs.zmq", "sndhwm")])
def test_a_bool_is_not_an_integer(section, key):
    d: dict = {}
    node = d
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = True
    msg = _bad(d, f"key '{section}.{key}' must be integer", "got True (bool)")
    assert msg.endswith("got True (bool).")


@pytest.mark.parametrize("value", [True, "1.0"])
def test_a_bool_or_string_is_not_a_number(value):
    _bad({"control": {"gain": value}}, "key 'control.gain' must be number")


def test_an_integer_where_a_number_is_expected_becomes_a_float():
    cfg = config_from_dict({"control": {"deadband_um": 2, "gain": 1},
                            "outputs": {"video_fps": 30}})
    assert (cfg.control.deadband_um, cfg.control.gain, cfg.outputs.video_fps) == (2.0, 1.0,
                                                                                   30.0)
    assert type(cfg.control.deadband_um) is float and type(cfg.outputs.video_fps) is float


def test_types_of_every_kind_of_setting():
    _bad({"microscope": {"dry_run": 1}}, "key 'microscope.dry_run' must be true/false",
         "got 1 (int)")
    _bad({"detector": {"model": 3}}, "key 'detector.model' must be string or none (omit the "
         "key); got 3 (int)")
    _bad({"microscope": {"options": [1]}}, "key 'microscope.options' must be a table")
    _bad({"microscope": "sim"}, "key 'microscope' must be a table; got 'sim'")
    _bad({"outputs": {"eyepiece": {"display_size": 5}}},
         "key 'outputs.eyepiece.display_size' must be an array")
    msg = _bad({"outputs": {"eyepiece": {"display_size": [800, "x"]}}})
    assert msg == ("scope.toml: key 'outputs.eyepiece.display_size[1]' must be integer; "
                   "got 'x' (str).")
    _bad({"control": {"target": 2.5}}, "key 'control.target' must be string or integer")
    cfg = config_from_dict({"detector": {"model": None}, "microscope": {"limits": None}})
    assert cfg.detector.model is None and cfg.microscope.limits is None
    cfg = config_from_dict({"outputs": {"eyepiece": {"display_size": (640, 480)}}})
    assert cfg.outputs.eyepiece.display_size == [640, 480]


def test_unknown_keys_suggest_the_close_one_and_list_the_allowed():
    msg = _bad({"control": {"gian": 1.0}}, "unknown key 'control.gian'",
               "Did you mean 'gain'?")
    from dataclasses import fields

    from inscope.config import ControlConfig

    allowed = ", ".join(f.name for f in fields(ControlConfig))
    assert allowed.startswith("mode, target, target_class, deadband_um, max_step_um, gain")
    assert msg.endswith(f"Allowed in [control]: {allowed}.")
    msg = _bad({"zzz": {}}, "unknown key 'zzz'.", "Allowed in the top level: microscope, "
               "detector, control, outputs, run.")
    assert "Did you mean" not in msg


def test_other_ranges_on_both_sides():
    _bad({"outputs": {"video_fps": 0}}, "key 'outputs.video_fps' = 0.0", "in [0.1, 240]")
    assert config_from_dict({"outputs": {"video_fps": 0.5}}).outputs.video_fps == 0.5
    for th, ok in ((0.0, True), (1.0, True), (-0.01, False), (1.01, False)):
        d = {"detector": {"score_threshold": th}}
        if ok:
            assert config_from_dict(d).detector.score_threshold == th
        else:
            _bad(d, "detector.score_threshold", "in [0, 1]")
    _bad({"detector": {"threads": 0}}, "key 'detector.threads' = 0", "in [1, 256]")
    assert config_from_dict({"detector": {"threads": 1}}).detector.threads == 1
    for port, ok in ((0, True), (65535, True), (-1, False), (65536, False)):
        for key in ("pub_port", "rep_port"):
            d = {"outputs": {"zmq": {key: port, "enabled": False}}}
            if ok:
                assert getattr(config_from_dict(d).outputs.zmq, key) == port
            else:
                _bad(d, f"outputs.zmq.{key}", "use 0..65535 (0 = any free port)")
    _bad({"run": {"frames": 0}}, "key 'run.frames' = 0", "omit it to run until stopped")
    assert config_from_dict({"run": {"frames": 1}}).run.frames == 1
    _bad({"run": {"seconds": 0}}, "key 'run.seconds' = 0.0", "in (0, 1e+07]")
    assert config_from_dict({"run": {"seconds": 0.1}}).run.seconds == 0.1
    for ds in ([800], [800, 600, 3], [15, 600], [800, 15]):
        _bad({"outputs": {"eyepiece": {"display_size": ds}}},
             "outputs.eyepiece.display_size", "give [width, height] in pixels")
    assert config_from_dict({"outputs": {"eyepiece": {"display_size": [16, 16]}}})


def test_same_ports_only_matter_when_zmq_is_on_and_not_zero():
    _bad({"outputs": {"zmq": {"pub_port": 5000, "rep_port": 5000}}},
         "outputs.zmq.pub_port and rep_port are both 5000; give them different ports.")
    assert config_from_dict({"outputs": {"zmq": {"pub_port": 0, "rep_port": 0}}})
    assert config_from_dict({"outputs": {"zmq": {"pub_port": 5000, "rep_port": 5000,
                                                 "enabled": False}}})


def test_choices_and_targets():
    for mode in ("off", "track", "steer", "focus", "steer+focus"):
        assert config_from_dict({"control": {"mode": mode}}).control.mode == mode
    _bad({"control": {"mode": "warp"}}, "use one of off, track, steer, focus, steer+focus")
    _bad({"microscope": {"backend": "magic"}}, "use one of sim, headless, mm, replay")
    _bad({"outputs": {"records": {"format": "xml"}}}, "use one of jsonl, csv")
    assert config_from_dict({"control": {"target": "12"}}).control.target == 12
    _bad({"control": {"target": "biggest"}}, "key 'control.target' = 'biggest'",
         "or an integer track id")
    _bad({"control": {"target": "class"}}, "control.target = 'class' needs "
         "control.target_class")
    cfg = config_from_dict({"control": {"target": "class", "target_class": "mitotic"}})
    assert (cfg.control.target, cfg.control.target_class) == ("class", "mitotic")


def test_limits_are_checked_as_soft_limits():
    _bad({"microscope": {"limits": {"x": [5, 1]}}}, "[microscope.limits] is wrong:",
         "low < high")
    _bad({"microscope": {"limits": {"q": [0, 1]}}}, "[microscope.limits] is wrong:",
         "Unknown soft-limit")
    _bad({"microscope": {"limits": {"x": 5}}}, "[microscope.limits] is wrong:")
    cfg = config_from_dict({"microscope": {"limits": {"x": [-1, 1]}}})
    assert cfg.microscope.limits == {"x": [-1, 1]}


def test_validate_re_checks_after_changes_and_overrides_ignore_none():
    cfg = Config()
    assert validate(cfg) is cfg
    cfg.control.gain = 2.0
    with pytest.raises(ConfigError, match="^flags: key 'control.gain' = 2.0"):
        validate(cfg, "flags")
    cfg = Config()
    assert with_overrides(cfg, "control", gain=None) is cfg
    new = with_overrides(cfg, "outputs.zmq", pub_port=7000, rep_port=None)
    assert (new.outputs.zmq.pub_port, new.outputs.zmq.rep_port) == (7000, 5557)
    assert cfg.outputs.zmq.pub_port == 5556  # a copy
    with pytest.raises(ConfigError, match="no setting control.speed"):
        with_overrides(cfg, "control", speed=1)


def test_to_dict_and_load_errors(tmp_path):
    d = Config().to_dict()
    assert d["control"]["gain"] == SteerSettings.gain and d["outputs"]["zmq"]["pub_port"] == 5556
    assert config_from_dict(d) == Config()
    with pytest.raises(ConfigError, match=r"^config file nope\.toml not found; check the "
                                          "path given to --config"):
        load_config("nope.toml")
    p = tmp_path / "x.toml"
    p.write_text("[control\n")
    with pytest.raises(ConfigError, match=r"x\.toml is not valid TOML: "):
        load_config(p)
    p.write_text("[control]\ngain = 9.0\n")
    with pytest.raises(ConfigError, match=f"^{str(p)!s}: key 'control.gain'".replace(
            "\\", "\\\\")):
        load_config(p)


def test_type_names_in_messages():
    import dataclasses
    from pathlib import Path

    from inscope.config import _type_name

    @dataclasses.dataclass
    class Table:
        a: int = 0

    assert [_type_name(t) for t in (int, float, str, bool, dict, type(None))] == [
        "integer", "number", "string", "true/false", "table", "none (omit the key)"]
    assert (_type_name(list[int]), _type_name(dict[str, int]), _type_name(Table)) == (
        "array", "table", "table")
    assert _type_name(tuple[int, int]) == str(tuple) and _type_name(Path) == "Path"
    assert _type_name(int | list[int] | None) == "integer or array or none (omit the key)"
    _bad({"microscope": {"limits": 5}}, "key 'microscope.limits' must be table or none "
         "(omit the key); got 5 (int).")


def test_output_paths_are_checked_before_a_run(tmp_path):
    from inscope.config import check_paths

    a_file = tmp_path / "f.txt"
    a_file.write_text("x")

    def bad(section: dict, source: str | None = None) -> str:
        cfg = config_from_dict(section)
        with pytest.raises(ConfigError) as e:
            check_paths(cfg) if source is None else check_paths(cfg, source)
        return str(e.value)

    assert bad({"outputs": {"snapshot_dir": str(a_file)}}) == (
        f"config: outputs.snapshot_dir = {str(a_file)!r} is a file, not a folder; give a "
        "folder (it is created if missing).")
    assert bad({"outputs": {"records": {"dir": str(a_file / "rec")}}}, "cli") == (
        f"cli: outputs.records.dir (--record) = {str(a_file / 'rec')!r} cannot be a folder: "
        f"{a_file} is a file; give another folder.")
    assert bad({"outputs": {"video": str(tmp_path)}}) == (
        f"config: outputs.video (--video) = {str(tmp_path)!r} is a folder; give a file "
        f"path, e.g. {tmp_path / 'overlay.mp4'}.")
    assert bad({"run": {"summary": str(a_file / "s.json")}}) == (
        f"config: run.summary (--summary) = {str(a_file / 's.json')!r} cannot be written: "
        f"{a_file} is a file, not a folder; give another path.")
    # what can be made is fine: new folders, new files, and nothing set
    check_paths(config_from_dict({"outputs": {"snapshot_dir": str(tmp_path / "new" / "d"),
                                              "video": str(tmp_path / "v.mp4")},
                                  "run": {"summary": str(tmp_path / "s.json")}}))
    check_paths(config_from_dict({}))


# Every numeric range: (key, low, high, low open?, the reason the message gives or "").
# Integer settings take integers. Both sides of both bounds, and the exact message.
RANGES = [
    ("control.deadband_um", 0.0, 1000.0, False, ""),
    ("control.max_step_um", 0.0, 10_000.0, True, ""),
    ("control.settle_s", 0.0, 60.0, False, " (frames this long after a move are ignored)"),
    ("control.focus_step_um", 0.0, 100.0, True, ""),
    ("control.immersion_index", 1.0, 2.0, False,
     " (the medium's refractive index: air 1.0, water 1.33, oil 1.515)"),
    ("control.wavelength_um", 0.2, 2.0, False, ""),
    ("control.focus_dof_um", 0.0, 1000.0, True, ""),
    ("control.focus_dither_um", 0.0, 100.0, True, ""),
    ("control.focus_check_s", 0.0, 86_400.0, True, ""),
    ("outputs.video_fps", 0.1, 240.0, False, ""),
    ("outputs.display_fps", 0.1, 240.0, False, ""),
    ("outputs.snapshot_max_per_s", 0.0, 100.0, True, ""),
    ("detector.score_threshold", 0.0, 1.0, False, ""),
    ("detector.threads", 1, 256, False, ""),
    ("outputs.zmq.sndhwm", 1, 1_000_000, False, ""),
    ("outputs.eyepiece.display_lag_ms", 0.0, 1000.0, False,
     " (the display's lag in ms; measure it: docs/service.md)"),
    ("run.frames", 1, 10**12, False, " (omit it to run until stopped)"),
    ("run.seconds", 0.0, 1e7, True, " (omit it to run until stopped)"),
]


def _nested(key: str, value) -> dict:
    *path, last = key.split(".")
    d: dict = {last: value}
    for p in reversed(path):
        d = {p: d}
    return d


def _get(cfg, key: str):
    for p in key.split("."):
        cfg = getattr(cfg, p)
    return cfg


@pytest.mark.parametrize("key,lo,hi,lo_open,why", RANGES, ids=[r[0] for r in RANGES])
def test_every_range_on_both_sides_of_both_bounds(key, lo, hi, lo_open, why):
    step = 1 if isinstance(lo, int) else 1e-3 * max(1.0, abs(hi - lo))
    rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
    ok = [lo + step if lo_open else lo, hi]
    bad = [lo if lo_open else lo - step, hi + step]
    for v in ok:
        assert _get(config_from_dict(_nested(key, v)), key) == v
    for v in bad:
        assert _bad(_nested(key, v)) == (f"scope.toml: key '{key}' = {v!r} is not allowed; "
                                         f"use a finite number in {rng}{why}.")


def test_objective_na_below_the_immersion_index():
    ok = config_from_dict({"control": {"immersion_index": 1.515, "objective_na": 1.4}})
    assert ok.control.objective_na == 1.4
    assert _bad({"control": {"immersion_index": 1.0, "objective_na": 1.0}}) == (
        "scope.toml: key 'control.objective_na' = 1.0 is not allowed; it must be below "
        "control.immersion_index (1.0).")
    assert _bad({"control": {"immersion_index": 1.33, "objective_na": 1.4}}) == (
        "scope.toml: key 'control.objective_na' = 1.4 is not allowed; use a finite number "
        "in (0, 1.33] (below control.immersion_index).")
    _bad({"control": {"objective_na": 0.0}}, "key 'control.objective_na' = 0.0", "in (0, ")


def test_backend_mode_format_and_options_name_key_and_value():
    assert _bad({"microscope": {"backend": "gui"}}).startswith(
        "scope.toml: key 'microscope.backend' = 'gui' is not allowed; use one of sim, ")
    assert _bad({"control": {"mode": "fly"}}).startswith(
        "scope.toml: key 'control.mode' = 'fly' is not allowed; use one of off, ")
    assert _bad({"outputs": {"records": {"format": "xml"}}}).startswith(
        "scope.toml: key 'outputs.records.format' = 'xml' is not allowed; use one of ")
    assert _bad({"microscope": {"options": {"exposure_ms": float("nan")}}}) == (
        "scope.toml: key 'microscope.options.exposure_ms' = nan is not allowed; use a "
        "finite number.")
    assert config_from_dict({"microscope": {"options": {"exposure_ms": 5.0}}})
    assert _bad({"outputs": {"zmq": {"pub_port": 70000, "enabled": False}}}) == (
        "scope.toml: key 'outputs.zmq.pub_port' = 70000 is not allowed; use 0..65535 "
        "(0 = any free port).")
    for ds, ok in (([16384, 16], True), ([16385, 16], False), ([16, 16384], True)):
        d = {"outputs": {"eyepiece": {"display_size": ds}}}
        if ok:
            assert list(config_from_dict(d).outputs.eyepiece.display_size) == ds
        else:
            assert _bad(d) == (f"scope.toml: key 'outputs.eyepiece.display_size' = {ds!r} "
                               "is not allowed; give [width, height] in pixels, each in "
                               "[16, 16384].")
