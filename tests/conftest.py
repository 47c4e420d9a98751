"""Shared fixtures: the real data sets in ../shared/datasets (override with YOLONAS_DATASETS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    return Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared data sets folder; tests that need it skip only when it is absent (a user's clone)."""
    root = datasets_root()
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set YOLONAS_DATASETS)")
    return root


@pytest.fixture(scope="session")
def coco128(datasets: Path) -> Path:
    return datasets / "coco128"


@pytest.fixture(scope="session")
def aquarium(datasets: Path) -> Path:
    return datasets / "aquarium"


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
    yield
