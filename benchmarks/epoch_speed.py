"""Training epochs side by side on this CPU: yolo_nas_s (fp32, bf16) against Ultralytics' YOLOv8s (issue 18, point 4).

Each framework trains from scratch with its own recipe (ours: `cpu_s320`; Ultralytics: its defaults, fp32 and its
own worker choice on the CPU) on the same images (aquarium valid/, 127 images), 320 px, batch 8, torch threads
pinned to --threads, mosaic on throughout (close-mosaic off for both: the epochs timed are the typical ones), no
validation during training. A run trains --epochs epochs; the first (start-up, caches) and the last (the final
validation) are not timed. Runs take turns block by block (the order rotates), and the ratio to YOLOv8s is taken
per block, then the median over blocks.

--accuracy: ours in fp32 and in bf16 for --ap-epochs epochs each with the recipe's schedule, per seed, scored on
test/ after the last epoch: the AP bf16 costs (or not) after the same epochs.

    python benchmarks/epoch_speed.py [--blocks 2] [--epochs 5] [--name epoch_speed_aquarium_320]
    python benchmarks/epoch_speed.py --accuracy [--ap-epochs 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS, datasets_root, machine
from yolonas.deploy.timing import bf16_supported

PEER_PYTHON = REPO / ".venv-ultralytics" / "bin" / "python"
PEER = REPO / "benchmarks" / "peers" / "ultralytics_epochs.py"


def our_run(data: Path, epochs: int, amp: bool, seed: int, threads: int, project: Path, name: str,
            timing: bool = True) -> dict[str, Any]:
    """Train yolo_nas_s with the cpu_s320 recipe in a child process; per-epoch seconds and the final AP."""
    cmd = [sys.executable, "-m", "yolonas.cli", "-q", "train", "--data", str(data), "--recipe", "cpu_s320",
           "--epochs", str(epochs), "--seed", str(seed), "--name", name, "--set", f"run.project={project}",
           "--set", "run.val_every=0", "--set", "run.plots=false", "--set", f"run.amp={str(amp).lower()}"]
    if timing:  # mosaic on throughout, as on the peer's side
        cmd += ["--set", "schedule.close_mosaic_epochs=0"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, cwd=REPO)
    with open(project / name / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"epoch_s": [float(r["time"]) for r in rows], "AP": float(rows[-1]["AP"]), "AP50": float(rows[-1]["AP50"])}


def peer_run(data: Path, epochs: int, threads: int, out: Path) -> dict[str, Any]:
    """Train YOLOv8s in .venv-ultralytics; its EPOCHS_RESULT record."""
    cmd = [str(PEER_PYTHON), str(PEER), "--model", "yolov8s", "--data", str(data), "--epochs", str(epochs),
           "--imgsz", "320", "--batch", "8", "--threads", str(threads), "--out", str(out)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("EPOCHS_RESULT "))
    return json.loads(line.removeprefix("EPOCHS_RESULT "))


def timed(epoch_s: list[float]) -> list[float]:
    """The epochs that count: neither the first (start-up) nor the last (final validation)."""
    return epoch_s[1:-1]


def images_per_epoch(config: str, data: Path, batch: int = 8) -> int:
    """Images one epoch trains on: our loader drops a last partial batch (127 -> 120), Ultralytics' keeps it."""
    from yolonas.data import open_dataset  # noqa: PLC0415

    n = len(open_dataset(data, "train"))
    return n if config.startswith("yolov8s") or n <= batch else n - n % batch


def epoch_summary(epoch_s: list[float], images: int) -> dict[str, Any]:
    median = statistics.median(epoch_s)
    return {"epoch_s": epoch_s, "median_epoch_s": round(median, 2), "images_per_epoch": images,
            "images_per_s": round(images / median, 2)}


