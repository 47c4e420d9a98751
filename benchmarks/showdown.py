"""Run `yolonas showdown` and publish its table, frontier plot and JSON, with the command, under
benchmarks/results/showdown/.

Every flag except --out goes to `yolonas showdown` unchanged; --name defaults to `showdown`. Examples:

    python benchmarks/showdown.py --data ../shared/datasets/aquarium/data.yaml --models yolo_nas_s,yolov8s \\
        --epochs 2 --imgsz 160 --device cpu --name aquarium_cpu_tiny
    python benchmarks/showdown.py --data D --models yolov8s --epochs 100 --name aquarium_gpu   # one call per model;
    python benchmarks/showdown.py --data D --models yolo_nas_s --epochs 100 --name aquarium_gpu  # results merge
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from _common import RESULTS, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=True)
    ap.add_argument("--out", default=str(RESULTS / "showdown"), help="where the report files are copied")
    ap.add_argument("--name", default="showdown", help="runs/showdown/<name>/ and the prefix of the copies")
    args, rest = ap.parse_known_args()
    cmd = [sys.executable, "-m", "yolonas.cli", "showdown", *rest, "--name", args.name]
    print("benchmark: " + shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    run = Path("runs") / "showdown" / args.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file in ("showdown.md", "showdown.json", "frontier.png"):
        shutil.copyfile(run / file, out / f"{args.name}_{file}")
    command = shlex.join(["python", "benchmarks/showdown.py", *sys.argv[1:]])
    (out / f"{args.name}_command.txt").write_text(f"{command}\n# machine: {machine()}\n")
    print(f"benchmark: {run} -> {out}/{args.name}_*", file=sys.stderr)


if __name__ == "__main__":
    main()
