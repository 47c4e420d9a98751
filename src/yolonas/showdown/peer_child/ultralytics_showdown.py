"""One Ultralytics model (YOLOv8, YOLO11, YOLO26) for `yolonas showdown`: train from its yaml (no download),
predict the eval split, export ONNX, export its own OpenVINO INT8 and predict again.

Run inside the Ultralytics venv (benchmarks/peers/ultralytics_setup.sh) by yolonas.showdown, which ships this file
and its helper ultralytics_offline.py as package data, never imports them, scores the predictions with its own COCO
evaluator and times the exported files itself. Steps, into --out:
  1. build `YOLO("<model>.yaml")` (a name it cannot build fails here, in one line, exit 3); train it from scratch
     on --data with the given epochs/imgsz/batch/seed, Ultralytics' default hyper-parameters, no validation during
     training (the last weights are scored, like ours); fp32 on a CPU (its AMP is CUDA-only), fp16 AMP on a GPU.
     A cut-off run resumes from its last.pt with that run's epochs. The run's clock, train_time.json (the format of
     yolonas.showdown.clock), gets the time at every saved epoch and at the end, one part per call. With --probe
     (the time probe of --minutes) the script stops here: no evaluation, export or INT8. --stop-after-epochs N
     stops once epoch N is saved (exit 75), as a cut-off session would;
  2. `val(conf=0.01, iou=0.7, max_det=300, save_json=True)` on the data.yaml's `val`: COCO-format detections
     (Ultralytics' own evaluation path, boxes in original pixels; the JSON holds the very detections its metrics
     count) -> pred_fp32.json. With --nms-free (YOLO26) val runs with nms=False: the end-to-end (one-to-one) head's
     top max_det by score, no NMS, as Ultralytics ships it; otherwise multi-label NMS at IoU 0.7;
  3. ONNX export (Ultralytics' exporter, batch 1, static; no NMS, or the end-to-end head with --nms-free)
     -> model_fp32.onnx;
  4. with --int8-data: Ultralytics' own OpenVINO INT8 export (`export(format="openvino", int8)`, NNCF) calibrated
     on that data.yaml's val images (the parent lists the same train images it calibrates ours on)
     -> model_int8_openvino_model/, then step 2 again on it -> pred_int8.json. A failing INT8 step is reported
     as the result's int8_error; the fp32 results stand.
Prints one line `SHOWDOWN_RESULT {json}` on stdout; everything else goes to stderr.

    .venv-ultralytics/bin/python src/yolonas/showdown/peer_child/ultralytics_showdown.py --model yolo11s --data D \
        --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from ultralytics_offline import NETWORK_ATTEMPTS, go_offline, settings

# Messages for the parent's log go to stderr; stdout carries the one result line (the child's output).
log = logging.getLogger("yolonas.showdown.child")

STOPPED_EXIT = 75  # yolonas.showdown.clock.STOPPED_EXIT: stopped as asked, resumable


def _settings() -> None:
    settings()
    # Ultralytics' AMP check downloads a model to compare fp32 and AMP outputs; offline it cannot, so AMP is
    # taken as working (our trainer uses AMP on CUDA too).
    import ultralytics.engine.trainer as trainer  # noqa: PLC0415

    trainer.check_amp = lambda model: True
    # Checkpoints embed results.csv read with polars, which the venv leaves out (benchmarks/peers/README.md);
    # the standard csv module reads the same table.
    trainer.BaseTrainer.read_results_csv = _read_results_csv
    # The data.yaml check looks for a plotting font and fetches it from the web when absent: not needed here.
    import ultralytics.data.utils as data_utils  # noqa: PLC0415

    data_utils.check_font = lambda font="Arial.ttf": None


def _read_results_csv(self) -> dict:
    import csv  # noqa: PLC0415

    try:
        with open(self.csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


class StopAsked(Exception):  # noqa: N818 - a stop asked for, not an error
    """--stop-after-epochs reached: the run's last.pt and clock are saved; exit STOPPED_EXIT."""


