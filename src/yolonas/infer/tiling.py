"""Sliced inference: which windows of an image to run, and how their detections merge back into one set.

Every tile is letterboxed to the model's input like a whole image, so a tile of `size` pixels is seen at the
scale `input / size`. The merge (`nms`, the default) first drops the parts of objects that a tile border cut off
where a neighbouring tile saw more of the same object (`absorbed_parts`: a box cut by its tile's border, lying
mostly inside a larger box that goes on past that border), so a car cut in two is counted once; then class-aware
NMS at the usual IoU removes the copies that overlapping tiles both saw whole. `greedynmm` is SAHI's default merge
instead (boxes matched by intersection over the smaller one grow into their union); like SAHI's, it suits
confident thresholds: at validation's 0.01 it grows boxes into their low-score neighbours (SAHI then switches to
NMS). Both are tensor ops over all of an image's boxes, no loop over boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torchvision.ops import batched_nms, nms

from yolonas.data.tiles import check_tiling, tile_grid
from yolonas.errors import InputError
from yolonas.infer.letterbox import check_image
from yolonas.infer.postprocess import NMSConfig
from yolonas.preprocess import LetterboxInfo

log = logging.getLogger(__name__)

MergeMode = Literal["nms", "greedynmm"]
BORDER_PIXELS = 2.0  # a box edge this close (in model input pixels) to an inner tile border counts as cut


@dataclass(frozen=True)
class TileConfig:
    """How to slice: tile `size` and `overlap` in original pixels, the optional whole-image pass, the merge."""

    size: int
    overlap: float = 0.2
    whole_image: bool = False  # also run the whole image letterboxed: large objects no tile holds
    merge: MergeMode = "nms"  # "greedynmm": matched boxes merge into their union (SAHI's GREEDYNMM) instead
    match_threshold: float = 0.5  # IoS above which a cut-off part joins the larger box (greedynmm: any two boxes)

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


@dataclass(frozen=True)
class TileBoxes:
    """One image's tile detections before the merge: [n, 6] rows (x1, y1, x2, y2, score, class) in image pixels,
    the window [n, 4] each came from, and `margin` [n]: how near (image pixels) an edge must be to a window border
    to count as cut by it."""

    dets: torch.Tensor
    windows: torch.Tensor
    margin: torch.Tensor
    image_hw: tuple[int, int]

    def cut_sides(self) -> torch.Tensor:
        """[n, 4] bool: the box is cut by its window's left, top, right, bottom border (one inside the image)."""
        h, w = self.image_hw
        inner = torch.cat([self.windows[:, :2] > 0, self.windows[:, 2:] < self.windows.new_tensor([w, h])], dim=1)
        m = self.margin[:, None]
        at = torch.cat([self.dets[:, :2] <= self.windows[:, :2] + m, self.dets[:, 2:4] >= self.windows[:, 2:] - m],
                       dim=1)
        return inner & at


def pairwise_ios(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] intersection over the smaller area of xyxy boxes a [n, 4] and b [m, 4]."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / torch.minimum(area_a[:, None], area_b[None, :]).clamp(min=1e-9)


