"""The report of one data set's sub-run: the Markdown table (a row per model, mean and spread over its seeds) with
the head-to-head verdicts (ties called as ties), notes and warnings, the merged JSON, the frontier plot."""

from __future__ import annotations

import json
from pathlib import Path

from yolonas.errors import InputError
from yolonas.showdown.compare import TIE_RULE, aggregate, head_to_head, standing
from yolonas.showdown.config import DEFAULT_NOISE, FAMILIES, NMS_FREE, TEST_MODELS
from yolonas.showdown.plot import plot_frontier
from yolonas.showdown.rows import ShowdownRow, load_rows
from yolonas.showdown.timereport import int8_notes, mark_comparable, time_table, training_notes

REPORT_FILES = ("showdown.md", "showdown.json", "frontier.png")
NMS_FREE_NOTE = "NMS-free: end-to-end head, no NMS"

METHOD_NOTES = (
    "Every model: same data, input size, batch and seeds, and the same epochs or (--minutes) the same training time "
    "(trained from scratch, each its own framework's way); scored on its last weights "
    "(no best-epoch pick on the evaluation split) by yolonas' COCO evaluator (faster-coco-eval) on the same ground "
    "truth, from COCO-format detections at score > 0.01, at most 300 per image: YOLO-NAS from our val, YOLOv8 and "
    "YOLO11 from Ultralytics' val, both with per-class multi-label NMS at IoU 0.7; YOLO26 (NMS-free) from "
    "Ultralytics' val with nms=False, as Ultralytics ships it: its end-to-end head's top 300 by score, no NMS. The "
    "peers' COCO JSON holds the very detections Ultralytics' own metrics count.",
    "Latency: median ms of a bare forward (batch 1, float input, same threads for every file): each family's fp32 "
    "ONNX export through ONNX Runtime, each INT8 OpenVINO IR through OpenVINO (float parts in f32); all files timed "
    "together by the same loop (yolonas.deploy.timing), taking turns block by block, after the last model of the "
    "call. NMS is outside every graph and left out of the time; a YOLO26 graph ends in its top-k selection.",
    "INT8: each family's fastest INT8 path on the CPU, by its own recipe: ours `yolonas quantize --format openvino` "
    "(NNCF PTQ), Ultralytics' `export(format='openvino', int8=True)` (NNCF PTQ); both calibrated on the same train "
    "images (per seed), both scored by the evaluator above from the INT8 model's own val.",
)


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _note(r: ShowdownRow) -> str:
    notes = []
    if r.family in NMS_FREE:
        notes.append(NMS_FREE_NOTE)
    if r.model in TEST_MODELS:
        notes.append("test-size model")
    if r.seeds_failed and r.ok:
        notes.append(f"seed(s) {', '.join(map(str, r.seeds_failed))} failed")
    return "; ".join(notes)


def _table_line(r: ShowdownRow, cell: str) -> str:
    if not r.ok:
        return f"| {r.model} | {r.family} |" + " - |" * 16 + f" {r.status}: {r.message} |"
    drop = None if r.AP_int8 is None else (r.AP - r.AP_int8)
    return (f"| {r.model} | {r.family} | {len(r.seeds or [])} | {r.epochs} | {_fmt(r.train_s, '.1f', 1 / 60)} | "
            f"{_fmt(r.AP, '.1f', 100)} | "
            f"{_fmt(r.AP_spread, '.1f', 100)} | {_fmt(r.AP50, '.1f', 100)} | "
            f"{_fmt(r.APs, '.1f', 100)} | {_fmt(r.APm, '.1f', 100)} | {_fmt(r.APl, '.1f', 100)} | "
            f"{_fmt(r.params, '.2f', 1e-6)} | {_fmt(r.gflops, '.2f')} | "
            f"{_fmt(r.latency_fp32_ms, '.1f')} | {_fmt(r.latency_int8_ms, '.1f')} | "
            f"{_fmt(r.AP_int8, '.1f', 100)} | {_fmt(drop, '+.2f', -100)} | {cell} | {_note(r)} |")


