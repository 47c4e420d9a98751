"""One Ultralytics model (YOLOv8, YOLO11, YOLO26) for `yolonas showdown`: train from its yaml (no download),
predict the eval split, export ONNX, export its own OpenVINO INT8 and predict again.

Run inside the Ultralytics venv (benchmarks/peers/ultralytics_setup.sh) by yolonas.showdown, which ships this file
and its helper ultralytics_offline.py as package data, never imports them, scores the predictions with its own COCO
evaluator and times the exported files itself. Steps, into --out:
  1. build `YOLO("<model>.yaml")` (a name it cannot build fails here, in one line, exit 3); train it from scratch
     on --data with the given epochs/imgsz/batch/seed, Ultralytics' default hyper-parameters, no validation during
     training (the last weights are scored, like ours); a cut-off run resumes from its last.pt;
  2. `val(conf=0.01, iou=0.7, max_det=300, save_json=True)` on the data.yaml's `val`: COCO-format detections
     (Ultralytics' own evaluation path, boxes in original pixels; the JSON holds the very detections its metrics
     count) -> pred_fp32.json. With --nms-free (YOLO26) val runs with nms=False: the end-to-end (one-to-one) head's
     top max_det by score, no NMS, as Ultralytics ships it; otherwise multi-label NMS at IoU 0.7;
  3. ONNX export (Ultralytics' exporter, batch 1, static; no NMS, or the end-to-end head with --nms-free)
     -> model_fp32.onnx;
  4. with --int8-data: Ultralytics' own OpenVINO INT8 export (`export(format="openvino", int8)`, NNCF) calibrated
     on that data.yaml's val images (the parent lists the same train images it calibrates ours on)
     -> model_int8_openvino_model/, then step 2 again on it -> pred_int8.json.
Prints one line `SHOWDOWN_RESULT {json}` on stdout; everything else goes to stderr.

    .venv-ultralytics/bin/python src/yolonas/showdown/peer_child/ultralytics_showdown.py --model yolo11s --data D \
        --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ultralytics_offline import NETWORK_ATTEMPTS, go_offline, settings


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


def train(args, out: Path) -> dict:
    """Train (or resume); returns {last, train_s, train_threads}. A finished run is not trained again."""
    from ultralytics import YOLO  # noqa: PLC0415

    done = out / "train_done.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    last = out / "train" / "weights" / "last.pt"
    if last.is_file():  # a call cut off mid-training
        YOLO(str(last)).train(resume=True)
    else:
        YOLO(f"{args.model}.yaml").train(
            data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
            device=args.device, workers=args.workers, project=str(out), name="train", exist_ok=True,
            pretrained=False, val=False, plots=False, deterministic=False, amp=args.device != "cpu", verbose=False)
    import torch  # noqa: PLC0415

    record = {"last": str(last), "train_s": time.perf_counter() - t0, "train_threads": torch.get_num_threads()}
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
        print(f"Ultralytics cannot build {model}.yaml: {first}", file=sys.stderr, flush=True)
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
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    go_offline()
    # Ultralytics sets OMP_NUM_THREADS=1 on import and, on CPU, torch threads to cpu_count - 1 (1 on 2 cores),
    # which silently halved its CPU training against ours; --threads holds for both families.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch  # noqa: PLC0415
    import ultralytics  # noqa: PLC0415
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
    with contextlib.redirect_stdout(sys.stderr):  # Ultralytics prints progress; stdout carries the result only
        build_check(args.model)
        record = train(args, out)
        last, train_s = Path(record["last"]), record["train_s"]
        t1 = time.perf_counter()
        from ultralytics import YOLO  # noqa: PLC0415
        from ultralytics.utils.torch_utils import get_flops, get_num_params  # noqa: PLC0415

        model = YOLO(str(last))
        if args.nms_free:  # fusion drops the head not in use: count the one that is scored
            model.model.end2end = True
        model.fuse()
        params, gflops = get_num_params(model.model), get_flops(model.model, args.imgsz)
        pred_fp32, own = predict_json(last, args, out, "val_fp32", args.device, args.batch)
        onnx_fp32 = export(last, args, out)
        result = {"model": args.model, "epochs": args.epochs, "train_s": train_s, "params": int(params),
                  "train_threads": record.get("train_threads"),
                  "gflops": float(gflops), "pred_fp32": str(pred_fp32), "onnx_fp32": str(onnx_fp32),
                  "own_map": own["map"], "own_map50": own["map50"],
                  "device": "cpu" if args.device == "cpu" else f"cuda:{args.device}", "nms_free": args.nms_free}
        if args.int8_data:
            int8_ir, recipe = export_int8(last, args, out)
            pred_int8, own8 = predict_json(int8_ir.parent, args, out, "val_int8", "cpu", 1)
            result.update({"int8_ir": str(int8_ir), "pred_int8": str(pred_int8), "int8_recipe": recipe,
                           "own_map_int8": own8["map"]})
    result.update({"after_s": time.perf_counter() - t1, "network_attempts": NETWORK_ATTEMPTS,
                   "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__}})
    print("SHOWDOWN_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
