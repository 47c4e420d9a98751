"""A showdown call, step by step: check the config, skip the models already done, probe for the budget, run each
model (ours in this process, the peer as a child), time every finished model together, write the report."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from yolonas.data import open_dataset
from yolonas.errors import InputError
from yolonas.showdown.budget import budget_decision
from yolonas.showdown.config import ShowdownConfig, check_config, family
from yolonas.showdown.latency import time_together
from yolonas.showdown.ours import run_ours
from yolonas.showdown.peer import peer_missing, run_peer, ultralytics_python
from yolonas.showdown.report import write_report
from yolonas.showdown.rows import row_path, save_row
from yolonas.showdown.threads import resolve_threads

logger = logging.getLogger(__name__)


def run_model(model: str, cfg: ShowdownConfig, epochs: int, folder: Path) -> dict:
    """One model's full step (train, evaluate, export, INT8) into `folder`; its row, never raising for a
    missing or failing peer (the row then says why)."""
    folder.mkdir(parents=True, exist_ok=True)
    threads = resolve_threads(cfg.threads)
    base = {"model": model, "family": family(model), "epochs": epochs, "settings": cfg.settings(),
            "backend": cfg.backend, "threads": threads, "command": cfg.command}
    dataset = open_dataset(cfg.data, cfg.split)
    if family(model) == "YOLO-NAS":
        return {**base, "status": "ok", **run_ours(model, cfg, epochs, folder, dataset, threads)}
    python = ultralytics_python(cfg.ultralytics_python)
    why = peer_missing(python)
    if why is not None:
        return {**base, "status": "missing", "message": why}
    try:
        return {**base, "status": "ok", **run_peer(model, cfg, epochs, folder, dataset, threads, python)}
    except InputError as e:
        return {**base, "status": "failed", "message": str(e)}


def probe_and_scale(cfg: ShowdownConfig, todo: list[str], run: Path) -> int:
    """The budget rule: run each model once at 1 epoch, then pick the epochs that fit what is left.

    A probe at 1 epoch is a full result; when the budget allows only 1 epoch, the probes are the results (saved as
    the models' rows, and `todo` emptied).
    """
    start = time.perf_counter()
    probes = {m: run_model(m, cfg, 1, run / "probe" / m) for m in todo}
    decision = budget_decision(cfg.budget_minutes, time.perf_counter() - start, list(probes.values()), cfg.epochs)
    (run / "budget.json").write_text(json.dumps(decision, indent=2) + "\n")
    logger.info("showdown: budget %g min -> %d epochs per model", cfg.budget_minutes, decision["epochs"])
    if decision["epochs"] == 1:
        for model, row in probes.items():
            save_row({**row, "budget": decision}, row_path(run, model))
        todo.clear()
    return decision["epochs"]


def models_to_run(cfg: ShowdownConfig, run: Path) -> list[str]:
    """The models of `cfg` without a row in the run folder (all of them with --force)."""
    todo = [m for m in cfg.models if cfg.force or not row_path(run, m).is_file()]
    for m in cfg.models:
        if m not in todo:
            logger.info("showdown: %s done already (%s); --force redoes it", m, row_path(run, m))
    return todo


def run_showdown(cfg: ShowdownConfig) -> dict:
    """Run every model of `cfg` not done yet in runs/showdown/<name>/, then write the merged report; its dict."""
    check_config(cfg)
    run = Path(cfg.project) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    todo = models_to_run(cfg, run)
    epochs, ran = cfg.epochs, bool(todo)
    if cfg.budget_minutes is not None and todo:
        epochs = probe_and_scale(cfg, todo, run)  # empties todo when the 1-epoch probes are the results
    for model in todo:
        save_row(run_model(model, cfg, epochs, run / model), row_path(run, model))
    if ran:  # latency is taken here only, every model side by side, not each after its own training
        time_together(run, cfg)
    return write_report(run, cfg.command)
