"""Post-processing: score threshold, top-k and NMS on decoded boxes, batched on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, nms


@dataclass(frozen=True)
class NMSConfig:
    """Thresholds and limits of `postprocess` (super-gradients' PPYoloEPostPredictionCallback)."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    top_k: int = 1000  # candidates per image entering NMS, best scores first
    max_detections: int = 300  # detections per image kept after NMS
    multi_label: bool = True  # every (box, class) pair above the threshold is a candidate, not only the best class
    class_agnostic: bool = False  # NMS across classes instead of within each class

    def describe(self) -> str:
        """One line naming every threshold, for logs."""
        return (f"score>{'' if self.multi_label else '='}{self.score_threshold:g} iou={self.iou_threshold:g} "
                f"top_k={self.top_k} max_det={self.max_detections} "
                f"{'multi-label' if self.multi_label else 'best-class'} "
                f"{'class-agnostic' if self.class_agnostic else 'per-class'} NMS")


# The two explicit defaults: prediction shows confident boxes; validation keeps low scores so AP sees the whole curve.
PREDICT_NMS = NMSConfig(score_threshold=0.25, iou_threshold=0.7, top_k=1000, max_detections=300)
VAL_NMS = NMSConfig(score_threshold=0.01, iou_threshold=0.7, top_k=1000, max_detections=300)


def select_candidates(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Threshold and top-k for the whole batch: (boxes [B, k, 4], scores [B, k], labels [B, k], valid [B, k])."""
    b, n, c = scores.shape
    if cfg.multi_label:
        k = min(cfg.top_k, n * c)
        top_scores, flat_idx = scores.reshape(b, n * c).topk(k, dim=1)
        anchor, labels = flat_idx.div(c, rounding_mode="floor"), flat_idx.remainder(c)
        valid = top_scores > cfg.score_threshold
    else:
        best, best_label = scores.max(dim=2)
        k = min(cfg.top_k, n)
        top_scores, anchor = best.topk(k, dim=1)
        labels = best_label.gather(1, anchor)
        valid = top_scores >= cfg.score_threshold
    # Taking the top k first and thresholding after gives the same set as threshold-then-top-k, with fixed shapes.
    top_boxes = boxes.gather(1, anchor.unsqueeze(-1).expand(b, k, 4))
    return top_boxes.float(), top_scores.float(), labels, valid


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig = PREDICT_NMS) -> list[torch.Tensor]:
    """Decoded boxes [B, N, 4] and scores [B, N, C] -> per image a [n, 6] tensor (x1, y1, x2, y2, score, class)."""
    top_boxes, top_scores, labels, valid = select_candidates(boxes, scores, cfg)
    counts = valid.sum(dim=1).tolist()
    out = []
    # One NMS per image, on at most top_k candidates: the cost is bounded by top_k and does not depend on
    # which images share the batch (a single call over the batch costs (B * top_k)^2 and its coordinate
    # offsets change float rounding with the batch), so predict and validation give the same boxes.
    for i, m in enumerate(counts):
        # topk sorts by score, so the valid candidates are the first m.
        bx, sc, lb = top_boxes[i, :m], top_scores[i, :m], labels[i, :m]
        keep = nms(bx, sc, cfg.iou_threshold) if cfg.class_agnostic else batched_nms(bx, sc, lb, cfg.iou_threshold)
        keep = keep[:cfg.max_detections]
        out.append(torch.cat([bx[keep], sc[keep, None], lb[keep, None].to(bx.dtype)], dim=1))
    return out
