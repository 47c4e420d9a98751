"""The showdown: our YOLO-NAS and Ultralytics' YOLOv8 trained and scored alike, one table and one frontier plot.

Every model trains on the same data, input size, epochs, batch and seed; every model's detections on the
evaluation split (score > 0.01, at most 300 per image, IoU 0.7 per-class multi-label NMS in both families) are
scored by our `coco_metrics` against the same ground truth; every ONNX file (fp32 and INT8 of both families) is
timed in this process by the same loop. Ultralytics runs in its own virtual environment as a child process
(benchmarks/peers/ultralytics_showdown.py); this module never imports it. Per-model results land in
runs/showdown/<name>/<model>.json as they finish, so a showdown split over several calls merges.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from yolonas.errors import InputError

OURS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
PEERS = ("yolov8s", "yolov8m", "yolov8l")
# Small models for tests and quick checks; accepted, but not part of the published comparison.
TEST_MODELS = ("yolo_nas_tiny", "yolov8n")
DEFAULT_MODELS = OURS + PEERS
INSTALL_HINT = "bash benchmarks/peers/ultralytics_setup.sh"
RESULT_MARKER = "SHOWDOWN_RESULT "  # the child's result line starts with this
REPORT_FILES = ("showdown.md", "showdown.json", "frontier.png")


def family(model: str) -> str:
    """'YOLO-NAS' or 'YOLOv8' for a model name; InputError for an unknown one."""
    if model in OURS or model == "yolo_nas_tiny":
        return "YOLO-NAS"
    if model in PEERS or model == "yolov8n":
        return "YOLOv8"
    raise InputError(f"--models: unknown model {model!r}; choose from {', '.join(DEFAULT_MODELS + TEST_MODELS)}")


@dataclass
class ShowdownConfig:
    """Everything one showdown call needs; the CLI flags map 1:1 onto these fields."""

    data: str
    models: tuple[str, ...] = DEFAULT_MODELS
    epochs: int = 100
    budget_minutes: float | None = None  # scale epochs so the whole call fits; --epochs is then the ceiling
    imgsz: int = 640
    batch: int = 16
    device: str = "auto"
    backend: str = "onnxruntime"
    int8: bool = True
    calib_images: int = 64
    seed: int = 0
    workers: int = 4
    threads: int | None = None  # CPU training threads, both families, and ORT's for timing (default: torch's)
    latency_runs: int = 20
    train_split: str = "train"
    split: str = "val"
    ultralytics_python: str | None = None
    name: str = "exp"
    project: str = "runs/showdown"
    recipe: str = "scratch_small_data"
    force: bool = False  # redo models whose <model>.json exists
    command: str = ""
    extra: dict = field(default_factory=dict)

    def settings(self) -> dict:
        """The settings a row must share with the others to belong in the same table."""
        return {"data": str(Path(self.data).resolve()), "imgsz": self.imgsz, "batch": self.batch, "seed": self.seed,
                "split": self.split, "train_split": self.train_split, "backend": self.backend}


# ------------------------------------------------------------------------------------------------ budget


def epochs_for_budget(budget_s: float, spent_s: float, train_s: list[float], after_s: list[float],
                      max_epochs: int) -> int:
    """Epochs E such that spent + sum(after) + E * sum(train) <= budget, clamped to [1, max_epochs].

    `train_s` is each model's measured wall time to train one epoch (start-up and one validation included, so
    the estimate errs long), `after_s` its time for evaluation, export, INT8 and timing, and `spent_s` what the
    probes already took.
    """
    if budget_s <= 0 or max_epochs < 1:
        raise InputError(f"--budget must be positive and --epochs at least 1 (got {budget_s / 60:g} min, "
                         f"{max_epochs} epochs)")
    per_epoch = sum(train_s)
    if per_epoch <= 0:
        return max_epochs
    epochs = math.floor((budget_s - spent_s - sum(after_s)) / per_epoch)
    return max(1, min(max_epochs, epochs))


# ------------------------------------------------------------------------------------------------ timing


def onnx_latency(files: dict[str, Path], imgsz: int, threads: int, runs: int = 20, warmup: int = 3,
                 blocks: int = 3) -> dict[str, float]:
    """Median ms of a bare ONNX Runtime `session.run` per file on one 1x3xHxW float input, timed the one way
    (deploy.timing: the files take turns block by block; the median is over block medians)."""
    from yolonas.deploy.timing import ort_runner, ort_session, time_blocks  # noqa: PLC0415 - the onnx extra

    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    fns = {key: ort_runner(ort_session(path, threads), x) for key, path in files.items()}
    return time_blocks(fns, blocks=blocks, runs=max(1, runs // blocks), warmup=warmup).medians()


def time_together(run: Path, cfg: ShowdownConfig) -> list[str]:
    """Re-time the ONNX files of every finished model in the folder in one interleaved loop, so that the table
    compares latencies taken side by side on this machine, not each after its own training; the models timed."""
    rows = [r for r in load_rows(run) if r["status"] == "ok" and Path(r.get("onnx_fp32", "")).is_file()]
    files = {}
    for r in rows:
        files[(r["model"], "fp32")] = Path(r["onnx_fp32"])
        if r.get("onnx_int8") and Path(r["onnx_int8"]).is_file():
            files[(r["model"], "int8")] = Path(r["onnx_int8"])
    if not files:
        return []
    from yolonas.deploy.timing import cpu_name  # noqa: PLC0415

    threads = _threads(cfg)
    latency = onnx_latency({f"{m}:{k}": f for (m, k), f in files.items()}, cfg.imgsz, threads,
                           max(cfg.latency_runs, 5 * len(files)), blocks=max(3, len(files)))
    timed = [r["model"] for r in rows]
    for r in rows:
        r.update({f"latency_{k}_ms": latency[f"{m}:{k}"] for (m, k) in files if m == r["model"]})
        r.update({"threads": threads, "latency_timed_with": timed, "latency_machine": cpu_name()})
        _save_row(r, run / f"{r['model']}.json")
    return timed


# ------------------------------------------------------------------------------------------------ our models


def _ours(model: str, cfg: ShowdownConfig, epochs: int, out: Path, dataset, threads: int) -> dict:
    """Train, evaluate (fp32 and INT8) and count one of our models; its row (time_together times it)."""
    import torch  # noqa: PLC0415

    from yolonas.arch.summary import summarize  # noqa: PLC0415
    from yolonas.deploy.backends import load_backend  # noqa: PLC0415
    from yolonas.deploy.export import export_onnx  # noqa: PLC0415
    from yolonas.eval.validate import validate  # noqa: PLC0415
    from yolonas.infer import Predictor  # noqa: PLC0415
    from yolonas.infer.postprocess import VAL_NMS  # noqa: PLC0415
    from yolonas.quant.pipeline import quantize  # noqa: PLC0415
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415
    from yolonas.weights import load  # noqa: PLC0415

    t0 = time.perf_counter()
    done = out / "train_done.json"
    torch.set_num_threads(threads)  # the Ultralytics child gets the same number for its CPU training
    if done.is_file():  # an earlier call trained it; evaluation was cut off
        record = json.loads(done.read_text())
    else:
        overrides = {"data.path": cfg.data, "data.train_split": cfg.train_split, "data.val_split": cfg.split,
                     "data.image_size": cfg.imgsz, "data.batch_size": cfg.batch, "data.workers": cfg.workers,
                     "schedule.epochs": epochs, "model.name": model, "run.project": str(out), "run.name": "train",
                     "run.exist_ok": True, "run.device": cfg.device, "run.seed": cfg.seed, "run.plots": False,
                     # the last weights are scored, as for YOLOv8: no picking of a best epoch on the eval split
                     "run.val_every": 0}
        if (out / "train" / "weights" / "last.pt").is_file():
            overrides["run.resume"] = True  # a call that was cut off mid-training
        result = train(apply_overrides(load_recipe(cfg.recipe), overrides))
        record = {"last": str(result.last), "train_s": time.perf_counter() - t0,
                  "train_threads": torch.get_num_threads()}
        done.write_text(json.dumps(record) + "\n")
    last, train_s = Path(record["last"]), record["train_s"]
    t1 = time.perf_counter()
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if cfg.device == "auto" else cfg.device)
    net = load(str(last)).eval()
    stats = summarize(net, cfg.imgsz)
    net.fuse()
    fp32 = validate(net, dataset, batch_size=cfg.batch, device=device, save_predictions=out / "pred_fp32.json")
    onnx_fp32 = export_onnx(net.cpu(), out / "model_fp32.onnx", batch=1)
    row = {"AP": fp32.AP, "AP50": fp32.AP50, "APs": fp32.APs, "APm": fp32.APm, "APl": fp32.APl,
           "params": stats["params_fused"], "gflops": stats["gflops_fused"], "onnx_fp32": str(onnx_fp32)}
    if cfg.int8:
        q = quantize(str(onnx_fp32), cfg.data, out / "quant", output=out / "model_int8.onnx", split=cfg.train_split,
                     mode="ptq", calib_images=cfg.calib_images, val_images=0, seed=cfg.seed, threads=threads)
        onnx_int8 = Path(q["output"])
        predictor = Predictor(load_backend(onnx_int8, threads=threads), nms=VAL_NMS, batch_size=1)
        int8 = validate(predictor, dataset, batch_size=1, save_predictions=out / "pred_int8.json")
        row.update({"AP_int8": int8.AP, "AP50_int8": int8.AP50, "onnx_int8": str(onnx_int8),
                    "int8_recipe": "yolonas.quant PTQ: QDQ, int8 per-channel symmetric weights, uint8 per-tensor "
                                   f"activations, percentile 99.99 on {cfg.calib_images} train images (seed "
                                   f"{cfg.seed})"})
    row.update({"epochs": epochs, "train_s": train_s, "after_s": time.perf_counter() - t1, "device": device,
                "recipe": cfg.recipe, "train_threads": record.get("train_threads")})
    return row


# ------------------------------------------------------------------------------------------------ the peer


def ultralytics_python(explicit: str | None = None) -> Path:
    """The interpreter of the Ultralytics venv: the flag, $YOLONAS_ULTRALYTICS_PYTHON, or .venv-ultralytics."""
    return Path(explicit or os.environ.get("YOLONAS_ULTRALYTICS_PYTHON") or ".venv-ultralytics/bin/python")


def peer_script() -> Path:
    """benchmarks/peers/ultralytics_showdown.py of the source tree this package runs from."""
    return Path(os.environ.get("YOLONAS_ULTRALYTICS_SCRIPT")
                or Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "ultralytics_showdown.py")


def peer_missing(python: Path) -> str | None:
    """Why the Ultralytics peer cannot run (with how to install it), or None when it can."""
    if not python.is_file():
        return f"Ultralytics is not installed ({python} not found): run `{INSTALL_HINT}` or pass --ultralytics-python"
    if not peer_script().is_file():
        return f"{peer_script()} not found: run the showdown from a source checkout of yolonas"
    probe = subprocess.run([str(python), "-c", "import ultralytics"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{python} cannot import ultralytics: run `{INSTALL_HINT}`"
    return None


def peer_data(data: str, splits: tuple[str, str], folder: Path) -> Path:
    """A data.yaml for Ultralytics with absolute paths, its splits made of links to our split's images and labels.

    Links, not copies: Ultralytics writes its labels.cache beside the labels, which must not touch the data set.
    """
    from yolonas.data import open_dataset  # noqa: PLC0415
    from yolonas.data.yolo import label_path, read_data_yaml  # noqa: PLC0415

    if Path(data).suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"{data}: the YOLOv8 side of the showdown needs a YOLO data.yaml (not a COCO JSON)")
    names = read_data_yaml(data)["names"]
    entries = {}
    for key, split in zip(("train", "val"), splits, strict=True):
        if key in entries:
            continue
        for sub in ("images", "labels"):
            target = folder / key / sub
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
        for image in open_dataset(data, split).image_files:
            # The label path comes from the image path as the data set gives it: a linked image's target may
            # lie in a folder with no labels beside it (data sets assembled from links).
            image, labels = Path(image).absolute(), label_path(Path(image).absolute())
            (folder / key / "images" / image.name).symlink_to(image.resolve())
            if labels.is_file():
                (folder / key / "labels" / labels.name).symlink_to(labels.resolve())
        entries[key] = f"{key}/images"
    yaml_path = folder / "data.yaml"
    yaml_path.write_text(json.dumps({"path": str(folder.resolve()), **entries, "nc": len(names), "names": names}))
    return yaml_path  # JSON is YAML


def peer_predictions_to_coco(predictions: list[dict], file_ids: dict[str, int], category_ids: list[int]) -> list[dict]:
    """Ultralytics' COCO JSON (category = class + 1, image id = file stem) in our data set's ids, by file name."""
    out = []
    for det in predictions:
        name = Path(det["file_name"]).name
        if name not in file_ids:
            raise InputError(f"YOLOv8 predictions name an image {name!r} that is not in the evaluation split")
        out.append({"image_id": file_ids[name], "category_id": category_ids[int(det["category_id"]) - 1],
                    "bbox": [float(v) for v in det["bbox"]], "score": float(det["score"]), "file_name": name})
    return out


def _peer(model: str, cfg: ShowdownConfig, epochs: int, out: Path, dataset, threads: int, python: Path) -> dict:
    """Run the Ultralytics child for one YOLOv8 model, then score its predictions here (time_together times it)."""
    from yolonas.eval.coco import coco_metrics  # noqa: PLC0415
    from yolonas.quant.calibration import list_images, select_images  # noqa: PLC0415

    data_yaml = peer_data(cfg.data, (cfg.train_split, cfg.split), out.parent / "ultralytics_data")
    calib = select_images(list_images(cfg.data, cfg.train_split), cfg.calib_images, cfg.seed)
    (out / "calib_images.txt").write_text("".join(f"{Path(f).resolve()}\n" for f in calib))
    cmd = [str(python), str(peer_script()), "--model", model, "--data", str(data_yaml), "--epochs", str(epochs),
           "--imgsz", str(cfg.imgsz), "--batch", str(cfg.batch), "--seed", str(cfg.seed), "--device", cfg.device,
           "--workers", str(cfg.workers), "--out", str(out), "--threads", str(threads)]
    if cfg.int8:
        cmd += ["--int8-calib", str(out / "calib_images.txt")]
    print(f"showdown: {' '.join(cmd)}", file=sys.stderr)
    with open(out / "child.log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [ln[len(RESULT_MARKER):] for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        tail = (out / "child.log").read_text().strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"{model}: the Ultralytics child failed (exit {proc.returncode}): {tail[0][:300]} "
                         f"(full log: {out / 'child.log'})")
    child = json.loads(lines[-1])
    t1 = time.perf_counter()
    file_ids = {Path(f).name: int(i) for f, i in zip(dataset.files, dataset.image_ids, strict=True)}
    category_ids = [int(c) for c in dataset.category_ids]
    gt = dataset.to_coco()
    row = {"params": child["params"], "gflops": child["gflops"], "onnx_fp32": child["onnx_fp32"],
           "ultralytics": child["versions"], "network_attempts": child["network_attempts"],
           "ultralytics_own_AP": child.get("own_map"), "ultralytics_own_AP50": child.get("own_map50")}
    for key, suffix in (("pred_fp32", ""), ("pred_int8", "_int8")):
        if child.get(key):
            preds = peer_predictions_to_coco(json.loads(Path(child[key]).read_text()), file_ids, category_ids)
            (out / f"{key}.json").write_text(json.dumps(preds))
            m = coco_metrics(gt, preds)
            row.update({f"AP{suffix}": m.AP, f"AP50{suffix}": m.AP50})
            if not suffix:
                row.update({"APs": m.APs, "APm": m.APm, "APl": m.APl})
    if child.get("onnx_int8"):
        row["onnx_int8"] = child["onnx_int8"]
        row["int8_recipe"] = child["int8_recipe"]
    row.update({"epochs": epochs, "train_s": child["train_s"], "after_s": child["after_s"] + time.perf_counter() - t1,
                "device": child["device"], "train_threads": child.get("train_threads")})
    return row


# ------------------------------------------------------------------------------------------------ orchestration


def _threads(cfg: ShowdownConfig) -> int:
    import torch  # noqa: PLC0415

    return cfg.threads or torch.get_num_threads()


def run_model(model: str, cfg: ShowdownConfig, epochs: int, folder: Path) -> dict:
    """One model's full step (train, evaluate, export, INT8, time) into `folder`; its row, never raising for a
    missing or failing peer (the row then says why)."""
    from yolonas.data import open_dataset  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    base = {"model": model, "family": family(model), "epochs": epochs, "settings": cfg.settings(),
            "backend": cfg.backend, "threads": _threads(cfg), "command": cfg.command}
    dataset = open_dataset(cfg.data, cfg.split)
    if family(model) == "YOLOv8":
        python = ultralytics_python(cfg.ultralytics_python)
        why = peer_missing(python)
        if why is not None:
            return {**base, "status": "missing", "message": why}
        try:
            return {**base, "status": "ok", **_peer(model, cfg, epochs, folder, dataset, _threads(cfg), python)}
        except InputError as e:
            return {**base, "status": "failed", "message": str(e)}
    return {**base, "status": "ok", **_ours(model, cfg, epochs, folder, dataset, _threads(cfg))}


def _check(cfg: ShowdownConfig) -> None:
    for model in cfg.models:
        family(model)
    if cfg.backend != "onnxruntime":
        raise InputError(f"--backend {cfg.backend}: the showdown times both families' ONNX files with onnxruntime "
                         "(the one backend that runs fp32 and INT8 of both)")
    if cfg.imgsz % 32 or cfg.imgsz < 32:
        raise InputError(f"--imgsz {cfg.imgsz}: use a multiple of 32")
    if cfg.epochs < 1:
        raise InputError(f"--epochs {cfg.epochs}: at least 1")
    if not Path(cfg.data).exists():
        raise InputError(f"--data {cfg.data}: not found")


def _save_row(row: dict, path: Path) -> None:
    path.write_text(json.dumps(row, indent=2) + "\n")
    print(f"showdown: {row['model']} {row['status']} -> {path}", file=sys.stderr)


def run_showdown(cfg: ShowdownConfig) -> dict:
    """Run every model of `cfg` not done yet in runs/showdown/<name>/, then write the merged report; its dict."""
    _check(cfg)
    run = Path(cfg.project) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    todo = [m for m in cfg.models if cfg.force or not (run / f"{m}.json").is_file()]
    for m in set(cfg.models) - set(todo):
        print(f"showdown: {m} done already ({run / f'{m}.json'}); --force redoes it", file=sys.stderr)
    epochs, ran = cfg.epochs, bool(todo)
    if cfg.budget_minutes is not None and todo:
        epochs = _probe_and_scale(cfg, todo, run)  # empties todo when the 1-epoch probes are the results
    for model in todo:
        row = run_model(model, cfg, epochs, run / model)
        _save_row(row, run / f"{model}.json")
    if ran:  # latency is taken here only, every model side by side, not each after its own training
        time_together(run, cfg)
    return write_report(run, cfg.command)


def _probe_and_scale(cfg: ShowdownConfig, todo: list[str], run: Path) -> int:
    """The budget rule: run each model once at 1 epoch, then pick the epochs that fit what is left.

    A probe at 1 epoch is a full result; when the budget allows only 1 epoch, the probes are the results.
    """
    start = time.perf_counter()
    probes = {m: run_model(m, cfg, 1, run / "probe" / m) for m in todo}
    ok = [p for p in probes.values() if p["status"] == "ok"]
    epochs = epochs_for_budget(cfg.budget_minutes * 60, time.perf_counter() - start, [p["train_s"] for p in ok],
                               [p["after_s"] for p in ok], cfg.epochs)
    decision = {"budget_minutes": cfg.budget_minutes, "probe_s": time.perf_counter() - start, "epochs": epochs,
                "train_s": {p["model"]: p["train_s"] for p in ok}, "after_s": {p["model"]: p["after_s"] for p in ok},
                "rule": "E = floor((budget - probe time - sum(after_s)) / sum(train_s)), clamped to [1, --epochs]"}
    (run / "budget.json").write_text(json.dumps(decision, indent=2) + "\n")
    print(f"showdown: budget {cfg.budget_minutes:g} min -> {epochs} epochs per model", file=sys.stderr)
    if epochs == 1:
        for model, row in probes.items():
            _save_row({**row, "budget": decision}, run / f"{model}.json")
        todo.clear()
    return epochs


# ------------------------------------------------------------------------------------------------ report


def load_rows(run: Path) -> list[dict]:
    """Every <model>.json of a showdown folder, ours first, then by model size."""
    order = {m: i for i, m in enumerate(TEST_MODELS[:1] + OURS + TEST_MODELS[1:] + PEERS)}
    rows = [json.loads((run / f"{m}.json").read_text()) for m in order if (run / f"{m}.json").is_file()]
    return sorted(rows, key=lambda r: order[r["model"]])


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, AP) points no other point beats on both (lower latency and higher AP), by latency."""
    front, best = [], -math.inf
    for lat, ap in sorted(points, key=lambda p: (p[0], -p[1])):
        if ap > best:
            front.append((lat, ap))
            best = ap
    return front


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def markdown_table(rows: list[dict]) -> str:
    """The showdown table: accuracy (in AP points), size, compute, ONNX Runtime latency, INT8 drop."""
    head = ("| model | epochs | mAP | mAP50 | AP small | AP medium | AP large | params (M) | GFLOPs | fp32 ms | "
            "INT8 ms | INT8 mAP | INT8 - fp32 (pts) | note |\n" + "|---" * 14 + "|\n")
    lines = []
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | - | - | - | - | - | - | - | - | - | - | - | - | {r['message']} |")
            continue
        drop = None if r.get("AP_int8") is None else (r["AP"] - r["AP_int8"])
        note = "" if r["model"] not in TEST_MODELS else "test-size model"
        lines.append(
            f"| {r['model']} | {r['epochs']} | {_fmt(r['AP'], '.1f', 100)} | {_fmt(r['AP50'], '.1f', 100)} | "
            f"{_fmt(r.get('APs'), '.1f', 100)} | {_fmt(r.get('APm'), '.1f', 100)} | {_fmt(r.get('APl'), '.1f', 100)} | "
            f"{_fmt(r['params'], '.2f', 1e-6)} | {_fmt(r['gflops'], '.2f')} | "
            f"{_fmt(r.get('latency_fp32_ms'), '.1f')} | "
            f"{_fmt(r.get('latency_int8_ms'), '.1f')} | {_fmt(r.get('AP_int8'), '.1f', 100)} | "
            f"{_fmt(drop, '+.2f', -100)} | {note} |")
    return head + "\n".join(lines) + "\n"


