"""The `yolonas` command: thin sub-commands that parse flags and call the library."""

from __future__ import annotations

import json
import sys
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


@app.callback()
def _root() -> None:
    """YOLO-NAS: train, evaluate, predict, export, quantize and search."""


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
    root = Path("runs") / task
    if name is None:
        n = 1
        while (root / (f"exp{n}" if n > 1 else "exp")).exists():
            n += 1
        name = f"exp{n}" if n > 1 else "exp"
    path = root / name
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


def _load_model(model: str | None, weights: str | None):
    """--weights wins over --model; either names a published model, a spec YAML or a checkpoint."""
    from yolonas.weights import load  # noqa: PLC0415

    return load(weights or model or "yolo_nas_s")


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
    name: NameOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Detect objects in images, folders, globs or videos; write annotated copies and predictions.json."""
    from yolonas.infer import NMSConfig, Predictor  # noqa: PLC0415
    from yolonas.infer.writer import PredictionWriter  # noqa: PLC0415

    net = _load_model(model, weights)
    if imgsz is not None:
        net.preprocessing.image_size = (imgsz, imgsz)
        net.preprocessing.longest_side = None
    net.eval().fuse()
    nms = NMSConfig(score_threshold=conf, iou_threshold=iou, max_detections=max_det)
    predictor = Predictor(net, nms=nms, device=device, batch_size=batch, half=half)
    print(f"predict: {nms.describe()}", file=sys.stderr)
    out = run_dir("predict", name)
    n_images = n_boxes = 0
    with PredictionWriter(out, save_images=save) as writer:
        for item_name, image, det in predictor.stream(source):
            writer.add(item_name, image, det)
            n_images, n_boxes = n_images + 1, n_boxes + len(det)
    skipped = predictor.skipped
    print(f"predict: {n_images} images, {n_boxes} detections, {len(skipped)} skipped -> {out}", file=sys.stderr)
    for file, reason in skipped:
        print(f"  skipped {file}: {reason}", file=sys.stderr)
    _emit_json({"run_dir": str(out), "images": n_images, "detections": n_boxes,
                "skipped": [{"file": f, "reason": r} for f, r in skipped], "predictions": writer.entries}, json_out)


def main() -> None:
    """Entry point: run the app, printing our own errors as one line."""
    try:
        app()
    except YolonasError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
