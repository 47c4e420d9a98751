"""What every command uses: logging and status lines on stderr (quiet under -q), JSON output, run folders, the one
model that --model/--weights name, the device."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from yolonas.errors import InputError


class _StderrHandler(logging.StreamHandler):
    """Plain lines on sys.stderr as it is when a message comes (a redirected or captured stream included)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it once; the property reads sys.stderr each time instead
        pass


def _setup_logging(level: int) -> None:
    """The library's messages (logging) on stderr as plain lines, once per process; third-party noise off."""
    logger = logging.getLogger("yolonas")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    # NNCF imports torch.utils.cpp_extension, which warns "No CUDA runtime is found, using CUDA_HOME=..." on any
    # machine with a CUDA toolkit and no GPU: nothing the user can act on (INT8 export, bench --all, showdown).
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _quiet() -> bool:
    """True under -q: only errors reach stderr."""
    return logging.getLogger("yolonas").level >= logging.ERROR


def _say(text: str) -> None:
    """A command's status line (thresholds, summary, where the files went) on stderr, unless -q."""
    if not _quiet():
        typer.echo(text, err=True)


def _out(text: str) -> None:
    """A command's result (a table, a report, JSON) on stdout, where a pipe or a file takes it."""
    typer.echo(text)


def _show_progress(name: str) -> None:
    """A long command's progress, logged by `name` at INFO, shows on stderr unless -q."""
    logging.getLogger(name).setLevel(logging.NOTSET if _quiet() else logging.INFO)


_CREATED: list[Path] = []  # run folders made by this command: removed again when it fails and leaves them empty


def _emit_json(result: dict, target: str | None) -> None:
    if target is None:
        return
    text = json.dumps(result, indent=2)
    if target == "-":
        _out(text)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")


def run_dir(task: str, name: str | None) -> Path:
    """runs/<task>/<name>, or the next free runs/<task>/expN when no name is given."""
    from yolonas.train.runlog import run_folder  # noqa: PLC0415 - keep `yolonas --help` fast

    path = run_folder(Path("runs") / task, name, exist_ok=name is not None)
    if not path.exists():
        _CREATED.append(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _device(device: str | None) -> str:
    """--device as the library's inference code takes it: auto is cuda when torch sees a GPU, else cpu."""
    if device not in (None, "auto"):
        return device
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_arg(model: str | None, weights: str | None, required: bool = True) -> str | None:
    """The one model that --weights or --model names (a published name, a spec YAML, a checkpoint or, where the
    command runs exported files, a .onnx / .xml / .engine); None when neither is given and none is required."""

    if model and weights and model != weights:
        raise InputError(f"--model {model} and --weights {weights} name two models; give one")
    if required and not (model or weights):
        raise InputError("no model given: pass --weights best.pt (or --model yolo_nas_s for untrained weights)")
    return weights or model


def _remove_empty_run_folders() -> None:
    for path in _CREATED:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
