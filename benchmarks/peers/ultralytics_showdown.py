"""One YOLOv8 model for `yolonas showdown`: train from its yaml (no download), predict the eval split, export, INT8.

Run inside .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh) by yolonas.showdown, which scores the
predictions with its own COCO evaluator and times the ONNX files itself. Steps, into --out:
  1. train `YOLO("<model>.yaml")` from scratch on --data with the given epochs/imgsz/batch/seed, Ultralytics'
     default hyper-parameters, no validation during training (the last weights are scored, like ours);
     a cut-off run resumes from its last.pt;
  2. `val(conf=0.01, iou=0.7, max_det=300, save_json=True)` on the data.yaml's `val`: COCO-format detections
     (Ultralytics' own evaluation path: multi-label NMS, boxes in original pixels) -> pred_fp32.json;
  3. ONNX export (Ultralytics' exporter, batch 1, static, no NMS) -> model_fp32.onnx;
  4. with --int8-calib: onnxruntime static INT8 with the recipe of yolonas.quant (QDQ, int8 per-channel symmetric
     weights, uint8 per-tensor activations, percentile 99.99, Conv/Relu/Add/Concat/MaxPool nodes, box decode
     left float) calibrated on the listed images letterboxed as Ultralytics' predictor does -> model_int8.onnx,
     then step 2 again on it -> pred_int8.json.
Prints one line `SHOWDOWN_RESULT {json}` on stdout; everything else goes to stderr.

    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_showdown.py --model yolov8s --data D --out DIR
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

from _offline import NETWORK_ATTEMPTS, go_offline, settings

QUANT_OP_TYPES = ["Conv", "ConvTranspose", "Relu", "Add", "Concat", "MaxPool"]  # as yolonas.quant.calibration
PERCENTILE = 99.99


def _settings() -> None:
    settings()
    # Ultralytics' AMP check downloads a model to compare fp32 and AMP outputs; offline it cannot, so AMP is
    # taken as working (our trainer uses AMP on CUDA too).
    import ultralytics.engine.trainer as trainer  # noqa: PLC0415

    trainer.check_amp = lambda model: True
    # Checkpoints embed results.csv read with polars, which the venv leaves out (benchmarks/peers/README.md);
    # the standard csv module reads the same table.
    trainer.BaseTrainer.read_results_csv = _read_results_csv


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


def predict_json(weights: Path, args, out: Path, name: str, device: str, batch: int) -> tuple[Path, dict]:
    """Ultralytics' val with save_json at the showdown's thresholds: (COCO detections file, its own metrics)."""
    from ultralytics import YOLO  # noqa: PLC0415

    metrics = YOLO(str(weights), task="detect").val(
        data=args.data, split="val", imgsz=args.imgsz, batch=batch, conf=0.01, iou=0.7, max_det=300,
        save_json=True, plots=False, project=str(out), name=name, exist_ok=True, device=device, verbose=False)
    target = out / f"ultralytics_{name}.json"
    saved = out / name / "predictions.json"
    if saved.is_file():
        shutil.copyfile(saved, target)
    else:  # Ultralytics writes no file when nothing scored above conf
        target.write_text("[]")
    return target, {"map": float(metrics.box.map), "map50": float(metrics.box.map50)}


def export(weights: Path, args, out: Path) -> Path:
    """Ultralytics' own ONNX export of the trained weights: batch 1, static, no NMS."""
    import importlib.util  # noqa: PLC0415

    from ultralytics import YOLO  # noqa: PLC0415

    path = YOLO(str(weights)).export(format="onnx", imgsz=args.imgsz, batch=1, dynamic=False, nms=False,
                                     simplify=importlib.util.find_spec("onnxslim") is not None, half=False,
                                     device="cpu")
    target = out / "model_fp32.onnx"
    Path(path).replace(target)
    return target


def _network_nodes(model) -> tuple[list[str], list[str]]:
    """(nodes to quantize, nodes excluded): every node of the INT8 op types but the Detect head's decode glue
    (DFL conv, concats, reshapes after the head's convs), like yolonas quantizes only the network proper."""
    heads = [n.name for n in model.graph.node if "/cv2." in n.name or "/cv3." in n.name]
    head_prefix = heads[0].split("/cv")[0] + "/" if heads else None
    keep, skip = [], []
    for node in model.graph.node:
        if node.op_type not in QUANT_OP_TYPES:
            continue
        in_head_convs = "/cv2." in node.name or "/cv3." in node.name
        decode = head_prefix and node.name.startswith(head_prefix) and not in_head_convs
        (skip if decode else keep).append(node.name)
    return keep, skip


