"""Training + export (optional torch extra) and the shipped default model.

The shipped-model test needs no torch. Training tests are real short runs on real data
written to tmp_path (npz + Pascal VOC, the format of the Waithe et al. datasets), exported
with torch.onnx and loaded by the runtime's OnnxDetector.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inscope.detector.card import ModelCard, sha256_file
from inscope.detector.datasets import simulated_samples
from inscope.detector.metrics import evaluate
from inscope.detector.onnx_detector import OnnxDetector, default_model_path


def _sim_scored(model: Path, n: int, seed: int, threshold: float | None = None):
    samples = simulated_samples(n, seed=seed)
    det = OnnxDetector(model, provider="cpu", threads=2)
    preds = []
    for s in samples:
        d = det.detect(s.image)
        preds.append((d.boxes, d.scores))
    thr = det.card.decoding["score_threshold"] if threshold is None else threshold
    return evaluate(preds, [s.boxes for s in samples], score_threshold=thr)


def test_shipped_default_model_card_and_sim_recall() -> None:
    path = default_model_path()
    assert path.exists(), f"shipped model missing: {path}"
    card = ModelCard.load(path.with_suffix(".json"))
    assert card.sha256 == sha256_file(path), "card sha256 does not match the shipped .onnx"
    assert card.format == "inscope-centernet" and card.classes == ["nucleus"]
    assert card.decoding["stride"] == 4 and card.input["multiple"] == 32
    # held-out simulated frames (seeds >= 900000 are never used in training)
    r = _sim_scored(path, 2, seed=900321)
    assert r.n_gt >= 10
    assert r.recall >= 0.85, r.summary()
    assert r.precision >= 0.8, r.summary()


# ----------------------------------------------------------------------------- training
def test_crowded_crop_gets_a_heatmap_peak_for_every_nucleus() -> None:
    import torch  # noqa: F401 - the [train] extra, installed by CI (make test)

    from inscope.detector.train.data import MAX_OBJECTS, draw_targets

    # a 30 x 30 grid of 4-px nuclei: more objects than MAX_OBJECTS
    g = np.arange(30, dtype=np.float32) * 4
    x, y = np.meshgrid(g, g)
    boxes = np.stack([x.ravel() + 0.5, y.ravel() + 0.5, x.ravel() + 3.5, y.ravel() + 3.5], 1)
    t = draw_targets(boxes, (30, 30))
    assert (t["heatmap"][0] > 0.99).sum() == 900  # no nucleus taught as background
    assert t["mask"].sum() == MAX_OBJECTS  # size/offset supervision capped
    assert t["ind"][: MAX_OBJECTS].max() < 900


def _blob_image(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy uint16 image with 1-3 bright elliptical nuclei, and their boxes."""
    img = rng.normal(500, 20, (size, size)).astype(np.float32)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        r = float(rng.uniform(9, 14))
        cx, cy = rng.uniform(r + 2, size - r - 2, 2)
        if any(abs(cx - (b[0] + b[2]) / 2) < 2 * r and abs(cy - (b[1] + b[3]) / 2) < 2 * r
               for b in boxes):
            continue
        cv2.circle(img, (round(cx), round(cy)), round(r), 4000.0, -1)
        boxes.append([cx - r, cy - r, cx + r, cy + r])
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    return np.clip(img, 0, 65535).astype(np.uint16), np.asarray(boxes, np.float32)


