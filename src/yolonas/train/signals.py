"""SIGTERM during training: raised as `Terminated` (a KeyboardInterrupt), so that a run stopped by kill, timeout or
a scheduler ends as on Ctrl-C: its last.pt kept, and the command that resumes it said."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from yolonas.errors import Terminated


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises Terminated in the main thread; the previous handler is back after it.
    (Loader workers end on SIGTERM as on Ctrl-C by their own handler: data.loader.seed_worker.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
