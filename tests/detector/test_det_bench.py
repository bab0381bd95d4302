"""The detector benchmark runs end to end and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import bench_detector


def test_bench_detector_writes_latency_and_accuracy(tmp_path, capsys):
    out = tmp_path / "detector.json"
    rc = bench_detector.main(["--sizes", "64", "96", "--repeats", "3", "--sim-frames", "2",
                              "--threads", "1", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert "classical" in r["latency"] and set(r["latency"]["classical"]) == {"64", "96"}
    ref = [k for k in r["latency"] if k.startswith("reference-cnn")]
    assert len(ref) == 1  # the random-weight reference is timed ...
    for where in r["accuracy"].values():
        assert ref[0] not in where  # ... but never scored
        assert 0.0 <= where["classical"]["ap50"] <= 1.0
    t = r["latency"][ref[0]]["96"]
    assert t["total_ms"]["p50"] <= t["total_ms"]["max"]
    assert np.isfinite(t["run_ms"]["p50"]) and r["meta"]["repeats"] == 3
    assert "p99" in capsys.readouterr().out


def test_session_run_side_by_side_times_the_model_in_each_spinning_mode(tmp_path):
    # --spinning off --spinning run: every model in each mode, keyed name@mode, with the
    # ratio of each mode to the first; --sim-frames 0 writes no accuracy (no NaN AP)
    out = tmp_path / "spin.json"
    rc = bench_detector.main(["--sizes", "64", "--repeats", "2", "--sim-frames", "0",
                              "--threads", "2", "--no-reference", "--no-yolo",
                              "--spinning", "off", "--spinning", "run", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    side = r["session_run_vs_yolo11n"]
    assert {"model@off", "model@run"} <= set(side) and "model" not in side
    assert side["model@off"]["p50"] <= side["model@off"]["max"]
    ratio = side["model@run_over_model@off_p50"]
    assert ratio == round(side["model@run"]["p50"] / side["model@off"]["p50"], 3)
    assert "off / run" in side["_how"]
    assert r["accuracy"] == {}


def test_synthetic_scene_boxes_cover_the_nuclei():
    img, boxes = bench_detector.synthetic_scene(256, 3)
    assert img.dtype == np.uint16 and len(boxes) > 5
    inside = np.zeros(img.shape, bool)
    for x0, y0, x1, y1 in boxes.astype(int):
        inside[max(y0, 0):y1, max(x0, 0):x1] = True
    assert img[inside].mean() > img[~inside].mean() + 200


def test_shipped_model_box_centres_follow_a_shifted_image():
    """Box centres of one nucleus stay put (in frame coordinates) when the image moves.

    The control loop steers on these centres; a decoding or offset bug (a flipped sign,
    a lost sub-cell offset, a size used as a centre) makes them jump by pixels. One
    simulated held-out frame, sub-pixel and 1-10 px shifts: the model card's jitter
    figure on real frames, here as a behaviour check with room for the noise of one frame.
    """
    from inscope.detector.datasets import simulated_samples
    from inscope.detector.onnx_detector import OnnxDetector

    frame = simulated_samples(1, seed=970001, shape=(560, 560))[0].image
    det = OnnxDetector(None, provider="cpu", threads=2)
    try:
        r = bench_detector.measure_jitter(det, [frame])
    finally:
        det.close()
    assert r["nuclei"] >= 20
    assert r["centre_rms_px"] < 0.6, r
    assert r["centre_rms_subpixel_shifts_px"] < 0.6, r
    assert r["lost_fraction"] < 0.03, r


def test_compare_models_scores_each_model_on_the_same_fresh_frames(tmp_path, capsys):
    """The same model under two names scores the same; a bad argument names the form."""
    import pytest

    from benchmarks import compare_models
    from inscope.detector.onnx_detector import DEFAULT_MODEL

    out = tmp_path / "cmp.json"
    rc = compare_models.main([f"a={DEFAULT_MODEL}", f"b={DEFAULT_MODEL}", "--frames", "2",
                              "--jitter-frames", "1", "--control", "--control-region", "150",
                              "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    a, b = r["models"]["a"], r["models"]["b"]
    assert a == b and 0.5 < a["sim"]["ap50"] <= 1.0
    assert a["sim_jitter"]["centre_rms_px"] < 1.0
    assert "seed 930000" in r["accuracy_frames"] and "seed 940000" in r["jitter_frames"]
    ctl = a["control_sim"]  # find-and-image on the simulator, a 150 µm region here
    assert ctl["interior_true_cells"] > 0 and 0.5 < ctl["interior_imaged_exactly_once"] <= 1
    assert ctl["true_cells_imaged_twice"] == 0
    capsys.readouterr()
    for bad, says in (("no-equals.onnx", "give NAME=MODEL.onnx"),
                      ("x=/no/such/model.onnx", "no such file (give NAME=MODEL.onnx)")):
        with pytest.raises(SystemExit):
            compare_models.main([bad])
        assert says in capsys.readouterr().err
