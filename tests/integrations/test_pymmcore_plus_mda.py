"""The pymmcore-plus integration on the real MMCore + DemoCamera: a ``CMMCorePlus`` with
the mm-test-adapters demo config, real MDA runs (pymmcore-plus's own engine and runner),
the classical detector on DemoCamera's fluorescent beads (1 pixel per µm at 10X)."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from inscope.detector import load_detector
from inscope.integrations.pymmcore_plus_mda import (
    FOLLOW_UP_KEY,
    FrameDetector,
    run_adaptive,
    start_adaptive,
    zstack_at_cells,
)


@contextlib.contextmanager
def _signals(backend: str):
    """Cores made here get *backend*'s MDA signals ("psygnal", "qt"): by default a core
    made while any test of the run keeps a Qt application alive would get Qt's."""
    old = os.environ.get("PYMM_SIGNALS_BACKEND")
    os.environ["PYMM_SIGNALS_BACKEND"] = backend
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYMM_SIGNALS_BACKEND"]
        else:
            os.environ["PYMM_SIGNALS_BACKEND"] = old


@pytest.fixture(scope="module")
def mmc():
    import mm_test_adapters
    from pymmcore_plus import CMMCorePlus

    path = str(mm_test_adapters.device_adapter_path())
    with _signals("psygnal"):
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


def _bounded(rule, most=4):
    """*rule*, counting its calls and giving nothing after *most* of them: a run that
    would follow up its own follow-ups ends anyway (and the test says so)."""
    calls = []

    def wrapped(res):
        calls.append(res)
        return rule(res) if len(calls) <= most else []

    return wrapped, calls


def test_a_rule_of_ones_own_never_follows_up_its_follow_ups(core):
    """A rule written by the user returns plain MDAEvents (or dicts) without inscope's
    mark: its events are still follow-ups, imaged once and never followed up."""
    import useq

    def beside(res):
        p = res.detected.frame.position
        return [useq.MDAEvent(x_pos=p.x + 5.0, y_pos=p.y, z_pos=p.z),
                {"x_pos": p.x - 5.0, "y_pos": p.y, "metadata": {"mine": 1}}]

    rule, calls = _bounded(beside)
    results = run_adaptive(core, load_detector("classical"),
                           [useq.MDAEvent(index={"t": 0}, x_pos=10.0, y_pos=0.0),
                            useq.MDAEvent(index={"t": 1}, x_pos=-10.0, y_pos=0.0)],
                           rule, timeout_s=120)
    assert len(calls) == 2 and len(results) == 6
    follow = results[2:]
    assert all(r.event.metadata[FOLLOW_UP_KEY] for r in follow)
    assert follow[1].event.metadata["mine"] == 1  # the rule's own metadata is kept
    xs = [r.record["stage_um"]["x"] for r in follow]
    assert xs == pytest.approx([15.0, 5.0, -5.0, -15.0], abs=0.05)


def test_a_failing_rule_is_reported_on_its_frame_and_the_run_goes_on(core, caplog):
    import useq

    def rule(res):
        if res.event.index["t"] == 0:
            raise ValueError("no cells today")
        return zstack_at_cells([0.0], max_cells=1)(res)

    with caplog.at_level("ERROR", logger="inscope.integrations.pymmcore_plus_mda"):
        results = run_adaptive(core, load_detector("classical"),
                               [useq.MDAEvent(index={"t": 0}), useq.MDAEvent(index={"t": 1})],
                               rule, timeout_s=120)
    assert len(results) == 3
    assert results[0].follow_up_error == "ValueError: no cells today"
    assert results[1].follow_up_error is None and results[2].event.metadata[FOLLOW_UP_KEY]
    assert "follow-up rule failed" in caplog.text


class _FailsOnFirst:
    """The classical detector, raising on the first frame it is given (an odd camera
    image the detector cannot read: a 1-row ROI, an all-NaN float frame)."""

    def __init__(self):
        self.inner = load_detector("classical")
        self.calls = 0

    def detect(self, frame):
        self.calls += 1
        if self.calls == 1:
            raise ValueError("unreadable frame")
        return self.inner.detect(frame)


