"""The showdown: our YOLO-NAS and Ultralytics' YOLOv8 trained and scored alike, one table and one frontier plot.

Every model trains on the same data, input size, epochs, batch and seed; every model's detections on the
evaluation split (score > 0.01, at most 300 per image, IoU 0.7 per-class multi-label NMS in both families) are
scored by our `coco_metrics` against the same ground truth; every ONNX file (fp32 and INT8 of both families) is
timed in this process by the same loop. Ultralytics runs in its own virtual environment as a child process
(benchmarks/peers/ultralytics_showdown.py); this package never imports it. Per-model results land in
runs/showdown/<name>/<model>.json as they finish, so a showdown split over several calls merges.

An application on top of the library: config (models, settings), threads (set for a step, restored after),
rows (the run folder), ours and peer (one model of each side), latency (all ONNX files timed together), budget,
campaign (the steps of a call), report and plot (the table, notes, JSON and frontier figure).
"""

from __future__ import annotations

from yolonas.showdown.budget import epochs_for_budget
from yolonas.showdown.campaign import run_model, run_showdown
from yolonas.showdown.config import DEFAULT_MODELS, OURS, PEERS, TEST_MODELS, ShowdownConfig, family
from yolonas.showdown.latency import onnx_latency, time_together
from yolonas.showdown.peer import INSTALL_HINT, peer_data, peer_predictions_to_coco
from yolonas.showdown.plot import frontier_figure, plot_frontier
from yolonas.showdown.report import REPORT_FILES, markdown_table, write_report
from yolonas.showdown.rows import load_rows
from yolonas.showdown.threads import torch_threads

__all__ = [
    "DEFAULT_MODELS", "INSTALL_HINT", "OURS", "PEERS", "REPORT_FILES", "TEST_MODELS", "ShowdownConfig",
    "epochs_for_budget", "family", "frontier_figure", "load_rows", "markdown_table", "onnx_latency", "peer_data",
    "peer_predictions_to_coco", "plot_frontier", "run_model", "run_showdown", "time_together", "torch_threads",
    "write_report",
]
