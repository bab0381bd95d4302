"""The mutation report's survivor notes (benchmarks/mutation.py): a note written for one
mutant must not be lost, nor land on another function's mutant, when mutmut renumbers."""

from __future__ import annotations

from benchmarks.mutation import SURVIVOR_NOTES, _reason

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
