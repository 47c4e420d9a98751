"""The fastest CPU path, ours against Ultralytics': yolo_nas_s on every path `yolonas bench --all` builds (PyTorch,
ONNX Runtime, OpenVINO; fp32, bf16, INT8 by NNCF and by our QDQ file) against YOLOv8s, YOLO11s and YOLO26s on
every CPU path Ultralytics ships (its own ONNX and OpenVINO exports, its own NNCF INT8 export, its own predictor,
in .venv-ultralytics), all taking turns block by block in one run (deploy.timing).

End to end = decode the image file + letterbox + forward + NMS + boxes back, batch 1, 640, on real aquarium test
images; both sides calibrate INT8 on 64 images of aquarium's train split (valid/). Random weights on both sides
(speed does not depend on them; with random weights no box passes 0.25, so NMS is light on both sides).
Writes benchmarks/results/fastest_cpu_<tag>.{json,md}.

    python benchmarks/fastest_cpu.py [--blocks 5 --runs 10 --threads 2 --tag epyc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _common import REPO, RESULTS, datasets_root, machine
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_s
from yolonas.deploy.backends import OpenVINOBackend
from yolonas.deploy.benchmark import compare, compare_markdown
from yolonas.deploy.timing import block_ratio, cpu_info
from yolonas.infer.predictor import Predictor
from yolonas.quant.config import QuantConfig
from yolonas.quant.paths import BASELINE, build_paths
from yolonas.quant.pipeline import quantize

PEER_PYTHON = REPO / ".venv-ultralytics" / "bin" / "python"
PEER_SCRIPT = REPO / "benchmarks" / "peers" / "ultralytics_bench.py"


def start_peer(args, images: list[Path], calib: Path) -> tuple[subprocess.Popen, dict]:
    """The Ultralytics child in serve mode, every (model, path) built and warm; its ready line."""
    cmd = [str(PEER_PYTHON), str(PEER_SCRIPT), "--serve", "--models", args.peer_models, "--paths", args.peer_paths,
           "--imgsz", str(args.imgsz), "--threads", str(args.threads), "--runs", str(args.runs),
           "--calib-data", str(calib), "--calib-images", "64", *map(str, images)]
    peer = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = json.loads(peer.stdout.readline())
    if ready.get("event") != "ready":
        sys.exit(f"peer did not start: {ready}")
    return peer, ready


def peer_turns(peer: subprocess.Popen, keys: list[str], log: list[dict]) -> dict:
    """A deploy.timing Turn per peer key: one block of the peer's own timed predictions."""
    def turn(key: str):
        def run(runs: int) -> list[float]:
            peer.stdin.write(key + "\n")
            peer.stdin.flush()
            line = json.loads(peer.stdout.readline())
            if line.get("event") != "block":
                raise RuntimeError(f"peer: {line}")
            log.append(line)
            return line["samples_ms"]
        return run

    return {f"{k} (ultralytics)": turn(k) for k in keys}


def our_paths(args, work: Path, calib: Path) -> tuple[dict, dict]:
    """Every path bench --all builds for a random-init yolo_nas_s, plus OpenVINO INT8 from our QDQ file."""
    torch.manual_seed(0)
    model = build(yolo_nas_s()).eval()
    model.preprocessing.image_size = (args.imgsz, args.imgsz)
    backends, skipped = build_paths(model, work, calib, threads=args.threads, calib_images=64)
    if args.no_torch:
        backends = {k: v for k, v in backends.items() if not k.startswith("torch")}
    qdq = quantize(model.fuse(), QuantConfig(calib, work / "int8_openvino_qdq", fmt="openvino", quantizer="qdq",
                                             calib_images=64, val_images=0)).output
    backends["openvino int8 (qdq)"] = OpenVINOBackend(qdq, threads=args.threads)
    return {f"yolo_nas_s {k}": v for k, v in backends.items()}, skipped


def forward_only(args, backends: dict) -> dict:
    """Every INT8 IR (ours, and Ultralytics' own NNCF exports) forward only on one 640 input, under the same
    OpenVINO settings (deploy.timing), with f32 and bf16 for the float parts: the networks alone, no predictor."""
    import numpy as np  # noqa: PLC0415

    from yolonas.deploy.timing import openvino_compiled, time_blocks  # noqa: PLC0415

    files = {name: b.path for name, b in backends.items() if "openvino int8" in name}
    for model in args.peer_models.split(","):
        folder = REPO / ".venv-ultralytics" / "work" / f"{model}_{args.imgsz}_int8_openvino_model"
        found = sorted(folder.glob("*.xml"))
        if found:
            files[f"{model} int8 (ultralytics export)"] = found[0]
    x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    fns = {}
    for name, path in files.items():
        for precision in ("f32", "bf16"):
            request = openvino_compiled(path, args.threads, precision=precision).create_infer_request()
            fns[f"{name}, {precision} float parts"] = lambda r=request: r.infer({0: x})
    timings = time_blocks(fns, blocks=args.blocks, runs=args.runs, warmup=3)
    return dict(sorted(timings.medians().items(), key=lambda kv: kv[1]))


