"""What the server tests share: a tiny trained checkpoint, and `yolonas serve` started for real through the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from conftest import fit_first_coco_images

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-5f1c"


def tiny_checkpoint(coco128: Path, folder: Path) -> tuple[Path, list[Path]]:
    """yolo_nas_tiny trained for a few steps on 4 coco128 images at 128 px: (best.pt, the images). Its scores sit
    near 0.01, so the tests ask for conf 0.01: a real checkpoint with plenty of boxes, quickly."""
    result, _, images = fit_first_coco_images(coco128, folder, n=4, imgsz=128, epochs=3, lr=1e-2, warmup_epochs=1)
    return Path(result.best), images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(weights: Path, *flags: str, host: str = "127.0.0.1", key: str | None = None,
           ready_s: float = 180) -> Iterator[str]:
    """`python -m yolonas.cli serve --weights W ...` on a free port of `host`; yields its loopback base URL once
    /readyz answers 200, and stops the process (SIGTERM, then SIGKILL) afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "yolonas.cli", "serve", "--weights", str(weights), "--host", host, "--port",
           str(port), "--runtime", "torch", *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    if key is not None:
        env["YOLONAS_API_KEY"] = key
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, ready_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _wait_ready(proc: subprocess.Popen, url: str, ready_s: float) -> None:
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"yolonas serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"yolonas serve was not ready within {ready_s} s")
