"""A run's record: its folder (with config.yaml), results.csv, TensorBoard, the training curves, the per-epoch
lines, and the lines that name the weights a run has left (at its end, or when it was stopped)."""

from __future__ import annotations

import csv
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from yolonas.eval.plots import plot_training_curves
from yolonas.train.config import TrainConfig

if TYPE_CHECKING:
    from yolonas.train.trainer import TrainResult

CSV_COLUMNS = ("epoch", "lr", "loss_cls", "loss_iou", "loss_dfl", "loss", "AP", "AP50", "AP75", "APs", "APm", "APl",
               "time")
LOSS_KEYS = ("loss_cls", "loss_iou", "loss_dfl", "loss")
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")



def run_folder(root: str | Path, name: str | None = None, exist_ok: bool = False) -> Path:
    """Where a run writes (not made here): root/name; when that exists and not `exist_ok`, the first free of
    name2, name3, ...; without a name, the first free of exp, exp2, ..."""
    base = Path(root) / (name or "exp")
    path, n = base, 2
    while path.exists() and not exist_ok:
        path, n = base.with_name(f"{base.name}{n}"), n + 1
    return path


def trim_csv(path: Path, epochs_done: int, columns: tuple[str, ...] = CSV_COLUMNS) -> None:
    """Drop rows past the resumed epoch (written before an interruption the checkpoint did not see)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) <= epochs_done)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


class RunLog:
    """The record of one run (rank 0 only): results.csv and TensorBoard rows, the per-epoch line (through `say`),
    and the training curves."""

    def __init__(self, run_dir: Path, columns: tuple[str, ...], loss_keys: tuple[str, ...], epochs: int,
                 plots: bool, say: Callable[[str], None]):
        self.run_dir, self.columns, self.loss_keys = run_dir, columns, loss_keys
        self.epochs, self.plots, self.say = epochs, plots, say
        self.tb = _tensorboard(run_dir)

    @classmethod
    def open(cls, cfg: TrainConfig, resumed: Path | None, epochs_done: int, columns: tuple[str, ...],
             loss_keys: tuple[str, ...], say: Callable[[str], None]) -> RunLog:
        """The resumed run's folder, or a new one; with config.yaml, and results.csv cut back to `epochs_done`."""
        if resumed is not None:
            run_dir = resumed.parent.parent if resumed.parent.name == "weights" else resumed.parent
        else:
            run_dir = run_folder(cfg.run.project, cfg.run.name, cfg.run.exist_ok)
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(run_dir / "config.yaml")
        trim_csv(run_dir / "results.csv", epochs_done, columns)
        return cls(run_dir, columns, loss_keys, cfg.schedule.epochs, cfg.run.plots, say)

    def record(self, row: dict) -> None:
        """Append the epoch's row to results.csv and TensorBoard."""
        path = self.run_dir / "results.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and v != "":
                    group = "train" if k in self.loss_keys else "val"
                    self.tb.add_scalar(k if k in ("lr", "time") else f"{group}/{k}", v, row["epoch"])

    def report(self, epoch: int, losses: Mapping[str, float], metrics: Mapping[str, float], lr: float,
               seconds: float) -> None:
        """The epoch's line (1-based `epoch`), and the training curves redrawn."""
        summary = " ".join(f"{k.removeprefix('loss_')} {losses[k]:.3f}" for k in self.loss_keys)
        if metrics:
            summary += " | " + " ".join(f"{k} {metrics[k]:.3f}" for k in ("AP", "AP50"))
        self.say(f"epoch {epoch}/{self.epochs}: {summary} | lr {lr:.3g} | {seconds:.1f}s")
        if self.plots:
            plot_training_curves(self.run_dir / "results.csv", self.run_dir / "results.png")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def weights_lines(weights: Mapping[str, Path], *, last_epoch: int, best_epoch: int, best_fitness: float,
                  metric: str, no_best: str) -> list[str]:
    """One line per weights file a run has left, its path alone after the label ("best: PATH (...)"), so that the
    path users copy is the one that exists; `no_best` says why there is no best.pt when there is none."""
    best, last = weights.get("best"), weights.get("last")
    lines = [f"best: {best} ({metric} {best_fitness:.3f}, epoch {best_epoch})" if best is not None
             else f"best: none yet ({no_best})"]
    if last is not None:
        lines.append(f"last: {last} (epoch {last_epoch})")
    return lines


def no_best_reason(val_every: int) -> str:
    """Why a run has no best.pt yet: when it validates."""
    if val_every == 1:
        return "validation runs after every epoch"
    if val_every > 0:
        return f"validation runs every {val_every} epochs and after the last"
    return "validation runs after the last epoch only"


def stopped_lines(reason: str, epoch: int, epochs: int, weights: Mapping[str, Path], run_dir: Path, *,
                  last_epoch: int, best_epoch: int, best_fitness: float, metric: str, val_every: int) -> list[str]:
    """What a run stopped by `reason` (Ctrl-C, SIGTERM) in `epoch` (1-based) says: the weights that exist, one line
    each, and the exact command that resumes it."""
    if "last" not in weights:
        return [f"interrupted by {reason} in epoch {epoch} of {epochs}, before any checkpoint: nothing to resume "
                f"({run_dir} holds the run so far)"]
    return [f"interrupted by {reason} in epoch {epoch} of {epochs}",
            *weights_lines(weights, last_epoch=last_epoch, best_epoch=best_epoch, best_fitness=best_fitness,
                           metric=metric, no_best=no_best_reason(val_every)),
            f"resume: yolonas train --resume {shlex.quote(str(weights['last']))}"]


def finished_lines(result: TrainResult, cfg: TrainConfig) -> list[str]:
    """What a finished run says: its folder (and, when --name was taken by an earlier run, that this is a new one),
    then the weights that exist, one line each."""
    head = f"train: {result.epochs} epoch{'' if result.epochs == 1 else 's'} in {result.run_dir}"
    asked = Path(cfg.run.project) / cfg.run.name
    if not cfg.run.resume and result.run_dir is not None and result.run_dir != asked:
        head += f" ({asked} holds an earlier run)"
    weights = {k: v for k, v in (("best", result.best), ("last", result.last)) if v is not None}
    return [head, *weights_lines(weights, last_epoch=result.epochs, best_epoch=result.best_epoch,
                                 best_fitness=result.best_fitness, metric=cfg.run.best_metric,
                                 no_best="not validated")]
