"""Shared fixtures: the real data sets in ../shared/datasets (override with YOLONAS_DATASETS)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
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


# Under pytest-xdist (`make test` runs two workers) each worker gets one of the two cores.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(THREADS)
    yield


@pytest.fixture(autouse=True)
def _default_sigchld():
    """Undo the SIGCHLD handler that a DataLoader with workers leaves installed for the whole process.

    With OpenVINO loaded later in the same process, the next child process to exit (a test's subprocess)
    crashed the test run with a segfault inside that stale handler.
    """
    yield
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def fit_first_coco_images(coco128: Path, folder: Path, n: int = 8, imgsz: int = 256, epochs: int = 80,
                          lr: float = 4e-3, warmup_epochs: int = 3):
    """Train yolo_nas_tiny from scratch on the first `n` coco128 images, augmentation off, on the CPU.

    Returns (TrainResult, data.yaml path, image paths). Batch 2 gives n/2 steps per epoch: BatchNorm running
    statistics need steps, not epochs, to settle; without augmentation the affine step is a plain letterbox.
    """
    import yaml  # noqa: PLC0415

    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:n]
    (folder / "first.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = yaml.safe_load((coco128 / "data.yaml").read_text())["names"]
    data = folder / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "first.txt", "val": "first.txt", "names": names}))
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data": str(data), "project": str(folder / "runs"), "name": "fit", "imgsz": imgsz, "batch": 2,
        "epochs": epochs, "lr": lr, "weight_decay": 0.0, "warmup_epochs": warmup_epochs, "ema.decay": 0.9,
        "seed": 0, "mosaic": 0.0, "mixup": 0.0, "augmentation.translate": 0.0, "augmentation.scale": [1.0, 1.0],
        "augmentation.hsv": 0.0, "augmentation.flip": 0.0, "close_mosaic": 0, "val_every": 0, "run.plots": False,
        "run.verbose": False})
    return train(cfg), data, images


@dataclass(frozen=True)
class TrainedTiny:
    """The session's one trained checkpoint: yolo_nas_tiny fitted to the first 8 coco128 images at 128 px."""

    best: Path  # its best.pt
    data: Path  # the data.yaml of those 8 images (train and val alike)
    images: list[Path]


@pytest.fixture(scope="session")
def trained_tiny(coco128, tmp_path_factory) -> TrainedTiny:
    """Trained once per session for every test that needs a model with real detections (exports, backends, INT8);
    tests write their own files elsewhere, and load the checkpoint afresh."""
    folder = tmp_path_factory.mktemp("trained_tiny")
    result, data, images = fit_first_coco_images(coco128, folder, imgsz=128, epochs=30, lr=1e-2, warmup_epochs=2)
    return TrainedTiny(result.best, data, images)
