"""The PP-YOLOE loss that trains YOLO-NAS: varifocal classification, GIoU and distribution focal loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from yolonas.arch.head import HeadOutput, dfl_expectation, distances_to_boxes
from yolonas.data.loader import pad_targets
from yolonas.train.assigners import Assignment, ATSSAssigner, TaskAlignedAssigner
from yolonas.train.distributed import all_reduce_mean


def varifocal_loss(logits: Tensor, score: Tensor, label: Tensor, alpha: float = 0.75, gamma: float = 2.0,
                   keep: Tensor | None = None) -> Tensor:
    """Varifocal loss, summed: BCE against the soft target `score`, negatives down-weighted by alpha * p^gamma.

    `keep` [B, N] (0/1) masks whole anchors out, e.g. the unassigned ones inside an ignore region.
    """
    # The weight stays in the graph (as in PP-YOLOE), so F.binary_cross_entropy_with_logits(weight=) cannot take it.
    weight = alpha * logits.sigmoid().pow(gamma) * (1 - label) + score * label
    if keep is not None:
        weight = weight * keep[..., None]
    return (F.binary_cross_entropy_with_logits(logits, score, reduction="none") * weight).sum()


def focal_loss(logits: Tensor, score: Tensor, alpha: float = 0.25, gamma: float = 2.0,
               keep: Tensor | None = None) -> Tensor:
    """Focal loss with soft targets, summed; alpha <= 0 disables the class balance term; `keep` as varifocal's."""
    weight = (logits.sigmoid() - score).pow(gamma)
    if alpha > 0:
        weight = weight * (alpha * score + (1 - alpha) * (1 - score))
    if keep is not None:
        weight = weight * keep[..., None]
    return (F.binary_cross_entropy_with_logits(logits, score, reduction="none") * weight).sum()


def ignored_anchors(points: Tensor, ignore: Tensor | None, batch_size: int) -> Tensor | None:
    """[B, N] bool: anchor points inside any ignore box of their image; ignore [K, 5] (batch_idx, x1, y1, x2, y2).

    None when there are no ignore boxes, so the common case costs nothing.
    """
    if ignore is None or ignore.numel() == 0:
        return None
    if ignore.ndim != 2 or ignore.shape[-1] != 5:
        raise ValueError(f"ignore boxes must be [K, 5] (batch_idx, x1, y1, x2, y2), got {tuple(ignore.shape)}")
    rows = torch.cat([ignore[:, :1], torch.zeros_like(ignore[:, :1]), ignore[:, 1:]], 1)
    return anchors_in_boxes(points, *pad_targets(rows, batch_size)[1:])


