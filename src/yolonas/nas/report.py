"""The report of a search run: the Pareto front as a Markdown table, its plot and the summary as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def write_report(out: Path, result: dict, points: list[dict], proxy: str, cap: float | None) -> None:
    """front.md, front.png and search.json in `out`; `points` are every trial's (latency_ms, score, seed)."""
    (out / "front.md").write_text(front_markdown(result, proxy))
    plot_front(points, result["front"], out / "front.png", proxy, cap)
    (out / "search.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def front_markdown(result: dict, proxy: str) -> str:
    """The Pareto front as a Markdown table, with the latency check and Kendall tau when present."""
    how = _calibration_text(result.get("calibration") or {})
    lines = [f"# Search front ({result['trials']} trials, {result['target']})", "",
             f"Accuracy estimate: `{proxy}`; latency (ms): the sum of the parts' cached medians"
             + (f", calibrated ({how})" if how else "") + ". Stages: "
             "width/blocks x hidden (c = concatenated intermediates); neck: up1; up2; down1; down2.", ""]
    if result.get("note"):
        lines += [f"**{result['note']}**", ""]
    lines += _front_table(result["front"], proxy)
    if result.get("latency_check"):
        lines += ["", _latency_check_text(result["latency_check"], calibrated=bool(how))]
    if result.get("short_training"):
        lines += ["", _short_training_text(result["short_training"])]
    return "\n".join(lines) + "\n"


def _calibration_text(calibrations: dict) -> str:
    return "; ".join(f"{size} px: whole = {c['a']:.3f} x sum {c['b']:+.2f} ms, fitted on {c['n']} networks measured "
                     "whole" for size, c in calibrations.items() if c.get("n"))


def _front_table(rows: list[dict], proxy: str) -> list[str]:
    """The table's lines: measured and short-training columns only when some member has them."""
    measured = any("measured_ms" in r for r in rows)
    trained = any("short_train_ap" in r for r in rows)
    head = ["#", "name", "imgsz", "predicted ms"] + (["measured ms", "corrected ms"] if measured else []) + [
        proxy, "params (M)", "GFLOPs"] + (["short-train AP", "short-train loss"] if trained else []) + [
        "stem", "stages", "neck", "head", "seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["rank"], r["name"], r["imgsz"], f"{r['latency_ms']:.2f}"]
        if measured:
            cells += [_fmt(r, "measured_ms", ".2f"), _fmt(r, "corrected_ms", ".2f")]
        cells += [f"{r[proxy]:.4g}", f"{r['params']:.2f}", f"{r['gflops']:.2f}"]
        if trained:
            cells += [_fmt(r, "short_train_ap", ".4f"), _fmt(r, "short_train_loss", ".3f")]
        cells += [r["stem"], r["stages"], r["neck"], "/".join(map(str, r["head"])), r["seed"] or ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _fmt(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else ""


def _latency_check_text(check: dict, calibrated: bool) -> str:
    t, s, raw = check["table"], check["same_turns"], check.get("raw_sum")
    return (f"Latency check on {t['n']} front members, measured end to end (export_onnx, decode included): "
            f"median error of the prediction {100 * t['raw_median']:.1f}% (max {100 * t['raw_max']:.1f}%)"
            + (f"; of the raw sum of parts {100 * raw['raw_median']:.1f}%" if raw and calibrated else "")
            + (f"; after a linear correction fitted on the other front members (leave-one-out) "
               f"{100 * t['corrected_loo_median']:.1f}%" if t["corrected_loo_median"] is not None else "")
            + f"; the raw parts re-measured in the same turns as the whole: {100 * s['raw_median']:.1f}%. "
            f"Load average at the end: {', '.join(f'{x:.1f}' for x in check['load_average'])}.")


def _short_training_text(st: dict) -> str:
    def taus(key: str) -> str:
        return ", ".join(f"{k} {v['tau']:+.2f} (p {v['p']:.2f})" if v else f"{k} n/a"
                         for k, v in st.get(key, {}).items())

    return (f"Short training ({st['epochs']} epochs at {st['imgsz']} px on {st['images']} images) of "
            f"{len(st['trained'])} members. Kendall tau of each estimate against its AP: {taus('kendall_tau')}; "
            f"against its mean training loss (lower is better): {taus('kendall_tau_loss')}. +1: a larger value "
            "of the estimate goes with a better short training, for every pair; n/a: fewer than 3 members "
            "trained, or one side tied them all.")


def plot_front(points: list[dict], rows: list[dict], path: Path, proxy: str, cap: float | None) -> Path:
    """Every trial (latency vs score, the seeds named), the front as a line, measured latencies and the cap."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter([p["latency_ms"] for p in points], [p["score"] for p in points], s=14, c="0.6", label="trials")
    if rows:
        ax.plot([r["latency_ms"] for r in rows], [r[proxy] for r in rows], "o-", c="C0", label="front (predicted)")
        m = [r for r in rows if "measured_ms" in r]
        if m:
            ax.scatter([r["measured_ms"] for r in m], [r[proxy] for r in m], marker="x", c="C3",
                       label="front (measured)")
    for p in points:
        if p["seed"]:
            ax.annotate(p["seed"], (p["latency_ms"], p["score"]), fontsize=7)
    if cap is not None:
        ax.axvline(cap, ls="--", c="C1", label=f"cap {cap:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(proxy)
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
