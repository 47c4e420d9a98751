"""Latency and throughput of any backend: forward only and end to end, with a stage breakdown; and several
backends side by side, end to end from image files, with the fastest named."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from yolonas.data.images import read_image
from yolonas.deploy.timing import cpu_info, cycling, time_blocks
from yolonas.infer.predictor import Predictor

STAGES = ("decode", "pre", "forward", "post")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_stages(predictor: Predictor) -> tuple[Callable[[list], list], dict[str, list[float]]]:
    """(run, stage times): `run(items)` is `predictor.detect` on a batch of images (arrays, or files it decodes
    first), stage by stage through the Predictor's own methods, appending each stage's ms: decode, pre (letterbox),
    forward, post (NMS, boxes back)."""
    device = predictor.device
    stages: dict[str, list[float]] = {k: [] for k in STAGES}

    def run(items: list) -> list:
        t0 = time.perf_counter()
        images = [read_image(i) if isinstance(i, (str, Path)) else i for i in items]
        t1 = time.perf_counter()
        x, infos = predictor.preprocess(images)
        _sync(device)
        t2 = time.perf_counter()
        out = predictor.forward(x)
        _sync(device)
        t3 = time.perf_counter()
        result = predictor.postprocess(out, infos)
        _sync(device)
        t4 = time.perf_counter()
        for key, value in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[key].append(value * 1e3)
        return result

    return run, stages


@dataclass
class BenchResult:
    """One backend at one batch size. Times in ms per batch; throughput in images per second (end to end)."""

    backend: str
    device: str
    batch: int
    threads: int
    warmup: int
    runs: int
    image_size: tuple[int, int]
    forward_ms: dict[str, float] = field(default_factory=dict)
    end_to_end_ms: dict[str, float] = field(default_factory=dict)
    stages_ms: dict[str, float] = field(default_factory=dict)  # medians: pre, forward, post
    throughput: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def benchmark(predictor: Predictor, images: list[np.ndarray], batch: int = 1, runs: int = 30, warmup: int = 5,
              name: str = "backend") -> BenchResult:
    """Time `predictor` on `batch` real images per call, `runs` times after `warmup`.

    Forward only = `predictor.forward` on a ready input batch. End to end = its preprocess + forward + postprocess
    (letterbox, backend, NMS, boxes back to the original images): what `Predictor.predict_arrays` does per batch.
    """
    chosen = [images[i % len(images)] for i in range(batch)]
    x, _ = predictor.preprocess(chosen)

    def forward():
        out = predictor.forward(x)
        _sync(predictor.device)
        return out

    run, stages = timed_stages(predictor)
    blocks = min(3, runs)
    with torch.inference_mode():
        for _ in range(warmup):
            forward()
            run(chosen)
        for v in stages.values():
            v.clear()
        timings = time_blocks({"forward": forward, "end_to_end": lambda: run(chosen)}, blocks=blocks,
                              runs=-(-runs // blocks), warmup=0)
    e2e_stats = timings.percentiles("end_to_end")
    return BenchResult(
        backend=name, device=str(predictor.device), batch=batch, threads=torch.get_num_threads(), warmup=warmup,
        runs=runs, image_size=tuple(predictor.preprocessing.image_size), forward_ms=timings.percentiles("forward"),
        end_to_end_ms=e2e_stats, stages_ms={k: statistics.median(stages[k]) for k in ("pre", "forward", "post")},
        throughput=batch / (e2e_stats["p50"] / 1e3),
    )


def markdown_table(results: list[BenchResult]) -> str:
    """A Markdown table of benchmark results, one row per (backend, batch)."""
    lines = ["| backend | device | batch | forward p50 / p90 / p99 (ms) | end to end p50 / p90 / p99 (ms) "
             "| pre / forward / post (ms) | images/s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        f, e, s = r.forward_ms, r.end_to_end_ms, r.stages_ms
        lines.append(f"| {r.backend} | {r.device} | {r.batch} | {f['p50']:.1f} / {f['p90']:.1f} / {f['p99']:.1f} | "
                     f"{e['p50']:.1f} / {e['p90']:.1f} / {e['p99']:.1f} | {s['pre']:.1f} / {s['forward']:.1f} / "
                     f"{s['post']:.1f} | {r.throughput:.1f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ side by side


@dataclass
class PathResult:
    """One deployment path, end to end at batch 1 from an image file: medians over blocks (ms)."""

    name: str
    end_to_end_ms: float
    stages_ms: dict[str, float]  # empty for a path timed elsewhere (a peer)
    vs_baseline: float | None  # how many times faster than the baseline path (per-block ratios)
    block_ms: list[float]

    @property
    def overhead(self) -> float | None:
        """Letterbox + NMS + boxes back as a fraction of pre + forward + post (decoding the file aside: for folders
        and videos it overlaps the network)."""
        s = self.stages_ms
        if not s:
            return None
        return (s["pre"] + s["post"]) / max(s["pre"] + s["forward"] + s["post"], 1e-9)

    def to_dict(self) -> dict:
        return {**asdict(self), "pre_post_share": self.overhead}


def compare(predictors: dict[str, Predictor], items: list, *, baseline: str | None = None, blocks: int = 5,
            runs: int = 10, warmup: int = 3, turns: dict | None = None) -> list[PathResult]:
    """Each predictor end to end on one image per call (files decoded per call), taking turns by blocks
    (deploy.timing), fastest first; `baseline` (default: the first) is what the speed-ups are relative to.
    `turns` are paths timed elsewhere (deploy.timing.Turn: a peer in its own venv), in the same blocks."""
    baseline = baseline or next(iter(predictors))
    runners, stages = {}, {}
    for name, predictor in predictors.items():
        run, stages[name] = timed_stages(predictor)
        runners[name] = cycling(lambda item, run=run: run([item]), items)
    with torch.inference_mode():
        for run in (r for r in runners.values() for _ in range(warmup)):
            run()
        for times in (t for s in stages.values() for t in s.values()):
            times.clear()  # stage medians of timed runs only, as the end-to-end ones
        timings = time_blocks(runners, blocks=blocks, runs=runs, warmup=0, turns=turns)
    results = [PathResult(name, timings.median(name),
                          {k: statistics.median(v) for k, v in stages[name].items()} if name in stages else {},
                          timings.ratio(baseline, name), timings.block_medians(name)) for name in timings.samples]
    return sorted(results, key=lambda r: r.end_to_end_ms)


def compare_markdown(results: list[PathResult], baseline: str, skipped: dict[str, str], note: str = "") -> str:
    """The side-by-side table with the fastest path marked, the CPU named with its instruction sets."""
    cpu = cpu_info()
    lines = [f"CPU: {cpu.describe()}", "",
             f"| path | end to end (ms) | x {baseline} | decode / letterbox / forward / post (ms) | pre + post share |",
             "|---|---|---|---|---|"]
    for i, r in enumerate(results):
        s = r.stages_ms
        name = f"**{r.name}** (fastest)" if i == 0 else r.name
        split = f"{s['decode']:.1f} / {s['pre']:.1f} / {s['forward']:.1f} / {s['post']:.1f}" if s else "(its own)"
        share = f"{r.overhead:.0%}" if s else ""
        lines.append(f"| {name} | {r.end_to_end_ms:.1f} | x{r.vs_baseline:.2f} | {split} | {share} |")
    lines += [f"| {name} | not run: {why} | | | |" for name, why in skipped.items()]
    if note:
        lines += ["", note]
    return "\n".join(lines)
