"""The mutation report (benchmarks/mutation.py): a survivor note written for one mutant
must not be lost, nor land on another function's mutant, when mutmut renumbers; a
module's entry must not be lost to another run writing the same file."""

from __future__ import annotations

import json

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
