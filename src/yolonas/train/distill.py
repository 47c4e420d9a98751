"""Knowledge distillation for the DFL head: a frozen teacher's class scores, box distributions and neck features
guide a student on the very batch the student sees, on top of the PPYoloE loss on the ground truth.

The loss, per batch (s = student, t = teacher, a = anchor, c = class, k = box side, lambda(p) the cosine decay):

    w_a      = max_c max(sigmoid(t_ac), sigmoid(s_ac).detach())       where either model sees an object
    L_cls    = T_c^2 * sum_a w_a * sum_c KL(Bern(sigmoid(t_ac / T_c)) || Bern(sigmoid(s_ac / T_c))) / max(1, sum_a w_a)
    q_a      = max_c sigmoid(t_ac)                                     where the teacher sees an object
    L_box    = T_b^2 * sum_a q_a * mean_k KL(softmax(t_ak / T_b) || softmax(s_ak / T_b)) / max(1, sum_a q_a)
    L_feat   = sum_levels T_f^2 * mean_(b, ch) KL(softmax_HW(t / T_f) || softmax_HW(align(s) / T_f))
    loss     = lambda(p) * (cls_weight * L_cls + box_weight * L_box + feat_weight * L_feat)
    lambda(p) = r + (1 - r) * (1 + cos(pi * p)) / 2,  p = step / total steps, r = final_weight_ratio
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolonas.arch.head import HeadOutput
from yolonas.arch.model import YoloNAS
from yolonas.errors import InputError
from yolonas.train.config import DistillConfig
from yolonas.weights import load

KD_KEYS = ("loss_kd_cls", "loss_kd_box", "loss_kd_feat")


def kd_weight(progress: float, final_ratio: float) -> float:
    """The KD weight at `progress` (0..1 of the run's steps): cosine from 1 down to `final_ratio`."""
    p = min(max(progress, 0.0), 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def bernoulli_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Element-wise KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T))), from logits, numerically stable."""
    s, t = student_logits / temperature, teacher_logits / temperature
    p = t.sigmoid()
    # KL = cross-entropy(p, q) - entropy(p); both terms as BCE-with-logits, so equal logits give exactly 0.
    return (F.binary_cross_entropy_with_logits(s, p, reduction="none")
            - F.binary_cross_entropy_with_logits(t, p, reduction="none"))


def class_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """L_cls of the module docstring: per-class Bernoulli KL on [B, N, C] logits, weighted per anchor."""
    # YOLO-NAS scores are independent sigmoids (varifocal), not a softmax over classes, so KD is per class.
    # Weighting by the larger of both confidences covers the teacher's objects and the student's false
    # positives, while the thousands of background anchors that both agree on do not drown the signal.
    s, t = student_logits.float(), teacher_logits.float()
    w = torch.maximum(t.sigmoid(), s.detach().sigmoid()).amax(-1)  # [B, N]
    kl = bernoulli_kl(s, t, temperature).sum(-1)
    return temperature ** 2 * (kl * w).sum() / w.sum().clamp(min=1.0)


def box_kd_loss(student_distri: Tensor, teacher_distri: Tensor, teacher_logits: Tensor, reg_max: int,
                temperature: float = 10.0) -> Tensor:
    """L_box of the module docstring: KL between the side distributions [B, N, 4*(R+1)], weighted by teacher score."""
    # Only where the teacher sees an object is its box worth copying (LD's "valuable localization region");
    # its max class score is a soft version of that region that needs no assigner and no threshold.
    b, n, _ = student_distri.shape
    s = student_distri.float().reshape(b, n, 4, reg_max + 1) / temperature
    t = teacher_distri.float().reshape(b, n, 4, reg_max + 1) / temperature
    kl = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), reduction="none", log_target=True).sum(-1).mean(-1)
    q = teacher_logits.float().sigmoid().amax(-1)  # [B, N]
    return temperature ** 2 * (kl * q).sum() / q.sum().clamp(min=1.0)


def channel_wise_kd(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Channel-wise distillation of [B, C, H, W] maps: KL of each channel's spatial softmax, mean over (B, C)."""
    b, c = teacher.shape[:2]
    s = student.float().reshape(b, c, -1) / temperature
    t = teacher.float().reshape(b, c, -1) / temperature
    kl = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), reduction="none", log_target=True).sum(-1)
    return temperature ** 2 * kl.mean()


