"""Latency and throughput of any backend: forward only and end to end, with a stage breakdown."""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from yolonas.arch.model import Preprocessing
from yolonas.infer.letterbox import batch_boxes_to_original, letterbox_batch
from yolonas.infer.postprocess import PREDICT_NMS, NMSConfig, postprocess


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what `platform` knows): for result files and cache keys."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 and the mean of a list of times in ms."""
    q = np.percentile(np.asarray(samples_ms), [50, 90, 99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "mean": float(np.mean(samples_ms))}


@dataclass
class BenchResult:
    """One backend at one batch size. Times in ms per batch; throughput in images per second (end to end)."""

    backend: str
    device: str
    batch: int
    threads: int
    warmup: int
    runs: int
    image_size: tuple[int, int]
    forward_ms: dict[str, float] = field(default_factory=dict)
    end_to_end_ms: dict[str, float] = field(default_factory=dict)
    stages_ms: dict[str, float] = field(default_factory=dict)  # medians: pre, forward, post
    throughput: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def benchmark(
    backend,
    images: list[np.ndarray],
    preprocessing: Preprocessing,
    batch: int = 1,
    runs: int = 30,
    warmup: int = 5,
    nms: NMSConfig = PREDICT_NMS,
    device: torch.device | str = "cpu",
    name: str = "backend",
) -> BenchResult:
    """Time `backend` (infer's Backend protocol) on `batch` real images per call, `runs` times after `warmup`.

    Forward only = the backend on a ready input tensor. End to end = letterbox + backend + NMS + boxes back to
    the original images, i.e. what `Predictor.predict_arrays` does per batch.
    """
    device = torch.device(device)
    chosen = [images[i % len(images)] for i in range(batch)]
    has_nms = getattr(backend, "has_nms", False)
    x, _ = letterbox_batch(chosen, preprocessing, device)

    def forward():
        out = backend.detect(x) if has_nms else backend(x)
        _sync(device)
        return out

    stages: dict[str, list[float]] = {"pre": [], "forward": [], "post": []}

    def end_to_end():
        t0 = time.perf_counter()
        xb, infos = letterbox_batch(chosen, preprocessing, device)
        _sync(device)
        t1 = time.perf_counter()
        if has_nms:
            dets = backend.detect(xb)
        else:
            boxes, scores = backend(xb)
        _sync(device)
        t2 = time.perf_counter()
        if not has_nms:
            dets = postprocess(boxes, scores, nms)
        result = batch_boxes_to_original(dets, infos)
        _sync(device)
        t3 = time.perf_counter()
        for key, value in zip(("pre", "forward", "post"), (t1 - t0, t2 - t1, t3 - t2)):
            stages[key].append(value * 1e3)
        return result

    with torch.inference_mode():
        for _ in range(warmup):
            forward()
            end_to_end()
        for v in stages.values():
            v.clear()
        fwd, e2e = [], []
        for _ in range(runs):  # interleaved, so that machine noise hits both alike
            t = time.perf_counter()
            forward()
            fwd.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            end_to_end()
            e2e.append((time.perf_counter() - t) * 1e3)
    e2e_stats = percentiles(e2e)
    return BenchResult(
        backend=name, device=str(device), batch=batch, threads=torch.get_num_threads(), warmup=warmup, runs=runs,
        image_size=tuple(preprocessing.image_size), forward_ms=percentiles(fwd), end_to_end_ms=e2e_stats,
        stages_ms={k: statistics.median(v) for k, v in stages.items()},
        throughput=batch / (e2e_stats["p50"] / 1e3),
    )


def markdown_table(results: list[BenchResult]) -> str:
    """A Markdown table of benchmark results, one row per (backend, batch)."""
    lines = ["| backend | device | batch | forward p50 / p90 / p99 (ms) | end to end p50 / p90 / p99 (ms) "
             "| pre / forward / post (ms) | images/s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        f, e, s = r.forward_ms, r.end_to_end_ms, r.stages_ms
        lines.append(f"| {r.backend} | {r.device} | {r.batch} | {f['p50']:.1f} / {f['p90']:.1f} / {f['p99']:.1f} | "
                     f"{e['p50']:.1f} / {e['p90']:.1f} / {e['p99']:.1f} | {s['pre']:.1f} / {s['forward']:.1f} / "
                     f"{s['post']:.1f} | {r.throughput:.1f} |")
    return "\n".join(lines)
