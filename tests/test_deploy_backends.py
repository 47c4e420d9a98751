"""Runtime backends on exported files of a model trained here: PyTorch's outputs and AP, torch-free use, errors."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from yolonas.data.yolo import load_data_yaml
from yolonas.deploy.backends import (
    OnnxRuntimeBackend,
    OpenVINOBackend,
    TensorRTBackend,
    load_backend,
)
from yolonas.deploy.export import export_file, export_onnx, export_openvino
from yolonas.errors import InputError
from yolonas.eval.validate import validate
from yolonas.infer import TorchBackend
from yolonas.infer.letterbox import letterbox_batch
from yolonas.infer.postprocess import PREDICT_NMS, VAL_NMS, NMSConfig
from yolonas.infer.predictor import Predictor
from yolonas.infer.sources import read_image
from yolonas.infer.tiling import TileConfig
from yolonas.weights import load

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(marker: str = "<!-- tested: no-torch onnxruntime example -->") -> str:
    """The python block that follows `marker` in the README: the test runs exactly what users read."""
    text = README.read_text()
    after = text[text.index(marker):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def trained(trained_tiny, tmp_path_factory):
    """yolo_nas_tiny fitted briefly to 8 coco128 images (the session's checkpoint), their data.yaml, and a folder."""
    tmp_path = tmp_path_factory.mktemp("deploy")
    return load(trained_tiny.best).eval(), trained_tiny.data, trained_tiny.images, tmp_path


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _raw_backends(runtime: str, path: Path, folder: Path) -> list:
    """The backends of `runtime` on the raw export `path`: ONNX Runtime; or OpenVINO on the .onnx and on its IR
    (skipped when OpenVINO is not installed)."""
    if runtime == "onnxruntime":
        return [OnnxRuntimeBackend(path, threads=2)]
    pytest.importorskip("openvino")
    return [OpenVINOBackend(path, threads=2), OpenVINOBackend(export_openvino(path, folder / "ov.xml"))]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_raw_exports_give_pytorch_outputs(trained, runtime):
    model, _, images, tmp_path = trained
    path = export_onnx(model, tmp_path / "raw.onnx", batch=None)
    x, _ = letterbox_batch([read_image(p) for p in images[:4]], model.preprocessing)
    with torch.no_grad():
        want_boxes, want_scores = TorchBackend(copy.deepcopy(model).fuse())(x)
    for backend in _raw_backends(runtime, path, tmp_path):
        assert backend.class_names == model.class_names and backend.preprocessing == model.preprocessing
        for n in (1, 4):
            boxes, scores = backend(x[:n])
            assert _rel_err(boxes, want_boxes[:n]) < 1e-3 and _rel_err(scores, want_scores[:n]) < 1e-3, backend


def test_static_batch_1_export_serves_a_batching_predictor(trained):
    """A static batch-1 file serves a Predictor batching 4 images, one at a time."""
    model, _, images, tmp_path = trained
    static = OnnxRuntimeBackend(export_onnx(model, tmp_path / "b1.onnx", batch=1))
    dets = Predictor(static, batch_size=4).predict([str(p) for p in images[:4]])
    want = Predictor(model, batch_size=4).predict([str(p) for p in images[:4]])
    assert [len(d) for d in dets] == [len(d) for d in want] and sum(len(d) for d in want) > 0
    np.testing.assert_allclose(np.concatenate([d.boxes for d in dets]), np.concatenate([d.boxes for d in want]),
                               rtol=1e-3, atol=0.05)


def _nms_exports(model, folder: Path) -> dict[str, object]:
    """The model's NMS-inside exports at predict's default thresholds, each on the runtimes that run it."""
    pytest.importorskip("openvino")
    onnx_path = export_onnx(model, folder / "nms.onnx", batch=None, nms=PREDICT_NMS)
    xml = export_file(model, folder / "nms.xml", "openvino", batch=None, nms=PREDICT_NMS)
    return {"onnx on onnxruntime": OnnxRuntimeBackend(onnx_path, threads=2),
            "onnx on openvino": OpenVINOBackend(onnx_path, threads=2),
            "xml on openvino": OpenVINOBackend(xml, threads=2)}


def test_nms_exports_score_like_the_checkpoint_at_run_time_thresholds(trained):
    """Exported at predict's score 0.25, an NMS-inside file still validates at val's 0.01: the thresholds are
    inputs of its graph, so AP equals the checkpoint's, on ONNX Runtime and OpenVINO, .onnx and .xml alike."""
    model, data, _, tmp_path = trained
    dataset = load_data_yaml(data, "val")
    want = validate(model, dataset, batch_size=8)
    assert want.AP > 0.1  # a model with real detections
    for name, backend in _nms_exports(model, tmp_path).items():
        assert backend.threshold_inputs, name
        got = validate(Predictor(backend, nms=VAL_NMS, batch_size=8), dataset)
        assert abs(got.AP - want.AP) < 1e-3 and abs(got.AP50 - want.AP50) < 1e-3, (name, got.AP, want.AP)


def test_nms_exports_give_the_checkpoints_boxes_at_other_thresholds(trained):
    model, _, images, tmp_path = trained
    strict = NMSConfig(score_threshold=0.5, iou_threshold=0.5)
    arrays = [read_image(p) for p in images]
    want = Predictor(model, nms=strict).predict_arrays(arrays)
    assert sum(len(d) for d in want) > 0
    for name, backend in _nms_exports(model, tmp_path / "strict").items():
        got = Predictor(backend, nms=strict).predict_arrays(arrays)
        for g, w in zip(got, want):
            assert g.class_ids.tolist() == w.class_ids.tolist() and (g.scores > 0.5).all(), name
            np.testing.assert_allclose(g.boxes, w.boxes, atol=0.05)
            np.testing.assert_allclose(g.scores, w.scores, atol=1e-4)


def test_an_nms_export_says_what_it_cannot_change(trained, caplog):
    model, _, images, tmp_path = trained
    backend = OnnxRuntimeBackend(export_onnx(model, tmp_path / "few.onnx", nms=NMSConfig(max_detections=5)))
    with caplog.at_level(logging.WARNING, logger="yolonas.deploy"):
        dets = Predictor(backend, nms=NMSConfig(score_threshold=0.01, max_detections=50)).predict(str(images[0]))
    assert len(dets[0]) == 5 and "at most 5 detections" in caplog.text and "--max-det 50" in caplog.text
    dets = Predictor(backend, nms=NMSConfig(score_threshold=0.01, max_detections=3)).predict(str(images[0]))
    assert len(dets[0]) == 3  # fewer than the export keeps: the best ones


def test_uint8_export_runs_like_float(trained):
    model, _, images, tmp_path = trained
    f = OnnxRuntimeBackend(export_onnx(model, tmp_path / "f.onnx", batch=None, nms=VAL_NMS))
    u8 = load_backend(export_onnx(model, tmp_path / "u8.onnx", batch=None, nms=VAL_NMS, uint8_input=True))
    assert u8.uint8_input and u8.has_nms
    x, _ = letterbox_batch([read_image(p) for p in images[:2]], model.preprocessing)
    for a, b in zip(u8.detect(x, VAL_NMS), f.detect(x, VAL_NMS)):
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_plain_onnxruntime_runs_nms_export_without_torch(trained):
    model, _, images, tmp_path = trained
    path = export_onnx(model, tmp_path / "nms_u8.onnx", batch=None, uint8_input=True, nms=PREDICT_NMS)
    blocker = "import sys; sys.modules['torch'] = None  # any import of torch now fails\n"
    out = subprocess.run([sys.executable, "-c", blocker + readme_example(), str(path), str(images[0])],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    want = Predictor(OnnxRuntimeBackend(path)).predict(str(images[0]))[0]
    assert len(out) == len(want) > 0
    name, score, *box = out[0].split()
    assert name == want.class_names[want.class_ids[0]] and abs(float(score) - want.scores[0]) < 1e-3
    np.testing.assert_allclose([float(v) for v in box], want.boxes[0], atol=0.1)


def _one_line_input_error(fn, match: str) -> str:
    with pytest.raises(InputError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_errors_are_one_line(trained, tmp_path):
    model, _, _, export_dir = trained
    _one_line_input_error(lambda: load_backend(tmp_path / "missing.onnx"), "no such file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    _one_line_input_error(lambda: load_backend(garbage), "not a readable ONNX file")

    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, chosen on purpose
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.rand(1, 3, 32, 32),), str(foreign), dynamo=False,
                          input_names=["images"])
    _one_line_input_error(lambda: load_backend(foreign), "yolonas export")

    static = load_backend(export_onnx(model, export_dir / "static.onnx", batch=None))
    msg = _one_line_input_error(lambda: static(torch.rand(1, 3, 64, 96)), "expects 128x128")
    assert "static.onnx" in msg

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    _one_line_input_error(lambda: load_backend(engine), "tensorrt")
    _one_line_input_error(lambda: TensorRTBackend(engine), "tensorrt")


def test_tiles_run_on_an_export_as_on_the_checkpoint(trained):
    """`--tile` on an exported file: the same tiles, boxes and merge as on the checkpoint it came from."""
    model, data, images, tmp_path = trained
    tiles = TileConfig(256, 0.2, whole_image=True)
    onnx = OnnxRuntimeBackend(export_onnx(model, tmp_path / "tiles.onnx", batch=None))
    pictures = [read_image(p) for p in images[:3]]
    want = Predictor(copy.deepcopy(model).fuse(), nms=VAL_NMS, tiles=tiles).predict_arrays(pictures)
    got = Predictor(onnx, nms=VAL_NMS, tiles=tiles).predict_arrays(pictures)
    for a, b in zip(got, want):
        confident = b.scores > 0.1  # below, a last-digit score change may reorder the tail: compare the rest
        assert confident.sum() > 0
        np.testing.assert_allclose(a.boxes[:confident.sum()], b.boxes[confident], atol=0.05)
        np.testing.assert_allclose(a.scores[:confident.sum()], b.scores[confident], atol=1e-4)
    dataset = load_data_yaml(data, "val")
    plain = validate(onnx, dataset)
    tiled = validate(Predictor(onnx, nms=VAL_NMS, tiles=tiles), dataset)
    assert tiled.to_dict().keys() == plain.to_dict().keys() and tiled.AP != plain.AP
