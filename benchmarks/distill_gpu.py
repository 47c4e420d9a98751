"""Distillation on aquarium: a small student trained with a trained teacher's guidance vs without, 3 seeds each.

Issue 7, acceptance (1). Train on aquarium's `train` key (valid/, 127 images), evaluate on `test` (63 images).
All (mode, seed) runs go in parallel processes on the one GPU, with the same recipe, epochs and batch; the only
difference is the `distill` section. Each run's last.pt (the EMA weights) is evaluated on `test` with VAL_NMS by
`yolonas.eval.validate.validate`; the teacher too. Results are rewritten every poll, so a run cut short keeps what
finished, and unfinished runs show their latest in-training validation (results.csv, EMA, VAL_NMS; aquarium's
`val` key is the same test/ images).

  GPU:   python benchmarks/distill_gpu.py --teacher PATH --out runs/distill_gpu/report
  smoke: python benchmarks/distill_gpu.py --teacher PATH --device cpu --imgsz 160 --epochs 1 --seeds 0 --workers 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("distill", "baseline")


def run_one(args) -> None:
    import yolonas  # noqa: PLC0415 - only the child processes need torch
    from yolonas.data import load_data_yaml  # noqa: PLC0415
    from yolonas.eval.validate import validate  # noqa: PLC0415
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    overrides = {
        "data.path": args.data, "model.name": args.student, "schedule.epochs": args.epochs,
        "data.batch_size": args.batch, "data.workers": args.workers, "data.image_size": args.imgsz,
        "run.seed": args.seed, "run.project": args.project, "run.name": f"{args.mode}_s{args.seed}",
        "run.exist_ok": True, "run.val_every": args.val_every, "run.verbose": False, "run.plots": False,
        "run.device": args.device,
    }
    if args.mode == "distill":
        overrides["distill.teacher"] = args.teacher
        overrides["distill.feat_weight"] = args.feat_weight
    t0 = time.time()
    result = train(apply_overrides(load_recipe(args.recipe), overrides))
    seconds = time.time() - t0
    metrics = validate(yolonas.load(result.last), load_data_yaml(args.data, "test"), batch_size=16, device=args.device)
    out = {"mode": args.mode, "seed": args.seed, "epochs": args.epochs, "train_seconds": round(seconds, 1),
           "finished": True, **{k: getattr(metrics, k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    Path(args.project, f"{args.mode}_s{args.seed}.json").write_text(json.dumps(out, indent=2))


def teacher_ap(args) -> dict:
    """The teacher's metrics on `test`, computed once and kept beside the runs."""
    path = Path(args.project, "teacher.json")
    if path.is_file():
        return json.loads(path.read_text())
    import yolonas  # noqa: PLC0415
    from yolonas.data import load_data_yaml  # noqa: PLC0415
    from yolonas.eval.validate import validate  # noqa: PLC0415

    model = yolonas.load(args.teacher)
    m = validate(model, load_data_yaml(args.data, "test"), batch_size=16, device=args.device)
    out = {"teacher": args.teacher, "spec": model.spec.name, "params_M": sum(p.numel() for p in model.parameters())
           / 1e6, **{k: getattr(m, k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    path.write_text(json.dumps(out, indent=2))
    return out


def latest_val(run_dir: Path) -> dict | None:
    """The last validated epoch of an unfinished run, from its results.csv."""
    csv_path = run_dir / "results.csv"
    if not csv_path.is_file():
        return None
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("AP")]
    return {"epoch": int(rows[-1]["epoch"]), "AP": float(rows[-1]["AP"])} if rows else None


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.mean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def write_report(args, seeds: list[str], teacher: dict, started: float) -> dict:
    """Collect what the runs wrote so far into <out>.json and <out>.md; return the summary."""
    runs = []
    for mode in MODES:
        for seed in seeds:
            done = Path(args.project, f"{mode}_s{seed}.json")
            if done.is_file():
                runs.append(json.loads(done.read_text()))
            else:
                runs.append({"mode": mode, "seed": int(seed), "finished": False,
                             "latest_val": latest_val(Path(args.project, f"{mode}_s{seed}"))})
    summary = {m: {k: mean_sd([r[k] for r in runs if r["mode"] == m and r["finished"]]) for k in ("AP", "AP50")}
               for m in MODES}
    d, b = summary["distill"]["AP"], summary["baseline"]["AP"]
    verdict = None
    if d["n"] and b["n"]:
        gain, spread = d["mean"] - b["mean"], max(d["sd"], b["sd"])
        verdict = {"gain_AP": gain, "largest_sd": spread, "beats_spread": gain > spread,
                   "min_distill_above_max_baseline": min(r["AP"] for r in runs if r["mode"] == "distill"
                                                         and r["finished"])
                   > max(r["AP"] for r in runs if r["mode"] == "baseline" and r["finished"])}
    result = {"command": "python " + " ".join(sys.argv), "student": args.student, "recipe": args.recipe,
              "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "feat_weight": args.feat_weight,
              "elapsed_s": round(time.time() - started, 1), "teacher": teacher, "runs": runs, "summary": summary,
              "verdict": verdict}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Distillation on aquarium: {args.student} student, {teacher.get('spec', '?')} teacher", "",
             f"Train valid/ (127 images), test test/ (63 images); {args.epochs} epochs, {args.imgsz} px, batch "
             f"{args.batch}, recipe {args.recipe}; last.pt (EMA) on test with VAL_NMS. Teacher AP "
             f"{teacher.get('AP', float('nan')):.3f} (AP50 {teacher.get('AP50', float('nan')):.3f}).", "",
             "| mode | seed | AP | AP50 | train s |", "|---|---|---|---|---|"]
    for r in runs:
        if r["finished"]:
            lines.append(f"| {r['mode']} | {r['seed']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['train_seconds']:.0f} |")
        else:
            lv = r["latest_val"]
            lines.append(f"| {r['mode']} | {r['seed']} | unfinished" + (f" (val AP {lv['AP']:.3f} at epoch "
                         f"{lv['epoch']})" if lv else "") + " | | |")
    for m in MODES:
        s = summary[m]
        if s["AP"]["n"]:
            lines.append(f"| **{m}** | mean ± sd (n={s['AP']['n']}) | {s['AP']['mean']:.3f} ± {s['AP']['sd']:.3f} | "
                         f"{s['AP50']['mean']:.3f} ± {s['AP50']['sd']:.3f} | |")
    if verdict:
        lines += ["", f"Distillation gain: {verdict['gain_AP']:+.3f} AP; largest seed sd {verdict['largest_sd']:.3f}; "
                  f"beats the spread: {verdict['beats_spread']}; every distilled seed above every baseline seed: "
                  f"{verdict['min_distill_above_max_baseline']}."]
    lines += ["", f"Command: `{result['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="a trained checkpoint with aquarium's classes")
    ap.add_argument("--data", default=".data/aquarium/data.yaml")
    ap.add_argument("--student", default="yolo_nas_tiny")
    ap.add_argument("--recipe", default="scratch_small_data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--feat-weight", type=float, default=0.0)
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--project", default="runs/distill_gpu")
    ap.add_argument("--out", default="runs/distill_gpu/report")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return run_one(args)
    Path(args.project).mkdir(parents=True, exist_ok=True)
    seeds = args.seeds.split(",")
    started = time.time()
    jobs = []
    for mode in MODES:
        for seed in seeds:
            Path(args.project, f"{mode}_s{seed}.json").unlink(missing_ok=True)  # no stale result from an earlier run
            cmd = [sys.executable, __file__, "--one", "--mode", mode, "--seed", seed, "--teacher", args.teacher,
                   "--data", args.data, "--student", args.student, "--recipe", args.recipe, "--epochs",
                   str(args.epochs), "--batch", str(args.batch), "--imgsz", str(args.imgsz), "--workers",
                   str(args.workers), "--feat-weight", str(args.feat_weight), "--val-every", str(args.val_every),
                   "--device", args.device, "--project", args.project]
            log = open(Path(args.project, f"{mode}_s{seed}.log"), "w")  # noqa: SIM115 - closed below
            jobs.append((mode, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ), log))
    Path(args.project, "teacher.json").unlink(missing_ok=True)
    teacher = teacher_ap(args)  # while the students train
    print(f"teacher {teacher['spec']}: AP {teacher['AP']:.3f}", flush=True)
    while any(proc.poll() is None for _, _, proc, _ in jobs):
        write_report(args, seeds, teacher, started)
        time.sleep(15)
    for mode, seed, proc, log in jobs:
        log.close()
        print(f"{mode} seed {seed}: exit {proc.returncode}", file=sys.stderr)
    result = write_report(args, seeds, teacher, started)
    print(Path(args.out).with_suffix(".md").read_text())
    if result["verdict"] is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
