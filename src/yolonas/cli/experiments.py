"""The long experiments on top of the library: showdown (ours against Ultralytics' models) and search (the
architecture search)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from yolonas.cli.options import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    STRIDE,
    STRIDES,
    AroundOpt,
    AroundStepsOpt,
    CalibOpt,
    DeviceOpt,
    JsonOpt,
    NameOpt,
    PopulationOpt,
    ProxyOpt,
    SeedOpt,
    SkipMissingPeersOpt,
    UltralyticsPythonOpt,
    _choice,
    _imgsz,
    _threads,
)
from yolonas.cli.shared import _device, _emit_json, _out, _quiet, _say, run_dir
from yolonas.errors import InputError


def showdown(
    data: Annotated[str, typer.Option("--data", "-d", help="A data.yaml (its train split trains, --split scores), or "
                                      "several comma-separated: one sub-run each, then a summary.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated: yolo_nas_s|m|l (ours; yolo_nas_tiny for "
                                        "quick checks) and Ultralytics' yolov8n|s|m|l, yolo11n|s|m|l, yolo26n|s|m|l.")
                      ] = "yolo_nas_s,yolov8s,yolo11s,yolo26s",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per model (with --budget or --minutes: the ceiling), "
                                        "at least 1.", callback=AT_LEAST_1)] = 100,
    minutes: Annotated[float | None, typer.Option("--minutes", help="Training minutes per model, more than 0: each "
                       "model gets the epochs that fit, from a short probe of its own (saved, reused for every seed), "
                       "with a full schedule for them; the report flags a run off by more than 10%.",
                       callback=ABOVE_0)] = None,
    budget: Annotated[float | None, typer.Option("--budget", help="Minutes for the whole call, more than 0, split "
                      "over the data sets: a 1-epoch probe per model, then the same epochs for all that fit (not "
                      "with --minutes).", callback=ABOVE_0)] = None,
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Our models' recipe (a name or YAML); auto: cpu_s320 "
                      "on a CPU (bf16 autocast where the CPU has native bf16), scratch_small_data on a GPU. The "
                      "showdown's data, size, batch, epochs, seed, workers and device override it; Ultralytics' "
                      "models train with its defaults.")] = "auto",
    seeds: Annotated[int, typer.Option("--seeds", help="Runs per model (seeds --seed, --seed + 1, ...), at least 1: "
                     "the table keeps mean and spread, and calls differences under the spread a tie.",
                     callback=AT_LEAST_1)] = 1,
    imgsz: Annotated[int, _imgsz("640")] = 640,
    batch: Annotated[int, typer.Option("--batch", help="Images per training step, at least 1.",
                                       callback=AT_LEAST_1)] = 16,
    device: DeviceOpt = "auto",
    backend: Annotated[str, typer.Option("--backend", help="fp32 latency backend (INT8 IRs run on OpenVINO).")
                       ] = "onnxruntime",
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Also make and score each family's own OpenVINO "
                                       "INT8.")] = True,
    split: Annotated[str, typer.Option("--split", help="The data.yaml key that is scored.")] = "val",
    calib_images: CalibOpt = 64,
    workers: Annotated[int | None, typer.Option("--workers", help="Loader processes per training, 0 or more "
                       "(default: up to 4, no more than the CPUs).", callback=AT_LEAST_0)
                       ] = None,
    threads: Annotated[int | None, _threads("for training (every family) and for timing")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The first seed.")] = 0,
    ultralytics_python: UltralyticsPythonOpt = None,
    skip_missing_peers: SkipMissingPeersOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Redo runs whose result is in the run folder.")] = False,
    name: Annotated[str, typer.Option("--name", help="The run folder runs/showdown/<name>/ (results merge).")] = "exp",
    json_out: JsonOpt = None,
) -> None:
    """YOLO-NAS vs YOLOv8, YOLO11, YOLO26, each trained its own framework's way for the same epochs or (--minutes)
    the same time, scored by one COCO evaluator, each on its fastest CPU path: a table and frontier plot per data set,
    a summary over them, JSON. A call cut off resumes where it stopped: row by row, and inside a row from its
    last.pt."""
    from yolonas.showdown import ShowdownConfig  # noqa: PLC0415

    defaults = {} if workers is None else {"workers": workers}  # else ShowdownConfig's, from the CPU count
    cfg = ShowdownConfig(data=data, models=tuple(m.strip() for m in models.split(",") if m.strip()), epochs=epochs,
                         budget_minutes=budget, minutes=minutes, recipe=recipe, seeds=seeds, imgsz=imgsz, batch=batch,
                         device=device, backend=backend, int8=int8, split=split, calib_images=calib_images,
                         threads=threads, seed=seed,
                         ultralytics_python=ultralytics_python, skip_missing_peers=skip_missing_peers, force=force,
                         name=name, command="yolonas " + " ".join(sys.argv[1:]), **defaults)
    _run_showdown(cfg, json_out)


def _run_showdown(cfg, json_out: str | None) -> None:
    """`showdown`: run the campaign with its progress on stderr (unless -q), print the reports, fail when a run did."""
    from yolonas.showdown import run_showdown  # noqa: PLC0415

    # A campaign runs for hours: its progress (each run's result file, the budget's epochs, the child's command)
    # shows on stderr unless --quiet, as it goes.
    progress = logging.getLogger("yolonas.showdown")
    level = progress.level
    if not _quiet():
        progress.setLevel(logging.INFO)
    try:
        result = run_showdown(cfg)
    finally:
        progress.setLevel(level)
    if json_out != "-":
        for folder in result["datasets"].values():
            _out(Path(folder, "showdown.md").read_text())
        _out(Path(result["run_dir"], "summary.md").read_text())
    _emit_json(result, json_out)
    if result["failed"]:  # the report is written and every other row complete; the call still says it failed
        raise InputError(f"{len(result['failed'])} run(s) failed: {'; '.join(result['failed'])}")


def search(
    data: Annotated[str, typer.Option("--data", "-d", help="data.yaml, COCO JSON or dataset folder.")],
    backend: Annotated[str, typer.Option("--backend", help="Latency target: onnxruntime, torch, openvino.",
                                         callback=_choice("onnxruntime", "torch", "openvino"))] = "onnxruntime",
    precision: Annotated[str, typer.Option("--precision", help="fp32; fp16 (torch on cuda); int8 (the QDQ model "
                                           "`yolonas quantize` writes; onnxruntime, openvino).",
                                           callback=_choice("fp32", "fp16", "int8"))] = "fp32",
    imgsz: Annotated[str, typer.Option("--imgsz", help="Square input size in pixels, a multiple of 32, or several "
                                       "comma-separated to search.", callback=STRIDES)] = "320",
    trials: Annotated[int, typer.Option("--trials", help="Trials in total (a resumed run adds the rest), at least 1.",
                                        callback=AT_LEAST_1)] = 40,
    latency_cap: Annotated[float | None, typer.Option("--latency-cap", help="Max predicted latency (ms), more than "
                                                      "0.", callback=ABOVE_0)] = None,
    latency_cap_ratio: Annotated[float | None, typer.Option("--latency-cap-ratio", help="Max predicted latency as a "
                                 "fraction of --around's (else yolo_nas_s's) at the largest --imgsz, more than 0.",
                                 callback=ABOVE_0)] = None,
    threads: Annotated[int, _threads("of the latency target")] = 2,
    proxy: ProxyOpt = None,
    around: AroundOpt = None,
    around_steps: AroundStepsOpt = 1,
    population: PopulationOpt = 16,
    train_top: Annotated[int, typer.Option("--train-top", help="Front members to train briefly (0: none).",
                                           callback=AT_LEAST_0)] = 0,
    train_epochs: Annotated[int, typer.Option("--train-epochs", help="Epochs of that brief training, at least 1.",
                                              callback=AT_LEAST_1)] = 3,
    train_imgsz: Annotated[int, typer.Option("--train-imgsz", help="Its input size, a multiple of 32.",
                                             callback=STRIDE)] = 160,
    train_images: Annotated[int, typer.Option("--train-images", help="Its first N train and val images, at least 1.",
                                              callback=AT_LEAST_1)] = 64,
    latency_table: Annotated[str | None, typer.Option("--latency-table", help="Latency cache JSON (default: "
                                                      "runs/search/latency_table.json).")] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Hardware-aware architecture search; runs/search/<name>/ gets the front, its plot and one spec YAML each."""
    from yolonas.nas import SearchConfig, SearchSpace  # noqa: PLC0415
    from yolonas.nas import search as run_search  # noqa: PLC0415
    from yolonas.weights import load  # noqa: PLC0415

    sizes = tuple(int(s) for s in imgsz.split(","))
    reference = load(around).spec if around else None
    space = SearchSpace.around(reference, around_steps, sizes) if around else SearchSpace(imgsz=sizes)
    cfg = SearchConfig(data=data, out=run_dir("search", name), space=space, backend=backend, device=_device(device),
                       precision=precision, imgsz=sizes, trials=trials, latency_cap=latency_cap, threads=threads,
                       latency_cap_ratio=latency_cap_ratio, reference=reference,
                       # near one model MeCo ranked aquarium-trained nets backwards (tau -0.60), GFLOPs +0.40
                       proxy=proxy or ("gflops" if around else "meco"),
                       population=population, seed=seed, train_top=train_top, train_epochs=train_epochs,
                       train_imgsz=train_imgsz, train_images=train_images,
                       latency_table=Path(latency_table) if latency_table else None,
                       progress=json_out != "-" and not _quiet())
    result = run_search(cfg)  # why a front is empty, the library says as a warning
    _say(_search_line(result, cfg.out))
    _emit_json(result.to_dict(), json_out)


def _search_line(result, out: Path) -> str:
    """search's last line: trials, the front's size, the latency cap, where the files are."""
    cap = ""
    if result.latency_cap_ms is not None:
        ratio = result.latency_cap_ratio
        of = f", x{ratio:g} of {result.latency_reference}" if ratio else ""
        cap = f" (latency cap {result.latency_cap_ms:.2f} ms{of})"
    return (f"search: {result.trials} trials, {len(result.front)} on the front{cap} -> {out}/front.md, "
            "front.png, specs/")
