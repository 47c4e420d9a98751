"""Deployment: export, quantize and bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from yolonas.cli.options import (
    AT_LEAST_0,
    AT_LEAST_1,
    UNIT,
    CalibOpt,
    ConfOpt,
    DeviceOpt,
    ExportBatchOpt,
    ExportFormatOpt,
    FloatLayerOpt,
    Int8DataOpt,
    Int8Opt,
    IouOpt,
    JsonOpt,
    MaxDetOpt,
    MaxErrorOpt,
    ModelOpt,
    NameOpt,
    OpsetOpt,
    QuantizerOpt,
    SplitOpt,
    TopKOpt,
    WeightsOpt,
    _choice,
    _imgsz,
    _rule,
    _threads,
)
from yolonas.cli.shared import _device, _emit_json, _model_arg, _out, _quiet, _say, run_dir
from yolonas.errors import InputError


def export(
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    format_: ExportFormatOpt = "onnx",
    output: Annotated[str | None, typer.Option("--output", "-o", help="File to write (default: beside W).")] = None,
    nms: Annotated[bool, typer.Option("--nms/--no-nms", help="NMS inside the graph.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch size.")] = False,
    dynamic_size: Annotated[bool, typer.Option("--dynamic-size", help="Dynamic height and width.")] = False,
    batch: ExportBatchOpt = None,
    imgsz: Annotated[int | None, _imgsz("the model's")] = None,
    uint8: Annotated[bool, typer.Option("--uint8", help="uint8 input, /255 inside the graph.")] = False,
    conf: ConfOpt = 0.25,
    iou: IouOpt = 0.7,
    top_k: TopKOpt = 1000,
    max_det: MaxDetOpt = 300,
    opset: OpsetOpt = 17,
    bf16: Annotated[bool, typer.Option("--bf16", help="OpenVINO: run in bf16 (AVX-512 BF16 or AMX).")] = False,
    int8: Int8Opt = False,
    data: Int8DataOpt = None,
    split: SplitOpt = "train",
    mode: Annotated[str, typer.Option("--mode", help="--int8: ptq (all INT8) or selective (the most sensitive "
                    "layers float).", callback=_choice("ptq", "selective"))] = "ptq",
    quantizer: QuantizerOpt = None,
    calib_images: CalibOpt = 64,
    seed: Annotated[int, typer.Option("--seed", help="--int8: chooses the calibration images.")] = 0,
    float_layers: FloatLayerOpt = None,
    max_error: MaxErrorOpt = None,
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Export a fused model to ONNX (raw boxes + scores, or NMS inside) or OpenVINO IR; f32, bf16 or INT8."""
    from yolonas.deploy.export import export_file  # noqa: PLC0415
    from yolonas.deploy.open import load_model  # noqa: PLC0415
    from yolonas.infer import NMSConfig  # noqa: PLC0415

    weights = _model_arg(model, weights)
    net = load_model(weights, imgsz)
    stem = Path(weights).with_suffix("") if Path(weights).suffix else Path(weights)
    all_nms = NMSConfig(score_threshold=conf, iou_threshold=iou, top_k=top_k, max_detections=max_det)
    if format_.startswith("triton"):
        if int8 or bf16:
            raise InputError("--format triton writes an f32 model with NMS inside: drop --int8 and --bf16")
        _export_triton(net, Path(output or f"{stem}_triton"), format_, all_nms, batch or 8, uint8, opset, json_out)
        return
    suffix = ".xml" if format_ == "openvino" else ".onnx"
    if int8:
        if bf16 or nms or uint8 or dynamic or dynamic_size or batch not in (None, 1):
            raise InputError("--int8 writes a raw-output, float-input, batch-1 file: drop --bf16, --nms, --uint8, "
                             "--dynamic, --dynamic-size and --batch")
        _export_int8(net, Path(output or f"{stem}_int8{suffix}"), data, name, json_out, split=split, mode=mode,
                     fmt=format_, quantizer=quantizer, calib_images=calib_images, seed=seed,
                     float_layers=float_layers or (), max_error=max_error,
                     min_speedup=None if max_error is not None else 0.5)
        return
    settings = all_nms if nms else None
    path = export_file(net, output or f"{stem}{'_bf16' if bf16 else ''}{suffix}", format_,
                       precision="bf16" if bf16 else "f32", batch=None if dynamic else batch or 1,
                       dynamic_size=dynamic_size, uint8_input=uint8, nms=settings, opset=opset)
    _say(f"export: {path}" + (f" ({settings.describe()})" if settings else " (raw boxes and scores)"))
    _emit_json({"output": str(path), "nms": settings.describe() if settings else None}, json_out)


