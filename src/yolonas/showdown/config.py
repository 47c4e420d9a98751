"""What a showdown call runs: the model names and their families, and the settings the CLI flags fill."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yolonas.errors import InputError

OURS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
PEERS = ("yolov8s", "yolov8m", "yolov8l")
# Small models for tests and quick checks; accepted, but not part of the published comparison.
TEST_MODELS = ("yolo_nas_tiny", "yolov8n")
DEFAULT_MODELS = OURS + PEERS


def family(model: str) -> str:
    """'YOLO-NAS' or 'YOLOv8' for a model name; InputError for an unknown one."""
    if model in OURS or model == "yolo_nas_tiny":
        return "YOLO-NAS"
    if model in PEERS or model == "yolov8n":
        return "YOLOv8"
    raise InputError(f"--models: unknown model {model!r}; choose from {', '.join(DEFAULT_MODELS + TEST_MODELS)}")


@dataclass
class ShowdownConfig:
    """Everything one showdown call needs; the CLI flags map 1:1 onto these fields."""

    data: str
    models: tuple[str, ...] = DEFAULT_MODELS
    epochs: int = 100
    budget_minutes: float | None = None  # scale epochs so the whole call fits; --epochs is then the ceiling
    imgsz: int = 640
    batch: int = 16
    device: str = "auto"
    backend: str = "onnxruntime"
    int8: bool = True
    calib_images: int = 64
    seed: int = 0
    workers: int = 4
    threads: int | None = None  # CPU training threads, both families, and ORT's for timing (default: torch's)
    latency_runs: int = 20
    train_split: str = "train"
    split: str = "val"
    ultralytics_python: str | None = None
    name: str = "exp"
    project: str = "runs/showdown"
    recipe: str = "scratch_small_data"
    force: bool = False  # redo models whose <model>.json exists
    command: str = ""
    extra: dict = field(default_factory=dict)

    def settings(self) -> dict:
        """The settings a row must share with the others to belong in the same table."""
        return {"data": str(Path(self.data).resolve()), "imgsz": self.imgsz, "batch": self.batch, "seed": self.seed,
                "split": self.split, "train_split": self.train_split, "backend": self.backend}


def check_config(cfg: ShowdownConfig) -> None:
    """InputError, in one line, for a config the showdown cannot run; before any model starts."""
    for model in cfg.models:
        family(model)
    if cfg.backend != "onnxruntime":
        raise InputError(f"--backend {cfg.backend}: the showdown times both families' ONNX files with onnxruntime "
                         "(the one backend that runs fp32 and INT8 of both)")
    if cfg.imgsz % 32 or cfg.imgsz < 32:
        raise InputError(f"--imgsz {cfg.imgsz}: use a multiple of 32")
    if cfg.epochs < 1:
        raise InputError(f"--epochs {cfg.epochs}: at least 1")
    if not Path(cfg.data).exists():
        raise InputError(f"--data {cfg.data}: not found")
