"""The showdown: a tiny CPU run end to end, the families, seeds and ties, the multi-data summary, the one-line errors
(unknown model, a COCO JSON the peer cannot read, Ultralytics missing or failing), latency, the Ultralytics child."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from sources import parse_files
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.data import make_synthetic_dataset, open_dataset
from yolonas.deploy.export import export_onnx, export_openvino
from yolonas.deploy.timing import bf16_supported, cpu_info
from yolonas.errors import InputError
from yolonas.nas.pareto import pareto_front
from yolonas.showdown import (
    INSTALL_HINT,
    ShowdownConfig,
    ShowdownRow,
    TrainingStopped,
    aggregate,
    epochs_for_budget,
    family,
    head_to_head,
    load_rows,
    markdown_table,
    mean_rows,
    peer_data,
    peer_predictions_to_coco,
    plan_epochs,
    read_parts,
    run_showdown,
    standing,
    time_together,
    torch_threads,
    write_report,
)
from yolonas.showdown.budget import budget_decision
from yolonas.showdown.campaign import budget_share
from yolonas.showdown.child import peer_script, ultralytics_python
from yolonas.showdown.config import check_config, dataset_names, nms_free
from yolonas.showdown.peer import run_child
from yolonas.showdown.probe import PROBE_EPOCHS, get_probe, probe_from_clock, time_plan
from yolonas.showdown.summary import summary_row
from yolonas.showdown.timereport import int8_notes

REPO = Path(__file__).resolve().parents[1]
# The Ultralytics venv: $YOLONAS_ULTRALYTICS_PYTHON (a worktree's tests use the checkout's), else the repo's own.
PEER_PYTHON = Path(os.environ.get("YOLONAS_ULTRALYTICS_PYTHON") or REPO / ".venv-ultralytics" / "bin" / "python")
needs_peer = pytest.mark.skipif(not PEER_PYTHON.is_file(),
                                reason="needs .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh)")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("showdown_data"), n_images=8, n_val=4, size=96)


def _cfg(data, project: Path, models: tuple[str, ...], **kw) -> ShowdownConfig:
    kw = {"threads": 1, "epochs": 1, "batch": 4, **kw}
    return ShowdownConfig(data=str(data), models=models, imgsz=64, device="cpu", workers=0,
                          calib_images=4, latency_runs=3, project=str(project), name="t", **kw)


def test_tiny_showdown_writes_reports_summary_and_install_hint(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, ("yolo_nas_tiny", "yolov8n"), ultralytics_python=str(tmp_path / "no" / "python"),
               skip_missing_peers=True)
    threads = torch.get_num_threads()
    with torch_threads(2):  # not --threads 1: the call must give back the count it found, not leave its own
        summary = run_showdown(cfg)
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == threads
    run = tmp_path / "t"
    sub = run / tiny_data.parent.name  # one sub-run per data set, named after its folder
    assert summary["datasets"] == {sub.name: str(sub)}
    for file in ("showdown.md", "showdown.json", "frontier.png", "yolo_nas_tiny_seed0.json", "yolov8n_seed0.json"):
        assert (sub / file).is_file(), file
    assert (run / "summary.md").is_file() and (run / "summary.json").is_file()
    ours, peer = json.loads((sub / "showdown.json").read_text())["rows"]
    assert ours["model"] == "yolo_nas_tiny" and ours["status"] == "ok" and ours["seed"] == 0
    assert 0.0 <= ours["AP"] <= 1.0 and 0.0 <= ours["AP_int8"] <= 1.0
    assert ours["params"] > 0 and ours["gflops"] > 0
    assert Path(ours["int8_ir"]).suffix == ".xml" and Path(ours["int8_ir"]).is_file()  # NNCF OpenVINO IR
    assert ours["latency_fp32_ms"] > 0 and ours["latency_int8_ms"] > 0
    assert ours["latency_runtimes"] == {"fp32": "onnxruntime", "int8": "openvino"}
    assert ours["latency_timed_with"] == ["yolo_nas_tiny"]  # re-timed after the last model, with every finished one
    assert ours["train_threads"] == 1  # --threads holds for training too, not only for timing
    assert peer["status"] == "missing" and INSTALL_HINT in peer["message"]
    table = (sub / "showdown.md").read_text()
    assert "| yolo_nas_tiny | YOLO-NAS | 1 | 1 |" in table and INSTALL_HINT in table
    assert "training threads 1" in table and "seeds 0" in table and "epochs run 1" in table
    assert "CPU training (mean over seeds): yolo_nas_tiny" in table
    assert (sub / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| " + sub.name + " | yolo_nas_tiny | cpu_s320, " in (run / "summary.md").read_text()
    assert summary["failed"] == []  # missing, with --skip-missing-peers, is not failed: the row says how to install
    # a second call finds the run done and does not train it again
    mtime = (sub / "yolo_nas_tiny_seed0.json").stat().st_mtime_ns
    run_showdown(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",)))
    assert (sub / "yolo_nas_tiny_seed0.json").stat().st_mtime_ns == mtime


def test_a_coco_json_fails_the_peer_row_in_one_line_while_ours_completes(tiny_data, tmp_path, monkeypatch, capsys):
    from yolonas import cli  # noqa: PLC0415

    coco = tmp_path / "coco" / "instances.json"
    coco.parent.mkdir()
    train = open_dataset(tiny_data, "train")
    gt = train.to_coco()
    gt["images"] = [{**im, "file_name": str(Path(f).resolve())} for im, f in zip(gt["images"], train.image_files)]
    coco.write_text(json.dumps(gt))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["yolonas", "showdown", "--data", str(coco), "--models", "yolo_nas_tiny,yolo11n",
                                     "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu",
                                     "--workers", "0", "--threads", "1", "--calib-images", "4", "--no-int8",
                                     "--name", "c", "--skip-missing-peers"])  # the data fails the row first
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 1 run(s) failed: yolo11n on instances:") and "give a YOLO data.yaml" in err
    summary = json.loads((tmp_path / "runs" / "showdown" / "c" / "summary.json").read_text())
    status = {r["model"]: r["status"] for r in summary["per_dataset"]}
    assert status == {"yolo_nas_tiny": "ok", "yolo11n": "failed"}


def test_unknown_model_is_a_one_line_error_before_anything_runs(tmp_path, monkeypatch, capsys):
    from yolonas import cli  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["yolonas", "showdown", "--data", str(tmp_path), "--models", "yolo_nas_s,yolov9s"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --models: unknown model 'yolov9s'") and "yolo26s" in err and "\n" not in err
    assert not (tmp_path / "runs" / "showdown" / "exp").exists()


def test_families_are_plain_data():
    assert [family(m) for m in ("yolo_nas_s", "yolov8m", "yolo11s", "yolo26l", "yolo_nas_tiny")] == [
        "YOLO-NAS", "YOLOv8", "YOLO11", "YOLO26", "YOLO-NAS"]
    assert nms_free("yolo26s") and not nms_free("yolo11s") and not nms_free("yolo_nas_s")
    with pytest.raises(InputError, match="unknown model 'yolo26x'"):
        family("yolo26x")
    assert dataset_names(["a/aquarium/data.yaml", "b/aquarium/data.yaml", "c/cars.json"]) == [
        "aquarium", "aquarium-2", "cars"]


def test_config_errors_are_input_errors(tiny_data, tmp_path):
    with pytest.raises(InputError, match="--backend"):
        check_config(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), backend="tensorrt"))
    with pytest.raises(InputError, match="--seeds 0"):
        check_config(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), seeds=0))
    with pytest.raises(InputError, match="nope.yaml: not found"):
        check_config(_cfg(f"{tiny_data},nope.yaml", tmp_path, ("yolo_nas_tiny",)))


def _row(model: str, fam: str, ap: float, lat: float = 80.0, seed: int = 0, **kw) -> ShowdownRow:
    return ShowdownRow(**{"model": model, "family": fam, "status": "ok", "seed": seed, "epochs": 100, "AP": ap,
                          "AP50": ap + 0.1, "APs": ap / 2, "APm": 0.0, "APl": 0.0, "params": 1e7, "gflops": 30.0,
                          "latency_fp32_ms": lat, "backend": "onnxruntime", "threads": 2, "train_s": 1800.0,
                          "settings": {"data": "d", "imgsz": 640, "batch": 16, "split": "val",
                                       "train_split": "train", "backend": "onnxruntime"}, **kw})


def _write(folder: Path, row: ShowdownRow) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{row.model}_seed{row.seed}.json").write_text(json.dumps(row.to_dict()))


def test_seeds_give_mean_and_spread_and_close_results_are_ties(tmp_path):
    for seed, (a, b) in enumerate(((0.30, 0.33), (0.32, 0.35), (0.34, 0.31))):
        _write(tmp_path, _row("yolo_nas_s", "YOLO-NAS", a, seed=seed))
        _write(tmp_path, _row("yolo11s", "YOLO11", b, seed=seed))
    _write(tmp_path, _row("yolo26s", "YOLO26", 0.50, seed=0, nms_free=True))
    (tmp_path / "notes.json").write_text("{}")  # not a row: ignored
    result = write_report(tmp_path, "yolonas showdown ...")
    nas, y11, y26 = result["models"]
    assert [m["model"] for m in result["models"]] == ["yolo_nas_s", "yolo11s", "yolo26s"]  # family order
    assert nas["seeds"] == [0, 1, 2] and nas["AP"] == pytest.approx(0.32) and nas["AP_spread"] == pytest.approx(0.02)
    assert y26["AP_spread"] is None
    # yolo11s 0.33 +- 0.02 against yolo_nas_s 0.32 +- 0.02: inside the seed spread, a tie
    (v,) = [v for v in result["head_to_head"] if v["b"] == "yolo11s"]
    assert v["winner"] is None and v["noise_source"] == "seed spread" and "tie" in v["text"]
    # yolo26s (one seed) 0.50 against 0.33: beyond the one-seed default noise, a winner
    (w,) = [v for v in result["head_to_head"] if v["a"] == "yolo11s"]
    assert w["winner"] == "yolo26s" and w["noise_source"] == "one-seed default"
    table = (tmp_path / "showdown.md").read_text()
    assert "| yolo_nas_s | YOLO-NAS | 3 | 100 | 30.0 | 32.0 | 2.0 |" in table
    assert "NMS-free: end-to-end head, no NMS |" in table and "WARNING" not in table
    assert "yolo_nas_s vs yolo11s: tie" in table and "yolo26s ahead of yolo11s by 17.0 pts" in table


def test_the_best_row_says_tie_under_the_one_seed_noise():
    rows = aggregate([_row("yolo_nas_s", "YOLO-NAS", 0.320), _row("yolov8s", "YOLOv8", 0.310),
                      _row("yolo11s", "YOLO11", 0.280)])
    assert standing(rows) == {"yolo_nas_s": "tie for best", "yolov8s": "tie for best", "yolo11s": "-4.0"}
    assert standing(rows, default=0.005) == {"yolo_nas_s": "best", "yolov8s": "-1.0", "yolo11s": "-4.0"}
    assert [v["winner"] for v in head_to_head(rows)] == [None, "yolo_nas_s", "yolov8s"]


def test_a_model_run_with_other_settings_is_flagged(tmp_path):
    _write(tmp_path, _row("yolo_nas_s", "YOLO-NAS", 0.32))
    other = _row("yolov8m", "YOLOv8", 0.35)
    other.settings = {**other.settings, "imgsz": 320}
    _write(tmp_path, other)
    write_report(tmp_path)
    assert "WARNING: yolov8m ran with other settings" in (tmp_path / "showdown.md").read_text()


def test_summary_means_over_data_sets_and_ap_per_training_hour():
    a = aggregate([_row("yolo_nas_s", "YOLO-NAS", 0.30, train_s=3600.0), _row("yolo11s", "YOLO11", 0.20)])
    b = aggregate([_row("yolo_nas_s", "YOLO-NAS", 0.40, train_s=7200.0),
                   ShowdownRow(model="yolo11s", family="YOLO11", status="failed", seed=0, message="m")])
    rows = [summary_row("aquarium", m) for m in a] + [summary_row("cars", m) for m in b]
    assert rows[0]["AP_per_hour"] == pytest.approx(30.0)  # 30 AP points in 1 h
    assert rows[1]["AP_per_hour"] == pytest.approx(40.0)  # 20 points in 0.5 h
    nas, y11 = mean_rows(rows)
    assert nas["datasets"] == 2 and nas["AP"] == pytest.approx(0.35) and nas["APs"] == pytest.approx(0.175)
    assert nas["train_h"] == pytest.approx(1.5) and nas["AP_per_hour"] == pytest.approx((30.0 + 20.0) / 2)
    assert y11["datasets"] == 1 and y11["AP"] == pytest.approx(0.20)  # the failed data set is left out


def test_latencies_of_onnx_and_openvino_files_are_retaken_side_by_side(tmp_path):
    torch.manual_seed(0)
    onnx = export_onnx(build(yolo_nas_tiny()).eval(), tmp_path / "tiny.onnx", image_size=(64, 64))
    ir = export_openvino(onnx, tmp_path / "tiny.xml")
    # as left by two separate calls: each timed alone, long ago, at different machine load
    _write(tmp_path, _row("yolov8s", "YOLOv8", 0.30, 999.0, onnx_fp32=str(onnx), int8_ir=str(ir),
                          latency_timed_with=["yolov8s"]))
    _write(tmp_path, _row("yolo_nas_s", "YOLO-NAS", 0.32, 1.0, onnx_fp32=str(onnx), latency_timed_with=["yolo_nas_s"]))
    _write(tmp_path, _row("yolo_nas_s", "YOLO-NAS", 0.33, 1.0, seed=1, onnx_fp32=str(onnx),
                          latency_timed_with=["yolo_nas_s"]))
    write_report(tmp_path)
    assert "not all timed together" in (tmp_path / "showdown.md").read_text()
    cfg = ShowdownConfig(data="d", imgsz=64, threads=1, latency_runs=3)
    assert time_together(tmp_path, cfg) == ["yolo_nas_s", "yolov8s"]
    models = write_report(tmp_path)["models"]
    # the same file timed side by side: the stale 999 ms and 1 ms are gone, and the two agree
    lat = [m["latency_fp32_ms"] for m in models]
    assert 999.0 not in lat and 1.0 not in lat and max(lat) / min(lat) < 5
    assert models[1]["latency_int8_ms"] > 0 and models[0].get("latency_int8_ms") is None  # the IR through OpenVINO
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
    # two seeds each: twice the training and the after-work -> (3600 - 360 - 600) / 60
    probes = [ShowdownRow(model="a", family="YOLO-NAS", train_s=10.0, after_s=120.0),
              ShowdownRow(model="b", family="YOLOv8", train_s=20.0, after_s=180.0)]
    assert budget_decision(60, 360, probes, 300, [2, 2])["epochs"] == 44
    # 90 min over 3 data sets: the first gets 30; after 40 min spent, the second gets (90 - 40) / 2 = 25
    assert budget_share(90, 0, 3) == 30 and budget_share(90, 40 * 60, 2) == 25


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


def test_a_failing_child_is_one_line_with_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('progress', file=sys.stderr); "
           "print('Ultralytics cannot build yolo26s.yaml: no such file', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(InputError, match=r"yolo26s: the Ultralytics child failed \(exit 3\): Ultralytics cannot "
                                         r"build yolo26s.yaml: no such file \(full log: "):
        run_child(cmd, "yolo26s", tmp_path)


@needs_peer
def test_the_child_names_a_model_ultralytics_cannot_build(tmp_path):
    """The real child on a name it cannot build: exit 3, the reason as the last log line (before any training)."""
    with peer_script() as script:
        cmd = [str(PEER_PYTHON), str(script), "--model", "yolo26q", "--data", "none.yaml", "--out", str(tmp_path),
               "--threads", "1"]
        with pytest.raises(InputError, match=r"exit 3\): Ultralytics cannot build yolo26q.yaml"):
            run_child(cmd, "yolo26q", tmp_path)


@needs_peer
def test_ultralytics_child_smoke_nms_free_yolo26(tiny_data, tmp_path):
    # 2 threads: Ultralytics alone would train on cpu_count - 1 (1 on 2 cores, 15 on 16)
    summary = run_showdown(_cfg(tiny_data, tmp_path, ("yolo26n",), threads=2, ultralytics_python=str(PEER_PYTHON)))
    report = json.loads((Path(summary["datasets"][tiny_data.parent.name]) / "showdown.json").read_text())
    (row,) = report["rows"]
    assert row["status"] == "ok", row.get("message")
    assert row["train_threads"] == 2 and row["nms_free"] is True
    assert row["params"] > 1e6 and 0.0 <= row["AP"] <= 1.0 and 0.0 <= row["AP_int8"] <= 1.0
    assert row["latency_fp32_ms"] > 0 and row["latency_int8_ms"] > 0
    assert "export(format='openvino', int8)" in row["int8_recipe"]
    assert Path(row["int8_ir"]).suffix == ".xml" and Path(row["int8_ir"]).is_file()


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


def test_the_child_script_ships_inside_the_package_and_src_never_reaches_into_benchmarks():
    with peer_script() as script:
        assert script.is_file() and (script.parent / "ultralytics_offline.py").is_file()
        assert "benchmarks" not in script.parts
    src = Path(__file__).resolve().parents[1] / "src" / "yolonas"
    for path, tree in parse_files(sorted(src.rglob("*.py"))).items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "benchmarks" for n in names), path
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value != "benchmarks" and not node.value.startswith("benchmarks/"), path


def _build_wheel(out: Path) -> Path:
    """The package's wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    tree = out / "tree"
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(out / "dist"), str(tree)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build the wheel here: {built.stderr.strip().splitlines()[-1:]}")
    return next((out / "dist").glob("yolonas-*.whl"))


