"""The parts a training run is built from: the model for a data set's classes (from scratch or fine-tuned), the
training transforms, the seeds, the memory layout and the pre-processing a trained model keeps."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolonas.arch.blocks import QARepVGGBlock, RepVGGBlock
from yolonas.arch.model import YoloNAS, build
from yolonas.arch.spec import BUILTIN
from yolonas.data.loader import memory_available, training_transforms
from yolonas.data.transforms import Compose
from yolonas.preprocess import Preprocessing
from yolonas.train.config import AugmentationConfig, ModelConfig
from yolonas.weights import load

logger = logging.getLogger(__name__)


def build_model(cfg: ModelConfig, class_names: list[str], log: Callable[[str], None] = logger.info) -> YoloNAS:
    """The model to train for `class_names`: a spec from scratch, or loaded weights with the classes adapted."""
    name = cfg.name
    if name in BUILTIN and cfg.pretrained is None:
        return build(BUILTIN[name](), class_names=class_names)
    if Path(name).suffix in (".yaml", ".yml"):
        return load(name, class_names=class_names)
    model = load(name, pretrained=cfg.pretrained)
    source = f"{name} ({cfg.pretrained})" if cfg.pretrained else name
    if list(model.class_names) == list(class_names):
        log(f"fine-tuning {source}: its {len(class_names)} classes match the data set's")
    elif model.num_classes == len(class_names) and all(n == str(i) for i, n in enumerate(model.class_names)):
        log(f"fine-tuning {source}: its classes are unnamed; naming them after the data set's {len(class_names)}")
        model.class_names = list(class_names)
    else:
        log(f"fine-tuning {source}: its {model.num_classes} classes differ from the data set's {len(class_names)}; "
            f"replacing the classification layers (everything else is kept)")
        model.replace_classes(list(class_names))
    return model


def freeze_unused(model: nn.Module) -> None:
    """Stop gradients to parameters the training forward never uses: RepVGG blocks' `rbr_reparam` before fusing.

    They exist only so state dicts match super-gradients'; DDP fails on parameters that get no gradient.
    """
    for m in model.modules():
        if isinstance(m, (QARepVGGBlock, RepVGGBlock)) and m.fused is None:
            m.rbr_reparam.requires_grad_(False)


def build_transforms(aug: AugmentationConfig, dataset, image_size: int, keep_crowd: bool = False,
                     processes: int = 1) -> Compose:
    """The training transforms of `aug`: mosaic, affine, mixup, HSV, flip, channel swap, letterbox; the decoded
    images cached in a quarter of the free memory, shared by the `processes` (DDP ranks) of this machine."""
    cache_gb = memory_available() / 4 / max(1, processes) / 2**30
    return training_transforms(dataset, image_size, mosaic=aug.mosaic, mixup=aug.mixup, degrees=aug.degrees,
                               translate=aug.translate, scale=aug.scale, shear=aug.shear, hsv=aug.hsv,
                               hsv_gains=aug.hsv_gains, flip=aug.flip, channel_swap=aug.channel_swap,
                               pad_value=aug.pad_value, keep_crowd=keep_crowd, cache_gb=cache_gb)


def training_preprocessing(image_size: int) -> Preprocessing:
    """What validation and predict use for a model trained at `image_size`: the letterbox the loader ends with."""
    return Preprocessing(image_size=(image_size, image_size), longest_side=None, pad="center", pad_value=114)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
        # warn_only: an op without a deterministic kernel warns instead of stopping a long run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def channels_last(model: nn.Module, device: torch.device) -> torch.memory_format:
    """Lay the network out NHWC for training; returns the layout its input images should have.

    NHWC makes a CPU training step of yolo_nas_s 1.1-1.15x faster (oneDNN skips its reorders) and a CUDA step with
    AMP 1.2-1.5x. On the CPU the stem and the images stay NCHW: oneDNN's backward of a stride-2 1x1 convolution
    over fewer than 16 channels in NHWC (the stem's 1x1 branch over RGB) kills the process (torch 2.14.1).
    """
    model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        return torch.channels_last
    stem = getattr(getattr(model, "backbone", None), "stem", None)
    if stem is not None:
        stem.to(memory_format=torch.contiguous_format)
    return torch.contiguous_format
