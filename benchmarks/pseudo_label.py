"""Pseudo-labelling on aquarium: hide the labels of part of the training split, let a teacher label those images,
measure the pseudo-labels against the hidden truth, then train real vs real + pseudo and compare AP on `test`.

Issue 7, acceptance (2). Two ways to get a hidden part B that the teacher has never seen:
- `--pool train` (default): the `train` key (aquarium: valid/, 127 images) is split by `--split-seed` into a
  labelled part A (`--labelled-fraction`) and B; the teacher is trained here on A only (`--teacher-model`,
  `--teacher-epochs`). Students are evaluated on `test`.
- `--pool test --teacher PATH`: A is the whole `train` key, the teacher a checkpoint trained on it (a strong one,
  say from a GPU run), and the `test` split is halved by `--split-seed`: B (pseudo-labelled) and E (evaluation).
  `--fold 1` swaps the halves, so two runs together evaluate on every test image, none seen by its student or
  teacher.
Pseudo-labels of B (score >= `--conf` become labels, [`--ignore-below`, conf) ignore regions) are compared with
B's true labels at IoU 0.5: precision, recall, per class. Then a student trains on A alone and on A + pseudo(B),
`--seeds` each, with the same number of optimizer steps (A alone gets proportionally more epochs), and each
last.pt (EMA) is evaluated on the evaluation split with VAL_NMS. Results are rewritten as runs finish; on the
CPU the students run one at a time (`--parallel`).

  GPU:   python benchmarks/pseudo_label.py --device cuda --out runs/pseudo_bench/report
  CPU, strong teacher: python benchmarks/pseudo_label.py --device cpu --pool test --teacher T.pt --imgsz 320 \
         --project runs/pseudo_test0 --out benchmarks/results/pseudo_label_aquarium_test_fold0 [--fold 1 ...]
  both folds: python benchmarks/pseudo_label.py --combine REPORT_FOLD0 REPORT_FOLD1 --out REPORT
  smoke: python benchmarks/pseudo_label.py --device cpu --imgsz 160 --teacher-epochs 1 --epochs 1 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from _common import test_metrics

MODES = ("real", "real+pseudo")


def train_run(data: str, model: str, epochs: int, seed: int, name: str, args) -> Path:
    """Train `model` on `data` with the benchmark's recipe and settings; the last.pt path."""
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    cfg = apply_overrides(load_recipe(args.recipe), {
        "data.path": data, "model.name": model, "schedule.epochs": epochs, "data.batch_size": args.batch,
        "data.workers": args.workers, "data.image_size": args.imgsz, "run.seed": seed, "run.project": args.project,
        "run.name": name, "run.exist_ok": True, "run.val_every": 0, "run.verbose": False, "run.plots": False,
        "run.device": args.device})
    return train(cfg).last


