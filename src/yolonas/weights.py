"""Checkpoint files: our self-describing format, super-gradients imports, and verified downloads."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from yolonas.arch.model import YoloNAS, build
from yolonas.arch.spec import BUILTIN, PUBLISHED, ArchSpec
from yolonas.errors import CheckpointError
from yolonas.preprocess import COCO_PREPROCESSING, Preprocessing

log = logging.getLogger(__name__)

FORMAT = "yolonas-checkpoint"
FORMAT_VERSION = 1

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]


@dataclass(frozen=True)
class PretrainedFile:
    """A published weights file: where to fetch it and the SHA-256 that it must have."""

    filename: str
    sha256: str


PRETRAINED = {
    ("yolo_nas_s", "coco"): PretrainedFile(
        "yolo_nas_s_coco.pth", "c1b1d9148ab8ae5d5984699547e850955ff9efccaf568c67b3d605acb4bfe1cb"),
    ("yolo_nas_m", "coco"): PretrainedFile(
        "yolo_nas_m_coco.pth", "b194fc7fa196f76161c6356558bedf04fb99a62325a74a36a4bec3ca8ba48250"),
    ("yolo_nas_l", "coco"): PretrainedFile(
        "yolo_nas_l_coco.pth", "91a06beaa1ce1a651d6691e3198061da996eafc8890503238dedacbd4c392a32"),
}
# Deci's own host is gone (404 since 2024); this mirror is the one LibreYOLO pins. Override with
# YOLONAS_WEIGHTS_URL (a base URL the file name is appended to) when you host the files yourself.
DEFAULT_WEIGHTS_URL = "https://d2gjn4b69gu75n.cloudfront.net/models/"

LICENSE_NOTICE = (
    "YOLO-NAS pretrained weights are (c) Deci.AI under the YOLO-NAS weights licence: non-commercial use only, "
    "no redistribution; fine-tuning from them inherits the restriction. Training from scratch is unrestricted."
)


def cache_dir() -> Path:
    """Where downloaded weights live: $YOLONAS_CACHE, else ~/.cache/yolonas."""
    return Path(os.environ.get("YOLONAS_CACHE", Path.home() / ".cache" / "yolonas"))


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- our format


def save_checkpoint(model: YoloNAS, path: str | Path, **extra) -> None:
    """Write a self-describing checkpoint: spec, class names, pre-processing, weights, plus `extra` entries.

    Everything in it is tensors and plain Python types, so it loads with `torch.load(weights_only=True)`.
    A fused model's checkpoint records how it was fused ("partial" or "full"); loading re-fuses the same way.
    """
    fusion = getattr(model, "fusion", None) if model.is_fused else None
    if fusion is not None:
        extra = {**extra, "fused": fusion}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": model.spec.to_dict(),
        "class_names": list(model.class_names),
        "preprocessing": model.preprocessing.to_dict(),
        "state_dict": state,
        **extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written checkpoint


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types here; the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None


def load_state_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load `state` into `model` with exact key and shape matching; name the first mismatch in one line."""
    own = model.state_dict()
    for k, v in own.items():
        if k not in state:
            raise CheckpointError(f"{source}: missing key {k!r}; the checkpoint is for another architecture")
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: key {k!r} has shape {list(state[k].shape)}, the model expects "
                                  f"{list(v.shape)}; the checkpoint is for another architecture or class count")
    extra = [k for k in state if k not in own]
    if extra:
        raise CheckpointError(f"{source}: unexpected key {extra[0]!r}; the checkpoint is for another architecture")
    model.load_state_dict(state, strict=True)


def _model_from_ours(ckpt: dict, source: str, num_classes: int | None, use_ema: bool) -> YoloNAS:
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{source}: written by a newer yolonas (format {ckpt['format_version']}); upgrade")
    spec = ArchSpec.from_dict(ckpt["spec"])
    names = ckpt["class_names"]
    model = build(spec, class_names=names, preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]))
    if ckpt.get("fused") in ("partial", "full"):
        model.eval().fuse(partial=ckpt["fused"] == "partial")
    state = ckpt.get("ema_state_dict") if use_ema and ckpt.get("ema_state_dict") else ckpt["state_dict"]
    load_state_strict(model, state, source)
    if num_classes is not None and num_classes != len(names):
        _replace_classes(model, num_classes, source)
    return model


# ----------------------------------------------------------------------------------------- super-gradients


def _sg_state(obj: dict, source: str) -> dict:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: not a super-gradients checkpoint (no state dict inside)")
    for key in ("ema_net", "net"):
        if key in obj and isinstance(obj[key], dict):
            state = obj[key]
            break
    else:
        state = obj
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: not a super-gradients checkpoint (no 'net' or 'ema_net' tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def sg_variant(state: dict, source: str = "checkpoint") -> tuple[str, int]:
    """Read (variant name, class count) from a super-gradients YOLO-NAS state dict's tensor shapes."""
    key = "heads.head1.cls_pred.weight"
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key!r}; not a YOLO-NAS checkpoint")
    num_classes, width = state[key].shape[:2]
    variant = {64: "yolo_nas_s", 96: "yolo_nas_m", 128: "yolo_nas_l"}.get(int(width))
    if variant is None:
        raise CheckpointError(f"{source}: head width {width} matches none of yolo_nas_s/m/l")
    return variant, int(num_classes)


