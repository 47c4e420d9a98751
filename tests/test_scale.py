"""yolonas.scale: batch inference on Ray Data, on a real two-node Ray cluster started on this machine (one for the
module), with a yolo_nas_tiny fitted here and its INT8 OpenVINO IR."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
psutil = pytest.importorskip("psutil")

from yolonas.cli import app  # noqa: E402
from yolonas.data.images import decode_image  # noqa: E402
from yolonas.deploy.open import open_predictor  # noqa: E402
from yolonas.errors import InputError, YolonasError  # noqa: E402
from yolonas.infer.detections import Detections  # noqa: E402
from yolonas.infer.postprocess import NMSConfig  # noqa: E402
from yolonas.infer.tiling import TileConfig  # noqa: E402
from yolonas.scale import JobConfig, PredictOptions, plan_actors, plan_inputs, read_rows, run_job  # noqa: E402
from yolonas.scale.rows import result_table  # noqa: E402

BAD = {"text.jpg": b"not an image at all", "empty.png": b"", "header_only.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 64}
ACTOR_PROCESS = "MapWorker(MapBatches(DetectActor))"


class Stop(Exception):
    """Raised from a progress callback: the job stops part-way, as a killed one would."""


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each on this machine; every job of the module joins it."""
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, logging_level=logging.ERROR)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def trained(trained_tiny, tmp_path_factory):
    """The session's trained yolo_nas_tiny: {"checkpoint": best.pt, "int8": its NNCF INT8 IR}."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from yolonas.quant.config import QuantConfig  # noqa: PLC0415
    from yolonas.quant.pipeline import quantize  # noqa: PLC0415

    tmp = tmp_path_factory.mktemp("scale_model")
    ir = quantize(str(trained_tiny.best), QuantConfig(trained_tiny.data, tmp / "int8", fmt="openvino",
                                                      calib_images=8, val_images=0))
    return {"checkpoint": str(trained_tiny.best), "int8": ir.output}


def _images(coco128: Path, folder: Path, n: int) -> list[str]:
    """`n` coco128 images (repeated under new names beyond 128) copied into `folder`; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted((coco128 / "images" / "train2017").glob("*.jpg"))
    names = []
    for i in range(n):
        names.append(f"{i:03d}_{files[i % len(files)].name}")
        shutil.copy(files[i % len(files)], folder / names[-1])
    return names


@pytest.fixture(scope="module")
def mixed_sizes(coco128, aquarium, tmp_path_factory) -> Path:
    """8 coco128 images and 2 aquarium ones (another size and aspect)."""
    folder = tmp_path_factory.mktemp("mixed")
    _images(coco128, folder, 8)
    for p in sorted((aquarium / "valid" / "images").glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    return folder


def _names(table) -> Counter:
    return Counter(Path(p).name for p in table.column("path").to_pylist())


def _actor_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if ACTOR_PROCESS in " ".join(p.info["cmdline"] or [])]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ------------------------------------------------------------------------------------------------ no Ray needed


def test_decode_image_gives_rgb_and_names_a_corrupt_file(coco128):
    path = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[0]
    image = decode_image(path.read_bytes(), str(path))
    from yolonas.infer.sources import read_image  # noqa: PLC0415

    np.testing.assert_array_equal(image, read_image(path))
    for name, data in BAD.items():
        with pytest.raises(InputError, match=f"{name}: cannot decode"):
            decode_image(data, name)


def test_result_table_keeps_order_boxes_and_errors():
    names = ["cat", "dog", "bird"]
    a = Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.9, 0.5], np.float32),
                   np.array([2, 0]), names, (10, 20), "a.jpg")
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), names, (5, 6))
    rows = result_table(["a.jpg", "bad.jpg", "c.jpg"], [a, "cannot decode image", empty]).to_pylist()
    assert [r["path"] for r in rows] == ["a.jpg", "bad.jpg", "c.jpg"]
    assert rows[0]["boxes"] == [[1, 2, 3, 4], [5, 6, 7, 8]] and rows[0]["class_names"] == ["bird", "cat"]
    assert (rows[0]["width"], rows[0]["height"], rows[0]["error"]) == (20, 10, None)
    assert rows[1] == {"path": "bad.jpg", "width": None, "height": None, "boxes": [], "scores": [],
                       "class_ids": [], "class_names": [], "error": "cannot decode image"}
    assert rows[2]["boxes"] == [] and (rows[2]["width"], rows[2]["height"]) == (6, 5)