def markdown_table(models: list[ShowdownRow], noise: float = DEFAULT_NOISE) -> str:
    """The table of model rows (from `aggregate`): epochs and training minutes (mean over the seeds whose time
    compares), accuracy in AP points (mean over seeds, and its spread), size, compute, latency fp32 (ONNX Runtime)
    and INT8 (OpenVINO), INT8 accuracy as measured, the standing against the best."""
    cells = standing(models, noise)
    head = ("| model | family | seeds | epochs | training min | mAP | ± (seeds) | mAP50 | AP small | AP medium | "
            "AP large | params (M) | GFLOPs | fp32 ms (ORT) | INT8 ms (OpenVINO) | INT8 mAP | INT8 - fp32 (pts) | "
            "vs best (pts) | note |\n" + "|---" * 19 + "|\n")
    return head + "\n".join(_table_line(r, cells.get(r.model, "-")) for r in models) + "\n"


def _settings_warning(rows: list[ShowdownRow]) -> list[str]:
    mixed = sorted({r.model for r in rows if r.settings != rows[0].settings})
    if not mixed:
        return []
    return [f"WARNING: {', '.join(mixed)} ran with other settings than {rows[0].model}: compare with care."]


def _network_note(rows: list[ShowdownRow]) -> list[str]:
    attempts = [a for r in rows for a in r.network_attempts or []]
    if not attempts:
        return []
    return [f"The Ultralytics child tried to reach the network {len(attempts)} time(s), refused by its audit hook "
            f"(it ran offline): {'; '.join(sorted(set(attempts)))}."]


def _timing_warning(rows: list[ShowdownRow]) -> list[str]:
    ok = [r for r in rows if r.ok]
    if len({tuple(r.latency_timed_with or ()) for r in ok}) <= 1:
        return []
    apart = "; ".join(f"{r.model}: with {', '.join(r.latency_timed_with or ['itself'])}" for r in ok)
    return [f"WARNING: the latencies were not all timed together ({apart}): compare them with care."]


def _epochs_warning(rows: list[ShowdownRow]) -> list[str]:
    """Different epochs: by design across models with --minutes (each its own plan), else a warning; the seeds of
    one model always share theirs."""
    ok = [r for r in rows if r.ok]
    if ok and all(r.time_plan for r in ok):
        split = sorted({r.model for r in ok if len({s.epochs for s in ok if s.model == r.model}) > 1})
        return [f"WARNING: the seeds of {', '.join(split)} trained for different epochs."] if split else []
    epochs = sorted({r.epochs for r in ok})
    return [f"WARNING: the runs trained for different epochs ({epochs})."] if len(epochs) > 1 else []


def _cpu_notes(models: list[ShowdownRow], rows: list[ShowdownRow]) -> list[str]:
    cpu = [r for r in models if r.ok and r.device == "cpu" and r.train_s is not None]
    if not cpu:
        return []
    notes = ["CPU training (mean over seeds): " + ", ".join(
        f"{r.model} {r.train_s / 60:.1f} min on {r.train_threads or '?'} thread(s)" for r in cpu) + "."]
    if len({str(r.train_threads) for r in rows if r.ok and r.device == "cpu"}) > 1:
        notes.append("WARNING: the runs trained on different numbers of CPU threads: compare training times with care.")
    return notes


def _recipe_notes(models: list[ShowdownRow]) -> list[str]:
    recipes = {r.family: r.int8_recipe for r in models if r.ok and r.int8_recipe}
    return [f"INT8 recipe, {fam}: {text}." for fam, text in recipes.items()]