def _export_triton(net, folder: Path, format_: str, settings, max_batch: int, uint8: bool, opset: int,
                   json_out: str | None) -> None:
    """`export --format triton`: a Triton model repository with the NMS-inside model and its config.pbtxt."""
    from yolonas.deploy.triton import export_triton  # noqa: PLC0415

    model_dir = export_triton(net, folder, backend="openvino" if format_ == "triton-openvino" else "onnxruntime",
                              nms=settings, max_batch=max_batch, uint8_input=uint8, opset=opset)
    _say(f"export: Triton model repository {model_dir.parent} ({settings.describe()})")
    _emit_json({"output": str(model_dir), "nms": settings.describe()}, json_out)


def _export_int8(net, path: Path, data: str | None, name: str | None, json_out: str | None, **settings) -> None:
    """`export --int8`: the quantize pipeline on the loaded model, its run folder under runs/quantize/."""
    from yolonas.quant.config import QuantConfig  # noqa: PLC0415
    from yolonas.quant.pipeline import quantize as run_quantize  # noqa: PLC0415

    if data is None:
        raise InputError("--int8 needs --data: the images INT8 is calibrated on (a data set or image folder)")
    result = run_quantize(net, QuantConfig(data, run_dir("quantize", name), output=path, **settings))
    _say(f"export: {path} (INT8 {result.mode}, {result.quantizer}; report in {result.run_dir})")
    _emit_json({"output": str(path), "nms": None, "int8": result.to_dict()}, json_out)


def quantize(
    data: Annotated[str, typer.Option("--data", "-d", help="Calibration images: data.yaml, COCO JSON or folder.")],
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    split: SplitOpt = "train",
    mode: Annotated[str, typer.Option("--mode", help="ptq (all INT8), selective (budgeted), qat.",
                                      callback=_choice("ptq", "selective", "qat"))] = "ptq",
    output: Annotated[str | None, typer.Option("--output", "-o", help="File to write (default: in the run).")] = None,
    calib_images: CalibOpt = 64,
    val_images: Annotated[int, typer.Option("--val-images", help="Other images the error is measured on, 0 or "
                                            "more.", callback=AT_LEAST_0)] = 16,
    method: Annotated[str, typer.Option("--method", help="percentile, minmax or entropy.",
                                        callback=_choice("percentile", "minmax", "entropy"))] = "percentile",
    percentile: Annotated[float, typer.Option("--percentile", help="With --method percentile: in (0, 100].",
                                              callback=_rule(lambda v: 0 < v <= 100, "must be in (0, 100]"))
                          ] = 99.99,
    seed: Annotated[int, typer.Option("--seed", help="Chooses the calibration and validation images.")] = 0,
    int8_activations: Annotated[bool, typer.Option("--int8-activations", help="Symmetric int8 activations "
                                "(TensorRT) instead of uint8 (faster with ONNX Runtime on x86).")] = False,
    float_layers: FloatLayerOpt = None,
    max_error: MaxErrorOpt = None,
    min_speedup: Annotated[float | None, typer.Option("--min-speedup", help="Selective: keep at least this "
                           "fraction, in [0, 1], of full INT8's speed-up.", callback=UNIT)] = None,
    imgsz: Annotated[int | None, _imgsz("the model's")] = None,
    threads: Annotated[int, _threads("for measurements")] = 2,
    format_: Annotated[str, typer.Option("--format", help="onnx (QDQ for ONNX Runtime) or openvino (IR).",
                                         callback=_choice("onnx", "openvino"))] = "onnx",
    quantizer: QuantizerOpt = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="QAT: the training recipe (default: the one "
                      "saved in the checkpoint).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="QAT epochs, at least 1 (default: the recipe's / "
                                               "10).", callback=AT_LEAST_1)] = None,
    device: DeviceOpt = "auto",
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """INT8 to a QDQ ONNX file or an OpenVINO IR: all layers (ptq), selectively from a sensitivity report, or
    after QAT."""
    from yolonas.quant.config import QuantConfig  # noqa: PLC0415
    from yolonas.quant.pipeline import quantize as run_quantize  # noqa: PLC0415

    weights = _model_arg(model, weights)
    out = run_dir("quantize", name)
    progress = None
    if json_out != "-" and not _quiet():
        progress = lambda i, n, layer: _say(f"sensitivity {i + 1}/{n}: {layer}")  # noqa: E731
    cfg = QuantConfig(data, out, output=output, split=split, mode=mode, fmt=format_, quantizer=quantizer,
                      calib_images=calib_images, val_images=val_images, method=method, percentile=percentile,
                      seed=seed, activations="int8" if int8_activations else "uint8", float_layers=float_layers or (),
                      max_error=max_error, min_speedup=min_speedup, threads=threads, imgsz=imgsz, recipe=recipe,
                      epochs=epochs, device=device)
    result = run_quantize(weights, cfg, progress=progress)
    if result.qat is not None:
        _say(f"quantize: QAT fine-tuned {result.qat.epochs} epochs -> {result.qat.weights}")
    _say(f"quantize: {result.output} ({mode}, {result.activations} activations, {method} on "
         f"{len(result.calibration['images'])} images) -> {out}")
    _emit_json(result.to_dict(), json_out)


