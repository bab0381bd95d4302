"""``inscope demo``, ``inscope run`` and ``inscope bench`` as a user types them, run in this
process (real simulator, real detector, real ZMQ sockets on 127.0.0.1).

* the demo without --frames or --seconds runs its 300 frames with the tour, on the seed
  given, and moves to a free port when its default one is taken;
* ``run`` refuses a taken port (a service someone else subscribes to must not move),
  reads its TOML and lets flags override it, says "(dry-run)" when moves are not made,
  names the summary it wrote, and prints the provider note of the detector it loaded;
  its last line about the target says whose truth the error was measured against (a
  slide's labels, the simulator's);
* a run exits 1 when an output stops (a file on /dev/full), when its summary cannot be
  written, or when its camera fails mid-way, keeping what it did; a summary into a named
  pipe goes through the pipe;
* an install missing one of inscope's parts exits 1 with one line saying to reinstall;
* ``-o`` values keep every "=" after the first; bad flags say they came from the command
  line; without -v inscope's own notices still show;
* ``bench``'s parser: its defaults, its repeatable flags, the choices it accepts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from _support.sockets import free_port

from inscope.cli import build_parser, main
from inscope.commands import DEMO_FRAMES, config_from_args
from inscope.config import ConfigError
from inscope.records import read_jsonl

QUIET = ["--no-window", "--no-progress"]


@pytest.fixture(autouse=True)
def _restore_inscope_log_level():
    """The commands set the 'inscope' logger's level (as a CLI run should): undo it."""
    lg = logging.getLogger("inscope")
    level = lg.level
    yield
    lg.setLevel(level)


def _taken_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def _run_args(*extra: str) -> list[str]:
    return ["run", "--backend", "sim", "-o", "shape=[128, 128]", "-o", "seed=1",
            "--model", "classical", "--no-zmq", *QUIET, "--frames", "3", *extra]


# -- demo -------------------------------------------------------------------------------
def test_demo_runs_its_default_length_with_the_tour_on_a_free_port(tmp_path, capsys):
    """Its default PUB port taken by another program, the demo still runs (on a port the
    system gives, and says which); 300 frames, the tour directing steer + focus."""
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 5556))
        blocker.listen(1)
    except OSError:  # something else already holds it: the fallback is exercised anyway
        pass
    try:
        rc = main(["demo", "--out", str(tmp_path / "demo"), *QUIET, "--model", "classical"])
    finally:
        blocker.close()
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    (header,) = [ln for ln in cap.out.splitlines() if ln.startswith("inscope demo:")]
    assert f"{DEMO_FRAMES} frames" in header
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert s["frames"] == DEMO_FRAMES and s["stop_reason"] == "frames"
    assert s["control"]["mode"] == "steer+focus" and "tour" in s["control"]
    (pub,) = [ln for ln in cap.out.splitlines() if ln.startswith("detections on tcp://")]
    assert "tcp://127.0.0.1:5556 " not in pub, pub
    out = tmp_path / "demo"
    assert (out / "overlay.mp4").stat().st_size > 0
    # (the records output may drop under load rather than stall the loop)
    assert DEMO_FRAMES // 2 < len(read_jsonl(out / "detections.jsonl")) <= DEMO_FRAMES


def test_demo_config_is_the_drifting_simulator_with_every_output_in_one_folder(tmp_path):
    """What ``inscope demo`` and ``inscope bench --backend demo`` run: the simulator of
    DEMO_SIM (its seed replaced when one is given), steer + focus with a calibrated
    simulator's gain and a step long enough to reach the next cell, and every output
    (video, snapshots, records, summary) under the one folder."""
    from inscope.commands import DEMO_SIM, demo_config

    out = tmp_path / "o"
    cfg = demo_config(out, seed=11)
    m = cfg.microscope
    assert m.backend == "sim" and m.options == {**DEMO_SIM, "seed": 11}
    assert demo_config(out).microscope.options == DEMO_SIM
    c = cfg.control
    assert (c.mode, c.max_step_um, c.gain) == ("steer+focus", 250.0, 1.0)
    o = cfg.outputs
    assert (o.video, o.snapshot_dir, o.records.dir, cfg.run.summary) == (
        str(out / "overlay.mp4"), str(out / "snapshots"), str(out),
        str(out / "summary.json"))


