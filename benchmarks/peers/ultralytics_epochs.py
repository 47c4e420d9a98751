"""Ultralytics training epochs, timed: the peer of benchmarks/epoch_speed.py (issue 18, point 4).

Run inside .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh). Trains `YOLO("<model>.yaml")` from scratch on
--data for --epochs with Ultralytics' default hyper-parameters (its own recipe, its own worker choice), no validation
during training, mosaic kept on throughout (close_mosaic 0, as the driver keeps ours), torch threads pinned to
--threads. The data set is a per-file linked copy under .venv-ultralytics/work/ (its labels.cache lands there).
Prints one line `EPOCHS_RESULT {json}` on stdout: per-epoch seconds from its results.csv (the `time` column is the
time since training started), threads and workers in use; everything else goes to stderr.

    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_epochs.py --model yolov8s --data D --epochs 6 --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import sys
from pathlib import Path

from _offline import NETWORK_ATTEMPTS, WORK, go_offline
from ultralytics_loader import _no_font_check, linked_data


def epoch_seconds(results_csv: Path) -> list[float]:
    """Seconds of each epoch: differences of the cumulative `time` column of Ultralytics' results.csv."""
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    cumulative = [float(r["time"]) for r in rows]
    return [round(b - a, 3) for a, b in zip([0.0] + cumulative[:-1], cumulative)]


def train(args: argparse.Namespace, data_yaml: Path, out: Path):
    """Train from the model's yaml; returns Ultralytics' trainer."""
    from ultralytics import YOLO  # noqa: PLC0415

    model = YOLO(f"{args.model}.yaml")
    model.train(data=str(data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
                device="cpu", workers=args.workers, project=str(out), name="train", exist_ok=True,
                pretrained=False, val=False, plots=False, close_mosaic=0, deterministic=False, amp=False,
                verbose=False)
    return model.trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="yolov8s")
    ap.add_argument("--data", required=True, help="a YOLO data.yaml")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="asked for; Ultralytics uses 0 on the CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    go_offline()
    # Ultralytics sets OMP_NUM_THREADS=1 on import and torch threads to cpu_count - 1 on the CPU: pin both.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch  # noqa: PLC0415
    import ultralytics  # noqa: PLC0415
    import ultralytics.utils.torch_utils as torch_utils  # noqa: PLC0415
    from ultralytics_showdown import _settings  # noqa: PLC0415

    _settings()
    _no_font_check()
    torch_utils.NUM_THREADS = args.threads
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    shutil.rmtree(out / "train", ignore_errors=True)
    data_yaml = linked_data(Path(args.data).resolve(), WORK / "epochs" / Path(args.data).resolve().parent.name)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = train(args, data_yaml, out)
    record = {"peer": "ultralytics", "ultralytics": ultralytics.__version__, "model": args.model,
              "epoch_s": epoch_seconds(out / "train" / "results.csv"), "threads": torch.get_num_threads(),
              "workers": trainer.args.workers, "images": len(trainer.train_loader.dataset),
              "batch": trainer.batch_size, "amp": bool(trainer.amp), "network_attempts": NETWORK_ATTEMPTS}
    print("EPOCHS_RESULT " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
