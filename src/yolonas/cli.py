"""The `yolonas` command: thin sub-commands that parse flags and call the library."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from yolonas.errors import YolonasError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="YOLO-NAS: train, evaluate, predict, export, quantize and search.")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Published name, spec YAML or checkpoint.")]
JsonOpt = Annotated[str | None, typer.Option("--json", help="Write the result as JSON to this path ('-' = stdout).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run folder under runs/<task>/ (default: next free)")]

DEFAULT_RECIPE = "scratch_small_data"


def _recipe_default(section: str, key: str) -> str:
    """' (default recipe: V)' for help texts: the default recipe's value, read from its YAML (no torch import)."""
    from importlib import resources  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    text = (resources.files("yolonas") / "recipes" / f"{DEFAULT_RECIPE}.yaml").read_text()
    value = (yaml.safe_load(text).get(section) or {}).get(key)
    return f" (default recipe: {value})"


# The training flags `train` and `distill` share; each overrides the recipe's field when given, and the help shows
# the default recipe's value.
DataOpt = Annotated[str | None, typer.Option("--data", "-d", help="data.yaml, COCO JSON or dataset folder.")]
RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="scratch_small_data, cpu_s320 (yolo_nas_s on a CPU), "
                                        "quickstart, finetune, coco_yolo_nas_s, cpu_smoke, or a recipe YAML.")]
ImagesOpt = Annotated[str | None, typer.Option("--images", help="Images folder of a COCO JSON.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Epochs." + _recipe_default("schedule", "epochs"))]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate." + _recipe_default("optimizer", "lr"))]
BatchOpt = Annotated[int | None, typer.Option("--batch", help="Images per step and process." +
                                              _recipe_default("data", "batch_size"))]
ImgszOpt = Annotated[int | None, typer.Option("--imgsz", help="Square input size." +
                                              _recipe_default("data", "image_size"))]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Loader processes." +
                                                _recipe_default("data", "workers"))]
PretrainedOpt = Annotated[str | None, typer.Option("--pretrained", help="'coco' or 'none'." +
                                                   _recipe_default("model", "pretrained"))]
TrainDeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N (default: auto).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: 0).")]
TileOpt = Annotated[int, typer.Option("--tile", help="Tile size in original pixels (a multiple of 32): run "
                                       "overlapping tiles, each at the input size; for small objects in large "
                                       "images. 0 = whole images.")]
OverlapOpt = Annotated[float | None, typer.Option("--overlap", help="With --tile: the fraction of a tile shared with "
                                                  "its neighbour, in [0, 1) (default 0.2).")]
TileWholeOpt = Annotated[bool, typer.Option("--tile-whole/--no-tile-whole", help="With --tile: also run the whole "
                                            "image, for large objects.")]
TileMergeOpt = Annotated[str, typer.Option("--tile-merge", help="With --tile: nms (keep the best box), or greedynmm "
                                           "(merge matched boxes into their union, SAHI's default).")]
ResumeOpt = Annotated[str | None, typer.Option("--resume", help="'true' (this run's last.pt) or a last.pt.")]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also the library's progress messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """YOLO-NAS: train, evaluate, predict, export, quantize and search."""
    _setup_logging(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def _setup_logging(level: int) -> None:
    """The library's messages (logging) on stderr as plain lines, once per process; third-party noise off."""
    logger = logging.getLogger("yolonas")
    logger.setLevel(level)
    if not any(getattr(h, "_yolonas", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._yolonas = True
        logger.addHandler(handler)


def _show_progress(name: str) -> None:
    """A long command's progress, logged by `name` at INFO, shows on stderr unless -q."""
    shown = logging.getLogger("yolonas").level <= logging.WARNING
    logging.getLogger(name).setLevel(logging.INFO if shown else logging.NOTSET)


_CREATED: list[Path] = []  # run folders made by this command: removed again when it fails and leaves them empty


def _emit_json(result: dict, target: str | None) -> None:
    if target is None:
        return
    text = json.dumps(result, indent=2)
    if target == "-":
        print(text)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")


def run_dir(task: str, name: str | None) -> Path:
    """runs/<task>/<name>, or the next free runs/<task>/expN when no name is given."""
    from yolonas.train.trainer import run_folder  # noqa: PLC0415 - keep `yolonas --help` fast

    path = run_folder(Path("runs") / task, name, exist_ok=name is not None)
    if not path.exists():
        _CREATED.append(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="A published name, a spec YAML or a checkpoint.")] = "yolo_nas_s",
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Class count (default: its own).")] = None,
    imgsz: Annotated[int, typer.Option("--imgsz", help="Square input size for GFLOPs.")] = 640,
    json_out: JsonOpt = None,
) -> None:
    """Parameters (unfused and fused), GFLOPs and state_dict entries, per part."""
    from yolonas.arch.summary import summarize  # noqa: PLC0415 - keep `yolonas --help` fast
    from yolonas.weights import load  # noqa: PLC0415

    result = summarize(load(model, num_classes=num_classes), imgsz)
    if json_out != "-":
        _print_info(result)
    _emit_json(result, json_out)


def _print_info(r: dict) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"{r['name']}  ({r['num_classes']} classes, {r['imgsz']}x{r['imgsz']})")
    for col in ("part", "params", "params fused", "GFLOPs", "GFLOPs fused"):
        t.add_column(col, justify="right" if col != "part" else "left")
    for part in ("backbone", "neck", "heads", "total"):
        p = r["parts"][part] if part != "total" else r
        t.add_row(part, f"{p['params'] / 1e6:.3f}M", f"{p['params_fused'] / 1e6:.3f}M",
                  f"{p['gflops']:.2f}", f"{p['gflops_fused']:.2f}")
    Console().print(t)
    print(f"state_dict entries: {r['state_dict_entries']}  (of which rbr_reparam placeholders: "
          f"{r['rbr_reparam_params'] / 1e6:.3f}M params)")


