"""Searched architectures against yolo_nas_s on aquarium: the same training budget, 3 seeds each (issue 8, point 3).

Training: every (model, seed) from scratch with the same recipe, epochs, image size and batch, each in its own
process (`--parallel` at once: several fit on one GPU), its last.pt (EMA) scored on `test` with the code of
`yolonas val`. Latency: each model's whole network end to end as exported (decode included, random weights) on
every `--targets` entry, `backend:precision[:device]` (onnxruntime:fp32, onnxruntime:int8, openvino:fp32,
torch:fp16:cuda), the models taking turns call by call; `--blocks` repeats, each cell the median over blocks and
each ratio the median of per-block ratios to the baseline (the first model). `--latency-only` re-times the
models of a finished report, so training can run on a GPU and the CPU target be timed here afterwards.

Verdict per searched model against the baseline, on each target: "faster at equal or better AP" (latency ratio
< 0.95, beyond timing noise, and mean AP >= baseline mean minus the larger seed sd) or "more accurate at equal or
lower latency" (mean AP above the baseline mean by more than the larger seed sd, latency ratio <= 1.05).

  GPU:   python benchmarks/nas_vs_s.py --models yolo_nas_s,runs/search/x/specs/03_a.yaml --device cuda \\
             --data .data/aquarium/data.yaml --targets torch:fp16:cuda --out /root/out/nas_vs_s
  here:  python benchmarks/nas_vs_s.py --latency-only --out benchmarks/results/nas_vs_s_aquarium \\
             --targets onnxruntime:fp32,onnxruntime:int8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, datasets_root, test_metrics


def model_name(model: str) -> str:
    return Path(model).stem if model.endswith((".yaml", ".yml")) else model


def train_job(args) -> None:
    """One (model, seed): train, score last.pt on test, write <project>/<name>_s<seed>.json."""
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    tag = f"{model_name(args.model)}_s{args.seed}"
    cfg = apply_overrides(load_recipe(args.recipe), {
        "data.path": args.data, "model.name": args.model, "schedule.epochs": args.epochs,
        "data.batch_size": args.batch, "data.workers": args.workers, "data.image_size": args.imgsz,
        "run.seed": args.seed, "run.project": args.project, "run.name": tag, "run.exist_ok": True,
        "run.val_every": 0, "run.verbose": False, "run.plots": False, "run.device": args.device,
        "run.amp_dtype": args.amp_dtype})
    if Path(args.project, tag, "weights", "last.pt").is_file():
        cfg = apply_overrides(cfg, {"resume": True})  # a cut-off call goes on where it stopped
    t0 = time.time()
    last = train(cfg).last
    out = {"model": args.model, "seed": args.seed, "train_seconds": round(time.time() - t0), "last": str(last),
           **test_metrics(last, args.data, args.device)}
    Path(args.project, f"{tag}.json").write_text(json.dumps(out, indent=2))


def train_all(args, models: list[str], seeds: list[str]) -> list[dict]:
    # seed-major: a cut-short run has every model's first seeds
    pending = [] if args.report_only else [(m, s) for s in seeds for m in models]
    running: list[tuple[subprocess.Popen, object]] = []
    root = Path(args.project)
    root.mkdir(parents=True, exist_ok=True)
    while pending or any(p.poll() is None for p, _ in running):
        while pending and sum(p.poll() is None for p, _ in running) < args.parallel:
            m, s = pending.pop(0)
            if (root / f"{model_name(m)}_s{s}.json").is_file():
                continue
            cmd = [sys.executable, __file__, "--job", "--model", m, "--seed", s, "--data", args.data, "--recipe",
                   args.recipe, "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
                   "--workers", str(args.workers), "--device", args.device, "--project", args.project,
                   "--amp-dtype", args.amp_dtype]
            log = open(root / f"{model_name(m)}_s{s}.log", "w")  # noqa: SIM115 - closed below
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ), log))
        time.sleep(10)
    for _, log in running:
        log.close()
    runs = []
    for m in models:
        for s in seeds:
            p = root / f"{model_name(m)}_s{s}.json"
            # Keyed by the name as given now: a spec may have been copied elsewhere since it trained.
            runs.append({**json.loads(p.read_text()), "model": m} if p.is_file() else
                        {"model": m, "seed": int(s), "AP": None})
    return runs


def latency(models: list[str], targets: list[str], imgsz: int, classes: int, blocks: int, runs: int,
            threads: int) -> dict:
    """{target: {"ms": [median per model], "ratio": [median ratio to models[0]]}}; `target@size` times the
    models at another input size than the training one."""
    import yolonas  # noqa: PLC0415
    from yolonas.nas.latency import LatencyModel, LatencyTable  # noqa: PLC0415

    specs = [yolonas.load(m).spec for m in models]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in targets:
            target, _, size = key.partition("@")
            size = int(size or imgsz)
            backend, precision, *device = target.split(":")
            lat = LatencyModel(LatencyTable(Path(tmp) / "t.json"), backend, threads, precision,
                               device=device[0] if device else "cpu", runs=runs)
            per_block = [lat.measure(specs, size, classes)["whole"] for _ in range(blocks)]
            out[key] = {"target": lat.target, "imgsz": size,
                        "ms": [statistics.median(b[i] for b in per_block) for i in range(len(specs))],
                        "ratio": [statistics.median(b[i] / b[0] for b in per_block) for i in range(len(specs))]}
    return out


def summarise(models: list[str], runs: list[dict]) -> dict:
    out = {}
    for m in models:
        aps = [r["AP"] for r in runs if r["model"] == m and r.get("AP") is not None]
        ap50 = [r["AP50"] for r in runs if r["model"] == m and r.get("AP") is not None]
        out[m] = {"n": len(aps), "mean": statistics.mean(aps) if aps else None,
                  "sd": statistics.stdev(aps) if len(aps) > 1 else 0.0,
                  "ap50": statistics.mean(ap50) if ap50 else None}
    return out


def verdicts(models: list[str], summary: dict, lat: dict, imgsz: int) -> list[dict]:
    """Per searched model and target at the training size (AP was measured there only)."""
    base = summary[models[0]]
    found = []
    for i, m in enumerate(models[1:], start=1):
        s = summary[m]
        if not (s["n"] and base["n"]):
            continue
        spread = max(s["sd"], base["sd"])
        d_ap = s["mean"] - base["mean"]
        for target, t in lat.items():
            if t.get("imgsz", imgsz) != imgsz:
                continue
            r = t["ratio"][i]
            faster = r < 0.95 and d_ap >= -spread
            better = d_ap > spread and r <= 1.05
            found.append({"model": m, "target": target, "latency_ratio": r, "ap_diff": d_ap, "spread": spread,
                          "faster_at_equal_ap": faster, "more_accurate_at_equal_latency": better})
    return found


def write(args, result: dict) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    models, summary, lat = result["models"], result["summary"], result.get("latency", {})
    s = result["settings"]
    lines = ["# Searched architectures vs yolo_nas_s on aquarium", "",
             f"Train `valid/` ({s['recipe']}, {s['epochs']} epochs, {s['imgsz']} px, batch {s['batch']}, "
             f"{s['device']}), last.pt (EMA) on `test`; seeds {s['seeds']}. Latency: whole network end to end "
             f"(decode included), models taking turns, median of {s['blocks']} blocks.", ""]
    head = ["model", "params (M)", "GFLOPs", *(f"{t} ms (ratio)" for t in lat), "AP mean ± sd", "AP50",
            "AP per seed"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, m in enumerate(models):
        sm = summary[m]
        cells = [model_name(m), f"{result['size'][m]['params']:.2f}", f"{result['size'][m]['gflops']:.1f}"]
        cells += [f"{t['ms'][i]:.1f} (x{t['ratio'][i]:.2f})" for t in lat.values()]
        seeds = [f"{r['AP']:.3f}" for r in result["runs"] if r["model"] == m and r.get("AP") is not None]
        cells += [(f"{sm['mean']:.3f} ± {sm['sd']:.3f}" if sm["n"] > 1 else f"{sm['mean']:.3f} (1 seed)")
                  if sm["n"] else "-",
                  f"{sm['ap50']:.3f}" if sm["n"] else "-", ", ".join(seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for v in result.get("verdicts", []):
        what = " and ".join(w for w, ok in (("faster at equal or better AP", v["faster_at_equal_ap"]),
                                             ("more accurate beyond the seed spread at equal or lower latency",
                                              v["more_accurate_at_equal_latency"])) if ok
                           ) or "neither faster at equal AP nor more accurate"
        lines.append(f"- {model_name(v['model'])} on {v['target']}: latency x{v['latency_ratio']:.2f}, AP "
                     f"{v['ap_diff']:+.3f} (spread {v['spread']:.3f}): **{what}**.")
    lines += [f"\n{n}" for n in result.get("notes", [])]
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in result["commands"]), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="yolo_nas_s", help="comma-separated names or spec YAMLs; the first is the "
                    "baseline")
    ap.add_argument("--data", default=str(datasets_root() / "aquarium" / "data.yaml"))
    ap.add_argument("--recipe", default="scratch_small_data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--amp-dtype", default="auto", choices=["auto", "bf16", "fp16"],
                    help="bf16 also trains the CPU in bf16 (fast where it has AMX / AVX512-BF16)")
    ap.add_argument("--parallel", type=int, help="trainings at once (default: 6 on CUDA, 1 on the CPU)")
    ap.add_argument("--targets", default="onnxruntime:fp32", help="comma-separated backend:precision[:device]"
                    "[@imgsz] (default size: the training one)")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10, help="timed calls per model and block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-only", action="store_true", help="re-time the models of the report at --out")
    ap.add_argument("--report-only", action="store_true", help="report the (model, seed) runs already finished in "
                    "--project, training none")
    ap.add_argument("--note", help="a paragraph for the report (how the runs were made, what to read into them)")
    ap.add_argument("--project", default="runs/nas_vs_s")
    ap.add_argument("--out", default=str(RESULTS / "nas_vs_s_aquarium"))
    ap.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        return train_job(args)
    import torch  # noqa: PLC0415

    import yolonas  # noqa: PLC0415
    from yolonas.data import load_data_yaml  # noqa: PLC0415
    from yolonas.nas.proxies import size_proxies  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    command = "python " + " ".join(sys.argv)
    targets = [t for t in args.targets.split(",") if t]
    if args.latency_only:
        result = json.loads(Path(args.out).with_suffix(".json").read_text())
        result["commands"].append(command)
        s = result["settings"]
        models = result["models"]
    else:
        models = [m for m in args.models.split(",") if m]
        seeds = args.seeds.split(",")
        args.parallel = args.parallel or (6 if args.device.startswith("cuda") else 1)
        s = {k: getattr(args, k) for k in ("recipe", "epochs", "imgsz", "batch", "device", "amp_dtype", "seeds",
                                            "blocks")}
        result = {"models": models, "settings": s, "commands": [command]}
        result["runs"] = train_all(args, models, seeds)
        result["data"] = args.data
    classes = len(load_data_yaml(result["data"]).class_names)
    result["size"] = {m: size_proxies(yolonas.load(m).spec, s["imgsz"], classes) for m in models}
    result["summary"] = summarise(models, result["runs"])
    lat = result.setdefault("latency", {})
    lat.update(latency(models, targets, s["imgsz"], classes, args.blocks, args.runs, args.threads))
    result["verdicts"] = verdicts(models, result["summary"], lat, s["imgsz"])
    if args.note:
        result.setdefault("notes", []).append(args.note)
    write(args, result)
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
