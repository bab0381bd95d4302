"""The curated public API: ``from inscope import ...`` gives what the docs' examples need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import inscope

ROOT = Path(__file__).parents[1]


def test_every_public_name_resolves_and_all_is_complete():
    assert set(inscope.__all__) == {"__version__", *inscope._EXPORTS}
    for name in inscope._EXPORTS:
        obj = getattr(inscope, name)
        assert getattr(obj, "__name__", name) == name, name


def test_importing_inscope_stays_light():
    code = "import sys, inscope; print('numpy' in sys.modules, 'zmq' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_the_service_docs_python_example_imports_from_inscope_in_one_line():
    doc = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    example = doc.split("From Python the same loop is a few lines:")[1].split("```")[1]
    imports = [ln for ln in example.splitlines() if re.match(r"(from|import) ", ln)]
    assert len(imports) == 1 and imports[0].startswith("from inscope import "), imports
    namespace: dict = {}
    exec(imports[0], namespace)  # every name it uses exists
    for name in ("open_microscope", "load_detector", "ControlConfig", "Pipeline",
                 "PubOutput"):
        assert name in namespace, name
