"""Shared test fixtures for every part of inscope.

Micro-Manager
-------------
``mm_core`` (session): pycromanager's headless Python backend with the real Micro-Manager
demo adapters (``mm_test_adapters``, ``MMConfig_demo.cfg``), started ONCE per test session
(pycromanager's engine singleton cannot be restarted in one process).

``mm_scope`` (function): a :class:`~inscope.acquisition.micromanager.MicroManagerMicroscope` on
that core, reset for each test: no acquisition running, XY at (0, 0), Z at 0, DemoCamera in
"Fluorescent Beads" mode (beads shift with XY, blur with Z) at :data:`MM_EXPOSURE_MS`,
10X objective (1.0 µm/pixel, the only objective where the demo's pixel size matches what
DemoCamera renders: 1 pixel per µm), demo soft limits, no dry-run. Tests may change
anything; the next user gets a clean scope.

Tests marked ``mm_gui`` need a running Micro-Manager GUI with its pycro-manager server;
they are skipped unless pytest is given ``--run-mm-gui``.
"""

from __future__ import annotations

import pytest

#: Camera settings every ``mm_scope`` starts from.
#: (PixelType first: DemoCamera crashes rendering "Fluorescent Beads" as 32bitRGB.)
MM_CAMERA_PROPERTIES = {"PixelType": "16bit", "Binning": "1", "Mode": "Fluorescent Beads"}
MM_EXPOSURE_MS = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-mm-gui", action="store_true", default=False,
        help="run tests marked mm_gui against a running Micro-Manager GUI "
             "(pycro-manager server on port 4827)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-mm-gui"):
        return
    skip = pytest.mark.skip(
        reason="needs the Micro-Manager GUI (Java) with its pycro-manager server on port "
               "4827, which cannot run here; start it and pass --run-mm-gui")
    for item in items:
        if "mm_gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mm_core():
    """The process's headless Micro-Manager core with the demo configuration."""
    # A test dependency, never a skip: without it every real-MMCore test would vanish.
    import mm_test_adapters  # noqa: F401

    from inscope.acquisition.micromanager import DEFAULT_CONFIG, headless_core

    return headless_core(None, DEFAULT_CONFIG)


@pytest.fixture
def mm_scope(mm_core):
    """A fresh, reset MicroManagerMicroscope on the shared headless demo core."""
    from inscope.acquisition.micromanager import DEFAULT_CONFIG, MicroManagerMicroscope

    # headless() reuses the running core, reloading the demo config only if a test loaded
    # another one (e.g. the missing-camera test).
    scope = MicroManagerMicroscope.headless(None, DEFAULT_CONFIG,
                                            camera_properties=MM_CAMERA_PROPERTIES)
    _reset(scope)
    yield scope
    scope.close()
    _reset(scope)


def _reset(scope) -> None:
    # The 10X objective (1.0 µm/pixel) is the one where the demo config's pixel size agrees
    # with what DemoCamera renders: its beads shift 1 pixel per µm whatever the objective.
    core = scope.core
    if core.is_config_defined("Objective", "10X"):
        core.set_config("Objective", "10X")
        core.wait_for_config("Objective", "10X")
    scope.reset(MM_CAMERA_PROPERTIES, MM_EXPOSURE_MS)


# -- the shipped model (helpers for the simulator: tests/_support) ---------------------
@pytest.fixture(scope="session")
def shipped_detector():
    """The shipped default model on CPU. Never a fallback: a missing or broken model file
    fails every test that uses it (it ships inside the package)."""
    from inscope.detector import load_detector

    return load_detector(None, provider="cpu")
