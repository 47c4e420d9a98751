"""The task-aligned and ATSS assigners on small hand-made anchor grids."""

from __future__ import annotations

import torch

from yolonas.arch.head import make_anchor_points
from yolonas.train.assigners import (
    ATSSAssigner,
    TaskAlignedAssigner,
    batch_box_iou,
    num_anchors_per_level,
    points_in_boxes,
)


def grid(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchor points and strides of a size x size input at strides 8/16/32."""
    sizes = [(size // s, size // s) for s in (8, 16, 32)]
    return make_anchor_points(sizes, (8, 16, 32))


def random_preds(points: torch.Tensor, strides: torch.Tensor, b: int, c: int, seed: int = 0):
    """Random sigmoid scores [B, N, C] and boxes [B, N, 4] that contain their anchor points."""
    g = torch.Generator().manual_seed(seed)
    n = len(points)
    scores = torch.rand(b, n, c, generator=g)
    dist = (torch.rand(b, n, 4, generator=g) * 3 + 0.2) * strides
    boxes = torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)
    return scores, boxes


def test_tal_picks_topk_anchors_inside_the_gt():
    points, strides = grid(128)
    scores, boxes = random_preds(points, strides, 1, 3)
    gt = torch.tensor([[[8.0, 12.0, 100.0, 90.0]]])
    labels, mask = torch.tensor([[2]]), torch.tensor([[True]])
    a = TaskAlignedAssigner(topk=13)(scores, boxes, points, labels, gt, mask)

    inside = points_in_boxes(points, gt)[0, 0]
    assert inside.sum() > 13
    fg = a.fg_mask[0]
    assert fg.sum() == 13
    assert inside[fg].all()
    # They are the 13 best inside anchors by score * IoU^6.
    metric = scores[0, :, 2] * batch_box_iou(gt, boxes)[0, 0] ** 6
    best = (metric * inside).topk(13).indices
    assert set(best.tolist()) == set(fg.nonzero()[:, 0].tolist())
    assert (a.labels[0, fg] == 2).all() and (a.labels[0, ~fg] == 3).all()
    assert torch.equal(a.boxes[0, fg], gt[0].expand(13, 4))
    # Soft targets: only the GT's class, the best anchor at the GT's best IoU, zero on the background.
    assert (a.scores[0, :, :2] == 0).all() and (a.scores[0, ~fg] == 0).all()
    max_iou = batch_box_iou(gt, boxes)[0, 0][fg].max()
    torch.testing.assert_close(a.scores[0, fg, 2].max(), max_iou)
    assert (a.scores[0, fg, 2] > 0).all()


def test_tal_small_gt_keeps_only_inside_anchors():
    points, strides = grid(128)
    scores, boxes = random_preds(points, strides, 1, 2)
    gt = torch.tensor([[[30.0, 30.0, 62.0, 46.0]]])  # holds 4 x 2 stride-8 centres and 2 x 1 stride-16 ones
    a = TaskAlignedAssigner(topk=13)(scores, boxes, points, torch.tensor([[0]]), gt, torch.tensor([[True]]))
    assert a.fg_mask.sum() == 10
    assert points_in_boxes(points, gt)[0, 0][a.fg_mask[0]].all()


def test_tal_anchor_claimed_twice_goes_to_the_max_iou_gt():
    points = torch.tensor([[50.0, 50.0], [20.0, 20.0], [90.0, 10.0]])
    gts = torch.tensor([[[0.0, 0.0, 100.0, 100.0], [40.0, 40.0, 100.0, 100.0], [60.0, 0.0, 100.0, 30.0]]])
    labels, mask = torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool)
    scores = torch.full((1, 3, 3), 0.5)
    # Anchor 0 (inside GTs 0 and 1) predicts GT 1 exactly; anchor 2 (inside GTs 0 and 2) predicts a box that
    # overlaps GT 1 most, but GT 1 does not contain it, so it must go to the better of its two claimants.
    boxes = torch.tensor([[[40.0, 40.0, 100.0, 100.0], [0.0, 0.0, 60.0, 60.0], [70.0, 0.0, 100.0, 40.0]]])
    a = TaskAlignedAssigner()(scores, boxes, points, labels, gts, mask)
    assert a.fg_mask.all()
    assert a.gt_index[0].tolist() == [1, 0, 2]
    assert a.labels[0].tolist() == [1, 0, 2]
    torch.testing.assert_close(a.scores[0, 0], torch.tensor([0.0, 1.0, 0.0]))  # perfect box: target 1
    assert torch.equal(a.boxes[0, 2], gts[0, 2])


def test_tal_padded_and_empty_images():
    points, strides = grid(64)
    scores, boxes = random_preds(points, strides, 2, 4, seed=1)
    gt = torch.tensor([[8.0, 8.0, 40.0, 56.0], [20.0, 4.0, 60.0, 30.0]])
    labels = torch.tensor([1, 3])
    tal = TaskAlignedAssigner()
    alone = tal(scores[:1], boxes[:1], points, labels[None], gt[None], torch.ones(1, 2, dtype=torch.bool))
    # Image 0 padded with a garbage masked row; image 1 has only padding.
    pad_boxes = torch.stack([torch.cat([gt, torch.tensor([[0.0, 0.0, 64.0, 64.0]])]),
                             torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 3)])
    pad_labels = torch.tensor([[1, 3, 0], [2, 2, 2]])
    pad_mask = torch.tensor([[True, True, False], [False, False, False]])
    both = tal(scores, boxes, points, pad_labels, pad_boxes, pad_mask)
    for name in ("labels", "boxes", "scores", "fg_mask", "gt_index"):
        assert torch.equal(getattr(both, name)[:1], getattr(alone, name)), name
    assert not both.fg_mask[1].any()
    assert (both.labels[1] == 4).all() and (both.scores[1] == 0).all()


def test_num_anchors_per_level():
    _, strides = grid(128)
    assert num_anchors_per_level(strides) == [256, 64, 16]


def test_atss_takes_topk_nearest_per_level_before_thresholding():
    points, strides = grid(128)
    gt = torch.tensor([[[20.0, 30.0, 90.0, 100.0], [0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    chosen, _ = ATSSAssigner(topk=9).candidates(points, strides, gt, mask)
    assert not chosen[0, 1].any()
    centre = torch.tensor([55.0, 65.0])
    dist = (points - centre).norm(dim=-1)
    start = 0
    for count in num_anchors_per_level(strides):
        level = chosen[0, 0, start:start + count]
        assert level.sum() == 9
        d = dist[start:start + count]
        assert d[level].max() <= d[~level].min()
        start += count


def test_atss_level_with_fewer_anchors_than_topk():
    points, strides = grid(64)  # the stride-32 level has 2 x 2 anchors
    gt = torch.tensor([[[10.0, 10.0, 50.0, 50.0]]])
    chosen, _ = ATSSAssigner(topk=9).candidates(points, strides, gt, torch.tensor([[True]]))
    assert chosen[0, 0].sum() == 9 + 9 + 4


def test_atss_threshold_inside_and_scores():
    points, strides = grid(128)
    _, boxes = random_preds(points, strides, 1, 2, seed=3)
    gt = torch.tensor([[[20.0, 30.0, 90.0, 100.0], [60.0, 60.0, 120.0, 110.0]]])
    labels, mask = torch.tensor([[1, 0]]), torch.tensor([[True, True]])
    atss = ATSSAssigner()
    a = atss(points, strides, labels, gt, mask, num_classes=2, pred_boxes=boxes)
    chosen, idx = atss.candidates(points, strides, gt, mask)
    ious = batch_box_iou(gt, atss.anchor_boxes(points, strides)[None])
    fg = a.fg_mask[0]
    assert fg.any()
    for j in range(2):
        mine = fg & (a.gt_index[0] == j)
        cand = ious[0, j, idx[0, j]]
        assert mine.any()
        assert chosen[0, j, mine].all()
        assert (ious[0, j, mine] > cand.mean() + cand.std()).all()
        assert points_in_boxes(points, gt[:, j:j + 1])[0, 0, mine].all()
        pred_iou = batch_box_iou(gt[:, j:j + 1], boxes)[0, 0, mine]
        torch.testing.assert_close(a.scores[0, mine, labels[0, j]], pred_iou)
    # Without predictions the targets are hard one-hot labels.
    hard = atss(points, strides, labels, gt, mask, num_classes=2)
    assert torch.equal(hard.fg_mask, a.fg_mask)
    assert set(hard.scores[0, fg].sum(-1).tolist()) == {1.0}