def quantize(onnx_fp32: Path, calib_list: Path, imgsz: int, out: Path) -> tuple[Path, str]:
    """Static INT8 QDQ with the yolonas recipe, calibrated on the listed images; (file, recipe description)."""
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import onnx  # noqa: PLC0415
    import onnxruntime  # noqa: PLC0415
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )
    from ultralytics.data.augment import LetterBox  # noqa: PLC0415

    files = [line.strip() for line in calib_list.read_text().splitlines() if line.strip()]
    letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False)  # what its predictor does for a static ONNX

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.name, self.i = name, 0

        def get_next(self):
            if self.i >= len(files):
                return None
            image = letterbox(image=cv2.imread(files[self.i]))
            self.i += 1
            x = image[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0  # BGR -> RGB, [0, 1]
            return {self.name: np.ascontiguousarray(x)}

    prepared = out / "model_fp32_prepared.onnx"
    quant_pre_process(str(onnx_fp32), str(prepared))
    model = onnx.load(str(prepared))
    keep, skip = _network_nodes(model)
    target = out / "model_int8.onnx"
    with contextlib.redirect_stdout(sys.stderr):
        quantize_static(str(prepared), str(target), Reader(model.graph.input[0].name), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANT_OP_TYPES, nodes_to_quantize=keep, nodes_to_exclude=skip,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "CalibPercentile": PERCENTILE, "CalibTensorRangeSymmetric": False})
    # Ultralytics reads names, stride and imgsz from the metadata: carry it over from the float export
    q = onnx.load(str(target))
    del q.metadata_props[:]
    for p in onnx.load(str(onnx_fp32), load_external_data=False).metadata_props:
        q.metadata_props.add(key=p.key, value=p.value)
    onnx.save(q, str(target))
    recipe = (f"onnxruntime {onnxruntime.__version__} quantize_static: QDQ, int8 per-channel symmetric weights, uint8 "
              f"per-tensor activations, percentile {PERCENTILE} on {len(files)} train images; {len(keep)} nodes "
              f"INT8, {len(skip)} decode nodes float")
    return target, recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="yolov8n, yolov8s, yolov8m or yolov8l")
    ap.add_argument("--data", required=True, help="a data.yaml with absolute paths (train, val)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument("--int8-calib", help="a text file of calibration image paths; INT8 is skipped without it")
    args = ap.parse_args()
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
        record = train(args, out)
        last, train_s = Path(record["last"]), record["train_s"]
        t1 = time.perf_counter()
        from ultralytics import YOLO  # noqa: PLC0415
        from ultralytics.utils.torch_utils import get_flops, get_num_params  # noqa: PLC0415

        model = YOLO(str(last))
        model.fuse()
        params, gflops = get_num_params(model.model), get_flops(model.model, args.imgsz)
        pred_fp32, own = predict_json(last, args, out, "val_fp32", args.device, args.batch)
        onnx_fp32 = export(last, args, out)
        result = {"model": args.model, "epochs": args.epochs, "train_s": train_s, "params": int(params),
                  "train_threads": record.get("train_threads"),
                  "gflops": float(gflops), "pred_fp32": str(pred_fp32), "onnx_fp32": str(onnx_fp32),
                  "own_map": own["map"], "own_map50": own["map50"],
                  "device": "cpu" if args.device == "cpu" else f"cuda:{args.device}"}
        if args.int8_calib:
            onnx_int8, recipe = quantize(onnx_fp32, Path(args.int8_calib), args.imgsz, out)
            pred_int8, own8 = predict_json(onnx_int8, args, out, "val_int8", "cpu", 1)
            result.update({"onnx_int8": str(onnx_int8), "pred_int8": str(pred_int8), "int8_recipe": recipe,
                           "own_map_int8": own8["map"]})
    result.update({"after_s": time.perf_counter() - t1, "network_attempts": NETWORK_ATTEMPTS,
                   "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__}})
    print("SHOWDOWN_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