class Clock:
    """The run's training clock, <out>/train_time.json: the format of yolonas.showdown.clock (one part per session,
    seconds from its start to its last saved epoch, the last part to the end of training), written here because
    this script cannot import yolonas."""

    def __init__(self, out: Path, cpu: str, threads: int, clock: str):
        self.path, self.cpu, self.threads, self.clock = out / "train_time.json", cpu, threads, clock
        self.now = time.process_time if clock == "cpu" else time.perf_counter
        self.t0 = self.now()
        self.parts = json.loads(self.path.read_text())["parts"] if self.path.is_file() else []
        self.part = None

    def _open(self, from_epoch: int, precision: str | None) -> dict:
        if self.part is None:
            self.part = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                         "cpu": self.cpu, "threads": self.threads, "clock": self.clock, "precision": precision,
                         "from_epoch": from_epoch,
                         "epochs_done": from_epoch, "epoch_ends": [], "seconds": 0.0, "finished": False}
            self.parts.append(self.part)
        return self.part

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"parts": self.parts}, indent=1) + "\n")
        tmp.replace(self.path)

    def epoch_end(self, trainer, stop_after: int | None) -> None:
        """Ultralytics' on_model_save callback: the saved epoch noted, then a stop asked for raised."""
        done = trainer.epoch + 1
        part = self._open(trainer.start_epoch, _precision(trainer))
        now = round(self.now() - self.t0, 3)
        part.update(epochs_done=done, seconds=now, epoch_ends=[*part["epoch_ends"], now])
        self._write()
        if stop_after is not None and stop_after <= done < trainer.epochs:
            raise StopAsked(f"stopped after epoch {done} of {trainer.epochs}")

    def finish(self, epochs_done: int, precision: str | None) -> None:
        part = self._open(epochs_done, precision)
        part.update(epochs_done=epochs_done, seconds=round(self.now() - self.t0, 3), finished=True)
        self._write()


def _precision(trainer) -> str:
    """How Ultralytics trains here: its AMP (fp16 autocast, bf16 when asked) runs on CUDA only."""
    if not trainer.amp:
        return "fp32"
    return "bf16 autocast" if trainer.args.amp == "bf16" else "fp16 autocast"


def _last_state(last: Path) -> str:
    """'fresh' (no last.pt), 'resume' (cut off between epochs) or 'done' (its epochs all trained: Ultralytics
    refuses to resume it, and strips last.pt's epoch once it finishes)."""
    if not last.is_file():
        return "fresh"
    import torch  # noqa: PLC0415

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    epoch, epochs = ckpt.get("epoch", -1), (ckpt.get("train_args") or {}).get("epochs", 0)
    return "done" if epoch < 0 or epoch + 1 >= epochs else "resume"


def train(args, out: Path) -> dict:
    """Train (or resume from last.pt, with its own epochs), timed by the run's clock; {last, epochs, close_mosaic,
    precision}. A finished run is not trained again."""
    from ultralytics import YOLO  # noqa: PLC0415
    from ultralytics.cfg import DEFAULT_CFG  # noqa: PLC0415

    done = out / "train_done.json"
    if done.is_file():
        return json.loads(done.read_text())
    clock = Clock(out, args.cpu, args.threads, args.clock)
    last = out / "train" / "weights" / "last.pt"
    state = _last_state(last)
    model = YOLO(str(last)) if state != "fresh" else YOLO(f"{args.model}.yaml")
    model.add_callback("on_model_save", lambda trainer: clock.epoch_end(trainer, args.stop_after_epochs))
    if state == "resume":  # a call cut off mid-training
        model.train(resume=True)
    elif state == "fresh":
        close = {} if args.close_mosaic is None else {"close_mosaic": args.close_mosaic}
        model.train(data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
                    device=args.device, workers=args.workers, project=str(out), name="train", exist_ok=True,
                    pretrained=False, val=False, plots=False, deterministic=False, amp=args.device != "cpu",
                    verbose=False, **close)
    trainer = model.trainer
    epochs = trainer.epochs if trainer is not None else args.epochs
    precision = _precision(trainer) if trainer is not None else None
    clock.finish(epochs, precision)
    record = {"last": str(last), "epochs": epochs, "close_mosaic": DEFAULT_CFG.close_mosaic, "precision": precision}
    done.write_text(json.dumps(record) + "\n")
    return record


