"""A showdown call, step by step: check the config, then per data set (one sub-run each): skip the runs already done,
probe for the budget (--budget: equal epochs) or each model's time probe (--minutes: equal training time, probe.py),
run each model and seed (ours in this process, the peers as a child; a training cut off resumes from its last.pt),
time every finished model together, write its report; then the summary over the data sets."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from yolonas.data import open_dataset
from yolonas.errors import InputError
from yolonas.showdown.budget import budget_decision
from yolonas.showdown.child import check_peers, peer_missing, ultralytics_python
from yolonas.showdown.config import ShowdownConfig, check_config, dataset_names, family, is_ours, nms_free
from yolonas.showdown.latency import time_together
from yolonas.showdown.ours import probe_ours, run_ours
from yolonas.showdown.peer import peer_yaml, probe_peer, run_peer
from yolonas.showdown.probe import get_probe, time_plan
from yolonas.showdown.report import write_report
from yolonas.showdown.rows import ShowdownRow, model_dir, row_path, save_row
from yolonas.showdown.summary import write_summary
from yolonas.showdown.threads import resolve_threads

logger = logging.getLogger(__name__)


def _peer_blocker(cfg: ShowdownConfig) -> dict | None:
    """The fields of a peer row that cannot run (status failed or missing, with why), or None when it can."""
    try:
        peer_yaml(cfg.data)  # a data set Ultralytics cannot read fails this row only, before any child starts
    except InputError as e:
        return {"status": "failed", "message": str(e)}
    why = peer_missing(ultralytics_python(cfg.ultralytics_python))
    return None if why is None else {"status": "missing", "message": why}


def _peer_fields(model: str, cfg: ShowdownConfig, epochs: int, folder: Path, dataset, threads: int,
                 seed: int) -> dict:
    """The fields of a peer's row: its results, or status failed / missing with a one-line message."""
    blocked = _peer_blocker(cfg)
    if blocked is not None:
        return blocked
    python = ultralytics_python(cfg.ultralytics_python)
    try:
        return {"status": "ok", **run_peer(model, cfg, epochs, folder, dataset, threads, python, seed)}
    except InputError as e:
        return {"status": "failed", "message": str(e)}


def _base_row(model: str, cfg: ShowdownConfig, epochs: int, seed: int, threads: int) -> ShowdownRow:
    return ShowdownRow(model=model, family=family(model), seed=seed, epochs=epochs, settings=cfg.settings(),
                       backend=cfg.backend, threads=threads, nms_free=nms_free(model), command=cfg.command)


def run_model(model: str, cfg: ShowdownConfig, epochs: int, folder: Path, seed: int | None = None) -> ShowdownRow:
    """One model's full step (train, evaluate, export, INT8) with one seed into `folder`; its row, never raising for a
    missing or failing peer (the row then says why). A training cut off or stopped (TrainingStopped) raises, and
    the next call resumes it from its last.pt."""
    seed = cfg.seed if seed is None else seed
    folder.mkdir(parents=True, exist_ok=True)
    threads = resolve_threads(cfg.threads)
    row = _base_row(model, cfg, epochs, seed, threads)
    dataset = open_dataset(cfg.data, cfg.split)
    if is_ours(model):
        return dataclasses.replace(row, status="ok", **run_ours(model, cfg, epochs, folder, dataset, threads, seed))
    return dataclasses.replace(row, **_peer_fields(model, cfg, epochs, folder, dataset, threads, seed))


def minutes_plan(model: str, cfg: ShowdownConfig, run: Path, seed: int) -> dict | None:
    """--minutes: the model's time plan on this data set (probe.time_plan), its probe measured once and saved; None
    for a peer that cannot run (its row then says why). InputError when the probe fails."""
    if not is_ours(model) and _peer_blocker(cfg) is not None:
        return None
    threads = resolve_threads(cfg.threads)
    python = ultralytics_python(cfg.ultralytics_python)

    def measure(folder: Path, probe_seed: int) -> tuple[list[dict], int]:
        if is_ours(model):
            return probe_ours(model, cfg, folder, threads, probe_seed)
        return probe_peer(model, cfg, folder, threads, python, probe_seed)

    return time_plan(get_probe(model, cfg, run, threads, seed, measure), cfg.minutes, cfg.epochs)


def run_planned(model: str, cfg: ShowdownConfig, run: Path, seed: int, epochs: int) -> ShowdownRow:
    """One run of the data set in `run`: with --minutes, for the epochs its probe plans (the row keeps the plan); a
    failing probe is the row's failure."""
    plan = None
    if cfg.minutes is not None:
        try:
            plan = minutes_plan(model, cfg, run, seed)
        except InputError as e:
            row = _base_row(model, cfg, epochs, seed, resolve_threads(cfg.threads))
            return dataclasses.replace(row, status="failed", message=f"time probe: {e}")
    row = run_model(model, cfg, plan["epochs"] if plan else epochs, model_dir(run, model, seed), seed)
    return dataclasses.replace(row, time_plan=plan)


