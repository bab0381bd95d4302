"""``inscope bench`` on the DemoCamera with the classical detector: report and plots."""

from __future__ import annotations

import json
import sys

import pytest

from inscope.cli import build_parser


def test_bench_reports_every_stage(mm_scope, tmp_path, capsys):
    # mm_scope makes sure the shared headless core is up (and reset) for this process
    # --out may name a folder: the report goes inside it as bench.json
    (tmp_path / "runs").mkdir()
    args = build_parser().parse_args(
        ["bench", "--frames", "30", "--backend", "headless", "--model", "classical",
         "--out", str(tmp_path / "runs")])
    assert args.func(args) == 0
    out = tmp_path / "runs" / "bench.json"
    rep = json.loads(out.read_text())
    (r,) = rep["results"]
    assert r["frames"] == 30 and r["detector"]["name"] == "classical"
    L = r["latency_ms"]
    for k in ("ready_to_dequeued", "detect", "detect_end_to_control_start", "control",
              "detect_end_to_published", "published_to_sent", "ready_to_published",
              "ready_to_sent", "ready_to_move_commanded"):
        assert k in L
    e = L["ready_to_published"]
    assert e["n"] == 30 and e["p50"] <= e["p90"] <= e["p99"] <= e["max"]
    # overhead excludes the detector, so it is below the end-to-end latency
    assert r["overhead_ms"]["p50"] < e["p50"]
    assert 0 < r["throughput_vs_camera"] <= 1.05
    assert (out.parent / "latency_cdf.png").stat().st_size > 0
    assert (out.parent / "stage_timeline.png").stat().st_size > 0
    assert "classical/opencv" in capsys.readouterr().out


def test_bench_spinning_modes_side_by_side(mm_scope, tmp_path, capsys):
    # the shipped model three times on the DemoCamera: ONNX Runtime's idle threads
    # spinning, sleeping, spinning only inside a run; each result says which the session
    # really used, and so does the table
    args = build_parser().parse_args(
        ["bench", "--frames", "15", "--backend", "headless", "--model", "default",
         "--provider", "cpu", "--spinning", "on", "--spinning", "off", "--spinning", "run",
         "--no-plots", "--out", str(tmp_path)])
    assert args.func(args) == 0
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert [r["detector"]["spinning"] for r in rep["results"]] == ["on", "off", "run"]
    assert all(r["frames"] == 15 for r in rep["results"])
    table = capsys.readouterr().out
    assert all(f"inscope-nuclei/cpu/{w} " in table for w in ("spin", "sleep", "spin-in-run"))