def _head(args) -> dict:
    """val/export arguments that pick the head: nms=False selects YOLO26's end-to-end head (8.4's default, None,
    runs its one-to-many head with NMS)."""
    return {"nms": False} if args.nms_free else {}


def predict_json(weights: Path, args, out: Path, name: str, device: str, batch: int) -> tuple[Path, dict]:
    """Ultralytics' val with save_json at the showdown's thresholds: (COCO detections file, its own metrics)."""
    from ultralytics import YOLO  # noqa: PLC0415

    metrics = YOLO(str(weights), task="detect").val(
        data=args.data, split="val", imgsz=args.imgsz, batch=batch, conf=0.01, iou=0.7, max_det=300,
        save_json=True, plots=False, project=str(out), name=name, exist_ok=True, device=device, verbose=False,
        **_head(args))
    target = out / f"ultralytics_{name}.json"
    saved = out / name / "predictions.json"
    if saved.is_file():
        shutil.copyfile(saved, target)
    else:  # Ultralytics writes no file when nothing scored above conf
        target.write_text("[]")
    return target, {"map": float(metrics.box.map), "map50": float(metrics.box.map50)}


def export(weights: Path, args, out: Path) -> Path:
    """Ultralytics' own fp32 ONNX export of the trained weights: batch 1, static, no NMS (or the end-to-end head)."""
    import importlib.util  # noqa: PLC0415

    from ultralytics import YOLO  # noqa: PLC0415

    path = YOLO(str(weights)).export(format="onnx", imgsz=args.imgsz, batch=1, dynamic=False, device="cpu",
                                     simplify=importlib.util.find_spec("onnxslim") is not None, **_head(args))
    target = out / "model_fp32.onnx"
    Path(path).replace(target)
    return target


def export_int8(weights: Path, args, out: Path) -> tuple[Path, str]:
    """Ultralytics' own OpenVINO INT8 export (NNCF, its recipe) of the trained weights, calibrated on the images of
    --int8-data (the showdown's calibration images); (the IR's .xml, the recipe in words)."""
    import nncf  # noqa: PLC0415
    import openvino  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415

    # quantize=8 is what `int8=True` maps to in 8.4 (a deprecated alias); batch 1: calibration one image at a time
    folder = Path(YOLO(str(weights)).export(format="openvino", quantize=8, data=args.int8_data, split="val",
                                            imgsz=args.imgsz, batch=1, dynamic=False, device="cpu",
                                            **_head(args)))
    target = out / "model_int8_openvino_model"  # the name must end as Ultralytics' loader expects
    if target.exists():
        shutil.rmtree(target)
    folder.replace(target)
    recipe = (f"Ultralytics export(format='openvino', int8): NNCF {nncf.__version__} PTQ, mixed preset, its Detect "
              f"head's decode and sigmoid float, calibrated on the {args.calib_images} listed train images; "
              f"OpenVINO {openvino.__version__}")
    return next(target.glob("*.xml")), recipe


def build_check(model: str) -> None:
    """Build `<model>.yaml` once before any work, so that a name Ultralytics cannot build fails in one clear line."""
    from ultralytics import YOLO  # noqa: PLC0415

    try:
        YOLO(f"{model}.yaml")
    except Exception as e:  # noqa: BLE001 - any failure to build is reported the same way, as the last log line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.error("Ultralytics cannot build %s.yaml: %s", model, first)
        raise SystemExit(3) from None


