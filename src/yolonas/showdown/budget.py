"""The budget rule: how many epochs fit in --budget minutes, from 1-epoch probes of every model."""

from __future__ import annotations

import math

from yolonas.errors import InputError

RULE = "E = floor((budget - probe time - sum(after_s)) / sum(train_s)), clamped to [1, --epochs]"


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


def budget_decision(budget_minutes: float, probe_s: float, probes: list[dict], max_epochs: int) -> dict:
    """The epochs the budget allows after the probes (rows of 1-epoch runs), with what they were computed from."""
    ok = [p for p in probes if p["status"] == "ok"]
    epochs = epochs_for_budget(budget_minutes * 60, probe_s, [p["train_s"] for p in ok], [p["after_s"] for p in ok],
                               max_epochs)
    return {"budget_minutes": budget_minutes, "probe_s": probe_s, "epochs": epochs,
            "train_s": {p["model"]: p["train_s"] for p in ok}, "after_s": {p["model"]: p["after_s"] for p in ok},
            "rule": RULE}
