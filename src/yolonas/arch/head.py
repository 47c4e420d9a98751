"""The anchor-free DFL head: per level a stem, decoupled cls/reg convs, and a distribution per box side."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from yolonas.arch.blocks import HeadConv
from yolonas.arch.spec import HeadSpec


class HeadOutput(NamedTuple):
    """Raw head predictions for all levels, flattened to N anchor points (N = sum of H*W)."""

    cls_logits: torch.Tensor  # [B, N, C]
    reg_distri: torch.Tensor  # [B, N, 4 * (reg_max + 1)], sides l, t, r, b, side-major
    anchor_points: torch.Tensor  # [N, 2] cell centres in input pixels
    stride_tensor: torch.Tensor  # [N, 1]


class DFLHead(nn.Module):
    """One level of the head (super-gradients' `YoloNASDFLHead`)."""

    def __init__(self, in_ch: int, width: int, num_classes: int, reg_max: int):
        super().__init__()
        self.stem = HeadConv(in_ch, width, 1)
        self.cls_convs = nn.Sequential(HeadConv(width, width, 3))
        self.reg_convs = nn.Sequential(HeadConv(width, width, 3))
        self.cls_pred = nn.Conv2d(width, num_classes, 1)
        self.reg_pred = nn.Conv2d(width, 4 * (reg_max + 1), 1)
        # A 1% prior on every class, so the loss does not start swamped by easy negatives.
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return self.cls_pred(self.cls_convs(x)), self.reg_pred(self.reg_convs(x))


def make_anchor_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], offset: float = 0.5,
                       device: torch.device | None = None, dtype: torch.dtype = torch.float32,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres in pixels ([N, 2], x then y) and their strides ([N, 1]) for feature maps of `sizes`."""
    points, strides_out = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + offset) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + offset) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], -1).reshape(-1, 2))
        strides_out.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(strides_out)


class DFLHeads(nn.Module):
    """Three `DFLHead`s at strides 8/16/32 (super-gradients' `NDFLHeads`)."""

    def __init__(self, in_channels: list[int], spec: HeadSpec, num_classes: int):
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        for i, (c, w) in enumerate(zip(in_channels, spec.widths), start=1):
            setattr(self, f"head{i}", DFLHead(c, w, num_classes, spec.reg_max))

    def levels(self) -> list[DFLHead]:
        return [self.head1, self.head2, self.head3]

    def forward(self, feats: list[torch.Tensor]) -> HeadOutput:
        cls_all, reg_all, sizes = [], [], []
        for head, f in zip(self.levels(), feats):
            cls, reg = head(f)
            sizes.append((f.shape[2], f.shape[3]))
            cls_all.append(cls.flatten(2))
            reg_all.append(reg.flatten(2))
        cls_logits = torch.cat(cls_all, dim=2).permute(0, 2, 1)
        reg_distri = torch.cat(reg_all, dim=2).permute(0, 2, 1)
        # float32 even under autocast: bf16 cannot hold cell centres beyond 1024 px exactly.
        points, strides = make_anchor_points(sizes, self.spec.strides, self.spec.grid_cell_offset, feats[0].device)
        return HeadOutput(cls_logits, reg_distri, points, strides)


def dfl_expectation(reg_distri: torch.Tensor, reg_max: int) -> torch.Tensor:
    """[B, N, 4*(R+1)] logits -> [B, N, 4] expected distances (l, t, r, b) in grid units."""
    b, n, _ = reg_distri.shape
    prob = reg_distri.reshape(b, n, 4, reg_max + 1).softmax(-1)
    bins = torch.arange(reg_max + 1, device=prob.device, dtype=prob.dtype)
    # A multiply-sum rather than a conv: identical, and friendlier to every export backend.
    return (prob * bins).sum(-1)


def distances_to_boxes(dist: torch.Tensor, anchor_points: torch.Tensor, stride_tensor: torch.Tensor) -> torch.Tensor:
    """(l, t, r, b) in grid units around each anchor point -> xyxy boxes in input pixels."""
    lt, rb = dist[..., :2], dist[..., 2:]
    return torch.cat([anchor_points - lt * stride_tensor, anchor_points + rb * stride_tensor], dim=-1)


def decode_boxes(out: HeadOutput, reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output -> (boxes [B, N, 4] xyxy input pixels, scores [B, N, C] in 0..1)."""
    boxes = distances_to_boxes(dfl_expectation(out.reg_distri, reg_max), out.anchor_points, out.stride_tensor)
    return boxes, out.cls_logits.sigmoid()
