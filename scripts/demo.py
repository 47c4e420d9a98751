"""The main job end to end: train a small YOLO-NAS, evaluate it, predict, and write a short report.

Uses ../shared/datasets/coco128 when it is there (override the root with YOLONAS_DATASETS), else a data
set generated on the spot. Budgeted for under 10 minutes on 2 CPU cores. Output: runs/demo/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import yolonas
from yolonas.data import open_dataset
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.deploy.backends import OnnxRuntimeBackend
from yolonas.deploy.export import export_onnx
from yolonas.eval.validate import validate
from yolonas.infer import PREDICT_NMS, Predictor
from yolonas.infer.writer import PredictionWriter
from yolonas.train import apply_overrides, load_recipe, train

REPO = Path(__file__).resolve().parents[1]


def _data(out: Path, n_images: int) -> tuple[Path, str]:
    """A data.yaml over the first n coco128 images (train = val, as coco128's own data.yaml has it)."""
    root = Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))
    coco128 = root / "coco128"
    if (coco128 / "data.yaml").is_file():
        names = yaml.safe_load((coco128 / "data.yaml").read_text())["names"]
        images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:n_images]
        (out / "images.txt").write_text("".join(f"{p}\n" for p in images))
        (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images.txt", "val": "images.txt",
                                                       "names": names}))
        return out / "data.yaml", f"the first {len(images)} coco128 images (real COCO photos, 80 classes)"
    path = make_synthetic_dataset(out / "synthetic", n_images=n_images, size=256, seed=0)
    return Path(path), "a generated set of coloured shapes (no ../shared/datasets here)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--out", default="runs/demo")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data, what = _data(out, args.images)
    print(f"demo: training yolo_nas_tiny on {what} for {args.epochs} epochs at {args.imgsz} px")
    # A CPU budget buys a fit, not a general detector: augmentation off and small batches (BatchNorm statistics
    # settle with steps, not epochs), so the model learns the images it is then evaluated on.
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data.path": str(data), "schedule.epochs": args.epochs, "data.image_size": args.imgsz, "data.batch_size": 2,
        "optimizer.lr": 4e-3, "optimizer.weight_decay": 0.0, "schedule.warmup_epochs": 3, "ema.decay": 0.9,
        "augmentation.mosaic": 0.0, "augmentation.mixup": 0.0, "augmentation.translate": 0.0,
        "augmentation.scale": [1.0, 1.0], "augmentation.hsv": 0.0, "augmentation.flip": 0.0, "close_mosaic": 0,
        "run.project": str(out), "run.name": "train", "run.exist_ok": True, "run.val_every": max(1, args.epochs // 4),
    })
    result = train(cfg)
    t_train = time.time() - t0

    model = yolonas.load(result.best)
    val = open_dataset(data, cfg.data.val_split)
    metrics = validate(model, val, batch_size=8, save_predictions=out / "val_predictions.json", plots_dir=out)

    predictor = Predictor(model.eval().fuse(), batch_size=4)
    files = [val.image_files[i] for i in range(min(6, len(val)))]
    with PredictionWriter(out / "predict") as writer:
        for name, image, det in predictor.stream([str(f) for f in files]):
            writer.add(name, image, det)

    # Deploy: the same model as ONNX with NMS inside, run by ONNX Runtime behind the same Predictor.
    onnx_path = export_onnx(yolonas.load(result.best), out / "model.onnx", batch=None, nms=PREDICT_NMS)
    images = [str(f) for f in files]
    torch_dets = predictor.predict(images)
    ort_dets = Predictor(OnnxRuntimeBackend(onnx_path), batch_size=4).predict(images)
    same = all(len(a) == len(b) for a, b in zip(torch_dets, ort_dets))
    box_diff = max((float(np.abs(a.boxes - b.boxes).max()) for a, b in zip(torch_dets, ort_dets) if len(a) and same),
                   default=0.0)

    report = {
        "data": what, "model": "yolo_nas_tiny", "epochs": args.epochs, "image_size": args.imgsz,
        "train_seconds": round(t_train, 1), "total_seconds": round(time.time() - t0, 1),
        "best_checkpoint": str(result.best), "metrics": metrics.to_dict(), "onnx": str(onnx_path),
        "onnx_same_detection_counts": same, "onnx_max_box_difference_px": box_diff,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# yolonas demo", "",
        f"Trained `yolo_nas_tiny` on {what}, {args.epochs} epochs at {args.imgsz} px, on the CPU, "
        f"in {t_train / 60:.1f} min; evaluated on the `{cfg.data.val_split}` split with the same pre/post-processing "
        "as predict (score 0.01, top-k 1000, max 300, IoU 0.7).", "",
        "| AP | AP50 | AP75 | APs | APm | APl |", "|---|---|---|---|---|---|",
        "| " + " | ".join(f"{getattr(metrics, k):.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")) + " |", "",
        f"- training curves: `{result.run_dir}/results.png`; weights: `{result.best}`",
        f"- PR curves and confusion matrix: `{out}/*.png`; COCO predictions: `{out}/val_predictions.json`",
        f"- annotated predictions: `{out}/predict/`",
        f"- ONNX export with NMS inside: `{onnx_path}`; through ONNX Runtime it gives "
        f"{'the same detection counts' if same else 'DIFFERENT detection counts'} as PyTorch on those images, boxes "
        f"within {box_diff:.3f} px", "",
        "A tiny model fitted for minutes on a CPU to the images it is evaluated on: this shows the whole pipeline "
        "working (data checks, loss, trainer, EMA, checkpoint, COCO evaluation, predict), not a general detector; "
        "`benchmarks/results/train_gpu_aquarium.md` has a real train/test measurement.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
