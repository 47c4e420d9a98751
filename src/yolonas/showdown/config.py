"""What a showdown call runs: the model names and their families, and the settings the CLI flags fill."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from yolonas.errors import InputError
from yolonas.train.config import load_recipe

# Every model a showdown accepts, by family, smallest first (the table's order). YOLO-NAS is ours and trains in this
# process; the others are Ultralytics' and train in its venv from `<model>.yaml`, which names the scale.
FAMILIES: dict[str, tuple[str, ...]] = {
    "YOLO-NAS": ("yolo_nas_tiny", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l"),
    "YOLOv8": ("yolov8n", "yolov8s", "yolov8m", "yolov8l"),
    "YOLO11": ("yolo11n", "yolo11s", "yolo11m", "yolo11l"),
    "YOLO26": ("yolo26n", "yolo26s", "yolo26m", "yolo26l"),
}
OUR_FAMILY = "YOLO-NAS"
# Families whose head is end-to-end (one-to-one, NMS-free): scored from that head's output as Ultralytics' val gives
# it with nms=False (top max_det by score, no NMS), exported with the same head.
NMS_FREE = ("YOLO26",)
OURS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
PEERS = tuple(m for fam, names in FAMILIES.items() if fam != OUR_FAMILY for m in names if not m.endswith("n"))
# Accepted, but not a published model: the table marks it.
TEST_MODELS = ("yolo_nas_tiny",)
DEFAULT_MODELS = ("yolo_nas_s", "yolov8s", "yolo11s", "yolo26s")
# The AP difference under which two one-seed results are a tie: the spread of one-seed AP measured on aquarium
# (1.3 points). With --seeds 2 or more, the spread measured over the seeds replaces it.
DEFAULT_NOISE = 0.013
# --recipe auto: ours trains as our own recipe for the hardware does (the peers as Ultralytics' defaults do there).
CPU_RECIPE = "cpu_s320"
GPU_RECIPE = "scratch_small_data"


def on_cuda(device: str) -> bool:
    """Whether --device trains on a GPU: cuda, cuda:N, or auto where torch sees one."""
    if device == "auto":
        import torch  # noqa: PLC0415 - only for auto, so that reading a config needs no torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def default_workers() -> int:
    """Loader processes per training: up to 4, and no more than the CPUs this process may use (torch warns about
    more: two warnings per training on a 2-CPU machine)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cpus)


def family(model: str) -> str:
    """The family of a model name ('YOLO-NAS', 'YOLOv8', 'YOLO11', 'YOLO26'); InputError for an unknown one."""
    for fam, names in FAMILIES.items():
        if model in names:
            return fam
    known = ", ".join(m for names in FAMILIES.values() for m in names)
    raise InputError(f"--models: unknown model {model!r}; choose from {known}")


def is_ours(model: str) -> bool:
    """True for our YOLO-NAS models (trained here), False for Ultralytics' (trained by the child)."""
    return family(model) == OUR_FAMILY


def nms_free(model: str) -> bool:
    """True for a model scored and timed from its end-to-end (NMS-free) head."""
    return family(model) in NMS_FREE


def dataset_names(paths: list[str]) -> list[str]:
    """A folder name per data set: a data.yaml's parent folder, else the file's stem; made unique with -2, -3."""
    names = []
    for p in paths:
        path = Path(p)
        base = path.parent.name if path.name in ("data.yaml", "data.yml") else (path.stem or path.name)
        name, k = base or "data", 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


