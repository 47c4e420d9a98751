"""CPU end to end, interleaved in one run: yolo_nas_s fused in eager PyTorch, the same model through ONNX
Runtime, and (when its venv exists) Ultralytics' YOLOv8s through its own ONNX export and predictor.

End to end = letterbox of an already decoded image + forward + decode + NMS + boxes back to the image, on
real coco128 images, batch 1, 640, 2 threads. The three take turns block by block; each cell is the median
over blocks of the per-block medians, and ratios are medians of per-block ratios. Random weights (speed does
not depend on them). Then the forward passes alone, eager against ONNX Runtime, interleaved, and ONNX
Runtime's own profile of where its forward time goes (per op type), with the arithmetic rate it reaches.
Writes benchmarks/results/latency_onnx_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _common import REPO, RESULTS, datasets_root, machine, predict_fn
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_s
from yolonas.arch.summary import summarize
from yolonas.deploy.backends import OnnxRuntimeBackend, OpenVINOBackend
from yolonas.deploy.export import export_onnx
from yolonas.deploy.timing import time_blocks
from yolonas.errors import InputError
from yolonas.infer import Predictor, letterbox_batch, read_image
from yolonas.quant.sensitivity import profile_ops

PEER_PYTHON = REPO / ".venv-ultralytics" / "bin" / "python"
PEER_SCRIPT = REPO / "benchmarks" / "peers" / "ultralytics_bench.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--out", default=str(RESULTS / "latency_onnx_cpu"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted((datasets_root() / "coco128" / "images" / "train2017").glob("*.jpg"))[: args.images]
    if not files:
        sys.exit("coco128 images not found: set YOLONAS_DATASETS")
    images = [read_image(f) for f in files]

    torch.manual_seed(0)
    model = build(yolo_nas_s()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "yolo_nas_s.onnx", batch=1)
        ort = Predictor(OnnxRuntimeBackend(onnx_path, threads=args.threads), batch_size=1)
        try:
            ov = Predictor(OpenVINOBackend(onnx_path, threads=args.threads), batch_size=1)
        except InputError as e:  # openvino is optional
            print(f"openvino: {e}", file=sys.stderr)
            ov = None
        eager = Predictor(model.fuse(), batch_size=1)
        peer = None
        if PEER_PYTHON.exists():
            peer = subprocess.Popen([str(PEER_PYTHON), str(PEER_SCRIPT), "--sync", "--runs", str(args.runs),
                                     "--blocks", str(args.blocks),
                                     "--threads", str(args.threads), *map(str, files)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            ready = json.loads(peer.stdout.readline())
            print(f"peer: {ready}", file=sys.stderr)
        fns = {"torch_fused": predict_fn(eager, images), "onnxruntime": predict_fn(ort, images)}
        if ov is not None:
            fns["openvino"] = predict_fn(ov, images)
        peer_blocks: list[dict] = []

        def peer_turn(runs: int) -> list[float]:
            peer.stdin.write("go\n")
            peer.stdin.flush()
            peer_blocks.append(json.loads(peer.stdout.readline()))
            return [peer_blocks[-1]["e2e_ms"]]

        turns = {"yolov8s_ultralytics_ort": peer_turn} if peer is not None else {}
        rows = time_blocks(fns, args.blocks, args.runs, warmup=3, turns=turns, on_block=lambda b, t: print(
            f"block {b}: " + ", ".join(f"{k} {v[-1][-1]:.0f}" for k, v in t.samples.items()), file=sys.stderr))
        if peer is not None:
            peer.stdin.close()
            peer.wait(timeout=60)
        # The forward passes alone (decode included: it is in the exported graph), on one letterboxed image.
        x = letterbox_batch(images[:1], model.preprocessing)[0]
        forward = time_blocks({"torch_fused": lambda: eager.backend(x), "onnxruntime": lambda: ort.backend(x)},
                              args.blocks, args.runs)
        profile = profile_ops(onnx_path, x.numpy(), runs=10, threads=args.threads)
    gflops = summarize(build(yolo_nas_s()), 640)["gflops_fused"]
    result = {
        "machine": machine(), "blocks": args.blocks, "runs": args.runs, "images": len(images),
        "medians_ms": rows.medians(),
        "torch_over_ort": rows.ratio("torch_fused", "onnxruntime"),
        "forward_ms": forward.medians(),
        "forward_torch_over_ort": forward.ratio("torch_fused", "onnxruntime"),
        "gflops_fused": gflops, "ort_profile_ms": profile,
        "command": "python " + " ".join(sys.argv), "timings": rows.to_dict(), "peer_blocks": peer_blocks,
    }
    if "openvino" in rows.samples:
        result["torch_over_openvino"] = rows.ratio("torch_fused", "openvino")
    if "yolov8s_ultralytics_ort" in rows.samples:
        result["ours_ort_over_yolov8s_ort"] = rows.ratio("onnxruntime", "yolov8s_ultralytics_ort")
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["medians_ms"]
    lines = [f"# CPU end to end, batch 1, 640, {args.threads} threads, interleaved", "",
             f"{result['machine']['cpu']}; {len(images)} coco128 images; {args.blocks} blocks of {args.runs} runs, "
             "the pipelines taking turns (PyTorch runs channels-last, as our Predictor does); medians of per-block "
             "medians (ms) and of per-block ratios.", "",
             "| pipeline | end to end (ms) |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in m.items()]
    lines += ["", f"- yolo_nas_s eager PyTorch (fused) / ONNX Runtime: x{result['torch_over_ort']:.2f} (target >= 1.5)"]
    if "torch_over_openvino" in result:
        lines.append(f"- yolo_nas_s eager PyTorch (fused) / OpenVINO: x{result['torch_over_openvino']:.2f}")
    if "ours_ort_over_yolov8s_ort" in result:
        lines.append(f"- yolo_nas_s ORT / YOLOv8s ORT (Ultralytics' own export and predictor): "
                     f"x{result['ours_ort_over_yolov8s_ort']:.2f} (target <= 1.15)")
    fwd, total = result["forward_ms"], sum(profile.values())
    lines += ["", "Forward only (network + box decode, one letterboxed image, interleaved): eager "
              f"{fwd['torch_fused']:.0f} ms, ONNX Runtime {fwd['onnxruntime']:.0f} ms, "
              f"x{result['forward_torch_over_ort']:.2f}. ONNX Runtime's profile of its forward "
              f"({total:.0f} ms in kernels): " + ", ".join(f"{op} {ms / total:.1%}" for op, ms in
                                                          list(profile.items())[:4]) +
              f"; {gflops:.1f} GFLOPs (fused) in {fwd['onnxruntime']:.0f} ms is "
              f"{gflops / fwd['onnxruntime'] * 1e3:.0f} GFLOP/s on {args.threads} threads."]
    lines += ["", f"Command: `{result['command']}`", ""]
    Path(args.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
