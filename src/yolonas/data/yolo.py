"""YOLO txt labels (Ultralytics / Roboflow layout: images/ and labels/ sibling folders) and data.yaml files."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from yolonas.data.checks import (
    BAD_CLASS,
    DEGENERATE,
    NO_LABEL_FILE,
    OUTSIDE,
    UNPARSABLE,
    LabelReport,
    clip_boxes,
    image_size,
)
from yolonas.data.dataset import DetectionDataset, offsets_from_owner
from yolonas.data.images import list_images
from yolonas.errors import DataError


def label_path(image: Path) -> Path:
    """The label file of an image: the last `images` folder in its path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")  # no images/ folder: labels lie next to the images


def ignore_path(image: Path) -> Path:
    """The optional ignore-region file of an image: `ignore/` beside its `labels/` folder, same YOLO lines.

    Its boxes load as crowd boxes: regions evaluation does not count and training does not penalise as background
    (pseudo-labelling writes its ignore band there).
    """
    labels = label_path(image)
    if labels.parent.name == "labels":
        return labels.parent.parent / "ignore" / labels.name
    return labels.with_suffix(".ignore.txt")


def write_yolo_labels(path: Path, boxes: np.ndarray, class_ids: np.ndarray, image_shape: tuple[int, int]) -> Path:
    """Write YOLO label lines `cls cx cy w h` (normalised, 6 decimals) for xyxy pixel `boxes` of an image of
    `image_shape` (h, w) to `path`, making its folder; no boxes: an empty file."""
    h, w = image_shape
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cxcywh = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1) / [w, h, w, h]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{int(c)} " + " ".join(f"{v:.6f}" for v in row) + "\n"
                            for c, row in zip(class_ids, cxcywh)))
    return path


def parse_label_line(line: str, num_classes: int) -> tuple[int, float, float, float, float] | str:
    """(class, x1, y1, x2, y2) normalised from `cls cx cy w h` or a polygon `cls x1 y1 x2 y2 ...`, or the fault."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        return UNPARSABLE
    if not all(math.isfinite(v) for v in values):
        return UNPARSABLE
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    elif len(values) >= 7 and len(values) % 2 == 1:  # segmentation export: the polygon's enclosing box
        xs, ys = values[1::2], values[2::2]
        box = (min(xs), min(ys), max(xs), max(ys))
    else:
        return UNPARSABLE
    cls = values[0]
    if cls != int(cls):
        return UNPARSABLE
    if not 0 <= cls < num_classes:
        return BAD_CLASS
    return (int(cls), *box)


class YoloDataset(DetectionDataset):
    """A YOLO-format data set: images (a folder, or a list of image paths) with `labels/` txt files beside them.

    Image ids are positions in the sorted file list, counting from 1; category ids in `to_coco` are class index + 1.
    """

    def __init__(self, images: str | Path | Sequence[str | Path], class_names: Sequence[str], cache: bool = False):
        class_names = list(class_names)
        if not class_names:
            raise DataError(f"{images}: no class names given")
        if isinstance(images, (str, Path)):
            folder = Path(images)
            if not folder.is_dir():
                raise DataError(f"{folder}: image folder not found")
            paths = list_images(folder)
            root, source = folder, str(folder)
        else:
            paths = [Path(p).absolute() for p in images]
            if not paths:
                raise DataError("empty list of images given")
            root = Path(os.path.commonpath([p.parent for p in paths]))
            source = f"{len(paths)} images under {root}"
        report = LabelReport(source)

        files, sizes, owner, rows = [], [], [], []
        for path in paths:
            size = image_size(path)
            if isinstance(size, str):
                report.add(size, str(path))
                continue
            index = len(files)
            files.append(str(path.relative_to(root)))
            sizes.append(size)
            for line_no, row in self._read_labels(path, len(class_names), report):
                owner.append(index)
                rows.append((*row, line_no, 0))
            ignore = ignore_path(path)
            if ignore.is_file():
                for line_no, row in self._read_labels(path, len(class_names), report, ignore):
                    owner.append(index)
                    rows.append((*row, line_no, 1))
        if not files:
            raise DataError(f"{source}: no usable images" + (f" ({report.summary()})" if report.found else ""))

        sizes = np.asarray(sizes, dtype=np.int32)
        owner = np.asarray(owner, dtype=np.int64)
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
        hw = sizes[owner]
        boxes = table[:, 1:5] * np.tile(hw[:, ::-1], 2)  # normalised -> pixels: x by width, y by height
        boxes, outside, degenerate = clip_boxes(boxes, hw)
        for fault, mask in ((OUTSIDE, outside), (DEGENERATE, degenerate)):
            for k in np.flatnonzero(mask):
                report.add(fault, f"{label_path(root / files[owner[k]]).name}:{int(table[k, 5])}")
        keep = ~degenerate
        owner, boxes, classes, crowd = owner[keep], boxes[keep], table[keep, 0].astype(np.int32), table[keep, 6] > 0
        order, offsets = offsets_from_owner(owner, len(files))
        super().__init__(root, files, sizes, np.arange(1, len(files) + 1), boxes[order], classes[order],
                         crowd[order], offsets, class_names,
                         list(range(1, len(class_names) + 1)), report, cache=cache)
        report.warn()

    @staticmethod
    def _read_labels(image: Path, num_classes: int, report: LabelReport, path: Path | None = None):
        """Yield (line number, (cls, x1, y1, x2, y2)) of an image's label file (or `path`); faults go to the report."""
        missing_ok = path is not None
        path = label_path(image) if path is None else path
        try:
            text = path.read_text()
        except FileNotFoundError:
            if not missing_ok:
                report.add(NO_LABEL_FILE, image.name)
            return
        except (OSError, UnicodeDecodeError):
            report.add(UNPARSABLE, f"{path.name} (unreadable file)")
            return
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row = parse_label_line(line, num_classes)
            if isinstance(row, str):
                report.add(row, f"{path.name}:{line_no}")
            else:
                yield line_no, row


