"""The pycro-manager image processor on the real MMCore + DemoCamera: pycromanager's
headless Python backend (the session's ``mm_core``), a real ``Acquisition`` with the
acquisition engine, the classical detector on DemoCamera's fluorescent beads (which shift
1 pixel per µm of stage travel with the 10X objective the ``mm_scope`` fixture selects)."""

from __future__ import annotations

import numpy as np
import pytest

from inscope.detector import load_detector
from inscope.integrations.common import position_from_tags
from inscope.integrations.pycromanager_processor import DetectionProcessor, zstack_at_cells


@pytest.fixture
def beads(mm_scope):
    """Demo scope ready for pycro-manager: 16-bit beads, stage at the origin."""
    return mm_scope


def test_position_from_tags_prefers_the_intended_position():
    tags = {"XPosition_um_Intended": 10.0, "YPosition_um_Intended": -3.5, "XPosition_um": 9.9,
            "YPosition_um": -3.4, "ZPosition_um": 2.0}
    p = position_from_tags(tags)
    assert (p.x, p.y, p.z) == (10.0, -3.5, 2.0)
    assert position_from_tags({"ZPosition_um": 1.0}) is None


def test_processor_puts_boxes_in_metadata(beads, mm_core):
    from pycromanager import Acquisition, multi_d_acquisition_events

    proc = DetectionProcessor(load_detector("classical"), core=mm_core)
    seen = []

    def saved(axes, dataset):
        seen.append(axes)

    with Acquisition(directory=None, image_process_fn=proc, image_saved_fn=saved) as acq:
        acq.acquire(multi_d_acquisition_events(num_time_points=2))
        ds = acq.get_dataset()
    assert len(proc.results) == 2
    rec = proc.results[0]["inscope"]
    assert rec["n"] > 0 and rec["stage_um"] == {"x": 0.0, "y": 0.0, "z": 0.0}
    d = rec["detections"][0]
    cx = (d["box_px"][0] + d["box_px"][2]) / 2
    cy = (d["box_px"][1] + d["box_px"][3]) / 2
    # pixel size 1 µm (10X), stage at the origin: stage µm = pixel offset from the centre
    assert d["center_um"][0] == pytest.approx(cx - 256, abs=0.01)
    assert d["center_um"][1] == pytest.approx(cy - 256, abs=0.01)
    # the saved dataset carries the boxes in each image's metadata
    md = ds.read_metadata(time=0)
    assert md["inscope"]["n"] == rec["n"]
    assert md["inscope"]["detections"][0]["box_px"] == d["box_px"]


def test_follow_up_zstack_centres_each_detected_cell(beads, mm_core):
    from pycromanager import Acquisition

    proc = DetectionProcessor(load_detector("classical"), core=mm_core,
                              follow_up=zstack_at_cells([-1.0, 0.0, 1.0], max_cells=2))
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, [{"axes": {"time": 0}}])
    acq.await_completion()  # ended by the processor once the follow-ups were imaged
    first, follow = proc.results[0], proc.results[1:]
    assert proc.follow_up_events == 6 and len(follow) == 6
    cells = sorted(first["inscope"]["detections"], key=lambda d: -d["score"])[:2]
    for k, cell in enumerate(cells):
        stack = [r for r in follow if r["axes"].get("cell") == k]
        assert sorted(r["axes"]["z"] for r in stack) == [0, 1, 2]
        mid = next(r for r in stack if r["axes"]["z"] == 1)["inscope"]
        # the stage went to the cell: the image is centred on it...
        assert mid["stage_um"]["x"] == pytest.approx(cell["center_um"][0], abs=0.05)
        assert mid["stage_um"]["y"] == pytest.approx(cell["center_um"][1], abs=0.05)
        # the bead is now seen in the middle of the image: within 5 px (one DemoCamera
        # bead lands 4.5 px off in y and another 1 px off, where our pixel-to-stage map
        # is exact on the simulator and the slide backend, so the spread is the
        # DemoCamera's)
        c = np.array([d["center_px"] for d in mid["detections"]])
        assert np.min(np.hypot(c[:, 0] - 256, c[:, 1] - 256)) < 5.0
        zs = sorted(r["inscope"]["stage_um"]["z"] for r in stack)
        assert zs == pytest.approx([-1.0, 0.0, 1.0], abs=0.05)


