"""COCO JSON detection data sets, kept as compact arrays so that Objects365-size files stay light in memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from yolonas.data.checks import (
    BAD_CLASS,
    CORRUPT_IMAGE,
    DEGENERATE,
    MISSING_IMAGE,
    OUTSIDE,
    SIZE_MISMATCH,
    UNKNOWN_IMAGE,
    UNPARSABLE,
    LabelReport,
    clip_boxes,
    image_size,
)
from yolonas.data.dataset import DetectionDataset, offsets_from_owner
from yolonas.errors import DataError


def find_images_dir(json_path: Path, first_file: str) -> Path:
    """Where the images of a COCO file are: beside it, or in the usual `images/<split>` or `<split>` folders."""
    split = json_path.stem.split("_", 1)[-1]  # instances_train2017 -> train2017
    top = json_path.parent.parent
    for candidate in (json_path.parent, top / "images" / split, top / split, top / "images", json_path.parent / split,
                      json_path.parent / "images"):
        if (candidate / first_file).is_file():
            return candidate
    raise DataError(f"{json_path}: cannot find the images (looked for {first_file} beside the file and in "
                    f"images/{split}/, {split}/, images/); pass the image folder")


def existing_files(root: Path, files: list[str]) -> np.ndarray:
    """Which files exist, listing each folder once instead of one stat per file."""
    by_folder: dict[str, set[str]] = {}
    found = np.zeros(len(files), dtype=bool)
    for k, name in enumerate(files):
        folder, base = os.path.split(name)
        if folder not in by_folder:
            try:
                by_folder[folder] = set(os.listdir(root / folder))
            except OSError:
                by_folder[folder] = set()
        found[k] = base in by_folder[folder]
    return found


def read_annotations(anns: list[dict]) -> tuple[np.ndarray, ...]:
    """(ann ids, image ids, category ids, xyxy boxes, iscrowd, area, parsed) as arrays, one row per annotation."""
    n = len(anns)
    ann_ids = np.zeros(n, dtype=np.int64)
    image_ids = np.zeros(n, dtype=np.int64)
    cat_ids = np.zeros(n, dtype=np.int64)
    boxes = np.zeros((n, 4), dtype=np.float64)
    crowd = np.zeros(n, dtype=bool)
    area = np.zeros(n, dtype=np.float64)
    parsed = np.ones(n, dtype=bool)
    for k, a in enumerate(anns):
        try:
            ann_ids[k] = a.get("id", k)
            image_ids[k] = a["image_id"]
            cat_ids[k] = a["category_id"]
            x, y, w, h = (float(v) for v in a["bbox"])
            boxes[k] = (x, y, x + w, y + h)
            crowd[k] = bool(a.get("iscrowd", 0))
            area[k] = a["area"] if "area" in a else w * h
        except (KeyError, TypeError, ValueError, AttributeError):
            parsed[k] = False
    parsed &= np.isfinite(boxes).all(axis=1) & np.isfinite(area)
    return ann_ids, image_ids, cat_ids, boxes, crowd, area, parsed


def _load_coco_json(json_path: Path) -> dict:
    """The parsed file, or a DataError naming what keeps it from being a COCO detection file."""
    try:
        with open(json_path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{json_path}: COCO annotation file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data.get("categories"):
        raise DataError(f"{json_path}: not a COCO detection file (needs 'images' and 'categories' lists)")
    return data


def _read_categories(entries: list, json_path: Path) -> tuple[list[tuple[int, str]], np.ndarray]:
    """(id, name) pairs sorted by id, and the ids as an array; ids must be integers and unique."""
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in entries)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{json_path}: every category needs an integer 'id' and a 'name'") from e
    cat_ids = np.array([c for c, _ in categories], dtype=np.int64)
    if len(np.unique(cat_ids)) != len(cat_ids):
        raise DataError(f"{json_path}: duplicate category ids")
    return categories, cat_ids


def _read_images(images: list, json_path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """File names, integer ids and (height, width) of the image entries (0 where the file does not say)."""
    if not images:
        raise DataError(f"{json_path}: no images listed")
    bad = next((im for im in images if not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool)), None)
    if bad is not None:
        raise DataError(f"{json_path}: image id {bad.get('id')!r} of {bad.get('file_name')!r} is not an integer; "
                        "COCO evaluation (faster-coco-eval) needs integer image ids, renumber them")
    try:
        files = [str(im["file_name"]) for im in images]
    except KeyError as e:
        raise DataError(f"{json_path}: an image entry has no 'file_name'") from e
    ids = np.array([im["id"] for im in images], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"{json_path}: duplicate image ids")
    sizes = np.array([(im.get("height", 0) or 0, im.get("width", 0) or 0) for im in images], dtype=np.int64)
    return files, ids, sizes


def _check_files(root: Path, files: list[str], sizes: np.ndarray, check_images: bool,
                 report: LabelReport) -> np.ndarray:
    """Which images to keep: missing, unreadable or mis-sized files are reported and dropped; sizes the JSON
    leaves out are read from the files (in place)."""
    keep = existing_files(root, files)
    for k in np.flatnonzero(~keep):
        report.add(MISSING_IMAGE, files[k])
    for k in np.flatnonzero(keep & ((sizes <= 0).any(axis=1) | check_images)):
        size = image_size(root / files[k])
        if isinstance(size, str):
            report.add(size if size != MISSING_IMAGE else CORRUPT_IMAGE, files[k])
            keep[k] = False
        elif (sizes[k] <= 0).any():
            sizes[k] = size
        elif tuple(sizes[k]) != size:
            report.add(SIZE_MISMATCH, f"{files[k]} ({size[1]}x{size[0]}, file says {sizes[k, 1]}x{sizes[k, 0]})")
            keep[k] = False
    return keep


class CocoDataset(DetectionDataset):
    """A COCO JSON detection data set. Classes are the file's categories sorted by id, numbered 0..C-1;
    `category_ids[c]` is class c's id in the file. Image ids are the file's own and must be integers.

    `check_images` reads every image header on open (catches corrupt files and wrong sizes early; costs a file
    open per image); without it, images are only checked for existence and a corrupt one fails at decode time.
    """

    def __init__(self, json_path: str | Path, images_dir: str | Path | None = None, cache: bool = False,
                 check_images: bool = False):
        json_path = Path(json_path)
        data = _load_coco_json(json_path)
        report = LabelReport(str(json_path))
        categories, cat_ids = _read_categories(data["categories"], json_path)
        images = data["images"]
        files, ids, sizes = _read_images(images, json_path)
        root = Path(images_dir) if images_dir is not None else find_images_dir(json_path, files[0])
        keep = _check_files(root, files, sizes, check_images, report)

        ann_ids, ann_images, ann_cats, boxes, crowd, area, parsed = read_annotations(data.get("annotations") or [])
        del data, images  # the per-annotation dicts are the bulk of the memory: drop them before going on

        order = np.argsort(ids)  # image id -> position in the file, by binary search
        pos = order[np.searchsorted(ids, ann_images, sorter=order).clip(0, len(ids) - 1)]
        known = parsed & (ids[pos] == ann_images)
        cls = np.searchsorted(cat_ids, ann_cats).clip(0, len(cat_ids) - 1)
        in_list = known & (cat_ids[cls] == ann_cats)
        where = lambda k: f"{files[pos[k]]} (annotation {ann_ids[k]})"
        for k in np.flatnonzero(~parsed):
            report.add(UNPARSABLE, f"annotation {ann_ids[k]}")
        for k in np.flatnonzero(parsed & ~known):
            report.add(UNKNOWN_IMAGE, f"annotation {ann_ids[k]} (image id {ann_images[k]})")
        for k in np.flatnonzero(known & ~in_list):
            report.add(BAD_CLASS, where(k) + f" category {ann_cats[k]}")

        use = in_list & keep[pos]  # annotations of dropped images go with them, reported under the image
        boxes, outside, degenerate = clip_boxes(boxes[use], sizes[pos[use]])
        used = np.flatnonzero(use)
        for fault, mask in ((OUTSIDE, outside), (DEGENERATE, degenerate)):
            for k in used[mask]:
                report.add(fault, where(k))
        used, boxes = used[~degenerate], boxes[~degenerate]

        new_index = np.cumsum(keep) - 1  # file position -> position among kept images
        owner = new_index[pos[used]]
        rows, offsets = offsets_from_owner(owner, int(keep.sum()))
        files = [f for f, k in zip(files, keep) if k]
        super().__init__(root, files, sizes[keep], ids[keep], boxes[rows], cls[used][rows], crowd[used][rows],
                         offsets, [n for _, n in categories], cat_ids.tolist(), report, areas=area[used][rows],
                         cache=cache)
        report.warn()
