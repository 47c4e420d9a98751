"""Seeds and ties: one row per model with the mean and spread over its seeds, and the rule that calls two models'
AP a tie when they differ by less than the noise (the seed spread, or the documented one-seed default)."""

from __future__ import annotations

import dataclasses
import statistics

from yolonas.showdown.config import DEFAULT_NOISE
from yolonas.showdown.rows import ShowdownRow

# Averaged over a model's seeds; the spread is kept for those in SPREAD. train_s only over the seeds whose training
# time compares (time_comparable not False: trained wholly on the data set's reference CPU).
MEAN_FIELDS = ("AP", "AP50", "APs", "APm", "APl", "AP_int8", "AP50_int8", "train_s", "after_s")
SPREAD = ("AP", "AP50", "APs", "AP_int8")
TIE_RULE = ("tie: two models' mean AP differ by less than the noise, the larger of their seed spreads (sample "
            "standard deviation over seeds) when both ran 2 seeds or more, else {noise:.1f} points (the one-seed "
            "spread measured on aquarium)")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def aggregate(rows: list[ShowdownRow]) -> list[ShowdownRow]:
    """One row per model (in the order given): its ok seeds' mean of MEAN_FIELDS, the spread of SPREAD, the seeds."""
    by_model: dict[str, list[ShowdownRow]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    out = []
    for runs in by_model.values():
        ok = [r for r in runs if r.ok]
        values = {key: [v for r in ok if (v := getattr(r, key)) is not None] for key in MEAN_FIELDS}
        values["train_s"] = [r.train_s for r in ok if r.train_s is not None and r.time_comparable is not False]
        means = {key: _mean(v) for key, v in values.items()}
        spreads = {f"{key}_spread": _spread(values[key]) for key in SPREAD}
        out.append(dataclasses.replace(ok[0] if ok else runs[0], seeds=[r.seed for r in ok],
                                       seeds_failed=[r.seed for r in runs if not r.ok], **means, **spreads))
    return out


def tie_noise(a: ShowdownRow, b: ShowdownRow, default: float = DEFAULT_NOISE) -> tuple[float, str]:
    """The AP difference under which rows `a` and `b` tie, and where it comes from."""
    if a.AP_spread is not None and b.AP_spread is not None:
        return max(a.AP_spread, b.AP_spread), "seed spread"
    return default, "one-seed default"


def verdict(a: ShowdownRow, b: ShowdownRow, default: float = DEFAULT_NOISE) -> dict:
    """`a` against `b` on mean AP: the difference, the noise, and the winner (None for a tie)."""
    noise, source = tie_noise(a, b, default)
    delta = a.AP - b.AP
    winner = None if abs(delta) < noise else (a.model if delta > 0 else b.model)
    if winner is None:
        text = (f"{a.model} vs {b.model}: tie (AP {100 * delta:+.1f} pts, under the noise "
                f"{100 * noise:.1f} pts, {source})")
    else:
        loser = b.model if winner == a.model else a.model
        text = (f"{a.model} vs {b.model}: {winner} ahead of {loser} by {100 * abs(delta):.1f} pts "
                f"(noise {100 * noise:.1f} pts, {source})")
    return {"a": a.model, "b": b.model, "delta": delta, "noise": noise, "noise_source": source,
            "winner": winner, "text": text}


def _scored(rows: list[ShowdownRow]) -> list[ShowdownRow]:
    return [r for r in rows if r.ok and r.AP is not None]


def head_to_head(rows: list[ShowdownRow], default: float = DEFAULT_NOISE) -> list[dict]:
    """The verdict of every pair of ok model rows from different families, in table order."""
    ok = _scored(rows)
    return [verdict(a, b, default) for i, a in enumerate(ok) for b in ok[i + 1:] if a.family != b.family]


def standing(rows: list[ShowdownRow], default: float = DEFAULT_NOISE) -> dict[str, str]:
    """The 'vs best' cell of each ok row: 'best', 'tie for best', or its AP behind the best in points."""
    ok = _scored(rows)
    if not ok:
        return {}
    best = max(ok, key=lambda r: r.AP)
    tied = {r.model for r in ok if r is not best and verdict(best, r, default)["winner"] is None}
    cells = {r.model: ("tie for best" if r.model in tied else f"{100 * (r.AP - best.AP):+.1f}")
             for r in ok if r is not best}
    cells[best.model] = "tie for best" if tied else "best"
    return cells
