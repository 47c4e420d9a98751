"""Label assignment for the PP-YOLOE loss: which anchor points learn which ground-truth box, and how softly.

Both assigners are batched over images and GTs: the ground truth comes padded to `[B, n, ...]` with a
`[B, n]` mask, and every intermediate is a `[B, n, N]` tensor (N anchor points). Background anchors get
the label `num_classes`, a zero score vector and `fg_mask` False.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Assignment:
    """What each anchor point is asked to predict."""

    labels: Tensor  # [B, N] long, num_classes for background
    boxes: Tensor  # [B, N, 4] xyxy input pixels (meaningless where fg_mask is False)
    scores: Tensor  # [B, N, C] soft classification targets, zero for background
    fg_mask: Tensor  # [B, N] bool
    gt_index: Tensor  # [B, N] long, index of the assigned GT within its image (0 for background)


def batch_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU of every pair within each image: [B, n, 4] x [B, N, 4] -> [B, n, N]."""
    # torchvision's box_iou is not batched and divides by a bare union, so all-zero padded rows give NaN.
    lt = torch.maximum(boxes1[:, :, None, :2], boxes2[:, None, :, :2])
    rb = torch.minimum(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(-1)
    return inter / (area1[:, :, None] + area2[:, None, :] - inter + eps)


def points_in_boxes(points: Tensor, boxes: Tensor, eps: float = 1e-9) -> Tensor:
    """Whether each point [N, 2] lies strictly inside each box [B, n, 4] -> [B, n, N] bool."""
    x, y = points[:, 0], points[:, 1]
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    return (x - x1 > eps) & (y - y1 > eps) & (x2 - x > eps) & (y2 - y > eps)


def num_anchors_per_level(stride_tensor: Tensor) -> list[int]:
    """Anchor counts of the consecutive feature levels, read off the [N, 1] stride tensor."""
    _, counts = torch.unique_consecutive(stride_tensor.flatten(), return_counts=True)
    return counts.tolist()


def _resolve(candidates: Tensor, ious: Tensor, gt_labels: Tensor, gt_boxes: Tensor, num_classes: int,
             ) -> tuple[Tensor, Assignment]:
    """Give each anchor claimed by several GTs to the claimant it overlaps most; gather the targets.

    Returns the exclusive [B, n, N] positive mask and an Assignment whose scores are still one-hot.
    """
    b, n, num = candidates.shape
    # Only claimants compete (super-gradients lets any GT win, even one the anchor is not inside).
    gt_index = ious.masked_fill(~candidates, -1.0).argmax(dim=1)  # [B, N]
    fg_mask = candidates.any(dim=1)
    positive = candidates & (torch.arange(n, device=gt_index.device)[None, :, None] == gt_index[:, None, :])
    labels = gt_labels.gather(1, gt_index)
    labels = torch.where(fg_mask, labels, torch.full_like(labels, num_classes))
    boxes = gt_boxes.gather(1, gt_index[..., None].expand(b, num, 4))
    # One-hot by comparison (background, label num_classes, gets zeros): F.one_hot checks its range on the host.
    scores = (labels[..., None] == torch.arange(num_classes, device=labels.device)).float()
    return positive, Assignment(labels, boxes, scores, fg_mask, gt_index)


@dataclass
class TaskAlignedAssigner:
    """TOOD's task-aligned assigner: the top-k anchors inside each GT by score^alpha * IoU^beta."""

    topk: int = 13
    alpha: float = 1.0
    beta: float = 6.0
    eps: float = 1e-9

    @torch.no_grad()
    def __call__(self, pred_scores: Tensor, pred_boxes: Tensor, anchor_points: Tensor, gt_labels: Tensor,
                 gt_boxes: Tensor, gt_mask: Tensor) -> Assignment:
        """Assign with sigmoid scores [B, N, C], decoded boxes [B, N, 4] (pixels), points [N, 2] and padded GTs.

        gt_labels [B, n] long, gt_boxes [B, n, 4] xyxy pixels, gt_mask [B, n] bool (False on padding).
        """
        b, num, c = pred_scores.shape
        n = gt_boxes.shape[1]
        ious = batch_box_iou(gt_boxes, pred_boxes)  # [B, n, N]
        gt_scores = pred_scores.gather(2, gt_labels[:, None, :].expand(b, num, n)).transpose(1, 2)  # [B, n, N]
        metric = gt_scores.pow(self.alpha) * ious.pow(self.beta)
        inside = points_in_boxes(anchor_points, gt_boxes, self.eps)
        topk_idx = (metric * inside).topk(min(self.topk, num), dim=-1).indices
        in_topk = torch.zeros_like(inside).scatter_(-1, topk_idx, True)
        candidates = in_topk & inside & gt_mask[..., None]

        positive, assigned = _resolve(candidates, ious, gt_labels, gt_boxes, c)
        # Soft target: the metric rescaled per GT so that its best anchor scores that GT's best IoU.
        metric = metric * positive
        ious = ious * positive
        norm = metric / (metric.amax(-1, keepdim=True) + self.eps) * ious.amax(-1, keepdim=True)
        assigned.scores *= norm.amax(dim=1)[..., None]
        return assigned


@dataclass
class ATSSAssigner:
    """ATSS: per level the k anchors nearest each GT centre, kept where their IoU beats mean + std."""

    topk: int = 9
    grid_cell_scale: float = 5.0  # side of the anchor boxes, in strides
    eps: float = 1e-9

    def anchor_boxes(self, anchor_points: Tensor, stride_tensor: Tensor) -> Tensor:
        """Square anchor boxes of side grid_cell_scale * stride centred on the points -> [N, 4]."""
        half = stride_tensor * self.grid_cell_scale / 2
        return torch.cat([anchor_points - half, anchor_points + half], dim=-1)

    @torch.no_grad()
    def candidates(self, anchor_points: Tensor, stride_tensor: Tensor, gt_boxes: Tensor, gt_mask: Tensor,
                   ) -> tuple[Tensor, Tensor]:
        """Per level the topk anchors nearest each GT centre: ([B, n, N] bool, [B, n, K] anchor indices)."""
        centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        b, n, _ = centres.shape
        # The exact (non-matmul) distance: the matmul shortcut loses precision and reorders near-ties.
        dist = torch.cdist(centres, anchor_points[None].expand(b, -1, -1),
                           compute_mode="donot_use_mm_for_euclid_dist")  # [B, n, N]
        idx, start = [], 0
        for count in num_anchors_per_level(stride_tensor):
            k = min(self.topk, count)
            idx.append(dist[..., start:start + count].topk(k, dim=-1, largest=False).indices + start)
            start += count
        idx = torch.cat(idx, dim=-1)
        chosen = torch.zeros(b, n, dist.shape[-1], dtype=torch.bool, device=dist.device).scatter_(-1, idx, True)
        return chosen & gt_mask[..., None], idx

    @torch.no_grad()
    def __call__(self, anchor_points: Tensor, stride_tensor: Tensor, gt_labels: Tensor, gt_boxes: Tensor,
                 gt_mask: Tensor, num_classes: int, pred_boxes: Tensor | None = None) -> Assignment:
        """Assign with points [N, 2], strides [N, 1] and padded GTs; scores are IoU with pred_boxes when given."""
        b, n, _ = gt_boxes.shape
        anchors = self.anchor_boxes(anchor_points, stride_tensor)
        ious = batch_box_iou(gt_boxes, anchors[None].expand(b, -1, -1))  # [B, n, N]
        chosen, idx = self.candidates(anchor_points, stride_tensor, gt_boxes, gt_mask)
        cand_ious = ious.gather(-1, idx)
        threshold = cand_ious.mean(-1, keepdim=True) + cand_ious.std(-1, keepdim=True)
        inside = points_in_boxes(anchor_points, gt_boxes, self.eps)
        candidates = chosen & (ious > threshold) & inside

        positive, assigned = _resolve(candidates, ious, gt_labels, gt_boxes, num_classes)
        if pred_boxes is not None:
            pred_ious = (batch_box_iou(gt_boxes, pred_boxes) * positive).amax(dim=1)
            assigned.scores *= pred_ious[..., None]
        return assigned