def absorbed_parts(boxes: TileBoxes, threshold: float, class_agnostic: bool = False, rows: int = 1024
                   ) -> torch.Tensor:
    """[n] bool: the boxes that are a part of another, larger box of the same class cut off by a tile border.

    Box j is such a part of box i when j is cut by a border of its window, i goes on past that border (so i saw
    what j's tile could not), more than `threshold` of j lies inside i (IoS), and i is the larger. A box of the
    same tile never goes past its border (boxes are clipped to their tile), nor does one that is itself only cut.
    """
    dets, n = boxes.dets, len(boxes.dets)
    cut = boxes.cut_sides()
    parts = torch.nonzero(cut.any(dim=1)).flatten()  # only a cut box can be a part: the columns j
    out = torch.zeros(n, dtype=torch.bool, device=dets.device)
    if len(parts) == 0:
        return out
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    index = torch.arange(n, device=dets.device)
    dj, wj, mj, cj = dets[parts], boxes.windows[parts], boxes.margin[parts, None], cut[parts]
    found = torch.zeros(len(parts), dtype=torch.bool, device=dets.device)
    for start in range(0, n, rows):  # in row blocks of i: [i, j, 4] for 2,400 x 800 boxes is 30 MB
        i = slice(start, min(start + rows, n))
        # past[i, j, side]: box i reaches past the border on `side` of j's window (by more than j's margin)
        past = torch.cat([dets[i, None, :2] < (wj[:, :2] - mj)[None], dets[i, None, 2:4] > (wj[:, 2:] + mj)[None]],
                         dim=2)
        ios = pairwise_ios(dets[i, :4], dj[:, :4])
        larger = (area[i, None] > area[None, parts]) | ((area[i, None] == area[None, parts])
                                                        & (index[i, None] < parts[None]))
        hit = (past & cj[None]).any(dim=2) & (ios > threshold) & larger
        if not class_agnostic:
            hit &= dets[i, None, 5] == dj[None, :, 5]
        found |= hit.any(dim=0)
    out[parts] = found
    return out


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


def ios_matches(dets: torch.Tensor, threshold: float, class_agnostic: bool = False, rows: int = 1024
                ) -> torch.Tensor:
    """[n, n] bool for boxes in rank order: box i (earlier) and j > i overlap by IoS above `threshold`."""
    n = len(dets)
    match = torch.zeros(n, n, dtype=torch.bool, device=dets.device)
    index = torch.arange(n, device=dets.device)
    for start in range(0, n, rows):  # in row blocks: a float [n, n] for 8,000 boxes would be 256 MB per tensor
        block = slice(start, min(start + rows, n))
        ios = pairwise_ios(dets[block, :4], dets[:, :4])
        hit = (ios > threshold) & (index[None, :] > index[block, None])
        if not class_agnostic:
            hit &= dets[block, None, 5] == dets[None, :, 5]
        match[block] = hit
    return match


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


def greedy_nmm(dets: torch.Tensor, threshold: float, class_agnostic: bool = False) -> torch.Tensor:
    """SAHI's GREEDYNMM on [n, 6] boxes: best score first (at equal scores the larger), each kept box absorbs the
    later ones it overlaps by IoS above `threshold` and grows to their union."""
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    by_area = area.argsort(descending=True, stable=True)
    order = by_area[dets[by_area, 4].argsort(descending=True, stable=True)]
    dets = dets[order]
    match = ios_matches(dets, threshold, class_agnostic)
    keep = greedy_keep(match)
    return merge_into_keepers(dets, match, keep)[keep]


def merge_tiles(boxes: TileBoxes, iou_threshold: float, cfg: TileConfig, class_agnostic: bool = False,
                max_detections: int | None = None) -> torch.Tensor:
    """One image's tile detections merged into one set [m, 6], best first (see the module doc)."""
    dets = boxes.dets
    if len(dets) == 0:
        return dets
    if cfg.merge == "greedynmm":
        kept = greedy_nmm(dets, cfg.match_threshold, class_agnostic)
    else:
        dets = dets[~absorbed_parts(boxes, cfg.match_threshold, class_agnostic)]
        if class_agnostic:
            keep = nms(dets[:, :4], dets[:, 4], iou_threshold)
        else:
            keep = batched_nms(dets[:, :4], dets[:, 4], dets[:, 5].long(), iou_threshold)
        kept = dets[keep]
    kept = kept[kept[:, 4].argsort(descending=True, stable=True)]
    return kept if max_detections is None else kept[:max_detections]


# A detector on a list of crops: per crop its [n, 6] detections in its own pixels, and its letterbox.
DetectFn = Callable[[list[np.ndarray]], tuple[list[torch.Tensor], list[LetterboxInfo]]]


