"""Seeds and ties: one row per model with the mean and spread over its seeds, and the rule that calls two models'
AP a tie when they differ by less than the noise (the seed spread, or the documented one-seed default)."""

from __future__ import annotations

import statistics

from yolonas.showdown.config import DEFAULT_NOISE

# Averaged over a model's seeds; the spread is kept for those in SPREAD.
MEAN_FIELDS = ("AP", "AP50", "APs", "APm", "APl", "AP_int8", "AP50_int8", "train_s", "after_s")
SPREAD = ("AP", "AP_int8")
TIE_RULE = ("tie: two models' mean AP differ by less than the noise, the larger of their seed spreads (sample "
            "standard deviation over seeds) when both ran 2 seeds or more, else {noise:.1f} points (the one-seed "
            "spread measured on aquarium)")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per model (in the order given): its ok seeds' mean of MEAN_FIELDS, the spread of SPREAD, the seeds."""
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    out = []
    for runs in by_model.values():
        ok = [r for r in runs if r["status"] == "ok"]
        row = dict(ok[0] if ok else runs[0])
        row["seeds"] = [r.get("seed") for r in ok]
        row["seeds_failed"] = [r.get("seed") for r in runs if r["status"] != "ok"]
        for key in MEAN_FIELDS:
            values = [r[key] for r in ok if r.get(key) is not None]
            row[key] = _mean(values)
            if key in SPREAD:
                row[f"{key}_spread"] = _spread(values)
        out.append(row)
    return out


def tie_noise(a: dict, b: dict, default: float = DEFAULT_NOISE) -> tuple[float, str]:
    """The AP difference under which rows `a` and `b` tie, and where it comes from."""
    spreads = [a.get("AP_spread"), b.get("AP_spread")]
    if all(s is not None for s in spreads):
        return max(spreads), "seed spread"
    return default, "one-seed default"


def verdict(a: dict, b: dict, default: float = DEFAULT_NOISE) -> dict:
    """`a` against `b` on mean AP: the difference, the noise, and the winner (None for a tie)."""
    noise, source = tie_noise(a, b, default)
    delta = a["AP"] - b["AP"]
    winner = None if abs(delta) < noise else (a["model"] if delta > 0 else b["model"])
    if winner is None:
        text = (f"{a['model']} vs {b['model']}: tie (AP {100 * delta:+.1f} pts, under the noise "
                f"{100 * noise:.1f} pts, {source})")
    else:
        loser = b["model"] if winner == a["model"] else a["model"]
        text = (f"{a['model']} vs {b['model']}: {winner} ahead of {loser} by {100 * abs(delta):.1f} pts "
                f"(noise {100 * noise:.1f} pts, {source})")
    return {"a": a["model"], "b": b["model"], "delta": delta, "noise": noise, "noise_source": source,
            "winner": winner, "text": text}


def head_to_head(rows: list[dict], default: float = DEFAULT_NOISE) -> list[dict]:
    """The verdict of every pair of ok model rows from different families, in table order."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("AP") is not None]
    return [verdict(a, b, default) for i, a in enumerate(ok) for b in ok[i + 1:] if a["family"] != b["family"]]


def standing(rows: list[dict], default: float = DEFAULT_NOISE) -> dict[str, str]:
    """The 'vs best' cell of each ok row: 'best', 'tie for best', or its AP behind the best in points."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("AP") is not None]
    if not ok:
        return {}
    best = max(ok, key=lambda r: r["AP"])
    tied = {r["model"] for r in ok if r is not best and verdict(best, r, default)["winner"] is None}
    cells = {r["model"]: ("tie for best" if r["model"] in tied else f"{100 * (r['AP'] - best['AP']):+.1f}")
             for r in ok if r is not best}
    cells[best["model"]] = "tie for best" if tied else "best"
    return cells