def test_a_frame_the_detector_fails_on_is_kept_with_what_failed(core, caplog):
    """Raised out of ``frameReady`` the error was only logged by pymmcore-plus and the
    frame was missing from the results, unlike the pycro-manager processor's."""
    import useq

    handler = FrameDetector(_FailsOnFirst()).connect(core)
    try:
        with caplog.at_level("ERROR", logger="inscope.integrations.pymmcore_plus_mda"):
            core.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 2})).join()
    finally:
        handler.disconnect()
    assert len(handler.results) == 2
    bad, good = handler.results
    assert bad.error == "ValueError: unreadable frame" and bad.n == 0
    assert bad.record["error"] == bad.error and bad.record["stage_um"] is not None
    assert good.error is None and good.n > 0
    assert "detection failed on MDA frame 0" in caplog.text


def test_a_started_run_does_not_wait_for_a_frame_the_detector_failed_on(core):
    """The failed frame's handler never reported, so the run waited its handler_wait_s
    (10 s) for it at the end and logged that a frame was never handled."""
    import time as _time

    import useq

    t0 = _time.monotonic()
    run = start_adaptive(core, _FailsOnFirst(),
                         [useq.MDAEvent(index={"t": 0}), useq.MDAEvent(index={"t": 1})],
                         zstack_at_cells([0.0], max_cells=1), timeout_s=120)
    got = run.wait(timeout=60)
    assert _time.monotonic() - t0 < 5.0
    # the failed frame is kept and starts no follow-up; the other one starts its own
    assert [r.error is not None for r in got] == [True, False, False]
    assert got[2].event.metadata[FOLLOW_UP_KEY]


def test_follow_ups_are_imaged_in_the_channel_their_cell_was_found_in(core):
    """Without the parent's channel the engine left the core in the sequence's last
    channel: a cell found in DAPI got its z-stack in FITC, at FITC's exposure."""
    import useq

    taken = []

    def note(img, event, meta):
        taken.append((event, core.getCurrentConfig("Channel"), core.getExposure()))

    core.mda.events.frameReady.connect(note)
    try:
        seq = useq.MDASequence(channels=[{"config": "DAPI", "exposure": 7.0},
                                         {"config": "FITC", "exposure": 12.0}])
        results = run_adaptive(core, load_detector("classical"), seq,
                               zstack_at_cells([0.0], max_cells=1), timeout_s=120)
    finally:
        core.mda.events.frameReady.disconnect(note)
    assert len(results) == 4
    follow = [(c, x) for e, c, x in taken if (e.metadata or {}).get(FOLLOW_UP_KEY)]
    assert follow == [("DAPI", 7.0), ("FITC", 12.0)]


def _multi_camera_core(signals: str = "psygnal"):
    """A core whose camera is Micro-Manager's "Multi Camera" over two DemoCameras (the
    Utilities adapter of mm-test-adapters): each snap gives two frames; *signals*: its
    MDA signals' backend."""
    import mm_test_adapters
    from pymmcore_plus import CMMCorePlus

    with _signals(signals):
        c = CMMCorePlus()
    c.setDeviceAdapterSearchPaths([str(mm_test_adapters.device_adapter_path())])
    for label in ("Cam1", "Cam2"):
        c.loadDevice(label, "DemoCamera", "DCam")
    c.loadDevice("Multi", "Utilities", "Multi Camera")
    c.loadDevice("DHub", "DemoCamera", "DHub")
    c.loadDevice("XY", "DemoCamera", "DXYStage")
    c.loadDevice("Z", "DemoCamera", "DStage")
    c.loadDevice("Shutter", "DemoCamera", "DShutter")
    c.initializeAllDevices()
    for i, label in enumerate(("Cam1", "Cam2"), 1):
        c.setProperty(label, "PixelType", "16bit")  # before the mode: beads + RGB segfault
        c.setProperty(label, "Mode", "Fluorescent Beads")
        c.setProperty("Multi", f"Physical Camera {i}", label)
    c.setCameraDevice("Multi")
    c.setXYStageDevice("XY")
    c.setFocusDevice("Z")
    c.setShutterDevice("Shutter")
    c.setExposure(5.0)
    return c


@pytest.fixture(scope="module")
def two_cameras():
    c = _multi_camera_core()
    yield c
    c.unloadAllDevices()


