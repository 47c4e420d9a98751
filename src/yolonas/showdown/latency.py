"""Latency of the finished models, all timed side by side the one way (yolonas.deploy.timing): every fp32 ONNX file
through ONNX Runtime, every INT8 OpenVINO IR (each family's own INT8 export) through OpenVINO, same threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolonas.deploy.timing import cpu_name, openvino_compiled, ort_runner, ort_session, time_blocks
from yolonas.showdown.config import ShowdownConfig
from yolonas.showdown.rows import ShowdownRow, load_rows, row_path, save_row
from yolonas.showdown.threads import resolve_threads

RUNTIMES = {"fp32": "onnxruntime", "int8": "openvino"}


def _runner(path: Path, x: np.ndarray, threads: int):
    """A bare forward of one file on `x`: ONNX Runtime for .onnx, an OpenVINO infer request for an IR (.xml)."""
    if path.suffix.lower() == ".xml":
        request = openvino_compiled(path, threads, precision="f32").create_infer_request()
        return lambda: request.infer({0: x})
    return ort_runner(ort_session(path, threads), x)


def model_latency(files: dict[str, Path], imgsz: int, threads: int, runs: int = 20, warmup: int = 3,
                  blocks: int = 3) -> dict[str, float]:
    """Median ms of a bare forward per file (.onnx by ONNX Runtime, .xml by OpenVINO) on one 1x3xHxW float input,
    timed the one way (deploy.timing: the files take turns block by block; the median is over block medians)."""
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    fns = {key: _runner(path, x, threads) for key, path in files.items()}
    return time_blocks(fns, blocks=blocks, runs=max(1, runs // blocks), warmup=warmup).medians()


def _files(rows: list[ShowdownRow]) -> dict[tuple[str, str], Path]:
    """(model, 'fp32' | 'int8') -> the file timed for it: the first ok seed's fp32 ONNX and INT8 IR (a model's seeds
    share one architecture, so one file each times them all)."""
    files: dict[tuple[str, str], Path] = {}
    for r in rows:
        if (r.model, "fp32") in files:
            continue
        files[(r.model, "fp32")] = Path(r.onnx_fp32)
        if r.int8_ir and Path(r.int8_ir).is_file():
            files[(r.model, "int8")] = Path(r.int8_ir)
    return files


def time_together(run: Path, cfg: ShowdownConfig) -> list[str]:
    """Re-time the files of every finished model in the folder in one interleaved loop, so that the table compares
    latencies taken side by side on this machine, not each after its own training; the models timed."""
    rows = [r for r in load_rows(run) if r.ok and r.onnx_fp32 and Path(r.onnx_fp32).is_file()]
    files = _files(rows)
    if not files:
        return []
    threads = resolve_threads(cfg.threads)
    latency = model_latency({f"{m}:{k}": f for (m, k), f in files.items()}, cfg.imgsz, threads,
                            max(cfg.latency_runs, 5 * len(files)), blocks=max(3, len(files)))
    timed = list(dict.fromkeys(r.model for r in rows))
    for r in rows:
        r.latency_fp32_ms, r.latency_int8_ms = latency.get(f"{r.model}:fp32"), latency.get(f"{r.model}:int8")
        r.threads, r.latency_timed_with, r.latency_machine, r.latency_runtimes = threads, timed, cpu_name(), RUNTIMES
        save_row(r, row_path(run, r.model, r.seed))
    return timed
