"""Train yolo_nas_s from scratch on aquarium on a GPU, several seeds side by side, and report AP and speed.

Issue 4's GPU measurement: aquarium's data.yaml trains on `valid/` (127 images) and evaluates on `test/`
(63 images), 640 px, 100 epochs, batch 16. Each (recipe, seed) runs in its own process on the one GPU at the
same time; the final best.pt of each is evaluated on `test` with the same code as `yolonas val`.
Writes benchmarks/results/train_gpu_aquarium.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, datasets_root


def run_one(args) -> None:
    import torch  # noqa: PLC0415 - only the child processes need torch

    import yolonas  # noqa: PLC0415
    from yolonas.data import load_data_yaml  # noqa: PLC0415
    from yolonas.eval.validate import validate  # noqa: PLC0415
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    cfg = apply_overrides(load_recipe(args.recipe), {
        "data.path": args.data, "schedule.epochs": args.epochs, "data.batch_size": args.batch,
        "data.workers": args.workers, "run.seed": args.seed, "run.project": args.project,
        "run.name": f"{args.recipe}_s{args.seed}", "run.exist_ok": True, "run.val_every": args.val_every,
        "run.verbose": False, "run.device": "cuda",
    })
    t0 = time.time()
    result = train(cfg)
    seconds = time.time() - t0
    images = args.epochs * len(load_data_yaml(args.data, "train"))
    test = load_data_yaml(args.data, "test")
    metrics = validate(yolonas.load(result.best), test, batch_size=16, device="cuda")
    out = {"recipe": args.recipe, "seed": args.seed, "epochs": args.epochs, "train_seconds": seconds,
           "train_images_per_second": images / seconds, "best_epoch": result.best_epoch,
           "gpu": torch.cuda.get_device_name(0), **{k: getattr(metrics, k) for k in
                                                    ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    Path(args.project, f"{args.recipe}_s{args.seed}.json").write_text(json.dumps(out, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(datasets_root() / "aquarium" / "data.yaml"))
    ap.add_argument("--recipes", default="scratch_small_data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--project", default="runs/train_gpu")
    ap.add_argument("--out", default=str(RESULTS / "train_gpu_aquarium"))
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return run_one(args)
    Path(args.project).mkdir(parents=True, exist_ok=True)
    jobs = []
    for recipe in args.recipes.split(","):
        for seed in args.seeds.split(","):
            cmd = [sys.executable, __file__, "--one", "--recipe", recipe, "--seed", seed, "--data", args.data,
                   "--epochs", str(args.epochs), "--batch", str(args.batch), "--workers", str(args.workers),
                   "--val-every", str(args.val_every), "--project", args.project]
            log = open(Path(args.project, f"{recipe}_s{seed}.log"), "w")  # noqa: SIM115 - closed below
            jobs.append((recipe, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ),
                         log))
    for recipe, seed, proc, log in jobs:
        proc.wait()
        log.close()
        print(f"{recipe} seed {seed}: exit {proc.returncode}", file=sys.stderr)
    rows = [json.loads(p.read_text()) for p in sorted(Path(args.project).glob("*_s*.json"))]
    summary = {}
    for recipe in args.recipes.split(","):
        rs = [r for r in rows if r["recipe"] == recipe]
        if not rs:
            continue
        summary[recipe] = {k: {"mean": statistics.mean(r[k] for r in rs),
                               "std": statistics.stdev(r[k] for r in rs) if len(rs) > 1 else 0.0}
                           for k in ("AP", "AP50", "APs", "train_images_per_second")}
    result = {"command": "python " + " ".join(sys.argv), "parallel_processes": len(jobs), "runs": rows,
              "summary": summary}
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# yolo_nas_s from scratch on aquarium (train: valid/ 127 images; test: test/ 63 images), GPU", "",
             f"{args.epochs} epochs, 640 px, batch {args.batch}, {len(jobs)} runs at once on one GPU "
             f"({rows[0]['gpu'] if rows else '?'}); images/s is per run while sharing the GPU.", "",
             "| recipe | seed | AP | AP50 | AP75 | APs | APm | APl | train img/s | best epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['seed']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} | "
                     f"{r['APs']:.3f} | {r['APm']:.3f} | {r['APl']:.3f} | {r['train_images_per_second']:.0f} | "
                     f"{r['best_epoch']} |")
    for recipe, s in summary.items():
        lines.append(f"| **{recipe}** | mean ± sd | {s['AP']['mean']:.3f} ± {s['AP']['std']:.3f} | "
                     f"{s['AP50']['mean']:.3f} ± {s['AP50']['std']:.3f} | | {s['APs']['mean']:.3f} ± "
                     f"{s['APs']['std']:.3f} | | | {s['train_images_per_second']['mean']:.0f} | |")
    lines += ["", f"Command: `{result['command']}`", ""]
    Path(args.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
