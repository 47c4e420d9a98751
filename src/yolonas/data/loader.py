"""Training and validation loaders: per-item seeded augmentation, collation into batches, worker seeding.

Every training item draws its randomness from rng(seed, epoch, index), so a batch is the same whatever the number
of workers. The epoch and the mosaic switch travel with the indices (see `EpochSampler`), because persistent
workers hold their own copy of the dataset and would never see a change made to it in the main process.

A batch arrives with its ground truth already padded to [B, n, ...] (`pad_targets`), worked out on the host in the
loader: the training step then has no data-dependent shape to ask the device for.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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
    MosaicAffine,
    PlanarLayout,
    RandomAffine,
    as_hw,
    resize_to_fit,
    scale_boxes,
)
from yolonas.errors import DataError
from yolonas.preprocess import fit_size

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
    return sample.select(~sample.crowd) if drop_crowd and sample.crowd.any() else sample


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


def memory_available() -> int:
    """Bytes of memory the system can hand out now without swapping (MemAvailable); 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def cache_budget(cache_gb: float | None) -> int:
    """Bytes for FittedImages: `cache_gb` GB, or with None a quarter of the memory available now."""
    return int(memory_available() // 4 if cache_gb is None else cache_gb * 2**30)


class FittedImages:
    """A data set's samples with the image already resized to fit the training size, as Mosaic resizes it.

    Decoding and fitting a 1024 px JPEG (3-4 ms here, 7 with the machine busy) is most of an uncached mosaic's
    cost: four images per output. So the samples are decoded and fitted once here, in the main process before the
    loader's workers fork (which then share the pages), in index order as long as `budget` bytes hold their images;
    the rest are decoded when drawn. Mosaic's own fit of an image that already fits is a no-op, so the augmented
    samples are the same, bit for bit, with or without the cache. A cached sample is handed out as is, its arrays
    read-only: a transform that wrote into one would raise, not corrupt the cache.
    """

    def __init__(self, dataset: DetectionDataset, size: int | Sequence[int], budget: int, threads: int | None = None):
        self.dataset, self.size = dataset, as_hw(size)
        self.samples: list[Sample | None] = [None] * len(dataset)
        self.fill(budget, threads or os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def report(self):
        return self.dataset.report

    @property
    def cached(self) -> int:
        """How many samples are held."""
        return sum(s is not None for s in self.samples)

    @property
    def nbytes(self) -> int:
        """Bytes of the images held."""
        return sum(s.image.nbytes for s in self.samples if s is not None)

    def fill(self, budget: int, threads: int) -> None:
        """Decode and fit the first samples whose fitted images add up to at most `budget` bytes, on `threads`
        threads (decode and resize release the GIL); one that cannot be decoded is left out (DataError later)."""
        wanted, total = [], 0
        for i, (h, w) in enumerate(self.dataset.sizes):
            nh, nw, _ = fit_size(int(h), int(w), self.size)
            total += nh * nw * 3
            if total > budget:
                break
            wanted.append(i)
        if not wanted:
            return
        with ThreadPoolExecutor(min(threads, len(wanted))) as pool:
            for i, sample in zip(wanted, pool.map(self._decode, wanted)):
                self.samples[i] = sample
        log.info("%d of %d training images cached at %dx%d (%.0f MB)", self.cached, len(self), *self.size,
                 self.nbytes / 2**20)

    def fit(self, sample: Sample) -> Sample:
        """The sample with its image resized to fit the training size, boxes with it (Mosaic.fit)."""
        image, scale = resize_to_fit(sample.image, self.size)
        return sample.replace(image=image, boxes=scale_boxes(sample.boxes, scale))

    def _decode(self, i: int) -> Sample | None:
        try:
            sample = self.fit(self.dataset[i])
        except DataError:
            return None
        sample = sample.replace(image=sample.image.view())  # the flag below must not reach the data set's arrays
        for array in (sample.image, sample.boxes, sample.classes, sample.crowd):
            array.flags.writeable = False
        return sample

    def __getitem__(self, i: int) -> Sample:
        sample = self.samples[i]
        # not cached: decode now and fit (DataError when undecodable)
        return sample if sample is not None else self.fit(self.dataset[i])


def training_transforms(dataset: DetectionDataset, size: int | Sequence[int] = 640, mosaic: float = 1.0,
                        mixup: float = 0.0, degrees: float = 0.0, translate: float = 0.25,
                        scale: tuple[float, float] = (0.5, 1.5), shear: float = 0.0, hsv: float = 0.5,
                        hsv_gains: tuple[float, float, float] = (18, 30, 30), flip: float = 0.5,
                        channel_swap: float = 0.0, pad_value: int = 114, keep_crowd: bool = False,
                        cache_gb: float | None = None) -> Compose:
    """Mosaic -> RandomAffine (as one MosaicAffine) -> MixUp -> HSV -> HorizontalFlip -> ChannelSwap ->
    LetterboxResize (-> PlanarLayout, memory only), probabilities as given. Affine, HSV and flip defaults are the
    published YOLO-NAS COCO recipe's (which also swaps channels with p=0.5 and mixes up with p=0.5). `keep_crowd`
    keeps crowd boxes in mosaic and mixup partners. Images are drawn from a `FittedImages` cache of `cache_gb` GB
    (None: a quarter of the memory available; 0: decode every time); TrainDataset reads its items from it too."""
    source = FittedImages(dataset, size, cache_budget(cache_gb))
    pick = RandomSample(source, keep_crowd=keep_crowd)
    # one step: only the part of the mosaic canvas that the affine warp reads is built (see MosaicAffine)
    geometric = [MosaicAffine(Mosaic(pick, size, p=mosaic, pad_value=pad_value),
                              RandomAffine(size, degrees, translate, scale, shear, border_value=pad_value))]
    return Compose([*geometric, MixUp(Transformed(pick, Compose(geometric)), p=mixup, pad_value=pad_value),
                    HSV(*hsv_gains, p=hsv), HorizontalFlip(flip), ChannelSwap(channel_swap),
                    LetterboxResize(size, pad_value=pad_value), PlanarLayout()], source=source)


def sample_source(dataset: DetectionDataset, transforms: Compose):
    """Where a TrainDataset reads its items: the transforms' image cache when it was built on this data set."""
    source = getattr(transforms, "source", None)
    return source if isinstance(source, FittedImages) and source.dataset is dataset else dataset


class TrainDataset(Dataset):
    """A dataset with training transforms; item `(index, epoch, mosaic)` (or a plain index: epoch 0) is
    reproducible: its rng is seeded by (seed, epoch, index). Crowd boxes are dropped unless `keep_crowd` (then
    `collate` hands them on as ignore regions); an undecodable image is replaced by another one drawn from the same
    rng, with a warning. Items are read through the transforms' image cache (see `training_transforms`)."""

    def __init__(self, dataset: DetectionDataset, transforms: Compose, seed: int = 0, keep_crowd: bool = False):
        self.dataset, self.transforms, self.seed, self.keep_crowd = dataset, transforms, seed, keep_crowd
        self.source = sample_source(dataset, transforms)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int, bool]) -> Sample:
        index, epoch, mosaic = key if isinstance(key, tuple) else (key, 0, None)
        rng = np.random.default_rng([self.seed, epoch, index])
        sample = load_sample(self.source, index, drop_crowd=not self.keep_crowd)
        if sample is None:
            sample = RandomSample(self.source, keep_crowd=self.keep_crowd)(rng)
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


