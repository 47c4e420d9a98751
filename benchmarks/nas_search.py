"""Acceptance run of `yolonas search` on this CPU: time end to end, latency-model error on the front, Kendall tau.

Writes benchmarks/results/nas_search_cpu.{json,md,png}. The run folder (study, specs) stays under runs/search/.

    python benchmarks/nas_search.py [--trials 30] [--imgsz 320] [--latency-cap 60] [--train-top 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import RESULTS, datasets_root, machine
from yolonas.nas import SearchConfig, search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(datasets_root() / "aquarium" / "data.yaml"))
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--latency-cap", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-top", type=int, default=3)
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=32)
    ap.add_argument("--name", default="bench_nas_cpu")
    ap.add_argument("--fresh", action="store_true", help="Delete the run folder and its latency table first.")
    args = ap.parse_args()

    out = Path("runs/search") / args.name
    table = out.parent / f"{args.name}_latency_table.json"
    if args.fresh:  # a cold start: every part is measured, as on a new machine
        shutil.rmtree(out, ignore_errors=True)
        table.unlink(missing_ok=True)
    cfg = SearchConfig(data=args.data, out=out, imgsz=(args.imgsz,), trials=args.trials, population=args.population,
                       latency_cap=args.latency_cap, threads=args.threads, train_top=args.train_top,
                       train_epochs=args.train_epochs, train_images=args.train_images, latency_table=table)
    t0 = time.perf_counter()
    result = search(cfg).to_dict()
    total_s = time.perf_counter() - t0
    result["total_s"] = total_s
    result["machine"] = machine()
    result["command"] = vars(args)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "nas_search_cpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    shutil.copy(out / "front.png", RESULTS / "nas_search_cpu.png")
    check = result.get("latency_check", {})
    t = check.get("table", {})
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "fresh")
    header = [
        "# Architecture search on the CPU (acceptance run)", "",
        f"`python benchmarks/nas_search.py {flags}` on {result['machine']['cpu']}, "
        f"data {Path(args.data).parent.name}.", "",
        f"- End to end: **{total_s / 60:.1f} min** ({result['trials_this_run']} trials in {result['search_s']:.0f} s, "
        f"front re-measured in {result.get('measure_s', 0):.0f} s, short training {result.get('train_s', 0):.0f} s).",
        f"- Latency table: {result['latency_table']['entries']} entries, {result['latency_table']['hits']} hits, "
        f"{result['latency_table']['misses']} misses this run.",
        f"- Latency prediction vs measured end to end on {t.get('n', 0)} front members: median error "
        f"{_pct(t.get('raw_median'))} raw, {_pct(t.get('corrected_loo_median'))} after a linear correction "
        "(leave-one-out), and "
        f"{_pct(check.get('same_turns', {}).get('raw_median'))} when the parts are re-measured in the same turns.",
        f"- Machine load: load average {', '.join(f'{x:.1f}' for x in result['load_average'])} (1, 5, 15 min) at "
        "the end of the search on 2 cores" + (": other work shared the CPU, so these latencies were taken under "
                                              "load." if max(result["load_average"]) > 2.0 else "."), "",
    ]
    front = (out / "front.md").read_text().split("\n", 1)[1]
    (RESULTS / "nas_search_cpu.md").write_text("\n".join(header) + front + "\n![front](nas_search_cpu.png)\n")
    print("\n".join(header))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    main()