def _bench_images(source: str | None, n: int = 8):
    import numpy as np  # noqa: PLC0415

    from yolonas.infer.sources import ImageSource  # noqa: PLC0415

    if source is not None:
        images = [image for _, image in zip(range(n), ImageSource(source), strict=False)]
        if images:
            return images, source
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)], "random 640x480 images"


def _batch_list(text: str) -> bool:
    try:
        return all(int(b) >= 1 for b in text.split(","))
    except ValueError:
        return False


def bench(
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    backend: Annotated[str, typer.Option("--backend", help="auto, fastest, torch, onnxruntime, openvino, tensorrt.",
                                         callback=_choice("auto", "fastest", "torch", "onnxruntime", "openvino",
                                                          "tensorrt"))] = "auto",
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, each at least 1, comma-separated: 1,8,32.",
                                       callback=_rule(_batch_list, "give batch sizes of at least 1, comma-separated "
                                                      "(1,8,32)"))] = "1",
    source: Annotated[str | None, typer.Option("--source", help="Images to time on (default: random).")] = None,
    runs: Annotated[int, typer.Option("--runs", help="Timed calls per batch size, at least 1.",
                                      callback=AT_LEAST_1)] = 30,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls first, 0 or more.", callback=AT_LEAST_0)] = 5,
    threads: Annotated[int | None, _threads("for the timed model")] = None,
    imgsz: Annotated[int | None, _imgsz("the model's; a checkpoint only")] = None,
    device: DeviceOpt = "auto",
    half: Annotated[bool, typer.Option("--half", help="fp16 (torch: an fp16 copy on CUDA, autocast on CPU).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile forward + decode (torch).")] = False,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="Capture and replay CUDA graphs (torch).")] = False,
    output: Annotated[str | None, typer.Option("--output", help="Also write <output>.json and .md.")] = None,
    all_paths: Annotated[bool, typer.Option("--all", help="Every path this machine has (torch, ONNX Runtime, "
                         "OpenVINO; fp32, bf16, INT8), end to end side by side; the fastest marked.")] = False,
    data: Annotated[str | None, typer.Option("--data", "-d", help="--all: INT8 calibration images (data set or "
                    "folder; default: the timed images, for timing only).")] = None,
    blocks: Annotated[int, typer.Option("--blocks", help="--all: blocks in which the paths take turns, at least 1.",
                                        callback=AT_LEAST_1)] = 5,
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Latency p50/p90/p99 and throughput, forward only and end to end with a stage breakdown; --all: what is
    fastest on this machine."""
    import torch  # noqa: PLC0415

    from yolonas.deploy.benchmark import benchmark, markdown_table  # noqa: PLC0415
    from yolonas.deploy.open import open_predictor  # noqa: PLC0415

    weights, device = _model_arg(model, weights), _device(device)
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
    results = [benchmark(predictor, images, int(b), runs, warmup, name=label) for b in batch.split(",")]
    table = markdown_table(results)
    header = (f"{weights} on {label}, {device}, {torch.get_num_threads()} torch threads, input "
              f"{pre.image_size[0]}x{pre.image_size[1]}, {warmup} warm-up + {runs} timed calls, images: {what}")
    if json_out != "-":
        _out(header + "\n\n" + table)
    result = {"weights": weights, "images": what, "results": [r.to_dict() for r in results]}
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(output + ".md").write_text(f"# Benchmark\n\n{header}\n\n{table}\n")
    _emit_json(result, json_out)


def _bench_all(weights: str, source: str | None, data: str | None, imgsz: int | None, threads: int | None,
               device: str, blocks: int, runs: int, output: str | None, name: str | None, json_out: str | None) -> None:
    """`bench --all`: build every path of a checkpoint, time them side by side, print and write the table."""
    from yolonas.deploy.open import is_exported, load_model  # noqa: PLC0415
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
        _out(markdown)
    stem = Path(output) if output else out / "paths"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{stem}.md").write_text(markdown)
    _say(f"bench: fastest here {result['fastest']}; {stem}.md, {stem}.json")
    _emit_json(result, json_out)
