"""Knowledge distillation: the KD losses, the teacher checks, and distilled training with checkpoints and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import yolonas
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.data import open_dataset
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.errors import InputError
from yolonas.train import DistillConfig, DistillLoss, Trainer, apply_overrides, load_recipe
from yolonas.train.distill import (
    Distiller,
    bernoulli_kl,
    box_kd_loss,
    channel_wise_kd,
    class_kd_loss,
    kd_weight,
    load_teacher,
)

NAMES = ["a", "b", "c"]


def tiny(names=NAMES, seed=0, **head):
    torch.manual_seed(seed)
    spec = yolo_nas_tiny()
    if head:
        spec.head.__dict__.update(head)
    return build(spec, class_names=list(names))


def test_losses_are_zero_when_student_equals_teacher_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    logits, distri = torch.randn(2, 50, 3, generator=g) * 3, torch.randn(2, 50, 4 * 17, generator=g)
    feats = torch.randn(2, 8, 5, 5, generator=g)
    assert class_kd_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert box_kd_loss(distri, distri.clone(), logits, 16, 10.0).item() == pytest.approx(0.0, abs=1e-6)
    assert channel_wise_kd(feats, feats.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 50, 3, generator=g)
    assert class_kd_loss(other, logits, 2.0) > 1e-3
    assert box_kd_loss(torch.randn(2, 50, 68, generator=g), distri, logits, 16, 10.0) > 1e-4
    assert channel_wise_kd(torch.randn(2, 8, 5, 5, generator=g), feats) > 1e-3


def test_bernoulli_kl_matches_its_definition():
    s, t = torch.tensor([-2.0, 0.3, 4.0]), torch.tensor([1.0, 0.3, -3.0])
    p, q = torch.sigmoid(t / 2), torch.sigmoid(s / 2)
    expected = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    torch.testing.assert_close(bernoulli_kl(s, t, 2.0), expected)


def test_box_kd_ignores_anchors_the_teacher_sees_nothing_at():
    """The box term is weighted by the teacher's score: disagreement on background anchors costs (almost) nothing."""
    g = torch.Generator().manual_seed(1)
    t_distri, s_distri = torch.randn(1, 10, 68, generator=g), torch.randn(1, 10, 68, generator=g)
    teacher_logits = torch.full((1, 10, 3), -20.0)
    teacher_logits[0, 0, 1] = 5.0  # one confident anchor
    s_distri[0, 0] = t_distri[0, 0]  # ... where the student agrees
    assert box_kd_loss(s_distri, t_distri, teacher_logits, 16, 10.0).item() < 1e-6
    s_distri[0, 0] += torch.randn(68, generator=g)
    assert box_kd_loss(s_distri, t_distri, teacher_logits, 16, 10.0).item() > 1e-4


def test_kd_weight_decays_on_a_cosine_from_one_to_the_final_ratio():
    values = [kd_weight(p / 10, 0.1) for p in range(11)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1) and values[5] == pytest.approx(0.55)
    assert all(a > b for a, b in zip(values, values[1:]))


def test_gradients_reach_only_the_student_and_the_align_convs(tmp_path: Path):
    student, teacher = tiny(seed=0), tiny(seed=1)
    teacher.save(tmp_path / "teacher.pt")
    distiller = Distiller(DistillConfig(teacher=str(tmp_path / "teacher.pt"), feat_weight=1.0), student, NAMES,
                          torch.device("cpu"))
    x = torch.rand(2, 3, 64, 64)
    student.train()
    loss, parts = distiller(student(x), distiller.teacher_out(x), progress=0.0)
    loss.backward()
    assert all(parts[k] > 0 for k in ("loss_kd_cls", "loss_kd_box", "loss_kd_feat"))
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert not distiller.teacher.training
    trained = [p for p in student.parameters() if p.requires_grad]
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in trained) > len(trained) // 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.loss.align.parameters())


def test_teacher_with_other_classes_or_bins_is_refused(tmp_path: Path):
    student = tiny()
    tiny(names=["x", "y", "z"]).save(tmp_path / "other_classes.pt")
    with pytest.raises(InputError, match="classes"):
        load_teacher(str(tmp_path / "other_classes.pt"), student, NAMES)
    tiny(reg_max=8).save(tmp_path / "other_bins.pt")
    with pytest.raises(InputError, match="reg_max"):
        load_teacher(str(tmp_path / "other_bins.pt"), student, NAMES)


def test_feature_kd_needs_channels():
    with pytest.raises(InputError):
        DistillLoss(DistillConfig(teacher="t.pt", feat_weight=1.0), reg_max=16)


class Killed(Exception):
    """Stands in for an interruption right after an epoch's checkpoint."""


def stop_at(epoch: int, store: dict):
    def hook(trainer: Trainer, done: int) -> None:
        store[done] = {**{f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()},
                       **{f"align.{k}": v.clone() for k, v in trainer.distiller.loss.state_dict().items()}}
        if done == epoch:
            raise Killed
    return hook


def test_distilled_training_logs_kd_keeps_checkpoints_clean_and_resumes_exactly(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=8, n_val=4, size=64, seed=3)
    names = open_dataset(data, "train").class_names
    tiny(names=names, seed=5).save(tmp_path / "teacher.pt")
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data": str(data), "project": str(tmp_path / "runs"), "imgsz": 64, "batch": 4, "epochs": 2,
        "val_every": 0, "run.plots": False, "run.verbose": False, "teacher": str(tmp_path / "teacher.pt"),
        "distill.feat_weight": 1.0})
    full: dict = {}
    with pytest.raises(Killed):
        Trainer(apply_overrides(cfg, {"name": "full"}), stop_at(2, full)).fit()
    cut: dict = {}
    with pytest.raises(Killed):
        Trainer(apply_overrides(cfg, {"name": "cut"}), stop_at(1, cut)).fit()
    last = tmp_path / "runs" / "cut" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert set(ckpt["distill_state_dict"]) and not any("teacher" in k or "align" in k for k in ckpt["state_dict"])
    # The student checkpoint loads as a plain model with exactly a fresh student's keys.
    assert set(yolonas.load(last).state_dict()) == set(tiny(names=names).state_dict())
    header = (tmp_path / "runs" / "cut" / "results.csv").read_text().splitlines()[0]
    assert "loss_kd_cls" in header and "loss_kd_feat" in header

    resumed: dict = {}
    trainer = Trainer(apply_overrides(cfg, {"name": "cut", "resume": True}), stop_at(2, resumed))
    with pytest.raises(Killed):
        trainer.fit()
    for key, value in full[2].items():
        torch.testing.assert_close(resumed[2][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(full[2]["align.align.0.weight"], full[1]["align.align.0.weight"])  # the align convs trained
