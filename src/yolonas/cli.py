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


def main() -> None:
    """Entry point: run the app, printing our own errors as one line."""
    try:
        app()
    except YolonasError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
