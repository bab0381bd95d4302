"""benchmarks/_common.py: a module as it was at a git revision, imported beside this
tree's (the side-by-side benchmarks `bench_decode` and `focus_lock_fields`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._common import module_at

ROOT = Path(__file__).resolve().parents[1]


def _in_git() -> bool:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                              capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _in_git(), reason="needs the repository's git history")
def test_a_module_at_a_revision_is_its_own_module_with_that_source(tmp_path):
    import inscope.control.focus as here

    old = module_at("HEAD", "control/focus.py", tmp_path)
    try:
        assert old.__name__ == "focus_at_rev" and old is not here
        assert old.FocusLock is not here.FocusLock
        head = subprocess.run(["git", "show", "HEAD:control/focus.py"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
        assert (tmp_path / "focus_at_rev.py").read_text() == head
        # its dataclasses work (they look their module up in sys.modules)
        assert old.FocusAction(3, "locked").to_dict()["frame_index"] == 3
    finally:
        sys.modules.pop("focus_at_rev", None)
    with pytest.raises(subprocess.CalledProcessError):
        module_at("HEAD", "control/no_such_file.py", tmp_path)