class DistillLoss(nn.Module):
    """The KD terms of the module docstring. Its only parameters are the 1x1 convs that map the student's neck
    channels to the teacher's (for `feat_weight` > 0); they belong to the distillation, not the student."""

    def __init__(self, cfg: DistillConfig, reg_max: int, student_channels: list[int] | None = None,
                 teacher_channels: list[int] | None = None):
        super().__init__()
        self.cfg, self.reg_max = cfg, reg_max
        self.align = nn.ModuleList()
        if cfg.feat_weight > 0:
            if not student_channels or not teacher_channels or len(student_channels) != len(teacher_channels):
                raise InputError("feature distillation needs the neck channels of student and teacher, level by level")
            self.align = nn.ModuleList(nn.Conv2d(cs, ct, 1) for cs, ct in zip(student_channels, teacher_channels))

    def forward(self, student: HeadOutput, teacher: HeadOutput, progress: float,
                student_feats: list[Tensor] | None = None, teacher_feats: list[Tensor] | None = None,
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """(weighted KD loss with grad, {loss_kd_cls, loss_kd_box, loss_kd_feat} detached and unweighted)."""
        cfg = self.cfg
        with torch.autocast(student.cls_logits.device.type, enabled=False):  # exp and log need float32's range
            cls = class_kd_loss(student.cls_logits, teacher.cls_logits, cfg.cls_temperature)
            box = box_kd_loss(student.reg_distri, teacher.reg_distri, teacher.cls_logits, self.reg_max,
                              cfg.box_temperature)
        feat = cls.new_zeros(())
        if len(self.align) and student_feats is not None and teacher_feats is not None:
            for conv, fs, ft in zip(self.align, student_feats, teacher_feats):
                aligned = conv(fs.to(conv.weight.dtype))
                with torch.autocast(aligned.device.type, enabled=False):
                    feat = feat + channel_wise_kd(aligned, ft, cfg.feat_temperature)
        lam = kd_weight(progress, cfg.final_weight_ratio)
        loss = lam * (cfg.cls_weight * cls + cfg.box_weight * box + cfg.feat_weight * feat)
        return loss, {"loss_kd_cls": cls.detach(), "loss_kd_box": box.detach(), "loss_kd_feat": feat.detach()}


class NeckTap:
    """Keeps the last neck output of a model (a forward hook), so feature KD needs no change to `forward`."""

    def __init__(self, model: YoloNAS):
        self.feats: list[Tensor] | None = None
        self.handle = model.neck.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output) -> None:
        self.feats = list(output)

    def pop(self) -> list[Tensor] | None:
        feats, self.feats = self.feats, None
        return feats


def load_teacher(source: str, student: YoloNAS, class_names: list[str]) -> YoloNAS:
    """The teacher `source` names (a checkpoint, usually), checked against the student: same classes, reg_max,
    strides; frozen and in eval mode."""
    teacher = load(source)
    if list(teacher.class_names) != list(class_names):
        raise InputError(f"teacher {source}: its classes {list(teacher.class_names)[:8]} are not the data set's "
                         f"{list(class_names)[:8]}; distillation needs the same classes in the same order")
    th, sh = teacher.spec.head, student.spec.head
    if th.reg_max != sh.reg_max or tuple(th.strides) != tuple(sh.strides):
        raise InputError(f"teacher {source}: head reg_max {th.reg_max}, strides {tuple(th.strides)}; the student "
                         f"has {sh.reg_max}, {tuple(sh.strides)}; KD on outputs needs the same anchors and bins")
    teacher.eval().requires_grad_(False)
    return teacher


class Distiller:
    """The teacher and the KD loss of one training run; the trainer calls `teacher_out` then `loss` per step.

    The teacher is held here, not registered in any module, so no checkpoint of the student ever contains it.
    """

    def __init__(self, cfg: DistillConfig, student: YoloNAS, class_names: list[str], device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format):
        if not cfg.teacher:
            raise InputError("distillation needs a teacher: set distill.teacher (--teacher) to a checkpoint")
        self.cfg = cfg
        self.teacher = load_teacher(cfg.teacher, student, class_names).to(device, memory_format=memory_format)
        feats = cfg.feat_weight > 0
        self.loss = DistillLoss(cfg, student.spec.head.reg_max,
                                list(student.neck.out_channels) if feats else None,
                                list(self.teacher.neck.out_channels) if feats else None).to(device)
        self.student_tap = NeckTap(student) if feats else None
        self.teacher_tap = NeckTap(self.teacher) if feats else None

    @torch.no_grad()
    def teacher_out(self, images: Tensor) -> HeadOutput:
        """The teacher's raw head output on the student's batch (eval mode, no gradients)."""
        # no_grad, not inference_mode: the KD losses save the teacher's outputs for the student's backward pass.
        self.teacher.eval()
        return self.teacher(images)

    def __call__(self, student_out: HeadOutput, teacher_out: HeadOutput, progress: float,
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        sf = self.student_tap.pop() if self.student_tap else None
        tf = self.teacher_tap.pop() if self.teacher_tap else None
        return self.loss(student_out, teacher_out, progress, sf, tf)