def report_notes(rows: list[ShowdownRow], models: list[ShowdownRow], noise: float = DEFAULT_NOISE,
                 ref_cpu: str | None = None) -> list[str]:
    """The notes under the table: how every model was scored and timed, the INT8 recipes and what INT8 gave, the tie
    rule, how each family trained and for how long, then what makes rows hard to compare (other settings, latencies
    timed apart, other epochs, training time off or on other CPUs), network attempts, CPU training."""
    return [*METHOD_NOTES, *_recipe_notes(models), *int8_notes(models), TIE_RULE.format(noise=100 * noise) + ".",
            *training_notes(rows, ref_cpu), *_settings_warning(rows), *_network_note(rows), *_timing_warning(rows),
            *_epochs_warning(rows), *_cpu_notes(models, rows)]


def joined(rows: list[ShowdownRow], values) -> str:
    """The distinct values (a function of a row) of the ok rows, sorted and comma-separated; '-' when none."""
    return ", ".join(map(str, sorted({v for r in rows if r.ok and (v := values(r)) is not None}))) or "-"


def _header(run: Path, rows: list[ShowdownRow]) -> str:
    """The title and the settings line: data, splits, size, batch, seeds, minutes, epochs run, device, threads,
    CPUs."""
    s = rows[0].settings
    families = [f for f in FAMILIES if any(r.family == f for r in rows)]
    minutes = f"{s['minutes']:g} training minutes per model, " if s.get("minutes") else ""
    return (f"# Showdown on {run.name}: {' vs '.join(families)}\n\n"
            f"data `{s['data']}` (train split `{s['train_split']}`, evaluated on `{s['split']}`), {s['imgsz']} px, "
            f"batch {s['batch']}, seeds {joined(rows, lambda r: r.seed)}, {minutes}epochs run "
            f"{joined(rows, lambda r: r.epochs)}, device {joined(rows, lambda r: r.device)}, training threads "
            f"{joined(rows, lambda r: None if r.train_threads is None else str(r.train_threads))}, training CPU "
            f"{joined(rows, lambda r: r.train_cpu)}, timing threads {joined(rows, lambda r: r.threads)}, timing CPU "
            f"{joined(rows, lambda r: r.latency_machine)}\n\n")


def markdown_report(rows: list[ShowdownRow], models: list[ShowdownRow], verdicts: list[dict], notes: list[str],
                    run: Path, command: str = "", noise: float = DEFAULT_NOISE) -> str:
    """showdown.md: the settings line, the table, the head-to-head verdicts, the notes and the command."""
    md = _header(run, rows) + markdown_table(models, noise) + "\n"
    if table := time_table(rows):
        md += table + "\n"
    if verdicts:
        md += "Head to head (mean AP):\n\n" + "".join(f"- {v['text']}\n" for v in verdicts) + "\n"
    md += "\n".join(f"- {n}" for n in notes) + "\n"
    return md + (f"\nCommand: `{command}`\n" if command else "")


def write_report(run: Path, command: str = "", noise: float = DEFAULT_NOISE) -> dict:
    """Merge the folder's <model>_seed<k>.json into showdown.json, showdown.md and frontier.png; the merged dict."""
    rows = load_rows(run)
    if not rows:
        raise InputError(f"{run}: no model results to report")
    ref_cpu = mark_comparable(rows)  # before aggregate: a row trained on another CPU leaves the time means
    models = aggregate(rows)
    verdicts = head_to_head(models, noise)
    notes = report_notes(rows, models, noise, ref_cpu)
    (run / "showdown.md").write_text(markdown_report(rows, models, verdicts, notes, run, command, noise))
    plot_frontier(models, run / "frontier.png", run.name)
    result = {"run_dir": str(run), "data_name": run.name, "settings": rows[0].settings, "notes": notes,
              "reference_cpu": ref_cpu,
              "command": command, "tie_noise": noise, "models": [m.to_dict() for m in models],
              "head_to_head": verdicts, "rows": [r.to_dict() for r in rows]}
    (run / "showdown.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
