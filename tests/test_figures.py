"""Published figures trace back to committed benchmark output (benchmarks/figures.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.figures import BEGIN, END, RECORDS, RESULTS, SERVICE_DOC, STEPS, scrub_paths
from benchmarks.loop import table

ROOT = Path(__file__).resolve().parents[1]
JSONS = sorted(RESULTS.glob("*.json"))


@pytest.mark.parametrize("path", JSONS, ids=[p.name for p in JSONS])
def test_results_hold_no_absolute_paths(path, tmp_path):
    text = path.read_text()
    json.loads(text)
    assert not re.search(r'"(/(home|work|tmp|root|Users)/|[A-Za-z]:\\\\)', text), path.name
    copy = tmp_path / path.name
    copy.write_text(text)
    assert scrub_paths(copy) == 0


def test_scrub_paths_makes_checkout_paths_relative(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"model": "/somewhere/else/detector/models/m.onnx", "n": "/x/y"}')
    assert scrub_paths(p) == 1
    assert json.loads(p.read_text()) == {"model": "detector/models/m.onnx", "n": "/x/y"}


def test_the_service_doc_table_is_the_committed_loop_run():
    doc = SERVICE_DOC.read_text()
    generated = doc.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    report = json.loads((RESULTS / "loop.json").read_text())
    assert generated == table(report)
    assert generated.count("\n") >= 2 + 4  # header, rule and at least four rows


def test_mutation_results_are_consistent():
    data = json.loads((RESULTS / "mutation.json").read_text())
    assert data["command"] == "python -m benchmarks.mutation"
    for m in data["modules"]:
        assert (ROOT / m["module"]).exists()
        checked = m.get("checked", m["mutants"])
        assert m["killed"] <= checked <= m["mutants"]
        assert m["score"] == pytest.approx(m["killed"] / checked, abs=1e-4)
        assert len(m["survivors"]) == checked - m["killed"]
        assert m.get("complete", True) == (checked == m["mutants"])
        assert m["meets_target"] == (m["score"] >= m["target"])
        assert all(s["reason"] for s in m["survivors"])


def test_every_committed_result_has_a_step_or_is_a_kept_record():
    made = {out for _, out in STEPS.values()}
    assert not made & set(RECORDS)
    committed = {p.name for p in RESULTS.iterdir() if p.suffix in (".json", ".md")}
    assert committed - made - set(RECORDS) == set(), "results without a figures step"
    assert set(RECORDS) <= committed
    for args, _ in STEPS.values():
        script = ROOT / (args[0].replace(".", "/") + ".py")
        assert script.is_file() or (ROOT / args[0] / "__main__.py").is_file(), args[0]


def test_model_cost_and_scale_out_model_are_what_their_scripts_make(tmp_path):
    """Both are arithmetic on committed inputs (the ONNX graphs, detector.json), so the
    committed files must be exactly what the scripts make now, and the model card must
    quote the counted figures."""
    from benchmarks import model_cost, scale_out_model

    for mod, name in ((model_cost, "model_cost.json"), (scale_out_model, "scale_out_model.json")):
        out = tmp_path / name
        assert mod.main(["--out", str(out)]) == 0
        assert json.loads(out.read_text()) == json.loads((RESULTS / name).read_text()), name
    cost = json.loads((RESULTS / "model_cost.json").read_text())["cost"]
    card = (ROOT / "detector" / "models" / "MODEL_CARD.md").read_text()
    for name in ("inscope-nuclei", "reference-cnn"):
        assert f"{cost[name]['parameters']:,}" in card, name
    assert f"{cost['reference-cnn']['per_size']['512']['gmac']:.2f} GMAC" in card


def test_collect_live_loop_reads_its_runs_before_it_removes_them(tmp_path, monkeypatch):
    """``collect_live_loop --run`` makes its runs in a temporary folder, collects their
    reports, then removes the folder: reading them after the removal lost a 14-minute
    collection (the runs themselves are stood in for here: each one takes minutes)."""
    import benchmarks.collect_live_loop as cl

    lat = {"ready_to_published": {"n": 300, "p50": 7.0, "p90": 9.0, "p99": 14.0,
                                  "max": 20.0}}
    report = {"latency_ms": lat, "acquired": 310, "dropped": 10, "frames": 300,
              "microscope": "simulated", "detector": {"name": "inscope-nuclei"},
              "fps": 95.0, "camera_fps": 98.0,
              "control": {"mode": "steer+focus", "moves_made": 7}}
    made: list[Path] = []

    def fake_run_all(before_dir, work, long_seconds, long_before):
        made.append(work)
        paths = {}
        for key, name in (("demo_after", "summary.json"), ("bench_after", "bench.json")):
            (work / key).mkdir()
            body = {"results": [report]} if name == "bench.json" else report
            (work / key / name).write_text(json.dumps(body))
            paths[key] = str(work / key / name)
        (work / "loads.json").write_text("{}")
        return paths

    monkeypatch.setattr(cl, "run_all", fake_run_all)
    out = tmp_path / "live_loop.json"
    assert cl.main(["--run", "--before-commit", "abc1234", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["demo_after"]["processed_fraction"] == round(1 - 10 / 310, 4)
    assert rep["bench_after"][0]["ready_to_published_ms"]["p99"] == 14.0
    assert made and not made[0].exists(), "the runs' folder is removed afterwards"


def test_per_minute_splits_a_run_by_the_minute_it_was_taken(tmp_path):
    """A long run's trend (a cost growing with the time run) is read minute by minute
    from its records: frames counted in the minute of their ``ready`` stamp, latency =
    published - ready; a line cut off by a stopped run is skipped."""
    from benchmarks.per_minute import per_minute

    t0 = 5_000_000_000_000
    lines = []
    for i in range(150):  # one frame per second for 2.5 minutes
        lat_ms = 5.0 if i < 60 else (6.0 if i < 120 else 20.0)
        ready = t0 + i * 1_000_000_000
        lines.append(json.dumps({"frame_index": i, "stamps_ns": {
            "ready": ready, "published": ready + int(lat_ms * 1e6)}}))
    path = tmp_path / "detections.jsonl"
    path.write_text("\n".join(lines) + '\n{"frame_index": 150, "stamps')
    got = per_minute(path)
    assert [m["frames_processed"] for m in got] == [60, 60, 30]
    assert [m["ready_to_published_ms"]["p50"] for m in got] == [5.0, 6.0, 20.0]
    # the command line: NAME=DETECTIONS.jsonl, a report per name; a bad one is refused
    from benchmarks.per_minute import main

    assert main([f"long={path}", "--out", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["long"]["whole_run_ready_to_published_ms"]["n"] == 150
    for bad in (str(path), f"x={tmp_path / 'missing.jsonl'}"):
        with pytest.raises(SystemExit):
            main([bad])
