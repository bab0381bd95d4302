"""The simulated camera in its own (spawned) process: starts, streams at the camera's pace
with the stage's timing, stops cleanly, and leaves no orphan after Ctrl-C or a crash."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from inscope.acquisition.simulated import SimulatedMicroscope


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's pid now
        return True
    if sys.platform.startswith("linux"):  # a zombie is dead for our purpose
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    return True


def _gone(pid: int, timeout: float = 10.0) -> bool:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_process_camera_streams_the_stage_and_stops_cleanly():
    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, xy_settle_ms=400.0, xy_quantum_um=0.0)
    frames = []
    with s.stream() as st:
        for f in st:
            frames.append(f)
            cam = s.camera_process
            if len(frames) == 3:
                s.move_xy(60.0, 0.0, wait=False)  # reaches the other process
            if f.position.x >= 60.0 and not f.moving:
                break
            assert len(frames) < 500
    pid = cam.pid
    assert pid != os.getpid()
    assert s.camera_process is None, "closing the stream stops the camera"
    assert _gone(pid, 5.0)
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    f = frames[0]
    assert f.pixels.shape == (512, 512) and f.pixels.dtype == np.uint16
    assert f.truth is not None and len(f.truth) > 10
    assert f.metadata["exposure_end_ns"] <= f.stamps["ready"]
    # the move took its 400 ms in the camera's view: frames in between were flagged and
    # saw the stage part of the way
    mid = [f for f in frames if f.moving]
    assert mid and all(0.0 <= f.position.x <= 60.0 for f in mid)
    assert sum(0.0 < f.position.x < 60.0 for f in mid) >= len(mid) - 2
    assert frames[-1].position.x == pytest.approx(60.0)
    # the frames are real renders of the field: the truth moved with the stage
    assert not np.array_equal(frames[0].pixels, frames[-1].pixels)


_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from inscope.acquisition.simulated import SimulatedMicroscope

    def main():
        s = SimulatedMicroscope(seed=0, exposure_ms=10.0)
        with s.stream() as st:
            st.get(timeout=60)
            print(s.camera_process.pid, flush=True)
            if sys.argv[1] == "crash":
                os._exit(3)  # no cleanup at all, as after a segfault
            while True:
                st.get(timeout=5)

    if __name__ == "__main__":
        main()
""")


def _start(mode: str, tmp_path) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "cam.py"
    script.write_text(_SCRIPT)
    kw: dict = {}
    if os.name == "posix":
        # its own process group, and SIGINT at its default as under a terminal: a shell
        # starts background jobs (`make test &`) with SIGINT ignored, which the child
        # would inherit, and then Ctrl-C could not reach it
        kw = {"start_new_session": True,
              "preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)}
    p = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, **kw)
    line = p.stdout.readline()
    assert line.strip().isdigit(), p.stderr.read()
    return p, int(line)


def test_no_orphan_after_a_crash(tmp_path):
    p, child = _start("crash", tmp_path)
    assert p.wait(30) == 3
    assert _gone(child), "the camera process outlived its crashed parent"


@pytest.mark.skipif(os.name != "posix", reason="Ctrl-C to a process group is POSIX")
def test_no_orphan_after_ctrl_c(tmp_path):
    p, child = _start("run", tmp_path)
    assert _alive(child)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    p.wait(30)
    assert _gone(child), "the camera process outlived Ctrl-C"
    assert "KeyboardInterrupt" in p.stderr.read()


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX process priorities")
def test_the_renderer_runs_below_the_loops_priority():
    """The simulated camera's process renders at a lower CPU priority than the loop's
    (a real camera's frames cost the host nothing): on a busy machine the detector and
    the control thread get the CPU first."""
    from inscope.acquisition.simulated.camera_process import NICE

    s = SimulatedMicroscope(seed=0, exposure_ms=10.0)
    with s.stream() as st:
        for _ in st:
            pid = s.camera_process.pid
            break
        # the child lowers its own priority as it starts: read it once it streams
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        child = os.getpriority(os.PRIO_PROCESS, pid)
    s.close()
    assert child == min(mine + NICE, 19)


# -- what the parent's side passes on and frees ------------------------------------------
def test_an_8_bit_camera_streams_8_bit_frames_through_its_process():
    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, bit_depth=8, shape=(96, 128))
    with s.stream() as st:
        f = st.get(timeout=60)
    assert f.pixels.dtype == np.uint8 and f.pixels.shape == (96, 128)
    assert f.pixels.max() > 0


