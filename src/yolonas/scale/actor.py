"""The Ray actor of a cluster job: it opens the model once, then turns each batch of (bytes, path) rows into result
rows, decoding the images itself so that a corrupt file is an error row, not a failed job."""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from yolonas.data.images import decode_image
from yolonas.deploy.open import open_predictor
from yolonas.errors import InputError, YolonasError
from yolonas.infer.detections import Detections
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.tiling import TileConfig
from yolonas.scale.rows import result_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """How each actor opens its Predictor: `open_predictor`'s arguments, `threads` per actor included."""

    imgsz: int | None = None
    device: str = "cpu"  # "cuda": the GPU Ray gave the actor
    runtime: str = "auto"
    threads: int | None = None
    nms: NMSConfig | None = None
    tiles: TileConfig | int | None = None  # a tile size: overlap 0.2
    batch: int = 8
    half: bool = False


@dataclass(frozen=True)
class ModelFiles:
    """A model file's bytes (and its companions: an IR's .bin), shipped to every actor through Ray's object store."""

    name: str
    files: dict[str, bytes]

    @classmethod
    def of(cls, model: str | Path) -> ModelFiles | None:
        """The files of `model`, or None for a published name (every node builds it itself)."""
        path = Path(model)
        if not path.is_file():
            return None
        companions = [path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else []
        return cls(path.name, {p.name: p.read_bytes() for p in [path, *companions] if p.is_file()})


@contextmanager
def model_path(model: str, files: ModelFiles | None):
    """The shipped copy of the model in a temp folder, removed once the model is loaded (every node runs the very
    file the driver read, wherever its working folder is); a published name as it is."""
    if files is None:
        yield model
        return
    folder = Path(tempfile.mkdtemp(prefix="yolonas-model-"))
    try:
        for name, data in files.files.items():
            (folder / name).write_bytes(data)
        yield str(folder / files.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_model(model: str, options: PredictOptions) -> list[str]:
    """Open the model here once, on the CPU, so that a file no actor could open fails the job in one line before
    Ray starts any; its class names. (A TensorRT engine opens only on its GPU: the actors are its check.)"""
    if Path(model).suffix.lower() in (".engine", ".plan"):
        return []
    runtime = "auto" if options.runtime == "fastest" else options.runtime  # "fastest" would time them here
    predictor = open_predictor(model, imgsz=options.imgsz, runtime=runtime, threads=1, batch=1)
    return list(predictor.class_names)


class DetectActor:
    """A `map_batches` callable class: `__init__` opens the model once per actor; each call maps a batch of
    {"bytes", "path"} rows to one result row per image (see `rows.SCHEMA`)."""

    def __init__(self, model: str, files: ModelFiles | None, options: PredictOptions):
        if options.threads:
            torch.set_num_threads(options.threads)
        with model_path(model, files) as path:
            self.predictor = open_predictor(path, imgsz=options.imgsz, device=options.device,
                                            runtime=options.runtime, threads=options.threads, nms=options.nms,
                                            tiles=options.tiles, batch=options.batch, half=options.half)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        paths = [str(p) for p in batch["path"]]
        results: list[Detections | str] = []
        for data, path in zip(batch["bytes"], paths):
            try:
                results.append(decode_image(data, path))  # replaced by its Detections below
            except InputError as e:
                results.append(str(e).removeprefix(f"{path}: "))  # the row names the file already
        good = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
        for i, det in zip(good, self._detect([results[i] for i in good], [paths[i] for i in good])):
            results[i] = det
        return result_table(paths, results)

    def _detect(self, images: list[np.ndarray], names: list[str]) -> list[Detections | str]:
        """The batch's Detections; when the batch is refused (one odd image), each image alone, so only the
        odd one becomes an error row."""
        if not images:
            return []
        try:
            return self.predictor.predict_arrays(images, names)
        except YolonasError:
            pass
        out: list[Detections | str] = []
        for image, name in zip(images, names):
            try:
                out.extend(self.predictor.predict_arrays([image], [name]))
            except YolonasError as e:
                out.append(str(e).removeprefix(f"{name}: "))
        return out