class _FailsOn:
    """The classical detector, raising on the images whose index is in *bad* (a frame
    the detector cannot read: the acquisition must go on)."""

    def __init__(self, bad):
        self.inner = load_detector("classical")
        self.bad = set(bad)

    def detect(self, frame):
        if frame.index in self.bad:
            raise ValueError("unreadable frame")
        return self.inner.detect(frame)


def test_an_image_the_detector_fails_on_is_saved_and_the_acquisition_goes_on(beads, mm_core,
                                                                            caplog):
    from pycromanager import Acquisition, multi_d_acquisition_events

    proc = DetectionProcessor(_FailsOn({1}), core=mm_core)
    with caplog.at_level("ERROR", logger="inscope.integrations.pycromanager_processor"), \
            Acquisition(directory=None, image_process_fn=proc) as acq:
        acq.acquire(multi_d_acquisition_events(num_time_points=3))
        ds = acq.get_dataset()
    assert [r["axes"]["time"] for r in proc.results] == [0, 1, 2]
    bad = proc.results[1]["inscope"]
    assert bad["n"] == 0 and bad["error"] == "ValueError: unreadable frame"
    assert proc.results[2]["inscope"]["n"] > 0
    # every image was saved, the failed one with what failed in its metadata
    assert ds.read_metadata(time=1)["inscope"]["error"] == "ValueError: unreadable frame"
    assert ds.read_image(time=2).shape == (512, 512)
    assert "detection failed on image 1" in caplog.text


def test_a_rule_with_its_own_axis_never_follows_up_its_follow_ups(beads, mm_core):
    """Follow-up images are known by the events the processor queued, not by the axis
    name "cell": a rule naming its own axis ends too."""
    from pycromanager import Acquisition

    inner = zstack_at_cells([0.0], max_cells=2, axis="site")
    calls = []

    def rule(det, metadata):  # bounded, so that a run that loops ends anyway
        calls.append(dict(metadata.get("Axes") or {}))
        return inner(det, metadata) if len(calls) <= 4 else []

    proc = DetectionProcessor(load_detector("classical"), core=mm_core, follow_up=rule)
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, [{"axes": {"time": 0}}])
    acq.await_completion()
    assert calls == [{"time": 0}]
    assert len(proc.results) == 3 and proc.follow_up_events == 2
    assert sorted(r["axes"]["site"] for r in proc.results[1:]) == [0, 1]


def test_a_failing_rule_is_reported_and_the_acquisition_ends(beads, mm_core):
    from pycromanager import Acquisition

    def rule(det, metadata):
        raise KeyError("cells")

    proc = DetectionProcessor(load_detector("classical"), core=mm_core, follow_up=rule)
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, [{"axes": {"time": 0}}, {"axes": {"time": 1}}])
    acq.await_completion()  # ended by the processor: no follow-up was queued
    assert len(proc.results) == 2 and proc.follow_up_events == 0
    rec = proc.results[0]["inscope"]
    assert rec["n"] > 0 and rec["follow_up_error"] == "KeyError: 'cells'"


