"""Post-processing: score threshold, top-k and NMS on decoded boxes, batched on the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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

# Above this fraction of scores passing the threshold, one top-k over all scores is cheaper than picking them out.
MAX_PASSING = 0.125


def select_candidates(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Threshold and top-k for the whole batch: (boxes [B, k, 4], scores [B, k], labels [B, k], valid [B, k]).

    Each row holds its image's candidates first, best score first, then padding (`valid` False); k <= top_k.
    On the CPU, when few scores pass the threshold, they are picked out first: a trained detector leaves a few
    dozen of N * C above 0.25, and a top-k over all of them cost ~3 ms at 640 px with 80 classes.
    """
    picked = _select_on_host(boxes, scores, cfg) if _host_float32(boxes, scores) else None
    return picked if picked is not None else _select_topk(boxes, scores, cfg)


def _host_float32(boxes: torch.Tensor, scores: torch.Tensor) -> bool:
    """True for non-empty float32 scores and boxes on the CPU, which numpy can read in place."""
    b, n, c = scores.shape
    return (boxes.device.type == scores.device.type == "cpu" and scores.dtype == torch.float32
            and b * n * c > 0 and not scores.requires_grad)


def _select_topk(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`select_candidates` with fixed shapes [B, min(top_k, ...)]: one top-k over every score, no host sync."""
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


def _select_on_host(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """`_select_topk`'s candidates, in its order, from the scores that pass the threshold, with numpy.

    None when many scores pass, or two candidates tie (or a score is NaN): `topk` then orders the tied ones in
    an order of its own, which only the full top-k reproduces.
    """
    per_image = []
    for image_scores in scores.numpy():
        picked = _image_candidates(image_scores, cfg)
        if picked is None:
            return None
        per_image.append(picked)
    b, width = len(per_image), max(len(values) for _, _, values in per_image)
    anchor, labels = np.zeros((b, width), np.int64), np.zeros((b, width), np.int64)
    top_scores = np.zeros((b, width), np.float32)
    for i, (a, lb, values) in enumerate(per_image):
        anchor[i, :len(a)], labels[i, :len(a)], top_scores[i, :len(a)] = a, lb, values
    valid = torch.arange(width) < torch.tensor([len(values) for _, _, values in per_image])[:, None]
    top_boxes = boxes.gather(1, torch.from_numpy(anchor).unsqueeze(-1).expand(b, width, 4))
    return top_boxes.float(), torch.from_numpy(top_scores), torch.from_numpy(labels), valid


def _image_candidates(scores: np.ndarray, cfg: NMSConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One image's [N, C] scores -> its candidates (anchor, label, score), best first.

    None where the full top-k is the cheaper way (most scores pass) or the only exact one (a tie, a NaN).
    """
    n, c = scores.shape
    flat = scores.reshape(-1)
    # Multi-label keeps scores > threshold, best-class keeps >= (super-gradients); numpy runs on this thread, so
    # no wait on an OpenMP team that a busy core holds up.
    passed = flat > cfg.score_threshold if cfg.multi_label else flat >= cfg.score_threshold
    if np.count_nonzero(passed) > flat.size * MAX_PASSING or np.isnan(flat).any():
        return None
    hits = np.flatnonzero(passed)
    if cfg.multi_label:
        anchors, labels, values = hits // c, hits % c, flat[hits]
        k = min(cfg.top_k, n * c)
    else:
        anchors = np.unique(hits // c)  # the anchors whose best class passes
        labels = scores[anchors].argmax(axis=1)  # the first best class, as torch's max
        values = scores[anchors, labels]
        k = min(cfg.top_k, n)
    order = _top_order(values, k)
    if order is None:
        return None
    order = order[:k]
    return anchors[order], labels[order], values[order]


def _top_order(values: np.ndarray, k: int) -> np.ndarray | None:
    """Indices of the k + 1 largest values, largest first; None if two of them are equal."""
    order = np.argpartition(-values, k)[:k + 1] if len(values) > k + 1 else np.arange(len(values))
    order = order[np.argsort(-values[order], kind="stable")]
    ranked = values[order]
    # Equal scores among the kept ones, or at the k-th place, are where topk's own tie order would show.
    return None if (ranked[1:] == ranked[:-1]).any() else order


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
