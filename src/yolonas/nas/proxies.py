"""Training-free accuracy estimates of a candidate: MeCo (one forward pass), #params and FLOPs as baselines."""

from __future__ import annotations

import torch
from torch import nn

from yolonas.arch.model import build
from yolonas.arch.spec import ArchSpec
from yolonas.arch.summary import summarize

PROXIES = ("meco", "params", "gflops")


@torch.no_grad()
def meco(spec: ArchSpec, images: torch.Tensor, num_classes: int = 80, channels: int = 8, seed: int = 0) -> float:
    """MeCo (Jiang et al., NeurIPS'23): the sum over layers of the smallest eigenvalue of the Pearson correlation
    matrix between channels of the layer's feature map, from one forward pass of a randomly initialised network.

    `channels` channels per layer, drawn at random, are correlated (MeCo's cheap variant): with all of them,
    deep layers of small inputs have fewer pixels than channels and every minimum eigenvalue would be 0.
    """
    torch.manual_seed(seed)
    model = build(spec, num_classes).train()  # batch statistics: a fresh network's BN running stats are a no-op
    gen = torch.Generator().manual_seed(seed)
    total = 0.0

    def hook(_module, _inputs, out):
        nonlocal total
        f = out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()  # [C, N*H*W]
        if f.shape[0] > channels:
            f = f[torch.randperm(f.shape[0], generator=gen)[:channels]]
        corr = torch.nan_to_num(torch.corrcoef(f), nan=0.0)  # a constant (dead) channel correlates with nothing
        total += float(torch.linalg.eigvalsh(corr)[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return total


def size_proxies(spec: ArchSpec, imgsz: int, num_classes: int = 80) -> dict[str, float]:
    """Parameters (fused, millions) and fused GFLOPs at a square input: the baselines every proxy must beat."""
    s = summarize(build(spec, num_classes).to("meta"), imgsz)
    return {"params": s["params_fused"] / 1e6, "gflops": s["gflops_fused"]}
