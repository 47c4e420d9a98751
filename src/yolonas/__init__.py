"""yolonas: YOLO-NAS, done completely."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yolonas.arch.model import YoloNAS, build
    from yolonas.arch.spec import ArchSpec, yolo_nas_l, yolo_nas_m, yolo_nas_s
    from yolonas.deploy.open import open_predictor
    from yolonas.errors import YolonasError
    from yolonas.infer import Detections, NMSConfig, Predictor, TileConfig
    from yolonas.preprocess import Preprocessing
    from yolonas.weights import load

# The public API, imported on first use (PEP 562): `import yolonas` and `yolonas --help` stay fast because torch
# is only imported when a name that needs it is used.
_HOMES = {
    "Preprocessing": "yolonas.preprocess", "YoloNAS": "yolonas.arch.model", "build": "yolonas.arch.model",
    "ArchSpec": "yolonas.arch.spec", "yolo_nas_s": "yolonas.arch.spec", "yolo_nas_m": "yolonas.arch.spec",
    "yolo_nas_l": "yolonas.arch.spec", "YolonasError": "yolonas.errors", "load": "yolonas.weights",
    "Detections": "yolonas.infer", "NMSConfig": "yolonas.infer", "Predictor": "yolonas.infer",
    "TileConfig": "yolonas.infer", "open_predictor": "yolonas.deploy.open",
}

__all__ = [
    "ArchSpec", "Detections", "NMSConfig", "Predictor", "Preprocessing", "TileConfig", "YoloNAS", "YolonasError",
    "build", "load", "open_predictor", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'yolonas' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
