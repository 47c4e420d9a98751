"""`yolonas bench` and the benchmark function: every stage timed, results written."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.cli import app
from yolonas.deploy.benchmark import benchmark, markdown_table
from yolonas.infer import Predictor


def test_benchmark_times_each_stage():
    model = build(yolo_nas_tiny(), 3).eval().fuse()
    model.preprocessing.image_size = (96, 128)
    images = [np.random.default_rng(i).integers(0, 255, (120, 90, 3), dtype=np.uint8) for i in range(3)]
    result = benchmark(Predictor(model), images, batch=4, runs=3, warmup=1, name="torch")
    assert result.batch == 4 and result.image_size == (96, 128)
    assert 0 < result.forward_ms["p50"] <= result.forward_ms["p99"]
    assert set(result.stages_ms) == {"pre", "forward", "post"} and all(v > 0 for v in result.stages_ms.values())
    assert result.throughput == 4 / (result.end_to_end_ms["p50"] / 1e3)
    assert "| torch | cpu | 4 |" in markdown_table([result])


def test_bench_cli_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--weights", "yolo_nas_tiny", "--imgsz", "64", "--batch", "1,2",
                                      "--runs", "2", "--warmup", "1", "--output", str(out), "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["batch"] for r in data["results"]] == [1, 2]
    assert json.loads((tmp_path / "bench.json").read_text()) == data
    assert "end to end" in (tmp_path / "bench.md").read_text()
