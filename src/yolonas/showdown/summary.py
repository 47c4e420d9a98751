"""The summary of a call over several data sets, runs/showdown/<name>/summary.md|json: per data set and the mean over
data sets of AP, AP50, AP small, training wall-clock and AP per training hour, with the verdicts of each data set."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from yolonas.showdown.config import NMS_FREE, ShowdownConfig
from yolonas.showdown.report import NMS_FREE_NOTE, joined
from yolonas.showdown.rows import ShowdownRow

SUMMARY_FILES = ("summary.md", "summary.json")
FIELDS = ("AP", "AP50", "APs", "train_h", "AP_per_hour")


def summary_row(data: str, m: ShowdownRow) -> dict:
    """One model on one data set: its mean AP, AP50, AP small, training hours and AP points per training hour."""
    if not m.ok:
        return {"data": data, "model": m.model, "family": m.family, "status": m.status, "message": m.message}
    hours = m.train_s / 3600 if m.train_s else None
    per_hour = 100 * m.AP / hours if hours else None
    return {"data": data, "model": m.model, "family": m.family, "status": "ok", "seeds": len(m.seeds or []),
            "epochs": m.epochs, "AP": m.AP, "AP_spread": m.AP_spread, "AP50": m.AP50, "APs": m.APs,
            "train_h": hours, "AP_per_hour": per_hour, "AP_int8": m.AP_int8}


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per model (first-seen order): the mean over the data sets where it ran of each of FIELDS, and how many."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        mean = {k: statistics.fmean(v) if (v := [r[k] for r in ok if r.get(k) is not None]) else None
                for k in FIELDS}
        family = next(r["family"] for r in rows if r["model"] == model)
        out.append({"model": model, "family": family, "datasets": len(ok), **mean})
    return out


def _f(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _per_dataset_table(rows: list[dict]) -> str:
    head = ("| data set | model | seeds | epochs | mAP | ± (seeds) | mAP50 | AP small | training (h) | mAP pts per "
            "training hour | INT8 mAP |\n" + "|---" * 11 + "|\n")
    lines = []
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['data']} | {r['model']} |" + " - |" * 8 + f" {r['status']}: {r['message']} |")
            continue
        lines.append(f"| {r['data']} | {r['model']} | {r['seeds']} | {r['epochs']} | {_f(r['AP'], '.1f', 100)} | "
                     f"{_f(r['AP_spread'], '.1f', 100)} | {_f(r['AP50'], '.1f', 100)} | {_f(r['APs'], '.1f', 100)} | "
                     f"{_f(r['train_h'], '.2f')} | {_f(r['AP_per_hour'], '.1f')} | {_f(r['AP_int8'], '.1f', 100)} |")
    return head + "\n".join(lines) + "\n"


def _mean_table(means: list[dict], n: int) -> str:
    head = ("| model | family | data sets | mAP | mAP50 | AP small | training (h) | mAP pts per training hour | "
            "note |\n" + "|---" * 9 + "|\n")
    lines = [f"| {m['model']} | {m['family']} | {m['datasets']}/{n} | {_f(m['AP'], '.1f', 100)} | "
             f"{_f(m['AP50'], '.1f', 100)} | {_f(m['APs'], '.1f', 100)} | {_f(m['train_h'], '.2f')} | "
             f"{_f(m['AP_per_hour'], '.1f')} | {NMS_FREE_NOTE if m['family'] in NMS_FREE else ''} |" for m in means]
    return head + "\n".join(lines) + "\n"


def _settings_line(results: dict[str, dict], cfg: ShowdownConfig, shares: dict[str, float]) -> str:
    """Threads, device, seeds, epochs actually run per data set, CPU, and how the budget was split."""
    rows = {name: [ShowdownRow.from_dict(r) for r in res["rows"]] for name, res in results.items()}
    every = [r for runs in rows.values() for r in runs]
    epochs = "; ".join(f"{name} {joined(runs, lambda r: r.epochs)}" for name, runs in rows.items())
    line = (f"{len(results)} data set(s), {cfg.imgsz} px, batch {cfg.batch}, seeds {joined(every, lambda r: r.seed)}, "
            f"epochs run: {epochs}; device {joined(every, lambda r: r.device)}, training threads "
            f"{joined(every, lambda r: r.train_threads)}, timing threads {joined(every, lambda r: r.threads)}, CPU "
            f"{joined(every, lambda r: r.latency_machine)}.")
    if cfg.budget_minutes is not None:
        split = ", ".join(f"{name} {share:.1f} min" for name, share in shares.items())
        line += (f" Budget {cfg.budget_minutes:g} min for the whole call, split over the data sets in turn (each gets "
                 f"what is left, divided by the data sets left): {split}.")
    return line + "\n"


def write_summary(run: Path, results: dict[str, dict], cfg: ShowdownConfig, shares: dict[str, float]) -> dict:
    """summary.md and summary.json in `run` from each data set's report dict (by data set name); the summary dict."""
    rows = [summary_row(name, ShowdownRow.from_dict(m)) for name, res in results.items() for m in res["models"]]
    means = mean_rows(rows)
    failed = [f"{r['model']} on {r['data']}: {r['message']}" for r in rows if r["status"] == "failed"]
    md = (f"# Showdown summary: {cfg.name}\n\n" + _settings_line(results, cfg, shares) + "\n"
          + "".join(f"- {name}: `{res['settings']['data']}` -> {res['run_dir']}/showdown.md\n"
                    for name, res in results.items())
          + "\n## Per data set\n\n" + _per_dataset_table(rows)
          + "\n## Mean over data sets\n\n" + _mean_table(means, len(results))
          + "\nAP per training hour: mean AP points over the mean training wall-clock hours of the model's seeds on "
            "that data set; the mean row averages each column over the data sets where the model ran.\n"
          + "\n## Verdicts (mean AP, per data set)\n\n"
          + "".join(f"- {name}: {v['text']}\n" for name, res in results.items() for v in res["head_to_head"])
          + (f"\nCommand: `{cfg.command}`\n" if cfg.command else ""))
    (run / "summary.md").write_text(md)
    summary = {"run_dir": str(run), "datasets": {name: res["run_dir"] for name, res in results.items()},
               "per_dataset": rows, "mean": means, "budget_shares_minutes": shares, "failed": failed,
               "verdicts": {name: res["head_to_head"] for name, res in results.items()}, "command": cfg.command}
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
