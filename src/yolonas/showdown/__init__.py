"""The showdown: our YOLO-NAS against Ultralytics' YOLOv8, YOLO11 and YOLO26, trained and scored alike, each on its
fastest CPU deployment path, on one or several data sets.

Every model trains on the same data, input size, batch and seeds, for the same epochs or (--minutes) the same
wall-clock training time, each the way its own framework trains on that hardware (ours: --recipe, on a CPU by default
our CPU recipe, bf16 autocast where the CPU has it natively; Ultralytics: its defaults, fp32 on a CPU); every model's
detections on the evaluation split (score > 0.01, at most 300 per image; IoU 0.7 per-class multi-label NMS for YOLO-NAS,
YOLOv8 and YOLO11, none for the NMS-free YOLO26, scored as Ultralytics ships it) are scored by our
`coco_metrics` against the same ground truth. Latency: every fp32 ONNX file through ONNX Runtime and every INT8
OpenVINO IR (ours: NNCF through `yolonas quantize`; Ultralytics': its own `export(format="openvino", int8=True)`)
through OpenVINO, timed in this process by the same loop. Ultralytics runs in its own virtual environment as a child
process (peer_child/ultralytics_showdown.py, shipped as package data); this package never imports it, and checks
before any training that it can run. Each data set has its sub-run, runs/showdown/<name>/<data set>/, with one
<model>_seed<k>.json per finished run (separate calls merge), its report and frontier plot;
runs/showdown/<name>/summary.md sums the data sets up.

A call cut off resumes where it stopped: row by row (the row files), and inside a row from its last.pt with the same
epochs; its training time is the sum of the parts, each on the CPU it names.

An application on top of the library: config (models and families, settings), threads (set for a step, restored
after), rows (the run folder), child (the Ultralytics interpreter and script, checked first), clock (a run's training
time, in parts), probe (equal training time: each model's probe and epochs), ours and peer (one model of each side),
latency (all files timed together), budget, compare (seeds and ties), campaign (the steps of a call), report,
timereport and plot (one data set's table, notes, JSON and frontier figure), summary (over the data sets).
"""

from __future__ import annotations

from yolonas.deploy.timing import torch_threads
from yolonas.showdown.budget import epochs_for_budget
from yolonas.showdown.campaign import run_model, run_showdown
from yolonas.showdown.child import INSTALL_HINT, check_peers, peer_missing
from yolonas.showdown.clock import TrainingStopped, read_parts
from yolonas.showdown.compare import aggregate, head_to_head, standing, verdict
from yolonas.showdown.config import (
    DEFAULT_MODELS,
    DEFAULT_NOISE,
    FAMILIES,
    NMS_FREE,
    OURS,
    PEERS,
    TEST_MODELS,
    ShowdownConfig,
    check_config,
    family,
)
from yolonas.showdown.latency import model_latency, time_together
from yolonas.showdown.peer import peer_data, peer_predictions_to_coco
from yolonas.showdown.plot import frontier_figure, plot_frontier
from yolonas.showdown.probe import Probe, plan_epochs
from yolonas.showdown.report import REPORT_FILES, markdown_table, write_report
from yolonas.showdown.rows import ShowdownRow, load_rows
from yolonas.showdown.summary import SUMMARY_FILES, mean_rows, write_summary

__all__ = [
    "DEFAULT_MODELS", "DEFAULT_NOISE", "FAMILIES", "INSTALL_HINT", "NMS_FREE", "OURS", "PEERS", "REPORT_FILES",
    "SUMMARY_FILES", "TEST_MODELS", "Probe", "ShowdownConfig", "ShowdownRow", "TrainingStopped", "aggregate",
    "check_config", "check_peers", "epochs_for_budget", "family", "frontier_figure", "head_to_head", "load_rows",
    "markdown_table", "mean_rows", "model_latency", "peer_data", "peer_missing", "peer_predictions_to_coco",
    "plan_epochs", "plot_frontier", "read_parts", "run_model", "run_showdown", "standing", "time_together",
    "torch_threads", "verdict", "write_report", "write_summary",
]
