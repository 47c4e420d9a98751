"""Running a model: info, predict and val."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from yolonas.cli.options import (
    AT_LEAST_1,
    ActorsOpt,
    AddressOpt,
    BatchOpt,
    ConfOpt,
    DeviceOpt,
    EngineOpt,
    HalfOpt,
    ImagesOpt,
    IouOpt,
    JsonOpt,
    MaxDetOpt,
    ModelOpt,
    NameOpt,
    OutputDirOpt,
    OverlapOpt,
    RowFormatOpt,
    SkipDoneOpt,
    SplitOpt,
    TileMergeOpt,
    TileOpt,
    TileWholeOpt,
    TopKOpt,
    WeightsOpt,
    _imgsz,
)
from yolonas.cli.shared import _device, _emit_json, _model_arg, _out, _say, run_dir
from yolonas.errors import InputError


def info(
    model: Annotated[str, typer.Argument(help="A published name, a spec YAML or a checkpoint.")] = "yolo_nas_s",
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Class count (default: its own).",
                                                    callback=AT_LEAST_1)] = None,
    imgsz: Annotated[int, _imgsz("640, as published")] = 640,
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
    _out(f"state_dict entries: {r['state_dict_entries']}  (of which rbr_reparam placeholders: "
         f"{r['rbr_reparam_params'] / 1e6:.3f}M params)")


def _tiles(tile: int, overlap: float | None, whole: bool, merge: str):
    """The TileConfig of --tile/--overlap/--tile-whole/--tile-merge, or None without --tile."""
    from yolonas.infer.tiling import TileConfig  # noqa: PLC0415

    if not tile:
        if overlap is not None or whole or merge != "nms":
            raise InputError("--overlap, --tile-whole and --tile-merge need --tile SIZE")
        return None
    return TileConfig(tile, 0.2 if overlap is None else overlap, whole_image=whole, merge=merge)


def _open(model: str | None, weights: str | None, *, imgsz: int | None, device: str, half: bool, nms, tiles,
          batch: int):
    """predict and val: the Predictor of the model (a checkpoint, name or exported file) via `open_predictor`,
    which warns when the model has random weights."""
    from yolonas.deploy.open import open_predictor  # noqa: PLC0415

    return open_predictor(_model_arg(model, weights), imgsz=imgsz, device=device, half=half, nms=nms, tiles=tiles,
                          batch=batch)


def predict(
    source: Annotated[str, typer.Option("--source", "-s", help="Image, folder, glob or video.")],
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    conf: ConfOpt = 0.25,
    iou: IouOpt = 0.7,
    max_det: MaxDetOpt = 300,
    imgsz: Annotated[int | None, _imgsz("the model's")] = None,
    batch: BatchOpt = 8,
    device: DeviceOpt = "auto",
    half: HalfOpt = False,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Write annotated images and videos.")] = True,
    tile: TileOpt = 0,
    overlap: OverlapOpt = None,
    tile_whole: TileWholeOpt = False,
    tile_merge: TileMergeOpt = "nms",
    name: NameOpt = None,
    json_out: JsonOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    output: OutputDirOpt = None,
    skip_done: SkipDoneOpt = False,
    fmt: RowFormatOpt = "parquet",
) -> None:
    """Detect objects in images, folders, globs or videos; write annotated copies and predictions.json (or, with
    --engine ray, one Parquet/JSONL row per image). Unreadable inputs are skipped, each named, and counted at the
    end; when none could be read, it fails (exit 2)."""
    from yolonas.infer import ImageSource, NMSConfig  # noqa: PLC0415
    from yolonas.infer.writer import PredictionWriter  # noqa: PLC0415

    tiles = _tiles(tile, overlap, tile_whole, tile_merge)
    nms = NMSConfig(score_threshold=conf, iou_threshold=iou, max_detections=max_det)
    if engine != "local" or address or actors or output or skip_done or fmt != "parquet":
        from yolonas.scale.command import predict_on_ray  # noqa: PLC0415 - Ray is an optional extra

        summary = predict_on_ray(source, _model_arg(model, weights), engine=engine, output=output, address=address,
                                 actors=actors, skip_done=skip_done, fmt=fmt, imgsz=imgsz, batch=batch,
                                 device=_device(device), half=half, nms=nms, tiles=tiles)
        _say(summary.describe())
        return _emit_json(summary.to_json(), json_out)
    predictor = _open(model, weights, imgsz=imgsz, device=_device(device), half=half, nms=nms, tiles=tiles,
                      batch=batch)
    inputs = ImageSource(source)  # a missing path or an empty folder fails before anything is written
    _say(f"predict: {predictor.nms.describe()}{f'; {tiles.describe()}' if tiles else ''}")
    out = run_dir("predict", name)
    n_images = n_boxes = 0
    with PredictionWriter(out, save_images=save) as writer:
        for item_name, image, det in predictor.stream(inputs):
            writer.add(item_name, image, det)
            n_images, n_boxes = n_images + 1, n_boxes + len(det)
    skipped = predictor.skipped
    _emit_json({"run_dir": str(out), "images": n_images, "detections": n_boxes,
                "skipped": [{"file": f, "reason": r} for f, r in skipped], "predictions": writer.entries}, json_out)
    _predict_summary(source, out, n_images, n_boxes, skipped)


def _predict_summary(source: str, out: Path, n_images: int, n_boxes: int, skipped: list[tuple[str, str]]) -> None:
    """predict's last line: what was done, and how many inputs were skipped (each was named as it was met); an
    error (exit 2) when no input could be read, so that a script sees the failure."""

    if skipped and not n_images:
        (out / "predictions.json").unlink(missing_ok=True)  # an empty run folder made by this call then goes
        file, reason = skipped[0]
        raise InputError(f"{source}: none of its {len(skipped)} input(s) could be read (first: {file}: {reason})")
    tail = f"; {len(skipped)} of {n_images + len(skipped)} inputs skipped (unreadable, named above)" if skipped else ""
    _say(f"predict: {n_images} images, {n_boxes} detections -> {out}{tail}")


def val(
    data: Annotated[str, typer.Option("--data", "-d", help="data.yaml, COCO JSON or dataset folder.")],
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    split: SplitOpt = "val",
    images: ImagesOpt = None,
    conf: ConfOpt = 0.01,
    iou: IouOpt = 0.7,
    top_k: TopKOpt = 1000,
    max_det: MaxDetOpt = 300,
    imgsz: Annotated[int | None, _imgsz("the model's")] = None,
    batch: BatchOpt = 8,
    device: DeviceOpt = "auto",
    half: HalfOpt = False,
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
    predictor = _open(model, weights, imgsz=imgsz, device=_device(device), half=half, nms=nms, tiles=tiles,
                      batch=batch)
    dataset = open_dataset(data, split, images)
    out = run_dir("val", name) if plots else None
    _say(f"val: {len(dataset)} images, {predictor.nms.describe()}{f'; {tiles.describe()}' if tiles else ''}")
    metrics = validate(predictor, dataset, batch_size=batch, save_predictions=save_predictions, plots_dir=out)
    if json_out != "-":
        Console().print(metrics.table())
        if out is not None:
            _say(f"val: plots in {out}")
    _emit_json(metrics.to_dict(), json_out)