def anchors_in_boxes(points: Tensor, boxes: Tensor, mask: Tensor) -> Tensor:
    """[B, N] bool: anchor points inside any of their image's boxes [B, k, 4] (padded, mask [B, k])."""
    x, y = points[None, :, None, 0], points[None, :, None, 1]  # [1, N, 1]
    b = boxes[:, None]  # [B, 1, k, 4]
    inside = (x > b[..., 0]) & (x < b[..., 2]) & (y > b[..., 1]) & (y < b[..., 3]) & mask[:, None]
    return inside.any(-1)


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """[..., C] float one-hot of `labels`, all zero where a label is num_classes (background).

    F.one_hot checks its input's range on the host, a device synchronisation every call.
    """
    return (labels[..., None] == torch.arange(num_classes, device=labels.device)).float()


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - GIoU of xyxy boxes [..., 4] pairwise, elementwise: torchvision's generalized_box_iou_loss, whose
    boolean-mask intersection has a data-dependent shape (a device synchronisation), written with clamps."""
    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    inter = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0) * (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(
        min=0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    enclosing = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return 1 - (iou - (enclosing - union) / (enclosing + eps))


def distribution_focal_loss(pred_dist: Tensor, target: Tensor) -> Tensor:
    """DFL: cross-entropy on the two bins around each target distance, linearly weighted; mean over sides.

    pred_dist [P, 4, R+1] logits, target [P, 4] in grid units within [0, R) -> [P].
    """
    left = target.long()
    weight_right = target - left
    log_prob = pred_dist.log_softmax(-1)
    loss = -(log_prob.gather(-1, left[..., None])[..., 0] * (1 - weight_right)
             + log_prob.gather(-1, (left + 1)[..., None])[..., 0] * weight_right)
    return loss.mean(-1)


@dataclass
class PPYoloELoss:
    """super-gradients' PPYoloELoss: (1.0 * cls + 2.5 * GIoU + 0.5 * DFL) / sum of assigned scores.

    Call it with the model's `HeadOutput` and loader targets [M, 6] (batch_idx, cls, x1, y1, x2, y2) in input
    pixels; it returns the loss to back-propagate and a dict of detached float32 scalars for logging.
    ATSS assigns while epoch < atss_warmup_epochs, the task-aligned assigner after (YOLO-NAS: from epoch 0).
    """

    num_classes: int
    reg_max: int = 16
    use_varifocal: bool = True
    iou_weight: float = 2.5
    cls_weight: float = 1.0
    dfl_weight: float = 0.5
    atss_warmup_epochs: int = 0
    tal: TaskAlignedAssigner = field(default_factory=TaskAlignedAssigner)
    atss: ATSSAssigner = field(default_factory=ATSSAssigner)

    def __call__(self, out: HeadOutput, targets: Tensor, epoch: int = 0, ignore: Tensor | None = None,
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss scalar with grad, {loss_cls, loss_iou, loss_dfl, loss} detached) for one batch.

        `ignore` [K, 5] (batch_idx, x1, y1, x2, y2) are regions whose unassigned anchors get no classification loss.
        """
        if targets.numel() and ((targets[:, 1] < 0) | (targets[:, 1] >= self.num_classes)).any():
            found = targets[:, 1].unique().tolist()
            raise ValueError(f"target class ids must lie in 0..{self.num_classes - 1}, got {found}")
        batch, device = out.cls_logits.shape[0], out.cls_logits.device
        labels, boxes, mask = pad_targets(targets.to(device), batch)
        ignored = None if ignore is None else ignored_anchors(out.anchor_points.float(), ignore.to(device).float(),
                                                               batch)
        return self.from_padded(out, labels, boxes, mask, epoch, ignored)

    def from_padded(self, out: HeadOutput, gt_labels: Tensor, gt_boxes: Tensor, gt_mask: Tensor, epoch: int = 0,
                    ignored: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss with GTs already padded: labels [B, n], boxes [B, n, 4] pixels, mask [B, n] bool; `ignored`
        [B, N] bool marks anchors in ignore regions."""
        # The loss runs in float32 whatever autocast the forward pass used: exp, log and IoU need the range.
        with torch.autocast(out.cls_logits.device.type, enabled=False):
            return self._loss(out, gt_labels, gt_boxes.float(), gt_mask, epoch, ignored)

    def assign(self, out: HeadOutput, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor, gt_mask: Tensor,
               epoch: int = 0) -> Assignment:
        """The assignment for this epoch, from the (detached) decoded predictions."""
        points, strides = out.anchor_points.float(), out.stride_tensor.float()
        if epoch < self.atss_warmup_epochs:
            return self.atss(points, strides, gt_labels, gt_boxes, gt_mask, self.num_classes, pred_boxes.detach())
        scores = out.cls_logits.detach().float().sigmoid()
        return self.tal(scores, pred_boxes.detach(), points, gt_labels, gt_boxes, gt_mask)

    def _loss(self, out: HeadOutput, gt_labels: Tensor, gt_boxes: Tensor, gt_mask: Tensor, epoch: int,
              ignored: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        logits, distri = out.cls_logits.float(), out.reg_distri.float()
        points, strides = out.anchor_points.float(), out.stride_tensor.float()
        b, num, _ = distri.shape
        pred_boxes = distances_to_boxes(dfl_expectation(distri, self.reg_max), points, strides)
        a = self.assign(out, pred_boxes, gt_labels, gt_boxes, gt_mask, epoch)

        # An anchor a real box claims stays a positive even inside an ignore region; the others there are left out.
        keep = None if ignored is None else (~(ignored & ~a.fg_mask)).float()
        if self.use_varifocal:
            loss_cls = varifocal_loss(logits, a.scores, one_hot(a.labels, self.num_classes), keep=keep)
        else:
            loss_cls = focal_loss(logits, a.scores, alpha=0.25 if epoch < self.atss_warmup_epochs else -1.0,
                                  keep=keep)
        norm = all_reduce_mean(a.scores.sum()).clamp(min=1.0)

        # Box losses over every anchor, weighted by the assigned score and zeroed off the positives: boolean
        # indexing would give them a data-dependent shape, which costs a device synchronisation per step.
        weight = torch.where(a.fg_mask, a.scores.sum(-1), 0.0)
        loss_iou = (giou_loss(pred_boxes, a.boxes) * weight).sum()
        lt = (points[None] - a.boxes[..., :2]) / strides[None]
        rb = (a.boxes[..., 2:] - points[None]) / strides[None]
        target = torch.cat([lt, rb], -1).clamp(0, self.reg_max - 0.01)
        pred_dist = distri.reshape(b, num, 4, self.reg_max + 1)
        loss_dfl = (distribution_focal_loss(pred_dist, target) * weight).sum()

        loss_cls, loss_iou, loss_dfl = loss_cls / norm, loss_iou / norm, loss_dfl / norm
        loss = self.cls_weight * loss_cls + self.iou_weight * loss_iou + self.dfl_weight * loss_dfl
        parts = {"loss_cls": loss_cls, "loss_iou": loss_iou, "loss_dfl": loss_dfl, "loss": loss}
        return loss, {k: v.detach() for k, v in parts.items()}