def test_plan_inputs_from_lists_folders_and_uris(coco128, tmp_path):
    names = _images(coco128, tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    listing = tmp_path / "list.txt"
    listing.write_text(f"imgs/{names[0]}\n\nimgs/{names[1]}\nimgs/{names[0]}\nimgs/gone.jpg\n")
    plan = plan_inputs(listing)
    assert [Path(p).name for p in plan.paths] == names[:2] and Path(plan.missing[0]).name == "gone.jpg"
    folder = plan_inputs(tmp_path / "imgs", done={str((tmp_path / "imgs" / names[1]).resolve())})
    assert [Path(p).name for p in folder.paths] == [names[0], names[2]]
    assert (folder.already_done, folder.not_images) == (1, 1)
    uri = plan_inputs(f"file://{tmp_path / 'imgs'}", done={str((tmp_path / "imgs" / names[0]).resolve())})
    assert [p.removeprefix("file://") for p in uri.paths] == [str(tmp_path / "imgs" / n) for n in names[1:]]
    assert len(plan_inputs(str(tmp_path / "imgs" / "*.jpg")).paths) == 3
    with pytest.raises(InputError, match="no such file"):
        plan_inputs(tmp_path / "nothing")


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    base = ["predict", "--model", "yolo_nas_tiny", "--engine", "ray"]
    cases = [
        (["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o")], "no such file, folder"),
        (["--source", str(tmp_path), "--output", str(tmp_path / "o"), "--address", "127.0.0.1:1"],
         "no Ray cluster answers"),
        (["--source", str(tmp_path), "--output", str(tmp_path / "o"), "--address", "not an address"],
         "give auto, host:port"),
        (["--source", str(tmp_path)], "give --output DIR"),
        (["--source", str(tmp_path), "--output", str(tmp_path / "o"), "--format", "csv"], "choose parquet, jsonl"),
        (["--source", str(tmp_path), "--output", str(tmp_path / "o"), "--weights", str(tmp_path / "broken.pt")],
         "broken.pt: not a readable checkpoint"),
    ]
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    for args, message in cases:
        result = runner.invoke(app, (base[:1] + base[3:] if "--weights" in args else base) + args)
        assert isinstance(result.exception, YolonasError) and message in str(result.exception), (args, result.output)
    result = runner.invoke(app, ["predict", "--model", "yolo_nas_tiny", "--source", str(tmp_path), "--output", "o"])
    assert "need --engine ray" in str(result.exception)


def test_an_actor_that_cannot_open_the_model_is_a_one_line_error():
    from yolonas.scale.job import _our_error  # noqa: PLC0415

    died = ray.exceptions.RayActorError(error_msg="The actor died because of an error raised in its creation task\n"
                                        "Traceback ...\nyolonas.errors.CheckpointError: m.pt: not a readable "
                                        "checkpoint", actor_init_failed=True)
    assert str(_our_error(died)) == "an actor could not open the model: m.pt: not a readable checkpoint"
    lost = ray.exceptions.RayActorError(error_msg="node lost")
    assert _our_error(lost) is lost


# ------------------------------------------------------------------------------------------------ on the cluster


def test_actor_pool_fits_the_two_nodes(cluster):
    plan = plan_actors("cpu", None, None)
    assert (plan.actors, plan.threads) == (2, 1)
    with pytest.raises(InputError, match="need 4 CPUs"):
        plan_actors("cpu", 4, 1)


