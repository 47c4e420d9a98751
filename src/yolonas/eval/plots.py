"""PNG plots of evaluation and training: precision-recall curves, confusion matrix, training curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from yolonas.errors import DataError, InputError
from yolonas.eval.coco import Metrics

# Figure objects without pyplot: no global state, and no display backend is ever touched.
MAX_LEGEND_CLASSES = 20
MAX_ANNOTATED_CELLS = 30


def plot_pr_curves(metrics: Metrics, path: str | Path) -> Path:
    """Precision-recall curves at IoU 0.5 (area all, 100 detections) per class and their mean, as a PNG."""
    if metrics.precision is None:
        raise InputError("these metrics carry no precision array; compute them with coco_metrics()")
    at_50 = metrics.precision[0, :, :, 0, -1]  # [R=101, K]
    recall = np.linspace(0.0, 1.0, at_50.shape[0])
    has_gt = (at_50 > -1).all(axis=0)

    fig = Figure(figsize=(8, 6))
    ax = fig.add_subplot()
    few = int(has_gt.sum()) <= MAX_LEGEND_CLASSES
    for k in np.flatnonzero(has_gt):
        curve = at_50[:, k]
        label = f"{metrics.class_names[k]} {curve.mean():.3f}" if few else None
        ax.plot(recall, curve, linewidth=1, alpha=0.8 if few else 0.3, color=None if few else "grey", label=label)
    if has_gt.any():
        mean = at_50[:, has_gt].mean(axis=1)
        ax.plot(recall, mean, linewidth=3, color="blue", label=f"all classes {mean.mean():.3f} AP50")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall at IoU 0.5")
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str | Path, normalize: bool = True) -> Path:
    """Heat map of a (C+1)x(C+1) confusion matrix (rows predicted, columns true, last = background) as a PNG."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(class_names) + 1
    if matrix.shape != (n, n):
        raise InputError(f"confusion matrix of shape {matrix.shape} does not fit {n - 1} classes + background")
    if normalize:
        # Each true class (column) sums to 1: the share of its boxes that went to each prediction.
        matrix = matrix / np.maximum(matrix.sum(axis=0, keepdims=True), 1)
    labels = [*class_names, "background"]

    side = max(6.0, 0.25 * n + 3)
    fig = Figure(figsize=(side, side * 0.85))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels, rotation=90, fontsize="small")
    ax.set_yticks(range(n), labels, fontsize="small")
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix" + (" (normalised per true class)" * normalize))
    if n <= MAX_ANNOTATED_CELLS:
        threshold = matrix.max() / 2
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                text = f"{value:.2f}" if normalize else f"{int(value)}"
                color = "white" if value > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color=color)
    return _save(fig, path)


def plot_training_curves(csv_path: str | Path, path: str | Path) -> Path:
    """Losses (loss_* columns) and mAP (AP* columns) per epoch from the trainer's CSV, as a PNG."""
    columns = _read_csv_columns(Path(csv_path))
    if "epoch" not in columns:
        raise DataError(f"{csv_path}: no 'epoch' column")
    losses = [name for name in columns if name.startswith("loss")]
    aps = [name for name in columns if name.startswith("AP")]
    if not losses and not aps:
        raise DataError(f"{csv_path}: no loss_* or AP* columns to plot")

    epoch = columns["epoch"]
    groups = [(title, names) for title, names in (("Loss", losses), ("mAP", aps)) if names]
    fig = Figure(figsize=(6 * len(groups), 4.5))
    for i, (title, names) in enumerate(groups, start=1):
        ax = fig.add_subplot(1, len(groups), i)
        for name in names:
            # Metrics may be measured only every few epochs: plot the epochs that have a value.
            known = np.isfinite(columns[name]) & np.isfinite(epoch)
            ax.plot(epoch[known], columns[name][known], marker="." if known.sum() < 50 else None, label=name)
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def _read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    if not rows:
        raise DataError(f"{path}: no rows")
    return {name.strip(): np.array([_number(row[name]) for row in rows]) for name in rows[0] if name is not None}


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
