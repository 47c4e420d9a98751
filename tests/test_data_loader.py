"""Loaders: collate shapes, batches independent of the worker count, epoch and mosaic switches, validation."""

from __future__ import annotations

import logging
import platform
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from yolonas.data import (
    Sample,
    TrainDataset,
    collate,
    load_data_yaml,
    make_loader,
    make_synthetic_dataset,
    make_val_loader,
    training_transforms,
)
from yolonas.data.loader import FittedImages, cache_budget, keep_freed_memory, memory_available
from yolonas.data.transforms import Mosaic
from yolonas.errors import DataError
from yolonas.preprocess import fit_size


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return load_data_yaml(make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_images=12, n_val=4, size=96),
                          "train")


def test_collate_shapes():
    def sample(n, image_id):
        boxes = np.tile(np.array([[1, 2, 30, 40]], np.float32), (n, 1))
        return Sample(np.full((64, 96, 3), image_id, np.uint8), boxes, np.arange(n), image_id, f"{image_id}.jpg")

    batch = collate([sample(2, 7), sample(0, 8), sample(3, 9)])
    assert batch["images"].shape == (3, 3, 64, 96) and batch["images"].dtype == torch.uint8
    assert batch["images"][1].eq(8).all()
    t = batch["targets"]
    assert t.shape == (5, 6) and t.dtype == torch.float32
    assert t[:, 0].tolist() == [0, 0, 2, 2, 2] and t[:, 1].tolist() == [0, 1, 0, 1, 2]
    assert t[0, 2:].tolist() == [1, 2, 30, 40]
    assert batch["image_ids"] == [7, 8, 9] and batch["files"] == ["7.jpg", "8.jpg", "9.jpg"]
    with pytest.raises(ValueError, match="share a size"):
        collate([sample(1, 1), Sample(np.zeros((32, 32, 3), np.uint8), np.zeros((0, 4), np.float32),
                                      np.zeros(0, np.int64), 2, "2.jpg")])


def batches(loader, epochs=(0, 1), close_at=1):
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        if epoch == close_at:
            loader.sampler.close_mosaic()
        out += [b for b in loader]
    return out


def test_same_batches_with_and_without_workers(synth):
    tf = training_transforms(synth, 96, mixup=0.5, degrees=5, hsv=1.0, channel_swap=0.5)
    train = TrainDataset(synth, tf, seed=5)
    serial = batches(make_loader(train, batch_size=4, workers=0, seed=5))
    parallel_loader = make_loader(train, batch_size=4, workers=2, seed=5)
    assert parallel_loader.persistent_workers
    parallel = batches(parallel_loader)
    assert len(serial) == len(parallel) == 6
    for a, b in zip(serial, parallel):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
        assert a["image_ids"] == b["image_ids"] and a["files"] == b["files"]
    # the epochs differ in order and in draws; the closed-mosaic epoch reached the persistent workers as well
    assert [b["image_ids"] for b in serial[:3]] != [b["image_ids"] for b in serial[3:]]
    closed = batches(make_loader(train, batch_size=4, workers=0, seed=5), epochs=(1,), close_at=-1)
    assert not all(torch.equal(a["images"], b["images"]) for a, b in zip(closed, serial[3:]))


def test_epoch_sampler_order_and_distributed(synth):
    train = TrainDataset(synth, training_transforms(synth, 96), seed=0)
    loader = make_loader(train, batch_size=2, shuffle=False)
    assert [key[0] for key in loader.sampler] == list(range(12))
    assert {key[1:] for key in loader.sampler} == {(0, True)}
    inner = DistributedSampler(train, num_replicas=2, rank=1, shuffle=True, seed=0)
    loader = make_loader(train, batch_size=2, sampler=inner)
    loader.sampler.set_epoch(3)
    assert len(loader.sampler) == 6 and inner.epoch == 3
    assert {key[1] for key in loader.sampler} == {3}


def test_undecodable_image_is_replaced_with_a_warning(tmp_path, caplog):
    data = make_synthetic_dataset(tmp_path, n_images=4, n_val=1, size=64)
    ds = load_data_yaml(data, "train")
    ds.image_file(1).write_bytes(b"")  # broken after the data set was opened
    train = TrainDataset(ds, training_transforms(ds, 64, mosaic=0.0), seed=0)
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        sample = train[(1, 0, True)]
    assert "train_0001.jpg" in caplog.text
    assert sample.image.shape == (64, 64, 3) and sample.image_id != 2
    val = list(make_val_loader(ds, batch_size=4))
    assert len(val) == 1 and len(val[0]["images"]) == 3 and 2 not in val[0]["image_ids"]


