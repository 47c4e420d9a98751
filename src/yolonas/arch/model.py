"""YoloNAS: the detector built from an ArchSpec, with fusion for inference."""

from __future__ import annotations

import torch
from torch import nn

from yolonas.arch.backbone import Backbone
from yolonas.arch.blocks import ConvBNAct, QARepVGGBlock, RepVGGBlock
from yolonas.arch.head import DFLHeads, HeadOutput, decode_boxes
from yolonas.arch.neck import PANNeck
from yolonas.arch.spec import ArchSpec
from yolonas.preprocess import Preprocessing


class YoloNAS(nn.Module):
    """A YOLO-NAS detector. `forward` returns the raw `HeadOutput`; `decode` turns it into boxes and scores."""

    def __init__(self, spec: ArchSpec, num_classes: int = 80, class_names: list[str] | None = None,
                 preprocessing: Preprocessing | None = None):
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.spec = spec
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.preprocessing = preprocessing or Preprocessing()
        self.backbone = Backbone(spec.backbone, spec.in_channels)
        self.neck = PANNeck(self.backbone.out_channels, spec.neck)
        self.heads = DFLHeads(self.neck.out_channels, spec.head, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = spec.bn_eps, spec.bn_momentum

    @property
    def num_classes(self) -> int:
        return self.heads.num_classes

    @property
    def stride(self) -> int:
        return max(self.spec.head.strides)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return self.heads(self.neck(self.backbone(x)))

    def decode(self, out: HeadOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes [B, N, 4] xyxy in input pixels, scores [B, N, C])."""
        return decode_boxes(out, self.spec.head.reg_max)

    @torch.no_grad()
    def fuse(self, partial: bool = False) -> YoloNAS:
        """Re-parameterise in place for inference: every RepVGG block becomes one 3x3 conv, every BN folded.

        `partial=True` keeps each QARepVGG block's post-sum BN and all other BNs (quantization-aware training).
        """
        if self.training:
            raise RuntimeError("fuse() needs eval mode (BN statistics are frozen into the weights): call model.eval()")
        self.fuse_blocks(self, partial)
        # Checkpoints record this so that a partially fused (QAT) model saves and loads like any other.
        self.fusion = "full" if not partial or getattr(self, "fusion", None) == "full" else "partial"
        return self

    @staticmethod
    @torch.no_grad()
    def fuse_blocks(module: nn.Module, partial: bool = False) -> nn.Module:
        """The step of `fuse` that any module takes (a part of a network too): in place, every RepVGG block
        first, then every conv+BN pair; returns `module`."""
        for m in [m for m in module.modules() if isinstance(m, (QARepVGGBlock, RepVGGBlock))]:
            m.fuse(partial)
        for m in [m for m in module.modules() if isinstance(m, ConvBNAct)]:
            m.fuse(partial)
        return module

    @property
    def is_fused(self) -> bool:
        return any(getattr(m, "fused", None) for m in self.modules())

    def replace_classes(self, class_names: list[str]) -> None:
        """Swap the classification layers for `len(class_names)` classes; everything else is kept."""
        n = len(class_names)
        for head in self.heads.levels():
            old = head.cls_pred
            new = nn.Conv2d(old.in_channels, n, 1).to(old.weight.device, old.weight.dtype)
            nn.init.constant_(new.bias, old.bias.detach().mean().item() if n else 0.0)
            head.cls_pred = new
        self.heads.num_classes = n
        self.class_names = list(class_names)

    def predict(self, source, **kwargs):
        """Detect objects in images, a folder, a glob or a video: see `yolonas.infer.Predictor`."""
        from yolonas.infer.predictor import Predictor  # noqa: PLC0415 - the one allowed upward import

        return Predictor(self, **kwargs).predict(source)

    def save(self, path, **extra) -> None:
        """Write a self-describing checkpoint that `yolonas.load(path)` reads back."""
        from yolonas.weights import save_checkpoint  # noqa: PLC0415 - the one allowed upward import

        save_checkpoint(self, path, **extra)


def build(spec: ArchSpec, num_classes: int = 80, class_names: list[str] | None = None,
          preprocessing: Preprocessing | None = None) -> YoloNAS:
    """Build a randomly initialised detector from a spec."""
    if class_names is not None:
        num_classes = len(class_names)
    return YoloNAS(spec, num_classes, class_names, preprocessing)
