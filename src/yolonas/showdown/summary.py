"""The summary of a call over several data sets, runs/showdown/<name>/summary.md|json: per data set each model's
mean and spread over seeds of AP, AP50, AP small and its own INT8 AP, epochs, training minutes, AP per training hour
and latencies; a line per run with its CPU and threads; the mean over data sets; the verdicts and warnings of each
data set."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from yolonas.showdown.config import NMS_FREE, ShowdownConfig
from yolonas.showdown.report import NMS_FREE_NOTE, joined
from yolonas.showdown.rows import ShowdownRow
from yolonas.showdown.timereport import off_minutes

SUMMARY_FILES = ("summary.md", "summary.json")
FIELDS = ("AP", "AP50", "APs", "train_h", "AP_per_hour")


def summary_row(data: str, m: ShowdownRow) -> dict:
    """One model on one data set: its mean AP, AP50, AP small, training hours and AP points per training hour."""
    if not m.ok:
        return {"data": data, "model": m.model, "family": m.family, "status": m.status, "message": m.message}
    hours = m.train_s / 3600 if m.train_s else None
    per_hour = 100 * m.AP / hours if hours else None
    return {"data": data, "model": m.model, "family": m.family, "status": "ok", "seeds": len(m.seeds or []),
            "epochs": m.epochs, "recipe": m.recipe, "precision": m.precision, "AP": m.AP, "AP_spread": m.AP_spread,
            "AP50": m.AP50, "AP50_spread": m.AP50_spread, "APs": m.APs, "APs_spread": m.APs_spread,
            "train_h": hours, "AP_per_hour": per_hour, "AP_int8": m.AP_int8, "AP_int8_spread": m.AP_int8_spread,
            "latency_fp32_ms": m.latency_fp32_ms, "latency_int8_ms": m.latency_int8_ms}


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


def _pm(r: dict, key: str) -> str:
    """'32.1 ± 0.8' in AP points: the mean, and the seed spread when there is one."""
    spread = r.get(f"{key}_spread")
    return _f(r[key], ".1f", 100) + ("" if spread is None else f" ± {100 * spread:.1f}")


def _per_dataset_table(rows: list[dict]) -> str:
    head = ("| data set | model | recipe, precision | seeds | epochs | training min | mAP ± seeds | mAP50 | AP small | "
            "mAP pts per training hour | INT8 mAP (own OpenVINO) | fp32 ms (ORT) | INT8 ms (OpenVINO) |\n"
            + "|---" * 13 + "|\n")
    lines = []
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['data']} | {r['model']} |" + " - |" * 10 + f" {r['status']}: {r['message']} |")
            continue
        lines.append(f"| {r['data']} | {r['model']} | {r.get('recipe') or '-'}, {r.get('precision') or '-'} | "
                     f"{r['seeds']} | {r['epochs']} | {_f(r['train_h'], '.1f', 60)} | {_pm(r, 'AP')} | "
                     f"{_pm(r, 'AP50')} | {_pm(r, 'APs')} | {_f(r['AP_per_hour'], '.1f')} | {_pm(r, 'AP_int8')} | "
                     f"{_f(r.get('latency_fp32_ms'), '.1f')} | {_f(r.get('latency_int8_ms'), '.1f')} |")
    return head + "\n".join(lines) + "\n"


def _runs_table(results: dict[str, dict]) -> str:
    """A line per run: its epochs, training minutes (and how far from --minutes), parts, CPU, threads, precision."""
    head = ("| data set | model | seed | epochs | training min | vs --minutes (%) | parts | in the time comparison | "
            "threads | CPU | precision |\n" + "|---" * 11 + "|\n")
    lines = []
    for name, res in results.items():
        for r in (ShowdownRow.from_dict(d) for d in res["rows"]):
            if not r.ok:
                continue
            compared = {True: "yes", False: "no (other CPU)", None: "-"}[r.time_comparable]
            lines.append(f"| {name} | {r.model} | {r.seed} | {r.epochs} | {_f(r.train_s, '.1f', 1 / 60)} | "
                         f"{_f(off_minutes(r), '+.1f', 100)} | {len(r.train_parts or []) or '-'} | {compared} | "
                         f"{r.train_threads or '-'} | {r.train_cpu or '-'} | {r.precision or '-'} |")
    return head + "\n".join(lines) + "\n"


def _warnings(results: dict[str, dict]) -> str:
    """Each data set's warnings and INT8 findings, from its report's notes."""
    keep = ("WARNING", "INT8 collapse", "INT8 failed")
    lines = [f"- {name}: {n}\n" for name, res in results.items() for n in res["notes"] if n.startswith(keep)]
    return "\n## Warnings and INT8 findings\n\n" + "".join(lines) if lines else ""


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
            f"{joined(every, lambda r: None if r.train_threads is None else str(r.train_threads))}, timing threads "
            f"{joined(every, lambda r: r.threads)}, timing CPU {joined(every, lambda r: r.latency_machine)}.")
    if cfg.minutes is not None:
        line += (f" {cfg.minutes:g} training minutes per model, its epochs planned from a probe of its own; ours "
                 f"trained with recipe {cfg.our_recipe()}, Ultralytics' models with its defaults.")
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
          + "\n## Per data set (mean over seeds ± their spread)\n\n" + _per_dataset_table(rows)
          + "\nAP per training hour: mean AP points over the mean training wall-clock hours of the model's seeds on "
            "that data set (only the seeds trained on the data set's reference CPU: see the runs below). INT8 mAP: "
            "each family's own OpenVINO INT8, as measured.\n"
          + "\n## Runs\n\n" + _runs_table(results)
          + "\n## Mean over data sets\n\n" + _mean_table(means, len(results))
          + "\nThe mean row averages each column over the data sets where the model ran.\n"
          + _warnings(results)
          + "\n## Verdicts (mean AP, per data set)\n\n"
          + "".join(f"- {name}: {v['text']}\n" for name, res in results.items() for v in res["head_to_head"])
          + (f"\nCommand: `{cfg.command}`\n" if cfg.command else ""))
    (run / "summary.md").write_text(md)
    summary = {"run_dir": str(run), "datasets": {name: res["run_dir"] for name, res in results.items()},
               "per_dataset": rows, "mean": means, "budget_shares_minutes": shares, "failed": failed,
               "verdicts": {name: res["head_to_head"] for name, res in results.items()}, "command": cfg.command}
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
