"""Predictor: images in, `Detections` out, through one pre-processing and one post-processing for every backend."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from yolonas.errors import InputError
from yolonas.infer.detections import Detections
from yolonas.infer.letterbox import batch_boxes_to_original, check_image, letterbox_batch
from yolonas.infer.postprocess import PREDICT_NMS, NMSConfig, postprocess
from yolonas.infer.sources import ImageSource
from yolonas.infer.tiling import BORDER_PIXELS, TileBoxes, TileConfig, merge_tiles
from yolonas.preprocess import LetterboxInfo, Preprocessing

log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """Anything that maps a letterboxed batch [B, 3, H, W] float in [0, 1] to (boxes [B, N, 4] xyxy input pixels,
    scores [B, N, C] in 0..1). It may also carry `class_names` and `preprocessing`, which the Predictor then uses.
    A backend with NMS inside (`has_nms = True`) instead gives `detect(x)` -> per image [n, 6] in input pixels,
    and its `nms` (the thresholds fixed at export).
    """

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def checked_device(device: torch.device | str) -> torch.device:
    """`device` as a torch.device, or an InputError in one line when it is not a device this machine has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"--device {device}: not a device name ({e}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU here (torch.cuda.is_available() is False); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise InputError(f"--device {device}: use cpu, cuda or cuda:N")
    return dev


