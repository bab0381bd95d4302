"""A z-stack plan no microscope should run: ``--z-step 1e-4`` planned 40,001 planes per
cell and ran on (exploratory testing). Refused before anything opens, in one line."""

from __future__ import annotations

import pytest

from inscope.cli import main
from inscope.control.workflow import MAX_PLANES, ZStackSpec


def test_a_stack_of_too_many_planes_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"40,001 planes per cell \(4 µm every 0.0001 µm\)"
                                         r".*larger step_um.*smaller range_um"):
        ZStackSpec((-2.0, 2.0), 1e-4)
    with pytest.raises(ValueError, match=r"30,001 planes.*smaller max_extent_um"):
        ZStackSpec((-2.0, 2.0), 1e-3, adaptive=True)  # 2 x 15 µm each way at most
    # the most there may be, and real stacks, pass
    ZStackSpec((0.0, (MAX_PLANES - 1) * 0.01), 0.01)
    ZStackSpec((-5.0, 5.0), 0.1)
    ZStackSpec(step_um=0.29, adaptive=True)
    with pytest.raises(ValueError, match=f"{MAX_PLANES + 1:,} planes"):
        ZStackSpec((0.0, MAX_PLANES * 0.01), 0.01)


def test_scan_refuses_it_before_opening_anything(tmp_path, capsys):
    rc = main(["scan", "--backend", "sim", "--region", "0", "0", "100", "100", "--z-step",
               "1e-4", "--out", str(tmp_path / "scan"), "--model", "classical"])
    err = capsys.readouterr().err
    assert rc == 2 and "40,001 planes per cell" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "scan").exists()
