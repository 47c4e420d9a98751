"""The PP-YOLOE loss: target padding, its three terms, gradients, autocast, DDP and an overfit sanity run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.train.loss import PPYoloELoss, distribution_focal_loss, pad_targets, varifocal_loss

TARGETS = torch.tensor([
    [0, 1, 10.0, 20.0, 60.0, 90.0],
    [1, 0, 30.0, 30.0, 50.0, 50.0],
    [0, 2, 70.0, 70.0, 120.0, 110.0],
    [0, 0, 40.0, 8.0, 100.0, 40.0],
])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build(yolo_nas_tiny(), num_classes=3)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def test_pad_targets_scatters_rows_per_image():
    labels, boxes, mask = pad_targets(TARGETS, batch_size=3)
    assert labels.shape == (3, 3) and boxes.shape == (3, 3, 4) and mask.shape == (3, 3)
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert labels[0].tolist() == [1, 2, 0] and labels[1, 0] == 0
    assert torch.equal(boxes[0], TARGETS[[0, 2, 3], 2:])
    assert torch.equal(boxes[1, 0], TARGETS[1, 2:])
    assert (boxes[~mask] == 0).all()

    labels, boxes, mask = pad_targets(torch.zeros(0, 6), batch_size=2)
    assert boxes.shape == (2, 1, 4) and not mask.any()
    with pytest.raises(ValueError, match="outside the batch"):
        pad_targets(TARGETS, batch_size=1)


def test_loss_is_finite_positive_and_reaches_the_whole_model(model, images):
    model.zero_grad()
    loss, parts = PPYoloELoss(num_classes=3)(model(images), TARGETS)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert set(parts) == {"loss_cls", "loss_iou", "loss_dfl", "loss"}
    assert all(not v.requires_grad and v.dtype == torch.float32 for v in parts.values())
    assert parts["loss_iou"] > 0 and parts["loss_dfl"] > 0 and parts["loss_cls"] > 0
    torch.testing.assert_close(parts["loss"], parts["loss_cls"] + 2.5 * parts["loss_iou"] + 0.5 * parts["loss_dfl"])
    loss.backward()
    for head in model.heads.levels():
        assert head.cls_pred.weight.grad.abs().sum() > 0
    assert sum(h.reg_pred.weight.grad.abs().sum() for h in model.heads.levels()) > 0
    assert model.backbone.stem.conv.branch_3x3.conv.weight.grad.abs().sum() > 0


def test_atss_warmup_then_tal(model, images):
    crit = PPYoloELoss(num_classes=3, atss_warmup_epochs=2)
    with torch.no_grad():
        out = model(images)
    labels, boxes, mask = pad_targets(TARGETS, 2)
    pred = model.decode(out)[0]
    early, late = crit.assign(out, pred, labels, boxes, mask, epoch=1), crit.assign(out, pred, labels, boxes, mask, 2)
    atss = crit.atss(out.anchor_points, out.stride_tensor, labels, boxes, mask, 3, pred)
    assert torch.equal(early.fg_mask, atss.fg_mask) and not torch.equal(early.fg_mask, late.fg_mask)
    for epoch in (1, 2):
        loss, _ = crit(out, TARGETS, epoch=epoch)
        assert torch.isfinite(loss) and loss > 0


def test_images_without_gt(model, images):
    model.zero_grad()
    crit = PPYoloELoss(num_classes=3)
    out = model(images)
    loss, parts = crit(out, torch.zeros(0, 6))
    assert parts["loss_iou"] == 0 and parts["loss_dfl"] == 0 and loss > 0
    loss.backward()
    for head in model.heads.levels():
        # Every score is pushed down (a positive gradient on the logit bias), and nothing moves the boxes.
        assert (head.cls_pred.bias.grad > 0).all()
        assert (head.reg_pred.weight.grad == 0).all()
    # An image without GT beside one with GTs only adds to the classification term.
    one = crit(model(images[:1]), TARGETS[TARGETS[:, 0] == 0])[1]
    two = crit(model(images[:1].expand(2, -1, -1, -1)), TARGETS[TARGETS[:, 0] == 0])[1]
    torch.testing.assert_close(two["loss_iou"], one["loss_iou"])
    assert two["loss_cls"] > one["loss_cls"]


def test_padded_and_unpadded_targets_give_the_same_loss(model, images):
    crit = PPYoloELoss(num_classes=3)
    with torch.no_grad():
        out = model(images)
        loss, _ = crit(out, TARGETS)
        shuffled, _ = crit(out, TARGETS[[3, 1, 0, 2]])
        labels, boxes, mask = pad_targets(TARGETS, 2)
        # Two more padding rows holding garbage change nothing.
        garbage = torch.tensor([[5.0, 5.0, 120.0, 120.0]]).expand(2, 2, 4)
        padded, _ = crit.from_padded(out, torch.cat([labels, torch.ones(2, 2, dtype=torch.long)], 1),
                                     torch.cat([boxes, garbage], 1), torch.cat([mask, torch.zeros(2, 2).bool()], 1))
    torch.testing.assert_close(shuffled, loss)
    torch.testing.assert_close(padded, loss)


def test_loss_under_autocast_is_float32(model, images):
    crit = PPYoloELoss(num_classes=3)
    with torch.no_grad():
        ref, _ = crit(model(images), TARGETS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(images)
            assert out.cls_logits.dtype == torch.bfloat16
            loss, parts = crit(out, TARGETS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - ref.item()) < 0.1 * ref.item()


def test_rejects_unknown_class_ids(model, images):
    bad = TARGETS.clone()
    bad[0, 1] = 3
    with torch.no_grad(), pytest.raises(ValueError, match="class ids"):
        PPYoloELoss(num_classes=3)(model(images), bad)


def test_ddp_normaliser_with_one_process(model, images, tmp_path):
    crit = PPYoloELoss(num_classes=3)
    with torch.no_grad():
        out = model(images)
        ref, _ = crit(out, TARGETS)
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        try:
            loss, _ = crit(out, TARGETS)
        finally:
            torch.distributed.destroy_process_group()
    torch.testing.assert_close(loss, ref)


def test_dfl_interpolation_is_exact():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 17, generator=g)
    log_prob = logits.log_softmax(-1)
    integer = torch.tensor([0.0, 3.0, 7.0, 15.0]).expand(5, 4)
    expected = -log_prob.gather(-1, integer.long()[..., None])[..., 0].mean(-1)
    torch.testing.assert_close(distribution_focal_loss(logits, integer), expected)

    half = integer + 0.5
    lo, hi = half.floor().long()[..., None], half.ceil().long()[..., None]
    expected = -(0.5 * log_prob.gather(-1, lo) + 0.5 * log_prob.gather(-1, hi))[..., 0].mean(-1)
    torch.testing.assert_close(distribution_focal_loss(logits, half), expected)

    # The distribution that minimises it puts its mass on the two neighbours, so its expectation is the target.
    best = torch.full((1, 4, 17), -1e4)
    best[0, torch.arange(4), half[0].floor().long()] = 0.0
    best[0, torch.arange(4), half[0].ceil().long()] = 0.0
    torch.testing.assert_close(distribution_focal_loss(best, half[:1]), torch.tensor([math.log(2)]))
    assert ((best.softmax(-1) * torch.arange(17.0)).sum(-1) == half[:1]).all()


def test_varifocal_with_zero_targets_is_weighted_bce():
    logits = torch.randn(2, 50, 4, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros_like(logits)
    p = logits.sigmoid()
    expected = (0.75 * p.pow(2) * F.binary_cross_entropy_with_logits(logits, zero, reduction="none")).sum()
    torch.testing.assert_close(varifocal_loss(logits, zero, zero), expected)
    # On a positive the weight is the target itself.
    q, label = torch.full_like(logits, 0.3), torch.ones_like(logits)
    expected = (0.3 * F.binary_cross_entropy_with_logits(logits, q, reduction="none")).sum()
    torch.testing.assert_close(varifocal_loss(logits, q, label), expected)


def test_overfits_one_image():
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), num_classes=3).train()
    crit = PPYoloELoss(num_classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[0, 1, 20.0, 15.0, 75.0, 70.0]])
    history = []
    for _ in range(20):
        loss, parts = crit(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(parts)
    first, last = history[0], history[-1]
    assert last["loss"] < first["loss"] / 4
    assert last["loss_iou"] < first["loss_iou"] / 2 and last["loss_dfl"] < first["loss_dfl"] / 2
