"""The showdown report: the Markdown table with its notes and warnings, the merged JSON, the frontier plot."""

from __future__ import annotations

import json
from pathlib import Path

from yolonas.errors import InputError
from yolonas.showdown.config import TEST_MODELS
from yolonas.showdown.plot import plot_frontier
from yolonas.showdown.rows import load_rows

REPORT_FILES = ("showdown.md", "showdown.json", "frontier.png")

METHOD_NOTES = (
    "Every model: same data, input size, batch, seed and epochs (trained from scratch); scored on its last "
    "weights (no best-epoch pick on the evaluation split) by yolonas' COCO evaluator (faster-coco-eval) on "
    "the same ground truth, from COCO-format detections at score > 0.01, at most 300 per image, IoU 0.7 "
    "per-class multi-label NMS (Ultralytics' val settings for YOLOv8, ours for YOLO-NAS).",
    "Latency: median ms of a bare ONNX Runtime session.run (batch 1, float input, no NMS) of each family's own "
    "ONNX export, all files timed together by the same loop in one process, taking turns block by block, "
    "after the last model of the call finished.",
    "INT8: post-training static quantization with onnxruntime, the same recipe for both: QDQ, int8 per-channel "
    "symmetric weights, uint8 per-tensor activations, percentile 99.99 calibration on the same train images; "
    "Conv/Add/Concat/MaxPool/Relu nodes of the network quantized, the box decode left float.",
)


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _table_line(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['model']} | - | - | - | - | - | - | - | - | - | - | - | - | {r['message']} |"
    drop = None if r.get("AP_int8") is None else (r["AP"] - r["AP_int8"])
    note = "" if r["model"] not in TEST_MODELS else "test-size model"
    return (f"| {r['model']} | {r['epochs']} | {_fmt(r['AP'], '.1f', 100)} | {_fmt(r['AP50'], '.1f', 100)} | "
            f"{_fmt(r.get('APs'), '.1f', 100)} | {_fmt(r.get('APm'), '.1f', 100)} | {_fmt(r.get('APl'), '.1f', 100)} | "
            f"{_fmt(r['params'], '.2f', 1e-6)} | {_fmt(r['gflops'], '.2f')} | "
            f"{_fmt(r.get('latency_fp32_ms'), '.1f')} | {_fmt(r.get('latency_int8_ms'), '.1f')} | "
            f"{_fmt(r.get('AP_int8'), '.1f', 100)} | "
            f"{_fmt(drop, '+.2f', -100)} | {note} |")


def markdown_table(rows: list[dict]) -> str:
    """The showdown table: accuracy (in AP points), size, compute, ONNX Runtime latency, INT8 drop."""
    head = ("| model | epochs | mAP | mAP50 | AP small | AP medium | AP large | params (M) | GFLOPs | fp32 ms | "
            "INT8 ms | INT8 mAP | INT8 - fp32 (pts) | note |\n" + "|---" * 14 + "|\n")
    return head + "\n".join(_table_line(r) for r in rows) + "\n"


def _settings_warning(rows: list[dict]) -> list[str]:
    mixed = [r["model"] for r in rows if r["settings"] != rows[0]["settings"]]
    if not mixed:
        return []
    return [f"WARNING: {', '.join(mixed)} ran with other settings than {rows[0]['model']}: compare with care."]


def _network_note(rows: list[dict]) -> list[str]:
    attempts = [a for r in rows for a in r.get("network_attempts") or []]
    if not attempts:
        return []
    return [f"The Ultralytics child tried to reach the network {len(attempts)} time(s), refused by its audit hook "
            f"(it ran offline): {'; '.join(sorted(set(attempts)))}."]


def _timing_warning(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if r["status"] == "ok"]
    if len({tuple(r.get("latency_timed_with") or ()) for r in ok}) <= 1:
        return []
    apart = "; ".join(f"{r['model']}: with {', '.join(r.get('latency_timed_with') or ['itself'])}" for r in ok)
    return [f"WARNING: the latencies were not all timed together ({apart}): compare them with care."]


def _epochs_warning(rows: list[dict]) -> list[str]:
    epochs = sorted({r["epochs"] for r in rows if r["status"] == "ok"})
    return [f"WARNING: the models trained for different epochs ({epochs})."] if len(epochs) > 1 else []


def _cpu_notes(rows: list[dict]) -> list[str]:
    cpu = [r for r in rows if r["status"] == "ok" and r.get("device") == "cpu"]
    if not cpu:
        return []
    notes = ["CPU training: " + ", ".join(f"{r['model']} {r['train_s'] / 60:.1f} min on "
                                          f"{r.get('train_threads') or '?'} thread(s)" for r in cpu) + "."]
    if len({r.get("train_threads") for r in cpu}) > 1:
        notes.append("WARNING: the models trained on different numbers of CPU threads: compare training times "
                     "with care.")
    return notes


def report_notes(rows: list[dict]) -> list[str]:
    """The notes under the table: how every model was scored and timed, then what makes rows hard to compare
    (other settings, latencies timed apart, other epochs), the peer's refused network attempts, CPU training."""
    return [*METHOD_NOTES, *_settings_warning(rows), *_network_note(rows), *_timing_warning(rows),
            *_epochs_warning(rows), *_cpu_notes(rows)]


def markdown_report(rows: list[dict], notes: list[str], command: str = "") -> str:
    """showdown.md: the settings line, the table, the notes and the command."""
    s = rows[0]["settings"]
    epochs = sorted({r["epochs"] for r in rows if r["status"] == "ok"})
    header = (f"# Showdown: YOLO-NAS vs YOLOv8\n\ndata `{s['data']}` (train split `{s['train_split']}`, evaluated "
              f"on `{s['split']}`), {s['imgsz']} px, batch {s['batch']}, seed {s['seed']}, "
              f"epochs {', '.join(map(str, epochs)) or '-'}, device {rows[0].get('device', '-')}\n\n")
    md = header + markdown_table(rows) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return md + (f"\nCommand: `{command}`\n" if command else "")


def write_report(run: Path, command: str = "") -> dict:
    """Merge the folder's <model>.json into showdown.json, showdown.md and frontier.png; the merged dict."""
    rows = load_rows(run)
    if not rows:
        raise InputError(f"{run}: no model results to report")
    notes = report_notes(rows)
    (run / "showdown.md").write_text(markdown_report(rows, notes, command))
    plot_frontier(rows, run / "frontier.png")
    result = {"run_dir": str(run), "settings": rows[0]["settings"], "notes": notes, "command": command, "rows": rows}
    (run / "showdown.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
