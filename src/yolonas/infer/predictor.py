"""Predictor: images in, `Detections` out, through one pre-processing and one post-processing for every backend.

Its stages are public, so what a benchmark times is what users run: `preprocess` (letterbox into a batch),
`forward` (the backend), `postprocess` (NMS where the backend has none, boxes back to the original pixels).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from yolonas.arch.model import YoloNAS
from yolonas.errors import InputError
from yolonas.infer.backend import Backend, FunctionBackend, TorchBackend, checked_device
from yolonas.infer.detections import Detections
from yolonas.infer.letterbox import batch_boxes_to_original, letterbox_batch
from yolonas.infer.postprocess import PREDICT_NMS, NMSConfig, postprocess
from yolonas.infer.sources import ImageSource
from yolonas.infer.tiling import TileConfig, Tiler, tile_config
from yolonas.preprocess import LetterboxInfo, Preprocessing

log = logging.getLogger(__name__)

# What `forward` returns: (boxes, scores) of a raw backend, or per-image detections of one with NMS inside.
ForwardOutput = tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]


class Predictor:
    """Run a detector on images, folders, globs or videos and return `Detections` in original-image pixels.

    `model` is a YoloNAS (wrapped in a `TorchBackend` on `device`, fp16 with `half`, bf16 with `bf16`), any
    `Backend`, or a plain function from a batch to (boxes, scores) with `preprocessing` and `class_names` given.
    `nms` defaults to `PREDICT_NMS`; validation passes `VAL_NMS`; a backend with NMS in its graph gets the same
    thresholds as inputs. `preprocessing` and `class_names` default to the backend's. With `tiles` (a
    `TileConfig`, or a tile size: overlap 0.2), each image runs as overlapping tiles, each letterboxed to the
    input size, whose boxes merge back (see `infer/tiling.py`): `model.predict("drone.jpg", tiles=640)`.
    """

    def __init__(self, model: YoloNAS | Backend, nms: NMSConfig | None = None, device: torch.device | str = "cpu",
                 batch_size: int = 8, half: bool = False, preprocessing: Preprocessing | None = None,
                 class_names: list[str] | None = None, bf16: bool = False, tiles: TileConfig | int | None = None):
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.backend = _as_backend(model, device, half, bf16, preprocessing, class_names)
        self.device = self.backend.device
        self.nms = nms or PREDICT_NMS
        self.batch_size = batch_size
        self.preprocessing = preprocessing or self.backend.preprocessing
        self.class_names = list(class_names or self.backend.class_names)
        self.tiles = tile_config(tiles)
        self._tilers: dict[TileConfig, Tiler] = {}  # one per tile setting: each says its notices once
        self.skipped: list[tuple[str, str]] = []  # (file, reason) of the inputs the last predict/stream left out
        h, w = self.preprocessing.image_size
        log.info("predict: %s; input %dx%d (h x w), batch %d on %s %s%s", self.nms.describe(), h, w, batch_size,
                 self.device, self.backend.precision, f"; {self.tiles.describe()}" if self.tiles else "")

    # ---------------------------------------------------------------------------------------------- the stages

    def preprocess(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[LetterboxInfo]]:
        """RGB uint8 HWC images of any sizes -> the backend's input batch and each image's letterbox."""
        return letterbox_batch(images, self.preprocessing, self.device, self.backend.input_dtype,
                               memory_format=self.backend.memory_format)

    def forward(self, x: torch.Tensor, nms: NMSConfig | None = None) -> ForwardOutput:
        """The backend on a batch: raw (boxes, scores), or per-image detections where NMS is in its graph."""
        return self.backend.detect(x, nms or self.nms) if self.backend.has_nms else self.backend(x)

    def postprocess(self, out: ForwardOutput, infos: list[LetterboxInfo], nms: NMSConfig | None = None
                    ) -> list[torch.Tensor]:
        """`forward`'s output -> per image [n, 6] (x1, y1, x2, y2, score, class) in its original pixels."""
        dets = out if self.backend.has_nms else postprocess(*out, nms or self.nms)
        return batch_boxes_to_original(dets, infos)

    def detect(self, images: list[np.ndarray], nms: NMSConfig | None = None
               ) -> tuple[list[torch.Tensor], list[LetterboxInfo]]:
        """The three stages on one batch: per image [n, 6] detections in its pixels, and its letterbox."""
        x, infos = self.preprocess(images)
        return self.postprocess(self.forward(x, nms), infos, nms), infos

    # ---------------------------------------------------------------------------------------------- the API

    @torch.inference_mode()
    def predict_arrays(self, images: list[np.ndarray], names: list[str] | None = None, *,
                       nms: NMSConfig | None = None, tiles: TileConfig | int | None = None) -> list[Detections]:
        """Detect objects in RGB uint8 HWC arrays of any sizes; one `Detections` per image, in order.

        `nms` and `tiles` override the predictor's own for this call (a server's per-request options)."""
        if names is not None and len(names) != len(images):
            raise InputError(f"{len(names)} names given for {len(images)} images")
        nms, tiler = nms or self.nms, self._tiler(tile_config(tiles) or self.tiles)
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            batch_names = names[start:start + self.batch_size] if names is not None else [None] * len(batch)
            if tiler is None:
                dets, _ = self.detect(batch, nms)
            else:
                dets = tiler.detect(batch, batch_names, lambda crops: self.detect(crops, nms), self.batch_size, nms)
            out.extend(self._to_detections(dets, [image.shape[:2] for image in batch], batch_names))
        return out

    def _tiler(self, cfg: TileConfig | None) -> Tiler | None:
        if cfg is None:
            return None
        return self._tilers.setdefault(cfg, Tiler(cfg))

    def _to_detections(self, dets: list[torch.Tensor], shapes: list[tuple[int, int]], names: list[str | None]
                       ) -> list[Detections]:
        counts = [len(d) for d in dets]
        # One device-to-host copy for the whole batch.
        host = torch.cat(dets).cpu().numpy() if dets else np.zeros((0, 6), np.float32)
        return [Detections(boxes=d[:, :4].astype(np.float32), scores=d[:, 4].astype(np.float32),
                           class_ids=d[:, 5].astype(np.int64), class_names=self.class_names,
                           image_shape=tuple(shape[:2]), path=name)
                for d, shape, name in zip(np.split(host, np.cumsum(counts)[:-1]), shapes, names)]

    def stream(self, source) -> Iterator[tuple[str, np.ndarray, Detections]]:
        """Yield (name, RGB image, Detections) per image or video frame, holding one batch in memory at a time."""
        # Reading a batch ahead: the next batch decodes in worker threads while the network runs on this one.
        src = source if isinstance(source, ImageSource) else ImageSource(source, prefetch=max(4, self.batch_size))
        batch: list[tuple[str, np.ndarray]] = []
        try:
            for item in src:
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield from self._run(batch)
                    batch = []
            if batch:
                yield from self._run(batch)
        finally:
            self.skipped = list(src.skipped)

    def _run(self, batch: list[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray, Detections]]:
        names, images = [n for n, _ in batch], [im for _, im in batch]
        yield from zip(names, images, self.predict_arrays(images, names))

    def predict(self, source) -> list[Detections]:
        """Detect objects in an image path, folder, glob, video, array, PIL image or a list of these."""
        return [det for _, _, det in self.stream(source)]


def _as_backend(model, device: torch.device | str, half: bool, bf16: bool, preprocessing: Preprocessing | None,
                class_names: list[str] | None) -> Backend:
    """What the Predictor runs: a YoloNAS in a TorchBackend, a Backend as it is, a function in a FunctionBackend."""
    if isinstance(model, YoloNAS):
        return TorchBackend(model, checked_device(device), half, bf16=bf16)
    if isinstance(model, Backend):
        return model
    if callable(model) and preprocessing is not None and class_names is not None:
        return FunctionBackend(model, list(class_names), preprocessing)
    raise InputError(f"cannot predict with a {type(model).__name__}: give a YoloNAS model, a Backend, or a "
                     "function with preprocessing= and class_names=")
