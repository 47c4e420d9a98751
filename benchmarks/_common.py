"""Helpers shared by the benchmark scripts: data location, machine description, interleaved timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from yolonas.deploy.benchmark import cpu_name

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def datasets_root() -> Path:
    """The shared data sets: $YOLONAS_DATASETS, else ../shared/datasets beside the repo."""
    return Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))


def test_metrics(weights: str | Path, data: str | Path, device: str, split: str = "test") -> dict:
    """COCO AP, AP50, AP75, APs/m/l of a checkpoint on one split of a data.yaml, as `yolonas val` computes them."""
    import yolonas  # noqa: PLC0415
    from yolonas.data import load_data_yaml  # noqa: PLC0415
    from yolonas.eval.validate import validate  # noqa: PLC0415

    m = validate(yolonas.load(weights), load_data_yaml(data, split), batch_size=16, device=device)
    return {k: getattr(m, k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


def machine() -> dict:
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def interleaved(fns: dict[str, Callable[[], object]], blocks: int, runs: int, warmup: int = 2,
                ) -> dict[str, list[float]]:
    """Per-block medians (ms) of each fn, the fns taking turns inside every block so that machine noise
    hits them alike. Returns name -> list of block medians."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    medians: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(runs):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        for name, s in samples.items():
            medians[name].append(statistics.median(s))
    return medians


def ratio_median(num: list[float], den: list[float]) -> float:
    """Median over blocks of the per-block ratio num/den (noise cancels within a block)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def predict_block(predictor, images: list, runs: int) -> float:
    """Median ms of `runs` single-image `predict_arrays` calls, cycling through `images` (end to end)."""
    times = []
    for i in range(runs):
        t = time.perf_counter()
        predictor.predict_arrays([images[i % len(images)]])
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)
