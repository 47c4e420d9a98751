"""The `yolonas` command line: info and predict end to end."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from yolonas.cli import app

runner = CliRunner()


def test_info_json():
    result = runner.invoke(app, ["info", "yolo_nas_s", "--json", "-"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["state_dict_entries"] == 921
    assert abs(info["params"] - 19_053_888) < 1000
    assert info["gflops"] == pytest.approx(33.9, rel=0.01) and info["gflops_fused"] == pytest.approx(31.8, rel=0.01)
    assert set(info["parts"]) == {"backbone", "neck", "heads"}


def test_info_bad_model_is_one_line_error():
    result = runner.invoke(app, ["info", "no_such_model.pt"])
    assert result.exit_code != 0
    assert "no_such_model.pt" in str(result.exception)


def test_predict_on_coco128_folder(coco128, tmp_path, monkeypatch):
    """Every image of the folder gets an annotated copy and a JSON entry; a corrupt file is skipped."""
    folder = tmp_path / "images"
    shutil.copytree(coco128 / "images" / "train2017", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "readme.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", "--model", "yolo_nas_tiny", "--source", str(folder), "--imgsz", "160",
                                 "--conf", "0.01", "--name", "t", "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "predict" / "t"
    images = sorted(p.name for p in out.glob("*.jpg"))
    assert len(images) == 128 and "broken.jpg" not in images
    entries = json.loads((out / "predictions.json").read_text())
    assert len(entries) == 128
    summary = json.loads((tmp_path / "out.json").read_text())
    assert {s["file"].rsplit("/", 1)[-1] for s in summary["skipped"]} == {"broken.jpg", "readme.txt"}
    first = cv2.imread(str(out / images[0]))
    original = cv2.imread(str(folder / images[0]))
    assert first.shape == original.shape  # annotated at the original size


def test_predict_video(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(4):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", "-m", "yolo_nas_tiny", "-s", str(video), "--imgsz", "64", "--name", "v"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "predict" / "v"
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert len(json.loads((out / "predictions.json").read_text())) == 4


def test_main_prints_one_line_errors(monkeypatch, capsys):
    """The installed entry point turns our errors into one line on stderr and exit code 2."""
    from yolonas import cli  # noqa: PLC0415

    monkeypatch.setattr("sys.argv", ["yolonas", "predict", "--source", "x.jpg", "--weights", "missing.pt"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: missing.pt") and "\n" not in err
    monkeypatch.setattr("sys.argv", ["yolonas", "predict", "--source", "x.jpg"])
    with pytest.raises(SystemExit):
        cli.main()
    assert "no model given" in capsys.readouterr().err


def test_predict_rejects_an_input_size_off_the_stride(tmp_path, monkeypatch, capsys):
    from yolonas import cli  # noqa: PLC0415

    monkeypatch.setattr("sys.argv", ["yolonas", "predict", "-m", "yolo_nas_tiny", "-s", str(tmp_path), "--imgsz",
                                     "500"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: --imgsz 500: must be a multiple of 32 (the network's stride)\n"


def test_train_then_val_json_on_stdout(coco128, tmp_path, monkeypatch):
    """`train` then `val --json -`: stdout is exactly the metrics JSON, and the predictions file is COCO results."""
    monkeypatch.chdir(tmp_path)
    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:4]
    (tmp_path / "four.txt").write_text("\n".join(map(str, images)) + "\n")
    names = (coco128 / "data.yaml").read_text().split("names:", 1)[1]
    (tmp_path / "data.yaml").write_text(f"path: .\ntrain: four.txt\nval: four.txt\nnames:{names}")
    result = runner.invoke(app, ["train", "--data", "data.yaml", "--recipe", "cpu_smoke", "--epochs", "1",
                                 "--imgsz", "96", "--name", "t", "--set", "run.verbose=false"])
    assert result.exit_code == 0, result.output
    best = tmp_path / "runs" / "train" / "t" / "weights" / "best.pt"
    result = runner.invoke(app, ["val", "--weights", str(best), "--data", "data.yaml", "--split", "val",
                                 "--save-predictions", "preds.json", "--json", "-", "--no-plots"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"} <= set(metrics)
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert preds and {"image_id", "category_id", "bbox", "score", "file_name"} <= set(preds[0])


def test_export_then_predict_val_and_bench_on_the_onnx(coco128, tmp_path, monkeypatch):
    """`export --nms --dynamic`, then the .onnx file goes wherever a checkpoint goes."""
    monkeypatch.chdir(tmp_path)
    from yolonas.arch.model import build  # noqa: PLC0415
    from yolonas.arch.spec import yolo_nas_tiny  # noqa: PLC0415
    from yolonas.weights import COCO_CLASSES  # noqa: PLC0415

    model = build(yolo_nas_tiny(), class_names=COCO_CLASSES)
    model.preprocessing.image_size = (128, 128)
    model.save(tmp_path / "m.pt")
    result = runner.invoke(app, ["export", "--weights", "m.pt", "--nms", "--dynamic", "--conf", "0.01"])
    assert result.exit_code == 0, result.output
    onnx_file = tmp_path / "m.onnx"
    assert onnx_file.is_file()
    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:3]
    for image in images:
        shutil.copy(image, tmp_path / image.name)
    result = runner.invoke(app, ["predict", "--weights", "m.onnx", "--source", str(tmp_path / "*.jpg"), "--name", "o",
                                 "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 3
    (tmp_path / "three.txt").write_text("\n".join(str(tmp_path / i.name) for i in images) + "\n")
    names = (coco128 / "data.yaml").read_text().split("names:", 1)[1]
    (tmp_path / "data.yaml").write_text(f"path: .\ntrain: three.txt\nval: three.txt\nnames:{names}")
    result = runner.invoke(app, ["val", "--weights", "m.onnx", "--data", "data.yaml", "--json", "-", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "AP50" in json.loads(result.stdout)
    result = runner.invoke(app, ["bench", "--weights", "m.onnx", "--runs", "2", "--warmup", "1", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["backend"] == "onnxruntime fp32"