@dataclass
class ShowdownConfig:
    """Everything one showdown call needs; the CLI flags map 1:1 onto these fields."""

    data: str  # one data set, or several comma-separated (one sub-run each)
    models: tuple[str, ...] = DEFAULT_MODELS
    epochs: int = 100  # with budget_minutes or minutes: the ceiling
    budget_minutes: float | None = None  # scale epochs so the whole call fits; --epochs is then the ceiling
    minutes: float | None = None  # each model's training wall-clock: its epochs from a probe of its own (probe.py)
    imgsz: int = 640
    batch: int = 16
    device: str = "auto"
    backend: str = "onnxruntime"
    int8: bool = True
    calib_images: int = 64
    seed: int = 0
    seeds: int = 1  # runs per model: seeds seed, seed + 1, ...
    tie_noise: float = DEFAULT_NOISE  # the one-seed tie threshold (AP, 0..1)
    workers: int = field(default_factory=default_workers)
    threads: int | None = None  # CPU training threads, both families, and the timing's (default: torch's)
    latency_runs: int = 20
    train_split: str = "train"
    split: str = "val"
    ultralytics_python: str | None = None
    skip_missing_peers: bool = False  # run ours when Ultralytics is missing (its rows say so) instead of failing
    name: str = "exp"
    project: str = "runs/showdown"
    recipe: str = "auto"  # ours: a recipe name or YAML; auto: cpu_s320 on a CPU, scratch_small_data on a GPU
    force: bool = False  # redo models whose <model>_seed<k>.json exists
    stop_after_epochs: int | None = None  # stop each training once it has saved this epoch (the next call resumes)
    clock: str = "wall"  # training time: wall-clock; cpu: the training process's CPU seconds (tests, shared machines)
    command: str = ""
    extra: dict = field(default_factory=dict)

    def datasets(self) -> list[str]:
        """The data sets of --data, in order."""
        return [d.strip() for d in str(self.data).split(",") if d.strip()]

    def seed_list(self) -> list[int]:
        """The seeds each model runs with."""
        return [self.seed + k for k in range(self.seeds)]

    def our_recipe(self) -> str:
        """The recipe our models train with: --recipe, where `auto` is our CPU recipe (cpu_s320: bf16 autocast where
        the CPU has native bf16) when training runs on the CPU, else scratch_small_data."""
        if self.recipe != "auto":
            return self.recipe
        return GPU_RECIPE if on_cuda(self.device) else CPU_RECIPE

    def settings(self) -> dict:
        """The settings a row must share with the others to belong in the same table (the seed is the row's own)."""
        return {"data": str(Path(self.data).resolve()), "imgsz": self.imgsz, "batch": self.batch,
                "split": self.split, "train_split": self.train_split, "backend": self.backend,
                "recipe": self.our_recipe(), "minutes": self.minutes}


def check_config(cfg: ShowdownConfig) -> None:
    """InputError, in one line, for a config the showdown cannot run; before any model starts."""
    if not cfg.models:
        raise InputError("--models: name at least one model")
    for model in cfg.models:
        family(model)
    if cfg.backend != "onnxruntime":
        raise InputError(f"--backend {cfg.backend}: the showdown times every fp32 ONNX file with onnxruntime (and "
                         "every INT8 file with OpenVINO, each family's fastest INT8 path on the CPU)")
    if cfg.imgsz % 32 or cfg.imgsz < 32:
        raise InputError(f"--imgsz {cfg.imgsz}: use a multiple of 32")
    if cfg.epochs < 1:
        raise InputError(f"--epochs {cfg.epochs}: at least 1")
    if cfg.budget_minutes is not None and cfg.budget_minutes <= 0:
        raise InputError(f"--budget {cfg.budget_minutes:g}: give the minutes for the whole call, more than 0")
    if cfg.minutes is not None and cfg.minutes <= 0:
        raise InputError(f"--minutes {cfg.minutes:g}: give each model's training minutes, more than 0")
    if cfg.minutes is not None and cfg.budget_minutes is not None:
        raise InputError("--minutes and --budget: give one (--minutes: each model's training time; --budget: the "
                         "whole call's, split into equal epochs)")
    if cfg.seeds < 1:
        raise InputError(f"--seeds {cfg.seeds}: at least 1")
    if cfg.clock not in ("wall", "cpu"):
        raise InputError(f"clock {cfg.clock!r}: use wall or cpu")
    if cfg.stop_after_epochs is not None and cfg.stop_after_epochs < 1:
        raise InputError(f"stop_after_epochs {cfg.stop_after_epochs}: at least 1")
    if any(is_ours(m) for m in cfg.models):
        load_recipe(cfg.our_recipe())  # an unknown recipe fails now, in one line, not after the peers trained
    if not cfg.datasets():
        raise InputError("--data: name at least one data set")
    for data in cfg.datasets():
        if not Path(data).exists():
            raise InputError(f"--data {data}: not found")
