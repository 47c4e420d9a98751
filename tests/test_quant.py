"""INT8 quantization: calibration choice, QDQ files, sensitivity report, selective budgets, the quantize command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from onnx import numpy_helper
from typer.testing import CliRunner

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.cli import app
from yolonas.data.images import list_images, select_images
from yolonas.deploy.export import META_CLASS_NAMES, META_PREPROCESSING, export_onnx
from yolonas.errors import DataError, InputError
from yolonas.quant.calibration import calibrate, load_batch, read_model_info
from yolonas.quant.ptq import META_QUANTIZATION, conv_layers, prepare, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze, output_error

runner = CliRunner()
STEM = "backbone.stem.conv.rbr_reparam"


def _model():
    torch.manual_seed(0)
    m = build(yolo_nas_tiny(), class_names=["a", "b", "c", "d"]).eval()
    m.preprocessing.image_size = (160, 160)
    # A larger class spread than at init, so a random network's scores are not all ~0.01.
    for head in m.heads.levels():
        torch.nn.init.normal_(head.cls_pred.weight, std=2.0)
        torch.nn.init.constant_(head.cls_pred.bias, 0.0)
    return m


@pytest.fixture(scope="module")
def work(tmp_path_factory, coco128):
    """A tiny float export, pre-processed, calibrated once on 6 coco128 images (seed 0)."""
    folder = tmp_path_factory.mktemp("quant")
    src = export_onnx(_model(), folder / "tiny.onnx", batch=1)
    prepared = prepare(src, folder / "tiny_prepared.onnx")
    files = list_images(coco128 / "images" / "train2017")
    calib_files = select_images(files, 6, seed=0)
    calib = calibrate(prepared, calib_files, folder / "ranges.json", method="percentile", seed=0)
    val_files = select_images(files, 2, seed=1, exclude=calib_files)
    return {"folder": folder, "src": src, "prepared": prepared, "calib": calib, "files": files, "val": val_files}


@pytest.fixture(scope="module")
def evaluator(work):
    return Evaluator(work["calib"], work["val"])


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"images": x})


def test_calibration_letterboxes_like_inference(work):
    """The calibration batch is the Predictor's letterbox: 160x160, pad 114/255 around a resized image."""
    info = read_model_info(work["prepared"])
    x = load_batch(work["val"][:1], info.preprocessing)
    assert x.shape == (1, 3, 160, 160) and x.dtype == np.float32
    from yolonas.infer.letterbox import letterbox_batch  # noqa: PLC0415
    from yolonas.infer.sources import read_image  # noqa: PLC0415

    ref, _ = letterbox_batch([read_image(work["val"][0])], info.preprocessing)
    np.testing.assert_array_equal(x, ref.numpy())


def test_qdq_file(work, tmp_path):
    out = write_qdq(work["calib"], tmp_path / "q.onnx")
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: t for t in model.graph.initializer}
    # Every network conv takes a DequantizeLinear'd int8 weight with one scale per output channel, zero point 0.
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/model/")]
    assert len(convs) == len([c for c in conv_layers(work["prepared"]) if c.op_type == "Conv"])
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        w, scale, zp = (numpy_helper.to_array(inits[i]) for i in dq.input)
        assert w.dtype == np.int8 and zp.dtype == np.int8 and not zp.any()
        assert scale.shape == (w.shape[0],)
    # The DFL decode and the sigmoid read float tensors, not dequantized ones.
    for n in model.graph.node:
        if n.op_type in ("Softmax", "Sigmoid", "ReduceSum"):
            assert producer[n.input[0]].op_type != "DequantizeLinear"
    meta = {p.key: p.value for p in model.metadata_props}
    original = {p.key: p.value for p in onnx.load(str(work["src"])).metadata_props}
    assert all(meta[k] == v for k, v in original.items())
    q = json.loads(meta[META_QUANTIZATION])
    assert q["mode"] == "ptq" and q["method"] == "percentile" and q["calibration_images"] == 6 and q["seed"] == 0
    assert q["activations"].startswith("uint8") and q["float_layers"] == []
    # Close to fp32 on images it was not calibrated on.
    x = load_batch(work["val"], read_model_info(work["prepared"]).preprocessing)
    ref, got = _run(work["prepared"], x[:1]), _run(out, x[:1])
    err = output_error((ref[0], ref[1]), (got[0], got[1]))
    assert err.score < 0.05 and err.box < 0.1
    assert err.total > 0  # it really is quantized