def test_boxes_follow_the_cores_calibrated_pixel_affine(beads, mm_core):
    """pycro-manager's image tags carry no affine: the processor reads the core's (a
    camera mounted turned 90 degrees, calibrated in Micro-Manager)."""
    from pycromanager import Acquisition, multi_d_acquisition_events

    cfg = mm_core.get_current_pixel_size_config()
    mm_core.set_pixel_size_affine(cfg, [0.0, 1.0, 0.0, -1.0, 0.0, 0.0])
    try:
        proc = DetectionProcessor(load_detector("classical"), core=mm_core)
        with Acquisition(directory=None, image_process_fn=proc) as acq:
            acq.acquire(multi_d_acquisition_events(num_time_points=1))
    finally:
        mm_core.set_pixel_size_affine(cfg, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    rec = proc.results[0]["inscope"]
    assert rec["affine_um_per_px"] == [[0.0, 1.0], [-1.0, 0.0]]
    d = rec["detections"][0]
    assert d["center_um"][0] == pytest.approx(d["center_px"][1] - 256, abs=0.01)
    assert d["center_um"][1] == pytest.approx(-(d["center_px"][0] - 256), abs=0.01)


#: Micro-Manager's "Multi Camera" (Utilities adapter) over two DemoCameras with beads
MULTI_CAMERA_CFG = """\
Property,Core,Initialize,0
Device,Cam1,DemoCamera,DCam
Device,Cam2,DemoCamera,DCam
Device,Multi,Utilities,Multi Camera
Device,DHub,DemoCamera,DHub
Device,XY,DemoCamera,DXYStage
Device,Z,DemoCamera,DStage
Parent,Cam1,DHub
Parent,Cam2,DHub
Parent,XY,DHub
Parent,Z,DHub
Property,Core,Initialize,1
ConfigGroup,System,Startup,Multi,Physical Camera 1,Cam1
ConfigGroup,System,Startup,Multi,Physical Camera 2,Cam2
ConfigGroup,System,Startup,Cam1,PixelType,16bit
ConfigGroup,System,Startup,Cam2,PixelType,16bit
ConfigGroup,System,Startup,Cam1,Mode,Fluorescent Beads
ConfigGroup,System,Startup,Cam2,Mode,Fluorescent Beads
Property,Core,Camera,Multi
Property,Core,Focus,Z
Property,Core,XYStage,XY
"""

#: run in a fresh process (pycro-manager's engine starts once per process, and this
#: session's has the demo configuration): one event, a 2-plane stack at one cell
MULTI_CAMERA_RUN = """\
import json, os, sys, mm_test_adapters
from pycromanager import Acquisition, Core, start_headless
from inscope.detector import load_detector
from inscope.integrations.pycromanager_processor import DetectionProcessor, zstack_at_cells
start_headless(str(mm_test_adapters.device_adapter_path()), sys.argv[1], python_backend=True)
core = Core()
core.set_exposure(5.0)
calls = []
def bounded(det, md):  # a run that would loop ends anyway (and the count says so)
    calls.append(md.get("CameraChannelIndex"))
    return rule(det, md) if len(calls) <= 4 else []
out = {"cameras": core.get_number_of_camera_channels()}
for cam in (0, 1):
    calls.clear()
    rule = zstack_at_cells([-1.0, 1.0], max_cells=1, axis="site")  # the rule's own axis
    proc = DetectionProcessor(load_detector("classical"), core=core, follow_up=bounded,
                              follow_up_camera=cam)
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, [{"axes": {"time": 0}}])
    acq.await_completion()
    out[cam] = {"images": [r["axes"] for r in proc.results], "rule_cameras": list(calls),
                "found": [r["inscope"]["n"] for r in proc.results]}
try:
    DetectionProcessor(load_detector("classical"), core=core, follow_up=rule,
                       follow_up_camera=2).acquire(None, [{"axes": {"time": 0}}])
except ValueError as e:
    out["refused"] = str(e)
print("RESULT " + json.dumps(out))
sys.stdout.flush()
os._exit(0)  # pycro-manager's engine threads: leave at once (see test_docs_integrations)
"""


def test_a_multi_camera_event_starts_its_follow_ups_once(tmp_path):
    """Behind a Multi Camera each event gives an image per camera, with the same axes:
    each image started the follow-ups (the cell's stack taken twice), and with a rule's
    own axis name the second camera's image of a follow-up event was not known as one
    and started more (an acquisition without end). Follow-ups now come from one camera's
    image, and a follow-up event's images are all known by its axes."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "multi.cfg"
    cfg.write_text(MULTI_CAMERA_CFG)
    r = subprocess.run([sys.executable, "-c", MULTI_CAMERA_RUN, str(cfg)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["cameras"] == 2
    for cam in ("0", "1"):
        run = out[cam]
        assert run["rule_cameras"] == [int(cam)]  # one rule call, on that camera's image
        # 1 event + 1 cell x 2 planes, each on 2 cameras
        assert len(run["images"]) == 6 and all(n > 0 for n in run["found"])
        assert sorted((a.get("site", -1), a.get("z", -1)) for a in run["images"]) == [
            (-1, -1), (-1, -1), (0, 0), (0, 0), (0, 1), (0, 1)]
    assert out["refused"] == "follow_up_camera=2, but the core has 2 camera(s): give 0 to 1."


# -- in this process, on the shared demo core ----------------------------------------------
def test_every_time_point_gets_its_follow_ups_before_the_acquisition_ends(beads, mm_core):
    """Two first-round events, each starting a 2-plane stack at its best cell: the
    processor ends the acquisition only once both stacks are queued and imaged."""
    from pycromanager import Acquisition

    proc = DetectionProcessor(load_detector("classical"), core=mm_core,
                              follow_up=zstack_at_cells([-1.0, 1.0], max_cells=1))
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, [{"axes": {"time": 0}}, {"axes": {"time": 1}}])
    acq.await_completion()
    axes = sorted((a.get("time"), a.get("cell", -1), a.get("z", -1))
                  for a in (r["axes"] for r in proc.results))
    # each stack carries its parent's time point (and not its z), one cell number each
    assert axes == [(0, -1, -1), (0, 0, 0), (0, 0, 1), (1, -1, -1), (1, 1, 0), (1, 1, 1)]
    assert proc.follow_up_events == 4


def test_follow_ups_are_imaged_in_the_channel_their_axes_name(beads, mm_core):
    """zstack_at_cells keeps the parent's "channel" axis, but an image's metadata has no
    "config_group": the follow-ups were imaged in the last event's channel (FITC, at its
    exposure) and saved labelled DAPI."""
    from pycromanager import Acquisition, multi_d_acquisition_events

    taken = []

    def hook(event):
        taken.append((event["axes"], mm_core.get_current_config("Channel"),
                      mm_core.get_exposure()))
        return event

    proc = DetectionProcessor(load_detector("classical"), core=mm_core,
                              follow_up=zstack_at_cells([0.0, 1.0], max_cells=1))
    acq = Acquisition(directory=None, image_process_fn=proc, post_hardware_hook_fn=hook)
    proc.acquire(acq, multi_d_acquisition_events(
        channel_group="Channel", channels=["DAPI", "FITC"], channel_exposures_ms=[7, 12]))
    acq.await_completion()
    follow = [(a["channel"], c, x) for a, c, x in taken if "cell" in a]
    assert sorted(follow) == [("DAPI", "DAPI", 7.0)] * 2 + [("FITC", "FITC", 12.0)] * 2


class _Aborted:
    """What a processor sees of an acquisition aborted after its first image: events
    submitted, most of their images never delivered."""

    def __init__(self):
        import queue

        self._event_queue: queue.Queue = queue.Queue()

    def acquire(self, events):
        pass


def test_the_next_acquisition_ends_after_one_that_did_not_deliver_every_image(beads,
                                                                              mm_core):
    """The images an aborted acquisition never delivered stayed pending in the processor,
    so the next acquisition through it was never ended (await_completion for ever)."""
    import threading

    from pycromanager import Acquisition

    proc = DetectionProcessor(load_detector("classical"), core=mm_core)
    aborted = _Aborted()
    proc.acquire(aborted, [{"axes": {"time": t}} for t in range(3)])
    proc(beads.snap().pixels, {"Axes": {"time": 0}}, aborted._event_queue)
    acq = Acquisition(directory=None, image_process_fn=proc)
    proc.acquire(acq, [{"axes": {"time": 0}}])
    waiter = threading.Thread(target=acq.await_completion, daemon=True)
    waiter.start()
    waiter.join(20)
    ended = not waiter.is_alive()
    if not ended:  # end it for the tests that follow on this engine
        acq.mark_finished()
        waiter.join(60)
    assert ended and len(proc.results) == 2


def test_without_a_core_the_tags_pixel_size_maps_the_boxes(beads, mm_core):
    """No core given (nothing to read a calibration from): the image tags' pixel size
    (0.5 µm with the demo's 20X) maps pixels to the stage; a given affine wins."""
    from pycromanager import Acquisition

    mm_core.set_config("Objective", "20X")
    mm_core.wait_for_config("Objective", "20X")
    try:
        plain = DetectionProcessor(load_detector("classical"))
        given = DetectionProcessor(load_detector("classical"), affine=np.eye(2) * 2.0)
        for proc in (plain, given):
            with Acquisition(directory=None, image_process_fn=proc) as acq:
                acq.acquire({"axes": {"time": 0}, "x": 5.0, "y": -5.0})
    finally:
        mm_core.set_config("Objective", "10X")
        mm_core.wait_for_config("Objective", "10X")
    for proc, scale in ((plain, 0.5), (given, 2.0)):
        rec = proc.results[0]["inscope"]
        assert rec["pixel_size_um"] == 0.5
        d = rec["detections"][0]
        x0, y0 = rec["stage_um"]["x"], rec["stage_um"]["y"]
        assert d["center_um"][0] == pytest.approx(x0 + scale * (d["center_px"][0] - 256),
                                                  abs=0.01)
        assert d["center_um"][1] == pytest.approx(y0 + scale * (d["center_px"][1] - 256),
                                                  abs=0.01)


def test_called_directly_on_tags_without_z_the_core_gives_the_focus(beads, mm_core):
    """An image whose tags say where the stage was in x and y but not z (an event that
    did not move the focus): z comes from the core; with no core, 0."""
    img = beads.snap().pixels
    mm_core.set_position(2.5)
    mm_core.wait_for_system()
    tags = {"Axes": {"time": 0}, "XPosition_um_Intended": 3.0,
            "YPosition_um_Intended": -4.0, "PixelSize_um": 1.0}
    _, md = DetectionProcessor(load_detector("classical"), core=mm_core)(img, dict(tags))
    assert md["inscope"]["stage_um"] == pytest.approx({"x": 3.0, "y": -4.0, "z": 2.5},
                                                       abs=0.05)
    _, md = DetectionProcessor(load_detector("classical"), core=mm_core)(
        img, {**tags, "ZPosition_um_Intended": -1.0})
    assert md["inscope"]["stage_um"]["z"] == pytest.approx(-1.0)
    mm_core.set_position(0.0)
    mm_core.wait_for_system()


def test_only_the_follow_up_cameras_image_starts_follow_ups(beads, mm_core):
    """Called as pycro-manager calls it, with the event queue: a Multi Camera's second
    image of an event (tag CameraChannelIndex 1) starts none."""
    import queue

    img = beads.snap().pixels
    calls = []

    def rule(det, md):
        calls.append(md.get("CameraChannelIndex"))
        return [{"axes": {"site": len(calls)}, "x": 0.0, "y": 0.0}]

    proc = DetectionProcessor(load_detector("classical"), follow_up=rule)
    q: queue.Queue = queue.Queue()
    for cam in (0, 1):
        proc(img, {"Axes": {"time": 0}, "CameraChannelIndex": cam}, q)
    assert calls == [0] and q.get_nowait() == [{"axes": {"site": 1}, "x": 0.0, "y": 0.0}]
    assert q.empty()
    second = DetectionProcessor(load_detector("classical"), follow_up=rule,
                                follow_up_camera=1)
    for cam in (0, 1):
        second(img, {"Axes": {"time": 0}, "CameraChannelIndex": cam}, q)
    assert calls == [0, 1]


@pytest.mark.parametrize("camera", [1, -1])
def test_a_follow_up_camera_the_core_does_not_have_is_refused(beads, mm_core, camera):
    proc = DetectionProcessor(load_detector("classical"), core=mm_core,
                              follow_up=zstack_at_cells([0.0]), follow_up_camera=camera)
    with pytest.raises(ValueError) as e:
        proc.acquire(None, [{"axes": {"time": 0}}])
    assert str(e.value) == (f"follow_up_camera={camera}, but the core has 1 camera(s): "
                            "give 0.")


def test_the_zstack_rule_offsets_scores_and_defaults(beads, mm_core):
    from inscope.acquisition.frame import StagePosition
    from inscope.integrations.common import detect_image

    det = detect_image(load_detector("classical"), beads.snap().pixels,
                       position=StagePosition(0.0, 0.0, 1.0))
    cells = sorted(det.record["detections"], key=lambda d: -d["score"])
    assert len(cells) > 4
    md = {"Axes": {"time": 2, "z": 7, "position": 1}}
    events = zstack_at_cells([0.5, 2.0])(det, md)  # default: the 3 best cells
    assert len(events) == 6
    assert [e["z"] for e in events[:2]] == [1.5, 3.0]  # focus + offset, as given
    assert events[0]["axes"] == {"time": 2, "position": 1, "cell": 0, "z": 0}
    assert (events[0]["x"], events[0]["y"]) == tuple(cells[0]["center_um"])
    floor = cells[2]["score"]
    n = sum(d["score"] >= floor for d in cells)
    assert len(zstack_at_cells([0.0], max_cells=100, min_score=floor)(det, md)) == n