def _write_npz_and_voc(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    npz_dir, voc_dir = root / "npz", root / "voc"
    npz_dir.mkdir(parents=True)
    voc_dir.mkdir(parents=True)
    for i in range(n):
        img, boxes = _blob_image(rng)
        np.savez(npz_dir / f"img{i}.npz", image=img, boxes=boxes)
        img2, boxes2 = _blob_image(rng)
        cv2.imwrite(str(voc_dir / f"img{i}.png"), img2)  # 16-bit PNG
        objs = "".join(
            f"<object><name>nucleus</name><bndbox><xmin>{b[0] + 1:.0f}</xmin>"
            f"<ymin>{b[1] + 1:.0f}</ymin><xmax>{b[2]:.0f}</xmax><ymax>{b[3]:.0f}</ymax>"
            "</bndbox></object>" for b in boxes2)
        (voc_dir / f"img{i}.xml").write_text(
            f"<annotation><filename>img{i}.png</filename><size><width>128</width>"
            f"<height>128</height><depth>1</depth></size>{objs}</annotation>")
    return npz_dir, voc_dir


def _center_hit(det: OnnxDetector, img: np.ndarray, boxes: np.ndarray, tol: float) -> bool:
    d = det.detect(img)
    if not len(d.boxes):
        return False
    c = (d.boxes[:, :2] + d.boxes[:, 2:]) / 2
    g = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = np.linalg.norm(c[:, None] - g[None], axis=2)
    return bool((dist.min(axis=0) < tol).all())


@pytest.mark.slow
def test_train_from_scratch_exports_working_onnx_and_card(tmp_path: Path) -> None:
    import torch  # noqa: F401 - the [train] extra, installed by CI (make test)

    from inscope.cli import main

    npz_dir, voc_dir = _write_npz_and_voc(tmp_path / "data", 6, seed=1)
    out = tmp_path / "m" / "scratch.onnx"
    rc = main(["train", str(npz_dir), str(voc_dir), "--steps", "150", "--batch", "8",
               "--crop", "128", "--lr", "5e-3", "--out", str(out), "--no-latency",
               "--threads", "2", "--val", str(npz_dir)])
    assert rc == 0
    card = ModelCard.load(out.with_suffix(".json"))
    assert card.sha256 == sha256_file(out)
    assert card.format == "inscope-centernet" and card.training["steps"] == 150
    assert "val" in card.metrics and 0.0 <= card.metrics["val"]["ap50"] <= 1.0
    assert out.with_suffix(".log.txt").stat().st_size > 0
    # an obvious object on an unseen image: the strongest peaks sit on the nuclei
    det = OnnxDetector(out, provider="cpu", score_threshold=0.05)
    rng = np.random.default_rng(99)
    hits = [_center_hit(det, *_blob_image(rng), tol=6.0) for _ in range(4)]
    assert sum(hits) >= 3, hits


@pytest.mark.slow
def test_finetune_from_shipped_model_and_roundtrip(tmp_path: Path, capsys) -> None:
    import torch  # the [train] extra, installed by CI (make test)

    from inscope.cli import main
    from inscope.detector.train.export import model_from_onnx, verify_onnx

    # the torch model rebuilt from the shipped ONNX reproduces it
    shipped = default_model_path()
    model = model_from_onnx(shipped)
    assert verify_onnx(model, shipped, (128, 160)) < 1e-3
    assert sum(p.numel() for p in model.parameters()) > 10_000
    del torch

    npz_dir, voc_dir = _write_npz_and_voc(tmp_path / "data", 4, seed=2)
    out = tmp_path / "ft.onnx"
    rc = main(["train", str(voc_dir), "--finetune", "--steps", "20", "--batch", "4",
               "--crop", "128", "--out", str(out), "--no-latency", "--threads", "2"])
    assert rc == 0
    # the closing line: no metrics and no latency leave no empty parts ("log; ; ")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}") and last.endswith("loss plot, log"), last
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["init"] == {"file": shipped.name, "sha256": sha256_file(shipped)}
    assert card["sha256"] == sha256_file(out)
    det = OnnxDetector(out, provider="cpu", score_threshold=0.1)
    rng = np.random.default_rng(7)
    hits = [_center_hit(det, *_blob_image(rng), tol=6.0) for _ in range(4)]
    assert sum(hits) >= 3, hits


def test_train_command_registers_without_torch_import() -> None:
    import subprocess
    import sys

    code = ("import sys, argparse; import detector.train.cli as c; "
            "p = argparse.ArgumentParser(); c.register(p.add_subparsers()); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("antialias", [True, False])
def test_export_roundtrip_keeps_the_architecture(tmp_path: Path, antialias: bool) -> None:
    """model_from_onnx rebuilds either variant from the file alone (fine-tuning needs it).

    The anti-aliased variant is told by its fixed binomial blurs; its torch twin must
    compute what the file computes, BatchNorm folding included.
    """
    import onnx
    import torch

    from inscope.detector.train.export import export_onnx, model_from_onnx, verify_onnx
    from inscope.detector.train.model import TinyCenterNet

    torch.manual_seed(3)
    model = TinyCenterNet(antialias=antialias).eval()
    with torch.no_grad():
        for m in model.modules():  # BatchNorm that is not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    modes = {a.s.decode() for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"
             for a in n.attribute if a.name == "mode"}
    assert modes == ({"linear"} if antialias else {"nearest"})
    rebuilt = model_from_onnx(path)
    assert rebuilt.antialias is antialias
    assert verify_onnx(rebuilt, path, (96, 160)) < 1e-4


def test_export_merges_the_heads_and_reexport_upgrades_an_old_file(tmp_path: Path) -> None:
    """New exports compute the three heads in one convolution (faster on ONNX Runtime's
    blocked CPU kernels); an older file (three head convolutions) still rebuilds, and
    ``reexport`` rewrites it in the new form with the same outputs and card."""
    import onnx
    import onnxruntime as ort
    import torch

    from inscope.detector.train.export import (
        default_card,
        export_onnx,
        model_from_onnx,
        reexport,
        verify_onnx,
    )
    from inscope.detector.train.model import TinyCenterNet

    torch.manual_seed(5)
    model = TinyCenterNet(antialias=True).eval()
    with torch.no_grad():  # heads that differ from their initialisation, and each other
        for head in (model.hm, model.size, model.offset):
            head.weight.normal_(0, 0.3)
            head.bias.normal_(0, 0.3)
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    card = default_card()
    card.decoding["score_threshold"] = 0.42
    export_onnx(model, old, card, merged_heads=False)

    def convs(path: Path) -> list[int]:
        g = onnx.load(str(path)).graph
        shapes = {i.name: list(i.dims) for i in g.initializer}
        return [shapes[n.input[1]][0] for n in g.node if n.op_type == "Conv"]

    assert convs(old)[-3:] == [1, 2, 2]
    assert reexport(old, new) < 1e-4
    assert convs(new)[-1] == 5 and len(convs(new)) == len(convs(old)) - 2
    got = json.loads(new.with_suffix(".json").read_text())
    assert got["decoding"]["score_threshold"] == 0.42
    assert got["sha256"] == sha256_file(new) != sha256_file(old)
    x = np.random.default_rng(0).random((1, 1, 96, 128), dtype=np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            .run(["heatmap", "size", "offset"], {"image": x}) for p in (old, new)]
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # both forms rebuild to the torch model (fine-tuning starts from either)
    for p in (old, new):
        assert verify_onnx(model_from_onnx(p), p, (64, 96)) < 1e-4
    assert verify_onnx(model, new, (64, 96)) < 1e-4


@pytest.mark.parametrize("widths", [(12, 24), (16, 16), (8, 32)])
def test_widths_at_half_and_quarter_resolution_survive_export_and_rebuild(
        tmp_path: Path, widths: tuple[int, int]) -> None:
    """``--widths`` sets the channels at 1/2 and 1/4 resolution (the layers that cost
    nearly all the time); a model rebuilt from its ONNX file for fine-tuning reads them
    back from the weights and gives the same outputs."""
    import torch

    from inscope.detector.train.export import export_onnx, model_from_onnx, verify_onnx
    from inscope.detector.train.model import TinyCenterNet

    torch.manual_seed(7)
    model = TinyCenterNet(antialias=True, widths=widths).eval()
    assert model.stem[1][0].out_channels == widths[0]
    assert model.hm.in_channels == widths[1]
    path = tmp_path / "w.onnx"
    export_onnx(model, path)
    rebuilt = model_from_onnx(path)
    assert rebuilt.widths == widths
    assert verify_onnx(rebuilt, path, (64, 96)) < 1e-4


def test_widths_option_is_checked() -> None:
    import argparse

    from inscope.detector.train.cli import _widths

    assert _widths(argparse.Namespace(widths="16,16")) == (16, 16)
    assert _widths(argparse.Namespace()) == (12, 24)
    for bad in ("16", "a,b", "0,16", "16,16,16"):
        with pytest.raises(ValueError, match="--widths"):
            _widths(argparse.Namespace(widths=bad))


def test_sparse_groups_are_nearly_empty_and_leave_the_others_as_they_were() -> None:
    """``--sparse-fraction``: sparse microscopes give crops of 0-2 nuclei (many empty);
    the other groups are the very crops of a pool without sparse ones, and a pool
    without them keeps its cache name (the shipped recipe's pool is unchanged)."""
    from inscope.detector.train.synth import POOL_VERSION, PoolSpec, render_pool

    dense_spec = PoolSpec(n=36, seed=1)
    assert POOL_VERSION == 4 and dense_spec.key() == "a49e9594f45a"  # as before sparse groups
    imgs, boxes = render_pool(dense_spec)
    s_imgs, s_boxes = render_pool(PoolSpec(n=36, seed=1, sparse_fraction=0.5))
    sparse = [len(a) <= 3 and len(b) > 10 for a, b in zip(s_boxes, boxes, strict=True)]
    same = [np.array_equal(a, b) for a, b in zip(s_imgs, imgs, strict=True)]
    assert any(sparse) and any(same)
    assert all(s != m for s, m in zip(sparse, same, strict=True))  # one or the other
    assert sum(len(b) == 0 for b in s_boxes) >= 3  # empty crops among the sparse ones
    all_sparse = render_pool(PoolSpec(n=24, seed=1, sparse_fraction=1.0))[1]
    assert max(len(b) for b in all_sparse) <= 4
    assert PoolSpec(n=36, seed=1, sparse_fraction=0.5).key() != dense_spec.key()
    with pytest.raises(ValueError, match=r"sparse_fraction must be in \[0, 1\], got 1.5"):
        PoolSpec(sparse_fraction=1.5)


def test_fainter_dim_nuclei_change_only_their_brightness() -> None:
    """``--dim-low``: the pool's dim nuclei reach down to that fraction of a typical
    nucleus; the crops hold the same objects at the same places (same boxes), the
    pixels differ only where dim nuclei are, and a pool without it keeps its cache name
    (the shipped recipe's pool is unchanged)."""
    from inscope.detector.train.synth import PoolSpec, render_pool

    base_spec = PoolSpec(n=12, seed=1)
    assert base_spec.key() == PoolSpec(n=12, seed=1, dim_low=None).key()
    assert PoolSpec(n=4800, seed=1).key() == "a325789b616e"  # the shipped recipe's pool
    imgs, boxes = render_pool(base_spec)
    f_imgs, f_boxes = render_pool(PoolSpec(n=12, seed=1, dim_low=0.02))
    assert all(np.array_equal(a, b) for a, b in zip(boxes, f_boxes, strict=True))
    changed = [float(np.mean(a != b)) for a, b in zip(imgs, f_imgs, strict=True)]
    assert max(changed) > 0 and max(changed) < 0.1  # the dim nuclei's pixels alone
    # fainter, never brighter: a dim nucleus only loses light (the noise draws are the
    # same, so nothing else moves)
    assert all(int(b.astype(np.int64).sum()) <= int(a.astype(np.int64).sum())
               for a, b in zip(imgs, f_imgs, strict=True))
    assert PoolSpec(n=12, seed=1, dim_low=0.02).key() != base_spec.key()
    with pytest.raises(ValueError, match=r"dim_low must be in \(0, 0.15\]"):
        PoolSpec(dim_low=0.5)
