"""Quantization-aware training: fake INT8 convs, calibration, key-compatible checkpoints and a real fine-tune."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
import yaml
from typer.testing import CliRunner

import yolonas
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.cli import app
from yolonas.errors import InputError
from yolonas.infer.letterbox import letterbox_batch
from yolonas.infer.sources import read_image
from yolonas.preprocess import Preprocessing
from yolonas.quant.qat import fake_quant_convs, prepare_qat, qat_config
from yolonas.train import apply_overrides, load_recipe, train


def _batches(coco128, size=128, n=4):
    files = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:n]
    x, _ = letterbox_batch([read_image(f) for f in files], Preprocessing(image_size=(size, size)))
    return [x[:2], x[2:]]


def _random_bn(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_fake_quant_is_close_to_float_and_on_the_int8_grid(coco128, activations):
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), 3)
    _random_bn(model)
    model.eval()
    x = _batches(coco128)[0]
    with torch.no_grad():
        ref = model(x).cls_logits
    prepare_qat(model, _batches(coco128), activations=activations, method="minmax")
    convs = fake_quant_convs(model)
    assert len(convs) == sum(1 for m in build(yolo_nas_tiny(), 3).eval().fuse(partial=True).modules()
                             if type(m) is torch.nn.Conv2d)
    with torch.no_grad():
        out = model(x).cls_logits
    assert 0 < (out - ref).abs().max() < 0.1 * ref.abs().max()  # quantized: not equal, but close
    # The weights the conv really uses sit on a per-channel grid of at most 255 levels.
    conv = next(iter(convs.values()))
    w = conv.weight.detach()
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    wq = torch.fake_quantize_per_channel_affine(w, scale.flatten(), torch.zeros(len(w), dtype=torch.int32), 0, -127,
                                                127)
    levels = (wq / scale).round()
    assert torch.allclose(wq / scale, levels, atol=1e-4) and levels.abs().max() <= 127
    if activations == "int8":
        assert all(int(m.act_zero_point) == 0 for m in convs.values())


def test_swap_keeps_keys(coco128):
    model = build(yolo_nas_tiny(), 3).eval()
    float_keys = list(build(yolo_nas_tiny(), 3).eval().fuse(partial=True).state_dict())
    prepare_qat(model, _batches(coco128))
    assert list(model.state_dict()) == float_keys  # checkpoints written during QAT load into a plain model


def test_float_layers_stay_float_and_bad_settings_fail(coco128):
    model = build(yolo_nas_tiny(), 3).eval()
    prepare_qat(model, _batches(coco128), float_layers=["backbone.stem.conv.rbr_reparam"])
    assert "backbone.stem.conv.rbr_reparam" not in fake_quant_convs(model)
    assert type(model.backbone.stem.conv.rbr_reparam) is torch.nn.Conv2d
    with pytest.raises(InputError, match="activations"):
        prepare_qat(build(yolo_nas_tiny(), 3), _batches(coco128), activations="int4")
    with pytest.raises(InputError, match="fully fused"):
        prepare_qat(build(yolo_nas_tiny(), 3).eval().fuse(), _batches(coco128))


def test_straight_through_gradients_reach_every_quantized_weight(coco128):
    model = build(yolo_nas_tiny(), 3).eval()
    prepare_qat(model, _batches(coco128))
    model.train()
    out = model(_batches(coco128)[0])
    (out.cls_logits.sum() + out.reg_distri.sum()).backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in fake_quant_convs(model).values())


def test_qat_recipe_changes():
    cfg = load_recipe("scratch_small_data")
    q = qat_config(cfg)
    assert q.data.batch_size == cfg.data.batch_size // 2
    assert q.schedule.epochs == round(cfg.schedule.epochs / 10)
    assert q.optimizer.lr == pytest.approx(cfg.optimizer.lr * 0.01)
    assert q.optimizer.weight_decay == pytest.approx(cfg.optimizer.weight_decay * 0.01)
    assert q.schedule.final_lr_ratio == 0.01 and not q.ema.enabled and not q.run.sync_bn


def test_qat_fine_tune_saves_a_loadable_partially_fused_checkpoint(coco128, tmp_path):
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), class_names=yolonas.data.load_data_yaml(coco128 / "data.yaml", "train").class_names)
    model.eval()
    prepare_qat(model, _batches(coco128))
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data.path": str(coco128 / "data.yaml"), "data.image_size": 128, "data.batch_size": 4, "data.workers": 0,
        "schedule.epochs": 1, "run.project": str(tmp_path), "run.name": "qat", "run.verbose": False,
        "run.device": "cpu", "run.plots": False, "ema.enabled": False})
    before = {n: m.weight.detach().clone() for n, m in fake_quant_convs(model).items()}
    result = train(cfg, model=model)
    changed = [n for n, m in fake_quant_convs(model).items() if not torch.equal(m.weight.detach(), before[n])]
    assert len(changed) == len(before)  # every quantized conv was fine-tuned
    back = yolonas.load(result.last)
    assert back.fusion == "partial" and not fake_quant_convs(back)


def test_cli_quantize_qat_fine_tunes_then_writes_a_qdq_model(coco128, tmp_path, monkeypatch):
    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:8]
    (tmp_path / "first.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = yaml.safe_load((coco128 / "data.yaml").read_text())["names"]
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "first.txt", "val": "first.txt", "names": names}))
    torch.manual_seed(0)
    build(yolo_nas_tiny(), class_names=list(names.values()) if isinstance(names, dict) else names).save(
        tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["quantize", "--weights", "tiny.pt", "--data", str(data), "--mode", "qat",
                                      "--recipe", "cpu_smoke", "--epochs", "1", "--imgsz", "128", "--calib-images",
                                      "4", "--device", "cpu", "--name", "q", "--json", "q.json"])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "q.json").read_text())
    assert yolonas.load(tmp_path / "runs/quantize/q/qat/weights/last.pt").fusion == "partial"
    ops = {n.op_type for n in onnx.load(str(tmp_path / out["output"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
