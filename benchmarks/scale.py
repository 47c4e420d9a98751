"""Plain `predict` against the Ray Data job (`yolonas.scale`) on this machine, with the same total threads.

The same images (coco128 and aquarium files linked again and again under new names into .data/scale/) go through
plain predict (one process: `Predictor.stream` with T threads) and through `run_job` on a local Ray (A actors x T/A
threads each), every run in a fresh child process. Measured per run: its seconds and images/s, start-up included
(Ray's start, the model's load), the seconds to the first result, and the peak memory of the whole process tree
(the child, and for Ray its GCS, raylet and workers: the sum of PSS, and of RSS, sampled every 0.25 s). Two image
counts (1,000 and 5,000 by default) give the rate without start-up, (n2 - n1) / (t2 - t1), and the start-up
itself, and show whether memory grows with the number of images. From the measured rate per actor: a paper plan
of N nodes x M cores. Writes benchmarks/results/scale_<tag>.{json,md}.

    python benchmarks/scale.py --weights runs/train/x/weights/best_int8.xml --images 1000,5000 --tag epyc
    python benchmarks/scale.py --weights yolo_nas_tiny --imgsz 64 --images 40,80 --threads 2 --tag smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from _common import REPO, RESULTS, datasets_root, machine

DATA = REPO / ".data" / "scale"
SOURCES = ("coco128/images/train2017", "aquarium/valid/images", "aquarium/test/images")


def make_images(n: int) -> Path:
    """A folder of `n` image files: the shared data sets' images linked under new names, repeated as needed."""
    folder = DATA / f"images_{n}"
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    files = sorted(p for s in SOURCES for p in (datasets_root() / s).glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dest = folder / f"{i:06d}_{files[i % len(files)].name}"
        if not dest.exists():
            try:
                os.link(files[i % len(files)], dest)
            except OSError:  # another file system: a copy instead
                dest.write_bytes(files[i % len(files)].read_bytes())
    return folder


class Marks:
    """When the run started and when it gave its first result (Ray delivers rows by block, so the times of later
    rows say little; the rate without start-up comes from two image counts instead, see `verdict`)."""

    def __init__(self):
        self.start, self.first = time.perf_counter(), None

    def update(self, rows: int) -> None:
        self.first = self.first or time.perf_counter()

    def result(self, rows: int) -> dict:
        end = time.perf_counter()
        return {"images": rows, "seconds": end - self.start, "images_per_s": rows / (end - self.start),
                "seconds_to_first": (self.first or end) - self.start}


def child_plain(args) -> dict:
    """Plain predict in this process: `Predictor.stream` over the folder with T threads."""
    import torch  # noqa: PLC0415 - the parent process stays light

    from yolonas.deploy.open import open_predictor  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    marks = Marks()
    predictor = open_predictor(args.weights, imgsz=args.imgsz, threads=args.threads, batch=args.batch)
    rows = 0
    for _ in predictor.stream(str(args.folder)):
        rows += 1
        marks.update(rows)
    return marks.result(rows)


def child_ray(args) -> dict:
    """The Ray job on a local Ray started here: A actors x T/A threads."""
    from yolonas.scale import JobConfig, PredictOptions, run_job  # noqa: PLC0415

    marks = Marks()
    with tempfile.TemporaryDirectory() as out:
        cfg = JobConfig(model=args.weights, output=out, actors=args.actors, threads=args.threads // args.actors,
                        predict=PredictOptions(imgsz=args.imgsz, batch=args.batch))
        summary = run_job(args.folder, cfg, on_progress=lambda rows, failed: marks.update(rows))
    return {**marks.result(summary.done + summary.failed), "failed": summary.failed, "pool": summary.pool,
            "job_seconds": summary.seconds}


def sample_tree(proc: subprocess.Popen, every_s: float = 0.25) -> dict:
    """Peak sum of PSS and of RSS over `proc` and all its descendants, until it ends."""
    peak_pss = peak_rss = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        pss = rss = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                mem = p.memory_full_info()
                pss, rss = pss + getattr(mem, "pss", mem.rss), rss + mem.rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(every_s)
    return {"peak_pss_mb": peak_pss / 2**20, "peak_rss_mb": peak_rss / 2**20}


def run_child(args, engine: str, n: int, actors: int = 1) -> dict:
    """One measured run in a fresh process, with its memory sampled from here."""
    cmd = [sys.executable, __file__, "--child", engine, "--weights", args.weights, "--threads", str(args.threads),
           "--batch", str(args.batch), "--n", str(n), "--folder", str(make_images(n)), "--actors", str(actors)]
    if args.imgsz:
        cmd += ["--imgsz", str(args.imgsz)]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, env=env, cwd=REPO)
        memory = sample_tree(proc)
        out.seek(0)
        lines = out.read().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{engine} run on {n} images failed (exit {proc.returncode})")
    result = {"engine": engine, "n": n, "actors": actors, "threads_per_actor": args.threads // actors,
              **json.loads(lines[-1]), **memory}
    print(json.dumps(result), file=sys.stderr)
    return result


