"""The PAN neck: two top-down stages that fuse three scales each, then two bottom-up stages."""

from __future__ import annotations

import torch
from torch import nn

from yolonas.arch.blocks import ConvBNAct, CSPLayer
from yolonas.arch.spec import NeckSpec, NeckStageSpec


class UpStage(nn.Module):
    """Top-down: upsample x, reduce skip1 (same scale) and downsample skip2 (2x finer), fuse all three."""

    def __init__(self, x_ch: int, skip1_ch: int, skip2_ch: int, spec: NeckStageSpec):
        super().__init__()
        out = spec.out_channels
        self.reduce_skip1 = ConvBNAct(skip1_ch, out, 1)
        self.reduce_skip2 = ConvBNAct(skip2_ch, out, 1)
        self.conv = ConvBNAct(x_ch, out, 1)
        self.upsample = nn.ConvTranspose2d(out, out, kernel_size=2, stride=2, bias=True)
        self.downsample = ConvBNAct(out, out, 3, stride=2)
        self.reduce_after_concat = ConvBNAct(out * 3, out, 1)
        self.blocks = CSPLayer(out, out, spec.num_blocks, spec.hidden_channels, spec.block,
                               spec.concat_intermediates)

    def forward(self, x: torch.Tensor, skip1: torch.Tensor, skip2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_inter = self.conv(x)
        x = self.upsample(x_inter)
        s1 = self.reduce_skip1(skip1)
        s2 = self.downsample(self.reduce_skip2(skip2))
        x = self.reduce_after_concat(torch.cat([x, s1, s2], dim=1))
        return x_inter, self.blocks(x)


class DownStage(nn.Module):
    """Bottom-up: a stride-2 conv on x to half the output width, concat with the skip, CSP."""

    def __init__(self, x_ch: int, skip_ch: int, spec: NeckStageSpec):
        super().__init__()
        half = spec.out_channels // 2
        self.conv = ConvBNAct(x_ch, half, 3, stride=2)
        self.blocks = CSPLayer(half + skip_ch, spec.out_channels, spec.num_blocks, spec.hidden_channels,
                               spec.block, spec.concat_intermediates)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(torch.cat([self.conv(x), skip], dim=1))


class PANNeck(nn.Module):
    """[c2, c3, c4, c5] -> [p3, p4, p5] at strides 8, 16, 32."""

    def __init__(self, in_channels: list[int], spec: NeckSpec):
        super().__init__()
        c2, c3, c4, c5 = in_channels
        self.neck1 = UpStage(c5, c4, c3, spec.up1)
        self.neck2 = UpStage(spec.up1.out_channels, c3, c2, spec.up2)
        self.neck3 = DownStage(spec.up2.out_channels, spec.up2.out_channels, spec.down1)
        self.neck4 = DownStage(spec.down1.out_channels, spec.up1.out_channels, spec.down2)
        self.out_channels = [spec.up2.out_channels, spec.down1.out_channels, spec.down2.out_channels]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c2, c3, c4, c5 = feats
        inter1, x = self.neck1(c5, c4, c3)
        inter2, p3 = self.neck2(x, c3, c2)
        p4 = self.neck3(p3, inter2)
        p5 = self.neck4(p4, inter1)
        return [p3, p4, p5]
