"""The published architectures: keys, shapes, parameter counts, GFLOPs and exact fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yolonas.arch.model import build
from yolonas.arch.spec import ArchSpec, yolo_nas_l, yolo_nas_m, yolo_nas_s, yolo_nas_tiny
from yolonas.arch.summary import summarize

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
SPECS = {"s": yolo_nas_s, "m": yolo_nas_m, "l": yolo_nas_l}
# super-gradients' figures (reference/yolo_nas.md section 1.5): params incl. rbr_reparam, entries,
# GFLOPs at 640 unfused and fused.
PUBLISHED = {
    "s": (19_053_888, 921, 33.9, 31.8),
    "m": (51_182_658, 965, 94.2, 87.8),
    "l": (66_976_392, 1097, 129.0, 119.8),
}


def _reference_keys(variant: str) -> list[tuple[str, list[int]]]:
    path = REFERENCE / f"yolo_nas_{variant}_keys.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [(k, eval(shape)) for k, shape, _ in rows]  # noqa: S307 - shapes like "[48, 3, 3, 3]"


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_state_dict_matches_super_gradients(variant):
    model = build(SPECS[variant]())
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _reference_keys(variant)  # same keys, same shapes, same order
    params, entries, _, _ = PUBLISHED[variant]
    assert len(ours) == entries
    assert abs(sum(p.numel() for p in model.parameters()) - params) < 1000


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_summary_gflops_and_params(variant):
    model = build(SPECS[variant]())
    info = summarize(model, 640)
    params, entries, unfused, fused = PUBLISHED[variant]
    assert info["gflops"] == pytest.approx(unfused, rel=0.01)
    assert info["gflops_fused"] == pytest.approx(fused, rel=0.01)
    assert abs(info["params"] - params) < 1000 and info["state_dict_entries"] == entries
    assert info["params_fused"] == pytest.approx({"s": 12.17e6, "m": 31.89e6, "l": 41.99e6}[variant], rel=1e-3)
    assert sum(p["gflops"] for p in info["parts"].values()) == pytest.approx(info["gflops"])
    assert not model.is_fused  # the summary works on copies


def test_flop_counter_on_real_tensors_agrees_with_meta():
    model = build(yolo_nas_tiny(), 3).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 128, 128))
    assert summarize(model, 128)["gflops"] == pytest.approx(counter.get_total_flops() / 1e9)


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    for name, p in model.named_parameters():
        if name.endswith("alpha"):
            p.data.fill_(0.7)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("variant", ["s", "m", "l"])
@pytest.mark.parametrize("partial", [False, True])
def test_fuse_is_exact(variant, partial):
    torch.manual_seed(0)
    model = build(SPECS[variant]()).eval()
    _randomise_bn(model)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse(partial=partial)(x)
    assert _rel_err(fused.cls_logits, ref.cls_logits) < 1e-4
    assert _rel_err(fused.reg_distri, ref.reg_distri) < 1e-4
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_blocks = {"s": 37, "m": 39, "l": 45}[variant]
    # partial keeps one post-sum BN per QARepVGG block plus every other BN; full fusion folds all of them.
    assert (bns >= n_blocks) if partial else (bns == 0)


def test_fuse_needs_eval_mode():
    with pytest.raises(RuntimeError, match="eval"):
        build(yolo_nas_tiny()).fuse()


def test_repvgg_block_type_fuses_exactly():
    spec = yolo_nas_tiny()
    for s in spec.backbone.stages:
        s.block = "repvgg"
    model = build(spec, 3).eval()
    _randomise_bn(model, seed=1)
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        ref = model(x)
        out = model.fuse()(x)
    assert _rel_err(out.reg_distri, ref.reg_distri) < 1e-4


@pytest.mark.parametrize("fn", [yolo_nas_s, yolo_nas_m, yolo_nas_l, yolo_nas_tiny])
def test_spec_yaml_round_trip(fn, tmp_path):
    spec = fn()
    path = tmp_path / "spec.yaml"
    spec.to_yaml(path)
    assert ArchSpec.from_yaml(path) == spec


def test_spec_yaml_rejects_unknown_keys(tmp_path):
    text = yolo_nas_tiny().to_yaml().replace("stem_channels", "stem_chanels")
    with pytest.raises(TypeError):
        ArchSpec.from_yaml(text)


def test_head_output_shapes_and_decode():
    model = build(yolo_nas_tiny(), 5).eval()
    out = model(torch.rand(2, 3, 64, 96))
    n = (8 * 12) + (4 * 6) + (2 * 3)
    assert out.cls_logits.shape == (2, n, 5)
    assert out.reg_distri.shape == (2, n, 68)
    boxes, scores = model.decode(out)
    assert boxes.shape == (2, n, 4) and scores.shape == (2, n, 5)
    # With all-equal DFL logits every side's expectation is 8 cells: boxes are 16 cells wide around the point.
    flat = out._replace(reg_distri=torch.zeros_like(out.reg_distri))
    b, _ = model.decode(flat)
    widths = (b[0, :, 2] - b[0, :, 0]) / out.stride_tensor[:, 0]
    assert torch.allclose(widths, torch.full_like(widths, 16.0))
    assert torch.allclose((b[0, :, :2] + b[0, :, 2:]) / 2, out.anchor_points)


def test_spp_cascaded_pools_equal_parallel_pools():
    from yolonas.arch.blocks import SPP  # noqa: PLC0415

    torch.manual_seed(0)
    spp = SPP(32, 32, (5, 9, 13)).eval()
    assert spp.cascade
    x = torch.randn(2, 32, 20, 24)
    with torch.no_grad():
        fast = spp(x)
        spp.cascade = False
        assert torch.equal(fast, spp(x))
    assert not SPP(32, 32, (5, 7, 13)).cascade