def plot_frontier(rows: list[dict], path: Path) -> Path:
    """AP vs ONNX Runtime latency: fp32 filled, INT8 hollow markers, a Pareto line per family."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colors = {"YOLO-NAS": "tab:blue", "YOLOv8": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 5))
    for fam, color in colors.items():
        points = []
        for r in rows:
            if r["status"] != "ok" or r["family"] != fam:
                continue
            for key, ap_key, face in (("latency_fp32_ms", "AP", color), ("latency_int8_ms", "AP_int8", "none")):
                if r.get(key) is None or r.get(ap_key) is None:
                    continue
                x, y = r[key], 100 * r[ap_key]
                points.append((x, y))
                ax.scatter([x], [y], s=60, facecolors=face, edgecolors=color, linewidths=1.5, zorder=3)
                ax.annotate(r["model"] + (" INT8" if face == "none" else ""), (x, y), textcoords="offset points",
                            xytext=(5, 4), fontsize=8)
        if points:
            front = pareto(points)
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1.2, label=f"{fam} Pareto")
    ax.scatter([], [], facecolors="grey", edgecolors="grey", label="fp32")
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="INT8")
    backend = next((f"{r['backend']}, {r['threads']} threads" for r in rows if r["status"] == "ok"), "")
    ax.set_xlabel(f"latency, ms (ONNX forward, batch 1; {backend})")
    ax.set_ylabel("mAP@[.5:.95], points (our COCO evaluator)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(run: Path, command: str = "") -> dict:
    """Merge the folder's <model>.json into showdown.json, showdown.md and frontier.png; the merged dict."""
    rows = load_rows(run)
    if not rows:
        raise InputError(f"{run}: no model results to report")
    settings = [r["settings"] for r in rows]
    mixed = [r["model"] for r, s in zip(rows, settings, strict=True) if s != settings[0]]
    epochs = sorted({r["epochs"] for r in rows if r["status"] == "ok"})
    notes = [
        "Every model: same data, input size, batch, seed and epochs (trained from scratch); scored on its last "
        "weights (no best-epoch pick on the evaluation split) by yolonas' COCO evaluator (faster-coco-eval) on "
        "the same ground truth, from COCO-format detections at score > 0.01, at most 300 per image, IoU 0.7 "
        "per-class multi-label NMS (Ultralytics' val settings for YOLOv8, ours for YOLO-NAS).",
        "Latency: median ms of a bare ONNX Runtime session.run (batch 1, float input, no NMS) of each family's own "
        "ONNX export, all files timed together by the same loop in one process, taking turns block by block, "
        "after the last model of the call finished.",
        "INT8: post-training static quantization with onnxruntime, the same recipe for both: QDQ, int8 per-channel "
        "symmetric weights, uint8 per-tensor activations, percentile 99.99 calibration on the same train images; "
        "Conv/Add/Concat/MaxPool/Relu nodes of the network quantized, the box decode left float.",
    ]
    if mixed:
        notes.append(f"WARNING: {', '.join(mixed)} ran with other settings than {rows[0]['model']}: compare with care.")
    attempts = [a for r in rows for a in r.get("network_attempts") or []]
    if attempts:
        notes.append(f"The Ultralytics child tried to reach the network {len(attempts)} time(s), refused by its audit "
                     f"hook (it ran offline): {'; '.join(sorted(set(attempts)))}.")
    timed = {tuple(r.get("latency_timed_with") or ()) for r in rows if r["status"] == "ok"}
    if len(timed) > 1:
        notes.append("WARNING: the latencies were not all timed together (" + "; ".join(
            f"{r['model']}: with {', '.join(r.get('latency_timed_with') or ['itself'])}" for r in rows
            if r["status"] == "ok") + "): compare them with care.")
    if len(epochs) > 1:
        notes.append(f"WARNING: the models trained for different epochs ({epochs}).")
    cpu = [r for r in rows if r["status"] == "ok" and r.get("device") == "cpu"]
    if cpu:
        notes.append("CPU training: " + ", ".join(f"{r['model']} {r['train_s'] / 60:.1f} min on "
                                                  f"{r.get('train_threads') or '?'} thread(s)" for r in cpu) + ".")
        if len({r.get("train_threads") for r in cpu}) > 1:
            notes.append("WARNING: the models trained on different numbers of CPU threads: compare training times "
                         "with care.")
    s = settings[0]
    header = (f"# Showdown: YOLO-NAS vs YOLOv8\n\ndata `{s['data']}` (train split `{s['train_split']}`, evaluated "
              f"on `{s['split']}`), {s['imgsz']} px, batch {s['batch']}, seed {s['seed']}, "
              f"epochs {', '.join(map(str, epochs)) or '-'}, device {rows[0].get('device', '-')}\n\n")
    md = header + markdown_table(rows) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if command:
        md += f"\nCommand: `{command}`\n"
    (run / "showdown.md").write_text(md)
    plot_frontier(rows, run / "frontier.png")
    result = {"run_dir": str(run), "settings": s, "notes": notes, "command": command, "rows": rows}
    (run / "showdown.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def config_dict(cfg: ShowdownConfig) -> dict:
    """The config as a plain dict (for the run folder)."""
    return asdict(cfg)
