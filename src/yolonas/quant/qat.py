"""Quantization-aware training: fake INT8 on every conv of a partially fused model, fine-tuned by the trainer.

The model is fused with `partial=True` first (each QARepVGG block becomes one 3x3 conv followed by its post-sum
BN, as super-gradients does before QAT), then every `nn.Conv2d` becomes a `FakeQuantConv2d`: its weight is
rounded per output channel to symmetric INT8 and its input per tensor to the activation type the ONNX Runtime
export uses, with a straight-through gradient. Activation ranges come from calibration images and stay fixed
(super-gradients' default, `learn_amax: False`). The swap keeps parameter names, so checkpoints written during
QAT load into a partially fused model with strict key matching; the fake-quant state is not saved, because the
deployed INT8 model is calibrated again by `yolonas.quant.ptq` from the fine-tuned float weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
from torch import nn

from yolonas.arch.model import YoloNAS
from yolonas.errors import InputError
from yolonas.train.config import TrainConfig

ACTIVATION_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


class FakeQuantConv2d(nn.Conv2d):
    """An `nn.Conv2d` with fake INT8 weights (per output channel, symmetric) and input (per tensor)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, activations: str = "uint8") -> FakeQuantConv2d:
        """Wrap `conv`, sharing its parameters (same names, same tensors)."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.__dict__.update({k: v for k, v in conv.__dict__.items() if not k.startswith("_")})
        q._parameters = conv._parameters
        q._buffers = dict(conv._buffers)
        q.activations = activations
        q.quant_min, q.quant_max = ACTIVATION_RANGES[activations]
        q.register_buffer("act_scale", torch.ones(()), persistent=False)
        q.register_buffer("act_zero_point", torch.zeros((), dtype=torch.int32), persistent=False)
        q.register_buffer("act_min", torch.full((), math.inf), persistent=False)
        q.register_buffer("act_max", torch.full((), -math.inf), persistent=False)
        q.calibrating, q.enabled = False, True
        q.observed: list[torch.Tensor] = []
        return q

    def set_range(self, low: float, high: float) -> None:
        """Fix the input's quantization grid from its calibrated range (which always includes 0)."""
        low, high = min(low, 0.0), max(high, 0.0)
        if self.activations == "int8":  # symmetric, zero point 0: what TensorRT requires
            scale, zero = max(abs(low), abs(high)) / 127.0, 0
        else:
            scale = (high - low) / 255.0
            zero = round(-low / scale) if scale > 0 else 0
        self.act_scale.fill_(max(scale, 1e-8))
        self.act_zero_point.fill_(int(zero))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observed.append(x.detach().float().flatten()[:: max(1, x.numel() // 200_000)])
            self.act_min.copy_(torch.minimum(self.act_min, x.detach().min().float()))
            self.act_max.copy_(torch.maximum(self.act_max, x.detach().max().float()))
            return self._conv_forward(x, self.weight, self.bias)
        if not self.enabled:
            return self._conv_forward(x, self.weight, self.bias)
        dtype = x.dtype
        xq = torch.fake_quantize_per_tensor_affine(x.float(), self.act_scale, self.act_zero_point,
                                                   self.quant_min, self.quant_max).to(dtype)
        w = self.weight.float()
        scale = (w.detach().abs().amax(dim=(1, 2, 3)) / 127.0).clamp_min(1e-8)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        wq = torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127).to(self.weight.dtype)
        return self._conv_forward(xq, wq, self.bias)


def fake_quant_convs(model: nn.Module) -> dict[str, FakeQuantConv2d]:
    """The model's fake-quant convs by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantConv2d)}


def _swap(model: nn.Module, make) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = make(child)
            if new is not None:
                setattr(parent, name, new)


@torch.no_grad()
def prepare_qat(model: YoloNAS, batches: Iterable[torch.Tensor], *, activations: str = "uint8",
                method: str = "percentile", percentile: float = 99.99, float_layers: Iterable[str] = ()) -> YoloNAS:
    """Partially fuse `model` in place, give every conv (but `float_layers`) fake INT8, and calibrate its input
    ranges on `batches` (letterboxed [B, 3, H, W] floats in [0, 1]). Returns the model, in eval mode."""
    if activations not in ACTIVATION_RANGES:
        raise InputError(f"activations {activations!r}: use {' or '.join(ACTIVATION_RANGES)}")
    if method not in ("minmax", "percentile"):
        raise InputError(f"QAT calibration method {method!r}: use minmax or percentile")
    if getattr(model, "fusion", None) == "full":
        raise InputError("QAT needs an unfused or partially fused model (post-sum BNs kept), not a fully fused one")
    model.eval().fuse(partial=True)
    keep = set(float_layers)
    names = {id(m): n for n, m in model.named_modules()}
    _swap(model, lambda m: FakeQuantConv2d.from_conv(m, activations)
          if type(m) is nn.Conv2d and names.get(id(m)) not in keep else None)
    convs = fake_quant_convs(model)
    if not convs:
        raise InputError("QAT: the model has no convolution to quantize")
    device = next(model.parameters()).device
    for m in convs.values():
        m.calibrating = True
    seen = 0
    for x in batches:
        model(x.to(device))
        seen += len(x)
    if seen == 0:
        raise InputError("QAT calibration: no images")
    for m in convs.values():
        m.calibrating = False
        low, high = m.act_min.item(), m.act_max.item()
        if method == "percentile":
            values = torch.cat(m.observed)
            q = torch.tensor([(100 - percentile) / 100, percentile / 100], device=values.device)
            low_p, high_p = torch.quantile(values[: 16_000_000], q).tolist()
            low, high = max(low, low_p), min(high, high_p)
        m.observed = []
        m.set_range(low, high)
    return model


def qat_config(cfg: TrainConfig) -> TrainConfig:
    """The published QAT changes to a training recipe: batch / 2, epochs and warm-up / 10, lr and weight decay
    x 0.01, cosine to 1% of the lr, EMA and SyncBN off (super-gradients' `modify_params_for_qat`)."""
    data = dataclasses.replace(cfg.data, batch_size=max(1, cfg.data.batch_size // 2))
    sched = dataclasses.replace(cfg.schedule, epochs=max(1, round(cfg.schedule.epochs / 10)),
                                warmup_epochs=cfg.schedule.warmup_epochs / 10,
                                warmup_steps=cfg.schedule.warmup_steps // 10, warmup_lr=cfg.schedule.warmup_lr * 0.01,
                                close_mosaic_epochs=round(cfg.schedule.close_mosaic_epochs / 10), final_lr_ratio=0.01)
    optim = dataclasses.replace(cfg.optimizer, lr=cfg.optimizer.lr * 0.01,
                                weight_decay=cfg.optimizer.weight_decay * 0.01)
    ema = dataclasses.replace(cfg.ema, enabled=False)
    run = dataclasses.replace(cfg.run, sync_bn=False)
    return dataclasses.replace(cfg, data=data, schedule=sched, optimizer=optim, ema=ema, run=run)


def qat(weights: str, cfg: TrainConfig, *, calib_images: int = 64, seed: int = 0, activations: str = "uint8",
        method: str = "percentile", percentile: float = 99.99, float_layers: Iterable[str] = (),
        batch_size: int = 8, epochs: int | None = None):
    """Fine-tune the trained checkpoint `weights` with fake INT8 on `cfg.data` (cfg is the recipe it was trained
    with; `qat_config` applies the QAT changes). Calibration images come from the training split, drawn by
    `seed`, letterboxed as at inference. Returns the trainer's `TrainResult`; its best.pt is partially fused and
    float, ready for `yolonas export` and `yolonas quantize`."""
    from yolonas.data.images import select_images  # noqa: PLC0415
    from yolonas.data.splits import source_images  # noqa: PLC0415
    from yolonas.quant.calibration import load_batch  # noqa: PLC0415
    from yolonas.train.trainer import train  # noqa: PLC0415
    from yolonas.weights import load  # noqa: PLC0415

    model = load(weights)
    device = torch.device(cfg.run.device if cfg.run.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    files = select_images(source_images(cfg.data.path, "train"), calib_images, seed)
    pre = dataclasses.replace(model.preprocessing, image_size=(cfg.data.image_size, cfg.data.image_size))
    batches = (torch.from_numpy(load_batch(files[i:i + batch_size], pre)) for i in range(0, len(files), batch_size))
    prepare_qat(model, batches, activations=activations, method=method, percentile=percentile,
                float_layers=float_layers)
    cfg = qat_config(cfg)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, epochs=epochs))
    return train(cfg, model=model)


def training_config(weights: str, data: str, recipe: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """The config a checkpoint was trained with (saved in our last.pt/best.pt), else `recipe`'s, pointed at
    `data`, with `overrides` (dotted keys, as on the train command line); `qat_config` then makes it QAT's."""
    from yolonas.train.config import apply_overrides, load_recipe  # noqa: PLC0415
    from yolonas.weights import read_checkpoint  # noqa: PLC0415

    saved = read_checkpoint(weights).get("config") if str(weights).endswith((".pt", ".pth")) else None
    if recipe is not None or saved is None:
        cfg = load_recipe(recipe or "scratch_small_data")
    else:
        cfg = TrainConfig.from_dict(saved, f"{weights} config")
    return apply_overrides(cfg, {"data.path": str(data), "run.resume": False, **(overrides or {})})
