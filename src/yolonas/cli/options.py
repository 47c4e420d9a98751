"""The option table: each flag that several commands share is defined once here, with its range check, and means
the same in every command. A value out of range stops the command before it starts, in one line
(`error: --conf 2.0: must be in [0, 1]`, exit 2)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from yolonas.errors import InputError

DEFAULT_RECIPE = "scratch_small_data"


class OptionError(InputError):
    """A flag's value that cannot work, raised while the flags are parsed: main() prints it as one line."""


def _rule(test, rule: str):
    """A typer callback: every value given to the flag must pass `test`, else OptionError `--flag value: rule`."""

    def check(param: typer.CallbackParam, value):
        for v in value if isinstance(value, list | tuple) else [value]:
            if v is not None and not test(v):
                raise OptionError(f"{param.opts[0]} {v}: {rule}")
        return value

    return check


def _choice(*names: str):
    return _rule(lambda v: v in names, "choose " + ", ".join(names))


def _sizes(text: str) -> bool:
    """'320' or '256,320': input sizes, each a positive multiple of 32."""
    try:
        return all(int(v) >= 32 and int(v) % 32 == 0 for v in text.split(","))
    except ValueError:
        return False


UNIT = _rule(lambda v: 0 <= v <= 1, "must be in [0, 1]")


AT_LEAST_1 = _rule(lambda v: v >= 1, "must be at least 1")


AT_LEAST_0 = _rule(lambda v: v >= 0, "must be 0 or more")


ABOVE_0 = _rule(lambda v: v > 0, "must be more than 0")


STRIDE = _rule(lambda v: v >= 32 and v % 32 == 0, "must be a multiple of 32 (the network's stride)")


STRIDES = _rule(_sizes, "give sizes, each a multiple of 32, comma-separated (320 or 256,320)")


TILE = _rule(lambda v: v == 0 or (v >= 32 and v % 32 == 0), "must be 0 (no tiles) or a multiple of 32")


OVERLAP = _rule(lambda v: 0 <= v < 1, "must be in [0, 1)")


DEVICE = _rule(lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None, "use auto, cpu, cuda or cuda:N")


def _recipe_value(section: str, key: str):
    """The default recipe's value of a field, read from its YAML (no torch import), for help texts."""
    from importlib import resources  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    text = (resources.files("yolonas") / "recipes" / f"{DEFAULT_RECIPE}.yaml").read_text()
    return (yaml.safe_load(text).get(section) or {}).get(key)


def _recipe_default(section: str, key: str) -> str:
    return f" (default recipe: {_recipe_value(section, key)})"


def _imgsz(default: str):
    """--imgsz: the network's square input size, the same meaning in every command; only the default differs."""
    return typer.Option("--imgsz", help=f"Square input size in pixels, a multiple of 32 (default: {default}).",
                        callback=STRIDE, show_default=False)


def _threads(what: str):
    return typer.Option("--threads", help=f"CPU threads {what}, at least 1 (default: all cores).", callback=AT_LEAST_1)


# The model, the device, the output: the same flags in every command that takes them.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="A published name (yolo_nas_s), a spec YAML or a "
                                              "checkpoint; the same as --weights.")]


WeightsOpt = Annotated[str | None, typer.Option("--weights", "-w", help="A checkpoint, or an exported .onnx / .xml "
                                                "file where the command runs one; the same as --model.")]


DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto (a GPU when torch sees one, else the CPU), "
                                               "cpu, cuda or cuda:N.", callback=DEVICE)]


JsonOpt = Annotated[str | None, typer.Option("--json", help="Write the result as JSON to this path ('-' = stdout).")]


NameOpt = Annotated[str | None, typer.Option("--name", help="Run folder under runs/<task>/ (default: next free)")]


DataOpt = Annotated[str | None, typer.Option("--data", "-d", help="data.yaml, COCO JSON or dataset folder.")]


