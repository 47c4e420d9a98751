"""open_predictor: the one seam from a model file to a Predictor; predict, val, bench and Python all go through it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import yolonas
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.cli import app
from yolonas.deploy import fastest
from yolonas.deploy.export import export_onnx
from yolonas.deploy.open import open_predictor
from yolonas.errors import InputError
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.predictor import Predictor
from yolonas.preprocess import Preprocessing

runner = CliRunner()
LOW = NMSConfig(score_threshold=0.3, iou_threshold=0.6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A yolo_nas_tiny checkpoint at 96 px whose random head scores some boxes above 0.3."""
    folder = tmp_path_factory.mktemp("open")
    torch.manual_seed(0)
    model = build(yolo_nas_tiny(), 3, preprocessing=Preprocessing(image_size=(96, 96)))
    with torch.no_grad():
        for head in model.heads.levels():  # spread the class scores over 0..1 instead of the prior's 0.01
            head.cls_pred.weight.mul_(30)
            head.cls_pred.bias.zero_()
    path = folder / "tiny.pt"
    model.save(path)
    return path


def _xyxy(entry: dict) -> list[float]:
    x, y, w, h = entry["bbox"]
    return [x, y, x + w, y + h]


def test_predict_val_bench_and_python_give_the_same_boxes(checkpoint, coco128, tmp_path, monkeypatch):
    image = coco128 / "images" / "train2017" / "000000000009.jpg"
    (tmp_path / "one.txt").write_text(f"{image}\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: one.txt\nval: one.txt\nnames: [a, b, c]\n")
    monkeypatch.chdir(tmp_path)
    flags = ["--conf", "0.3", "--iou", "0.6"]
    result = runner.invoke(app, ["predict", "--weights", str(checkpoint), "--source", str(image), "--no-save",
                                 *flags, "--json", "-"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)["predictions"][0]["detections"]
    assert len(cli) > 0
    result = runner.invoke(app, ["val", "--weights", str(checkpoint), "--data", "data.yaml", *flags, "--no-plots",
                                 "--save-predictions", "preds.json", "--json", "-"])
    assert result.exit_code == 0, result.output
    val = sorted(json.loads((tmp_path / "preds.json").read_text()), key=lambda r: -r["score"])
    python = yolonas.load(checkpoint).eval().fuse().predict(str(image), nms=LOW)[0]
    opened = open_predictor(checkpoint, nms=LOW).predict(str(image))[0]
    want = np.array([d["box"] for d in cli])
    for got in (python.boxes, opened.boxes, np.array([_xyxy(r) for r in val])):
        np.testing.assert_allclose(got, want, atol=1e-2)  # the CLI's JSON rounds to 0.01 px
    assert [d["class_id"] for d in cli] == python.class_ids.tolist() == [r["category_id"] - 1 for r in val]


def test_bench_times_the_predictors_own_stages(checkpoint, monkeypatch):
    calls: dict[str, int] = {}
    for stage in ("preprocess", "forward", "postprocess"):
        original = getattr(Predictor, stage)

        def counted(self, *args, _stage=stage, _original=original, **kwargs):
            calls[_stage] = calls.get(_stage, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Predictor, stage, counted)
    result = runner.invoke(app, ["bench", "--weights", str(checkpoint), "--runs", "3", "--warmup", "1",
                                 "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["stages_ms"]["forward"] > 0
    assert calls["preprocess"] >= 4 and calls["forward"] >= 4 and calls["postprocess"] >= 4


def test_fastest_measures_once_then_remembers(checkpoint, tmp_path, monkeypatch, caplog):
    pytest.importorskip("openvino")
    monkeypatch.setenv("YOLONAS_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="yolonas.deploy"):
        first = open_predictor(checkpoint, runtime="fastest")
    entry = next(iter(json.loads((tmp_path / "cache" / fastest.CACHE_FILE).read_text()).values()))
    assert {"torch", "onnxruntime", "openvino"} <= set(entry["median_ms"])
    assert entry["runtime"] == min(entry["median_ms"], key=entry["median_ms"].get)
    assert f"fastest: {entry['runtime']}" in caplog.text and "measured" in caplog.text
    assert first.backend.runtime == entry["runtime"].split()[0]

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(fastest, "_measure", no_measuring)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolonas.deploy"):
        again = open_predictor(checkpoint, runtime="fastest")
    assert "cached" in caplog.text and again.backend.runtime == first.backend.runtime
    image = np.random.default_rng(1).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    assert len(again.predict_arrays([image])) == 1


def test_fastest_on_an_onnx_file_and_its_errors(checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("YOLONAS_CACHE", str(tmp_path / "cache"))
    onnx_path = export_onnx(yolonas.load(checkpoint), tmp_path / "m.onnx")
    predictor = open_predictor(onnx_path, runtime="fastest")
    assert predictor.backend.runtime in ("onnxruntime", "openvino")
    with pytest.raises(InputError, match="drop --imgsz"):
        open_predictor(onnx_path, runtime="fastest", imgsz=64)
    with pytest.raises(InputError, match="--runtime nope"):
        open_predictor(checkpoint, runtime="nope")


def test_a_published_name_says_it_has_random_weights(caplog):
    with caplog.at_level(logging.WARNING, logger="yolonas.deploy"):
        open_predictor("yolo_nas_tiny", imgsz=64)
    assert "random weights" in caplog.text
