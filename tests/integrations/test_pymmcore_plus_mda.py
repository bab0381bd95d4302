"""The pymmcore-plus integration on the real MMCore + DemoCamera: a ``CMMCorePlus`` with
the mm-test-adapters demo config, real MDA runs (pymmcore-plus's own engine and runner),
the classical detector on DemoCamera's fluorescent beads (1 pixel per µm at 10X)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from inscope.detector import load_detector
from inscope.integrations.pymmcore_plus_mda import (
    FOLLOW_UP_KEY,
    FrameDetector,
    run_adaptive,
    zstack_at_cells,
)


@pytest.fixture(scope="module")
def mmc():
    import mm_test_adapters
    from pymmcore_plus import CMMCorePlus

    path = str(mm_test_adapters.device_adapter_path())
    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([path])
    core.loadSystemConfiguration(os.path.join(path, "MMConfig_demo.cfg"))
    yield core
    core.unloadAllDevices()


@pytest.fixture
def core(mmc):
    cam = mmc.getCameraDevice()
    mmc.setProperty(cam, "PixelType", "16bit")  # before the mode: beads + RGB segfault
    mmc.setProperty(cam, "Mode", "Fluorescent Beads")
    mmc.setConfig("Objective", "10X")  # 1 µm/pixel: what DemoCamera renders
    mmc.setExposure(5.0)
    mmc.setXYPosition(0.0, 0.0)
    mmc.setPosition(0.0)
    mmc.waitForSystem()
    return mmc


def test_frame_ready_handler_detects_every_frame(core):
    import useq

    handler = FrameDetector(load_detector("classical")).connect(core)
    try:
        seq = useq.MDASequence(time_plan={"interval": 0, "loops": 3},
                               stage_positions=[(30.0, -20.0, 0.0)])
        core.run_mda(seq).join()
        # events without a stage position: the handler reads the core
        core.setXYPosition(-12.0, 7.0)
        core.waitForSystem()
        core.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 1})).join()
    finally:
        handler.disconnect()
    assert len(handler.results) == 4
    assert [r.event.index["t"] for r in handler.results[:3]] == [0, 1, 2]
    res = handler.results[0]
    assert res.n > 0
    assert res.record["stage_um"]["x"] == pytest.approx(30.0, abs=0.05)
    d = res.record["detections"][0]
    # stage µm of a box centre = stage position + pixel offset from the image centre
    assert d["center_um"][0] == pytest.approx(30.0 + d["center_px"][0] - 256, abs=0.06)
    assert d["center_um"][1] == pytest.approx(-20.0 + d["center_px"][1] - 256, abs=0.06)
    last = handler.results[-1].record
    assert last["stage_um"]["x"] == pytest.approx(-12.0, abs=0.05)
    d = last["detections"][0]
    assert d["center_um"][1] == pytest.approx(7.0 + d["center_px"][1] - 256, abs=0.06)
    # disconnected: a later MDA is not seen
    core.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 1})).join()
    assert len(handler.results) == 4


def test_event_driven_mda_adds_zstacks_at_detected_cells(core):
    import useq

    results = run_adaptive(core, load_detector("classical"), [useq.MDAEvent(index={"t": 0})],
                           zstack_at_cells([-1.0, 0.0, 1.0], max_cells=2), timeout_s=120)
    first, follow = results[0], results[1:]
    assert not (first.event.metadata or {}).get(FOLLOW_UP_KEY)
    assert len(follow) == 6 and all(r.event.metadata[FOLLOW_UP_KEY] for r in follow)
    cells = sorted(first.record["detections"], key=lambda d: -d["score"])[:2]
    for k, cell in enumerate(cells):
        stack = [r for r in follow if r.event.index["p"] == k]
        assert [r.event.index["z"] for r in stack] == [0, 1, 2]
        assert [r.record["stage_um"]["z"] for r in stack] == pytest.approx([-1, 0, 1],
                                                                            abs=0.05)
        mid = stack[1].record
        assert mid["stage_um"]["x"] == pytest.approx(cell["center_um"][0], abs=0.05)
        # the bead is now seen in the middle of the image: within 5 px (one DemoCamera
        # bead lands 4.5 px off in y and another 1 px off, where our pixel-to-stage map
        # is exact on the simulator and the slide backend, so the spread is the
        # DemoCamera's)
        c = np.array([d["center_px"] for d in mid["detections"]])
        assert np.min(np.hypot(c[:, 0] - 256, c[:, 1] - 256)) < 5.0
