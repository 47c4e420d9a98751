"""Training and validation loaders: per-item seeded augmentation, collation into batches, worker seeding.

Every training item draws its randomness from rng(seed, epoch, index), so a batch is the same whatever the number
of workers. The epoch and the mosaic switch travel with the indices (see `EpochSampler`), because persistent
workers hold their own copy of the dataset and would never see a change made to it in the main process.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from yolonas.data.dataset import DetectionDataset, Sample
from yolonas.data.transforms import (
    HSV,
    ChannelSwap,
    Compose,
    HorizontalFlip,
    LetterboxResize,
    MixUp,
    Mosaic,
    RandomAffine,
)
from yolonas.errors import DataError

log = logging.getLogger(__name__)
_warned: set[str] = set()  # per process: each undecodable file is warned about once


def load_sample(dataset: DetectionDataset, index: int, drop_crowd: bool = True) -> Sample | None:
    """dataset[index] without crowd boxes, or None (with one warning per file) when the image cannot be decoded."""
    try:
        sample = dataset[index]
    except DataError as e:
        if str(e) not in _warned:
            _warned.add(str(e))
            log.warning("%s; skipped", e)
        return None
    return sample.select(~sample.crowd) if drop_crowd else sample


class RandomSample:
    """A random sample of a dataset (crowd boxes dropped unless `keep_crowd`), for Mosaic and MixUp; undecodable
    images are redrawn."""

    def __init__(self, dataset: DetectionDataset, retries: int = 20, keep_crowd: bool = False):
        self.dataset, self.retries, self.keep_crowd = dataset, retries, keep_crowd

    def __call__(self, rng: np.random.Generator) -> Sample:
        for _ in range(self.retries):
            sample = load_sample(self.dataset, int(rng.integers(len(self.dataset))), drop_crowd=not self.keep_crowd)
            if sample is not None:
                return sample
        raise DataError(f"{self.dataset.report.source}: {self.retries} images in a row could not be decoded")


class Transformed:
    """Samples from `sample_fn`, passed through `transforms` (MixUp's partner goes through mosaic + affine too)."""

    def __init__(self, sample_fn: RandomSample, transforms: Compose):
        self.sample_fn, self.transforms = sample_fn, transforms

    def __call__(self, rng: np.random.Generator) -> Sample:
        return self.transforms(self.sample_fn(rng), rng)


def training_transforms(dataset: DetectionDataset, size: int | Sequence[int] = 640, mosaic: float = 1.0,
                        mixup: float = 0.0, degrees: float = 0.0, translate: float = 0.25,
                        scale: tuple[float, float] = (0.5, 1.5), shear: float = 0.0, hsv: float = 0.5,
                        hsv_gains: tuple[float, float, float] = (18, 30, 30), flip: float = 0.5,
                        channel_swap: float = 0.0, pad_value: int = 114, keep_crowd: bool = False) -> Compose:
    """Mosaic -> RandomAffine -> MixUp -> HSV -> HorizontalFlip -> ChannelSwap -> LetterboxResize, probabilities
    as given. Affine, HSV and flip defaults are the published YOLO-NAS COCO recipe's (which also swaps channels
    with p=0.5 and mixes up with p=0.5). `keep_crowd` keeps crowd boxes in mosaic and mixup partners."""
    pick = RandomSample(dataset, keep_crowd=keep_crowd)
    geometric = [Mosaic(pick, size, p=mosaic, pad_value=pad_value),
                 RandomAffine(size, degrees, translate, scale, shear, border_value=pad_value)]
    return Compose([*geometric, MixUp(Transformed(pick, Compose(geometric)), p=mixup, pad_value=pad_value),
                    HSV(*hsv_gains, p=hsv), HorizontalFlip(flip), ChannelSwap(channel_swap),
                    LetterboxResize(size, pad_value=pad_value)])


class TrainDataset(Dataset):
    """A dataset with training transforms; item `(index, epoch, mosaic)` (or a plain index: epoch 0) is
    reproducible: its rng is seeded by (seed, epoch, index). Crowd boxes are dropped unless `keep_crowd` (then
    `collate` hands them on as ignore regions); an undecodable image is replaced by another one drawn from the same
    rng, with a warning."""

    def __init__(self, dataset: DetectionDataset, transforms: Compose, seed: int = 0, keep_crowd: bool = False):
        self.dataset, self.transforms, self.seed, self.keep_crowd = dataset, transforms, seed, keep_crowd

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int, bool]) -> Sample:
        index, epoch, mosaic = key if isinstance(key, tuple) else (key, 0, None)
        rng = np.random.default_rng([self.seed, epoch, index])
        sample = load_sample(self.dataset, index, drop_crowd=not self.keep_crowd)
        if sample is None:
            sample = RandomSample(self.dataset, keep_crowd=self.keep_crowd)(rng)
        return self.transforms(sample, rng, mosaic=mosaic)


