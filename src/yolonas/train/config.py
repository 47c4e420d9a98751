"""Training configuration: dataclasses with defaults, recipes as YAML mapping 1:1 onto them, CLI overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from yolonas.arch.spec import plain_types
from yolonas.data.tiles import check_tiling
from yolonas.errors import InputError


@dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    path: str = ""  # a data.yaml, a COCO JSON (with `images`) or a dataset folder
    images: str | None = None  # the images folder of a COCO JSON, when its file names are not enough
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 640  # square training and validation input, a multiple of 32
    batch_size: int = 16  # per process (per GPU under DDP)
    val_batch_size: int = 16
    workers: int = 4
    cache: bool = False  # keep decoded images in RAM
    # Crowd boxes (COCO iscrowd, a pseudo-label set's ignore band) as regions without background loss, rather than
    # dropped as before: anchors inside one that no real box claims are neither positives nor negatives.
    ignore_crowd: bool = True
    # Small objects in large images: train on tiles of `tile` original pixels (each letterboxed to image_size) and
    # validate with tiled inference at the same size; 0 trains and validates on whole images.
    tile: int = 0
    tile_overlap: float = 0.2  # fraction of the tile shared with its neighbour
    tile_empty: float = 0.1  # fraction of the tiles without a box kept for training (a fixed draw)

    def __post_init__(self) -> None:
        if self.tile:
            check_tiling(self.tile, self.tile_overlap)
        if not 0 <= self.tile_empty <= 1:
            raise InputError(f"data.tile_empty {self.tile_empty}: give the fraction of empty tiles kept, in [0, 1]")
        if self.image_size < 32 or self.image_size % 32:
            raise InputError(f"image size {self.image_size}: give a positive multiple of 32 (320, 416, 640)")
        for name in ("batch_size", "val_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"data.{name} {getattr(self, name)}: give at least 1 image per step")
        if self.workers < 0:
            raise InputError(f"data.workers {self.workers}: give 0 (load in the main process) or more")


@dataclass
class ModelConfig:
    """The model to train: a published name, a spec YAML or a checkpoint path, optionally pretrained."""

    name: str = "yolo_nas_s"
    pretrained: str | None = None  # "coco": start from the published weights of `name`


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-4
    weight_decay: float = 1e-5
    momentum: float = 0.9  # SGD momentum, or AdamW's beta1
    beta2: float = 0.999
    nesterov: bool = True
    zero_wd_bias_bn: bool = True  # no weight decay on biases, BatchNorm weights and bottleneck alphas
    clip_grad_norm: float | None = None  # max gradient L2 norm; None = no clipping


@dataclass
class ScheduleConfig:
    epochs: int = 300
    warmup_steps: int = 1000  # linear warm-up by optimizer steps ...
    warmup_epochs: float = 0.0  # ... or by epochs (used when > 0)
    warmup_lr: float = 1e-6  # learning rate at step 0
    final_lr_ratio: float = 0.1  # cosine ends at lr * final_lr_ratio
    close_mosaic_epochs: int = 0  # mosaic off for the last N epochs

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs {self.epochs}: train at least 1 epoch")
        if self.close_mosaic_epochs < 0 or self.warmup_steps < 0 or self.warmup_epochs < 0:
            raise InputError("schedule: close_mosaic_epochs, warmup_steps and warmup_epochs cannot be negative")


@dataclass
class AugmentationConfig:
    """Training transforms, in this order: mosaic, affine, mixup, HSV, flip, RGB/BGR swap, letterbox.

    With mosaic 0 each image is resized to fit first; translate 0, scale [1, 1] (and no rotation or shear) turns
    the affine step into a plain centred letterbox.
    """

    mosaic: float = 0.0  # probability
    mixup: float = 0.5  # probability (switched off with mosaic for the last close_mosaic_epochs)
    degrees: float = 0.0
    translate: float = 0.25
    scale: tuple[float, float] = (0.5, 1.5)
    shear: float = 0.0
    hsv: float = 0.5  # probability
    hsv_gains: tuple[float, float, float] = (18, 30, 30)  # hue, saturation, value offsets in OpenCV HSV units
    flip: float = 0.5
    channel_swap: float = 0.5  # RGB <-> BGR probability
    pad_value: int = 114  # letterbox, mosaic and affine border


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.9997
    threshold: bool = True  # decay_t = min(decay, (1 + t) / (10 + t)), super-gradients' "threshold" schedule


@dataclass
class LossConfig:
    use_varifocal: bool = True
    cls_weight: float = 1.0
    iou_weight: float = 2.5
    dfl_weight: float = 0.5
    atss_warmup_epochs: int = 0  # ATSS assigner for the first N epochs, then task-aligned


@dataclass
class DistillConfig:
    """Knowledge distillation from a trained teacher (off while `teacher` is None); see train/distill.py."""

    teacher: str | None = None  # a checkpoint (or anything yolonas.load takes) with the data set's classes
    cls_weight: float = 1.0  # per-class Bernoulli KL on the sigmoid class scores
    box_weight: float = 1.0  # KL between the four DFL side distributions
    feat_weight: float = 0.0  # channel-wise KD on the neck outputs through 1x1 align convs; 0 = off
    cls_temperature: float = 2.0
    box_temperature: float = 10.0  # Localization Distillation's T
    feat_temperature: float = 1.0
    final_weight_ratio: float = 0.1  # the KD weight decays from 1 to this on a cosine over the run's steps


@dataclass
class RunConfig:
    name: str = "exp"
    project: str = "runs/train"
    exist_ok: bool = False  # reuse runs/train/<name> instead of making <name>2, <name>3, ...
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    amp: bool = True  # mixed precision on CUDA; on the CPU only when amp_dtype is bf16
    # auto: bf16 where the GPU supports it, else fp16 + GradScaler, and fp32 on the CPU. bf16 on the CPU is opt-in:
    # about 1.7x faster where it has AMX / AVX512-BF16, much slower where it does not.
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"
    seed: int = 0
    deterministic: bool = False
    val_every: int = 1  # validate every N epochs (and always after the last); 0 = only after the last
    best_metric: str = "AP"  # the Metrics field that picks best.pt
    sync_bn: bool = False  # SyncBatchNorm under DDP
    channels_last: bool = True  # NHWC network: steps 1.1-1.15x faster on CPU (stem NCHW), 1.2-1.5x with AMP on an H100
    resume: bool | str = False  # True: runs/train/<name>/weights/last.pt; or a path to a last.pt
    plots: bool = True
    verbose: bool = True  # progress bar and per-epoch lines


@dataclass
class TrainConfig:
    """Everything a training run needs; a recipe YAML holds the same sections and keys."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        """The config as plain Python types (lists for tuples), for YAML files and checkpoints."""
        return plain_types(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> TrainConfig:
        """Inverse of `to_dict`; unknown sections or keys raise."""
        return _from_dict(cls, d, source)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


# CLI flags for the fields people change most; any other field is reachable by its dotted path.
ALIASES = {
    "data": "data.path",
    "images": "data.images",
    "imgsz": "data.image_size",
    "image_size": "data.image_size",
    "batch": "data.batch_size",
    "batch_size": "data.batch_size",
    "workers": "data.workers",
    "model": "model.name",
    "pretrained": "model.pretrained",
    "optimizer": "optimizer.name",
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "epochs": "schedule.epochs",
    "warmup_epochs": "schedule.warmup_epochs",
    "warmup_steps": "schedule.warmup_steps",
    "close_mosaic": "schedule.close_mosaic_epochs",
    "mosaic": "augmentation.mosaic",
    "mixup": "augmentation.mixup",
    "name": "run.name",
    "project": "run.project",
    "exist_ok": "run.exist_ok",
    "device": "run.device",
    "amp": "run.amp",
    "amp_dtype": "run.amp_dtype",
    "seed": "run.seed",
    "deterministic": "run.deterministic",
    "resume": "run.resume",
    "sync_bn": "run.sync_bn",
    "val_every": "run.val_every",
    "teacher": "distill.teacher",
}

def recipe_names() -> list[str]:
    """The recipes shipped with the package."""
    folder = resources.files("yolonas") / "recipes"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path) -> TrainConfig:
    """A `TrainConfig` from a packaged recipe name (`finetune`, `cpu_smoke`, ...) or a recipe YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, source = path.read_text(), str(path)
    else:
        packaged = resources.files("yolonas") / "recipes" / f"{name_or_path}.yaml"
        if not packaged.is_file():
            raise InputError(f"{name_or_path}: no such recipe file, and not a packaged recipe "
                             f"({', '.join(recipe_names())})")
        text, source = packaged.read_text(), f"recipe {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe is a mapping of sections (data, model, optimizer, ...)")
    return TrainConfig.from_dict(data, source)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of `cfg` with fields replaced: keys are dotted paths (`optimizer.lr`) or aliases (`lr`).

    Values may be strings (from a command line): they are parsed as YAML and converted to the field's type.
    `None` values are skipped, so unset CLI options can be passed straight through; the string "none" sets None.
    """
    d = cfg.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        dotted = ALIASES.get(key, key).replace("-", "_")
        parts = dotted.split(".")
        if len(parts) != 2 or parts[0] not in d or parts[1] not in d[parts[0]]:
            raise InputError(f"unknown training option {key!r}; use a section.field path such as optimizer.lr, "
                             f"or one of: {', '.join(sorted(ALIASES))}")
        if isinstance(value, str) and value.strip().lower() in ("none", "null"):
            value = None  # `--pretrained none`: an explicit None, unlike an unset option
        elif isinstance(value, str) and parts[1] not in ("path", "images", "name", "project", "device", "teacher"):
            value = yaml.safe_load(value)
        d[parts[0]][parts[1]] = value
    return TrainConfig.from_dict(d, "overrides")


def _from_dict(cls, d: dict, source: str):
    if not isinstance(d, dict):
        raise InputError(f"{source}: expected a mapping for {cls.__name__}, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in names]
    if unknown:
        raise InputError(f"{source}: unknown key {unknown[0]!r} in {cls.__name__} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in d.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value or {}, f"{source}: {key}")
        else:
            kwargs[key] = _coerce(value, hint, f"{source}: {cls.__name__}.{key}")
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Check `value` against a field's type hint, converting lists to tuples and ints to floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if errors else f"{where}: {value!r} is not allowed")
    if origin is Literal:
        if value not in args:
            raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if hint in (int, str, bool, float):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise InputError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value
