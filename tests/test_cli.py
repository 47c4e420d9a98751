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