def probe_and_scale(cfg: ShowdownConfig, todo: list[tuple[str, int]], run: Path, budget_minutes: float) -> int:
    """The budget rule: run each model once at 1 epoch (its first seed to do), then pick the epochs that fit what
    is left of `budget_minutes` for all the runs of `todo`.

    A probe at 1 epoch is a full result; when the budget allows only 1 epoch, the probes are the results (saved as
    those runs' rows, and taken off `todo`).
    """
    start = time.perf_counter()
    first = {}
    for model, seed in todo:
        first.setdefault(model, seed)
    probes = {(m, s): run_model(m, cfg, 1, model_dir(run / "probe", m, s), s) for m, s in first.items()}
    runs = [sum(1 for m, _ in todo if m == model) for model, _ in probes]  # the seeds each model still runs
    decision = budget_decision(budget_minutes, time.perf_counter() - start, list(probes.values()), cfg.epochs, runs)
    (run / "budget.json").write_text(json.dumps(decision, indent=2) + "\n")
    logger.info("showdown: %s: budget %.1f min -> %d epochs per run", run.name, budget_minutes, decision["epochs"])
    if decision["epochs"] == 1:
        for (model, seed), row in probes.items():
            save_row(dataclasses.replace(row, budget=decision), row_path(run, model, seed))
            todo.remove((model, seed))
    return decision["epochs"]


def runs_to_do(cfg: ShowdownConfig, run: Path) -> list[tuple[str, int]]:
    """The (model, seed) runs of `cfg` without an ok row in the run folder (all of them with --force): a call cut
    off between rows resumes at the first one missing, and a failed or missing row is tried again."""
    todo = []
    for model in cfg.models:
        for seed in cfg.seed_list():
            path = row_path(run, model, seed)
            if cfg.force or not path.is_file():
                todo.append((model, seed))
            elif (status := json.loads(path.read_text()).get("status")) != "ok":
                logger.info("showdown: %s seed %d was %s (%s): running it again", model, seed, status, path)
                todo.append((model, seed))
            else:
                logger.info("showdown: %s seed %d done already (%s); --force redoes it", model, seed, path)
    return todo


def run_dataset(cfg: ShowdownConfig, run: Path, budget_minutes: float | None) -> dict:
    """One data set's sub-run in `run` (cfg.data is that one data set): every run not done yet, the latencies, the
    report; the report's dict."""
    run.mkdir(parents=True, exist_ok=True)
    todo = runs_to_do(cfg, run)
    epochs, ran = cfg.epochs, bool(todo)
    if budget_minutes is not None and todo:
        epochs = probe_and_scale(cfg, todo, run, budget_minutes)  # takes the probes off todo when they are results
    for model, seed in todo:
        save_row(run_planned(model, cfg, run, seed, epochs), row_path(run, model, seed))
    if ran:  # latency is taken here only, every model side by side, not each after its own training
        time_together(run, cfg)
    return write_report(run, cfg.command, cfg.tie_noise)


def budget_share(total_minutes: float, spent_s: float, left: int) -> float:
    """A data set's share of the budget in minutes: what is left of it, split evenly over the data sets left (this
    one too); at least a second, so that a spent budget still runs the 1-epoch probes, which are then the results."""
    return max(total_minutes * 60 - spent_s, 1.0) / 60 / left


def run_showdown(cfg: ShowdownConfig) -> dict:
    """Run every model and seed of `cfg` not done yet on each data set of --data, each in
    runs/showdown/<name>/<data set>/ with its report, then write the summary over the data sets; its dict."""
    check_config(cfg)
    missing = check_peers(cfg)  # before any training: a missing peer stops here unless skip_missing_peers
    if missing is not None:
        logger.warning("showdown: going on without Ultralytics' models (--skip-missing-peers): %s", missing)
    run = Path(cfg.project) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    datasets = cfg.datasets()
    start, results, shares = time.perf_counter(), {}, {}
    for k, (data, name) in enumerate(zip(datasets, dataset_names(datasets), strict=True)):
        share = None
        if cfg.budget_minutes is not None:
            share = shares[name] = budget_share(cfg.budget_minutes, time.perf_counter() - start, len(datasets) - k)
        logger.info("showdown: data set %d/%d %s (%s)", k + 1, len(datasets), name, data)
        results[name] = run_dataset(dataclasses.replace(cfg, data=data), run / name, share)
    return write_summary(run, results, cfg, shares)