class EpochSampler(Sampler):
    """Yields (index, epoch, mosaic) for TrainDataset: the order is shuffled by (seed, epoch), or comes from an inner
    sampler (e.g. DistributedSampler). Call `set_epoch` before each epoch and `close_mosaic` for the last ones."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, sampler: Sampler | None = None):
        self.size, self.shuffle, self.seed, self.sampler = size, shuffle, seed, sampler
        self.epoch, self.mosaic = 0, True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def close_mosaic(self) -> None:
        self.mosaic = False

    def __len__(self) -> int:
        return len(self.sampler) if self.sampler is not None else self.size

    def __iter__(self):
        if self.sampler is not None:
            order = list(self.sampler)
        elif self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist()
        else:
            order = range(self.size)
        return iter([(int(i), self.epoch, self.mosaic) for i in order])


def collate(batch: list[Sample]) -> dict:
    """images uint8 [B, 3, H, W], targets float32 [M, 6] rows (batch index, class, x1, y1, x2, y2), ignore float32
    [K, 5] rows (batch index, x1, y1, x2, y2) from the crowd boxes that were kept, ids, files."""
    shapes = {s.image.shape for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"images of one batch must share a size, got {sorted(shapes)}; end transforms with "
                         "LetterboxResize")
    images = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).contiguous()
    rows = np.concatenate([np.concatenate([np.full((len(s.boxes), 1), k, np.float32),
                                           s.classes[:, None].astype(np.float32), s.boxes.astype(np.float32)], 1)
                           for k, s in enumerate(batch)]).reshape(-1, 6) if batch else np.zeros((0, 6), np.float32)
    crowd = np.concatenate([s.crowd for s in batch]).astype(bool) if batch else np.zeros(0, bool)
    targets, ignore = rows[~crowd], rows[crowd][:, [0, 2, 3, 4, 5]]
    return {"images": images, "targets": torch.from_numpy(np.ascontiguousarray(targets)),
            "ignore": torch.from_numpy(np.ascontiguousarray(ignore)),
            "image_ids": [s.image_id for s in batch], "files": [s.file for s in batch]}


def seed_worker(worker_id: int) -> None:
    """Seed the global generators of a loader worker from its torch seed, and keep OpenCV single-threaded there."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)  # the workers are the parallelism; OpenCV's own threads would only oversubscribe


def make_loader(dataset: TrainDataset, batch_size: int, shuffle: bool = True, workers: int = 0, seed: int = 0,
                sampler: Sampler | None = None, drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A training DataLoader; its `.sampler` is an EpochSampler: call `loader.sampler.set_epoch(e)` every epoch and
    `loader.sampler.close_mosaic()` for the last ones (works with persistent workers). With `sampler` given (e.g. a
    DistributedSampler) the order is that sampler's and `shuffle` is not used."""
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), shuffle, seed, sampler),
                      num_workers=workers, collate_fn=collate, drop_last=drop_last, pin_memory=pin_memory,
                      worker_init_fn=seed_worker, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


class ValDataset(Dataset):
    """Original-size samples for evaluation (the predictor letterboxes them); None for an undecodable image."""

    def __init__(self, dataset: DetectionDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample | None:
        return load_sample(self.dataset, index, drop_crowd=False)


def val_collate(batch: list[Sample | None]) -> dict:
    """Lists, since sizes differ: images (RGB uint8 HWC), boxes, classes, crowd, image_ids, files; skips None."""
    batch = [s for s in batch if s is not None]
    return {"images": [s.image for s in batch], "boxes": [s.boxes for s in batch],
            "classes": [s.classes for s in batch], "crowd": [s.crowd for s in batch],
            "image_ids": [s.image_id for s in batch], "files": [s.file for s in batch]}


def make_val_loader(dataset: DetectionDataset, batch_size: int = 8, workers: int = 0) -> DataLoader:
    """A validation DataLoader over original-size images, in dataset order."""
    return DataLoader(ValDataset(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=val_collate, worker_init_fn=seed_worker, persistent_workers=workers > 0)
