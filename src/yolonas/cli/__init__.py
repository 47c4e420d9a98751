"""The `yolonas` command: thin sub-commands that parse flags and call the library.

options (the option table, each shared flag defined once with its range check), shared (logging, status lines,
JSON, run folders), one module per group of commands: inference (info, predict, val), training (train, distill,
pseudo-label), deployment (export, quantize, bench), serving (serve), experiments (showdown, search).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Annotated

import typer

from yolonas.cli.deployment import bench, export, quantize
from yolonas.cli.experiments import search, showdown
from yolonas.cli.inference import info, predict, val
from yolonas.cli.serving import serve
from yolonas.cli.shared import _remove_empty_run_folders, _setup_logging
from yolonas.cli.training import distill, pseudo_label_cmd, train
from yolonas.errors import YolonasError

# Plain (click) help: rich's option table cuts long defaults and paths at 80 columns ("yolo_nas_s,yolov8s,yolo1…").
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="YOLO-NAS: train, evaluate, predict, export, quantize and search.")

# The sub-commands, in the order `yolonas --help` lists them.
COMMANDS = (("info", info), ("predict", predict), ("train", train), ("distill", distill),
            ("pseudo-label", pseudo_label_cmd), ("val", val), ("export", export), ("quantize", quantize),
            ("bench", bench), ("serve", serve), ("showdown", showdown), ("search", search))
for _name, _command in COMMANDS:
    app.command(_name)(_command)
# Each command's whole summary in `yolonas --help`, wrapped, where click would cut it at the terminal's width.
for _info in app.registered_commands:
    _info.short_help = _info.short_help or " ".join(_info.callback.__doc__.split())


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also the library's progress messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr (a command's result, its table "
                                        "or --json -, still goes to stdout).")] = False,
) -> None:
    """YOLO-NAS: train, evaluate, predict, export, quantize and search."""
    _setup_logging(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    if quiet:  # Python warnings too (val's skipped image, export's onnxslim fallback): -q prints only errors
        warnings.simplefilter("ignore")


def _fail(message: str, code: int = 2) -> None:
    """Leave no empty run folder behind, print `error: <message>` as one line and exit with `code`."""
    _remove_empty_run_folders()
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def main() -> None:
    """Entry point: run the app; our errors and every usage error (a flag out of range, a missing or unknown flag)
    print as one line, exit code 2."""
    # Libraries' warnings about their own internals are not the user's business on the command line.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        code = app(standalone_mode=False)  # usage errors come here instead of typer's multi-line box
    except YolonasError as e:
        _fail(str(e))
    except typer.TyperException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `yolonas` alone: the help, as typer shows it
            e.show()
            sys.exit(2)
        _fail(e.format_message(), getattr(e, "exit_code", 2) or 2)
    except (KeyboardInterrupt, typer.Abort):
        _fail_interrupted()
    if code == 130:  # typer turns Ctrl-C inside a command into exit code 130
        _fail_interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail_interrupted() -> None:
    _remove_empty_run_folders()
    typer.echo("interrupted", err=True)
    sys.exit(130)


__all__ = ["app", "main"]
