"""Evaluation: COCO box metrics through faster-coco-eval, a confusion matrix, and plots."""

from yolonas.eval.coco import Metrics, coco_metrics, confusion_matrix, load_ground_truth, load_predictions
from yolonas.eval.plots import plot_confusion_matrix, plot_pr_curves, plot_training_curves

__all__ = [
    "Metrics",
    "coco_metrics",
    "confusion_matrix",
    "load_ground_truth",
    "load_predictions",
    "plot_confusion_matrix",
    "plot_pr_curves",
    "plot_training_curves",
]
