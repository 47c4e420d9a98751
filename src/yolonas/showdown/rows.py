"""A showdown's rows, typed (ShowdownRow), and the run folder of one data set, runs/showdown/<name>/<data set>/: one
<model>_seed<k>.json per finished run of a model, so that separate calls (other models, other seeds) merge."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from yolonas.showdown.config import FAMILIES

logger = logging.getLogger(__name__)

# Ours first, then the peers, each family by model size.
TABLE_ORDER = tuple(m for names in FAMILIES.values() for m in names)
ROW_FILE = re.compile(r"^(?P<model>.+)_seed(?P<seed>-?\d+)\.json$")


@dataclass
class ShowdownRow:
    """One model's run with one seed on one data set, as its <model>_seed<k>.json holds it; or, from
    `compare.aggregate`, one model's mean over its seeds (`seeds`, `seeds_failed` and the spreads then set).

    AP fields are COCO AP on the 0..1 scale from our evaluator; latencies are set by `latency.time_together`.
    """

    model: str
    family: str
    status: str = "ok"  # ok; missing (Ultralytics not installed: the message says how to); failed (it says why)
    message: str = ""
    seed: int | None = None
    epochs: int | None = None
    settings: dict = field(default_factory=dict)  # what rows of one table must share (ShowdownConfig.settings)
    backend: str = "onnxruntime"
    threads: int | None = None  # the timing's CPU threads
    nms_free: bool = False
    command: str = ""
    AP: float | None = None
    AP50: float | None = None
    APs: float | None = None
    APm: float | None = None
    APl: float | None = None
    AP_int8: float | None = None
    AP50_int8: float | None = None
    params: float | None = None  # fused
    gflops: float | None = None  # fused, at the showdown's input size
    onnx_fp32: str | None = None
    int8_ir: str | None = None
    int8_recipe: str | None = None
    train_s: float | None = None  # training wall-clock: the sum of train_parts' seconds
    after_s: float | None = None  # evaluation, export, INT8 (the budget's per-run cost besides training)
    device: str | None = None
    recipe: str | None = None  # ours: the recipe; the peers: Ultralytics' defaults
    precision: str | None = None  # how it trained: fp32, bf16 autocast, fp16 autocast
    train_threads: int | str | None = None  # 'mixed: ...' when its parts differ
    train_cpu: str | None = None  # deploy.timing.cpu_info().describe() of its training; 'mixed: ...' across parts
    train_parts: list[dict] | None = None  # one per call that trained it (showdown.clock): CPU, threads, seconds
    train_time_rule: str | None = None  # how train_s comes from the parts, in words
    time_plan: dict | None = None  # --minutes: the minutes, the epochs planned, the seconds predicted, the probe
    time_comparable: bool | None = None  # set by the report: trained wholly on the data set's reference CPU
    int8_error: str | None = None  # the peer's INT8 step failed: why (its fp32 results stand)
    latency_fp32_ms: float | None = None
    latency_int8_ms: float | None = None
    latency_timed_with: list[str] | None = None
    latency_machine: str | None = None
    latency_runtimes: dict | None = None
    budget: dict | None = None  # a 1-epoch probe kept as the result: the budget decision it came from
    ultralytics: dict | None = None  # the peer's versions
    network_attempts: list[str] | None = None  # the peer child's refused network calls
    ultralytics_own_AP: float | None = None
    ultralytics_own_AP50: float | None = None
    ultralytics_own_AP_int8: float | None = None
    seeds: list[int] | None = None
    seeds_failed: list[int] | None = None
    AP_spread: float | None = None  # sample standard deviation over the seeds (2 or more)
    AP50_spread: float | None = None
    APs_spread: float | None = None
    AP_int8_spread: float | None = None
    extra: dict = field(default_factory=dict)  # keys of a row file this version does not know, kept as they were

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """The row as its JSON file holds it: every field (None as null), unknown keys of an older file kept."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> ShowdownRow:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


def row_path(run: Path, model: str, seed: int) -> Path:
    """Where the row of one model and seed lives in the run folder."""
    return run / f"{model}_seed{seed}.json"


def model_dir(run: Path, model: str, seed: int) -> Path:
    """The working folder of one model and seed (training, exports, predictions)."""
    return run / model / f"seed{seed}"


def save_row(row: ShowdownRow, path: Path) -> None:
    """Write one row (its status says whether it ran)."""
    path.write_text(json.dumps(row.to_dict(), indent=2) + "\n")
    logger.info("showdown: %s seed %s %s -> %s", row.model, row.seed, row.status, path)


def load_rows(run: Path) -> list[ShowdownRow]:
    """Every <model>_seed<k>.json of a run folder, in table order then by seed; other JSON files are not rows."""
    found = []
    for path in run.glob("*_seed*.json"):
        m = ROW_FILE.match(path.name)
        if m and m["model"] in TABLE_ORDER:
            found.append((TABLE_ORDER.index(m["model"]), int(m["seed"]), path))
    return [ShowdownRow.from_dict(json.loads(path.read_text())) for _, _, path in sorted(found)]
