"""The common sample type and the base dataset: compact per-image label arrays, images decoded on demand."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolonas.data.checks import LabelReport
from yolonas.data.images import read_image
from yolonas.errors import DataError


@dataclass
class Sample:
    """One image with its boxes: RGB uint8 HWC, boxes float32 [n, 4] xyxy pixels, classes int64 [n], crowd bool [n]."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    image_id: int
    file: str
    crowd: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.crowd is None:
            self.crowd = np.zeros(len(self.boxes), dtype=bool)

    def replace(self, **changes) -> Sample:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def select(self, keep: np.ndarray) -> Sample:
        """A copy keeping only the boxes where `keep` (bool mask or indices) selects."""
        return dataclasses.replace(self, boxes=self.boxes[keep], classes=self.classes[keep], crowd=self.crowd[keep])


def offsets_from_owner(owner: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(order that groups rows by image, offsets [n_images + 1]) for rows owned by image index `owner`."""
    order = np.argsort(owner, kind="stable")
    offsets = np.zeros(n_images + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_images), out=offsets[1:])
    return order, offsets


class DetectionDataset:
    """Images with boxes. Labels live in flat arrays sliced per image by `offsets`; images decode on demand.

    Subclasses parse a format, check it into a `LabelReport` and hand the arrays to this constructor.
    """

    def __init__(self, root: Path, files: Sequence[str], sizes: np.ndarray, image_ids: np.ndarray,
                 boxes: np.ndarray, classes: np.ndarray, crowd: np.ndarray, offsets: np.ndarray,
                 class_names: Sequence[str], category_ids: Sequence[int], report: LabelReport,
                 areas: np.ndarray | None = None, cache: bool = False):
        self.root = Path(root)
        self.files = list(files)  # file names relative to root, as to_coco writes them
        self.sizes = np.asarray(sizes, dtype=np.int32).reshape(-1, 2)  # (height, width) per image
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        self._boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self._classes = np.asarray(classes, dtype=np.int32)
        self._crowd = np.asarray(crowd, dtype=bool)
        # COCO's own (segmentation) areas, in float64: COCOeval's area ranges compare them to 32² and 96² exactly
        self._areas = None if areas is None else np.asarray(areas, dtype=np.float64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.class_names = list(class_names)
        self.category_ids = [int(c) for c in category_ids]
        self.report = report
        self._cache: list[np.ndarray] | None = None
        if len(self.files) == 0:
            raise DataError(f"{report.source}: no usable images")
        if cache:
            self.cache_images()

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.report.source!r}, images={len(self)}, boxes={len(self._boxes)}, "
                f"classes={len(self.class_names)})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_files(self) -> list[Path]:
        return [self.root / f for f in self.files]

    def image_file(self, i: int) -> Path:
        return self.root / self.files[i]

    def labels(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes float32 [n, 4] xyxy pixels, classes int64 [n], crowd bool [n]) of image i, without decoding it."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self._boxes[a:b].copy(), self._classes[a:b].astype(np.int64), self._crowd[a:b].copy()

    def load_image(self, i: int) -> np.ndarray:
        """The RGB uint8 HWC image i (from the RAM cache when enabled); DataError when it cannot be decoded."""
        if self._cache is not None and self._cache[i] is not None:
            return self._cache[i]
        image = read_image(self.image_file(i))
        h, w = self.sizes[i]
        if image.shape[:2] != (h, w):
            raise DataError(f"{self.image_file(i)}: decoded size {image.shape[1]}x{image.shape[0]} differs from the "
                            f"labels' {w}x{h}")
        return image

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        i = i % len(self)
        boxes, classes, crowd = self.labels(i)
        return Sample(self.load_image(i), boxes, classes, int(self.image_ids[i]), str(self.image_file(i)), crowd)

    def cache_images(self, threads: int = 8) -> None:
        """Decode every image once and keep it in RAM (forked loader workers share the pages).

        An image that fails to decode is left out of the cache; reading it later raises DataError again, which
        the loaders turn into a warning and a skip.
        """
        def decode(i: int) -> np.ndarray | None:
            try:
                return self.load_image(i)
            except DataError:
                return None

        if self._cache is None:
            with ThreadPoolExecutor(threads) as pool:
                self._cache = list(pool.map(decode, range(len(self))))

    def to_coco(self) -> dict:
        """A COCO ground-truth dict: integer image ids, xywh boxes, area, iscrowd, the data set's own category ids."""
        images = [{"id": int(self.image_ids[i]), "file_name": self.files[i], "height": int(self.sizes[i, 0]),
                   "width": int(self.sizes[i, 1])} for i in range(len(self))]
        owner = np.repeat(self.image_ids, np.diff(self.offsets))
        xywh = self._boxes.astype(np.float64)
        xywh[:, 2:] -= xywh[:, :2]
        areas = np.round(xywh[:, 2] * xywh[:, 3], 4) if self._areas is None else self._areas
        cat_ids = np.asarray(self.category_ids, dtype=np.int64)[self._classes]
        annotations = [
            {"id": k + 1, "image_id": int(img), "category_id": int(cat), "bbox": [round(float(v), 4) for v in box],
             "area": float(area), "iscrowd": int(crowd)}
            for k, (img, cat, box, area, crowd) in enumerate(zip(owner, cat_ids, xywh, areas, self._crowd))
        ]
        categories = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}
