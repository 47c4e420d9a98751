"""OpenVINO as an INT8 and bf16 target: NNCF and converted-QDQ IRs of a model trained here, their metadata, what stays
float, `yolonas export --int8/--bf16`, `yolonas bench --all`, and the one-line errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from yolonas.cli import app
from yolonas.data.yolo import load_data_yaml
from yolonas.deploy.backends import OpenVINOBackend, load_backend
from yolonas.deploy.export import META_PRECISION, META_QUANTIZATION, export_onnx, export_openvino
from yolonas.deploy.timing import bf16_supported
from yolonas.errors import InputError
from yolonas.eval.validate import validate
from yolonas.infer.postprocess import VAL_NMS
from yolonas.infer.predictor import Predictor
from yolonas.infer.tiling import TileConfig
from yolonas.quant.calibration import NETWORK_PREFIXES
from yolonas.quant.config import QuantConfig
from yolonas.quant.pipeline import quantize
from yolonas.weights import load

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

STEM = "backbone.stem.conv.rbr_reparam"


@pytest.fixture(scope="module")
def trained(trained_tiny, tmp_path_factory):
    """yolo_nas_tiny fitted briefly to 8 coco128 images at 128 px (the session's checkpoint), its data.yaml and
    float export."""
    tmp = tmp_path_factory.mktemp("ov")
    model = load(trained_tiny.best).eval()
    return model, trained_tiny.best, trained_tiny.data, export_onnx(model, tmp / "fp32.onnx", batch=1), tmp


def _quantized_inputs(xml: Path) -> dict[str, bool]:
    """Per Convolution of an IR: whether its activation input comes through a FakeQuantize."""
    model = ov.Core().read_model(str(xml))
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            source = op.input_value(0).get_node()
            out[op.get_friendly_name()] = source.get_type_name() == "FakeQuantize"
    return out


def test_nncf_ir_is_int8_in_the_network_only_and_keeps_accuracy(trained):
    model, _, data, onnx_fp32, tmp = trained
    r = quantize(onnx_fp32, QuantConfig(data, tmp / "nncf", fmt="openvino", calib_images=8, val_images=0,
                                        float_layers=[STEM]))
    assert r.quantizer == "nncf" and r.output.endswith(".xml")
    backend = OpenVINOBackend(r.output, threads=2)
    assert backend.int8 and backend.inference_precision == "f32" and backend.class_names == model.class_names
    meta = json.loads(ov.Core().read_model(r.output).get_rt_info(["yolonas", META_QUANTIZATION]).astype(str))
    assert meta["quantizer"] == "nncf" and meta["calibration_images"] == 8 and meta["float_layers"] == [STEM]
    convs = _quantized_inputs(Path(r.output))
    assert sum(convs.values()) > len(convs) // 2  # most convs run INT8
    assert not any(q for name, q in convs.items() if name.startswith(f"/model/{STEM.replace('.', '/')}/"))
    assert not any(q for name, q in convs.items() if not name.startswith(NETWORK_PREFIXES))  # the decode is float
    dataset = load_data_yaml(data, "val")
    want, got = validate(model, dataset).AP, validate(backend, dataset).AP
    assert want > 0.1 and got > want - 0.05, (got, want)  # INT8 may score above a fit on 8 images, not far below


def test_qdq_file_converted_to_openvino_gives_its_outputs(trained):
    _, _, data, onnx_fp32, tmp = trained
    qdq = quantize(onnx_fp32, QuantConfig(data, tmp / "qdq", fmt="onnx", calib_images=8, val_images=0, seed=1))
    ir = quantize(onnx_fp32, QuantConfig(data, tmp / "qdq_ov", fmt="openvino", quantizer="qdq", calib_images=8,
                                         val_images=0, seed=1))
    x = torch.rand(1, 3, 128, 128)
    boxes_ort, scores_ort = load_backend(qdq.output)(x)
    backend = load_backend(ir.output)
    assert backend.int8
    boxes_ov, scores_ov = backend(x)
    assert float((scores_ov - scores_ort).abs().max()) < 0.05  # both INT8 from the same ranges, two runtimes
    assert float((boxes_ov - boxes_ort).abs().median()) < 1.0


def test_bf16_ir_runs_in_bf16_where_the_cpu_has_it(trained):
    model, _, data, onnx_fp32, tmp = trained
    ir = export_openvino(onnx_fp32, tmp / "bf16.xml", precision="bf16")
    assert ov.Core().read_model(str(ir)).get_rt_info(["yolonas", META_PRECISION]).astype(str) == "bf16"
    backend = OpenVINOBackend(ir, threads=2)
    assert backend.inference_precision == ("bf16" if bf16_supported() else "f32")
    assert OpenVINOBackend(ir, threads=2, precision="f32").inference_precision == "f32"  # the caller may override
    dataset = load_data_yaml(data, "val")
    assert abs(validate(backend, dataset).AP - validate(model, dataset).AP) < 0.02


def test_openvino_file_without_our_metadata_is_the_same_one_line_error(tmp_path):
    foreign_onnx = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.rand(1, 3, 32, 32),), str(foreign_onnx), dynamo=False,
                          input_names=["images"])
    foreign_xml = tmp_path / "foreign.xml"
    ov.save_model(ov.convert_model(str(foreign_onnx)), str(foreign_xml))
    messages = []
    for path in (foreign_onnx, foreign_xml):
        with pytest.raises(InputError) as info:
            load_backend(path)
        messages.append(str(info.value).replace(path.name, "F"))
    assert messages[0] == messages[1] and "yolonas export" in messages[0] and "\n" not in messages[0]


def test_export_cli_openvino_int8_bf16_and_nothing_overwritten(trained, tmp_path):
    _, weights, data, _, _ = trained
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(weights.read_bytes())
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--weights", str(ckpt), "--nms", "--dynamic"])
    assert r.exit_code == 0, r.output
    nms_file = (tmp_path / "best.onnx").read_bytes()
    r = runner.invoke(app, ["export", "--weights", str(ckpt), "--format", "openvino"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "best.xml").is_file() and (tmp_path / "best.onnx").read_bytes() == nms_file  # untouched
    r = runner.invoke(app, ["export", "--weights", str(ckpt), "--format", "openvino", "--bf16"])
    assert r.exit_code == 0 and (tmp_path / "best_bf16.xml").is_file(), r.output
    r = runner.invoke(app, ["export", "--weights", str(ckpt), "--format", "openvino", "--int8", "--data", str(data),
                            "--calib-images", "4", "--name", "t", "--json", "-"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # the keys `--json` users read: the file, and the quantize result under "int8"
    assert out["output"] == str(tmp_path / "best_int8.xml") and out["nms"] is None
    assert out["int8"]["mode"] == "ptq" and out["int8"]["quantizer"] == "nncf" and "calibration" in out["int8"]
    assert load_backend(tmp_path / "best_int8.xml").int8
    r = runner.invoke(app, ["val", "--weights", str(tmp_path / "best_int8.xml"), "--data", str(data), "--no-plots",
                            "--json", "-"])
    assert r.exit_code == 0 and json.loads(r.stdout)["AP"] > 0.05, r.output
    for bad in (["--int8"], ["--bf16"], ["--int8", "--data", str(data), "--nms"]):
        r = runner.invoke(app, ["export", "--weights", str(ckpt), *bad])
        assert r.exit_code != 0 and isinstance(r.exception, (InputError, SystemExit)), bad


def test_bench_all_times_every_path_and_marks_the_fastest(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, weights, _, _, _ = trained
    images = sorted(Path(load_data_yaml(trained[2], "val").image_files[0]).parent.glob("*.jpg"))[:2]
    folder = tmp_path / "images"
    folder.mkdir()
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    r = CliRunner().invoke(app, ["bench", "--weights", str(weights), "--all", "--source", str(folder), "--imgsz",
                                 "64", "--runs", "2", "--blocks", "1", "--threads", "2", "--json", "-"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    names = {p["name"] for p in result["paths"]} | set(result["skipped"])
    assert {"torch fp32", "onnxruntime fp32", "onnxruntime int8", "openvino f32", "openvino int8"} <= names
    assert ("openvino bf16" in names) and result["fastest"] == result["paths"][0]["name"]
    md = Path("runs/bench/exp/paths.md").read_text()
    assert "(fastest)" in md and result["cpu"]["name"] in md
    assert all(p["end_to_end_ms"] > 0 for p in result["paths"])


def test_tiled_validation_of_the_int8_ir_scores_as_the_checkpoint(trained):
    """`val --tile` on an INT8 IR: the same evaluator, tiles and merge as the checkpoint, within INT8's tolerance."""
    model, _, data, onnx_fp32, tmp = trained
    r = quantize(onnx_fp32, QuantConfig(data, tmp / "tiles_int8", fmt="openvino", calib_images=8, val_images=0))
    tiles = TileConfig(512, 0.25, whole_image=True)  # near the scale it was fitted at (128 px of ~640 px images)
    dataset = load_data_yaml(data, "val")
    want = validate(Predictor(model, nms=VAL_NMS, tiles=tiles), dataset)
    got = validate(Predictor(OpenVINOBackend(r.output, threads=2), nms=VAL_NMS, tiles=tiles), dataset)
    # As untiled: INT8 may score above a fit on 8 images (here 0.50 vs 0.42), not far below.
    assert want.AP > 0.1 and got.AP > want.AP - 0.05, (got.AP, want.AP)
