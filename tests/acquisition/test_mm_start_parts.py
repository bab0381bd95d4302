"""What a new user meets first with ``--backend headless``: where the device adapters
come from, where the config file is looked for, and what the error says when either is
missing. No core is started here (the one headless core of the test process is, by
tests/acquisition/test_micromanager.py), so these run in milliseconds and can guard the
start's own arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from inscope.acquisition.errors import MicroscopeUnavailable
from inscope.acquisition.micromanager import (
    _explain,
    default_mm_dir,
    headless_config,
    headless_core,
    resolve_config,
)


def test_the_demo_adapters_are_the_default_folder():
    import mm_test_adapters

    assert default_mm_dir() == str(mm_test_adapters.device_adapter_path())


def test_without_adapters_or_an_install_the_error_names_both_fixes(monkeypatch):
    # mm-test-adapters not installed, and no Micro-Manager install on this machine:
    # pycromanager's own search (real, not patched) finds none
    monkeypatch.setitem(sys.modules, "mm_test_adapters", None)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    with pytest.raises(MicroscopeUnavailable) as e:
        default_mm_dir()
    msg = str(e.value)
    assert msg.startswith("No Micro-Manager folder given and none found: pass --mm-dir")
    assert "`pip install mm-test-adapters`" in msg
    assert msg.endswith(")") and "(" in msg  # pycromanager's own words, in brackets
    assert e.value.__cause__ is not None


def test_a_config_is_found_absolute_in_the_working_folder_or_in_the_adapter_folder(
        tmp_path, monkeypatch):
    mm = tmp_path / "mm"
    work = tmp_path / "work"
    mm.mkdir()
    work.mkdir()
    (mm / "only_here.cfg").write_text("x")
    (mm / "both.cfg").write_text("x")
    (work / "both.cfg").write_text("x")
    monkeypatch.chdir(work)
    assert resolve_config(str(mm), "only_here.cfg") == str((mm / "only_here.cfg").resolve())
    # the working folder comes first
    assert resolve_config(str(mm), "both.cfg") == str((work / "both.cfg").resolve())
    assert resolve_config(str(mm), str(mm / "both.cfg")) == str((mm / "both.cfg").resolve())
    assert resolve_config(str(mm), Path("only_here.cfg")) == str(
        (mm / "only_here.cfg").resolve())
    # ~ is the user's home
    monkeypatch.setenv("HOME", str(mm))
    assert resolve_config(str(tmp_path), "~/only_here.cfg") == str(
        (mm / "only_here.cfg").resolve())
    # a folder of that name is no config file
    (work / "adir.cfg").mkdir()
    with pytest.raises(MicroscopeUnavailable, match="not found: 'adir.cfg'"):
        resolve_config(str(mm), "adir.cfg")


def test_a_missing_config_names_every_place_looked_and_the_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MicroscopeUnavailable) as e:
        resolve_config("/opt/mm", "scope.cfg")
    msg = str(e.value)
    assert msg.startswith("Micro-Manager config file not found: 'scope.cfg' (looked in ")
    assert f"{tmp_path / 'scope.cfg'}, /opt/mm/scope.cfg)" in msg
    assert "Pass --mm-config with an existing .cfg" in msg and "MMConfig_demo.cfg" in msg
    with pytest.raises(MicroscopeUnavailable, match=r"\(looked in /nowhere/a\.cfg\)"):
        resolve_config("/opt/mm", "/nowhere/a.cfg")  # absolute: only there


def test_an_adapter_folder_that_is_a_file_or_absent_is_refused_before_any_core(tmp_path):
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    for where in (f, tmp_path / "absent"):
        with pytest.raises(MicroscopeUnavailable) as e:
            headless_core(str(where), "MMConfig_demo.cfg")
        assert str(e.value).startswith(f"Micro-Manager folder not found: {str(where)!r}")
        assert "--mm-dir" in str(e.value)


def test_the_core_errors_explained(monkeypatch):
    assert _explain(RuntimeError("")) == "RuntimeError"
    assert _explain(OSError("  spaced  ")) == "spaced"
    # no pymmcore (the Java core of the GUI): the mismatch is still explained
    monkeypatch.setitem(sys.modules, "pymmcore", None)
    msg = _explain(RuntimeError("Incompatible device Interface Version (required = 75)"))
    assert msg.startswith("Incompatible device Interface Version (required = 75) (the core "
                          "and the adapters differ; ")
    assert "4th version number" in msg


def test_headless_config_is_none_or_the_loaded_file():
    cfg = headless_config()
    assert cfg is None or Path(cfg).is_file()
