"""The Ultralytics side: the data it trains on, the child process in its own venv (child.py: which interpreter and
script), and the scoring of its predictions here by our COCO evaluator. This package never imports Ultralytics."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

from yolonas.data import open_dataset
from yolonas.data.images import select_images
from yolonas.data.splits import data_yaml_of, source_images
from yolonas.data.yolo import label_path, read_data_yaml
from yolonas.deploy.timing import cpu_info
from yolonas.errors import InputError
from yolonas.eval.coco import coco_metrics
from yolonas.showdown.child import peer_script
from yolonas.showdown.clock import STOPPED_EXIT, TrainingStopped, parts_record, read_parts
from yolonas.showdown.config import ShowdownConfig, nms_free
from yolonas.showdown.probe import PROBE_EPOCHS, PROBE_PLAIN

logger = logging.getLogger(__name__)

RESULT_MARKER = "SHOWDOWN_RESULT "  # the child's result line starts with this


def _link_images(images: list, folder: Path) -> None:
    """folder/images and folder/labels made afresh of links to `images` and their labels."""
    for sub in ("images", "labels"):
        target = folder / sub
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
    for image in images:
        # The label path comes from the image path as the data set gives it: a linked image's target may
        # lie in a folder with no labels beside it (data sets assembled from links).
        image, labels = Path(image).absolute(), label_path(Path(image).absolute())
        (folder / "images" / image.name).symlink_to(image.resolve())
        if labels.is_file():
            (folder / "labels" / labels.name).symlink_to(labels.resolve())


def peer_yaml(data: str) -> Path:
    """The YOLO data.yaml `data` names; InputError (the peer's row fails, ours still run) for anything else."""
    yaml_path = data_yaml_of(data)
    if yaml_path is None:
        raise InputError(f"{data}: Ultralytics reads only YOLO data sets, not a COCO JSON: give a YOLO data.yaml "
                         "(train/val image folders with labels/ beside them) to compare its models")
    return yaml_path


def _write_yaml(folder: Path, entries: dict, names: list[str]) -> Path:
    yaml_path = folder / "data.yaml"
    yaml_path.write_text(json.dumps({"path": str(folder.resolve()), **entries, "nc": len(names), "names": names}))
    return yaml_path  # JSON is YAML


def peer_data(data: str, splits: tuple[str, str], folder: Path) -> Path:
    """A data.yaml for Ultralytics with absolute paths, its splits made of links to our split's images and labels.

    Links, not copies: Ultralytics writes its labels.cache beside the labels, which must not touch the data set.
    """
    yaml_path = peer_yaml(data)
    for key, split in zip(("train", "val"), splits, strict=True):
        _link_images(open_dataset(yaml_path, split).image_files, folder / key)
    return _write_yaml(folder, {"train": "train/images", "val": "val/images"}, read_data_yaml(yaml_path)["names"])


def calib_data(data: str, images: list, folder: Path) -> Path:
    """A data.yaml whose train and val splits are links to the INT8 calibration `images` (Ultralytics' INT8 export
    calibrates on a split of a data.yaml)."""
    _link_images(images, folder / "calib")
    return _write_yaml(folder, {"train": "calib/images", "val": "calib/images"},
                       read_data_yaml(peer_yaml(data))["names"])


def peer_predictions_to_coco(predictions: list[dict], file_ids: dict[str, int], category_ids: list[int]) -> list[dict]:
    """Ultralytics' COCO JSON (category = class + 1, image id = file stem) in our data set's ids, by file name."""
    out = []
    for det in predictions:
        name = Path(det["file_name"]).name
        if name not in file_ids:
            raise InputError(f"Ultralytics' predictions name an image {name!r} that is not in the evaluation split")
        out.append({"image_id": file_ids[name], "category_id": category_ids[int(det["category_id"]) - 1],
                    "bbox": [float(v) for v in det["bbox"]], "score": float(det["score"]), "file_name": name})
    return out


def child_command(model: str, cfg: ShowdownConfig, epochs: int, out: Path, threads: int, python: Path,
                  seed: int, script: Path, probe: bool = False) -> list[str]:
    """The child's command line; writes its data copy (under the run folder, shared by the peers) and, unless this
    is a probe (training only), the INT8 calibration data set (the same train images as ours for this seed)."""
    data_yaml = peer_data(cfg.data, (cfg.train_split, cfg.split), out.parents[1] / "ultralytics_data")
    cmd = [str(python), str(script), "--model", model, "--data", str(data_yaml), "--epochs", str(epochs),
           "--imgsz", str(cfg.imgsz), "--batch", str(cfg.batch), "--seed", str(seed), "--device", cfg.device,
           "--workers", str(cfg.workers), "--out", str(out), "--threads", str(threads),
           "--cpu", cpu_info().describe(), "--clock", cfg.clock]
    if nms_free(model):
        cmd.append("--nms-free")
    if probe:
        return [*cmd, "--probe", "--close-mosaic", str(PROBE_PLAIN)]
    if cfg.stop_after_epochs is not None:
        cmd += ["--stop-after-epochs", str(cfg.stop_after_epochs)]
    if cfg.int8:
        calib = select_images(source_images(cfg.data, cfg.train_split), cfg.calib_images, seed)
        (out / "calib_images.txt").write_text("".join(f"{Path(f).resolve()}\n" for f in calib))
        calib_yaml = calib_data(cfg.data, calib, out / "calib_data")
        cmd += ["--int8-data", str(calib_yaml), "--calib-images", str(len(calib))]
    return cmd


def run_child(cmd: list[str], model: str, out: Path) -> dict:
    """Run the child, its stderr into out/child.log; its result line's dict, TrainingStopped when it stopped as
    asked (stop_after_epochs), or InputError with the log's tail."""
    logger.info("showdown: %s", " ".join(cmd))
    with open(out / "child.log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    tail = (out / "child.log").read_text().strip().splitlines()[-1:] or ["no output"]
    if proc.returncode == STOPPED_EXIT:
        raise TrainingStopped(f"{model}: {tail[0][:300]} ({out}); the next call resumes it")
    lines = [ln[len(RESULT_MARKER):] for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise InputError(f"{model}: the Ultralytics child failed (exit {proc.returncode}): {tail[0][:300]} "
                         f"(full log: {out / 'child.log'})")
    return json.loads(lines[-1])


def probe_peer(model: str, cfg: ShowdownConfig, out: Path, threads: int, python: Path,
               seed: int) -> tuple[list[dict], int]:
    """The child's probe (probe.py) into `out`: training only, no evaluation, export or INT8; its clock's parts, and
    the epochs Ultralytics closes mosaic for in a real run (its default)."""
    with peer_script() as script:
        child = run_child(child_command(model, cfg, PROBE_EPOCHS, out, threads, python, seed, script, probe=True),
                          model, out)
    return read_parts(out), child["close_mosaic"]


def score_child(child: dict, dataset, out: Path) -> dict:
    """The child's fp32 and INT8 predictions mapped to our ids and scored by our evaluator; the row's fields."""
    file_ids = {Path(f).name: int(i) for f, i in zip(dataset.files, dataset.image_ids, strict=True)}
    category_ids = [int(c) for c in dataset.category_ids]
    gt = dataset.to_coco()
    row = {"params": child["params"], "gflops": child["gflops"], "onnx_fp32": child["onnx_fp32"],
           "ultralytics": child["versions"], "network_attempts": child["network_attempts"],
           "nms_free": child.get("nms_free", False), "ultralytics_own_AP": child.get("own_map"),
           "ultralytics_own_AP50": child.get("own_map50"), "ultralytics_own_AP_int8": child.get("own_map_int8")}
    for key, suffix in (("pred_fp32", ""), ("pred_int8", "_int8")):
        if child.get(key):
            preds = peer_predictions_to_coco(json.loads(Path(child[key]).read_text()), file_ids, category_ids)
            (out / f"{key}.json").write_text(json.dumps(preds))
            m = coco_metrics(gt, preds)
            row.update({f"AP{suffix}": m.AP, f"AP50{suffix}": m.AP50})
            if not suffix:
                row.update({"APs": m.APs, "APm": m.APm, "APl": m.APl})
    if child.get("int8_ir"):
        row.update({"int8_ir": child["int8_ir"], "int8_recipe": child["int8_recipe"]})
    if child.get("int8_error"):  # fp32 results stand; the row says why there is no INT8 result
        row["int8_error"] = child["int8_error"]
    return row


def run_peer(model: str, cfg: ShowdownConfig, epochs: int, out: Path, dataset, threads: int, python: Path,
             seed: int) -> dict:
    """Run the Ultralytics child for one of its models, then score its predictions here (time_together times it)."""
    with peer_script() as script:
        child = run_child(child_command(model, cfg, epochs, out, threads, python, seed, script), model, out)
    t1 = time.perf_counter()
    row = score_child(child, dataset, out)
    row.update({**parts_record(read_parts(out)), "epochs": child.get("epochs", epochs), "device": child["device"],
                "after_s": child["after_s"] + time.perf_counter() - t1, "recipe": "Ultralytics defaults"})
    return row