class Tiler:
    """Runs images as tiles through a detector: every tile of every image in shared batches (an image's tiles in
    one at least), boxes shifted back to the image, merged per image (`merge_tiles`). Its notices are said once."""

    def __init__(self, cfg: TileConfig):
        self.cfg = cfg
        self._said_whole = self._said_greedy = False

    def detect(self, images: list[np.ndarray], names: list[str | None], detect: DetectFn, batch_size: int,
               nms_cfg: NMSConfig) -> list[torch.Tensor]:
        """Per image its merged [m, 6] detections in its own pixels."""
        for i, image in enumerate(images):
            check_image(image, names[i] or f"image {i}")
        windows = [self._windows(image, name) for image, name in zip(images, names)]
        crops = [image[y1:y2, x1:x2] for image, ws in zip(images, windows) for x1, y1, x2, y2 in ws.tolist()]
        chunk = max(batch_size, *(len(w) for w in windows))
        dets, infos = [], []
        for start in range(0, len(crops), chunk):
            d, i = detect(crops[start:start + chunk])
            dets.extend(d)
            infos.extend(i)
        per_image = self._tile_boxes(dets, infos, windows, images)
        if self.cfg.merge == "greedynmm" and nms_cfg.score_threshold < 0.1 and not self._said_greedy:
            self._said_greedy = True
            log.warning("tile merge greedynmm at score threshold %g grows boxes into low-score neighbours and lowers "
                        "AP; use it with confident thresholds, the default nms otherwise", nms_cfg.score_threshold)
        return [merge_tiles(b, nms_cfg.iou_threshold, self.cfg, nms_cfg.class_agnostic, nms_cfg.max_detections)
                for b in per_image]

    def _windows(self, image: np.ndarray, name: str | None) -> np.ndarray:
        """The image's tile windows; an image no larger than a tile runs whole, which is said once."""
        h, w = image.shape[:2]
        if h <= self.cfg.size and w <= self.cfg.size and not self._said_whole:
            self._said_whole = True
            log.warning("tile %d px is not smaller than %s (%dx%d): such images run whole, without tiles",
                        self.cfg.size, name or "an image", w, h)
        return self.cfg.windows(h, w)

    @staticmethod
    def _tile_boxes(dets: list[torch.Tensor], infos: list[LetterboxInfo], windows: list[np.ndarray],
                    images: list[np.ndarray]) -> list[TileBoxes]:
        """Per image, its tiles' detections shifted into its pixels, with the window and border margin of each."""
        counts = [len(d) for d in dets]
        flat = torch.cat(dets) if dets else torch.zeros((0, 6))
        # Per box: its window and BORDER_PIXELS of model input in original pixels.
        rows = np.concatenate([np.concatenate(windows), [[BORDER_PIXELS / i.scale] for i in infos]], axis=1)
        rows = torch.from_numpy(np.repeat(rows, counts, axis=0)).to(flat.device, flat.dtype)
        flat = torch.cat([flat[:, :4] + rows[:, [0, 1, 0, 1]], flat[:, 4:]], dim=1)
        crops_per_image = [len(w) for w in windows]
        boxes_per_image = [sum(c) for c in np.split(np.array(counts, dtype=np.int64),
                                                     np.cumsum(crops_per_image)[:-1])]
        return [TileBoxes(d, r[:, :4], r[:, 4], image.shape[:2])
                for d, r, image in zip(flat.split(boxes_per_image), rows.split(boxes_per_image), images)]


def tile_config(tiles: TileConfig | int | None) -> TileConfig | None:
    """A TileConfig from a config, a tile size (overlap 0.2) or None."""
    if isinstance(tiles, bool):
        raise InputError(f"tiles={tiles}: give a tile size or a TileConfig")
    return TileConfig(tiles) if isinstance(tiles, int) else tiles
