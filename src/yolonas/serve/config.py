"""The server's settings, with their checks: limits in range, and no open port without an API key."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from yolonas.errors import InputError
from yolonas.serve.images import PIL_LIMIT

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


@dataclass(frozen=True)
class ServeConfig:
    """How `yolonas serve` runs: the model, the address, batching, limits and the API key."""

    weights: str
    host: str = "127.0.0.1"
    port: int = 8000
    runtime: str | None = None  # None: fastest on a CPU, auto elsewhere
    device: str = "cpu"
    imgsz: int | None = None
    threads: int | None = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    timeout_s: float = 30.0
    max_mb: float = 20.0
    max_pixels: int = 40_000_000
    api_key: str | None = None
    insecure: bool = False

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)

    @property
    def resolved_runtime(self) -> str:
        """The runtime asked for, else the fastest path on a CPU and the file's own elsewhere."""
        return self.runtime or ("fastest" if self.device == "cpu" else "auto")

    def check(self) -> None:
        """InputError in one line for a value out of range, or a non-loopback host without an API key."""
        bounds = {"--port": (self.port, 0, 65535), "--max-batch": (self.max_batch, 1, 1024),
                  "--max-wait-ms": (self.max_wait_ms, 0, 10_000), "--max-queue": (self.max_queue, 1, 1_000_000),
                  "--timeout-s": (self.timeout_s, 0.001, 3600), "--max-mb": (self.max_mb, 0.001, 1024),
                  "--max-pixels": (self.max_pixels, 1, PIL_LIMIT)}
        for flag, (value, low, high) in bounds.items():
            if not low <= value <= high:
                raise InputError(f"{flag} {value}: give a value from {low:g} to {high:g}")
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("--api-key is empty: give a secret, or leave it out on a loopback --host")
        if not is_loopback(self.host) and not self.api_key and not self.insecure:
            raise InputError(f"--host {self.host} is reachable from other machines: give --api-key KEY (or set "
                             "YOLONAS_API_KEY), or pass --insecure to serve it without one")


def is_loopback(host: str) -> bool:
    """True for an address (or name) that only this machine reaches."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface
