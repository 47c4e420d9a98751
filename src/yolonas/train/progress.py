"""The progress bar of one training epoch, with the running mean losses (rank 0, when verbose and on a terminal)."""

from __future__ import annotations

import math
import sys
import time

import torch


class EpochProgress:
    """A context giving `advance(losses)`: a rich progress bar for one epoch whose description shows the running
    mean losses; `advance` does nothing when disabled."""

    def __init__(self, title: str, total: int, enabled: bool, keys: tuple[str, ...], read_every_s: float = 1.0):
        self.title, self.total, self.enabled, self.keys = title, total, enabled, keys
        self.sums, self.n = None, 0
        # The losses live on the device: reading them waits for it, so the text is refreshed at most this often.
        self.read_every_s, self.last_read = read_every_s, -math.inf

    def __enter__(self):
        if not self.enabled:
            return lambda losses: None
        from rich.progress import (  # noqa: PLC0415 - rich draws only when there is someone to see it
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), transient=True,
                            disable=not sys.stdout.isatty())
        self.bar.start()
        self.task = self.bar.add_task(self.title, total=self.total, losses="")
        return self.advance

    def advance(self, losses: torch.Tensor) -> None:
        values = losses.detach().float()
        self.sums = values if self.sums is None else self.sums + values
        self.n += 1
        now = time.perf_counter()
        if now - self.last_read < self.read_every_s and self.n < self.total:
            self.bar.update(self.task, advance=1)
            return
        self.last_read = now
        mean = (self.sums / self.n).tolist()
        text = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in zip(self.keys, mean))
        self.bar.update(self.task, advance=1, losses=text)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