def _model_arg(model: str | None, weights: str | None) -> str:
    """The one model that --weights or --model names (a published name, a spec YAML, a checkpoint or, where the
    command runs exported files, a .onnx / .xml / .engine)."""
    from yolonas.errors import InputError  # noqa: PLC0415

    if model and weights and model != weights:
        raise InputError(f"--model {model} and --weights {weights} name two models; give one")
    if not (model or weights):
        raise InputError("no model given: pass --weights best.pt (or --model yolo_nas_s for untrained weights)")
    return weights or model


def _tiles(tile: int, overlap: float | None, whole: bool, merge: str):
    """The TileConfig of --tile/--overlap/--tile-whole/--tile-merge, or None without --tile."""
    from yolonas.errors import InputError  # noqa: PLC0415
    from yolonas.infer.tiling import TileConfig  # noqa: PLC0415

    if not tile:
        if overlap is not None or whole or merge != "nms":
            raise InputError("--overlap, --tile-whole and --tile-merge need --tile SIZE")
        return None
    return TileConfig(tile, 0.2 if overlap is None else overlap, whole_image=whole, merge=merge)


def _open(model: str | None, weights: str | None, *, imgsz: int | None, device: str, half: bool, nms, tiles,
          batch: int):
    """predict and val: the Predictor of the model (a checkpoint, name or exported file) via `open_predictor`."""
    from yolonas.deploy.open import open_predictor  # noqa: PLC0415

    return open_predictor(_model_arg(model, weights), imgsz=imgsz, device=device, half=half, nms=nms, tiles=tiles,
                          batch=batch)