def parse_args() -> argparse.Namespace:
    """The parent's flags (yolonas.showdown.peer.child_command)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="yolov8s, yolo11s, yolo26s, ...: trains from <model>.yaml")
    ap.add_argument("--data", required=True, help="a data.yaml with absolute paths (train, val)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument("--int8-data", help="a data.yaml whose val split holds the INT8 calibration images; INT8 is "
                    "skipped without it")
    ap.add_argument("--calib-images", type=int, default=0, help="how many calibration images (for the report)")
    ap.add_argument("--nms-free", action="store_true", help="score and export the end-to-end head (YOLO26)")
    ap.add_argument("--cpu", default="unknown CPU", help="this machine's CPU in words, for the training clock")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what the training clock counts: "
                    "wall-clock, or this process's CPU seconds (tests on a shared machine)")
    ap.add_argument("--probe", action="store_true", help="train only (the time probe): no val, export or INT8")
    ap.add_argument("--close-mosaic", type=int, help="last epochs without mosaic (default: Ultralytics')")
    ap.add_argument("--stop-after-epochs", type=int, help=f"stop (exit {STOPPED_EXIT}) once this epoch is saved, as "
                    "a cut-off session would; the next call resumes from last.pt")
    return ap.parse_args()


def int8_result(last: Path, args, out: Path) -> dict:
    """Ultralytics' own OpenVINO INT8 of the trained weights, predicted on the eval split; its failure is the
    result's int8_error (the fp32 results stand), so that what its INT8 gives is reported as measured."""
    try:
        int8_ir, recipe = export_int8(last, args, out)
        pred_int8, own8 = predict_json(int8_ir.parent, args, out, "val_int8", "cpu", 1)
    except Exception as e:  # noqa: BLE001 - any failure of the INT8 step is reported the same way, in one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.error("INT8 failed: %s: %s", type(e).__name__, first)
        return {"int8_error": f"{type(e).__name__}: {first}"[:300]}
    return {"int8_ir": str(int8_ir), "pred_int8": str(pred_int8), "int8_recipe": recipe, "own_map_int8": own8["map"]}


def after_training(args, out: Path, record: dict) -> dict:
    """Count, predict (fp32), export ONNX, and INT8 when asked: the result's fields."""
    from ultralytics import YOLO  # noqa: PLC0415
    from ultralytics.utils.torch_utils import get_flops, get_num_params  # noqa: PLC0415

    last = Path(record["last"])
    model = YOLO(str(last))
    if args.nms_free:  # fusion drops the head not in use: count the one that is scored
        model.model.end2end = True
    model.fuse()
    params, gflops = get_num_params(model.model), get_flops(model.model, args.imgsz)
    pred_fp32, own = predict_json(last, args, out, "val_fp32", args.device, args.batch)
    onnx_fp32 = export(last, args, out)
    result = {"params": int(params), "gflops": float(gflops), "pred_fp32": str(pred_fp32),
              "onnx_fp32": str(onnx_fp32), "own_map": own["map"], "own_map50": own["map50"]}
    return {**result, **(int8_result(last, args, out) if args.int8_data else {})}


def set_up(args) -> Path:
    """Offline, the threads for both families, the device in Ultralytics' words; the output folder."""
    go_offline()
    # Ultralytics sets OMP_NUM_THREADS=1 on import and, on CPU, torch threads to cpu_count - 1 (1 on 2 cores),
    # which silently halved its CPU training against ours; --threads holds for both families.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch  # noqa: PLC0415
    import ultralytics.utils.torch_utils as torch_utils  # noqa: PLC0415

    _settings()
    torch_utils.NUM_THREADS = args.threads
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "0" if torch.cuda.is_available() else "cpu"
    elif args.device.startswith("cuda"):
        args.device = args.device.partition(":")[2] or "0"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    args = parse_args()
    out = set_up(args)
    import torch  # noqa: PLC0415
    import ultralytics  # noqa: PLC0415

    with contextlib.redirect_stdout(sys.stderr):  # Ultralytics prints progress; stdout carries the result only
        build_check(args.model)
        try:
            record = train(args, out)
        except StopAsked as stop:
            log.warning("%s", stop)
            raise SystemExit(STOPPED_EXIT) from None
        t1 = time.perf_counter()
        result = {"model": args.model, "epochs": record["epochs"], "close_mosaic": record["close_mosaic"],
                  "precision": record["precision"], "nms_free": args.nms_free, "probe": args.probe,
                  "device": "cpu" if args.device == "cpu" else f"cuda:{args.device}"}
        if not args.probe:  # a probe only trains: no evaluation, export or INT8
            result.update(after_training(args, out, record))
    result.update({"after_s": time.perf_counter() - t1, "network_attempts": NETWORK_ATTEMPTS,
                   "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__}})
    sys.stdout.write("SHOWDOWN_RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
