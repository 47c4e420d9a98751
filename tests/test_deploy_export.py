"""ONNX export: valid graphs, raw outputs equal to the fused PyTorch model, NMS in the graph equal to a reference."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import batched_nms

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.deploy.export import export_onnx
from yolonas.errors import InputError
from yolonas.infer.letterbox import letterbox_batch
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.sources import read_image

NMS = NMSConfig(score_threshold=0.5, iou_threshold=0.6, top_k=200, max_detections=50)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build(yolo_nas_tiny(), class_names=["a", "b", "c", "d"]).eval()
    m.preprocessing.image_size = (128, 160)
    # A larger class bias than at init, so a random network gives scores on both sides of the threshold.
    for head in m.heads.levels():
        torch.nn.init.normal_(head.cls_pred.weight, std=5.0)
        torch.nn.init.constant_(head.cls_pred.bias, 0.0)
    return m


@pytest.fixture(scope="module")
def batch(coco128, model):
    files = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:4]
    x, _ = letterbox_batch([read_image(f) for f in files], model.preprocessing)
    return x


def _torch_outputs(model, x):
    fused = copy.deepcopy(model).fuse()
    with torch.no_grad():
        return fused.decode(fused(x))


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_raw_export_equals_fused_torch_with_dynamic_batch(tmp_path, model, batch):
    path = export_onnx(model, tmp_path / "raw.onnx", batch=None)
    assert not model.is_fused  # the caller's model is never fused in place
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["yolonas_class_names"]) == ["a", "b", "c", "d"]
    assert json.loads(meta["yolonas_preprocessing"])["image_size"] == [128, 160]
    assert meta["yolonas_outputs"] == "raw" and meta["yolonas_input"] == "float"
    assert meta["yolonas_spec"] == "yolo_nas_tiny"

    session = ort.InferenceSession(str(path))
    boxes, scores = _torch_outputs(model, batch)
    for n in (1, 4):
        ob, os_ = session.run(None, {"images": batch[:n].numpy()})
        assert ob.shape == (n, boxes.shape[1], 4) and os_.shape == (n, boxes.shape[1], 4)
        assert _rel_err(ob, boxes[:n].numpy()) < 1e-3
        assert _rel_err(os_, scores[:n].numpy()) < 1e-3


def test_uint8_input_and_dynamic_size_match_float(tmp_path, model, batch):
    float_path = export_onnx(model, tmp_path / "f.onnx", batch=2)
    u8_path = export_onnx(model, tmp_path / "u8.onnx", batch=None, dynamic_size=True, uint8_input=True)
    assert {p.key: p.value for p in onnx.load(str(u8_path)).metadata_props}["yolonas_input"] == "uint8"
    u8 = (batch[:2] * 255).round().to(torch.uint8).numpy()
    want = ort.InferenceSession(str(float_path)).run(None, {"images": batch[:2].numpy()})
    session = ort.InferenceSession(str(u8_path))
    got = session.run(None, {"images": u8})
    for g, w in zip(got, want):
        assert _rel_err(g, w) < 1e-4
    # Dynamic size: a smaller input gives the fused model's outputs at that size.
    small = batch[:1, :, :64, :96]
    boxes, scores = _torch_outputs(model, small)
    ob, os_ = session.run(None, {"images": (small * 255).round().to(torch.uint8).numpy()})
    assert _rel_err(ob, boxes.numpy()) < 1e-3 and _rel_err(os_, scores.numpy()) < 1e-3


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig) -> list[torch.Tensor]:
    """What the graph should compute, in eager PyTorch: top-k anchors by best score, per-class NMS, best max_det."""
    out = []
    for bx, sc in zip(boxes, scores):
        anchor = sc.amax(1).topk(min(cfg.top_k, len(sc))).indices
        bx, sc = bx[anchor], sc[anchor]
        a, c = (sc > cfg.score_threshold).nonzero(as_tuple=True)
        keep = batched_nms(bx[a], sc[a, c], c, cfg.iou_threshold)[:cfg.max_detections]
        out.append(torch.cat([bx[a][keep], sc[a, c][keep, None], c[keep, None].float()], 1))
    return out


def test_nms_export_equals_reference_per_image(tmp_path, model, batch):
    path = export_onnx(model, tmp_path / "nms.onnx", batch=None, nms=NMS)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["yolonas_outputs"] == "nms" and json.loads(meta["yolonas_nms"])["max_detections"] == 50

    want = _reference_nms(*_torch_outputs(model, batch), NMS)
    assert sum(len(w) for w in want) > 10 and all(len(w) < 50 for w in want)  # real detections, none cut off
    session = ort.InferenceSession(str(path))
    for n in (1, 4):
        num, boxes, scores, classes = session.run(None, {"images": batch[:n].numpy()})
        assert num.shape == (n, 1) and num.dtype == np.int64 and classes.dtype == np.int64
        assert boxes.shape == (n, 50, 4) and scores.shape == (n, 50) and classes.shape == (n, 50)
        for i in range(n):
            k = int(num[i, 0])
            got = np.concatenate([boxes[i, :k], scores[i, :k, None], classes[i, :k, None]], 1)
            ref = want[i].numpy()
            assert k == len(ref)
            # Same detections; ORT and torchvision order equal scores differently, so compare sorted rows.
            order_g, order_r = np.lexsort(got.T[::-1]), np.lexsort(ref.T[::-1])
            np.testing.assert_allclose(got[order_g], ref[order_r], rtol=1e-3, atol=1e-2)
            assert not boxes[i, k:].any() and not scores[i, k:].any() and not classes[i, k:].any()  # zero padding


def test_nms_export_with_dynamic_size_pads_anchors(tmp_path, model, batch):
    cfg = NMSConfig(score_threshold=0.5, iou_threshold=0.6, top_k=1000, max_detections=20)
    path = export_onnx(model, tmp_path / "nms_dyn.onnx", batch=None, dynamic_size=True, nms=cfg)
    small = batch[:2, :, :64, :64]  # 84 anchors, fewer than top_k
    num, boxes, _, _ = ort.InferenceSession(str(path)).run(None, {"images": small.numpy()})
    want = _reference_nms(*_torch_outputs(model, small), cfg)
    assert num[:, 0].tolist() == [min(len(w), 20) for w in want] and boxes.shape == (2, 20, 4)


def test_export_rejects_options_the_graph_cannot_do(tmp_path, model):
    with pytest.raises(InputError, match="class_agnostic"):
        export_onnx(model, tmp_path / "x.onnx", nms=NMSConfig(class_agnostic=True))
    with pytest.raises(InputError, match="batch"):
        export_onnx(model, tmp_path / "x.onnx", batch=0)
