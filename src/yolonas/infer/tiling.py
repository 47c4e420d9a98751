"""Sliced inference: which windows of an image to run, and how their detections merge back into one set.

Every tile is letterboxed to the model's input like a whole image, so a tile of `size` pixels is seen at the
scale `input / size`. The merge is one greedy pass over all of an image's boxes, done with tensor ops (no loop
over boxes): a box cut by an inner tile border ranks after every uncut box, and is matched by intersection over
the smaller box (IoS), so the half of a car cut by a border is absorbed by the whole car seen in the next tile
rather than counted twice. Uncut boxes match each other by IoU at the NMS threshold, as without tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from yolonas.data.tiles import check_tiling, tile_grid
from yolonas.errors import InputError

MergeMode = Literal["nms", "greedynmm"]
BORDER_PIXELS = 2.0  # a box edge this close (in model input pixels) to an inner tile border counts as cut


@dataclass(frozen=True)
class TileConfig:
    """How to slice: tile `size` and `overlap` in original pixels, the optional whole-image pass, the merge."""

    size: int
    overlap: float = 0.2
    whole_image: bool = False  # also run the whole image letterboxed: large objects no tile holds
    merge: MergeMode = "nms"  # "greedynmm": matched boxes merge into their union (SAHI's GREEDYNMM) instead
    match_threshold: float = 0.5  # IoS above which a cut box (greedynmm: any box) joins a better one

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap)
        if self.merge not in ("nms", "greedynmm"):
            raise InputError(f"tile merge {self.merge!r}: give nms or greedynmm")
        if not 0 < self.match_threshold <= 1:
            raise InputError(f"tile match threshold {self.match_threshold}: give a fraction in (0, 1]")

    def describe(self) -> str:
        """One line for logs."""
        return (f"tiles {self.size} px, overlap {self.overlap:g}{' + whole image' if self.whole_image else ''}, "
                f"merge {self.merge} (IoS {self.match_threshold:g})")

    def windows(self, h: int, w: int) -> np.ndarray:
        """The windows [T, 4] (x1, y1, x2, y2) to run on an h x w image; the whole image last when asked for."""
        grid = tile_grid(h, w, self.size, self.overlap)
        if self.whole_image and len(grid) > 1:
            grid = np.concatenate([grid, np.array([[0, 0, w, h]], dtype=np.int64)])
        return grid


def cut_by_border(boxes: torch.Tensor, windows: torch.Tensor, image_hw: torch.Tensor, margin: torch.Tensor
                  ) -> torch.Tensor:
    """[n] bool: the box [n, 4] (original pixels) reaches, within `margin` [n], a border of its window [n, 4]
    that lies inside the image [n, 2] (h, w); a whole-image window has no such border."""
    inner_lo = windows[:, :2] > 0
    inner_hi = windows[:, 2:] < image_hw.flip(1)
    at_lo = boxes[:, :2] <= windows[:, :2] + margin[:, None]
    at_hi = boxes[:, 2:] >= windows[:, 2:] - margin[:, None]
    return ((inner_lo & at_lo) | (inner_hi & at_hi)).any(dim=1)


def pairwise_overlap(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(IoU, IoS) [n, m] of xyxy boxes a [n, 4] and b [m, 4]; IoS divides by the smaller of the two areas."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    iou = inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)
    ios = inter / torch.minimum(area_a[:, None], area_b[None, :]).clamp(min=1e-9)
    return iou, ios


def match_matrix(dets: torch.Tensor, cut: torch.Tensor, iou_threshold: float, cfg: TileConfig,
                 class_agnostic: bool = False, rows: int = 1024) -> torch.Tensor:
    """[n, n] bool: box i (earlier in rank) absorbs box j > i. Same class (unless agnostic); IoS above
    `cfg.match_threshold` when either is cut (greedynmm: always), IoU above `iou_threshold` otherwise."""
    n = len(dets)
    match = torch.zeros(n, n, dtype=torch.bool, device=dets.device)
    later = torch.arange(n, device=dets.device)
    for start in range(0, n, rows):  # in row blocks: a float [n, n] for 8,000 boxes would be 256 MB per tensor
        block = slice(start, min(start + rows, n))
        iou, ios = pairwise_overlap(dets[block, :4], dets[:, :4])
        by_ios = cut[block, None] | cut[None, :] if cfg.merge == "nms" else torch.ones_like(iou, dtype=torch.bool)
        hit = torch.where(by_ios, ios > cfg.match_threshold, iou > iou_threshold)
        if not class_agnostic:
            hit &= dets[block, None, 5] == dets[None, :, 5]
        match[block] = hit & (later[None, :] > later[block, None])
    return match


def greedy_keep(match: torch.Tensor) -> torch.Tensor:
    """[n] bool: the boxes greedy suppression keeps, where `match[i, j]` (i < j) means i suppresses j if kept.

    Iterated as Cluster-NMS does (Zheng et al. 2021): a box is kept when no kept box before it matches it; the
    iteration reaches the greedy result in as many rounds as the longest chain of suppressions, not n.
    """
    keep = torch.ones(match.shape[0], dtype=torch.bool, device=match.device)
    while True:
        again = ~(match & keep[:, None]).any(dim=0)
        if torch.equal(again, keep):
            return keep
        keep = again


def merge_into_keepers(dets: torch.Tensor, match: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Each kept box grown to the union of the boxes it suppressed, with the best score among them (SAHI's
    GREEDYNMM: a suppressed box belongs to the first kept box that matches it)."""
    claimed = match & keep[:, None]
    n = len(dets)
    owner = torch.where(claimed.any(dim=0), claimed.float().argmax(dim=0), torch.arange(n, device=dets.device))
    out = dets.clone()
    for col, how in ((0, "amin"), (1, "amin"), (2, "amax"), (3, "amax"), (4, "amax")):
        out[:, col] = out[:, col].scatter_reduce(0, owner, dets[:, col], reduce=how, include_self=True)
    return out


def merge_tiles(dets: torch.Tensor, cut: torch.Tensor, iou_threshold: float, cfg: TileConfig,
                class_agnostic: bool = False, max_detections: int | None = None) -> torch.Tensor:
    """One image's tile detections [n, 6] (x1, y1, x2, y2, score, class; original pixels) merged into one set,
    best first. `cut` [n] marks boxes cut by an inner tile border (see module doc)."""
    if len(dets) == 0:
        return dets
    # Scores are in [0, 1]: every cut box after every uncut one; at equal scores the larger box (more of the object)
    # first.
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    by_area = area.argsort(descending=True, stable=True)
    rank = (dets[:, 4] - cut.to(dets.dtype))[by_area]
    order = by_area[rank.argsort(descending=True, stable=True)]
    dets, cut = dets[order], cut[order]
    match = match_matrix(dets, cut, iou_threshold, cfg, class_agnostic)
    keep = greedy_keep(match)
    if cfg.merge == "greedynmm":
        dets = merge_into_keepers(dets, match, keep)
    kept = dets[keep]
    kept = kept[kept[:, 4].argsort(descending=True, stable=True)]
    return kept if max_detections is None else kept[:max_detections]
