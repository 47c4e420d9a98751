"""DDP on CPU: 2 processes with gloo train a few steps and end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.train import Trainer, apply_overrides, load_recipe
from yolonas.train.distributed import cleanup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data": data, "project": str(Path(out) / "runs"), "name": "ddp", "imgsz": 128, "batch": 2, "epochs": 2,
        "device": "cpu", "val_every": 0, "run.plots": False, "run.verbose": False})
    trainer = Trainer(cfg)
    initial = {k: v.clone() for k, v in trainer.model.named_parameters()}
    result = trainer.fit()
    torch.save({"initial": initial,
                "params": dict(trainer.model.named_parameters()),
                "ema": dict(trainer.ema.module.named_parameters()),
                "steps": trainer.step,
                "run_dir": str(result.run_dir)}, Path(out) / f"rank{rank}.pt")
    cleanup(trainer.dist)


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=8, n_val=4, size=128, seed=3)
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 4  # 8 images, 2 ranks, batch 2 per rank, 2 epochs
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key
        assert torch.equal(r0["ema"][key], r1["ema"][key]), key
    changed = [k for k in r0["params"] if not torch.equal(r0["params"][k], r0["initial"][k])]
    assert len(changed) > len(r0["params"]) // 2
    assert r1["run_dir"] == "None" and (tmp_path / "runs" / "ddp" / "weights" / "last.pt").is_file()
    assert not (tmp_path / "runs" / "ddp2").exists()  # only rank 0 made a run folder
