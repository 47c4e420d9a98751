"""Size and compute of a model: parameters, GFLOPs and state_dict entries, unfused and fused, per part."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yolonas.arch.model import YoloNAS

PARTS = ("backbone", "neck", "heads")


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _gflops_per_part(model: YoloNAS, imgsz: int) -> dict[str, float]:
    """GFLOPs (2 x multiply-adds) at a square input, per top-level part, via torch's flop counter."""
    # On the meta device the counter sees every op's shapes without computing anything: instant at 640.
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, model.spec.in_channels, imgsz, imgsz, device="meta"))
    per_module = counter.get_flop_counts()
    return {part: sum(per_module.get(f"YoloNAS.{part}", {}).values()) / 1e9 for part in PARTS}


def summarize(model: YoloNAS, imgsz: int = 640) -> dict:
    """A dict of the model's size and compute; the model itself is left untouched."""
    unfused = copy.deepcopy(model).to("meta").eval()
    fused = copy.deepcopy(unfused).fuse()
    g_unfused, g_fused = _gflops_per_part(unfused, imgsz), _gflops_per_part(fused, imgsz)
    parts = {
        part: {
            "params": _params(getattr(unfused, part)),
            "params_fused": _params(getattr(fused, part)),
            "gflops": g_unfused[part],
            "gflops_fused": g_fused[part],
        }
        for part in PARTS
    }
    placeholders = sum(p.numel() for n, p in unfused.named_parameters() if "rbr_reparam" in n)
    return {
        "name": model.spec.name,
        "num_classes": model.num_classes,
        "imgsz": imgsz,
        "params": _params(unfused),
        "params_fused": _params(fused),
        "params_trainable": _params(unfused) - placeholders,
        "rbr_reparam_params": placeholders,
        "gflops": sum(g_unfused.values()),
        "gflops_fused": sum(g_fused.values()),
        "state_dict_entries": len(unfused.state_dict()),
        "parts": parts,
    }