class TorchBackend:
    """A YoloNAS module as a `Backend`: forward, then decode, in eval mode.

    On CUDA, `half=True` runs an fp16 copy of the model (weights cast once, not per call as autocast would);
    on CPU it autocasts. `bf16=True` does the same in bfloat16: a bf16 copy on CUDA, autocast on the CPU (where
    oneDNN uses AVX-512 BF16 or AMX if the CPU has them). Boxes and scores come back as float32 either way.
    `compile` wraps forward + decode in `torch.compile` (True, or a mode such as "max-autotune");
    `cuda_graphs` captures forward + decode once per input shape and replays it, which removes the
    per-kernel launch cost that dominates small batches. Both trade a one-off start-up cost (seconds to a
    minute) for speed, so they are off by default.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", half: bool = False,
                 channels_last: bool = True, compile: bool | str = False, cuda_graphs: bool = False,
                 bf16: bool = False):
        self.device = checked_device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise InputError(f"CUDA graphs need a CUDA device, not {self.device}")
        if half and bf16:
            raise InputError("half (fp16) and bf16 exclude each other: choose one")
        # Channels-last lets oneDNN (CPU) and cuDNN (GPU) pick faster conv kernels: ~20% on this CPU for S.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.half, self.bf16 = half, bf16
        self.dtype = torch.float16 if half else torch.bfloat16 if bf16 else torch.float32
        self.class_names = list(model.class_names)
        self.preprocessing = model.preprocessing
        self.cast_copy = self.dtype != torch.float32 and self.device.type == "cuda"
        # The fp16/bf16 copy is an inference snapshot: later changes to the model's weights do not reach it.
        self._net = copy.deepcopy(self.model).eval().to(self.dtype) if self.cast_copy else self.model
        self._step = self._forward_decode
        if compile:
            self._step = torch.compile(self._forward_decode, mode=None if compile is True else compile)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]] = {}

    def _forward_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cast_copy:
            boxes, scores = self._net.decode(self._net(x.to(self.dtype)))
        else:
            # Autocast rather than a cast copy on CPU: the user's model keeps its float weights.
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                boxes, scores = self._net.decode(self._net(x))
        return boxes.float(), scores.float()

    def _replay(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(x.shape)
        if key not in self._graphs:
            static_x = x.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN picks its kernels here
                for _ in range(3):
                    self._step(static_x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._step(static_x)
            self._graphs[key] = (graph, static_x, static_out)
        graph, static_x, static_out = self._graphs[key]
        static_x.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)  # the next replay overwrites the static outputs

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.model.training
        if was_training:  # predict() in the middle of training must not leave the model in eval mode
            self.model.eval()
        try:
            x = x.to(self.device).contiguous(memory_format=self.memory_format)  # a Predictor may letterbox on CPU
            with torch.inference_mode():
                return self._replay(x) if self.cuda_graphs else self._step(x)
        finally:
            if was_training:
                self.model.train()


class Predictor:
    """Run a detector on images, folders, globs or videos and return `Detections` in original-image pixels.

    `model` is a YoloNAS (wrapped in a `TorchBackend`) or any `Backend`. `nms` defaults to `PREDICT_NMS`;
    validation passes `VAL_NMS`. `preprocessing` defaults to the model's own. With `tiles` (a `TileConfig`, or a
    tile size: overlap 0.2), each image runs as overlapping tiles, each letterboxed to the input size, whose boxes
    merge back (see `infer/tiling.py`): `model.predict("drone.jpg", tiles=640)`.
    """

    def __init__(self, model, nms: NMSConfig | None = None, device: torch.device | str = "cpu",
                 batch_size: int = 8, half: bool = False, preprocessing: Preprocessing | None = None,
                 class_names: list[str] | None = None, bf16: bool = False, tiles: TileConfig | int | None = None):
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.device = checked_device(device)
        is_yolonas = isinstance(model, nn.Module) and hasattr(model, "decode")
        self.backend: Backend = TorchBackend(model, self.device, half, bf16=bf16) if is_yolonas else model
        if not callable(self.backend):
            raise InputError(f"cannot predict with a {type(model).__name__}: give a YoloNAS model or a backend")
        # A backend with NMS in its graph (an ONNX export) fixed its thresholds at export; those are the ones used.
        self.nms = self.backend.nms if getattr(self.backend, "has_nms", False) else nms or PREDICT_NMS
        self.batch_size = batch_size
        self.preprocessing = preprocessing or getattr(self.backend, "preprocessing", None) or Preprocessing()
        self.class_names = class_names or getattr(self.backend, "class_names", None)
        self.tiles = TileConfig(tiles) if isinstance(tiles, int) and not isinstance(tiles, bool) else tiles
        self._said_whole = self._said_greedy = False  # notices given once per predictor
        self.skipped: list[tuple[str, str]] = []  # (file, reason) of the inputs the last predict/stream left out
        # A channels-last backend (TorchBackend's default) gets its input letterboxed in that layout: no copy.
        channels_last = getattr(self.backend, "memory_format", None) == torch.channels_last
        self.input_format = torch.channels_last if channels_last else torch.contiguous_format
        h, w = self.preprocessing.image_size
        log.info("predict: %s; input %dx%d (h x w), batch %d on %s%s%s", self.nms.describe(), h, w, batch_size,
                 self.device, " fp16" if half else " bf16" if bf16 else "",
                 f"; {self.tiles.describe()}" if self.tiles else "")

    @torch.inference_mode()
    def predict_arrays(self, images: list[np.ndarray], names: list[str] | None = None) -> list[Detections]:
        """Detect objects in RGB uint8 HWC arrays of any sizes; one `Detections` per image, in order."""
        if names is not None and len(names) != len(images):
            raise InputError(f"{len(names)} names given for {len(images)} images")
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            batch_names = names[start:start + self.batch_size] if names is not None else [None] * len(batch)
            out.extend(self._predict_batch(batch, batch_names))
        return out

    def _predict_batch(self, images: list[np.ndarray], names: list[str | None]) -> list[Detections]:
        if self.tiles is not None:
            return self._predict_tiled(images, names)
        dets, infos, num_classes = self._detect(images)
        return self._to_detections(dets, [(i.orig_h, i.orig_w) for i in infos], names, num_classes)

    def _detect(self, images: list[np.ndarray]) -> tuple[list[torch.Tensor], list[LetterboxInfo], int]:
        """Per image [n, 6] detections in its own pixels, the letterbox of each, and the number of classes."""
        x, infos = letterbox_batch(images, self.preprocessing, self.device, memory_format=self.input_format)
        if getattr(self.backend, "has_nms", False):
            dets, num_classes = self.backend.detect(x), len(self.class_names or [])
        else:
            boxes, scores = self.backend(x)
            dets, num_classes = postprocess(boxes, scores, self.nms), scores.shape[-1]
        return batch_boxes_to_original(dets, infos), infos, num_classes

    def _to_detections(self, dets: list[torch.Tensor], shapes: list[tuple[int, int]], names: list[str | None],
                       num_classes: int) -> list[Detections]:
        class_names = self.class_names or [str(i) for i in range(num_classes)]
        counts = [len(d) for d in dets]
        # One device-to-host copy for the whole batch.
        host = torch.cat(dets).cpu().numpy() if dets else np.zeros((0, 6), np.float32)
        result = []
        for d, shape, name in zip(np.split(host, np.cumsum(counts)[:-1]), shapes, names):
            result.append(Detections(boxes=d[:, :4].astype(np.float32), scores=d[:, 4].astype(np.float32),
                                     class_ids=d[:, 5].astype(np.int64), class_names=class_names,
                                     image_shape=shape, path=name))
        return result

    def _predict_tiled(self, images: list[np.ndarray], names: list[str | None]) -> list[Detections]:
        """Every tile of every image through the backend in shared batches (an image's tiles in one at least),
        boxes shifted back to the image, then merged per image (`merge_tiles`)."""
        for i, image in enumerate(images):
            check_image(image, names[i] or f"image {i}")
        windows = [self._windows(image, name) for image, name in zip(images, names)]
        crops = [image[y1:y2, x1:x2] for image, ws in zip(images, windows) for x1, y1, x2, y2 in ws.tolist()]
        chunk = max(self.batch_size, *(len(w) for w in windows))
        dets, infos, num_classes = [], [], 0
        for start in range(0, len(crops), chunk):
            d, i, num_classes = self._detect(crops[start:start + chunk])
            dets.extend(d)
            infos.extend(i)
        per_image = self._tile_boxes(dets, infos, windows, images)
        if self.tiles.merge == "greedynmm" and self.nms.score_threshold < 0.1 and not self._said_greedy:
            self._said_greedy = True
            log.warning("tile merge greedynmm at score threshold %g grows boxes into low-score neighbours and lowers "
                        "AP; use it with confident thresholds, the default nms otherwise", self.nms.score_threshold)
        merged = [merge_tiles(b, self.nms.iou_threshold, self.tiles, self.nms.class_agnostic,
                              self.nms.max_detections) for b in per_image]
        return self._to_detections(merged, [image.shape[:2] for image in images], names, num_classes)

    def _windows(self, image: np.ndarray, name: str | None) -> np.ndarray:
        """The image's tile windows; an image no larger than a tile runs whole, which is said once."""
        h, w = image.shape[:2]
        if h <= self.tiles.size and w <= self.tiles.size and not self._said_whole:
            self._said_whole = True
            log.warning("tile %d px is not smaller than %s (%dx%d): such images run whole, without tiles",
                        self.tiles.size, name or "an image", w, h)
        return self.tiles.windows(h, w)

    def _tile_boxes(self, dets: list[torch.Tensor], infos: list[LetterboxInfo], windows: list[np.ndarray],
                    images: list[np.ndarray]) -> list[TileBoxes]:
        """Per image, its tiles' detections shifted into its pixels, with the window and border margin of each."""
        counts = [len(d) for d in dets]
        flat = torch.cat(dets) if dets else torch.zeros((0, 6))
        # Per box: its window and BORDER_PIXELS of model input in original pixels.
        rows = np.concatenate([np.concatenate(windows), [[BORDER_PIXELS / i.scale] for i in infos]], axis=1)
        rows = torch.from_numpy(np.repeat(rows, counts, axis=0)).to(flat.device, flat.dtype)
        flat = torch.cat([flat[:, :4] + rows[:, [0, 1, 0, 1]], flat[:, 4:]], dim=1)
        crops_per_image = [len(w) for w in windows]
        boxes_per_image = [sum(c) for c in np.split(np.array(counts, dtype=np.int64),
                                                     np.cumsum(crops_per_image)[:-1])]
        return [TileBoxes(d, r[:, :4], r[:, 4], image.shape[:2])
                for d, r, image in zip(flat.split(boxes_per_image), rows.split(boxes_per_image), images)]

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