@app.command()
def predict(
    source: Annotated[str, typer.Option("--source", "-s", help="Image, folder, glob or video.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Published name, spec YAML or checkpoint.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="A checkpoint (same as --model).")] = None,
    conf: Annotated[float, typer.Option("--conf", help="Score threshold.")] = 0.25,
    iou: Annotated[float, typer.Option("--iou", help="NMS IoU threshold.")] = 0.7,
    max_det: Annotated[int, typer.Option("--max-det", help="Detections kept per image.")] = 300,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Square input size (default: the model's).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = 8,
    device: DeviceOpt = "cpu",
    half: Annotated[bool, typer.Option("--half", help="fp16 autocast (CUDA).")] = False,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Write annotated images and videos.")] = True,
    tile: TileOpt = 0,
    overlap: OverlapOpt = None,
    tile_whole: TileWholeOpt = False,
    tile_merge: TileMergeOpt = "nms",
    name: NameOpt = None,
    json_out: JsonOpt = None,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data: one machine or "
                                        "a cluster; needs --output).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="With --engine ray: join this Ray cluster (auto, "
                                                "host:port, ray://host:port); default: a Ray on this machine.")] = None,
    actors: Annotated[int | None, typer.Option("--actors", help="With --engine ray: model copies (default: one per "
                                               "GPU, or the CPUs shared out, 4 threads each).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="With --engine ray: the folder of result "
                                               "files, one row per image.")] = None,
    skip_done: Annotated[bool, typer.Option("--skip-done", help="With --engine ray: resume, running only the "
                                            "images --output has no row for.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="With --engine ray: parquet or jsonl.")] = "parquet",
) -> None:
    """Detect objects in images, folders, globs or videos; write annotated copies and predictions.json (or, with
    --engine ray, one Parquet/JSONL row per image)."""
    from yolonas.infer import ImageSource, NMSConfig  # noqa: PLC0415
    from yolonas.infer.writer import PredictionWriter  # noqa: PLC0415

    tiles = _tiles(tile, overlap, tile_whole, tile_merge)
    nms = NMSConfig(score_threshold=conf, iou_threshold=iou, max_detections=max_det)
    if engine != "local" or address or actors or output or skip_done or fmt != "parquet":
        from yolonas.scale.command import predict_on_ray  # noqa: PLC0415 - Ray is an optional extra

        summary = predict_on_ray(source, _model_arg(model, weights), engine=engine, output=output, address=address,
                                 actors=actors, skip_done=skip_done, fmt=fmt, imgsz=imgsz, batch=batch, device=device,
                                 half=half, nms=nms, tiles=tiles)
        print(summary.describe(), file=sys.stderr)
        return _emit_json(summary.to_json(), json_out)
    predictor = _open(model, weights, imgsz=imgsz, device=device, half=half, nms=nms, tiles=tiles, batch=batch)
    inputs = ImageSource(source)  # a missing path or an empty folder fails before anything is written
    print(f"predict: {predictor.nms.describe()}{f'; {tiles.describe()}' if tiles else ''}", file=sys.stderr)
    out = run_dir("predict", name)
    n_images = n_boxes = 0
    with PredictionWriter(out, save_images=save) as writer:
        for item_name, image, det in predictor.stream(inputs):
            writer.add(item_name, image, det)
            n_images, n_boxes = n_images + 1, n_boxes + len(det)
    skipped = predictor.skipped
    # Each skipped file was already named, with its reason, as it was met.
    print(f"predict: {n_images} images, {n_boxes} detections, {len(skipped)} skipped -> {out}", file=sys.stderr)
    _emit_json({"run_dir": str(out), "images": n_images, "detections": n_boxes,
                "skipped": [{"file": f, "reason": r} for f, r in skipped], "predictions": writer.entries}, json_out)


@app.command()
def train(
    data: DataOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Overrides the recipe's model.")] = None,
    recipe: RecipeOpt = DEFAULT_RECIPE,
    images: ImagesOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch: BatchOpt = None,
    imgsz: ImgszOpt = None,
    workers: WorkersOpt = None,
    pretrained: PretrainedOpt = None,
    device: TrainDeviceOpt = None,
    seed: SeedOpt = None,
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
    from yolonas.train import apply_overrides, load_recipe  # noqa: PLC0415
    from yolonas.train import train as run_training  # noqa: PLC0415
    from yolonas.train.trainer import resumed_recipe  # noqa: PLC0415

    _show_progress("yolonas.train")  # the run's description, estimate and per-epoch lines
    if resume is not None:
        overrides["resume"] = True if resume.lower() == "true" else resume
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = value
    cfg = apply_overrides(load_recipe(recipe), overrides)
    if resume is not None:  # the run's own settings, then only what this command states again
        cfg = apply_overrides(resumed_recipe(cfg), overrides)
    result = run_training(cfg)
    if result.run_dir is not None:  # DDP ranks other than 0 write nothing
        print(f"train: best {result.best} ({cfg.run.best_metric} {result.best_fitness:.3f} at epoch "
              f"{result.best_epoch} of {result.epochs}); last {result.last}" if result.best_epoch else
              f"train: {result.last} ({result.epochs} epochs, not validated)", file=sys.stderr)
    _emit_json({"run_dir": str(result.run_dir), "best": str(result.best), "last": str(result.last),
                "epochs": result.epochs, "best_epoch": result.best_epoch, "metrics": result.metrics}, json_out)


@app.command()
def distill(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="The teacher checkpoint (same classes).")],
    data: DataOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The student (overrides the recipe's).")] = None,
    recipe: RecipeOpt = DEFAULT_RECIPE,
    images: ImagesOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch: BatchOpt = None,
    imgsz: ImgszOpt = None,
    workers: WorkersOpt = None,
    pretrained: PretrainedOpt = None,
    device: TrainDeviceOpt = None,
    seed: SeedOpt = None,
    cls_weight: Annotated[float | None, typer.Option("--cls-weight", help="Class-score KD weight.")] = None,
    box_weight: Annotated[float | None, typer.Option("--box-weight", help="Box-distribution KD weight.")] = None,
    feat_weight: Annotated[float | None, typer.Option("--feat-weight", help="Neck feature KD weight.")] = None,
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


@app.command("pseudo-label")
def pseudo_label_cmd(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="The labelling model (a checkpoint).")],
    source: Annotated[str, typer.Option("--source", "-s", help="A folder of unlabelled images.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The data set folder to write.")],
    conf: Annotated[list[str] | None, typer.Option(
        "--conf", help="Label threshold: one number, or class=value (repeatable; others keep the number).")] = None,
    ignore_below: Annotated[float, typer.Option("--ignore-below", help="Scores from here up to the threshold "
                                                "become ignore regions.")] = 0.2,
    fmt: Annotated[str, typer.Option("--format", help="yolo or coco.")] = "yolo",
    batch: Annotated[int, typer.Option("--batch")] = 8,
    device: DeviceOpt = "cpu",
    copy: Annotated[bool, typer.Option("--copy", help="Copy the images instead of linking them.")] = False,
    json_out: JsonOpt = None,
) -> None:
    """Label a folder of images with a teacher: confident boxes become labels, a band below them ignore regions."""
    from yolonas.train.pseudo import pseudo_label  # noqa: PLC0415

    _show_progress("yolonas.train")  # the labelling report table
    threshold: dict[str, float] = {}
    for item in conf or ["0.5"]:
        key, sep, value = item.rpartition("=")
        try:
            threshold[key.strip() if sep else "default"] = float(value)
        except ValueError:
            raise typer.BadParameter(f"--conf {item!r}: expected a number or class=number") from None
    report = pseudo_label(teacher, source, output, threshold=threshold, ignore_below=ignore_below, fmt=fmt,
                          batch_size=batch, device=device, link=not copy)
    _emit_json(report.to_dict(), json_out)


@app.command()
def val(
    data: Annotated[str, typer.Option("--data", "-d", help="data.yaml, COCO JSON or dataset folder.")],
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="A checkpoint.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Same as --weights.")] = None,
    split: Annotated[str, typer.Option("--split", help="A key of the data.yaml.")] = "val",
    images: Annotated[str | None, typer.Option("--images", help="Images folder of a COCO JSON.")] = None,
    conf: Annotated[float, typer.Option("--conf", help="Score threshold.")] = 0.01,
    iou: Annotated[float, typer.Option("--iou", help="NMS IoU threshold.")] = 0.7,
    top_k: Annotated[int, typer.Option("--top-k", help="Candidates before NMS.")] = 1000,
    max_det: Annotated[int, typer.Option("--max-det")] = 300,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Square input size (default: the model's).")] = None,
    batch: Annotated[int, typer.Option("--batch")] = 8,
    device: DeviceOpt = "cpu",
    half: Annotated[bool, typer.Option("--half", help="fp16 autocast (CUDA).")] = False,
    save_predictions: Annotated[str | None, typer.Option("--save-predictions", help="COCO results JSON.")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="PR curves and confusion matrix.")] = True,
    tile: TileOpt = 0,
    overlap: OverlapOpt = None,
    tile_whole: TileWholeOpt = False,
    tile_merge: TileMergeOpt = "nms",
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """COCO metrics (AP, AP50, AP75, APs/m/l, AR, per class) with the same pre/post-processing as predict."""
    from rich.console import Console  # noqa: PLC0415

    from yolonas.data import open_dataset  # noqa: PLC0415
    from yolonas.eval.validate import validate  # noqa: PLC0415
    from yolonas.infer import NMSConfig  # noqa: PLC0415

    tiles = _tiles(tile, overlap, tile_whole, tile_merge)
    nms = NMSConfig(score_threshold=conf, iou_threshold=iou, top_k=top_k, max_detections=max_det)
    predictor = _open(model, weights, imgsz=imgsz, device=device, half=half, nms=nms, tiles=tiles, batch=batch)
    dataset = open_dataset(data, split, images)
    out = run_dir("val", name) if plots else None
    print(f"val: {len(dataset)} images, {predictor.nms.describe()}{f'; {tiles.describe()}' if tiles else ''}",
          file=sys.stderr)
    metrics = validate(predictor, dataset, batch_size=batch, save_predictions=save_predictions, plots_dir=out)
    if json_out != "-":
        Console().print(metrics.table())
        if out is not None:
            print(f"val: plots in {out}", file=sys.stderr)
    _emit_json(metrics.to_dict(), json_out)


@app.command()
def export(
    weights: Annotated[str, typer.Option("--weights", "-w", help="A checkpoint (or a published name).")],
    format_: Annotated[str, typer.Option("--format", help="onnx, or openvino (IR).")] = "onnx",
    output: Annotated[str | None, typer.Option("--output", "-o", help="File to write (default: beside W).")] = None,
    nms: Annotated[bool, typer.Option("--nms/--no-nms", help="NMS inside the graph.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch size.")] = False,
    dynamic_size: Annotated[bool, typer.Option("--dynamic-size", help="Dynamic height and width.")] = False,
    batch: Annotated[int, typer.Option("--batch", help="Static batch size (without --dynamic).")] = 1,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Square input size (default: the model's).")] = None,
    uint8: Annotated[bool, typer.Option("--uint8", help="uint8 input, /255 inside the graph.")] = False,
    conf: Annotated[float, typer.Option("--conf", help="Score threshold (with --nms).")] = 0.25,
    iou: Annotated[float, typer.Option("--iou", help="NMS IoU (with --nms).")] = 0.7,
    top_k: Annotated[int, typer.Option("--top-k", help="Candidates before NMS (with --nms).")] = 1000,
    max_det: Annotated[int, typer.Option("--max-det", help="Detections per image (with --nms).")] = 300,
    opset: Annotated[int, typer.Option("--opset")] = 17,
    bf16: Annotated[bool, typer.Option("--bf16", help="OpenVINO: run in bf16 (CPUs with AVX-512 BF16 or AMX).")
                    ] = False,
    int8: Annotated[bool, typer.Option("--int8", help="INT8, calibrated on --data: QDQ .onnx (onnx) or IR "
                    "(openvino).")] = False,
    data: Annotated[str | None, typer.Option("--data", "-d", help="--int8: calibration images (data set or "
                    "folder).")] = None,
    split: Annotated[str, typer.Option("--split", help="--int8: the data set's split to calibrate on.")] = "train",
    mode: Annotated[str, typer.Option("--mode", help="--int8: ptq (all INT8) or selective (the most sensitive "
                    "layers float).")] = "ptq",
    quantizer: Annotated[str | None, typer.Option("--quantizer", help="--int8 openvino: nncf (default) or qdq.")
                         ] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", help="--int8: calibration images.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="--int8: chooses the calibration images.")] = 0,
    float_layers: Annotated[list[str] | None, typer.Option("--float-layer", help="--int8: keep this conv float; "
                            "repeatable.")] = None,
    max_error: Annotated[float | None, typer.Option("--max-error", help="--mode selective: output error budget "
                         "(default: keep half of full INT8's speed-up).")
                         ] = None,
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Export a fused model to ONNX (raw boxes + scores, or NMS inside) or OpenVINO IR; f32, bf16 or INT8."""
    from yolonas.deploy.export import export_file  # noqa: PLC0415
    from yolonas.deploy.open import load_model  # noqa: PLC0415
    from yolonas.errors import InputError  # noqa: PLC0415
    from yolonas.infer import NMSConfig  # noqa: PLC0415

    net = load_model(weights, imgsz)
    stem = Path(weights).with_suffix("") if Path(weights).suffix else Path(weights)
    suffix = ".xml" if format_ == "openvino" else ".onnx"
    if int8:
        if bf16 or nms or uint8 or dynamic or dynamic_size or batch != 1:
            raise InputError("--int8 writes a raw-output, float-input, batch-1 file: drop --bf16, --nms, --uint8, "
                             "--dynamic, --dynamic-size and --batch")
        path = Path(output) if output else Path(f"{stem}_int8{suffix}")
        _export_int8(net, path, data, name, json_out, split=split, mode=mode, fmt=format_, quantizer=quantizer,
                     calib_images=calib_images, seed=seed, float_layers=float_layers or (), max_error=max_error,
                     min_speedup=None if max_error is not None else 0.5)
        return
    settings = NMSConfig(score_threshold=conf, iou_threshold=iou, top_k=top_k, max_detections=max_det) if nms else None
    path = Path(output) if output else Path(f"{stem}{'_bf16' if bf16 else ''}{suffix}")
    path = export_file(net, path, format_, precision="bf16" if bf16 else "f32", batch=None if dynamic else batch,
                       dynamic_size=dynamic_size, uint8_input=uint8, nms=settings, opset=opset)
    print(f"export: {path}" + (f" ({settings.describe()})" if settings else " (raw boxes and scores)"),
          file=sys.stderr)
    _emit_json({"output": str(path), "nms": settings.describe() if settings else None}, json_out)


def _export_int8(net, path: Path, data: str | None, name: str | None, json_out: str | None, **settings) -> None:
    """`export --int8`: the quantize pipeline on the loaded model, its run folder under runs/quantize/."""
    from yolonas.errors import InputError  # noqa: PLC0415
    from yolonas.quant.pipeline import quantize as run_quantize  # noqa: PLC0415

    if data is None:
        raise InputError("--int8 needs --data: the images INT8 is calibrated on (a data set or image folder)")
    result = run_quantize(net, data, run_dir("quantize", name), output=path, **settings)
    print(f"export: {path} (INT8 {result['mode']}, {result['quantizer']}; report in {result['run_dir']})",
          file=sys.stderr)
    _emit_json({"output": str(path), "nms": None, "int8": result}, json_out)


@app.command()
def quantize(
    weights: Annotated[str, typer.Option("--weights", "-w", help="A checkpoint (or a float .onnx from export).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Calibration images: data.yaml, COCO JSON or folder.")],
    split: Annotated[str, typer.Option("--split", help="A key of the data.yaml.")] = "train",
    mode: Annotated[str, typer.Option("--mode", help="ptq (all INT8), selective (budgeted), qat.")] = "ptq",
    output: Annotated[str | None, typer.Option("--output", "-o", help="File to write (default: in the run).")] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images, chosen by --seed.")] = 64,
    val_images: Annotated[int, typer.Option("--val-images", help="Other images the error is measured on.")] = 16,
    method: Annotated[str, typer.Option("--method", help="percentile, minmax or entropy.")] = "percentile",
    percentile: Annotated[float, typer.Option("--percentile", help="With --method percentile.")] = 99.99,
    seed: Annotated[int, typer.Option("--seed", help="Chooses the calibration and validation images.")] = 0,
    int8_activations: Annotated[bool, typer.Option("--int8-activations", help="Symmetric int8 activations "
                                "(TensorRT) instead of uint8 (faster with ONNX Runtime on x86).")] = False,
    float_layers: Annotated[list[str] | None, typer.Option("--float-layer", help="Keep this conv float (module "
                            "name, e.g. backbone.stem.conv.rbr_reparam); repeatable.")] = None,
    max_error: Annotated[float | None, typer.Option("--max-error", help="Selective: output error budget.")] = None,
    min_speedup: Annotated[float | None, typer.Option("--min-speedup", help="Selective: keep at least this "
                           "fraction (0..1) of full INT8's speed-up.")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Square input size (default: the model's).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for measurements.")] = 2,
    format_: Annotated[str, typer.Option("--format", help="onnx (QDQ for ONNX Runtime) or openvino (IR).")] = "onnx",
    quantizer: Annotated[str | None, typer.Option("--quantizer", help="openvino: nncf (default) or qdq (ours, "
                         "converted).")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="QAT: the training recipe (default: the one "
                      "saved in the checkpoint).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="QAT epochs (default: the recipe's / 10).")] = None,
    device: DeviceOpt = "auto",
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """INT8 to a QDQ ONNX file or an OpenVINO IR: all layers (ptq), selectively from a sensitivity report, or
    after QAT."""
    from yolonas.quant.pipeline import quantize as run_quantize  # noqa: PLC0415

    out = run_dir("quantize", name)
    progress = None
    if json_out != "-":
        progress = lambda i, n, layer: print(f"sensitivity {i + 1}/{n}: {layer}", file=sys.stderr)  # noqa: E731
    result = run_quantize(weights, data, out, output=output, split=split, mode=mode, fmt=format_,
                          quantizer=quantizer, calib_images=calib_images,
                          val_images=val_images, method=method, percentile=percentile, seed=seed,
                          activations="int8" if int8_activations else "uint8", float_layers=float_layers or (),
                          max_error=max_error, min_speedup=min_speedup, threads=threads, imgsz=imgsz,
                          recipe=recipe, epochs=epochs, device=device, progress=progress)
    if "qat" in result:
        print(f"quantize: QAT fine-tuned {result['qat']['epochs']} epochs -> {result['qat']['weights']}",
              file=sys.stderr)
    print(f"quantize: {result['output']} ({mode}, {result['activations']} activations, {method} on "
          f"{len(result['calibration']['images'])} images) -> {out}", file=sys.stderr)
    _emit_json(result, json_out)


def _bench_images(source: str | None, n: int = 8):
    import numpy as np  # noqa: PLC0415

    from yolonas.infer.sources import ImageSource  # noqa: PLC0415

    if source is not None:
        images = [image for _, image in zip(range(n), ImageSource(source), strict=False)]
        if images:
            return images, source
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)], "random 640x480 images"


@app.command()
def bench(
    weights: Annotated[str, typer.Option("--weights", "-w", help="Checkpoint, published name, .onnx or .xml.")],
    backend: Annotated[str, typer.Option("--backend", help="auto, fastest, torch, onnxruntime, openvino, tensorrt.")
                       ] = "auto",
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated: 1,8,32.")] = "1",
    source: Annotated[str | None, typer.Option("--source", help="Images to time on (default: random).")] = None,
    runs: Annotated[int, typer.Option("--runs", help="Timed calls per batch size.")] = 30,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls first.")] = 5,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all cores).")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Square input size (torch only).")] = None,
    device: DeviceOpt = "cpu",
    half: Annotated[bool, typer.Option("--half", help="fp16 (torch: an fp16 copy on CUDA, autocast on CPU).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile forward + decode (torch).")] = False,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="Capture and replay CUDA graphs (torch).")] = False,
    output: Annotated[str | None, typer.Option("--output", help="Also write <output>.json and .md.")] = None,
    all_paths: Annotated[bool, typer.Option("--all", help="Every path this machine has (torch, ONNX Runtime, "
                         "OpenVINO; fp32, bf16, INT8), end to end side by side; the fastest marked.")] = False,
    data: Annotated[str | None, typer.Option("--data", "-d", help="--all: INT8 calibration images (data set or "
                    "folder; default: the timed images, for timing only).")] = None,
    blocks: Annotated[int, typer.Option("--blocks", help="--all: blocks in which the paths take turns.")] = 5,
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Latency p50/p90/p99 and throughput, forward only and end to end with a stage breakdown; --all: what is
    fastest on this machine."""
    import torch  # noqa: PLC0415

    from yolonas.deploy.benchmark import benchmark, markdown_table  # noqa: PLC0415
    from yolonas.deploy.open import open_predictor  # noqa: PLC0415

    if threads is not None:
        torch.set_num_threads(threads)
    if all_paths:
        _bench_all(weights, source, data, imgsz, threads, device, blocks, max(1, runs // blocks), output, name,
                   json_out)
        return
    predictor = open_predictor(weights, imgsz=imgsz, device=device, runtime=backend, threads=threads, half=half,
                               compile=compile, cuda_graphs=cuda_graphs)
    pre, used = predictor.preprocessing, predictor.backend
    label = f"{used.runtime} {used.precision}" + " compiled" * compile + " cuda-graphs" * cuda_graphs
    images, what = _bench_images(source)
    sizes = _batch_sizes(batch)
    results = [benchmark(predictor, images, b, runs, warmup, name=label) for b in sizes]
    table = markdown_table(results)
    header = (f"{weights} on {label}, {device}, {torch.get_num_threads()} torch threads, input "
              f"{pre.image_size[0]}x{pre.image_size[1]}, {warmup} warm-up + {runs} timed calls, images: {what}")
    if json_out != "-":
        print(header + "\n\n" + table)
    result = {"weights": weights, "images": what, "results": [r.to_dict() for r in results]}
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(output + ".md").write_text(f"# Benchmark\n\n{header}\n\n{table}\n")
    _emit_json(result, json_out)


def _batch_sizes(text: str) -> list[int]:
    """--batch 1,8,32 as positive integers; InputError in one line otherwise."""
    from yolonas.errors import InputError  # noqa: PLC0415

    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        raise InputError(f"--batch {text!r}: give batch sizes as integers, comma-separated (1,8,32)") from None
    if any(b < 1 for b in sizes):
        raise InputError(f"--batch {text}: every batch size must be at least 1")
    return sizes


def _bench_all(weights: str, source: str | None, data: str | None, imgsz: int | None, threads: int | None,
               device: str, blocks: int, runs: int, output: str | None, name: str | None, json_out: str | None) -> None:
    """`bench --all`: build every path of a checkpoint, time them side by side, print and write the table."""
    from yolonas.deploy.open import is_exported, load_model  # noqa: PLC0415
    from yolonas.errors import InputError  # noqa: PLC0415
    from yolonas.quant.paths import bench_all  # noqa: PLC0415

    if is_exported(weights):
        raise InputError(f"{weights}: --all builds every format itself from a checkpoint (or a published name); "
                         "give the .pt, or drop --all to time this file")
    out = run_dir("bench", name)
    result = bench_all(load_model(weights, imgsz), out, source=source, data=data, threads=threads,
                       device=device, blocks=blocks, runs=runs)
    result["weights"] = weights
    markdown = f"# What is fastest here: {weights}\n\n{result.pop('markdown')}\n"
    if json_out != "-":
        print(markdown)
    stem = Path(output) if output else out / "paths"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{stem}.md").write_text(markdown)
    print(f"bench: fastest here {result['fastest']}; {stem}.md, {stem}.json", file=sys.stderr)
    _emit_json(result, json_out)


@app.command()
def showdown(
    data: Annotated[str, typer.Option("--data", "-d", help="A data.yaml (its train split trains, --split scores), or "
                                      "several comma-separated: one sub-run each, then a summary.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated: yolo_nas_s|m|l (ours; yolo_nas_tiny for "
                                        "quick checks) and Ultralytics' yolov8n|s|m|l, yolo11n|s|m|l, yolo26n|s|m|l.")
                      ] = "yolo_nas_s,yolov8s,yolo11s,yolo26s",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per model (with --budget: the ceiling).")] = 100,
    budget: Annotated[float | None, typer.Option("--budget", help="Minutes for the whole call, split over the data "
                      "sets: a 1-epoch probe per model, then the epochs that fit.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Runs per model (seeds --seed, --seed + 1, ...): the table "
                     "keeps mean and spread, and calls differences under the spread a tie.")] = 1,
    imgsz: Annotated[int, typer.Option("--imgsz")] = 640,
    batch: Annotated[int, typer.Option("--batch")] = 16,
    device: Annotated[str, typer.Option("--device", help="Training device: auto, cpu, cuda, cuda:N.")] = "auto",
    backend: Annotated[str, typer.Option("--backend", help="fp32 latency backend (INT8 IRs run on OpenVINO).")
                       ] = "onnxruntime",
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Also make and score each family's own OpenVINO "
                                       "INT8.")] = True,
    split: Annotated[str, typer.Option("--split", help="The data.yaml key that is scored.")] = "val",
    calib_images: Annotated[int, typer.Option("--calib-images", help="INT8 calibration images (train split).")] = 64,
    workers: Annotated[int, typer.Option("--workers")] = 4,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for training (every family) and for "
                                              "timing (default: all).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The first seed.")] = 0,
    ultralytics_python: Annotated[str | None, typer.Option("--ultralytics-python", help="Python of the Ultralytics "
                                  "venv (default: $YOLONAS_ULTRALYTICS_PYTHON or .venv-ultralytics/bin/python).")
                                  ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo runs whose result is already in the run folder.")
                     ] = False,
    name: Annotated[str, typer.Option("--name", help="The run folder runs/showdown/<name>/ (results merge).")
                    ] = "exp",
    json_out: JsonOpt = None,
) -> None:
    """YOLO-NAS vs YOLOv8, YOLO11, YOLO26 trained alike, scored by one COCO evaluator, each on its fastest CPU path:
    a table and frontier plot per data set, a summary over them, JSON."""
    from yolonas.errors import InputError  # noqa: PLC0415
    from yolonas.showdown import ShowdownConfig, run_showdown  # noqa: PLC0415

    cfg = ShowdownConfig(data=data, models=tuple(m.strip() for m in models.split(",") if m.strip()), epochs=epochs,
                         budget_minutes=budget, seeds=seeds, imgsz=imgsz, batch=batch, device=device, backend=backend,
                         int8=int8, split=split, calib_images=calib_images, workers=workers, threads=threads,
                         seed=seed, ultralytics_python=ultralytics_python, force=force, name=name,
                         command="yolonas " + " ".join(sys.argv[1:]))
    # A campaign runs for hours: its progress (each run's result file, the budget's epochs, the child's command)
    # shows on stderr unless --quiet, as it goes.
    progress = logging.getLogger("yolonas.showdown")
    level = progress.level
    if logging.getLogger("yolonas").getEffectiveLevel() <= logging.WARNING:
        progress.setLevel(logging.INFO)
    try:
        result = run_showdown(cfg)
    finally:
        progress.setLevel(level)
    if json_out != "-":
        for folder in result["datasets"].values():
            print(Path(folder, "showdown.md").read_text())
        print(Path(result["run_dir"], "summary.md").read_text())
    _emit_json(result, json_out)
    if result["failed"]:  # the report is written and every other row complete; the call still says it failed
        raise InputError(f"{len(result['failed'])} run(s) failed: {'; '.join(result['failed'])}")


