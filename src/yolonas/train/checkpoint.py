"""A run's checkpoints: what last.pt records so that a resumed run continues exactly (ResumeState, the RNG streams),
writing last.pt and best.pt each epoch (CheckpointWriter), and reading a last.pt back to resume from."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yolonas.errors import CheckpointError
from yolonas.train.config import TrainConfig
from yolonas.weights import read_checkpoint, save_checkpoint


def rng_state() -> dict:
    """torch, CUDA, numpy and Python RNG states as tensors and plain types (a weights_only checkpoint holds them)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Continue every random stream where `rng_state()` captured it."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumeState:
    """Where a run stands: what last.pt records so that a resumed run continues exactly (under the same keys as
    always, so older last.pt files load)."""

    epoch: int = 0  # epochs completed (and saved)
    step: int = 0  # optimizer steps taken
    best_fitness: float = -1.0  # the run.best_metric of best.pt
    best_epoch: int = 0  # 1-based epoch of best.pt (0: never validated)
    rng: dict | None = None  # the RNG states to continue from (rng_state()); captured at each save

    def to_checkpoint(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_fitness": self.best_fitness,
                "best_epoch": self.best_epoch, "rng": self.rng}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> ResumeState:
        return cls(epoch=int(ckpt["epoch"]), step=int(ckpt["step"]), best_fitness=float(ckpt.get("best_fitness", -1.0)),
                   best_epoch=int(ckpt.get("best_epoch", 0)), rng=ckpt.get("rng"))


# ------------------------------------------------------------------------------------------------ resuming


def resume_path(cfg: TrainConfig) -> Path | None:
    """The last.pt that `cfg.run.resume` names (True: this run's own), or None when not resuming."""
    if cfg.run.resume is False or cfg.run.resume is None or cfg.run.resume == "":
        return None
    if cfg.run.resume is True:
        path = Path(cfg.run.project) / cfg.run.name / "weights" / "last.pt"
    else:
        path = Path(str(cfg.run.resume))
        if path.is_dir():
            path = path / "weights" / "last.pt" if (path / "weights").is_dir() else path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume (no such last.pt); check --name or give its path")
    return path


def read_resumed(path: Path) -> dict:
    """A last.pt written by training (with its optimizer state and config); CheckpointError for anything else."""
    ckpt = read_checkpoint(path)
    if "optimizer" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a last.pt written by training (no optimizer state); "
                              f"to start from its weights use --model {path}")
    return ckpt


def resumed_config(cfg: TrainConfig, ckpt: dict) -> TrainConfig:
    """The checkpoint's config, so the run continues as it started; only where and how verbosely may change."""
    saved = TrainConfig.from_dict(ckpt["config"], "checkpoint config")
    run = dataclasses.replace(saved.run, device=cfg.run.device, verbose=cfg.run.verbose, resume=cfg.run.resume)
    data = dataclasses.replace(saved.data, workers=cfg.data.workers)
    return dataclasses.replace(saved, run=run, data=data)


def resumed_recipe(cfg: TrainConfig) -> TrainConfig:
    """The config the run that `cfg.run.resume` names was started with (read from its last.pt): a resumed run
    keeps its own settings, and only what the user states again changes."""
    path = resume_path(cfg)
    return TrainConfig.from_dict(read_checkpoint(path)["config"], f"{path}: config")


# ------------------------------------------------------------------------------------------------ writing


class CheckpointWriter:
    """Writes a run's weights/last.pt (everything a resume needs) and best.pt (the evaluation model, when an epoch
    beats the best so far), and knows which of them exist and what they hold."""

    def __init__(self, weights_dir: Path, cfg: TrainConfig, model, ema, optimizer, scheduler, scaler, distiller,
                 state: ResumeState):
        self.weights_dir = weights_dir
        self.config = cfg.to_dict()
        self.model, self.ema, self.distiller = model, ema, distiller
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        # What the files on disk hold: a resumed run starts from its last.pt (and its best.pt, when it has one).
        self.last_epoch = state.epoch
        self.best_epoch, self.best_fitness = state.best_epoch, state.best_fitness

    @property
    def last(self) -> Path:
        return self.weights_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.weights_dir / "best.pt"

    def save(self, state: ResumeState, metrics: dict, best: bool) -> None:
        """best.pt when this epoch is the best so far, then last.pt: everything a resume needs. In this order, the
        best.pt a last.pt names always exists, even when the run is stopped between the two."""
        state.rng = rng_state()
        saved = state.to_checkpoint()
        common = {"epoch": saved["epoch"], "metrics": metrics, "config": self.config,
                  "best_fitness": saved["best_fitness"], "best_epoch": saved["best_epoch"]}
        ema, distiller = self.ema, self.distiller
        if best:
            save_checkpoint(ema.module if ema is not None else self.model, self.best, **common)
            self.best_epoch, self.best_fitness = state.best_epoch, state.best_fitness
        save_checkpoint(
            self.model, self.last, **common, step=saved["step"], rng=saved["rng"],
            ema_state_dict=ema.state_dict() if ema is not None else None,
            ema_updates=ema.updates if ema is not None else 0,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            distill_state_dict=distiller.loss.state_dict() if distiller is not None else None)
        self.last_epoch = state.epoch

    def existing(self) -> dict[str, Path]:
        """The weights this run has written ("last", "best"), each when it exists: not an older run's file left in
        a reused folder."""
        written = {"last": (self.last, self.last_epoch), "best": (self.best, self.best_epoch)}
        return {name: path for name, (path, epoch) in written.items() if epoch > 0 and path.is_file()}