def speed(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    """Blocks of (S fp32, S bf16 where native, v8s) runs in rotating order; medians and per-block ratios."""
    configs = ["yolo_nas_s fp32"] + (["yolo_nas_s bf16"] if bf16_supported() else []) + ["yolov8s fp32"]
    epochs: dict[str, list[float]] = {c: [] for c in configs}
    ratios: dict[str, list[float]] = {c: [] for c in configs[:-1]}
    for block in range(args.blocks):
        order = configs[block % len(configs):] + configs[:block % len(configs)]
        medians = {}
        for config in order:
            if config.startswith("yolov8s"):
                record = peer_run(data, args.epochs, args.threads, work / "peer")
            else:
                record = our_run(data, args.epochs, config.endswith("bf16"), 0, args.threads, work,
                                 f"b{block}_{config.split()[1]}")
            epochs[config] += timed(record["epoch_s"])
            medians[config] = statistics.median(timed(record["epoch_s"]))
            print(f"block {block}: {config}: epochs {record['epoch_s']}", flush=True)
        for config in ratios:
            ratios[config].append(round(medians[config] / medians["yolov8s fp32"], 3))
    return {"configs": {c: epoch_summary(v, images_per_epoch(c, data)) for c, v in epochs.items()},
            "ratio_to_yolov8s": {c: {"blocks": v, "median": statistics.median(v)} for c, v in ratios.items()}}


def accuracy(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    """yolo_nas_s in fp32 and bf16, --ap-epochs each, per seed: final AP on test/."""
    runs = []
    for seed in args.seeds:
        for amp in (False, True):
            name = f"ap_s{seed}_{'bf16' if amp else 'fp32'}"
            r = our_run(data, args.ap_epochs, amp, seed, args.threads, work, name, timing=False)
            runs.append({"seed": seed, "precision": "bf16" if amp else "fp32", "AP": round(r["AP"], 4),
                         "AP50": round(r["AP50"], 4), "median_epoch_s": round(statistics.median(r["epoch_s"]), 2)})
            print(json.dumps(runs[-1]), flush=True)
    diffs = [b["AP"] - f["AP"] for f, b in zip(runs[::2], runs[1::2])]
    return {"runs": runs, "bf16_minus_fp32": [round(d, 4) for d in diffs],
            "mean_diff": round(statistics.mean(diffs), 4),
            "stdev_diff": round(statistics.stdev(diffs), 4) if len(diffs) > 1 else None}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    isa = ", ".join(m["cpu_info"]["isa"]) or "no AVX2"
    lines = [f"# Training epochs side by side on the CPU ({result['mode']})", "",
             f"Machine: {m['cpu']} ({isa}), {result['threads']} threads, torch {m['torch']}. Data: aquarium valid/ "
             "(127 images), 320 px, batch 8; ours `cpu_s320`, Ultralytics its defaults. See the script's docstring.",
             ""]
    if result["mode"] == "speed":
        peer = result["configs"]["yolov8s fp32"]
        lines += ["| run | median s / epoch | images / epoch | images/s | epoch time x YOLOv8s per block (median) "
                  "| time per image x YOLOv8s |", "|---|---|---|---|---|---|"]
        for config, r in result["configs"].items():
            ratio = result["ratio_to_yolov8s"].get(config)
            cell = f"{ratio['blocks']} (**x{ratio['median']:.2f}**)" if ratio else "1"
            per_image = peer["images_per_s"] / r["images_per_s"]
            lines.append(f"| {config} | {r['median_epoch_s']} | {r['images_per_epoch']} | {r['images_per_s']} | {cell} "
                         f"| x{per_image:.2f} |")
    else:
        lines += ["| seed | precision | AP | AP50 | median s / epoch |", "|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['precision']} | {r['AP']:.4f} | {r['AP50']:.4f} | {r['median_epoch_s']} |"
                  for r in result["runs"]]
        spread = f" +- {result['stdev_diff']:.4f}" if result["stdev_diff"] is not None else ""
        lines += ["", f"bf16 minus fp32 AP: {result['bf16_minus_fp32']}, mean {result['mean_diff']:+.4f}{spread}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a data.yaml (default: the shared aquarium)")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--ap-epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--name")
    args = ap.parse_args()
    data = Path(args.data or datasets_root() / "aquarium" / "data.yaml").resolve()
    if not args.accuracy and not PEER_PYTHON.is_file():
        sys.exit(f"error: {PEER_PYTHON}: missing; run benchmarks/peers/ultralytics_setup.sh")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = accuracy(args, data, work) if args.accuracy else speed(args, data, work)
        shutil.rmtree(work, ignore_errors=True)
    mode = "accuracy" if args.accuracy else "speed"
    result = {"mode": mode, "machine": machine(), "threads": args.threads,
              "data": str(data), "epochs": args.ap_epochs if args.accuracy else args.epochs, **body}
    name = args.name or f"epoch_{mode}_aquarium_320"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
