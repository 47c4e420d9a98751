"""Latency of the finished models' ONNX files, all timed side by side the one way (yolonas.deploy.timing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolonas.deploy.timing import cpu_name, ort_runner, ort_session, time_blocks
from yolonas.showdown.config import ShowdownConfig
from yolonas.showdown.rows import load_rows, row_path, save_row
from yolonas.showdown.threads import resolve_threads


def onnx_latency(files: dict[str, Path], imgsz: int, threads: int, runs: int = 20, warmup: int = 3,
                 blocks: int = 3) -> dict[str, float]:
    """Median ms of a bare ONNX Runtime `session.run` per file on one 1x3xHxW float input, timed the one way
    (deploy.timing: the files take turns block by block; the median is over block medians)."""
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    fns = {key: ort_runner(ort_session(path, threads), x) for key, path in files.items()}
    return time_blocks(fns, blocks=blocks, runs=max(1, runs // blocks), warmup=warmup).medians()


def _onnx_files(rows: list[dict]) -> dict[tuple[str, str], Path]:
    """(model, 'fp32' | 'int8') -> the ONNX file of each row, for the files that exist."""
    files = {}
    for r in rows:
        files[(r["model"], "fp32")] = Path(r["onnx_fp32"])
        if r.get("onnx_int8") and Path(r["onnx_int8"]).is_file():
            files[(r["model"], "int8")] = Path(r["onnx_int8"])
    return files


def time_together(run: Path, cfg: ShowdownConfig) -> list[str]:
    """Re-time the ONNX files of every finished model in the folder in one interleaved loop, so that the table
    compares latencies taken side by side on this machine, not each after its own training; the models timed."""
    rows = [r for r in load_rows(run) if r["status"] == "ok" and Path(r.get("onnx_fp32", "")).is_file()]
    files = _onnx_files(rows)
    if not files:
        return []
    threads = resolve_threads(cfg.threads)
    latency = onnx_latency({f"{m}:{k}": f for (m, k), f in files.items()}, cfg.imgsz, threads,
                           max(cfg.latency_runs, 5 * len(files)), blocks=max(3, len(files)))
    timed = [r["model"] for r in rows]
    for r in rows:
        r.update({f"latency_{k}_ms": latency[f"{m}:{k}"] for (m, k) in files if m == r["model"]})
        r.update({"threads": threads, "latency_timed_with": timed, "latency_machine": cpu_name()})
        save_row(r, row_path(run, r["model"]))
    return timed
