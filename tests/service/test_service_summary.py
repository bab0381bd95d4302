"""What a run leaves for its user: the summary file, the printed summary, the outputs
that stopped, and what a failed build closes.

The summary is a run's only record of what happened (latency, moves, why it stopped):
it is written atomically, to a device or pipe as it is, and printed whole where a run
ends; each expected line below is written out by hand, not produced by the code under
test.
"""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from _support.parts import Part

from inscope.service import _close_parts, failed_outputs, format_summary, write_summary


def _summary(**over) -> dict:
    lat = {"ready_to_published": {"p50": 9.5, "p90": 12.25, "p99": 20.0, "max": 31.125},
           "detect": {"p50": 3.0, "p90": 3.5, "p99": 4.0, "max": 6.0},
           "overhead_ready_to_published_minus_detect": {"p50": 0.5, "p99": 1.75},
           "ready_to_move_commanded": {"p50": 11.0, "p99": 22.0, "n": 7}}
    s = {"frames": 120, "duration_s": 1.25, "fps": 96.0, "camera_fps": 99.5, "dropped": 3,
         "stop_reason": "frames", "detector": {"name": "inscope-nuclei", "provider": "CPU"},
         "detections_per_frame": 41.5, "latency_ms": lat, "microscope": "sim",
         "control": {"mode": "steer", "moves_made": 4, "moves_refused": 1,
                     "moves_dry_run": 2, "targets_centred": 3,
                     "focus": {"state": "locked", "moves_made": 5}},
         "outputs": {}}
    s.update(over)
    return s


HEAD = [
    "frames 120 in 1.2 s (96.0 fps processed, camera 99.5 fps), dropped 3, stop: frames",
    "detector inscope-nuclei on CPU; 41.5 detections/frame",
    "latency ready->published p50 9.50 / p90 12.25 / p99 20.00 / max 31.12 ms",
    "        detect          p50 3.00 / p90 3.50 / p99 4.00 / max 6.00 ms",
    "        overhead        p50 0.50 / p99 1.75 ms",
    "        ready->move     p50 11.00 / p99 22.00 ms (n=7)",
    "control steer: XY moves made 4, refused 1, dry-run 2, targets centred 3; focus locked "
    "(5 focus moves)",
]


# -- format_summary ----------------------------------------------------------------------
def test_the_printed_summary_says_frames_detector_latency_and_control_line_by_line():
    assert format_summary(_summary()).split("\n") == HEAD


def test_a_control_section_without_counts_prints_zeros_and_none():
    s = _summary(control={"mode": "off"})
    assert format_summary(s).split("\n")[-1] == (
        "control off: XY moves made 0, refused 0, dry-run 0, targets centred 0; focus None "
        "(0 focus moves)")


@pytest.mark.parametrize(("status", "said"), [
    ("centred", "centred"),
    ("moved", "being centred (moved on the last step)"),
    ("settling", "being centred (waiting for the stage to settle)"),
    ("moving", "being centred (the stage is moving)"),
    ("no-target", "no-target"),
    (None, "unknown"),
])
def test_the_last_frame_line_says_what_the_loop_was_doing_with_its_target(status, said):
    c = dict(_summary()["control"], final_centring_error_um=0.42,
             final_target={"track_id": 17, "status": status})
    lines = format_summary(_summary(control=c)).split("\n")
    assert lines[:-1] == HEAD
    assert lines[-1] == (f"last frame: target track 17 {said}, 0.42 µm from the image "
                         "center (simulator's ground truth)")


def test_a_slide_run_says_its_truth_is_the_slides_labels():
    c = dict(_summary()["control"], final_centring_error_um=0.0, final_target=None)
    lines = format_summary(_summary(control=c, microscope="slide")).split("\n")
    assert lines[-1] == ("last frame: target track None unknown, 0.0 µm from the image "
                         "center (the slide's labels)")


def test_no_final_error_no_last_frame_line():
    c = dict(_summary()["control"], final_centring_error_um=None,
             final_target={"track_id": 1, "status": "centred"})
    assert format_summary(_summary(control=c)).split("\n") == HEAD


def test_the_tour_line_gives_cells_errors_and_focus():
    tour = {"cells_visited": 3, "followed": [4, 9], "fields_travelled": 2,
            "focus_first_locked_s": 1.5,
            "centring_error_um_while_holding": {"p50": 0.1, "max": 0.9},
            "focus_error_um_after_lock": {"p50": 0.2, "p90": 0.4, "max": 0.8},
            "focus_error_um_while_locked": {"p50": 0.05, "p90": 0.15, "max": 0.25}}
    c = dict(_summary()["control"], tour=tour)
    lines = format_summary(_summary(control=c)).split("\n")
    assert lines[:-1] == HEAD
    assert lines[-1] == (
        "tour: 3 cells visited (centring error while holding p50 0.1 / max 0.9 µm), 2 "
        "moving cell(s) followed, 2 field(s) travelled to when every cell in view was "
        "visited; focus first locked at 1.5 s, focus error after that p50 0.2 / p90 0.4 / "
        "max 0.8 µm, on the frames it held locked p50 0.05 / p90 0.15 / max 0.25 µm (the "
        "rest are its checks' dithered frames; simulator's ground truth)")


