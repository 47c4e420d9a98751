"""Training data loader throughput: images/s with mosaic + affine + HSV at 640 on coco128, for 0, 1 and 2 workers.

Writes benchmarks/results/dataloader.json and .md. Data root: $YOLONAS_DATASETS, else ../shared/datasets.
Usage: python benchmarks/dataloader.py [--size 640] [--batch 16] [--epochs 2] [--workers 0 1 2] [--data data.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from yolonas.data import HSV, Mosaic, RandomAffine, RandomSample, TrainDataset, load_data_yaml, make_loader
from yolonas.data import training_transforms as make_transforms

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))


def loader_throughput(train: TrainDataset, workers: int, batch: int, epochs: int, seed: int = 0) -> dict:
    """Images per second over `epochs` epochs, worker start-up included (timing from the first batch would credit
    the batches the other workers prefetch meanwhile); the first batch's latency is reported apart."""
    loader = make_loader(train, batch_size=batch, shuffle=True, workers=workers, seed=seed)
    start = time.perf_counter()
    images, first = 0, None
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for b in loader:
            first = first or time.perf_counter()
            images += len(b["image_ids"])
    seconds = time.perf_counter() - start
    return {"workers": workers, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "first_batch_s": round(first - start, 3)}


def stage_times(dataset, size: int, n: int = 64, seed: int = 0) -> dict:
    """Milliseconds per image of each stage, in this process (decode included in mosaic: 4 images)."""
    pick = RandomSample(dataset)
    mosaic, affine, hsv = Mosaic(pick, size), RandomAffine(size), HSV(p=1.0)
    rng = np.random.default_rng(seed)
    times = {"decode_1_image": 0.0, "mosaic_4_images": 0.0, "affine": 0.0, "hsv": 0.0}
    for _ in range(n):
        t0 = time.perf_counter()
        s = pick(rng)
        t1 = time.perf_counter()
        s = mosaic(s, rng)
        t2 = time.perf_counter()
        s = affine(s, rng)
        t3 = time.perf_counter()
        hsv(s, rng)
        t4 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key] += dt
    return {k: round(1000 * v / n, 2) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=None, help="another data.yaml (default: coco128's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="dataloader", help="result file names: NAME.json and NAME.md")
    args = parser.parse_args()

    data = args.data or data_root() / "coco128" / "data.yaml"
    dataset = load_data_yaml(data, "train")
    transforms = make_transforms(dataset, args.size, mosaic=1.0, mixup=0.0, hsv=1.0, flip=0.5)
    train = TrainDataset(dataset, transforms, seed=0)
    runs = [loader_throughput(train, w, args.batch, args.epochs) for w in args.workers]
    result = {
        "benchmark": "training data loader: mosaic + random affine + HSV + flip, letterboxed batches",
        "data": f"{data} (YOLO txt via data.yaml, {len(dataset)} images, JPEG decode each time, no cache)",
        "size": args.size, "batch": args.batch, "epochs": args.epochs,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__},
        "runs": runs,
        "stage_ms_per_image": stage_times(dataset, args.size),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Data loader throughput ({args.size} px, batch {args.batch})", "",
             f"{result['benchmark']}; {result['data']}.",
             f"Machine: {result['machine']['cores']} cores, torch {torch.__version__}, OpenCV {cv2.__version__}.", "",
             "| workers | images/s (start-up included) | images | first batch (s) |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['images_per_s']} | {r['images']} | {r['first_batch_s']} |" for r in runs]
    lines += ["", "Per stage, one process (ms per output image): " + ", ".join(
        f"{k} {v}" for k, v in result["stage_ms_per_image"].items()), ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
