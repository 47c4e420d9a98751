"""The showdown: a tiny CPU run end to end, the missing-Ultralytics path, merging, the budget rule, the v8 child."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.data import make_synthetic_dataset
from yolonas.deploy.export import export_onnx
from yolonas.errors import InputError
from yolonas.nas.pareto import pareto_front
from yolonas.showdown import (
    INSTALL_HINT,
    ShowdownConfig,
    epochs_for_budget,
    peer_data,
    peer_predictions_to_coco,
    run_showdown,
    time_together,
    torch_threads,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
PEER_PYTHON = REPO / ".venv-ultralytics" / "bin" / "python"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("showdown_data"), n_images=8, n_val=4, size=96)


def _cfg(data: Path, project: Path, models: tuple[str, ...], **kw) -> ShowdownConfig:
    kw = {"threads": 1, **kw}
    return ShowdownConfig(data=str(data), models=models, epochs=1, imgsz=64, batch=4, device="cpu", workers=0,
                          calib_images=4, latency_runs=3, project=str(project), name="t", **kw)


def test_tiny_showdown_writes_table_plot_json_and_v8_install_hint(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, ("yolo_nas_tiny", "yolov8n"), ultralytics_python=str(tmp_path / "no" / "python"))
    threads = torch.get_num_threads()
    with torch_threads(2):  # not --threads 1: the call must give back the count it found, not leave its own
        result = run_showdown(cfg)
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == threads
    run = tmp_path / "t"
    for file in ("showdown.md", "showdown.json", "frontier.png", "yolo_nas_tiny.json", "yolov8n.json"):
        assert (run / file).is_file(), file
    ours, peer = result["rows"]
    assert ours["model"] == "yolo_nas_tiny" and ours["status"] == "ok"
    assert 0.0 <= ours["AP"] <= 1.0 and 0.0 <= ours["AP_int8"] <= 1.0
    assert ours["params"] > 0 and ours["gflops"] > 0
    assert ours["latency_fp32_ms"] > 0 and ours["latency_int8_ms"] > 0
    assert ours["latency_timed_with"] == ["yolo_nas_tiny"]  # re-timed after the last model, with every finished one
    assert ours["train_threads"] == 1  # --threads holds for training too, not only for timing
    assert (run / "yolo_nas_tiny" / "model_int8.onnx").is_file()
    assert peer["status"] == "missing" and INSTALL_HINT in peer["message"]
    table = (run / "showdown.md").read_text()
    assert "| yolo_nas_tiny | 1 |" in table and INSTALL_HINT in table
    assert "CPU training: yolo_nas_tiny" in table and "on 1 thread(s)" in table
    assert (run / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second call finds the model done and does not train it again
    mtime = (run / "yolo_nas_tiny.json").stat().st_mtime_ns
    run_showdown(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",)))
    assert (run / "yolo_nas_tiny.json").stat().st_mtime_ns == mtime


def _row(model: str, family: str, ap: float, lat: float, **kw) -> dict:
    return {"model": model, "family": family, "status": "ok", "epochs": 100, "AP": ap, "AP50": ap + 0.1, "APs": 0.0,
            "APm": 0.0, "APl": 0.0, "params": 1e7, "gflops": 30.0, "latency_fp32_ms": lat, "backend": "onnxruntime",
            "threads": 2, "settings": {"data": "d", "imgsz": 640, "batch": 16, "seed": 0, "split": "val",
                                       "train_split": "train", "backend": "onnxruntime"}, **kw}


def test_report_merges_per_model_files_written_by_separate_calls(tmp_path):
    (tmp_path / "yolov8s.json").write_text(json.dumps(_row("yolov8s", "YOLOv8", 0.30, 80.0, AP_int8=0.28,
                                                           latency_int8_ms=40.0)))
    (tmp_path / "yolo_nas_s.json").write_text(json.dumps(_row("yolo_nas_s", "YOLO-NAS", 0.32, 85.0)))
    (tmp_path / "notes.json").write_text("{}")  # not a model: ignored
    result = write_report(tmp_path, "yolonas showdown ...")
    assert [r["model"] for r in result["rows"]] == ["yolo_nas_s", "yolov8s"]
    table = (tmp_path / "showdown.md").read_text()
    assert "| yolov8s | 100 | 30.0 | 40.0 |" in table and "| -2.00 |" in table
    assert "WARNING" not in table
    other = _row("yolov8m", "YOLOv8", 0.35, 200.0)
    other["settings"] = {**other["settings"], "imgsz": 320}
    (tmp_path / "yolov8m.json").write_text(json.dumps(other))
    write_report(tmp_path)
    assert "WARNING: yolov8m ran with other settings" in (tmp_path / "showdown.md").read_text()


def test_latencies_are_retaken_side_by_side_and_a_mixed_table_is_flagged(tmp_path):
    torch.manual_seed(0)
    onnx = export_onnx(build(yolo_nas_tiny()).eval(), tmp_path / "tiny.onnx", image_size=(64, 64))
    # as left by two separate calls: each timed alone, long ago, at different machine load
    (tmp_path / "yolov8s.json").write_text(json.dumps(_row("yolov8s", "YOLOv8", 0.30, 999.0, onnx_fp32=str(onnx),
                                                           latency_timed_with=["yolov8s"])))
    (tmp_path / "yolo_nas_s.json").write_text(json.dumps(_row("yolo_nas_s", "YOLO-NAS", 0.32, 1.0,
                                                              onnx_fp32=str(onnx), latency_timed_with=["yolo_nas_s"])))
    write_report(tmp_path)
    assert "not all timed together" in (tmp_path / "showdown.md").read_text()
    cfg = ShowdownConfig(data="d", imgsz=64, threads=1, latency_runs=3)
    assert time_together(tmp_path, cfg) == ["yolo_nas_s", "yolov8s"]
    rows = write_report(tmp_path)["rows"]
    # the same file timed side by side: the stale 999 ms and 1 ms are gone, and the two agree
    lat = [r["latency_fp32_ms"] for r in rows]
    assert 999.0 not in lat and 1.0 not in lat and max(lat) / min(lat) < 5
    assert all(r["latency_timed_with"] == ["yolo_nas_s", "yolov8s"] for r in rows)
    assert "not all timed together" not in (tmp_path / "showdown.md").read_text()


def test_report_of_an_empty_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no model results"):
        write_report(tmp_path)


def test_budget_rule():
    # 60 min budget, probes took 6 min, after-training work 2 + 3 min, one epoch 10 s + 20 s -> (3600 - 360 - 300) / 30
    assert epochs_for_budget(3600, 360, [10.0, 20.0], [120.0, 180.0], 300) == 98
    assert epochs_for_budget(3600, 360, [10.0, 20.0], [120.0, 180.0], 50) == 50  # --epochs caps it
    assert epochs_for_budget(60, 360, [10.0], [120.0], 100) == 1  # already over budget: the probe stands
    with pytest.raises(InputError, match="--budget"):
        epochs_for_budget(0, 0, [1.0], [1.0], 10)


def test_torch_threads_are_given_back_even_on_error():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        raise RuntimeError("a step failed")
    assert torch.get_num_threads() == before


def test_pareto_keeps_only_undominated_points():  # the frontier line of each family in the plot
    assert pareto_front([(10, 30), (20, 25), (15, 35), (30, 40), (5, 10)]) == [(5, 10), (10, 30), (15, 35), (30, 40)]


def test_peer_predictions_map_to_our_image_and_category_ids():
    preds = [{"image_id": "a", "file_name": "a.jpg", "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}]
    out = peer_predictions_to_coco(preds, {"a.jpg": 7}, [10, 20, 30])
    assert out == [{"image_id": 7, "category_id": 20, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "file_name": "a.jpg"}]
    with pytest.raises(InputError, match="not in the evaluation split"):
        peer_predictions_to_coco([{**preds[0], "file_name": "b.jpg"}], {"a.jpg": 7}, [10, 20, 30])


def test_unknown_model_and_backend_are_input_errors(tiny_data, tmp_path):
    with pytest.raises(InputError, match="unknown model 'yolov9'"):
        run_showdown(_cfg(tiny_data, tmp_path, ("yolov9",)))
    with pytest.raises(InputError, match="--backend"):
        run_showdown(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), backend="tensorrt"))


@pytest.mark.skipif(not PEER_PYTHON.is_file(), reason="needs .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh)")
def test_ultralytics_child_smoke(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the default interpreter path is relative to the repo root
    monkeypatch.delitem(os.environ, "YOLONAS_ULTRALYTICS_PYTHON", raising=False)
    # 2 threads: Ultralytics alone would train on cpu_count - 1 (1 on 2 cores, 15 on 16)
    result = run_showdown(_cfg(tiny_data, tmp_path, ("yolov8n",), threads=2))
    (row,) = result["rows"]
    assert row["status"] == "ok", row.get("message")
    assert row["train_threads"] == 2
    assert row["params"] > 1e6 and 0.0 <= row["AP"] <= 1.0 and 0.0 <= row["AP_int8"] <= 1.0
    assert row["latency_fp32_ms"] > 0 and row["latency_int8_ms"] > 0
    assert "per-channel" in row["int8_recipe"]
    assert Path(row["onnx_int8"]).is_file()


def test_peer_data_finds_the_labels_of_linked_images(tmp_path):
    """A data set whose image files are links into another folder: labels come from the path as given."""
    real = make_synthetic_dataset(tmp_path / "real", n_images=3, n_val=1, size=64).parent
    linked = tmp_path / "linked"
    for split in ("train", "val"):
        (linked / split / "images").mkdir(parents=True)
        (linked / split / "labels").mkdir(parents=True)
        for image in (real / split / "images").iterdir():
            (linked / split / "images" / image.name).symlink_to(image)  # the target has labels elsewhere
            label = real / split / "labels" / f"{image.stem}.txt"
            (linked / split / "labels" / label.name).write_text(label.read_text())
        for label in (real / split / "labels").iterdir():
            label.unlink()  # no labels beside the link targets: only the linked folder has them
    (linked / "data.yaml").write_text((real / "data.yaml").read_text())
    data = peer_data(str(linked / "data.yaml"), ("train", "val"), tmp_path / "peer")
    for key in ("train", "val"):
        images = sorted((data.parent / key / "images").iterdir())
        labels = sorted((data.parent / key / "labels").iterdir())
        assert len(images) == len(labels) > 0 and all(p.resolve().is_file() for p in labels)