def split_labelled(args, root: Path) -> tuple[Path, list[Path], list[Path], int]:
    """A data.yaml training on part A, with `test` the evaluation split; the image lists A and B; the number of
    evaluation images."""
    from yolonas.data import load_data_yaml, read_data_yaml  # noqa: PLC0415
    from yolonas.data.yolo import split_images  # noqa: PLC0415

    d = read_data_yaml(args.data)
    split = "train" if args.pool == "train" else "test"
    files = sorted(p.absolute() for p in load_data_yaml(args.data, split).image_files)
    order = np.random.default_rng(args.split_seed).permutation(len(files))
    if args.pool == "train":
        n_a = max(1, round(args.labelled_fraction * len(files)))
        a, b = sorted(files[i] for i in order[:n_a]), sorted(files[i] for i in order[n_a:])
        evaluation = [str(p.absolute()) for p in split_images(args.data, "test", d)]
        n_eval = len(load_data_yaml(args.data, "test").image_files)
    else:
        halves = (order[: len(files) // 2], order[len(files) // 2:])
        b_idx, e_idx = halves if args.fold == 0 else halves[::-1]
        a = sorted(p.absolute() for p in load_data_yaml(args.data, "train").image_files)
        b = sorted(files[i] for i in b_idx)
        (root / "E.txt").write_text("".join(f"{files[i]}\n" for i in sorted(e_idx)))
        evaluation, n_eval = [str((root / "E.txt").absolute())], len(e_idx)
    (root / "A.txt").write_text("".join(f"{p}\n" for p in a))
    data_a = {"train": str((root / "A.txt").absolute()), "nc": d["nc"], "names": d["names"], "test": evaluation}
    if d.get("val"):
        data_a["val"] = [str(p.absolute()) for p in split_images(args.data, "val", d)]
    (root / "A.yaml").write_text(yaml.safe_dump(data_a, sort_keys=False))
    return root / "A.yaml", a, b, n_eval


def precision_recall(pseudo_data: Path, hidden: list[Path], args) -> dict:
    """Pseudo-labels (crowd/ignore boxes left out) vs the hidden true labels, IoU >= 0.5, same class, greedy."""
    import torch  # noqa: PLC0415
    from torchvision.ops import box_iou  # noqa: PLC0415

    from yolonas.data import load_data_yaml  # noqa: PLC0415
    from yolonas.data.yolo import YoloDataset  # noqa: PLC0415

    pseudo = load_data_yaml(pseudo_data, "train")
    truth = YoloDataset(hidden, pseudo.class_names)
    true_by_name = {Path(f).name: i for i, f in enumerate(truth.files)}
    c = len(pseudo.class_names)
    tp, n_pred, n_true = np.zeros(c, np.int64), np.zeros(c, np.int64), np.zeros(c, np.int64)
    for i, f in enumerate(pseudo.files):
        pb, pc, crowd = pseudo.labels(i)
        pb, pc = pb[~crowd], pc[~crowd]
        tb, tc, _ = truth.labels(true_by_name[Path(f).name])
        n_pred += np.bincount(pc, minlength=c)
        n_true += np.bincount(tc, minlength=c)
        if not len(pb) or not len(tb):
            continue
        iou = box_iou(torch.from_numpy(pb), torch.from_numpy(tb)).numpy()
        iou[pc[:, None] != tc[None, :]] = 0
        while iou.size and iou.max() >= 0.5:  # greedy one-to-one matching, best overlap first
            r, k = np.unravel_index(iou.argmax(), iou.shape)
            tp[pc[r]] += 1
            iou[r, :], iou[:, k] = 0, 0
    per_class = {n: {"precision": tp[j] / n_pred[j] if n_pred[j] else None,
                     "recall": tp[j] / n_true[j] if n_true[j] else None,
                     "pseudo": int(n_pred[j]), "true": int(n_true[j])} for j, n in enumerate(pseudo.class_names)}
    return {"precision": tp.sum() / max(1, n_pred.sum()), "recall": tp.sum() / max(1, n_true.sum()),
            "true_positives": int(tp.sum()), "pseudo_boxes": int(n_pred.sum()), "true_boxes": int(n_true.sum()),
            "iou": 0.5, "conf": args.conf, "per_class": per_class}


def student_job(args) -> None:
    """One (mode, seed) student run in its own process; writes <project>/<mode>_s<seed>.json."""
    tag = f"{args.mode.replace('+', '_')}_s{args.seed}"
    t0 = time.time()
    last = train_run(args.job_data, args.student, args.job_epochs, args.seed, tag, args)
    out = {"mode": args.mode, "seed": args.seed, "epochs": args.job_epochs, "train_seconds": round(time.time() - t0),
           "finished": True, **test_metrics(last, args.job_data, args.device)}
    Path(args.project, f"{tag}.json").write_text(json.dumps(out, indent=2))


def write_report(args, state: dict, seeds: list[str]) -> None:
    runs = []
    for mode in MODES:
        for seed in seeds:
            p = Path(args.project, f"{mode.replace('+', '_')}_s{seed}.json")
            runs.append(json.loads(p.read_text()) if p.is_file() else {"mode": mode, "seed": int(seed),
                                                                         "finished": False})
    summary = {}
    for mode in MODES:
        aps = [r["AP"] for r in runs if r["mode"] == mode and r["finished"]]
        summary[mode] = {"mean": statistics.mean(aps) if aps else None,
                         "sd": statistics.stdev(aps) if len(aps) > 1 else 0.0, "n": len(aps)}
    result = {"command": "python " + " ".join(sys.argv), **state, "runs": runs, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    pr = state.get("pseudo_quality", {})
    teacher_ap = state.get("teacher_test", {}).get("AP", float("nan"))
    if args.pool == "train":
        where = (f"Labelled part A: {state.get('labelled_images')} images of the train split; hidden part B: "
                 f"{state.get('hidden_images')} images of it; evaluation: test ({state.get('eval_images')} images).")
        trained = " - given, may have seen B's labels" if args.teacher else ", trained on A only"
    else:
        where = (f"Labelled part A: the whole train split ({state.get('labelled_images')} images); hidden part B: "
                 f"{state.get('hidden_images')} test images (fold {args.fold} of split seed {args.split_seed}); "
                 f"evaluation E: the other {state.get('eval_images')} test images.")
        trained = ", given, trained on A only: it has seen neither B nor E"
    lines = [f"# Pseudo-labelling on aquarium ({args.pool} pool)", "", where, "",
             f"Teacher: {state.get('teacher')} (AP on E {teacher_ap:.3f}){trained}.", ""]
    if pr:
        lines += [f"Pseudo-labels on B at conf {args.conf} (ignore band from {args.ignore_below}), IoU 0.5: precision "
                  f"{pr['precision']:.3f}, recall {pr['recall']:.3f} ({pr['pseudo_boxes']} pseudo vs "
                  f"{pr['true_boxes']} true boxes).", "", "| class | precision | recall | pseudo | true |",
                  "|---|---|---|---|---|"]
        for n, v in pr["per_class"].items():
            fmt = (lambda x: "-" if x is None else f"{x:.3f}")  # noqa: E731
            lines.append(f"| {n} | {fmt(v['precision'])} | {fmt(v['recall'])} | {v['pseudo']} | {v['true']} |")
        lines.append("")
    lines += [f"Students ({args.student}, {args.imgsz} px, recipe {args.recipe}, batch {args.batch}), same optimizer "
              "steps, last.pt (EMA) on E with VAL_NMS:", "",
              "| mode | seed | epochs | AP | AP50 |", "|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['mode']} | {r['seed']} | {r.get('epochs', '')} | "
                     + (f"{r['AP']:.3f} | {r['AP50']:.3f} |" if r["finished"] else "unfinished | |"))
    for mode, s in summary.items():
        if s["n"]:
            lines.append(f"| **{mode}** | mean ± sd (n={s['n']}) | | {s['mean']:.3f} ± {s['sd']:.3f} | |")
    if summary["real"]["n"] and summary["real+pseudo"]["n"]:
        gain = summary["real+pseudo"]["mean"] - summary["real"]["mean"]
        lines += ["", f"real + pseudo minus real: {gain:+.3f} AP (largest sd "
                  f"{max(summary['real']['sd'], summary['real+pseudo']['sd']):.3f})."]
    lines += ["", f"Command: `{result['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def combine(reports: list[str], out: str) -> None:
    """One summary of `--pool test` runs over both folds: per seed the mean of its fold APs, then mean ± sd."""
    runs = [json.loads(Path(r).with_suffix(".json").read_text()) for r in reports]
    lines = ["# Pseudo-labelling on aquarium, both folds of the test pool", "",
             "Each fold pseudo-labels one half of test/ with the teacher and evaluates the students on the other "
             "half; a seed's AP is the mean of its two folds.", "",
             "| fold | teacher AP on E | pseudo precision | pseudo recall | pseudo boxes | true boxes |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        q = r["pseudo_quality"]
        lines.append(f"| {r['fold']} | {r['teacher_test']['AP']:.3f} | {q['precision']:.3f} | {q['recall']:.3f} | "
                     f"{q['pseudo_boxes']} | {q['true_boxes']} |")
    tp = sum(r["pseudo_quality"]["true_positives"] for r in runs)
    n_pred = sum(r["pseudo_quality"]["pseudo_boxes"] for r in runs)
    n_true = sum(r["pseudo_quality"]["true_boxes"] for r in runs)
    lines += [f"| both | | {tp / max(1, n_pred):.3f} | {tp / max(1, n_true):.3f} | {n_pred} | {n_true} |", "",
              "| mode | seed | AP fold 0 | AP fold 1 | mean AP | mean AP50 |", "|---|---|---|---|---|---|"]
    summary = {}
    for mode in MODES:
        per_seed = []
        seeds = sorted({x["seed"] for r in runs for x in r["runs"] if x["mode"] == mode and x["finished"]})
        for seed in seeds:
            got = [next((x for x in r["runs"] if x["mode"] == mode and x["seed"] == seed and x["finished"]), None)
                   for r in runs]
            if any(g is None for g in got):
                continue
            ap, ap50 = statistics.mean(g["AP"] for g in got), statistics.mean(g["AP50"] for g in got)
            per_seed.append(ap)
            lines.append(f"| {mode} | {seed} | " + " | ".join(f"{g['AP']:.4f}" for g in got) + f" | {ap:.4f} | "
                         f"{ap50:.4f} |")
        summary[mode] = {"mean": statistics.mean(per_seed) if per_seed else None,
                         "sd": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0, "n": len(per_seed),
                         "per_seed": per_seed}
    for mode, v in summary.items():
        if v["n"]:
            lines.append(f"| **{mode}** | mean ± sd (n={v['n']}) | | | {v['mean']:.4f} ± {v['sd']:.4f} | |")
    if all(v["n"] for v in summary.values()):
        gain = summary["real+pseudo"]["mean"] - summary["real"]["mean"]
        paired = [b - a for a, b in zip(summary["real"]["per_seed"], summary["real+pseudo"]["per_seed"])]
        lines += ["", f"real + pseudo minus real: {gain:+.4f} AP (largest sd "
                  f"{max(v['sd'] for v in summary.values()):.4f}); per seed (same seed, both folds): "
                  + ", ".join(f"{d:+.4f}" for d in paired) + "."]
        summary["paired_gain"] = paired
    lines += ["", "Folds: " + ", ".join(f"`{r['command']}`" for r in runs), ""]
    Path(out).with_suffix(".md").write_text("\n".join(lines))
    Path(out).with_suffix(".json").write_text(json.dumps({"folds": reports, "summary": summary}, indent=2) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".data/aquarium/data.yaml")
    ap.add_argument("--pool", choices=("train", "test"), default="train",
                    help="where the hidden part B comes from (see above)")
    ap.add_argument("--fold", type=int, choices=(0, 1), default=0, help="--pool test: which half is B")
    ap.add_argument("--parallel", type=int, help="students at once (default: all on CUDA, 1 on the CPU)")
    ap.add_argument("--teacher", help="a trained checkpoint; default: train --teacher-model on part A here")
    ap.add_argument("--teacher-model", default="yolo_nas_s")
    ap.add_argument("--teacher-epochs", type=int, default=60)
    ap.add_argument("--student", default="yolo_nas_tiny")
    ap.add_argument("--recipe", default="scratch_small_data")
    ap.add_argument("--labelled-fraction", type=float, default=0.5)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--conf", type=float, default=0.4)
    ap.add_argument("--ignore-below", type=float, default=0.15)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=50, help="epochs of the real + pseudo students")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--project", default="runs/pseudo_bench")
    ap.add_argument("--out", default="runs/pseudo_bench/report")
    ap.add_argument("--combine", nargs="+", metavar="REPORT", help="summarise finished --pool test reports "
                    "(their --out paths) into --out, and stop")
    ap.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--job-data", help=argparse.SUPPRESS)
    ap.add_argument("--job-epochs", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        return student_job(args)
    if args.combine:
        return combine(args.combine, args.out)
    from yolonas.train import mix_data_yaml, pseudo_label  # noqa: PLC0415

    if args.pool == "test" and not args.teacher:
        sys.exit("--pool test needs --teacher: a checkpoint trained on the train split")

    root = Path(args.project)
    root.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds.split(",")
    for p in root.glob("*_s*.json"):
        p.unlink()
    data_a, a, b, n_eval = split_labelled(args, root)
    state: dict = {"pool": args.pool, "fold": args.fold, "labelled_images": len(a), "hidden_images": len(b),
                   "eval_images": n_eval, "conf": args.conf, "ignore_below": args.ignore_below, "imgsz": args.imgsz}
    t0 = time.time()
    teacher = args.teacher or str(train_run(str(data_a), args.teacher_model, args.teacher_epochs, 0, "teacher", args))
    state.update(teacher=teacher, teacher_seconds=round(time.time() - t0),
                 teacher_test=test_metrics(teacher, data_a, args.device))
    report = pseudo_label(teacher, b, root / "pseudo", threshold=args.conf, ignore_below=args.ignore_below,
                          device=args.device, batch_size=16)
    state["pseudo_report"] = report.to_dict()
    state["pseudo_quality"] = precision_recall(Path(report.data), b, args)
    mixed = mix_data_yaml(data_a, root / "pseudo", root / "mixed.yaml")
    write_report(args, state, seeds)
    print(Path(args.out).with_suffix(".md").read_text(), flush=True)

    # Same optimizer steps: A alone has fewer images per epoch, so it gets proportionally more epochs.
    real_epochs = max(1, math.ceil(args.epochs * (len(a) + len(b)) / len(a)))
    parallel = args.parallel or (1 if args.device == "cpu" else 2 * len(seeds))
    pending, jobs = [], []
    for mode, data, epochs in (("real", data_a, real_epochs), ("real+pseudo", mixed, args.epochs)):
        for seed in seeds:
            tag = f"{mode.replace('+', '_')}_s{seed}"
            pending.append((tag, [sys.executable, __file__, "--job", "--mode", mode, "--seed", seed, "--job-data",
                                  str(data), "--job-epochs", str(epochs), "--data", args.data, "--student",
                                  args.student, "--recipe", args.recipe, "--batch", str(args.batch), "--imgsz",
                                  str(args.imgsz), "--workers", str(args.workers), "--device", args.device,
                                  "--project", args.project]))
    # Interleave the modes so a cut-short CPU run still has both sides for its first seeds.
    pending = [pending[i // 2 + (i % 2) * len(seeds)] for i in range(len(pending))]
    while pending or any(p.poll() is None for p, _ in jobs):
        while pending and sum(p.poll() is None for p, _ in jobs) < parallel:
            tag, cmd = pending.pop(0)
            log = open(root / f"{tag}.log", "w")  # noqa: SIM115 - closed below
            jobs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ), log))
        write_report(args, state, seeds)
        time.sleep(15)
    for _, log in jobs:
        log.close()
    write_report(args, state, seeds)
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
