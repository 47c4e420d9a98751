"""CPU latency of YOLO-NAS S/M/L, unfused vs fused, forward only and end to end, interleaved in one run.

End to end = letterbox of a real image + forward + decode + NMS + boxes back to the image. Weights are
random (speed does not depend on them); with random weights few boxes pass the 0.25 score threshold, so
NMS here costs what thresholding and top-k cost. Writes benchmarks/results/latency_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import numpy as np
import torch

from _common import RESULTS, datasets_root, machine
from yolonas.arch.model import build
from yolonas.arch.spec import PUBLISHED
from yolonas.deploy.timing import time_blocks
from yolonas.infer import PREDICT_NMS, TorchBackend, batch_boxes_to_original, letterbox_batch, postprocess, read_image


def _image() -> tuple[np.ndarray, str]:
    folder = datasets_root() / "coco128" / "images" / "train2017"
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if files:
        return read_image(files[0]), files[0].name
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), "random 640x480"


def _pipelines(model, image, imgsz: int):
    pre = model.preprocessing
    backend = TorchBackend(model)  # what Predictor runs: channels-last, forward + decode
    x0 = torch.rand(1, 3, imgsz, imgsz).contiguous(memory_format=backend.memory_format)

    def forward():
        with torch.inference_mode():
            return model(x0)

    stages = {"pre": [], "forward": [], "post": []}

    def end_to_end():
        with torch.inference_mode():
            t0 = time.perf_counter()
            x, infos = letterbox_batch([image], pre)
            t1 = time.perf_counter()
            boxes, scores = backend(x)
            t2 = time.perf_counter()
            dets = batch_boxes_to_original(postprocess(boxes, scores, PREDICT_NMS), infos)
            t3 = time.perf_counter()
        stages["pre"].append((t1 - t0) * 1e3)
        stages["forward"].append((t2 - t1) * 1e3)
        stages["post"].append((t3 - t2) * 1e3)
        return dets

    return forward, end_to_end, stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="yolo_nas_s,yolo_nas_m,yolo_nas_l")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "latency_cpu"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image, image_name = _image()
    rows = []
    for name in args.models.split(","):
        base = build(PUBLISHED[name]()).eval()
        base.preprocessing.image_size = (args.imgsz, args.imgsz)
        fused = copy.deepcopy(base).fuse()
        f_u, e_u, st_u = _pipelines(base, image, args.imgsz)
        f_f, e_f, st_f = _pipelines(fused, image, args.imgsz)
        m = time_blocks({"fwd_unfused": f_u, "fwd_fused": f_f, "e2e_unfused": e_u, "e2e_fused": e_f},
                        args.blocks, args.runs)
        row = {"model": name, **m.medians(),
               "fwd_speedup": m.ratio("fwd_unfused", "fwd_fused"),
               "e2e_speedup": m.ratio("e2e_unfused", "e2e_fused"),
               "fused_stages_ms": {k: statistics.median(v) for k, v in st_f.items()},
               "unfused_stages_ms": {k: statistics.median(v) for k, v in st_u.items()},
               "blocks": {k: m.block_medians(k) for k in m.samples}}
        rows.append(row)
        print(f"{name}: forward {row['fwd_unfused']:.0f} -> {row['fwd_fused']:.0f} ms "
              f"(x{row['fwd_speedup']:.2f}); end to end {row['e2e_unfused']:.0f} -> {row['e2e_fused']:.0f} ms "
              f"(x{row['e2e_speedup']:.2f})", file=sys.stderr)
    result = {"machine": machine(), "imgsz": args.imgsz, "batch": 1, "blocks": args.blocks, "runs": args.runs,
              "image": image_name, "command": "python " + " ".join(sys.argv), "rows": rows}
    out = args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        f"# CPU latency, batch 1, {args.imgsz}x{args.imgsz}, {args.threads} threads",
        "",
        f"{result['machine']['cpu']}; torch {torch.__version__}. Unfused and fused models take turns, a whole "
        f"turn each, in {args.blocks} blocks of {args.runs} runs (deploy.timing); cells are medians over the "
        "block medians (ms), "
        "speed-ups are medians of the per-block ratios. End to end = letterbox of a real "
        f"{image.shape[1]}x{image.shape[0]} image + forward + decode + NMS (score 0.25, IoU 0.7). "
        "Both run channels-last, as the Predictor does. Random weights. Absolute times on this shared VM vary up "
        "to 2x; read the ratios.",
        "",
        "| model | forward unfused | forward fused | speed-up | end to end unfused | end to end fused | speed-up "
        "| fused: pre / forward / post |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["fused_stages_ms"]
        lines.append(f"| {r['model']} | {r['fwd_unfused']:.0f} | {r['fwd_fused']:.0f} | x{r['fwd_speedup']:.2f} | "
                     f"{r['e2e_unfused']:.0f} | {r['e2e_fused']:.0f} | x{r['e2e_speedup']:.2f} | "
                     f"{s['pre']:.1f} / {s['forward']:.0f} / {s['post']:.1f} |")
    lines += ["", f"Command: `{result['command']}`", ""]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
