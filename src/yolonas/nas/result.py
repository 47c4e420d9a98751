"""What a search run found (SearchResult): its summary, the Pareto front, and the checks made on it; `to_dict()` is
search.json and `yolonas search --json`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

OPTIONAL = ("note", "latency_check", "measure_s", "short_training", "train_s")  # in the dict only when present


@dataclass
class SearchResult:
    """One search run: what was searched, on which target and under which cap, how long it took, and the front
    (one row per member, fastest first: its spec file, predicted and measured latency, estimates)."""

    out: str  # the run folder
    trials: int  # completed trials in the study, resumed ones included
    trials_this_run: int
    search_s: float
    space_size: int
    target: str  # the latency target: backend, precision, threads, device
    proxy: str  # the accuracy estimate searched on
    latency_cap_ms: float | None
    latency_cap_ratio: float | None
    latency_reference: str | None  # the network the ratio refers to
    calibration: dict  # per input size: whole-network ms = a * sum of parts + b, fitted on n networks
    latency_table: dict  # its path, entries, hits and misses this run
    load_average: list[float]
    front: list[dict] = field(default_factory=list)
    note: str | None = None  # why the front is empty, when a cap left no trial
    latency_check: dict | None = None  # front members measured end to end against the prediction
    measure_s: float | None = None
    short_training: dict | None = None  # front members trained briefly, and Kendall tau of each estimate
    train_s: float | None = None

    def to_dict(self) -> dict:
        """The result as plain JSON types; the optional parts only when present, the front last."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "front"}
        for key in OPTIONAL:
            if d[key] is None:
                del d[key]
        d["front"] = self.front
        return d
