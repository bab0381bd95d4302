"""The suite's own parts and its test dependencies import plainly.

A broken simulator or a missing test dependency must fail the run (CI: ``.ci/run`` ->
``make test``), never turn the tests that need it into skips. Every test module imports
what it uses at the top or in a fixture; this file names them once more so the failure
reads as what it is.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

#: the project's own modules the other tests build on, and the ``[test]`` / ``[train]``
#: extras CI installs (pyproject.toml, Makefile ``setup-test``)
MODULES = ["inscope.acquisition.simulated", "inscope.acquisition.micromanager",
           "inscope.detector.onnx_detector", "mm_test_adapters", "pymmcore_plus", "onnx",
           "onnxruntime", "zmq", "torch"]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


def test_the_demo_adapters_are_there():
    import mm_test_adapters

    libs = Path(mm_test_adapters.device_adapter_path())
    assert any("mmgr_dal_DemoCamera" in p.name for p in libs.iterdir()), libs
    assert (libs / "MMConfig_demo.cfg").is_file()
