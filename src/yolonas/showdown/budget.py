"""The budget rule: how many epochs fit in --budget minutes, from 1-epoch probes of every model."""

from __future__ import annotations

import math

from yolonas.errors import InputError
from yolonas.showdown.rows import ShowdownRow

RULE = ("E = floor((budget - probe time - sum(runs * after_s)) / sum(runs * train_s)), clamped to [1, --epochs]; "
        "runs: the seeds a model still runs; budget: the data set's share of --budget")


def epochs_for_budget(budget_s: float, spent_s: float, train_s: list[float], after_s: list[float],
                      max_epochs: int) -> int:
    """Epochs E such that spent + sum(after) + E * sum(train) <= budget, clamped to [1, max_epochs].

    `train_s` is each model's measured wall time to train one epoch (start-up and one validation included, so
    the estimate errs long), `after_s` its time for evaluation, export, INT8 and timing, and `spent_s` what the
    probes already took.
    """
    if budget_s <= 0 or max_epochs < 1:
        raise InputError(f"--budget must be positive and --epochs at least 1 (got {budget_s / 60:g} min, "
                         f"{max_epochs} epochs)")
    per_epoch = sum(train_s)
    if per_epoch <= 0:
        return max_epochs
    epochs = math.floor((budget_s - spent_s - sum(after_s)) / per_epoch)
    return max(1, min(max_epochs, epochs))


def budget_decision(budget_minutes: float, probe_s: float, probes: list[ShowdownRow], max_epochs: int,
                    runs: list[int] | None = None) -> dict:
    """The epochs the budget allows after the probes (rows of 1-epoch runs, one per model), each model running
    `runs` times (its seeds; 1 each by default), with what they were computed from."""
    runs = runs or [1] * len(probes)
    ok = [(p, n) for p, n in zip(probes, runs, strict=True) if p.ok]
    epochs = epochs_for_budget(budget_minutes * 60, probe_s, [p.train_s for p, n in ok for _ in range(n)],
                               [p.after_s for p, n in ok for _ in range(n)], max_epochs)
    return {"budget_minutes": budget_minutes, "probe_s": probe_s, "epochs": epochs,
            "train_s": {p.model: p.train_s for p, _ in ok}, "after_s": {p.model: p.after_s for p, _ in ok},
            "runs": {p.model: n for p, n in ok}, "rule": RULE}