def test_bench_demo_runs_the_spinning_mode_asked_for(tmp_path):
    args = build_parser().parse_args(
        ["bench", "--frames", "10", "--backend", "demo", "--model", "default",
         "--spinning", "run", "--out", str(tmp_path / "b.json"), "--no-plots"])
    assert args.func(args) == 0
    (r,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert r["detector"]["spinning"] == "run" and r["frames"] == 10


def test_bench_runs_onnx_models_on_the_mirror_views_asked_for(tmp_path, capsys):
    """--mirror-views reaches the shipped model (and its result says so); the classical
    baseline beside it runs as it is."""
    args = build_parser().parse_args(
        ["bench", "--frames", "10", "--backend", "sim", "--model", "default", "--model",
         "classical", "--provider", "cpu", "--mirror-views", "2", "--no-plots",
         "--out", str(tmp_path / "b.json")])
    assert args.func(args) == 0
    res = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {r["model"]: r["detector"]["mirror_views"] for r in res} == {"default": 2,
                                                                       "classical": 1}
    assert all(r["frames"] == 10 for r in res)
    table = capsys.readouterr().out
    assert "inscope-nuclei/cpu" in table and "/x2 " in table  # which run is which


def test_bench_runs_onnx_models_with_the_enlargement_size_asked_for(tmp_path, capsys):
    """--enlarge-below-px reaches the shipped model: the simulator's ~21 px nuclei are
    enlarged (the result's scale, and the size, say so; the table marks the run); the
    classical baseline beside it runs as it is."""
    args = build_parser().parse_args(
        ["bench", "--frames", "10", "--backend", "sim", "--model", "default", "--model",
         "classical", "--provider", "cpu", "--enlarge-below-px", "36", "--no-plots",
         "--out", str(tmp_path / "b.json")])
    assert args.func(args) == 0
    res = {r["model"]: r["detector"] for r in
           json.loads((tmp_path / "b.json").read_text())["results"]}
    assert res["default"]["enlarge_below_px"] == 36.0 and res["default"]["scale"] > 1.2
    assert res["classical"]["enlarge_below_px"] is None
    table = capsys.readouterr().out
    assert "/<36px " in table  # which run is which
    assert "(automatic scale: the objects measured under the enlargement size given, " \
        "36 px)" in table


def test_bench_demo_configuration_reports_cpu_per_thread_and_process(tmp_path):
    args = build_parser().parse_args(
        ["bench", "--frames", "25", "--backend", "demo", "--model", "default",
         "--out", str(tmp_path / "b.json"), "--no-plots"])
    assert args.func(args) == 0
    (r,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert r["microscope"].startswith("demo") and r["mode"] == "steer+focus"
    assert r["frames"] == 25
    # every output of the demo ran
    assert {"zmq-pub", "overlay", "records"} <= set(r["outputs"])
    cpu = r["cpu"]
    assert cpu["processes"]["this process (the loop)"]["cpu_s"] > 0
    assert "simulated camera process" in cpu["processes"]
    if sys.platform.startswith("linux"):
        assert cpu["processes"]["simulated camera process"]["cpu_s"] > 0
        assert cpu["threads"]["inscope-detect"]["cpu_s"] > 0
        assert "inscope-control" in cpu["threads"]


def test_bench_says_when_the_detector_ran_on_resized_frames(tmp_path, capsys):
    """A slide of ~5.5 px nuclei (simulated at 4x the default pixel size): the shipped
    model's card enlarges its frames, which changes the detect time by the factor's
    square, so the report keeps the factor and the table says it."""
    import numpy as np

    from inscope.detector.datasets import simulated_samples

    (s,) = simulated_samples(1, seed=900456, pixel_size_um=2.6, shape=(768, 768))
    np.savez(tmp_path / "small.npz", image=np.asarray(s.image))
    args = build_parser().parse_args(
        ["bench", "--frames", "8", "--backend", "slide", "-o",
         f"path={tmp_path / 'small.npz'}", "-o", "pixel_size_um=2.6", "-o", "fov=256",
         "--model", "default", "--model", "classical", "--provider", "cpu", "--no-plots",
         "--out", str(tmp_path)])
    assert args.func(args) == 0
    res = json.loads((tmp_path / "bench.json").read_text())["results"]
    scales = {r["detector"]["name"]: r["detector"]["scale"] for r in res}
    assert scales["inscope-nuclei"] > 1.5 and scales["classical"] == 1.0, scales
    out = capsys.readouterr().out
    assert "note: inscope-nuclei on slide ran on frames enlarged" in out, out
    assert "note: classical" not in out


def test_bench_opens_the_simulator_with_the_options_given_and_records_the_frame_size(
        tmp_path, capsys):
    """``-o`` reaches every backend the bench opens (it went to the slide only: a
    simulator asked for 128 x 96 frames was timed at its default 512 x 512), and each
    result says what frame size its latencies are for."""
    args = build_parser().parse_args(
        ["bench", "--frames", "10", "--backend", "sim", "-o", "shape=[128, 96]",
         "--model", "classical", "--no-plots", "--out", str(tmp_path)])
    assert args.func(args) == 0
    (r,) = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert r["frame_shape"] == [128, 96]
    args = build_parser().parse_args(
        ["bench", "--frames", "10", "--backend", "sim", "-o", "zoom=2",
         "--model", "classical", "--no-plots", "--out", str(tmp_path / "b")])
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown option(s) ['zoom'] for backend 'sim'; allowed: [")
    assert len(err.splitlines()) == 1


def test_bench_counts_every_frame_sent_in_published_to_sent_and_ready_to_sent(tmp_path):
    """The loop counts a frame's stamps as it hands the frame to the outputs, before the
    ZMQ thread stamps ``sent``: the report gave these two stages n = 0-2 of the frames
    sent (the docs list both among the stages it reports)."""
    args = build_parser().parse_args(
        ["bench", "--frames", "20", "--backend", "sim", "-o", "shape=[128, 96]",
         "--model", "classical", "--mode", "off", "--no-plots", "--out", str(tmp_path)])
    assert args.func(args) == 0
    (r,) = json.loads((tmp_path / "bench.json").read_text())["results"]
    L, sent = r["latency_ms"], r["zmq"]["sent"]
    assert sent == 20
    assert L["published_to_sent"]["n"] == L["ready_to_sent"]["n"] == sent
    assert 0 <= L["published_to_sent"]["p50"] <= L["published_to_sent"]["max"]
    assert L["ready_to_sent"]["p50"] >= L["ready_to_published"]["p50"] * 0.98
    # the camera's rate over the same span as the processed one: a short run no longer
    # reads as processing faster than its camera delivers (its start-up counted only in
    # the camera's), and with nothing dropped the two agree
    assert r["fps"] <= r["camera_fps"] * 1.001, (r["fps"], r["camera_fps"])
    if r["dropped"] == 0:
        assert r["throughput_vs_camera"] == pytest.approx(1.0, abs=0.002)