def writer_rate() -> float:
    """Rows per second the job's one writer (this process's Parquet files) sustains: a ceiling for a cluster."""
    from yolonas.infer.detections import Detections  # noqa: PLC0415
    from yolonas.scale.job import PartWriter  # noqa: PLC0415
    from yolonas.scale.rows import result_table  # noqa: PLC0415

    rng = np.random.default_rng(0)
    dets = [Detections(rng.uniform(0, 640, (10, 4)).astype(np.float32), rng.uniform(size=10).astype(np.float32),
                       rng.integers(0, 80, 10), [f"c{i}" for i in range(80)], (480, 640)) for _ in range(1000)]
    table = result_table([f"/data/images/{i:09d}.jpg" for i in range(1000)], dets)
    with tempfile.TemporaryDirectory() as out:
        writer = PartWriter(Path(out), "parquet", 10_000)
        start = time.perf_counter()
        for _ in range(50):
            writer.add(table)
        writer.flush()
        return 50_000 / (time.perf_counter() - start)


def paper_plan(per_actor: float, threads: int, write_rate: float) -> list[dict]:
    """What N nodes x M cores would do at the measured rate per actor of `threads` threads (linear scaling)."""
    plan = []
    for nodes in (1, 4, 16, 64):
        for cores in (16, 32, 64):
            actors = nodes * (cores // threads)
            rate = actors * per_actor
            plan.append({"nodes": nodes, "cores": cores, "actors": actors, "images_per_s": rate,
                         "hours_1e6": 1e6 / rate / 3600, "hours_1e7": 1e7 / rate / 3600,
                         "writer_bound": rate > write_rate})
    return plan


def markdown(result: dict) -> str:
    """The results as a Markdown report."""
    lines = [f"# Plain predict vs Ray Data ({result['tag']})", "", f"Machine: {result['machine']['cpu']}, "
             f"{result['threads']} threads in total for each run; model {result['weights']} at "
             f"{result['imgsz'] or 'its own size'}, batch {result['batch']}.", "",
             "| engine | images | actors x threads | seconds | images/s | to first (s) | peak PSS (MB) | "
             "peak RSS (MB) |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        lines.append(f"| {r['engine']} | {r['n']} | {r['actors']} x {r['threads_per_actor']} | {r['seconds']:.1f} | "
                     f"{r['images_per_s']:.1f} | {r['seconds_to_first']:.1f} | {r['peak_pss_mb']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += ["", "## Against plain predict", ""]
    lines += [f"- {k}: {v}" for k, v in result["verdict"].items()]
    lines += ["", f"## Paper plan (measured {result['per_actor']:.2f} images/s per actor of "
              f"{result['plan_threads']} threads; one writer sustains {result['writer_rows_per_s']:.0f} rows/s)", "",
              "| nodes | cores | actors | images/s | hours for 1e6 | hours for 1e7 | over the writer |",
              "|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {p['nodes']} | {p['cores']} | {p['actors']} | {p['images_per_s']:.0f} | {p['hours_1e6']:.2f} | "
              f"{p['hours_1e7']:.1f} | {'yes' if p['writer_bound'] else ''} |" for p in result["plan"]]
    return "\n".join(lines) + "\n"


def marginal(runs: list[dict], engine: str, actors: int, small: int, large: int) -> tuple[float, float]:
    """(images/s without start-up, start-up seconds) of one engine and pool from its runs on two image counts."""
    a, b = (next(r for r in runs if (r["engine"], r["actors"], r["n"]) == (engine, actors, n)) for n in (small, large))
    if b["seconds"] <= a["seconds"]:  # noise larger than the work: no rate to give
        return float("nan"), float("nan")
    rate = (large - small) / (b["seconds"] - a["seconds"])
    return rate, a["seconds"] - small / rate


def verdict(runs: list[dict], counts: list[int]) -> tuple[dict, dict]:
    """(Ray against plain predict: rates, start-up, memory at the largest count against the smallest; the best
    Ray run without start-up), both from the smallest and largest counts."""
    small, large = min(counts), max(counts)
    pools = sorted({(r["engine"], r["actors"]) for r in runs})
    rates = {pool: marginal(runs, *pool, small, large) for pool in pools}
    plain = rates[("plain", 1)]
    best = max((p for p in pools if p[0] == "ray"), key=lambda p: np.nan_to_num(rates[p][0], nan=-1))
    out = {f"images/s without start-up ({small} -> {large} images), {e} {a} actors": round(rates[(e, a)][0], 2)
           for e, a in pools}
    out |= {f"start-up seconds, {e} {a} actors": round(rates[(e, a)][1], 1) for e, a in pools}
    out["ray (best pool) / plain, images/s without start-up"] = round(rates[best][0] / plain[0], 3)
    with_start = {r["engine"] + str(r["actors"]): r["images_per_s"] for r in runs if r["n"] == small}
    out[f"ray (best pool) / plain, images/s with start-up on {small} images"] = round(
        with_start[f"ray{best[1]}"] / with_start["plain1"], 3)
    for e, a in pools:
        pss = [next(r["peak_pss_mb"] for r in runs if (r["engine"], r["actors"], r["n"]) == (e, a, n))
               for n in (small, large)]
        out[f"peak PSS {large} / {small} images, {e} {a} actors"] = round(pss[1] / pss[0], 3)
    best_run = next(r for r in runs if (r["engine"], r["actors"], r["n"]) == (*best, large))
    return out, {**best_run, "rate": rates[best][0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint, published name or exported .onnx/.xml")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--images", default="1000,5000", help="image counts, comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="total threads of every run")
    p.add_argument("--actors", default="1,2,4", help="Ray pools to try (those dividing --threads)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tag", default="cpu")
    p.add_argument("--child", choices=("plain", "ray"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.actors = int(args.actors)
        print(json.dumps((child_plain if args.child == "plain" else child_ray)(args)))
        return
    counts = [int(n) for n in args.images.split(",")]
    if len(set(counts)) < 2:
        raise SystemExit("--images: give two counts at least (the rate without start-up comes from their difference)")
    pools = [a for a in (int(a) for a in args.actors.split(",")) if args.threads % a == 0]
    runs = []
    for n in counts:
        runs.append(run_child(args, "plain", n))
        runs += [run_child(args, "ray", n, actors) for actors in pools]
    judged, best = verdict(runs, counts)
    per_actor = best["rate"] / best["actors"]
    write_rate = writer_rate()
    result = {"tag": args.tag, "weights": args.weights, "imgsz": args.imgsz, "batch": args.batch,
              "threads": args.threads, "machine": machine(), "runs": runs, "verdict": judged,
              "per_actor": per_actor, "plan_threads": best["threads_per_actor"], "writer_rows_per_s": write_rate,
              "plan": paper_plan(per_actor, best["threads_per_actor"], write_rate)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scale_{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"scale_{args.tag}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
