"""Exponential moving average of a model's weights, with super-gradients' threshold decay schedule."""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or DataParallel) wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def _storage_key(model: nn.Module) -> tuple[int, ...]:
    """Where the model's first parameter and buffer live: changes when .to() reallocates them."""
    first_param = next(model.parameters(), None)
    first_buffer = next(model.buffers(), None)
    return tuple(t.data_ptr() for t in (first_param, first_buffer) if t is not None)


class ModelEMA:
    """EMA of every floating-point parameter and buffer; integer buffers (BN batch counters) are copied.

    With `threshold=True` the decay at update t is min(decay, (1 + t) / (10 + t)), so early weights, which
    are far from good, are forgotten quickly.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9997, threshold: bool = True, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.threshold = threshold
        self.updates = updates
        self._pairs: tuple | None = None  # (source model, ema floats, source floats, ema ints, source ints)

    def decay_at(self, t: int) -> float:
        return min(self.decay, (1 + t) / (10 + t)) if self.threshold else self.decay

    def _tensor_pairs(self, model: nn.Module) -> tuple:
        # state_dict() on every step costs more than the update itself on a GPU: pair the tensors once, and
        # again whenever either model's tensors were reallocated (.to(device / channels_last) by a predictor
        # during validation), else the EMA would go on updating orphaned copies of its own weights.
        key = (model, _storage_key(model), _storage_key(self.module))
        if self._pairs is None or self._pairs[0] != key:
            source = model.state_dict(keep_vars=True)
            floats, ints = ([], []), ([], [])
            for name, v in self.module.state_dict(keep_vars=True).items():
                group = floats if v.dtype.is_floating_point else ints
                group[0].append(v.data)
                group[1].append(source[name].data)
            self._pairs = (key, *floats, *ints)
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay_at(self.updates)
        _, ema_f, src_f, ema_i, src_i = self._tensor_pairs(unwrap(model))
        if ema_f:  # one fused kernel launch per group instead of one per tensor
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        if ema_i:
            torch._foreach_copy_(ema_i, src_i)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state, strict=True)
        self.updates = updates
