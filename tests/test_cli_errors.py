"""The command line's promises, through the installed entry point (`yolonas.cli.main`): every flag range-checked
in one line before anything runs, a showdown that stops before training when Ultralytics is missing, predict's exit
code when nothing could be read, -q, a data.yaml without names, help that fits 80 columns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yolonas import cli
from yolonas.showdown import INSTALL_HINT

COMMANDS = ("info", "predict", "train", "distill", "pseudo-label", "val", "export", "quantize", "bench", "showdown",
            "search")


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`yolonas ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["yolonas", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A yolo_nas_tiny checkpoint at 64 px with the synthetic data set's 3 class names."""
    from yolonas.arch.model import build  # noqa: PLC0415
    from yolonas.arch.spec import yolo_nas_tiny  # noqa: PLC0415
    from yolonas.data.synthetic import CLASSES  # noqa: PLC0415

    model = build(yolo_nas_tiny(), class_names=list(CLASSES))
    model.preprocessing.image_size = (64, 64)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from yolonas.data import make_synthetic_dataset  # noqa: PLC0415

    return make_synthetic_dataset(tmp_path_factory.mktemp("cli_data"), n_images=4, n_val=2, size=64)


OUT_OF_RANGE = [
    ("predict", "--conf", "2"), ("predict", "--conf", "-1"), ("predict", "--iou", "5"), ("val", "--conf", "2"),
    ("val", "--iou", "-0.1"), ("predict", "--max-det", "0"), ("val", "--top-k", "0"), ("predict", "--batch", "0"),
    ("predict", "--imgsz", "500"), ("predict", "--imgsz", "0"), ("predict", "--tile", "100"),
    ("val", "--overlap", "1"), ("predict", "--device", "gpu"), ("predict", "--tile-merge", "union"),
    ("info", "--imgsz", "33"), ("info", "--num-classes", "0"), ("train", "--epochs", "0"), ("train", "--lr", "0"),
    ("train", "--batch", "0"), ("train", "--imgsz", "100"), ("train", "--workers", "-1"),
    ("distill", "--cls-weight", "-1"), ("pseudo-label", "--ignore-below", "2"), ("pseudo-label", "--conf", "fish=2"),
    ("pseudo-label", "--batch", "0"), ("export", "--conf", "1.5"), ("export", "--max-det", "0"),
    ("export", "--batch", "0"), ("export", "--opset", "9"), ("export", "--calib-images", "0"),
    ("export", "--format", "tflite"), ("quantize", "--calib-images", "0"), ("quantize", "--val-images", "-1"),
    ("quantize", "--percentile", "101"), ("quantize", "--min-speedup", "2"), ("quantize", "--threads", "0"),
    ("quantize", "--epochs", "0"), ("quantize", "--method", "max"), ("bench", "--runs", "0"),
    ("bench", "--warmup", "-1"), ("bench", "--batch", "1,0"), ("bench", "--threads", "0"), ("bench", "--blocks", "0"),
    ("showdown", "--epochs", "0"), ("showdown", "--budget", "0"), ("showdown", "--seeds", "0"),
    ("showdown", "--imgsz", "650"), ("showdown", "--batch", "0"), ("showdown", "--workers", "-1"),
    ("showdown", "--calib-images", "0"), ("showdown", "--threads", "0"), ("search", "--imgsz", "320,100"),
    ("search", "--trials", "0"), ("search", "--latency-cap", "0"), ("search", "--population", "1"),
    ("search", "--train-imgsz", "100"), ("search", "--threads", "0"),
]


@pytest.mark.parametrize(("command", "flag", "value"), OUT_OF_RANGE, ids=lambda v: str(v))
def test_a_flag_out_of_range_is_one_line_before_anything_runs(command, flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, command, flag, value)
    assert code == 2
    assert err.startswith(f"error: {flag} {value}") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out
    assert not (tmp_path / "runs").exists()


def test_usage_errors_are_one_line_too(monkeypatch, capsys):
    for args, text in ((["predict"], "Missing option '--source'"), (["predict", "-s", "x", "--conf", "high"],
                                                                       "'--conf'"),
                       (["predict", "-s", "x", "--nope"], "No such option: --nope")):
        code, _, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and err.startswith("error: ") and text in err and err.count("\n") == 1, err