def test_excluded_layers_stay_float_and_int8_is_symmetric(work, tmp_path):
    out = write_qdq(work["calib"], tmp_path / "q.onnx", activations="int8", float_layers=[STEM])
    model = onnx.load(str(out))
    producer = {o: n for n in model.graph.node for o in n.output}
    stem = next(n for n in model.graph.node if n.name == "/model/backbone/stem/conv/rbr_reparam/Conv")
    inits = {t.name: t for t in model.graph.initializer}
    assert stem.input[1] in inits and inits[stem.input[1]].data_type == onnx.TensorProto.FLOAT
    assert stem.input[0] not in producer or producer[stem.input[0]].op_type != "DequantizeLinear"
    for n in model.graph.node:  # activations: int8, zero point 0 (what TensorRT requires)
        if n.op_type == "QuantizeLinear":
            zp = numpy_helper.to_array(inits[n.input[2]])
            assert zp.dtype == np.int8 and not zp.any()
    q = json.loads({p.key: p.value for p in model.metadata_props}[META_QUANTIZATION])
    assert q["float_layers"] == [STEM] and q["activations"].startswith("int8")
    with pytest.raises(InputError, match="not a convolution"):
        write_qdq(work["calib"], tmp_path / "bad.onnx", float_layers=["backbone.nope"])


