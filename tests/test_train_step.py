"""The training step without a floor: no host synchronisation, few dispatched ops beyond forward + backward, and
the same losses and gradients as the implementation it replaced (boolean indexing, torchvision's GIoU)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torchvision.ops import generalized_box_iou_loss

from yolonas.arch.head import dfl_expectation, distances_to_boxes
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.train import Trainer, apply_overrides, load_recipe
from yolonas.train.loss import PPYoloELoss, distribution_focal_loss, pad_targets, varifocal_loss
from yolonas.train.optim import FlatGrads

SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero")
# The fused optimizers' CPU kernels read each parameter's step counter from host memory: no device involved.
HOST_READS_OK_INSIDE = {"aten::_fused_adamw_", "aten::_fused_adam_", "aten::_fused_sgd_"}


def previous_loss(crit: PPYoloELoss, out, targets):
    """The loss as it was: F.one_hot, boolean indexing of the positives and torchvision's GIoU loss."""
    labels, boxes, mask = pad_targets(targets, out.cls_logits.shape[0])
    logits, distri = out.cls_logits.float(), out.reg_distri.float()
    points, strides = out.anchor_points.float(), out.stride_tensor.float()
    b, num, _ = distri.shape
    pred_boxes = distances_to_boxes(dfl_expectation(distri, crit.reg_max), points, strides)
    a = crit.assign(out, pred_boxes, labels, boxes, mask)
    one_hot = F.one_hot(a.labels, crit.num_classes + 1)[..., :crit.num_classes].float()
    loss_cls = varifocal_loss(logits, a.scores, one_hot)
    norm = a.scores.sum().clamp(min=1.0)
    fg = a.fg_mask
    weight = a.scores.sum(-1)[fg]
    loss_iou = (generalized_box_iou_loss(pred_boxes[fg], a.boxes[fg], reduction="none") * weight).sum()
    lt = (points[None] - a.boxes[..., :2]) / strides[None]
    rb = (a.boxes[..., 2:] - points[None]) / strides[None]
    target = torch.cat([lt, rb], -1).clamp(0, crit.reg_max - 0.01)[fg]
    pred_dist = distri.reshape(b, num, 4, crit.reg_max + 1)[fg]
    loss_dfl = (distribution_focal_loss(pred_dist, target) * weight).sum()
    loss = loss_cls / norm + 2.5 * loss_iou / norm + 0.5 * loss_dfl / norm
    return loss, {"loss_cls": loss_cls / norm, "loss_iou": loss_iou / norm, "loss_dfl": loss_dfl / norm}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> tuple[Trainer, dict]:
    tmp = tmp_path_factory.mktemp("step")
    data = make_synthetic_dataset(tmp / "shapes", n_images=8, n_val=2, size=64, seed=0)
    cfg = apply_overrides(load_recipe("coco_yolo_nas_s"), {
        "data": str(data), "model": "yolo_nas_s", "imgsz": 64, "batch": 2, "epochs": 2, "workers": 0,
        "device": "cpu", "amp": False, "project": str(Path(tmp) / "runs"), "run.plots": False, "run.verbose": False,
        "optimizer.clip_grad_norm": 10.0, "augmentation.mosaic": 1.0})
    torch.manual_seed(0)
    t = Trainer(cfg)
    batch = next(iter(t.loader))
    t.net.train()
    for _ in range(2):  # warm-up: allocations, lazily made state
        t.train_step(batch, 0)
    return t, batch


def _aten_ops(events) -> int:
    return sum(1 for e in events if e.name.startswith("aten::"))


def _inside(event, names: set[str]) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def test_step_has_no_host_sync_and_at_most_twice_the_ops_of_forward_backward(trainer):
    t, batch = trainer
    with profile(activities=[ProfilerActivity.CPU]) as step:
        t.train_step(batch, 0)
    syncs = [e.name for e in step.events() if e.name in SYNCS and not _inside(e, HOST_READS_OK_INSIDE)]
    assert syncs == [], collections.Counter(syncs)

    images = batch["images"].float().div(255)
    with profile(activities=[ProfilerActivity.CPU]) as fb:
        out = t.net(images)
        sum(o.float().sum() for o in (out.cls_logits, out.reg_distri)).backward()
    t.grads.zero_()
    ratio = _aten_ops(step.events()) / _aten_ops(fb.events())
    assert ratio <= 2.0, ratio


def test_losses_and_gradients_equal_the_previous_implementation(trainer):
    t, batch = trainer
    model, crit = t.model, t.criterion
    images = batch["images"].float().div(255)
    grads = {}
    for name, fn in (("now", lambda out: crit.from_padded(out, *batch["gt"])),
                     ("before", lambda out: previous_loss(crit, out, batch["targets"]))):
        model.zero_grad(set_to_none=True)
        loss, parts = fn(model(images))
        loss.backward()
        grads[name] = (loss.detach(), {k: parts[k].detach() for k in ("loss_cls", "loss_iou", "loss_dfl")},
                       {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (loss_now, parts_now, g_now), (loss_before, parts_before, g_before) = grads["now"], grads["before"]
    assert parts_before["loss_iou"] > 0  # the batch has positives, so the box terms are compared too
    torch.testing.assert_close(loss_now, loss_before, rtol=1e-6, atol=1e-6)
    for k in parts_now:
        torch.testing.assert_close(parts_now[k], parts_before[k], rtol=1e-6, atol=1e-6)
    assert g_now.keys() == g_before.keys()
    for k, g in g_now.items():
        torch.testing.assert_close(g, g_before[k], rtol=1e-6, atol=1e-6, msg=k)
    t.grads = FlatGrads([p for group in t.optimizer.param_groups for p in group["params"]])  # the views again


def test_cpu_training_runs_nhwc_but_the_stem(trainer):
    """The network trains channels-last on the CPU, but for the stem (and its NCHW input), whose NHWC backward
    crashes oneDNN; the step above ran, so backward through it survives."""
    t, _ = trainer
    model = t.model
    stem = [p for p in model.backbone.stem.parameters() if p.dim() == 4]
    rest = [p for n, p in model.named_parameters() if p.dim() == 4 and not n.startswith("backbone.stem.")]
    assert t.memory_format == torch.contiguous_format
    assert stem and all(p.is_contiguous() for p in stem)
    assert rest and all(p.is_contiguous(memory_format=torch.channels_last) for p in rest if p.shape[-1] > 1)
    assert all(p.grad.stride() == p.stride() for p in model.parameters() if p.grad is not None)