def _read_sg_file(path: Path, trusted: bool) -> dict:
    """Deci's files pickle more than tensors: load them safely, or fully only when their hash is known."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # noqa: BLE001 - torch raises many types here; the user needs one line
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(safe_error))
        if found is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (not a torch file, or damaged)") from None
        if not trusted:
            raise CheckpointError(
                f"{path}: pickles {found.group(1)} beyond tensors and its SHA-256 matches no known file, so it "
                "was not unpickled; re-save its state dict with torch.save(ckpt['net'], path)") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def _is_known_file(path: Path) -> bool:
    digest = sha256_of(path)
    return any(p.sha256 == digest for p in PRETRAINED.values())


def _model_from_sg(obj: dict, source: str, num_classes: int | None, class_names: list[str] | None) -> YoloNAS:
    state = _sg_state(obj, source)
    variant, n = sg_variant(state, source)
    names = COCO_CLASSES if n == 80 else [str(i) for i in range(n)]
    pp = obj.get("processing_params") if isinstance(obj, dict) else None
    if isinstance(pp, dict) and isinstance(pp.get("class_names"), (list, tuple)) and len(pp["class_names"]) == n:
        names = [str(c) for c in pp["class_names"]]
    model = build(PUBLISHED[variant](), class_names=names,
                  preprocessing=Preprocessing(**COCO_PREPROCESSING.to_dict()) if n == 80 else None)
    load_state_strict(model, state, source)
    if class_names is not None:
        if num_classes is None:
            num_classes = len(class_names)
        elif num_classes != len(class_names):
            raise CheckpointError(f"{len(class_names)} class names given for num_classes={num_classes}")
    if num_classes is not None and num_classes != n:
        _replace_classes(model, num_classes, source)
    if class_names is not None:
        model.class_names = list(class_names)
    return model


def _replace_classes(model: YoloNAS, num_classes: int, source: str) -> None:
    log.warning("yolonas: %s has %d classes; replacing the classification layers with %d new ones (the rest of "
                "the weights are kept)", source, model.num_classes, num_classes)
    model.replace_classes([str(i) for i in range(num_classes)])


# ------------------------------------------------------------------------------------------------ download


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` (atomically), checking its SHA-256 when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        if sha256 is not None and (got := sha256_of(tmp)) != sha256:
            raise CheckpointError(f"{url}: SHA-256 {got} does not match the expected {sha256}; file discarded")
        os.replace(tmp, dest)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise CheckpointError(f"{url}: download failed ({e}); fetch the file by hand and pass its path") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def pretrained_path(variant: str, dataset: str = "coco") -> Path:
    """The cached, verified weights file for a published variant, downloading it on first use."""
    entry = PRETRAINED.get((variant, dataset))
    if entry is None:
        known = ", ".join(f"{v}/{d}" for v, d in PRETRAINED)
        raise CheckpointError(f"no pretrained weights for {variant}/{dataset}; known: {known}")
    path = cache_dir() / entry.filename
    if path.is_file() and sha256_of(path) == entry.sha256:
        return path
    base = os.environ.get("YOLONAS_WEIGHTS_URL", DEFAULT_WEIGHTS_URL)
    download(base.rstrip("/") + "/" + entry.filename, path, entry.sha256)
    return path


# ---------------------------------------------------------------------------------------------------- load


def load(
    model: str | Path,
    num_classes: int | None = None,
    pretrained: str | None = None,
    class_names: list[str] | None = None,
    ema: bool = True,
) -> YoloNAS:
    """A model from a published name, a spec YAML, our checkpoint or a super-gradients checkpoint."""
    text = str(model)
    if class_names is not None and num_classes is not None and num_classes != len(class_names):
        raise CheckpointError(f"{len(class_names)} class names given for num_classes={num_classes}")
    if text in PUBLISHED or text == "yolo_nas_tiny":
        if pretrained is None:
            if class_names is None and num_classes in (None, 80):
                class_names = COCO_CLASSES  # the published models are COCO models, even untrained
            if class_names is not None:
                return build(BUILTIN[text](), class_names=class_names)
            return build(BUILTIN[text](), num_classes)
        path = pretrained_path(text, pretrained)
        log.warning("yolonas: %s", LICENSE_NOTICE)
        return _model_from_sg(_read_sg_file(path, trusted=True), str(path), num_classes, class_names)
    path = Path(model)
    if not path.exists():
        known = ", ".join(PUBLISHED)
        raise CheckpointError(f"{model}: no such file, and not a published model name ({known})")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; name a checkpoint file inside it (e.g. weights/best.pt)")
    if path.suffix in (".yaml", ".yml"):
        try:
            spec = ArchSpec.from_yaml(path)
        except (TypeError, ValueError, KeyError, AttributeError, yaml.YAMLError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"{path}: not a valid architecture spec ({first})") from None
        if class_names is not None:
            return build(spec, class_names=class_names)
        return build(spec, num_classes if num_classes is not None else 80)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a super-gradients file with pickled objects, or not a checkpoint
        ckpt = _read_sg_file(path, trusted=_is_known_file(path))
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        model_ = _model_from_ours(ckpt, str(path), num_classes, ema)
        if class_names is not None:
            if len(class_names) != model_.num_classes:
                raise CheckpointError(f"{path}: {len(class_names)} class names given for a model of "
                                      f"{model_.num_classes} classes; pass num_classes too to replace the head")
            model_.class_names = list(class_names)
        return model_
    return _model_from_sg(ckpt, str(path), num_classes, class_names)
