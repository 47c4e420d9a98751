"""CPU end to end, interleaved: yolo_nas_s fp32 ONNX Runtime vs INT8 QDQ variants through the same Predictor.

End to end = letterbox of an already decoded image + forward + decode + NMS + boxes back to the image, on real
coco128 images, batch 1, 640, 2 threads. Variants: fp32; all network convs INT8 with uint8 (asymmetric) and int8
(symmetric, TensorRT-style) activations; selective uint8 with the stem + the six prediction convs float, with
the first quarter of the convs float, and the float set that the sensitivity analysis + a speed budget choose.
Calibrated once (percentile 99.99) on real coco128 images; random weights (speed does not depend on them).
Ratios are medians of per-block ratios. Writes benchmarks/results/quant_speed_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import yolonas
from _common import RESULTS, datasets_root, machine, predict_fn
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_s
from yolonas.data.images import list_images, select_images
from yolonas.deploy.backends import OnnxRuntimeBackend
from yolonas.deploy.export import export_onnx
from yolonas.deploy.timing import block_ratio, time_blocks
from yolonas.infer import Predictor, read_image
from yolonas.quant.calibration import calibrate
from yolonas.quant.ptq import conv_layers, prepare, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-images", type=int, default=16)
    ap.add_argument("--val-images", type=int, default=4)
    ap.add_argument("--min-speedup", type=float, default=0.9, help="speed budget of the sensitivity selection")
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the (slow) sensitivity-chosen variant")
    ap.add_argument("--weights", help="time this checkpoint instead of a random yolo_nas_s")
    ap.add_argument("--float-from", help="a quant_accuracy.py JSON: also time its first model's seed-0 selection")
    ap.add_argument("--out", default=str(RESULTS / "quant_speed_cpu"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    coco = datasets_root() / "coco128" / "images" / "train2017"
    if not coco.is_dir():
        sys.exit("coco128 images not found: set YOLONAS_DATASETS")
    files = list_images(coco)
    calib_files = select_images(files, args.calib_images, seed=0)
    time_files = select_images(files, 16, seed=1, exclude=calib_files)
    images = [read_image(f) for f in time_files]

    torch.manual_seed(0)
    model = yolonas.load(args.weights).eval() if args.weights else build(yolo_nas_s()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = prepare(export_onnx(model, tmp / "fp32.onnx", batch=1), tmp / "fp32_prepared.onnx")
        t = time.perf_counter()
        calib = calibrate(prepared, calib_files, tmp / "ranges.json", method="percentile", seed=0)
        print(f"calibration: {time.perf_counter() - t:.0f} s", file=sys.stderr)
        convs = conv_layers(prepared)
        heads = [c.module for c in convs if c.module.endswith(("cls_pred", "reg_pred"))]
        variants = {
            "int8_uint8_act": write_qdq(calib, tmp / "u8.onnx"),
            "int8_int8_act_symmetric": write_qdq(calib, tmp / "s8.onnx", activations="int8"),
            "selective_stem_heads_float": write_qdq(calib, tmp / "stem_heads.onnx",
                                                    float_layers=[convs[0].module, *heads]),
            "selective_first_quarter_float": write_qdq(calib, tmp / "quarter.onnx",
                                                       float_layers=[c.module for c in convs[:len(convs) // 4]]),
        }
        given = None
        if args.float_from:
            given = json.loads(Path(args.float_from).read_text())["models"][0]["float_layers"][0]["layers"]
            variants["selective_given"] = write_qdq(calib, tmp / "given.onnx", float_layers=given, mode="selective")
        selection = None
        if not args.no_sensitivity:
            t = time.perf_counter()
            ev = Evaluator(calib, select_images(files, args.val_images, seed=2, exclude=calib_files),
                           threads=args.threads)
            report = analyze(ev, progress=lambda i, n, m: print(f"  sensitivity {i + 1}/{n} {m}", file=sys.stderr)
                             if i % 20 == 0 else None)
            report.save(RESULTS, "quant_speed_sensitivity_yolo_nas_s_random")
            chosen = select(report, ev, min_speedup_fraction=args.min_speedup)
            selection = chosen.to_dict()
            print(f"sensitivity + selection: {time.perf_counter() - t:.0f} s, {len(chosen.float_layers)} float",
                  file=sys.stderr)
            variants["selective_sensitivity"] = write_qdq(calib, tmp / "sens.onnx", float_layers=chosen.float_nodes,
                                                          mode="selective")
        predictors = {"fp32": Predictor(OnnxRuntimeBackend(prepared, threads=args.threads), batch_size=1)}
        predictors.update({k: Predictor(OnnxRuntimeBackend(p, threads=args.threads), batch_size=1)
                           for k, p in variants.items()})
        timings = time_blocks({k: predict_fn(p, images) for k, p in predictors.items()}, args.blocks, args.runs,
                              warmup=3)
        rows = {k: timings.block_medians(k) for k in predictors}
    result = {
        "machine": machine(), "blocks": args.blocks, "runs": args.runs, "images": len(images),
        "calibration": {"method": "percentile 99.99", "images": len(calib_files), "seed": 0},
        "medians_ms": {k: statistics.median(v) for k, v in rows.items()},
        "speedup_vs_fp32": {k: block_ratio(rows["fp32"], v) for k, v in rows.items() if k != "fp32"},
        "float_layers": {"selective_stem_heads_float": [convs[0].module, *heads],
                         "selective_first_quarter_float": [c.module for c in convs[:len(convs) // 4]],
                         "selective_sensitivity": selection["float_layers"] if selection else None,
                         "selective_given": given},
        "selection": selection, "command": "python " + " ".join(sys.argv), "blocks_ms": rows,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    m, r = result["medians_ms"], result["speedup_vs_fp32"]
    lines = [f"# INT8 on the CPU: yolo_nas_s end to end, batch 1, 640, {args.threads} threads, interleaved", "",
             f"{result['machine']['cpu']}; onnxruntime QDQ (int8 per-channel symmetric weights); {len(images)} "
             f"coco128 images (not the {len(calib_files)} calibration images); {args.blocks} blocks of {args.runs} "
             "runs, the variants taking turns; medians of per-block medians (ms) and of per-block ratios. "
             "End to end = letterbox + forward + decode + NMS through our Predictor. "
             + (f"Weights: {args.weights}." if args.weights else "Random weights."), "",
             "| variant | float convs | end to end (ms) | speed-up vs fp32 |", "|---|---|---|---|"]
    n_float = {"fp32": len(convs), "int8_uint8_act": 0, "int8_int8_act_symmetric": 0,
               "selective_stem_heads_float": 1 + len(heads), "selective_first_quarter_float": len(convs) // 4,
               "selective_sensitivity": len(selection["float_layers"]) if selection else 0,
               "selective_given": len(given) if given else 0}
    for k in rows:
        lines.append(f"| {k} | {n_float[k]}/{len(convs)} | {m[k]:.0f} | {'' if k == 'fp32' else f'x{r[k]:.2f}'} |")
    if selection:
        chosen = ", ".join(selection["float_layers"]) or "none"
        lines += ["", f"Sensitivity selection (leave-one-out on {args.val_images} other images, speed budget "
                  f"{args.min_speedup:.0%} of full INT8's speed-up): float = {chosen}; measured forward "
                  f"fraction {selection['measured_speedup_fraction']:.2f}. Report: "
                  "quant_speed_sensitivity_yolo_nas_s_random.{json,md,png}."]
    if given:
        lines += ["", f"selective_given: the float set of {args.float_from} (seed 0): {', '.join(given)}."]
    lines += ["", f"Command: `{result['command']}`", ""]
    Path(args.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