@pytest.mark.parametrize("kind", ["checkpoint", "int8", "tiles"])
def test_ray_rows_equal_plain_predict(kind, cluster, trained, mixed_sizes, tmp_path):
    model = trained["int8" if kind == "int8" else "checkpoint"]
    nms = NMSConfig(score_threshold=0.1)
    tiles = TileConfig(160) if kind == "tiles" else None
    plain = open_predictor(model, nms=nms, tiles=tiles, threads=1, batch=4).predict(str(mixed_sizes))
    summary = run_job(mixed_sizes, JobConfig(model=model, output=tmp_path / "out",
                                             predict=PredictOptions(nms=nms, tiles=tiles, batch=4)))
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "out").to_pylist()}
    assert (summary.done, summary.failed, len(rows)) == (10, 0, 10)
    assert sum(len(d) for d in plain) >= 10  # the fitted model finds objects: the comparison has boxes
    for det in plain:
        row = rows[Path(det.path).name]
        assert (row["height"], row["width"]) == det.image_shape and row["error"] is None
        assert row["class_ids"] == det.class_ids.tolist()
        assert row["class_names"] == [det.class_names[c] for c in det.class_ids]
        np.testing.assert_allclose(np.array(row["boxes"], np.float32).reshape(-1, 4), det.boxes, atol=1e-3)
        np.testing.assert_allclose(row["scores"], det.scores, atol=1e-4)


def test_corrupt_files_and_a_killed_actor_lose_no_image_and_repeat_none(cluster, coco128, tmp_path):
    good = _images(coco128, tmp_path / "in", 16)
    for name, data in BAD.items():
        (tmp_path / "in" / name).write_bytes(data)
    killed: list[tuple[int, int]] = []  # (pid, rows written when it was killed)

    def kill_an_actor(rows: int, failed: int) -> None:
        if rows >= 4 and not killed:  # some rows are written, most are still to come
            killed.append((_actor_pids()[0], rows))
            os.kill(killed[0][0], signal.SIGKILL)

    cfg = JobConfig(model="yolo_nas_tiny", output=tmp_path / "out", actors=2,
                    predict=PredictOptions(imgsz=64, batch=2))
    summary = run_job(tmp_path / "in", cfg, on_progress=kill_an_actor)
    table = read_rows(tmp_path / "out")
    assert killed and killed[0][1] < 19 and _gone(killed[0][0])
    assert _names(table) == Counter(good + list(BAD))  # every image, each once
    errors = {Path(r["path"]).name: r["error"] for r in table.to_pylist() if r["error"]}
    assert errors == {name: "cannot decode image (corrupt or not an image)" for name in BAD}
    assert (summary.done, summary.failed, summary.pool) == (16, 3, "2 actors x 1 threads")


def test_skip_done_resumes_a_stopped_job_without_repeats(cluster, coco128, tmp_path):
    good = _images(coco128, tmp_path / "in", 12)
    out = tmp_path / "out"

    def stop(rows: int, failed: int) -> None:
        if rows >= 4:
            raise Stop

    cfg = JobConfig(model="yolo_nas_tiny", output=out, actors=1, rows_per_file=2,
                    predict=PredictOptions(imgsz=64, batch=2))
    with pytest.raises(Stop):
        run_job(tmp_path / "in", cfg, on_progress=stop)
    first = _names(read_rows(out))
    assert 4 <= sum(first.values()) < 12 and max(first.values()) == 1
    (out / ".part-killed.parquet.tmp").write_bytes(b"half a file")  # what a write cut short leaves
    with pytest.raises(InputError, match="--skip-done"):
        run_job(tmp_path / "in", cfg)
    cfg.skip_done = True
    summary = run_job(tmp_path / "in", cfg)
    assert summary.already_done == sum(first.values()) and summary.done == 12 - summary.already_done
    assert _names(read_rows(out)) == Counter(good)


def test_cli_engine_ray_on_a_local_ray(coco128, tmp_path):
    """`yolonas predict --engine ray` in its own process: it starts (and stops) a Ray of its own."""
    names = _images(coco128, tmp_path / "imgs", 4)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*(f"imgs/{n}" for n in names), f"imgs/{names[0]}", "imgs/gone.jpg"]) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "yolonas.cli", "predict", "--engine", "ray", "--source", str(listing), "--model",
           "yolo_nas_tiny", "--imgsz", "64", "--output", str(out), "--format", "jsonl", "--skip-done", "--json",
           str(tmp_path / "summary.json")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "predict (ray): 4 images done, 1 failed" in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["listed"], summary["done"], summary["failed"]) == (5, 4, 1)
    rows = read_rows(out, "jsonl").to_pylist()
    assert sorted(Path(r["path"]).name for r in rows) == sorted([*names, "gone.jpg"])
    assert [r["error"] for r in rows if Path(r["path"]).name == "gone.jpg"] == ["no such file"]
