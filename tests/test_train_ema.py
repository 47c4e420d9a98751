"""The EMA keeps following the model after either one's tensors were reallocated by .to()."""

from __future__ import annotations

import torch

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.train.ema import ModelEMA


def test_ema_follows_after_channels_last_conversion():
    """Validation converts the EMA model to channels-last (the predictor's backend does); updates must still land."""
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), 3)
    ema = ModelEMA(model, decay=0.5, threshold=False)
    ema.update(model)
    ema.module.to(memory_format=torch.channels_last)  # reallocates every 4D weight of the EMA copy
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    w_model = model.backbone.stem.conv.branch_3x3.conv.weight
    w_ema = ema.module.backbone.stem.conv.branch_3x3.conv.weight
    # decay 0.5: the EMA moved halfway towards the shifted weights, in the tensor the module really uses.
    assert torch.allclose(w_ema, w_model - 0.5, atol=1e-6)
