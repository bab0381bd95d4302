"""The mutation report (benchmarks/mutation.py): a survivor note written for one mutant
must not be lost, nor land on another function's mutant, when mutmut renumbers; a
module's entry must not be lost to another run writing the same file."""

from __future__ import annotations

import json

import pytest

from benchmarks.mutation import SURVIVOR_NOTES, _merged_results, _reason

NOTE = "equivalent: the value is overwritten before it is read"


def test_a_note_follows_its_mutant_when_mutmut_renumbers_the_function(monkeypatch):
    monkeypatch.setitem(SURVIVOR_NOTES, "xǁFooǁbar__mutmut_3", ("y = None", NOTE))
    diff = "-    y = 0\n+    y = None"
    assert _reason("xǁFooǁbar__mutmut_3", diff) == NOTE
    assert _reason("xǁFooǁbar__mutmut_7", diff) == NOTE  # the function changed
    assert _reason("xǁFooǁbaz__mutmut_3", diff) == "a test to add (not analysed one by one)"
    assert _reason("xǁFooǁbar__mutmut_3", "-    z = 0\n+    z = 1") != NOTE


def test_two_notes_of_the_function_that_match_are_not_guessed_between(monkeypatch):
    monkeypatch.setitem(SURVIVOR_NOTES, "xǁFooǁbar__mutmut_3", ("y = None", NOTE))
    monkeypatch.setitem(SURVIVOR_NOTES, "xǁFooǁbar__mutmut_4", ("None", "another note"))
    diff = "-    y = 0\n+    y = None"
    assert _reason("xǁFooǁbar__mutmut_3", diff) == NOTE  # its own number still counts
    assert _reason("xǁFooǁbar__mutmut_7", diff) == "a test to add (not analysed one by one)"


def test_an_entry_written_by_another_run_meanwhile_is_kept(tmp_path):
    out = tmp_path / "mutation.json"
    out.write_text(json.dumps({"modules": [{"module": "a.py", "score": 0.5},
                                           {"module": "b.py", "score": 0.6}]}))
    mine = {"module": "b.py", "score": 0.9}
    # another run (started after this one read the file) has since written c.py
    out.write_text(json.dumps({"modules": [{"module": "a.py", "score": 0.5},
                                           {"module": "b.py", "score": 0.6},
                                           {"module": "c.py", "score": 0.7}]}))
    merged = _merged_results(out, [mine])
    assert merged == {"a.py": {"module": "a.py", "score": 0.5}, "b.py": mine,
                      "c.py": {"module": "c.py", "score": 0.7}}
    assert _merged_results(tmp_path / "none.json", [mine]) == {"b.py": mine}


def test_a_partial_rerun_keeps_the_verdicts_of_the_mutants_it_did_not_rerun():
    from benchmarks.mutation import merge_verdicts

    kept = {"m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": 0, "m.x_g__mutmut_1": 1,
            "m.x_g__mutmut_2": None}
    # mutmut after new tests: everything reset, the named survivor re-run and killed
    rerun = {"m.x_f__mutmut_1": None, "m.x_f__mutmut_2": 1, "m.x_g__mutmut_1": None,
             "m.x_g__mutmut_2": None}
    assert merge_verdicts(kept, rerun, ["m.x_f__mutmut_2"]) == {
        "m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": 1, "m.x_g__mutmut_1": 1,
        "m.x_g__mutmut_2": None}
    # a glob re-runs what it matches: its verdicts, even unchecked, are the new ones
    assert merge_verdicts(kept, rerun, ["*x_g*"])["m.x_g__mutmut_1"] is None
    assert merge_verdicts(kept, rerun, ["*x_g*"])["m.x_f__mutmut_1"] == 1


def test_each_module_has_one_target():
    # results are kept by module path: a second target of one module would overwrite the
    # first one's entry
    from benchmarks.mutation import TARGETS

    paths = [t.path for t in TARGETS]
    assert len(paths) == len(set(paths))


# -- argparse registrations: what only changes --help, and what changes behaviour ----------
HELP_DROPPED = '''-                   help="ONNX model path, 'classical', or a shared Triton "
-                   "triton://HOST:PORT/NAME (default: the shipped model)")
+                   )'''
METAVAR = '''-    g.add_argument("--calibration", default=None, metavar="FILE",
+    g.add_argument("--calibration", default=None, metavar="XXFILEXX",'''
GROUP = '''-    g = p.add_argument_group("outputs")
+    g = p.add_argument_group(None)'''
DEFAULT_NONE = '''-    g.add_argument("--pub-port", type=int, default=None, help="PUB port")
+    g.add_argument("--pub-port", type=int, help="PUB port")'''
SWITCH_DEFAULT = '''-    g.add_argument("--dry-run", action="store_true", default=None,
-                   help="compute and publish moves without making them")
+    g.add_argument("--dry-run", action="store_true", help="compute and publish moves")'''
DEFAULT_VALUE = '''-    p.add_argument("--frames", type=int, default=200, help="frames each")
+    p.add_argument("--frames", type=int, default=201, help="frames each")'''
CHOICES = '''-    g.add_argument("--mode", default=None, choices=list(Mode),
+    g.add_argument("--mode", default=None, choices=None,'''
FLAG_NAME = '''-    p.add_argument("--provider", action="append", default=None,
+    p.add_argument("--PROVIDER", action="append", default=None,'''


@pytest.mark.parametrize("diff", [HELP_DROPPED, METAVAR, GROUP])
def test_a_help_only_change_is_labelled_as_such(diff):
    assert _reason("x__register_run__mutmut_1", diff).startswith("--help text only")


def test_leaving_out_argparse_s_own_default_is_equivalent_but_not_on_a_switch():
    assert _reason("x_a__mutmut_1", DEFAULT_NONE).startswith("equivalent: default")
    # a store_true flag without default=None defaults to False and overrides the TOML
    assert _reason("x_a__mutmut_1", SWITCH_DEFAULT).startswith("a test to add")


@pytest.mark.parametrize("diff", [DEFAULT_VALUE, CHOICES, FLAG_NAME])
def test_a_change_to_values_choices_or_names_is_not_called_help_only(diff):
    assert _reason("x_a__mutmut_1", diff).startswith("a test to add")


def test_a_function_no_test_can_reach_says_why_and_a_note_still_wins(monkeypatch):
    from benchmarks.mutation import _NO_TESTS, UNREACHABLE, _unreached

    monkeypatch.setitem(UNREACHABLE, "x_child_main", "runs in a child process")
    assert _unreached("x_child_main__mutmut_12", "-a\n+b") == "runs in a child process"
    assert _unreached("x_other__mutmut_12", "-a\n+b") == _NO_TESTS
    monkeypatch.setitem(SURVIVOR_NOTES, "x_child_main__mutmut_12", ("+b", NOTE))
    assert _unreached("x_child_main__mutmut_12", "-a\n+b") == NOTE
