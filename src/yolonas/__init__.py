"""yolonas: YOLO-NAS, done completely."""

from yolonas.arch.model import Preprocessing, YoloNAS, build
from yolonas.arch.spec import ArchSpec, yolo_nas_l, yolo_nas_m, yolo_nas_s
from yolonas.errors import YolonasError
from yolonas.weights import load

__all__ = [
    "ArchSpec", "Preprocessing", "YoloNAS", "YolonasError", "build", "load", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l",
]
__version__ = "0.1.0"