def summary(results: list, ready: dict | None) -> dict:
    """Our fastest path against our ORT fp32 and against each peer model's fastest path (per-block ratios)."""
    by_name = {r.name: r for r in results}
    ours = [r for r in results if r.name.startswith("yolo_nas_s")]
    best = ours[0]
    out = {"ours_fastest": best.name, "ours_fastest_ms": best.end_to_end_ms,
           "x_our_ort_fp32": block_ratio(by_name[f"yolo_nas_s {BASELINE}"].block_ms, best.block_ms)}
    peers = [r for r in results if r.name.endswith("(ultralytics)")]
    per_model: dict[str, object] = {}
    for r in peers:
        model = r.name.split(":")[0]
        if model not in per_model or r.end_to_end_ms < per_model[model].end_to_end_ms:
            per_model[model] = r
    out["peers_fastest"] = {m: {"path": r.name, "ms": r.end_to_end_ms,
                                "x_ours": block_ratio(r.block_ms, best.block_ms)} for m, r in per_model.items()}
    if per_model:
        fastest_peer = min(per_model.values(), key=lambda r: r.end_to_end_ms)
        out["fastest_peer"] = fastest_peer.name
        out["x_fastest_peer"] = block_ratio(fastest_peer.block_ms, best.block_ms)
    if ready is not None:
        out["peer"] = {k: ready.get(k) for k in ("ultralytics", "openvino", "nncf", "onnxruntime", "torch", "threads")}
        out["peer_nms"] = {k: v.get("nms") for k, v in ready.get("info", {}).items()}
        out["peer_precision_hint"] = {k: v.get("precision_hint") for k, v in ready.get("info", {}).items()}
    return out


def spread(r) -> str:
    return f"{min(r.block_ms):.1f}-{max(r.block_ms):.1f}"


def markdown(args, results: list, s: dict, skipped: dict) -> str:
    cpu = cpu_info()
    lines = [f"# The fastest CPU path: yolo_nas_s against Ultralytics' s-models ({cpu.name})", "",
             f"{cpu.describe()}. Batch 1, {args.imgsz}x{args.imgsz}, {args.threads} threads, end to end from an "
             f"aquarium test image file (decode + letterbox + forward + NMS + boxes back), {args.blocks} blocks of "
             f"{args.runs} runs, every path taking turns (deploy.timing); medians of block medians, ratios are "
             "medians of per-block ratios. Random weights on both sides; INT8 calibrated on 64 aquarium train "
             "images on both sides. Ultralytics paths run its own export and its own predictor in its own venv.", "",
             compare_markdown(results, f"yolo_nas_s {BASELINE}", skipped), "",
             "| path | block medians, min-max (ms) |", "|---|---|"]
    lines += [f"| {r.name} | {spread(r)} |" for r in results]
    lines += ["", f"- Ours fastest: **{s['ours_fastest']}**, {s['ours_fastest_ms']:.1f} ms: x{s['x_our_ort_fp32']:.2f} "
              f"faster than our ONNX Runtime fp32 path."]
    for model, p in s.get("peers_fastest", {}).items():
        lines.append(f"- {model} fastest: {p['path']}, {p['ms']:.1f} ms; ours is x{p['x_ours']:.2f} faster.")
    if "fastest_peer" in s:
        lines.append(f"- Against the fastest Ultralytics path ({s['fastest_peer']}): x{s['x_fastest_peer']:.2f}.")
    lines += ["", "INT8 networks forward only (one 640 input, no predictor), the same OpenVINO settings for all, "
              "interleaved blocks:", "", "| network | forward (ms) |", "|---|---|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in s["forward_only_int8_ms"].items()]
    if "peer_nms" in s:
        lines.append(f"- Ultralytics NMS in the predictor per key: {s['peer_nms']}; OpenVINO precision hints: "
                     f"{s['peer_precision_hint']}.")
    lines += ["", f"Command: `python {' '.join(sys.argv)}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--peer-models", default="yolov8s,yolo11s,yolo26s")
    ap.add_argument("--peer-paths", default="onnx,openvino,openvino_int8")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="leave the eager PyTorch paths out")
    ap.add_argument("--tag", default=cpu_info().name.split()[0].lower())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    aquarium = datasets_root() / "aquarium"
    images = sorted((aquarium / "test" / "images").glob("*.jpg"))[: args.images]
    if not images:
        sys.exit(f"{aquarium}: no test images; set YOLONAS_DATASETS")
    peer, ready, log = None, None, []
    if not args.no_peer and PEER_PYTHON.exists():
        peer, ready = start_peer(args, images, aquarium / "data.yaml")
        print(f"peer ready: {ready['keys']}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="yolonas-fastest-") as tmp:
        backends, skipped = our_paths(args, Path(tmp), aquarium / "data.yaml")
        turns = peer_turns(peer, ready["keys"], log) if peer is not None else None
        predictors = {name: Predictor(backend, batch_size=1) for name, backend in backends.items()}
        results = compare(predictors, images, baseline=f"yolo_nas_s {BASELINE}", blocks=args.blocks, runs=args.runs,
                          turns=turns)
        forward = forward_only(args, backends)
    if peer is not None:
        peer.stdin.close()
        peer.wait(timeout=60)
    s = summary(results, ready)
    s["forward_only_int8_ms"] = forward
    result = {"machine": machine(), "args": vars(args), "summary": s, "paths": [r.to_dict() for r in results],
              "skipped": skipped, "peer_blocks": log, "peer_ready": ready,
              "median_e2e_ms": {r.name: r.end_to_end_ms for r in results},
              "stage_medians": {r.name: r.stages_ms for r in results},
              "block_spread": {r.name: statistics.pstdev(r.block_ms) for r in results}}
    out = RESULTS / f"fastest_cpu_{args.tag}"
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(args, results, s, skipped)
    Path(f"{out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
