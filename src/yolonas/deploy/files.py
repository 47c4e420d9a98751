"""What a model file is: an exported file (by its suffix) or something PyTorch loads, and that loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from yolonas.arch.model import YoloNAS
from yolonas.weights import load

EXPORTED_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")


def is_exported(path) -> bool:
    """True when `path` names an exported file (by its suffix) rather than a checkpoint, spec or published name."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() in EXPORTED_SUFFIXES


def load_model(name: str | Path, imgsz: int | None = None) -> YoloNAS:
    """The YoloNAS that a published name, a spec YAML or a checkpoint names; with `imgsz`, a square input of that
    size, the image fitted inside it."""
    net = load(name)
    if imgsz is not None:
        net.preprocessing = dataclasses.replace(net.preprocessing, image_size=(imgsz, imgsz), longest_side=None)
    return net


def has_random_weights(path: str | Path) -> bool:
    """A published name or a spec file without a checkpoint: a network whose weights nobody trained."""
    return not is_exported(path) and (Path(path).suffix.lower() in (".yaml", ".yml") or not Path(path).exists())