def test_the_camera_is_a_named_daemon_process_and_close_frees_everything():
    """While it streams: one child process named ``inscope-sim-camera``, a daemon (it
    cannot outlive the loop's process), shared memory for the stage state and the
    frames. After close: the child has ended, both shared-memory segments are gone, and
    the stage state is the microscope's own again (moves keep working)."""
    import multiprocessing as mp
    from multiprocessing import shared_memory

    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64))
    with s.stream() as st:
        assert len(list(itertools.islice(st, 4))) == 4  # frames through the process
        cam = s.camera_process
        (child,) = [p for p in mp.active_children() if p.pid == cam.pid]
        assert child.name == "inscope-sim-camera" and child.daemon
        names = (cam._shm_state.name, cam._shm_frames.name)
        assert cam.frames >= 4
    assert _gone(cam.pid, 5.0) and cam.process is None and s.camera_process is None
    for name in names:
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
    cam.stop()  # idempotent
    p = s.position()
    assert s.move_xy(p.x + 5.0, p.y)  # the state is private again, not a freed mapping
    assert s.position().x == pytest.approx(p.x + 5.0)


def test_each_emitted_frame_is_counted_once():
    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64))
    with s.stream() as st:
        got = [st.get(timeout=60) for _ in range(5)]
        cam = s.camera_process
    assert cam.frames == st.produced >= len(got)


def test_frames_carry_the_time_defocus_and_the_calibrated_affine():
    """Each frame from the process has its simulated time, its defocus from the focal
    surface, and the microscope's current affine (a calibration applied before the
    stream reaches the frames)."""
    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64), drift_um_per_s=0.0)
    cal = np.array([[0.0, -0.5], [0.5, 0.0]])
    s.affine = cal
    p = s.position()
    z_focus = s.true_focus_z(p.x, p.y)
    s.move_z(z_focus + 1.5)
    with s.stream() as st:
        frames = [st.get(timeout=60) for _ in range(3)]
    for f in frames:
        assert np.allclose(f.affine, cal)
        assert f.metadata["defocus_um"] == pytest.approx(1.5, abs=0.01)
    t = [f.metadata["sim_time_s"] for f in frames]
    assert all(b > a for a, b in zip(t, t[1:], strict=False)) and t[0] > 0


def test_a_second_stream_on_the_same_camera_is_refused_with_the_fix():
    from inscope.acquisition.errors import AcquisitionError

    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64))
    with s.stream() as st:
        st.get(timeout=60)
        with pytest.raises(AcquisitionError, match=r"A stream is already running on this "
                           r"simulated camera; close it before starting another\."):
            s.camera_process.produce(lambda f: None, threading.Event())


def test_a_camera_process_that_dies_ends_the_stream_with_an_error_naming_it():
    """The renderer killed (out of memory, a crash): the stream does not wait for ever;
    it ends with an error that says the camera process ended."""
    from inscope.acquisition.errors import AcquisitionError

    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64))
    with s.stream() as st:
        st.get(timeout=60)
        os.kill(s.camera_process.pid, signal.SIGKILL)
        with pytest.raises(AcquisitionError, match="simulated camera process ended"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                st.get(timeout=5)


def test_a_renderer_that_fails_in_the_process_ends_the_stream_with_its_error():
    """The child reports its exception in one line; the stream ends with it (not with a
    hang or a bare 'process ended')."""
    from _support.specimens import FailingSpecimen

    from inscope.acquisition.errors import AcquisitionError
    from inscope.acquisition.simulated.config import SimConfig

    cfg = SimConfig(seed=0, exposure_ms=10.0, shape=(64, 64))
    s = SimulatedMicroscope(cfg, specimen=FailingSpecimen(cfg, good=2))
    got = []
    with pytest.raises(AcquisitionError) as err:  # noqa: PT012 - frames, then the error
        with s.stream() as st:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got.append(st.get(timeout=10))
    assert str(err.value) == ("simulated camera process failed: RuntimeError: the "
                              "renderer broke")
    assert 1 <= len(got) <= 2


def test_a_camera_never_started_stops_as_a_no_op():
    from inscope.acquisition.simulated.camera_process import ProcessCamera

    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64))
    cam = ProcessCamera(s)
    assert (cam.pid, cam.process, cam.frames) == (None, None, 0)
    cam.stop()
    assert s.camera_process is None
    from inscope.acquisition.errors import AcquisitionError

    with pytest.raises(AcquisitionError, match="open a new stream"):
        cam._copy_slot(0)  # no ring to read from


def test_the_stop_message_ends_the_child_cleanly_and_closes_the_pipe():
    """Closing the stream tells the child to stop: it exits by itself (exit code 0, not
    terminated), the parent's pipe end is closed, and a frame asked for afterwards is
    refused with the fix."""
    from inscope.acquisition.errors import AcquisitionError

    s = SimulatedMicroscope(seed=0, exposure_ms=10.0, shape=(64, 64))
    with s.stream() as st:
        st.get(timeout=60)
        cam = s.camera_process
        proc, conn = cam.process, cam._conn
    assert proc.exitcode == 0
    assert conn.closed
    with pytest.raises(AcquisitionError, match=r"the simulated camera was stopped while "
                       r"streaming \(its microscope was closed\); open a new stream\."):
        cam._copy_slot(0)
