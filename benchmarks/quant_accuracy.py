"""INT8 accuracy: fp32 ONNX AP vs all-layer INT8 vs selective INT8, each over several calibration seeds.

For every `--weights` checkpoint: export fp32 ONNX, evaluate it on `--split` (COCO AP through the same Predictor
and ONNX Runtime), then for each seed calibrate on `--calib-images` images of `--calib-split` chosen by that seed,
and evaluate the full INT8 model and the selective one. The selective float set comes from a leave-one-out
sensitivity report on `--val-images` other images of the calibration split (seed 0's, reused for every seed
unless --reselect) and a budget (`--min-speedup` and/or `--max-error`). `--qat` adds already quantized .onnx files
(e.g. from QAT) to the table. Writes benchmarks/results/quant_accuracy.{json,md} (or --out).
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

from _common import RESULTS, machine
from yolonas.data import open_dataset
from yolonas.data.images import select_images
from yolonas.data.splits import source_images
from yolonas.deploy.backends import OnnxRuntimeBackend
from yolonas.deploy.export import export_onnx
from yolonas.eval.validate import validate
from yolonas.infer import VAL_NMS, Predictor
from yolonas.quant.calibration import calibrate
from yolonas.quant.ptq import prepare, write_qdq
from yolonas.quant.selective import select
from yolonas.quant.sensitivity import Evaluator, analyze
from yolonas.weights import load


def _ap(path: Path, dataset, threads: int) -> dict:
    metrics = validate(Predictor(OnnxRuntimeBackend(path, threads=threads), nms=VAL_NMS, batch_size=1), dataset,
                       nms=VAL_NMS, batch_size=1)
    return {"AP": metrics.AP, "AP50": metrics.AP50}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", action="append", required=True, help="a checkpoint; repeat for several")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--calib-split", default="train")
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--val-images", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--method", default="percentile")
    ap.add_argument("--min-speedup", type=float, default=0.9)
    ap.add_argument("--max-error", type=float, default=None)
    ap.add_argument("--reselect", action="store_true", help="a sensitivity report per seed, not seed 0's for all")
    ap.add_argument("--qat", action="append", default=[], help="a quantized .onnx to evaluate alongside")
    ap.add_argument("--imgsz", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "quant_accuracy"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data, args.split)
    calib_pool = source_images(args.data, args.calib_split)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w_i, weights in enumerate(args.weights):
            t0 = time.perf_counter()
            model = load(weights)
            if args.imgsz:
                model.preprocessing.image_size = (args.imgsz, args.imgsz)
                model.preprocessing.longest_side = None
            work = Path(tmp) / f"m{w_i}"
            prepared = prepare(export_onnx(model, work / "fp32.onnx", batch=1), work / "fp32_prepared.onnx")
            row = {"weights": weights, "spec": model.spec.name, "fp32": _ap(prepared, dataset, args.threads),
                   "int8": [], "selective": [], "float_layers": []}
            print(f"{weights}: fp32 AP {row['fp32']['AP']:.3f}", file=sys.stderr)
            chosen = None
            for seed in args.seeds:
                files = select_images(calib_pool, args.calib_images, seed)
                calib = calibrate(prepared, files, work / f"ranges_{seed}.json", method=args.method, seed=seed)
                full = write_qdq(calib, work / f"int8_{seed}.onnx")
                row["int8"].append({"seed": seed, **_ap(full, dataset, args.threads)})
                if chosen is None or args.reselect:
                    ev = Evaluator(calib, select_images(calib_pool, args.val_images, seed + 1000, exclude=files),
                                   threads=args.threads)
                    report = analyze(ev)
                    report.save(Path(args.out).parent, f"{Path(args.out).name}_sensitivity_{w_i}_seed{seed}")
                    chosen = select(report, ev, max_error=args.max_error, min_speedup_fraction=args.min_speedup)
                    row["float_layers"].append({"seed": seed, "layers": chosen.float_layers,
                                                "measured_speedup_fraction": chosen.measured_speedup_fraction})
                hybrid = write_qdq(calib, work / f"sel_{seed}.onnx", float_layers=chosen.float_nodes,
                                   mode="selective")
                row["selective"].append({"seed": seed, **_ap(hybrid, dataset, args.threads)})
                print(f"  seed {seed}: int8 AP {row['int8'][-1]['AP']:.3f}, selective AP "
                      f"{row['selective'][-1]['AP']:.3f} ({len(chosen.float_layers)} float)", file=sys.stderr)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
    extra = [{"onnx": q, **_ap(Path(q), dataset, args.threads)} for q in args.qat]
    result = {"machine": machine(), "data": args.data, "split": args.split, "calib_split": args.calib_split,
              "calib_images": args.calib_images, "method": args.method, "seeds": args.seeds,
              "budget": {"min_speedup": args.min_speedup, "max_error": args.max_error}, "models": rows,
              "qat": extra, "command": "python " + " ".join(sys.argv)}
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# INT8 accuracy on {args.data} ({args.split})", "",
             f"COCO AP through ONNX Runtime and our Predictor (val thresholds). INT8: QDQ, int8 per-channel weights, "
             f"uint8 activations, {args.method} calibration on {args.calib_images} `{args.calib_split}` images per "
             f"seed; mean ± sd over seeds {args.seeds}. Selective: float convs chosen from a leave-one-out "
             f"sensitivity report (budget: min speed-up fraction {args.min_speedup}, max error {args.max_error}).",
             "", "| model | fp32 AP | INT8 AP | selective INT8 AP | INT8 drop | selective drop | float convs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fp32"]["AP"]
        q = [x["AP"] for x in r["int8"]]
        s = [x["AP"] for x in r["selective"]]
        lines.append(f"| {Path(r['weights']).name} ({r['spec']}) | {f:.3f} | {_mean_sd(q)} | {_mean_sd(s)} | "
                     f"{f - statistics.mean(q):+.3f} | {f - statistics.mean(s):+.3f} | "
                     f"{len(r['float_layers'][0]['layers'])} |")
    for e in extra:
        lines.append(f"| {Path(e['onnx']).name} (given) | | {e['AP']:.3f} | | | | |")
    lines += ["", f"Command: `{result['command']}`", ""]
    Path(args.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