def _first_centres(out) -> np.ndarray:
    dets = read_jsonl(out / "detections.jsonl")[0]["detections"]
    return np.array([d["center_px"] for d in dets]).reshape(-1, 2)


def _shared(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the centres of *a* with one of *b* within 3 px."""
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    return float((d.min(axis=1) <= 3.0).mean())


def test_demo_seed_chooses_the_specimen(tmp_path):
    """The same seed shows the same cells; another seed other cells. (Not all of them:
    the demo runs on the wall clock, so its drifting focus and its crawling cells (one in
    twelve, 8 µm/s) have moved by the first frame by however long the start took.)"""
    def demo(name: str, seed: int) -> np.ndarray:
        out = tmp_path / name
        assert main(["demo", "--out", str(out), "--seed", str(seed), "--frames", "2",
                     *QUIET, "--model", "classical", "--no-zmq"]) == 0
        return _first_centres(out)

    a, again, other = demo("a", 5), demo("again", 5), demo("other", 6)
    assert len(a) > 20
    assert _shared(a, again) > 0.7
    assert _shared(a, other) < 0.2


def test_demo_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--out", str(f), *QUIET]) == 2
    assert "is a file" in capsys.readouterr().err
    # an existing folder is fine (the run writes into it)
    (tmp_path / "d").mkdir()
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "2", *QUIET,
                 "--model", "classical", "--no-zmq"]) == 0


# -- run --------------------------------------------------------------------------------
def test_run_refuses_a_taken_port_instead_of_moving_to_another(tmp_path, capsys):
    held, port = _taken_port()
    try:
        rc = main(["run", "--backend", "sim", "-o", "shape=[128, 128]", "--model",
                   "classical", *QUIET, "--frames", "3", "--rep-port", str(port),
                   "--pub-port", str(free_port())])
    finally:
        held.close()
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: ") and str(port) in err and "\n" not in err.strip()


def test_a_part_missing_from_the_install_is_named_with_the_way_to_fix_it(monkeypatch, capsys):
    """An install that lacks one of inscope's own parts (a module deleted or never built:
    here the ZMQ interface, made unimportable through ``sys.modules``, the import
    system's own way of saying a module is absent) ends with exit 1 and one line saying
    what to reinstall, not a traceback."""
    monkeypatch.setitem(sys.modules, "inscope.zmq_api", None)
    rc = main(_run_args())
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("error: a part inscope needs is not installed or not built: ")
    assert "inscope.zmq_api" in err and "Reinstall with 'pip install -e .'" in err
    assert "\n" not in err


@pytest.mark.parametrize("backend", ["sim", "slide"])
def test_the_final_centring_error_says_where_its_truth_came_from(backend, tmp_path, capsys):
    """A slide's truth is its file's labels, the simulator's its own specimen: the last
    line about the target says which one the error was measured against."""
    from conftest import make_nuclei

    if backend == "slide":
        img, lab = make_nuclei(shape=(300, 300), n=10, seed=2, touching=0)
        np.savez(tmp_path / "s.npz", image=img, labels=lab, pixel_size_um=0.65)
        scope = ["--backend", "slide", "-o", f"path={tmp_path / 's.npz'}", "-o", "fov=128",
                 "-o", "realtime=false"]
    else:
        scope = ["--backend", "sim", "-o", "shape=[128, 128]", "-o", "seed=1"]
    rc = main(["run", *scope, "--model", "classical", "--no-zmq", *QUIET, "--frames", "15",
               "--mode", "steer"])
    out = capsys.readouterr().out
    assert rc == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith("last frame: target track")]
    said = "(the slide's labels)" if backend == "slide" else "(simulator's ground truth)"
    assert line.endswith(said), line


def test_run_reads_its_toml_and_flags_override_it(tmp_path, capsys):
    toml = tmp_path / "svc.toml"
    toml.write_text('[microscope]\nbackend = "sim"\noptions = {shape = [128, 128], seed = 1}\n'
                    '[detector]\nmodel = "classical"\n[outputs]\nwindow = false\n'
                    '[outputs.zmq]\nenabled = false\n[run]\nframes = 4\nprogress = false\n')
    s = tmp_path / "s.json"
    assert main(["run", "--config", str(toml), "--summary", str(s)]) == 0
    assert json.loads(s.read_text())["frames"] == 4
    s = tmp_path / "s2.json"  # a new one: an existing summary is never replaced
    assert main(["run", "--config", str(toml), "--summary", str(s), "--frames", "6"]) == 0
    assert json.loads(s.read_text())["frames"] == 6


def test_run_says_dry_run_and_names_its_summary(tmp_path, capsys):
    s = tmp_path / "s.json"
    assert main(_run_args("--dry-run", "--summary", str(s))) == 0
    out = capsys.readouterr().out
    (scope_line,) = [ln for ln in out.splitlines() if ln.startswith("microscope ")]
    assert scope_line.endswith("(dry-run)"), scope_line
    assert f"summary: {s}" in out.splitlines()
    assert main(_run_args()) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0] == "microscope simulated, detector classical on opencv, control off"
    # the classical detector has no provider note: the summary follows at once
    assert lines[1].startswith("frames 3 in "), lines[:3]
    assert not [ln for ln in lines if ln.startswith("summary: ")]
    assert "\r" not in cap.out + cap.err  # --no-progress: no live progress line


dev_full = pytest.mark.skipif(not Path("/dev/full").exists(),
                              reason="/dev/full (writes fail: no space left) is Linux's")


@dev_full
def test_an_output_that_stops_makes_the_run_fail(tmp_path, capsys):
    """The records file is a link to /dev/full, where every write fails as on a full
    disk: the run goes on, says which output stopped and why, and exits 1."""
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "detections.jsonl").symlink_to("/dev/full")
    s = tmp_path / "s.json"
    assert main(_run_args("--record", str(rec), "--summary", str(s))) == 1
    err = capsys.readouterr().err
    assert "error: output(s) stopped during the run: records: No space left on device" in err
    assert json.loads(s.read_text())["frames"] == 3  # the rest of the run is kept


@dev_full
def test_a_summary_that_cannot_be_written_is_printed_and_fails_the_run(tmp_path, capsys):
    s = tmp_path / "s.json"
    s.symlink_to("/dev/full")
    assert main(_run_args("--summary", str(s))) == 1
    out = capsys.readouterr().out  # the summary itself follows, on stdout
    assert f"error: the summary could not be written to {s} (No space left on device)" in out
    assert not [ln for ln in out.splitlines() if ln.startswith("summary: ")]
    assert s.is_symlink()  # written through, never renamed over


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_summary_into_a_pipe_is_written_through_it(tmp_path, capsys):
    """``--summary /dev/stdout`` or a named pipe a script reads: the JSON goes through
    the pipe, which stays a pipe (renaming a file over it would replace it)."""
    fifo = tmp_path / "summary.pipe"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the writer can open
    try:
        assert main(_run_args("--summary", str(fifo))) == 0
        data = b""
        while chunk := _read_some(fd):
            data += chunk
    finally:
        os.close(fd)
    assert json.loads(data)["frames"] == 3
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert f"summary: {fifo}" in capsys.readouterr().out.splitlines()


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def test_run_prints_the_note_of_the_provider_it_fell_back_from(tmp_path, capsys):
    """The shipped model on whatever this machine has: the loader's note (e.g. 'CUDA not
    used: ...') is what the user reads to fix a GPU set-up."""
    from inscope.detector import load_detector

    det = load_detector(None)
    note = getattr(det, "provider_note", "")
    det.close()
    argv = ["run", "--backend", "sim", "-o", "shape=[128, 128]", "--no-zmq", *QUIET,
            "--frames", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    if note:
        assert note in out
    else:  # a machine where the asked-for provider loaded: no note line at all
        assert not [ln for ln in out if "not used" in ln]


def test_without_verbose_inscope_notices_still_show():
    lg = logging.getLogger("inscope")
    lg.setLevel(logging.NOTSET)
    assert main(["run", "--backend", "sim", "-o", "shape=[128, 128]", "--model", "classical",
                 "--no-zmq", *QUIET, "--frames", "1"]) == 0
    assert lg.level == logging.INFO
    lg.setLevel(logging.NOTSET)
    assert main(["run", "--backend", "sim", "-o", "shape=[128, 128]", "--model", "classical",
                 "--no-zmq", *QUIET, "--frames", "1", "-v"]) == 0
    assert lg.level == logging.NOTSET  # -v: the root's INFO level decides


# -- flags into the config --------------------------------------------------------------
def test_switches_left_out_keep_what_the_toml_says(tmp_path):
    """An on/off flag not typed must not switch the TOML's setting off: a config that
    asks for a dry run stays a dry run when the user adds no --dry-run."""
    from inscope.config import load_config

    toml = tmp_path / "svc.toml"
    toml.write_text('[microscope]\ndry_run = true\n[outputs.zmq]\noverlay = true\n'
                    '[outputs.eyepiece]\nenabled = true\n'
                    f'[outputs.records]\ndir = "{(tmp_path / "rec").as_posix()}"\n'
                    'frames = true\n')
    cfg = config_from_args(build_parser().parse_args(["run"]), load_config(toml))
    assert cfg.microscope.dry_run is True
    assert cfg.outputs.zmq.overlay is True
    assert cfg.outputs.eyepiece.enabled is True
    assert cfg.outputs.records.frames is True


def test_an_option_value_keeps_every_equals_sign_after_the_first():
    args = build_parser().parse_args(["run", "--backend", "replay", "-o",
                                      "path=runs/a=b=c.tif", "-o", "exposure_ms = 7"])
    cfg = config_from_args(args)
    assert cfg.microscope.options["path"] == "runs/a=b=c.tif"
    assert cfg.microscope.options["exposure_ms"] == 7


def test_an_option_without_a_value_is_refused_with_the_form_to_use():
    args = build_parser().parse_args(["run", "-o", "exposure_ms"])
    with pytest.raises(ConfigError, match=r"--option 'exposure_ms' must be KEY=VALUE, "
                                          r"e.g. -o exposure_ms=10"):
        config_from_args(args)


def test_a_bad_flag_value_says_it_came_from_the_command_line():
    args = build_parser().parse_args(["run", "--score-threshold", "2"])
    with pytest.raises(ConfigError, match="command line"):
        config_from_args(args)


# -- bench's parser ---------------------------------------------------------------------
def test_bench_defaults():
    a = build_parser().parse_args(["bench"])
    assert (a.frames, a.exposure_ms, a.mode, a.out) == (200, 10.0, "steer",
                                                        "runs/bench/bench.json")
    assert a.model is None and a.backend is None and a.provider is None
    assert a.spinning is None and a.no_plots is False


def test_values_are_parsed_to_their_types_and_defaults():
    a = build_parser().parse_args(["bench", "--frames", "7", "--exposure-ms", "2.5",
                                   "--calibration", "cal.json"])
    assert (a.frames, a.exposure_ms, a.calibration) == (7, 2.5, "cal.json")
    d = build_parser().parse_args(["demo", "--seed", "5"])
    assert d.seed == 5 and d.out == "runs/demo"
    r = build_parser().parse_args(["run", "--frames", "9", "--seconds", "1.5"])
    assert (r.frames, r.seconds) == (9, 1.5)


def test_bench_repeatable_flags_collect_every_value():
    a = build_parser().parse_args(
        ["bench", "--model", "default", "--model", "classical", "--backend", "sim",
         "--backend", "demo", "--backend", "slide", "--provider", "cpu", "--provider",
         "cuda", "--spinning", "on", "--spinning", "off"])
    assert a.model == ["default", "classical"]
    assert a.backend == ["sim", "demo", "slide"]
    assert a.provider == ["cpu", "cuda"]
    assert a.spinning == ["on", "off"]


@pytest.mark.parametrize("argv", [
    ["bench", "--backend", "replay"], ["bench", "--spinning", "sometimes"],
    ["bench", "--mode", "fly"], ["bench", "--config", "my.cfg"],
    ["run", "--mode", "fly"], ["demo", "--mode", "fly"], ["run", "--backend", "nope"],
    ["run", "--record-format", "xml"]])
def test_bench_run_and_demo_refuse_what_they_do_not_take(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_demo_says_its_own_defaults_in_help():
    (demo,) = [p for p in _subparsers() if p.prog.endswith(" demo")]
    helps = {a.dest: a.help for a in demo._actions}
    assert f"default {DEMO_FRAMES} unless --seconds" in helps["frames"]
    assert helps["out"] == "output folder (default runs/demo)"
    assert "demo default: steer+focus" in helps["mode"]
    (run,) = [p for p in _subparsers() if p.prog.endswith(" run")]
    assert "(default: off)" in {a.dest: a.help for a in run._actions}["mode"]


def _subparsers():
    import argparse

    for a in build_parser()._actions:
        if isinstance(a, argparse._SubParsersAction):
            yield from a.choices.values()


def test_an_error_is_said_on_one_line_and_never_as_an_empty_one():
    from inscope.commands import _one_line

    assert _one_line(ValueError("bad value\n   in   file x")) == "bad value in file x"
    assert _one_line(ValueError()) == "ValueError"
    assert _one_line(OSError("")) == "OSError"


def test_a_bad_demo_flag_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--score-threshold", "2", *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "score_threshold" in err and err.count("\n") == 1


def test_verbose_demo_leaves_the_level_to_the_root_logger(tmp_path):
    lg = logging.getLogger("inscope")
    lg.setLevel(logging.NOTSET)
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "1", *QUIET, "--model",
                 "classical", "--no-zmq", "-v"]) == 0
    assert lg.level == logging.NOTSET


def test_a_demo_that_does_not_steer_has_no_tour(tmp_path):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--frames", "2", "--mode", "track", *QUIET,
                 "--model", "classical", "--no-zmq"]) == 0
    control = json.loads((out / "summary.json").read_text())["control"]
    assert control["mode"] == "track" and "tour" not in control


def test_a_run_whose_camera_fails_mid_way_exits_1_and_keeps_what_it_did(tmp_path, capsys):
    """A replayed folder whose fifth frame is a damaged file: four frames are processed
    and summarised, the stop names the file, and the exit code says the run failed."""
    import tifffile

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        img = np.random.default_rng(i).integers(0, 1000, (128, 128)).astype(np.uint16)
        tifffile.imwrite(frames / f"f{i:03d}.tif", img)
    (frames / "f004.tif").write_bytes(b"II*\x00" + b"damaged" * 10)
    s = tmp_path / "s.json"
    rc = main(["run", "--backend", "replay", "--file", str(frames), "-o", "pixel_size_um=1",
               "--model", "classical", "--no-zmq", *QUIET, "--frames", "10",
               "--summary", str(s)])
    assert rc == 1
    summary = json.loads(s.read_text())
    assert summary["frames"] == 4 and "f004.tif" in summary["error"]
    assert "f004.tif" in capsys.readouterr().out