@app.command()
def search(
    data: Annotated[str, typer.Option("--data", "-d", help="data.yaml, COCO JSON or dataset folder.")],
    backend: Annotated[str, typer.Option("--backend", help="Latency target: onnxruntime, torch, openvino.")
                       ] = "onnxruntime",
    precision: Annotated[str, typer.Option("--precision", help="fp32; fp16 (torch on cuda); int8 (the QDQ model "
                                           "`yolonas quantize` writes; onnxruntime, openvino).")] = "fp32",
    imgsz: Annotated[str, typer.Option("--imgsz", help="Input size, or several comma-separated to search.")] = "320",
    trials: Annotated[int, typer.Option("--trials", help="Trials in total (a resumed run adds the rest).")] = 40,
    latency_cap: Annotated[float | None, typer.Option("--latency-cap", help="Max predicted latency (ms).")] = None,
    latency_cap_ratio: Annotated[float | None, typer.Option("--latency-cap-ratio", help="Max predicted latency as a "
                                 "fraction of --around's (else yolo_nas_s's) at the largest --imgsz.")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Intra-op threads of the latency target.")] = 2,
    proxy: Annotated[str | None, typer.Option("--proxy", help="Accuracy estimate: meco, params, gflops (default: "
                                              "gflops with --around, else meco).")] = None,
    around: Annotated[str | None, typer.Option("--around", help="Search only the neighbourhood of this model (a "
                                               "published name, spec YAML or checkpoint).")] = None,
    around_steps: Annotated[int, typer.Option("--around-steps", help="Grid steps either side of --around's "
                                              "values.")] = 1,
    population: Annotated[int, typer.Option("--population", help="NSGA-II population size.")] = 16,
    train_top: Annotated[int, typer.Option("--train-top", help="Front members to train briefly (0: none).")] = 0,
    train_epochs: Annotated[int, typer.Option("--train-epochs", help="Epochs of that brief training.")] = 3,
    train_imgsz: Annotated[int, typer.Option("--train-imgsz", help="Its input size.")] = 160,
    train_images: Annotated[int, typer.Option("--train-images", help="Its first N train and val images.")] = 64,
    latency_table: Annotated[str | None, typer.Option("--latency-table", help="Latency cache JSON (default: "
                                                      "runs/search/latency_table.json).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "cpu",
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Hardware-aware architecture search; runs/search/<name>/ gets the front, its plot and one spec YAML each."""
    from yolonas.errors import InputError  # noqa: PLC0415
    from yolonas.nas import SearchConfig, SearchSpace  # noqa: PLC0415
    from yolonas.nas import search as run_search  # noqa: PLC0415
    from yolonas.weights import load  # noqa: PLC0415

    try:
        sizes = tuple(int(s) for s in imgsz.split(","))
    except ValueError:
        raise InputError(f"--imgsz {imgsz!r}: expected an integer or comma-separated integers (320 or 256,320)"
                         ) from None
    reference = load(around).spec if around else None
    space = SearchSpace.around(reference, around_steps, sizes) if around else SearchSpace(imgsz=sizes)
    cfg = SearchConfig(data=data, out=run_dir("search", name), space=space, backend=backend, device=device,
                       precision=precision, imgsz=sizes, trials=trials, latency_cap=latency_cap, threads=threads,
                       latency_cap_ratio=latency_cap_ratio, reference=reference,
                       # near one model MeCo ranked aquarium-trained nets backwards (tau -0.60), GFLOPs +0.40
                       proxy=proxy or ("gflops" if around else "meco"),
                       population=population, seed=seed, train_top=train_top, train_epochs=train_epochs,
                       train_imgsz=train_imgsz, train_images=train_images,
                       latency_table=Path(latency_table) if latency_table else None,
                       progress=json_out != "-")
    result = run_search(cfg)  # why a front is empty, the library says as a warning
    cap = ""
    if result.get("latency_cap_ms") is not None:
        ratio = result.get("latency_cap_ratio")
        of = f", x{ratio:g} of {result['latency_reference']}" if ratio else ""
        cap = f" (latency cap {result['latency_cap_ms']:.2f} ms{of})"
    print(f"search: {result['trials']} trials, {len(result['front'])} on the front{cap} -> {cfg.out}/front.md, "
          "front.png, specs/", file=sys.stderr)
    _emit_json(result, json_out)


def _remove_empty_run_folders() -> None:
    for path in _CREATED:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def main() -> None:
    """Entry point: run the app, printing our own errors as one line."""
    # Libraries' warnings about their own internals are not the user's business on the command line.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        app()
    except YolonasError as e:
        _remove_empty_run_folders()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _remove_empty_run_folders()
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
