"""A device-interface mismatch names both versions: pymmcore's own (real package) and the
adapters' (from the core's error, as MMCore words it when an adapter does not load)."""

from __future__ import annotations

import pymmcore

from inscope.acquisition.micromanager import _explain


def test_interface_mismatch_names_both_versions():
    ours = pymmcore.__version__.split(".")[3]
    theirs = str(int(ours) - 1)
    err = RuntimeError(f"Incompatible device interface version (required = {ours}; "
                       f"found = {theirs})")
    msg = _explain(err)
    assert f"required = {ours}; found = {theirs}" in msg  # the adapters' number
    assert f"pymmcore {pymmcore.__version__} speaks device interface {ours}" in msg
    assert "interface 75" in msg
    assert _explain(RuntimeError("some other failure")) == "some other failure"
