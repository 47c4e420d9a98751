"""Training: train, distill and pseudo-label."""

from __future__ import annotations

from typing import Annotated

import typer

from yolonas.cli.options import (
    AT_LEAST_0,
    DEFAULT_RECIPE,
    UNIT,
    BatchOpt,
    DataOpt,
    DeviceOpt,
    EpochsOpt,
    ImagesOpt,
    JsonOpt,
    LrOpt,
    NameOpt,
    OptionError,
    PretrainedOpt,
    RecipeOpt,
    ResumeOpt,
    TrainBatchOpt,
    TrainImgszOpt,
    TrainSeedOpt,
    WorkersOpt,
    _choice,
    _rule,
)
from yolonas.cli.shared import _device, _emit_json, _say, _show_progress


def train(
    data: DataOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Overrides the recipe's model.")] = None,
    recipe: RecipeOpt = DEFAULT_RECIPE,
    images: ImagesOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch: TrainBatchOpt = None,
    imgsz: TrainImgszOpt = None,
    workers: WorkersOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    seed: TrainSeedOpt = None,
    resume: ResumeOpt = None,
    name: NameOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any field: --set optimizer.lr=1e-3")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Train (or fine-tune, or resume) a detector; the run lands in runs/train/<name>/."""
    overrides = {"data": data, "images": images, "model": model, "epochs": epochs, "lr": lr, "batch": batch,
                 "imgsz": imgsz, "workers": workers, "pretrained": pretrained, "device": device, "seed": seed,
                 "name": name}
    _run_training(recipe, overrides, resume, set_, json_out)


def _run_training(recipe: str, overrides: dict, resume: str | None, set_: list[str] | None,
                  json_out: str | None) -> None:
    """`train` and `distill`: the recipe, then the flags, then --set items; train; print the result JSON."""
    from yolonas.errors import Terminated  # noqa: PLC0415
    from yolonas.train import apply_overrides, load_recipe  # noqa: PLC0415
    from yolonas.train import train as run_training  # noqa: PLC0415
    from yolonas.train.checkpoint import resumed_recipe  # noqa: PLC0415
    from yolonas.train.runlog import finished_lines  # noqa: PLC0415

    _show_progress("yolonas.train")  # the run's description, estimate and per-epoch lines
    if resume is not None:
        overrides["resume"] = True if resume.lower() == "true" else resume
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise OptionError(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = value
    cfg = apply_overrides(load_recipe(recipe), overrides)
    if resume is not None:  # the run's own settings, then only what this command states again
        cfg = apply_overrides(resumed_recipe(cfg), overrides)
    try:
        result = run_training(cfg)
    except Terminated:  # the run said where it stands; exit as a process killed by SIGTERM would (Ctrl-C: 130)
        raise typer.Exit(143) from None
    if result.run_dir is not None:  # DDP ranks other than 0 write nothing
        _say("\n".join(finished_lines(result, cfg)))
    _emit_json({"run_dir": str(result.run_dir), "best": str(result.best), "last": str(result.last),
                "epochs": result.epochs, "best_epoch": result.best_epoch, "metrics": result.metrics}, json_out)


def distill(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="The teacher checkpoint (same classes).")],
    data: DataOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The student (overrides the recipe's).")] = None,
    recipe: RecipeOpt = DEFAULT_RECIPE,
    images: ImagesOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch: TrainBatchOpt = None,
    imgsz: TrainImgszOpt = None,
    workers: WorkersOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    seed: TrainSeedOpt = None,
    cls_weight: Annotated[float | None, typer.Option("--cls-weight", help="Class-score KD weight, 0 or more.",
                                                     callback=AT_LEAST_0)] = None,
    box_weight: Annotated[float | None, typer.Option("--box-weight", help="Box-distribution KD weight, 0 or more.",
                                                     callback=AT_LEAST_0)] = None,
    feat_weight: Annotated[float | None, typer.Option("--feat-weight", help="Neck feature KD weight, 0 or more.",
                                                      callback=AT_LEAST_0)] = None,
    resume: ResumeOpt = None,
    name: NameOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any field: --set distill.box_temperature=5")
                    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Train a student guided by a teacher (KD on class scores, box distributions, optionally neck features)."""
    overrides = {"data": data, "images": images, "model": model, "epochs": epochs, "lr": lr, "batch": batch,
                 "imgsz": imgsz, "workers": workers, "pretrained": pretrained, "device": device, "seed": seed,
                 "name": name, "distill.teacher": teacher, "distill.cls_weight": cls_weight,
                 "distill.box_weight": box_weight, "distill.feat_weight": feat_weight}
    _run_training(recipe, overrides, resume, set_, json_out)


def _class_threshold(item: str) -> tuple[str, float]:
    """A pseudo-label --conf item, 0.5 or fish=0.6, as ('default', 0.5) or ('fish', 0.6); ValueError otherwise."""
    key, sep, value = item.rpartition("=")
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError(item)
    return (key.strip() if sep else "default"), number


def _is_class_threshold(item: str) -> bool:
    try:
        return bool(_class_threshold(item))
    except ValueError:
        return False


def _class_thresholds(conf: list[str] | None) -> dict[str, float]:
    """pseudo-label's --conf items (0.5, fish=0.6) as {'default': 0.5, 'fish': 0.6}."""
    return dict(_class_threshold(item) for item in conf or ["0.5"])


def pseudo_label_cmd(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="The labelling model (a checkpoint).")],
    source: Annotated[str, typer.Option("--source", "-s", help="A folder of unlabelled images.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The data set folder to write.")],
    conf: Annotated[list[str] | None, typer.Option(
        "--conf", help="Label threshold in [0, 1]: one number, or class=value (repeatable; others keep the "
        "number).", callback=_rule(_is_class_threshold, "give a number in [0, 1], or class=number"))] = None,
    ignore_below: Annotated[float, typer.Option("--ignore-below", help="Scores from here up to the threshold "
                                                "become ignore regions; in [0, 1].", callback=UNIT)] = 0.2,
    fmt: Annotated[str, typer.Option("--format", help="yolo or coco.", callback=_choice("yolo", "coco"))] = "yolo",
    batch: BatchOpt = 8,
    device: DeviceOpt = "auto",
    copy: Annotated[bool, typer.Option("--copy", help="Copy the images instead of linking them.")] = False,
    json_out: JsonOpt = None,
) -> None:
    """Label a folder of images with a teacher: confident boxes become labels, a band below them ignore regions."""
    from yolonas.train.pseudo import pseudo_label  # noqa: PLC0415

    _show_progress("yolonas.train")  # the labelling report table
    report = pseudo_label(teacher, source, output, threshold=_class_thresholds(conf), ignore_below=ignore_below,
                          fmt=fmt, batch_size=batch, device=_device(device), link=not copy)
    _emit_json(report.to_dict(), json_out)
