"""Tiles of large images: the one tile grid (inference and training share it) and a data set of training tiles.

A tile grid covers an h x w image with `size` x `size` windows (clipped to the image) that overlap by
`int(overlap * size)` pixels; the last window of a row or column is moved back to end on the image border, as
SAHI's `get_slice_bboxes` does, so every window has the full size whenever the image is at least that large.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from yolonas.data.checks import LabelReport
from yolonas.data.dataset import DetectionDataset
from yolonas.errors import InputError
from yolonas.preprocess import STRIDE

log = logging.getLogger(__name__)


def check_tiling(size: int, overlap: float) -> None:
    """Raise `InputError` unless `size` is a positive multiple of 32 and `overlap` a fraction in [0, 1)."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < STRIDE or size % STRIDE:
        raise InputError(f"tile size {size}: give a positive multiple of {STRIDE} in pixels (e.g. 640)")
    if not 0 <= overlap < 1:
        raise InputError(f"tile overlap {overlap}: give a fraction in [0, 1) of the tile size (e.g. 0.2)")


def _starts(length: int, size: int, step: int) -> list[int]:
    """Window starts along one side: every `step`, the last one moved back to end on the border."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    return [*starts, length - size]


@lru_cache(maxsize=64)
def _grid(h: int, w: int, size: int, overlap: float) -> tuple[tuple[int, int, int, int], ...]:
    step = max(1, size - int(overlap * size))
    return tuple((x, y, min(x + size, w), min(y + size, h))
                 for y in _starts(h, size, step) for x in _starts(w, size, step))


def tile_grid(h: int, w: int, size: int, overlap: float = 0.2) -> np.ndarray:
    """The tiles of an h x w image as int64 [T, 4] xyxy pixel windows, row by row; computed once per size."""
    check_tiling(size, overlap)
    return np.array(_grid(int(h), int(w), int(size), float(overlap)), dtype=np.int64).reshape(-1, 4)


def clip_to_tile(boxes: np.ndarray, tile: np.ndarray, min_visible: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes [n, 4] seen through `tile`: (boxes in tile pixels, inside [n] bool, sliver [n] bool).

    `inside`: the box overlaps the tile at all. `sliver`: less than `min_visible` of its area (or under 2 pixels
    of either side) lies in the tile; such a part is too little of the object to learn from, yet not background.
    """
    x1, y1, x2, y2 = (int(v) for v in tile)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = boxes[:, [0, 2]].clip(x1, x2) - x1
    clipped[:, [1, 3]] = boxes[:, [1, 3]].clip(y1, y2) - y1
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (w > 0) & (h > 0)
    sliver = inside & ((w * h < min_visible * area) | (w < 2) | (h < 2))
    return clipped, inside, sliver


class TiledDataset(DetectionDataset):
    """The tiles of a data set's images as images of their own, for training at the scale of tiled inference.

    Each tile of each image (see `tile_grid`) becomes one item; its boxes are clipped to it, and a box of which
    less than `min_visible` shows becomes a crowd box (an ignore region with `data.ignore_crowd`, dropped
    otherwise). Tiles without a box are kept at the rate `empty_rate` (a fixed draw from `seed`): enough background
    to learn from without drowning the objects. Images no larger than the tile stay whole.
    """

    def __init__(self, base: DetectionDataset, size: int, overlap: float = 0.2, empty_rate: float = 0.1,
                 min_visible: float = 0.25, seed: int = 0):
        check_tiling(size, overlap)
        if not 0 <= empty_rate <= 1:
            raise InputError(f"data.tile_empty {empty_rate}: give the fraction of empty tiles to keep, in [0, 1]")
        self.base, self.tile_size, self.overlap = base, size, overlap
        tiles, owner, boxes, classes, crowd, counts = self._cut(base, size, overlap, min_visible)
        keep = self._sample_empty(counts, empty_rate, seed)
        self.windows, self.owner = tiles[keep], owner[keep]
        kept = np.zeros(len(tiles), dtype=bool)
        kept[keep] = True
        rows = np.repeat(kept, counts)  # the label rows of the kept tiles, in tile order
        offsets = np.zeros(len(self.windows) + 1, dtype=np.int64)
        np.cumsum(counts[keep], out=offsets[1:])
        sizes = np.stack([self.windows[:, 3] - self.windows[:, 1], self.windows[:, 2] - self.windows[:, 0]], 1)
        files = [f"{base.files[o]}#tile{x1},{y1}" for o, (x1, y1, _, _) in zip(self.owner, self.windows)]
        report = LabelReport(source=f"{base.report.source} (tiles of {size} px)")
        super().__init__(base.root, files, sizes, np.arange(1, len(files) + 1), boxes[rows], classes[rows],
                         crowd[rows], offsets, base.class_names, base.category_ids, report)
        empty_kept = int((counts[keep] == 0).sum())
        log.info("tiles: %d of %d images at %d px, overlap %g: %d with boxes, %d of %d empty ones kept (rate %g)",
                 len(self), len(base), size, overlap, len(self) - empty_kept, empty_kept, int((counts == 0).sum()),
                 empty_rate)

    @staticmethod
    def _cut(base: DetectionDataset, size: int, overlap: float, min_visible: float):
        """Every tile of every image with its clipped labels: tiles [T, 4], owner [T], boxes, classes, crowd, counts."""
        tiles, owner, boxes, classes, crowd, counts = [], [], [], [], [], []
        for i, (h, w) in enumerate(base.sizes):
            image_boxes, image_classes, image_crowd = base.labels(i)
            for tile in tile_grid(int(h), int(w), size, overlap):
                clipped, inside, sliver = clip_to_tile(image_boxes, tile, min_visible)
                tiles.append(tile)
                owner.append(i)
                boxes.append(clipped[inside])
                classes.append(image_classes[inside])
                crowd.append((image_crowd | sliver)[inside])
                counts.append(int(inside.sum()))
        return (np.array(tiles, np.int64).reshape(-1, 4), np.array(owner, np.int64),
                np.concatenate(boxes).reshape(-1, 4), np.concatenate(classes), np.concatenate(crowd),
                np.array(counts, np.int64))

    @staticmethod
    def _sample_empty(counts: np.ndarray, rate: float, seed: int) -> np.ndarray:
        """Indices of the tiles kept: all with boxes, and round(rate * empty) of the empty ones drawn by `seed`."""
        empty = np.flatnonzero(counts == 0)
        drawn = np.random.default_rng(seed).permutation(empty)[:round(rate * len(empty))]
        return np.sort(np.concatenate([np.flatnonzero(counts > 0), drawn])).astype(np.int64)

    def load_image(self, i: int) -> np.ndarray:
        """The pixels of tile i, cut from its decoded image (DataError when that cannot be decoded)."""
        x1, y1, x2, y2 = (int(v) for v in self.windows[i])
        return np.ascontiguousarray(self.base.load_image(int(self.owner[i]))[y1:y2, x1:x2])

    def image_file(self, i: int):
        return self.base.image_file(int(self.owner[i]))
