"""Ultralytics YOLOv8s on ONNX Runtime (CPU) through Ultralytics' own export and predictor: the peer for issue 5.

Run inside .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh). YOLOv8s is built from its yaml with random
weights (nothing is downloaded; speed does not depend on weights), exported with Ultralytics' ONNX exporter
(640, batch 1, no NMS in the graph) and run with `YOLO(onnx).predict(image_array)`. Per block it prints one JSON
line with medians in ms of end to end (letterbox + forward + NMS + boxes back to the image, image already decoded
in memory) and of a bare ORT `session.run` on a 640x640 tensor. With --sync a block starts only when a line
arrives on stdin, so a driver can alternate blocks between this process and its own predictor.

    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_bench.py --info
    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_bench.py --blocks 5 --runs 5 [--sync] [IMAGE ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from _offline import NETWORK_ATTEMPTS, REPO, WORK, go_offline, settings


def _images(paths: list[str], limit: int) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    root = Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))
    files = sorted((root / "coco128" / "images" / "train2017").glob("*.jpg"))[:limit]
    if not files:
        raise SystemExit(f"no images: {root}/coco128/images/train2017 has no .jpg; pass image paths")
    return files


def export_onnx(imgsz: int, force: bool = False) -> Path:
    """Export random-init YOLOv8s with Ultralytics' own ONNX exporter; cached under .venv-ultralytics/work."""
    from ultralytics import YOLO  # noqa: PLC0415 - only after go_offline()

    target = WORK / f"yolov8s_{imgsz}.onnx"
    if target.exists() and not force:
        return target
    WORK.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(WORK)  # the exporter writes next to the model's source name (yolov8s.yaml -> ./yolov8s.onnx)
    try:
        simplify = importlib.util.find_spec("onnxslim") is not None
        out = YOLO("yolov8s.yaml").export(format="onnx", imgsz=imgsz, batch=1, nms=False, dynamic=False,
                                          simplify=simplify, half=False, device="cpu")
        Path(out).resolve().replace(target)
    finally:
        os.chdir(cwd)
    return target


def info(imgsz: int) -> dict:
    """Parameters and GFLOPs of YOLOv8s as Ultralytics reports them, unfused and fused."""
    from ultralytics import YOLO  # noqa: PLC0415 - only after go_offline()

    model = YOLO("yolov8s.yaml")
    layers, params, _, gflops = model.info(verbose=True, imgsz=imgsz)
    model.fuse()
    f_layers, f_params, _, f_gflops = model.info(verbose=True, imgsz=imgsz)
    return {"model": "yolov8s", "imgsz": imgsz, "layers": layers, "params": params, "gflops": round(gflops, 2),
            "fused_layers": f_layers, "fused_params": f_params, "fused_gflops": round(f_gflops, 2)}


def _set_ort_threads(model, onnx_path: Path, threads: int):
    """Rebuild the predictor's ORT session with `threads` intra-op threads; returns the new session.

    Ultralytics' predictor builds its InferenceSession with default options and offers no argument for them
    (ONNXBackend takes session_options, but AutoBackend/predict do not pass any), so the session object is
    swapped for one on the same file and provider with the thread count set; the rest of the path is untouched.
    """
    backend = model.predictor.model.backend
    old = backend.session
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    backend.session = ort.InferenceSession(str(onnx_path), opts, providers=old.get_providers())
    return backend.session


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task")) if Path("/proc/self/task").is_dir() else -1