def test_ranges_reused_match_quantize_static(work, tmp_path):
    """Our calibrate-once path writes the graph onnxruntime's own quantize_static writes from the same cache."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    from yolonas.quant.calibration import QUANT_OP_TYPES  # noqa: PLC0415
    from yolonas.quant.ptq import network_nodes  # noqa: PLC0415

    ours = onnx.load(str(write_qdq(work["calib"], tmp_path / "ours.onnx", float_layers=[STEM])))
    keep = set(network_nodes(work["prepared"])) - {"/model/backbone/stem/conv/rbr_reparam/Conv"}
    exclude = [n.name for n in onnx.load(str(work["prepared"])).graph.node if n.name not in keep]
    quantize_static(str(work["prepared"]), str(tmp_path / "ort.onnx"), None, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANT_OP_TYPES), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                    calibrate_method=CalibrationMethod.Percentile, calibration_cache_path=str(work["calib"].ranges),
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    theirs = onnx.load(str(tmp_path / "ort.onnx"))
    assert [n.op_type for n in ours.graph.node] == [n.op_type for n in theirs.graph.node]
    a = {t.name: numpy_helper.to_array(t) for t in ours.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_sensitivity_lists_every_conv(work, evaluator, tmp_path):
    report = analyze(evaluator, modes=("one_at_a_time",), profile_runs=2)
    convs = conv_layers(work["prepared"])
    assert [lay.node for lay in report.layers] == [c.node for c in convs]
    assert all(lay.error_alone is not None and lay.error_alone >= 0 for lay in report.layers)
    assert max(lay.error_alone for lay in report.layers) > 0
    assert sum(lay.fp32_ms > 0 for lay in report.layers) > len(convs) // 2  # the profile maps back to layers
    files = report.save(tmp_path)
    md = files["md"].read_text()
    assert all(f"| {c.module} |" in md for c in convs)
    assert files["png"].stat().st_size > 1000
    back = json.loads(files["json"].read_text())
    assert len(back["layers"]) == len(convs) and [r["rank"] for r in back["layers"]] == list(range(1, len(convs) + 1))


def test_sensitivity_is_reproducible(work):
    """Same seed, same images, same ranges: the same leave-one-out errors and ranking (a subset of layers)."""
    layers = [c.module for c in conv_layers(work["prepared"])][::30]
    runs = []
    for _ in range(2):
        files = work["files"]
        calib_files = select_images(files, 6, seed=0)
        ev = Evaluator(work["calib"], select_images(files, 2, seed=1, exclude=calib_files))
        runs.append(analyze(ev, layers=layers, profile_runs=1))
    assert [lay.module for lay in runs[0].ranked()] == [lay.module for lay in runs[1].ranked()]
    assert [lay.error_without for lay in runs[0].layers] == [lay.error_without for lay in runs[1].layers]
    assert len(runs[0].layers) == len(layers)


def test_selective_respects_budgets(work, evaluator):
    layers = [c.module for c in conv_layers(work["prepared"])]
    report = analyze(evaluator, layers=layers[:2] + layers[-4:], profile_runs=2)
    full = report.full_int8_error["total"]
    # The whole budget: nothing needs to be float.
    assert select(report, evaluator, max_error=full * 1.01, measure=False).float_layers == []
    # An impossible budget: every candidate float, and the selection says the budget is not met.
    s = select(report, evaluator, max_error=0.0, measure=False)
    assert not s.budget_met and len(s.float_layers) == len(report.layers)
    # A budget between: met, with the error measured on the hybrid model.
    best = s.error
    if best < full:
        mid = select(report, evaluator, max_error=(best + full) / 2, measure=False)
        assert mid.budget_met and mid.error <= (best + full) / 2
    # Speed budget: keeping all of full INT8's speed-up allows only layers that INT8 does not speed up.
    saving = {lay.module: lay.saving_ms for lay in report.layers}
    assert all(saving[m] <= 0 for m in select(report, evaluator, min_speedup_fraction=1.0, measure=False).float_layers)
    lat = select(report, evaluator, min_speedup_fraction=0.9, measure=False)
    assert lat.predicted_speedup_fraction >= 0.9
    with pytest.raises(InputError, match="budget"):
        select(report, evaluator, measure=False)


def _subset_data(coco128, folder, n=8):
    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:n]
    (folder / "first.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = yaml.safe_load((coco128 / "data.yaml").read_text())["names"]
    data = folder / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "first.txt", "val": "first.txt", "names": names}))
    return data


def test_cli_quantize_then_val(coco128, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), num_classes=80)
    model.preprocessing.image_size = (160, 160)
    model.save(tmp_path / "tiny.pt")
    data = _subset_data(coco128, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["quantize", "--weights", str(tmp_path / "tiny.pt"), "--data", str(data),
                                 "--calib-images", "4", "--val-images", "2", "--seed", "1", "--name", "q",
                                 "--float-layer", STEM, "--json", str(tmp_path / "q.json")])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "q.json").read_text())
    q = tmp_path / out["output"]
    assert q.is_file() and (tmp_path / "runs" / "quantize" / "q" / "result.json").is_file()
    assert len(out["calibration"]["images"]) == 4 and out["output_error"]["total"] >= 0
    assert list(out) == ["mode", "format", "quantizer", "output", "float_onnx", "activations", "calibration",
                         "run_dir", "output_error"]  # the keys `--json` users read (no QAT or selective parts)
    assert json.loads((tmp_path / "runs" / "quantize" / "q" / "result.json").read_text()) == out
    meta = {p.key: p.value for p in onnx.load(str(q)).metadata_props}
    assert META_CLASS_NAMES in meta and META_PREPROCESSING in meta
    assert json.loads(meta[META_QUANTIZATION])["float_layers"] == [STEM]
    result = runner.invoke(app, ["val", "--weights", str(q), "--data", str(data), "--split", "val", "--no-plots",
                                 "--json", str(tmp_path / "val.json")])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads((tmp_path / "val.json").read_text())["AP"] <= 1


def test_bad_inputs_are_one_line_errors(work, tmp_path, coco128):
    with pytest.raises(InputError, match="no such"):
        read_model_info(tmp_path / "missing.onnx")
    plain = onnx.load(str(work["src"]))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(InputError, match="not a yolonas export"):
        prepare(tmp_path / "plain.onnx", tmp_path / "p.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not an ONNX file"):
        read_model_info(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="already quantized"):
        read_model_info(write_qdq(work["calib"], tmp_path / "q.onnx"))
    (tmp_path / "empty").mkdir()
    for args, error, message in [
        (["--weights", str(work["src"]), "--data", str(tmp_path / "empty")], DataError, "no images found"),
        (["--weights", str(tmp_path / "plain.onnx"), "--data", str(coco128 / "images" / "train2017")], InputError,
         "not a yolonas export"),
        (["--weights", str(tmp_path / "nothing.onnx"), "--data", str(tmp_path / "empty")], InputError, "no such"),
        (["--weights", str(work["src"]), "--data", str(tmp_path / "empty"), "--mode", "qat"], InputError,
         "QAT trains a checkpoint (.pt)"),
    ]:
        result = runner.invoke(app, ["quantize", *args, "--name", "bad"])
        assert isinstance(result.exception, error) and message in str(result.exception), result.output
        assert "\n" not in str(result.exception)
    # The installed command prints our error as one line and exits with 2.
    proc = subprocess.run([sys.executable, "-m", "yolonas.cli", "quantize", "--weights", str(tmp_path / "plain.onnx"),
                           "--data", str(tmp_path / "empty"), "--name", "bad"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a yolonas export" in lines[0], proc.stderr
