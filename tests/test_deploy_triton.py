"""`yolonas export --format triton`: a model repository whose config.pbtxt parses with tritonclient's protobuf and
describes the model file beside it, and whose model file gives the checkpoint's boxes through our Predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

ort = pytest.importorskip("onnxruntime")
model_config = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc]")

from google.protobuf import text_format  # noqa: E402

from serving import tiny_checkpoint  # noqa: E402
from yolonas.cli import app  # noqa: E402
from yolonas.deploy.export import NMS_OUTPUTS  # noqa: E402
from yolonas.deploy.open import open_predictor  # noqa: E402
from yolonas.infer.postprocess import NMSConfig  # noqa: E402
from yolonas.infer.sources import read_image  # noqa: E402

# The briefly trained model's scores are nearly tied, and its boxes overlap a lot: at the usual NMS IoU, which of
# two near-copies survives would follow differences in the last digits between runtimes. At 0.99 NMS keeps them.
IOU = 0.99


def _nms(conf: float) -> NMSConfig:
    return NMSConfig(score_threshold=conf, iou_threshold=IOU)


@pytest.fixture(scope="module")
def trained(coco128, tmp_path_factory):
    """(checkpoint, images as arrays, a score threshold with a clear gap around it, the checkpoint's boxes there)."""
    weights, images = tiny_checkpoint(coco128, tmp_path_factory.mktemp("triton"))
    arrays = [read_image(p) for p in images]
    scores = np.sort(np.concatenate([d.scores for d in open_predictor(
        weights, nms=_nms(0.01)).predict_arrays(arrays)]))[::-1]
    # A threshold in the widest gap among the top scores: runtimes differ in the last digits of a score.
    k = 5 + int(np.argmax(scores[5:40] - scores[6:41]))
    conf = float(scores[k] + scores[k + 1]) / 2
    want = open_predictor(weights, nms=_nms(conf)).predict_arrays(arrays)
    return weights, arrays, conf, want


def _export(weights, folder, fmt: str, conf: float):
    result = CliRunner().invoke(app, ["export", "--weights", str(weights), "--format", fmt, "--conf", str(conf),
                                      "--iou", str(IOU), "--output", str(folder)])
    assert result.exit_code == 0, result.output
    config = text_format.Parse((folder / "yolonas" / "config.pbtxt").read_text(), model_config.ModelConfig())
    return config, folder / "yolonas" / "1"


def _io(config) -> tuple[list, list]:
    types = model_config.DataType
    return ([(t.name, types.Name(t.data_type), list(t.dims)) for t in config.input],
            [(t.name, types.Name(t.data_type), list(t.dims)) for t in config.output])


def _same_boxes(got, want) -> None:
    assert sum(len(d) for d in want) > 5
    for g, w in zip(got, want):
        order_g, order_w = np.lexsort(g.boxes.T[::-1]), np.lexsort(w.boxes.T[::-1])
        assert g.class_ids[order_g].tolist() == w.class_ids[order_w].tolist()
        np.testing.assert_allclose(g.boxes[order_g], w.boxes[order_w], atol=0.05)
        np.testing.assert_allclose(g.scores[order_g], w.scores[order_w], atol=1e-4)


def test_an_onnx_repository_describes_its_model_and_gives_the_checkpoints_boxes(trained, tmp_path):
    weights, arrays, conf, want = trained
    config, version = _export(weights, tmp_path / "repo", "triton", conf)
    assert (config.name, config.backend, config.max_batch_size) == ("yolonas", "onnxruntime", 8)
    assert config.HasField("dynamic_batching")
    inputs, outputs = _io(config)
    session = ort.InferenceSession(str(version / "model.onnx"))
    ort_types = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
    assert inputs == [(i.name, ort_types[i.type], i.shape[1:]) for i in session.get_inputs()]
    assert outputs == [(o.name, ort_types[o.type], o.shape[1:]) for o in session.get_outputs()]
    assert inputs == [("images", "TYPE_FP32", [3, 128, 128])]
    assert [o[0] for o in outputs] == list(NMS_OUTPUTS) and outputs[1][2] == [300, 4]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(params["yolonas_class_names"]) == open_predictor(weights).class_names
    assert json.loads(params["yolonas_nms"])["score_threshold"] == pytest.approx(conf)

    got = open_predictor(version / "model.onnx", nms=_nms(conf)).predict_arrays(arrays)
    _same_boxes(got, want)


def test_an_openvino_repository_gives_the_checkpoints_boxes(trained, tmp_path):
    pytest.importorskip("openvino")
    weights, arrays, conf, want = trained
    config, version = _export(weights, tmp_path / "repo", "triton-openvino", conf)
    assert (config.backend, config.max_batch_size) == ("openvino", 8) and config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.KIND_CPU
    assert _io(config)[0] == [("images", "TYPE_FP32", [3, 128, 128])]
    assert (version / "model.xml").is_file() and (version / "model.bin").is_file()
    got = open_predictor(version / "model.xml", nms=_nms(conf)).predict_arrays(arrays)
    _same_boxes(got, want)


def test_triton_export_refuses_what_it_cannot_write(trained, tmp_path):
    result = CliRunner().invoke(app, ["export", "--weights", str(trained[0]), "--format", "triton", "--int8",
                                      "--output", str(tmp_path / "r")])
    assert result.exit_code != 0 and "--int8" in str(result.exception)