def test_showdown_runs_from_an_installed_wheel(tiny_data, tmp_path):
    """The wheel installed into a fresh venv (its dependencies, not yolonas, seen through a .pth line to this
    interpreter's site-packages): `yolonas showdown --help` works and a missing peer is one line, exit 2, from the
    child script inside the installed package, run outside the source tree."""
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # a plain path line: its own .pth files (an editable yolonas) stay off
    (Path(site) / "_test_deps.pth").write_text(deps + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "YOLONAS_ULTRALYTICS_PYTHON")}
    where = subprocess.run([str(python), "-c", "import yolonas.showdown.child as c\nwith c.peer_script() as s: "
                            "print(s)"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert Path(where.stdout.strip()).is_relative_to(venv) and Path(where.stdout.strip()).is_file()
    yolonas = str(venv / "bin" / "yolonas")
    help_ = subprocess.run([yolonas, "showdown", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert help_.returncode == 0 and "--skip-missing-peers" in help_.stdout, help_.stderr
    missing = subprocess.run([yolonas, "showdown", "--data", str(tiny_data), "--models", "yolo_nas_tiny,yolov8n"],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("error: yolov8n: Ultralytics is not installed") and INSTALL_HINT in missing.stderr


def test_a_row_round_trips_through_its_json_file_unknown_keys_kept(tmp_path):
    row = _row("yolo11s", "YOLO11", 0.3, latency_timed_with=["yolo11s"])
    assert ShowdownRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    old = {"model": "yolov8s", "family": "YOLOv8", "status": "ok", "seed": 1, "AP": 0.2, "legacy_key": 7}
    _write(tmp_path, ShowdownRow.from_dict(old))
    (back,) = load_rows(tmp_path)
    assert back.AP == 0.2 and back.seed == 1 and back.extra == {"legacy_key": 7}
    assert back.to_dict()["legacy_key"] == 7 and back.to_dict()["latency_fp32_ms"] is None


# ----------------------------------------------------------------------------- equal training time, resume, CPUs

@pytest.fixture(scope="module")
def epoch_data(tmp_path_factory) -> Path:
    """Enough images that an epoch takes a few tenths of a second, so that per-epoch times stand out of the set-up."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("showdown_epochs"), n_images=48, n_val=4, size=96)


PROBE_LEAVES_OUT = ("*.xml", "*.onnx", "*int8*", "quant", "calib*", "pred_*.json", "val_fp32")


@pytest.fixture(scope="module")
def minutes_run(epoch_data, tmp_path_factory) -> tuple[ShowdownConfig, Path]:
    """yolo_nas_tiny and yolov8n with --minutes 0.3, INT8 on: (the config, the data set's folder).

    The clock counts each training process's CPU seconds: on this shared machine other work stretches the
    wall-clock of the same training (the showdown's own clock is the wall-clock). Batch 64, at least Ultralytics'
    nominal batch: below it, its gradient accumulation ramps up over the warm-up, so that a tiny model's first
    epochs take more optimizer steps than its later ones (on real sizes a step is small against the forward and
    backward passes)."""
    if not PEER_PYTHON.is_file():
        pytest.skip("needs .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh)")
    cfg = _cfg(epoch_data, tmp_path_factory.mktemp("minutes"), ("yolo_nas_tiny", "yolov8n"), epochs=500, minutes=0.3,
               clock="cpu", batch=64, ultralytics_python=str(PEER_PYTHON))
    summary = run_showdown(cfg)
    return cfg, Path(summary["datasets"][epoch_data.parent.name])


@needs_peer
def test_minutes_plan_the_same_training_time_for_ours_and_a_peer_from_probes_without_int8(minutes_run):
    cfg, sub = minutes_run
    ours, peer = load_rows(sub)
    assert ours.ok and peer.ok, (ours.message, peer.message)
    planned = [ours.time_plan["predicted_s"], peer.time_plan["predicted_s"]]
    assert max(planned) / min(planned) <= 1.10 and all(abs(p / 18 - 1) <= 0.10 for p in planned), planned
    for row in (ours, peer):
        plan = row.time_plan
        assert plan["minutes"] == 0.3 and row.epochs == plan["epochs"] > PROBE_EPOCHS  # a full schedule of its own
        assert plan["probe"]["epoch_s"] > 0 and plan["probe"]["cpu"] == row.train_cpu == cpu_info().describe()
        assert row.train_s == pytest.approx(sum(p["seconds"] for p in row.train_parts))
        # the measured times are the campaign's to report (benchmarks/results/showdown/): no timed assertion here
        assert row.int8_ir and Path(row.int8_ir).is_file()  # the real runs did make their INT8 model ...
        probe = sub / "probe" / row.model
        assert (sub / "probe" / f"{row.model}.json").is_file() and (probe / "train_done.json").is_file()
        for pattern in PROBE_LEAVES_OUT:  # ... the probes made none, and did not evaluate or export
            assert not list(probe.rglob(pattern)), (row.model, pattern)
    assert ours.precision == ("bf16 autocast" if bf16_supported() else "fp32")
    assert ours.recipe == "cpu_s320" and peer.precision == "fp32" and peer.recipe == "Ultralytics defaults"
    assert peer.epochs != ours.epochs  # each its own plan: the report does not call that a warning
    report = (sub / "showdown.md").read_text()
    assert "Training time, per run:" in report and "WARNING: the runs trained for different epochs" not in report
    assert "YOLO-NAS: cpu_s320, " in report and "YOLOv8: Ultralytics defaults, fp32" in report
    # a later call finds the rows done: no probe measured again, no row trained again
    stamps = {p: p.stat().st_mtime_ns for p in [*sub.glob("*_seed0.json"), *sub.glob("probe/*.json")]}
    run_showdown(cfg)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _probe_clock(ends: list[float], total: float) -> list[dict]:
    return [{"cpu": "CPU A", "threads": 2, "precision": "fp32", "epoch_ends": ends, "seconds": total}]


def test_the_plan_fits_the_minutes_from_the_probe_times():
    # epochs of 10 s with mosaic, 8 s without; 30 s of set-up and final validation
    ends = [25.0, 35.0, 45.0, 55.0, 64.0, 72.0, 80.0, 93.0]
    probe = probe_from_clock("m", {}, _probe_clock(ends, 100.0), close_mosaic=10)
    assert (probe.epoch_s, probe.plain_epoch_s) == (10.0, 8.0)
    assert probe.fixed_s == pytest.approx(100.0 - 4 * 10.0 - 4 * 8.0)
    assert probe.predict_s(50) == pytest.approx(28.0 + 40 * 10.0 + 10 * 8.0)
    assert plan_epochs(probe, 15, 1000) == 89  # 28 + 79 * 10 + 10 * 8 = 898 s, the nearest to 900
    assert plan_epochs(probe, 15, 40) == 40  # --epochs caps it ...
    assert time_plan(probe, 15, 40)["capped"] and not time_plan(probe, 15, 1000)["capped"]  # ... and the row says so
    assert plan_epochs(probe, 0.1, 1000) == 1
    with pytest.raises(InputError, match="probe's clock holds 2 part"):
        probe_from_clock("m", {}, _probe_clock(ends, 100.0) * 2, close_mosaic=10)


def test_a_saved_probe_is_reused_and_one_with_other_settings_measured_again(tmp_path):
    cfg = ShowdownConfig(data=str(tmp_path), models=("yolo_nas_tiny",), imgsz=64, threads=1)
    calls = []

    def measure(folder: Path, seed: int):
        calls.append(seed)
        ends = [2.0 + k for k in range(PROBE_EPOCHS)]
        return [{**_probe_clock(ends, ends[-1] + 1)[0], "cpu": cpu_info().describe()}], 10

    first = get_probe("yolo_nas_tiny", cfg, tmp_path, 1, 0, measure)
    assert get_probe("yolo_nas_tiny", cfg, tmp_path, 1, 5, measure) == first and calls == [0]  # every seed, once
    get_probe("yolo_nas_tiny", dataclasses.replace(cfg, imgsz=96), tmp_path, 1, 0, measure)
    assert calls == [0, 0]


def _cut_off(cfg: ShowdownConfig, model: str, folder: Path) -> dict:
    """Run `cfg` with a stop after epoch 1, as a session cut off would; the run's one clock part."""
    with pytest.raises(TrainingStopped, match=f"{model}: .*stopped after epoch 1 of 3"):
        run_showdown(dataclasses.replace(cfg, stop_after_epochs=1))
    (part,) = read_parts(folder)
    assert part["epochs_done"] == 1 and not part["finished"]
    return part


def _resumed_row(cfg: ShowdownConfig, model: str, sub: Path, first: dict) -> ShowdownRow:
    """Run `cfg` again: the row is completed from its last.pt, with its planned epochs and both parts' time."""
    run_showdown(cfg)
    (row,) = [r for r in load_rows(sub) if r.model == model]
    assert row.ok and row.epochs == 3, row.message
    assert [p["from_epoch"] for p in row.train_parts] == [0, 1]  # resumed after epoch 1, not started over
    assert row.train_parts[0] == first and row.train_parts[1]["epochs_done"] == 3 and row.train_parts[1]["finished"]
    assert row.train_s == pytest.approx(first["seconds"] + row.train_parts[1]["seconds"])
    assert row.train_time_rule.startswith("train_s is the sum of train_parts' seconds")  # the row says so
    assert f"{model} seed 0 in 2 parts" in (sub / "showdown.md").read_text()
    return row


def test_our_training_cut_off_inside_a_row_resumes_with_its_epochs_and_sums_its_parts(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), epochs=3, int8=False)
    sub = tmp_path / "t" / tiny_data.parent.name
    first = _cut_off(cfg, "yolo_nas_tiny", sub / "yolo_nas_tiny" / "seed0")
    assert not (sub / "yolo_nas_tiny_seed0.json").exists()  # no row until the run is complete
    _resumed_row(cfg, "yolo_nas_tiny", sub, first)


@needs_peer
def test_a_peer_training_cut_off_inside_a_row_resumes_from_its_last_pt(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, ("yolov8n",), epochs=3, int8=False, ultralytics_python=str(PEER_PYTHON))
    sub = tmp_path / "t" / tiny_data.parent.name
    first = _cut_off(cfg, "yolov8n", sub / "yolov8n" / "seed0")
    assert (sub / "yolov8n" / "seed0" / "train" / "weights" / "last.pt").is_file()
    row = _resumed_row(cfg, "yolov8n", sub, first)
    assert row.train_cpu == cpu_info().describe() and row.precision == "fp32"


def test_a_failed_row_is_run_again_by_the_next_call(tiny_data, tmp_path):
    sub = tmp_path / "t" / tiny_data.parent.name
    _write(sub, ShowdownRow(model="yolo_nas_tiny", family="YOLO-NAS", status="failed", seed=0, message="killed"))
    run_showdown(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), int8=False))
    (row,) = load_rows(sub)
    assert row.ok and row.train_parts and row.train_parts[0]["finished"]


def _timed(model: str, fam: str, seed: int, train_s: float, cpus: list[str], **kw) -> ShowdownRow:
    parts = [{"cpu": c, "threads": 2, "seconds": train_s / len(cpus), "from_epoch": 0, "epochs_done": 1,
              "precision": "fp32"} for c in cpus]
    probe = {"cpu": "CPU A", "epoch_s": 10.0, "plain_epoch_s": 9.0, "fixed_s": 20.0}
    plan = {"minutes": 15, "epochs": 80, "predicted_s": 900.0, "probe": probe}
    return _row(model, fam, 0.3, seed=seed, train_s=train_s, train_parts=parts, time_plan=plan, precision="fp32",
                train_cpu=cpus[0] if len(set(cpus)) == 1 else "mixed: " + "; ".join(cpus), epochs=80, **kw)


def test_rows_off_the_minutes_or_trained_on_other_cpus_are_flagged_and_kept_out_of_the_time_comparison(tmp_path):
    _write(tmp_path, _timed("yolo_nas_s", "YOLO-NAS", 0, 900.0, ["CPU A"]))
    _write(tmp_path, _timed("yolo_nas_s", "YOLO-NAS", 1, 1200.0, ["CPU B"]))  # a later session on another machine
    _write(tmp_path, _timed("yolov8s", "YOLOv8", 0, 1000.0, ["CPU A", "CPU B"]))  # resumed elsewhere
    _write(tmp_path, _timed("yolo11s", "YOLO11", 0, 780.0, ["CPU A"]))  # 13% short of 15 minutes
    result = write_report(tmp_path)
    report = (tmp_path / "showdown.md").read_text()
    assert "WARNING: training time off --minutes by more than 10%: yolo_nas_s seed 1 20.0 min (+33.3%)" in report
    assert "yolo11s seed 0 13.0 min (-13.3%)" in report and "yolo_nas_s seed 0 15.0" not in report
    assert "trained in parts on different CPUs, left out of the time comparison: yolov8s seed 0" in report
    assert "trained on another CPU than CPU A" in report and "yolo_nas_s seed 1 on CPU B" in report
    nas, v8, _ = result["models"]
    assert nas["train_s"] == 900.0 and nas["AP"] == pytest.approx(0.3)  # seed 1's time left out, its AP kept
    assert v8["train_s"] is None and result["reference_cpu"] == "CPU A"
    assert "| yolo_nas_s | 1 | 80 | - | fp32 | 10.0 / 9.0 | 20 | 15.0 | 20.0 | +33.3 | 1 | - | CPU B |" in report


def test_an_int8_collapse_is_reported_as_measured():
    models = aggregate([_row("yolo26s", "YOLO26", 0.30, AP_int8=0.01), _row("yolo11s", "YOLO11", 0.30, AP_int8=0.29),
                        _row("yolov8s", "YOLOv8", 0.30, int8_error="RuntimeError: nncf")])
    notes = int8_notes(models)
    assert notes[0] == ("INT8 collapse, as measured: yolo26s's own OpenVINO INT8 scores 1.0 mAP against 30.0 in fp32; "
                        "reported for YOLO26's OpenVINO INT8 in ultralytics issue #23987.")
    assert notes[1].startswith("INT8 failed for yolov8s: RuntimeError: nncf") and len(notes) == 2
    assert "| 1.0 |" in markdown_table(models)  # the INT8 column holds the measured value, not a blank


def test_minutes_and_budget_together_are_refused_and_auto_picks_our_recipe_for_the_hardware(tiny_data, tmp_path):
    with pytest.raises(InputError, match="--minutes and --budget: give one"):
        check_config(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), minutes=15, budget_minutes=60))
    with pytest.raises(InputError, match="nope: no such recipe"):
        check_config(_cfg(tiny_data, tmp_path, ("yolo_nas_tiny",), recipe="nope"))
    assert ShowdownConfig(data="d", device="cpu").our_recipe() == "cpu_s320"
    assert ShowdownConfig(data="d", device="cuda:1").our_recipe() == "scratch_small_data"
    assert ShowdownConfig(data="d", device="cpu", recipe="finetune").our_recipe() == "finetune"


def test_the_peer_interpreter_defaults_to_the_checkouts_venv(monkeypatch):
    monkeypatch.delitem(os.environ, "YOLONAS_ULTRALYTICS_PYTHON", raising=False)
    assert ultralytics_python() == Path(".venv-ultralytics/bin/python")
    monkeypatch.setenv("YOLONAS_ULTRALYTICS_PYTHON", "/x/python")
    assert ultralytics_python() == Path("/x/python") and ultralytics_python("/y/python") == Path("/y/python")
