"""The YOLO-NAS backbone: a QARepVGG stem, four downsampling CSP stages and an SPP context module."""

from __future__ import annotations

import torch
from torch import nn

from yolonas.arch.blocks import SPP, CSPLayer, make_block
from yolonas.arch.spec import BackboneSpec, StageSpec


class Stem(nn.Module):
    """One stride-2 block from the image to the first feature map."""

    def __init__(self, in_ch: int, out_ch: int, block: str = "qarepvgg"):
        super().__init__()
        self.conv = make_block("qarepvgg" if block == "conv" else block, in_ch, out_ch, stride=2, residual=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Stage(nn.Module):
    """A stride-2 downsample block followed by a CSP layer."""

    def __init__(self, in_ch: int, spec: StageSpec):
        super().__init__()
        down = "qarepvgg" if spec.block == "conv" else spec.block
        self.downsample = make_block(down, in_ch, spec.out_channels, stride=2, residual=False)
        self.blocks = CSPLayer(spec.out_channels, spec.out_channels, spec.num_blocks, spec.hidden_channels,
                               spec.block, spec.concat_intermediates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Backbone(nn.Module):
    """Returns [c2, c3, c4, c5]: stage1..3 outputs and the SPP output (stage4 feeds only the SPP)."""

    def __init__(self, spec: BackboneSpec, in_ch: int = 3):
        super().__init__()
        if len(spec.stages) != 4:
            raise ValueError(f"the backbone needs 4 stages, the spec has {len(spec.stages)}")
        self.stem = Stem(in_ch, spec.stem_channels, spec.stem_block)
        ch = spec.stem_channels
        for i, s in enumerate(spec.stages, start=1):
            setattr(self, f"stage{i}", Stage(ch, s))
            ch = s.out_channels
        self.context_module = SPP(ch, spec.spp_channels, spec.spp_kernels)
        self.out_channels = [s.out_channels for s in spec.stages[:3]] + [spec.spp_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        c2 = self.stage1(x)
        c3 = self.stage2(c2)
        c4 = self.stage3(c3)
        c5 = self.context_module(self.stage4(c4))
        return [c2, c3, c4, c5]