def bench(images: list[Path], blocks: int, runs: int, warmup: int, imgsz: int, threads: int, sync: bool) -> None:
    """Print one JSON line per block: medians (ms) of end-to-end predict and of the bare ORT session.run."""
    import ultralytics  # noqa: PLC0415 - only after go_offline()
    from ultralytics import YOLO  # noqa: PLC0415

    onnx_path = export_onnx(imgsz)
    arrays = []
    for p in images:
        im = cv2.imread(str(p))  # BGR, which is what Ultralytics expects of numpy input
        if im is None:
            raise SystemExit(f"{p}: cannot read image")
        arrays.append(im)
    model = YOLO(str(onnx_path), task="detect")
    kw = {"imgsz": imgsz, "device": "cpu", "conf": 0.25, "iou": 0.7, "max_det": 300, "verbose": False,
          "save": False}
    threads_before = _thread_count()
    model.predict(source=arrays[0], **kw)  # builds the predictor and its ORT session
    threads_default = _thread_count() - threads_before
    session = _set_ort_threads(model, onnx_path, threads)
    threads_ours = _thread_count() - threads_before
    # select_device() in predictor setup pins torch to cpu_count - 1 threads; pre/post-processing (NMS) run in torch
    torch.set_num_threads(threads)
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    out_names = [o.name for o in session.get_outputs()]

    n = 0

    def e2e():
        nonlocal n
        r = model.predict(source=arrays[n % len(arrays)], **kw)[0]
        n += 1
        return r

    def forward():
        return session.run(out_names, {inp.name: x})

    for _ in range(warmup):
        e2e()
        forward()
    header = {"event": "ready", "peer": "ultralytics", "ultralytics": ultralytics.__version__,
              "onnxruntime": ort.__version__, "torch": torch.__version__, "onnx": str(onnx_path),
              "input": [inp.name, inp.shape], "ort_intra_op_threads": threads, "torch_threads": torch.get_num_threads(),
              "process_threads": _thread_count(), "threads_added_by_default_session": threads_default,
              "threads_added_by_our_session": threads_ours,
              "images": len(arrays), "network_attempts": NETWORK_ATTEMPTS}
    print(json.dumps(header), flush=True)
    for b in range(blocks):
        if sync and not sys.stdin.readline():
            break  # driver closed stdin: stop
        e2e_ms, fwd_ms, pre_ms, inf_ms, post_ms = [], [], [], [], []
        fwd_cpu = fwd_wall = 0.0
        for _ in range(runs):
            t0 = time.perf_counter()
            r = e2e()
            e2e_ms.append((time.perf_counter() - t0) * 1e3)
            pre_ms.append(r.speed["preprocess"])
            inf_ms.append(r.speed["inference"])
            post_ms.append(r.speed["postprocess"])
            t0, c0 = time.perf_counter(), time.process_time()
            forward()
            dt = time.perf_counter() - t0
            fwd_ms.append(dt * 1e3)
            fwd_wall += dt
            fwd_cpu += time.process_time() - c0
        med = statistics.median
        print(json.dumps({"event": "block", "peer": "ultralytics", "block": b, "runs": runs,
                          "e2e_ms": round(med(e2e_ms), 3), "forward_ms": round(med(fwd_ms), 3),
                          "preprocess_ms": round(med(pre_ms), 3), "inference_ms": round(med(inf_ms), 3),
                          "postprocess_ms": round(med(post_ms), 3),
                          # cores kept busy during forward: about `threads` when ORT's threads get their cores
                          "forward_cpu_per_wall": round(fwd_cpu / fwd_wall, 2),
                          "torch_threads": torch.get_num_threads(),
                          "network_attempts": len(NETWORK_ATTEMPTS)}),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", help="image files (default: the first --limit coco128 train images)")
    ap.add_argument("--info", action="store_true", help="print params/GFLOPs as Ultralytics reports them and exit")
    ap.add_argument("--export", action="store_true", help="(re-)export the ONNX file, print its path and exit")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per block")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (and torch threads)")
    ap.add_argument("--limit", type=int, default=32, help="how many coco128 images when none are given")
    ap.add_argument("--sync", action="store_true", help="wait for a line on stdin before each block")
    args = ap.parse_args()

    go_offline(threads=2)
    settings()
    if args.info:
        print(json.dumps(info(args.imgsz)), flush=True)
    elif args.export:
        print(json.dumps({"onnx": str(export_onnx(args.imgsz, force=True)), "network_attempts": NETWORK_ATTEMPTS}))
    else:
        bench(_images(args.images, args.limit), args.blocks, args.runs, args.warmup, args.imgsz, args.threads,
              args.sync)


if __name__ == "__main__":
    main()