def pad_targets(targets: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target rows [M, 6] (batch_idx, cls, x1, y1, x2, y2) -> labels [B, n], boxes [B, n, 4], mask [B, n].

    n is the largest GT count of an image (at least 1, so that images without GTs need no special case).
    """
    if targets.ndim != 2 or targets.shape[-1] != 6:
        raise ValueError(f"targets must be [M, 6] (batch_idx, cls, x1, y1, x2, y2), got {tuple(targets.shape)}")
    device = targets.device
    img = targets[:, 0].long()
    counts = torch.bincount(img, minlength=batch_size)
    if counts.numel() > batch_size or (img < 0).any():
        raise ValueError(f"targets name images outside the batch of {batch_size}: {img.unique().tolist()}")
    n = max(1, int(counts.max()))
    # Each row's slot within its image: its rank among the rows of that image, by a stable sort.
    order = torch.argsort(img, stable=True)
    img, rows = img[order], targets[order]
    slot = torch.arange(len(img), device=device) - (torch.cumsum(counts, 0) - counts)[img]
    labels = torch.zeros(batch_size, n, dtype=torch.long, device=device)
    boxes = torch.zeros(batch_size, n, 4, dtype=torch.float32, device=device)
    mask = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
    labels[img, slot] = rows[:, 1].long()
    boxes[img, slot] = rows[:, 2:6].float()
    mask[img, slot] = True
    return labels, boxes, mask


def collate(batch: list[Sample]) -> dict:
    """images uint8 [B, 3, H, W], targets float32 [M, 6] rows (batch index, class, x1, y1, x2, y2), ignore float32
    [K, 5] rows (batch index, x1, y1, x2, y2) from the crowd boxes that were kept, ids, files; and the same padded:
    gt (labels [B, n], boxes [B, n, 4], mask [B, n]) and ignore_boxes (boxes [B, k, 4], mask [B, k])."""
    shapes = {s.image.shape for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"images of one batch must share a size, got {sorted(shapes)}; end transforms with "
                         "LetterboxResize")
    images = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).contiguous()
    rows = np.concatenate([np.concatenate([np.full((len(s.boxes), 1), k, np.float32),
                                           s.classes[:, None].astype(np.float32), s.boxes.astype(np.float32)], 1)
                           for k, s in enumerate(batch)]).reshape(-1, 6) if batch else np.zeros((0, 6), np.float32)
    crowd = np.concatenate([s.crowd for s in batch]).astype(bool) if batch else np.zeros(0, bool)
    targets = torch.from_numpy(np.ascontiguousarray(rows[~crowd]))
    ignore_rows = torch.from_numpy(np.ascontiguousarray(rows[crowd]))
    _, ignore_boxes, ignore_mask = pad_targets(ignore_rows, len(batch))
    return {"images": images, "targets": targets, "ignore": ignore_rows[:, [0, 2, 3, 4, 5]],
            "gt": pad_targets(targets, len(batch)), "ignore_boxes": (ignore_boxes, ignore_mask),
            "image_ids": [s.image_id for s in batch], "files": [s.file for s in batch]}


def keep_freed_memory(trim_threshold: int = 256 << 20) -> bool:
    """Have glibc's malloc reuse freed memory in this process instead of handing it back to the kernel; True if set.

    Each augmented image allocates ~20 MB of short-lived multi-MB arrays (mosaic canvas, warp, HSV planes, the
    batch). By default glibc serves some from fresh mmaps and trims the heap after others, so the next image takes
    the pages back through page faults and zeroing: ~370 faults, 2-2.5 ms of a 6.5 ms image on this project's VM
    (4.1-4.5 ms with this set).
    A fixed mmap threshold (32 MB, glibc's largest) plus a high trim threshold keep them in the heap: no faults; the
    process keeps its peak heap (tens of MB in a loader worker). glibc on Linux only; elsewhere nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    return bool(mallopt(m_mmap_threshold, 32 << 20)) & bool(mallopt(m_trim_threshold, trim_threshold))


def seed_worker(worker_id: int) -> None:
    """Seed the global generators of a loader worker from its torch seed, keep OpenCV single-threaded there, let it
    reuse freed memory (`keep_freed_memory`), and have it end on SIGTERM as it does on Ctrl-C."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)  # the workers are the parallelism; OpenCV's own threads would only oversubscribe
    keep_freed_memory()  # in the worker only: its allocations are the transforms', not the trainer's
    # `timeout` and schedulers signal the whole process group. torch's worker dies by SIGTERM, and the main process
    # then raises "worker killed by signal" as it exits; as a KeyboardInterrupt the worker loop ends quietly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


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
