"""Exact resume: a run killed after epoch k and resumed matches an uninterrupted run at epoch k + 1."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.train import Trainer, apply_overrides, load_recipe


class Killed(Exception):
    """Stands in for an interruption (a kill, a crash) right after an epoch's checkpoint."""


def snapshot_and_stop_at(epoch: int, store: dict):
    def hook(trainer: Trainer, done: int) -> None:
        store[done] = {**{f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()},
                       **{f"ema.{k}": v.clone() for k, v in trainer.ema.module.state_dict().items()}}
        if done == epoch:
            raise Killed(f"stopped after epoch {done}")
    return hook


@pytest.fixture
def deterministic_off_after():
    yield
    torch.use_deterministic_algorithms(False)


def test_resume_matches_an_uninterrupted_run(tmp_path: Path, deterministic_off_after):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=8, n_val=4, size=128, seed=2)
    # Augmentation on (mosaic, affine, HSV, flip), so a resume that lost the data order or RNG would show.
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data": str(data), "project": str(tmp_path / "runs"), "imgsz": 128, "batch": 4, "epochs": 3,
        "mosaic": 1.0, "deterministic": True, "val_every": 0, "run.plots": False, "run.verbose": False})

    full: dict = {}
    with pytest.raises(Killed):
        Trainer(apply_overrides(cfg, {"name": "full"}), snapshot_and_stop_at(2, full)).fit()
    first: dict = {}
    with pytest.raises(Killed):
        Trainer(apply_overrides(cfg, {"name": "cut"}), snapshot_and_stop_at(1, first)).fit()
    resumed: dict = {}
    trainer = Trainer(apply_overrides(cfg, {"name": "cut", "resume": True}), snapshot_and_stop_at(2, resumed))
    assert trainer.start_epoch == 1 and trainer.step == 2
    with pytest.raises(Killed):
        trainer.fit()

    assert set(resumed[2]) == set(full[2])
    for key, value in full[2].items():
        assert torch.equal(first[1][key], full[1][key]), key  # the two runs agree up to the cut ...
        assert torch.equal(resumed[2][key], value), key  # ... and after it
    moved = [k for k, v in full[2].items() if v.is_floating_point() and not torch.equal(v, full[1][k])]
    assert len(moved) > len(full[2]) // 2  # epoch 2 did train


def test_ctrl_c_says_how_to_resume_and_the_resumed_run_keeps_its_settings(tmp_path, monkeypatch, capsys):
    """An interrupted run names its last.pt and the resume command; `--resume` alone (no --recipe, no --workers)
    continues with the run's own settings, not the default recipe's."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from yolonas.cli import app  # noqa: PLC0415
    from yolonas.train import trainer as trainer_module  # noqa: PLC0415

    data = make_synthetic_dataset(tmp_path / "shapes", n_images=4, n_val=2, size=64, seed=1)
    monkeypatch.chdir(tmp_path)
    calls = {"n": 0}
    original = trainer_module.Trainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        calls["n"] += 1
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", interrupted_in_epoch_2)
    args = ["train", "--data", str(data), "--recipe", "cpu_smoke", "--epochs", "3", "--imgsz", "64", "--batch", "2",
            "--workers", "0", "--name", "cut", "--set", "run.plots=false"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130  # what a Ctrl-C ends with
    err = capsys.readouterr().err + r.output
    last = Path("runs/train/cut/weights/last.pt")
    assert "interrupted by Ctrl-C in epoch 2 of 3" in err and f"resume: yolonas train --resume {last}" in err
    assert f"last: {last} (epoch 1)" in err and "best: runs/train/cut/weights/best.pt (AP " in err

    seen = {}
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", original)
    monkeypatch.setattr(trainer_module.Trainer, "fit", lambda self: seen.update(cfg=self.cfg, start=self.start_epoch))
    CliRunner().invoke(app, ["train", "--resume", str(last)])
    assert seen["start"] == 1 and seen["cfg"].data.workers == 0 and seen["cfg"].data.image_size == 64
    assert seen["cfg"].model.name == "yolo_nas_tiny"  # cpu_smoke's, not the default recipe's yolo_nas_s


def test_resume_state_round_trips_through_last_pt(tmp_path):
    """What last.pt records of where a run stands comes back equal, the RNG streams included; an older last.pt
    without best_* keys reads with their defaults."""
    from yolonas.arch.model import build  # noqa: PLC0415
    from yolonas.arch.spec import yolo_nas_tiny  # noqa: PLC0415
    from yolonas.train.checkpoint import ResumeState, rng_state, set_rng_state  # noqa: PLC0415
    from yolonas.weights import read_checkpoint, save_checkpoint  # noqa: PLC0415

    state = ResumeState(epoch=3, step=42, best_fitness=0.25, best_epoch=2, rng=rng_state())
    draws = (torch.rand(4), np.random.rand(3), random.random())
    save_checkpoint(build(yolo_nas_tiny(), class_names=["a"]), tmp_path / "last.pt", **state.to_checkpoint())
    back = ResumeState.from_checkpoint(read_checkpoint(tmp_path / "last.pt"))
    assert dataclasses.replace(back, rng=None) == dataclasses.replace(state, rng=None)
    torch.manual_seed(7)
    set_rng_state(back.rng)
    again = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(again[0], draws[0]) and np.array_equal(again[1], draws[1]) and again[2] == draws[2]

    older = {"epoch": 3, "step": 42, "rng": None}
    assert ResumeState.from_checkpoint(older) == ResumeState(epoch=3, step=42)
