"""CPU threads of a showdown step: the number the config asks for, set for the step and given back after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_threads(requested: int | None) -> int:
    """`--threads`, or torch's current intra-op thread count when it is not given."""
    return requested or torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """torch's intra-op thread count set to `threads` inside the block and restored after it, also on error."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
