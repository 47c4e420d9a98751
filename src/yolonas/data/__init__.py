"""Data sets (YOLO txt + data.yaml, COCO JSON), label checks, training transforms and loaders."""

from __future__ import annotations

from pathlib import Path

from yolonas.data.checks import LabelReport
from yolonas.data.coco import CocoDataset
from yolonas.data.dataset import DetectionDataset, Sample, read_image
from yolonas.data.loader import (
    EpochSampler,
    RandomSample,
    TrainDataset,
    ValDataset,
    collate,
    make_loader,
    make_val_loader,
    training_transforms,
    val_collate,
)
from yolonas.data.splits import data_yaml_of, open_splits
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.data.transforms import (
    HSV,
    ChannelSwap,
    Compose,
    HorizontalFlip,
    LetterboxResize,
    MixUp,
    Mosaic,
    RandomAffine,
    letterbox,
)
from yolonas.data.yolo import YoloDataset, load_data_yaml, read_data_yaml
from yolonas.errors import DataError


def open_dataset(data: str | Path, split: str = "val", images: str | Path | None = None,
                 cache: bool = False) -> DetectionDataset:
    """What `--data` names: a data.yaml (its `split`), a COCO JSON (images in `images` or found beside it), or a
    folder holding a data.yaml or images."""
    path = Path(data)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_data_yaml(path, split, cache=cache)
    if path.suffix.lower() == ".json":
        return CocoDataset(path, images, cache=cache)
    if path.is_dir():
        for name in ("data.yaml", "data.yml"):
            if (path / name).is_file():
                return load_data_yaml(path / name, split, cache=cache)
        raise DataError(f"{path}: folder has no data.yaml; pass a data.yaml, a COCO JSON, or write a data.yaml "
                        "with train/val image folders and class names")
    raise DataError(f"{path}: not found, or not a data.yaml, COCO .json or dataset folder")


__all__ = [
    "HSV", "ChannelSwap", "CocoDataset", "Compose", "DetectionDataset", "EpochSampler", "HorizontalFlip",
    "LabelReport", "LetterboxResize", "MixUp", "Mosaic", "RandomAffine", "RandomSample", "Sample", "TrainDataset",
    "ValDataset", "YoloDataset", "collate", "data_yaml_of", "letterbox", "load_data_yaml", "make_loader",
    "make_synthetic_dataset", "make_val_loader", "open_dataset", "open_splits", "read_data_yaml", "read_image",
    "training_transforms", "val_collate",
]
