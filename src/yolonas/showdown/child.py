"""The Ultralytics child: its interpreter, its script (shipped inside this package, found with importlib.resources),
and the check, before any training, that it can run."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from yolonas.errors import InputError
from yolonas.showdown.config import ShowdownConfig, is_ours

INSTALL_HINT = "bash benchmarks/peers/ultralytics_setup.sh"
# The whole hint: the setup script of a source checkout, or any venv with Ultralytics named by the flag.
INSTALL = (f"run `{INSTALL_HINT}` in a yolonas checkout (or `python -m venv --system-site-packages .venv-ultralytics "
           "&& .venv-ultralytics/bin/pip install --no-deps ultralytics ultralytics-thop psutil`), or pass "
           "--ultralytics-python")
SCRIPT = "ultralytics_showdown.py"


def ultralytics_python(explicit: str | None = None) -> Path:
    """The interpreter of the Ultralytics venv: the flag, $YOLONAS_ULTRALYTICS_PYTHON, or .venv-ultralytics."""
    return Path(explicit or os.environ.get("YOLONAS_ULTRALYTICS_PYTHON") or ".venv-ultralytics/bin/python")


@contextlib.contextmanager
def peer_script() -> Iterator[Path]:
    """The child script as a file on disk for the block: package data of yolonas.showdown (peer_child/), beside the
    helper it imports."""
    with resources.as_file(resources.files("yolonas.showdown") / "peer_child") as folder:
        yield Path(folder) / SCRIPT


def peer_missing(python: Path) -> str | None:
    """Why the Ultralytics peer cannot run (with how to install it), or None when it can."""
    if not python.is_file():
        return f"Ultralytics is not installed ({python} not found): {INSTALL}"
    with peer_script() as script:
        if not script.is_file():
            return f"{script} is missing from this yolonas install: reinstall it"
    probe = subprocess.run([str(python), "-c", "import ultralytics"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{python} cannot import ultralytics: {INSTALL}"
    return None


def check_peers(cfg: ShowdownConfig) -> str | None:
    """Before any training: InputError naming the install command when a peer of `cfg.models` cannot run; with
    cfg.skip_missing_peers, the reason (the peers' rows then say it) instead; None when every runner is ready."""
    peers = [m for m in cfg.models if not is_ours(m)]
    why = peer_missing(ultralytics_python(cfg.ultralytics_python)) if peers else None
    if why is not None and not cfg.skip_missing_peers:
        raise InputError(f"{', '.join(peers)}: {why}; or --skip-missing-peers to run the others without them")
    return why
