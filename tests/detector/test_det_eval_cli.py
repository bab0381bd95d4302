"""``inscope eval`` end to end: files written in tmp_path, real ONNX Runtime, real plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _support.onnx_models import BOX, blob_scene, build_centernet, grid_centres

import inscope.detector as detector
from inscope.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    shape = (160, 224)
    imgs, boxes, frame = [], [], []
    for t in range(3):
        c = grid_centres(shape, spacing=48, jitter=8, seed=t)
        imgs.append(blob_scene(shape, c, seed=t))
        boxes.append(np.concatenate([c - BOX / 2, c + BOX / 2], axis=1))
        frame.append(np.full(len(c), t))
    # image 1 loses one label: the detector's box there must count as a FP
    boxes[1] = boxes[1][1:]
    frame[1] = frame[1][1:]
    np.savez(d / "blobs.npz", images=np.stack(imgs), boxes=np.concatenate(boxes),
             frame=np.concatenate(frame))
    return d / "blobs.npz", sum(len(b) for b in boxes)


def test_eval_onnx_model_json_and_plots(tmp_path, dataset, capsys):
    path, n_gt = dataset
    model = build_centernet(tmp_path / "m.onnx")
    out = tmp_path / "res" / "eval.json"
    rc = main(["eval", "--model", str(model), str(path), "--json", str(out), "--plots",
               str(tmp_path / "plots"), "--provider", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "AP50" in text and "blobs.npz[2]" in text
    r = json.loads(out.read_text())
    assert r["n_images"] == 3 and r["n_gt"] == n_gt
    assert (r["tp"], r["fp"], r["fn"]) == (n_gt, 1, 0)
    assert r["per_image"][1]["fp"] == 1 and r["per_image"][0]["ap50"] == 1.0
    assert 0.9 < r["ap50"] < 1.0  # one unlabelled object ranked among the TPs
    assert len(r["pr"]["recall"]) == n_gt + 1
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "pr_curve.png" in pngs and len(pngs) == 4


def test_eval_classical_and_errors(tmp_path, dataset, capsys):
    path, _ = dataset
    out = tmp_path / "c.json"
    # Otsu boxes of these Gaussian blobs are ~10 px against 16 px labels: P/R at IoU 0.3
    assert main(["eval", "--model", "classical", str(path), "--json", str(out),
                 "--iou", "0.3"]) == 0
    r = json.loads(out.read_text())
    assert r["detector"] == "classical" and r["recall"] == 1.0 and r["iou_threshold"] == 0.3
    capsys.readouterr()
    assert main(["eval", "--model", "classical"]) == 2
    assert "Nothing to evaluate" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "none.onnx"), str(path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_eval_on_simulated_held_out_frames(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert main(["eval", "--model", "classical", "--sim", "2", "--seed", "900123",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n_images"] == 2 and r["n_gt"] > 0 and r["data"]["seed"] == 900123
    assert r["tp"] > 0
    # slivers at the frame edge are difficult (ignored) unless asked to count them
    assert r["n_difficult"] > 0
    assert main(["eval", "--model", "classical", "--sim", "2", "--seed", "900123",
                 "--json", str(out), "--count-difficult"]) == 0
    r2 = json.loads(out.read_text())
    assert r2["n_difficult"] == 0 and r2["n_gt"] == r["n_gt"] + r["n_difficult"]


def test_eval_with_mirror_views_says_so_and_scores_the_same_frames(tmp_path, capsys):
    """``--mirror-views 4`` reaches the detector (the shipped model): the JSON and the
    heading say it, and the same frames score at least as well as one view's (4 views:
    tighter boxes, model card *Mirror views*)."""
    res = {}
    for views in ("1", "4"):
        out = tmp_path / f"v{views}.json"
        assert main(["eval", "--sim", "2", "--seed", "900123", "--provider", "cpu",
                     "--mirror-views", views, "--json", str(out)]) == 0
        head = capsys.readouterr().out.splitlines()[0]
        assert ("4 mirror views" in head) == (views == "4"), head
        res[views] = json.loads(out.read_text())
        assert res[views]["mirror_views"] == int(views)
    assert res["4"]["n_gt"] == res["1"]["n_gt"]
    assert res["4"]["map50_95"] > res["1"]["map50_95"]
    with pytest.raises(SystemExit):
        main(["eval", "--sim", "1", "--mirror-views", "3"])
    assert "invalid choice: 3" in capsys.readouterr().err
    assert main(["eval", "--model", "classical", "--sim", "1", "--mirror-views", "2"]) == 2
    assert "cannot use it" in capsys.readouterr().err


def test_eval_with_an_enlargement_size_records_it_and_enlarges(tmp_path, capsys):
    """``--enlarge-below-px 36`` reaches the detector: simulated nuclei of ~21 px are
    enlarged (the run says so), the JSON records the size; a classical run refuses it."""
    out = tmp_path / "e.json"
    assert main(["eval", "--sim", "2", "--seed", "900123", "--provider", "cpu",
                 "--enlarge-below-px", "36", "--json", str(out)]) == 0
    said = capsys.readouterr().out
    assert "enlarged for the model" in said
    assert "measured under the enlargement size given (36 px)" in said
    assert json.loads(out.read_text())["enlarge_below_px"] == 36.0
    assert main(["eval", "--model", "classical", "--sim", "1",
                 "--enlarge-below-px", "36"]) == 2
    assert "cannot use it" in capsys.readouterr().err


def test_package_exports_are_lazy_but_real():
    assert detector.load_detector is detector.onnx_detector.load_detector
    assert detector.ClassicalDetector.name == "classical"
    with pytest.raises(AttributeError):
        _ = detector.nothing_here


def test_json_is_strict_when_an_image_has_no_objects():
    from inscope.detector.eval_cli import _finite

    d = _finite({"ap50": float("nan"), "per_image": [{"ap50": float("inf")}, 0.5], "n": 3})
    assert d == {"ap50": None, "per_image": [{"ap50": None}, 0.5], "n": 3}
    json.dumps(d, allow_nan=False)


def test_eval_says_when_its_images_were_enlarged(tmp_path, capsys):
    """Simulated nuclei of ~5.5 px (pixels 4x the default): the shipped model's card
    enlarges such frames, which costs time, so the report says it and how to choose
    the scale instead; the JSON keeps each image's factor. Frames of nuclei the model
    detects at their own size say nothing."""
    from inscope.detector.datasets import simulated_samples

    for name, px, enlarged in (("small", 2.6, True), ("default", 0.65, False)):
        ss = simulated_samples(2, seed=900321, pixel_size_um=px)
        path = tmp_path / f"{name}.npz"
        np.savez(path, images=np.stack([s.image for s in ss]),
                 boxes=np.concatenate([s.boxes for s in ss]),
                 frame=np.concatenate([np.full(len(s.boxes), i) for i, s in enumerate(ss)]))
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(path), "--json", str(out), "--provider", "cpu"]) == 0
        text = capsys.readouterr().out
        factors = json.loads(out.read_text())["scale_factors"]
        assert len(factors) == 2
        if enlarged:
            assert "auto scale: 2 of 2 image(s) enlarged" in text, text
            assert "--object-size-px" in text and min(factors) > 1.5, factors
        else:
            assert "auto scale" not in text and factors == [1.0, 1.0], (text, factors)
