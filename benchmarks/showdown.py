"""Run `yolonas showdown` and publish its summary and, per data set, its table, frontier plot and JSON, with the
command, under benchmarks/results/showdown/ (<name>_summary.md|json, <name>_<data set>_showdown.md|json,
<name>_<data set>_frontier.png, <name>_command.txt).

Every flag except --out goes to `yolonas showdown` unchanged; --name defaults to `showdown`. Examples:

    python benchmarks/showdown.py --data ../shared/datasets/aquarium/data.yaml --models yolo_nas_s,yolov8s \\
        --epochs 2 --imgsz 160 --device cpu --name aquarium_cpu_tiny
    python benchmarks/showdown.py --data A/data.yaml,B/data.yaml --models yolo_nas_s,yolo11s,yolo26s --budget 120 \\
        --device cpu --threads 2 --name three_sets      # one sub-run per data set, then the summary
    python benchmarks/showdown.py --data D --models yolov8s --epochs 100 --name aquarium_gpu   # one call per model;
    python benchmarks/showdown.py --data D --models yolo_nas_s --epochs 100 --name aquarium_gpu  # results merge
    python benchmarks/showdown.py --data ../shared/datasets/chess_pieces_rf100/data.yaml --split test \
        --minutes 15 --seeds 3 --epochs 1000 --imgsz 320 --batch 8 --workers 2 --device cpu --threads 2 \
        --name cpu320_chess_15min      # equal training time; the campaign: benchmarks/results/showdown/README.md

A call cut off (session ended, Ctrl-C) is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=True)
    ap.add_argument("--out", default=str(RESULTS / "showdown"), help="where the report files are copied")
    ap.add_argument("--name", default="showdown", help="runs/showdown/<name>/ and the prefix of the copies")
    args, rest = ap.parse_known_args()
    cmd = [sys.executable, "-m", "yolonas.cli", "showdown", *rest, "--name", args.name]
    print("benchmark: " + shlex.join(cmd), file=sys.stderr)
    # exit 2 with failed rows still writes every report: publish them, then pass the exit status on
    start = time.time()
    code = subprocess.run(cmd).returncode
    run = Path("runs") / "showdown" / args.name
    summary = run / "summary.json"
    if not summary.is_file() or summary.stat().st_mtime < start:  # stopped before any report: nothing new to copy
        sys.exit(code or 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file in ("summary.md", "summary.json"):
        shutil.copyfile(run / file, out / f"{args.name}_{file}")
    for data_name, folder in json.loads(summary.read_text())["datasets"].items():
        for file in ("showdown.md", "showdown.json", "frontier.png"):
            shutil.copyfile(Path(folder) / file, out / f"{args.name}_{data_name}_{file}")
    command = shlex.join(["python", "benchmarks/showdown.py", *sys.argv[1:]])
    (out / f"{args.name}_command.txt").write_text(f"{command}\n# machine: {machine()}\n")
    print(f"benchmark: {run} -> {out}/{args.name}_*", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
