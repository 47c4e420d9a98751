"""Helpers shared by the benchmark scripts: data location, machine description, a predictor as a timed fn.

Timing itself is yolonas.deploy.timing (time_blocks): the one way latency is measured."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from yolonas.deploy.timing import cpu_info, cpu_name, cycling

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
    """The CPU (name, cores, instruction sets), threads and versions, for result files."""
    return {"cpu": cpu_name(), "cpu_info": cpu_info().to_dict(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def predict_fn(predictor, images: list) -> Callable[[], object]:
    """One single-image `predict_arrays` call per run, cycling through `images` (end to end), for time_blocks."""
    return cycling(lambda image: predictor.predict_arrays([image]), images)
