"""What `--data` names, opened: a data.yaml, a folder holding one, or a COCO JSON (images beside it or in `images`)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from yolonas.data.coco import CocoDataset
from yolonas.data.dataset import DetectionDataset
from yolonas.data.images import list_images
from yolonas.data.yolo import load_data_yaml, split_images
from yolonas.errors import DataError


def data_yaml_of(path: str | Path) -> Path | None:
    """The data.yaml that `path` names (itself, or the one in a dataset folder); None for a COCO JSON."""
    path = Path(path)
    if path.is_dir():
        for name in ("data.yaml", "data.yml"):
            if (path / name).is_file():
                return path / name
        raise DataError(f"{path}: a dataset folder needs a data.yaml; pass the data.yaml or COCO JSON itself, or "
                        "write a data.yaml naming the train/val image folders and the class names")
    if path.suffix.lower() in (".yaml", ".yml"):
        return path
    if path.suffix.lower() == ".json":
        return None
    if not path.exists():
        raise DataError(f"{path}: data set not found")
    raise DataError(f"{path}: not a data.yaml, a COCO JSON or a dataset folder")


def source_images(source: str | Path, split: str = "train") -> list[Path]:
    """Image files of an image folder (recursively, sorted), or of a data set's split (data.yaml, COCO JSON,
    dataset folder): what INT8 calibration and timing read."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such image folder or data set")
    is_dataset = path.suffix.lower() in (".yaml", ".yml", ".json") or (
        path.is_dir() and any((path / n).is_file() for n in ("data.yaml", "data.yml")))
    if is_dataset:
        files = list(open_dataset(path, split).image_files)
    elif path.is_dir():
        files = list_images(path)
    else:
        raise DataError(f"{path}: give an image folder, a data.yaml, a COCO JSON or a dataset folder")
    if not files:
        raise DataError(f"{path}: no images found")
    return files


def open_dataset(data: str | Path, split: str = "val", images: str | Path | None = None,
                 cache: bool = False) -> DetectionDataset:
    """One split of what `--data` names: a data.yaml (its `split`), a folder holding one, or a COCO JSON (images
    in `images` or found beside it)."""
    return open_splits(data, (split,), images, cache)[split]


def open_splits(data: str | Path, splits: Iterable[str] = ("train", "val"), images: str | Path | None = None,
                cache: bool = False, quiet: bool = False) -> dict[str, DetectionDataset]:
    """The data sets of `splits` (keys of a data.yaml: train, val, test) of what `data` names, by split name.

    Splits that name the same images are one object, so label faults are reported once; a COCO JSON is one set of
    images, the same for every split. `quiet`: report nothing while opening (another process already does).
    """
    splits = list(splits)
    with _silenced(quiet):
        yaml_path = data_yaml_of(data)
        if yaml_path is None:
            return dict.fromkeys(splits, CocoDataset(data, images, cache=cache))
        opened: dict[tuple[Path, ...], DetectionDataset] = {}
        result = {}
        for split in splits:
            key = tuple(split_images(yaml_path, split)) if len(splits) > 1 else ()
            if key not in opened:
                opened[key] = load_data_yaml(yaml_path, split, cache=cache)
            result[split] = opened[key]
        return result


@contextlib.contextmanager
def _silenced(on: bool) -> Iterator[None]:
    """While `on`: no warnings and no label-check reports (they are logged by yolonas.data)."""
    if not on:
        yield
        return
    logger = logging.getLogger("yolonas.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