def read_data_yaml(path: str | Path) -> dict:
    """The data.yaml as a dict, with `names` normalised to a list and checked against `nc`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise DataError(f"{path}: data.yaml not found") from e
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with train/val/names keys")
    names, nc = data.get("names"), data.get("nc")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{path}: names keys must be integer class ids, got {list(names)[:5]}") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{path}: names keys must be the class ids 0..{len(keys) - 1}, got {keys}")
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is None and isinstance(nc, int):
        names = [str(k) for k in range(nc)]
    else:
        raise DataError(f"{path}: `names` must be a list or a mapping of class id to name")
    if nc is not None and int(nc) != len(names):
        raise DataError(f"{path}: nc is {nc} but {len(names)} names are listed")
    return {**data, "names": names, "nc": len(names)}


def split_images(path: str | Path, split: str, data: dict | None = None) -> list[Path]:
    """The image folders or list files a data.yaml split names, resolved against `path:` and the yaml's folder."""
    path = Path(path)
    data = read_data_yaml(path) if data is None else data
    if not data.get(split):
        keys = [k for k in ("train", "val", "test") if data.get(k)]
        raise DataError(f"{path}: no '{split}' split (has: {', '.join(keys) or 'none'})")
    root = path.parent / data["path"] if data.get("path") else path.parent
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    resolved = []
    for entry in entries:
        p = root / entry
        if not p.exists() and str(entry).startswith("../"):
            p = root / str(entry)[3:]  # Roboflow exports point one level up from where the yaml ends up
        if not p.exists():
            raise DataError(f"{path}: {split} path {entry!r} not found (looked for {p})")
        resolved.append(p)
    return resolved


def load_data_yaml(path: str | Path, split: str = "train", cache: bool = False) -> YoloDataset:
    """The YoloDataset of one split (train, val, test) of a data.yaml; a split may be folders or .txt image lists."""
    data = read_data_yaml(path)
    names = data["names"]
    entries = split_images(path, split, data)
    if len(entries) == 1 and entries[0].is_dir():
        return YoloDataset(entries[0], names, cache=cache)
    images: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            images += list_images(entry)
        else:  # a text file listing image paths, relative to its own folder
            try:
                lines = [ln.strip() for ln in entry.read_text().splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"{entry}: cannot read the image list ({e})") from None
            images += [entry.parent / ln for ln in lines]
    return YoloDataset(images, names, cache=cache)
