"""GPU latency and throughput in fp16: YOLO-NAS S/M/L and Ultralytics YOLOv8s, same process, same treatments.

Issue 5, point 4. Every model runs through our `TorchBackend` (fused, fp16 copy, forward + box decode on a ready
640x640 batch already on the GPU; no NMS), under four treatments: eager NCHW, channels-last, channels-last +
`torch.compile`, channels-last + CUDA graphs. YOLOv8s is built from Ultralytics' yaml with random weights (speed
does not depend on weights), fused with its own `fuse()`, and wrapped so that its decoded output is split into
(boxes, scores) exactly as ours is. Per batch size all engines are built and warmed up, then timed in blocks in
which they take turns; the table gives medians of per-block medians and, per treatment, the median of
per-block ratios against YOLOv8s under the same treatment.

    python benchmarks/latency_gpu.py [--batches 1,32,64] [--blocks 5] [--deadline 420] [--out DIR]

`torch.compile` takes tens of seconds per model and shape; past --deadline seconds no more compiled engines are
built (the table says which are missing), so that a time-limited run still returns its results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import yolonas
from _common import RESULTS, machine
from yolonas.deploy.timing import time_blocks
from yolonas.infer import TorchBackend
from yolonas.preprocess import Preprocessing

TREATMENTS = ("eager", "channels_last", "compile", "cuda_graphs")
RUNS = {1: 40, 8: 20, 16: 12, 32: 8, 64: 5}


class UltralyticsDetector(nn.Module):
    """An Ultralytics detection model behind YoloNAS' forward/decode split: decode = its decoded output as
    (xyxy boxes, class scores), which is what our decode returns."""

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net
        self.class_names = [str(i) for i in range(num_classes)]
        self.preprocessing = Preprocessing(image_size=(640, 640))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out  # eval mode: (decoded [B, 4 + C, N], feats)

    @staticmethod
    def decode(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.transpose(1, 2)
        xy, wh = y[..., :2], y[..., 2:4]
        return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1), y[..., 4:]


def build_models(with_ultralytics: bool) -> dict[str, nn.Module]:
    models = {name: yolonas.load(name).eval().fuse() for name in ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")}
    if with_ultralytics:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_VERBOSE", "0")
        from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415 - optional peer

        net = DetectionModel("yolov8s.yaml", nc=80, verbose=False).eval()
        models["yolov8s"] = UltralyticsDetector(net.fuse(verbose=False), 80).eval()
    return models


def make_engine(model: nn.Module, treatment: str) -> TorchBackend:
    return TorchBackend(model, "cuda", half=True, channels_last=treatment != "eager",
                        compile=treatment == "compile", cuda_graphs=treatment == "cuda_graphs")


def synced(engine: TorchBackend, x: torch.Tensor):
    """One call of `engine` that returns only when the GPU is done: a fn for time_blocks."""
    def run():
        engine(x)
        torch.cuda.synchronize()

    return run


def run_batch(models: dict[str, nn.Module], batch: int, blocks: int, deadline: float, t_start: float) -> dict:
    # Fresh compile caches per batch size: dynamo's per-function recompile limit is shared by all models, and
    # once hit it silently falls back to eager, which would time eager code under the "compile" label.
    torch._dynamo.reset()
    x = torch.rand(batch, 3, 640, 640, device="cuda")
    engines, build_s, skipped = {}, {}, []
    for treatment in TREATMENTS:
        for name, model in models.items():
            if treatment == "compile" and time.time() - t_start > deadline:
                skipped.append(f"{name}/{treatment}")
                continue
            t0 = time.time()
            engine = make_engine(model, treatment)
            for _ in range(3):  # compile / capture / cuDNN autotuning happen here, untimed
                engine(x)
            torch.cuda.synchronize()
            engines[(name, treatment)] = engine
            build_s[f"{name}/{treatment}"] = round(time.time() - t0, 1)
            print(f"  batch {batch}: {name}/{treatment} ready in {build_s[f'{name}/{treatment}']} s",
                  file=sys.stderr)
    runs = RUNS.get(batch, 5)
    timings = time_blocks({k: synced(e, x) for k, e in engines.items()}, blocks, runs, warmup=0)
    block_ms = {k: timings.block_medians(k) for k in engines}
    rows = []
    for (name, treatment), ms in block_ms.items():
        row = {"model": name, "treatment": treatment, "batch": batch, "ms": statistics.median(ms),
               "images_per_s": batch / (statistics.median(ms) / 1e3), "block_ms": ms}
        peer = block_ms.get(("yolov8s", treatment))
        if peer is not None:
            row["time_vs_yolov8s"] = statistics.median(a / b for a, b in zip(ms, peer, strict=True))
        rows.append(row)
    del engines
    torch.cuda.empty_cache()
    return {"batch": batch, "rows": rows, "build_s": build_s, "skipped": skipped}


def markdown(results: list[dict], header: str) -> str:
    lines = [header, ""]
    for res in results:
        b = res["batch"]
        lines += [f"## batch {b}", "", "| model | " + " | ".join(TREATMENTS) + " |",
                  "|---|" + "---|" * len(TREATMENTS)]
        by = {(r["model"], r["treatment"]): r for r in res["rows"]}
        for name in dict.fromkeys(r["model"] for r in res["rows"]):
            cells = []
            for t in TREATMENTS:
                r = by.get((name, t))
                if r is None:
                    cells.append("not built")
                    continue
                value = f"{r['ms']:.2f} ms" if b == 1 else f"{r['images_per_s']:.0f} img/s"
                if "time_vs_yolov8s" in r and name != "yolov8s":
                    value += f" (x{r['time_vs_yolov8s']:.2f} of v8s time)"
                cells.append(value)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if res["skipped"]:
            lines.append(f"\nNot built (past the deadline): {', '.join(res['skipped'])}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,32,64")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--deadline", type=float, default=420.0, help="seconds after which no more torch.compile")
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "latency_gpu"))
    ap.add_argument("--merge", help="an earlier JSON result: its batch sizes not measured now are kept")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("latency_gpu.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    torch._dynamo.config.recompile_limit = 64  # graph breaks in Ultralytics' modules need many entries
    t_start = time.time()
    try:
        models = build_models(not args.no_ultralytics)
    except ImportError as e:
        sys.exit(f"{e}: install the peer (pip install ultralytics) or pass --no-ultralytics")
    info = {**machine(), "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
            "command": "python benchmarks/latency_gpu.py " + " ".join(sys.argv[1:])}
    header = (f"# GPU fp16 latency (batch 1) and throughput (larger batches)\n\n{info['gpu']}, torch {info['torch']}, "
              f"CUDA {info['cuda']}. Forward + box decode on a ready 640x640 fp16 batch on the GPU (no NMS), fused "
              "models, fp16 weights, cuDNN benchmark on. Medians of per-block medians over "
              f"{args.blocks} blocks in which all engines take turns; 'x of v8s time' = median per-block time ratio "
              "against YOLOv8s under the same treatment (<1 = faster than YOLOv8s).\n\n"
              f"Command: `{info['command']}`")
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    if args.merge:
        results = [r for r in json.loads(Path(args.merge).read_text())["results"] if r["batch"] not in batches]
    for batch in batches:
        results.append(run_batch(models, batch, args.blocks, args.deadline, t_start))
        results.sort(key=lambda r: r["batch"])
        out = Path(args.out)  # written after every batch size, so a run cut short keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(results, header) + "\n")
        print(markdown(results[-1:], ""), file=sys.stderr)


if __name__ == "__main__":
    main()
