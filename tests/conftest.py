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


# -- slides (the ``slide`` backend) -------------------------------------------------------
def make_nuclei(shape=(600, 800), n=60, seed=0, diameter_px=(18, 30), touching=4):
    """A synthetic widefield-like nuclei image (uint16) and its instance labels.

    Textured, domed ellipses of varied brightness on an offset background, a few placed
    touching a neighbour (the case that merges boxes and blobs). Generated, so tests need
    no real data.
    """
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[0:h, 0:w]
    placed: list[tuple[float, float, float]] = []
    k = 0
    tries = 0
    while k < n and tries < 20 * n:
        tries += 1
        r = rng.uniform(*diameter_px) / 2
        if k < touching and placed:
            px, py, pr = placed[-1]
            a = rng.uniform(0, 2 * np.pi)
            cx, cy = px + (pr + r) * 0.95 * np.cos(a), py + (pr + r) * 0.95 * np.sin(a)
        else:
            cx, cy = rng.uniform(r + 4, w - r - 4), rng.uniform(r + 4, h - r - 4)
        if not (r + 2 < cx < w - r - 2 and r + 2 < cy < h - r - 2):
            continue
        if any(np.hypot(cx - x, cy - y) < (r + q) * (0.9 if k < touching else 1.3)
               for x, y, q in placed):
            continue
        ecc = rng.uniform(1.0, 1.4)
        ang = rng.uniform(0, np.pi)
        c, s = np.cos(ang), np.sin(ang)
        u = ((xx - cx) * c + (yy - cy) * s) / (r * ecc ** 0.5)
        v = (-(xx - cx) * s + (yy - cy) * c) / (r / ecc ** 0.5)
        d2 = u * u + v * v
        m = (d2 <= 1.0) & (lab == 0)
        k += 1
        lab[m] = k
        bright = rng.lognormal(0, 0.3)
        img[m] += bright * (1 - d2[m]) ** 0.3
        placed.append((cx, cy, r))
    tex = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 1.5)
    img *= 1 + 0.25 * tex
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    pix = 500 + 1500 * np.clip(img, 0, None) + rng.normal(0, 8, shape)
    return np.clip(pix, 0, 65535).astype(np.uint16), lab


@pytest.fixture(scope="session")
def nuclei_slide(tmp_path_factory):
    """Path of a 2-D slide npz (image + labels, 0.65 µm pixels) of synthetic nuclei."""
    import numpy as np

    img, lab = make_nuclei()
    p = tmp_path_factory.mktemp("slides") / "nuclei_2d.npz"
    np.savez(p, image=img, labels=lab, pixel_size_um=0.65)
    return p


@pytest.fixture(scope="session")
def nuclei_stack(tmp_path_factory):
    """Path of a 3-D slide npz: the same nuclei as ellipsoids with haze, 0.5 µm planes."""
    import numpy as np

    from inscope.acquisition.slide import extrude_to_stack

    img, lab = make_nuclei(shape=(400, 500), n=30, seed=1)
    stack, labs = extrude_to_stack(img, lab, 0.65, z_step_um=0.5, planes=41, seed=1)
    p = tmp_path_factory.mktemp("slides") / "nuclei_3d.npz"
    np.savez(p, image=stack, labels=labs, pixel_size_um=0.65, z_step_um=0.5)
    return p
# -- the shipped model (helpers for the simulator: tests/_support) ---------------------
@pytest.fixture(scope="session")
def shipped_detector():
    """The shipped default model on CPU. Never a fallback: a missing or broken model file
    fails every test that uses it (it ships inside the package)."""
    from inscope.detector import load_detector

    return load_detector(None, provider="cpu")


@pytest.fixture(scope="session")
def detector():
    """The classical (OpenCV) detector: fast and deterministic, for tests of the loop,
    the outputs and the ZMQ API rather than of detection."""
    from inscope.detector import load_detector

    return load_detector("classical")