def test_a_tour_without_errors_yet_prints_none_and_no_fields():
    tour = {"cells_visited": 0, "followed": [], "focus_first_locked_s": None,
            "centring_error_um_while_holding": None, "focus_error_um_after_lock": None}
    c = dict(_summary()["control"], tour=tour)
    line = format_summary(_summary(control=c, microscope="slide")).split("\n")[-1]
    assert line == (
        "tour: 0 cells visited (centring error while holding p50 None / max None µm), 0 "
        "moving cell(s) followed, 0 field(s) travelled to when every cell in view was "
        "visited; focus first locked at None s, focus error after that p50 None / p90 None "
        "/ max None µm, on the frames it held locked p50 None / p90 None / max None µm (the "
        "rest are its checks' dithered frames; the slide's labels)")


def test_each_output_gets_a_line_with_where_it_went_and_why_it_stopped():
    outputs = {
        "overlay": {"handled": 10, "dropped": 1, "errors": 0, "video": "run.mp4",
                    "video_frames": 9},
        "zmq-pub": {"handled": 120, "dropped": 0, "errors": 0,
                    "address": "tcp://127.0.0.1:5556", "sent": 118, "zmq_dropped": 2},
        "records": {"handled": 119, "dropped": 0, "errors": 1,
                    "detections": "runs/detections.jsonl", "failed": "disk full"},
        "plain": {"handled": 5, "dropped": 2, "errors": 3, "failed": None},
    }
    lines = format_summary(_summary(outputs=outputs)).split("\n")
    assert lines[:len(HEAD)] == HEAD
    assert lines[len(HEAD):] == [
        "output overlay: handled 10, dropped 1, errors 0 -> run.mp4 (9 frames)",
        "output zmq-pub: handled 120, dropped 0, errors 0 -> tcp://127.0.0.1:5556 (sent 118, "
        "zmq drops 2)",
        "output records: handled 119, dropped 0, errors 1 -> runs/detections.jsonl; "
        "STOPPED: disk full",
        "output plain: handled 5, dropped 2, errors 3",
    ]


def test_failed_outputs_names_only_those_that_stopped():
    s = {"outputs": {"a": {"failed": "disk full"}, "b": {"failed": None}, "c": {},
                     "d": {"failed": ""}, "e": {"failed": "socket closed"}}}
    assert failed_outputs(s) == {"a": "disk full", "e": "socket closed"}
    assert failed_outputs({}) == {}


# -- write_summary -----------------------------------------------------------------------
def test_the_summary_file_is_indented_json_with_a_final_newline_in_new_folders(tmp_path):
    class Odd:  # a value json cannot encode is written as its str()
        def __str__(self) -> str:
            return "odd!"

    path = tmp_path / "a" / "b" / "summary.json"
    got = write_summary({"frames": 3, "x": Odd()}, str(path))
    assert got == path
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "frames": 3,\n  "x": "odd!"\n}\n'
    assert json.loads(text) == {"frames": 3, "x": "odd!"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]  # no .tmp


def test_a_failed_write_keeps_the_old_summary_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old\n", encoding="utf-8")
    # the temporary file's name is taken by a folder: writing it fails
    (tmp_path / "summary.json.tmp").mkdir()
    with pytest.raises(OSError):
        write_summary({"frames": 1}, path)
    assert path.read_text(encoding="utf-8") == "old\n"


def test_a_write_that_fails_at_the_rename_removes_its_temporary_file(tmp_path):
    path = tmp_path / "summary.json"
    path.mkdir()  # the summary's own name is a folder: the rename fails
    with pytest.raises(OSError):
        write_summary({"frames": 1}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    assert path.is_dir()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_written_to_not_replaced(tmp_path):
    """A script reading the summary from a pipe gets it, and the pipe stays a pipe
    (renaming a temporary file over it would replace it)."""
    import threading

    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    assert write_summary({"frames": 2}, fifo) == fifo
    reader.join(5)
    assert got == ['{\n  "frames": 2\n}\n']
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.fifo"]


# -- what a failed build closes ----------------------------------------------------------
def test_a_failed_build_closes_every_part_in_order_even_when_one_fails(caplog):
    """Server, authenticator, publisher, context, detector, microscope: a part that
    fails to close is logged and the rest are still closed (the microscope last)."""
    import zmq

    calls: list[str] = []
    ctx = zmq.Context()
    parts = dict(server=Part("server", calls, fails=True), auth=Part("auth", calls),
                 pub=Part("pub", calls), ctx=ctx,
                 detector=Part("detector", calls, fails=True),
                 scope=Part("scope", calls))
    with caplog.at_level(logging.WARNING, logger="inscope.service"):
        _close_parts(**parts)
    assert calls == ["server.stop", "auth.stop", "pub.close", "detector.close",
                     "scope.close"]
    assert ctx.closed
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["closing server after a failed build: server would not stop",
                      "closing detector after a failed build: detector would not close"]


def test_a_build_that_failed_early_closes_only_the_microscope():
    calls: list[str] = []
    _close_parts(None, None, None, None, None, Part("scope", calls))
    assert calls == ["scope.close"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into any folder")
def test_a_folder_that_refuses_the_write_gives_its_own_error(tmp_path):
    """The temporary file could not even be created: the caller gets the permission
    error that says why (not a missing-file error from the clean-up)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            write_summary({"frames": 1}, folder / "summary.json")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)