def test_a_multi_camera_event_starts_its_follow_ups_once(two_cameras):
    import useq

    assert two_cameras.getNumberOfCameraChannels() == 2
    results = run_adaptive(two_cameras, load_detector("classical"),
                           [useq.MDAEvent(index={"t": 0})],
                           zstack_at_cells([-1.0, 1.0], max_cells=1), timeout_s=120)
    # one event, two cameras: 2 frames; one cell's 2-plane stack, two cameras: 4 frames
    assert len(results) == 6
    assert sorted(r.event.index.get("cam") for r in results) == [0, 0, 0, 1, 1, 1]
    follow = [r for r in results if r.event.metadata.get(FOLLOW_UP_KEY)]
    assert len(follow) == 4 and {r.event.index["z"] for r in follow} == {0, 1}
    # ... and a run whose follow-ups come from the second camera starts them from it
    results = run_adaptive(two_cameras, load_detector("classical"),
                           [useq.MDAEvent(index={"t": 0})],
                           zstack_at_cells([0.0], max_cells=1), timeout_s=120,
                           follow_up_camera=1)
    assert len(results) == 4


def test_boxes_follow_the_cores_calibrated_pixel_affine(core):
    """A camera mounted turned 90 degrees is calibrated in Micro-Manager as a pixel-size
    affine: the handler maps boxes to the stage with it (and follow-ups go there)."""
    import useq

    cfg = core.getCurrentPixelSizeConfig()
    core.setPixelSizeAffine(cfg, [0.0, -1.0, 0.0, 1.0, 0.0, 0.0])
    try:
        handler = FrameDetector(load_detector("classical")).connect(core)
        try:
            core.run_mda(useq.MDASequence(time_plan={"interval": 0, "loops": 1},
                                          stage_positions=[(30.0, -20.0, 0.0)])).join()
        finally:
            handler.disconnect()
        rec = handler.results[-1].record
        assert rec["affine_um_per_px"] == [[0.0, -1.0], [1.0, 0.0]]
        d = rec["detections"][0]
        # stage = position + A @ (pixel - image centre), A = [[0, -1], [1, 0]]
        assert d["center_um"][0] == pytest.approx(30.0 - (d["center_px"][1] - 256), abs=0.06)
        assert d["center_um"][1] == pytest.approx(-20.0 + (d["center_px"][0] - 256), abs=0.06)
        # an affine given to the handler wins over the core's
        mine = FrameDetector(load_detector("classical"), affine=np.eye(2) * 0.5)
        mine._mmc = core
        res = mine.frameReady(core.snap(), useq.MDAEvent(x_pos=0.0, y_pos=0.0),
                              {"pixel_size_um": 1.0})
        assert res.record["affine_um_per_px"] == [[0.5, 0.0], [0.0, 0.5]]
    finally:
        core.setPixelSizeAffine(cfg, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def _unload_qt_core(core) -> None:
    """Unload a Qt-signalled test core with its C++ callbacks into Python switched off
    first, and Qt's queued signals delivered: a device thread's late callback, re-emitted
    as a Qt signal while the devices were unloading, crashed a full run once (a
    segmentation fault in pymmcore-plus' ``reemit``, in this file's Qt test's teardown).
    This is teardown only; the tests' runs keep every callback."""
    from pymmcore_plus import CMMCorePlus
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        app.processEvents()
    super(CMMCorePlus, core).registerCallback(None)  # what CMMCorePlus.__del__ does
    core.unloadAllDevices()


@contextlib.contextmanager
def _qt_core():
    """A demo core created with a Qt application running, as napari-micromanager and
    pymmcore-widgets create theirs: its MDA signals are Qt's (offscreen platform)."""
    import mm_test_adapters
    from pymmcore_plus import CMMCorePlus

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    assert app is not None
    path = str(mm_test_adapters.device_adapter_path())
    with _signals("qt"):
        qcore = CMMCorePlus()
    try:
        qcore.setDeviceAdapterSearchPaths([path])
        qcore.loadSystemConfiguration(os.path.join(path, "MMConfig_demo.cfg"))
        assert type(qcore.mda.events).__name__ == "QMDASignaler"
        qcore.setProperty("Camera", "PixelType", "16bit")
        qcore.setProperty("Camera", "Mode", "Fluorescent Beads")
        qcore.setConfig("Objective", "10X")
        qcore.setExposure(5.0)
        yield qcore
    finally:
        _unload_qt_core(qcore)


def test_follow_ups_run_when_the_cores_mda_signals_are_qt():
    """napari-micromanager and pymmcore-widgets create their core with a Qt application
    running, which gives it Qt MDA signals: a frame emitted in a runner thread would
    reach the handler later, on the Qt thread. The adaptive run is driven in the
    caller's thread, so each frame's follow-ups are queued before the next event."""
    import useq

    with _qt_core() as qcore:
        results = run_adaptive(qcore, load_detector("classical"),
                               [useq.MDAEvent(index={"t": 0})],
                               zstack_at_cells([-1.0, 1.0], max_cells=2), timeout_s=120)
        assert len(results) == 5
        assert sum(bool(r.event.metadata.get(FOLLOW_UP_KEY)) for r in results) == 4


def test_a_gui_starts_an_adaptive_run_without_blocking_and_gets_every_follow_up():
    """From a GUI's button: the MDA runs in its own thread while the Qt thread handles
    the frames (Qt signals deliver there, after the runner has moved on). The runner
    waits for the handlers before it calls the run over, so the follow-ups of the first
    frame are still taken and the last frames are still detected with the core's map."""
    import time as _time

    import useq

    with _qt_core() as qcore:
        run = start_adaptive(qcore, load_detector("classical"),
                             [useq.MDAEvent(index={"t": 0}), useq.MDAEvent(index={"t": 1})],
                             zstack_at_cells([-1.0, 1.0], max_cells=2), timeout_s=120,
                             handler_wait_s=60)
        # the GUI is busy for a moment: the runner has taken both first-round frames and
        # found its queue empty long before their handlers run
        _time.sleep(0.5)
        assert not run.results and not run.done()
        # on the Qt thread, Qt's events keep flowing; it ends as soon as the last frame
        # is handled, not after handler_wait_s
        results = run.wait(timeout=30)
        assert run.done() and not run.cancelled
        assert len(results) == 10
        follow = [r for r in results if r.event.metadata.get(FOLLOW_UP_KEY)]
        assert len(follow) == 8
        # each follow-up frame is centred on a bead the first round found
        for r in follow:
            c = np.array([d["center_px"] for d in r.record["detections"]])
            assert np.min(np.hypot(c[:, 0] - 256, c[:, 1] - 256)) < 5.0
        assert all(r.record["affine_um_per_px"] is not None for r in results)
        assert not qcore.mda.is_running()


def test_a_run_past_its_time_stops_starting_events_and_keeps_its_frames(core):
    import time as _time

    import useq

    from inscope.integrations.pymmcore_plus_mda import AdaptiveTimeout

    def slow(res):
        _time.sleep(0.6)  # the first frame's rule alone outlasts the run's time
        return zstack_at_cells([-1.0, 0.0, 1.0], max_cells=1)(res)

    with pytest.raises(AdaptiveTimeout, match="timeout_s=0.3 s .* 3 queued events not run"
                       ) as err:
        run_adaptive(core, load_detector("classical"), [useq.MDAEvent(index={"t": 0})],
                     slow, timeout_s=0.3)
    assert err.value.unrun == 3 and len(err.value.results) == 1
    assert err.value.results[0].n > 0
    # the core is free again
    assert not core.mda.is_running()
    assert len(run_adaptive(core, load_detector("classical"), [useq.MDAEvent()],
                            zstack_at_cells([0.0], max_cells=1))) == 2


def test_an_adaptive_run_started_in_its_thread_returns_at_once_and_ends_like_the_blocking_one(
        core):
    import useq

    events = [useq.MDAEvent(index={"t": 0}, x_pos=0.0, y_pos=0.0, z_pos=0.0)]
    rule = zstack_at_cells([-1.0, 0.0, 1.0], max_cells=2)
    blocking = run_adaptive(core, load_detector("classical"), events, rule, timeout_s=120)
    run = start_adaptive(core, load_detector("classical"), events,
                         zstack_at_cells([-1.0, 0.0, 1.0], max_cells=2), timeout_s=120)
    with pytest.raises(RuntimeError, match="Another MDA is running"):
        start_adaptive(core, load_detector("classical"), events, rule)
    got = run.wait(timeout=120)
    assert len(got) == len(blocking) == 7
    assert [r.event.index for r in got] == [r.event.index for r in blocking]
    assert [r.record["stage_um"] for r in got] == [r.record["stage_um"] for r in blocking]


def test_a_started_adaptive_run_can_be_cancelled_and_keeps_its_frames(core):
    import time as _time

    import useq

    def slow(res):
        _time.sleep(0.3)
        return zstack_at_cells([-2.0, -1.0, 0.0, 1.0, 2.0], max_cells=3)(res)

    run = start_adaptive(core, load_detector("classical"),
                         [useq.MDAEvent(index={"t": 0})], slow, timeout_s=120)
    deadline = _time.monotonic() + 60
    while not run.results and _time.monotonic() < deadline:
        _time.sleep(0.01)
    run.cancel()
    got = run.wait(timeout=60)
    assert run.cancelled and run.done()
    assert 1 <= len(got) < 16  # 1 + 3 cells x 5 planes had it not been cancelled
    assert not core.mda.is_running()


def test_a_started_run_past_its_time_raises_on_wait_with_its_frames(core):
    import time as _time

    import useq

    from inscope.integrations.pymmcore_plus_mda import AdaptiveTimeout

    def slow(res):
        _time.sleep(0.6)
        return zstack_at_cells([-1.0, 0.0, 1.0], max_cells=1)(res)

    run = start_adaptive(core, load_detector("classical"), [useq.MDAEvent(index={"t": 0})],
                         slow, timeout_s=0.3)
    with pytest.raises(AdaptiveTimeout, match="3 queued events not run") as err:
        run.wait(timeout=60)
    assert err.value.unrun == 3 and len(err.value.results) == 1


# -- the frameReady handler's parts, called as pymmcore-plus calls it ----------------------
def test_where_a_frame_was_taken_metadata_first_then_the_event_then_the_core(core):
    """pymmcore-plus's engine puts the stage position in each frame's metadata; another
    engine (or a custom one) may not: then the event's commanded position, and with
    neither the connected core's position."""
    import useq

    img = core.snap()
    h = FrameDetector(load_detector("classical"))
    ev = useq.MDAEvent(x_pos=10.0, y_pos=20.0, z_pos=3.0)
    rec = h.frameReady(img, ev, {"position": {"x": 1.0, "y": 2.0, "z": 0.5}}).record
    assert rec["stage_um"] == {"x": 1.0, "y": 2.0, "z": 0.5}
    assert h.frameReady(img, ev, {}).record["stage_um"] == {"x": 10.0, "y": 20.0, "z": 3.0}
    assert h.frameReady(img, ev, None).record["stage_um"] == {"x": 10.0, "y": 20.0,
                                                              "z": 3.0}
    # a position without z: the event's z; an event without z: 0
    assert h.frameReady(img, ev, {"position": {"x": 1.0, "y": 2.0}}).record["stage_um"] == \
        {"x": 1.0, "y": 2.0, "z": 3.0}
    assert h.frameReady(img, useq.MDAEvent(x_pos=4.0, y_pos=5.0), {}).record["stage_um"] == \
        {"x": 4.0, "y": 5.0, "z": 0.0}
    # only x known: no position (pixel boxes only), unless a core says where it is
    assert h.frameReady(img, useq.MDAEvent(x_pos=4.0), {}).record["stage_um"] is None
    core.setXYPosition(-12.0, 7.0)
    core.setPosition(1.5)
    core.waitForSystem()
    h.connect(core)
    try:
        rec = h.frameReady(img, useq.MDAEvent(), {}).record
    finally:
        h.disconnect()
    assert rec["stage_um"] == pytest.approx({"x": -12.0, "y": 7.0, "z": 1.5}, abs=0.05)


def test_the_frames_pixel_size_maps_its_boxes_when_no_core_calibration_is_known(core):
    import useq

    img = core.snap()
    h = FrameDetector(load_detector("classical"))  # not connected: no core affine
    ev = useq.MDAEvent(x_pos=10.0, y_pos=20.0)
    rec = h.frameReady(img, ev, {"pixel_size_um": 0.5}).record
    assert rec["pixel_size_um"] == 0.5
    d = rec["detections"][0]
    assert d["center_um"][0] == pytest.approx(10.0 + 0.5 * (d["center_px"][0] - 256), abs=0.01)
    assert d["center_um"][1] == pytest.approx(20.0 + 0.5 * (d["center_px"][1] - 256), abs=0.01)
    assert h.frameReady(img, ev, {}).record["pixel_size_um"] == 1.0  # none given: 1 µm


def test_the_handler_numbers_frames_and_keeps_the_newest(core):
    import useq

    img = core.snap()
    seen = []
    h = FrameDetector(load_detector("classical"), keep=2, on_detections=seen.append)
    for _ in range(3):
        h.frameReady(img, useq.MDAEvent(x_pos=0.0, y_pos=0.0), {})
    assert [r.detected.frame.index for r in seen] == [0, 1, 2]
    assert [r.detected.frame.index for r in h.results] == [1, 2]  # at most `keep`


def test_the_zstack_rule_takes_the_best_cells_at_or_above_its_score(core):
    import useq

    img = core.snap()
    res = FrameDetector(load_detector("classical")).frameReady(
        img, useq.MDAEvent(x_pos=0.0, y_pos=0.0, z_pos=1.0), {})
    cells = sorted(res.record["detections"], key=lambda d: -d["score"])
    assert len(cells) > 4
    events = zstack_at_cells([-1.0, 1.0])(res)  # default: the 3 best cells
    assert len(events) == 6
    for k, cell in enumerate(cells[:3]):
        for e in events[2 * k: 2 * k + 2]:
            assert (e.x_pos, e.y_pos) == pytest.approx(tuple(cell["center_um"]))
            assert e.metadata[FOLLOW_UP_KEY] is True
            assert e.metadata["cell_center_px"] == cell["center_px"]
            assert e.metadata["cell_box_px"] == cell["box_px"]
        assert [e.z_pos for e in events[2 * k: 2 * k + 2]] == [0.0, 2.0]
    # a score floor: cells below it get none, a cell exactly at it does
    floor = cells[2]["score"]
    n_at_or_above = sum(d["score"] >= floor for d in cells)
    events = zstack_at_cells([0.0], max_cells=100, min_score=floor)(res)
    assert len(events) == n_at_or_above
    # each call numbers its cells on from the last
    rule = zstack_at_cells([0.0], max_cells=1)
    assert [rule(res)[0].index["p"] for _ in range(3)] == [0, 1, 2]


def test_a_started_run_is_acquiring_when_start_returns_and_wait_can_time_out(core):
    import time as _time

    import useq

    def slow(res):
        _time.sleep(0.4)
        return zstack_at_cells([0.0], max_cells=1)(res)

    run = start_adaptive(core, load_detector("classical"), [useq.MDAEvent(index={"t": 0})],
                         slow, timeout_s=120)
    assert core.mda.is_running() and not run.done()
    with pytest.raises(TimeoutError) as e:
        run.wait(timeout=0.05)
    assert str(e.value) == ("the adaptive MDA is still running after 0.05 s (wait longer, "
                            "or cancel() it)")
    assert len(run.wait(timeout=60)) == 2


def test_a_gui_that_never_handles_the_frames_does_not_hang_the_run(caplog):
    """Qt signals with no Qt event loop running (a script without app.exec, a blocked
    GUI): no frame ever reaches the handler. The runner waits handler_wait_s after its
    last event, says why in a warning, and ends."""
    import time as _time

    import useq

    with _qt_core() as qcore, caplog.at_level(
            "WARNING", logger="inscope.integrations.pymmcore_plus_mda"):
        t0 = _time.monotonic()
        run = start_adaptive(qcore, load_detector("classical"),
                             [useq.MDAEvent(index={"t": 0})],
                             zstack_at_cells([0.0], max_cells=1), handler_wait_s=0.5)
        run._thread.join(30)  # (not wait(): that would run Qt's events)
        took = _time.monotonic() - t0
        assert run.done() and not run.results
        assert 0.5 <= took < 20
        assert "no frame handled for 0.5 s: the adaptive MDA ends with 1 events' frames " \
               "not handled" in caplog.text
        assert not qcore.mda.is_running()


def test_a_gui_started_multi_camera_run_handles_every_cameras_frame():
    """Under Qt each of a Multi Camera's frames reaches the handler later; the runner
    counts the frames of each event (one per camera) before it calls the run over."""
    import useq

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # kept: the core sees it
    assert app is not None
    c = _multi_camera_core("qt")
    try:
        assert type(c.mda.events).__name__ == "QMDASignaler"
        run = start_adaptive(c, load_detector("classical"), [useq.MDAEvent(index={"t": 0})],
                             zstack_at_cells([-1.0, 1.0], max_cells=1), handler_wait_s=60)
        results = run.wait(timeout=30)
        # one event and one cell's 2-plane stack, each on 2 cameras
        assert sorted(r.event.index.get("cam") for r in results) == [0, 0, 0, 1, 1, 1]
        assert sum(bool(r.event.metadata.get(FOLLOW_UP_KEY)) for r in results) == 4
    finally:
        _unload_qt_core(c)
