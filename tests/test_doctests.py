"""Every docstring example in the package runs and shows what it says.

The package's modules live in three folders mapped under ``inscope.`` (pyproject's
package-dir), so ``--doctest-modules`` would import them under the wrong names; this test
imports each module that has an example by its real name and runs :mod:`doctest` on it.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

#: The package and the three folders setuptools maps under it.
ROOTS = ("inscope", "inscope.acquisition", "inscope.detector", "inscope.control")


def _modules_with_examples() -> list[str]:
    names = set()
    for root in ROOTS:
        pkg = importlib.import_module(root)
        for info in [None, *pkgutil.walk_packages(pkg.__path__, f"{root}.")]:
            name = root if info is None else info.name
            spec = importlib.util.find_spec(name)
            origin = getattr(spec, "origin", None)
            if origin and origin.endswith(".py"):
                with open(origin, encoding="utf-8") as f:
                    if ">>> " in f.read():
                        names.add(name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_examples_exist():
    assert "inscope.acquisition.simulated" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctest(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
