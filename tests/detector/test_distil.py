"""Distillation (``inscope train --teacher``): the loss, and what training does with it.

Real torch networks, real short training runs; the teacher is the shipped model rebuilt
from its ONNX file (as ``--teacher`` does).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra, installed by CI (make test)

from inscope.detector.card import sha256_file  # noqa: E402
from inscope.detector.onnx_detector import default_model_path  # noqa: E402
from inscope.detector.train.loss import distil_loss  # noqa: E402

RANGE = (-1.25, 2.25)


def _maps(hm: float, size: tuple[float, float], off: tuple[float, float]):
    """One-cell raw outputs (heatmap logit, log size, offset logits)."""
    return (torch.tensor([[[[hm]]]]), torch.tensor([[[[size[0]]], [[size[1]]]]]),
            torch.tensor([[[[off[0]]], [[off[1]]]]]))


def test_distil_loss_is_zero_for_the_teacher_itself() -> None:
    from inscope.detector.train.export import model_from_onnx

    teacher = model_from_onnx(default_model_path()).eval()
    with torch.no_grad():
        out = teacher(torch.randn(2, 1, 64, 96))
    total, parts = distil_loss(out, out, torch.tensor(3.0), RANGE, RANGE)
    assert abs(float(total)) < 1e-4
    assert all(abs(v) < 1e-4 for v in parts.values())


def test_distil_loss_values_by_hand() -> None:
    # teacher p = 0.75, student p = 0.5: KL = .75 ln(.75/.5) + .25 ln(.25/.5)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    student = _maps(0.0, (0.0, 0.0), (0.0, 0.0))
    teacher = _maps(math.log(3.0), (1.0, -2.0), (math.log(3.0), math.log(3.0)))
    total, parts = distil_loss(student, teacher, torch.tensor(2.0), (0.0, 1.0), RANGE)
    # heatmap: per object (2 objects)
    assert parts["kd_hm"] == pytest.approx(kl / 2, abs=1e-6)
    # size: (|0 - 1| + |0 + 2|) * w / (2 w) with w = 0.75, the teacher's probability
    assert parts["kd_size"] == pytest.approx(1.5, abs=1e-6)
    # offset, each decoded with its own range: student 0.5 in (0, 1), teacher
    # 0.75 * 3.5 - 1.25 = 1.375 in (-1.25, 2.25)
    assert parts["kd_offset"] == pytest.approx(0.875, abs=1e-6)
    assert float(total) == pytest.approx(kl / 2 + 1.5 + 0.875, abs=1e-5)


def test_distil_regression_counts_only_where_the_teacher_sees_an_object() -> None:
    # two cells: the teacher sees an object in the first (p ~ 1) and nothing in the
    # second (p ~ 0); the student's size is wrong by 1 in the second cell only
    s = (torch.zeros(1, 1, 1, 2), torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]]),
         torch.zeros(1, 2, 1, 2))
    t = (torch.tensor([[[[20.0, -20.0]]]]), torch.zeros(1, 2, 1, 2), torch.zeros(1, 2, 1, 2))
    _, parts = distil_loss(s, t, torch.tensor(1.0), RANGE, RANGE)
    assert parts["kd_size"] < 1e-6
    # ... and a wrong size where it does see one counts in full
    s2 = (s[0], torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]]), s[2])
    _, parts2 = distil_loss(s2, t, torch.tensor(1.0), RANGE, RANGE)
    assert parts2["kd_size"] == pytest.approx(1.0, abs=1e-6)


def test_distil_gradient_pulls_the_student_towards_the_teacher() -> None:
    s_hm = torch.tensor([[[[0.0]]]], requires_grad=True)
    s_size = torch.zeros(1, 2, 1, 1, requires_grad=True)
    s_off = torch.zeros(1, 2, 1, 1, requires_grad=True)
    teacher = _maps(2.0, (0.5, -0.5), (1.0, -1.0))
    total, _ = distil_loss((s_hm, s_size, s_off), teacher, torch.tensor(1.0), RANGE, RANGE)
    total.backward()
    assert s_hm.grad is not None and s_size.grad is not None and s_off.grad is not None
    # gradient descent moves each output towards the teacher's value
    assert float(s_hm.grad) < 0
    assert s_size.grad.flatten().tolist()[0] < 0 < s_size.grad.flatten().tolist()[1]
    assert s_off.grad.flatten().tolist()[0] < 0 < s_off.grad.flatten().tolist()[1]


def _dataset(seed: int):
    from inscope.detector.datasets import simulated_samples
    from inscope.detector.train.data import DetectionDataset

    samples = simulated_samples(2, seed=seed, shape=(192, 192))
    return DetectionDataset([s.image for s in samples], [s.boxes for s in samples],
                            crop=128, length=10 ** 6, seed=seed)


def _train(teacher, weight: float, steps: int = 4):
    from inscope.detector.train.model import TinyCenterNet
    from inscope.detector.train.trainer import TrainConfig, train

    torch.manual_seed(3)
    student = TinyCenterNet(antialias=True, widths=(16, 16))
    cfg = TrainConfig(steps=steps, batch=2, lr=3e-3, seed=3, threads=2, log_every=1,
                      distil_weight=weight)
    res = train(student, _dataset(5), cfg, progress=False, teacher=teacher)
    return student, res


@pytest.mark.slow
def test_training_with_a_teacher_keeps_the_teacher_and_changes_the_student() -> None:
    from inscope.detector.train.export import model_from_onnx

    teacher = model_from_onnx(default_model_path())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    plain, res_plain = _train(None, 1.0)
    zero, res_zero = _train(teacher, 0.0)
    kd, res_kd = _train(teacher, 1.0)
    # the teacher is frozen: eval mode (BatchNorm statistics untouched), same weights
    assert not teacher.training
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the distillation terms are logged; with weight 0 training is exactly plain training
    assert {"kd_hm", "kd_size", "kd_offset"} <= set(res_kd.history[-1])
    assert "kd_hm" not in res_plain.history[-1]
    for a, b in zip(plain.parameters(), zero.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b)
               for a, b in zip(plain.parameters(), kd.parameters(), strict=True))
    # the loss on the boxes is the same at step 1 (same weights, same batch) and the
    # logged total adds the distillation terms
    h0, h1 = res_plain.history[0], res_kd.history[0]
    assert h0["hm"] == pytest.approx(h1["hm"], rel=1e-5)
    kd_sum = h1["kd_hm"] + h1["kd_size"] + h1["kd_offset"]
    assert h1["loss"] == pytest.approx(h0["loss"] + kd_sum, rel=1e-4)


def test_train_command_names_a_missing_teacher(tmp_path: Path, capsys) -> None:
    from inscope.cli import main

    rc = main(["train", "--synthetic", "96", "--out", str(tmp_path / "m.onnx"),
               "--teacher", str(tmp_path / "nope.onnx")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--teacher" in err and "nope.onnx" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_train_command_distils_and_records_the_teacher(tmp_path: Path) -> None:
    import json

    from inscope.cli import main

    npz = tmp_path / "d.npz"
    from inscope.detector.datasets import simulated_samples

    s = simulated_samples(1, seed=11, shape=(192, 192))[0]
    np.savez(npz, image=s.image, boxes=s.boxes)
    out = tmp_path / "student.onnx"
    teacher = default_model_path()
    rc = main(["train", str(npz), "--steps", "3", "--batch", "2", "--crop", "128",
               "--widths", "16,16", "--teacher", str(teacher), "--distil-weight", "0.5",
               "--out", str(out), "--no-latency", "--threads", "2"])
    assert rc == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["teacher"] == {"file": teacher.name, "sha256": sha256_file(teacher)}
    assert card["training"]["distil_weight"] == 0.5
    assert "widths 16,16" in card["training"]["architecture"]
