"""CPU threads of a showdown step: the number the config asks for (torch_threads, which sets it for a step, lives
in deploy.timing)."""

from __future__ import annotations

import torch


def resolve_threads(requested: int | None) -> int:
    """`--threads`, or torch's current intra-op thread count when it is not given."""
    return requested or torch.get_num_threads()
