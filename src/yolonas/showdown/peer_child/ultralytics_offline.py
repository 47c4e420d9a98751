"""Ultralytics, offline and contained: for the scripts that run inside the Ultralytics venv (the showdown's child
beside this file, and benchmarks/peers/, which imports this file from here).

`go_offline()` must run before the first `import ultralytics` (it reads these variables at import time); it also
installs an audit hook that refuses and records every attempt to reach the network or to pip-install, so that
"it ran offline" is checked, not assumed. `settings()` then points Ultralytics' folders into the git-ignored
venv and switches its integrations off.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

# Settings, runs, exports: inside the Ultralytics venv this runs in (.venv-ultralytics/work), never in the repo or
# the installed package.
WORK = Path(sys.prefix) / "work"
log = logging.getLogger("yolonas.showdown.child")
NETWORK_ATTEMPTS: list[str] = []


def _block_network(event: str, args: tuple) -> None:
    # Unix sockets stay allowed: torch's DataLoader workers pass tensors' file descriptors through them.
    if event == "socket.getaddrinfo" or event == "urllib.Request" or (
            event == "socket.connect" and getattr(args[0], "family", None) != socket.AF_UNIX):
        NETWORK_ATTEMPTS.append(f"{event} {args[:2]!r}"[:200])
        log.warning("[peers] blocked network access: %s", f"{event} {args[:2]!r}"[:200])
        raise OSError(f"network access blocked by the yolonas peer audit hook: {event}")
    if event == "subprocess.Popen" and "pip" in " ".join(map(str, args[1] or ())):
        NETWORK_ATTEMPTS.append(f"pip subprocess {args[1]!r}"[:200])
        raise OSError("pip subprocess blocked by the yolonas peer audit hook")


def go_offline(threads: int | None = None) -> None:
    """Environment for an offline, quiet Ultralytics, and the network audit hook; before `import ultralytics`."""
    (WORK / "config").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(WORK / "config"))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "0")
    if threads is not None:  # else `import ultralytics` sets OMP_NUM_THREADS to 1 on a 2-core machine
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    sys.addaudithook(_block_network)
    _decline_openvino_telemetry()


def _decline_openvino_telemetry() -> None:
    """OpenVINO's and NNCF's usage telemetry off in this process: the answer its opt-out gives, kept in memory.

    Without a consent file both send Google Analytics events (model conversion, quantization); the hook would refuse
    them anyway, but then they would be listed as network attempts. `opt_in_out --opt_out` would write the answer
    under ~/intel for every user of the machine instead.
    """
    try:
        from openvino_telemetry.utils import opt_in_checker  # noqa: PLC0415 - only where OpenVINO is installed
    except ImportError:
        return
    declined = opt_in_checker.ConsentCheckResult.DECLINED
    opt_in_checker.OptInChecker.check = lambda self, *args, **kwargs: declined


def settings() -> None:
    """Ultralytics' folders under WORK, every integration and sync off; after go_offline()."""
    from ultralytics.utils import SETTINGS  # noqa: PLC0415

    SETTINGS.update({"sync": False, "runs_dir": str(WORK / "runs"), "weights_dir": str(WORK / "weights"),
                     "datasets_dir": str(WORK / "datasets"), "clearml": False, "comet": False, "dvc": False,
                     "mlflow": False, "raytune": False, "tensorboard": False, "wandb": False})