def png_that_fails_only_at_decode() -> bytes:
    """A PNG whose header and chunk CRCs are valid (so the check on open passes) but whose pixel data is garbage."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"garbage!") + chunk(b"IEND", b"")


def test_image_broken_inside_is_skipped_even_when_cached(tmp_path, caplog):
    data = make_synthetic_dataset(tmp_path, n_images=3, n_val=1, size=64)
    (data.parent / "train" / "images" / "zz_bad.png").write_bytes(png_that_fails_only_at_decode())
    (data.parent / "train" / "labels" / "zz_bad.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    ds = load_data_yaml(data, "train", cache=True)
    assert len(ds) == 4 and ds.files[3] == "zz_bad.png"
    train = TrainDataset(ds, training_transforms(ds, 64), seed=0)
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        out = [b for b in make_loader(train, batch_size=2, shuffle=False)]
    assert "zz_bad.png: cannot decode" in caplog.text
    assert sum(len(b["image_ids"]) for b in out) == 4 and 4 not in out[1]["image_ids"]


def test_val_loader_yields_original_sizes(coco128):
    ds = load_data_yaml(coco128 / "data.yaml", "val")
    loader = make_val_loader(ds, batch_size=5, workers=0)
    batch = next(iter(loader))
    assert len(batch["images"]) == 5 and batch["image_ids"] == [1, 2, 3, 4, 5]
    for k, image in enumerate(batch["images"]):
        assert image.dtype == np.uint8 and image.shape[:2] == tuple(ds.sizes[k])
        np.testing.assert_array_equal(batch["boxes"][k], ds.labels(k)[0])


def test_fitted_images_are_what_mosaic_fits(synth):
    size = (64, 80)
    source = FittedImages(synth, size, budget=2**30)
    assert source.cached == len(synth) and source.nbytes > 0 and source.report is synth.report
    fit = Mosaic(lambda rng: None, size).fit
    for i in range(len(synth)):
        a, b = source[i], fit(synth[i])
        assert not (a.image.flags.writeable or a.boxes.flags.writeable)  # a write into the cache fails loudly
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert (a.image_id, a.file, a.classes.tolist()) == (b.image_id, b.file, b.classes.tolist())


def test_fitted_images_budget_and_undecodable(tmp_path):
    data = make_synthetic_dataset(tmp_path, n_images=5, n_val=1, size=64)
    ds = load_data_yaml(data, "train")
    ds.image_file(1).write_bytes(b"")  # broken after the data set was opened
    fitted = [fit_size(int(h), int(w), (32, 32))[:2] for h, w in ds.sizes]
    source = FittedImages(ds, 32, budget=sum(h * w * 3 for h, w in fitted[:3]))  # room for the first three
    assert [s is not None for s in source.samples] == [True, False, True, False, False]
    assert source[3].image.shape == (*fitted[3], 3)  # not cached: decoded when asked for
    with pytest.raises(DataError, match="train_0001"):
        source[1]
    assert FittedImages(ds, 32, budget=0).cached == 0


def test_cache_changes_no_sample(synth, tmp_path):
    kw = {"mixup": 0.5, "degrees": 5, "hsv": 1.0, "channel_swap": 0.5}
    cached = TrainDataset(synth, training_transforms(synth, 96, **kw), seed=2)
    plain = TrainDataset(synth, training_transforms(synth, 96, cache_gb=0, **kw), seed=2)
    assert isinstance(cached.source, FittedImages) and cached.source.cached == len(synth)
    assert plain.source.cached == 0
    for key in [(i, e, m) for i in range(len(synth)) for e in (0, 1) for m in (True, False)]:
        a, b = cached[key], plain[key]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    # transforms built on another data set: the TrainDataset reads its own
    other = load_data_yaml(make_synthetic_dataset(tmp_path, n_images=3, size=96), "train")
    assert TrainDataset(other, cached.transforms).source is other


def test_batches_are_contiguous_nchw(synth):
    train = TrainDataset(synth, training_transforms(synth, 96), seed=0)
    samples = [train[(i, 0, True)] for i in range(4)]
    batch = collate(samples)
    images = batch["images"]
    assert images.is_contiguous() and images.shape == (4, 3, 96, 96)
    hwc = collate([s.replace(image=np.ascontiguousarray(s.image)) for s in samples])["images"]
    assert torch.equal(images, hwc)


def test_cache_budget_and_allocator():
    assert cache_budget(0) == 0 and cache_budget(1.5) == int(1.5 * 2**30)
    if sys.platform.startswith("linux"):
        assert memory_available() > 0 and cache_budget(None) == pytest.approx(memory_available() / 4, rel=0.2)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory()