ImagesOpt = Annotated[str | None, typer.Option("--images", help="Images folder of a COCO JSON.")]


SplitOpt = Annotated[str, typer.Option("--split", help="A key of the data.yaml: train, val, test.")]


SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


# Thresholds and counts of prediction (predict, val, export --nms).
ConfOpt = Annotated[float, typer.Option("--conf", help="Score threshold, in [0, 1].", callback=UNIT)]


IouOpt = Annotated[float, typer.Option("--iou", help="NMS IoU threshold, in [0, 1].", callback=UNIT)]


TopKOpt = Annotated[int, typer.Option("--top-k", help="Candidates before NMS, at least 1.", callback=AT_LEAST_1)]


MaxDetOpt = Annotated[int, typer.Option("--max-det", help="Detections kept per image, at least 1.",
                                        callback=AT_LEAST_1)]


BatchOpt = Annotated[int, typer.Option("--batch", help="Images per forward pass, at least 1.", callback=AT_LEAST_1)]


HalfOpt = Annotated[bool, typer.Option("--half", help="fp16 autocast (CUDA).")]


CalibOpt = Annotated[int, typer.Option("--calib-images", help="INT8 calibration images, at least 1.",
                                       callback=AT_LEAST_1)]


FloatLayerOpt = Annotated[list[str] | None, typer.Option("--float-layer", help="INT8: keep this conv float (module "
                          "name, e.g. backbone.stem.conv.rbr_reparam); repeatable.")]


QuantizerOpt = Annotated[str | None, typer.Option("--quantizer", help="INT8 OpenVINO: nncf (default) or qdq (ours, "
                         "converted).", callback=_choice("nncf", "qdq"))]


MaxErrorOpt = Annotated[float | None, typer.Option("--max-error", help="Selective INT8: output error budget, more "
                        "than 0 (default: keep half of full INT8's speed-up).", callback=ABOVE_0)]


# Tiles of large images (predict, val).
TileOpt = Annotated[int, typer.Option("--tile", help="Tile size in original pixels (a multiple of 32): run "
                                       "overlapping tiles, each at the input size; for small objects in large "
                                       "images. 0 = whole images.", callback=TILE)]


OverlapOpt = Annotated[float | None, typer.Option("--overlap", help="With --tile: the fraction of a tile shared with "
                                                  "its neighbour, in [0, 1) (default 0.2).", callback=OVERLAP)]


TileWholeOpt = Annotated[bool, typer.Option("--tile-whole/--no-tile-whole", help="With --tile: also run the whole "
                                            "image, for large objects.")]


TileMergeOpt = Annotated[str, typer.Option("--tile-merge", help="With --tile: nms (a box cut by an inner tile border "
                                           "is dropped where a larger box of the same class, going on past that "
                                           "border, holds most of it, so an object cut in two counts once; then NMS) "
                                           "or greedynmm (matched boxes merge into their union, SAHI's default; with "
                                           "confident thresholds only).", callback=_choice("nms", "greedynmm"))]


# The training flags `train` and `distill` share; each overrides the recipe's field when given, and the help shows
# the default recipe's value.
RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="scratch_small_data, cpu_s320 (yolo_nas_s on a CPU), "
                                        "quickstart, finetune, coco_yolo_nas_s, cpu_smoke, or a recipe YAML.")]


EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Epochs, at least 1." +
                                               _recipe_default("schedule", "epochs"), callback=AT_LEAST_1)]


LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate, more than 0." +
                                             _recipe_default("optimizer", "lr"), callback=ABOVE_0)]


TrainBatchOpt = Annotated[int | None, typer.Option("--batch", help="Images per step and process, at least 1." +
                                                   _recipe_default("data", "batch_size"), callback=AT_LEAST_1)]


TrainImgszOpt = Annotated[int | None, _imgsz(f"the recipe's, {_recipe_value('data', 'image_size')} in the default "
                                             "recipe")]


WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Loader processes, 0 or more." +
                                                _recipe_default("data", "workers"), callback=AT_LEAST_0)]


PretrainedOpt = Annotated[str | None, typer.Option("--pretrained", help="'coco' or 'none'." +
                                                   _recipe_default("model", "pretrained"))]


TrainSeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: 0).")]


ResumeOpt = Annotated[str | None, typer.Option("--resume", help="'true' (this run's last.pt) or a last.pt.")]


ProxyOpt = Annotated[str | None, typer.Option("--proxy", help="Accuracy estimate: meco, params, gflops (default: "
                                             "gflops with --around, else meco).",
                                             callback=_choice("meco", "params", "gflops"))]


AroundOpt = Annotated[str | None, typer.Option("--around", help="Search only the neighbourhood of this model (a "
                                               "published name, spec YAML or checkpoint).")]


AroundStepsOpt = Annotated[int, typer.Option("--around-steps", help="Grid steps either side of --around's values, at "
                                             "least 1.", callback=_rule(lambda v: v >= 1, "must be at least 1 step"))]


PopulationOpt = Annotated[int, typer.Option("--population", help="NSGA-II population size, at least 2.",
                                            callback=_rule(lambda v: v >= 2, "must be at least 2"))]

# predict --engine ray (Ray Data: one machine or a cluster).
EngineOpt = Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data: one machine or a "
                                        "cluster; needs --output).", callback=_choice("local", "ray"))]
AddressOpt = Annotated[str | None, typer.Option("--address", help="With --engine ray: join this Ray cluster (auto, "
                                                "host:port, ray://host:port); default: a Ray on this machine.")]
ActorsOpt = Annotated[int | None, typer.Option("--actors", help="With --engine ray: model copies, at least 1 "
                                               "(default: one per GPU, or the CPUs shared out, 4 threads each).",
                                               callback=AT_LEAST_1)]
OutputDirOpt = Annotated[str | None, typer.Option("--output", "-o", help="With --engine ray: the folder of result "
                                                  "files, one row per image.")]
SkipDoneOpt = Annotated[bool, typer.Option("--skip-done", help="With --engine ray: resume, running only the images "
                                           "--output has no row for.")]
RowFormatOpt = Annotated[str, typer.Option("--format", help="With --engine ray: parquet or jsonl.",
                                           callback=_choice("parquet", "jsonl"))]

# export
ExportFormatOpt = Annotated[str, typer.Option("--format", help="onnx, openvino (IR), or triton / triton-openvino (a "
                                              "Triton model repository: the NMS-inside .onnx or IR and its "
                                              "config.pbtxt).",
                                              callback=_choice("onnx", "openvino", "triton", "triton-openvino"))]
ExportBatchOpt = Annotated[int | None, typer.Option("--batch", help="Static batch size (without --dynamic), at least "
                                                    "1 (default 1); triton: max_batch_size (default 8).",
                                                    callback=AT_LEAST_1)]
OpsetOpt = Annotated[int, typer.Option("--opset", help="ONNX opset, 11 or more (NonMaxSuppression needs 11).",
                                       callback=_rule(lambda v: v >= 11, "must be 11 or more"))]
Int8Opt = Annotated[bool, typer.Option("--int8", help="INT8, calibrated on --data: QDQ .onnx (onnx) or IR (openvino).")]
Int8DataOpt = Annotated[str | None, typer.Option("--data", "-d", help="--int8: calibration images (data set or "
                                                 "folder).")]

# showdown
UltralyticsPythonOpt = Annotated[str | None, typer.Option("--ultralytics-python", help="Python of the Ultralytics "
                                 "venv (default: $YOLONAS_ULTRALYTICS_PYTHON, else .venv-ultralytics/bin/python).")]
SkipMissingPeersOpt = Annotated[bool, typer.Option("--skip-missing-peers", help="Run our models even when Ultralytics "
                                "is not installed; its rows then say how to install it (without this flag a missing "
                                "peer stops the call before any training).")]
