"""Building blocks of YOLO-NAS, with super-gradients' attribute names so checkpoints load by key."""

from __future__ import annotations

import torch
from torch import nn

from yolonas.arch.spec import BlockType


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv into the conv's weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (b - bn.running_mean) * scale


class ConvBNAct(nn.Module):
    """Conv (no bias, 'same' padding) + BN + ReLU; super-gradients' `Conv`."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 1, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self, partial: bool = False) -> None:
        """Fold the BN into the conv (a no-op with `partial`, which keeps every BN trainable)."""
        if partial or isinstance(self.bn, nn.Identity):
            return
        w, b = fold_bn(self.conv.weight, self.conv.bias, self.bn)
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size,
                         self.conv.stride, self.conv.padding, bias=True).to(w.device, w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.conv, self.bn = conv, nn.Identity()


class HeadConv(nn.Module):
    """ConvBNAct wrapped in `seq`, as super-gradients names the head convs (`stem.seq.conv...`)."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 1):
        super().__init__()
        self.seq = ConvBNAct(in_ch, out_ch, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class QARepVGGBlock(nn.Module):
    """Quantization-aware RepVGG (variant S4): 3x3+BN, 1x1 with bias, identity, summed, then BN and ReLU.

    The BN after the sum and the BN-free 1x1 branch keep the fused kernel friendly to INT8.
    `rbr_reparam` always exists, as in super-gradients, so their state dicts load key for key.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, residual: bool = True):
        super().__init__()
        if residual and (in_ch != out_ch or stride != 1):
            raise ValueError("the identity branch needs in_ch == out_ch and stride 1")
        self.in_ch, self.out_ch, self.stride, self.residual = in_ch, out_ch, stride, residual
        self.branch_3x3 = ConvBNAct(in_ch, out_ch, 3, stride, act=False)
        self.branch_1x1 = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=True)
        self.post_bn = nn.BatchNorm2d(out_ch)
        self.rbr_reparam = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fused: str | None = None  # None, "partial" (post_bn kept) or "full"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused == "full":
            return self.act(self.rbr_reparam(x))
        if self.fused == "partial":
            return self.act(self.post_bn(self.rbr_reparam(x)))
        y = self.branch_3x3(x) + self.branch_1x1(x)
        if self.residual:
            y = y + x
        return self.act(self.post_bn(y))

    def _identity_kernel(self, ref: torch.Tensor) -> torch.Tensor:
        k = torch.zeros(self.out_ch, self.in_ch, 3, 3, dtype=ref.dtype, device=ref.device)
        k[torch.arange(self.out_ch), torch.arange(self.out_ch), 1, 1] = 1.0
        return k

    @torch.no_grad()
    def fuse(self, partial: bool = False) -> None:
        """Merge the branches into `rbr_reparam`; unless `partial`, fold `post_bn` in too."""
        if self.fused is None:
            w, b = fold_bn(self.branch_3x3.conv.weight, None, self.branch_3x3.bn)
            w = w + nn.functional.pad(self.branch_1x1.weight, [1, 1, 1, 1])
            b = b + self.branch_1x1.bias
            if self.residual:
                w = w + self._identity_kernel(w)
            self.rbr_reparam.weight.copy_(w)
            self.rbr_reparam.bias.copy_(b)
            del self.branch_3x3, self.branch_1x1
            self.fused = "partial"
        if not partial and self.fused == "partial":
            w, b = fold_bn(self.rbr_reparam.weight, self.rbr_reparam.bias, self.post_bn)
            self.rbr_reparam.weight.copy_(w)
            self.rbr_reparam.bias.copy_(b)
            del self.post_bn
            self.fused = "full"


class RepVGGBlock(nn.Module):
    """Plain RepVGG: 3x3+BN, 1x1+BN and a BN identity, summed, then ReLU (no post-sum BN).

    Kept as a block type so the QARepVGG quantization claim can be checked against it.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.branch_3x3 = ConvBNAct(in_ch, out_ch, 3, stride, act=False)
        self.branch_1x1 = ConvBNAct(in_ch, out_ch, 1, stride, act=False)
        self.branch_identity = nn.BatchNorm2d(out_ch) if residual and in_ch == out_ch and stride == 1 else None
        self.rbr_reparam = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fused: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.act(self.rbr_reparam(x))
        y = self.branch_3x3(x) + self.branch_1x1(x)
        if self.branch_identity is not None:
            y = y + self.branch_identity(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self, partial: bool = False) -> None:
        """Merge every branch into `rbr_reparam` (there is no post-sum BN, so `partial` changes nothing)."""
        if self.fused:
            return
        w, b = fold_bn(self.branch_3x3.conv.weight, None, self.branch_3x3.bn)
        w1, b1 = fold_bn(self.branch_1x1.conv.weight, None, self.branch_1x1.bn)
        w, b = w + nn.functional.pad(w1, [1, 1, 1, 1]), b + b1
        if self.branch_identity is not None:
            k = torch.zeros_like(w)
            k[torch.arange(self.out_ch), torch.arange(self.out_ch), 1, 1] = 1.0
            wi, bi = fold_bn(k, None, self.branch_identity)
            w, b = w + wi, b + bi
        self.rbr_reparam.weight.copy_(w)
        self.rbr_reparam.bias.copy_(b)
        del self.branch_3x3, self.branch_1x1, self.branch_identity
        self.fused = "full"


def make_block(block: BlockType, in_ch: int, out_ch: int, stride: int = 1, residual: bool = True) -> nn.Module:
    """A 3x3 block of the given type; 'conv' is a plain Conv+BN+ReLU (the neck's down stages)."""
    if block == "qarepvgg":
        return QARepVGGBlock(in_ch, out_ch, stride, residual)
    if block == "repvgg":
        return RepVGGBlock(in_ch, out_ch, stride, residual)
    if block == "conv":
        return ConvBNAct(in_ch, out_ch, 3, stride)
    raise ValueError(f"unknown block type {block!r}: expected 'qarepvgg', 'repvgg' or 'conv'")


class Bottleneck(nn.Module):
    """Two 3x3 blocks with a learnable-scale shortcut: alpha * x + cv2(cv1(x))."""

    def __init__(self, ch: int, block: BlockType):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.cv1 = make_block(block, ch, ch)
        self.cv2 = make_block(block, ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x + self.cv2(self.cv1(x))


class CSPLayer(nn.Module):
    """Cross-stage partial layer: conv1 -> bottlenecks, conv2 as a bypass, concat, conv3."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, hidden: int, block: BlockType,
                 concat_intermediates: bool = False):
        super().__init__()
        self.concat_intermediates = concat_intermediates
        self.conv1 = ConvBNAct(in_ch, hidden, 1)
        self.conv2 = ConvBNAct(in_ch, hidden, 1)
        n_cat = (num_blocks + 2) if concat_intermediates else 2
        self.conv3 = ConvBNAct(hidden * n_cat, out_ch, 1)
        self.bottlenecks = nn.Sequential(*[Bottleneck(hidden, block) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        parts = [y] if self.concat_intermediates else []
        for b in self.bottlenecks:
            y = b(y)
            if self.concat_intermediates:
                parts.append(y)
        if not self.concat_intermediates:
            parts.append(y)
        parts.append(self.conv2(x))
        return self.conv3(torch.cat(parts, dim=1))


class SPP(nn.Module):
    """Parallel spatial pyramid pooling (max-pools of several sizes side by side, not SPPF)."""

    def __init__(self, in_ch: int, out_ch: int, kernels: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        hidden = in_ch // 2
        self.cv1 = ConvBNAct(in_ch, hidden, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.cv2 = ConvBNAct(hidden * (len(kernels) + 1), out_ch, 1)
        # Stride-1 max-pools compose: a k-pool after a j-pool is a (k+j-1)-pool. So 5, 9, 13 is the 5-pool
        # applied 1, 2, 3 times: the same numbers for less than half the work (SPPF's trick, kept exact).
        k0 = kernels[0]
        self.cascade = all(k == k0 + i * (k0 - 1) for i, k in enumerate(kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        if self.cascade:
            outs = [x]
            for _ in self.pools:
                outs.append(self.pools[0](outs[-1]))
        else:
            outs = [x] + [p(x) for p in self.pools]
        return self.cv2(torch.cat(outs, dim=1))
