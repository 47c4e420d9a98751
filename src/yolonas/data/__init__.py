"""Data sets (YOLO txt + data.yaml, COCO JSON), opening the splits of any input, label checks, training transforms
loaders and tiles of large images."""

from __future__ import annotations

from yolonas.data.checks import LabelReport
from yolonas.data.coco import CocoDataset
from yolonas.data.dataset import DetectionDataset, Sample
from yolonas.data.images import IMAGE_SUFFIXES, list_images, read_image, select_images
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
from yolonas.data.splits import data_yaml_of, open_dataset, open_splits, source_images
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.data.tiles import TiledDataset, check_tiling, tile_grid
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

__all__ = [
    "HSV", "IMAGE_SUFFIXES", "ChannelSwap", "CocoDataset", "Compose", "DetectionDataset", "EpochSampler",
    "HorizontalFlip", "LabelReport", "LetterboxResize", "MixUp", "Mosaic", "RandomAffine", "RandomSample", "Sample",
    "TiledDataset", "TrainDataset", "ValDataset", "YoloDataset", "check_tiling", "collate", "data_yaml_of",
    "letterbox", "list_images", "load_data_yaml", "make_loader", "make_synthetic_dataset", "make_val_loader",
    "open_dataset", "open_splits", "read_data_yaml", "read_image", "select_images", "source_images", "tile_grid",
    "training_transforms", "val_collate",
]