def test_help_fits_80_columns_with_defaults_whole(monkeypatch):
    runner = CliRunner()
    listing = runner.invoke(cli.app, ["--help"], env={"COLUMNS": "80"}).output.split("Commands:")[1]
    assert "..." not in listing and "…" not in listing  # every command's summary whole, wrapped
    assert "when none could be read, it fails (exit 2)." in " ".join(listing.split())
    for command in COMMANDS:
        result = runner.invoke(cli.app, [command, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert "…" not in result.output and max(map(len, result.output.splitlines())) <= 80, command
    text = " ".join(runner.invoke(cli.app, ["showdown", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "[default: yolo_nas_s,yolov8s,yolo11s,yolo26s]" in text
    assert ".venv-ultralytics/bin/python" in text.replace("- ", "-")  # a path may wrap at its hyphen
    text = " ".join(runner.invoke(cli.app, ["predict", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "a box cut by an inner tile border is dropped where a larger box of the same class" in text


def test_showdown_without_ultralytics_stops_before_training(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "showdown", "--data", str(data), "--models",
                              "yolo_nas_tiny,yolov8n,yolo11n", "--ultralytics-python", str(tmp_path / "no" / "py"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: yolov8n, yolo11n: Ultralytics is not installed") and INSTALL_HINT in err
    assert "--skip-missing-peers" in err
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder


def test_showdown_workers_default_fits_the_cpus():
    from yolonas.showdown import ShowdownConfig  # noqa: PLC0415

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ShowdownConfig(data="d").workers == min(4, cpus)  # torch warns about more loader processes than CPUs


def test_predict_exits_2_when_no_input_could_be_read(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, out, err = run_main(monkeypatch, capsys, "-q", "predict", "-w", str(tiny), "-s", str(folder), "--name", "b")
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {folder}: none of its 1 input(s) could be read (first: ") and "broken.jpg" in err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "predict" / "b").exists()  # the empty run folder is gone again


def test_predict_says_at_the_end_how_many_inputs_it_skipped(tiny, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    shutil.copytree(data.parent / "val" / "images", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, _, err = run_main(monkeypatch, capsys, "predict", "-w", str(tiny), "-s", str(folder), "--name", "s")
    assert code == 0, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("predict: 2 images, ") and last.endswith("; 1 of 3 inputs skipped (unreadable, named above)")


def test_quiet_prints_only_errors(tiny, data, tmp_path, monkeypatch, capsys):
    """-q: predict's threshold and summary lines, val's, export's, and the random-weights warning all stay off
    stderr; the result asked for on stdout (--json -) still comes."""
    monkeypatch.chdir(tmp_path)
    image = next((data.parent / "val" / "images").iterdir())
    for args in (["predict", "-w", str(tiny), "-s", str(image), "--json", "-"],
                 ["predict", "-m", "yolo_nas_tiny", "-s", str(image), "--imgsz", "64", "--no-save"],
                 ["val", "-w", str(tiny), "-d", str(data), "--no-plots", "--json", "-"],
                 ["export", "-w", str(tiny), "-o", str(tmp_path / "t.onnx")]):
        code, out, err = run_main(monkeypatch, capsys, "-q", *args)
        assert code == 0 and err == "", (args, err)
        assert not args[-1] == "-" or json.loads(out)
    _, _, err = run_main(monkeypatch, capsys, "predict", "-w", str(tiny), "-s", str(image), "--no-save")
    assert err.startswith("predict: score>0.25") and "predict: 1 images" in err  # without -q they show


def test_val_names_unnamed_classes_after_the_checkpoint(tiny, data, tmp_path, monkeypatch, capsys):
    """A data.yaml with nc and no names: one warning, and the checkpoint's names in the results."""
    monkeypatch.chdir(tmp_path)
    unnamed = data.parent / "unnamed.yaml"
    unnamed.write_text(f"path: {data.parent}\ntrain: train/images\nval: val/images\nnc: 3\n")
    code, out, err = run_main(monkeypatch, capsys, "val", "-w", str(tiny), "-d", str(unnamed), "--no-plots",
                              "--json", "-")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "a class count but no names" in line]
    assert len(warnings) == 1 and "circle, rectangle, triangle" in warnings[0]
    per_class = set(json.loads(out)["per_class"])  # the classes present in the split, by the model's names
    assert per_class and per_class <= {"circle", "rectangle", "triangle"}


def test_no_cuda_runtime_line_from_torch_cpp_extension():
    """NNCF imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on a machine with a CUDA
    toolkit and no GPU; the CLI's logging set-up silences it (INT8 export, bench --all, showdown)."""
    def stderr_of(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"}).stderr

    control = stderr_of("import torch.utils.cpp_extension")
    if "No CUDA runtime" not in control:
        pytest.skip("this machine has a GPU, or no CUDA toolkit: torch does not print the line here")
    assert "No CUDA runtime" not in stderr_of("from yolonas.cli.shared import _setup_logging; import logging; "
                                              "_setup_logging(logging.WARNING); import torch.utils.cpp_extension")
